"""RetinaFace anchors and decoding against hand-computed cases (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maskgate.edge.detectors.retinaface_decoding import (
    AnchorSpec,
    RetinaFaceOutput,
    decode_boxes,
    decode_landmarks,
)

pytestmark = pytest.mark.arm64  # in `make check-arm64`'s subset (pyproject.toml)


def test_anchors_of_a_32_px_input_by_hand():
    a = AnchorSpec().anchors(32, 32)
    # 4x4 cells at stride 8, 2x2 at 16, 1x1 at 32; two sizes per cell
    assert a.shape == ((16 + 4 + 1) * 2, 4)
    assert a[0].tolist() == [0.125, 0.125, 0.5, 0.5]  # cell (0, 0), 16 px
    assert a[1].tolist() == [0.125, 0.125, 1.0, 1.0]  # the same cell, 32 px: sizes innermost
    assert a[2].tolist() == [0.375, 0.125, 0.5, 0.5]  # cell (0, 1): columns before rows
    assert a[8].tolist() == [0.125, 0.375, 0.5, 0.5]  # cell (1, 0)
    assert a[32].tolist() == [0.25, 0.25, 2.0, 2.0]  # stride 16, cell (0, 0), 64 px
    assert a[-1].tolist() == [0.5, 0.5, 16.0, 16.0]  # stride 32, the one cell, 512 px


def test_a_non_square_input_has_its_own_grid_and_normalisation():
    spec = AnchorSpec()
    assert spec.feature_shapes(64, 30) == [(4, 8), (2, 4), (1, 2)]  # ceil: a partial cell counts
    a = spec.anchors(64, 30)
    assert len(a) == (32 + 8 + 2) * 2
    assert a[0].tolist() == pytest.approx([4 / 64, 4 / 30, 16 / 64, 16 / 30])


def test_decoding_offsets_against_an_anchor():
    anchor = np.array([[0.5, 0.5, 0.2, 0.4]])
    v = (0.1, 0.2)
    assert decode_boxes(np.zeros((1, 4)), anchor, v)[0].tolist() == pytest.approx([0.4, 0.3, 0.6, 0.7])
    # the centre moves by offset * 0.1 * size; the size scales by exp(offset * 0.2)
    loc = np.array([[1.0, -2.0, math.log(2) / 0.2, 0.0]])
    assert decode_boxes(loc, anchor, v)[0].tolist() == pytest.approx([0.32, 0.22, 0.72, 0.62])
    points = decode_landmarks(np.array([[0, 0, 1, 0, 0, 1, -1, 0, 0, -1]], float), anchor, v)
    assert points[0].tolist() == pytest.approx([0.5, 0.5, 0.52, 0.5, 0.5, 0.54, 0.48, 0.5, 0.5, 0.46])


def test_faces_from_network_outputs_best_first_and_suppressed():
    post = RetinaFaceOutput(confidence_threshold=0.5, nms_threshold=0.4)
    n = len(post.anchors(32, 32))
    loc, landmarks = np.zeros((n, 4)), np.zeros((n, 10))
    logits = np.tile([4.0, -4.0], (n, 1))  # background everywhere ...
    logits[0] = [-3.0, 3.0]  # ... but anchor 0 (16 px at 0.125, 0.125)
    logits[2] = [-2.0, 2.0]  # and anchor 2, beside it: no overlap, kept
    logits[1] = [-1.0, 1.0]  # and anchor 1, the same cell at 32 px: overlaps anchor 0 by 0.25, kept
    rows = post(loc, logits, landmarks, 32, 32)
    assert rows.shape == (3, 15)
    assert rows[:, 0].tolist() == pytest.approx(
        [1 / (1 + math.exp(-6)), 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(-2))]
    )
    assert rows[0, 1:5].tolist() == pytest.approx([-0.125, -0.125, 0.375, 0.375])
    assert rows[0, 5:7].tolist() == pytest.approx([0.125, 0.125])  # landmarks at the anchor's centre
    # a box that overlaps a better one beyond the threshold goes
    loc[2] = [-2.5, 0, 0, 0]  # anchor 2 moved onto anchor 0 (0.375 - 2.5 * 0.1 * 0.5 = 0.25)
    rows = post(loc, logits, landmarks, 32, 32)
    assert len(rows) == 2 and rows[1, 0] == pytest.approx(1 / (1 + math.exp(-2)))
    # probabilities straight from a model that applies its own softmax
    probs = np.tile([1.0, 0.0], (n, 1))
    probs[5] = [0.1, 0.9]
    assert post(loc, probs, landmarks, 32, 32, probabilities=True)[:, 0].tolist() == [0.9]
    assert post(loc, np.tile([5.0, -5.0], (n, 1)), landmarks, 32, 32).shape == (0, 15)

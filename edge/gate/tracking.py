"""Faces followed across frames, each with a confirmed state that one bad frame cannot flip.

A frame's classification is a vote; a face becomes *masked* or *unmasked*
once ``confirm`` of its last ``window`` votes agree, and stays so until
``confirm`` votes say otherwise (hysteresis). With ``confirm`` above half the
window, the two can never both hold. Pure Python, fed with timestamps, so
every case is a unit test without a camera.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from ..core.geometry import Box


class FaceState(StrEnum):
    PENDING = "pending"  # not enough agreeing votes yet
    MASKED = "masked"
    UNMASKED = "unmasked"


@dataclass(frozen=True)
class Observation:
    """One face in one frame, as the tracker needs it."""

    box: Box
    masked: bool  # this frame's vote
    score: float  # p(masked) of this frame, for logs


@dataclass
class Track:
    id: int
    box: Box
    last_seen: float
    votes: deque[bool]
    state: FaceState = FaceState.PENDING
    score: float = 0.0

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b``."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    A = np.asarray(a, dtype=np.float64)[:, None, :]
    B = np.asarray(b, dtype=np.float64)[None, :, :]
    iw = np.clip(np.minimum(A[..., 2], B[..., 2]) - np.maximum(A[..., 0], B[..., 0]), 0, None)
    ih = np.clip(np.minimum(A[..., 3], B[..., 3]) - np.maximum(A[..., 1], B[..., 1]), 0, None)
    inter = iw * ih
    area_a = (A[..., 2] - A[..., 0]) * (A[..., 3] - A[..., 1])
    area_b = (B[..., 2] - B[..., 0]) * (B[..., 3] - B[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, column), best overlap first, each row and column used once, IoU >= threshold."""
    pairs = []
    used_r, used_c = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


@dataclass
class Tracker:
    iou_match: float = 0.3
    window: int = 5
    confirm: int = 3
    forget_after_s: float = 1.0
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 1

    def update(self, t: float, observations: Sequence[Observation]) -> list[Track]:
        """Match this frame's faces to known ones, vote, and forget faces gone too long."""
        self.tracks = [tr for tr in self.tracks if t - tr.last_seen <= self.forget_after_s]
        pairs = greedy_match(
            iou_matrix([tr.box for tr in self.tracks], [o.box for o in observations]), self.iou_match
        )
        matched = {c for _, c in pairs}
        for r, c in pairs:
            self._vote(self.tracks[r], t, observations[c])
        for c, obs in enumerate(observations):
            if c not in matched:
                track = Track(self._next_id, obs.box, t, deque(maxlen=self.window))
                self._next_id += 1
                self.tracks.append(track)
                self._vote(track, t, obs)
        return list(self.tracks)

    def _vote(self, track: Track, t: float, obs: Observation) -> None:
        track.box, track.last_seen, track.score = obs.box, t, obs.score
        track.votes.append(obs.masked)
        masked = sum(track.votes)
        if masked >= self.confirm:
            track.state = FaceState.MASKED
        elif len(track.votes) - masked >= self.confirm:
            track.state = FaceState.UNMASKED

    def clear(self) -> None:
        """Forget every face (the camera was lost: what it saw before says nothing now)."""
        self.tracks = []

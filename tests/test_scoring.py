"""The scenes metric on hand-made cases, and the small service helpers (notify, snapshots)."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from maskgate.edge.core.errors import DataError
from maskgate.edge.gate.notify import Notifier
from maskgate.edge.gate.snapshots import SnapshotStore
from maskgate.edge.tools.scoring import Prediction, match_image, read_jsonl, score, seen_scenes

TRUTH = [
    ("with_mask", (10, 10, 50, 60)),  # 50 px high: counts
    ("without_mask", (100, 10, 140, 60)),  # counts
    ("with_mask", (200, 10, 220, 30)),  # 20 px: too small, left out
    ("mask_weared_incorrect", (300, 10, 340, 60)),  # left-out class
]


def test_found_right_and_extra_boxes():
    predicted = [
        Prediction((12, 12, 52, 62), "with_mask"),  # found, right
        Prediction((102, 8, 138, 58), "with_mask"),  # found, wrong label
        Prediction((300, 10, 340, 60), "without_mask"),  # on a left-out face: neither credit nor penalty
        Prediction((500, 500, 540, 540), "with_mask"),  # on nothing
    ]
    c = match_image(TRUTH, predicted, iou=0.4, min_height=32)
    assert (c["faces"], c["found"], c["right"], c["extra"]) == (2, 2, 1, 1)
    assert (c["found:without_mask"], c["right:without_mask"]) == (1, 0)


def test_one_prediction_matches_one_face_and_low_overlap_is_missed():
    two_faces = [("with_mask", (0, 0, 40, 40)), ("with_mask", (20, 0, 60, 40))]
    c = match_image(two_faces, [Prediction((10, 0, 50, 40), "with_mask")], iou=0.3, min_height=32)
    assert (c["faces"], c["found"]) == (2, 1)
    c = match_image(TRUTH[:1], [Prediction((30, 30, 70, 80), "with_mask")], iou=0.4, min_height=32)
    assert c["found"] == 0


def write_voc(root, scenes):
    (root / "annotations").mkdir(parents=True)
    for name, objects in scenes.items():
        xml = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b in objects
        )
        (root / "annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename>{xml}</annotation>"
        )
    return root


def test_score_over_a_folder_with_jsonl_round_trip_and_exclusions(tmp_path):
    voc = write_voc(tmp_path / "voc", {"a": TRUTH[:2], "b": TRUTH[:1], "c": TRUTH[1:2]})
    lines = [
        {
            "image": "a.jpg",
            "faces": [{"box": [10, 10, 50, 60], "label": "with_mask", "score": 0.9}],
            "ms": 20.0,
        },
        {
            "image": "b.jpg",
            "faces": [{"box": [10, 10, 50, 60], "label": "with_mask", "score": 0.8}],
            "ms": 30.0,
        },
        {"image": "c.jpg", "faces": [], "ms": 40.0},
    ]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in lines))
    predictions, latencies = read_jsonl(jsonl)
    assert latencies == [20.0, 30.0, 40.0]
    r = score(voc, predictions, iou=0.4, min_height=32)
    assert (r["images"], r["faces"], r["found"], r["right"]) == (3, 4, 2, 2)
    assert r["recall"] == 0.5 and r["accuracy_on_found"] == 1.0 and r["end_to_end_accuracy"] == 0.5
    assert r["per_class"]["without_mask"] == {"faces": 2, "recall": 0.0, "accuracy_on_found": None}
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps(
            {
                "roots": {"voc": str(tmp_path / "voc")},
                "samples": [
                    {
                        "path": "images/b.jpg",
                        "root": "voc",
                        "box": [1, 2, 3, 4],
                        "label": "x",
                        "split": "train",
                    },
                    {
                        "path": "images/c.jpg",
                        "root": "voc",
                        "box": [1, 2, 3, 4],
                        "label": "x",
                        "split": "test",
                    },
                    {"path": "with_mask/b.jpg", "root": "data", "box": None, "label": "x", "split": "train"},
                ],
            }
        )
    )
    assert seen_scenes(split) == {"b.jpg"}
    r = score(voc, predictions, exclude=seen_scenes(split))
    assert (r["images"], r["images_excluded"], r["faces"]) == (2, 1, 3)


def test_score_on_one_side_of_the_scene_split_also_with_exclusions(tmp_path):
    from conftest import maskgate
    from maskgate.edge.core.scene_split import side

    # scene0 and scene4 are on the tune side, scene3 and scene6 on the report side (by name hash)
    names = {"scene0": "tune", "scene3": "report", "scene4": "tune", "scene6": "report"}
    assert {n: side(f"{n}.jpg") for n in names} == names
    voc = write_voc(tmp_path / "voc", {n: TRUTH[:2] for n in names})
    hit = [{"box": [10, 10, 50, 60], "label": "with_mask", "score": 0.9}]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"image": f"{n}.jpg", "faces": hit if n != "scene6" else []}) + "\n" for n in names
        )
    )
    predictions, _ = read_jsonl(jsonl)
    r = score(voc, predictions, scenes="report")
    assert (r["scenes"], r["images"], r["images_other_side"], r["faces"], r["found"]) == (
        "report",
        2,
        2,
        4,
        1,
    )
    r = score(voc, predictions, scenes="tune", exclude={"scene4.jpg"})
    assert (r["images"], r["images_excluded"], r["images_other_side"], r["found"]) == (1, 1, 2, 1)
    assert score(voc, predictions)["images"] == 4
    with pytest.raises(ValueError, match="tune, report"):
        score(voc, predictions, scenes="test")

    split = tmp_path / "run" / "split.json"  # a run that trained on scene3: left out of the report side
    split.parent.mkdir()
    row = {"path": "images/scene3.jpg", "root": "voc", "box": None, "label": "none", "split": "train"}
    split.write_text(json.dumps({"roots": {"voc": str(voc)}, "samples": [row]}))
    out = tmp_path / "s.json"
    r = maskgate(
        "score", "--jsonl", str(jsonl), "--voc", str(voc), "--scenes", "report",
        "--exclude-seen", str(split.parent), "--json", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("report scenes: images 1, faces 2")
    doc = json.loads(out.read_text())
    assert (doc["images"], doc["images_excluded"], doc["images_other_side"], doc["recall"]) == (1, 1, 2, 0.0)
    r = maskgate("score", "--jsonl", str(jsonl), "--voc", str(voc), "--scenes", "test")
    assert r.returncode == 2 and "invalid choice: 'test'" in r.stderr


def test_scoring_inputs_that_do_not_fit_are_one_line(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"frame": 3, "faces": []}\n')
    with pytest.raises(DataError, match="line 1: not a maskgate detect line"):
        read_jsonl(bad)
    voc = write_voc(tmp_path / "voc", {"a": TRUTH})
    with pytest.raises(DataError, match="no image of .* appears in the detections"):
        score(voc, {"zzz.jpg": []})
    with pytest.raises(DataError, match="must contain annotations/"):
        score(tmp_path, {})


def test_score_command_rejects_an_overlap_that_would_match_anything():
    from conftest import assert_one_line_error, maskgate

    r = maskgate("score", "--jsonl", "x", "--voc", "y", "--iou", "0")
    assert_one_line_error(r, "--iou 0.0: must be above 0 and at most 1")


def test_notifier_speaks_the_systemd_protocol(tmp_path):
    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(1)
    n = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.watchdog_interval_s == 2.0
    n.ready("up")
    n.watchdog(now=10.0)
    n.watchdog(now=11.0)  # within half the interval: no second ping
    n.watchdog(now=12.5)
    received = [server.recv(100).decode() for _ in range(3)]
    assert received == ["READY=1\nSTATUS=up", "WATCHDOG=1", "WATCHDOG=1"]
    for _ in range(5000):  # nobody reads: the queue fills, and sending must not block
        n.send("WATCHDOG=1")
    server.close()
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None  # not ours
    assert not Notifier({}).enabled and Notifier({}).send("READY=1") is False


def test_a_snapshot_folder_that_cannot_be_made_is_a_config_error(tmp_path):
    from maskgate.edge.core.errors import ConfigError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="service.snapshot_dir: cannot create"):
        SnapshotStore(tmp_path / "file" / "snaps", max_bytes=1000)


def test_snapshots_stay_under_their_cap_oldest_first(tmp_path):
    from datetime import UTC, datetime, timedelta

    store = SnapshotStore(tmp_path / "s", max_bytes=3 * 1500)
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    paths = [
        store.save(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), "deny", start + timedelta(seconds=i))
        for i in range(6)
    ]
    kept = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert sum((tmp_path / "s" / k).stat().st_size for k in kept) <= 3 * 1500
    assert kept == sorted(p.name for p in paths[-len(kept) :]) and 1 <= len(kept) < 6

"""The comparison `make check-arm64` ends with (.ci/compare_detections.py): it passes identical runs and
fails on each kind of difference, so the check cannot pass on outputs that disagree."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("compare_detections", REPO / ".ci" / "compare_detections.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

RUN = [
    {"image": "a.jpg", "faces": [
        {"box": [10, 10, 50, 60], "label": "with_mask", "score": 0.97, "detection_score": 0.99},
        {"box": [100, 20, 140, 70], "label": "without_mask", "score": 0.91, "detection_score": 0.95},
    ]},
    {"image": "b.jpg", "faces": [{"box": [5, 5, 30, 40], "label": "without_mask", "score": 0.88,
                                  "detection_score": 0.9}]},
]  # fmt: skip
DEMO = (
    "deny face(s) #1: #1 p(masked)=0.01 37px [frame 2 (a.jpg)]\n"
    "unlock face(s) #2: #2 p(masked)=1.00 80px [frame 5 (b.jpg)]\n"
)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _run(tmp_path, other, demo_other=DEMO, capsys=None):
    (tmp_path / "ref.log").write_text(DEMO)
    (tmp_path / "other.log").write_text(demo_other)
    args = [_write(tmp_path / "ref.jsonl", RUN), _write(tmp_path / "other.jsonl", other),
            "--demo", str(tmp_path / "ref.log"), str(tmp_path / "other.log")]  # fmt: skip
    return compare.main(args)


def test_identical_runs_pass_and_the_verdict_is_the_last_line(tmp_path, capsys):
    other = copy.deepcopy(RUN)
    other[0]["faces"].reverse()  # the order of faces is not compared, only the faces
    other[0]["faces"][0]["score"] += 0.004
    assert _run(tmp_path, other) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (
        "arm64 against x86-64: 2 images, 3 faces: labels same, boxes within 0 px, scores within 0.0040 "
        "(tolerance 0.01); demo: 2 decisions, same: OK"
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r[0]["faces"][1].update(label="with_mask"), "without_mask against with_mask"),
        (lambda r: r[0]["faces"][0]["box"].__setitem__(2, 51), "boxes differ by up to 1 px"),
        (lambda r: r[1]["faces"][0].update(score=0.9), "scores differ by up to 0.0200"),
        (lambda r: r[0]["faces"].pop(), "2 faces against 1"),
        (lambda r: r.pop(), "b.jpg: only in x86-64"),
    ],
)
def test_each_kind_of_difference_fails(tmp_path, capsys, change, expected):
    other = copy.deepcopy(RUN)
    change(other)
    assert _run(tmp_path, other) == 1
    out = capsys.readouterr().out
    assert expected in out and out.strip().endswith("FAIL")


def test_a_different_decision_fails(tmp_path, capsys):
    assert _run(tmp_path, copy.deepcopy(RUN), DEMO.replace("#2: #2", "#3: #3")) == 1
    assert "demo: decision 'unlock face(s) #2" in capsys.readouterr().out


def test_decision_lines_compare_without_the_time_and_level_they_carry_off_the_journal(tmp_path, capsys):
    stamped = "".join(f"2026-12-01 14:52:0{i}.466 INFO {line}\n" for i, line in enumerate(DEMO.splitlines()))
    stamped += "2026-12-01 14:52:09.000 INFO stats: 30 frames\n"  # not a decision
    assert _run(tmp_path, copy.deepcopy(RUN), stamped) == 0
    assert capsys.readouterr().out.strip().endswith("demo: 2 decisions, same: OK")

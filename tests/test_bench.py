"""`maskgate bench`: its JSON schema, its statistics, running without TensorFlow, a bad source.

The benchmark's figures are measured by running it (docs/benchmarks.md), never asserted on here.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, face, maskgate
from maskgate.edge.core import scene_split
from maskgate.edge.tools import bench
from maskgate.edge.tools.bench import (
    SCHEMA,
    STAGES,
    BenchConfig,
    Series,
    busy_measurements,
    keras_plugin,
    ratios,
)


def test_statistics_of_known_timings():
    s = Series(ms=[float(x) for x in range(1, 101)], cpu_ms=[2.0] * 100, faces=[1, 3] * 50).stats()
    assert (
        s["p50"] == pytest.approx(50.5)
        and s["p95"] == pytest.approx(95.05)
        and s["p99"] == pytest.approx(99.01)
    )
    assert s["mean"] == pytest.approx(50.5) and s["fps"] == pytest.approx(1000 / 50.5)
    assert s["cpu_ms"] == 2.0 and s["faces_per_frame"] == 2.0 and s["n"] == 100
    assert Series().stats() is None


def test_ratios_compare_variants_on_the_same_frames():
    def variant(fps, per_face):
        return {"pipeline": {"total": {"fps": fps}}, "classifier": {"per_face": {"mean": per_face}}}

    run = {
        "variants": {"int8": variant(100.0, 2.0), "keras": variant(8.0, 60.0)},
        "detectors": {"ssd-int8@300x300": {"mean": 5.0}, "ssd-opencv@300x300": {"mean": 20.0}},
    }
    assert ratios(run) == {
        "pipeline_fps_int8_over_keras": 12.5,
        "classifier_per_face_keras_over_int8": 30.0,
        "detector_300x300_opencv_over_int8": 4.0,
    }


def test_against_a_peer_fps_is_a_ratio_and_end_to_end_a_difference():
    def variant(fps, **extra):
        return {"pipeline": {"total": {"fps": fps}}} | extra

    run = {
        "variants": {
            "int8": variant(100.0, classifier={"per_face": {"mean": 1.0}}),
            "aizoo": variant(40.0, scenes={"end_to_end_accuracy": 0.80}),
        },
        "detectors": {"retinaface-int8@frame": {"p50": 5.0, "scenes": {"end_to_end_accuracy": 0.90}}},
        "gate_detector": "retinaface-int8@frame",
    }
    out = ratios(run)
    assert out["pipeline_fps_int8_over_aizoo"] == 2.5
    assert out["end_to_end_int8_minus_aizoo"] == pytest.approx(0.10)
    del run["variants"]["aizoo"]["scenes"]  # no --voc: no accuracy to compare
    assert "end_to_end_int8_minus_aizoo" not in ratios(run)


def test_measurements_under_a_competing_load_are_named(monkeypatch):
    monkeypatch.setattr(bench, "load_average", lambda: 3.4)
    quiet, loaded = {"load_1min": 1.9}, Series(ms=[1.0, 2.0]).stats()
    assert loaded["load_1min"] == 3.4  # every measurement records the load it ended under
    runs = [
        {
            "threads": 1,
            "variants": {"int8": {"pipeline": {"total": quiet}}},
            "detectors": {"ssd-int8@300x300": loaded},
        },
        {"threads": 2, "variants": {"int8": {"pipeline": {"total": loaded}}}, "detectors": {}},
    ]
    # 1 thread on 2 cores: load 1.9 is the benchmark (and a little); 3.4 is something else running
    assert busy_measurements({"runs": runs}, cores=2) == [
        "detector ssd-int8@300x300 @ 1 thread(s) (load 3.4)",
        "pipeline int8 @ 2 thread(s) (load 3.4)",
    ]
    # a quiet machine names none
    monkeypatch.setattr(bench, "load_average", lambda: 0.2)
    calm = Series(ms=[1.0]).stats()
    runs[0]["detectors"]["ssd-int8@300x300"] = calm
    runs[1]["variants"]["int8"]["pipeline"]["total"] = calm
    assert busy_measurements({"runs": runs}, cores=2) == []


def test_options_are_validated():
    assert BenchConfig(threads="1,2,4", sizes="300x300,640x480").threads == [1, 2, 4]
    with pytest.raises(ValueError, match="thread counts must be 1 to 64"):
        BenchConfig(threads="0")
    with pytest.raises(ValueError, match="expected sizes as WIDTHxHEIGHT"):
        BenchConfig(sizes="big")
    with pytest.raises(ValueError, match="301x300: sides must be multiples of 4"):
        BenchConfig(sizes="301x300")  # never compare int8 at 300 with OpenCV at 301 under one name


def test_without_tensorflow_the_keras_variant_is_skipped_with_the_reason(monkeypatch):
    class Broken:
        name = "keras"

        def load(self):
            raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    monkeypatch.setattr("maskgate.edge.tools.bench.entry_points", lambda group: [Broken()])
    assert keras_plugin() == "TensorFlow is not installed (tensorflow); pip install 'maskgate[train]'"
    monkeypatch.setattr("maskgate.edge.tools.bench.entry_points", lambda group: [])
    assert "train stage is not installed" in keras_plugin()


@pytest.fixture
def frames_dir(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(d / f"{i}.jpg"), cv2.resize(face(rng, i % 2 == 0, 96), (160, 120)))
    return d


def test_a_short_run_writes_the_stable_json_schema(frames_dir, tmp_path, shared_models):
    out = tmp_path / "bench.json"
    env = {"MASKGATE_MIRROR": str(shared_models), "PYTHONPATH": str(REPO / "tests")}
    # a fresh interpreter that refuses to import TensorFlow: the benchmark must run without it
    code = (
        "import sys, importlib.abc\n"
        "class NoTF(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTF())\n"
        "from maskgate.edge.cli import main\n"
        f"sys.exit(main(['bench', '--source', {str(frames_dir)!r}, '--frames', '6', '--warmup', '1',"
        f" '--sizes', '300x300', '--threads', '1', '--keras', 'run', '--aizoo', '--json', {str(out)!r}]))\n"
    )
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | env,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == SCHEMA and doc["frames"] == 6 and doc["threads"] == 1
    assert doc["p50_ms"] > 0 and doc["p95_ms"] >= doc["p50_ms"] and doc["fps"] > 0
    assert set(doc["stages"]) == set(STAGES)
    assert doc["stages"]["total"]["p50"] >= doc["stages"]["detect"]["p50"] > 0
    # generated faces are no faces to the SSD: the classifier is still measured, on centre crops
    assert doc["variants"]["int8"]["classifier"]["per_face"]["n"] >= 6
    # the shipped bundle has no float model, and no TensorFlow here; the AIZOO reference needs neither,
    # only its two optional files in the mirror (without them it is skipped, saying how to fetch them)
    if not (shared_models / "face_mask_detection.caffemodel").is_file():
        assert set(doc["variants"]) == {"int8"} and "models fetch --for bench" in doc["skipped"]["aizoo"]
    else:
        assert set(doc["variants"]) == {"int8", "aizoo"}
        aizoo = doc["variants"]["aizoo"]
        assert "classifier" not in aizoo and "scenes" not in aizoo  # one pass; no --voc
        assert aizoo["pipeline"]["total"]["p50"] >= aizoo["pipeline"]["detect"]["p50"] > 0
        assert (
            aizoo["pipeline"]["classify"]["p50"] == 0.0 and doc["ratios"]["pipeline_fps_int8_over_aizoo"] > 0
        )
        assert "against peers (pipeline)" in r.stdout and "one pass: no classifier of its own" in r.stdout
    assert doc["skipped"]["keras"].startswith("TensorFlow is not installed")
    assert "float32 model" in doc["skipped"]["float32"]
    assert set(doc["detectors"]) == {
        "retinaface-int8@frame", "retinaface-float32@frame", "ssd-int8@300x300", "ssd-opencv@300x300"
    }  # fmt: skip
    assert doc["variants"]["int8"]["what"] == "retinaface-int8 + int8 classifier"  # the gate's own detector
    assert doc["detectors"]["retinaface-int8@frame"]["vs_float32"]["reference_faces"] == 0  # no faces here
    for key in ("cpu", "cores", "os", "python"):
        assert key in doc["machine"]
    assert doc["libraries"]["runtime"] == "ai-edge-litert" and doc["peak_rss_mb"] > 0
    assert "pipeline (ms per frame)" in r.stdout and "skipped keras: TensorFlow is not installed" in r.stdout


def test_a_bad_source_is_one_line(tmp_path):
    r = maskgate("bench", "--source", str(tmp_path / "nothing"), "--frames", "5")
    assert_one_line_error(r, "no such file, folder or camera")


def test_agreement_and_scenes_metric_on_hand_made_faces():
    from maskgate.edge.gate.analyzer import Face
    from maskgate.edge.tools.bench import agreement, scenes_metric

    def f(box, score, label="with_mask"):
        return Face(box, score, label, 0.9, 0.9, True)

    reference = [[f((0, 0, 40, 40), 0.9), f((100, 0, 140, 40), 0.6), f((200, 0, 240, 40), 0.3)]]
    candidate = [[f((1, 1, 40, 40), 0.85), f((100, 0, 140, 40), 0.45), f((300, 0, 340, 40), 0.7)]]
    a = agreement(reference, candidate, min_score=0.5)
    assert (a["reference_faces"], a["found"], a["recall"]) == (2, 1, 0.5)  # 0.45 is below the bar
    truth = {"a.jpg": [("with_mask", (0, 0, 40, 40)), ("without_mask", (100, 0, 140, 40))]}
    m = scenes_metric(truth, ["a.jpg", "a.jpg", None], [candidate[0], candidate[0], []])
    assert m == {"images": 1, "side": None, "faces": 2, "recall": 1.0, "recall_masked": 1.0,
                 "recall_unmasked": 1.0, "accuracy_on_found": 0.5, "end_to_end_accuracy": 0.5,
                 "extra_boxes_per_image": 1.0}  # fmt: skip
    # repeats count once; one side of the scene split only
    side = scene_split.side("a.jpg")
    other = "report" if side == "tune" else "tune"
    assert scenes_metric(truth, ["a.jpg"], [candidate[0]], side=side)["images"] == 1
    assert scenes_metric(truth, ["a.jpg"], [candidate[0]], side=other)["images"] == 0

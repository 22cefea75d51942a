"""`maskgate detect`, `run` and `score` as a user runs them: real SSD, the shipped int8 bundle, mock pins.

`run` is driven like systemd drives it: READY=1 and watchdog pings arrive on
a NOTIFY_SOCKET, and SIGTERM must end it within 2 s with the relay off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import cv2
import pytest

from conftest import REPO, SHARED, assert_one_line_error, maskgate

SCENES = SHARED / "data" / "scenes"
# Scenes with masked and unmasked faces large enough for the default detector.
SAMPLE = ["maksssksksss0.jpg", "maksssksksss1.jpg", "maksssksksss2.jpg"]


@pytest.fixture
def env(shared_models, tmp_path):
    if not (SCENES / "images" / SAMPLE[0]).is_file():
        pytest.skip(f"shared scenes not found at {SCENES}")
    return {"MASKGATE_MIRROR": str(shared_models), "MASKGATE_CACHE": str(tmp_path / "cache")}


@pytest.fixture
def scenes(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    for name in SAMPLE:
        shutil.copy(SCENES / "images" / name, d / name)
    return d


def test_detect_writes_one_line_per_image_and_annotations(env, scenes, tmp_path):
    out, ann = tmp_path / "d.jsonl", tmp_path / "ann"
    r = maskgate(
        "detect", "--source", str(scenes), "--jsonl", str(out), "--annotate", str(ann), env_extra=env
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == SAMPLE
    assert sum(len(row["faces"]) for row in rows) >= 3
    for row in rows:
        h, w = cv2.imread(str(scenes / row["image"])).shape[:2]
        assert row["ms"] > 0
        for f in row["faces"]:
            x1, y1, x2, y2 = f["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert f["label"] in ("with_mask", "without_mask") and 0.5 <= f["score"] <= 1.0
    assert sorted(p.name for p in ann.iterdir()) == SAMPLE
    assert "3 frames" in r.stdout and "p50" in r.stdout

    score = tmp_path / "score.json"
    r = maskgate("score", "--jsonl", str(out), "--voc", str(SCENES), "--json", str(score), env_extra=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(score.read_text())
    assert result["images"] == 3 and result["faces"] > 0 and 0 < result["recall"] <= 1
    assert "end-to-end accuracy" in r.stdout


def test_detect_on_a_video_numbers_frames_and_writes_an_annotated_video(env, scenes, tmp_path):
    video = tmp_path / "clip.avi"
    frame = cv2.imread(str(scenes / SAMPLE[0]))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, frame.shape[1::-1])
    for _ in range(4):
        writer.write(frame)
    writer.release()
    out, ann = tmp_path / "v.jsonl", tmp_path / "ann"
    r = maskgate("detect", "--source", str(video), "--jsonl", str(out), "--annotate", str(ann), env_extra=env)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["frame"] for row in rows] == [0, 1, 2, 3] and all(row["faces"] for row in rows)
    cap = cv2.VideoCapture(str(ann / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--source", "no/such/folder"], ["source no/such/folder: no such file, folder or camera"]),
        (["--bundle", "no/such/bundle"], ["bundle no/such/bundle not found"]),
        (["--set", "detector.confidence=2"], ["detector.confidence", "less than or equal to 0.99"]),
        (["--set", "detector.colour=1"], ["detector.colour: unknown key"]),
    ],
)
def test_detect_mistakes_are_one_line_and_leave_nothing(env, scenes, tmp_path, args, fragments):
    out = tmp_path / "d.jsonl"
    base = ["--source", str(scenes)] if "--source" not in args else []
    r = maskgate(
        "detect", *base, "--jsonl", str(out), "--annotate", str(tmp_path / "ann"), *args, env_extra=env
    )
    assert_one_line_error(r, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["scenes"]  # nothing written


def test_detect_refuses_a_corrupt_bundle(env, scenes, tmp_path):
    from maskgate.edge.core.bundle import default_bundle_path

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    data = bytearray((bundle / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.tflite").write_bytes(bytes(data))
    r = maskgate(
        "detect",
        "--source",
        str(scenes),
        "--bundle",
        str(bundle),
        "--jsonl",
        str(tmp_path / "x"),
        env_extra=env,
    )
    assert_one_line_error(r, "model.tflite is corrupt or was modified")
    assert not (tmp_path / "x").exists()


def test_run_validate_config_names_a_bad_key(env, tmp_path):
    cfg = tmp_path / "gate.toml"
    cfg.write_text("[decision]\npulse_sec = 2\n")
    assert_one_line_error(
        maskgate("run", "--config", str(cfg), "--validate-config", env_extra=env),
        f"config {cfg}: decision.pulse_sec: unknown key",
    )


def test_validate_config_lists_every_problem_and_checks_the_bundles_it_names(env, tmp_path):
    cfg = tmp_path / "gate.toml"
    cfg.write_text(
        '[decision]\npulse_sec = 2\n[outputs]\nrelay_pin = "BOARD11"\ngreen_pin = 17\n[source]\nfps = 0\n'
    )
    r = maskgate("run", "--config", str(cfg), "--validate-config", env_extra=env)
    errors = [line for line in r.stderr.splitlines() if line.startswith("maskgate: error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(errors) == 3, r.stderr  # every problem, each on its line
    assert any("decision.pulse_sec: unknown key" in e for e in errors)
    assert any("source.fps" in e for e in errors)
    assert any("pin 17 is given to more than one output (relay_pin, green_pin" in e for e in errors)
    # a valid file whose bundle is not a bundle: the gate would fail at start, so validation says so
    cfg.write_text(f'[classifier]\nbundle = "{tmp_path}"\n')
    r = maskgate("run", "--config", str(cfg), "--validate-config", env_extra=env)
    assert_one_line_error(r, "classifier.bundle", "not a maskgate bundle")
    # a detector bundle of the other network: the backend would refuse it at start
    ssd = REPO / "models" / "detector"
    cfg.write_text(f'[detector]\nbackend = "retinaface-int8"\nbundle = "{ssd}"\n')
    r = maskgate("run", "--config", str(cfg), "--validate-config", env_extra=env)
    assert_one_line_error(r, "detector.bundle", "holds the ssd network; retinaface-int8 needs retinaface")


def test_demo_run_prints_decisions_and_ends_with_the_relay_off(env, scenes):
    r = maskgate(
        "run",
        "--config",
        "systemd/demo.toml",
        "--source",
        str(scenes),
        "--set",
        "source.pace=false",
        env_extra=env,
    )
    assert r.returncode == 0, r.stderr
    log = r.stderr
    assert "outputs: relay on GPIO17, green on GPIO27, red on GPIO22 (all off)" in log
    assert "deny" in log or "unlock" in log
    assert "stats: 30 frames" in log


def _notify_socket(tmp_path) -> tuple[socket.socket, str]:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(60)
    return sock, address


def _start_run(env, tmp_path, *args):
    sock, address = _notify_socket(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "maskgate.edge.cli", "run", "--set", "outputs.pin_factory=mock", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | env | {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"},
    )
    return proc, sock


@contextlib.contextmanager
def _stopped_by(proc: subprocess.Popen, sock: socket.socket, sig: int):
    """Run the block, then send ``sig``: the gate must be gone within 2 s."""
    try:
        yield
        t = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=10)
        assert time.monotonic() - t < 2.0
    finally:
        proc.kill()
        sock.close()


def _messages(sock, until: str) -> list[str]:
    seen = []
    while until not in seen:
        seen.append(sock.recv(200).decode().split("\n")[0])
    return seen


def test_run_tells_systemd_it_is_ready_pings_the_watchdog_and_stops_on_sigterm(env, scenes, tmp_path):
    proc, sock = _start_run(env, tmp_path, "--source", str(scenes), "--set", "source.loop=true")
    with _stopped_by(proc, sock, signal.SIGTERM):
        assert _messages(sock, "READY=1")[-1] == "READY=1"
        assert _messages(sock, "WATCHDOG=1")[-1] == "WATCHDOG=1"
        assert _messages(sock, "WATCHDOG=1")[-1] == "WATCHDOG=1"  # keeps pinging while it runs
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping" in err


def test_run_without_its_camera_keeps_retrying_and_still_stops_promptly(env, tmp_path):
    proc, sock = _start_run(
        env,
        tmp_path,
        "--source",
        "7",
        "--set",
        "source.reconnect_initial_s=0.1",
        "--set",
        "source.reconnect_max_s=0.2",
    )
    with _stopped_by(proc, sock, signal.SIGINT):
        time.sleep(4)  # models load, then the camera is tried several times
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert err.count("camera 7: cannot open; retrying") == 1 and "Traceback" not in err


def test_run_on_a_machine_without_gpio_says_how_to_simulate(env, scenes):
    r = maskgate("run", "--source", str(scenes), "--set", "outputs.pin_factory=native", env_extra=env)
    assert_one_line_error(r, "outputs.pin_factory")

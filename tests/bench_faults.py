"""The fault benchmark: bad files and hung processes thrown at the real commands, counted.

Not a test (``make benchmark-faults`` runs it; its figures go into docs/runtime.md): it starts
real ``maskgate`` processes on generated hostile input and reports, per family, how many were
processed, skipped, refused in one line, or crashed (a traceback, or an exit status the rules do
not allow). Then it freezes, GIL-locks and kills a gate during a relay pulse and measures how long
the relay stayed on, from the guard's own log; and it soaks a gate for N frames and samples its
memory.

    python tests/bench_faults.py [--images N] [--bundles N] [--configs N] [--soak-frames N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

from fakes import bmp_header, png  # noqa: E402 - beside this script

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKGATE_SHARED", REPO.parent / "shared"))
SCENE = SHARED / "data" / "scenes" / "images" / "maksssksksss4.jpg"


def maskgate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"MASKGATE_MIRROR": str(SHARED / "models")}
    return subprocess.run([sys.executable, "-m", "maskgate.edge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)  # fmt: skip


def verdict(r: subprocess.CompletedProcess) -> str:
    """processed (0), refused (2 with exactly one error line), or crashed (anything else)."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("maskgate: error:")]
    if "Traceback" in r.stderr:
        return "crashed"
    if r.returncode == 0:
        return "processed"
    if r.returncode == 2 and len(errors) >= 1:
        return "refused"
    return "crashed"


# --- images ---------------------------------------------------------------------------------------


def bad_images(folder: Path, n: int, rng: random.Random) -> int:
    """``n`` hostile files: bombs, truncations, lies about format, random bytes with real magic."""
    good = SCENE.read_bytes()
    makers = [
        lambda: png(rng.randint(7000, 100_000), rng.randint(7000, 100_000), rows=b"\0" * rng.randint(0, 50)),
        lambda: png(8000, 6000),  # valid, 48 MP
        lambda: bmp_header(rng.randint(1 << 14, 1 << 17), rng.randint(-(1 << 17), 1 << 17)),
        lambda: good[: rng.randint(0, len(good))],
        lambda: bytes(b ^ (rng.random() < 0.01) * rng.randint(1, 255) for b in good),
        lambda: rng.choice([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF89a"]) + rng.randbytes(200),
        lambda: b"",
        lambda: b"not an image at all\n" * rng.randint(1, 50),
    ]  # fmt: skip
    for i in range(n):
        (folder / f"bad{i:03d}{rng.choice(['.jpg', '.png', '.bmp', '.gif', '.webp'])}").write_bytes(
            makers[i % len(makers)]()
        )
    shutil.copy(SCENE, folder / "good.jpg")
    return n


def image_family(n: int, work: Path, rng: random.Random) -> dict:
    folder = work / "images"
    folder.mkdir()
    bad_images(folder, n, rng)
    out = {}
    r = maskgate("-q", "detect", "--source", str(folder), "--jsonl", str(work / "d.jsonl"))
    rows = len((work / "d.jsonl").read_text().splitlines()) if (work / "d.jsonl").exists() else 0
    skipped = sum(line.startswith("  skipped ") for line in r.stderr.splitlines())
    out["detect"] = {"files": n + 1, "verdict": verdict(r), "processed": rows, "skipped": skipped}
    r = maskgate("-q", "crop-faces", "--source", str(folder), "--out", str(work / "crops"))
    summary = json.loads((work / "crops" / "summary.json").read_text()) if (work / "crops").exists() else {}
    out["crop-faces"] = {"files": n + 1, "verdict": verdict(r), "processed": summary.get("images_read", 0),
                         "skipped": len(summary.get("unreadable", []))}  # fmt: skip
    # one at a time too: a single hostile file must be a skip, not a crash
    per_file = Counter()
    for path in sorted(folder.iterdir())[: min(n, 60)]:
        r = maskgate("-q", "detect", "--source", str(path), "--jsonl", str(work / "one.jsonl"))
        per_file[verdict(r)] += 1
        (work / "one.jsonl").unlink(missing_ok=True)
    out["detect, one file each"] = dict(per_file)
    return out


# --- bundles --------------------------------------------------------------------------------------


def _reseal(folder: Path) -> None:
    from maskgate.edge.core.bundle import write_checksums

    write_checksums(folder)


def bundle_family(n: int, work: Path, rng: random.Random) -> dict:
    from maskgate.edge.core.bundle import default_bundle_path

    def mutate(kind: str, i: int) -> Path:
        b = work / f"b{i:03d}"
        shutil.copytree(default_bundle_path(kind), b)
        meta = json.loads((b / "metadata.json").read_text())
        choice = i % 10
        if choice == 0:  # flip bytes of the model, checksums untouched
            data = bytearray((b / "model.tflite").read_bytes())
            data[rng.randrange(len(data))] ^= 0xFF
            (b / "model.tflite").write_bytes(bytes(data))
        elif choice == 1:  # truncated model, resealed
            data = (b / "model.tflite").read_bytes()
            (b / "model.tflite").write_bytes(data[: rng.randint(0, len(data))])
            _reseal(b)
        elif choice == 2:
            (b / "SHA256SUMS").write_bytes(rng.randbytes(rng.randint(0, 300)))
        elif choice == 3:
            (b / "labels.txt").write_bytes(rng.randbytes(40))
            _reseal(b)
        elif choice == 4:  # a value of the wrong type or range somewhere in the metadata, resealed
            key = rng.choice(sorted(meta))
            meta[key] = rng.choice([None, -1, 1.5, "x", [], {}, True, 10**30])
            (b / "metadata.json").write_text(json.dumps(meta))
            _reseal(b)
        elif choice == 5:  # a key removed
            meta.pop(rng.choice(sorted(meta)))
            (b / "metadata.json").write_text(json.dumps(meta))
            _reseal(b)
        elif choice == 6:  # the other kind's model inside
            other = "detector" if kind == "classifier" else "classifier"
            shutil.copy(default_bundle_path(other) / "model.tflite", b / "model.tflite")
            _reseal(b)
        elif choice == 7:
            (b / "metadata.json").write_bytes(rng.randbytes(100))
            _reseal(b)
        elif choice == 8:  # the threshold of an unlock-for-everyone bundle
            meta["threshold"] = rng.choice([-1, 0, 1, 2])
            (b / "metadata.json").write_text(json.dumps(meta))
            _reseal(b)
        else:
            (b / rng.choice(["model.tflite", "labels.txt", "metadata.json"])).unlink()
        return b

    counts, accepted = Counter(), []
    for i in range(n):
        kind = "classifier" if i % 2 == 0 else "detector"
        b = mutate(kind, i)
        flag = ["--bundle", str(b)] if kind == "classifier" else ["--set", f"detector.bundle={b}"]
        r = maskgate("-q", "detect", "--source", str(SCENE), "--jsonl", str(work / f"b{i}.jsonl"), *flag)
        counts[verdict(r)] += 1
        if verdict(r) == "processed":  # harmless only if what changed is informational: listed to check
            accepted.append(f"{kind} mutation {i % 10}: {_changed(kind, b)}")
    return {"detect --bundle": dict(counts) | {"bundles": n}, "accepted": accepted}


def _changed(kind: str, folder: Path) -> str:
    """Which top-level metadata keys differ from the shipped bundle's."""
    from maskgate.edge.core.bundle import default_bundle_path

    before = json.loads((default_bundle_path(kind) / "metadata.json").read_text())
    try:
        after = json.loads((folder / "metadata.json").read_text())
    except ValueError:
        return "metadata unreadable"
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return ", ".join(keys) or "no metadata key"


# --- configs --------------------------------------------------------------------------------------


def config_family(n: int, work: Path, rng: random.Random) -> dict:
    from maskgate.edge.gate.config import GateConfig

    sections = {name: list(f.annotation.model_fields) for name, f in GateConfig.model_fields.items()}
    values = ["true", "false", "-1", "0", "99999", "1e309", '"GPIO17"', '"BOARD11"', '"J8:1"', '""', "[]",
              '"picamera"', "[1, 2]", "0.5", '"none"', "{a = 1}", '"x" ', "nan"]  # fmt: skip
    counts = Counter()
    for i in range(n):
        lines = []
        for section in rng.sample(sorted(sections), rng.randint(1, 3)):
            lines.append(f"[{section}]")
            for key in rng.sample(sections[section] + ["typo"], rng.randint(1, 3)):
                lines.append(f"{key} = {rng.choice(values)}")
        if rng.random() < 0.1:
            lines.append("this is [not toml")
        path = work / f"c{i:03d}.toml"
        path.write_text("\n".join(lines) + "\n")
        counts[verdict(maskgate("run", "--config", str(path), "--validate-config", timeout=60))] += 1
    return {"run --validate-config": dict(counts) | {"configs": n}}


# --- the relay under faults ------------------------------------------------------------------------

GATE = textwrap.dedent("""
    import sys, time
    from maskgate.edge.gate.config import OutputsConfig
    from maskgate.edge.gate.guard import GuardedRelay
    relay = GuardedRelay(OutputsConfig(pin_factory="mock"), max_on_s=float(sys.argv[1]))
    print(relay.pid, flush=True)
    relay.pulse()
    if sys.argv[2] == "gil":
        import re
        re.match(r"(a+)+$", "a" * 40 + "b")  # never returns, never lets the GIL go
    time.sleep(120)
""")


def relay_on_time(fault: str, pulse_s: float) -> float:
    """Seconds from the guard's 'relay on' to its 'relay off' with the gate process frozen, GIL-bound
    or killed right after asking for a pulse."""
    proc = subprocess.Popen([sys.executable, "-c", GATE, str(pulse_s), fault], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    guard = int(proc.stdout.readline())
    stamps: dict[str, float] = {}

    def read() -> None:
        for line in proc.stderr:
            for word in ("relay on", "relay off"):
                if word in line and word not in stamps:
                    stamps[word] = time.monotonic()

    threading.Thread(target=read, daemon=True).start()
    while "relay on" not in stamps:
        time.sleep(0.001)
    if fault == "sigstop":
        os.kill(proc.pid, signal.SIGSTOP)
    elif fault == "sigkill":
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + pulse_s + 30
    while "relay off" not in stamps and time.monotonic() < deadline:
        time.sleep(0.001)
    for pid in (proc.pid, guard):
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return stamps.get("relay off", float("inf")) - stamps["relay on"]


# --- soak ----------------------------------------------------------------------------------------


def soak(frames: int) -> dict:
    """RSS of a gate on looping scenes (no pacing) over ``frames`` frames, sampled every second."""
    scenes = str(SHARED / "data" / "scenes" / "images" / "maksssksksss[0-9]*.jpg")
    settings = [
        "source.loop=true",
        "source.pace=false",
        "source.frames_per_image=1",
        f"source.max_frames={frames}",
    ]
    cli = [sys.executable, "-m", "maskgate.edge.cli", "-q", "run", "--config", "systemd/demo.toml"]
    args = [*cli, "--source", scenes, *(x for s in settings for x in ("--set", s))]
    env = os.environ | {"MASKGATE_MIRROR": str(SHARED / "models")}
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    samples, start = [], time.monotonic()
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            samples.append(
                int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            )
        except (OSError, StopIteration):
            pass
        time.sleep(1.0)
    stderr = proc.stderr.read()
    settled = samples[len(samples) // 5 :] or samples  # after the models are loaded and warm
    return {"frames": frames, "seconds": round(time.monotonic() - start, 1), "exit": proc.returncode,
            "rss_mb_first": round(samples[0] / 1024, 1) if samples else None,
            "rss_mb_settled_min": round(min(settled) / 1024, 1) if settled else None,
            "rss_mb_max": round(max(samples) / 1024, 1) if samples else None,
            "rss_mb_last": round(samples[-1] / 1024, 1) if samples else None,
            "traceback": "Traceback" in stderr}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--bundles", type=int, default=80)
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--pulse", type=float, default=3.0)
    ap.add_argument("--soak-frames", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        families = [("images", image_family, args.images), ("bundles", bundle_family, args.bundles),
                    ("configs", config_family, args.configs)]  # fmt: skip
        for name, family, n in families:
            (work / name).mkdir()
            t = time.monotonic()
            report[name] = family(n, work / name, rng)
            print(f"{name} ({time.monotonic() - t:.0f} s): {json.dumps(report[name])}", flush=True)
    report["relay_on_s"] = {f: round(relay_on_time(f, args.pulse), 3) for f in ("sigstop", "gil", "sigkill")}
    report["relay_on_s"]["pulse_s"] = args.pulse
    print(f"relay on-time under faults: {json.dumps(report['relay_on_s'])}", flush=True)
    if args.soak_frames:
        report["soak"] = soak(args.soak_frames)
        print(f"soak: {json.dumps(report['soak'])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

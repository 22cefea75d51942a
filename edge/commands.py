"""The device commands: ``run``, ``detect``, ``score``, ``bench``, ``crop-faces`` and ``outputs``.

Each builds its ``GateConfig`` the same way: the file (``--config``), then
the shortcut flags and ``--set key=value`` overrides on top, validated as a
whole, so a bad value names its key whichever way it came in.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from .config import DEFAULT_PATH, GateConfig, load, parse_override
from .errors import ConfigError

logger = logging.getLogger("maskgate")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the gate: camera, faces, mask decision, relay and LEDs",
        description="Run the gate until stopped (SIGTERM/SIGINT) or a file source ends. Reads "
        f"--config, else $MASKGATE_CONFIG, else {DEFAULT_PATH} if present, else built-in defaults.",
    )
    _config_options(p, default_note=f"default: {DEFAULT_PATH} if present")
    p.add_argument("--validate-config", action="store_true", help="check the configuration, print it, exit")
    p.set_defaults(handler=_run)

    p = sub.add_parser(
        "detect",
        help="find and classify faces in images or a video; one JSON line per frame",
        description="Batch inference: one JSON line per image or frame with each face's box (pixels of "
        "the original frame), label and score. Uses the configuration's detector and classifier "
        "sections when --config is given, else the defaults.",
    )
    _config_options(p, default_note="default: built-in defaults", source_required=True)
    p.add_argument("--jsonl", type=Path, required=True, help="file to write, one JSON line per frame")
    p.add_argument("--annotate", type=Path, help="folder to create with annotated images or video")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.set_defaults(handler=_detect)

    p = sub.add_parser(
        "score",
        help="score detect output against Pascal VOC face boxes (the scenes benchmark)",
        description="Detection recall, accuracy on found faces and end-to-end accuracy of a "
        "`maskgate detect` JSONL file against VOC annotations.",
    )
    p.add_argument("--jsonl", type=Path, required=True, help="output of maskgate detect over VOC images/")
    p.add_argument("--voc", type=Path, required=True, help="VOC folder with annotations/")
    p.add_argument("--iou", type=float, default=0.4, help="overlap at which a face counts as found (0.4)")
    p.add_argument("--min-height", type=int, default=32, help="smallest annotated face counted, px (32)")
    p.add_argument(
        "--exclude-seen",
        type=Path,
        metavar="RUN_DIR",
        help="leave out the scenes this training run trained or validated on (its split.json)",
    )
    p.add_argument("--json", type=Path, dest="json_out", help="also write the figures as JSON")
    p.set_defaults(handler=_score)

    from .bench import BenchConfig
    from .cli import add_config_command

    add_config_command(
        sub,
        "bench",
        BenchConfig,
        required=(),
        handler=_bench,
        help="measure latency on this device: each stage, int8 against float, frames per second",
        description="Benchmark the detector, the classifier and the whole pipeline on the same frames, "
        "int8 against float32 and (with --keras and TensorFlow) the usual Keras model.predict path; "
        "print a table, and write JSON (--json) and a plot (--plot) if asked.",
    )

    from .crop_faces import CropFacesConfig

    add_config_command(
        sub,
        "crop-faces",
        CropFacesConfig,
        required=("source", "out"),
        handler=_crop_faces,
        help="cut the faces out of photos (a training set), optionally sorted by class by the classifier",
        description="Run the face detector over photos and write each face (with a margin) as a PNG, "
        "flat or, with --classify, in a folder per class of the classifier; plus crops.csv (source, "
        "boxes, scores, labels) and summary.json. The folder appears only when the run completes.",
    )

    p = sub.add_parser("outputs", help="drive the gate's GPIO outputs directly: off, or a wiring test")
    osub = p.add_subparsers(dest="outputs_command", required=True, metavar="ACTION")
    o = osub.add_parser("off", help="drive every configured output off (systemd ExecStopPost uses this)")
    _config_options(o, default_note=f"default: {DEFAULT_PATH} if present", shortcuts=False)
    o.set_defaults(handler=_outputs_off)
    o = osub.add_parser("test", help="pulse the relay, then light each LED and the buzzer in turn")
    _config_options(o, default_note=f"default: {DEFAULT_PATH} if present", shortcuts=False)
    o.set_defaults(handler=_outputs_test)


def _config_options(
    p: argparse.ArgumentParser, *, default_note: str, source_required: bool = False, shortcuts: bool = True
) -> None:
    p.add_argument("--config", type=Path, help=f"TOML configuration file ({default_note})")
    if shortcuts:
        p.add_argument(
            "--source",
            required=source_required,
            help="sets source.uri: picamera, a camera index, video, URL, image, folder or glob",
        )
        p.add_argument("--bundle", type=Path, help="sets classifier.bundle: a classifier bundle folder")
        p.add_argument("--detector", help="sets detector.backend")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one setting, e.g. --set detector.confidence=0.6 (repeatable)",
    )


def gate_config(args: argparse.Namespace, *, system_default: bool = True) -> tuple[GateConfig, str]:
    """The configuration from ``--config`` (or the system default) with the command line on top."""
    overrides = [parse_override(text) for text in args.overrides]
    for key, attr in (
        ("source.uri", "source"),
        ("classifier.bundle", "bundle"),
        ("detector.backend", "detector"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append((key, str(value)))
    if getattr(args, "max_frames", None) is not None:
        overrides.append(("source.max_frames", args.max_frames))
    return load(args.config, overrides, system_default=system_default)


def _run(args: argparse.Namespace) -> int:
    cfg, origin = gate_config(args)
    if args.validate_config:
        print(f"# {origin}: valid")
        print(_as_toml(cfg))
        return 0
    logger.info("configuration: %s", origin)
    from .service import run_gate

    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    return run_gate(cfg, stop)


def _detect(args: argparse.Namespace) -> int:
    cfg, _ = gate_config(args, system_default=False)
    from .detect import detect

    summary = detect(cfg, jsonl=args.jsonl, annotate_dir=args.annotate, progress=sys.stderr.isatty())
    lat = summary["latency_ms"]
    print(
        f"{summary['frames']} frames, {summary['faces']} faces, per frame p50 {lat['p50']:.1f} ms "
        f"p95 {lat['p95']:.1f} ms; wrote {args.jsonl}"
        + (f" and {args.annotate}/" if args.annotate else "")
        + (f"; skipped {len(summary['skipped'])} unreadable file(s)" if summary["skipped"] else "")
    )
    for name, reason in summary["skipped"]:
        print(f"  skipped {name}: {reason}", file=sys.stderr)
    return 0


def _score(args: argparse.Namespace) -> int:
    from . import atomic
    from .scoring import format_report, read_jsonl, score, seen_scenes
    from .timing import summarize

    if not 0 < args.iou <= 1:
        raise ConfigError(f"--iou {args.iou}: must be above 0 and at most 1")
    if args.min_height < 1:
        raise ConfigError(f"--min-height {args.min_height}: must be at least 1")
    predictions, latencies = read_jsonl(args.jsonl)
    exclude = seen_scenes(args.exclude_seen / "split.json") if args.exclude_seen else set()
    result = score(args.voc, predictions, iou=args.iou, min_height=args.min_height, exclude=exclude)
    result["latency_ms"] = summarize(latencies)
    print(format_report(result))
    if args.json_out:
        atomic.write_text(args.json_out, json.dumps(result, indent=2) + "\n")
    return 0


def _crop_faces(cfg, args: argparse.Namespace) -> int:
    from .crop_faces import crop_faces, format_summary

    summary = crop_faces(cfg, progress=sys.stderr.isatty() and args.quiet == 0)
    print(format_summary(summary, cfg.out))
    return 0


def _bench(cfg, args: argparse.Namespace) -> int:
    from . import atomic
    from .bench import format_table, plot, run_bench

    for path, flag in ((cfg.json_out, "--json"), (cfg.plot, "--plot")):
        if path is not None:
            atomic.check_creatable(path, flag)
    result = run_bench(cfg)
    print(format_table(result))
    if cfg.json_out is not None:
        atomic.write_text(cfg.json_out, json.dumps(result, indent=2) + "\n")
    if cfg.plot is not None:
        plot(result, cfg.plot)
    return 0


def _outputs(args: argparse.Namespace):
    from .outputs import Outputs

    cfg, _ = gate_config(args)
    return cfg, Outputs.from_config(cfg.outputs, pulse_s=cfg.decision.pulse_s)


def _outputs_off(args: argparse.Namespace) -> int:
    _, outputs = _outputs(args)
    with outputs:
        outputs.off()
        print(
            "outputs off: "
            + (", ".join(f"{d.name} ({d.pin})" for d in outputs.devices()) or "none configured")
        )
    return 0


def _outputs_test(args: argparse.Namespace) -> int:
    import time

    cfg, outputs = _outputs(args)
    with outputs:
        for device in outputs.devices():
            print(f"{device.name} ({device.pin}) on", flush=True)
            device.on()  # the relay's on() is its bounded pulse
            time.sleep(min(1.0, cfg.decision.pulse_s))
            device.off()
    return 0


def _as_toml(cfg: GateConfig) -> str:
    """The resolved configuration as TOML (what a file with every key set would say)."""
    lines = []
    for section, values in cfg.model_dump(mode="json").items():
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            if value is None:  # TOML has no null: pins say false, other keys are left out
                lines.append(f"{key} = false" if key.endswith("_pin") else f"# {key} = (none)")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines).lstrip()

"""``maskgate detect``, ``score``, ``bench`` and ``crop-faces``: offline tools on the gate's pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.errors import ConfigError
from ..core.scene_split import SIDES
from ..tools.config import BenchConfig, CropFacesConfig
from ..tools.peers import REFERENCES
from .options import add_config_command, add_gate_options, gate_config

# The gate settings a tool takes shortcuts for; the rest through --config and --set.
BENCH_SHORTCUTS = ("bundle",)  # bench measures every detector backend itself
CROP_SHORTCUTS = ("bundle", "detector")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="find and classify faces in images or a video; one JSON line per frame",
        description="Batch inference: one JSON line per image or frame with each face's box (pixels of "
        "the original frame), label and score. Uses the configuration's detector and classifier "
        "sections when --config is given, else the defaults.",
    )
    add_gate_options(p, default_note="default: built-in defaults", source_required=True)
    p.add_argument(
        "--jsonl", type=Path, metavar="PATH", required=True, help="file to write, one JSON line per frame"
    )
    p.add_argument(
        "--annotate", type=Path, metavar="PATH", help="folder to create with annotated images or video"
    )
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after this many frames")
    p.add_argument(
        "--reference",
        choices=REFERENCES,
        help="run a peer's published pipeline instead of maskgate's, with its own labels, for maskgate "
        "score (aizoo: AIZOO's single-stage mask detector; its files: maskgate models fetch --for bench)",
    )
    p.set_defaults(handler=_detect)

    p = sub.add_parser(
        "score",
        help="score detect output against Pascal VOC face boxes (the scenes benchmark)",
        description="Detection recall, accuracy on found faces and end-to-end accuracy of a "
        "`maskgate detect` JSONL file against VOC annotations.",
    )
    p.add_argument(
        "--jsonl", type=Path, metavar="PATH", required=True, help="output of maskgate detect over VOC images/"
    )
    p.add_argument("--voc", type=Path, metavar="PATH", required=True, help="VOC folder with annotations/")
    p.add_argument(
        "--iou", type=float, metavar="X", default=0.4, help="overlap at which a face counts as found (0.4)"
    )
    p.add_argument(
        "--min-height", type=int, metavar="N", default=32, help="smallest annotated face counted, px (32)"
    )
    p.add_argument(
        "--exclude-seen",
        type=Path,
        metavar="RUN_DIR",
        help="leave out the scenes this training run trained or validated on (its split.json)",
    )
    p.add_argument(
        "--scenes",
        choices=SIDES,
        help="score only the scenes on this side of the project's scene split (edge.core.scene_split, "
        "models/scenes-split.txt): 'report' for reported figures, 'tune' for choosing settings",
    )
    p.add_argument(
        "--json", type=Path, metavar="PATH", dest="json_out", help="also write the figures as JSON"
    )
    p.set_defaults(handler=_score)

    p = add_config_command(
        sub,
        "bench",
        BenchConfig,
        handler=_bench,
        help="measure latency on this device: each stage, int8 against float, frames per second",
        description="Benchmark the detector, the classifier and the whole pipeline on the same frames, "
        "int8 against float32 and (with --keras and TensorFlow) the usual Keras model.predict path; "
        "print a table, and write JSON (--json) and a plot (--plot) if asked. The detector, classifier "
        "and decision settings are the gate's (--config, --set, --bundle).",
    )
    add_gate_options(p, default_note="default: built-in defaults", shortcuts=BENCH_SHORTCUTS)

    p = add_config_command(
        sub,
        "crop-faces",
        CropFacesConfig,
        handler=_crop_faces,
        help="cut the faces out of photos (a training set), optionally sorted by class by the classifier",
        description="Run the face detector over photos and write each face (with the gate's margin, "
        "detector.margin) as a PNG, flat or, with --classify, in a folder per class of the classifier; "
        "plus crops.csv (source, boxes, scores, labels) and summary.json. Faces are kept from the score "
        "the gate decides on (decision.min_detection_score). The detector and classifier are the gate's "
        "(--config, --set, --detector, --bundle). The folder appears only when the run completes.",
    )
    add_gate_options(p, default_note="default: built-in defaults", shortcuts=CROP_SHORTCUTS)


def _detect(args: argparse.Namespace) -> int:
    cfg, _ = gate_config(args, system_default=False)
    from ..tools.detect import detect

    summary = detect(
        cfg,
        jsonl=args.jsonl,
        annotate_dir=args.annotate,
        progress=sys.stderr.isatty(),
        reference=args.reference,
    )
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
    from ..core import atomic
    from ..core.timing import summarize
    from ..tools.scoring import format_report, read_jsonl, score, seen_scenes

    if not 0 < args.iou <= 1:
        raise ConfigError(f"--iou {args.iou}: must be above 0 and at most 1")
    if args.min_height < 1:
        raise ConfigError(f"--min-height {args.min_height}: must be at least 1")
    predictions, latencies = read_jsonl(args.jsonl)
    exclude = seen_scenes(args.exclude_seen / "split.json") if args.exclude_seen else set()
    result = score(
        args.voc, predictions, iou=args.iou, min_height=args.min_height, exclude=exclude, scenes=args.scenes
    )
    result["latency_ms"] = summarize(latencies)
    print(format_report(result))
    if args.json_out:
        atomic.write_text(args.json_out, json.dumps(result, indent=2) + "\n")
    return 0


def _crop_faces(cfg, args: argparse.Namespace) -> int:
    from ..tools.crop_faces import crop_faces, format_summary

    if args.bundle is not None and not cfg.classify:
        raise ConfigError("--bundle is the classifier of --classify; add --classify or drop --bundle")
    gate, _ = gate_config(args, system_default=False, shortcuts=CROP_SHORTCUTS)
    summary = crop_faces(cfg, gate, progress=sys.stderr.isatty() and args.quiet == 0)
    print(format_summary(summary, cfg.out))
    return 0


def _bench(cfg, args: argparse.Namespace) -> int:
    from ..core import atomic
    from ..tools.bench import format_table, plot, run_bench

    for path, flag in ((cfg.json_out, "--json"), (cfg.plot, "--plot")):
        if path is not None:
            atomic.check_creatable(path, flag)
    gate, _ = gate_config(args, system_default=False, shortcuts=BENCH_SHORTCUTS)
    result = run_bench(cfg, gate)
    print(format_table(result))
    if cfg.json_out is not None:
        atomic.write_text(cfg.json_out, json.dumps(result, indent=2) + "\n")
    if cfg.plot is not None:
        plot(result, cfg.plot)
    return 0

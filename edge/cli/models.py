"""``maskgate models fetch|list``: third-party model files through the one fetch step."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import EXIT_USER_ERROR, MaskgateError
from .options import SYSTEM_NOTE, add_gate_options, gate_config


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="third-party model files: fetch and verify")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("fetch", help="copy or download every manifest file into the cache, verified")
    p.add_argument(
        "--mirror",
        type=Path,
        metavar="PATH",
        help="local folder holding the files (default $MASKGATE_MIRROR)",
    )
    p.add_argument(
        "--manifest", type=Path, metavar="PATH", help="manifest to use (default: the one shipped in models/)"
    )
    p.add_argument("--for", dest="stage", choices=("edge", "train", "convert", "bench"),
                   help="only the files this stage needs (a device: edge, for the detector its "
                   "configuration names; bench: the benchmark's references); default all")  # fmt: skip
    add_gate_options(p, default_note=f"with --for edge: its detector; {SYSTEM_NOTE}", shortcuts=("detector",))
    p.set_defaults(handler=_models_fetch)
    p = msub.add_parser("list", help="show each manifest file and whether the cache holds it verified")
    p.add_argument(
        "--manifest", type=Path, metavar="PATH", help="manifest to use (default: the one shipped in models/)"
    )
    p.set_defaults(handler=_models_list)


def _models_fetch(args: argparse.Namespace) -> int:
    from ..core import fetch

    files = fetch.load_manifest(args.manifest)
    # A device fetches what its configured detector reads (the gate's configuration, as `run` finds it).
    detector = None
    if args.stage == "edge":
        detector = gate_config(args, shortcuts=("detector",))[0].detector.backend
    mirror = fetch.mirror_dir(args.mirror)
    failed = 0
    wanted = [item for item in files.values() if fetch.needed_by(item, args.stage, detector)]
    for item in files.values():
        if item not in wanted and args.stage == "edge" and "edge" in item.used_by:
            print(f"{item.name}: not needed by detector {detector} (only by {', '.join(item.detectors)})")
    if not wanted:
        print(f"nothing to fetch for {args.stage}" + (f" with detector {detector}" if detector else ""))
    for item in wanted:
        try:
            path, state = fetch.fetch_one(item, mirror=mirror)
        except (fetch.NotInMirror, fetch.DownloadFailed) as e:
            if not item.optional:
                print(f"maskgate: error: {e}", file=sys.stderr)
                failed += 1
            else:  # needed only by a non-default option (e.g. another training backbone)
                print(f"{e}; skipped, optional ({item.purpose})")
            continue
        except MaskgateError as e:
            print(f"maskgate: error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{item.name}: {state.value} ({path})")
    return EXIT_USER_ERROR if failed else 0


def _models_list(args: argparse.Namespace) -> int:
    from ..core import fetch

    for item in fetch.load_manifest(args.manifest).values():
        state = "verified" if fetch.is_cached(item) else "missing, optional" if item.optional else "missing"
        state += " (MD5)" if state == "verified" and item.algorithm == "MD5" else ""
        print(f"{item.name}: {state} — {item.purpose} [{item.license}]")
    return 0

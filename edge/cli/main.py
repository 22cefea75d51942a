"""The ``maskgate`` command: the entry point, and the only place an error becomes an exit status.

Building the parser imports no numpy, OpenCV, Pillow, LiteRT or TensorFlow:
each command imports its implementation when it runs, so ``--help`` and
``maskgate outputs off`` (systemd's ExecStopPost) start at once. Stages other
than edge add their subcommands through the ``maskgate.commands`` entry-point
group (see pyproject.toml): edge/ never imports train/ or convert/, they
register with it.

A ``MaskgateError`` ends the program with one line on stderr and its exit status: 2 for a
user's mistake (systemd does not restart, RestartPreventExitStatus=2), 1 for a fault a restart
can mend (a lost source, a lost relay guard). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from ..core.errors import EXIT_USER_ERROR, MaskgateError
from ..core.logs import setup_logging
from . import gate, models, tools
from .options import expand_default_targets

logger = logging.getLogger("maskgate")

EXIT_INTERRUPTED = 130
COMMAND_GROUP = "maskgate.commands"

# Which extra brings a module, for the one-line hint when it is missing.
EXTRA_OF = {
    "tensorflow": "train", "keras": "train", "sklearn": "train", "matplotlib": "train", "h5py": "train",
    "cv2": "edge", "PIL": "edge", "gpiozero": "edge", "ai_edge_litert": "edge", "paho": "edge",
}  # fmt: skip
# The Pi camera and GPIO libraries have no working wheels on PyPI (libcamera is Raspberry Pi OS's own):
# they come from apt, and a virtual environment sees them only when made with --system-site-packages.
FROM_APT = {"picamera2": "python3-picamera2", "libcamera": "python3-picamera2", "lgpio": "python3-lgpio"}


def missing_module_hint(name: str) -> str | None:
    """How to install a missing module, or None when it is none of maskgate's (a bug: keep the traceback)."""
    top = name.split(".")[0]
    if top in FROM_APT:
        return (
            f"sudo apt install {FROM_APT[top]} (Raspberry Pi OS), and run maskgate from a venv made with "
            "`python3 -m venv --system-site-packages` (systemd/install.sh makes it so)"
        )
    extra = EXTRA_OF.get(top)
    return None if extra is None else f"pip install 'maskgate[{extra}]'"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(expand_default_targets(sys.argv[1:] if argv is None else argv))
    _setup_logging(args.verbose - args.quiet)
    try:
        return int(args.handler(args) or 0)
    except MaskgateError as e:
        print(f"maskgate: error: {e}", file=sys.stderr)
        # 2 (a user error: systemd does not restart) unless the error is a fault a restart can mend
        return getattr(e, "exit_status", EXIT_USER_ERROR)
    except ModuleNotFoundError as e:
        hint = missing_module_hint(e.name or "")
        if hint is None:
            raise
        print(f"maskgate: error: '{args.command}' needs the module {e.name}: {hint}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("maskgate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="maskgate",
        description="Face-mask gate for Raspberry Pi-class boards: train, convert, run, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"maskgate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, gate, tools):
        group.register(sub)
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def _setup_logging(level: int) -> None:
    setup_logging(logging.WARNING if level < 0 else logging.DEBUG if level > 0 else logging.INFO)


if __name__ == "__main__":
    sys.exit(main())

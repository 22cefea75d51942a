"""The command line: ``main`` (the entry point) and one module per group of commands.

``main`` is the only error boundary; ``options`` builds subcommands from settings
models; ``models``, ``gate`` and ``tools`` register their commands.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]

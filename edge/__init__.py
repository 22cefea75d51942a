"""maskgate's on-device runtime and the pieces every stage shares.

Nothing in this package may import TensorFlow: a Raspberry Pi has only the
LiteRT runtime. train/ and convert/ import from here, never the reverse.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("maskgate")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

"""One root exception, so the CLI can tell a user's mistake from a bug.

Every subclass also inherits the builtin it stands for, so callers that catch
``ValueError`` or ``OSError`` keep working (the gpiozero pattern). Anything
raised as a ``MaskgateError`` is shown to the user as one line, without a
traceback; anything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2  # systemd's RestartPreventExitStatus: restarting cannot fix a user's mistake


class MaskgateError(Exception):
    """Root of every error maskgate reports to the user as one line.

    ``exit_status`` 2 says "a user error: fix it, a restart cannot" (systemd's
    RestartPreventExitStatus=2); a fault a restart can mend sets 1.
    """

    exit_status = EXIT_USER_ERROR


class ConfigError(MaskgateError, ValueError):
    """An option or configuration value is out of range or inconsistent."""


class DataError(MaskgateError, ValueError):
    """A dataset cannot be used as given (missing, empty, too small)."""


class ImageReadError(MaskgateError, ValueError):
    """A file is not an image any of our decoders can read."""


class ModelFileError(MaskgateError, OSError):
    """A model or weights file is missing, corrupt or does not fit."""


class FetchError(MaskgateError, OSError):
    """A third-party file could not be fetched or failed verification."""


class OutputExistsError(MaskgateError, FileExistsError):
    """The output path exists and would be overwritten."""


def brief(e: BaseException, limit: int = 160) -> str:
    """One line of a library's exception for a user-facing message: its last non-empty line
    (where OpenCV and gpiozero put the reason), cut to ``limit`` characters."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:limit] if lines else e.__class__.__name__


def first_line(e: BaseException, limit: int = 160) -> str:
    """One line of a Keras or TensorFlow exception for a user-facing message: its first (where
    they put the reason, before pages of their internals), cut to ``limit`` characters."""
    text = str(e)
    return text.splitlines()[0][:limit] if text else e.__class__.__name__

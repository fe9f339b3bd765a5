"""The one error family skyseg raises on bad input.

Every message says what happened, which file or parameter, the value received
and how to fix it, so that the CLI can print it as one line. Each class is also
a ``ValueError`` (as in tifffile), so generic ``except ValueError`` code keeps
working.
"""

from __future__ import annotations

__all__ = [
    "SkysegError",
    "ImageReadError",
    "ImageTooLargeError",
    "ImageWriteError",
    "AnnotationError",
    "DatasetError",
    "ModelError",
    "ConfigError",
    "first_line",
]


class SkysegError(ValueError):
    """Base class of every error skyseg raises on bad input or bad settings."""


class ImageReadError(SkysegError):
    """An image file is missing, damaged, or in a form skyseg cannot express as RGB."""


class ImageTooLargeError(ImageReadError):
    """An image file's header claims more pixels than ``--max-pixels`` allows (not decoded)."""


class ImageWriteError(SkysegError):
    """An output file could not be written (folder missing or not writable, disk full)."""


class AnnotationError(SkysegError):
    """A COCO / Label Studio export is malformed or does not match the images."""


class DatasetError(SkysegError):
    """A patch dataset folder is missing, empty or inconsistent."""


class ModelError(SkysegError):
    """A model file or run folder is missing, corrupt, or does not fit the input."""


class ConfigError(SkysegError):
    """An option or configuration value is out of range or inconsistent."""


def first_line(exc: BaseException, *, limit: int = 200) -> str:
    """The first line of an exception's message (at most ``limit`` characters), for a
    one-line error or log message; the exception's class name when it has no message.

    Example:
        >>> first_line(OSError("unable to open file\\n(truncated)"))
        'unable to open file'
        >>> first_line(KeyError())
        'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__

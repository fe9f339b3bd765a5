"""Capture what native libraries print while they work.

OpenEXR's C core reports damage on ``stderr`` and its Python binding prints
"Warning: Exception raised reading pixel data ..." on ``stdout`` and then
returns garbage pixels instead of raising. Both are written at the file
descriptor level, past Python's ``sys.stdout``; the only way to see them (and
to keep a batch job's terminal clean) is to point descriptors 1 and 2 at a
temporary file for the duration of the call.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["capture_native_output"]

_LOCK = threading.Lock()
try:
    _LIBC = ctypes.CDLL(None)
except OSError:  # pragma: no cover - platforms without a loadable libc
    _LIBC = None


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    if _LIBC is not None:
        _LIBC.fflush(None)


@contextlib.contextmanager
def capture_native_output() -> Iterator[list[str]]:
    """Redirect file descriptors 1 and 2 into a buffer while the block runs.

    Yields:
        A list that, once the block has finished, holds the captured text
        (one string, possibly empty).

    Example:
        >>> with capture_native_output() as captured:
        ...     pass
        >>> captured
        ['']
    """
    captured: list[str] = []
    with _LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
        _flush_all()
        saved = []
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(sink.fileno(), fd)
                except OSError:
                    pass
            yield captured
        finally:
            _flush_all()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.append(sink.read(1 << 20).decode("utf-8", errors="replace"))

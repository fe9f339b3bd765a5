"""The benchmarks' shared harness: timing, peak memory, the test panorama, a printed table.

Every ``bench_*.py`` in this folder imports it (``from harness import ...``): the
scripts run as ``python scripts/bench_NAME.py``, so this folder is on ``sys.path``,
and importing the harness puts the repository first on it, so the benchmarks
measure this checkout's skyseg.

- :class:`Timer` and :class:`Stopwatch`: wall seconds of a block, or of wrapped
  functions per stage (from any thread);
- :func:`peak_rss_mb`: this process's own peak resident memory; :func:`run_child`:
  a Python child's wall time and its own peak memory (a fresh process has only
  the memory of what it measures);
- :func:`panorama`: the 8K test panorama, made once and cached outside the repository;
- :class:`Table`: rows printed as they come under one header, aligned.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The team's data folder (``../shared/data`` beside the repository).
SHARED_DATA = Path(os.environ.get("SKYSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: The source of the test panorama: the OpenEXR lat-long sample, 1024x512, sun in frame.
SAMPLE = SHARED_DATA / "exr-samples" / "MultiResolution_KernerEnvLatLong.exr"
#: Where made inputs are kept between runs, never in the repository.
CACHE = Path(os.environ.get("SKYSEG_BENCH_CACHE", "/tmp/skyseg-bench"))

__all__ = ["ROOT", "SHARED_DATA", "SAMPLE", "CACHE", "Timer", "Stopwatch", "peak_rss_mb",
           "Child", "run_child", "load_average", "upscale", "panorama", "Column", "Table"]


# --------------------------------------------------------------------------- timing

class Timer:
    """Wall seconds of a ``with`` block.

    Example:
        >>> with Timer() as timer:
        ...     pass
        >>> timer.seconds >= 0
        True
    """

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self.start


class Stopwatch:
    """Seconds spent inside wrapped functions, per stage (any thread).

    Example:
        >>> watch = Stopwatch()
        >>> watch.wrap("sum", sum)([1, 2])
        3
        >>> sorted(watch.seconds)
        ['sum']
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def wrap(self, stage: str, function: Callable) -> Callable:
        """``function``, its time added to ``stage`` on every call."""
        def timed(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - begin)

        return timed


def load_average() -> str:
    """The system load average (1, 5, 15 min): figures on a shared machine need it beside them."""
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


# --------------------------------------------------------------------------- memory

def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB (MiB).

    ``VmHWM`` of ``/proc/self/status``: the process's own peak. (``ru_maxrss`` also
    counts the parent's memory at the moment it started this process, which is
    what :func:`run_child` avoids; it is the fallback where there is no ``/proc``.)
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


#: Runs ``-c CODE``, ``-m MODULE ARGS`` or ``SCRIPT ARGS`` as ``python`` would, and
#: reports the process's own peak memory on stderr at exit.
_WRAPPER = """
import atexit, os, runpy, sys
def _report():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write("\\nPEAK_RSS_KB " + line.split()[1] + "\\n")
atexit.register(_report)
if sys.argv[1] == "-c":
    code, sys.argv = sys.argv[2], ["-c", *sys.argv[3:]]
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
elif sys.argv[1] == "-m":
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:  # a script: its folder first on the path, as ``python SCRIPT`` has it
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name="__main__")
"""
_PEAK = "PEAK_RSS_KB "


@dataclass
class Child:
    """What :func:`run_child` measured: wall seconds, peak memory (MB) and the output."""

    wall_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_child(arguments: Sequence[str], *, cwd: Path = ROOT) -> Child:
    """Run Python with ``arguments`` (``-c CODE``, ``-m MODULE ...`` or ``SCRIPT ...``) in a child.

    The child's peak memory is its own (``VmHWM`` at exit), not that of this
    parent; its stderr comes back without the harness's report line. The
    repository is first on the child's ``PYTHONPATH``.

    Raises:
        RuntimeError: the child reported no peak (it died before exiting), with its stderr.
    """
    arguments = [str(argument) for argument in arguments]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *arguments], capture_output=True,
                          text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    lines = done.stderr.splitlines()
    peaks = [line.split()[1] for line in lines if line.startswith(_PEAK)]
    if not peaks:
        raise RuntimeError(f"no peak memory reported (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    stderr = "\n".join(line for line in lines if not line.startswith(_PEAK)).rstrip()
    return Child(wall, int(peaks[-1]) / 1024.0, done.returncode, done.stdout,
                 stderr + "\n" if stderr else "")


# --------------------------------------------------------------------------- inputs

def upscale(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """float32 (H, W, 3) resized to (height, width, 3), bilinear, channel by channel."""
    from PIL import Image

    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                         .resize((width, height), Image.BILINEAR)) for c in range(3)]
    return np.stack(planes, axis=-1).astype(np.float32)


def panorama(width: int = 8192, height: int | None = None, *, noise: float = 0.0,
             cache: Path | None = None) -> Path:
    """The test panorama: :data:`SAMPLE` upscaled bilinearly, a half-float ZIP EXR, cached.

    Args:
        width, height: its size (height: half the width by default).
        noise: multiplicative Gaussian noise (0.01: 1 %, seeded), like a sensor's: an
            upscale alone is so smooth that compression figures would be far too good.
        cache: the folder it is kept in (default :data:`CACHE`).

    Raises:
        SystemExit: the sample is missing (set ``SKYSEG_SHARED_DATA``).
    """
    from skyseg.io import read_image, write_exr

    height = height or width // 2
    cache = cache or CACHE
    suffix = f"_noise{noise:g}" if noise else ""
    target = cache / f"KernerEnvLatLong_{width}x{height}{suffix}.exr"
    if target.is_file():
        return target
    if not SAMPLE.is_file():
        sys.exit(f"benchmark source {SAMPLE} is missing (set SKYSEG_SHARED_DATA)")
    cache.mkdir(parents=True, exist_ok=True)
    big = upscale(read_image(SAMPLE), width, height)
    if noise:
        rng = np.random.default_rng(0)
        for start in range(0, height, 512):  # in blocks: an 8K float32 noise plane is 400 MB
            block = big[start:start + 512]
            block *= 1.0 + noise * rng.standard_normal(block.shape, dtype=np.float32)
    write_exr(target, np.maximum(big, 0.0, out=big), half=True, compression="zip")
    return target


# --------------------------------------------------------------------------- table

@dataclass(frozen=True)
class Column:
    """A column: its title and the format spec of its values (``"<10"``, ``">7.3f"``)."""

    title: str
    spec: str

    def _plain(self) -> str:
        """The spec's alignment and width only, for titles and text values."""
        match = re.match(r"(?:.?(?P<align>[<>=^]))?[-+ ]?z?#?0?(?P<width>\d*)", self.spec)
        align = match.group("align") or (">" if self.spec[-1:] in "bdeEfFgGnoxX%" and
                                         self.spec else "<")
        align = ">" if align == "=" else align
        return f"{align}{match.group('width')}"

    def title_text(self) -> str:
        return format(self.title, self._plain())

    def value_text(self, value) -> str:
        if value is None:
            value = "-"
        return format(value, self._plain() if isinstance(value, str) else self.spec)


class Table:
    """Rows printed as they come under one header, each column aligned by its format.

    A text value (``"-"``, or a figure formatted elsewhere) in a number column is
    aligned like the numbers; ``None`` prints ``-``; a row may leave out trailing columns.

    Example:
        >>> table = Table([("model", "<6"), ("IoU", ">6.3f")])
        >>> table.header()
        'model     IoU'
        >>> table.row("demo", 0.9254)
        'demo    0.925'
    """

    def __init__(self, columns: Sequence[tuple[str, str]], *, indent: str = "",
                 gap: str = " ") -> None:
        self.columns = [Column(title, spec) for title, spec in columns]
        self.indent, self.gap = indent, gap

    def header(self) -> str:
        return self.indent + self.gap.join(column.title_text() for column in self.columns)

    def row(self, *values) -> str:
        if len(values) > len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        return self.indent + self.gap.join(
            column.value_text(value) for column, value in zip(self.columns, values, strict=False))

    def print_header(self) -> None:
        print(self.header(), flush=True)

    def print_row(self, *values) -> None:
        print(self.row(*values), flush=True)

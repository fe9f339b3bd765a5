"""Logging set-up, progress bars and the failure report of batch commands.

The library only logs through ``logging.getLogger("skyseg")``; the CLI calls
:func:`configure_logging`. Batch stages run :func:`for_each` over their files:
it collects per-file failures in a :class:`BatchReport` and goes on with the
other files; the stage lists the failures at the end (:meth:`BatchReport.log_summary`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from skyseg.errors import SkysegError

__all__ = ["logger", "configure_logging", "progress", "BatchReport", "for_each"]

logger = logging.getLogger("skyseg")


def configure_logging(verbosity: int = 0) -> None:
    """Send skyseg's log to stderr: -1 warnings only, 0 info, 1+ debug."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    for handler in list(logger.handlers):
        if getattr(handler, "_skyseg_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler._skyseg_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = False, disable: bool | None = None):
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal).

    Example:
        >>> sum(progress(range(3), desc="demo", disable=True))
        3
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable,
                dynamic_ncols=True)


@dataclass
class BatchReport:
    """Successes and failures of a batch command.

    Example:
        >>> report = BatchReport("predict")
        >>> report.succeeded("a.exr")
        >>> report.failed("b.exr", ValueError("b.exr: damaged"))
        >>> report.exit_code
        1
    """

    stage: str
    done: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def succeeded(self, item) -> None:
        self.done.append(str(item))

    def failed(self, item, error: BaseException | str) -> None:
        message = str(error)
        self.failures.append((str(item), message))
        logger.error("%s", message if str(item) in message else f"{item}: {message}")

    @property
    def exit_code(self) -> int:
        """0 when everything worked, 1 when some items failed."""
        return 1 if self.failures else 0

    def log_summary(self) -> None:
        """Log a one-line summary, then each failure on its own line."""
        total = len(self.done) + len(self.failures)
        if not self.failures:
            logger.info("%s: %d of %d done", self.stage, len(self.done), total)
            return
        logger.warning("%s: %d of %d done, %d failed:", self.stage, len(self.done), total,
                       len(self.failures))
        for item, message in self.failures:
            short = message if item in message else f"{item}: {message}"
            logger.warning("  FAILED %s", short)

    def to_dict(self) -> dict:
        return {"done": self.done, "failed": [{"item": i, "error": m} for i, m in self.failures]}


def for_each(items: Iterable, action: Callable, report: BatchReport, *, desc: str,
             unit: str = "image", name: Callable | None = None,
             record_success: bool = True) -> list:
    """Run ``action`` on each item behind a progress bar; one item's failure fails only it.

    A :class:`~skyseg.errors.SkysegError` raised by ``action(item)`` goes into
    ``report`` (and the log) under the item's name and the loop goes on; any
    other exception is a bug and stops it. The caller calls
    :meth:`BatchReport.log_summary` when the stage is done.

    Args:
        items: the inputs, in order (a sized collection gives the bar its total).
        action: does the work of one item; its return value is collected.
        report: takes the failures, and the successes unless ``record_success`` is False.
        desc, unit: the progress bar's label and unit.
        name: item -> what the report calls it (default: the item itself).
        record_success: False when a later step decides whether the item is done.

    Returns:
        ``action``'s results for the items that worked, in order.

    Example:
        >>> from skyseg.errors import ImageReadError
        >>> def size(path):
        ...     if path.endswith(".bad"):
        ...         raise ImageReadError(f"{path}: damaged")
        ...     return len(path)
        >>> report = BatchReport("demo")
        >>> for_each(["a.exr", "b.bad", "cc.exr"], size, report, desc="demo")
        [5, 6]
        >>> report.done, report.failures
        (['a.exr', 'cc.exr'], [('b.bad', 'b.bad: damaged')])
    """
    results = []
    bar = progress(items, desc=desc, unit=unit)
    try:
        for item in bar:
            label = item if name is None else name(item)
            try:
                results.append(action(item))
            except SkysegError as exc:
                report.failed(label, exc)
                continue
            if record_success:
                report.succeeded(label)
    finally:
        bar.close()
    return results


def display_path(path) -> str:
    """A path for messages: relative to the current folder when that is shorter."""
    path = Path(path)
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
        return str(relative) if len(str(relative)) < len(str(path)) else str(path)
    except ValueError:
        return str(path)

"""Shards for job arrays: ``--shard i/N`` of ``skyseg predict`` and ``skyseg build-dataset``.

A job array (Slurm ``--array=1-N``, a Kubernetes indexed Job) runs the same
command N times with ``--shard $INDEX/N``; each task takes one contiguous
block of the sorted work list, so the blocks are disjoint, cover the list,
and do not depend on the machine or on the order tasks run in.

Example:
    >>> parse_shard("2/3")
    (2, 3)
    >>> list(shard_range(10, (2, 3)))
    [3, 4, 5]
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from skyseg.errors import ConfigError

__all__ = ["parse_shard", "shard_range", "shard_paths", "outputs_complete", "describe"]


def parse_shard(text) -> tuple[int, int] | None:
    """``"i/N"`` (1-based) -> ``(i, N)``; None stays None.

    Raises:
        ConfigError: not ``i/N`` with ``1 <= i <= N``.
    """
    if text is None:
        return None
    if isinstance(text, tuple):
        index, count = text
    else:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not match:
            raise ConfigError(f"--shard {text!r}: expected i/N, e.g. --shard 1/4 "
                              "(Slurm: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
        index, count = int(match.group(1)), int(match.group(2))
    if not (isinstance(index, int) and isinstance(count, int) and 1 <= index <= count):
        raise ConfigError(f"--shard {index}/{count}: i must be between 1 and N (1-based), "
                          "e.g. --shard 1/4 ... --shard 4/4")
    return index, count


def describe(shard: tuple[int, int]) -> str:
    return f"shard {shard[0]}/{shard[1]}"


def shard_range(count: int, shard: tuple[int, int]) -> range:
    """Positions ``[floor((i-1) count / N), floor(i count / N))`` of a list of ``count``."""
    index, total = shard
    return range((index - 1) * count // total, index * count // total)


def shard_paths(paths, shard: tuple[int, int]) -> list[Path]:
    """The shard's block of the sorted ``paths``; files sharing a stem stay in one shard.

    (Their outputs would collide; the shard that holds them reports it.)
    """
    stems: dict[str, list[Path]] = {}
    for path in sorted(Path(p) for p in paths):
        stems.setdefault(path.stem, []).append(path)
    groups = list(stems.values())
    return [path for position in shard_range(len(groups), shard) for path in groups[position]]


def outputs_complete(outputs, since: float | None = None) -> bool:
    """True when every output file exists (writers rename them into place when complete),
    is not empty, and is not older than ``since`` (e.g. the model file's mtime)."""
    for path in outputs:
        try:
            stat = os.stat(path)
        except OSError:
            return False
        if stat.st_size == 0 or (since is not None and stat.st_mtime < since):
            return False
    return True


class PredictShard:
    """``skyseg predict --shard i/N``: the shard's inputs, without those already complete.

    Complete: every output ``--save`` asks for exists and is not older than
    the model file (so a new model is not skipped). ``--overwrite`` redoes them.
    """

    def __init__(self, shard: tuple[int, int], inputs: list[Path], todo: list[Path]):
        self.shard, self.inputs, self.todo = shard, inputs, todo

    @classmethod
    def from_args(cls, args) -> PredictShard | None:
        """None without ``--shard``; else the shard, ``args.inputs`` narrowed to what is left."""
        shard = parse_shard(getattr(args, "shard", None))
        if shard is None:
            return None
        from skyseg.io import find_images
        from skyseg.predict import output_paths, parse_save

        save = parse_save(args.save)
        if "labelstudio" in save:
            raise ConfigError("--save labelstudio writes one file for the whole batch; run it "
                              "without --shard (or leave labelstudio out of the shards)")
        paths = find_images(args.inputs)
        if not paths:
            raise ConfigError(f"no images found in {list(map(str, args.inputs))}; pass files, "
                              "folders or glob patterns of .exr/.hdr/.jpg/.png/.tif images")
        inputs = shard_paths(paths, shard)
        since = None if args.overwrite else _model_time(args.model, getattr(args, "which",
                                                                             "best"))
        todo = [path for path in inputs if args.overwrite or not outputs_complete(
            [output_paths(args.out, path.stem)[name] for name in save], since)]
        args.inputs = [str(path) for path in todo]
        return cls(shard, inputs, todo)

    def log_summary(self, report=None) -> None:
        import logging

        failed = len(report.failures) if report is not None else 0
        logging.getLogger("skyseg").info(
            "%s: %d input(s); %d already complete (skipped), %d predicted, %d failed",
            describe(self.shard), len(self.inputs), len(self.inputs) - len(self.todo),
            len(self.todo) - failed, failed)


def _model_time(model, which: str) -> float | None:
    """mtime of the model file ``predict`` will load (a run folder's best or last)."""
    from skyseg.model import MODEL_BEST, MODEL_LAST

    path = Path(model)
    if path.is_dir():
        path = path / (MODEL_LAST if which == "last" else MODEL_BEST)
    try:
        return path.stat().st_mtime
    except OSError:
        return None

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



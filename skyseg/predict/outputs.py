"""What ``skyseg predict`` writes for each input, and where.

Example:
    >>> sorted(output_paths("out", "pano"))
    ['exr', 'mask', 'overlay', 'prob']
"""

from __future__ import annotations

import os
from pathlib import Path

from skyseg.errors import ConfigError

__all__ = ["SAVE_CHOICES", "DEFAULT_SAVE", "output_paths", "parse_save"]


SAVE_CHOICES = ("mask", "overlay", "prob", "exr", "labelstudio")


DEFAULT_SAVE = ("mask", "overlay")


def output_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Where the outputs of an input with this ``stem`` go, by ``--save`` name."""
    out_dir = Path(out_dir)
    return {
        "mask": out_dir / f"{stem}_mask.png",
        "overlay": out_dir / f"{stem}_overlay.png",
        "prob": out_dir / f"{stem}_prob.png",
        "exr": out_dir / f"{stem}_sky.exr",
    }


def parse_save(save) -> tuple[str, ...]:
    """The outputs ``--save`` asks for, checked, in order, without repeats.

    Args:
        save: names from :data:`SAVE_CHOICES`, as a list or one comma-separated
            string (``"mask,overlay"``).

    Returns:
        the names as a tuple (first occurrence kept).

    Raises:
        ConfigError: an unknown name, or none at all (the message lists the choices).

    Example:
        >>> parse_save("mask, overlay,mask")
        ('mask', 'overlay')
    """
    names = [s.strip() for s in save.split(",")] if isinstance(save, str) else list(save)
    names = [s for s in names if s]
    unknown = [s for s in names if s not in SAVE_CHOICES]
    if unknown or not names:
        raise ConfigError(
            f"--save {','.join(names) or '(empty)'}: unknown output(s) {unknown}; choose from "
            f"{','.join(SAVE_CHOICES)}, e.g. --save mask,overlay,exr"
        )
    return tuple(dict.fromkeys(names))

"""What ``skyseg predict`` writes for each input, and where.

The mask (uint8, 255 = sky), the overlay (the tonemapped picture with the sky
tinted), the 16-bit probability and the sky EXR (radiance with the probability
as alpha), each written atomically under the input's stem.

Example:
    >>> sorted(output_paths("out", "pano"))
    ['exr', 'mask', 'overlay', 'prob']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError
from skyseg.image.metrics import THRESHOLD
from skyseg.image.overlay import resize_mask, resize_uint8, tint
from skyseg.image.preprocess import ldr_to_radiance, tonemap
from skyseg.io import write_exr, write_png

__all__ = ["SAVE_CHOICES", "DEFAULT_SAVE", "output_paths", "parse_save", "probability_to_mask",
           "overlay_background", "write_outputs"]

#: Largest value a half-float EXR channel holds; brighter suns need float32.
_HALF_MAX = 65504.0
_CHUNK_ROWS = 512


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


def probability_to_mask(probability: np.ndarray, threshold: float = THRESHOLD, *,
                        value: int = 255) -> np.ndarray:
    """uint8 (H, W): ``value`` where ``probability > threshold``, else 0.

    Strictly greater, like :func:`skyseg.image.metrics.binarize` in training, so the
    masks are the decisions the training metrics scored.

    Example:
        >>> probability_to_mask(np.array([[0.2, 0.5, 0.7]], np.float32)).tolist()
        [[0, 0, 255]]
    """
    mask = np.greater(probability, np.float32(threshold)).view(np.uint8)
    return mask * np.uint8(value) if value != 1 else mask.copy()


def overlay_background(image: np.ndarray, *, is_hdr: bool,
                       max_size: int | None) -> np.ndarray:
    """The picture under the overlay: uint8 (h, w, 3), long side at most ``max_size``.

    HDR images are box-averaged in radiance first and tonemapped small, which
    is much faster at 8K than tonemapping full size and averages light the
    way a smaller photograph would.
    """
    height, width = image.shape[:2]
    factor = 1 if max_size is None else max(1, max(height, width) // max_size)
    if factor > 1:
        from PIL import Image

        channels = [
            np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c], np.float32))
                       .reduce(factor))
            for c in range(3)
        ]
        image = np.stack(channels, axis=-1)
    display = tonemap(image, is_hdr=is_hdr)
    return resize_uint8(display, max_size)


def _probability_uint16(probability: np.ndarray) -> np.ndarray:
    out = np.empty(probability.shape, np.uint16)
    for start in range(0, probability.shape[0], _CHUNK_ROWS):
        block = probability[start:start + _CHUNK_ROWS] * np.float32(65535.0)
        out[start:start + _CHUNK_ROWS] = np.rint(block, out=block)
    return out


def _sky_exr(image: np.ndarray, probability: np.ndarray, is_hdr: bool) -> np.ndarray:
    """RGBA for the sky EXR, built in row chunks (no full-size float temporaries)."""
    peak = float(image.max()) if is_hdr else 1.0
    dtype = np.float16 if peak <= _HALF_MAX else np.float32
    rgba = np.empty(image.shape[:2] + (4,), dtype)
    for start in range(0, image.shape[0], _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        rgba[rows, :, :3] = image[rows] if is_hdr else ldr_to_radiance(image[rows])
        rgba[rows, :, 3] = probability[rows]
    return rgba


def write_outputs(out_dir: str | os.PathLike, stem: str, probability: np.ndarray, *,
                  save=DEFAULT_SAVE, threshold: float = THRESHOLD,
                  background: np.ndarray | None = None, image: np.ndarray | None = None,
                  is_hdr: bool = True) -> dict[str, Path]:
    """Write the chosen outputs of one image (atomically).

    Args:
        out_dir: an existing folder.
        stem: the input's name without extension.
        probability: float32 (H, W) sky probability.
        save: names from :data:`SAVE_CHOICES`.
        threshold: probability above which a pixel is sky.
        background: :func:`overlay_background` of the image (for ``overlay``).
        image: the image as read (for ``exr``).
        is_hdr: ``image`` is radiance (else 0..255, written as linear 0..1).

    Returns:
        ``{name: path}`` of the files written.

    Raises:
        ImageWriteError: a file could not be written.
    """
    paths = output_paths(out_dir, stem)
    written: dict[str, Path] = {}
    mask = probability_to_mask(probability, threshold, value=255)
    if "mask" in save:
        written["mask"] = write_png(paths["mask"], mask, level=1)
    if "overlay" in save:
        if background is None:
            raise ConfigError("an overlay needs the image's overlay_background")
        small = resize_mask(mask, *background.shape[:2])
        written["overlay"] = write_png(paths["overlay"], tint(background, small, opacity=0.5))
    del mask
    if "prob" in save:
        written["prob"] = write_png(paths["prob"], _probability_uint16(probability), level=1)
    if "exr" in save:
        if image is None:
            raise ConfigError("the sky EXR needs the image")
        rgba = _sky_exr(image, probability, is_hdr)
        written["exr"] = write_exr(paths["exr"], rgba, half=rgba.dtype == np.float16)
    return written

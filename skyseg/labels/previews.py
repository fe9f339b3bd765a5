"""Tonemapped JPG previews of HDR images, for labelling in Label Studio.

Label Studio shows LDR images only. ``skyseg previews`` writes
``<stem>.jpg`` for each input (auto exposure, highlight roll-off, sRGB),
optionally no larger than ``--max-size`` pixels on the long side. Polygons
drawn on a smaller preview are scaled back to the EXR's size by
``skyseg build-dataset`` and ``skyseg masks``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError, SkysegError
from skyseg.image.overlay import resize_uint8
from skyseg.image.preprocess import tonemap
from skyseg.io import (
    DEFAULT_MAX_PIXELS,
    add_max_pixels_argument,
    check_max_pixels,
    find_images,
    read_image,
    write_jpeg,
)
from skyseg.log import BatchReport, logger, progress

__all__ = ["make_preview", "make_previews", "report_previews", "CLI_HELP", "add_arguments",
           "run"]

CLI_HELP = "tonemapped JPG previews of HDR images, to label in Label Studio"


def make_preview(path: str | os.PathLike, *, max_size: int | None = None,
                 exposure_ev: float = 0.0,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The preview of one image: uint8 (h, w, 3) sRGB.

    Raises:
        ImageReadError: the image cannot be read (ImageTooLargeError: its
            header claims more than ``max_pixels`` pixels; None: no limit).

    Example:
        >>> preview = make_preview("pano.exr", max_size=2048)  # doctest: +SKIP
    """
    image, info = read_image(path, return_info=True, max_pixels=max_pixels)
    display = tonemap(image, is_hdr=info.is_hdr, exposure_ev=exposure_ev)
    del image
    return resize_uint8(display, max_size)


def make_previews(inputs, out_dir: str | os.PathLike, *, max_size: int | None = None,
                  exposure_ev: float = 0.0, quality: int = 92,
                  overwrite: bool = False,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> BatchReport:
    """Write ``<stem>.jpg`` previews of ``inputs`` (files, folders, globs) into ``out_dir``.

    A preview newer than its source is kept unless ``overwrite``. Bad files
    (and files whose header claims more than ``max_pixels`` pixels; None: no
    limit) are reported in the returned :class:`~skyseg.log.BatchReport`; the
    others are written.

    Raises:
        ConfigError: ``max_size`` below 16, ``quality`` outside 1..100, a bad
            ``max_pixels``.
    """
    max_pixels = check_max_pixels(max_pixels)
    if max_size is not None and max_size < 16:
        raise ConfigError(f"--max-size must be at least 16 pixels, got {max_size}")
    if not 1 <= quality <= 100:
        raise ConfigError(f"--quality must be in 1..100, got {quality}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport("previews")
    paths = find_images(inputs)
    if not paths:
        raise ConfigError(f"no images found in {list(map(str, inputs))}; pass files, folders "
                          "or glob patterns of .exr/.hdr/.jpg/.png/.tif images")
    claimed: dict[str, Path] = {}
    for path in progress(paths, desc="previews", unit="image"):
        target = out_dir / f"{path.stem}.jpg"
        if target.name in claimed:
            report.failed(path, f"{path}: its preview name {target.name} is already taken by "
                                f"{claimed[target.name]}; rename one of the two")
            continue
        claimed[target.name] = path
        try:
            if (not overwrite and target.exists() and path.exists()
                    and target.stat().st_mtime >= path.stat().st_mtime):
                logger.debug("%s: preview is up to date", target)
            else:
                write_jpeg(target, make_preview(path, max_size=max_size, exposure_ev=exposure_ev,
                                                 max_pixels=max_pixels),
                           quality=quality)
            report.succeeded(path)
        except SkysegError as exc:
            report.failed(path, exc)
    report.log_summary()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders or glob patterns (EXR, HDR, TIFF, JPG, PNG)")
    parser.add_argument("--out", required=True, type=Path, help="folder for <stem>.jpg previews")
    parser.add_argument("--max-size", type=int, default=None,
                        help="longest side of the preview in pixels (default: full size)")
    parser.add_argument("--exposure", type=float, default=0.0, dest="exposure_ev",
                        help="exposure change in stops on top of the automatic exposure")
    parser.add_argument("--quality", type=int, default=92, help="JPEG quality 1..100")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite previews that are newer than their source")
    add_max_pixels_argument(parser)


def run(args: argparse.Namespace) -> int:
    report = make_previews(args.inputs, args.out, max_size=args.max_size,
                           exposure_ev=args.exposure_ev, quality=args.quality,
                           overwrite=args.overwrite, max_pixels=args.max_pixels or None)
    return report_previews(report, args.out)


def report_previews(report: BatchReport, out_dir: str | os.PathLike) -> int:
    """Log where :func:`make_previews` wrote; its exit status (0, or 1 when files failed)."""
    logger.info("previews in %s", out_dir)
    return report.exit_code

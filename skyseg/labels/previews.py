"""Tonemapped JPG previews of HDR images, for labelling in Label Studio.

Label Studio shows LDR images only. ``skyseg previews`` writes
``<stem>.jpg`` for each input (auto exposure, highlight roll-off, sRGB),
optionally no larger than ``--max-size`` pixels on the long side. Polygons
drawn on a smaller preview are scaled back to the EXR's size by
``skyseg build-dataset`` and ``skyseg masks``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
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
from skyseg.log import BatchReport, for_each, logger
from skyseg.options import add_options, from_args, option

__all__ = ["make_preview", "make_previews", "PreviewsOptions", "report_previews", "CLI_HELP",
           "add_arguments", "run"]

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


@dataclass
class PreviewsOptions:
    """The options of ``skyseg previews`` (and of :func:`make_previews`).

    Example:
        >>> PreviewsOptions(max_size=2048).quality
        92
    """

    max_size: int | None = option(
        None, "longest side of the preview in pixels (default: full size)")
    exposure_ev: float = option(
        0.0, "exposure change in stops on top of the automatic exposure", flag="--exposure")
    quality: int = option(92, "JPEG quality 1..100")
    overwrite: bool = option(False, "rewrite previews that are newer than their source")
    max_pixels: float | None = option(
        DEFAULT_MAX_PIXELS, "images whose header claims more pixels are listed as failures, "
        "not decoded (None: no limit)", cli=False)  # the CLI's --max-pixels is io's

    def check(self) -> None:
        """Raise ConfigError for a ``max_size`` below 16 or a ``quality`` outside 1..100."""
        if self.max_size is not None and self.max_size < 16:
            raise ConfigError(f"--max-size must be at least 16 pixels, got {self.max_size}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be in 1..100, got {self.quality}")


def make_previews(inputs, out_dir: str | os.PathLike, options: PreviewsOptions | None = None,
                  **overrides) -> BatchReport:
    """Write ``<stem>.jpg`` previews of ``inputs`` (files, folders, globs) into ``out_dir``.

    A preview newer than its source is kept unless ``overwrite``. Bad files
    (and files whose header claims more than ``max_pixels`` pixels; None: no
    limit) are reported in the returned :class:`~skyseg.log.BatchReport`; the
    others are written.

    Args:
        inputs: image files, folders or glob patterns.
        out_dir: folder for the previews (created).
        options: a :class:`PreviewsOptions` (default: full size, quality 92).
        overrides: fields of :class:`PreviewsOptions` to change (``max_size=2048``).

    Raises:
        ConfigError: ``max_size`` below 16, ``quality`` outside 1..100, a bad
            ``max_pixels``, no images in ``inputs``.
        TypeError: an override that is not a field of :class:`PreviewsOptions`.

    Example:
        >>> make_previews(["panoramas"], "previews", max_size=2048)  # doctest: +SKIP
    """
    options = dataclasses.replace(options or PreviewsOptions(), **overrides)
    max_pixels = check_max_pixels(options.max_pixels)
    options.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport("previews")
    paths = find_images(inputs)
    if not paths:
        raise ConfigError(f"no images found in {list(map(str, inputs))}; pass files, folders "
                          "or glob patterns of .exr/.hdr/.jpg/.png/.tif images")
    claimed: dict[str, Path] = {}

    def write_preview(path: Path) -> None:
        target = out_dir / f"{path.stem}.jpg"
        if target.name in claimed:
            raise SkysegError(f"{path}: its preview name {target.name} is already taken by "
                              f"{claimed[target.name]}; rename one of the two")
        claimed[target.name] = path
        if (not options.overwrite and target.exists() and path.exists()
                and target.stat().st_mtime >= path.stat().st_mtime):
            logger.debug("%s: preview is up to date", target)
            return
        preview = make_preview(path, max_size=options.max_size, exposure_ev=options.exposure_ev,
                               max_pixels=max_pixels)
        write_jpeg(target, preview, quality=options.quality)

    for_each(paths, write_preview, report, desc="previews", unit="image")
    report.log_summary()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders or glob patterns (EXR, HDR, TIFF, JPG, PNG)")
    parser.add_argument("--out", required=True, type=Path, help="folder for <stem>.jpg previews")
    add_options(parser, PreviewsOptions)
    add_max_pixels_argument(parser)


def run(args: argparse.Namespace) -> int:
    options = from_args(PreviewsOptions, args, max_pixels=args.max_pixels or None)
    return report_previews(make_previews(args.inputs, args.out, options), args.out)


def report_previews(report: BatchReport, out_dir: str | os.PathLike) -> int:
    """Log where :func:`make_previews` wrote; its exit status (0, or 1 when files failed)."""
    logger.info("previews in %s", out_dir)
    return report.exit_code

"""Sky masks from a Label Studio COCO export, with pictures to check them by eye.

``skyseg masks --coco result.json --images DIR --out DIR`` writes, for each
labelled image found in DIR (by original name, whatever the extension: labels
drawn on ``scene.jpg`` apply to ``scene.exr``):

- ``<stem>_mask.png``: uint8, 255 = sky, 0 = not sky, the size of the image
  on disk (polygons scaled when the labelled preview was smaller);
- ``<stem>_labels.png``: the image, tonemapped, with the labelled sky tinted
  magenta and outlined (skip with ``--no-labels-overlay``).

Labelled images missing from DIR, unreadable images and bad annotations are
listed at the end and the others are written (exit status 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyseg.errors import ImageReadError
from skyseg.image.overlay import tint
from skyseg.image.preprocess import tonemap
from skyseg.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    add_max_pixels_argument,
    check_max_pixels,
    read_image,
    read_image_info,
    refuse_too_large,
    write_png,
)
from skyseg.labels.annotations import CategoryOptions, CocoLabels, load_coco, match_images
from skyseg.log import BatchReport, for_each, logger
from skyseg.options import add_options, from_args, option

__all__ = ["export_masks", "MasksOptions", "CLI_HELP", "add_arguments", "run"]

CLI_HELP = "sky masks (and tinted check images) from a Label Studio COCO export"

MASK_SUFFIX = "_mask.png"
LABELS_SUFFIX = "_labels.png"


def _up_to_date(targets: list[Path], sources: list[Path]) -> bool:
    try:
        newest_source = max(source.stat().st_mtime for source in sources)
        return all(target.stat().st_mtime >= newest_source for target in targets)
    except OSError:
        return False


def _export_one(labels: CocoLabels, path: Path, stem: str, mask_path: Path,
                labels_path: Path | None, max_pixels: int | None) -> None:
    info = read_image_info(path)
    # A giant mask is as much memory as the image: refuse it from the header.
    refuse_too_large(path, info.height, info.width, max_pixels)
    mask = labels.mask(stem, info.height, info.width)
    overlay = None
    if labels_path is not None:
        image, full_info = read_image(path, return_info=True, max_pixels=max_pixels)
        if image.shape[:2] != mask.shape:
            raise ImageReadError(f"{path}: the header says {info.width}x{info.height} but the "
                                 f"pixels are {image.shape[1]}x{image.shape[0]}; the file is "
                                 "damaged, re-export it")
        display = tonemap(image, is_hdr=full_info.is_hdr)
        del image
        overlay = tint(display, mask)
    write_png(mask_path, mask * np.uint8(255))
    if overlay is not None:
        # A check image, not data: fast compression (3-4x faster than level 6 for
        # about 15 % more bytes) keeps the overlays from dominating the stage's time.
        write_png(labels_path, overlay, level=1)


@dataclass
class MasksOptions(CategoryOptions):
    """The options of ``skyseg masks`` (and of :func:`export_masks`).

    Example:
        >>> MasksOptions(labels_overlay=False).sky_categories
        ('sky',)
    """

    mode: str | None = option(
        None, "when several files share a name (scene.exr, scene.jpg), use the HDR one or the "
        "LDR one (default: hdr)", choices=("hdr", "ldr"))
    labels_overlay: bool = option(
        True, "write only the masks, not the tinted <stem>_labels.png images (faster: reads "
        "image headers only)", flag="--no-labels-overlay")
    overwrite: bool = option(
        False, "rewrite outputs that are newer than their image and the COCO file")
    max_pixels: float | None = option(
        DEFAULT_MAX_PIXELS, "images whose header claims more pixels are listed as failures, "
        "not decoded (None: no limit)", cli=False)  # the CLI's --max-pixels is io's


def export_masks(coco: str | os.PathLike | CocoLabels, images_dir: str | os.PathLike,
                 out_dir: str | os.PathLike, options: MasksOptions | None = None,
                 **overrides) -> BatchReport:
    """Write ``<stem>_mask.png`` (and ``<stem>_labels.png``) for each labelled image.

    Args:
        coco: the COCO file, or labels already loaded by :func:`load_coco`
            (then the category options are not used).
        images_dir: folder with the images (EXR, HDR, TIFF, JPEG, PNG).
        out_dir: output folder (created).
        options: a :class:`MasksOptions`: the category names, ``mode`` (which
            file wins when several share a stem, see
            :func:`~skyseg.labels.annotations.match_images`), ``labels_overlay``
            (also write the tinted ``_labels.png`` check image: reads and
            tonemaps every image; masks alone read headers only), ``overwrite``
            (rewrite outputs newer than both the image and the COCO file) and
            ``max_pixels`` (images whose header claims more pixels are listed
            as failures, not decoded or masked; None: no limit).
        overrides: fields of :class:`MasksOptions` to change (``labels_overlay=False``).

    Returns:
        a :class:`~skyseg.log.BatchReport`: done = image paths written,
        failed = labelled images not on disk, unreadable images, bad
        annotations (their masks are not written).

    Raises:
        AnnotationError: the COCO file is missing or malformed (see
            :func:`~skyseg.labels.annotations.load_coco`).
        ConfigError: ``images_dir`` is not a folder; bad category settings; a
            bad ``max_pixels``.
        TypeError: an override that is not a field of :class:`MasksOptions`.

    Outputs: ``<stem>_mask.png`` uint8 (H, W) 0/255 at the size of the image
    on disk; ``<stem>_labels.png`` uint8 (H, W, 3).

    Example:
        >>> report = export_masks("result.json", "images", "masks")  # doctest: +SKIP
        >>> report.exit_code  # doctest: +SKIP
        0
    """
    options = dataclasses.replace(options or MasksOptions(), **overrides)
    max_pixels = check_max_pixels(options.max_pixels)
    labels = coco if isinstance(coco, CocoLabels) else load_coco(
        coco, sky_categories=options.sky_categories,
        non_sky_categories=options.non_sky_categories)
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    matched, missing = match_images(labels, images_dir, mode=options.mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport("masks")
    for stem in missing:
        entry = labels.entry(stem)
        report.failed(stem, f"{stem}: labelled in {labels.path} as {entry.file_name!r} but no "
                            f"{stem}.* image is in {images_dir}; copy it there or remove the task "
                            "from the export")
    on_disk = sum(1 for child in images_dir.iterdir()
                  if child.suffix.lower() in IMAGE_SUFFIXES and child.is_file())
    if on_disk > len(matched):
        logger.info("%s: %d files have no labels in %s (not masked)", images_dir,
                    on_disk - len(matched), labels.path.name)

    def export(match: tuple[Path, str]) -> None:
        path, stem = match
        mask_path = out_dir / f"{stem}{MASK_SUFFIX}"
        labels_path = out_dir / f"{stem}{LABELS_SUFFIX}" if options.labels_overlay else None
        targets = [mask_path] + ([labels_path] if labels_path is not None else [])
        if not options.overwrite and _up_to_date(targets, [path, labels.path]):
            logger.debug("%s: masks are up to date", stem)
        else:
            _export_one(labels, path, stem, mask_path, labels_path, max_pixels)

    for_each(matched, export, report, desc="masks", unit="image", name=lambda match: match[0])
    report.log_summary()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps the help formatter from appending "(default: None)" where the
    # real default is written in the help text.
    hidden = argparse.SUPPRESS
    parser.add_argument("--coco", required=True, type=Path, metavar="FILE", default=hidden,
                        help="Label Studio export in COCO format (result.json)")
    parser.add_argument("--images", required=True, type=Path, metavar="DIR", default=hidden,
                        help="folder with the labelled images (or their EXR/HDR originals)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", default=hidden,
                        help="folder for <stem>_mask.png and <stem>_labels.png")
    add_options(parser, MasksOptions)
    add_max_pixels_argument(parser)


def run(args: argparse.Namespace) -> int:
    options = from_args(MasksOptions, args, max_pixels=args.max_pixels or None)
    report = export_masks(args.coco, args.images, args.out, options)
    logger.info("masks in %s", args.out)
    return report.exit_code

"""The options of ``skyseg predict``, and the part ``skyseg evaluate`` shares: defaults once.

Three classes, each adding a group to the one before (see :mod:`skyseg.options`):

- :class:`ImageOptions`: how one image is predicted (tiles, overlap, wrap, TTA,
  refinement): the options of :func:`skyseg.predict.image.predict_image`;
- :class:`PredictionOptions`: plus the model (``--mode``, ``--which``,
  ``--ensemble``), the threshold and ``--max-pixels``: what ``predict`` and
  ``evaluate`` share;
- :class:`PredictOptions`: plus the outputs of ``skyseg predict`` (``--save``, the
  overlay size, Label Studio names, ``--shard``).

Each checks its values when made, so a typo fails before the (slow) model load.

Example:
    >>> options = PredictOptions(tile_size=512, overlap=32.0)
    >>> options.overlap, image_options(options)["tile_size"]
    (32, 512)
    >>> PredictOptions(tile_size=500)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skyseg.errors.ConfigError: --tile-size 500 is not a multiple of 32 ...; use 480 or 512
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from skyseg.errors import ConfigError
from skyseg.image.metrics import THRESHOLD
from skyseg.io import DEFAULT_MAX_PIXELS, check_max_pixels
from skyseg.labels.labelstudio import DEFAULT_FROM_NAME, DEFAULT_TO_NAME
from skyseg.options import add_options, option
from skyseg.predict.outputs import DEFAULT_SAVE, SAVE_CHOICES, parse_save
from skyseg.predict.refine import REFINE_CHOICES, check_refine
from skyseg.predict.tiling import resolve_overlap

__all__ = ["DEFAULT_OVERLAP", "ImageOptions", "PredictionOptions", "PredictOptions",
           "image_options", "with_overrides", "add_stage_options", "check_tile_size",
           "default_overlap"]

#: Pixels shared by neighbouring tiles when --overlap is not given (at most a
#: quarter of the tile, so small test tiles keep most of their pixels).
DEFAULT_OVERLAP = 64

#: Long side of the overlay PNG (an 8K overlay PNG is ~100 MB and slow to open).
_OVERLAY_MAX_SIZE = 2048


def check_tile_size(tile_size: int) -> int:
    """Validate ``--tile-size``: a positive multiple of 32.

    Raises:
        ConfigError: naming the nearest valid sizes.

    Example:
        >>> check_tile_size(1088)
        1088
    """
    if not _is_whole(tile_size):
        raise ConfigError(f"--tile-size must be a whole number of pixels, got {tile_size!r}")
    if tile_size < 32 or tile_size % 32:
        lower, upper = max(32, tile_size // 32 * 32), max(32, -(-tile_size // 32) * 32)
        nearest = f"{lower}" if lower == upper else f"{lower} or {upper}"
        raise ConfigError(
            f"--tile-size {tile_size} is not a multiple of 32 (the U-Net halves the tile "
            f"5 times); use {nearest}"
        )
    return int(tile_size)


def default_overlap(tile_size: int) -> int:
    """The overlap used when none is given: 64 px, at most a quarter of the tile.

    Example:
        >>> default_overlap(1088), default_overlap(128)
        (64, 32)
    """
    return min(DEFAULT_OVERLAP, tile_size // 4)


def _is_whole(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


@dataclass
class ImageOptions:
    """How one image is predicted: tiles, their overlap, wrap-around, TTA, refinement.

    Attributes:
        tile_size: tile side fed to the network, a multiple of 32.
        overlap: overlap of neighbouring tiles: pixels (>= 1) or a fraction of
            the tile (< 1); None: :func:`default_overlap` (64 px).
        batch_size: tiles per network call.
        wrap: ``"auto"`` (panoramas, width = 2 x height, wrap around),
            ``"on"``, ``"off"`` (or a bool).
        tta: test-time augmentation: each tile also mirrored left-right, and
            for wrapping images a second pass rolled by half the width (with
            the tile grid shifted by half a tile spacing). 2x or 4x the time.
        convert: allow an LDR image into an HDR model (sRGB to linear) or the
            reverse (tonemapping).
        refine: how a probability predicted below the image's resolution
            comes back to full size: ``"auto"`` and ``"guided"``: the guided
            filter of :func:`skyseg.predict.refine.guided_upsample` (edges follow
            the full-resolution image); ``"none"``: linear upsampling (the
            output of skyseg before refinement). ``"guided"`` also filters a
            probability predicted at full size; ``"auto"`` leaves that alone.
        max_side: run the network on the image shrunk so that its long side
            is at most this (after the run's scale); None: the run's scale only.
    """

    tile_size: int = option(1088, "tile side fed to the network, a multiple of 32 "
                                  "(independent of the training patch size)")
    overlap: float | None = option(
        None, "overlap of neighbouring tiles: pixels (>= 1) or a fraction of the tile (< 1); "
              f"default {DEFAULT_OVERLAP} px, at most a quarter of the tile")
    batch_size: int = option(1, "tiles per network call")
    wrap: str = option("auto", "wrap around horizontally (no seam at x = 0); auto: when the "
                               "width is exactly twice the height (equirectangular panorama)",
                       choices=("auto", "on", "off"))
    tta: bool = option(False, "test-time augmentation: left-right flip, plus a half-width roll "
                              "for wrapping panoramas (2x or 4x slower); never vertical flips")
    convert: bool = option(False, "allow LDR images into an HDR model (sRGB to linear) and HDR "
                                  "images into an LDR model (tonemapped)")
    refine: str = option(
        "auto", "how a probability predicted below the image's resolution comes back to full "
                "size: guided (edge-aware guided filter on the full-resolution image), none "
                "(linear upsampling, as before refinement existed); auto: guided when the "
                "network runs below the image's resolution (the run's --scale or --max-side)",
        choices=REFINE_CHOICES)
    max_side: int | None = option(None, "run the network on the image shrunk to at most N "
                                        "pixels on its long side (after the run's scale; "
                                        "refined back to full size)", metavar="N")

    def __post_init__(self):
        overlap = self.overlap
        if (isinstance(overlap, (float, np.floating)) and overlap >= 1
                and overlap == int(overlap)):
            self.overlap = int(overlap)  # 64.0 from the command line is 64 pixels
        check_tile_size(self.tile_size)
        resolve_overlap(default_overlap(self.tile_size) if self.overlap is None
                        else self.overlap, self.tile_size)
        if not _is_whole(self.batch_size) or self.batch_size < 1:
            raise ConfigError(
                f"--batch-size must be a positive whole number, got {self.batch_size!r}")
        if not isinstance(self.wrap, bool) and self.wrap not in ("auto", "on", "off"):
            raise ConfigError(f"--wrap must be auto, on or off, got {self.wrap!r}")
        check_refine(self.refine)
        if self.max_side is not None and (not _is_whole(self.max_side) or self.max_side < 32):
            raise ConfigError(
                f"--max-side must be a whole number of pixels >= 32, got {self.max_side!r}")


@dataclass
class PredictionOptions(ImageOptions):
    """What ``predict`` and ``evaluate`` share: the image options, the model, the threshold."""

    threshold: float = option(THRESHOLD, "sky where the probability is above this")
    mode: str | None = option(None, "preprocessing of a bare model file that has no "
                                    "preprocessing.json beside it", choices=("hdr", "ldr"))
    which: str = option("best", "checkpoint of a run folder", choices=("best", "last"))
    ensemble: list[str] = option(
        default_factory=list, metavar="RUN", action="append",
        help="another run folder (or model file) whose sky probability is averaged with "
             "MODEL's; repeat for more (each adds one prediction's time): runs of other seeds "
             "are steadier together")
    max_pixels: int | None = option(
        DEFAULT_MAX_PIXELS, "refuse, before decoding, images with more pixels than this "
                            f"(default {DEFAULT_MAX_PIXELS:.0e}: 16384x8192 panoramas pass; "
                            "0: no limit)", metavar="N")

    def __post_init__(self):
        super().__post_init__()
        threshold = self.threshold
        if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                and 0.0 < threshold < 1.0):
            raise ConfigError(
                f"--threshold must be between 0 and 1 (exclusive), got {threshold!r}")
        self.max_pixels = check_max_pixels(self.max_pixels or None)  # 0: no limit
        self.ensemble = [str(run) for run in self.ensemble]


@dataclass
class PredictOptions(PredictionOptions):
    """The options of ``skyseg predict``: the shared ones plus what is written, and where.

    ``shard`` and ``overwrite`` are the command line's to act on (it narrows the inputs
    to the shard's, :mod:`skyseg.predict.shards`); ``predict_files`` predicts what it is
    given.
    """

    save: str = option(",".join(DEFAULT_SAVE),
                       f"outputs to write, comma-separated from {','.join(SAVE_CHOICES)}")
    overlay_max_size: int | None = option(_OVERLAY_MAX_SIZE, "long side of the overlay PNG in "
                                                             "pixels (0: full size)")
    image_url_prefix: str = option(
        "", "labelstudio: put before each file name in the tasks' data.image, e.g. "
            "/data/local-files/?d=sky/ or https://host/folder/", metavar="PREFIX")
    labelstudio_from_name: str = option(DEFAULT_FROM_NAME, "labelstudio: name of the "
                                        "project's PolygonLabels tag", metavar="NAME")
    labelstudio_to_name: str = option(DEFAULT_TO_NAME, "labelstudio: name of the project's "
                                      "Image tag", metavar="NAME")
    shard: str | None = option(None, "job arrays: predict only block I of N (1-based) of the "
                                     "sorted inputs, skipping inputs whose outputs are complete",
                               metavar="I/N")
    overwrite: bool = option(False, "with --shard: predict again inputs whose outputs exist")

    def __post_init__(self):
        super().__post_init__()
        self.save = ",".join(parse_save(self.save))  # a list from Python is fine too
        if self.overlay_max_size is not None and self.overlay_max_size < 16:
            if self.overlay_max_size == 0:
                self.overlay_max_size = None  # full size
            else:
                raise ConfigError(f"--overlay-max-size must be at least 16 pixels, got "
                                  f"{self.overlay_max_size}")

    @property
    def outputs(self) -> tuple[str, ...]:
        """The ``--save`` names as a tuple (``("mask", "overlay")``)."""
        return parse_save(self.save)


def image_options(options: ImageOptions) -> dict:
    """The :class:`ImageOptions` fields of ``options`` as keyword arguments of ``predict_image``."""
    return {field.name: getattr(options, field.name)
            for field in dataclasses.fields(ImageOptions)}


def with_overrides(cls, options, overrides: dict, *, caller: str):
    """``options`` (None: ``cls()``) with the fields in ``overrides`` changed, checked again.

    What a stage function does with its ``options`` and keyword arguments.

    Raises:
        TypeError: a keyword that is not a field of ``cls``, naming ``caller``.
        ConfigError: a bad value.

    Example:
        >>> with_overrides(ImageOptions, None, {"tta": True}, caller="predict_image").tta
        True
    """
    unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments {unknown}")
    return dataclasses.replace(options if options is not None else cls(), **overrides)


def add_stage_options(parser, cls) -> None:
    """The command-line options of ``predict`` or ``evaluate`` (``cls``, a subclass of
    :class:`PredictionOptions`): the stage's own, then the shared ones as the
    "prediction" group."""
    shared = {field.name for field in dataclasses.fields(PredictionOptions)}
    add_options(parser, cls, skip=shared)
    add_options(parser, PredictionOptions, group_title="prediction")

"""One image through the network: tiles, test-time augmentation, back to full size.

:func:`predict_image` is the whole path for one array: the image converted to
what the model expects (HDR or LDR), shrunk to the working size (the run's
``scale``, ``max_side``), cut into overlapping tiles (:mod:`skyseg.predict.tiling`)
that the network sees in batches, merged, and brought back to full size
(:mod:`skyseg.predict.refine`). An ensemble averages its members' probabilities.

Example:
    >>> is_panorama(4096, 8192), working_size(4096, 8192, scale=0.5)
    (True, (2048, 4096))
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np

from skyseg.errors import ConfigError, ModelError
from skyseg.image.preprocess import (
    Preprocessing,
    ldr_to_radiance,
    radiance_to_ldr,
    rescale_image,
    scaled_size,
    upsample_linear,
)
from skyseg.log import progress
from skyseg.predict.loading import accepts_ldr, fixed_input_size, keras_predictor, load_predictor
from skyseg.predict.options import ImageOptions, default_overlap, with_overrides
from skyseg.predict.refine import guided_upsample
from skyseg.predict.tiling import TileGrid, predict_tiled, resolve_overlap, tile_grid
from skyseg.training.model import LoadedModel, ModelEnsemble

__all__ = ["Prediction", "predict_image", "is_panorama", "working_size"]

logger = logging.getLogger("skyseg")


def is_panorama(height: int, width: int) -> bool:
    """True for an equirectangular panorama: width exactly twice the height.

    Example:
        >>> is_panorama(4096, 8192), is_panorama(4000, 6000)
        (True, False)
    """
    return width == 2 * height


def _resolve_wrap(wrap: str | bool, height: int, width: int) -> bool:
    """Whether an image of this size wraps, for a ``wrap`` :class:`ImageOptions` checked."""
    if isinstance(wrap, bool):
        return wrap
    return is_panorama(height, width) if wrap == "auto" else wrap == "on"


def working_size(height: int, width: int, *, scale: float = 1.0,
                 max_side: int | None = None) -> tuple[int, int]:
    """(height, width) the network runs at: the run's ``scale``, then at most ``max_side``.

    Example:
        >>> working_size(4096, 8192, scale=0.5), working_size(4096, 8192, max_side=2048)
        ((2048, 4096), (1024, 2048))
    """
    size = scaled_size(height, width, scale) if scale != 1.0 else (height, width)
    if max_side is not None and max(size) > max_side:
        size = scaled_size(height, width, max_side / max(height, width))
    return size


def _network_input(image: np.ndarray, *, image_is_hdr: bool, preprocessing: Preprocessing,
                   convert: bool, name: str) -> np.ndarray:
    """The image in the value range the model's preprocessing expects."""
    if image_is_hdr == preprocessing.is_hdr:
        return image
    model_kind = "HDR radiance" if preprocessing.is_hdr else "LDR (0..255) images"
    image_kind = "an HDR (radiance)" if image_is_hdr else "an LDR"
    if not convert:
        raise ModelError(
            f"{name}: the model was trained on {model_kind} but this is {image_kind} image; "
            "pass --convert to convert it ("
            + ("tonemap to 0..255" if image_is_hdr else "sRGB to linear radiance")
            + ") or use a model trained on this kind of image"
        )
    logger.info("%s: converting %s image for the %s model", name,
                "HDR" if image_is_hdr else "LDR", preprocessing.mode.upper())
    return radiance_to_ldr(image) if image_is_hdr else ldr_to_radiance(image)


def _roll_offset(width: int, columns: int) -> int:
    """Column offset of the half-width-roll TTA pass: half the width plus half a tile
    spacing (``width / columns``), so that pass's tile borders fall inside the first
    pass's tiles even when half the width is a whole number of spacings."""
    return (width // 2 + round(width / (2 * columns))) % width


@dataclass
class Prediction:
    """What :func:`predict_image` did, for logs and benchmarks.

    Attributes:
        probability: float32 (H, W) sky probability.
        wrap: the width was treated as a circle.
        tiles: tile evaluations (all passes and flips).
        tile_shape: (height, width) of the tiles.
        pixel_overhead: pixels fed to the network / image pixels.
        passes: ``"plain"``, plus ``"flip"`` and ``"roll"`` with TTA.
        working_shape: (height, width) the network ran at.
        upsampling: how the probability came to full size: ``"guided"``,
            ``"linear"`` or ``"none"`` (the network ran at full size).
    """

    probability: np.ndarray
    wrap: bool
    tiles: int
    tile_shape: tuple[int, int]
    pixel_overhead: float
    passes: list[str] = field(default_factory=list)
    working_shape: tuple[int, int] | None = None
    upsampling: str = "none"


@dataclass
class _Plan:
    """How one image goes through the network: the working size, the tiles, the passes."""

    wrap: bool
    working_shape: tuple[int, int]
    upsampling: str
    tile_size: int | tuple[int, int]
    overlap: int
    grid: TileGrid
    fixed: bool
    offsets: tuple[int, ...] = (0,)
    passes: list[str] = field(default_factory=lambda: ["plain"])

    @property
    def evaluations(self) -> int:
        """Tile evaluations of the network, all passes and flips together."""
        return self.grid.count * len(self.offsets) * (2 if "flip" in self.passes else 1)


def predict_image(
    loaded,
    image: np.ndarray,
    options: ImageOptions | None = None,
    *,
    is_hdr: bool | None = None,
    name: str = "image",
    show_progress: bool = False,
    details: bool = False,
    **overrides,
):
    """Sky probability of a whole image, predicted tile by tile and merged seamlessly.

    Args:
        loaded: a :class:`~skyseg.training.model.LoadedModel`, a run folder or a model
            file; or a :class:`~skyseg.training.model.ModelEnsemble` (or a list of
            models): each member predicts the whole image and the
            probabilities are averaged (members x the time).
        image: float32 (H, W, 3) as :func:`skyseg.read_image` returns it
            (radiance for HDR, 0..255 for LDR), any size.
        options: an :class:`~skyseg.predict.options.ImageOptions` (or a subclass);
            None: the defaults.
        is_hdr: whether ``image`` is radiance; None: assume it is what the
            model expects. A mismatch needs the ``convert`` option.
        name: how messages call the image.
        show_progress: a progress bar over the tiles.
        details: return a :class:`Prediction` instead of the array.
        **overrides: fields of the options to change (``tile_size``, ``overlap``,
            ``batch_size``, ``wrap``, ``tta``, ``convert``, ``refine``, ``max_side``;
            see :class:`~skyseg.predict.options.ImageOptions`).

    Returns:
        float32 ``(H, W)`` sky probability in 0..1 (or a :class:`Prediction`).

    Raises:
        TypeError: a keyword that is not an option.
        ConfigError: bad tile size, overlap, batch size or wrap.
        ModelError: the model does not fit, or HDR/LDR mismatch without ``convert``.

    Example:
        >>> loaded = skyseg.training.model.load_run("runs/hdr")  # doctest: +SKIP
        >>> image, info = skyseg.read_image("pano.exr", return_info=True)  # doctest: +SKIP
        >>> probability = predict_image(loaded, image, is_hdr=info.is_hdr)  # doctest: +SKIP
        >>> mask = probability >= 0.5  # doctest: +SKIP
    """
    options = with_overrides(ImageOptions, options, overrides, caller="predict_image")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ConfigError(f"{name}: expected an image (H, W, 3), got shape {image.shape}")
    loaded = load_predictor(loaded)
    if isinstance(loaded, ModelEnsemble):
        return _predict_ensemble(loaded, image, options, details=details, is_hdr=is_hdr,
                                 name=name, show_progress=show_progress)
    if is_hdr is not None:
        image = _network_input(image, image_is_hdr=bool(is_hdr),
                               preprocessing=loaded.preprocessing,
                               convert=options.convert or accepts_ldr(loaded), name=name)
    predict_batch = keras_predictor(loaded.model)  # a model that does not fit fails first
    plan = _plan(loaded, image.shape[:2], options, name)
    probability = _predict_tiles(predict_batch, loaded.preprocessing, image, plan, options,
                                 name=name, show_progress=show_progress)
    probability = _to_full_size(probability, image, plan, is_hdr=loaded.preprocessing.is_hdr)
    if not details:
        return probability
    return Prediction(probability, plan.wrap, plan.evaluations, plan.grid.tile_shape,
                      plan.grid.pixel_overhead, plan.passes, plan.working_shape, plan.upsampling)


def _plan(loaded: LoadedModel, shape: tuple[int, int], options: ImageOptions,
          name: str) -> _Plan:
    """The working size, tile grid and TTA passes for an image of ``shape`` (logged)."""
    full_height, full_width = shape
    wrap = _resolve_wrap(options.wrap, full_height, full_width)
    height, width = working_size(full_height, full_width, scale=loaded.preprocessing.scale,
                                 max_side=options.max_side)
    shrunk = (height, width) != shape
    upsampling = ("guided" if options.refine == "guided" or (options.refine == "auto" and shrunk)
                  else "linear" if shrunk else "none")
    fixed = fixed_input_size(loaded.model)
    if fixed is not None and fixed != (options.tile_size, options.tile_size):
        logger.info("%s: the model takes a fixed input of %dx%d; using that as the tile size",
                    name, *fixed)
    side = min(fixed) if fixed else options.tile_size
    overlap = resolve_overlap(default_overlap(side) if options.overlap is None
                              else options.overlap, side)
    tiles = fixed if fixed is not None else options.tile_size
    grid = tile_grid(height, width, tile_size=tiles, overlap=overlap, wrap=wrap,
                     shrink=fixed is None)
    plan = _Plan(wrap, (height, width), upsampling, tiles, overlap, grid, fixed is not None)
    if options.tta:
        plan.passes.append("flip")
        if wrap:
            plan.offsets = (0, _roll_offset(width, grid.cols.count))
            plan.passes.append("roll")
    _log_plan(name, shape, plan)
    return plan


def _log_plan(name: str, shape: tuple[int, int], plan: _Plan) -> None:
    (full_height, full_width), (height, width) = shape, plan.working_shape
    size = f"{full_width}x{full_height}"
    if plan.working_shape != shape:
        size += (f" (predicted at {width}x{height}, scale {width / full_width:.3g}, "
                 f"{plan.upsampling} upsampling)")
    logger.info("%s: %s, %s, %d tiles of %dx%d (pixel overhead %.2f), passes %s", name,
                size, "wrap-around" if plan.wrap else "no wrap", plan.grid.count,
                *plan.grid.tile_shape, plan.grid.pixel_overhead, "+".join(plan.passes))


def _predict_tiles(predict_batch, preprocessing: Preprocessing, image: np.ndarray, plan: _Plan,
                   options: ImageOptions, *, name: str, show_progress: bool) -> np.ndarray:
    """The network's probability at the working size, tile by tile (behind a progress bar)."""
    if plan.working_shape != image.shape[:2]:
        # The model was trained on images shrunk by this factor (or --max-side
        # asks for a smaller working size): predict at that size, then bring
        # the probability back to full size.
        image = rescale_image(image, plan.working_shape)
    bar = progress(total=plan.evaluations, desc=name, unit="tile",
                   disable=None if show_progress else True)
    try:
        return predict_tiled(
            image, predict_batch, tile_size=plan.tile_size, overlap=plan.overlap, wrap=plan.wrap,
            batch_size=options.batch_size,
            prepare=functools.partial(preprocessing.apply, gain=preprocessing.image_gain(image)),
            flip=options.tta, column_offsets=plan.offsets, shrink=not plan.fixed,
            on_batch=bar.update,
        )
    finally:
        bar.close()


def _to_full_size(probability: np.ndarray, image: np.ndarray, plan: _Plan, *,
                  is_hdr: bool) -> np.ndarray:
    """The probability at ``image``'s size (guided or linear upsampling), clipped to 0..1."""
    if plan.upsampling == "guided":
        np.clip(probability, 0.0, 1.0, out=probability)
        probability = guided_upsample(probability, image, is_hdr=is_hdr, wrap=plan.wrap)
    elif plan.upsampling == "linear":
        probability = upsample_linear(probability, *image.shape[:2], wrap=plan.wrap)
    np.clip(probability, 0.0, 1.0, out=probability)
    return probability


def _predict_ensemble(ensemble: ModelEnsemble, image: np.ndarray, options: ImageOptions, *,
                      details: bool, **settings):
    """:func:`predict_image` of each member, averaged (one full-size sum held at a time)."""
    first = None
    for number, member in enumerate(ensemble.members, 1):
        logger.info("%s: ensemble member %d of %d (%s)", settings["name"], number,
                    len(ensemble.members), member.path)
        prediction = predict_image(member, image, options, details=True, **settings)
        if first is None:
            first, probability, tiles = prediction, prediction.probability, prediction.tiles
        else:
            probability += prediction.probability
            tiles += prediction.tiles
        del prediction
    probability /= np.float32(len(ensemble.members))
    if not details:
        return probability
    return Prediction(probability, first.wrap, tiles, first.tile_shape, first.pixel_overhead,
                      first.passes, first.working_shape, first.upsampling)

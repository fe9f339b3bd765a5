"""Sky masks for images of any size, 8K HDR panoramas first.

``skyseg predict MODEL INPUT... --out DIR`` (also ``python -m skyseg.predict``
with the same arguments) writes, for each input:

- ``<stem>_mask.png``: uint8, 255 = sky, 0 = not sky, the input's size;
- ``<stem>_overlay.png``: the tonemapped image with the sky tinted magenta at
  50% opacity, no larger than ``--overlay-max-size`` on its long side;
- with ``--save ...,prob``: ``<stem>_prob.png``, the sky probability as 16-bit
  (0..65535 for 0..1);
- with ``--save ...,exr``: ``<stem>_sky.exr``, the original radiance (LDR
  inputs: linear sRGB 0..1) as RGB with the sky probability as alpha;
- with ``--save ...,labelstudio``: one ``labelstudio.json`` for the batch,
  a Label Studio task per input with the mask as polygon pre-annotations
  (:mod:`skyseg.labels.labelstudio`; ``--image-url-prefix``,
  ``--labelstudio-from-name``, ``--labelstudio-to-name``), written at the end.

MODEL is a run folder of ``skyseg train`` or a model file; the preprocessing
saved with it is applied exactly. An HDR model on an LDR file (or the
reverse) is an error unless ``--convert`` asks for a conversion.

Defaults for 8K: 1088-pixel tiles, 64 pixels of overlap, one tile per
network call. 1088 = 1024 + 64, so 4 rows x 8 columns of tiles cover an
8192x4096 panorama (32 reflected rows at the top and bottom, wrap-around
columns) with 13% more pixels than the image; 1024-pixel tiles need 5 x 9
tiles (of 896x992 after shrinking, +19%). Measured with
``scripts/bench_predict.py`` (randomly initialised ResNet34 U-Net, the
project's 2 shared CPU cores, 8192x4096 EXR, mask + overlay):

====  =====  ========  ==========  ==========  ================  ========
tile  tiles  overhead  end-to-end  pure model  end-to-end/model  peak RSS
====  =====  ========  ==========  ==========  ================  ========
1088  4 x 8  1.129     137.7 s     136.8 s     1.006             2.08 GB
2112  2 x 4  1.063     133.7 s     141.1 s     0.947             3.06 GB
====  =====  ========  ==========  ==========  ================  ========

(Pure model time is the mean of runs before and after the end-to-end one;
other jobs on the shared machine moved it by up to 15%, hence a ratio
below 1.) Both run the network at about 0.25-0.28 megapixels/s; what is not
the network (reading, cutting and preprocessing tiles, merging, writing)
adds about 3 s, because tiles are prepared in a background thread and the
overlay picture is made while the network runs. 2112-pixel tiles waste
fewer pixels but need 1 GB more memory, over the 2.5 GB budget. A batch of
two 1088-pixel tiles costs 0.31 GB more and showed no reliable speed-up on
this CPU, so the default batch is one tile. Two 8K panoramas in one call
with every output (mask, overlay, 16-bit probability, sky EXR) peaked at
2.28 GB.

The network is called through one compiled function per loaded model
(``tf.function(lambda x: model(x, training=False))``, traced once per tile
shape), about 14% faster than ``model.predict_on_batch``. With it, and the
pure model time now taken as that compiled call on the image's own pixels
(1024x1024 tiles, no overlap), the same 8K run measured 152.6 s for
``predict_files`` against 150.7 s (ratio 1.01; 1.14 with the 19 s of
start-up: TensorFlow, model, trace), peak RSS 1.95 GB, on the shared machine
with other jobs running (the pure model time was 186 s before the run and
115 s after it).

Coarse to fine: with a run trained at ``--scale`` < 1 or with ``--max-side``,
the network runs on the shrunk image and :mod:`skyseg.predict.refine` brings the
probability back to full size along the image's edges (``--refine``).
Giant inputs are refused from their header before decoding (``--max-pixels``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import logging
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError, ModelError, SkysegError
from skyseg.image.metrics import THRESHOLD
from skyseg.image.overlay import resize_mask, resize_uint8, tint
from skyseg.image.preprocess import (
    Preprocessing,
    ldr_to_radiance,
    radiance_to_ldr,
    rescale_image,
    scaled_size,
    tonemap,
    upsample_linear,
)
from skyseg.io import (
    IMAGE_SUFFIXES,
    find_images,
    prepare_output_folder,
    read_image,
    read_image_info,
    write_exr,
    write_png,
)
from skyseg.io.run_folder import (
    DEFAULT_MODEL_NAME,
    PREPROCESSING_FILE,
    is_model_path,
    resolve_model_path,
)
from skyseg.log import BatchReport, progress
from skyseg.options import add_options, from_args
from skyseg.predict.options import (
    ImageOptions,
    PredictionOptions,
    PredictOptions,
    default_overlap,
    image_options,
    with_overrides,
)
from skyseg.predict.outputs import DEFAULT_SAVE, output_paths
from skyseg.predict.refine import guided_upsample
from skyseg.predict.tiling import predict_tiled, resolve_overlap, tile_grid
from skyseg.training.model import LoadedModel, ModelEnsemble, load_run

__all__ = [
    "PredictOptions",
    "Prediction",
    "load_predictor",
    "model_label",
    "keras_predictor",
    "load_for_cli",
    "add_model_argument",
    "resolve_model_argument",
    "accepts_ldr",
    "default_overlap",
    "is_panorama",
    "working_size",
    "predict_image",
    "predict_files",
    "probability_to_mask",
    "overlay_background",
    "write_outputs",
    "prepare_output_folder",
    "CLI_HELP",
    "add_arguments",
    "default_prediction_options",
    "report_predictions",
    "run",
]

logger = logging.getLogger("skyseg")

CLI_HELP = "predict sky masks (and overlays) for images of any size, 8K panoramas included"

#: Largest value a half-float EXR channel holds; brighter suns need float32.
_HALF_MAX = 65504.0
_CHUNK_ROWS = 512


def is_panorama(height: int, width: int) -> bool:
    """True for an equirectangular panorama: width exactly twice the height.

    Example:
        >>> is_panorama(4096, 8192), is_panorama(4000, 6000)
        (True, False)
    """
    return width == 2 * height


def _resolve_wrap(wrap: str | bool, height: int, width: int) -> bool:
    if isinstance(wrap, bool):
        return wrap
    if wrap == "auto":
        return is_panorama(height, width)
    if wrap in ("on", "off"):
        return wrap == "on"
    raise ConfigError(f"--wrap must be auto, on or off, got {wrap!r}")


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


def load_predictor(model, *, mode: str | None = None,
                   which: str = "best") -> LoadedModel | ModelEnsemble:
    """The model to predict with: a ``LoadedModel``, a run folder or a model file.

    Args:
        model: a ``LoadedModel`` or ``ModelEnsemble`` (returned as is), a run
            folder of ``skyseg train`` or a ``.h5`` model file; or a list of
            those, whose probabilities are averaged (a
            :class:`~skyseg.training.model.ModelEnsemble`; a list of one is that model).
        mode: ``"hdr"`` or ``"ldr"`` for a bare model file that has no
            ``preprocessing.json`` beside it (default preprocessing of that
            mode); must agree with the saved preprocessing when there is one.
        which: ``"best"`` or ``"last"`` checkpoint of a run folder.

    Raises:
        ModelError: missing or unreadable model; an ensemble mixing HDR and LDR.
        ConfigError: preprocessing unknown, or ``mode`` contradicts it; an empty list.
    """
    if isinstance(model, (LoadedModel, ModelEnsemble)):
        return model
    if isinstance(model, (list, tuple)):
        if not model:
            raise ConfigError("no model given; pass a run folder or a .h5 model file")
        members: list[LoadedModel] = []
        for item in model:
            loaded = load_predictor(item, mode=mode, which=which)
            members.extend(loaded.members if isinstance(loaded, ModelEnsemble) else [loaded])
        return members[0] if len(members) == 1 else ModelEnsemble(members)
    if mode not in (None, "hdr", "ldr"):
        raise ConfigError(f"--mode must be hdr or ldr, got {mode!r}")
    path = Path(model)
    folder = path if path.is_dir() else path.parent
    saved = folder / PREPROCESSING_FILE
    if mode is not None and path.exists() and saved.is_file():
        preprocessing = Preprocessing.load(saved)
        if preprocessing.mode != mode:
            raise ConfigError(
                f"{saved}: the model was trained with {preprocessing.mode.upper()} preprocessing "
                f"but --mode {mode} was given; drop --mode (the saved preprocessing is used)"
            )
        return load_run(path, which=which)
    if mode is not None and path.exists():
        return load_run(path, preprocessing=Preprocessing(mode=mode), which=which)
    return load_run(path, which=which)


def model_label(loaded: LoadedModel | ModelEnsemble) -> str:
    """``<run folder>/<file>`` of a model, members joined by `` + `` for an ensemble."""
    members = loaded.members if isinstance(loaded, ModelEnsemble) else [loaded]
    return " + ".join(f"{m.path.parent.name}/{m.path.name}" if m.path else "(in memory)"
                      for m in members)


def keras_predictor(model):
    """A batch function ``f((N, h, w, 3) float32) -> (N, h, w)`` around a Keras model.

    Raises:
        ModelError: the model does not take 3 channels or give 1 channel.
    """
    input_shape = tuple(model.input_shape)
    output_shape = tuple(model.output_shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ModelError(f"the model takes input {input_shape}; skyseg feeds (N, H, W, 3) images")
    if len(output_shape) != 4 or output_shape[-1] != 1:
        raise ModelError(
            f"the model gives output {output_shape}; expected one sky-probability channel "
            "(N, H, W, 1)"
        )

    compiled = _compiled_call(model)

    def predict(batch: np.ndarray) -> np.ndarray:
        return compiled(batch).numpy()[..., 0]

    return predict


#: One compiled inference function per loaded model (traced once per tile
#: shape), so a batch of images does not trace the graph again for each.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_call(model):
    """``tf.function(lambda x: model(x, training=False))``, made once per model.

    A compiled call is about 14% faster than ``model.predict_on_batch`` (no
    Keras data-adapter round trip per batch). It holds the model weakly.
    """
    try:
        return _COMPILED[model]
    except KeyError:
        pass
    from skyseg.backend import import_tensorflow

    tf = import_tensorflow()
    network = weakref.ref(model)
    compiled = tf.function(lambda batch: network()(batch, training=False),
                           reduce_retracing=True)
    _COMPILED[model] = compiled
    return compiled


def _fixed_input_size(model) -> tuple[int, int] | None:
    height, width = tuple(model.input_shape)[1:3]
    if height is None or width is None:
        return None
    return int(height), int(width)


def accepts_ldr(loaded: LoadedModel) -> bool:
    """Whether an HDR model was trained on LDR photos too (decoded to linear radiance,
    ``build-dataset --convert-ldr``), so LDR inputs are converted without ``--convert``."""
    return bool(loaded.preprocessing.is_hdr and loaded.config.get("convert_ldr"))


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
            None: the defaults. Keyword arguments override its fields:
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
        is_hdr: whether ``image`` is radiance; None: assume it is what the
            model expects. A mismatch needs ``convert``.
        name: how messages call the image.
        show_progress: a progress bar over the tiles.
        details: return a :class:`Prediction` instead of the array.

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
    tile_size, overlap, batch_size, wrap, tta, convert, refine, max_side = (
        image_options(options).values())
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ConfigError(f"{name}: expected an image (H, W, 3), got shape {image.shape}")
    loaded = load_predictor(loaded)
    if isinstance(loaded, ModelEnsemble):
        return _predict_ensemble(loaded, image, options, details=details, is_hdr=is_hdr,
                                 name=name, show_progress=show_progress)
    preprocessing = loaded.preprocessing
    if is_hdr is not None:
        image = _network_input(image, image_is_hdr=bool(is_hdr), preprocessing=preprocessing,
                               convert=convert or accepts_ldr(loaded), name=name)
    full_height, full_width = image.shape[:2]
    wrapping = _resolve_wrap(wrap, full_height, full_width)
    full_image = image
    size = working_size(full_height, full_width, scale=preprocessing.scale, max_side=max_side)
    if size != (full_height, full_width):
        # The model was trained on images shrunk by this factor (or --max-side
        # asks for a smaller working size): predict at that size, then bring
        # the probability back to full size.
        image = rescale_image(image, size)
    height, width = image.shape[:2]
    shrunk = (height, width) != (full_height, full_width)
    upsampling = ("guided" if refine == "guided" or (refine == "auto" and shrunk)
                  else "linear" if shrunk else "none")
    predict_batch = keras_predictor(loaded.model)
    fixed = _fixed_input_size(loaded.model)
    tiles = fixed if fixed is not None else tile_size
    if fixed is not None and fixed != (tile_size, tile_size):
        logger.info("%s: the model takes a fixed input of %dx%d; using that as the tile size",
                    name, *fixed)
    side = min(fixed) if fixed else tile_size
    overlap_px = resolve_overlap(default_overlap(side) if overlap is None else overlap, side)
    grid = tile_grid(height, width, tile_size=tiles, overlap=overlap_px, wrap=wrapping,
                     shrink=fixed is None)
    offsets = (0,)
    passes = ["plain"]
    if tta:
        passes.append("flip")
        if wrapping:
            offsets = (0, _roll_offset(width, grid.cols.count))
            passes.append("roll")
    evaluations = grid.count * len(offsets) * (2 if tta else 1)
    size = f"{full_width}x{full_height}"
    if shrunk:
        size += (f" (predicted at {width}x{height}, scale {width / full_width:.3g}, "
                 f"{upsampling} upsampling)")
    logger.info("%s: %s, %s, %d tiles of %dx%d (pixel overhead %.2f), passes %s", name,
                 size, "wrap-around" if wrapping else "no wrap", grid.count,
                 *grid.tile_shape, grid.pixel_overhead, "+".join(passes))
    bar = progress(total=evaluations, desc=name, unit="tile",
                   disable=None if show_progress else True)
    try:
        probability = predict_tiled(
            image, predict_batch, tile_size=tiles, overlap=overlap_px, wrap=wrapping,
            batch_size=batch_size,
            prepare=functools.partial(preprocessing.apply, gain=preprocessing.image_gain(image)),
            flip=tta,
            column_offsets=offsets, shrink=fixed is None, on_batch=bar.update,
        )
    finally:
        bar.close()
    if upsampling == "guided":
        np.clip(probability, 0.0, 1.0, out=probability)
        probability = guided_upsample(probability, full_image, is_hdr=preprocessing.is_hdr,
                                      wrap=wrapping)
    elif upsampling == "linear":
        probability = upsample_linear(probability, full_height, full_width, wrap=wrapping)
    np.clip(probability, 0.0, 1.0, out=probability)
    if not details:
        return probability
    return Prediction(probability, wrapping, evaluations, grid.tile_shape, grid.pixel_overhead,
                      passes, (height, width), upsampling)


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


def predict_files(
    model,
    inputs,
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    show_progress: bool = True,
    **overrides,
) -> BatchReport:
    """Predict every input and write its outputs; bad files are reported, not fatal.

    While one image is in the network, the next is read and the previous
    one's files are written in background threads (at most one of each), when
    that holds at most 256 MiB: an 8K panorama is read in the foreground, and
    its sky EXR written in the foreground, so peak memory is one image's.

    Args:
        model: a :class:`~skyseg.training.model.LoadedModel`, run folder or model file
            (or a list of them, or a :class:`~skyseg.training.model.ModelEnsemble`:
            their probabilities averaged).
        inputs: image files, folders or glob patterns (any mix of formats).
        out_dir: output folder (created).
        options: a :class:`~skyseg.predict.options.PredictOptions`; None: the defaults.
        show_progress: a progress bar over each image's tiles.
        **overrides: fields of the options to change, for instance
            ``save`` (from :data:`SAVE_CHOICES`, list or "a,b"), ``threshold``,
            ``overlay_max_size`` (None: full size), ``mode`` (of a bare model
            file), ``max_pixels`` (a file whose header claims more pixels is
            refused before decoding, reported like any bad file; None: no
            limit), ``image_url_prefix`` (``labelstudio``: put before each file
            name in ``data.image``; HDR inputs are named by their ``skyseg
            previews`` JPG, ``<stem>.jpg``, which is what Label Studio shows),
            :func:`predict_image`'s options (``tile_size``, ``tta``, ...);
            ``ensemble``: more models whose probabilities are averaged with ``model``'s.

    Returns:
        a :class:`~skyseg.log.BatchReport` (``exit_code`` 1 when some failed).

    Raises:
        TypeError: a keyword that is not an option.
        ConfigError: bad options, or no images found.
        ModelError: the model cannot be loaded.
        ImageWriteError: the output folder cannot be written.

    Example:
        >>> report = predict_files("runs/hdr", ["panos/"], "results")  # doctest: +SKIP
        >>> report.exit_code  # doctest: +SKIP
        0
    """
    options = with_overrides(PredictOptions, options, overrides, caller="predict_files")
    save, threshold, max_pixels = options.outputs, options.threshold, options.max_pixels
    paths = find_images(inputs)
    if not paths:
        raise ConfigError(f"no images found in {[str(i) for i in inputs]}; pass files, folders "
                          "or glob patterns of .exr/.hdr/.jpg/.png/.tif images")
    out_dir = prepare_output_folder(out_dir)
    collector = _labelstudio_collector(options)
    loaded = load_predictor([model, *options.ensemble] if options.ensemble else model,
                            mode=options.mode, which=options.which)
    if collector is not None and loaded.path is not None:
        collector.model_version = f"skyseg {model_label(loaded)}"
    report = BatchReport("predict")
    task_names: dict[str, str] = {}
    queue = _claim_output_stems(paths, report)
    reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="skyseg-read")
    writes = _WriteQueue(report)
    reads: dict[int, concurrent.futures.Future] = {}

    def read_ahead(index: int) -> None:
        if index < len(queue) and _read_ahead_fits(queue[index]):
            reads[index] = reader.submit(read_image, queue[index], return_info=True,
                                         max_pixels=max_pixels)

    try:
        read_ahead(0)
        for index, path in enumerate(queue):
            try:
                read = reads.pop(index, None)
                image, info = (read.result() if read else
                               read_image(path, return_info=True, max_pixels=max_pixels))
            except SkysegError as exc:
                report.failed(path, exc)
                continue
            finally:
                read_ahead(index + 1)
            background = None
            if "overlay" in save:
                background = writes.executor.submit(
                    overlay_background, image, is_hdr=info.is_hdr,
                    max_size=options.overlay_max_size)
            try:
                probability = predict_image(loaded, image, options, is_hdr=info.is_hdr,
                                            name=path.name, show_progress=show_progress)
            except SkysegError as exc:
                if background is not None:
                    background.cancel()
                report.failed(path, exc)
                continue
            writes.settle()  # the previous image's files: at most one write job at a time
            task_names[str(path)] = path.name if not info.is_hdr else f"{path.stem}.jpg"
            writes.pending = (path, writes.executor.submit(
                _write_job, out_dir, path.stem, probability, save, threshold, background,
                image if "exr" in save else None, info.is_hdr,
                collector and (collector, task_names[str(path)])))
            if _write_bytes(image.shape[:2], save) > _BACKGROUND_BYTES:
                writes.settle()  # too big to hold while the next image is predicted
            del image, probability
        writes.settle()
    finally:
        for executor in (reader, writes.executor):
            executor.shutdown(wait=True, cancel_futures=True)
    if collector is not None:
        _write_labelstudio(collector, out_dir, report, task_names)
    report.log_summary()
    return report


def _claim_output_stems(paths: list[Path], report: BatchReport) -> list[Path]:
    """The inputs to predict: a file whose stem an earlier one has is a failure (same outputs)."""
    claimed: dict[str, Path] = {}
    queue: list[Path] = []
    for path in paths:
        if path.stem in claimed:
            report.failed(path, f"{path}: its outputs {path.stem}_* would overwrite those of "
                                f"{claimed[path.stem]}; rename one of the two")
            continue
        claimed[path.stem] = path
        queue.append(path)
    return queue


class _WriteQueue:
    """The background writer of :func:`predict_files`: one job of files pending at a time.

    ``pending`` is ``(input path, future of its written files)``; :meth:`settle`
    waits for it and records the input as done or failed in the report.
    """

    def __init__(self, report: BatchReport):
        self.report = report
        self.executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="skyseg-write")
        self.pending: tuple[Path, concurrent.futures.Future] | None = None

    def settle(self) -> None:
        if self.pending is None:
            return
        done_path, future = self.pending
        self.pending = None
        try:
            written = future.result()
            self.report.succeeded(done_path)
            logger.info("%s -> %s", done_path, ", ".join(p.name for p in written.values()))
        except SkysegError as exc:
            self.report.failed(done_path, exc)


def _labelstudio_collector(options: PredictOptions):
    """The Label Studio task collector when ``labelstudio`` is saved, else None."""
    if "labelstudio" not in options.outputs:
        return None
    from skyseg.labels.labelstudio import TaskCollector

    return TaskCollector(image_url_prefix=options.image_url_prefix,
                         from_name=options.labelstudio_from_name,
                         to_name=options.labelstudio_to_name, threshold=options.threshold)


def _write_labelstudio(collector, out_dir: Path, report: BatchReport, task_names: dict) -> None:
    """``labelstudio.json`` with the tasks of the inputs that succeeded (failed ones listed)."""
    from skyseg.labels.labelstudio import LABELSTUDIO_FILE

    done = [task_names[item] for item in report.done if item in task_names]
    left_out = [item for item, _ in report.failures]
    try:
        collector.write(out_dir / LABELSTUDIO_FILE, done)
    except SkysegError as exc:
        report.failed(out_dir / LABELSTUDIO_FILE, exc)
        return
    if left_out:
        logger.warning("%s leaves out %d failed input(s): %s", out_dir / LABELSTUDIO_FILE,
                       len(left_out), ", ".join(left_out))


#: Most memory a background read or write may hold while the network runs on
#: another image. An 8K panorama's float32 pixels are 384 MiB: it is read in
#: the foreground, and its sky EXR written in the foreground, so that peak
#: memory stays that of one image (< 2.5 GB with the default tiles).
_BACKGROUND_BYTES = 256 * 2**20


def _read_ahead_fits(path: Path) -> bool:
    """Whether reading ``path`` while another image is predicted stays within budget."""
    try:
        info = read_image_info(path)
    except SkysegError:
        return False  # read it in the foreground, where its error is reported
    return info.height * info.width * 12 <= _BACKGROUND_BYTES


def _write_bytes(shape: tuple[int, int], save) -> int:
    """Memory a write job holds: probability + mask, and for the EXR the image plus
    its half-float RGBA and the encoder's channel copies."""
    pixels = shape[0] * shape[1]
    return pixels * (5 + (28 if "exr" in save else 0))


def _write_job(out_dir, stem, probability, save, threshold, background, image, is_hdr,
               labelstudio=None):
    background = background.result() if background is not None else None
    written = write_outputs(out_dir, stem, probability, save=save, threshold=threshold,
                            background=background, image=image, is_hdr=is_hdr)
    if labelstudio:
        collector, name = labelstudio
        collector.add(name, probability)
    return written


def default_prediction_options(**values) -> dict:
    """:func:`predict_image` options with ``values`` set (the :class:`ImageOptions` fields).

    Kept for callers of the keyword form; new code builds a :class:`PredictOptions`.

    Example:
        >>> default_prediction_options(tta=True)["tta"], default_prediction_options()["tile_size"]
        (True, 1088)
    """
    return image_options(ImageOptions(**values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders or glob patterns (EXR, HDR, TIFF, JPG, PNG); "
                             "a run folder or .h5 file first is the model (the older form "
                             "skyseg predict RUN INPUT...)")
    add_model_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_options(parser, PredictOptions, skip=_SHARED)
    add_options(parser, PredictionOptions, group_title="prediction")


#: The options ``predict`` shares with ``evaluate`` (shown as the "prediction" group).
_SHARED = frozenset(field.name for field in dataclasses.fields(PredictionOptions))


def run(args: argparse.Namespace) -> int:
    from skyseg.predict.shards import PredictShard

    options = from_args(PredictOptions, args)
    resolve_model_argument(args)
    shard = PredictShard.from_args(args)  # narrows args.inputs to what the shard has left
    if shard is not None and not shard.todo:
        shard.log_summary()
        return 0
    loaded = load_for_cli(args, options)
    report = predict_files(loaded, args.inputs, args.out,
                           dataclasses.replace(options, ensemble=[]))  # loaded has them
    status = report_predictions(report, args.out)
    if shard is not None:
        shard.log_summary(report)
    return status


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model RUN`` (default: the model shipped with skyseg)."""
    parser.add_argument("--model", default=None, metavar="RUN",
                        help="run folder of skyseg train, or a .h5 model file (default: the sky "
                             f"model shipped with skyseg, also named '{DEFAULT_MODEL_NAME}')")


def resolve_model_argument(args: argparse.Namespace) -> argparse.Namespace:
    """Settle ``args.model``: ``--model``, else a model given first among the inputs (the
    form ``skyseg predict RUN INPUT...``), else the shipped model. Idempotent.

    Raises:
        ModelError: no model given and the shipped one is missing.
    """
    if getattr(args, "_model_resolved", False):
        return args
    inputs = getattr(args, "inputs", None)
    if getattr(args, "model", None) is None and inputs and len(inputs) > 1 \
            and _names_a_model(inputs[0]):
        args.model, args.inputs = inputs[0], inputs[1:]
    args.model = str(resolve_model_path(getattr(args, "model", None)))
    args._model_resolved = True
    return args


def _names_a_model(text: str) -> bool:
    """A first input that is a run folder or model file, or a missing path that is neither
    an image nor a pattern (``skyseg predict no_such_run a.jpg``: the model is missing)."""
    if is_model_path(text):
        return True
    path = Path(text)
    return (not path.exists() and not any(char in text for char in "*?[")
            and path.suffix.lower() not in IMAGE_SUFFIXES)


def report_predictions(report: BatchReport, out_dir: str | os.PathLike) -> int:
    """Log where :func:`predict_files` wrote; its exit status (0, or 1 when files failed)."""
    logger.info("outputs in %s", out_dir)
    return report.exit_code


def load_for_cli(args: argparse.Namespace,
                 options: PredictionOptions) -> LoadedModel | ModelEnsemble:
    """The model of a ``predict`` or ``evaluate`` command, after the cheap checks.

    The options were checked when made; the ``--out`` folder is made here, so a
    typo fails in a second rather than after the (slow) model load.

    Args:
        args: parsed arguments with ``model`` and ``out``.
        options: the command's options (``--ensemble`` runs join ``model`` in a
            :class:`~skyseg.training.model.ModelEnsemble`; ``--mode``, ``--which``).

    Raises:
        ImageWriteError: ``--out`` cannot be created or written.
        ModelError: the model cannot be loaded.
    """
    resolve_model_argument(args)
    prepare_output_folder(args.out)
    models = [args.model, *options.ensemble]
    return load_predictor(models if len(models) > 1 else args.model, mode=options.mode,
                          which=options.which)

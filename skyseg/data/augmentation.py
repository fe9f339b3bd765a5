"""Training augmentation of (image patch, mask patch) pairs, in numpy and OpenCV.

One random draw per sample moves the image and its mask alike:

* **Geometry** (:func:`random_affine`, :func:`warp_image`, :func:`warp_mask`):
  horizontal flip, rotation, shift, zoom and shear about the patch centre,
  with the ranges of the original pipeline (rotation 15 degrees, shift 0.3,
  zoom 0.3, shear 0.1, horizontal flip, no vertical flip: the sky is up).
  The image is sampled bilinearly, the mask by nearest neighbour (both by
  ``cv2.warpAffine``, five times faster than numpy gathers). Pixels
  the transform invents (their source lies outside the patch) get the mask
  value :data:`~skyseg.image.metrics.IGNORE` (255), so they count in no loss and
  no metric; the image there is filled by *reflection* about the border
  (the network sees plausible content rather than a hard edge), or by a
  constant with ``fill="constant"``.
* **Photometry** (:func:`adjust_radiance`, :func:`augment_values`): exposure
  (EV) and gamma act on *linear radiance*, exactly, whatever form the patch
  is stored in: the stored preprocessing is inverted, radiance becomes
  ``2**ev * radiance**gamma``, and the preprocessing is applied again
  (clipping included). For LDR patches (0..1 display values) the same acts
  on the linear light of the sRGB curve and saturates at white.
* **Colour** (:func:`adjust_colour`): white balance (a gain per channel, in
  stops, luminance kept) and saturation (towards or away from the pixel's
  luminance), also on linear light and exact for both modes. Overcast white
  sky and a white wall differ in context, not colour: a camera's white
  balance must not be what the network keys on.
* **Sky exposure and texture** (:func:`adjust_sky_exposure`; in
  :meth:`Augmentation.default` for LDR only): an extra exposure change of the
  labelled sky alone (edges feathered over a few pixels), constant or a
  smooth random field (cloud-like light and shade), so a sky darker,
  bluer-grey or more structured than the training skies against the same
  ground is still sky: most daytime street skies are clipped flat white, and
  a model that learns "flat and bright is sky" misses a dusk street's dark
  clouds. HDR keeps the sky's radiance
  relative to the scene (a window is brighter than the wall around it), a
  cue worth keeping: on the HDR demo, the sky changes made the model call
  lab and studio walls sky.
* **Ground highlights** (``ground_highlight_ev``, off by default; the
  ``ground_ev`` of :func:`adjust_sky_exposure`): smooth bright blobs on the
  not-sky, so a wall lit until it clips white is still not sky. On CamVid
  they helped the streets seen in training and cost the unseen street
  (README, Benchmarks), so no default uses them.

Arrays: image patches ``float (P, P, C)`` as stored (network input), masks
``uint8 (P, P)`` in {0, 1, 255}. The affine matrix maps an *output* pixel
``(row, col, 1)`` to the *source* position it samples.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image, mask = np.zeros((32, 32, 3), np.float32), np.ones((32, 32), np.uint8)
    >>> out_image, out_mask = Augmentation().apply(image, mask, rng)
    >>> out_image.shape, out_mask.dtype
    ((32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from dataclasses import dataclass

import numpy as np

from skyseg.errors import ConfigError
from skyseg.image.metrics import IGNORE
from skyseg.image.preprocess import (
    Preprocessing,
    log_transform,
    luminance,
    srgb_decode,
    srgb_encode,
)

__all__ = [
    "Augmentation",
    "affine_matrix",
    "random_affine",
    "warp_image",
    "warp_mask",
    "adjust_radiance",
    "augment_values",
    "adjust_colour",
    "adjust_sky_exposure",
    "sky_texture",
    "to_float32",
    "FILL_MODES",
    "parse_changes",
]

FILL_MODES = ("reflect", "constant")

# Per-thread scratch (the lookup table): the loader augments in threads.
_LOCAL = threading.local()


def affine_matrix(shape: tuple[int, int], *, rotation: float = 0.0,
                  shift: tuple[float, float] = (0.0, 0.0),
                  zoom: tuple[float, float] = (1.0, 1.0), shear: float = 0.0,
                  flip: bool = False) -> np.ndarray:
    """The 3x3 matrix of one geometric transform, about the patch centre.

    Args:
        shape: ``(height, width)`` of the patch.
        rotation: angle in degrees (positive turns the content clockwise).
        shift: ``(rows, cols)`` as fractions of the height and width; the
            content moves by ``-shift`` (the output samples ``+shift`` away).
        zoom: ``(rows, cols)`` scale of the sampling grid: above 1 shows
            more of the patch (zoom out), below 1 zooms in.
        shear: horizontal shear factor (``col += shear * row``).
        flip: mirror left-right.

    Returns:
        float64 (3, 3) matrix taking an output ``(row, col, 1)`` to the
        source ``(row, col, 1)``.

    Example:
        >>> affine_matrix((4, 4), flip=True) @ np.array([0, 0, 1.0])
        array([0., 3., 1.])
    """
    height, width = shape
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    mirror = -1.0 if flip else 1.0
    # rotate @ shear @ scale @ flip, written out: a loader draws one per
    # patch, and 2x2 numpy products cost more than the whole formula.
    linear = ((cos - sin * shear) * zoom[0], -sin * zoom[1] * mirror,
              (sin + cos * shear) * zoom[0], cos * zoom[1] * mirror)
    centre_row, centre_col = (height - 1) / 2.0, (width - 1) / 2.0
    offset_row = (centre_row - linear[0] * centre_row - linear[1] * centre_col
                  + shift[0] * height)
    offset_col = (centre_col - linear[2] * centre_row - linear[3] * centre_col
                  + shift[1] * width)
    return np.array([[linear[0], linear[1], offset_row], [linear[2], linear[3], offset_col],
                     [0.0, 0.0, 1.0]])


def random_affine(rng: np.random.Generator, shape: tuple[int, int], *,
                  rotation: float = 15.0, shift: float = 0.3, zoom: float = 0.3,
                  shear: float = 0.1, horizontal_flip: bool = True) -> np.ndarray:
    """A random :func:`affine_matrix` with the original pipeline's ranges.

    Each parameter is drawn uniformly: rotation in ``[-rotation, rotation]``
    degrees, shift of rows and of columns each in ``[-shift, shift]``, zoom
    of rows and of columns each in ``[1 - zoom, 1 + zoom]`` (independently,
    as Keras' ``ImageDataGenerator``), shear factor in ``[-shear, shear]``
    (Keras read its ``shear_range=0.1`` as 0.1 degree, which does nothing;
    here 0.1 is the factor, about 5.7 degrees), and a left-right flip with
    probability 1/2 when ``horizontal_flip``.

    Example:
        >>> m = random_affine(np.random.default_rng(1), (64, 64))
        >>> m.shape
        (3, 3)
    """
    if not 0 <= zoom < 1:
        raise ConfigError(f"zoom range must be in [0, 1), got {zoom!r}")
    angle = rng.uniform(-rotation, rotation)
    shifts = rng.uniform(-shift, shift, size=2)
    zooms = rng.uniform(1.0 - zoom, 1.0 + zoom, size=2)
    shear_factor = rng.uniform(-shear, shear)
    flip = bool(rng.random() < 0.5) if horizontal_flip else False
    return affine_matrix(shape, rotation=angle, shift=(shifts[0], shifts[1]),
                         zoom=(zooms[0], zooms[1]), shear=shear_factor, flip=flip)


@functools.cache
def _cv2():
    """OpenCV, imported on first use, with its own thread pool off.

    The loader already runs one patch per thread; OpenCV splitting each
    warp over the cores as well would only add contention (the setting is
    process-wide).
    """
    import cv2

    cv2.setNumThreads(1)
    return cv2


def _cv2_matrix(matrix: np.ndarray) -> np.ndarray:
    """Our (row, col) output -> source matrix as OpenCV's 2x3 (x, y) inverse map."""
    m = np.asarray(matrix, dtype=np.float64)
    return np.array([[m[1, 1], m[1, 0], m[1, 2]], [m[0, 1], m[0, 0], m[0, 2]]])


def _warp(cv2, source: np.ndarray, matrix: np.ndarray, out: np.ndarray | None, **kwargs):
    """``cv2.warpAffine`` of ``source`` (2-D or 3-D), written into ``out`` when given."""
    height, width = source.shape[:2]
    # OpenCV writes into ``dst`` only when it is contiguous and of its own
    # layout (a one-channel image is 2-D); otherwise it returns a new array.
    target = None
    if (out is not None and out.dtype == source.dtype and out.shape == source.shape
            and out.flags.c_contiguous):
        target = out.reshape((height, width) if source.ndim == 2 or source.shape[2] == 1
                             else source.shape)
    result = cv2.warpAffine(source, _cv2_matrix(matrix), (width, height), dst=target,
                            **kwargs)
    if out is None:
        return result.reshape(source.shape)
    if target is None or not np.shares_memory(result, out):
        out[...] = result.reshape(source.shape)
    return out


def warp_image(image: np.ndarray, matrix: np.ndarray, *, fill: str = "reflect",
               cval: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
    """Resample an image through an affine ``matrix``, bilinearly (OpenCV).

    OpenCV 5 interpolates at the exact positions; older releases round
    them to 1/32 of a pixel (their interpolation table). Whole-pixel moves,
    flips and quarter turns are exact.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` float array (float16 is read as float32).
        matrix: from :func:`affine_matrix` / :func:`random_affine`.
        fill: ``"reflect"`` (mirror about the border pixels: columns -1, -2
            read 1, 2) or ``"constant"`` (``cval``) where the source lies
            outside; with ``"constant"`` the last half pixel blends into ``cval``.
        cval: the constant of ``fill="constant"``.
        out: float32 array of the image's shape to write into (e.g. one
            slot of a batch); a new one when None.

    Returns:
        float32 array of the same shape (``out`` when given).

    Raises:
        ConfigError: unknown ``fill``.

    Example:
        >>> image = np.arange(12, dtype=np.float32).reshape(3, 4)
        >>> warp_image(image, affine_matrix((3, 4), flip=True))[0].tolist()
        [3.0, 2.0, 1.0, 0.0]
    """
    if fill not in FILL_MODES:
        raise ConfigError(f"fill must be one of {FILL_MODES}, got {fill!r}")
    image = np.asarray(image)
    if image.dtype == np.float16:
        image = to_float32(image)
    image = np.ascontiguousarray(image, dtype=np.float32)
    cv2 = _cv2()
    border = cv2.BORDER_REFLECT_101 if fill == "reflect" else cv2.BORDER_CONSTANT
    return _warp(cv2, image, matrix, out, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                 borderMode=border, borderValue=(float(cval),) * 4)


def warp_mask(mask: np.ndarray, matrix: np.ndarray, *, fill_value: int = IGNORE,
              out: np.ndarray | None = None) -> np.ndarray:
    """Resample a mask through an affine ``matrix``, by nearest neighbour (OpenCV).

    A source position is rounded to the nearest pixel (halves up, to within
    1/1024 of a pixel); where that pixel is outside the mask the output is
    ``fill_value``.

    Args:
        mask: ``uint8 (H, W)``.
        matrix: the same matrix as the image's.
        fill_value: value of pixels whose source lies outside (255 = ignore).
        out: ``uint8`` array of the mask's shape to write into; a new one when None.

    Returns:
        ``uint8 (H, W)``.

    Example:
        >>> warp_mask(np.eye(3, dtype=np.uint8), affine_matrix((3, 3), shift=(0, 1 / 3)))
        array([[  0,   0, 255],
               [  1,   0, 255],
               [  0,   1, 255]], dtype=uint8)
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    cv2 = _cv2()
    return _warp(cv2, mask, matrix, out, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                 borderMode=cv2.BORDER_CONSTANT, borderValue=(int(fill_value),) * 4)


def adjust_radiance(radiance: np.ndarray, *, gamma: float = 1.0,
                    exposure_ev: float = 0.0) -> np.ndarray:
    """``2**exposure_ev * radiance**gamma`` (float32; negatives are treated as 0).

    Gamma pivots at radiance 1.0; exposure scales by whole or fractional stops.

    Example:
        >>> adjust_radiance(np.array([0.25, 1.0, 4.0]), gamma=0.5, exposure_ev=1).tolist()
        [1.0, 2.0, 4.0]
    """
    radiance = np.maximum(np.asarray(radiance, dtype=np.float32), 0.0)
    with np.errstate(divide="ignore"):
        log_radiance = np.log(radiance) if gamma != 1.0 else None
    return _adjust(radiance, log_radiance, gamma, exposure_ev)


def _adjust(radiance: np.ndarray, log_radiance: np.ndarray | None, gamma: float,
            exposure_ev: float) -> np.ndarray:
    """:func:`adjust_radiance` given ``radiance >= 0`` and its log (needed when gamma != 1)."""
    if gamma != 1.0:
        # exp(gamma log r) is about twice as fast as numpy's float32 power.
        adjusted = np.multiply(log_radiance, np.float32(gamma))
        np.exp(adjusted, out=adjusted)
    else:
        adjusted = np.array(radiance, dtype=np.float32)
    if exposure_ev != 0.0:
        adjusted *= np.float32(2.0 ** exposure_ev)
    return adjusted


def to_float32(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``values`` as float32 (into ``out`` when given); float16 through a lookup table.

    Exact; for float16 about twice as fast as ``astype`` (numpy converts
    float16 element by element).

    Example:
        >>> to_float32(np.array([0.5, -2.0], np.float16)).tolist()
        [0.5, -2.0]
    """
    values = np.asarray(values)
    if values.dtype == np.float16:
        return _lookup(_float16_values(), values, out)
    if out is None:
        return values.astype(np.float32)
    out[...] = values
    return out


def augment_values(values: np.ndarray, preprocessing: Preprocessing, *, gamma: float = 1.0,
                   exposure_ev: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
    """Apply exposure and gamma on linear radiance to a *preprocessed* patch.

    HDR: ``preprocessing.apply(adjust_radiance(preprocessing.invert(values)))``,
    so the result is exactly the patch that the adjusted radiance would
    have given (clipping at ``clip_max`` included). LDR (0..1 display
    values): the sRGB curve is undone, the linear light adjusted, clipped at
    white and re-encoded.

    float16 patches go through a lookup table indexed by the float16 bits
    (the mapping is element-wise), which is both exact and several times
    faster than computing exp/pow/log per pixel. The linear light of every
    float16 code is computed once per preprocessing; each call only redoes
    gamma, exposure and the forward transform, and only for the blocks of
    256 codes up to the patch's largest positive and negative values.

    Args:
        values: the stored patch, float16 or float32, any shape.
        preprocessing: the dataset's preprocessing.
        gamma: exponent on radiance (1: unchanged).
        exposure_ev: stops (0: unchanged).
        out: float32 array of the values' shape to write into; a new one when None.

    Returns:
        float32 array of the same shape (``out`` when given).

    Example:
        >>> prep = Preprocessing(mode="hdr")
        >>> stored = prep.apply(np.full((1, 1, 3), 2.0, np.float32))
        >>> out = augment_values(stored, prep, exposure_ev=1.0)
        >>> round(float(prep.invert(out)[0, 0, 0]), 4)
        4.0
    """
    values = np.asarray(values)
    if gamma == 1.0 and exposure_ev == 0.0:
        return to_float32(values, out)
    if values.dtype == np.float16 and values.size > 4096:
        return _lookup(_float16_table(values, preprocessing, gamma, exposure_ev), values, out)
    result = _transfer(values, preprocessing, gamma, exposure_ev)
    if out is None:
        return result
    out[...] = result
    return out


def adjust_colour(values: np.ndarray, preprocessing: Preprocessing, *,
                  gains_ev=(0.0, 0.0, 0.0), saturation: float = 1.0,
                  out: np.ndarray | None = None) -> np.ndarray:
    """White balance and saturation on the linear light of a *preprocessed* patch.

    Linear light is ``preprocessing.invert(values)`` (HDR) or the decoded
    sRGB values (LDR); each channel is multiplied by ``2**gains_ev[c]``, then
    ``luminance + saturation * (colour - luminance)``, and the result goes
    back through the forward preprocessing (LDR saturates at white).

    Args:
        values: the stored patch ``(..., 3)``, float16 or float32.
        preprocessing: the dataset's preprocessing.
        gains_ev: per-channel gain in stops (0: unchanged).
        saturation: 1 unchanged, 0 grey, above 1 more colourful.
        out: float32 array to write into.

    Returns:
        float32 array of the same shape.

    Example:
        >>> prep = Preprocessing(mode="ldr")
        >>> grey = adjust_colour(np.array([[0.2, 0.5, 0.8]], np.float32), prep, saturation=0)
        >>> bool(np.ptp(grey) < 1e-6)
        True
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        linear = _linear(np.asarray(values), preprocessing)
        linear *= np.exp2(np.asarray(gains_ev, np.float32))
        if saturation != 1.0:
            grey = luminance(linear)[..., None]
            linear -= grey
            linear *= np.float32(saturation)
            linear += grey
            np.maximum(linear, 0.0, out=linear)
        result = _from_linear(linear, None, preprocessing, 1.0, 0.0)
    if out is None:
        return result
    out[...] = result
    return out


#: Standard deviation (pixels) of the feathering of the sky's edge in :func:`adjust_sky_exposure`.
SKY_FEATHER = 1.5


def sky_texture(rng: np.random.Generator, shape: tuple[int, int], cells: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1]: ``float32 shape``, light and shade of clouds.

    Gaussian noise on a ``cells`` x ``cells`` and a ``4 * cells`` grid
    (weights 2:1), upsampled bicubically, scaled so its largest magnitude is 1.
    """
    cv2 = _cv2()
    height, width = shape
    field = np.zeros(shape, np.float32)
    for grid, weight in ((cells, 2.0), (4 * cells, 1.0)):
        coarse = rng.standard_normal((grid, grid)).astype(np.float32)
        field += weight * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    peak = float(np.abs(field).max())
    return field / peak if peak > 0 else field


def adjust_sky_exposure(values: np.ndarray, mask: np.ndarray, preprocessing: Preprocessing,
                        exposure_ev, ground_ev=0.0) -> np.ndarray:
    """Change the exposure of the sky (mask 1) and of the ground (mask 0), on linear light.

    Each pixel's linear light is multiplied by ``2 ** (exposure_ev * w +
    ground_ev * g)``, ``w`` the sky mask and ``g`` the not-sky mask, each
    blurred by a Gaussian of :data:`SKY_FEATHER` pixels (1 inside the region,
    0 away from it; ignored pixels belong to neither), and goes back through
    the forward preprocessing (LDR saturates at white).

    Args:
        values: the stored patch ``(P, P, C)``, float16 or float32.
        mask: ``uint8 (P, P)`` in {0, 1, 255}, aligned with ``values``.
        preprocessing: the dataset's preprocessing.
        exposure_ev: stops of the sky (0: unchanged): a number, or
            ``float32 (P, P)`` stops per pixel (a constant plus :func:`sky_texture`).
        ground_ev: stops of the not-sky, likewise (the highlights of
            :attr:`Augmentation.ground_highlight_ev`).

    Returns:
        float32 ``(P, P, C)``.

    Example:
        >>> prep = Preprocessing(mode="hdr")
        >>> stored = prep.apply(np.full((16, 16, 3), 2.0, np.float32))
        >>> mask = np.zeros((16, 16), np.uint8); mask[:8] = 1
        >>> out = prep.invert(adjust_sky_exposure(stored, mask, prep, -1.0, ground_ev=1.0))
        >>> round(float(out[0, 0, 0]), 3), round(float(out[15, 0, 0]), 3)
        (1.0, 4.0)
    """
    exposure_ev = np.asarray(exposure_ev, np.float32)
    ground_ev = np.asarray(ground_ev, np.float32)
    if not (exposure_ev.any() or ground_ev.any()):
        return to_float32(np.asarray(values))
    cv2 = _cv2()
    stops = np.zeros(mask.shape, np.float32)
    for label, ev in ((1, exposure_ev), (0, ground_ev)):
        if ev.any():
            weight = cv2.GaussianBlur((mask == label).astype(np.float32), (0, 0), SKY_FEATHER,
                                      borderType=cv2.BORDER_REPLICATE)
            stops += ev * weight
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        linear = _linear(np.asarray(values), preprocessing)
        linear *= np.exp2(stops)[..., None]
        return _from_linear(linear, None, preprocessing, 1.0, 0.0)


def _lookup(table: np.ndarray, values: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``table`` (65,536 entries) at the bits of float16 ``values``: float32, into ``out``."""
    # mode="clip": with the default "raise" numpy writes to a copy of ``out``.
    return np.take(table.reshape(-1), values.view(np.uint16), out=out, mode="clip")


@functools.cache
def _float16_values() -> np.ndarray:
    """float32 value of every float16 code: (256, 256), row = high byte of the bits."""
    table = np.arange(65536, dtype=np.uint16).reshape(256, 256).view(np.float16)
    table = table.astype(np.float32)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=4)
def _float16_linear(preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Linear light of every float16 code under ``preprocessing``, and its log (256, 256)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        linear = _linear(_float16_values(), preprocessing)
        log_linear = np.log(linear)
    linear.flags.writeable = log_linear.flags.writeable = False
    return linear, log_linear


def _float16_table(values: np.ndarray, preprocessing: Preprocessing, gamma: float,
                   exposure_ev: float) -> np.ndarray:
    """This thread's (256, 256) table, filled for the codes of ``values`` (float16)."""
    table = getattr(_LOCAL, "table", None)
    if table is None:
        table = _LOCAL.table = np.empty((256, 256), np.float32)
    linear, log_linear = _float16_linear(preprocessing)
    # Positive codes run 0..0x7bff upwards with the value, negative ones
    # 0x8000 (-0) upwards with the magnitude; the blocks of codes beyond the
    # largest of each are never looked up, so their stale entries stay.
    top_positive = int(values.view(np.int16).max())
    top_code = int(values.view(np.uint16).max())
    blocks = []
    if top_positive >= 0:
        blocks.append(slice(0, top_positive // 256 + 1))
    if top_code >= 0x8000:
        blocks.append(slice(128, top_code // 256 + 1))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for rows in blocks:
            table[rows] = _from_linear(linear[rows], log_linear[rows], preprocessing, gamma,
                                       exposure_ev)
    return table


def _linear(values: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Linear light (radiance, or 0..1 for LDR) of stored values, negatives as 0: new float32."""
    linear = preprocessing.invert(values) if preprocessing.is_hdr else srgb_decode(values)
    return np.maximum(linear, 0.0, out=linear)


def _from_linear(linear: np.ndarray, log_linear: np.ndarray | None,
                 preprocessing: Preprocessing, gamma: float, exposure_ev: float) -> np.ndarray:
    """Stored values of the adjusted linear light (the forward preprocessing)."""
    adjusted = _adjust(linear, log_linear, gamma, exposure_ev)
    if preprocessing.is_hdr:
        # What Preprocessing.apply does to radiance (sanitise, clip, log),
        # without its copies: radiance here is finite and >= 0 already,
        # except +inf from overflow, which the sanitiser would cap.
        top = preprocessing.clip_max or float(np.finfo(np.float32).max)
        np.minimum(adjusted, np.float32(top), out=adjusted)
        return log_transform(adjusted, **preprocessing.log_parameters())
    return srgb_encode(np.minimum(adjusted, 1.0, out=adjusted))


def _transfer(values: np.ndarray, preprocessing: Preprocessing, gamma: float,
              exposure_ev: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        linear = _linear(values, preprocessing)
        log_linear = np.log(linear) if gamma != 1.0 else None
        return _from_linear(linear, log_linear, preprocessing, gamma, exposure_ev)


#: The sky changes of :meth:`Augmentation.default` for LDR datasets (stops).
LDR_SKY_EXPOSURE_EV = 1.5
LDR_SKY_TEXTURE_EV = 2.0
#: Settings added after runs were first saved, and their value in a run saved without them.
_ABSENT_MEANS = {"sky_exposure_ev": 0.0, "sky_texture_ev": 0.0, "ground_highlight_ev": 0.0}


@dataclass(frozen=True)
class Augmentation:
    """The augmentation of training patches: ranges, and how to apply one draw.

    Attributes:
        rotation: degrees, drawn in ``[-rotation, rotation]``.
        shift: fraction of the patch size, rows and columns each in ``[-shift, shift]``.
        zoom: rows and columns each scaled in ``[1 - zoom, 1 + zoom]``.
        shear: horizontal shear factor in ``[-shear, shear]``.
        horizontal_flip: mirror left-right half of the time (never up-down).
        exposure_ev: stops, drawn uniformly in ``[-exposure_ev, exposure_ev]``.
        gamma: exponent on radiance drawn log-uniformly in ``[1/gamma, gamma]``
            (1 disables).
        fill: ``"reflect"`` or ``"constant"`` (0) for image pixels the
            geometry invents (their mask is 255 either way).
        white_balance: per-channel gains drawn in ``[-white_balance,
            white_balance]`` stops, centred so the mean gain is 0 stops.
        saturation: factor drawn in ``[1 - saturation, 1 + saturation]``.
        sky_exposure_ev: stops of an extra exposure change of the sky alone,
            drawn in ``[-sky_exposure_ev, sky_exposure_ev]`` (0 disables; no
            random number is drawn then, so other draws stay as they were).
            Drawn after the others: a seed's other draws are those of the
            settings without the sky ones.
        sky_texture_ev: amplitude (stops) of a smooth random exposure field
            over the sky (:func:`sky_texture`), drawn in ``[0, sky_texture_ev]``
            (0 disables, and draws nothing).
        ground_highlight_ev: amplitude (stops) of smooth random highlights on
            the not-sky, drawn in ``[0, ground_highlight_ev]``: the positive
            half of a :func:`sky_texture` field brightens blobs of walls and
            road until, in LDR, they clip to white like an overcast sky, so
            "flat clipped white" is not taught as sky (0 disables, and draws
            nothing; drawn after the sky settings).

    Example:
        >>> Augmentation(rotation=0, shift=0, zoom=0, shear=0).geometric
        True
    """

    rotation: float = 15.0
    shift: float = 0.3
    zoom: float = 0.3
    shear: float = 0.1
    horizontal_flip: bool = True
    exposure_ev: float = 2.0
    gamma: float = 1.5
    fill: str = "reflect"
    white_balance: float = 0.2
    saturation: float = 0.5
    sky_exposure_ev: float = 0.0
    sky_texture_ev: float = 0.0
    ground_highlight_ev: float = 0.0

    @classmethod
    def default(cls, mode: str) -> Augmentation:
        """The default augmentation of a dataset of ``mode`` (``"hdr"`` or ``"ldr"``).

        LDR adds the sky exposure (±1.5 EV) and sky texture (up to 2 EV)
        changes: clipped LDR skies otherwise teach "flat and bright is sky".

        Example:
            >>> Augmentation.default("ldr").sky_texture_ev
            2.0
            >>> Augmentation.default("hdr") == Augmentation()
            True
        """
        if mode == "ldr":
            return cls(sky_exposure_ev=LDR_SKY_EXPOSURE_EV, sky_texture_ev=LDR_SKY_TEXTURE_EV)
        return cls()

    def __post_init__(self) -> None:
        for name in ("rotation", "shift", "shear", "exposure_ev", "white_balance",
                     "sky_exposure_ev", "sky_texture_ev", "ground_highlight_ev"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"augmentation {name} must be a range >= 0, got {value!r}")
        if not (np.isfinite(self.zoom) and 0 <= self.zoom < 1):
            raise ConfigError(f"augmentation zoom must be in [0, 1), got {self.zoom!r}")
        if not (np.isfinite(self.gamma) and self.gamma >= 1):
            raise ConfigError(
                f"augmentation gamma must be >= 1 (gamma is drawn in [1/gamma, gamma]), "
                f"got {self.gamma!r}"
            )
        if not (np.isfinite(self.saturation) and 0 <= self.saturation < 1):
            raise ConfigError(f"augmentation saturation must be in [0, 1), got "
                              f"{self.saturation!r}")
        if self.fill not in FILL_MODES:
            raise ConfigError(f"augmentation fill must be one of {FILL_MODES}, got {self.fill!r}")

    @property
    def geometric(self) -> bool:
        """True when some geometric transform is drawn (flip included)."""
        return bool(self.rotation or self.shift or self.zoom or self.shear
                    or self.horizontal_flip)

    @property
    def photometric(self) -> bool:
        """True when exposure or gamma change."""
        return bool(self.exposure_ev or self.gamma != 1.0)

    @property
    def colour(self) -> bool:
        """True when white balance or saturation change."""
        return bool(self.white_balance or self.saturation)

    def draw(self, rng: np.random.Generator, shape: tuple[int, int]) -> dict:
        """One random draw for a patch of ``shape``.

        Returns:
            ``{"matrix", "gamma", "exposure_ev", "gains_ev", "saturation",
            "sky_exposure_ev", "ground_exposure_ev"}``; the last two a number,
            or ``float32 (P, P)`` stops per pixel (with ``sky_texture_ev``,
            ``ground_highlight_ev``).
        """
        matrix = (random_affine(rng, shape, rotation=self.rotation, shift=self.shift,
                                zoom=self.zoom, shear=self.shear,
                                horizontal_flip=self.horizontal_flip)
                  if self.geometric else None)
        exposure = float(rng.uniform(-self.exposure_ev, self.exposure_ev))
        log_gamma = math.log(self.gamma)
        gamma = float(math.exp(rng.uniform(-log_gamma, log_gamma)))
        gains = rng.uniform(-self.white_balance, self.white_balance, size=3)
        saturation = float(rng.uniform(1.0 - self.saturation, 1.0 + self.saturation))
        sky = (float(rng.uniform(-self.sky_exposure_ev, self.sky_exposure_ev))
               if self.sky_exposure_ev else 0.0)
        if self.sky_texture_ev:
            amplitude = float(rng.uniform(0.0, self.sky_texture_ev))
            sky = sky + amplitude * sky_texture(rng, shape)
        ground = 0.0
        if self.ground_highlight_ev:
            amplitude = float(rng.uniform(0.0, self.ground_highlight_ev))
            ground = amplitude * np.maximum(sky_texture(rng, shape), 0.0)
        return {"matrix": matrix, "gamma": gamma, "exposure_ev": exposure,
                "gains_ev": tuple(float(g) for g in gains - gains.mean()),
                "saturation": saturation, "sky_exposure_ev": sky,
                "ground_exposure_ev": ground}

    def apply_draw(self, image: np.ndarray, mask: np.ndarray, draw: dict,
                   preprocessing: Preprocessing | None = None):
        """Apply one :meth:`draw` to an (image, mask) pair.

        Args:
            image: stored patch ``(P, P, C)`` (network input).
            mask: ``uint8 (P, P)`` in {0, 1, 255}.
            draw: from :meth:`draw`.
            preprocessing: how the patch was made; photometric changes are
                skipped when None.

        Returns:
            ``(float32 (P, P, C) image, uint8 (P, P) mask)``.
        """
        if preprocessing is not None and self.photometric:
            image = augment_values(image, preprocessing, gamma=draw["gamma"],
                                   exposure_ev=draw["exposure_ev"])
        if preprocessing is not None and self.colour:
            image = adjust_colour(image, preprocessing, gains_ev=draw["gains_ev"],
                                  saturation=draw["saturation"])
        if preprocessing is not None:
            image = self.apply_region_exposure(image, mask, draw, preprocessing)
        if draw["matrix"] is not None:
            image = warp_image(image, draw["matrix"], fill=self.fill)
            mask = warp_mask(mask, draw["matrix"])
        return np.asarray(image, dtype=np.float32), mask

    @staticmethod
    def apply_region_exposure(values: np.ndarray, mask: np.ndarray, draw: dict,
                              preprocessing: Preprocessing) -> np.ndarray:
        """The sky exposure and ground highlights of ``draw`` (:func:`adjust_sky_exposure`),
        before the geometry; ``values`` itself when the draw changes neither."""
        sky = draw.get("sky_exposure_ev", 0.0)
        ground = draw.get("ground_exposure_ev", 0.0)
        if not (np.any(sky) or np.any(ground)):
            return values
        return adjust_sky_exposure(values, mask, preprocessing, sky, ground)

    def apply(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              preprocessing: Preprocessing | None = None):
        """Draw once from ``rng`` and apply to ``image`` and ``mask`` alike."""
        return self.apply_draw(image, mask, self.draw(rng, mask.shape[:2]), preprocessing)

    def changed(self, changes: dict) -> Augmentation:
        """These settings with some replaced (``{"exposure_ev": 4.0}``), checked.

        Raises:
            ConfigError: an unknown name (the known ones listed) or a value
                out of its range.

        Example:
            >>> Augmentation.default("hdr").changed({"exposure_ev": 4.0}).exposure_ev
            4.0
        """
        return Augmentation.from_dict({**dataclasses.asdict(self), **changes})

    def to_dict(self) -> dict:
        """The settings; a newer setting left at its off value is left out (so the
        ``config.json`` of runs without it reads as before, and they resume)."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if not (key in _ABSENT_MEANS and value == _ABSENT_MEANS[key])}

    @classmethod
    def from_dict(cls, data: dict) -> Augmentation:
        """The settings of :meth:`to_dict`; a setting newer than the saved run is off in it."""
        data = {**_ABSENT_MEANS, **data}
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown augmentation parameter(s) {unknown}; known: "
                              f"{sorted(known)}")
        return cls(**data)


def parse_changes(items, *, option: str = "--augment-set") -> dict:
    """Augmentation settings from ``NAME=VALUE`` strings (command-line options).

    Args:
        items: e.g. ``["exposure_ev=4", "horizontal_flip=false", "fill=constant"]``.
        option: the option's name, for the error messages.

    Returns:
        ``{name: value}`` typed like the :class:`Augmentation` field (number,
        true/false or text), for :meth:`Augmentation.changed`; a later item
        wins over an earlier one of the same name.

    Raises:
        ConfigError: an item without ``=``, an unknown name (the known ones
            listed) or a value that is not of the field's type.

    Example:
        >>> parse_changes(["exposure_ev=4", "horizontal_flip=no"])
        {'exposure_ev': 4.0, 'horizontal_flip': False}
    """
    from skyseg.options import parse_bool

    kinds = {field.name: str(field.type) for field in dataclasses.fields(Augmentation)}
    changes = {}
    for item in items:
        name, equals, value = str(item).partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            raise ConfigError(f"{option} {item!r}: write NAME=VALUE, e.g. exposure_ev=4")
        if name not in kinds:
            raise ConfigError(f"{option} {item!r}: unknown setting {name!r}; choose from "
                              f"{', '.join(kinds)}")
        kind = kinds[name]
        if kind == "bool":
            changes[name] = parse_bool(value, name=f"{option} {item!r}: {name}")
        elif kind == "str":
            changes[name] = value
        else:
            try:
                changes[name] = float(value)
            except ValueError:
                raise ConfigError(f"{option} {item!r}: {name} is a number") from None
    return changes

"""Training augmentation of (image patch, mask patch) pairs, in numpy.

One random draw per sample moves the image and its mask alike:

* **Geometry** (:func:`random_affine`, :func:`warp_image`, :func:`warp_mask`):
  horizontal flip, rotation, shift, zoom and shear about the patch centre,
  with the ranges of the original pipeline (rotation 15 degrees, shift 0.3,
  zoom 0.3, shear 0.1, horizontal flip, no vertical flip: the sky is up).
  The image is sampled bilinearly, the mask by nearest neighbour. Pixels
  the transform invents (their source lies outside the patch) get the mask
  value :data:`~skyseg.metrics.IGNORE` (255), so they count in no loss and
  no metric; the image there is filled by *reflection* about the border
  (the network sees plausible content rather than a hard edge), or by a
  constant with ``fill="constant"``.
* **Photometry** (:func:`adjust_radiance`, :func:`augment_values`): exposure
  (EV) and gamma act on *linear radiance*, exactly, whatever form the patch
  is stored in: the stored preprocessing is inverted, radiance becomes
  ``2**ev * radiance**gamma``, and the preprocessing is applied again
  (clipping included). For LDR patches (0..1 display values) the same acts
  on the linear light of the sRGB curve and saturates at white.

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
import math
import threading
from dataclasses import dataclass

import numpy as np

from skyseg.errors import ConfigError
from skyseg.preprocess import Preprocessing, log_transform, srgb_decode, srgb_encode

__all__ = [
    "Augmentation",
    "affine_matrix",
    "random_affine",
    "warp_image",
    "warp_mask",
    "adjust_radiance",
    "augment_values",
    "FILL_MODES",
]

IGNORE = 255
FILL_MODES = ("reflect", "constant")


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
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    rotate = np.array([[cos, -sin], [sin, cos]])
    shear_matrix = np.array([[1.0, 0.0], [shear, 1.0]])
    scale = np.diag([zoom[0], zoom[1]])
    flip_matrix = np.diag([1.0, -1.0 if flip else 1.0])
    linear = rotate @ shear_matrix @ scale @ flip_matrix
    offset = centre - linear @ centre + np.array([shift[0] * height, shift[1] * width])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = offset
    return matrix


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


class _Workspace:
    """Scratch arrays of one thread for one patch shape.

    Reusing them matters: a fresh 0.5-1 MB temporary per numpy step costs
    page faults that, on a virtual machine, take longer than the arithmetic
    (measured 3x slower).
    """

    def __init__(self, height: int, width: int, channels: int):
        size = height * width
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        self.grid_rows, self.grid_cols = rows.ravel(), cols.ravel()
        self.rows = np.empty(size, np.float32)
        self.cols = np.empty(size, np.float32)
        self.scratch = np.empty(size, np.float32)
        self.row_taps = np.empty(size, np.intp)
        self.col_taps = np.empty(size, np.intp)
        self.index = np.empty(size, np.intp)
        self.index_right = np.empty(size, np.intp)
        self.outside = np.empty(size, bool)
        self.row_weight = np.empty((size, channels), np.float32)
        self.col_weight = np.empty((size, channels), np.float32)
        self.top = np.empty((size, channels), np.float32)
        self.bottom = np.empty((size, channels), np.float32)
        self.right = np.empty((size, channels), np.float32)
        self.source = np.empty((size, channels), np.float32)


_LOCAL = threading.local()


def _workspace(height: int, width: int, channels: int) -> _Workspace:
    cache = getattr(_LOCAL, "workspaces", None)
    if cache is None:
        cache = _LOCAL.workspaces = {}
    key = (height, width, channels)
    space = cache.get(key)
    if space is None:
        if len(cache) > 4:
            cache.clear()
        space = cache[key] = _Workspace(height, width, channels)
    return space


def _source_coordinates(matrix: np.ndarray, space: _Workspace) -> None:
    """Fill ``space.rows`` / ``space.cols`` with the source position of every output pixel."""
    m = np.asarray(matrix, dtype=np.float32)
    rows, cols, scratch = space.rows, space.cols, space.scratch
    np.multiply(space.grid_rows, m[0, 0], out=rows)
    np.multiply(space.grid_cols, m[0, 1], out=scratch)
    rows += scratch
    rows += m[0, 2]
    np.multiply(space.grid_rows, m[1, 0], out=cols)
    np.multiply(space.grid_cols, m[1, 1], out=scratch)
    cols += scratch
    cols += m[1, 2]


def _reflect(coordinate: np.ndarray, size: int, scratch: np.ndarray) -> None:
    """Mirror coordinates about the first and last pixel centres into [0, size - 1], in place."""
    if size == 1:
        coordinate[:] = 0.0
        return
    period = np.float32(2 * (size - 1))
    np.abs(coordinate, out=coordinate)
    # The usual ranges stay within one period; fmod is slow, so only when needed.
    if coordinate.max() >= period:
        np.fmod(coordinate, period, out=coordinate)
    np.subtract(period, coordinate, out=scratch)
    np.minimum(coordinate, scratch, out=coordinate)


def _bilinear_taps(coordinate: np.ndarray, size: int, taps: np.ndarray,
                   scratch: np.ndarray) -> None:
    """Lower neighbour in ``taps``; ``coordinate`` becomes the weight of the upper one.

    At the last pixel the weight is exactly 0, so the upper tap (past the
    edge) contributes nothing and whole-pixel positions are copied exactly.
    """
    np.floor(coordinate, out=scratch)
    np.minimum(scratch, size - 1, out=scratch)
    coordinate -= scratch
    np.copyto(taps, scratch, casting="unsafe")


def warp_image(image: np.ndarray, matrix: np.ndarray, *, fill: str = "reflect",
               cval: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
    """Resample an image through an affine ``matrix``, bilinearly.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` float array (float16 is read as float32).
        matrix: from :func:`affine_matrix` / :func:`random_affine`.
        fill: ``"reflect"`` (mirror about the border pixels) or
            ``"constant"`` (``cval``) where the source lies outside.
        cval: the constant of ``fill="constant"``.
        out: float32 array of the image's shape to write into (e.g. one
            slot of a batch); a new one when None.

    Returns:
        float32 array of the same shape (``out`` when given).

    Example:
        >>> image = np.arange(12, dtype=np.float32).reshape(3, 4)
        >>> warp_image(image, affine_matrix((3, 4), flip=True))[0].tolist()
        [3.0, 2.0, 1.0, 0.0]
    """
    if fill not in FILL_MODES:
        raise ConfigError(f"fill must be one of {FILL_MODES}, got {fill!r}")
    image = np.asarray(image)
    shape = image.shape
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    space = _workspace(height, width, channels)
    _source_coordinates(matrix, space)
    rows, cols, scratch = space.rows, space.cols, space.scratch
    outside = None
    if fill == "constant":
        outside = space.outside
        np.less(rows, -0.5, out=outside)
        outside |= rows > height - 0.5
        outside |= cols < -0.5
        outside |= cols > width - 0.5
    _reflect(rows, height, scratch)
    _reflect(cols, width, scratch)
    _bilinear_taps(rows, height, space.row_taps, scratch)
    _bilinear_taps(cols, width, space.col_taps, scratch)
    # Weights repeated per channel, written through the transposed view: numpy
    # broadcasts (N,) -> (N, C) with an inner loop of C, 10x slower.
    space.row_weight.T[...] = rows
    space.col_weight.T[...] = cols
    # One flat index per tap. An upper tap past the last row or column has
    # weight 0; it may point at the next row or past the end (clipped by
    # mode="clip"): any finite value times 0 adds nothing.
    row_step, col_step = width, 1
    index, index_right = space.index, space.index_right
    np.multiply(space.row_taps, width, out=index)
    index += space.col_taps
    source = image.reshape(-1, channels)
    if source.dtype != np.float32:
        np.copyto(space.source, source, casting="unsafe")
        source = space.source
    top, bottom, right = space.top, space.bottom, space.right
    # mode="clip": with the default "raise" numpy buffers ``out`` (a copy).
    np.take(source, index, axis=0, out=top, mode="clip")
    np.add(index, col_step, out=index_right)
    np.take(source, index_right, axis=0, out=right, mode="clip")
    right -= top
    right *= space.col_weight
    top += right
    index += row_step
    index_right += row_step
    np.take(source, index, axis=0, out=bottom, mode="clip")
    np.take(source, index_right, axis=0, out=right, mode="clip")
    right -= bottom
    right *= space.col_weight
    bottom += right
    bottom -= top
    bottom *= space.row_weight
    top += bottom
    if outside is not None:
        top[outside] = cval
    if out is None:
        return top.reshape(shape).copy()
    out[...] = top.reshape(shape)
    return out


def warp_mask(mask: np.ndarray, matrix: np.ndarray, *, fill_value: int = IGNORE,
              out: np.ndarray | None = None) -> np.ndarray:
    """Resample a mask through an affine ``matrix``, by nearest neighbour.

    Args:
        mask: ``uint8 (H, W)``.
        matrix: the same matrix as the image's.
        fill_value: value of pixels whose source lies outside (255 = ignore).
        out: array of the mask's shape to write into; a new one when None.

    Returns:
        ``uint8 (H, W)``.

    Example:
        >>> warp_mask(np.eye(3, dtype=np.uint8), affine_matrix((3, 3), shift=(0, 1 / 3)))
        array([[  0,   0, 255],
               [  1,   0, 255],
               [  0,   1, 255]], dtype=uint8)
    """
    mask = np.asarray(mask)
    height, width = mask.shape[:2]
    space = _workspace(height, width, 1)
    _source_coordinates(matrix, space)
    rows, cols, outside = space.rows, space.cols, space.outside
    np.rint(rows, out=rows)
    np.rint(cols, out=cols)
    np.less(rows, 0, out=outside)
    outside |= rows > height - 1
    outside |= cols < 0
    outside |= cols > width - 1
    np.clip(rows, 0, height - 1, out=rows)
    np.clip(cols, 0, width - 1, out=cols)
    index = space.index
    np.copyto(index, rows, casting="unsafe")
    index *= width
    np.copyto(space.index_right, cols, casting="unsafe")
    index += space.index_right
    if out is None:
        out = np.empty(mask.shape, dtype=mask.dtype)
    flat = out.reshape(-1)
    np.take(mask.reshape(-1), index, out=flat, mode="clip")
    flat[outside] = fill_value
    return out


def adjust_radiance(radiance: np.ndarray, *, gamma: float = 1.0,
                    exposure_ev: float = 0.0) -> np.ndarray:
    """``2**exposure_ev * radiance**gamma`` (float32; negatives are treated as 0).

    Gamma pivots at radiance 1.0; exposure scales by whole or fractional stops.

    Example:
        >>> adjust_radiance(np.array([0.25, 1.0, 4.0]), gamma=0.5, exposure_ev=1).tolist()
        [1.0, 2.0, 4.0]
    """
    radiance = np.maximum(np.asarray(radiance, dtype=np.float32), 0.0)
    if gamma != 1.0:
        # exp(gamma log r) is about twice as fast as numpy's float32 power.
        with np.errstate(divide="ignore"):
            radiance = np.log(radiance, out=radiance)
        radiance *= np.float32(gamma)
        radiance = np.exp(radiance, out=radiance)
    if exposure_ev != 0.0:
        radiance *= np.float32(2.0 ** exposure_ev)
    return radiance


def augment_values(values: np.ndarray, preprocessing: Preprocessing, *, gamma: float = 1.0,
                   exposure_ev: float = 0.0) -> np.ndarray:
    """Apply exposure and gamma on linear radiance to a *preprocessed* patch.

    HDR: ``preprocessing.apply(adjust_radiance(preprocessing.invert(values)))``,
    so the result is exactly the patch that the adjusted radiance would
    have given (clipping at ``clip_max`` included). LDR (0..1 display
    values): the sRGB curve is undone, the linear light adjusted, clipped at
    white and re-encoded.

    float16 patches go through a lookup table over all 65,536 float16 codes
    (the mapping is element-wise), which is both exact and several times
    faster than computing exp/pow/log per pixel.

    Args:
        values: the stored patch, float16 or float32, any shape.
        preprocessing: the dataset's preprocessing.
        gamma: exponent on radiance (1: unchanged).
        exposure_ev: stops (0: unchanged).

    Returns:
        float32 array of the same shape.

    Example:
        >>> prep = Preprocessing(mode="hdr")
        >>> stored = prep.apply(np.full((1, 1, 3), 2.0, np.float32))
        >>> out = augment_values(stored, prep, exposure_ev=1.0)
        >>> round(float(prep.invert(out)[0, 0, 0]), 4)
        4.0
    """
    values = np.asarray(values)
    if gamma == 1.0 and exposure_ev == 0.0:
        return values.astype(np.float32)
    if values.dtype == np.float16 and values.size > 4096:
        # (256, 256) rather than (65536,): the preprocessing works in row chunks.
        codes = np.arange(65536, dtype=np.uint16).reshape(256, 256)
        table = _transfer(codes.view(np.float16).astype(np.float32), preprocessing, gamma,
                          exposure_ev)
        return np.take(table.reshape(-1), values.view(np.uint16))
    return _transfer(values.astype(np.float32), preprocessing, gamma, exposure_ev)


def _transfer(values: np.ndarray, preprocessing: Preprocessing, gamma: float,
              exposure_ev: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if preprocessing.is_hdr:
            radiance = adjust_radiance(preprocessing.invert(values), gamma=gamma,
                                       exposure_ev=exposure_ev)
            # What Preprocessing.apply does to radiance (sanitise, clip, log),
            # without its copies: radiance here is finite and >= 0 already,
            # except +inf from overflow, which the sanitiser would cap.
            top = preprocessing.clip_max or float(np.finfo(np.float32).max)
            np.minimum(radiance, np.float32(top), out=radiance)
            return log_transform(radiance, **preprocessing.log_parameters())
        linear = adjust_radiance(srgb_decode(values), gamma=gamma, exposure_ev=exposure_ev)
        return srgb_encode(np.minimum(linear, 1.0))


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

    Example:
        >>> Augmentation(rotation=0, shift=0, zoom=0, shear=0).geometric
        True
    """

    rotation: float = 15.0
    shift: float = 0.3
    zoom: float = 0.3
    shear: float = 0.1
    horizontal_flip: bool = True
    exposure_ev: float = 1.0
    gamma: float = 1.25
    fill: str = "reflect"

    def __post_init__(self) -> None:
        for name in ("rotation", "shift", "shear", "exposure_ev"):
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

    def draw(self, rng: np.random.Generator, shape: tuple[int, int]) -> dict:
        """One random draw: ``{"matrix", "gamma", "exposure_ev"}`` for a patch of ``shape``."""
        matrix = (random_affine(rng, shape, rotation=self.rotation, shift=self.shift,
                                zoom=self.zoom, shear=self.shear,
                                horizontal_flip=self.horizontal_flip)
                  if self.geometric else None)
        exposure = float(rng.uniform(-self.exposure_ev, self.exposure_ev))
        log_gamma = math.log(self.gamma)
        gamma = float(math.exp(rng.uniform(-log_gamma, log_gamma)))
        return {"matrix": matrix, "gamma": gamma, "exposure_ev": exposure}

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
        if draw["matrix"] is not None:
            image = warp_image(image, draw["matrix"], fill=self.fill)
            mask = warp_mask(mask, draw["matrix"])
        return np.asarray(image, dtype=np.float32), mask

    def apply(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              preprocessing: Preprocessing | None = None):
        """Draw once from ``rng`` and apply to ``image`` and ``mask`` alike."""
        return self.apply_draw(image, mask, self.draw(rng, mask.shape[:2]), preprocessing)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Augmentation:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown augmentation parameter(s) {unknown}; known: "
                              f"{sorted(known)}")
        return cls(**data)

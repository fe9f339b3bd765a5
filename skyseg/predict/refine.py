"""Coarse to fine: bring a low-resolution sky probability to full size along the image's edges.

A network that runs below the image's resolution (a model trained at
``--scale 0.25``, or ``--max-side``) decides *where* the sky is from the
whole context, but its probability, upsampled linearly, has soft edges a few
full-resolution pixels wide. :func:`guided_upsample` brings it back to full
size with the **fast guided filter** (He & Sun 2015, "Fast Guided Filter"):

1. a grey *guide* is made from the full-resolution image
   (:func:`guide_rows`): the base-2 log of the luminance, a tenth per stop,
   for HDR radiance (exposure-invariant: a brighter exposure only shifts
   it); the luminance of the 0..255 display values / 255 for LDR;
2. the guide is area-averaged down to the probability's grid;
3. there, in every window of ``2 * radius + 1`` coarse pixels, the
   probability is fitted as a linear function of the guide,
   ``p ~ a * I + b`` (``a = cov(I, p) / (var(I) + eps)``), and the
   coefficients are averaged over the windows that hold each pixel;
4. ``a`` and ``b`` are upsampled bilinearly (pixel centres aligned, as
   :func:`skyseg.image.preprocess.upsample_linear`) and applied to the
   full-resolution guide: ``q = A * I + B``, clipped to 0..1.

Where the probability is flat (inside the sky, inside the ground) ``a`` is 0
and ``q`` is the smooth probability; where it changes, ``q`` follows the
guide's edge at full resolution. Where the guide has no edge for the
probability to follow (``var(I) << eps``), ``q`` stays the smoothed
probability: the filter moves edges onto image edges, never invents them.
What it cannot recover: structures the network never saw because they are
thinner than the coarse grid (a wire one full-resolution pixel wide in a
4x-shrunk image is a 1/4-pixel blip in the probability): the filter makes
existing transitions sharp, it does not add regions.

Memory stays bounded: both passes run in bands of rows (with a halo of
``2 * radius`` coarse rows for the box filters), so a 16384x8192 panorama
never holds a full-size float array besides the result. Panoramas
(``wrap``) are filtered on a circle: columns are padded by wrapping before
each box filter and the bilinear upsampling wraps at x = 0, so there is no
seam and the result commutes with a horizontal roll (by whole coarse pixels).

Plain numpy and OpenCV (``cv2.boxFilter``, ``cv2.resize``); no TensorFlow.

Example:
    >>> import numpy as np
    >>> image = np.zeros((16, 32, 3), np.float32); image[:, 13:] = 255.0
    >>> coarse = np.zeros((4, 8), np.float32); coarse[:, 3] = 0.75; coarse[:, 4:] = 1.0
    >>> refined = guided_upsample(coarse, image, is_hdr=False)
    >>> refined.shape, refined.dtype
    ((16, 32), dtype('float32'))
    >>> int((refined > 0.5)[0].nonzero()[0].min())  # the image's edge, not the coarse grid's
    13
"""

from __future__ import annotations

import logging

import numpy as np

from skyseg.errors import ConfigError
from skyseg.image.preprocess import bilinear_positions, luminance
from skyseg.predict.tiling import reflect_indices

__all__ = [
    "REFINE_CHOICES",
    "DEFAULT_RADIUS",
    "DEFAULT_EPS",
    "DEFAULT_BAND_ROWS",
    "check_refine",
    "guide_rows",
    "guide_floor",
    "guide_image",
    "downsample_guide",
    "guided_coefficients",
    "guided_upsample",
]

logger = logging.getLogger("skyseg")

#: ``--refine`` values: auto (guided when the network ran below the image's
#: resolution, else nothing to do), guided (always), none (linear upsampling,
#: the output of skyseg before refinement existed).
REFINE_CHOICES = ("auto", "guided", "none")
#: Window radius of the guided filter, in pixels of the coarse grid (3x3
#: windows). Chosen on CamVid val with the truth shrunk by 0.5 or 0.25 and
#: blurred by 0.5-2 coarse pixels as the coarse probability: radius 1 gained
#: 0.02-0.06 boundary F over linear upsampling with pooled IoU within
#: -0.005..+0.003; radius 2 and 3 lost up to 0.01 IoU (see scripts/bench_refine.py
#: --oracle).
DEFAULT_RADIUS = 1
#: Regularisation of the guided filter, in squared guide units (a guide step
#: below about sqrt(eps) = 0.01, a tenth of a stop for HDR or 2.5 grey levels
#: for LDR, is not taken for an edge).
DEFAULT_EPS = 1e-4
#: Full-resolution rows per band (an 8192-wide band of 256 rows is 8 MB a
#: float32 array).
DEFAULT_BAND_ROWS = 256

#: HDR guide units: log2 luminance / this (ten stops make one unit, about the
#: range of an LDR guide in 0..1).
_STOPS_PER_UNIT = 10.0
#: HDR luminance below this fraction of the median is treated as this (keeps
#: noise in near-black pixels from making edges).
_FLOOR_FRACTION = 1e-3


def check_refine(refine: str) -> str:
    """Validate ``--refine``.

    Raises:
        ConfigError: not one of :data:`REFINE_CHOICES`.

    Example:
        >>> check_refine("auto")
        'auto'
    """
    if refine not in REFINE_CHOICES:
        raise ConfigError(f"--refine must be one of {', '.join(REFINE_CHOICES)}, got {refine!r}")
    return refine


def guide_floor(image: np.ndarray, *, is_hdr: bool) -> float:
    """The luminance floor of the HDR guide (``1e-3`` of the median luminance); 0 for LDR.

    Computed once per image on a strided sample, so every band of
    :func:`guide_rows` uses the same value.
    """
    if not is_hdr:
        return 0.0
    height, width = image.shape[:2]
    step = max(1, int(np.sqrt(height * width / 262144)))
    sample = luminance(image[::step, ::step])
    sample = sample[np.isfinite(sample) & (sample > 0)]
    median = float(np.median(sample)) if sample.size else 1.0
    return max(median * _FLOOR_FRACTION, 1e-30)


def guide_rows(image: np.ndarray, *, is_hdr: bool, floor: float) -> np.ndarray:
    """The guide of some rows of an image: float32 ``(rows, W)``.

    Args:
        image: float32 ``(rows, W, 3)``: radiance (HDR) or 0..255 (LDR).
        is_hdr: HDR guide ``log2(max(luminance, 0) + floor) / 10``; LDR guide
            ``luminance / 255``.
        floor: :func:`guide_floor` of the whole image.

    Example:
        >>> rows = np.full((1, 2, 3), 255.0, np.float32)
        >>> guide_rows(rows, is_hdr=False, floor=0.0).tolist()
        [[1.0, 1.0]]
    """
    lum = luminance(image)
    if not is_hdr:
        lum *= np.float32(1 / 255)
        return lum
    np.maximum(lum, 0.0, out=lum)
    lum += np.float32(floor)
    np.log2(lum, out=lum)
    lum *= np.float32(1 / _STOPS_PER_UNIT)
    return lum


def guide_image(image: np.ndarray, *, is_hdr: bool) -> np.ndarray:
    """The whole guide, float32 ``(H, W)`` (for inspection; the filter works in bands)."""
    floor = guide_floor(image, is_hdr=is_hdr)
    return guide_rows(image, is_hdr=is_hdr, floor=floor)


def _row_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-average weights of ``source`` rows onto ``target`` rows (target <= source).

    Returns three arrays over the non-zero entries: target row, source row,
    weight (each target row's weights sum to 1).
    """
    ratio = source / target
    targets, sources, weights = [], [], []
    for i in range(target):
        lo, hi = i * ratio, (i + 1) * ratio
        for j in range(int(np.floor(lo)), min(source, int(np.ceil(hi)))):
            overlap = min(hi, j + 1) - max(lo, j)
            if overlap > 1e-12:
                targets.append(i)
                sources.append(j)
                weights.append(overlap / ratio)
    return (np.asarray(targets, np.intp), np.asarray(sources, np.intp),
            np.asarray(weights, np.float32))


def downsample_guide(image: np.ndarray, size: tuple[int, int], *, is_hdr: bool, floor: float,
                     band_rows: int = DEFAULT_BAND_ROWS) -> np.ndarray:
    """The guide area-averaged to ``size`` = (h, w), computed in bands of rows.

    Columns are averaged per band with ``cv2.resize(INTER_AREA)`` (rows are
    independent there), rows with exact area weights, so no full-size guide
    is ever held.

    Returns:
        float32 ``(h, w)``.
    """
    import cv2

    height, width = image.shape[:2]
    small_h, small_w = size
    if small_h > height or small_w > width:
        raise ConfigError(f"the coarse grid {small_w}x{small_h} is larger than the image "
                          f"{width}x{height}")
    targets, sources, weights = _row_weights(height, small_h)
    out = np.zeros((small_h, small_w), np.float32)
    for start in range(0, height, band_rows):
        stop = min(start + band_rows, height)
        band = guide_rows(image[start:stop], is_hdr=is_hdr, floor=floor)
        if small_w != width:
            band = cv2.resize(band, (small_w, stop - start), interpolation=cv2.INTER_AREA)
            band = band.reshape(stop - start, small_w)
        chosen = (sources >= start) & (sources < stop)
        for target, source, weight in zip(targets[chosen], sources[chosen], weights[chosen],
                                          strict=True):
            out[target] += weight * band[source - start]
    return out


def _column_indices(width: int, pad: int, wrap: bool) -> np.ndarray:
    raw = np.arange(-pad, width + pad)
    return np.mod(raw, width) if wrap else reflect_indices(raw, width)


def _box(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over (2r+1)^2 windows of a padded array; the result loses ``radius`` on each side."""
    import cv2

    size = 2 * radius + 1
    mean = cv2.boxFilter(values, cv2.CV_32F, (size, size), normalize=True,
                         borderType=cv2.BORDER_REFLECT_101)
    return mean[radius:mean.shape[0] - radius, radius:mean.shape[1] - radius]


def guided_coefficients(guide: np.ndarray, probability: np.ndarray, *,
                        radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS,
                        wrap: bool = False, band_rows: int = DEFAULT_BAND_ROWS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's averaged coefficients ``(A, B)`` on the coarse grid.

    ``probability ~ A * guide + B`` locally; computed in bands of
    ``band_rows`` rows with a halo of ``2 * radius`` rows, borders reflected
    (columns wrapped with ``wrap``), so bands give the same result as the
    whole image.

    Args:
        guide: float32 ``(h, w)``, the guide on the coarse grid.
        probability: float32 ``(h, w)``.
        radius: window radius in coarse pixels (>= 1).
        eps: regularisation (> 0).
        wrap: the columns are a circle.
        band_rows: rows per band.

    Returns:
        two float32 ``(h, w)`` arrays.
    """
    height, width = probability.shape
    halo = 2 * radius
    columns = _column_indices(width, halo, wrap)
    # Centred guide: the variance below is a difference of two means.
    centre = np.float32(np.median(guide[:: max(1, height // 64), :: max(1, width // 64)]))
    mean_a = np.empty((height, width), np.float32)
    mean_b = np.empty((height, width), np.float32)
    for start in range(0, height, band_rows):
        stop = min(start + band_rows, height)
        rows = reflect_indices(np.arange(start - halo, stop + halo), height)
        index = np.ix_(rows, columns)
        g = guide[index] - centre
        p = probability[index]
        mean_g = _box(g, radius)
        mean_p = _box(p, radius)
        cov = _box(g * p, radius) - mean_g * mean_p
        var = _box(g * g, radius) - mean_g * mean_g
        np.maximum(var, 0.0, out=var)
        a = cov / (var + np.float32(eps))
        b = mean_p - a * mean_g
        mean_a[start:stop] = _box(a, radius)
        mean_b[start:stop] = _box(b, radius) - mean_a[start:stop] * centre
    return mean_a, mean_b


def guided_upsample(probability: np.ndarray, image: np.ndarray, *, is_hdr: bool,
                    wrap: bool = False, radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS,
                    band_rows: int = DEFAULT_BAND_ROWS) -> np.ndarray:
    """Bring a coarse sky probability to the image's size along the image's edges.

    Args:
        probability: float32 ``(h, w)`` in 0..1, the network's output on the
            image shrunk to ``h x w`` (h <= H, w <= W; equal sizes give a
            plain guided filter at full resolution).
        image: float32 ``(H, W, 3)`` at full resolution: radiance for HDR,
            0..255 for LDR (what :func:`skyseg.read_image` returns).
        is_hdr: ``image`` is radiance (guide: log luminance) or LDR.
        wrap: the columns are a circle (equirectangular panorama).
        radius: window radius in coarse pixels.
        eps: regularisation; larger keeps more of the smooth probability.
        band_rows: full-resolution rows per band (memory: about
            ``6 * band_rows * W * 4`` bytes besides the result and the
            coarse arrays).

    Returns:
        float32 ``(H, W)`` in 0..1; threshold it like any probability
        (``> 0.5`` is sky).

    Raises:
        ConfigError: bad shapes or parameters.

    Example:
        >>> image = np.zeros((8, 8, 3), np.float32); image[:, 3:] = 200.0
        >>> coarse = np.array([[0.0, 0.5, 1.0, 1.0]] * 4, np.float32)
        >>> (guided_upsample(coarse, image, is_hdr=False)[0] > 0.5).astype(int).tolist()
        [0, 0, 0, 1, 1, 1, 1, 1]
    """
    probability = np.asarray(probability, dtype=np.float32)
    image = np.asarray(image)
    if probability.ndim != 2 or probability.shape[0] < 1 or probability.shape[1] < 1:
        raise ConfigError(f"expected a probability (h, w), got shape {probability.shape}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"expected an image (H, W, 3), got shape {image.shape}")
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise ConfigError(f"guided filter radius must be a whole number >= 1, got {radius!r}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ConfigError(f"guided filter eps must be > 0, got {eps!r}")
    if band_rows < 1:
        raise ConfigError(f"band_rows must be >= 1, got {band_rows}")
    height, width = image.shape[:2]
    small_h, small_w = probability.shape
    floor = guide_floor(image, is_hdr=is_hdr)
    coarse_guide = downsample_guide(image, (small_h, small_w), is_hdr=is_hdr, floor=floor,
                                    band_rows=band_rows)
    coarse_band = max(1, round(band_rows * small_h / height))
    mean_a, mean_b = guided_coefficients(coarse_guide, probability, radius=radius, eps=eps,
                                         wrap=wrap, band_rows=coarse_band)
    del coarse_guide
    row_low, row_high, row_weight = bilinear_positions(height, small_h, False)
    col_low, col_high, col_weight = bilinear_positions(width, small_w, wrap)
    col_rest = 1.0 - col_weight
    out = np.empty((height, width), np.float32)
    for start in range(0, height, band_rows):
        stop = min(start + band_rows, height)
        first = int(min(row_low[start:stop].min(), row_high[start:stop].min()))
        last = int(max(row_low[start:stop].max(), row_high[start:stop].max())) + 1
        low = row_low[start:stop] - first
        high = row_high[start:stop] - first
        weight = row_weight[start:stop, None]
        band = guide_rows(image[start:stop], is_hdr=is_hdr, floor=floor)
        for coefficient, is_slope in ((mean_a, True), (mean_b, False)):
            rows = coefficient[first:last]
            columns = rows[:, col_low] * col_rest + rows[:, col_high] * col_weight
            full = columns[low] * (1.0 - weight) + columns[high] * weight
            if is_slope:
                band *= full
            else:
                band += full
        np.clip(band, 0.0, 1.0, out=band)
        out[start:stop] = band
    return out

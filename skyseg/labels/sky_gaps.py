"""Sky seen through gaps (between the branches of bare trees): labels to leave out of training.

Labellers disagree about the sky seen between the branches of a bare crown:
one traces the crown as tree, another leaves its gaps sky. On CamVid,
``skyseg check labels`` measures the disagreement per sequence
(0001TP labels those gaps sky, 0006R0 and 0016E5 tree), and a model trained on
one convention loses the other's sky the longer it trains. Building the
dataset with ``ignore_sky_gaps`` turns such pixels into the ignore value
(255): they count in no loss or validation score, so neither convention is
taught. Scores of ``skyseg evaluate`` still use the labels as drawn.

A pixel is a *sky gap* when it is

1. labelled not sky (0);
2. near labelled sky: a window of ``window`` times the image's shorter side
   around it holds more than 1.2 % sky;
3. as bright as that nearby sky: luminance (mean of the channels) within
   ``tolerance`` of the mean luminance of the sky in the window;
4. in a *gap*: its connected region of such pixels (8-neighbours) is small
   (at most ``max_area`` of the image's pixels), or textured (mean relative
   standard deviation of the luminance in 5x5 windows at least ``texture``),
   as the light between dark branches is. Large smooth regions (a white
   wall or roof under a white sky) stay not sky: those are the errors a
   model must learn to avoid.

Works on LDR (0-255 or 0-1) and linear HDR radiance alike (relative tests).
Memory: about ten float32 planes of the image (computed at the dataset's
working scale, after ``--scale``).
"""

from __future__ import annotations

import numpy as np

from skyseg.image.metrics import IGNORE

__all__ = ["find_sky_gaps", "ignore_sky_gaps", "sky_coloured_not_sky"]

#: Window side (fraction of the shorter image side) that defines "near sky".
WINDOW = 0.12
#: Least share of sky in that window.
MIN_SKY_SHARE = 0.012
#: Relative luminance difference to the nearby sky still counted as alike.
TOLERANCE = 0.15
#: Largest region (fraction of the image's pixels) counted as a gap whatever its texture.
MAX_AREA = 0.002
#: Least mean relative 5x5 luminance deviation of a larger region counted as gaps.
TEXTURE = 0.05


def _luminance(image: np.ndarray) -> np.ndarray:
    """``float32 (H, W)``: the mean of the channels (the image itself when it has none)."""
    luminance = image.astype(np.float32)
    return luminance.mean(axis=-1) if luminance.ndim == 3 else luminance


def _window(height: int, width: int, window: float) -> int:
    side = int(round(window * min(height, width)))
    return max(3, side | 1)


def sky_coloured_not_sky(image: np.ndarray, mask: np.ndarray, *, window: float = WINDOW,
                         tolerance: float = TOLERANCE) -> np.ndarray:
    """Pixels labelled not sky, near labelled sky and as bright as it (conditions 1-3).

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` pixel values, any non-negative range.
        mask: ``uint8 (H, W)``: 0 not sky, 1 sky, 255 ignore.
        window: side of the neighbourhood, as a fraction of ``min(H, W)``.
        tolerance: relative luminance difference still alike.

    Returns:
        ``bool (H, W)``.

    Raises:
        ValueError: ``image`` and ``mask`` differ in size.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    return _alike(_luminance(image), mask, window, tolerance)


def _alike(luminance: np.ndarray, mask: np.ndarray, window: float,
           tolerance: float) -> np.ndarray:
    import cv2

    side = _window(*mask.shape, window)
    sky = (mask == 1).astype(np.float32)
    total = cv2.boxFilter(luminance * sky, -1, (side, side), normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
    count = cv2.boxFilter(sky, -1, (side, side), normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
    near = (count > MIN_SKY_SHARE * side * side) & (mask == 0)
    local = total / np.maximum(count, 1.0)
    return near & (np.abs(luminance - local) <= tolerance * local)


def find_sky_gaps(image: np.ndarray, mask: np.ndarray, *, window: float = WINDOW,
                  tolerance: float = TOLERANCE, max_area: float = MAX_AREA,
                  texture: float = TEXTURE) -> np.ndarray:
    """Sky gaps of one image (see the module docstring): ``bool (H, W)``.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` pixel values (LDR or linear radiance).
        mask: ``uint8 (H, W)``: 0 not sky, 1 sky, 255 ignore.
        window, tolerance: see :func:`sky_coloured_not_sky`.
        max_area: regions up to this fraction of ``H * W`` are gaps.
        texture: larger regions are gaps when their mean relative 5x5
            luminance deviation reaches this.

    Raises:
        ValueError: ``image`` and ``mask`` differ in size.

    Example:
        >>> mask = np.zeros((40, 40), np.uint8); mask[:20] = 1
        >>> image = np.full((40, 40), 200.0); image[20:] = 50; image[21, 5] = 200
        >>> find_sky_gaps(image, mask).nonzero()
        (array([21]), array([5]))
    """
    import cv2

    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    luminance = _luminance(image)  # once, for both tests
    alike = _alike(luminance, mask, window, tolerance)
    if not alike.any():
        return alike
    count, regions, stats, _ = cv2.connectedComponentsWithStats(alike.astype(np.uint8),
                                                                connectivity=8)
    mean = cv2.blur(luminance, (5, 5))
    deviation = np.sqrt(np.maximum(cv2.blur(luminance * luminance, (5, 5)) - mean * mean, 0.0))
    relative = deviation / np.maximum(mean, np.float32(1e-12))
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    textured = np.bincount(regions.ravel(), weights=relative.ravel(), minlength=count)
    textured = textured / np.maximum(areas, 1.0) >= texture
    gap = (areas <= max_area * mask.size) | textured
    gap[0] = False  # the background label: not alike
    return gap[regions]


def ignore_sky_gaps(image: np.ndarray, mask: np.ndarray, **options) -> tuple[np.ndarray, int]:
    """``(mask with the sky gaps set to 255, number of pixels set)``; ``mask`` is not changed.

    ``options``: those of :func:`find_sky_gaps`.
    """
    gaps = find_sky_gaps(image, mask, **options)
    out = mask.copy()
    out[gaps] = IGNORE
    return out, int(np.count_nonzero(gaps))

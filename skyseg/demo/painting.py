"""Painting panoramas in linear radiance: sky colour, noise textures, polygons.

The shared brushes of the outdoor scenes (:mod:`skyseg.demo.scenes`) and the rooms
(:mod:`skyseg.demo.rooms`). Images are float32 (H, W, 3) linear radiance at EV 0 (the scene's
exposure is applied last); noise is seeded through the lattices the caller draws.

Example:
    >>> image = np.zeros((4, 4, 3), np.float32)
    >>> square = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]])
    >>> row0, coverage = paint_polygon(image, square, lambda r0, r1: np.float32(1.0), 1)
    >>> image[..., 0].tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
"""

from __future__ import annotations

import numpy as np

from skyseg.demo.geometry import polygon_coverage
from skyseg.image.preprocess import luminance

__all__ = [
    "SKY_LEVEL",
    "smoothstep",
    "colour_luminance",
    "value_noise",
    "fbm",
    "upsample2",
    "sky_colour",
    "sun_disc",
    "paint_polygon",
    "paint_non_sky",
    "sky_alpha",
]

#: Luminance of the clear horizon sky at EV 0 (close to real panoramas in camera units).
SKY_LEVEL = 0.18

_ZENITH = np.array([0.20, 0.36, 0.95], np.float32)
_HORIZON = np.array([0.80, 0.88, 1.00], np.float32)


def smoothstep(edge0, edge1, x):
    """0 below ``edge0``, 1 above ``edge1``, a smooth cubic between (float32).

    Example:
        >>> smoothstep(0.0, 2.0, np.array([-1.0, 1.0, 3.0])).tolist()
        [0.0, 0.5, 1.0]
    """
    t = np.clip((np.asarray(x, dtype=np.float32) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def colour_luminance(rgb) -> float:
    """Rec.709 luminance of one colour (3,), in float64: what colours are normalised by.

    Example:
        >>> colour_luminance([1.0, 1.0, 1.0])
        1.0
    """
    return float(luminance(rgb, dtype=np.float64))


# --------------------------------------------------------------------------- noise

def value_noise(u: np.ndarray, v: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Smooth value noise in 0..1; periodic with the lattice's shape (rows ~ v, cols ~ u)."""
    rows, cols = lattice.shape
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = (u - iu).astype(np.float32), (v - iv).astype(np.float32)
    iu, iv = iu.astype(np.int64) % cols, iv.astype(np.int64) % rows
    iu1, iv1 = (iu + 1) % cols, (iv + 1) % rows
    su, sv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    top = lattice[iv, iu] * (1 - su) + lattice[iv, iu1] * su
    bottom = lattice[iv1, iu] * (1 - su) + lattice[iv1, iu1] * su
    return top * (1 - sv) + bottom * sv


def fbm(u: np.ndarray, v: np.ndarray, lattices: list[np.ndarray],
         offsets: np.ndarray, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of value noise, one lattice per octave; about 0..1 around 0.5."""
    total = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave, lattice in enumerate(lattices):
        scale = 2.0 ** octave
        total += np.float32(amplitude) * value_noise(u * scale + offsets[octave, 0],
                                                      v * scale + offsets[octave, 1], lattice)
        norm += amplitude
        amplitude *= gain
    return total / np.float32(norm)


def upsample2(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Linear 2x upsampling (x wraps around, y clamps) to (height, width)."""
    def along(a, axis, wrap):
        prev = np.roll(a, 1, axis=axis)
        nxt = np.roll(a, -1, axis=axis)
        if not wrap:
            index = [slice(None)] * a.ndim
            index[axis] = 0
            prev[tuple(index)] = a[tuple(index)]
            index[axis] = -1
            nxt[tuple(index)] = a[tuple(index)]
        even = 0.75 * a + 0.25 * prev
        odd = 0.75 * a + 0.25 * nxt
        out = np.stack([even, odd], axis=axis + 1)
        shape = list(a.shape)
        shape[axis] *= 2
        return out.reshape(shape)

    out = along(along(array, 1, wrap=True), 0, wrap=False)
    return out[:height, :width]



# --------------------------------------------------------------------------- sky and sun

def sky_colour(sin_elevation, gamma, sun_elevation_deg: float, haze: float) -> np.ndarray:
    """Clear-sky radiance at EV 0 (..., 3): blue zenith, bright horizon, brighter near the sun."""
    # float32 throughout: these are full-image arrays.
    mu = np.clip(np.asarray(sin_elevation, np.float32), 0.0, 1.0)
    gamma = np.asarray(gamma, np.float32)
    towards_horizon = ((1.0 - mu) ** np.float32(3.0 - 1.5 * haze))[..., None]
    horizon = _HORIZON * np.float32(1 - haze) + np.float32(0.95 * haze)
    colour = _ZENITH * (1 - towards_horizon) + horizon * towards_horizon
    colour = colour / np.float32(colour_luminance(horizon))
    brighter = 1.0 + 1.2 * np.exp(-gamma / 0.5)
    low_sun = float(np.clip(1.0 - sun_elevation_deg / 30.0, 0.0, 1.0))
    warmth = low_sun * towards_horizon[..., 0] * np.exp(-gamma / 0.8)
    tint = 1.0 + warmth[..., None] * np.array([0.45, 0.05, -0.35], np.float32)
    return (colour * (brighter[..., None] * SKY_LEVEL) * tint).astype(np.float32)



def sun_disc(gamma, radius: float, height: int) -> np.ndarray:
    """Anti-aliased, limb-darkened disc of angular ``radius`` (0..1) at angles ``gamma``."""
    pixel_angle = np.pi / height
    edge = np.clip((radius - gamma) / pixel_angle + 0.5, 0.0, 1.0)
    limb = 1.0 - 0.5 * (1.0 - np.sqrt(np.clip(1.0 - (gamma / radius) ** 2, 0.0, 1.0)))
    return (edge * limb).astype(np.float32)



# --------------------------------------------------------------------------- polygons

def paint_polygon(image: np.ndarray, polygon: np.ndarray, shade, subrows: int):
    """Composite ``shade`` over ``image`` where the polygon covers it; returns the coverage."""
    height, width = image.shape[:2]
    row0, block = polygon_coverage(polygon, height, width, subrows=subrows)
    if block.shape[0]:
        rows = slice(row0, row0 + block.shape[0])
        weight = block[..., None]
        image[rows] = image[rows] * (1 - weight) + shade(row0, row0 + block.shape[0]) * weight
    return row0, block



def sky_alpha(polygons, height: int, width: int, subrows: int) -> np.ndarray:
    """float32 (H, W) in 0..1: how much of each pixel the union of the sky polygons covers.

    Where polygons overlap a pixel takes the larger coverage (the labels' sky polygons
    do not overlap).
    """
    alpha = np.zeros((height, width), np.float32)
    for polygon in polygons:
        row0, block = polygon_coverage(polygon, height, width, subrows=subrows)
        rows = slice(row0, row0 + block.shape[0])
        alpha[rows] = np.maximum(alpha[rows], block)
    return alpha


def paint_non_sky(image: np.ndarray, alpha: np.ndarray, polygon: np.ndarray, shade,
                  subrows: int) -> None:
    """Paint a non-sky polygon over ``image`` and take its coverage out of the sky ``alpha``.

    Args:
        image: float32 (H, W, 3), painted in place.
        alpha: float32 (H, W) sky coverage, reduced in place where the polygon covers it.
        polygon: float (N, 2) x/y in pixels of ``image``.
        shade: ``(row0, row1) -> colours`` as for :func:`paint_polygon`.
        subrows: anti-aliasing sample lines per pixel row.
    """
    row0, block = paint_polygon(image, polygon, shade, subrows)
    rows = slice(row0, row0 + block.shape[0])
    alpha[rows] *= 1 - block

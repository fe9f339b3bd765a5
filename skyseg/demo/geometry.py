"""Geometry of equirectangular panoramas: directions, polygons on the cylinder, coverage.

Pixel coordinates are full-size (or preview) pixels of a ``width x width / 2``
equirectangular image: x = 0 is azimuth 0 and wraps around at ``width``, y = 0 the zenith,
``y = height / 2`` the horizon. Directions are unit vectors (x towards azimuth 0, y towards
azimuth 90 degrees, z up). Polygons are float64 (N, 2) arrays of x/y vertices.

What the outdoor scenes (:mod:`skyseg.demo.scenes`) and the rooms (:mod:`skyseg.demo.rooms`)
both draw with: plain numpy, no randomness.

Example:
    >>> square = np.array([[-3.0, 2.0], [5.0, 2.0], [5.0, 6.0], [-3.0, 6.0]])
    >>> sorted(polygon_area(part) for part in wrap_polygon(square, 100.0, 50.0))
    [12.0, 20.0]
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "direction",
    "angles",
    "tilt_rotation",
    "pixels_to_angles",
    "angles_to_pixels",
    "pixel_centre_angles",
    "unwrap_x",
    "polygon_area",
    "clip_halfplane",
    "clip_to_image",
    "wrap_polygon",
    "to_preview_polygon",
    "densify",
    "polygon_coverage",
    "upper_envelope",
]


# --------------------------------------------------------------------------- directions

def direction(azimuth, elevation) -> np.ndarray:
    """Unit vectors (..., 3): x towards azimuth 0, y towards azimuth 90 degrees, z up."""
    azimuth, elevation = np.broadcast_arrays(np.asarray(azimuth), np.asarray(elevation))
    cos_el = np.cos(elevation)
    return np.stack([cos_el * np.cos(azimuth), cos_el * np.sin(azimuth), np.sin(elevation)],
                    axis=-1)


def angles(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(azimuth, elevation) in radians of vectors (..., 3); azimuth in 0..2 pi."""
    azimuth = np.mod(np.arctan2(vectors[..., 1], vectors[..., 0]), 2 * np.pi)
    elevation = np.arcsin(np.clip(vectors[..., 2], -1.0, 1.0))
    return azimuth, elevation


def tilt_rotation(axis_azimuth: float, angle: float) -> np.ndarray:
    """Rotation (3, 3) from the level world to a tilted camera: ``angle`` degrees about
    the horizontal axis pointing at ``axis_azimuth`` degrees (Rodrigues' formula).

    Example:
        >>> np.round(tilt_rotation(0.0, 90.0) @ [0.0, 1.0, 0.0], 6).tolist()
        [0.0, 0.0, 1.0]
    """
    phi, theta = np.radians(axis_azimuth), np.radians(angle)
    k = np.array([np.cos(phi), np.sin(phi), 0.0])
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * cross @ cross


def pixels_to_angles(x, y, width: int, height: int):
    """(azimuth, elevation) in radians of pixel coordinates of a ``width x height`` panorama."""
    return (np.asarray(x) / width * 2 * np.pi, np.pi / 2 - np.asarray(y) / height * np.pi)


def angles_to_pixels(azimuth, elevation, width: int, height: int):
    """Pixel coordinates (x, y) of directions given as azimuth and elevation in radians."""
    return (np.asarray(azimuth) / (2 * np.pi) * width,
            (np.pi / 2 - np.asarray(elevation)) / np.pi * height)



def pixel_centre_angles(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(azimuth (W,), elevation (H,)) in radians of the pixel centres of a panorama.

    Example:
        >>> azimuth, elevation = pixel_centre_angles(2, 4)
        >>> np.degrees(azimuth).tolist(), np.degrees(elevation).tolist()
        ([45.0, 135.0, 225.0, 315.0], [45.0, -45.0])
    """
    elevation = np.pi / 2 - (np.arange(height) + 0.5) / height * np.pi
    azimuth = (np.arange(width) + 0.5) / width * 2 * np.pi
    return azimuth, elevation


def unwrap_x(x: np.ndarray, width: float) -> np.ndarray:
    """x along a path of nearby points, unwrapped: consecutive points never jump by half
    the panorama (the path may leave 0..width; :func:`wrap_polygon` brings it back).

    Example:
        >>> unwrap_x(np.array([98.0, 99.0, 1.0, 2.0]), 100.0).tolist()
        [98.0, 99.0, 101.0, 102.0]
    """
    steps = np.diff(x)
    steps -= width * np.round(steps / width)
    return x[0] + np.r_[0.0, np.cumsum(steps)]


# --------------------------------------------------------------------------- polygons

def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon (N, 2) (shoelace formula).

    Example:
        >>> polygon_area(np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 3.0]]))
        6.0
    """
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def clip_halfplane(points: list, axis: int, limit: float, keep_below: bool) -> list:
    """The part of a polygon (a list of (x, y) points) on one side of an axis-aligned line.

    Sutherland-Hodgman: keeps ``point[axis] <= limit`` when ``keep_below``, else
    ``point[axis] >= limit``; returns the clipped points (maybe fewer than 3).

    Example:
        >>> clip_halfplane([(0, 0), (4, 0), (4, 2), (0, 2)], 0, 1.0, keep_below=True)
        [(0, 0), (1.0, 0.0), (1.0, 2.0), (0, 2)]
    """
    if not points:
        return points
    out = []

    def inside(p):
        return p[axis] <= limit if keep_below else p[axis] >= limit

    previous = points[-1]
    for current in points:
        if inside(current):
            if not inside(previous):
                out.append(_intersect(previous, current, axis, limit))
            out.append(current)
        elif inside(previous):
            out.append(_intersect(previous, current, axis, limit))
        previous = current
    return out


def _intersect(a, b, axis: int, limit: float):
    t = (limit - a[axis]) / (b[axis] - a[axis])
    point = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
    point[axis] = limit
    return tuple(point)


def clip_to_image(polygon: np.ndarray, width: float, height: float) -> np.ndarray | None:
    """The part of a polygon inside ``0..width x 0..height``; None when (nearly) nothing is."""
    points = [tuple(p) for p in polygon]
    points = clip_halfplane(points, 0, 0.0, keep_below=False)
    points = clip_halfplane(points, 0, width, keep_below=True)
    points = clip_halfplane(points, 1, 0.0, keep_below=False)
    points = clip_halfplane(points, 1, height, keep_below=True)
    if len(points) < 3:
        return None
    clipped = np.array(points, dtype=np.float64)
    return clipped if polygon_area(clipped) > 1e-3 else None


def wrap_polygon(polygon: np.ndarray, width: float, height: float) -> list[np.ndarray]:
    """The parts of a polygon (x may leave 0..width) on the cylinder, clipped to the image."""
    parts = []
    for shift in (-width, 0.0, width):
        moved = polygon + np.array([shift, 0.0])
        if moved[:, 0].max() <= 0 or moved[:, 0].min() >= width:
            continue
        clipped = clip_to_image(moved, width, height)
        if clipped is not None:
            parts.append(clipped)
    return parts


def to_preview_polygon(polygon: np.ndarray) -> np.ndarray | None:
    """Full-size pixels -> preview pixels as the COCO file stores them (2 decimals).

    Repeated vertices are dropped; None when fewer than 3 remain or the area vanishes.

    Example:
        >>> to_preview_polygon(np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 0.0], [3.0, 5.0]])).tolist()
        [[0.0, 0.0], [1.5, 0.0], [1.5, 2.5]]
    """
    preview = np.round(polygon / 2.0, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    keep = np.ones(len(preview), dtype=bool)
    keep[1:] = np.any(preview[1:] != preview[:-1], axis=1)
    preview = preview[keep]
    if len(preview) > 1 and np.all(preview[0] == preview[-1]):
        preview = preview[:-1]
    if len(preview) < 3 or polygon_area(preview) < 1e-3:
        return None
    return preview



def densify(polygon: np.ndarray, step: float, closed: bool = True) -> np.ndarray:
    """Extra vertices so that no edge is longer than ``step`` pixels."""
    points = np.vstack([polygon, polygon[:1]]) if closed else polygon
    out = []
    for a, b in zip(points[:-1], points[1:], strict=True):
        count = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        t = np.arange(count)[:, None] / count
        out.append(a + (b - a) * t)
    if not closed:
        out.append(points[-1:])
    return np.vstack(out)



# --------------------------------------------------------------------------- rasterising

def polygon_coverage(polygon: np.ndarray, height: int, width: int, *,
                     subrows: int = 4) -> tuple[int, np.ndarray]:
    """Fraction of each pixel inside a polygon (anti-aliased rasterisation).

    Pixel ``(row, col)`` is the square ``[col, col + 1) x [row, row + 1)``
    (the COCO convention). The coverage is exact along each of ``subrows``
    sample lines per pixel row (even-odd rule), so edges are smooth and the
    pixels whose coverage exceeds 0.5 are those whose centre is inside, as in
    pycocotools.

    Args:
        polygon: float (N, 2) x/y vertices in pixels, N >= 3.
        height, width: the image size.
        subrows: sample lines per pixel row (1 = no vertical anti-aliasing).

    Returns:
        ``(row0, block)``: ``block`` float32 (rows, width) in 0..1 is the
        coverage of image rows ``row0 .. row0 + rows - 1``; ``rows`` may be 0.

    Example:
        >>> row0, block = polygon_coverage(np.array([[1, 1], [3, 1], [3, 2.5], [1, 2.5]]), 4, 4)
        >>> row0, block.tolist()
        (1, [[0.0, 1.0, 1.0, 0.0], [0.0, 0.5, 0.5, 0.0]])
    """
    polygon = np.asarray(polygon, dtype=np.float64)
    row0 = int(np.clip(np.floor(polygon[:, 1].min()), 0, height))
    row1 = int(np.clip(np.ceil(polygon[:, 1].max()), 0, height))
    rows = max(row1 - row0, 0)
    coverage = np.zeros((rows, width), dtype=np.float32)
    if rows == 0:
        return row0, coverage
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    sloped = y0 != y1
    x0, y0, x1, y1 = x0[sloped], y0[sloped], x1[sloped], y1[sloped]
    inverse_slope = (x1 - x0) / (y1 - y0)
    # Sample lines in chunks so that an 8K-high polygon with thousands of
    # edges never builds a gigantic (lines, edges) table at once.
    chunk = max(1, 2_000_000 // max(len(x0), 1))
    total = rows * subrows
    for first in range(0, total, chunk):
        lines = np.arange(first, min(first + chunk, total))
        ys = row0 + (lines + 0.5) / subrows
        crosses = (y0[None, :] <= ys[:, None]) != (y1[None, :] <= ys[:, None])
        line_index, edge_index = np.nonzero(crosses)
        if line_index.size == 0:
            continue
        xs = x0[edge_index] + (ys[line_index] - y0[edge_index]) * inverse_slope[edge_index]
        order = np.lexsort((xs, line_index))
        xs, line_index = np.clip(xs[order], 0.0, width), lines[line_index[order]]
        starts, ends = xs[0::2], xs[1::2]
        pixel_rows = line_index[0::2] // subrows
        _add_spans(coverage, pixel_rows, starts, ends, width)
    coverage /= subrows
    np.clip(coverage, 0.0, 1.0, out=coverage)
    return row0, coverage


def _add_spans(coverage: np.ndarray, pixel_rows, starts, ends, width: int) -> None:
    """Add the exact horizontal coverage of spans [start, end) on their rows."""
    stride = width + 1
    size = coverage.shape[0] * stride
    start_cell = np.minimum(np.floor(starts), width).astype(np.int64)
    end_cell = np.minimum(np.floor(ends), width).astype(np.int64)
    base = pixel_rows.astype(np.int64) * stride
    step = (np.bincount(base + start_cell, minlength=size)
            - np.bincount(base + end_cell, minlength=size)).astype(np.float64)
    partial = (np.bincount(base + end_cell, weights=ends - end_cell, minlength=size)
               - np.bincount(base + start_cell, weights=starts - start_cell, minlength=size))
    filled = np.cumsum(step.reshape(-1, stride), axis=1) + partial.reshape(-1, stride)
    coverage += filled[:, :width].astype(np.float32)



# --------------------------------------------------------------------------- skylines

def _wrap_piece(xs: np.ndarray, ys: np.ndarray, width: float) -> list:
    """A height-field piece on the cylinder: its parts inside 0..width."""
    parts = []
    for shift in (-width, 0.0, width):
        x = xs + shift
        if x[-1] <= 0 or x[0] >= width:
            continue
        inside = (x > 0) & (x < width)
        px, py = list(x[inside]), list(ys[inside])
        if x[0] <= 0:
            px.insert(0, 0.0)
            py.insert(0, float(np.interp(0.0, x, ys)))
        if x[-1] >= width:
            px.append(float(width))
            py.append(float(np.interp(width, x, ys)))
        if len(px) >= 2:
            parts.append((np.array(px), np.array(py)))
    return parts


def upper_envelope(pieces: list, width: float, horizon: float) -> np.ndarray:
    """Exact upper envelope (smallest y) of piecewise-linear height fields over 0..width.

    Each piece is ``(xs, ys)`` with increasing xs (x may leave 0..width: it
    wraps) and must start and end at or below the horizon (y >= horizon), as
    every silhouette stands on the ground: the envelope is then continuous and
    exact between the returned points.

    Returns float64 (N, 2) points from x = 0 to x = width, collinear points removed.
    """
    parts = [(np.array([0.0, width]), np.array([horizon, horizon]))]
    for xs, ys in pieces:
        parts.extend(_wrap_piece(xs, ys, width))
    breaks = np.unique(np.concatenate([xs for xs, _ in parts]))

    def values(at):
        return np.stack([np.interp(at, xs, ys, left=np.inf, right=np.inf) for xs, ys in parts])

    table = values(breaks)
    left, right = table[:, :-1], table[:, 1:]
    present = np.isfinite(left) & np.isfinite(right)
    with np.errstate(invalid="ignore"):
        d_left = left[:, None, :] - left[None, :, :]
        d_right = right[:, None, :] - right[None, :, :]
        crossing = present[:, None, :] & present[None, :, :] & (d_left * d_right < 0)
    a, b, interval = np.nonzero(crossing)
    keep = a < b
    a, b, interval = a[keep], b[keep], interval[keep]
    t = d_left[a, b, interval] / (d_left[a, b, interval] - d_right[a, b, interval])
    crossings = breaks[interval] + t * (breaks[interval + 1] - breaks[interval])
    xs = np.unique(np.concatenate([breaks, crossings]))
    ys = values(xs).min(axis=0)
    points = np.column_stack([xs, ys])
    # Drop points on a straight run: the polygon gets shorter, not different.
    prev, nxt = points[:-2], points[2:]
    mid = points[1:-1]
    cross = ((mid[:, 0] - prev[:, 0]) * (nxt[:, 1] - prev[:, 1])
             - (mid[:, 1] - prev[:, 1]) * (nxt[:, 0] - prev[:, 0]))
    keep = np.r_[True, np.abs(cross) > 1e-9, True]
    return points[keep]


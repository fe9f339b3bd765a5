"""A small, seeded, labelled set of synthetic HDR sky panoramas: the demo data.

``skyseg demo-data --out DIR`` writes the data the bundled demo
(``./run_pipeline.sh`` with no arguments) trains and evaluates on, in the
form real users start from::

    DIR/images/scene_000.exr    equirectangular (W = 2 H) linear radiance, half float
    DIR/previews/scene_000.jpg  half size, tonemapped: what a person labels
    DIR/result.json             Label Studio style COCO export made on the previews
    DIR/masks/scene_000.png     exact full-size truth, uint8 0/1 (for evaluation)
    DIR/train.txt, DIR/val.txt  scene names; val (~1/4, every theme) is held out
    DIR/demo.json               settings and per-scene facts (EV, sun, objects)
    DIR/README.md               what the data is

Each scene has a sky gradient (bluer at the zenith, brighter near the horizon
and the sun), a sun disc ``SUN_RATIO`` times brighter than the clear sky at its
position (at least 10,000 times the sky around it, glow included), soft
procedural clouds (clouds are sky), ground silhouettes (hills, buildings with
antennas, conifers, tree trunks) whose outline is a polygon, things inside the
sky labelled ``non-sky`` (tree crowns, power poles, sagging wires as thin
polygons, birds) and the ground below the horizon. A per-scene exposure
multiplier spreads the scenes over ``EV_RANGE`` (7 EV). Every fourth scene
(the ``seam`` theme) has its sun within a disc or two of x = 0 and an object
across the seam, so wrap-around matters.

**Labels are exact by construction.** The polygons are made first, rounded
to what the COCO file stores (preview pixels, 2 decimals), and the scene is
rendered from those very polygons, scaled by 2: sky = union of the ``sky``
polygons minus the ``non-sky`` polygons (anti-aliased by exact horizontal
coverage and ``subrows`` samples per pixel row, for the look). The truth mask
is the polygons rasterised by pycocotools at full size, exactly as a reader
of the COCO file does.

**Resume rule.** ``demo.json`` (written first) records the settings. A run
into a folder made with the same settings reuses every file that exists and
writes only missing ones (a second complete run writes nothing). Different
settings are an error unless ``overwrite=True`` (``--overwrite``), which
regenerates everything and removes scene files the new settings do not have.
A folder without ``demo.json`` is refused when it holds anything but these
outputs, and regenerated when it holds only these.

Example:
    >>> from skyseg.demo import make_demo_data
    >>> demo = make_demo_data("demo", scenes=16, width=1024, seed=0)  # doctest: +SKIP
    >>> demo.train[:2], demo.val[:1]  # doctest: +SKIP
    (['scene_000', 'scene_001'], ['scene_003'])
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError, ImageWriteError
from skyseg.io import TEMP_MARKER, write_exr, write_jpeg, write_png, write_text
from skyseg.log import display_path, logger, progress

__all__ = [
    "make_demo_data",
    "make_scene",
    "render_scene",
    "scene_mask",
    "polygon_coverage",
    "DemoData",
    "DemoScene",
    "EV_RANGE",
    "SUN_RATIO",
    "CLI_HELP",
    "add_arguments",
    "run",
]

CLI_HELP = "write a small seeded, labelled set of synthetic HDR sky panoramas (the demo data)"

#: Format of the folder; a folder written by another format is not reused.
FORMAT_VERSION = 1
DEFAULT_SCENES = 16
DEFAULT_WIDTH = 1024
DEFAULT_SEED = 0
#: Exposure (EV) of the darkest and brightest scene; scenes are spread evenly over it.
EV_RANGE = (-5.0, 2.0)
#: Sun disc radiance / clear-sky radiance at the sun's position (glow excluded).
SUN_RATIO = 3.5e4
#: Luminance of the clear horizon sky at EV 0 (close to real panoramas in camera units).
SKY_LEVEL = 0.18
#: Largest radiance written: half float ends at 65504.
MAX_RADIANCE = 60000.0
THEMES = ("town", "seam", "forest", "open")
CATEGORIES = ({"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"})

_OWN_ENTRIES = {"images", "previews", "masks", "result.json", "train.txt", "val.txt",
                "demo.json", "README.md"}
_SCENE_FILE = re.compile(r"^scene_\d{3,}\.(exr|jpg|png)$")

_ZENITH = np.array([0.20, 0.36, 0.95], np.float32)
_HORIZON = np.array([0.80, 0.88, 1.00], np.float32)
_SUN_COLOUR = np.array([1.0, 0.93, 0.82], np.float32)
_NON_SKY_COLOURS = {
    "crown": (0.05, 0.09, 0.035),
    "pole": (0.06, 0.05, 0.04),
    "wire": (0.02, 0.02, 0.02),
    "bird": (0.03, 0.03, 0.035),
}


# --------------------------------------------------------------------------- data records

@dataclass(frozen=True)
class DemoScene:
    """One synthetic scene: its labels (the truth) and what it takes to render it.

    Attributes:
        name: ``scene_NNN``.
        theme: ``"town"``, ``"seam"``, ``"forest"`` or ``"open"``.
        width, height: full size in pixels (``width == 2 * height``).
        ev: exposure of the scene; radiance is multiplied by ``2 ** ev``.
        sun_azimuth, sun_elevation, sun_radius: the sun in degrees; azimuth 0
            is x = 0, elevation 0 the horizon (row ``height / 2``).
        sky: ``sky`` polygons, float64 (N, 2) x/y in preview pixels as stored
            in the COCO file (2 decimals).
        non_sky: ``(kind, polygon)`` pairs of ``non-sky`` polygons (kind
            ``crown``, ``pole``, ``wire`` or ``bird``), preview pixels.
        ground: ``(kind, polygon, colour)`` of ground silhouettes in full-size
            pixels, painted in order under the sky (not labels).
        cloud_cover: 0 (clear) .. 1 (mostly cloudy).
        texture_seed: seed of the noise textures used by :func:`render_scene`.
    """

    name: str
    theme: str
    width: int
    height: int
    ev: float
    sun_azimuth: float
    sun_elevation: float
    sun_radius: float
    sky: tuple
    non_sky: tuple
    ground: tuple
    cloud_cover: float
    texture_seed: int

    @property
    def sun_xy(self) -> tuple[float, float]:
        """Centre of the sun disc in full-size pixel coordinates (x, y)."""
        ppd = self.width / 360.0
        return self.sun_azimuth * ppd, self.height / 2 - self.sun_elevation * ppd

    def object_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for kind, *_ in (*self.ground, *self.non_sky):
            counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items()))


@dataclass
class DemoData:
    """What :func:`make_demo_data` made or found.

    Attributes:
        out_dir: the folder.
        scenes: scene names in order.
        train, val: the split (names).
        written: files written by this call (empty when everything was reused).
        reused: files that existed and were kept.
    """

    out_dir: Path
    scenes: list[str]
    train: list[str]
    val: list[str]
    written: list[Path] = field(default_factory=list)
    reused: list[Path] = field(default_factory=list)

    @property
    def coco(self) -> Path:
        return self.out_dir / "result.json"

    @property
    def images(self) -> Path:
        return self.out_dir / "images"

    @property
    def previews(self) -> Path:
        return self.out_dir / "previews"

    @property
    def masks(self) -> Path:
        return self.out_dir / "masks"


# --------------------------------------------------------------------------- small helpers

def _smoothstep(edge0, edge1, x):
    t = np.clip((np.asarray(x, dtype=np.float32) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _luminance(rgb) -> float:
    rgb = np.asarray(rgb, dtype=np.float64)
    return float(rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722)


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _clip_halfplane(points: list, axis: int, limit: float, keep_below: bool) -> list:
    """Sutherland-Hodgman against one axis-aligned line."""
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


def _clip_to_image(polygon: np.ndarray, width: float, height: float) -> np.ndarray | None:
    points = [tuple(p) for p in polygon]
    points = _clip_halfplane(points, 0, 0.0, keep_below=False)
    points = _clip_halfplane(points, 0, width, keep_below=True)
    points = _clip_halfplane(points, 1, 0.0, keep_below=False)
    points = _clip_halfplane(points, 1, height, keep_below=True)
    if len(points) < 3:
        return None
    clipped = np.array(points, dtype=np.float64)
    return clipped if _polygon_area(clipped) > 1e-3 else None


def _wrap_polygon(polygon: np.ndarray, width: float, height: float) -> list[np.ndarray]:
    """The parts of a polygon (x may leave 0..width) on the cylinder, clipped to the image."""
    parts = []
    for shift in (-width, 0.0, width):
        moved = polygon + np.array([shift, 0.0])
        if moved[:, 0].max() <= 0 or moved[:, 0].min() >= width:
            continue
        clipped = _clip_to_image(moved, width, height)
        if clipped is not None:
            parts.append(clipped)
    return parts


def _quantize(polygon: np.ndarray) -> np.ndarray | None:
    """Full-size pixels -> preview pixels as the COCO file stores them (2 decimals)."""
    preview = np.round(polygon / 2.0, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    keep = np.ones(len(preview), dtype=bool)
    keep[1:] = np.any(preview[1:] != preview[:-1], axis=1)
    preview = preview[keep]
    if len(preview) > 1 and np.all(preview[0] == preview[-1]):
        preview = preview[:-1]
    if len(preview) < 3 or _polygon_area(preview) < 1e-3:
        return None
    return preview


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


def scene_mask(scene: DemoScene) -> np.ndarray:
    """The truth of a scene: uint8 (H, W), 1 = sky, 0 = not sky.

    The COCO polygons (preview pixels) scaled by 2 and rasterised with
    pycocotools, sky polygons minus non-sky polygons: exactly what a reader of
    ``result.json`` computes for the full-size image.
    """
    from pycocotools import mask as mask_utils

    def union(polygons) -> np.ndarray:
        if not polygons:
            return np.zeros((scene.height, scene.width), dtype=bool)
        segmentation = [(np.asarray(p) * 2.0).ravel().tolist() for p in polygons]
        rles = mask_utils.frPyObjects(segmentation, scene.height, scene.width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)

    sky = union(scene.sky) & ~union([polygon for _, polygon in scene.non_sky])
    return sky.astype(np.uint8)


# --------------------------------------------------------------------------- noise

def _value_noise(u: np.ndarray, v: np.ndarray, lattice: np.ndarray) -> np.ndarray:
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


def _fbm(u: np.ndarray, v: np.ndarray, lattices: list[np.ndarray],
         offsets: np.ndarray, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of value noise, one lattice per octave; about 0..1 around 0.5."""
    total = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave, lattice in enumerate(lattices):
        scale = 2.0 ** octave
        total += np.float32(amplitude) * _value_noise(u * scale + offsets[octave, 0],
                                                      v * scale + offsets[octave, 1], lattice)
        norm += amplitude
        amplitude *= gain
    return total / np.float32(norm)


def _upsample2(array: np.ndarray, height: int, width: int) -> np.ndarray:
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


# --------------------------------------------------------------------------- geometry

class _Builder:
    """Makes the polygons of one scene in full-size pixels (x may leave 0..W before wrapping)."""

    def __init__(self, rng: np.random.Generator, width: int):
        self.rng = rng
        self.width = width
        self.height = width // 2
        self.ppd = width / 360.0
        self.horizon = self.height / 2.0
        #: Sizes shrink with the image but never below what a mask can show.
        self.min_px = 1.2
        #: Height-field pieces (xs, ys) whose upper envelope is the skyline.
        self.pieces: list[tuple[np.ndarray, np.ndarray]] = []
        #: Ground polygons to paint: (kind, polygon, colour, layer).
        self.ground: list[tuple[str, np.ndarray, tuple]] = []
        #: Non-sky polygons: (kind, polygon).
        self.non_sky: list[tuple[str, np.ndarray]] = []
        #: Steep walls get this run so a skyline stays a function of x.
        self.slant = 0.05

    def y(self, elevation_deg):
        return self.horizon - np.asarray(elevation_deg, dtype=np.float64) * self.ppd

    def px(self, degrees: float, minimum: float | None = None) -> float:
        return max(degrees * self.ppd, self.min_px if minimum is None else minimum)

    def add_piece(self, kind: str, xs, ys, colour) -> None:
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        self.pieces.append((xs, ys))
        base = max(ys.max(), self.horizon) + 2.0
        polygon = np.column_stack([np.r_[xs, xs[-1], xs[0]], np.r_[ys, base, base]])
        self.ground.append((kind, polygon, tuple(colour)))

    # ---- ground silhouettes
    def ridge(self, kind: str, max_elevation: float, roughness: float, colour) -> None:
        rng = self.rng
        count = max(64, int(self.width / 4))
        xs = np.linspace(0.0, self.width, count + 1)
        phase = 2 * np.pi * xs / self.width
        profile = np.zeros_like(xs)
        for k in range(1, 25):
            amplitude = rng.uniform(0.3, 1.0) / k ** (1.6 - roughness)
            profile += amplitude * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        profile -= profile.min()
        profile *= max_elevation / max(profile.max(), 1e-9)
        profile += rng.uniform(-0.25, 0.1) * max_elevation
        profile[-1] = profile[0]  # periodic: the same height on both sides of the seam
        self.add_piece(kind, xs, self.y(np.maximum(profile, -0.5)), colour)

    def building(self, x0: float, *, straddle: float = 0.0) -> float:
        """A building from x0 (less ``straddle`` of its width); returns its right edge."""
        rng = self.rng
        width = self.px(rng.uniform(3.0, 9.0), 3.0)
        height = rng.uniform(4.0, 22.0)
        x0 -= straddle * width
        top, base = self.y(height), self.y(-0.3)
        s = self.slant
        x1 = x0 + width
        roof = rng.choice(["flat", "gable", "flat"])
        if roof == "gable":
            peak = self.y(height + rng.uniform(0.15, 0.45) * width / self.ppd)
            xs = [x0, x0 + s, (x0 + x1) / 2, x1 - s, x1]
            ys = [base, top, peak, top, base]
        else:
            xs, ys = [x0, x0 + s, x1 - s, x1], [base, top, top, base]
        colour = rng.choice([(0.42, 0.38, 0.33), (0.33, 0.33, 0.34), (0.45, 0.25, 0.18),
                             (0.5, 0.47, 0.4)]) * rng.uniform(0.7, 1.1)
        self.add_piece("building", xs, ys, colour)
        if roof == "flat" and rng.random() < 0.35:  # an antenna: a thin spike in the skyline
            ax = x0 + rng.uniform(0.2, 0.8) * width
            aw = self.px(0.15)
            atop = self.y(height + rng.uniform(1.5, 4.0))
            self.add_piece("antenna", [ax, ax + s, ax + aw - s, ax + aw],
                           [top + 2, atop, atop, top + 2], (0.08, 0.08, 0.08))
        return x1

    def conifer(self, xc: float) -> None:
        rng = self.rng
        half = self.px(rng.uniform(1.2, 3.0), 2.0)
        height = rng.uniform(5.0, 14.0)
        tiers = int(rng.integers(3, 6))
        base_el = -0.5
        s = self.slant
        right_x, right_y = [0.0], [height]
        for k in range(1, tiers + 1):
            d = half * k / tiers
            cone = height * (1 - k / tiers) + base_el * k / tiers
            tip = cone + rng.uniform(-0.1, 0.15) * height / tiers
            right_x.append(d)
            right_y.append(tip)
            if k < tiers:
                right_x.append(d + s)
                right_y.append(tip - rng.uniform(0.3, 0.55) * height / tiers)
        right_x, right_y = np.array(right_x), np.array(right_y)
        xs = np.r_[xc - right_x[:0:-1], xc, xc + right_x[1:]]
        ys = np.r_[right_y[:0:-1], right_y[0], right_y[1:]]
        colour = np.array([0.04, 0.08, 0.035]) * rng.uniform(0.8, 1.3)
        self.add_piece("conifer", xs, self.y(ys), colour)

    def tree(self, xc: float) -> None:
        """A trunk in the skyline and a crown labelled non-sky around its top."""
        rng = self.rng
        trunk = self.px(rng.uniform(0.4, 0.9), 1.5)
        top_el = rng.uniform(3.0, 7.0)
        s = self.slant
        top, base = self.y(top_el), self.y(-0.5)
        self.add_piece("trunk", [xc - trunk / 2, xc - trunk / 2 + s, xc + trunk / 2 - s,
                                 xc + trunk / 2], [base, top, top, base], (0.07, 0.05, 0.035))
        radius = self.px(rng.uniform(2.5, 5.5), 3.0)
        centre_y = top - 0.45 * radius
        angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
        r = np.ones_like(angles)
        for k in range(2, 7):
            r += rng.uniform(0.0, 0.07) * np.sin(k * angles + rng.uniform(0, 2 * np.pi))
        crown = np.column_stack([xc + radius * r * np.cos(angles),
                                 centre_y - 0.85 * radius * r * np.sin(angles)])
        self.non_sky.append(("crown", crown))

    # ---- things inside the sky
    def pole_line(self, x_start: float, count: int, skyline_y: Callable) -> None:
        rng = self.rng
        spacing = self.px(rng.uniform(5.0, 11.0), 6.0)
        # The tops stand out against the sky, whatever the hills behind them.
        lowest = skyline_y(x_start + spacing * np.arange(count)).min()
        ground_el = (self.horizon - lowest) / self.ppd
        top_el = max(ground_el, 0.0) + rng.uniform(5.0, 11.0)
        base_el = -rng.uniform(1.0, 4.0)
        half = self.px(0.25, 1.0) / 2 + 0.35
        arm = self.px(rng.uniform(0.8, 1.6), 3.0)
        bar = self.px(0.2)
        attach = []
        for i in range(count):
            xp = x_start + i * spacing + rng.uniform(-0.1, 0.1) * spacing
            top = self.y(top_el + rng.uniform(-0.5, 0.5))
            bar_y = top + self.px(0.5, 1.5)
            base = self.y(base_el)
            pole = np.array([
                [xp - half, base], [xp - half, bar_y + bar], [xp - arm, bar_y + bar],
                [xp - arm, bar_y], [xp - half, bar_y], [xp - half, top], [xp + half, top],
                [xp + half, bar_y], [xp + arm, bar_y], [xp + arm, bar_y + bar],
                [xp + half, bar_y + bar], [xp + half, base]])
            self.non_sky.append(("pole", pole))
            attach.append([(xp - 0.85 * arm, bar_y), (xp + 0.85 * arm, bar_y)])
        thickness = self.px(0.08, 1.5 * max(1.0, self.width / 1024))
        for left, right in zip(attach[:-1], attach[1:], strict=True):
            sag = self.px(rng.uniform(0.3, 1.4), 2.0)
            for a, b in zip(left, right, strict=True):
                self.wire(a, b, sag, thickness)

    def wire(self, a, b, sag: float, thickness: float) -> None:
        steps = max(8, int(abs(b[0] - a[0]) / 6))
        t = np.linspace(0.0, 1.0, steps + 1)
        x = a[0] + (b[0] - a[0]) * t
        y = a[1] + (b[1] - a[1]) * t + sag * 4 * t * (1 - t)
        upper = np.column_stack([x, y - thickness / 2])
        lower = np.column_stack([x, y + thickness / 2])[::-1]
        self.non_sky.append(("wire", np.vstack([upper, lower])))

    def bird(self, xc: float, yc: float) -> None:
        rng = self.rng
        span = self.px(rng.uniform(2.5, 5.0), 5.0)
        flap = rng.uniform(0.6, 1.4)
        upper = np.array([[-0.5, -0.10], [-0.25, -0.22 * flap], [0.0, -0.02],
                          [0.25, -0.22 * flap], [0.5, -0.10]])
        lower = np.array([[0.5, -0.03], [0.25, -0.22 * flap + 0.11], [0.0, 0.12],
                          [-0.25, -0.22 * flap + 0.11], [-0.5, -0.03]])
        shape = np.vstack([upper, lower]) * span
        angle = rng.uniform(-0.3, 0.3)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        self.non_sky.append(("bird", shape @ rotation.T + np.array([xc, yc])))


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


def _skyline(pieces: list, width: float, horizon: float) -> np.ndarray:
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


def _x_free(x_lo: float, x_hi: float, window: tuple[float, float], width: float) -> bool:
    """True when [x_lo, x_hi] (any x, on the cylinder) avoids the window (lo, hi)."""
    for shift in (-width, 0.0, width):
        if x_lo + shift < window[1] and x_hi + shift > window[0]:
            return False
    return True


def make_scene(name: str, rng: np.random.Generator, *, width: int, theme: str,
               ev: float) -> DemoScene:
    """Make the polygons and lighting of one scene (cheap; no pixels).

    Args:
        name: the scene's name.
        rng: its random generator (the scene depends on nothing else).
        width: full width in pixels (multiple of 4); the height is ``width / 2``.
        theme: one of :data:`THEMES`; ``"seam"`` puts the sun at x = 0.
        ev: exposure of the scene in stops.

    Returns:
        a :class:`DemoScene`.

    Example:
        >>> scene = make_scene("s", np.random.default_rng(0), width=128, theme="town", ev=0.0)
        >>> scene.height, len(scene.sky)
        (64, 1)
    """
    if theme not in THEMES:
        raise ConfigError(f"theme must be one of {THEMES}, got {theme!r}")
    b = _Builder(rng, width)
    height = b.height
    # The sun's disc is at least 1.6 pixels in radius so it survives small sizes.
    sun_radius = max(1.0, 1.6 / b.ppd)
    if theme == "seam":
        sun_azimuth = float(rng.uniform(-2.0, 2.0) * sun_radius) % 360.0
    else:
        sun_azimuth = float(rng.uniform(0.0, 360.0))
    sun_x = sun_azimuth * b.ppd
    # Nothing non-sky within this azimuth window, so the sun and its glow are clear.
    reach = (10.0 * sun_radius + 4.0) * b.ppd
    sun_window = (sun_x - reach, sun_x + reach)

    far = np.array([0.10, 0.14, 0.07]) * rng.uniform(0.7, 1.3)
    b.ridge("far_hills", rng.uniform(5.0, 25.0), rng.uniform(0.0, 0.5), far)
    if theme != "open" or rng.random() < 0.5:
        near = np.array([0.07, 0.11, 0.04]) * rng.uniform(0.7, 1.3)
        b.ridge("near_hills", rng.uniform(3.0, 10.0), rng.uniform(0.2, 0.6), near)

    def spot(span_deg: float) -> float:
        return float(rng.uniform(0, b.width)) - span_deg * b.ppd / 2

    if theme in ("town", "seam"):
        # seam: the first building straddles x = 0 (under the sun); town: anywhere.
        x = 0.0 if theme == "seam" else spot(30)
        straddle = rng.uniform(0.25, 0.75) if theme == "seam" else 0.0
        for _ in range(int(rng.integers(3, 8) if theme == "town" else rng.integers(2, 5))):
            x = b.building(x, straddle=straddle) + rng.uniform(0.0, 1.5) * b.ppd
            straddle = 0.0
    conifers = {"town": (0, 3), "seam": (1, 5), "forest": (8, 20), "open": (0, 2)}[theme]
    x = spot(40)
    for _ in range(int(rng.integers(*conifers))):
        b.conifer(x)
        x += rng.uniform(0.8, 3.5) * b.ppd
    trees = {"town": (0, 2), "seam": (1, 3), "forest": (1, 4), "open": (0, 3)}[theme]
    for _ in range(int(rng.integers(trees[0], trees[1] + 1))):
        for _attempt in range(30):
            xc = float(rng.uniform(0, b.width))
            if _x_free(xc - 6 * b.ppd, xc + 6 * b.ppd, sun_window, b.width):
                b.tree(xc)
                break

    skyline = _skyline(b.pieces, float(width), b.horizon)

    def skyline_y(x):
        return np.interp(np.mod(x, width), skyline[:, 0], skyline[:, 1])

    # The sun stands clear above everything near its azimuth (crowns included).
    near_x = np.linspace(sun_window[0], sun_window[1], 64)
    highest = skyline_y(near_x).min()
    for _, polygon in b.non_sky:
        for part in _wrap_polygon(polygon, width, height):
            if not _x_free(part[:, 0].min(), part[:, 0].max(), sun_window, width):
                highest = min(highest, part[:, 1].min())
    lowest_sun = max((b.horizon - highest) / b.ppd + 8.0 * sun_radius + 1.0, 4.0)
    sun_elevation = float(rng.uniform(lowest_sun, max(lowest_sun + 5.0, 50.0)))

    if theme in ("town", "open"):
        count = int(rng.integers(3, 6))
        across_seam = theme == "town" and rng.random() < 0.5
        for attempt in range(40):
            # Half the town scenes try to run their poles across the seam first.
            start = (-rng.uniform(0.3, 0.6) * count * 8 * b.ppd if across_seam and attempt < 5
                     else float(rng.uniform(0, width)))
            span = count * 12 * b.ppd
            if _x_free(start - 3 * b.ppd, start + span, sun_window, width):
                b.pole_line(start, count, skyline_y)
                break
    birds = {"town": (0, 3), "seam": (1, 4), "forest": (2, 6), "open": (1, 5)}[theme]
    for _ in range(int(rng.integers(birds[0], birds[1] + 1))):
        for _attempt in range(30):
            xc = float(rng.uniform(0, width))
            yc = float(b.y(rng.uniform(6.0, 35.0)))
            if (_x_free(xc - 4 * b.ppd, xc + 4 * b.ppd, sun_window, width)
                    and yc < skyline_y(xc) - 3 * b.ppd):
                b.bird(xc, yc)
                break

    sky_outline = np.vstack([[[0.0, 0.0], [float(width), 0.0]], skyline[::-1]])
    sky_outline[:, 1] = np.maximum(sky_outline[:, 1], 0.0)
    sky = [q for q in [_quantize(sky_outline)] if q is not None]
    non_sky = []
    for kind, polygon in b.non_sky:
        for part in _wrap_polygon(polygon, width, height):
            quantized = _quantize(part)
            if quantized is not None:
                non_sky.append((kind, quantized))
    ground = []
    for kind, polygon, colour in b.ground:
        for part in _wrap_polygon(polygon, width, height):
            ground.append((kind, part, colour))
    cloud_cover = float(rng.uniform(0.05, 0.85))
    return DemoScene(
        name=name, theme=theme, width=width, height=height, ev=float(ev),
        sun_azimuth=sun_azimuth, sun_elevation=sun_elevation, sun_radius=float(sun_radius),
        sky=tuple(sky), non_sky=tuple(non_sky), ground=tuple(ground),
        cloud_cover=cloud_cover, texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


# --------------------------------------------------------------------------- rendering

def _sky_colour(sin_elevation, gamma, sun_elevation_deg: float, haze: float) -> np.ndarray:
    """Clear-sky radiance at EV 0 (..., 3): blue zenith, bright horizon, brighter near the sun."""
    # float32 throughout: these are full-image arrays.
    mu = np.clip(np.asarray(sin_elevation, np.float32), 0.0, 1.0)
    gamma = np.asarray(gamma, np.float32)
    towards_horizon = ((1.0 - mu) ** np.float32(3.0 - 1.5 * haze))[..., None]
    horizon = _HORIZON * np.float32(1 - haze) + np.float32(0.95 * haze)
    colour = _ZENITH * (1 - towards_horizon) + horizon * towards_horizon
    colour = colour / np.float32(_luminance(horizon))
    brighter = 1.0 + 1.2 * np.exp(-gamma / 0.5)
    low_sun = float(np.clip(1.0 - sun_elevation_deg / 30.0, 0.0, 1.0))
    warmth = low_sun * towards_horizon[..., 0] * np.exp(-gamma / 0.8)
    tint = 1.0 + warmth[..., None] * np.array([0.45, 0.05, -0.35], np.float32)
    return (colour * (brighter[..., None] * SKY_LEVEL) * tint).astype(np.float32)


def render_scene(scene: DemoScene, *, subrows: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene from its polygons.

    Args:
        scene: from :func:`make_scene`.
        subrows: anti-aliasing sample lines per pixel row.

    Returns:
        ``(image, sky_alpha)``: float32 (H, W, 3) linear radiance (exposure
        applied, at most :data:`MAX_RADIANCE`) and float32 (H, W) in 0..1, the
        fraction of each pixel that shows sky (> 0.5 where the label says sky).

    Example:
        >>> scene = make_scene("s", np.random.default_rng(0), width=64, theme="open", ev=0.0)
        >>> image, alpha = render_scene(scene)
        >>> image.shape, alpha.shape
        ((32, 64, 3), (32, 64))
    """
    height, width = scene.height, scene.width
    rng = np.random.default_rng(scene.texture_seed)
    elevation = np.pi / 2 - (np.arange(height) + 0.5) / height * np.pi
    azimuth = (np.arange(width) + 0.5) / width * 2 * np.pi
    sun_el, sun_az = np.radians(scene.sun_elevation), np.radians(scene.sun_azimuth)
    # Angle to the sun; float32 over the image, float64 for the per-row/column terms.
    cos_gamma = ((np.sin(elevation) * np.sin(sun_el)).astype(np.float32)[:, None]
                 + (np.cos(elevation) * np.cos(sun_el)).astype(np.float32)[:, None]
                 * np.cos(azimuth - sun_az).astype(np.float32)[None, :])
    gamma = np.arccos(np.clip(cos_gamma, -1.0, 1.0))
    sin_el = np.sin(elevation)[:, None]
    radius = np.radians(scene.sun_radius)
    haze = float(rng.uniform(0.0, 0.6))

    # ---- the sky: gradient, clouds, glow, sun disc
    sky = _sky_colour(sin_el, gamma, scene.sun_elevation, haze)
    upper = height // 2
    clouds, thick = _clouds(scene, rng, upper)
    near_sun = _smoothstep(6 * radius, 14 * radius, gamma[:upper])
    clouds *= near_sun
    thick *= near_sun
    lit = SKY_LEVEL * (1.25 + 2.5 * np.exp(-gamma[:upper] / 0.35))
    # Thick cores are in their own shadow: darker and a little blue, edges bright.
    thick = thick[..., None]
    cloud_colour = (np.array([1.0, 0.98, 0.96], np.float32) * (1 - thick)
                    + np.array([0.5, 0.54, 0.62], np.float32) * thick) * lit[..., None]
    low_sun = max(0.0, 1.0 - scene.sun_elevation / 25.0)
    cloud_colour *= (1.0 + low_sun * np.array([0.25, 0.0, -0.2], np.float32))
    sky[:upper] = sky[:upper] * (1 - clouds[..., None]) + cloud_colour * clouds[..., None]
    base = _sky_colour(np.sin(sun_el), np.float32(0.0), scene.sun_elevation, haze)
    base_luminance = _luminance(base)
    glow = base_luminance * (14.0 * np.exp(-gamma / (1.5 * radius))
                             + 1.5 * np.exp(-gamma / (5.0 * radius)))
    sky += glow[..., None] * _SUN_COLOUR
    pixel_angle = np.pi / height
    edge = np.clip((radius - gamma) / pixel_angle + 0.5, 0.0, 1.0)
    limb = 1.0 - 0.5 * (1.0 - np.sqrt(np.clip(1.0 - (gamma / radius) ** 2, 0.0, 1.0)))
    disc = SUN_RATIO * base_luminance * edge * limb
    sun_colour = _SUN_COLOUR * (1.0 + low_sun * np.array([0.0, -0.1, -0.3], np.float32))
    sky += disc[..., None] * (sun_colour / np.float32(_luminance(sun_colour)))

    # ---- the ground: lit by sun and sky, painted back to front
    light = SKY_LEVEL * (2.0 + 6.0 * np.sin(sun_el))
    image = _ground_plane(scene, rng, light)
    texture = _texture(rng, height, width)
    horizon_colour = sky[upper - 1].mean(axis=0)
    for kind, polygon, colour in scene.ground:
        albedo = np.asarray(colour, np.float32)
        # Distant silhouettes fade into the horizon sky (aerial perspective).
        haze_mix = {"far_hills": 0.4, "near_hills": 0.15}.get(kind, 0.05)
        shade = _shader(kind, polygon, albedo * light * (1 - haze_mix),
                        horizon_colour * haze_mix, texture, rng, width)
        _paint(image, polygon, shade, subrows)

    # ---- the sky where the labels say sky, then the things inside it
    alpha = np.zeros((height, width), np.float32)
    for polygon in scene.sky:
        row0, block = polygon_coverage(polygon * 2.0, height, width, subrows=subrows)
        rows = slice(row0, row0 + block.shape[0])
        alpha[rows] = np.maximum(alpha[rows], block)
    image = image * (1 - alpha[..., None]) + sky * alpha[..., None]
    for kind, polygon in scene.non_sky:
        colour = np.asarray(_NON_SKY_COLOURS[kind], np.float32) * light
        shade = _shader(kind, polygon * 2.0, colour, 0.0, texture, rng, width)
        row0, block = _paint(image, polygon * 2.0, shade, subrows)
        rows = slice(row0, row0 + block.shape[0])
        alpha[rows] *= 1 - block
    image *= np.float32(2.0 ** scene.ev)
    np.clip(image, 0.0, MAX_RADIANCE, out=image)
    return image.astype(np.float32), alpha


def _clouds(scene: DemoScene, rng: np.random.Generator, rows: int):
    """Cloud density and thickness (rows, W) for the upper half, from a cloud layer."""
    height, width = scene.height, scene.width
    small_h, small_w = (rows + 1) // 2, width // 2
    elevation = np.pi / 2 - (np.arange(small_h) * 2 + 1.0) / height * np.pi
    azimuth = (np.arange(small_w) * 2 + 1.0) / width * 2 * np.pi
    sin_el, cos_el = np.sin(elevation)[:, None], np.cos(elevation)[:, None]
    # Points of a flat cloud layer seen from the ground: perspective for free, and
    # no seam at x = 0 nor pinch at the zenith.
    distance = cos_el / (sin_el + 0.04) * rng.uniform(1.2, 2.2)
    u = distance * np.cos(azimuth)[None, :]
    v = distance * np.sin(azimuth)[None, :] * rng.uniform(0.5, 1.0)
    lattices = [rng.random((64, 64), dtype=np.float32) for _ in range(6)]
    offsets = rng.uniform(0, 64, (6, 2))
    noise = _fbm(u, v, lattices, offsets, gain=0.55)
    threshold = 0.62 - 0.22 * scene.cloud_cover
    density = _smoothstep(threshold, threshold + 0.12, noise)
    thickness = _smoothstep(threshold + 0.08, threshold + 0.25, noise)
    fade = _smoothstep(np.radians(0.5), np.radians(9.0), elevation)[:, None]
    density = _upsample2(density * fade, rows, width)
    thickness = _upsample2(thickness, rows, width)
    return density.astype(np.float32), thickness.astype(np.float32)


def _ground_plane(scene, rng, light) -> np.ndarray:
    """The whole image filled with textured ground seen below the horizon."""
    height, width = scene.height, scene.width
    image = np.zeros((height, width, 3), np.float32)
    rows = height - height // 2
    # Noise at half resolution, upsampled: a quarter of the work, the same look.
    elevation = -(np.arange((rows + 1) // 2) * 2 + 1.0) / height * np.pi
    azimuth = (np.arange(width // 2) * 2 + 1.0) / width * 2 * np.pi
    depression = np.clip(-np.sin(elevation), 1e-3, 1.0)[:, None]
    distance = np.cos(elevation)[:, None] / (depression + 0.01)
    u = distance * np.cos(azimuth)[None, :] * 12.0
    v = distance * np.sin(azimuth)[None, :] * 12.0
    lattices = [rng.random((64, 64), dtype=np.float32) for _ in range(4)]
    offsets = rng.uniform(0, 64, (4, 2))
    noise = _fbm(u, v, lattices, offsets)
    # Far away the texture would alias into sparkle: fade it out towards the horizon.
    detail = _smoothstep(0.02, 0.12, depression)
    noise = _upsample2(0.5 + (noise - 0.5) * detail, rows, width)
    grass = np.array([0.09, 0.13, 0.045], np.float32) * rng.uniform(0.8, 1.2)
    soil = np.array([0.16, 0.13, 0.09], np.float32) * rng.uniform(0.8, 1.2)
    if scene.theme == "open" and rng.random() < 0.5:
        # A lake or the sea: blue-grey like the sky, the hard case below the horizon.
        grass = np.array([0.10, 0.14, 0.20], np.float32) * rng.uniform(0.8, 1.2)
        soil = np.array([0.14, 0.17, 0.22], np.float32) * rng.uniform(0.8, 1.2)
    mix = _smoothstep(0.4, 0.75, noise)[..., None]
    colour = grass * (1 - mix) + soil * mix
    colour *= (0.8 + 0.4 * noise)[..., None]
    image[height // 2:] = colour * light
    image[: height // 2] = colour[:1] * light
    return image


def _texture(rng, height: int, width: int) -> np.ndarray:
    """Fine multiplicative texture (H, W) around 1, periodic in x."""
    lattices = [rng.random((32, 128 * 2 ** k), dtype=np.float32) for k in range(3)]
    u = (np.arange(width // 2) * 2 + 1.0)[None, :] / width * 128
    v = (np.arange((height + 1) // 2) * 2 + 1.0)[:, None] / width * 128
    noise = _fbm(u, v, lattices, np.zeros((3, 2)), gain=0.6)
    return _upsample2(0.7 + 0.6 * noise, height, width).astype(np.float32)


def _shader(kind: str, polygon, colour, haze, texture, rng, width: int):
    """A function (row0, row1) -> colours (rows, W, 3) for painting one polygon."""
    if kind == "building":
        x0, x1 = polygon[:, 0].min(), polygon[:, 0].max()
        top = np.sort(polygon[:, 1])[1]
        pitch_x, pitch_y = max(3.0, width / 200), max(3.0, width / 160)
        lit = rng.random() < 0.5
        window_colour = np.array([0.9, 0.75, 0.45] if lit else [0.12, 0.13, 0.16], np.float32)

        def building(row0, row1):
            ys = (np.arange(row0, row1) + 0.5)[:, None]
            xs = (np.arange(width) + 0.5)[None, :]
            windows = ((np.mod(xs - x0 - pitch_x * 0.6, pitch_x) < pitch_x * 0.5)
                       & (np.mod(ys - top - pitch_y * 0.7, pitch_y) < pitch_y * 0.55)
                       & (xs > x0 + pitch_x * 0.5) & (xs < x1 - pitch_x * 0.5)
                       & (ys > top + pitch_y * 0.6))
            out = np.broadcast_to(colour, (row1 - row0, width, 3)).copy()
            out[windows] = window_colour * colour.max() * (1.5 if lit else 1.0)
            return out * texture[row0:row1, :, None] + haze
        return building

    def flat(row0, row1):
        return colour * texture[row0:row1, :, None] + haze
    return flat


def _paint(image: np.ndarray, polygon: np.ndarray, shade, subrows: int):
    """Composite ``shade`` over ``image`` where the polygon covers it; returns the coverage."""
    height, width = image.shape[:2]
    row0, block = polygon_coverage(polygon, height, width, subrows=subrows)
    if block.shape[0]:
        rows = slice(row0, row0 + block.shape[0])
        weight = block[..., None]
        image[rows] = image[rows] * (1 - weight) + shade(row0, row0 + block.shape[0]) * weight
    return row0, block


# --------------------------------------------------------------------------- the stage

def _check_settings(scenes, width, seed) -> None:
    if isinstance(scenes, bool) or not isinstance(scenes, (int, np.integer)) or scenes < 1:
        raise ConfigError(f"--scenes must be a positive whole number, got {scenes!r}")
    if scenes > 10_000:
        raise ConfigError(f"--scenes {scenes} is more than a demo needs; use at most 10000")
    if (isinstance(width, bool) or not isinstance(width, (int, np.integer))
            or width < 64 or width % 4 or width > 16384):
        raise ConfigError(
            f"--width must be a multiple of 4 from 64 to 16384 (height = width / 2, previews "
            f"half size), got {width!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"--seed must be a whole number >= 0, got {seed!r}")


def _plan(scenes: int, width: int, seed: int):
    """Everything but pixels: scene records, split, upload prefixes, metadata."""
    rng = np.random.default_rng([seed, 0])
    if scenes == 1:
        evs = np.array([float(np.mean(EV_RANGE))])
    else:
        evs = rng.permutation(np.linspace(EV_RANGE[0], EV_RANGE[1], scenes))
    prefixes = [f"{int(value):08x}" for value in rng.integers(0, 2**32, scenes)]
    names = [f"scene_{index:03d}" for index in range(scenes)]
    records = [make_scene(name, np.random.default_rng([seed, 1, index]), width=width,
                          theme=THEMES[index % len(THEMES)], ev=float(evs[index]))
               for index, name in enumerate(names)]
    # Held out: one scene from each run of consecutive scenes, the themes taken in
    # turn, so that val has every theme (and train too) once there are 8 scenes.
    val_count = 0 if scenes < 2 else max(1, round(scenes / 4))
    offset = int(rng.integers(0, len(THEMES)))
    picks = []
    for run, chunk in enumerate(np.array_split(np.arange(scenes), max(val_count, 1))):
        if not val_count:
            break
        wanted = THEMES[(run + offset) % len(THEMES)]
        fits = [int(i) for i in chunk if records[i].theme == wanted]
        picks.append(fits[0] if fits else int(chunk[(run + offset) % len(chunk)]))
    val = [names[i] for i in picks]
    train = [name for name in names if name not in set(val)]
    return records, prefixes, train, val


def _coco(records: list[DemoScene], prefixes: list[str]) -> dict:
    images, annotations = [], []
    for image_id, (scene, prefix) in enumerate(zip(records, prefixes, strict=True)):
        images.append({"id": image_id, "width": scene.width // 2, "height": scene.height // 2,
                       "file_name": f"images/{prefix}-{scene.name}.jpg"})
        labelled = [(1, p) for p in scene.sky] + [(2, p) for _, p in scene.non_sky]
        for category, polygon in labelled:
            x_min, y_min = polygon.min(axis=0)
            x_max, y_max = polygon.max(axis=0)
            annotations.append({
                "id": len(annotations), "image_id": image_id, "category_id": category,
                "segmentation": [[float(v) for v in polygon.ravel()]],
                "bbox": [round(float(x_min), 2), round(float(y_min), 2),
                         round(float(x_max - x_min), 2), round(float(y_max - y_min), 2)],
                "ignore": 0, "iscrowd": 0, "area": round(_polygon_area(polygon), 2),
            })
    return {
        "info": {"description": "skyseg demo-data: synthetic HDR sky panoramas, labelled on "
                                "half-size previews", "version": "1.0"},
        "categories": [dict(c) for c in CATEGORIES],
        "images": images,
        "annotations": annotations,
    }


def _metadata(records, train, val, settings) -> dict:
    scenes = []
    for scene in records:
        x, y = scene.sun_xy
        scenes.append({
            "name": scene.name, "split": "val" if scene.name in val else "train",
            "theme": scene.theme, "ev": round(scene.ev, 4),
            "sun": {"azimuth_deg": round(scene.sun_azimuth, 4),
                    "elevation_deg": round(scene.sun_elevation, 4),
                    "radius_deg": round(scene.sun_radius, 4),
                    "x": round(x, 3), "y": round(y, 3),
                    "radius_px": round(scene.sun_radius * scene.width / 360.0, 3)},
            "cloud_cover": round(scene.cloud_cover, 3),
            "objects": scene.object_counts(),
        })
    return {"generator": "skyseg demo-data", "format": FORMAT_VERSION, "settings": settings,
            "train": train, "val": val, "scenes": scenes}


_README = """# skyseg demo data

Synthetic, labelled HDR sky panoramas made by `skyseg demo-data` ({scenes} scenes,
{width}x{height}, seed {seed}). Same settings, same bytes.

- `images/scene_NNN.exr`: equirectangular (width = 2 x height, horizon at mid-height,
  azimuth 0 at x = 0) linear radiance, RGB half float. A sun disc {sun:,.0f} times the clear
  sky at its position with a glow, a sky gradient, soft clouds (clouds are sky), hills,
  buildings, trees, power poles with wires and birds, ground below the horizon. Each
  scene has its own exposure, {ev_lo:+.1f} to {ev_hi:+.1f} EV. Every fourth scene has the sun
  at the x = 0 seam.
- `previews/scene_NNN.jpg`: half-size tonemapped previews, what a person labels.
- `result.json`: Label Studio style COCO export made on the previews (`file_name`
  with an upload prefix, e.g. `images/1a2b3c4d-scene_000.jpg`). Categories `sky` (1)
  and `non-sky` (2); mask = union of sky polygons minus non-sky polygons. Polygons are
  in preview pixels: multiply by 2 for the EXR.
- `masks/scene_NNN.png`: full-size truth (0 = not sky, 1 = sky), the polygons
  rasterised with pycocotools. The scenes were rendered from these very polygons, so
  the labels are exact.
- `train.txt`, `val.txt`: the split ({n_train} / {n_val} scenes; val is held out).
- `demo.json`: settings and per-scene facts (exposure, sun position, objects).
"""


def _write_if_changed(path: Path, text: str, result: DemoData) -> None:
    if path.is_file() and path.read_bytes() == text.encode("utf-8"):
        result.reused.append(path)
        return
    write_text(path, text)
    result.written.append(path)


def _prepare_folder(out_dir: Path, settings: dict, overwrite: bool) -> bool:
    """Check the folder against the settings; returns True when files must be regenerated."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ImageWriteError(f"--out {out_dir}: is a file, not a folder; choose another --out")
    meta_path = out_dir / "demo.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            same = (meta.get("format") == FORMAT_VERSION and meta.get("settings") == settings)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            meta, same = {}, False
        if not same and not overwrite:
            before = meta.get("settings") if isinstance(meta, dict) else None
            raise ConfigError(
                f"--out {out_dir} holds demo data made with other settings ({before}, format "
                f"{meta.get('format') if isinstance(meta, dict) else '?'}) than now ({settings}, "
                f"format {FORMAT_VERSION}); use the same settings, another --out folder, or "
                "--overwrite to regenerate it"
            )
        return overwrite
    leftovers = False
    if out_dir.is_dir():
        entries = [p.name for p in out_dir.iterdir()]
        foreign = sorted(name for name in entries if name not in _OWN_ENTRIES)
        # Our files without the demo.json written first: made by unknown settings.
        leftovers = bool(entries)
        if foreign:
            raise ConfigError(
                f"--out {out_dir} is not empty and is not a demo-data folder (no demo.json; "
                f"found {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                "choose a new or empty folder"
            )
    try:
        for folder in (out_dir, out_dir / "images", out_dir / "previews", out_dir / "masks"):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(
            f"--out {out_dir}: cannot create the folder ({exc.strerror or exc}); choose a "
            "writable --out"
        ) from exc
    return overwrite or leftovers


def _tidy(out_dir: Path, names: set[str], remove_stale: bool) -> None:
    """Remove temporary files of a killed run (and, on overwrite, scenes no longer made)."""
    for sub in ("images", "previews", "masks"):
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            stale = (remove_stale and _SCENE_FILE.match(path.name)
                     and path.name.rsplit(".", 1)[0] not in names)
            if (path.name.startswith(".") and TEMP_MARKER in path.name) or stale:
                path.unlink()


def make_demo_data(out_dir: str | os.PathLike, *, scenes: int = DEFAULT_SCENES,
                   width: int = DEFAULT_WIDTH, seed: int = DEFAULT_SEED,
                   overwrite: bool = False) -> DemoData:
    """Write the labelled synthetic HDR demo set into ``out_dir`` (see the module doc).

    Args:
        out_dir: the folder (created if missing).
        scenes: number of scenes.
        width: full width in pixels, a multiple of 4 (height = width / 2;
            previews are half size).
        seed: everything follows from it; same settings -> identical bytes.
        overwrite: regenerate into a folder made with any settings.

    Returns:
        a :class:`DemoData` with the names, the split and what was written.

    Raises:
        ConfigError: a setting out of range; ``out_dir`` holds demo data made
            with other settings (without ``overwrite``) or other files.
        ImageWriteError: ``out_dir`` cannot be created or written.

    Example:
        >>> demo = make_demo_data("demo", scenes=3, width=128, seed=1)  # doctest: +SKIP
        >>> sorted(p.name for p in demo.images.iterdir())  # doctest: +SKIP
        ['scene_000.exr', 'scene_001.exr', 'scene_002.exr']
    """
    from skyseg.previews import make_preview

    _check_settings(scenes, width, seed)
    scenes, width, seed = int(scenes), int(width), int(seed)
    out_dir = Path(out_dir)
    settings = {"scenes": scenes, "width": width, "height": width // 2, "seed": seed}
    regenerate = _prepare_folder(out_dir, settings, overwrite)
    records, prefixes, train, val = _plan(scenes, width, seed)
    names = [scene.name for scene in records]
    result = DemoData(out_dir=out_dir, scenes=names, train=train, val=val)
    metadata = _metadata(records, train, val, settings)
    # demo.json first: a killed run leaves a folder the next run recognises and finishes.
    _write_if_changed(out_dir / "demo.json", json.dumps(metadata, indent=1) + "\n", result)
    for folder in ("images", "previews", "masks"):
        (out_dir / folder).mkdir(exist_ok=True)
    _tidy(out_dir, set(names), remove_stale=regenerate)

    for scene in progress(records, desc="demo-data", unit="scene"):
        exr = out_dir / "images" / f"{scene.name}.exr"
        preview = out_dir / "previews" / f"{scene.name}.jpg"
        mask_path = out_dir / "masks" / f"{scene.name}.png"
        if regenerate or not exr.is_file():
            image, _ = render_scene(scene)
            write_exr(exr, image)
            result.written.append(exr)
            del image
        else:
            result.reused.append(exr)
        if regenerate or not preview.is_file():
            # Exactly what `skyseg previews --max-size W/2` makes of the EXR.
            write_jpeg(preview, make_preview(exr, max_size=width // 2))
            result.written.append(preview)
        else:
            result.reused.append(preview)
        if regenerate or not mask_path.is_file():
            write_png(mask_path, scene_mask(scene))
            result.written.append(mask_path)
        else:
            result.reused.append(mask_path)

    coco = json.dumps(_coco(records, prefixes), separators=(",", ":")) + "\n"
    outputs = {
        "result.json": coco,
        "train.txt": "".join(f"{name}\n" for name in train),
        "val.txt": "".join(f"{name}\n" for name in val),
        "README.md": _README.format(scenes=scenes, width=width, height=width // 2, seed=seed,
                                    sun=SUN_RATIO, ev_lo=EV_RANGE[0], ev_hi=EV_RANGE[1],
                                    n_train=len(train), n_val=len(val)),
    }
    for name, text in outputs.items():
        if regenerate and (out_dir / name).is_file():
            (out_dir / name).unlink()
        _write_if_changed(out_dir / name, text, result)
    logger.info("demo-data: %d scenes (%d train, %d val) %dx%d in %s: %d files written, "
                "%d reused", scenes, len(train), len(val), width, width // 2,
                display_path(out_dir), len(result.written), len(result.reused))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for images/, previews/, masks/, result.json, train.txt, "
                             "val.txt")
    parser.add_argument("--scenes", type=int, default=DEFAULT_SCENES, help="number of scenes")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH,
                        help="panorama width in pixels, a multiple of 4 (height = width / 2)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="random seed; the same settings give identical files")
    parser.add_argument("--overwrite", action="store_true",
                        help="regenerate everything, also into a folder made with other "
                             "settings; without it existing files are reused and a folder "
                             "made with other settings is refused")


def run(args: argparse.Namespace) -> int:
    demo = make_demo_data(args.out, scenes=args.scenes, width=args.width, seed=args.seed,
                          overwrite=args.overwrite)
    logger.info("images   %s", display_path(demo.images))
    logger.info("previews %s", display_path(demo.previews))
    logger.info("labels   %s (COCO, on the previews)", display_path(demo.coco))
    logger.info("masks    %s", display_path(demo.masks))
    logger.info("split    %s, %s", display_path(demo.out_dir / "train.txt"),
                display_path(demo.out_dir / "val.txt"))
    return 0

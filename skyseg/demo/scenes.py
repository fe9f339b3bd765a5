"""Synthetic labelled HDR panoramas: the scenes of the demo data, and how they are drawn.

:func:`make_scene` makes the polygons and lighting of one scene (no pixels),
:func:`render_scene` draws it (linear radiance), :func:`scene_mask` is its
truth. :mod:`skyseg.demo.synthetic` writes a seeded set of them as a dataset. Rooms are
drawn by :mod:`skyseg.demo.rooms`; both draw with :mod:`skyseg.demo.geometry` and
:mod:`skyseg.demo.painting` into a :class:`~skyseg.demo.records.DemoScene`.

The demo teaches what sky is, not where it usually is, so the scene kinds
(``theme``) vary appearance and context:

- ``town``, ``seam``, ``forest``, ``open``: clear or partly cloudy day skies
  over hills, buildings, trees, with poles, wires, tree crowns and birds
  labelled ``non-sky`` inside the sky; ``seam`` has its sun at x = 0.
- ``cloudy``: skies nearly filled with clouds (clouds are sky), the sun in a gap.
- ``overcast``: a white-grey sky without sun over white buildings: sky and
  building have similar colours, only context tells them apart.
- ``lake``: water below the horizon reflecting the sky (bright, blue, sun
  glitter included), labelled not sky.
- ``tilted``: a camera that is not level: the horizon becomes a sine wave
  across the panorama, and ridges stand from a few to 40 degrees high.
- ``night``: a dark sky (stars, the moon, city skyglow) over lit buildings and
  street lamps; the dark sky is sky.
- ``indoor``: rooms seen from inside (bright ceilings, lamps and softboxes,
  white walls, doors, pictures); only the sky seen through a window is sky.

Every scene's radiance is at its own exposure (``2 ** ev``); a visible sun is
``SUN_RATIO`` times the clear sky at its position (at least 10,000 times the
sky around it, glow included).

**Labels are exact by construction.** The polygons are made first, rounded
to what the COCO file stores (preview pixels, 2 decimals), and the scene is
rendered from those very polygons, scaled by 2: sky = union of the ``sky``
polygons minus the ``non-sky`` polygons (anti-aliased by exact horizontal
coverage and ``subrows`` samples per pixel row). A tilted scene is rendered
level and resampled to the tilted camera while its polygons are mapped
vertex by vertex (edges subdivided to a few pixels), so there the rendered
sky and the label agree to within a pixel along the edges.

Example:
    >>> scene = make_scene("s", np.random.default_rng(0), width=128, theme="indoor", ev=0.0)
    >>> image, sky_alpha = render_scene(scene)
    >>> image.shape, bool(scene_mask(scene).mean() < 0.2)
    ((64, 128, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from skyseg.demo.geometry import (
    angles,
    angles_to_pixels,
    densify,
    direction,
    pixel_centre_angles,
    pixels_to_angles,
    polygon_coverage,
    tilt_rotation,
    to_preview_polygon,
    unwrap_x,
    upper_envelope,
    wrap_polygon,
)
from skyseg.demo.painting import (
    SKY_LEVEL,
    colour_luminance,
    fbm,
    paint_non_sky,
    paint_polygon,
    sky_alpha,
    sky_colour,
    smoothstep,
    sun_disc,
    upsample2,
)
from skyseg.demo.records import OUTDOOR_THEMES, THEMES, DemoScene
from skyseg.demo.rooms import make_room_scene, render_room
from skyseg.errors import ConfigError

__all__ = [
    "DemoScene",
    "make_scene",
    "render_scene",
    "scene_mask",
    "polygon_coverage",
    "tilt_rotation",
    "EV_RANGE",
    "SUN_RATIO",
    "SKY_LEVEL",
    "MAX_RADIANCE",
    "THEMES",
    "OUTDOOR_THEMES",
]

#: Exposure (EV) of the darkest and brightest scene; scenes are spread evenly over it.
EV_RANGE = (-5.0, 2.0)
#: Sun disc radiance / clear-sky radiance at the sun's position (glow excluded).
SUN_RATIO = 3.5e4
#: Night sky at the zenith relative to SKY_LEVEL (about 7 stops darker).
NIGHT_LEVEL = 2.0 ** -7
#: Moon disc radiance / night sky radiance at its position.
MOON_RATIO = 3000.0
#: Largest radiance written: half float ends at 65504.
MAX_RADIANCE = 60000.0
_SUN_COLOUR = np.array([1.0, 0.93, 0.82], np.float32)
_NON_SKY_COLOURS = {
    "crown": (0.05, 0.09, 0.035),
    "pole": (0.06, 0.05, 0.04),
    "wire": (0.02, 0.02, 0.02),
    "bird": (0.03, 0.03, 0.035),
}
#: Emitters inside the sky (street lamps at night): radiance relative to SKY_LEVEL.
_LAMP_RADIANCE = np.array([3.0, 2.3, 1.3], np.float32)


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
        #: "earth" (brick, concrete) or "white" (white and light grey facades).
        self.building_palette = "earth"
        #: Buildings are up to this many times taller than the classic ones.
        self.tall = 1.0
        #: Street lamps (non-sky emitters) on the poles.
        self.lamps = False
        #: Conifers are this many times taller (a forest seen from inside it).
        self.tree_scale = 1.0

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
        height = rng.uniform(4.0, 22.0) * (rng.uniform(1.0, self.tall) if self.tall > 1 else 1)
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
        if self.building_palette == "white":
            colour = np.array([0.86, 0.86, 0.84]) * rng.uniform(0.7, 1.0) * rng.uniform(
                0.95, 1.05, 3)
        else:
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
        half = self.px(rng.uniform(1.2, 3.0) * (1 + 0.6 * (self.tree_scale - 1)), 2.0)
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
        self.add_piece("conifer", xs, self.y(ys * self.tree_scale), colour)

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
        turns = np.linspace(0, 2 * np.pi, 36, endpoint=False)
        r = np.ones_like(turns)
        for k in range(2, 7):
            r += rng.uniform(0.0, 0.07) * np.sin(k * turns + rng.uniform(0, 2 * np.pi))
        crown = np.column_stack([xc + radius * r * np.cos(turns),
                                 centre_y - 0.85 * radius * r * np.sin(turns)])
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
            if self.lamps:  # a street lamp hanging under the arm
                lamp = self.px(0.5, 2.0)
                lamp_y = bar_y + bar + lamp * 0.6
                self.non_sky.append(("lamp", np.array([
                    [xp + arm - lamp, bar_y + bar], [xp + arm, bar_y + bar],
                    [xp + arm, lamp_y], [xp + arm - lamp, lamp_y]])))
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
        theme: one of :data:`THEMES` (see the module doc); ``"seam"`` puts the sun at x = 0.
        ev: exposure of the scene in stops.

    Returns:
        a :class:`DemoScene`.

    Raises:
        ConfigError: an unknown theme.

    Example:
        >>> scene = make_scene("s", np.random.default_rng(0), width=128, theme="town", ev=0.0)
        >>> scene.height, len(scene.sky)
        (64, 1)
    """
    if theme not in THEMES:
        raise ConfigError(f"theme must be one of {THEMES}, got {theme!r}")
    if theme == "indoor":
        return make_room_scene(name, rng, width=width, ev=ev)
    # Every draw from rng below happens in this order: the scene depends on nothing else.
    content = _content(theme, rng)
    b = _builder(theme, rng, width)
    # The sun's disc is at least 1.6 pixels in radius so it survives small sizes.
    sun_radius = max(1.0, 1.6 / b.ppd)
    sun_azimuth, sun_window = _sun_azimuth(theme, rng, b, sun_radius)
    _add_hills(b, theme, content)
    _add_buildings(b, theme, content)
    _add_trees(b, theme, content, sun_window)
    skyline = upper_envelope(b.pieces, float(width), b.horizon)

    def skyline_y(x):
        return np.interp(np.mod(x, width), skyline[:, 0], skyline[:, 1])

    sun_elevation = _sun_elevation(b, skyline_y, sun_window, sun_radius)
    _add_poles(b, content, sun_window, skyline_y)
    _add_birds(b, theme, content, sun_window, skyline_y)
    tilt = (0.0, 0.0)
    if theme == "tilted":
        tilt = (float(rng.uniform(0.0, 360.0)), float(rng.uniform(6.0, 20.0)))
    sky, non_sky, level_labels = _labels(b, skyline, tilt)
    ground = tuple((kind, part, colour) for kind, polygon, colour in b.ground
                   for part in wrap_polygon(polygon, width, b.height))
    cover_range = {"cloudy": (1.2, 1.5), "overcast": (0.0, 0.0), "night": (0.0, 0.5)}
    cloud_cover = float(rng.uniform(*cover_range.get(theme, (0.05, 0.85))))
    water = float(rng.uniform(10.0, 35.0)) if theme == "lake" else 0.0
    return DemoScene(
        name=name, theme=theme, width=width, height=b.height, ev=float(ev),
        sun_azimuth=sun_azimuth, sun_elevation=sun_elevation, sun_radius=float(sun_radius),
        sky=sky, non_sky=non_sky, ground=ground,
        cloud_cover=cloud_cover, texture_seed=int(rng.integers(0, 2**31 - 1)),
        tilt=tilt, water=water, level_labels=level_labels,
    )


def _content(theme: str, rng: np.random.Generator) -> str:
    """What stands under the sky: a classic theme's, or the one a newer theme borrows."""
    content = {"overcast": "town", "night": "town", "lake": "open"}.get(theme, theme)
    if theme in ("cloudy", "tilted"):
        content = str(rng.choice(["town", "open", "forest"] if theme == "cloudy"
                                 else ["town", "open"]))
    return content


def _builder(theme: str, rng: np.random.Generator, width: int) -> _Builder:
    """A builder styled for the theme: white tall buildings when overcast, lamps at night."""
    b = _Builder(rng, width)
    if theme == "overcast":
        b.building_palette = "white"
        b.tall = 1.6
    if theme == "night":
        b.lamps = True
    return b


def _sun_azimuth(theme: str, rng: np.random.Generator, b: _Builder, sun_radius: float):
    """The sun's azimuth (degrees) and the x window around it kept free of non-sky things."""
    if theme == "seam":
        sun_azimuth = float(rng.uniform(-2.0, 2.0) * sun_radius) % 360.0
    else:
        sun_azimuth = float(rng.uniform(0.0, 360.0))
    sun_x = sun_azimuth * b.ppd
    # Nothing non-sky within this azimuth window, so the sun and its glow are clear.
    reach = (10.0 * sun_radius + 4.0) * b.ppd
    return sun_azimuth, (sun_x - reach, sun_x + reach)


def _add_hills(b: _Builder, theme: str, content: str) -> None:
    """Far hills (up to 40 degrees for a tilted camera), and near hills."""
    rng = b.rng
    far = np.array([0.10, 0.14, 0.07]) * rng.uniform(0.7, 1.3)
    # Tilted cameras also see skylines from a few degrees (a plain) to 40 (mountains) high.
    far_height = rng.uniform(2.0, 40.0) if theme == "tilted" else rng.uniform(5.0, 25.0)
    b.ridge("far_hills", far_height, rng.uniform(0.0, 0.5), far)
    if content != "open" or rng.random() < 0.5:
        near = np.array([0.07, 0.11, 0.04]) * rng.uniform(0.7, 1.3)
        b.ridge("near_hills", rng.uniform(3.0, 10.0), rng.uniform(0.2, 0.6), near)


def _spot(b: _Builder, span_deg: float) -> float:
    """A random x where a row of things ``span_deg`` degrees wide may start."""
    return float(b.rng.uniform(0, b.width)) - span_deg * b.ppd / 2


def _add_buildings(b: _Builder, theme: str, content: str) -> None:
    """A row of buildings; in a ``seam`` scene the first straddles x = 0 (under the sun)."""
    rng = b.rng
    if content not in ("town", "seam"):
        return
    x = 0.0 if content == "seam" else _spot(b, 30)
    straddle = rng.uniform(0.25, 0.75) if content == "seam" else 0.0
    many = (5, 12) if theme in ("overcast", "night") else (3, 8)
    for _ in range(int(rng.integers(*many) if content == "town" else rng.integers(2, 5))):
        x = b.building(x, straddle=straddle) + rng.uniform(0.0, 1.5) * b.ppd
        straddle = 0.0


def _add_trees(b: _Builder, theme: str, content: str, sun_window) -> None:
    """Conifers in a row (a forest around the camera, sometimes), then round trees away
    from the sun."""
    rng = b.rng
    conifers = {"town": (0, 3), "seam": (1, 5), "forest": (8, 20), "open": (0, 2)}[content]
    x = _spot(b, 40)
    if theme == "forest" and rng.random() < 0.5:
        # Standing in the forest: tall trees all around, sky between their tops.
        conifers = (25, 45)
        x = _spot(b, 360)
    for index in range(int(rng.integers(*conifers))):
        b.tree_scale = rng.uniform(2.0, 4.5) if conifers[0] >= 25 and index % 2 else 1.0
        b.conifer(x)
        x += rng.uniform(0.8, 3.5) * b.ppd * (2.5 if conifers[0] >= 25 else 1.0)
    b.tree_scale = 1.0
    trees = {"town": (0, 2), "seam": (1, 3), "forest": (1, 4), "open": (0, 3)}[content]
    for _ in range(int(rng.integers(trees[0], trees[1] + 1))):
        for _attempt in range(30):
            xc = float(rng.uniform(0, b.width))
            if _x_free(xc - 6 * b.ppd, xc + 6 * b.ppd, sun_window, b.width):
                b.tree(xc)
                break


def _sun_elevation(b: _Builder, skyline_y: Callable, sun_window, sun_radius: float) -> float:
    """An elevation (degrees) where the sun stands clear above everything near its azimuth
    (tree crowns included)."""
    near_x = np.linspace(sun_window[0], sun_window[1], 64)
    highest = skyline_y(near_x).min()
    for _, polygon in b.non_sky:
        for part in wrap_polygon(polygon, b.width, b.height):
            if not _x_free(part[:, 0].min(), part[:, 0].max(), sun_window, b.width):
                highest = min(highest, part[:, 1].min())
    lowest_sun = max((b.horizon - highest) / b.ppd + 8.0 * sun_radius + 1.0, 4.0)
    return float(b.rng.uniform(lowest_sun, max(lowest_sun + 5.0, 50.0)))


def _add_poles(b: _Builder, content: str, sun_window, skyline_y: Callable) -> None:
    """A line of poles with wires, clear of the sun (half the towns across the seam)."""
    rng, width = b.rng, b.width
    if content not in ("town", "open"):
        return
    count = int(rng.integers(3, 6))
    across_seam = content == "town" and rng.random() < 0.5
    for attempt in range(40):
        # Half the town scenes try to run their poles across the seam first.
        start = (-rng.uniform(0.3, 0.6) * count * 8 * b.ppd if across_seam and attempt < 5
                 else float(rng.uniform(0, width)))
        span = count * 12 * b.ppd
        if _x_free(start - 3 * b.ppd, start + span, sun_window, width):
            b.pole_line(start, count, skyline_y)
            break


def _add_birds(b: _Builder, theme: str, content: str, sun_window,
               skyline_y: Callable) -> None:
    """Birds in the sky, clear of the sun and above the skyline (none at night)."""
    rng, width = b.rng, b.width
    birds = {"town": (0, 3), "seam": (1, 4), "forest": (2, 6), "open": (1, 5)}[content]
    if theme == "night":
        birds = (0, 0)
    for _ in range(int(rng.integers(birds[0], birds[1] + 1))):
        for _attempt in range(30):
            xc = float(rng.uniform(0, width))
            yc = float(b.y(rng.uniform(6.0, 35.0)))
            if (_x_free(xc - 4 * b.ppd, xc + 4 * b.ppd, sun_window, width)
                    and yc < skyline_y(xc) - 3 * b.ppd):
                b.bird(xc, yc)
                break


def _labels(b: _Builder, skyline: np.ndarray, tilt: tuple[float, float]):
    """``(sky, non_sky, level_labels)`` of a :class:`DemoScene`: the sky above the skyline
    and the non-sky things, as the (maybe tilted) camera sees them, in preview pixels."""
    width, height = b.width, b.height
    sky_outline = np.vstack([[[0.0, 0.0], [float(width), 0.0]], skyline[::-1]])
    sky_outline[:, 1] = np.maximum(sky_outline[:, 1], 0.0)
    level_labels = ()
    if tilt[1]:
        level_labels = (tuple(wrap_polygon(sky_outline, width, height)),
                        tuple((kind, part) for kind, polygon in b.non_sky
                              for part in wrap_polygon(polygon, width, height)))
        rotation = tilt_rotation(*tilt)
        sky_parts = _tilt_sky(skyline, rotation, width)
        objects = [(kind, part) for kind, polygon in b.non_sky
                   for part in _tilt_polygon(polygon, rotation, width)]
    else:
        sky_parts = [sky_outline]
        objects = [(kind, part) for kind, polygon in b.non_sky
                   for part in wrap_polygon(polygon, width, height)]
    sky = [q for q in (to_preview_polygon(part) for part in sky_parts) if q is not None]
    non_sky = [(kind, q) for kind, q in ((kind, to_preview_polygon(part))
                                         for kind, part in objects) if q is not None]
    return tuple(sky), tuple(non_sky), level_labels


def _map_points(points: np.ndarray, rotation: np.ndarray, width: int) -> np.ndarray:
    """Level-frame pixel coordinates -> the tilted camera's, x unwrapped along the path."""
    height = width // 2
    azimuth, elevation = pixels_to_angles(points[:, 0], points[:, 1], width, height)
    camera = direction(azimuth, elevation) @ rotation.T
    x, y = angles_to_pixels(*angles(camera), width, height)
    return np.column_stack([unwrap_x(x, width), y])


def _tilt_polygon(polygon: np.ndarray, rotation: np.ndarray, width: int) -> list[np.ndarray]:
    """A level-frame polygon (small, away from the poles) as the tilted camera sees it."""
    mapped = _map_points(densify(polygon, 3.0), rotation, width)
    return wrap_polygon(mapped, width, width // 2)


def _tilt_sky(skyline: np.ndarray, rotation: np.ndarray, width: int) -> list[np.ndarray]:
    """The sky above a level-frame skyline (x from 0 to width) seen by the tilted camera.

    The tilt is smaller than 90 degrees minus the highest skyline, so every
    camera column still meets the skyline once or more with sky above it; the
    outline is the mapped skyline closed along the camera's top row.
    """
    mapped = _map_points(densify(skyline, 3.0, closed=False), rotation, width)
    if mapped[-1, 0] < mapped[0, 0]:  # the map may reverse x (turned around): keep it left to right
        mapped = mapped[::-1]
    start, end = mapped[0], mapped[-1]
    outline = np.vstack([mapped, [[end[0], 0.0], [start[0], 0.0]]])
    return wrap_polygon(outline, width, width // 2)


# --------------------------------------------------------------------------- rendering

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
    if scene.theme == "indoor":
        image, alpha = render_room(scene, subrows=subrows)
    else:
        tilted = bool(scene.tilt[1])
        image, alpha, sun = _render_level(scene, subrows, with_disc=not tilted)
        if tilted:
            image, alpha = _tilt_image(scene, image, alpha, sun)
    image *= np.float32(2.0 ** scene.ev)
    np.clip(image, 0.0, MAX_RADIANCE, out=image)
    return image.astype(np.float32), alpha


def _render_level(scene: DemoScene, subrows: int, with_disc: bool):
    """The scene seen by a level camera at EV 0: (image, sky alpha, sun facts)."""
    # Every draw from rng below happens in this order: the look depends on texture_seed only.
    rng = np.random.default_rng(scene.texture_seed)
    view = _SkyView.of(scene, haze=float(rng.uniform(0.0, 0.6)))
    sun = {"radius": view.radius, "luminance": 0.0, "colour": _SUN_COLOUR}
    if scene.theme == "overcast":
        sky, light = _overcast_sky(scene, rng, view)
    elif scene.theme == "night":
        sky, light = _night_sky(scene, rng, view, with_disc)
    else:
        sky, light = _day_sky(scene, rng, view, sun, with_disc)
    image, texture = _paint_ground(scene, rng, light, sky[view.upper - 1].mean(axis=0), subrows)
    image, alpha = _paint_sky(scene, rng, image, sky, light, texture, subrows)
    if scene.water:
        _lake(image, scene, rng, light)
    return image.astype(np.float32), alpha, sun


@dataclass(frozen=True)
class _SkyView:
    """Where each pixel looks, measured from the sun: what the sky functions draw with.

    Attributes:
        gamma: float32 (H, W), the angle (radians) between each pixel and the sun (moon).
        sin_el: float64 (H, 1), the sine of each row's elevation.
        radius: the sun's (moon's) angular radius in radians.
        haze: 0 (clear) .. 0.6 (a hazy horizon).
        upper: the rows above the horizon.
    """

    gamma: np.ndarray
    sin_el: np.ndarray
    radius: float
    haze: float
    upper: int

    @classmethod
    def of(cls, scene: DemoScene, haze: float) -> _SkyView:
        """The view of a scene's level camera."""
        height, width = scene.height, scene.width
        azimuth, elevation = pixel_centre_angles(height, width)
        sun_el, sun_az = np.radians(scene.sun_elevation), np.radians(scene.sun_azimuth)
        # Angle to the sun; float32 over the image, float64 for the per-row/column terms.
        cos_gamma = ((np.sin(elevation) * np.sin(sun_el)).astype(np.float32)[:, None]
                     + (np.cos(elevation) * np.cos(sun_el)).astype(np.float32)[:, None]
                     * np.cos(azimuth - sun_az).astype(np.float32)[None, :])
        return cls(gamma=np.arccos(np.clip(cos_gamma, -1.0, 1.0)),
                   sin_el=np.sin(elevation)[:, None], radius=np.radians(scene.sun_radius),
                   haze=haze, upper=height // 2)


def _overcast_sky(scene: DemoScene, rng: np.random.Generator, view: _SkyView):
    """CIE overcast sky: three times brighter at the zenith than at the horizon, no sun.

    Returns ``(sky, light)``: float32 (H, W, 3) and the light on the ground.
    """
    upper = view.upper
    level = SKY_LEVEL * rng.uniform(1.8, 3.0)
    tone = np.array([0.93, 0.96, 1.0], np.float32) * rng.uniform(0.97, 1.03, 3).astype(
        np.float32)
    tone /= np.float32(colour_luminance(tone))
    profile = (1.0 + 2.0 * np.clip(view.sin_el, 0.0, 1.0)) / 3.0 * level
    sky = np.broadcast_to(tone * profile[..., None].astype(np.float32),
                          (scene.height, scene.width, 3)).copy()
    structure, _ = _clouds(scene, rng, upper, cover=1.0)
    # Darker and lighter patches of the cloud deck.
    sky[:upper] *= (0.7 + 0.45 * structure)[..., None]
    return sky, np.float32(level * 0.42)


def _night_sky(scene: DemoScene, rng: np.random.Generator, view: _SkyView, with_disc: bool):
    """A dark sky with city skyglow, clouds lit from below, stars, the moon and its halo.

    Returns ``(sky, light)``: float32 (H, W, 3) and the light on the ground.
    """
    height, width, upper = scene.height, scene.width, view.upper
    gamma, radius = view.gamma, view.radius
    level = SKY_LEVEL * NIGHT_LEVEL
    mu = np.clip(np.asarray(view.sin_el, np.float32), 0.0, 1.0)
    towards_horizon = ((1.0 - mu) ** 4)[..., None]
    zenith = np.array([0.05, 0.08, 0.22], np.float32)
    zenith /= np.float32(colour_luminance(zenith))
    glow_colour = np.array([1.0, 0.62, 0.32], np.float32) * rng.uniform(2.0, 6.0)
    sky = np.broadcast_to(level * (zenith * (1 - towards_horizon)
                                   + glow_colour * towards_horizon),
                          (height, width, 3)).astype(np.float32).copy()
    clouds, _ = _clouds(scene, rng, upper)
    cloud_colour = level * np.array([2.2, 1.7, 1.2], np.float32)  # lit by the city below
    sky[:upper] = sky[:upper] * (1 - clouds[..., None]) + cloud_colour * clouds[..., None]
    # Stars: single pixels, fainter towards the hazy horizon and hidden by clouds.
    count = int(rng.integers(200, 600) * (width / 1024) ** 2) + 3
    rows = rng.integers(0, max(int(upper * 0.85), 1), count)
    cols = rng.integers(0, width, count)
    brightness = rng.uniform(4.0, 40.0, count) * (1 - clouds[rows, cols])
    sky[rows, cols] += (level * brightness)[:, None] * np.float32(1.0)
    sky += (level * 2.0 * np.exp(-gamma / (3 * radius)))[..., None]  # the moon's halo
    if with_disc:
        sky += (MOON_RATIO * level * sun_disc(gamma, radius, height))[..., None] * np.array(
            [1.0, 0.98, 0.93], np.float32)
    return sky, np.float32(level * 2.5)


def _day_sky(scene: DemoScene, rng: np.random.Generator, view: _SkyView, sun: dict,
             with_disc: bool):
    """A clear sky with clouds (clear around the sun), the sun's glow and disc.

    Sets the sun's luminance and colour in ``sun``. Returns ``(sky, light)``: float32
    (H, W, 3) and the light on the ground.
    """
    upper, gamma, radius = view.upper, view.gamma, view.radius
    sky = sky_colour(view.sin_el, gamma, scene.sun_elevation, view.haze)
    clouds, thick = _clouds(scene, rng, upper)
    near_sun = smoothstep(6 * radius, 14 * radius, gamma[:upper])
    clouds *= near_sun
    thick *= near_sun
    filled = float(np.clip(scene.cloud_cover - 0.85, 0.0, 0.65)) / 0.65
    lit = SKY_LEVEL * (1.25 + 2.5 * np.exp(-gamma[:upper] / 0.35)) * (1 - 0.5 * filled)
    # Thick cores are in their own shadow: darker and a little blue, edges bright.
    thick = thick[..., None]
    dark = np.array([0.5, 0.54, 0.62], np.float32) * np.float32(1 - 0.4 * filled)
    cloud_colour = (np.array([1.0, 0.98, 0.96], np.float32) * (1 - thick)
                    + dark * thick) * lit[..., None]
    low_sun = max(0.0, 1.0 - scene.sun_elevation / 25.0)
    cloud_colour *= (1.0 + low_sun * np.array([0.25, 0.0, -0.2], np.float32))
    sky[:upper] = sky[:upper] * (1 - clouds[..., None]) + cloud_colour * clouds[..., None]
    sun_el = np.radians(scene.sun_elevation)
    base = sky_colour(np.sin(sun_el), np.float32(0.0), scene.sun_elevation, view.haze)
    base_luminance = colour_luminance(base)
    glow = base_luminance * (14.0 * np.exp(-gamma / (1.5 * radius))
                             + 1.5 * np.exp(-gamma / (5.0 * radius)))
    sky += glow[..., None] * _SUN_COLOUR
    sun_colour = _SUN_COLOUR * (1.0 + low_sun * np.array([0.0, -0.1, -0.3], np.float32))
    sun_colour = sun_colour / np.float32(colour_luminance(sun_colour))
    sun.update(luminance=SUN_RATIO * base_luminance, colour=sun_colour)
    if with_disc:
        sky += (sun["luminance"] * sun_disc(gamma, radius, scene.height))[..., None] * sun_colour
    light = np.float32(SKY_LEVEL * (2.0 + 6.0 * np.sin(sun_el)) * (1 - 0.6 * filled))
    return sky, light


def _paint_ground(scene: DemoScene, rng: np.random.Generator, light, horizon_colour,
                  subrows: int):
    """The ground plane and the silhouettes, lit by sun and sky, painted back to front.

    Returns ``(image, texture)``: the texture is what the non-sky things are shaded with.
    """
    night = scene.theme == "night"
    image = _ground_plane(scene, rng, light)
    texture = _texture(rng, scene.height, scene.width)
    for kind, polygon, colour in scene.ground:
        albedo = np.asarray(colour, np.float32)
        # Distant silhouettes fade into the horizon sky (aerial perspective).
        haze_mix = {"far_hills": 0.4, "near_hills": 0.15}.get(kind, 0.05)
        if night:
            haze_mix *= 0.3
        shade = _shader(kind, polygon, albedo * light * (1 - haze_mix),
                        horizon_colour * haze_mix, texture, rng, scene.width, night=night)
        paint_polygon(image, polygon, shade, subrows)
    return image, texture


def _paint_sky(scene: DemoScene, rng: np.random.Generator, image: np.ndarray, sky, light,
               texture, subrows: int) -> tuple[np.ndarray, np.ndarray]:
    """The sky where the labels say sky, then the things inside it: (image, sky alpha)."""
    if scene.level_labels:
        sky_polygons, objects = scene.level_labels
    else:  # the labels themselves, scaled from preview pixels
        sky_polygons = [polygon * 2.0 for polygon in scene.sky]
        objects = [(kind, polygon * 2.0) for kind, polygon in scene.non_sky]
    alpha = sky_alpha(sky_polygons, scene.height, scene.width, subrows)
    image = image * (1 - alpha[..., None]) + sky * alpha[..., None]
    for kind, polygon in objects:
        if kind == "lamp":
            colour = _LAMP_RADIANCE * np.float32(SKY_LEVEL * (1.0 if scene.theme == "night"
                                                              else 0.05))
        else:
            colour = np.asarray(_NON_SKY_COLOURS[kind], np.float32) * light
        shade = _shader(kind, polygon, colour, 0.0, texture, rng, scene.width)
        paint_non_sky(image, alpha, polygon, shade, subrows)
    return image, alpha


def _lake(image: np.ndarray, scene: DemoScene, rng: np.random.Generator, light) -> None:
    """Water from the horizon down ``scene.water`` degrees: a rippled mirror of what is above.

    Fresnel reflectance makes it nearly a mirror at grazing angles, dark further down.
    """
    height, width = scene.height, scene.width
    upper = height // 2
    rows = min(int(round(scene.water * width / 360.0)), height - upper)
    if rows <= 0:
        return
    r = np.arange(upper, upper + rows)
    depression = (r + 0.5 - height / 2) / height * np.pi
    reflectance = (0.02 + 0.98 * (1 - np.sin(depression)) ** 5).astype(np.float32)
    # Ripples: a small horizontal and vertical wobble of the mirrored rows.
    lattices = [rng.random((16, 64), dtype=np.float32) for _ in range(3)]
    u = np.arange(width)[None, :] / width * 64
    v = (r - upper)[:, None] / max(rows, 1) * 16 * 4
    wobble = fbm(u * np.ones_like(v), v * np.ones_like(u), lattices, np.zeros((3, 2))) - 0.5
    amplitude = 1.0 + 3.0 * (r - upper)[:, None] / max(rows, 1) * width / 1024
    source_rows = np.clip(height - 1 - r[:, None] + np.round(wobble * amplitude).astype(int),
                          0, upper - 1)
    source_cols = np.mod(np.arange(width)[None, :] + np.round(wobble * 2 * amplitude)
                         .astype(int), width)
    mirrored = image[source_rows, source_cols]
    body = np.array([0.03, 0.05, 0.06], np.float32) * light
    tint = np.array([0.92, 0.97, 1.0], np.float32)
    weight = reflectance[:, None, None]
    image[upper:upper + rows] = mirrored * tint * weight + body * (1 - weight)


def _tilt_image(scene: DemoScene, image: np.ndarray, alpha: np.ndarray, sun: dict):
    """Resample a level rendering to the tilted camera; the sun disc is drawn after, sharp."""
    import cv2

    height, width = scene.height, scene.width
    rotation = tilt_rotation(*scene.tilt)
    xs = (np.arange(width) + 0.5)[None, :]
    ys = (np.arange(height) + 0.5)[:, None]
    azimuth, elevation = pixels_to_angles(xs, ys, width, height)
    camera = direction(*np.broadcast_arrays(azimuth, elevation))
    level_x, level_y = angles_to_pixels(*angles(camera @ rotation), width, height)
    pad = 2
    map_x = (level_x - 0.5 + pad).astype(np.float32)
    map_y = (level_y - 0.5).astype(np.float32)

    def resample(array):
        padded = np.concatenate([array[:, -pad:], array, array[:, :pad]], axis=1)
        return cv2.remap(padded, map_x, map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    tilted, tilted_alpha = resample(image), resample(alpha)
    if sun["luminance"]:
        sun_azimuth, sun_elevation = (np.radians(v) for v in scene.sun_in_image)
        cos_gamma = np.clip(camera @ direction(sun_azimuth, sun_elevation), -1.0, 1.0)
        disc = sun_disc(np.arccos(cos_gamma), sun["radius"], height) * tilted_alpha
        tilted += (sun["luminance"] * disc)[..., None] * sun["colour"]
    return tilted.astype(np.float32), tilted_alpha.astype(np.float32)


def _clouds(scene: DemoScene, rng: np.random.Generator, rows: int, cover: float | None = None):
    """Cloud density and thickness (rows, W) for the upper half, from a cloud layer."""
    height, width = scene.height, scene.width
    cover = scene.cloud_cover if cover is None else cover
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
    noise = fbm(u, v, lattices, offsets, gain=0.55)
    threshold = 0.62 - 0.22 * cover
    density = smoothstep(threshold, threshold + 0.12, noise)
    thickness = smoothstep(threshold + 0.08, threshold + 0.25, noise)
    fade = smoothstep(np.radians(0.5), np.radians(9.0), elevation)[:, None]
    density = upsample2(density * fade, rows, width)
    thickness = upsample2(thickness, rows, width)
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
    noise = fbm(u, v, lattices, offsets)
    # Far away the texture would alias into sparkle: fade it out towards the horizon.
    detail = smoothstep(0.02, 0.12, depression)
    noise = upsample2(0.5 + (noise - 0.5) * detail, rows, width)
    grass = np.array([0.09, 0.13, 0.045], np.float32) * rng.uniform(0.8, 1.2)
    soil = np.array([0.16, 0.13, 0.09], np.float32) * rng.uniform(0.8, 1.2)
    if scene.theme == "open" and rng.random() < 0.5:
        # A lake or the sea: blue-grey like the sky, the hard case below the horizon.
        grass = np.array([0.10, 0.14, 0.20], np.float32) * rng.uniform(0.8, 1.2)
        soil = np.array([0.14, 0.17, 0.22], np.float32) * rng.uniform(0.8, 1.2)
    mix = smoothstep(0.4, 0.75, noise)[..., None]
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
    noise = fbm(u, v, lattices, np.zeros((3, 2)), gain=0.6)
    return upsample2(0.7 + 0.6 * noise, height, width).astype(np.float32)


def _shader(kind: str, polygon, colour, haze, texture, rng, width: int, night: bool = False):
    """A function (row0, row1) -> colours (rows, W, 3) for painting one polygon."""
    if kind == "building":
        x0, x1 = polygon[:, 0].min(), polygon[:, 0].max()
        top = np.sort(polygon[:, 1])[1]
        pitch_x, pitch_y = max(3.0, width / 200), max(3.0, width / 160)
        lit = rng.random() < (0.85 if night else 0.5)
        window_colour = np.array([0.9, 0.75, 0.45] if lit else [0.12, 0.13, 0.16], np.float32)
        # At night lit windows glow on their own, far brighter than the dark sky.
        window_level = SKY_LEVEL * rng.uniform(0.1, 0.5) if night and lit else None

        def building(row0, row1):
            ys = (np.arange(row0, row1) + 0.5)[:, None]
            xs = (np.arange(width) + 0.5)[None, :]
            windows = ((np.mod(xs - x0 - pitch_x * 0.6, pitch_x) < pitch_x * 0.5)
                       & (np.mod(ys - top - pitch_y * 0.7, pitch_y) < pitch_y * 0.55)
                       & (xs > x0 + pitch_x * 0.5) & (xs < x1 - pitch_x * 0.5)
                       & (ys > top + pitch_y * 0.6))
            out = np.broadcast_to(colour, (row1 - row0, width, 3)).copy()
            if window_level is not None:
                # Only some windows of a lit building are lit.
                lit_ones = windows & (np.mod(np.floor((xs - x0) / pitch_x) * 7
                                             + np.floor((ys - top) / pitch_y) * 3, 5) < 3)
                out[windows] = window_colour * colour.max()
                out[lit_ones] = window_colour * window_level
            else:
                out[windows] = window_colour * colour.max() * (1.5 if lit else 1.0)
            return out * texture[row0:row1, :, None] + haze
        return building

    def flat(row0, row1):
        return colour * texture[row0:row1, :, None] + haze
    return flat



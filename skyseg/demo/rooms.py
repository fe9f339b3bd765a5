"""Indoor demo scenes: a room seen from inside, where only the sky through a window is sky.

A room is a box around the camera (metres: x towards azimuth 0, y towards
azimuth 90 degrees, z up, the camera at the origin). Its ceiling is bright
and white, with lamp panels and round lamps far brighter than the walls; the
walls are white, beige, grey or pale blue, with doors, pictures, softboxes
and windows. Through a window the outside shows: a day sky above an outside
skyline (buildings, trees: a step function of the azimuth), facades below it.
The labels are the parts of the window polygons above the outside skyline
(sky) minus the window bars (non-sky); a room without windows, or whose
windows face a wall outside, has no sky at all.

Used through :func:`skyseg.demo.scenes.make_scene` / :func:`skyseg.demo.scenes.render_scene`
with ``theme="indoor"``.
"""

from __future__ import annotations

import numpy as np

from skyseg.demo.geometry import (
    angles,
    angles_to_pixels,
    clip_halfplane,
    direction,
    pixel_centre_angles,
    polygon_area,
    to_preview_polygon,
    unwrap_x,
    wrap_polygon,
)
from skyseg.demo.painting import (
    SKY_LEVEL,
    fbm,
    paint_non_sky,
    paint_polygon,
    sky_alpha,
    sky_colour,
    smoothstep,
)
from skyseg.demo.records import DemoScene

__all__ = ["make_room_scene", "render_room"]

#: Wall colours: white, warm white, beige, light grey, pale blue (blue is not sky either).
_WALLS = ((0.85, 0.85, 0.83), (0.88, 0.84, 0.76), (0.78, 0.70, 0.58), (0.62, 0.62, 0.63),
          (0.62, 0.72, 0.86), (0.30, 0.30, 0.32))
_FLOORS = ((0.35, 0.22, 0.12), (0.25, 0.25, 0.26), (0.55, 0.45, 0.33), (0.12, 0.10, 0.09))
#: The walls: (axis, sign): the plane axis = sign * extent.
_WALL_FACES = ((0, 1), (0, -1), (1, 1), (1, -1))


def _box_point(face: tuple[int, int], extents: dict, along: float, up: float) -> np.ndarray:
    """A point on a wall, ``along`` metres along it and ``up`` metres above the camera."""
    axis, sign = face
    point = np.zeros(3)
    point[axis] = extents["x" if axis == 0 else "y"][0 if sign < 0 else 1] * sign
    other = 1 - axis
    point[other] = along
    point[2] = up
    return point


def _rectangle_on_wall(face, extents, centre_along, width, z0, z1) -> np.ndarray:
    """Corners (4, 3) of a wall rectangle, in order around it."""
    a0, a1 = centre_along - width / 2, centre_along + width / 2
    return np.array([_box_point(face, extents, a0, z0), _box_point(face, extents, a1, z0),
                     _box_point(face, extents, a1, z1), _box_point(face, extents, a0, z1)])


def _project(corners: np.ndarray, width: int) -> np.ndarray:
    """A planar 3-D polygon seen from the origin: pixel outline (N, 2), x unwrapped."""
    points = []
    closed = np.vstack([corners, corners[:1]])
    for a, b in zip(closed[:-1], closed[1:], strict=True):
        t = np.linspace(0.0, 1.0, 96, endpoint=False)[:, None]
        points.append(a + (b - a) * t)
    points = np.vstack(points)
    azimuth, elevation = angles(points / np.linalg.norm(points, axis=1, keepdims=True))
    x, y = angles_to_pixels(azimuth, elevation, width, width // 2)
    return np.column_stack([unwrap_x(x, width), y])


def _sky_parts(outline: np.ndarray, skyline: list, width: int) -> list[np.ndarray]:
    """The parts of a window outline (unwrapped x) above a stepped outside skyline.

    ``skyline``: ``(x0, x1, y)`` steps over 0..width (pixels); sky is y < the step's y.
    """
    parts = []
    points = [tuple(p) for p in outline]
    for shift in (-width, 0.0, width):
        for x0, x1, y_limit in skyline:
            piece = clip_halfplane(points, 0, x0 + shift, keep_below=False)
            piece = clip_halfplane(piece, 0, x1 + shift, keep_below=True)
            piece = clip_halfplane(piece, 1, y_limit, keep_below=True)
            if len(piece) >= 3:
                polygon = np.array(piece)
                if polygon_area(polygon) > 1e-3:
                    parts.extend(wrap_polygon(polygon, width, width // 2))
    return parts


def make_room_scene(name: str, rng: np.random.Generator, *, width: int, ev: float) -> DemoScene:
    """An indoor scene (see the module doc); no pixels.

    Args:
        name: the scene's name.
        rng: its random generator (the scene depends on nothing else).
        width: full width in pixels (multiple of 4); the height is ``width / 2``.
        ev: exposure of the scene in stops.

    Returns:
        a :class:`~skyseg.demo.records.DemoScene` with ``theme="indoor"`` and its
        ``room``: extents (metres from the camera), colours, lamps, pictures,
        doors, windows (3-D corners, bars, pixel outlines) and the outside
        skyline steps. Its sun fields describe the sun outside (not in view).

    Example:
        >>> scene = make_room_scene("r", np.random.default_rng(0), width=64, ev=0.0)
        >>> scene.theme, scene.room["kind"] in ("room", "hall", "studio")
        ('indoor', True)
    """
    # Every draw from rng below happens in this order: the scene depends on nothing else.
    height = width // 2
    room, camera_height = _room_shell(rng)
    _add_ceiling_lamps(room, rng)
    _add_wall_items(room, rng, camera_height)
    # Outside: a stepped skyline of facades and trees, from the open horizon to 35 degrees.
    ppd = width / 360.0
    cuts = np.sort(rng.uniform(0.0, width, int(rng.integers(3, 9))))
    cuts = np.r_[0.0, cuts, float(width)]
    steps = []
    for x0, x1 in zip(cuts[:-1], cuts[1:], strict=True):
        elevation = 0.0 if rng.random() < 0.5 else float(rng.uniform(2.0, 20.0))
        steps.append((float(x0), float(x1), height / 2 - elevation * ppd))
    room["outside"] = steps
    room["outside_level"] = float(rng.uniform(1.0, 3.0))  # the day sky, relative to SKY_LEVEL
    sky, non_sky = _window_labels(room, width)
    sun_azimuth, sun_elevation = float(rng.uniform(0.0, 360.0)), float(rng.uniform(10.0, 60.0))
    texture_seed = int(rng.integers(0, 2**31 - 1))
    # Daylit flats: no lamp on a plain white ceiling, walls lit by the windows
    # nearly as bright as the sky outside. A bright, smooth, featureless top
    # of the panorama is what real apartments show, and it is not sky.
    if room["kind"] == "room" and rng.random() < 0.5:
        room["lamp_panels"] = [lamp for lamp in room["lamp_panels"] if "corners" in lamp]
        room["level"] = float(rng.uniform(0.4, 1.2))
        room["daylit"] = True
    return DemoScene(
        name=name, theme="indoor", width=width, height=height, ev=float(ev),
        sun_azimuth=sun_azimuth, sun_elevation=sun_elevation,
        sun_radius=max(1.0, 1.6 / ppd), sky=tuple(sky), non_sky=tuple(non_sky), ground=(),
        cloud_cover=0.0, texture_seed=texture_seed, room=room,
    )


def _room_shell(rng: np.random.Generator) -> tuple[dict, float]:
    """The box, its colours and light level (no lamps, no items yet); and the camera height."""
    kind = str(rng.choice(["room", "room", "hall", "studio"]))
    size = {"room": (1.5, 4.0), "hall": (4.0, 14.0), "studio": (2.5, 7.0)}[kind]
    ceiling = {"room": (2.4, 3.2), "hall": (4.0, 10.0), "studio": (3.0, 6.0)}[kind]
    camera_height = float(rng.uniform(1.2, 1.8))
    ceiling_height = float(rng.uniform(*ceiling))
    extents = {"x": tuple(float(v) for v in rng.uniform(*size, 2)),
               "y": tuple(float(v) for v in rng.uniform(*size, 2)),
               "z": (camera_height, ceiling_height - camera_height)}
    wall = np.array(_WALLS[int(rng.integers(0, len(_WALLS) - (0 if kind == "studio" else 1)))])
    ceiling = np.array([0.9, 0.9, 0.88]) * rng.uniform(0.85, 1.0)
    floor = np.array(_FLOORS[int(rng.integers(0, len(_FLOORS)))]) * rng.uniform(0.8, 1.2)
    # Studios and halls also come dark overhead (black ceilings and drapes, bare
    # concrete and beams): a dark top with bright lamps is no night sky.
    dark = {"studio": 0.6, "hall": 0.35}.get(kind, 0.0)
    if rng.random() < dark:
        ceiling = np.array([0.05, 0.05, 0.05]) * rng.uniform(0.5, 4.0)
        if kind == "studio":
            wall = np.array([0.04, 0.04, 0.045]) * rng.uniform(0.7, 2.0)
            floor = np.array([0.85, 0.85, 0.84]) * rng.uniform(0.8, 1.0)  # a white cyclorama
    room = {
        "kind": kind, "extents": extents,
        "wall": tuple(wall * rng.uniform(0.95, 1.05, 3)),
        "ceiling": tuple(ceiling),
        "floor": tuple(floor),
        # Radiance of a white wall lit by the room's lamps, relative to SKY_LEVEL.
        "level": float(rng.uniform(0.15, 1.2)),
        "lamp_panels": [], "pictures": [], "doors": [], "windows": [],
    }
    return room, camera_height


def _add_ceiling_lamps(room: dict, rng: np.random.Generator) -> None:
    """Lamp panels and round lamps on the ceiling."""
    extents = room["extents"]
    for _ in range(int(rng.integers(1, 7))):
        cx, cy = (float(rng.uniform(-e[0] * 0.8, e[1] * 0.8)) for e in (extents["x"], extents["y"]))
        round_lamp = rng.random() < 0.35
        half = (float(rng.uniform(0.1, 0.3)),) * 2 if round_lamp else tuple(
            float(v) for v in rng.uniform(0.2, 0.9, 2))
        room["lamp_panels"].append({"centre": (cx, cy), "half": half, "round": bool(round_lamp),
                                    "radiance": float(rng.uniform(15.0, 300.0))})


def _add_wall_items(room: dict, rng: np.random.Generator, camera_height: float) -> None:
    """A softbox, pictures, a door and windows on the walls, none overlapping on a wall."""
    extents, kind = room["extents"], room["kind"]
    walls_used = []
    for item in ("softbox", "picture", "picture", "door", "window", "window", "window"):
        if item == "window" and rng.random() < 0.3:
            continue
        if item == "softbox" and (kind != "studio" and rng.random() < 0.7):
            continue
        face = _WALL_FACES[int(rng.integers(0, 4))]
        length = sum(extents["y" if face[0] == 0 else "x"])
        low, high = -extents["y" if face[0] == 0 else "x"][0], extents["y" if face[0] == 0
                                                                       else "x"][1]
        low_width, high_width = (1.0, 3.6) if item == "window" else (0.6, 1.4)
        item_width = float(min(rng.uniform(low_width, high_width), 0.6 * length))
        along = float(rng.uniform(low + item_width / 2 + 0.1, high - item_width / 2 - 0.1))
        if any(f == face and abs(a - along) < (w + item_width) / 2 + 0.1
               for f, a, w in walls_used):
            continue
        walls_used.append((face, along, item_width))
        if item == "window":
            room["windows"].append(_window(room, rng, camera_height, face, along, item_width))
        elif item == "door":
            top = extents["z"][1]
            room["doors"].append({"corners": _rectangle_on_wall(
                face, extents, along, min(item_width, 1.0), -camera_height,
                min(2.05 - camera_height, top - 0.05)),
                "colour": tuple(np.array([0.3, 0.2, 0.12]) * rng.uniform(0.5, 2.0))})
        else:
            _add_wall_panel(room, rng, item, face, along, item_width)


def _window(room: dict, rng: np.random.Generator, camera_height: float, face, along: float,
            item_width: float) -> dict:
    """A window: its corners and its bars (a vertical bar, a transom)."""
    extents = room["extents"]
    z0 = float(rng.uniform(0.7, 1.0)) - camera_height
    z1 = min(float(rng.uniform(2.1, 3.2)) - camera_height, extents["z"][1] - 0.15)
    corners = _rectangle_on_wall(face, extents, along, item_width, z0, z1)
    bars = []
    if rng.random() < 0.8:  # a vertical bar in the middle
        bars.append(_rectangle_on_wall(face, extents, along, 0.06, z0, z1))
    if rng.random() < 0.5:  # a transom
        zt = z0 + (z1 - z0) * float(rng.uniform(0.6, 0.8))
        bars.append(_rectangle_on_wall(face, extents, along, item_width, zt, zt + 0.06))
    return {"corners": corners, "bars": bars}


def _add_wall_panel(room: dict, rng: np.random.Generator, item: str, face, along: float,
                    item_width: float) -> None:
    """A picture, or a softbox (a lamp on the wall)."""
    extents = room["extents"]
    z0 = float(rng.uniform(-0.2, 0.5))
    z1 = min(z0 + float(rng.uniform(0.4, 1.2)), extents["z"][1] - 0.1)
    entry = {"corners": _rectangle_on_wall(face, extents, along, item_width, z0, z1),
             "colour": tuple(rng.uniform(0.05, 0.8, 3))}
    if item == "softbox":
        entry["radiance"] = float(rng.uniform(20.0, 200.0))
        room["lamp_panels"].append(entry)
    else:
        room["pictures"].append(entry)


def _window_labels(room: dict, width: int) -> tuple[list, list]:
    """``(sky, non_sky)`` in preview pixels: the window panes above the outside skyline,
    and the window bars. Sets each window's pixel ``outline``."""
    height = width // 2
    sky, non_sky = [], []
    for window in room["windows"]:
        outline = _project(window["corners"], width)
        window["outline"] = wrap_polygon(outline, width, height)
        for part in _sky_parts(outline, room["outside"], width):
            quantized = to_preview_polygon(part)
            if quantized is not None:
                sky.append(quantized)
        for bar in window["bars"]:
            for part in wrap_polygon(_project(bar, width), width, height):
                quantized = to_preview_polygon(part)
                if quantized is not None:
                    non_sky.append(("frame", quantized))
    return sky, non_sky


def _in_rectangle(point: np.ndarray, corners: np.ndarray, soft: float) -> np.ndarray:
    """Soft inside test (0..1) of points (..., 3) against a wall rectangle's corners."""
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    inside = np.ones(point.shape[:-1], np.float32)
    for axis in range(3):
        if hi[axis] - lo[axis] < 1e-9:
            continue
        distance = np.minimum(point[..., axis] - lo[axis], hi[axis] - point[..., axis])
        inside *= smoothstep(-soft, soft, distance)
    return inside


def render_room(scene: DemoScene, *, subrows: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Render an indoor scene at EV 0: (image float32 (H, W, 3), sky alpha float32 (H, W)).

    Example:
        >>> scene = make_room_scene("r", np.random.default_rng(0), width=64, ev=0.0)
        >>> [array.shape for array in render_room(scene)]
        [(32, 64, 3), (32, 64)]
    """
    # Every draw from rng below happens in this order: the look depends on texture_seed only.
    rng = np.random.default_rng(scene.texture_seed)
    point, face, distance, up = _surface_hits(scene)
    # Texture: a little noise on every surface.
    lattices = [rng.random((32, 32), dtype=np.float32) for _ in range(4)]
    u = (point[..., 0] + point[..., 2] * 0.7) * 3.0
    v = (point[..., 1] - point[..., 2] * 0.4) * 3.0
    noise = fbm(u, v, lattices, rng.uniform(0, 32, (4, 2)))
    grain = (0.9 + 0.2 * noise)[..., None]
    image = _paint_interior(scene, point, face, distance, up, grain)
    return _paint_windows(scene, rng, image, grain, subrows)


def _surface_hits(scene: DemoScene):
    """Where each pixel's ray meets the room: ``(point, face, distance, up)``.

    ``point``: float32 (H, W, 3) in metres from the camera; ``face``: the axis of the face
    hit (0, 1: walls, 2: ceiling or floor); ``distance``: metres; ``up``: the ray rises.
    """
    height, width = scene.height, scene.width
    azimuth, elevation = pixel_centre_angles(height, width)
    rays = direction(azimuth[None, :], elevation[:, None]).astype(np.float32)
    ext = scene.room["extents"]
    bounds = [ext["x"], ext["y"], ext["z"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = np.stack([np.where(rays[..., a] > 0, bounds[a][1] / rays[..., a],
                                  bounds[a][0] / -rays[..., a]) for a in range(3)])
    hits = np.where(np.isfinite(hits) & (hits > 0), hits, np.inf)
    face = np.argmin(hits, axis=0)
    distance = np.min(hits, axis=0)
    return rays * distance[..., None], face, distance, rays[..., 2] > 0


def _paint_interior(scene: DemoScene, point, face, distance, up, grain) -> np.ndarray:
    """Walls, ceiling and floor (planks), lamps with their light pools, pictures and doors."""
    room = scene.room
    ext = room["extents"]
    level = SKY_LEVEL * room["level"]
    wall = np.asarray(room["wall"], np.float32)
    # Walls: brighter towards the lit ceiling.
    height_share = np.clip((point[..., 2] + ext["z"][0]) / (ext["z"][0] + ext["z"][1]), 0, 1)
    image = wall * (level * (0.55 + 0.55 * height_share))[..., None]
    ceiling = (face == 2) & up
    floor = (face == 2) & ~up
    image[ceiling] = np.asarray(room["ceiling"], np.float32) * level * 1.4
    planks = 0.85 + 0.3 * (np.mod(np.floor(point[..., 0] / 0.18), 3) / 2)
    floor_colour = np.asarray(room["floor"], np.float32) * level * 0.9
    image[floor] = floor_colour * planks[floor][:, None]
    image *= grain
    # Light pools on the ceiling around each lamp, then the lamps themselves.
    pixel = np.pi / scene.height * np.maximum(distance, 0.1)  # metres per pixel at the hit
    for lamp in room["lamp_panels"]:
        if "corners" in lamp:  # a softbox on a wall
            inside = _in_rectangle(point, lamp["corners"], 0.6 * pixel)
            inside *= (face != 2)
        else:
            cx, cy = lamp["centre"]
            dx, dy = point[..., 0] - cx, point[..., 1] - cy
            if lamp["round"]:
                edge = lamp["half"][0] - np.hypot(dx, dy)
            else:
                edge = np.minimum(lamp["half"][0] - np.abs(dx), lamp["half"][1] - np.abs(dy))
            inside = smoothstep(-0.6 * pixel, 0.6 * pixel, edge) * ceiling
            pool = level * 1.5 / (1.0 + (dx * dx + dy * dy) / 0.8)
            image[ceiling] += (pool[ceiling])[:, None] * np.float32(1.0)
        glow = np.float32(SKY_LEVEL * lamp["radiance"]) * np.array([1.0, 0.97, 0.9], np.float32)
        image = image * (1 - inside[..., None]) + glow * inside[..., None]
    for item in (*room["pictures"], *room["doors"]):
        inside = _in_rectangle(point, item["corners"], 0.6 * pixel) * (face != 2)
        colour = np.asarray(item["colour"], np.float32) * level * grain
        image = image * (1 - inside[..., None]) + colour * inside[..., None]
    return image


def _paint_windows(scene: DemoScene, rng: np.random.Generator, image: np.ndarray, grain,
                   subrows: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows: the outside below its skyline, the sky above it, the bars in front.

    Returns ``(image, sky alpha)``.
    """
    room = scene.room
    height, width = scene.height, scene.width
    azimuth, elevation = pixel_centre_angles(height, width)
    outside_level = SKY_LEVEL * room["outside_level"]
    sin_el = np.sin(elevation)[:, None]
    sun_el, sun_az = np.radians(scene.sun_elevation), np.radians(scene.sun_azimuth)
    cos_gamma = (np.sin(elevation)[:, None] * np.sin(sun_el)
                 + np.cos(elevation)[:, None] * np.cos(sun_el) * np.cos(azimuth - sun_az)[None])
    gamma = np.arccos(np.clip(cos_gamma, -1.0, 1.0)).astype(np.float32)
    sky = sky_colour(sin_el, gamma, scene.sun_elevation, float(rng.uniform(0.0, 0.6)))
    sky *= np.float32(room["outside_level"])
    facade = np.array(rng.choice([(0.5, 0.45, 0.4), (0.15, 0.22, 0.1), (0.7, 0.7, 0.68)]),
                      np.float32) * outside_level * 1.5
    below = np.where((np.arange(height) >= height // 2)[:, None, None],
                     np.float32(0.5) * facade, facade) * grain
    for window in room["windows"]:
        for part in window["outline"]:
            paint_polygon(image, part, lambda r0, r1, below=below: below[r0:r1], subrows)
    alpha = sky_alpha([polygon * 2.0 for polygon in scene.sky], height, width, subrows)
    image = image * (1 - alpha[..., None]) + sky * alpha[..., None]
    frame = np.asarray(room["wall"], np.float32) * (SKY_LEVEL * room["level"])
    for _, polygon in scene.non_sky:
        paint_non_sky(image, alpha, polygon * 2.0, lambda r0, r1: frame, subrows)
    return image.astype(np.float32), alpha

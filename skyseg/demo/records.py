"""What a synthetic demo scene is: the record both the outdoor scenes and the rooms make.

:class:`DemoScene` holds a scene's labels (the truth, in preview pixels) and everything
:func:`skyseg.demo.scenes.render_scene` needs to draw it; :data:`THEMES` are the scene kinds.

Example:
    >>> "indoor" in THEMES and "indoor" not in OUTDOOR_THEMES
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyseg.demo.geometry import angles, direction, tilt_rotation

__all__ = ["DemoScene", "THEMES", "OUTDOOR_THEMES", "SUNNY_THEMES"]

#: Every scene kind.
THEMES = ("town", "seam", "forest", "open", "indoor", "overcast", "night", "lake", "cloudy",
          "tilted")
OUTDOOR_THEMES = tuple(theme for theme in THEMES if theme != "indoor")
#: Themes whose sun disc is in the picture (the others: overcast, night, indoor).
SUNNY_THEMES = ("town", "seam", "forest", "open", "lake", "cloudy", "tilted")


@dataclass(frozen=True)
class DemoScene:
    """One synthetic scene: its labels (the truth) and what it takes to render it.

    Attributes:
        name: ``scene_NNN``.
        theme: one of :data:`THEMES`.
        width, height: full size in pixels (``width == 2 * height``).
        ev: exposure of the scene; radiance is multiplied by ``2 ** ev``.
        sun_azimuth, sun_elevation, sun_radius: the sun (the moon at night) in
            degrees in the level world frame; azimuth 0 is x = 0, elevation 0
            the horizon (row ``height / 2``). Indoors: the sun outside.
        sky: ``sky`` polygons, float64 (N, 2) x/y in preview pixels as stored
            in the COCO file (2 decimals); may be empty (a room without window).
        non_sky: ``(kind, polygon)`` pairs of ``non-sky`` polygons (kind
            ``crown``, ``pole``, ``wire``, ``bird``, ``lamp``, ``frame``), preview pixels.
        ground: ``(kind, polygon, colour)`` of ground silhouettes in full-size
            pixels of the level frame, painted in order under the sky (not labels).
        cloud_cover: 0 (clear) .. 1.5 (filled).
        texture_seed: seed of the noise textures used by :func:`render_scene`.
        tilt: ``(axis_azimuth, angle)`` in degrees: the camera is turned by
            ``angle`` about the horizontal axis at ``axis_azimuth`` (0: level).
        water: depth of the lake below the horizon in degrees (0: no lake).
        room: an indoor scene's room (see :mod:`skyseg.demo.rooms`), else None.
        level_labels: a tilted scene's ``(sky, non_sky)`` as a level camera sees
            them (full-size pixels), what it is rendered from before the tilt.
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
    tilt: tuple = (0.0, 0.0)
    water: float = 0.0
    room: dict | None = None
    level_labels: tuple = ()

    @property
    def sun_visible(self) -> bool:
        """True when the sun disc is in the picture."""
        return self.theme in SUNNY_THEMES

    @property
    def sun_xy(self) -> tuple[float, float]:
        """Centre of the sun (moon) disc in full-size pixel coordinates (x, y) of the image."""
        azimuth, elevation = self.sun_in_image
        ppd = self.width / 360.0
        return azimuth * ppd, self.height / 2 - elevation * ppd

    @property
    def sun_in_image(self) -> tuple[float, float]:
        """Azimuth and elevation (degrees) of the sun as the (maybe tilted) camera sees it."""
        if not self.tilt[1]:
            return self.sun_azimuth, self.sun_elevation
        vector = direction(np.radians(self.sun_azimuth), np.radians(self.sun_elevation))
        camera = tilt_rotation(*self.tilt) @ vector
        azimuth, elevation = angles(camera)
        return float(np.degrees(azimuth) % 360.0), float(np.degrees(elevation))

    def object_counts(self) -> dict[str, int]:
        """How many of each kind of object the scene has (ground, non-sky, room items)."""
        counts: dict[str, int] = {}
        for kind, *_ in (*self.ground, *self.non_sky):
            counts[kind] = counts.get(kind, 0) + 1
        for kind in ("window", "lamp_panel", "picture", "door"):
            if self.room and self.room.get(kind + "s"):
                counts[kind] = len(self.room[kind + "s"])
        return dict(sorted(counts.items()))

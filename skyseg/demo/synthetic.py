"""A small, seeded, labelled set of synthetic HDR panoramas, outdoor and indoor: the demo data.

The scenes themselves (what they show, how they are drawn, their truth) are
:mod:`skyseg.demo.scenes` (indoor rooms: :mod:`skyseg.demo.rooms`); this module writes
them as the data the bundled demo (``./run_pipeline.sh`` with no arguments)
trains and evaluates on, in the form real users start from::

    DIR/images/scene_000.exr    equirectangular (W = 2 H) linear radiance, half float
    DIR/previews/scene_000.jpg  half size, tonemapped: what a person labels
    DIR/result.json             Label Studio style COCO export made on the previews
    DIR/masks/scene_000.png     exact full-size truth, uint8 0/1 (for evaluation)
    DIR/train.txt, DIR/val.txt  scene names; val (~1/4, indoor and outdoor) is held out
    DIR/demo.json               settings and per-scene facts (theme, EV, sun, objects)
    DIR/README.md               what the data is

Scene kinds come in the order of :data:`SCENE_CYCLE`: a quarter are rooms
(indoor: only the sky through a window is sky), the rest outdoor scenes of
every kind (clear, cloud-filled, overcast over white buildings, a lake that
reflects the sky, a tilted camera, night), so that the demo teaches what
sky looks like in context rather than where it usually is. A per-scene
exposure multiplier spreads the scenes over ``EV_RANGE`` (7 EV).

**Resume rule.** ``demo.json`` (written first) records the settings. A run
into a folder made with the same settings reuses every file that exists and
writes only missing ones (a second complete run writes nothing). Different
settings are an error unless ``overwrite=True`` (``--overwrite``), which
regenerates everything and removes scene files the new settings do not have.
A folder without ``demo.json`` is refused when it holds anything but these
outputs, and regenerated when it holds only these.

Example:
    >>> from skyseg.demo.synthetic import make_demo_data
    >>> demo = make_demo_data("demo", scenes=28, width=1024, seed=0)  # doctest: +SKIP
    >>> demo.train[:2], demo.val[:1]  # doctest: +SKIP
    (['scene_000', 'scene_002'], ['scene_001'])
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skyseg.demo.geometry import polygon_area
from skyseg.demo.scenes import (
    EV_RANGE,
    SUN_RATIO,
    THEMES,
    DemoScene,
    make_scene,
    polygon_coverage,
    render_scene,
    scene_mask,
)
from skyseg.errors import ConfigError, ImageWriteError
from skyseg.io import (
    TEMP_MARKER,
    prepare_output_folder,
    write_exr,
    write_jpeg,
    write_png,
    write_text,
)
from skyseg.log import display_path, logger, progress
from skyseg.options import add_options, from_args, option

__all__ = [
    "make_demo_data",
    "report_demo_data",
    "DemoOptions",
    "make_scene",
    "render_scene",
    "scene_mask",
    "polygon_coverage",
    "DemoData",
    "DemoScene",
    "EV_RANGE",
    "SUN_RATIO",
    "THEMES",
    "SCENE_CYCLE",
    "CLI_HELP",
    "add_arguments",
    "run",
]

CLI_HELP = "write a small seeded, labelled set of synthetic HDR sky panoramas (the demo data)"

#: Format of the folder; a folder written by another format is not reused.
FORMAT_VERSION = 4
#: Scene i has theme SCENE_CYCLE[i % 12]: a quarter indoor, every outdoor kind at least once.
SCENE_CYCLE = ("town", "indoor", "seam", "overcast", "forest", "indoor", "night", "lake",
               "open", "indoor", "cloudy", "tilted")
CATEGORIES = ({"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"})

_OWN_ENTRIES = {"images", "previews", "masks", "result.json", "train.txt", "val.txt",
                "demo.json", "README.md"}
_SCENE_FILE = re.compile(r"^scene_\d{3,}\.(exr|jpg|png)$")


# --------------------------------------------------------------------------- options, records

@dataclass
class DemoOptions:
    """The options of ``skyseg demo-data`` (and of the pipeline's synthetic demo step).

    Example:
        >>> DemoOptions(scenes=4, width=256)
        DemoOptions(scenes=4, width=256, seed=0, overwrite=False)
    """

    scenes: int = option(64, "number of scenes")
    width: int = option(1024, "panorama width in pixels, a multiple of 4 (height = width / 2)")
    seed: int = option(0, "random seed; the same settings give identical files")
    overwrite: bool = option(False, "regenerate everything, also into a folder made with other "
                                    "settings; without it existing files are reused and a folder "
                                    "made with other settings is refused")


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
                          theme=SCENE_CYCLE[index % len(SCENE_CYCLE)], ev=float(evs[index]))
               for index, name in enumerate(names)]
    # Held out: one scene from each run of consecutive scenes. The first is a room,
    # then the outdoor themes in a seeded order; where a run lacks the theme wanted,
    # a theme not yet held out: val has indoor and outdoor scenes of many kinds.
    val_count = 0 if scenes < 2 else max(1, round(scenes / 4))
    outdoor = [theme for theme in dict.fromkeys(SCENE_CYCLE) if theme != "indoor"]
    wanted = ["indoor", *(outdoor[int(i)] for i in rng.permutation(len(outdoor)))]
    offset = int(rng.integers(0, len(SCENE_CYCLE)))
    picks: list[int] = []
    for run, chunk in enumerate(np.array_split(np.arange(scenes), max(val_count, 1))):
        if not val_count:
            break
        taken = {records[i].theme for i in picks}
        fits = [int(i) for i in chunk if records[i].theme == wanted[run % len(wanted)]]
        if wanted[run % len(wanted)] == "indoor":
            # The room held out with the most window sky: a score on a few pixels says little.
            rooms = [i for i, scene in enumerate(records)
                     if scene.theme == "indoor" and i not in picks]
            fits = sorted(rooms, key=lambda i: -sum(polygon_area(p) for p in records[i].sky))[:1]
        fits = fits or [int(i) for i in chunk if records[i].theme not in taken]
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
                "ignore": 0, "iscrowd": 0, "area": round(polygon_area(polygon), 2),
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
        azimuth, elevation = scene.sun_in_image
        # Where the sun (the moon at night) is in the picture; None when it is not.
        disc = {"azimuth_deg": round(azimuth, 4), "elevation_deg": round(elevation, 4),
                "radius_deg": round(scene.sun_radius, 4), "x": round(x, 3), "y": round(y, 3),
                "radius_px": round(scene.sun_radius * scene.width / 360.0, 3)}
        entry = {
            "name": scene.name, "split": "val" if scene.name in val else "train",
            "theme": scene.theme, "ev": round(scene.ev, 4),
            "sun": disc if scene.sun_visible else None,
            "cloud_cover": round(scene.cloud_cover, 3),
            "objects": scene.object_counts(),
        }
        if scene.theme == "night":
            entry["moon"] = disc
        if scene.tilt[1]:
            entry["tilt"] = {"axis_azimuth_deg": round(scene.tilt[0], 3),
                             "angle_deg": round(scene.tilt[1], 3)}
        if scene.water:
            entry["water_deg"] = round(scene.water, 3)
        if scene.room:
            entry["room"] = {"kind": scene.room["kind"],
                             "size_m": [round(sum(scene.room["extents"][a]), 2) for a in "xyz"]}
        scenes.append(entry)
    return {"generator": "skyseg demo-data", "format": FORMAT_VERSION, "settings": settings,
            "train": train, "val": val, "scenes": scenes}


_README = """# skyseg demo data

Synthetic, labelled HDR panoramas made by `skyseg demo-data` ({scenes} scenes,
{width}x{height}, seed {seed}). Same settings, same bytes.

- `images/scene_NNN.exr`: equirectangular (width = 2 x height, azimuth 0 at x = 0)
  linear radiance, RGB half float. Scene kinds (`theme` in `demo.json`): day skies over
  hills, buildings and trees with poles, wires and birds (`town`, `seam` with the sun at
  the x = 0 seam, `forest`, `open`), skies filled with clouds (`cloudy`), white overcast
  skies over white buildings (`overcast`), a lake reflecting the sky (`lake`; the
  reflection is not sky), a tilted camera whose horizon is a wave (`tilted`), night skies
  with stars, moon and a lit town (`night`), and rooms seen from inside (`indoor`: bright
  ceilings, lamps, white walls; only the sky seen through a window is sky). A visible sun
  is {sun:,.0f} times the clear sky at its position, with a glow. Each scene has its own
  exposure, {ev_lo:+.1f} to {ev_hi:+.1f} EV.
- `previews/scene_NNN.jpg`: half-size tonemapped previews, what a person labels.
- `result.json`: Label Studio style COCO export made on the previews (`file_name`
  with an upload prefix, e.g. `images/1a2b3c4d-scene_000.jpg`). Categories `sky` (1)
  and `non-sky` (2); mask = union of sky polygons minus non-sky polygons. Polygons are
  in preview pixels: multiply by 2 for the EXR. A room without a window onto the sky has
  no region: all of it is not sky.
- `masks/scene_NNN.png`: full-size truth (0 = not sky, 1 = sky), the polygons
  rasterised with pycocotools. The scenes were rendered from these very polygons, so
  the labels are exact.
- `train.txt`, `val.txt`: the split ({n_train} / {n_val} scenes; val is held out and has
  indoor and outdoor scenes).
- `demo.json`: settings and per-scene facts (theme, exposure, sun, tilt, room, objects).
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
    for folder in (out_dir, out_dir / "images", out_dir / "previews", out_dir / "masks"):
        prepare_output_folder(folder)
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


def make_demo_data(out_dir: str | os.PathLike, options: DemoOptions | None = None,
                   **overrides) -> DemoData:
    """Write the labelled synthetic HDR demo set into ``out_dir`` (see the module doc).

    Args:
        out_dir: the folder (created if missing).
        options: the :class:`DemoOptions` (default: their defaults).
        **overrides: :class:`DemoOptions` fields to change: ``scenes`` (number of scenes),
            ``width`` (full width in pixels, a multiple of 4; height = width / 2, previews
            half size), ``seed`` (everything follows from it; same settings -> identical
            bytes), ``overwrite`` (regenerate into a folder made with any settings).

    Returns:
        a :class:`DemoData` with the names, the split and what was written.

    Raises:
        ConfigError: a setting out of range; ``out_dir`` holds demo data made
            with other settings (without ``overwrite``) or other files.
        ImageWriteError: ``out_dir`` cannot be created or written.
        TypeError: an override that is not a :class:`DemoOptions` field.

    Example:
        >>> demo = make_demo_data("demo", scenes=3, width=128, seed=1)  # doctest: +SKIP
        >>> sorted(p.name for p in demo.images.iterdir())  # doctest: +SKIP
        ['scene_000.exr', 'scene_001.exr', 'scene_002.exr']
    """
    options = dataclasses.replace(options or DemoOptions(), **overrides)
    _check_settings(options.scenes, options.width, options.seed)
    scenes, width, seed = int(options.scenes), int(options.width), int(options.seed)
    out_dir = Path(out_dir)
    settings = {"scenes": scenes, "width": width, "height": width // 2, "seed": seed}
    regenerate = _prepare_folder(out_dir, settings, options.overwrite)
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
        _write_scene(out_dir, scene, regenerate, result)
    _write_index(out_dir, records, prefixes, settings, regenerate, result)
    logger.info("demo-data: %d scenes (%d train, %d val) %dx%d in %s: %d files written, "
                "%d reused", scenes, len(train), len(val), width, width // 2,
                display_path(out_dir), len(result.written), len(result.reused))
    return result


def _write_scene(out_dir: Path, scene: DemoScene, regenerate: bool, result: DemoData) -> None:
    """The EXR, preview and mask of one scene (those missing, or all on ``regenerate``)."""
    from skyseg.labels.previews import make_preview

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
        write_jpeg(preview, make_preview(exr, max_size=scene.width // 2))
        result.written.append(preview)
    else:
        result.reused.append(preview)
    if regenerate or not mask_path.is_file():
        write_png(mask_path, scene_mask(scene))
        result.written.append(mask_path)
    else:
        result.reused.append(mask_path)


def _write_index(out_dir: Path, records: list[DemoScene], prefixes: list[str], settings: dict,
                 regenerate: bool, result: DemoData) -> None:
    """``result.json``, ``train.txt``, ``val.txt`` and ``README.md``."""
    train, val = result.train, result.val
    coco = json.dumps(_coco(records, prefixes), separators=(",", ":")) + "\n"
    outputs = {
        "result.json": coco,
        "train.txt": "".join(f"{name}\n" for name in train),
        "val.txt": "".join(f"{name}\n" for name in val),
        "README.md": _README.format(**settings, sun=SUN_RATIO, ev_lo=EV_RANGE[0],
                                    ev_hi=EV_RANGE[1], n_train=len(train), n_val=len(val)),
    }
    for name, text in outputs.items():
        if regenerate and (out_dir / name).is_file():
            (out_dir / name).unlink()
        _write_if_changed(out_dir / name, text, result)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of ``skyseg demo-data``: ``--out`` and the :class:`DemoOptions`."""
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for images/, previews/, masks/, result.json, train.txt, "
                             "val.txt")
    add_options(parser, DemoOptions)


def run(args: argparse.Namespace) -> int:
    """``skyseg demo-data``: make the demo data the parsed command line describes."""
    return report_demo_data(make_demo_data(args.out, from_args(DemoOptions, args)))


def report_demo_data(demo: DemoData) -> int:
    """Log where :func:`make_demo_data` put each part; the exit status (0).

    What ``skyseg demo-data`` (and the pipeline's demo step) shows at the end.
    """
    logger.info("images   %s", display_path(demo.images))
    logger.info("previews %s", display_path(demo.previews))
    logger.info("labels   %s (COCO, on the previews)", display_path(demo.coco))
    logger.info("masks    %s", display_path(demo.masks))
    logger.info("split    %s, %s", display_path(demo.out_dir / "train.txt"),
                display_path(demo.out_dir / "val.txt"))
    return 0

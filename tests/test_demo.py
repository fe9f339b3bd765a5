"""`skyseg demo-data`: synthetic labelled HDR panoramas whose labels are exact."""

from __future__ import annotations

import argparse
import dataclasses
import doctest
import importlib
import json
import re

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from skyseg.cli.commands import STAGES
from skyseg.demo.geometry import (
    angles,
    angles_to_pixels,
    direction,
    pixels_to_angles,
    unwrap_x,
    upper_envelope,
    wrap_polygon,
)
from skyseg.demo.scenes import NIGHT_LEVEL, SKY_LEVEL, tilt_rotation
from skyseg.demo.synthetic import (
    EV_RANGE,
    SCENE_CYCLE,
    SUN_RATIO,
    THEMES,
    DemoOptions,
    _plan,
    add_arguments,
    make_demo_data,
    make_scene,
    polygon_coverage,
    render_scene,
    scene_mask,
)
from skyseg.errors import ConfigError, ImageWriteError
from skyseg.image.preprocess import luminance
from skyseg.io import read_image, write_jpeg
from skyseg.labels.annotations import load_coco, match_images
from skyseg.labels.previews import make_preview
from skyseg.options import from_args


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Four scenes (town, indoor, seam, overcast: the start of SCENE_CYCLE) at 256x128."""
    return make_demo_data(tmp_path_factory.mktemp("demo") / "demo", scenes=4, width=256, seed=7)


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _iou(a, b):
    a, b = a.astype(bool), b.astype(bool)
    if not (a | b).any():  # both empty (a room without sky): they agree
        return 1.0
    return (a & b).sum() / (a | b).sum()


def _area(polygon):
    x, y = polygon[:, 0], polygon[:, 1]
    return abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def _coco_mask(coco: dict, image: dict, scale: float) -> np.ndarray:
    """Sky minus non-sky from the COCO polygons, scaled, rasterised by pycocotools."""
    height, width = round(image["height"] * scale), round(image["width"] * scale)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    layers = {"sky": np.zeros((height, width), bool), "non-sky": np.zeros((height, width), bool)}
    for annotation in coco["annotations"]:
        if annotation["image_id"] != image["id"]:
            continue
        polygons = [[v * scale for v in p] for p in annotation["segmentation"]]
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        layers[names[annotation["category_id"]]] |= mask_utils.decode(rle).astype(bool)
    return (layers["sky"] & ~layers["non-sky"]).astype(np.uint8)


def _sun_geometry(meta, height, width):
    sun = meta["sun"]
    elevation = np.pi / 2 - (np.arange(height) + 0.5) / height * np.pi
    azimuth = (np.arange(width) + 0.5) / width * 2 * np.pi
    se, sa = np.radians(sun["elevation_deg"]), np.radians(sun["azimuth_deg"])
    cos_gamma = (np.sin(elevation)[:, None] * np.sin(se)
                 + np.cos(elevation)[:, None] * np.cos(se) * np.cos(azimuth[None] - sa))
    return np.arccos(np.clip(cos_gamma, -1, 1)), np.radians(sun["radius_deg"])


# ---------------------------------------------------------------- layout and labels

def test_layout(demo):
    names = [f"scene_{i:03d}" for i in range(4)]
    assert demo.scenes == names
    for name in names:
        assert read_image(demo.images / f"{name}.exr").shape == (128, 256, 3)
        assert Image.open(demo.previews / f"{name}.jpg").size == (128, 64)
        mask = np.asarray(Image.open(demo.masks / f"{name}.png"))
        assert mask.shape == (128, 256) and set(np.unique(mask)) <= {0, 1}
        if name != "scene_001":  # the room may have no window onto the sky
            assert set(np.unique(mask)) == {0, 1}
    assert "synthetic" in (demo.out_dir / "README.md").read_text().lower()
    meta = json.loads((demo.out_dir / "demo.json").read_text())
    assert meta["settings"] == {"scenes": 4, "width": 256, "height": 128, "seed": 7}
    assert [s["theme"] for s in meta["scenes"]] == list(SCENE_CYCLE[:4])
    assert set(SCENE_CYCLE) == set(THEMES)  # the demo cycles through every kind


def test_coco_is_a_label_studio_export_of_the_previews(demo):
    coco = COCO(str(demo.coco))  # loads in the reference implementation
    assert coco.loadCats(coco.getCatIds()) == [{"id": 1, "name": "sky"},
                                               {"id": 2, "name": "non-sky"}]
    prefixes = set()
    for image in coco.loadImgs(coco.getImgIds()):
        match = re.fullmatch(r"images/([0-9a-f]{8})-(scene_\d{3})\.jpg", image["file_name"])
        assert match, image["file_name"]
        prefixes.add(match.group(1))
        preview = Image.open(demo.previews / f"{match.group(2)}.jpg")
        assert (image["width"], image["height"]) == preview.size
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        if match.group(2) != "scene_001":  # outdoor: sky and things inside it
            assert {a["category_id"] for a in annotations} == {1, 2}
        else:  # a room: window panes (sky) and bars (non-sky), or nothing
            assert {a["category_id"] for a in annotations} <= {1, 2}
        for annotation in annotations:
            polygon = np.array(annotation["segmentation"][0]).reshape(-1, 2)
            assert polygon.min() >= 0 and polygon[:, 0].max() <= image["width"]
            assert polygon[:, 1].max() <= image["height"]
            x, y, w, h = annotation["bbox"]
            assert x == pytest.approx(polygon[:, 0].min(), abs=0.01)
            assert x + w == pytest.approx(polygon[:, 0].max(), abs=0.02)
            assert y + h == pytest.approx(polygon[:, 1].max(), abs=0.02)
            assert annotation["iscrowd"] == 0
            shoelace = _area(polygon)
            assert annotation["area"] == pytest.approx(shoelace, abs=0.01)
            if annotation["category_id"] == 1 and shoelace > 100:  # big enough for pixels
                assert coco.annToMask(annotation).sum() == pytest.approx(shoelace, rel=0.02)
    assert len(prefixes) == 4


def test_polygons_scaled_to_full_size_reproduce_the_masks(demo):
    coco = json.loads(demo.coco.read_text())
    for image in coco["images"]:
        name = image["file_name"].split("-", 1)[1][:-4]
        truth = np.asarray(Image.open(demo.masks / f"{name}.png"))
        from_polygons = _coco_mask(coco, image, 2.0)
        assert from_polygons.shape == truth.shape
        assert _iou(from_polygons, truth) > 0.99
        assert np.array_equal(from_polygons, truth)  # same polygons, same rasteriser


def test_masks_through_skyseg_annotations(demo):
    labels = load_coco(demo.coco)
    assert labels.stems() == demo.scenes  # upload prefixes stripped
    matched, missing = match_images(labels, demo.images, mode="hdr")
    assert missing == [] and [(p.name, s) for p, s in matched] == [
        (f"{name}.exr", name) for name in demo.scenes]
    for path, stem in matched:
        truth = np.asarray(Image.open(demo.masks / f"{stem}.png"))
        assert truth.shape == read_image(path).shape[:2]
        mask = labels.mask(stem, *truth.shape)  # scaled x2 from the preview
        assert _iou(mask, truth) > 0.99
        assert np.mean(mask != truth) < 0.001


@pytest.mark.parametrize("theme", THEMES)
def test_rendered_sky_is_the_labelled_sky(theme):
    """The image shows sky exactly where the polygons say (anti-aliased edges aside)."""
    for seed in range(2):
        scene = make_scene("s", np.random.default_rng([3, seed]), width=512, theme=theme,
                           ev=0.0)
        image, alpha = render_scene(scene)
        truth = scene_mask(scene)
        # Rooms: the sky is a few small window panes, so their edges weigh more.
        assert _iou(alpha > 0.5, truth) > (0.95 if theme == "indoor" else 0.99)
        assert np.mean((alpha > 0.5) != truth.astype(bool)) < 0.002
        assert np.isfinite(image).all() and image.min() >= 0


def test_non_sky_objects_inside_the_sky(demo):
    coco = json.loads(demo.coco.read_text())
    meta = json.loads((demo.out_dir / "demo.json").read_text())
    kinds = set()
    for image, scene in zip(coco["images"], meta["scenes"], strict=True):
        height, width = image["height"], image["width"]
        own = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        sky = _coco_mask({**coco, "annotations": [a for a in own if a["category_id"] == 1]},
                         image, 1.0).astype(bool)
        holes = 0
        for annotation in own:
            if annotation["category_id"] == 2:
                rle = mask_utils.frPyObjects(annotation["segmentation"], height, width)
                holes += int((mask_utils.decode(mask_utils.merge(rle)).astype(bool) & sky).sum())
        if scene["theme"] != "indoor":
            assert holes > 0, f"{scene['name']}: no non-sky object cuts into the sky"
        kinds |= set(scene["objects"])
    assert {"pole", "wire", "bird", "crown"} <= kinds
    assert {"building", "conifer", "far_hills", "trunk"} <= kinds


def test_ground_below_the_horizon_is_not_sky(demo):
    for name in demo.scenes:
        if name == "scene_001":  # the room
            continue
        mask = np.asarray(Image.open(demo.masks / f"{name}.png"))
        assert mask[64:].sum() == 0  # everything below the horizon row
        assert mask[0].all()  # the zenith is sky
        assert 0.25 < mask.mean() < 0.5


# ---------------------------------------------------------------- scene kinds: what sky is

def _scene(theme, seed, width=512):
    scene = make_scene("k", np.random.default_rng([11, seed]), width=width, theme=theme, ev=0.0)
    image, alpha = render_scene(scene)
    return scene, image, alpha, scene_mask(scene)


def test_indoor_sky_only_through_windows_and_a_small_share():
    shares, lamp_ratios, daylit = [], [], []
    for seed in range(8):
        scene, image, _, mask = _scene("indoor", seed)
        windows = np.zeros(mask.shape, bool)
        for window in scene.room["windows"]:
            for part in window["outline"]:
                row0, block = polygon_coverage(part, *mask.shape)
                windows[row0:row0 + len(block)] |= block > 0
        assert not (mask.astype(bool) & ~windows).any()  # walls, ceiling, lamps: not sky
        assert mask[:40].sum() == 0  # the bright ceiling overhead is not sky
        shares.append(mask.mean())
        lum = luminance(image)
        walls = np.median(lum[mask == 0])
        if scene.room.get("daylit"):
            daylit.append(scene.room)
            assert not any("centre" in lamp for lamp in scene.room["lamp_panels"])
        else:
            lamp_ratios.append(lum[mask == 0].max() / walls)
    assert max(shares) < 0.1 and sum(share > 0 for share in shares) >= 3
    assert min(lamp_ratios) > 20  # lamps and softboxes far brighter than the walls
    # Some are daylit flats: a plain bright ceiling without lamps, walls near the sky's level.
    assert daylit and all(room["level"] >= 0.4 for room in daylit)


def test_lake_reflection_of_the_sky_is_not_sky():
    scene, image, _, mask = _scene("lake", 0)
    height, width = mask.shape
    rows = int(scene.water * width / 360)
    assert rows > 10
    water = slice(height // 2 + 1, height // 2 + rows // 2)
    assert mask[water].sum() == 0 and mask[height // 2:].sum() == 0
    lum = luminance(image)
    reflection = image[water].reshape(-1, 3)
    sky = image[height // 4: height // 2][mask[height // 4: height // 2] == 1]
    # Bright and blue like the sky it mirrors, yet labelled 0.
    assert np.median(luminance(reflection)) > 0.3 * np.median(luminance(sky))
    assert np.median(reflection[:, 2]) > np.median(reflection[:, 0])
    near_sky, near_water = lum[height // 2 - 3], lum[height // 2 + 2]  # mirrored rows agree
    assert np.corrcoef(np.log(near_sky + 1e-6), np.log(near_water + 1e-6))[0, 1] > 0.5


def test_tilted_horizon_label_follows_the_tilt():
    for seed in range(3):
        scene, _, alpha, mask = _scene("tilted", seed)
        height, width = mask.shape
        assert 6 <= scene.tilt[1] <= 20
        # Where the tilted camera sees the world's horizon, column by column.
        ys, xs = np.mgrid[0:height, 0:width] + 0.5
        azimuth, elevation = xs / width * 2 * np.pi, np.pi / 2 - ys / height * np.pi
        camera = np.stack([np.cos(elevation) * np.cos(azimuth),
                           np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=-1)
        world_up = camera @ tilt_rotation(*scene.tilt)[:, 2]
        horizon = (world_up > 0).sum(axis=0)  # rows above the horizon per column
        lowest_sky = height - np.argmax(mask[::-1], axis=0)  # one past the lowest sky row
        assert np.all(lowest_sky <= horizon + 1)  # never sky below the horizon
        amplitude = scene.tilt[1] * width / 360
        assert horizon.max() - horizon.min() > 1.8 * amplitude - 2
        # The label boundary rises and falls with the tilted horizon ...
        assert np.corrcoef(lowest_sky, horizon)[0, 1] > 0.6
        # ... and is the level scene's label seen through the tilted camera.
        level = np.zeros(mask.shape, bool)
        for polygon in scene.level_labels[0]:
            row0, block = polygon_coverage(polygon, height, width)
            level[row0:row0 + len(block)] |= block > 0.5
        for _, polygon in scene.level_labels[1]:
            row0, block = polygon_coverage(polygon, height, width)
            level[row0:row0 + len(block)] &= ~(block > 0.5)
        world = camera @ tilt_rotation(*scene.tilt)
        level_x = np.mod(np.arctan2(world[..., 1], world[..., 0]), 2 * np.pi) / (2 * np.pi)
        level_y = (np.pi / 2 - np.arcsin(np.clip(world[..., 2], -1, 1))) / np.pi
        seen = level[np.minimum((level_y * height).astype(int), height - 1),
                     np.minimum((level_x * width).astype(int), width - 1)]
        assert np.mean(seen != mask.astype(bool)) < 0.005
        assert np.mean((alpha > 0.5) != mask.astype(bool)) < 0.003
        assert mask[0].all()  # the camera's zenith is still sky


def test_night_sky_is_dark_and_still_sky():
    scene, image, _, mask = _scene("night", 1)
    lum = luminance(image)
    height = mask.shape[0]
    sky = lum[mask == 1]
    assert mask[0].all() and mask[height // 2:].sum() == 0 and mask.mean() > 0.3
    assert np.median(sky) < 2 * NIGHT_LEVEL * SKY_LEVEL  # about 7 stops below a day sky
    assert lum[mask == 0].max() > 100 * np.median(sky)  # street lamps, lit windows
    assert "lamp" in scene.object_counts() or "building" in scene.object_counts()
    x, y = scene.sun_xy  # the moon: a bright disc in the dark sky
    assert lum[int(y), int(x)] > 1000 * np.median(sky)


def test_overcast_sky_over_white_buildings_alike_but_labelled_apart():
    scene, image, _, mask = _scene("overcast", 2)
    height, width = mask.shape
    buildings = np.zeros(mask.shape, bool)
    for kind, polygon, _ in scene.ground:
        if kind == "building":
            row0, block = polygon_coverage(polygon, height, width)
            buildings[row0:row0 + len(block)] |= block > 0.99
    assert buildings.sum() > 200 and mask[buildings].sum() == 0
    lum = luminance(image)
    low_sky = (mask == 1) & (np.arange(height)[:, None] > height / 2 - 40)
    ratio = np.median(lum[buildings]) / np.median(lum[low_sky])
    assert 0.3 < ratio < 3  # as bright as the sky behind them
    for region in (buildings, low_sky):  # both nearly grey
        r, _, b = np.median(image[region], axis=0)
        assert 0.7 < b / r < 1.4
    assert image[mask == 1].max() < 10 * np.median(lum[mask == 1])  # no sun
    assert mask[0].all()


def test_cloudy_skies_are_mostly_cloud_and_all_sky():
    for seed in range(2):
        scene, image, _, mask = _scene("cloudy", seed)
        assert scene.cloud_cover >= 1.2
        clear, _ = render_scene(dataclasses.replace(scene, cloud_cover=0.0))
        def blueness(rgb):
            return rgb[..., 2] / (rgb.sum(axis=-1) + 1e-9)

        changed = ((np.abs(luminance(image) / luminance(clear) - 1) > 0.1)
                   | (np.abs(blueness(image) - blueness(clear)) > 0.03))
        assert changed[mask == 1].mean() > 0.5  # clouds fill most of the sky; labelled sky
        assert mask[0].all() and mask.mean() > 0.3


def test_demo_mix_has_every_kind_and_sunny_scenes_keep_the_sun_ratio():
    records, _, train, val = _plan(28, 128, seed=0)
    themes = [scene.theme for scene in records]
    assert set(themes) == set(THEMES) and themes.count("indoor") == 7
    assert SUN_RATIO >= 1e4
    assert {scene.theme for scene in records if scene.sun_visible} == {
        "town", "seam", "forest", "open", "lake", "cloudy", "tilted"}


# ---------------------------------------------------------------- radiance

def test_sun_is_10000_times_the_sky_around_it(demo):
    meta = json.loads((demo.out_dir / "demo.json").read_text())
    sunny = [scene for scene in meta["scenes"] if scene["sun"] is not None]
    assert [scene["theme"] for scene in sunny] == ["town", "seam"]  # not overcast, not indoor
    for scene in sunny:
        image = read_image(demo.images / f"{scene['name']}.exr")
        mask = np.asarray(Image.open(demo.masks / f"{scene['name']}.png"))
        gamma, radius = _sun_geometry(scene, *image.shape[:2])
        lum = luminance(image)
        disc = lum[gamma < 0.5 * radius]
        around = (gamma > 3 * radius) & (gamma < 6 * radius)
        assert disc.size >= 1 and mask[around].all()  # the sun stands in clear sky
        assert disc.mean() >= 1e4 * np.median(lum[around]), scene["name"]
        # A glow: right next to the disc the sky is brighter than further out.
        near = np.median(lum[(gamma > 1.5 * radius) & (gamma < 2.5 * radius)])
        far = np.median(lum[(gamma > 10 * radius) & (gamma < 14 * radius) & (mask == 1)])
        assert near > 2 * far


def test_sky_gradient_bluer_at_zenith_brighter_at_horizon():
    scene = make_scene("g", np.random.default_rng(5), width=256, theme="open", ev=0.0)
    scene = dataclasses.replace(scene, cloud_cover=0.0)
    image, alpha = render_scene(scene)
    sky = alpha > 0.99
    zenith, low = image[2][sky[2]].mean(axis=0), None
    for row in range(60, 40, -1):  # the lowest rows that are sky all around
        if sky[row].mean() > 0.5:
            low = image[row][sky[row]].mean(axis=0)
            break
    assert low is not None
    assert zenith[2] / zenith[0] > low[2] / low[0]  # bluer up high
    assert luminance(low[None])[0] > luminance(zenith[None])[0]  # brighter down low


def test_exposures_spread_over_seven_ev(demo):
    scenes = json.loads((demo.out_dir / "demo.json").read_text())["scenes"]
    evs = [s["ev"] for s in scenes]
    assert min(evs) == EV_RANGE[0] and max(evs) == EV_RANGE[1]
    for scene in scenes:  # the radiance follows the exposure
        image = read_image(demo.images / f"{scene['name']}.exr")
        level = np.log2(np.median(luminance(image))) - scene["ev"]
        assert np.log2(SKY_LEVEL) - 4 < level < np.log2(SKY_LEVEL) + 2, scene
    scene = make_scene("e", np.random.default_rng(2), width=128, theme="night", ev=0.0)
    brighter = dataclasses.replace(scene, ev=3.0)
    dark, bright = render_scene(scene)[0], render_scene(brighter)[0]
    assert np.allclose(bright, dark * 8, rtol=1e-5, atol=1e-9)


def test_exr_is_half_float_and_finite(demo):
    image, info = read_image(demo.images / "scene_000.exr", return_info=True)
    assert info.source_dtype == "float16" and info.is_hdr and info.channels == "RGB"
    assert image.max() < 65504 and image.min() >= 0


def test_previews_are_what_the_previews_stage_makes(demo, tmp_path):
    for name in demo.scenes:
        write_jpeg(tmp_path / "p.jpg", make_preview(demo.images / f"{name}.exr", max_size=128))
        assert (tmp_path / "p.jpg").read_bytes() == (demo.previews / f"{name}.jpg").read_bytes()


# ---------------------------------------------------------------- wrap-around

def test_seam_scene_has_the_sun_at_x0_and_a_continuous_skyline(demo):
    meta = json.loads((demo.out_dir / "demo.json").read_text())
    seam = next(s for s in meta["scenes"] if s["theme"] == "seam")
    room = next(s for s in meta["scenes"] if s["theme"] == "indoor")["name"]
    x, radius = seam["sun"]["x"], seam["sun"]["radius_px"]
    assert min(x, 256 - x) <= 2.5 * radius
    for name in demo.scenes:
        mask = np.asarray(Image.open(demo.masks / f"{name}.png"))
        if name != room:
            assert np.mean(mask[:, 0] != mask[:, -1]) < 0.03  # no step at the seam
    # A building straddles the seam: both edges of the seam scene rise above the hills.
    scene = _plan(4, 256, 7)[0][2]
    assert scene.theme == "seam"
    buildings = [polygon for kind, polygon, _ in scene.ground if kind == "building"]
    assert any(p[:, 0].min() == 0.0 for p in buildings)
    assert any(p[:, 0].max() == 256.0 for p in buildings)


def test_wrap_polygon_splits_at_the_seam():
    square = np.array([[-3.0, 2.0], [5.0, 2.0], [5.0, 6.0], [-3.0, 6.0]])
    parts = wrap_polygon(square, 100.0, 50.0)
    assert sorted((p[:, 0].min(), p[:, 0].max()) for p in parts) == [(0.0, 5.0), (97.0, 100.0)]
    assert sum(_area(p) for p in parts) == pytest.approx(32.0)


def test_skyline_is_the_exact_upper_envelope(rng):
    pieces = []
    for _ in range(12):  # as in scenes: each piece rises from below the horizon (y = 45)
        xs = np.sort(rng.uniform(-20, 120, 6))
        pieces.append((xs, np.r_[50.0, rng.uniform(5, 40, 4), 50.0]))
    outline = upper_envelope(pieces, 100.0, 45.0)
    assert outline[0, 0] == 0 and outline[-1, 0] == 100 and np.all(np.diff(outline[:, 0]) >= 0)
    dense = np.linspace(0, 100, 20001)
    brute = np.full_like(dense, 45.0)
    for xs, ys in pieces:
        for shift in (-100, 0, 100):
            brute = np.minimum(brute, np.interp(dense, xs + shift, ys, left=np.inf,
                                                right=np.inf))
    assert np.abs(np.interp(dense, outline[:, 0], outline[:, 1]) - brute).max() < 1e-6


def test_pixels_and_directions_round_trip(rng):
    x, y = rng.uniform(0, 64, 50), rng.uniform(0, 32, 50)
    back_x, back_y = angles_to_pixels(*pixels_to_angles(x, y, 64, 32), 64, 32)
    assert np.allclose(back_x, x, atol=1e-9) and np.allclose(back_y, y, atol=1e-9)
    azimuth, elevation = rng.uniform(0, 2 * np.pi, 50), rng.uniform(-1.5, 1.5, 50)
    back_azimuth, back_elevation = angles(direction(azimuth, elevation))
    assert np.allclose(back_azimuth, azimuth) and np.allclose(back_elevation, elevation)
    # x = 16 is azimuth 90 degrees (the y axis), y = 0 the zenith
    assert np.allclose(direction(*pixels_to_angles(16.0, 0.0, 64, 32)), [0.0, 0.0, 1.0])
    assert np.allclose(direction(*pixels_to_angles(16.0, 16.0, 64, 32)), [0.0, 1.0, 0.0])


def test_unwrap_x_follows_a_path_across_the_seam():
    x = np.array([10.0, 2.0, 95.0, 90.0, 95.0, 3.0])
    assert unwrap_x(x, 100.0).tolist() == [10.0, 2.0, -5.0, -10.0, -5.0, 3.0]


@pytest.mark.parametrize("module", ["geometry", "painting", "records", "rooms", "scenes",
                                    "synthetic"])
def test_docstring_examples(module):
    assert doctest.testmod(importlib.import_module(f"skyseg.demo.{module}")).failed == 0


# ---------------------------------------------------------------- rasteriser

def test_polygon_coverage_exact_on_a_square_and_area_preserving():
    row0, block = polygon_coverage(np.array([[1.5, 1.0], [3.25, 1.0], [3.25, 2.5], [1.5, 2.5]]),
                                   4, 5)
    assert row0 == 1
    assert block.tolist() == [[0.0, 0.5, 1.0, 0.25, 0.0], [0.0, 0.25, 0.5, 0.125, 0.0]]
    triangle = np.array([[2.3, 1.1], [17.6, 4.9], [6.2, 13.7]])
    _, block = polygon_coverage(triangle, 20, 20, subrows=16)
    (ax, ay), (bx, by) = triangle[1] - triangle[0], triangle[2] - triangle[0]
    area = abs(ax * by - ay * bx) / 2
    assert block.sum() == pytest.approx(area, rel=2e-3)


def test_polygon_coverage_agrees_with_pycocotools(rng):
    for _ in range(5):
        centre = rng.uniform(10, 30, 2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        polygon = centre + rng.uniform(3, 9, (9, 1)) * np.column_stack([np.cos(angles),
                                                                       np.sin(angles)])
        row0, block = polygon_coverage(polygon, 40, 40, subrows=16)
        coverage = np.zeros((40, 40))
        coverage[row0:row0 + len(block)] = block
        rle = mask_utils.frPyObjects([polygon.ravel().tolist()], 40, 40)
        theirs = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
        # Both take a pixel when its centre is inside (pycocotools approximately).
        differ = (coverage > 0.5) != theirs
        assert differ.sum() <= 0.08 * theirs.sum()
        assert np.sum((coverage[differ] < 0.1) | (coverage[differ] > 0.9)) == 0


# ---------------------------------------------------------------- seed, split, resume

def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = make_demo_data(tmp_path / "a", scenes=3, width=128, seed=11)
    make_demo_data(tmp_path / "b", scenes=3, width=128, seed=11)
    make_demo_data(tmp_path / "c", scenes=3, width=128, seed=12)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b and len(a) == 3 * 3 + 5
    assert a["result.json"] != c["result.json"]
    assert a["images/scene_000.exr"] != c["images/scene_000.exr"]
    assert first.train and first.val and not set(first.train) & set(first.val)


def test_split_disjoint_about_a_quarter_held_out():
    for scenes in (2, 3, 8, 16, 30):
        records, prefixes, train, val = _plan(scenes, 64, seed=scenes)
        names = [scene.name for scene in records]
        assert not set(train) & set(val) and sorted(train + val) == names
        assert len(val) == max(1, round(scenes / 4))
        assert len(set(prefixes)) == scenes
    for scenes, seed in ((16, 0), (28, 0), (28, 5)):
        records, _, train, val = _plan(scenes, 64, seed=seed)
        themes = {scene.name: scene.theme for scene in records}
        held_out = [themes[name] for name in val]
        # Rooms and outdoor scenes of several kinds are held out, and trained on.
        assert "indoor" in held_out and len(set(held_out)) == len(held_out)
        assert [themes[name] for name in train].count("indoor") >= 2
    _, _, train, val = _plan(1, 64, seed=0)
    assert train == ["scene_000"] and val == []


def test_split_files(demo):
    train = (demo.out_dir / "train.txt").read_text().split()
    val = (demo.out_dir / "val.txt").read_text().split()
    assert train == demo.train and val == demo.val and len(val) == 1
    assert sorted(train + val) == demo.scenes


def test_second_run_reuses_everything_and_resume_fills_gaps(tmp_path):
    out = tmp_path / "demo"
    make_demo_data(out, scenes=3, width=128, seed=2)
    before = _files(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = make_demo_data(out, scenes=3, width=128, seed=2)
    assert again.written == [] and len(again.reused) == len(before)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    # A killed run: some outputs missing, a stray temporary file left behind.
    for name in ("previews/scene_001.jpg", "masks/scene_002.png", "images/scene_000.exr",
                 "result.json"):
        (out / name).unlink()
    (out / "images" / ".scene_000.1a2b3c4d.tmp.exr").write_bytes(b"half")
    resumed = make_demo_data(out, scenes=3, width=128, seed=2)
    assert sorted(p.relative_to(out).as_posix() for p in resumed.written) == [
        "images/scene_000.exr", "masks/scene_002.png", "previews/scene_001.jpg", "result.json"]
    assert _files(out) == before


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    out = tmp_path / "demo"
    make_demo_data(out, scenes=3, width=128, seed=2)
    with pytest.raises(ConfigError, match=r"other settings.*--overwrite"):
        make_demo_data(out, scenes=3, width=128, seed=3)
    with pytest.raises(ConfigError, match="other settings"):
        make_demo_data(out, scenes=2, width=128, seed=2)
    redone = make_demo_data(out, scenes=2, width=128, seed=3, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["scene_000.exr",
                                                                  "scene_001.exr"]
    assert len(redone.written) == 2 * 3 + 5
    assert _files(out) == _files(make_demo_data(tmp_path / "fresh", scenes=2, width=128,
                                                seed=3).out_dir)


def test_outputs_without_demo_json_are_regenerated(tmp_path):
    out = tmp_path / "demo"
    make_demo_data(out, scenes=2, width=64, seed=1)
    (out / "demo.json").unlink()  # nothing says which settings made the rest
    make_demo_data(out, scenes=2, width=64, seed=2)
    assert _files(out) == _files(make_demo_data(tmp_path / "fresh", scenes=2, width=64,
                                                seed=2).out_dir)


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a demo-data folder.*notes.txt"):
        make_demo_data(tmp_path, scenes=1, width=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_output_folder_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageWriteError, match="is a file, not a folder"):
        make_demo_data(tmp_path / "file", scenes=1, width=64)
    with pytest.raises(ImageWriteError, match="demo: cannot create the output folder.*writable --out"):
        make_demo_data(tmp_path / "file" / "demo", scenes=1, width=64)


def test_options_object_keywords_and_command_line_agree(tmp_path):
    options = DemoOptions(scenes=2, width=64, seed=5)
    by_object = make_demo_data(tmp_path / "a", options)
    by_keywords = make_demo_data(tmp_path / "b", scenes=2, width=64, seed=5)
    assert _files(by_object.out_dir) == _files(by_keywords.out_dir)
    overridden = make_demo_data(tmp_path / "c", options, seed=6)
    assert json.loads((overridden.out_dir / "demo.json").read_text())["settings"]["seed"] == 6
    assert options.seed == 5  # the caller's object is not changed
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", "d", "--scenes", "2", "--width", "64", "--seed", "5"])
    assert from_args(DemoOptions, args) == options
    assert from_args(DemoOptions, parser.parse_args(["--out", "d"])) == DemoOptions(
        scenes=64, width=1024, seed=0, overwrite=False)
    with pytest.raises(TypeError, match="colour"):
        make_demo_data(tmp_path / "d", colour="blue")


@pytest.mark.parametrize(("settings", "message"), [
    ({"width": 130}, "--width must be a multiple of 4"),
    ({"width": 32}, "--width must be a multiple of 4 from 64"),
    ({"scenes": 0}, "--scenes must be a positive whole number"),
    ({"scenes": 2.5}, "--scenes must be a positive whole number"),
    ({"seed": -1}, "--seed must be a whole number >= 0"),
])
def test_bad_settings(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        make_demo_data(tmp_path / "demo", **settings)
    assert not (tmp_path / "demo").exists()


# ---------------------------------------------------------------- CLI

def test_cli_stage_first_and_one_line_errors(tmp_path, cli):
    assert next(iter(STAGES)) == "demo-data"
    result = cli("demo-data", "--out", tmp_path / "d", "--scenes", "2", "--width", "64",
                 "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "result.json").is_file()
    assert "demo-data: 2 scenes (1 train, 1 val)" in result.stderr
    result = cli("demo-data", "--out", tmp_path / "d", "--scenes", "2", "--width", "64")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skyseg demo-data: error: --out")
    (tmp_path / "f").write_text("x")
    result = cli("demo-data", "--out", tmp_path / "f")
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr

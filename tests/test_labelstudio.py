"""Masks -> Label Studio polygon pre-annotations -> masks again (and on into build-dataset)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from skyseg.errors import AnnotationError, ConfigError
from skyseg.labels.annotations import load_coco
from skyseg.labels.labelstudio import (
    LABELSTUDIO_FILE,
    TaskCollector,
    certainty_score,
    mask_polygons,
    mask_to_result,
    mask_to_task,
    result_to_mask,
    task_to_mask,
    tasks_to_coco,
)

#: The fields Label Studio documents for a polygon result (PolygonLabels tag,
#: "Sample Results JSON", and the pre-annotation guide: id, from_name, to_name, type).
RESULT_KEYS = {"id", "type", "from_name", "to_name", "original_width", "original_height",
               "image_rotation", "value"}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def points(result) -> int:
    return sum(len(region["value"]["points"]) for region in result)


def skyline(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Sky above a hilly horizon with bumps down to ~10 px wide (trees, roofs far away)."""
    rng = np.random.default_rng(seed)
    x = np.arange(width) / 1024
    horizon = height * 0.4 + sum(
        amplitude * np.sin(2 * np.pi * cycles * x + rng.uniform(0, 2 * np.pi))
        for cycles, amplitude in ((1.5, 40), (7, 12), (23, 5), (61, 2.5), (97, 1.5)))
    rows = np.arange(height)[:, None]
    return (rows < horizon[None, :]).astype(np.uint8)


def several_regions_with_holes(height: int = 512, width: int = 1024) -> np.ndarray:
    mask = skyline(512, 1024)
    mask[40:43, 80:600] = 0                                  # a wire: a 3-px hole
    cv2.circle(mask, (700, 90), 30, 0, -1)                   # a round hole (a lamp)
    mask[60:150, 850:980] = 0                                # a tree crown ...
    mask[85:110, 880:920] = 1                                # ... with sky through it ...
    mask[95:100, 895:900] = 0                                # ... with a leaf in that sky
    cv2.circle(mask, (300, 420), 35, 1, -1)                  # sky in a puddle (second region)
    cv2.ellipse(mask, (800, 430), (60, 20), 15, 0, 360, 1, -1)  # third region
    mask[470, 100] = 1                                       # a single sky pixel
    if (height, width) != mask.shape:
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return mask


# --------------------------------------------------------------------------- round trips


def test_several_regions_with_holes_and_islands_redraw_the_mask():
    mask = several_regions_with_holes()
    result = mask_to_result(mask)
    drawn = result_to_mask(result)
    assert drawn.shape == mask.shape and drawn.dtype == np.uint8
    assert iou(drawn, mask) >= 0.98
    assert points(result) <= 400  # per 1024-px image
    labels = [region["value"]["polygonlabels"] for region in result]
    # 3 sky regions + the sky inside the tree + the single pixel; wire, lamp, tree + the leaf
    assert labels.count(["sky"]) == 5 and labels.count(["non-sky"]) == 4
    # Every pixel that differs lies on a sky/not-sky boundary.
    edge = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3))),
                      np.ones((3, 3)))
    assert not ((drawn != mask) & (edge == 0)).any()
    # The sky seen through the tree and the leaf inside it survive.
    assert drawn[90:105, 885:915].sum() == mask[90:105, 885:915].sum()
    assert drawn[97, 897] == 0 and drawn[420, 300] == drawn[420, 268] == 1
    assert drawn[470, 100] == 1


def test_without_simplification_the_mask_is_redrawn_exactly():
    mask = several_regions_with_holes(256, 512)
    np.testing.assert_array_equal(result_to_mask(mask_to_result(mask, tolerance=0)), mask)


def test_empty_mask_gives_a_task_with_no_result():
    task = mask_to_task(np.zeros((40, 60), np.uint8), "empty.jpg")
    assert task == {"data": {"image": "empty.jpg"}, "predictions": [{"result": []}]}
    np.testing.assert_array_equal(task_to_mask(task, 40, 60), np.zeros((40, 60)))
    with pytest.raises(ConfigError, match="pass height and width"):
        task_to_mask(task)


def test_full_sky_is_one_rectangle_on_the_image_border():
    result = mask_to_result(np.ones((30, 50), np.uint8))
    assert len(result) == 1
    assert sorted(map(tuple, result[0]["value"]["points"])) == [
        (0.0, 0.0), (0.0, 100.0), (100.0, 0.0), (100.0, 100.0)]


def test_panorama():
    height, width = 1024, 2048
    mask = skyline(height, width, seed=3)
    mask[200:204, :] = 0                        # a cable around the whole panorama
    cv2.circle(mask, (0, 300), 60, 0, -1)      # a tower cut by the x = 0 seam
    cv2.circle(mask, (width, 300), 60, 0, -1)
    mask[100:160, 900:1000] = 0
    result = mask_to_result(mask)
    assert iou(result_to_mask(result), mask) >= 0.98
    assert points(result) <= 400 * width / 1024
    assert {r["original_width"] for r in result} == {width}
    # Drawn at the size of a smaller preview, the polygons scale with it.
    assert iou(result_to_mask(result, 256, 512), cv2.resize(mask, (512, 256),
                                                             interpolation=cv2.INTER_AREA)) > 0.95


def test_real_camvid_labels_round_trip(camvid):
    """Street scenes with trees and poles: fine detail at 480x360, where the tolerance
    gets finer to keep IoU >= 0.99; still fewer points than the hand-traced polygons."""
    data = json.loads((camvid / "result.json").read_text())
    labels = load_coco(camvid / "result.json")
    names = {image["id"]: image["file_name"] for image in data["images"]}
    traced = {}
    for annotation in data["annotations"]:
        stem = names[annotation["image_id"]].rsplit("-", 1)[-1].rsplit(".", 1)[0]
        traced[stem] = traced.get(stem, 0) + sum(len(p) // 2 for p in annotation["segmentation"])
    stems = [s for s in labels.stems() if s.startswith("0001TP")][::6]
    for stem in stems:
        mask = labels.mask(stem, 360, 480)
        result = mask_to_result(mask)
        assert iou(result_to_mask(result, 360, 480), mask) >= 0.99, stem
        assert points(result) <= traced.get(stem, 0), stem
    coarse = mask_to_result(labels.mask(stems[0], 360, 480), min_iou=None)
    assert points(coarse) <= points(mask_to_result(labels.mask(stems[0], 360, 480)))


# --------------------------------------------------------------------------- format


def test_json_fields_are_those_label_studio_documents():
    mask = several_regions_with_holes(64, 128)
    task = mask_to_task(mask, "https://example.org/sky/a.jpg", from_name="sky_polygons",
                        to_name="photo", model_version="skyseg run-1", score=0.93)
    encoded = json.loads(json.dumps(task))  # plain JSON types only
    assert encoded == task
    assert set(task) == {"data", "predictions"} and task["data"] == {
        "image": "https://example.org/sky/a.jpg"}
    prediction = task["predictions"][0]
    assert prediction["model_version"] == "skyseg run-1" and prediction["score"] == 0.93
    ids = [region["id"] for region in prediction["result"]]
    assert len(set(ids)) == len(ids)
    for region in prediction["result"]:
        assert set(region) == RESULT_KEYS
        assert region["type"] == "polygonlabels"
        assert (region["from_name"], region["to_name"]) == ("sky_polygons", "photo")
        assert (region["original_width"], region["original_height"]) == (128, 64)
        assert region["image_rotation"] == 0 and isinstance(region["id"], str)
        value = region["value"]
        assert set(value) == {"points", "polygonlabels", "closed"}
        assert value["polygonlabels"] in (["sky"], ["non-sky"])
        xy = np.asarray(value["points"])
        assert xy.ndim == 2 and xy.shape[1] == 2 and len(xy) >= 3
        assert 0 <= xy.min() and xy.max() <= 100


def test_mask_polygons_in_pixels_and_order():
    mask = np.zeros((6, 6), np.uint8)
    mask[1:5, 1:5] = 1
    mask[2:4, 2:4] = 0
    (sky_label, sky), (hole_label, hole) = mask_polygons(mask)
    assert (sky_label, hole_label) == ("sky", "non-sky")
    # a quarter pixel inside the sky pixels, on both sides of the ring
    assert sky.min() == 1.25 and sky.max() == 4.75
    assert hole.min() == 1.75 and hole.max() == 4.25


def test_certainty_score():
    assert certainty_score(np.array([[0.0, 1.0], [0.5, 0.75]], np.float32)) == 0.625
    assert certainty_score(np.zeros((3, 3))) == 1.0


@pytest.mark.parametrize(("mask", "options", "message"), [
    (np.full((4, 4), 255, np.uint8), {}, "divide a 0/255 mask PNG by 255"),
    (np.full((4, 4), 0.7, np.float32), {}, "threshold probabilities first"),
    (np.zeros((2, 3, 3), np.uint8), {}, "2-D array"),
    (np.zeros((4, 4), np.uint8), {"tolerance": -1}, "tolerance must be"),
    (np.zeros((4, 4), np.uint8), {"from_name": ""}, "from_name must be a tag name"),
])
def test_bad_masks_and_options(mask, options, message):
    with pytest.raises(ConfigError, match=message):
        mask_to_result(mask, **options)


def test_malformed_results_are_annotation_errors():
    region = mask_to_result(np.ones((4, 4), np.uint8))[0]
    del region["original_width"]
    with pytest.raises(AnnotationError, match="lacks original_width"):
        result_to_mask([region])
    region = mask_to_result(np.ones((4, 4), np.uint8))[0]
    region["value"]["points"] = region["value"]["points"][:2]
    with pytest.raises(AnnotationError, match="a polygon needs at least 3"):
        result_to_mask([region])


def test_other_labels_and_tags_are_ignored():
    result = mask_to_result(np.ones((4, 4), np.uint8))
    other = json.loads(json.dumps(result[0]))
    other["value"]["polygonlabels"] = ["tree"]
    assert result_to_mask([other], 4, 4).sum() == 0
    assert result_to_mask(result, 4, 4, from_name="other").sum() == 0
    assert result_to_mask(result, from_name="label").sum() == 16


# --------------------------------------------------------------------------- collector, COCO


def test_collector_writes_the_succeeded_tasks_in_order(tmp_path):
    collector = TaskCollector(image_url_prefix="/data/local-files/?d=sky/",
                              from_name="tag", to_name="img", model_version="m")
    probability = np.zeros((20, 30), np.float32)
    probability[:8] = 0.9
    collector.add("b.jpg", probability)
    collector.add("a.jpg", np.zeros((20, 30), np.float32))
    collector.add("failed.jpg", probability)
    path = collector.write(tmp_path / LABELSTUDIO_FILE, ["a.jpg", "b.jpg", "missing.jpg"])
    tasks = json.loads(path.read_text())
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=sky/a.jpg",
                                                    "/data/local-files/?d=sky/b.jpg"]
    assert tasks[0]["predictions"][0]["result"] == []
    assert tasks[1]["predictions"][0]["model_version"] == "m"
    assert tasks[1]["predictions"][0]["score"] == pytest.approx((8 * 0.8 + 12 * 1.0) / 20)
    assert {r["from_name"] for r in tasks[1]["predictions"][0]["result"]} == {"tag"}
    np.testing.assert_array_equal(task_to_mask(tasks[1]), probability > 0.5)
    assert [p.name for p in tmp_path.iterdir()] == [LABELSTUDIO_FILE]
    with pytest.raises(ConfigError, match="--labelstudio-to-name must be the name"):
        TaskCollector(to_name=" ")


def test_corrected_tasks_flow_through_the_coco_reader_into_build_dataset(tmp_path):
    """Pre-annotate, 'correct' (delete a hole), export as COCO, build the patch dataset."""
    import imagecodecs

    from skyseg.data.dataset import build_dataset
    from skyseg.io import write_png

    mask = several_regions_with_holes(128, 256)
    task = mask_to_task(mask, "/data/local-files/?d=photos/scene.png")
    corrected = json.loads(json.dumps(task))
    result = corrected["predictions"][0]["result"]
    wire = next(r for r in result if r["value"]["polygonlabels"] == ["non-sky"])
    result.remove(wire)
    corrected["annotations"] = [{"result": result}]
    del corrected["predictions"]
    expected = result_to_mask(result)
    assert iou(expected, mask) >= 0.9 and (expected != mask).any()

    ground = mask_to_task(np.zeros((128, 256), np.uint8), "ground.png")  # no sky at all
    coco = tasks_to_coco([corrected, ground])
    assert [i["file_name"] for i in coco["images"]] == ["images/scene.png", "images/ground.png"]
    (tmp_path / "result.json").write_text(json.dumps(coco))
    labels = load_coco(tmp_path / "result.json")
    np.testing.assert_array_equal(labels.mask("scene", 128, 256), expected)

    images = tmp_path / "photos"
    images.mkdir()
    for name in ("scene", "ground"):
        write_png(images / f"{name}.png", np.full((128, 256, 3), 90, np.uint8))
    build = build_dataset(tmp_path / "result.json", images, tmp_path / "data", mode="ldr",
                          patch_size=128, stride=128, split=(0.5, 0.5), seed=0)
    assert build.exit_code == 0
    with open(tmp_path / "data" / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if "scene" in row["source"]]
    assert len(rows) == 2
    tiles = []
    for row in sorted(rows, key=lambda r: int(r["col"])):
        path = tmp_path / "data" / f"Y_{row['split']}" / row["split"] / f"{row['id']}.png"
        tiles.append(imagecodecs.png_decode(path.read_bytes()))
    np.testing.assert_array_equal(np.concatenate(tiles, axis=1), expected)

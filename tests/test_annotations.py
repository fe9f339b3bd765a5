"""Label Studio COCO -> sky masks (skyseg.labels.annotations).

Pixel convention under test: COCO coordinates are continuous, the image spans
``[0, W] x [0, H]`` and pixel (row i, column j) is the square
``[j, j+1) x [i, i+1)``. pycocotools fills a pixel when its centre
``(j + 0.5, i + 0.5)`` lies inside the polygon (vertices quantised to 1/5
pixel), so a rectangle with integer corners x0..x1, y0..y1 covers columns
x0..x1-1 and rows y0..y1-1. The hand-made expectations below avoid pixel
centres on polygon edges, so they do not depend on tie-breaking.

Expected masks are drawn as pictures: ``#`` = sky (1), ``.`` = not sky (0).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from skyseg.errors import AnnotationError, ConfigError
from skyseg.io import read_image_info, write_exr, write_jpeg, write_png, write_tiff
from skyseg.labels.annotations import (
    CategoryOptions,
    CocoLabels,
    _rle_counts,
    load_coco,
    match_images,
    original_name,
)

H, W = 8, 10


def picture(text: str) -> np.ndarray:
    rows = [row.strip() for row in text.strip().splitlines()]
    return np.array([[1 if c == "#" else 0 for c in row] for row in rows], dtype=np.uint8)


def runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE of a 0/1 mask: run lengths in column-major order, from 0s."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    counts, value, length = [], 0, 0
    for pixel in flat:
        if pixel == value:
            length += 1
        else:
            counts.append(length)
            value, length = pixel, 1
    counts.append(length)
    return counts


def compressed(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def rect(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.fixture
def skyseg_log(caplog):
    """caplog that also sees the 'skyseg' logger when the CLI turned propagation off."""
    logger = logging.getLogger("skyseg")
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # caplog's handler sits on the root logger too: count once
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old_level)
    logger.propagate = old_propagate


def write_coco(path: Path, images: list, annotations: list, categories=None) -> Path:
    if categories is None:
        categories = [{"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path


# Categories with unusual ids and case: mapping is by name only.
CATEGORIES = [{"id": 9, "name": "SKY"}, {"id": 5, "name": "Non-Sky"}, {"id": 1, "name": "car"}]
SKY, HOLE, CAR = 9, 5, 1

RLE_A = picture("""
    ####......
    ###.......
    ##........
    #.........
    ..........
    ..........
    ..........
    ..........
""")
RLE_B = picture("""
    ..........
    ..........
    ..........
    ..........
    .....#####
    .....#####
    ..........
    ...#......
""")
RLE_C_SMALL = picture("""
    #....
    ..#..
    ...##
    .....
""")

EXPECTED = {
    "prefixed": picture("""
        ..........
        .#####....
        .#####....
        .#####....
        ..........
        ..........
        ..........
        ..........
    """),
    # labelled on a 5x4 preview, polygons scaled by 2 to the 10x8 EXR
    "scaled": picture("""
        ........##
        ........##
        ..####..##
        ..####..##
        #.......##
        ##......##
        ###.....##
        ####....##
    """),
    # two sky regions minus non-sky holes (one of them outside the sky)
    "hole": picture("""
        ##########
        ##########
        ##...#####
        ##...#####
        ##...#####
        ......####
        ......#.##
        ......####
    """),
    # compressed A + uncompressed B (sky) minus a 5x4 non-sky RLE scaled by 2
    "rle": (RLE_A | RLE_B) & (1 - np.kron(RLE_C_SMALL, np.ones((2, 2), np.uint8))),
    # triangle reaching far outside, clipped: pixels with i + j <= 9; a polygon
    # entirely outside adds nothing; a non-sky band from row 6 down past the edge
    "outside": picture("""
        ##########
        #########.
        ########..
        #######...
        ######....
        #####.....
        ..........
        ..........
    """),
    # 'car' and an id missing from 'categories' are ignored
    "unknown": picture("""
        ###.......
        ###.......
        ..........
        ..........
        ..........
        ..........
        ..........
        ..........
    """),
    # file_name '.../../../1a2b3c4d-inside.jpg' still only finds images/inside.png
    "inside": picture("""
        ..........
        ..........
        ..........
        ..........
        ..........
        ..........
        ......####
        ......####
    """),
}


@pytest.fixture
def handmade(tmp_path) -> tuple[Path, Path]:
    """(coco file, images folder) of the hand-made example; images are 8x10."""
    root = tmp_path / "project"
    images = root / "data" / "images"
    images.mkdir(parents=True)
    gray = np.full((H, W, 3), 100, np.uint8)
    for stem in ("prefixed", "hole", "rle", "outside", "unknown", "inside"):
        write_png(images / f"{stem}.png", gray)
    write_exr(images / "scaled.exr", np.full((H, W, 3), 0.5, np.float32))
    # what '../../secret.jpg' points at relative to the images folder, and a
    # sibling folder: neither may be found
    write_jpeg(root / "secret.jpg", gray)
    write_png(root / "secret.png", gray)
    write_png(root / "data" / "secret.png", gray)

    entries = [
        (0, "images/1a2b3c4d-prefixed.jpg", W, H),
        (1, "/data/upload/7/0badf00d-scaled.jpg", 5, 4),
        (2, "images/deadbeef-hole.jpg", W, H),
        (3, "rle.jpg", W, H),
        (4, "C:\\Users\\me\\labels\\12345678-outside.jpg", W, H),
        (5, "images/cafe0123-unknown.jpg", W, H),
        (6, "../../secret.jpg", W, H),
        (7, "images/../../../1a2b3c4d-inside.jpg", W, H),
    ]
    images_json = [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in entries]
    annotations = []

    def add(image_id, category, segmentation):
        annotations.append({"id": 100 + len(annotations), "image_id": image_id,
                            "category_id": category, "segmentation": segmentation,
                            "iscrowd": int(isinstance(segmentation, dict))})

    add(0, SKY, [rect(1, 1, 6, 4)])
    add(1, SKY, [rect(1, 1, 3, 2), rect(4, 0, 5, 4), [0, 4, 2.25, 4, 0, 1.75]])
    add(2, HOLE, [rect(2, 2, 5, 6)])  # holes come before the sky they cut: order is irrelevant
    add(2, SKY, [rect(0, 0, 10, 5)])
    add(2, SKY, [rect(6, 0, 10, 8)])
    add(2, HOLE, [rect(7, 6, 8, 7)])
    add(2, HOLE, [rect(0, 7, 1, 8)])
    add(3, SKY, compressed(RLE_A))
    add(3, SKY, {"size": [H, W], "counts": runs(RLE_B)})
    add(3, HOLE, compressed(RLE_C_SMALL))
    add(4, SKY, [[-2, -2, 12.5, -2, -2, 12.5]])
    add(4, SKY, [[20, 20, 30, 20, 30, 30]])
    add(4, HOLE, [rect(-5, 6, 20, 30)])
    add(5, SKY, [rect(0, 0, 3, 2)])
    add(5, CAR, [rect(0, 0, 10, 8)])
    add(5, 99, [rect(0, 0, 10, 8)])
    add(6, SKY, [rect(0, 0, 10, 8)])
    add(7, SKY, [rect(6, 6, 10, 8)])
    coco = write_coco(root / "result.json", images_json, annotations, CATEGORIES)
    return coco, images


def test_handmade_masks_match_hand_computed(handmade):
    coco, images = handmade
    labels = load_coco(coco)
    matched, missing = match_images(labels, images)
    assert missing == ["secret"]
    assert sorted(stem for _, stem in matched) == sorted(EXPECTED)
    for path, stem in matched:
        assert path.parent == images
        info = read_image_info(path)
        mask = labels.mask(stem, info.height, info.width)
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(mask, EXPECTED[stem], err_msg=stem)


def test_handmade_entries_keep_names_and_sizes(handmade):
    labels = load_coco(handmade[0])
    assert len(labels) == 8 and "scaled" in labels and "scaled.jpg" not in labels
    entry = labels.entry("scaled")
    assert entry.file_name == "/data/upload/7/0badf00d-scaled.jpg"
    assert entry.original_name == "scaled.jpg"
    assert (entry.width, entry.height) == (5, 4)
    assert [a.role for a in labels.entry("hole").annotations] == [
        "non-sky", "sky", "sky", "non-sky", "non-sky"]
    assert labels.entry("unknown").annotations[0].category == "SKY"
    assert len(labels.entry("unknown").annotations) == 1


def test_unknown_categories_one_warning_listing_them(handmade, skyseg_log):
    load_coco(handmade[0])
    warnings = [r for r in skyseg_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'car' (1)" in warnings[0].getMessage() and "id 99" in warnings[0].getMessage()


def test_mask_at_larger_size_scales_polygons(handmade):
    labels = load_coco(handmade[0])
    # 'prefixed' was labelled at 10x8; at 20x16 every pixel becomes 2x2
    np.testing.assert_array_equal(labels.mask("prefixed", 16, 20),
                                  np.kron(EXPECTED["prefixed"], np.ones((2, 2), np.uint8)))
    # and the RLE annotations are resized nearest-neighbour
    np.testing.assert_array_equal(labels.mask("rle", 16, 20),
                                  np.kron(EXPECTED["rle"], np.ones((2, 2), np.uint8)))


def test_path_traversal_never_escapes_images_folder(handmade, tmp_path):
    coco, images = handmade
    labels = load_coco(coco)
    assert labels.entry("secret").file_name == "../../secret.jpg"
    assert (images / "../../secret.jpg").resolve().is_file()  # the bait is there
    matched, missing = match_images(labels, images)
    assert "secret" in missing
    assert all(path.resolve().parent == images.resolve() for path, _ in matched)


# --- original_name ------------------------------------------------------------------------

@pytest.mark.parametrize("file_name, expected", [
    ("images/1a2b3c4d-scene.jpg", "scene.jpg"),
    ("/data/upload/7/1a2b3c4d-scene.jpg", "scene.jpg"),
    ("scene.jpg", "scene.jpg"),
    ("1A2B3C4D-scene.jpg", "scene.jpg"),
    ("C:\\Users\\me\\1a2b3c4d-scene.jpg", "scene.jpg"),
    ("images\\scene.exr", "scene.exr"),
    ("/data/local-files/?d=photos/scene.jpg", "scene.jpg"),
    ("images/1a2b3c4-scene.jpg", "1a2b3c4-scene.jpg"),  # 7 hex digits: not a prefix
    ("images/1a2b3c4d_scene.jpg", "1a2b3c4d_scene.jpg"),  # underscore: not a prefix
    ("images/1a2b3c4d-0badf00d-scene.jpg", "0badf00d-scene.jpg"),  # only one prefix
    ("../../etc/passwd", "passwd"),
    ("images/my%20scene.jpg", "my scene.jpg"),
])
def test_original_name(file_name, expected):
    assert original_name(file_name) == expected


@pytest.mark.parametrize("file_name", ["", "images/", "..", "C:\\labels\\"])
def test_original_name_without_a_name(file_name):
    with pytest.raises(AnnotationError, match="no usable image name"):
        original_name(file_name)


# --- load_coco: bad files -----------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match=r"nope\.json: COCO file not found"):
        load_coco(tmp_path / "nope.json")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(AnnotationError, match="is a folder"):
        load_coco(tmp_path)


def test_not_json(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("{'images': [")
    with pytest.raises(AnnotationError, match=r"result\.json: not valid JSON .*line 1 column 2"):
        load_coco(path)


def test_binary_file(tmp_path):
    path = tmp_path / "result.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(AnnotationError, match="not a COCO JSON file"):
        load_coco(path)


def test_not_an_object(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="got a JSON list"):
        load_coco(path)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_lacks_key(tmp_path, key):
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "sky"}]}
    del data[key]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=rf"result\.json: lacks '{key}'"):
        load_coco(path)


def test_key_not_a_list(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"images": {}, "annotations": [], "categories": []}))
    with pytest.raises(AnnotationError, match="'images' is a dict, expected a list"):
        load_coco(path)


def test_annotation_of_unknown_image(tmp_path):
    path = write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "a.jpg"}],
                      [{"id": 7, "image_id": 2, "category_id": 1, "segmentation": []}])
    with pytest.raises(AnnotationError, match="annotation id 7 refers to image id 2"):
        load_coco(path)


def test_duplicate_original_names(tmp_path):
    path = write_coco(tmp_path / "c.json", [
        {"id": 1, "file_name": "images/1a2b3c4d-scene.jpg"},
        {"id": 2, "file_name": "images/99999999-scene.png"},
    ], [])
    with pytest.raises(AnnotationError, match="both image 'scene'.*delete one of the two"):
        load_coco(path)


def test_duplicate_image_ids(tmp_path):
    path = write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "a.jpg"},
                                            {"id": 1, "file_name": "b.jpg"}], [])
    with pytest.raises(AnnotationError, match="image id 1 appears twice"):
        load_coco(path)


def test_image_without_file_name(tmp_path):
    path = write_coco(tmp_path / "c.json", [{"id": 1}], [])
    with pytest.raises(AnnotationError, match=r"images\[0\] .*expected an object with 'id' and "
                                              "'file_name'"):
        load_coco(path)


@pytest.mark.parametrize("width", [0, -5, 10.5, "480"])
def test_bad_image_width(tmp_path, width):
    path = write_coco(tmp_path / "c.json",
                      [{"id": 1, "file_name": "a.jpg", "width": width, "height": 8}], [])
    with pytest.raises(AnnotationError, match=r"images\[0\] has width=.*positive whole number"):
        load_coco(path)


# --- categories ---------------------------------------------------------------------------

def _one_image(tmp_path, categories, annotations=()) -> Path:
    return write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "a.jpg", "width": W,
                                             "height": H}], list(annotations), categories)


def test_configured_sky_name_absent_is_an_error(tmp_path):
    path = _one_image(tmp_path, [{"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"}])
    with pytest.raises(AnnotationError, match=r"category 'skies' \(--sky-category\) is not in "
                                              r"the file, whose categories are 'non-sky', 'sky'"):
        load_coco(path, sky_categories=("skies",))


def test_configured_non_sky_name_absent_is_an_error(tmp_path):
    path = _one_image(tmp_path, [{"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"}])
    with pytest.raises(AnnotationError, match=r"'wires' \(--non-sky-category\) is not in"):
        load_coco(path, non_sky_categories=("non-sky", "wires"))


def test_default_non_sky_may_be_absent(tmp_path):
    path = _one_image(tmp_path, [{"id": 4, "name": "sky"}],
                      [{"id": 1, "image_id": 1, "category_id": 4,
                        "segmentation": [rect(0, 0, 10, 2)]}])
    labels = load_coco(path)
    assert labels.mask("a", H, W).sum() == 2 * W


def test_file_without_sky_category_is_an_error(tmp_path):
    path = _one_image(tmp_path, [{"id": 1, "name": "Sky region"}])
    with pytest.raises(AnnotationError, match="'sky' .* categories are 'Sky region'"):
        load_coco(path)


def test_same_name_sky_and_non_sky(tmp_path):
    path = _one_image(tmp_path, [{"id": 1, "name": "sky"}])
    with pytest.raises(ConfigError, match="'sky' is configured as both sky and non-sky"):
        load_coco(path, non_sky_categories=("Sky",))


def test_several_names_per_role(tmp_path):
    categories = [{"id": 1, "name": "clear sky"}, {"id": 2, "name": "clouds"},
                  {"id": 3, "name": "wire"}, {"id": 4, "name": "pole"}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [rect(0, 0, 5, 8)]},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [rect(5, 0, 10, 8)]},
        {"id": 3, "image_id": 1, "category_id": 3, "segmentation": [rect(0, 0, 10, 1)]},
        {"id": 4, "image_id": 1, "category_id": 4, "segmentation": [rect(4, 0, 6, 8)]},
    ]
    labels = load_coco(_one_image(tmp_path, categories, annotations),
                       sky_categories=("Clear Sky", "CLOUDS"), non_sky_categories=("wire", "pole"))
    expected = np.ones((H, W), np.uint8)
    expected[0, :] = 0
    expected[:, 4:6] = 0
    np.testing.assert_array_equal(labels.mask("a", H, W), expected)


# --- mask: bad annotations ----------------------------------------------------------------

def _labels_with(tmp_path, segmentation, *, width=W, height=H, bbox=None) -> CocoLabels:
    annotation = {"id": 42, "image_id": 1, "category_id": 1, "segmentation": segmentation}
    if bbox is not None:
        annotation["bbox"] = bbox
    image = {"id": 1, "file_name": "images/1a2b3c4d-scene.jpg"}
    if width is not None:
        image.update(width=width, height=height)
    return load_coco(write_coco(tmp_path / "c.json", [image], [annotation]))


@pytest.mark.parametrize("points", [
    [[1, 1, 5, 5]],  # pycocotools would take 4 numbers as a bbox
    [[1, 1]],
    [[]],
    [rect(0, 0, 2, 2), [1, 1, 5, 5]],
])
def test_polygon_with_fewer_than_three_points(tmp_path, points):
    labels = _labels_with(tmp_path, points)
    with pytest.raises(AnnotationError, match=r"c\.json: image 'images/1a2b3c4d-scene\.jpg', "
                                              r"annotation id 42: polygon \d has [012] points, a "
                                              "polygon needs at least 3"):
        labels.mask("scene", H, W)


def test_polygon_with_odd_coordinates(tmp_path):
    labels = _labels_with(tmp_path, [[1, 1, 5, 5, 3]])
    with pytest.raises(AnnotationError, match="annotation id 42: polygon 0 has 5 coordinates"):
        labels.mask("scene", H, W)


def test_polygon_with_nan(tmp_path):
    labels = _labels_with(tmp_path, [[1, 1, 5, float("nan"), 3, 3]])
    with pytest.raises(AnnotationError, match="annotation id 42: polygon 0 has NaN or infinite"):
        labels.mask("scene", H, W)


def test_polygon_with_text(tmp_path):
    labels = _labels_with(tmp_path, [[1, 1, "5", "x", 3, 3]])
    with pytest.raises(AnnotationError, match="annotation id 42: polygon 0 holds non-numbers"):
        labels.mask("scene", H, W)


def test_segmentation_of_wrong_type(tmp_path):
    labels = _labels_with(tmp_path, "1 1 5 5 3 3")
    with pytest.raises(AnnotationError, match="segmentation is a str; expected polygons"):
        labels.mask("scene", H, W)


def test_rle_counts_not_adding_up(tmp_path):
    labels = _labels_with(tmp_path, {"size": [H, W], "counts": [3, 4, 5]})
    with pytest.raises(AnnotationError, match="annotation id 42: RLE runs add up to 12 pixels "
                                              "but its size 10x8 has 80"):
        labels.mask("scene", H, W)


@pytest.mark.parametrize("counts", ["", "0", "zz{~", "5h0"])
def test_damaged_compressed_rle(tmp_path, counts):
    labels = _labels_with(tmp_path, {"size": [H, W], "counts": counts})
    with pytest.raises(AnnotationError, match="annotation id 42: (compressed RLE counts are "
                                              "damaged|RLE runs add up to)"):
        labels.mask("scene", H, W)


def test_rle_without_size(tmp_path):
    labels = _labels_with(tmp_path, {"counts": [80]})
    with pytest.raises(AnnotationError, match=r"RLE size None is not \[height, width\]"):
        labels.mask("scene", H, W)


def test_rle_too_large(tmp_path):
    labels = _labels_with(tmp_path, {"size": [100000, 100000], "counts": [10**10]})
    with pytest.raises(AnnotationError, match="RLE size 100000x100000 is too large"):
        labels.mask("scene", H, W)


def test_other_picture_with_another_aspect_ratio(tmp_path):
    labels = _labels_with(tmp_path, [rect(0, 0, 2, 2)], width=480, height=360)
    with pytest.raises(AnnotationError, match="labelled at 480x360 but the image to mask is "
                                              "100x100; the aspect ratios differ"):
        labels.mask("scene", 100, 100)


def test_preview_rounding_is_not_an_aspect_change(tmp_path):
    # a 2048-wide preview of a 8192x4095 panorama is 2048x1024 (rounded)
    labels = _labels_with(tmp_path, [rect(0, 0, 2048, 512)], width=2048, height=1024)
    mask = labels.mask("scene", 4095, 8192)
    assert mask.shape == (4095, 8192)
    assert mask[:2047].all() and not mask[2048:].any()


def test_unknown_stem(tmp_path):
    labels = _labels_with(tmp_path, [rect(0, 0, 2, 2)])
    with pytest.raises(AnnotationError, match="no labelled image 'other'; labelled images are "
                                              "scene"):
        labels.mask("other", H, W)


@pytest.mark.parametrize("height", [0, -1, 2.5])
def test_bad_target_size(tmp_path, height):
    labels = _labels_with(tmp_path, [rect(0, 0, 2, 2)])
    with pytest.raises(ConfigError, match="mask height must be a positive whole number"):
        labels.mask("scene", height, W)


# --- mask: sizes and shapes ---------------------------------------------------------------

def test_missing_size_uses_target_pixels(tmp_path, skyseg_log):
    labels = _labels_with(tmp_path, [rect(1, 1, 3, 2)], width=None)
    assert "1 images have no width/height" in skyseg_log.text
    expected = np.zeros((H, W), np.uint8)
    expected[1, 1:3] = 1
    np.testing.assert_array_equal(labels.mask("scene", H, W), expected)


def test_missing_size_takes_the_rle_size(tmp_path):
    small = np.zeros((4, 5), np.uint8)
    small[0, :] = 1
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": compressed(small)},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [rect(0, 3, 1, 4)]},
    ]
    path = write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "a.jpg"}], annotations)
    expected = np.zeros((H, W), np.uint8)
    expected[0:2, :] = 1  # the RLE row, doubled
    expected[6:8, 0:2] = 1  # the polygon in the RLE's 5x4 frame, doubled
    np.testing.assert_array_equal(load_coco(path).mask("a", H, W), expected)


def test_bbox_when_no_segmentation(tmp_path):
    labels = _labels_with(tmp_path, [], bbox=[2, 1, 3, 2])
    expected = np.zeros((H, W), np.uint8)
    expected[1:3, 2:5] = 1
    np.testing.assert_array_equal(labels.mask("scene", H, W), expected)


def test_no_geometry_at_all_is_empty(tmp_path):
    labels = _labels_with(tmp_path, [])
    assert not labels.mask("scene", H, W).any()


def test_image_without_annotations_is_all_not_sky(tmp_path):
    path = write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "a.jpg", "width": W,
                                             "height": H}], [])
    mask = load_coco(path).mask("a", H, W)
    assert mask.dtype == np.uint8 and mask.shape == (H, W) and not mask.any()


def test_flat_polygon_list_is_accepted(tmp_path):
    labels = _labels_with(tmp_path, rect(0, 0, 2, 3))
    assert labels.mask("scene", H, W).sum() == 6


def test_huge_coordinates_are_clipped(tmp_path):
    labels = _labels_with(tmp_path, [rect(-1e12, -1e12, 1e12, 4)])
    expected = np.zeros((H, W), np.uint8)
    expected[:4] = 1
    np.testing.assert_array_equal(labels.mask("scene", H, W), expected)


def test_rle_string_decoder_matches_pycocotools(rng):
    for _ in range(20):
        height, width = rng.integers(1, 40, size=2)
        mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
        assert _rle_counts(compressed(mask)["counts"]) == runs(mask)


# --- match_images -------------------------------------------------------------------------

@pytest.fixture
def twins(tmp_path) -> tuple[CocoLabels, Path]:
    """One labelled image 'scene' (labelled as scene.png) with five files of that stem."""
    images = tmp_path / "images"
    images.mkdir()
    write_exr(images / "scene.exr", np.ones((4, 6, 3), np.float32))
    write_jpeg(images / "scene.jpg", np.zeros((4, 6, 3), np.uint8))
    write_png(images / "scene.png", np.zeros((4, 6, 3), np.uint8))
    write_tiff(images / "scene.tif", np.ones((4, 6, 3), np.float32))
    write_tiff(images / "scene.tiff", np.ones((4, 6, 3), np.uint8))
    coco = write_coco(tmp_path / "c.json",
                      [{"id": 1, "file_name": "images/1a2b3c4d-scene.png"}], [])
    return load_coco(coco), images


@pytest.mark.parametrize("mode, removed, expected", [
    (None, [], "scene.exr"),
    ("hdr", [], "scene.exr"),
    ("hdr", ["scene.exr"], "scene.tif"),  # float TIFF is HDR
    ("ldr", [], "scene.png"),  # the labelled file's own extension first
    ("ldr", ["scene.png"], "scene.jpg"),
    ("ldr", ["scene.png", "scene.jpg"], "scene.tiff"),  # integer TIFF is LDR
    ("ldr", ["scene.png", "scene.jpg", "scene.tiff"], "scene.exr"),  # HDR if nothing else
])
def test_match_prefers_by_mode(twins, mode, removed, expected):
    labels, images = twins
    for name in removed:
        (images / name).unlink()
    matched, missing = match_images(labels, images, mode=mode)
    assert missing == [] and matched == [(images / expected, "scene")]


def test_match_ignores_case_of_extension_and_temp_files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / ".scene.1234.tmp.png", np.zeros((2, 2), np.uint8))
    (images / "scene.json").write_text("{}")
    coco = write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "scene.jpg"}], [])
    labels = load_coco(coco)
    assert match_images(labels, images) == ([], ["scene"])
    write_png(images / "scene.PNG", np.zeros((2, 2), np.uint8))
    assert match_images(labels, images) == ([(images / "scene.PNG", "scene")], [])


def test_match_stem_case_insensitively_when_unique(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "Scene.png", np.zeros((2, 2), np.uint8))
    coco = write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "scene.jpg"}], [])
    assert match_images(load_coco(coco), images) == ([(images / "Scene.png", "scene")], [])


def test_match_falls_back_to_the_name_with_its_hex_prefix(tmp_path):
    # a file really named 'cafebabe-sky.png' (local storage, no upload prefix)
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "cafebabe-sky.png", np.zeros((2, 2), np.uint8))
    coco = write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "cafebabe-sky.png"}], [])
    labels = load_coco(coco)
    assert labels.stems() == ["sky"]
    assert match_images(labels, images) == ([(images / "cafebabe-sky.png", "sky")], [])


def test_match_bad_mode(twins):
    labels, images = twins
    with pytest.raises(ConfigError, match="mode must be 'hdr', 'ldr' or None, got 'HDR'"):
        match_images(labels, images, mode="HDR")


def test_match_missing_folder(twins, tmp_path):
    labels, _ = twins
    with pytest.raises(ConfigError, match="nowhere: images folder not found; check --images"):
        match_images(labels, tmp_path / "nowhere")


def test_real_export_loads(camvid):
    labels = load_coco(camvid / "result.json")
    assert len(labels) == 468
    entry = labels.entry("0001TP_006690")
    assert entry.file_name.startswith("images/") and entry.file_name.endswith(
        "-0001TP_006690.jpg")
    assert (entry.width, entry.height) == (480, 360)
    assert {a.role for a in entry.annotations} == {"sky"}
    roles = [{a.role for a in labels.entry(stem).annotations} for stem in labels.stems()]
    assert sum(r == {"sky", "non-sky"} for r in roles) > 400  # most images have holes
    assert sum(not r for r in roles) == 1  # one image has no sky at all


# --- the category options every stage that reads COCO shares -----------------------------

def _category_parser():
    import argparse

    from skyseg.options import add_options

    parser = argparse.ArgumentParser(prog="stage")
    add_options(parser, CategoryOptions)
    return parser


@pytest.mark.parametrize("argv, sky, non_sky", [
    ([], ("sky",), ("non-sky",)),
    (["--sky-category", "clear sky"], ("clear sky",), ("non-sky",)),
    (["--sky-category", "sky", "clouds", "--sky-category", "haze"], ("sky", "clouds", "haze"),
     ("non-sky",)),
    (["--non-sky-category", "pole", "--non-sky-category", "wire"], ("sky",), ("pole", "wire")),
])
def test_category_options_from_the_command_line(argv, sky, non_sky):
    from skyseg.options import from_args

    options = from_args(CategoryOptions, _category_parser().parse_args(argv))
    assert options == CategoryOptions(sky_categories=sky, non_sky_categories=non_sky)


def test_category_options_help_shows_the_defaults():
    text = " ".join(_category_parser().format_help().split())
    assert "--sky-category NAME [NAME ...]" in text and "(default: sky)" in text
    assert "(default: non-sky, may be absent from the file)" in text


def test_category_options_from_yaml_and_python():
    from skyseg.options import from_mapping

    options = from_mapping(CategoryOptions, {"sky_categories": "sky, clouds",
                                             "non_sky_categories": ["wire"]}, source="c.yml")
    assert options == CategoryOptions(sky_categories=("sky", "clouds"),
                                      non_sky_categories=("wire",))
    assert CategoryOptions(sky_categories="sky").sky_categories == ("sky",)

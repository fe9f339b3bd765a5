"""Stage ``skyseg masks``: <stem>_mask.png and <stem>_labels.png from a COCO export.

Pixel convention as in tests/test_annotations.py: a rectangle with integer
corners x0..x1, y0..y1 covers columns x0..x1-1 and rows y0..y1-1.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from skyseg.cli.commands import main
from skyseg.image.overlay import SKY_COLOR, mask_boundary
from skyseg.image.preprocess import tonemap
from skyseg.io import read_image, write_exr, write_jpeg, write_png
from skyseg.labels.annotations import load_coco
from skyseg.labels.masks import export_masks

H, W = 8, 10


def rect(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture
def run_main(capsys):
    """``skyseg`` in this process: returns (exit status, stderr); restores the logger after."""
    logger = logging.getLogger("skyseg")
    saved = (list(logger.handlers), logger.level, logger.propagate)

    def run(*args) -> tuple[int, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err

    yield run
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def sky_hole_annotations(image_id: int, start_id: int = 0) -> list[dict]:
    return [
        {"id": start_id, "image_id": image_id, "category_id": 1,
         "segmentation": [rect(0, 0, 10, 4)]},
        {"id": start_id + 1, "image_id": image_id, "category_id": 2,
         "segmentation": [rect(4, 1, 6, 3)]},
    ]


#: 'a' (PNG): rows 0..3 sky with a 2x2 hole; 'b' (EXR labelled on a 5x4 preview):
#: rows 0..3 sky; 'c' (JPEG): labelled, no sky.
EXPECTED = {
    "a": np.pad(np.ones((4, W), np.uint8), ((0, 4), (0, 0))),
    "b": np.pad(np.ones((4, W), np.uint8), ((0, 4), (0, 0))),
    "c": np.zeros((H, W), np.uint8),
}
EXPECTED["a"][1:3, 4:6] = 0


@pytest.fixture
def project(tmp_path, rng) -> dict:
    """A COCO file and an images folder with a.png, b.exr, c.jpg (8x10)."""
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "a.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    radiance = rng.random((H, W, 3), dtype=np.float32) * 4.0
    radiance[:4] *= 20.0  # a bright sky over a dark ground
    write_exr(images / "b.exr", radiance, half=False)
    write_jpeg(images / "c.jpg", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    data = {
        "categories": [{"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"}],
        "images": [
            {"id": 1, "file_name": "images/1a2b3c4d-a.png", "width": W, "height": H},
            {"id": 2, "file_name": "/data/upload/3/0badf00d-b.jpg", "width": 5, "height": 4},
            {"id": 3, "file_name": "images/c.jpg", "width": W, "height": H},
        ],
        "annotations": sky_hole_annotations(1) + [
            {"id": 10, "image_id": 2, "category_id": 1, "segmentation": [rect(0, 0, 5, 2)]},
        ],
    }
    coco = tmp_path / "result.json"
    coco.write_text(json.dumps(data))
    return {"coco": coco, "images": images, "out": tmp_path / "out", "data": data}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def check_outputs(out: Path, stems, labels_overlay=True) -> None:
    for stem in stems:
        mask = read_png(out / f"{stem}_mask.png")
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, EXPECTED[stem] * 255, err_msg=stem)
        assert (out / f"{stem}_labels.png").exists() == labels_overlay


def test_export_masks_writes_masks_and_labels(project):
    report = export_masks(project["coco"], project["images"], project["out"])
    assert report.exit_code == 0 and len(report.done) == 3
    check_outputs(project["out"], "abc")
    assert sorted(os.listdir(project["out"])) == sorted(
        f"{s}_{kind}.png" for s in "abc" for kind in ("mask", "labels"))


@pytest.mark.parametrize("stem, name", [("a", "a.png"), ("b", "b.exr"), ("c", "c.jpg")])
def test_labels_overlay_is_the_tonemapped_image_with_sky_tinted(project, stem, name):
    export_masks(project["coco"], project["images"], project["out"])
    overlay = read_png(project["out"] / f"{stem}_labels.png")
    image, info = read_image(project["images"] / name, return_info=True)
    display = tonemap(image, is_hdr=info.is_hdr)
    sky = EXPECTED[stem].astype(bool)
    edge = mask_boundary(sky)
    inside = sky & ~edge
    assert overlay.shape == (H, W, 3) and overlay.dtype == np.uint8
    np.testing.assert_array_equal(overlay[~sky], display[~sky])
    np.testing.assert_array_equal(overlay[edge], np.broadcast_to(SKY_COLOR, (edge.sum(), 3)))
    blend = np.rint(display[inside] * 0.5 + np.array(SKY_COLOR) * 0.5).astype(np.uint8)
    np.testing.assert_array_equal(overlay[inside], blend)


def test_export_accepts_loaded_labels_and_no_overlay(project):
    labels = load_coco(project["coco"])
    report = export_masks(labels, project["images"], project["out"], labels_overlay=False)
    assert report.exit_code == 0
    check_outputs(project["out"], "abc", labels_overlay=False)


def test_up_to_date_outputs_are_kept_unless_overwrite(project, run_main):
    args = ["masks", "--coco", project["coco"], "--images", project["images"],
            "--out", project["out"]]
    assert run_main(*args)[0] == 0
    mask = project["out"] / "a_mask.png"
    old = time.time() + 100  # later than the image and the COCO file, but recognisable
    os.utime(mask, (old, old))
    assert run_main(*args)[0] == 0
    assert mask.stat().st_mtime == old
    assert run_main(*args, "--overwrite")[0] == 0
    assert mask.stat().st_mtime != old
    check_outputs(project["out"], "abc")


def test_cli_writes_masks(project, run_main):
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"], "--no-labels-overlay")
    assert code == 0, err
    assert "masks: 3 of 3 done" in err
    check_outputs(project["out"], "abc", labels_overlay=False)


def test_cli_category_names(project, run_main):
    data = project["data"]
    data["categories"] = [{"id": 1, "name": "Clear Sky"}, {"id": 2, "name": "Wire"},
                          {"id": 3, "name": "pole"}]
    coco = write_json(project["coco"], data)
    code, err = run_main("masks", "--coco", coco, "--images", project["images"],
                         "--out", project["out"], "--sky-category", "clear sky",
                         "--non-sky-category", "pole", "--non-sky-category", "wire")
    assert code == 0, err
    check_outputs(project["out"], "abc")


def test_cli_help_describes_every_option(run_main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["masks", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--coco", "--images", "--out", "--sky-category", "--non-sky-category",
                   "--mode", "--no-labels-overlay", "--overwrite"):
        assert option in text


# --- bad input: one line, exit status -----------------------------------------------------

def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("skyseg masks: error: ")
    return lines[0]


def test_cli_missing_coco_file(project, run_main):
    code, err = run_main("masks", "--coco", project["coco"].with_name("nope.json"),
                         "--images", project["images"], "--out", project["out"])
    assert code == 2
    assert "nope.json: COCO file not found; check --coco" in one_line_error(err)
    assert not project["out"].exists()


def test_cli_coco_not_json(project, run_main):
    project["coco"].write_text("images: [a.jpg]\n")
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"])
    assert code == 2
    assert "result.json: not valid JSON (Expecting value at line 1 column 1)" in one_line_error(
        err)


@pytest.mark.parametrize("key", ["images", "annotations"])
def test_cli_coco_lacks_key(project, run_main, key):
    data = project["data"]
    del data[key]
    write_json(project["coco"], data)
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"])
    assert code == 2
    assert f"result.json: lacks '{key}'; this is not a COCO export" in one_line_error(err)


def test_cli_unknown_category_name(project, run_main):
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"], "--sky-category", "skies")
    assert code == 2
    assert "category 'skies' (--sky-category) is not in the file, whose categories are " \
           "'non-sky', 'sky'" in one_line_error(err)


def test_cli_missing_images_folder(project, run_main):
    code, err = run_main("masks", "--coco", project["coco"], "--images",
                         project["images"] / "nowhere", "--out", project["out"])
    assert code == 2
    assert "nowhere: images folder not found; check --images" in one_line_error(err)


def test_cli_image_not_on_disk(project, run_main):
    data = project["data"]
    data["images"].append({"id": 4, "file_name": "images/0000abcd-gone.jpg", "width": W,
                           "height": H})
    data["annotations"] += sky_hole_annotations(4, start_id=20)
    write_json(project["coco"], data)
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"])
    assert code == 1
    assert "gone: labelled in" in err and "no gone.* image is in" in err
    assert "masks: 3 of 4 done, 1 failed" in err
    check_outputs(project["out"], "abc")
    assert not (project["out"] / "gone_mask.png").exists()


def test_cli_polygon_with_fewer_than_three_points(project, run_main):
    data = project["data"]
    data["annotations"].append({"id": 77, "image_id": 1, "category_id": 1,
                                "segmentation": [[1, 1, 5, 5]]})
    write_json(project["coco"], data)
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"])
    assert code == 1
    assert ("image 'images/1a2b3c4d-a.png', annotation id 77: polygon 0 has 2 points, a "
            "polygon needs at least 3") in err
    check_outputs(project["out"], "bc")
    assert not (project["out"] / "a_mask.png").exists()
    assert not (project["out"] / "a_labels.png").exists()


def test_cli_damaged_image(project, run_main):
    blob = (project["images"] / "a.png").read_bytes()
    (project["images"] / "a.png").write_bytes(blob[: len(blob) // 2])
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"])
    assert code == 1
    assert "a.png" in err and "FAILED" in err
    check_outputs(project["out"], "bc")
    assert not (project["out"] / "a_mask.png").exists()


def test_cli_images_above_max_pixels_are_listed_not_masked(project, run_main):
    # a.png is 10x8 = 80 pixels; with --no-labels-overlay nothing would be decoded either.
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"], "--max-pixels", 79, "--no-labels-overlay")
    assert code == 1
    assert "a.png: 10x8 pixels" in err and "--max-pixels 79" in err
    assert not list(project["out"].glob("*_mask.png"))
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"], "--max-pixels", 0)
    assert code == 0, err
    check_outputs(project["out"], "abc")


def test_cli_labels_of_another_picture(project, run_main):
    data = project["data"]
    data["images"][0].update(width=100, height=20)  # a.png is 10x8: not a scaled copy
    write_json(project["coco"], data)
    code, err = run_main("masks", "--coco", project["coco"], "--images", project["images"],
                         "--out", project["out"], "--no-labels-overlay")
    assert code == 1
    assert "labelled at 100x20 but the image to mask is 10x8" in err
    check_outputs(project["out"], "bc", labels_overlay=False)


# --- real data ----------------------------------------------------------------------------

def independent_mask(data: dict, image_id: int, height: int, width: int) -> np.ndarray:
    """skimage's polygon fill (pixel centres at integer coordinates): sky - non-sky."""
    from skimage.draw import polygon

    names = {c["id"]: c["name"] for c in data["categories"]}
    layers = {"sky": np.zeros((height, width), bool), "non-sky": np.zeros((height, width), bool)}
    for annotation in data["annotations"]:
        if annotation["image_id"] != image_id:
            continue
        for flat in annotation["segmentation"]:
            xy = np.asarray(flat, float).reshape(-1, 2) - 0.5  # COCO centres are at +0.5
            rows, cols = polygon(xy[:, 1], xy[:, 0], shape=(height, width))
            layers[names[annotation["category_id"]]][rows, cols] = True
    return layers["sky"] & ~layers["non-sky"]


def test_camvid_all_468_masks(camvid, tmp_path, cli):
    out = tmp_path / "out"
    result = cli("masks", "--coco", camvid / "result.json", "--images", camvid / "images",
                 "--out", out, "--no-labels-overlay")
    assert result.returncode == 0, result.stderr
    assert "masks: 468 of 468 done" in result.stderr
    masks = sorted(out.glob("*_mask.png"))
    assert len(masks) == 468 and len(list(out.iterdir())) == 468
    fractions = []
    for path in masks[::13]:
        mask = read_png(path)
        assert mask.shape == (360, 480) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        fractions.append((mask == 255).mean())
    # street scenes: the sky is some of the upper part of the frame, never the ground
    assert 0.05 < np.mean(fractions) < 0.35
    data = json.loads((camvid / "result.json").read_text())
    for image in data["images"][::117]:
        stem = image["file_name"].rsplit("-", 1)[-1][: -len(".jpg")]
        ours = read_png(out / f"{stem}_mask.png") == 255
        theirs = independent_mask(data, image["id"], 360, 480)
        assert ours[: 360 // 2].mean() > ours[360 // 2:].mean()  # sky is up
        agreement = (ours == theirs).mean()
        iou = (ours & theirs).sum() / max((ours | theirs).sum(), 1)
        assert agreement > 0.995 and iou > 0.97, (stem, agreement, iou)


def test_camvid_labels_overlays(camvid, tmp_path, run_main):
    data = json.loads((camvid / "result.json").read_text())
    keep = {image["id"] for image in data["images"][::160]}  # 3 images from 3 sequences
    subset = {
        "categories": data["categories"],
        "images": [image for image in data["images"] if image["id"] in keep],
        "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
    }
    coco = write_json(tmp_path / "subset.json", subset)
    out = tmp_path / "out"
    code, err = run_main("masks", "--coco", coco, "--images", camvid / "images", "--out", out)
    assert code == 0, err
    assert len(list(out.glob("*_labels.png"))) == 3
    for path in out.glob("*_labels.png"):
        stem = path.name[: -len("_labels.png")]
        overlay = read_png(path)
        original = read_image(camvid / "images" / f"{stem}.jpg").astype(np.uint8)
        sky = read_png(out / f"{stem}_mask.png") == 255
        assert overlay.shape == original.shape == (360, 480, 3)
        assert 0.01 < sky.mean() < 0.6
        np.testing.assert_array_equal(overlay[~sky], original[~sky])
        tinted = overlay[sky].astype(int)
        # magenta tint: red and blue up, green down against the photo
        assert tinted[:, 0].mean() > original[sky][:, 0].mean()
        assert tinted[:, 1].mean() < original[sky][:, 1].mean()


def test_command_line_defaults_are_the_options_defaults():
    from skyseg.cli.commands import build_parser
    from skyseg.labels.masks import MasksOptions
    from skyseg.options import from_args

    args = build_parser().parse_args(["masks", "--coco", "c.json", "--images", "i", "--out", "o"])
    assert from_args(MasksOptions, args) == MasksOptions()
    with pytest.raises(TypeError, match="overlay"):
        export_masks("c.json", "i", "o", overlay=False)

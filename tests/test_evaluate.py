"""`skyseg evaluate`: exact scores on hand-made masks, the 0/1/255 rule, worst-case overlays."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from skyseg.cli.commands import main
from skyseg.errors import AnnotationError, ConfigError, ImageReadError
from skyseg.evaluation.evaluate import (
    boundary_scores,
    evaluate_model,
    read_truth_mask,
    segmentation_scores,
    summarise,
    truth_from_mask,
)
from skyseg.image import metrics
from skyseg.image.overlay import FALSE_NEGATIVE_COLOR, FALSE_POSITIVE_COLOR
from skyseg.io import write_png

TRUTH_4x4 = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
PREDICTION_4x4 = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)


def test_docstring_examples():
    import doctest

    from skyseg.evaluation import evaluate
    assert doctest.testmod(evaluate).failed == 0


def counts_of(scores: dict) -> tuple[int, int, int, int]:
    return scores["tp"], scores["fp"], scores["fn"], scores["tn"]


def test_pixel_scores_on_a_hand_made_mask():
    scores = segmentation_scores(PREDICTION_4x4, TRUTH_4x4)
    assert counts_of(scores) == (6, 1, 2, 7)
    assert scores["iou"] == pytest.approx(6 / 9)
    assert scores["dice"] == pytest.approx(12 / 15)
    assert scores["precision"] == pytest.approx(6 / 7)
    assert scores["recall"] == pytest.approx(6 / 8)


def test_scores_agree_with_the_training_metrics(rng):
    truth = rng.choice(np.array([0, 1, 255], np.uint8), size=(700, 90), p=[0.5, 0.4, 0.1])
    probability = rng.random((700, 90), dtype=np.float32)
    probability[::7] = 0.5  # exactly at the threshold: not sky, as in training
    scores = segmentation_scores(probability > 0.5, truth)
    assert scores["iou"] == metrics.iou_score(truth, probability)
    assert scores["dice"] == metrics.dice_score(truth, probability)
    counts = metrics.confusion_counts(truth, probability)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (
        counts["tp"], counts["fp"], counts["fn"], counts["tn"])
    # Both are the counts of the rule written out: strictly above 0.5, 255 ignored.
    valid, sky, predicted = truth != 255, truth == 1, probability > 0.5
    tp, fp, fn = (int(np.sum(valid & sky & predicted)), int(np.sum(valid & ~sky & predicted)),
                  int(np.sum(valid & sky & ~predicted)))
    assert counts_of(scores) == (tp, fp, fn, int(np.sum(valid & ~sky & ~predicted)))
    assert scores["iou"] == pytest.approx(tp / (tp + fp + fn), rel=1e-12)
    assert scores["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-12)


def test_ignored_pixels_count_nowhere():
    truth = TRUTH_4x4.copy()
    truth[2, 0] = 255  # the false positive is on an ignored pixel
    truth[1, 3] = 255  # so is one false negative
    scores = segmentation_scores(PREDICTION_4x4, truth)
    assert counts_of(scores) == (6, 0, 1, 7)
    assert scores["iou"] == pytest.approx(6 / 7)


def test_boundary_f_score_with_2_px_tolerance():
    truth = np.zeros((10, 10), np.uint8)
    truth[:5] = 1  # truth boundary: row 4, 10 pixels
    prediction = np.zeros((10, 10), bool)
    prediction[:5, :5] = True
    prediction[:9, 5:] = True
    # Predicted boundary: row 4 cols 0-4 (5 px), col 5 rows 5-8 (4 px), row 8 cols 6-9 (4 px).
    # Within 2 px of the truth: row 4 cols 0-4 and col 5 rows 5-6 -> 7 of 13.
    # Truth pixels within 2 px of the prediction: cols 0-6 of row 4 -> 7 of 10.
    scores = boundary_scores(prediction, truth, tolerance=2)
    assert scores["boundary_precision"] == pytest.approx(7 / 13)
    assert scores["boundary_recall"] == pytest.approx(7 / 10)
    assert scores["boundary_f"] == pytest.approx(14 / 23)
    # 1 px off everywhere is within tolerance; 3 px is not.
    for shift, expected in ((1, 1.0), (2, 1.0), (3, 0.0)):
        shifted = np.zeros((10, 10), bool)
        shifted[:5 + shift] = True
        assert boundary_scores(shifted, truth)["boundary_f"] == expected


def test_boundary_against_ignored_pixels_is_no_boundary():
    truth = np.full((8, 8), 255, np.uint8)
    truth[:4] = 1  # sky next to "ignore": no edge to find
    prediction = np.zeros((8, 8), bool)
    prediction[:4] = True  # its edge also borders ignored pixels: not counted
    assert boundary_scores(prediction, truth)["boundary_f"] == 1.0
    prediction[:2] = False  # an edge between two labelled sky pixels: a false edge
    assert boundary_scores(prediction, truth)["boundary_f"] == 0.0


@pytest.mark.parametrize("prediction_sky, truth_sky, expected", [
    (False, False, dict(iou=1.0, dice=1.0, precision=1.0, recall=1.0, boundary_f=1.0)),
    (True, False, dict(iou=0.0, dice=0.0, precision=0.0, recall=0.0, boundary_f=1.0)),
    (False, True, dict(iou=0.0, dice=0.0, precision=0.0, recall=0.0, boundary_f=1.0)),
    (True, True, dict(iou=1.0, dice=1.0, precision=1.0, recall=1.0, boundary_f=1.0)),
])
def test_empty_denominators(prediction_sky, truth_sky, expected):
    prediction = np.full((4, 4), prediction_sky)
    truth = np.full((4, 4), int(truth_sky), np.uint8)
    scores = segmentation_scores(prediction, truth)
    assert {k: scores[k] for k in expected} == expected


def test_boundary_only_on_one_side_scores_zero():
    truth = np.ones((6, 6), np.uint8)
    prediction = np.zeros((6, 6), bool)
    prediction[:3] = True
    assert boundary_scores(prediction, truth)["boundary_f"] == 0.0
    assert metrics.scores_from_counts(dict(tp=0, fp=0, fn=5)) == dict(
        iou=0.0, dice=0.0, precision=0.0, recall=0.0)


def test_masks_of_different_sizes_are_refused():
    with pytest.raises(ConfigError, match=r"prediction \(4, 4\) and truth \(2, 8\) differ in size"):
        segmentation_scores(PREDICTION_4x4, TRUTH_4x4.reshape(2, 8))


def test_summary_mean_median_pooled():
    rows = [dict(iou=v, dice=v, precision=v, recall=v, boundary_f=v, tp=t, fp=f, fn=0)
            for v, t, f in ((0.2, 1, 4), (0.5, 1, 1), (1.0, 6, 0))]
    summary = summarise(rows)
    assert summary["mean"]["iou"] == pytest.approx(1.7 / 3)
    assert summary["median"]["iou"] == 0.5
    assert summary["pooled"]["iou"] == pytest.approx(8 / 13)


def test_mask_rule_0_1_255():
    mask = np.array([[0, 1, 255]], np.uint8)
    np.testing.assert_array_equal(truth_from_mask(mask), [[0, 1, 255]])  # 255 = ignore


def test_mask_rule_0_255_means_sky():
    mask = np.array([[0, 255, 255]], np.uint8)
    np.testing.assert_array_equal(truth_from_mask(mask), [[0, 1, 1]])  # no 1: 255 = sky


def test_mask_rule_from_files(tmp_path):
    write_png(tmp_path / "a.png", np.array([[0, 255], [255, 0]], np.uint8))
    write_png(tmp_path / "b.png", np.array([[0, 1], [255, 1]], np.uint8))
    write_png(tmp_path / "grey.png", np.repeat(np.array([[0, 255]], np.uint8)[..., None], 3, 2))
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_truth_mask(tmp_path / "a.png"), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(read_truth_mask(tmp_path / "b.png"), [[0, 1], [255, 1]])
    np.testing.assert_array_equal(read_truth_mask(tmp_path / "grey.png"), [[0, 1]])
    np.testing.assert_array_equal(read_truth_mask(tmp_path / "bits.png"), [[1, 0]])


def test_bad_masks(tmp_path):
    with pytest.raises(AnnotationError, match="mask values 7, 128 are not 0"):
        truth_from_mask(np.array([[0, 7, 128]], np.uint8))
    with pytest.raises(AnnotationError, match="a colour mask"):
        truth_from_mask(np.zeros((2, 2, 3), np.uint8) + np.array([0, 1, 0], np.uint8))
    with pytest.raises(ImageReadError, match="mask file not found"):
        read_truth_mask(tmp_path / "none.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="unreadable mask"):
        read_truth_mask(tmp_path / "junk.png")


@pytest.fixture(scope="module")
def identity_run(tmp_path_factory):
    from .test_predict import make_run

    return make_run(tmp_path_factory.mktemp("eval") / "run", "identity", mode="ldr")


def _labelled_folder(folder, rng):
    """Seven 16x24 photos whose red channel is the 'prediction' of the identity model.

    Truth: rows 0-7 sky. Image k predicts rows 0..7-k, so its IoU is (8 - k) / 8.
    """
    images, masks = folder / "images", folder / "masks"
    images.mkdir()
    masks.mkdir()
    for k in range(7):
        picture = rng.integers(0, 100, (16, 24, 3)).astype(np.uint8)
        picture[:, :, 0] = 0
        picture[:8 - k, :, 0] = 255
        write_png(images / f"img{k}.png", picture)
        truth = np.zeros((16, 24), np.uint8)
        truth[:8] = 1
        if k % 2:
            write_png(masks / f"img{k}_mask.png", truth * 255)  # 0/255 as people draw them
        else:
            write_png(masks / f"img{k}.png", truth)  # 0/1
    return images, masks


@pytest.mark.slow
def test_evaluate_on_a_masks_folder(identity_run, tmp_path, rng):
    images, masks = _labelled_folder(tmp_path, rng)
    write_png(images / "unlabelled.png", np.zeros((16, 24, 3), np.uint8))
    out = tmp_path / "out"
    result = evaluate_model(identity_run, images, masks=masks, out_dir=out, tile_size=32)
    assert result.report.exit_code == 0 and result.summary["missing_truth"] == ["unlabelled"]
    by_stem = {row["stem"]: row for row in result.rows}
    for k in range(7):
        assert by_stem[f"img{k}"]["iou"] == pytest.approx((8 - k) / 8)
        assert by_stem[f"img{k}"]["precision"] == 1.0
        assert by_stem[f"img{k}"]["recall"] == pytest.approx((8 - k) / 8)
    assert result.summary["mean"]["iou"] == pytest.approx(sum((8 - k) / 8 for k in range(7)) / 7)
    assert result.summary["median"]["iou"] == pytest.approx(5 / 8)
    assert [stem for stem, _, _ in result.worst] == ["img6", "img5", "img4", "img3", "img2"]

    with open(out / "metrics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["stem"] for row in table] == [f"img{k}" for k in range(7)]
    assert float(table[2]["iou"]) == pytest.approx(0.75) and table[2]["width"] == "24"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 7 and summary["worst"][0]["stem"] == "img6"

    written = sorted(p.name for p in (out / "worst").iterdir())
    assert written == [f"{rank}_img{6 - rank + 1}_errors.png" for rank in range(1, 6)]
    picture = np.asarray(Image.open(out / "worst" / "1_img6_errors.png"))
    image = np.asarray(Image.open(images / "img6.png"))
    # The error overlay of the picture (an LDR picture tonemaps to itself), by hand: rows
    # 2-7 (missed sky) blended 60% towards the false-negative colour, the rest untouched.
    expected = image.copy()
    expected[2:8] = np.rint(image[2:8] * 0.4 + np.array(FALSE_NEGATIVE_COLOR) * 0.6)
    np.testing.assert_array_equal(picture, expected)
    missed = picture[2:8].reshape(-1, 3).astype(int)  # false negatives, tinted blue
    assert (missed[:, 2] > missed[:, 0]).all()
    assert FALSE_NEGATIVE_COLOR != FALSE_POSITIVE_COLOR


@pytest.mark.slow
def test_evaluate_only_listed_images(identity_run, tmp_path, rng):
    images, masks = _labelled_folder(tmp_path, rng)
    (tmp_path / "val.txt").write_text("# held out\nimg1.png\nimg4\nnot_here\n")
    result = evaluate_model(identity_run, images, masks=masks, tile_size=32,
                            only=tmp_path / "val.txt")
    assert sorted(row["stem"] for row in result.rows) == ["img1", "img4"]
    assert result.summary["mean"]["iou"] == pytest.approx((7 / 8 + 4 / 8) / 2)
    with pytest.raises(ConfigError, match=r"nope\.txt: image list not found"):
        evaluate_model(identity_run, images, masks=masks, only=tmp_path / "nope.txt")


@pytest.mark.slow
def test_evaluate_cli_prints_mean_and_median_and_reports_bad_masks(identity_run, tmp_path, rng,
                                                                   capsys):
    images, masks = _labelled_folder(tmp_path, rng)
    write_png(masks / "img0.png", np.full((16, 24), 7, np.uint8))  # not 0/1/255
    status = main(["evaluate", str(identity_run), "--images", str(images), "--masks", str(masks),
                   "--out", str(tmp_path / "out"), "--tile-size", "32", "--worst", "2"])
    captured = capsys.readouterr()
    assert status == 1
    assert "6 images scored" in captured.out
    mean_iou = sum((8 - k) / 8 for k in range(1, 7)) / 6
    assert f"iou           {mean_iou:.4f}  0.5625" in captured.out
    assert "worst: img6 (0.250), img5 (0.375)" in captured.out
    assert "mask values 7 are not 0" in captured.err and "1 failed" in captured.err
    assert len(list((tmp_path / "out" / "worst").iterdir())) == 2


def test_truth_source_errors(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError, match="exactly one source of truth"):
        evaluate_model("run", tmp_path / "images")
    with pytest.raises(ConfigError, match="exactly one source of truth"):
        evaluate_model("run", tmp_path / "images", masks=tmp_path, coco=tmp_path / "a.json")
    with pytest.raises(ConfigError, match="images folder not found"):
        evaluate_model("run", tmp_path / "none", masks=tmp_path)
    with pytest.raises(ConfigError, match="--tile-size 100 is not a multiple of 32"):
        evaluate_model("run", tmp_path / "images", masks=tmp_path, tile_size=100)
    with pytest.raises(ConfigError, match="--threshold must be between 0 and 1"):
        evaluate_model("run", tmp_path / "images", masks=tmp_path, threshold=0)
    with pytest.raises(ConfigError, match="--worst must be >= 0"):
        evaluate_model("run", tmp_path / "images", masks=tmp_path, worst=-1)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['tile'\]"):
        evaluate_model("run", tmp_path / "images", masks=tmp_path, tile=64)


def test_cli_checks_options_before_loading_the_model(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    status = main(["evaluate", str(tmp_path / "no_run"), "--images", str(tmp_path / "images"),
                   "--masks", str(tmp_path), "--out", str(tmp_path / "out"), "--tile-size", "48"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0] == ("skyseg evaluate: error: --tile-size 48 is not a multiple of 32 (the U-Net "
                      "halves the tile 5 times); use 32 or 64")
    status = main(["evaluate", str(tmp_path / "no_run"), "--images", str(tmp_path / "images"),
                   "--masks", str(tmp_path), "--out", str(tmp_path / "out")])
    assert status == 2 and "no such run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_no_labelled_image(identity_run, tmp_path, rng):
    images, masks = _labelled_folder(tmp_path, rng)
    for mask in masks.iterdir():
        mask.unlink()
    with pytest.raises(ConfigError, match="no image in .* has truth"):
        evaluate_model(identity_run, images, masks=masks)
    with pytest.raises(ConfigError, match="masks folder not found"):
        evaluate_model(identity_run, images, masks=tmp_path / "nope")


@pytest.mark.slow
def test_mask_of_another_size(identity_run, tmp_path, rng):
    images, masks = _labelled_folder(tmp_path, rng)
    big = np.zeros((32, 48), np.uint8)
    big[:16] = 255
    write_png(masks / "img1_mask.png", big)  # same aspect, twice the size: resized
    write_png(masks / "img2.png", np.zeros((16, 16), np.uint8))  # another aspect: an error
    result = evaluate_model(identity_run, images, masks=masks, tile_size=32)
    by_stem = {row["stem"]: row for row in result.rows}
    assert by_stem["img1"]["iou"] == pytest.approx(7 / 8)
    assert "another aspect ratio" in result.report.failures[0][1]


def _coco_project(folder, rng):
    """Four 16x24 photos and a Label Studio style COCO export of their sky.

    Truth: the sky polygon covers rows 0-7 (a non-sky hole at rows 2-3, cols 4-7
    in img0). The identity model predicts rows 0..7-k of image k.
    """
    images = folder / "images"
    images.mkdir()
    entries, annotations = [], []
    for k in range(4):
        picture = rng.integers(0, 100, (16, 24, 3)).astype(np.uint8)
        picture[:, :, 0] = 0
        picture[:8 - k, :, 0] = 255
        write_png(images / f"img{k}.png", picture)
        entries.append({"id": k, "width": 24, "height": 16,
                        "file_name": f"images/{k:08x}-img{k}.png"})
        annotations.append({"id": 10 + k, "image_id": k, "category_id": 1,
                            "segmentation": [[0, 0, 24, 0, 24, 8, 0, 8]]})
    annotations.append({"id": 99, "image_id": 0, "category_id": 2,
                        "segmentation": [[4, 2, 8, 2, 8, 4, 4, 4]]})
    coco = folder / "result.json"
    coco.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": [
        {"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"}]}))
    return images, coco


@pytest.mark.slow
def test_evaluate_with_a_coco_export(identity_run, tmp_path, rng):
    images, coco = _coco_project(tmp_path, rng)
    result = evaluate_model(identity_run, images, coco=coco, out_dir=tmp_path / "out",
                            tile_size=32, worst=2)
    assert result.report.exit_code == 0
    by_stem = {row["stem"]: row for row in result.rows}
    # img0: truth = 8 rows minus the 2x4 hole (184 px); the prediction covers all 8 rows.
    assert by_stem["img0"]["iou"] == pytest.approx((8 * 24 - 8) / (8 * 24))
    assert by_stem["img0"]["precision"] == pytest.approx((8 * 24 - 8) / (8 * 24))
    for k in (1, 2, 3):
        assert by_stem[f"img{k}"]["iou"] == pytest.approx((8 - k) / 8)
    assert [stem for stem, _, _ in result.worst] == ["img3", "img2"]
    assert (tmp_path / "out" / "worst" / "1_img3_errors.png").is_file()


def colour_rule_run(run, *, scale: float):
    """A run folder whose 'network' is a colour rule (blue and bright is sky), LDR at ``scale``."""
    from skyseg.backend import import_keras
    from skyseg.image.preprocess import Preprocessing
    from skyseg.training.model import save_model

    keras = import_keras()
    inputs = keras.Input((None, None, 3))
    layer = keras.layers.Conv2D(1, 1, activation="sigmoid")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([np.array([-4, 2, 8], np.float32).reshape(1, 1, 3, 1),
                       np.array([-3.5], np.float32)])
    run.mkdir()
    save_model(model, run / "model_best.h5", include_optimizer=False)
    Preprocessing(mode="ldr", scale=scale).save(run / "preprocessing.json")
    return run


@pytest.mark.slow
def test_evaluate_on_real_camvid_labels(tmp_path, camvid):
    """Real photos and real Label Studio polygons, with a colour-rule 'network'
    (blue and bright is sky) so the scores mean something."""
    run = colour_rule_run(tmp_path / "run", scale=1.0)
    images = tmp_path / "images"
    images.mkdir()
    names = sorted((camvid / "images").glob("0001TP_*.jpg"))[:6]
    for name in names:
        (images / name.name).symlink_to(name)
    result = evaluate_model(run, images, coco=camvid / "result.json", out_dir=tmp_path / "out")
    assert result.report.exit_code == 0 and len(result.rows) == 6
    assert 0.3 < result.summary["mean"]["iou"] < 1.0  # a crude rule, but it finds sky
    assert len(result.summary["missing_truth"]) == 468 - 6
    assert len(list((tmp_path / "out" / "worst").iterdir())) == 5


@pytest.mark.slow
@pytest.mark.parametrize("refine", ["none", "guided"])
def test_evaluate_refine_option_on_a_model_run_at_half_size(tmp_path, camvid, refine, capsys):
    """``skyseg evaluate --refine none|guided`` on real photos with a colour-rule
    network that runs at half the size (scale 0.5, as the CamVid benchmark model)."""
    run = colour_rule_run(tmp_path / "run", scale=0.5)
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted((camvid / "images").glob("0001TP_*.jpg"))[:3]:
        (images / name.name).symlink_to(name)
    status = main(["evaluate", str(run), "--images", str(images), "--coco",
                   str(camvid / "result.json"), "--out", str(tmp_path / "out"), "--worst", "0",
                   "--refine", refine])
    assert status == 0 and "3 images scored" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["options"]["refine"] == refine
    assert 0.3 < summary["mean"]["iou"] <= 1.0 and 0.0 < summary["mean"]["boundary_f"] <= 1.0


@pytest.mark.slow
def test_ignore_sky_gaps_leaves_the_gaps_between_branches_out(identity_run, tmp_path):
    """Sky between branches labelled tree: an error as drawn, out of the scores with the option."""
    picture = np.zeros((240, 240, 3), np.uint8)
    picture[:60] = 220  # white sky (red 220: the identity model calls it sky)
    picture[60:] = 40  # dark ground
    picture[46:60:3, 70:120] = 30  # dark branches of a crown, sky between them
    truth = np.zeros((240, 240), np.uint8)
    truth[:60] = 1
    truth[46:60, 70:120] = 0  # the whole crown labelled tree
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "images" / "crown.png", picture)
    write_png(tmp_path / "masks" / "crown.png", truth)
    drawn = evaluate_model(identity_run, tmp_path / "images", masks=tmp_path / "masks",
                           tile_size=32)
    neutral = evaluate_model(identity_run, tmp_path / "images", masks=tmp_path / "masks",
                             tile_size=32, ignore_sky_gaps=True)
    gaps = int(np.count_nonzero(picture[46:60, 70:120, 0] == 220))
    sky = int(np.count_nonzero(truth))
    assert drawn.rows[0]["iou"] == pytest.approx(sky / (sky + gaps))
    assert drawn.rows[0]["ignored"] == 0 and drawn.summary["ignore_sky_gaps"] is False
    assert neutral.rows[0]["iou"] == 1.0
    assert neutral.rows[0]["ignored"] == pytest.approx(gaps / truth.size)
    assert neutral.summary["ignore_sky_gaps"] is True

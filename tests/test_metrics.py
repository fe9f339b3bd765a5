"""Losses and metrics on hand-made 3x3 arrays, numpy and tensors, with ignored pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skyseg.errors import ConfigError
from skyseg.image import metrics

# 0 = not sky, 1 = sky, 255 = ignored (the centre pixel, predicted 0.9: must not count).
TRUTH = np.array([[1, 1, 0],
                  [0, 255, 0],
                  [1, 0, 0]], np.uint8)
PROB = np.array([[0.9, 0.2, 0.1],
                 [0.7, 0.9, 0.0],
                 [0.6, 0.3, 0.4]])  # float64: the numpy maths is float64
# Thresholded at 0.5 over the 8 valid pixels: TP (0,0) (2,0); FN (0,1); FP (1,0); TN 4.
EXPECTED_IOU = 2 / 4
EXPECTED_DICE = 4 / 6
# Per valid pixel, -log of the probability given to the true class (0.0 is clipped to 1e-7).
BCE_TERMS = [-math.log(0.9), -math.log(0.2), -math.log(0.9), -math.log(0.3),
             -math.log(1 - 1e-7), -math.log(0.6), -math.log(0.7), -math.log(0.6)]
EXPECTED_BCE = sum(BCE_TERMS) / 8
# Soft overlap over valid pixels: sum(t p) = 0.9 + 0.2 + 0.6, sum(t) = 3, sum(p) = 3.2.
S = metrics.SMOOTH
EXPECTED_JACCARD = 1 - (1.7 + S) / (3 + 3.2 - 1.7 + S)
EXPECTED_DICE_LOSS = 1 - (2 * 1.7 + S) / (3 + 3.2 + S)
FOCAL_TERMS = [
    -0.25 * 0.1 ** 2 * math.log(0.9),        # t=1, p=0.9
    -0.25 * 0.8 ** 2 * math.log(0.2),        # t=1, p=0.2
    -0.75 * 0.1 ** 2 * math.log(0.9),        # t=0, p=0.1
    -0.75 * 0.7 ** 2 * math.log(0.3),        # t=0, p=0.7
    -0.75 * 1e-7 ** 2 * math.log(1 - 1e-7),  # t=0, p=0 (clipped)
    -0.25 * 0.4 ** 2 * math.log(0.6),        # t=1, p=0.6
    -0.75 * 0.3 ** 2 * math.log(0.7),        # t=0, p=0.3
    -0.75 * 0.4 ** 2 * math.log(0.6),        # t=0, p=0.4
]
EXPECTED_FOCAL = sum(FOCAL_TERMS) / 8
EXPECTED_LOSSES = {
    "bce": EXPECTED_BCE,
    "jaccard": EXPECTED_JACCARD,
    "dice": EXPECTED_DICE_LOSS,
    "focal": EXPECTED_FOCAL,
    "bce_jaccard": EXPECTED_BCE + EXPECTED_JACCARD,
    "bce_dice": EXPECTED_BCE + EXPECTED_DICE_LOSS,
}


def as_batch(array: np.ndarray, dtype=np.float32) -> np.ndarray:
    return np.asarray(array, dtype=dtype)[None, :, :, None]


# --------------------------------------------------------------------------- numpy


def test_docstring_examples():
    import doctest

    assert doctest.testmod(metrics).failed == 0


def test_confusion_counts_ignore_the_255_pixel():
    assert metrics.confusion_counts(TRUTH, PROB) == {"tp": 2, "fp": 1, "fn": 1, "tn": 4,
                                                     "ignored": 1}


@pytest.mark.parametrize("counts, expected", [
    (dict(tp=6, fp=1, fn=2), dict(iou=6 / 9, dice=12 / 15, precision=6 / 7, recall=6 / 8)),
    # Empty denominators: 1.0 where prediction and truth agree there is no sky, else 0.0.
    (dict(tp=0, fp=0, fn=0), dict(iou=1.0, dice=1.0, precision=1.0, recall=1.0)),
    (dict(tp=0, fp=3, fn=0), dict(iou=0.0, dice=0.0, precision=0.0, recall=0.0)),
    (dict(tp=0, fp=0, fn=5), dict(iou=0.0, dice=0.0, precision=0.0, recall=0.0)),
])
def test_scores_from_counts(counts, expected):
    scores = metrics.scores_from_counts(counts)
    assert scores == pytest.approx(expected, abs=1e-15)
    assert set(scores) == set(expected)


def test_iou_and_dice_are_the_scores_of_the_counts():
    # The counts of TRUTH and PROB, by hand (see the top of the file): TP 2, FP 1, FN 1.
    scores = metrics.scores_from_counts(dict(tp=2, fp=1, fn=1))
    assert scores["iou"] == EXPECTED_IOU and scores["dice"] == pytest.approx(EXPECTED_DICE)
    assert metrics.iou_score(TRUTH, PROB) == scores["iou"]
    assert metrics.dice_score(TRUTH, PROB) == scores["dice"]


def _counts_by_numpy(truth: np.ndarray, prob: np.ndarray) -> dict:
    """Confusion counts by the rule written out: sky where prob > 0.5, 255 ignored."""
    valid, sky, predicted = truth != 255, truth == 1, prob > 0.5
    return {"tp": int(np.sum(valid & sky & predicted)),
            "fp": int(np.sum(valid & ~sky & predicted)),
            "fn": int(np.sum(valid & sky & ~predicted)),
            "tn": int(np.sum(valid & ~sky & ~predicted)),
            "ignored": int(np.sum(~valid))}


@pytest.mark.parametrize("shape", [(37, 5), (37,), (7, 3, 4), (0, 4), ()])
def test_counts_in_bands_equal_counts_at_once(monkeypatch, rng, shape):
    truth = rng.choice(np.array([0, 1, 255], np.uint8), size=shape)
    prob = rng.random(shape)
    at_once = metrics.confusion_counts(truth, prob)
    assert at_once == _counts_by_numpy(truth, prob)
    assert sum(at_once.values()) == truth.size
    monkeypatch.setattr(metrics, "_BAND_PIXELS", 7)  # bands of one or a few rows
    assert metrics.confusion_counts(truth, prob) == at_once


def test_iou_and_dice_are_exact():
    assert metrics.iou_score(TRUTH, PROB) == EXPECTED_IOU
    assert metrics.dice_score(TRUTH, PROB) == pytest.approx(EXPECTED_DICE, abs=1e-15)


def test_threshold_is_strictly_greater_than_one_half():
    truth = np.array([1, 1, 0])
    assert metrics.binarize(np.array([0.5, 0.5000001, 0.49])).tolist() == [0, 1, 0]
    assert metrics.iou_score(truth, np.array([0.5, 0.6, 0.1])) == 0.5


def test_empty_truth_and_prediction_score_one():
    truth = np.zeros((3, 3), np.uint8)
    assert metrics.iou_score(truth, np.full((3, 3), 0.2)) == 1.0
    assert metrics.dice_score(truth, np.full((3, 3), 0.2)) == 1.0
    assert metrics.iou_score(truth, np.full((3, 3), 0.8)) == 0.0


def test_all_ignored_counts_nothing():
    truth = np.full((3, 3), 255, np.uint8)
    assert metrics.iou_score(truth, PROB) == 1.0
    assert metrics.loss_value("bce_jaccard", truth, PROB) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", sorted(EXPECTED_LOSSES))
def test_numpy_losses_match_hand_computation(name):
    assert metrics.loss_value(name, TRUTH, PROB) == pytest.approx(EXPECTED_LOSSES[name],
                                                                  rel=1e-12)


def test_ignored_pixel_value_does_not_change_any_loss():
    other = PROB.copy()
    other[1, 1] = 0.0
    for name in EXPECTED_LOSSES:
        assert metrics.loss_value(name, TRUTH, other) == metrics.loss_value(name, TRUTH, PROB)


def test_shape_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match=r"truth shape \(3, 3\) and prediction shape \(2, 2\)"):
        metrics.iou_score(TRUTH, np.zeros((2, 2)))


def test_unknown_loss_name():
    with pytest.raises(ConfigError, match="unknown loss 'iou'; choose one of: bce_jaccard"):
        metrics.get_loss("iou")
    with pytest.raises(ConfigError, match="unknown loss"):
        metrics.loss_value("dice_bce", TRUTH, PROB)


# --------------------------------------------------------------------------- tensors


@pytest.mark.parametrize("name", sorted(EXPECTED_LOSSES))
def test_tensor_losses_match_hand_computation(name):
    value = float(metrics.get_loss(name)(as_batch(TRUTH), as_batch(PROB)))
    assert value == pytest.approx(EXPECTED_LOSSES[name], rel=2e-6)


def test_tensor_losses_accept_uint8_truth():
    value = float(metrics.bce_jaccard_loss(as_batch(TRUTH, np.uint8), as_batch(PROB)))
    assert value == pytest.approx(EXPECTED_BCE + EXPECTED_JACCARD, rel=2e-6)


def test_keras_metrics_are_exact_and_ignore_255():
    iou, dice = metrics.make_metrics()
    iou.update_state(as_batch(TRUTH), as_batch(PROB))
    dice.update_state(as_batch(TRUTH), as_batch(PROB))
    assert float(iou.result()) == EXPECTED_IOU
    assert float(dice.result()) == pytest.approx(EXPECTED_DICE, rel=1e-7)


def test_keras_iou_accumulates_pixels_over_batches_not_batch_means():
    iou = metrics.make_metrics()[0]
    # Batch 1: TP 2, FP 1, FN 1 (IoU 1/2). Batch 2: one sky pixel missed (IoU 0).
    iou.update_state(as_batch(TRUTH), as_batch(PROB))
    second_truth = np.zeros((3, 3), np.uint8)
    second_truth[0, 0] = 1
    iou.update_state(as_batch(second_truth), as_batch(np.zeros((3, 3))))
    # 2 / (2 + 1 + 2), in float32; the mean of the batches' IoUs would be 1/4.
    assert iou.result().numpy() == np.float32(2 / 5)
    iou.reset_state()
    iou.update_state(as_batch(np.zeros((3, 3))), as_batch(np.zeros((3, 3))))
    assert float(iou.result()) == 1.0


def test_custom_objects_name_every_loss_and_metric():
    objects = metrics.custom_objects()
    assert {"bce_jaccard_loss", "bce_dice_loss", "dice_loss", "focal_loss", "jaccard_loss",
            "bce_loss", "IoU", "Dice"} <= set(objects)
    iou = objects["IoU"].from_config(objects["IoU"]().get_config())
    assert iou.name == "iou" and iou.threshold == 0.5

"""Losses and metrics for binary sky masks, with ignored pixels.

One functional module, as in segmentation_models: the maths is written once
per quantity, for tensors (training) and for numpy arrays (evaluation), and
thin Keras wrappers accumulate the metrics over an epoch.

Conventions:
    * ``y_true``: sky truth with 0 = not sky, 1 = sky and :data:`IGNORE`
      (255) = unknown (padding, unlabelled, pixels invented by
      augmentation). Ignored pixels count in no loss and no metric.
      Any shape; tensors are ``(N, H, W, 1)`` in training.
    * ``y_pred`` / ``y_prob``: sky probability in 0..1, same shape.
    * A pixel is predicted sky when its probability is ``> 0.5``
      (:data:`THRESHOLD`, strictly greater, as Keras and segmentation_models).

Losses (means over the valid pixels of the whole batch; the overlap terms
are batch-wide sums, as segmentation_models with ``per_image=False``):

    ============== ======================================================
    ``bce``        binary cross-entropy, probabilities clipped to [1e-7, 1-1e-7]
    ``jaccard``    1 - (sum(t p) + s) / (sum(t) + sum(p) - sum(t p) + s)
    ``dice``       1 - (2 sum(t p) + s) / (sum(t) + sum(p) + s)
    ``focal``      -a t (1-p)^g log p - (1-a)(1-t) p^g log(1-p), a=0.25, g=2
    ``bce_jaccard`` bce + jaccard (the default, as the original pipeline)
    ``bce_dice``   bce + dice
    ============== ======================================================

with ``s`` = :data:`SMOOTH` = 1e-5. Metrics (thresholded, no smoothing):
IoU = TP / (TP + FP + FN) and Dice = F1 = 2 TP / (2 TP + FP + FN); both are
1.0 when neither truth nor prediction has any sky. :func:`scores_from_counts`
is the one place this count-to-score rule is written for numpy (``skyseg
evaluate`` scores through it too); the Keras metrics apply it to tensors.

Example:
    >>> import numpy as np
    >>> truth = np.array([[1, 1, 0], [0, 255, 0], [1, 0, 0]], np.uint8)
    >>> prob = np.array([[0.9, 0.2, 0.1], [0.7, 0.9, 0.0], [0.6, 0.3, 0.4]], np.float32)
    >>> iou_score(truth, prob)  # TP 2, FP 1, FN 1 (the 255 pixel is ignored)
    0.5
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from skyseg.errors import ConfigError

__all__ = [
    "IGNORE",
    "THRESHOLD",
    "SMOOTH",
    "EPSILON",
    "LOSSES",
    "binarize",
    "valid_pixels",
    "confusion_counts",
    "scores_from_counts",
    "iou_score",
    "dice_score",
    "loss_value",
    "bce_loss",
    "jaccard_loss",
    "dice_loss",
    "focal_loss",
    "bce_jaccard_loss",
    "bce_dice_loss",
    "get_loss",
    "make_metrics",
    "metric_classes",
    "custom_objects",
]

#: Truth value of pixels that count nowhere.
IGNORE = 255
#: Probability above which a pixel is sky.
THRESHOLD = 0.5
#: Added to numerator and denominator of the soft Jaccard / Dice losses.
SMOOTH = 1e-5
#: Probabilities are clipped to [EPSILON, 1 - EPSILON] before a logarithm (Keras' epsilon).
EPSILON = 1e-7
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0

#: Loss name -> name of the tensor function in this module.
LOSSES = {
    "bce_jaccard": "bce_jaccard_loss",
    "bce_dice": "bce_dice_loss",
    "dice": "dice_loss",
    "focal": "focal_loss",
    "jaccard": "jaccard_loss",
    "bce": "bce_loss",
}


# --------------------------------------------------------------------------- numpy


def binarize(y_prob: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Sky decision of probabilities: uint8, 1 where ``y_prob > threshold``.

    Example:
        >>> binarize(np.array([0.2, 0.5, 0.51])).tolist()
        [0, 0, 1]
    """
    return (np.asarray(y_prob) > threshold).astype(np.uint8)


def valid_pixels(y_true: np.ndarray) -> np.ndarray:
    """Boolean array: True where the truth is 0 or 1 (not :data:`IGNORE`)."""
    return np.asarray(y_true) != IGNORE


def _numpy_pair(y_true, y_prob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_true, y_prob = _same_shape(y_true, y_prob)
    y_prob = y_prob.astype(np.float64, copy=False)
    valid = valid_pixels(y_true)
    truth = np.where(valid, y_true, 0).astype(np.float64)
    return truth, y_prob, valid


def _same_shape(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """Both as arrays of the truth's shape (a prediction of the same size is reshaped)."""
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob)
    if y_true.shape != y_prob.shape:
        if y_true.size == y_prob.size:
            y_prob = y_prob.reshape(y_true.shape)
        else:
            raise ConfigError(
                f"truth shape {y_true.shape} and prediction shape {y_prob.shape} differ; "
                "pass a mask and a probability map of the same image"
            )
    return y_true, y_prob


#: Pixels counted at a time by :func:`confusion_counts` (256 rows of an 8K
#: panorama): its float64 working copies of a whole 8K image would take half
#: a gigabyte.
_BAND_PIXELS = 256 * 8192


def confusion_counts(y_true: np.ndarray, y_prob: np.ndarray,
                     threshold: float = THRESHOLD) -> dict[str, int]:
    """True/false positives and negatives of sky, ignoring :data:`IGNORE` pixels.

    Counted in bands of rows (along the first axis), so memory stays small
    for an 8K panorama.

    Args:
        y_true: truth (0, 1, 255), any shape.
        y_prob: probabilities (or a 0/1 decision), same shape.
        threshold: sky where ``y_prob > threshold``.

    Returns:
        ``{"tp", "fp", "fn", "tn", "ignored"}`` pixel counts.

    Raises:
        ConfigError: ``y_true`` and ``y_prob`` have different sizes.

    Example:
        >>> confusion_counts(np.array([1, 0, 255]), np.array([0.9, 0.9, 0.9]))
        {'tp': 1, 'fp': 1, 'fn': 0, 'tn': 0, 'ignored': 1}
    """
    y_true, y_prob = _same_shape(y_true, y_prob)
    y_true, y_prob = np.atleast_1d(y_true), np.atleast_1d(y_prob)
    rows = max(1, _BAND_PIXELS // max(1, y_true[:1].size))
    total = dict.fromkeys(("tp", "fp", "fn", "tn", "ignored"), 0)
    for start in range(0, max(len(y_true), 1), rows):
        truth, prob, valid = _numpy_pair(y_true[start:start + rows], y_prob[start:start + rows])
        predicted = (prob > threshold) & valid
        actual = (truth > 0.5) & valid
        tp = int(np.count_nonzero(predicted & actual))
        fp = int(np.count_nonzero(predicted & ~actual))
        fn = int(np.count_nonzero(~predicted & actual))
        band = {"tp": tp, "fp": fp, "fn": fn, "tn": int(np.count_nonzero(valid)) - tp - fp - fn,
                "ignored": int(valid.size - np.count_nonzero(valid))}
        for key in total:
            total[key] += band[key]
    return total


def _ratio(numerator: int, denominator: int, *, agree: bool) -> float:
    if denominator == 0:
        return 1.0 if agree else 0.0
    return float(numerator) / float(denominator)


def scores_from_counts(counts: Mapping[str, int]) -> dict[str, float]:
    """IoU, Dice, precision and recall of sky from pixel counts.

    IoU = TP / (TP + FP + FN), Dice = 2 TP / (2 TP + FP + FN), precision =
    TP / (TP + FP), recall = TP / (TP + FN). An empty denominator gives 1.0
    when prediction and truth agree that there is no sky (nothing predicted
    that is not there, nothing there that was missed), else 0.0.

    Args:
        counts: at least ``"tp"``, ``"fp"`` and ``"fn"`` (as
            :func:`confusion_counts` returns).

    Returns:
        ``{"iou", "dice", "precision", "recall"}``.

    Example:
        >>> scores_from_counts({"tp": 6, "fp": 1, "fn": 2})["iou"]
        0.6666666666666666
        >>> scores_from_counts({"tp": 0, "fp": 0, "fn": 0})["dice"]
        1.0
    """
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    nothing = tp == 0 and fp == 0 and fn == 0
    return {
        "iou": _ratio(tp, tp + fp + fn, agree=nothing),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, agree=nothing),
        "precision": _ratio(tp, tp + fp, agree=fn == 0),
        "recall": _ratio(tp, tp + fn, agree=fp == 0),
    }


def iou_score(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = THRESHOLD) -> float:
    """Intersection over union of sky: TP / (TP + FP + FN); 1.0 when both are empty.

    Example:
        >>> iou_score(np.array([1, 1, 0, 0]), np.array([0.9, 0.1, 0.8, 0.2]))
        0.3333333333333333
    """
    return scores_from_counts(confusion_counts(y_true, y_prob, threshold))["iou"]


def dice_score(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = THRESHOLD) -> float:
    """Dice coefficient (F1) of sky: 2 TP / (2 TP + FP + FN); 1.0 when both are empty.

    Example:
        >>> dice_score(np.array([1, 1, 0, 0]), np.array([0.9, 0.1, 0.8, 0.2]))
        0.5
    """
    return scores_from_counts(confusion_counts(y_true, y_prob, threshold))["dice"]


def loss_value(name: str, y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """A loss of :data:`LOSSES` computed with numpy (float64), same maths as training.

    Example:
        >>> round(loss_value("bce", np.array([1, 255]), np.array([0.5, 0.0])), 6)
        0.693147
    """
    _check_loss_name(name)
    truth, prob, valid = _numpy_pair(y_true, y_prob)
    count = max(int(valid.sum()), 1)
    weight = valid.astype(np.float64)
    clipped = np.clip(prob, EPSILON, 1.0 - EPSILON)

    def bce() -> float:
        per_pixel = -(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped))
        return float((per_pixel * weight).sum() / count)

    def overlap() -> tuple[float, float, float]:
        return (float((truth * prob * weight).sum()), float((truth * weight).sum()),
                float((prob * weight).sum()))

    def jaccard() -> float:
        inter, t, p = overlap()
        return 1.0 - (inter + SMOOTH) / (t + p - inter + SMOOTH)

    def dice() -> float:
        inter, t, p = overlap()
        return 1.0 - (2 * inter + SMOOTH) / (t + p + SMOOTH)

    def focal() -> float:
        per_pixel = (-FOCAL_ALPHA * truth * (1 - clipped) ** FOCAL_GAMMA * np.log(clipped)
                     - (1 - FOCAL_ALPHA) * (1 - truth) * clipped ** FOCAL_GAMMA
                     * np.log(1 - clipped))
        return float((per_pixel * weight).sum() / count)

    parts = {"bce": [bce], "jaccard": [jaccard], "dice": [dice], "focal": [focal],
             "bce_jaccard": [bce, jaccard], "bce_dice": [bce, dice]}[name]
    return float(sum(part() for part in parts))


def _check_loss_name(name: str) -> str:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return name


# --------------------------------------------------------------------------- tensors


def _tf():
    from skyseg.backend import import_keras

    import_keras()
    import tensorflow as tf

    return tf


def _tensor_pair(y_true, y_pred):
    """(truth 0/1 float32, probability float32, valid weight float32, valid count)."""
    tf = _tf()
    y_pred = tf.cast(y_pred, tf.float32)
    y_true = tf.cast(y_true, tf.float32)
    y_true = tf.reshape(y_true, tf.shape(y_pred))
    valid = tf.cast(tf.not_equal(y_true, float(IGNORE)), tf.float32)
    truth = y_true * valid
    count = tf.maximum(tf.reduce_sum(valid), 1.0)
    return truth, y_pred, valid, count


def bce_loss(y_true, y_pred):
    """Binary cross-entropy, mean over the valid pixels of the batch (scalar tensor)."""
    tf = _tf()
    truth, prob, valid, count = _tensor_pair(y_true, y_pred)
    prob = tf.clip_by_value(prob, EPSILON, 1.0 - EPSILON)
    per_pixel = -(truth * tf.math.log(prob) + (1.0 - truth) * tf.math.log(1.0 - prob))
    return tf.reduce_sum(per_pixel * valid) / count


def _soft_overlap(y_true, y_pred):
    tf = _tf()
    truth, prob, valid, _ = _tensor_pair(y_true, y_pred)
    prob = prob * valid
    return tf.reduce_sum(truth * prob), tf.reduce_sum(truth), tf.reduce_sum(prob)


def jaccard_loss(y_true, y_pred):
    """1 - soft Jaccard index over the valid pixels of the batch (scalar tensor)."""
    inter, t, p = _soft_overlap(y_true, y_pred)
    return 1.0 - (inter + SMOOTH) / (t + p - inter + SMOOTH)


def dice_loss(y_true, y_pred):
    """1 - soft Dice coefficient over the valid pixels of the batch (scalar tensor)."""
    inter, t, p = _soft_overlap(y_true, y_pred)
    return 1.0 - (2.0 * inter + SMOOTH) / (t + p + SMOOTH)


def focal_loss(y_true, y_pred):
    """Binary focal loss (alpha 0.25, gamma 2), mean over the valid pixels (scalar tensor)."""
    tf = _tf()
    truth, prob, valid, count = _tensor_pair(y_true, y_pred)
    prob = tf.clip_by_value(prob, EPSILON, 1.0 - EPSILON)
    per_pixel = (-FOCAL_ALPHA * truth * tf.pow(1.0 - prob, FOCAL_GAMMA) * tf.math.log(prob)
                 - (1.0 - FOCAL_ALPHA) * (1.0 - truth) * tf.pow(prob, FOCAL_GAMMA)
                 * tf.math.log(1.0 - prob))
    return tf.reduce_sum(per_pixel * valid) / count


def bce_jaccard_loss(y_true, y_pred):
    """Binary cross-entropy + Jaccard loss: the default, as the original pipeline."""
    return bce_loss(y_true, y_pred) + jaccard_loss(y_true, y_pred)


def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy + Dice loss."""
    return bce_loss(y_true, y_pred) + dice_loss(y_true, y_pred)


def get_loss(name: str = "bce_jaccard"):
    """The tensor loss function called ``name`` (a key of :data:`LOSSES`).

    Raises:
        ConfigError: unknown name.

    Example:
        >>> get_loss("dice").__name__
        'dice_loss'
    """
    return globals()[LOSSES[_check_loss_name(name)]]


def confusion_tensor(y_true, y_pred, threshold: float = THRESHOLD):
    """(TP, FP, FN) of a batch as float32 scalar tensors, ignoring :data:`IGNORE` pixels."""
    tf = _tf()
    truth, prob, valid, _ = _tensor_pair(y_true, y_pred)
    predicted = tf.cast(prob > threshold, tf.float32) * valid
    tp = tf.reduce_sum(predicted * truth)
    fp = tf.reduce_sum(predicted) - tp
    fn = tf.reduce_sum(truth) - tp
    return tp, fp, fn


@functools.cache
def metric_classes() -> dict:
    """The Keras metric classes ``{"IoU": ..., "Dice": ...}`` (built on first call).

    They accumulate TP, FP and FN over all the batches of an epoch, so the
    epoch's value is the IoU / Dice of all its pixels together, not a mean
    of per-batch values.
    """
    from skyseg.backend import import_keras

    keras = import_keras()
    tf = _tf()

    class _Confusion(keras.metrics.Metric):
        def __init__(self, name: str, threshold: float = THRESHOLD, **kwargs):
            super().__init__(name=name, **kwargs)
            self.threshold = float(threshold)
            self.tp = self.add_weight(name="tp", initializer="zeros", dtype=tf.float32)
            self.fp = self.add_weight(name="fp", initializer="zeros", dtype=tf.float32)
            self.fn = self.add_weight(name="fn", initializer="zeros", dtype=tf.float32)

        def update_state(self, y_true, y_pred, sample_weight=None):
            tp, fp, fn = confusion_tensor(y_true, y_pred, self.threshold)
            self.tp.assign_add(tp)
            self.fp.assign_add(fp)
            self.fn.assign_add(fn)

        def reset_state(self):
            for variable in (self.tp, self.fp, self.fn):
                variable.assign(0.0)

        def get_config(self):
            return {**super().get_config(), "threshold": self.threshold}

    class IoU(_Confusion):
        """Thresholded IoU of sky over an epoch (TP / (TP + FP + FN), 1 when empty)."""

        def __init__(self, name: str = "iou", threshold: float = THRESHOLD, **kwargs):
            super().__init__(name=name, threshold=threshold, **kwargs)

        def result(self):
            union = self.tp + self.fp + self.fn
            return tf.where(union > 0, self.tp / tf.maximum(union, 1.0), 1.0)

    class Dice(_Confusion):
        """Thresholded Dice / F1 of sky over an epoch (2 TP / (2 TP + FP + FN))."""

        def __init__(self, name: str = "dice", threshold: float = THRESHOLD, **kwargs):
            super().__init__(name=name, threshold=threshold, **kwargs)

        def result(self):
            denominator = 2.0 * self.tp + self.fp + self.fn
            return tf.where(denominator > 0, 2.0 * self.tp / tf.maximum(denominator, 1.0), 1.0)

    return {"IoU": IoU, "Dice": Dice}


def make_metrics() -> list:
    """Fresh metric objects for ``model.compile``: IoU (``"iou"``) and Dice (``"dice"``)."""
    classes = metric_classes()
    return [classes["IoU"](), classes["Dice"]()]


def custom_objects() -> dict:
    """Names a compiled skyseg model refers to, for ``keras.models.load_model``."""
    objects = {function_name: globals()[function_name] for function_name in LOSSES.values()}
    objects.update(metric_classes())
    return objects

"""The optimisation recipe of ``skyseg train``: schedule, optimizer, weight average.

Chosen by experiment on CamVid sky (see docs/decisions.md, "Training recipe and augmentation"); each
piece addresses what made training from scratch unstable:

* **Warm-up, then cosine decay** (:func:`learning_rate_at`,
  :class:`WarmupCosine` in Keras): the learning rate rises linearly from 0
  over the first ``warmup_steps``, then follows half a cosine down to
  ``final_fraction`` of its peak at ``total_steps``. Without the warm-up, Adam's
  first large steps on randomly initialised BatchNorm layers sent validation
  IoU from 0.92 to 0.02 and back; without the decay, it oscillates to the end.
* **AdamW** (decoupled weight decay, :func:`make_optimizer`), BatchNorm
  scales/offsets and biases excluded from the decay, and a clip of the
  global gradient norm (one bad batch cannot throw the weights away).
* **An exponential moving average of the weights**
  (:func:`weight_average_class`): validation, ``model_best.h5``, the sample
  pictures and so prediction use the averaged weights, which move smoothly
  where the raw weights jump from batch to batch. The average includes the
  BatchNorm moving statistics. Its momentum warms up as
  ``min(momentum, (1 + n) / (10 + n))`` after ``n`` updates (as
  ``tf.train.ExponentialMovingAverage``), so short runs are not dragged back
  towards the random initial weights.

Only :func:`learning_rate_at` and the constants import without TensorFlow.

Example:
    >>> round(learning_rate_at(0, base=1e-3, total_steps=100, warmup_steps=10), 6)
    0.0
    >>> round(learning_rate_at(10, base=1e-3, total_steps=100, warmup_steps=10), 6)
    0.001
    >>> round(learning_rate_at(100, base=1e-3, total_steps=100, warmup_steps=10), 6)
    1e-05
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math

import numpy as np

from skyseg.errors import ConfigError

__all__ = ["SCHEDULES", "OPTIMIZERS", "learning_rate_at", "warmup_cosine_class",
           "make_optimizer", "weight_average_class", "custom_objects", "check_recipe",
           "NO_DECAY_NAMES"]

logger = logging.getLogger("skyseg")

SCHEDULES = ("cosine", "plateau")
OPTIMIZERS = ("adamw", "adam")
#: Variables whose name contains one of these get no weight decay (BatchNorm
#: gamma/beta, biases): decaying a BatchNorm scale towards 0 only fights the
#: normalisation.
NO_DECAY_NAMES = ("gamma", "beta", "bias", "moving_")
#: Final learning rate of the cosine, as a fraction of the peak.
FINAL_FRACTION = 0.01


def learning_rate_at(step: int | float, *, base: float, total_steps: int, warmup_steps: int,
                     final_fraction: float = FINAL_FRACTION) -> float:
    """The warm-up + cosine learning rate at a (0-based) optimizer step.

    Args:
        step: optimizer steps done so far (the rate used by step ``step + 1``).
        base: peak learning rate, reached at ``warmup_steps``.
        total_steps: where the cosine ends (``final_fraction * base`` from
            there on).
        warmup_steps: linear rise from 0 (0: start at ``base``).
        final_fraction: the end of the cosine, as a fraction of ``base``.

    Returns:
        the learning rate, a float.

    Example:
        >>> learning_rate_at(5, base=1.0, total_steps=20, warmup_steps=10)
        0.5
    """
    step = float(step)
    if warmup_steps > 0 and step < warmup_steps:
        return base * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0.0) / span, 1.0)
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def check_recipe(*, schedule: str, optimizer: str, weight_decay: float, warmup_epochs: float,
                 ema_momentum: float | None, clip_norm: float | None) -> None:
    """Raise :class:`~skyseg.errors.ConfigError` on a bad recipe option (names the option)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, "
                          f"got {optimizer!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ConfigError(f"--weight-decay must be a number >= 0, got {weight_decay!r}")
    if weight_decay and optimizer != "adamw":
        raise ConfigError(f"--weight-decay {weight_decay} needs --optimizer adamw (Adam's "
                          "L2 penalty is not decoupled); pass --weight-decay 0 for adam")
    if not (math.isfinite(warmup_epochs) and warmup_epochs >= 0):
        raise ConfigError(f"--warmup-epochs must be a number >= 0, got {warmup_epochs!r}")
    if ema_momentum is not None and not 0.0 < ema_momentum < 1.0:
        raise ConfigError(f"--ema must be between 0 and 1 (e.g. 0.99), or 0 for none, "
                          f"got {ema_momentum!r}")
    if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"--clip-norm must be a positive number, or 0 for none, "
                          f"got {clip_norm!r}")


@functools.cache
def warmup_cosine_class():
    """The Keras ``LearningRateSchedule`` of :func:`learning_rate_at` (made once Keras loads)."""
    from skyseg.backend import import_keras

    keras = import_keras()
    import tensorflow as tf

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        """Linear warm-up to ``base``, then half a cosine to ``final_fraction * base``."""

        def __init__(self, base, total_steps, warmup_steps, final_fraction=FINAL_FRACTION):
            super().__init__()
            self.base = float(base)
            self.total_steps = int(total_steps)
            self.warmup_steps = int(warmup_steps)
            self.final_fraction = float(final_fraction)

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warmup = float(max(self.warmup_steps, 1))
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = self.base * (self.final_fraction + (1 - self.final_fraction) * 0.5
                                  * (1.0 + tf.cos(math.pi * progress)))
            if self.warmup_steps <= 0:
                return cosine
            return tf.where(step < self.warmup_steps, self.base * step / warmup, cosine)

        def get_config(self):
            return {"base": self.base, "total_steps": self.total_steps,
                    "warmup_steps": self.warmup_steps, "final_fraction": self.final_fraction}

    return WarmupCosine


def custom_objects() -> dict:
    """Objects a saved optimizer refers to (for ``keras.models.load_model``)."""
    return {"WarmupCosine": warmup_cosine_class()}


def make_optimizer(keras, *, optimizer: str = "adamw", learning_rate: float = 1e-3,
                   schedule: str = "cosine", total_steps: int = 1, warmup_steps: int = 0,
                   weight_decay: float = 1e-4, clip_norm: float | None = 1.0):
    """A Keras optimizer for the recipe.

    Args:
        keras: the tf.keras module.
        optimizer: ``"adamw"`` or ``"adam"``.
        learning_rate: the peak (cosine) or initial (plateau) learning rate.
        schedule: ``"cosine"`` (warm-up + cosine over ``total_steps``) or
            ``"plateau"`` (a constant the trainer's ReduceLROnPlateau halves).
        total_steps, warmup_steps: of the cosine schedule.
        weight_decay: AdamW's decoupled decay (not for BatchNorm or biases).
        clip_norm: clip of the global gradient norm; None for none.

    Returns:
        a ``keras.optimizers.Optimizer``.
    """
    rate = (warmup_cosine_class()(learning_rate, total_steps, warmup_steps)
            if schedule == "cosine" else learning_rate)
    kwargs = {"learning_rate": rate}
    if clip_norm:
        kwargs["global_clipnorm"] = float(clip_norm)
    if optimizer == "adamw":
        made = keras.optimizers.AdamW(weight_decay=weight_decay, **kwargs)
        exclude_from_decay(made)
        return made
    return keras.optimizers.Adam(**kwargs)


def exclude_from_decay(optimizer) -> None:
    """Keep BatchNorm parameters and biases out of AdamW's weight decay.

    Keras saves no exclusion with the optimizer, and its public
    ``exclude_from_weight_decay`` refuses a built (loaded) optimizer, so the
    attributes Keras reads at every update are set directly: the same for a
    new optimizer and for one loaded to resume a run.
    """
    optimizer._exclude_from_weight_decay_names = list(NO_DECAY_NAMES)
    optimizer._exclude_from_weight_decay = []


def average_momentum(momentum: float, updates: int) -> float:
    """The momentum of the ``updates + 1``-th average update: warmed up, at most ``momentum``.

    Example:
        >>> average_momentum(0.99, 0), average_momentum(0.99, 10_000)
        (0.1, 0.99)
    """
    return min(momentum, (1.0 + updates) / (10.0 + updates))


@functools.cache
def weight_average_class():
    """The Keras callback class keeping an exponential moving average of the weights."""
    from skyseg.backend import import_keras

    keras = import_keras()
    import tensorflow as tf

    class WeightAverage(keras.callbacks.Callback):
        """Exponential moving average of all model weights, swapped in for validation.

        After every training batch: ``average = m * average + (1 - m) * weight``
        with ``m = average_momentum(momentum, updates)``. Keras' validation
        at the end of each epoch (``on_test_begin``/``on_test_end``) runs with
        the averaged weights; :meth:`applied` swaps them in for saving or
        predicting. The average covers ``model.weights`` (BatchNorm moving
        statistics included) in that order.

        Args:
            momentum: at most this much of the old average is kept per step.
            arrays: a saved average (:meth:`arrays`) to continue from, or None.
            updates: how many updates that average has had.
        """

        def __init__(self, momentum: float = 0.99, arrays=None, updates: int = 0):
            super().__init__()
            self.momentum = float(momentum)
            self.updates = int(updates)
            self._saved = arrays
            self.averages = None
            self._swapped = False

        def _build(self):
            if self.averages is not None:
                return
            weights = self.model.weights
            self.averages = _average_variables(tf, self._saved, weights)
            self._saved = None
            self._update, self._swap_function = _average_functions(tf, self.averages, weights)

        def on_train_begin(self, logs=None):
            self._build()

        def on_train_batch_end(self, batch, logs=None):
            momentum = average_momentum(self.momentum, self.updates)
            self._update(tf.constant(momentum, tf.float32))
            self.updates += 1

        def on_test_begin(self, logs=None):
            self._swap(True)

        def on_test_end(self, logs=None):
            self._swap(False)

        def _swap(self, averaged: bool) -> None:
            self._build()
            if self._swapped != averaged:
                self._swap_function()
                self._swapped = averaged

        @contextlib.contextmanager
        def applied(self):
            """Within the block the model holds the averaged weights."""
            was = self._swapped
            self._swap(True)
            try:
                yield self.model
            finally:
                self._swap(was)

        def arrays(self) -> list[np.ndarray]:
            """The average as numpy arrays (in ``model.weights`` order), to save."""
            self._build()
            if self._swapped:  # the model holds the average, the variables the raw weights
                return [w.numpy() for w in self.model.weights]
            return [a.numpy() for a in self.averages]

    return WeightAverage


def _average_variables(tf, saved, weights) -> list:
    """The weight average's variables: the ``saved`` arrays, else copies of the weights."""
    if saved is not None and len(saved) != len(weights):
        raise ConfigError(f"the saved weight average has {len(saved)} arrays, "
                          f"the model {len(weights)}; resume with the same model")
    sources = saved if saved is not None else [w.numpy() for w in weights]
    return [tf.Variable(np.asarray(value), trainable=False, dtype=weight.dtype)
            for value, weight in zip(sources, weights, strict=True)]


def _average_functions(tf, averages, weights):
    """``(update(momentum), swap())``: compiled steps of the average over the weights."""
    pairs = list(zip(averages, weights, strict=True))

    @tf.function
    def update(momentum):
        for average, weight in pairs:
            value = tf.cast(weight, average.dtype)
            average.assign(momentum * average + (1.0 - momentum) * value)

    @tf.function
    def swap():
        for average, weight in pairs:
            held = tf.identity(weight)
            weight.assign(average)
            average.assign(held)

    return update, swap

"""What a run keeps after each epoch: checkpoints, state, history, pictures; the time budget.

:func:`recorder_class` gives the Keras callback that fills the run folder after
each epoch; ``model_last.h5`` is written last and holds the training state
(:func:`epoch_state`), so it is the one commit point of an epoch and a killed
run resumes from it. :class:`TimeBudget` decides whether another epoch fits in
``--max-minutes``.

Example:
    >>> row = history_row(1, {"loss": 0.25, "val_iou": 0.9}, lr=1e-3, seconds=12.0)
    >>> row["val_iou"], row["lr"], math.isnan(row["iou"])
    (0.9, 0.001, True)
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError, ModelError
from skyseg.io.run_folder import (
    CURVES_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    MODEL_BEST,
    MODEL_LAST,
    SAMPLES_FILE,
    write_history,
)
from skyseg.training.plots import plot_curves, plot_samples

__all__ = ["TimeBudget", "budget_stop", "AVERAGE_ARRAYS", "weight_average", "recorder_class",
           "history_row", "restore_callbacks", "epoch_state", "averaged", "save_checkpoint",
           "write_epoch_files", "log_epoch", "TEST_PAUSE_IN_EPOCH", "pause_callbacks_for_tests"]

logger = logging.getLogger("skyseg")


class TimeBudget:
    """Decides after each epoch whether another one fits in a time budget.

    Another epoch fits when the time since the budget started plus the
    longest epoch so far stays within the budget (epochs are timed from the
    end of the previous one, so checkpoints and plots count).

    Args:
        minutes: the budget, counted from the construction of this object.

    Example:
        >>> budget = TimeBudget(10)
        >>> budget.training_started()
        >>> budget.epoch_ended()  # True: stop, another epoch would not fit
        False
    """

    #: Monotonic seconds; tests replace it with a fake clock.
    clock = staticmethod(time.monotonic)

    def __init__(self, minutes: float):
        if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
            raise ConfigError(f"--max-minutes must be a positive number of minutes, got "
                              f"{minutes!r}")
        self.seconds = float(minutes) * 60.0
        self.started = self.clock()
        self.last = self.started
        self.longest = 0.0

    def training_started(self) -> None:
        """The first epoch starts now (setup time counts in the budget, not as an epoch)."""
        self.last = self.clock()

    def epoch_ended(self) -> bool:
        """Record an epoch that ended now; True when another would overrun the budget."""
        now = self.clock()
        self.longest = max(self.longest, now - self.last)
        self.last = now
        return (now - self.started) + self.longest > self.seconds

    @property
    def elapsed(self) -> float:
        """Seconds since the budget started (at the last epoch end)."""
        return self.last - self.started


def budget_stop(budget: TimeBudget | None, model, epoch: int, epochs: int,
                 stopped_early: bool) -> bool:
    """Stop the training when another epoch would overrun the budget; True if so."""
    if budget is None:
        return False
    over = budget.epoch_ended()
    if not over or stopped_early or epoch >= epochs:
        return False
    model.stop_training = True
    logger.info("stopping after epoch %d: %.1f of %.1f budgeted minutes used and the longest "
                "epoch took %.1f s (continue with --resume)", epoch, budget.elapsed / 60,
                budget.seconds / 60, budget.longest)
    return True


#: Name of the weight average's arrays inside ``model_last.h5``.
AVERAGE_ARRAYS = "weight_average"


def weight_average(ema: float | None, state: dict | None, out_dir: Path):
    """The weight-average callback (None without ``ema``), continued from a resumed run."""
    if not ema:
        return None
    from skyseg.training.model import read_model_arrays
    from skyseg.training.recipe import weight_average_class

    arrays, updates = None, 0
    if state is not None:
        arrays = read_model_arrays(out_dir / MODEL_LAST, AVERAGE_ARRAYS)
        if arrays is None:
            raise ModelError(f"{out_dir / MODEL_LAST}: holds no weight average, though the "
                             "run uses --ema; cannot resume, choose another --out")
        updates = int(state.get("average_updates", 0))
    return weight_average_class()(ema, arrays=arrays, updates=updates)


def recorder_class(keras):
    """The callback class that writes the run folder (defined once Keras is imported).

    Its methods call the module's functions (:func:`history_row`,
    :func:`epoch_state`, :func:`save_checkpoint`, :func:`write_epoch_files`);
    the class only holds what lasts from one epoch to the next.
    """

    class RunRecorder(keras.callbacks.Callback):
        """Saves checkpoints, history, curves and samples after each epoch.

        ``model_last.h5`` is written last and holds the state: it is the one
        commit point of an epoch.
        """

        def __init__(self, *, out_dir: Path, epochs: int, state: dict | None,
                     train_sequence, val_sequence, preprocessing, average=None):
            super().__init__()
            self.average = average
            self.out_dir = out_dir
            self.epochs = epochs
            self.train_sequence = train_sequence
            self.val_sequence = val_sequence
            self.preprocessing = preprocessing
            self.plateau = None
            self.stopper = None
            self.budget = None
            self.state = state or {"epoch": 0, "history": [], "best_val_iou": None,
                                   "best_epoch": None, "stopped_early": False}
            self._epoch_started = 0.0
            self._samples = None

        def on_train_begin(self, logs=None):
            # Keras' callbacks reset themselves in on_train_begin (they come
            # before this one in the list); give them back their state.
            if self.budget is not None:
                self.budget.training_started()
            restore_callbacks(self.state, plateau=self.plateau, stopper=self.stopper)

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_started = time.time()
            if self.train_sequence.epoch != epoch:
                # Keras calls on_epoch_end once per epoch; this catches a change.
                logger.debug("patch order epoch %d, Keras epoch %d: realigning",
                             self.train_sequence.epoch, epoch)
                self.train_sequence.set_epoch(epoch)

        def on_epoch_end(self, epoch, logs=None):
            lr = float(keras.backend.get_value(self.model.optimizer.learning_rate))
            row = history_row(epoch + 1, dict(logs or {}), lr,
                               time.time() - self._epoch_started)
            best = self.state["best_val_iou"]
            improved = math.isfinite(row["val_iou"]) and (best is None or row["val_iou"] > best)
            if improved:
                save_checkpoint(self.model, self.out_dir / MODEL_BEST, self.average,
                                 attributes={"epoch": row["epoch"], "val_iou": row["val_iou"]})
            stopped_early = bool(self.model.stop_training and row["epoch"] < self.epochs)
            self.state = epoch_state(
                self.state, row, lr=lr, improved=improved, stopped_early=stopped_early,
                stopped_on_budget=budget_stop(self.budget, self.model, row["epoch"],
                                               self.epochs, stopped_early),
                plateau=self.plateau, stopper=self.stopper,
                skipped=len(self.train_sequence.skipped) + len(self.val_sequence.skipped),
                average=self.average)
            save_checkpoint(self.model, self.out_dir / MODEL_LAST, self.average,
                             attributes={"state": self.state}, last=True)
            if self._samples is None:
                x, y = self.val_sequence.batch(0, 0)
                self._samples = (x[:4], y[:4])
            write_epoch_files(self.out_dir, self.state, self.model, self._samples,
                               self.preprocessing, self.average)
            log_epoch(row, self.epochs, improved, self.state["skipped"])

    return RunRecorder


def history_row(epoch: int, logs: dict, lr: float, seconds: float) -> dict:
    """One row of ``history.csv`` (:data:`HISTORY_COLUMNS`; a missing score is NaN)."""
    row = {"epoch": epoch}
    for key in HISTORY_COLUMNS[1:-2]:
        row[key] = float(logs[key]) if key in logs else float("nan")
    row["lr"] = float(logs.get("lr", lr))
    row["seconds"] = round(seconds, 3)
    return row


def restore_callbacks(saved: dict, *, plateau, stopper) -> None:
    """Give the plateau and early-stopping callbacks back the counters a resumed state holds."""
    if saved.get("plateau") and plateau is not None:
        plateau.wait = saved["plateau"]["wait"]
        plateau.cooldown_counter = saved["plateau"]["cooldown_counter"]
        plateau.best = float(saved["plateau"]["best"])
    if saved.get("stopper") and stopper is not None:
        stopper.wait = saved["stopper"]["wait"]
        stopper.best = float(saved["stopper"]["best"])
        stopper.best_epoch = saved["stopper"]["best_epoch"]


def epoch_state(previous: dict, row: dict, *, lr: float, improved: bool, stopped_early: bool,
                 stopped_on_budget: bool, plateau, stopper, skipped: int, average) -> dict:
    """The training state after the epoch of ``row`` (what ``model_last.h5`` keeps)."""
    history = [r for r in previous["history"] if r["epoch"] < row["epoch"]] + [row]
    state = {
        "epoch": row["epoch"],
        "history": history,
        "best_val_iou": row["val_iou"] if improved else previous["best_val_iou"],
        "best_epoch": row["epoch"] if improved else previous["best_epoch"],
        "lr": lr,
        "stopped_early": stopped_early,
        "stopped_on_budget": stopped_on_budget,
        "plateau": None if plateau is None else {
            "wait": int(plateau.wait),
            "cooldown_counter": int(plateau.cooldown_counter),
            "best": float(plateau.best)},
        "stopper": None if stopper is None else {
            "wait": int(stopper.wait),
            "best": float(stopper.best),
            "best_epoch": int(stopper.best_epoch)},
        "skipped": skipped,
    }
    if average is not None:
        state["average_updates"] = average.updates
    return state


def averaged(average):
    """A context in which the model holds the weights validation saw (the weight average)."""
    import contextlib

    return average.applied() if average is not None else contextlib.nullcontext()


def save_checkpoint(model, path: Path, average, *, attributes: dict, last: bool = False) -> None:
    """``model_best.h5`` (the averaged weights, no optimizer) or, with ``last``,
    ``model_last.h5`` (the trained weights, the optimizer and the weight average's arrays)."""
    from skyseg.training.model import save_model

    if not last:
        with averaged(average):
            save_model(model, path, include_optimizer=False, attributes=attributes)
        return
    arrays = {AVERAGE_ARRAYS: average.arrays()} if average is not None else None
    save_model(model, path, include_optimizer=True, attributes=attributes, arrays=arrays)


def write_epoch_files(out_dir: Path, state: dict, model, samples, preprocessing,
                       average) -> None:
    """``history.csv``, ``curves.png`` and ``samples.png`` (``samples``: images, masks)."""
    write_history(out_dir / HISTORY_FILE, state["history"])
    plot_curves(out_dir / CURVES_FILE, state["history"], best_epoch=state["best_epoch"])
    x, y = samples
    with averaged(average):
        probability = np.asarray(model(x, training=False), dtype=np.float32)
    plot_samples(out_dir / SAMPLES_FILE, x, y, probability, preprocessing)


def log_epoch(row: dict, epochs: int, improved: bool, skipped: int) -> None:
    logger.info("epoch %d/%d: loss %.4f iou %.4f | val_loss %.4f val_iou %.4f%s (%.1f s)",
                row["epoch"], epochs, row["loss"], row["iou"], row["val_loss"], row["val_iou"],
                " best" if improved else "", row["seconds"])
    if skipped:
        logger.warning("%d damaged patch file(s) skipped so far", skipped)


#: Test hook: ``EPOCH:BATCH`` (1-based) makes training pause after that batch of that
#: epoch (:func:`~skyseg.training.model.pause_for_tests`), so that a test can kill it
#: in the middle of an epoch (tests/test_train_kill.py).
TEST_PAUSE_IN_EPOCH = "SKYSEG_TEST_PAUSE_IN_EPOCH"


def pause_callbacks_for_tests(keras) -> list:
    """The :data:`TEST_PAUSE_IN_EPOCH` callback when that variable is set, else none."""
    wanted = os.environ.get(TEST_PAUSE_IN_EPOCH)
    if not wanted:
        return []
    from skyseg.training.model import pause_for_tests

    epoch_text, _, batch_text = wanted.partition(":")
    epoch, batch = int(epoch_text), int(batch_text or 1)

    class PauseInEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            self.epoch = index + 1

        def on_train_batch_end(self, index, logs=None):
            if self.epoch == epoch and index + 1 == batch:
                pause_for_tests(f"{TEST_PAUSE_IN_EPOCH}={wanted}: pausing after batch {batch} "
                                f"of epoch {epoch}")

    return [PauseInEpoch()]

"""Train a U-Net on a patch dataset: checkpoints, logs, curves, samples, resume.

``skyseg train --data DATA --out RUN`` reads the patch dataset written by
``skyseg build-dataset`` and fills the run folder::

    RUN/config.json         the exact configuration (compared on --resume)
    RUN/preprocessing.json  the dataset's preprocessing, for predict
    RUN/model_best.h5       the model of the best validation IoU so far
    RUN/model_last.h5       the last finished epoch, with the optimizer and the
                            training state (history, best score, schedules)
    RUN/history.csv         one row per finished epoch
    RUN/curves.png          loss and IoU, training vs validation
    RUN/samples.png         validation patches: image, true mask, prediction
    RUN/tensorboard/        TensorBoard logs

Training (the recipe of :mod:`skyseg.training.recipe`): AdamW with a linear warm-up
then a cosine decay of the learning rate, gradient-norm clipping, and an
exponential moving average of the weights that validation, ``model_best.h5``
and prediction use; the loss of :mod:`skyseg.image.metrics` (BCE + Jaccard by
default) with 255 pixels ignored; IoU and Dice over each epoch; training
stops when the validation IoU has not improved for ``patience`` epochs.
``schedule="plateau"``, ``optimizer="adam"``, ``ema=None`` and
``clip_norm=None`` give the earlier recipe (the learning rate halves when
the validation loss has not improved for 5 epochs).

Fine-tuning (``init``, ``--init RUN_OR_MODEL``): the run starts from all the
weights of another run's best model (or of a model file), with its
architecture and backbone; the dataset must have been built with the same
preprocessing (``skyseg build-dataset --like RUN``). The default learning
rate is then a tenth of the one the source run was trained with (1e-4 when
it is unknown); ``freeze_encoder_epochs`` keeps the encoder fixed for the
first epochs (its BatchNormalization statistics too), so a few labelled
images first adapt the decoder. ``config.json`` records the source.

Time budget (``max_minutes``): after each epoch, training stops when the time
since the start of the command plus the longest epoch so far would pass the
budget, so it ends after the last epoch that fits (at least one epoch runs).
The state says so (``stopped_on_budget``) and ``--resume`` goes on, with a new
budget counted from the resumed start.

Resume: ``model_last.h5`` is written once per finished epoch and carries the
training state inside it, so a run killed at any moment continues with
``--resume`` from its last finished epoch: no epoch is lost or repeated, and
the history is the one an uninterrupted run would have (the batches of an
epoch depend only on the seed and the epoch number).

Repeatability: one seed drives the initial weights (``keras.utils.set_random_seed``),
the patch order and the augmentation. TensorFlow's op determinism is on when
training on the CPU, where it costs little and makes a run repeat bit for bit
(resume included). It stays off on GPUs by default: the U-Net decoder's
nearest-neighbour up-sampling has no deterministic GPU gradient, and
TensorFlow raises on it when determinism is forced (``deterministic=True``).

Several GPUs are used through ``tf.distribute.MirroredStrategy``; one GPU or
the CPU through the default strategy; several machines through
``MultiWorkerMirroredStrategy`` (``strategy="multi-worker"``, ``TF_CONFIG``;
see :mod:`skyseg.training.distribute`: the batch size is then per worker).
``mixed_precision=True`` computes in float16 on GPUs (the output stays float32).

Example:
    >>> result = train("DATA", "runs/resnet34", epochs=50)  # doctest: +SKIP
    >>> result.best_val_iou  # doctest: +SKIP
    0.962
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from skyseg.data.augmentation import Augmentation
from skyseg.errors import ConfigError, DatasetError, ModelError
from skyseg.io.run_folder import (
    CONFIG_FILE,
    CURVES_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    MODEL_BEST,
    MODEL_LAST,
    PREPROCESSING_FILE,
    SAMPLES_FILE,
    read_run_config,
    write_history,
)
from skyseg.training.model import check_model_choice

__all__ = ["train", "train_model", "RunSettings", "TrainResult", "TimeBudget", "report_training",
           "progress_verbosity", "plot_curves",
           "plot_samples", "CLI_HELP", "add_arguments", "run",  "TENSORBOARD_DIR", "run_images"]

logger = logging.getLogger("skyseg")

CLI_HELP = "train a U-Net on a patch dataset (checkpoints, history, curves, resume)"

TENSORBOARD_DIR = "tensorboard"
#: The learning rate is multiplied by this after PLATEAU_PATIENCE epochs without a
#: lower validation loss.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 5
#: Config keys that may differ when a run is resumed (they do not change the result).
#: ``total_steps`` follows ``epochs``; the saved optimizer keeps the schedule it
#: started with (raising --epochs on resume goes on at the final learning rate).
RESUMABLE_KEYS = ("epochs", "total_steps", "workers", "data", "created", "skyseg_version",
                  "max_minutes", "init")
#: Learning rate when none is given; a run started from another (``init``)
#: takes INIT_LEARNING_RATE_FACTOR times the source run's learning rate.
DEFAULT_LEARNING_RATE = 1e-3
INIT_LEARNING_RATE_FACTOR = 0.1


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        run_dir: the run folder.
        epochs: epochs finished in total (resumed runs included).
        best_epoch: the epoch (1-based) of ``model_best.h5``.
        best_val_iou: its validation IoU.
        history: one dict per finished epoch (the rows of ``history.csv``).
        skipped: damaged patch files left out -> reason.
        stopped_early: early stopping ended the run.
        stopped_on_budget: the time budget ended the run (``--resume`` goes on).
    """

    run_dir: Path
    epochs: int
    best_epoch: int | None
    best_val_iou: float
    history: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    stopped_early: bool = False
    stopped_on_budget: bool = False


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


def _parse_encoder_weights(value):
    if value is None or str(value).lower() in ("none", "null", ""):
        return None
    if str(value).lower() == "imagenet":
        return "imagenet"
    return str(Path(value).resolve())


def run_images(run: str | os.PathLike) -> dict[str, str]:
    """The images a run learnt from: stem -> ``"train"`` or ``"val"`` (the split that
    picked its best checkpoint), over all its data sources and, through ``--init``,
    the runs it started from. A figure on any of them is not a held-out figure.

    Args:
        run: a run folder (or a model file in one).

    Returns:
        ``{stem: split}``; ``"train"`` wins over ``"val"``. Empty when the run
        records no dataset (a bare model file) or its datasets are gone.

    Example:
        >>> sorted(run_images("runs/sky").items())[:2]  # doctest: +SKIP
        [('city', 'train'), ('park', 'val')]
    """
    from skyseg.data.generators import read_dataset_info
    from skyseg.io.run_folder import resolve_model_path

    folder = resolve_model_path(run)
    folder = folder if folder.is_dir() else folder.parent
    config = read_run_config(folder, error=ModelError)
    # A run installed elsewhere (the shipped model) lists them itself.
    seen: dict[str, str] = dict(config.get("trained_on") or {})
    data = config.get("data")
    paths = [data] if isinstance(data, str) else [item.get("path") for item in data or []]
    for path in paths:
        try:
            images = read_dataset_info(path).metadata.get("images", {})
        except DatasetError:
            continue
        for record in images.values():
            split, stem = record.get("split"), record.get("stem")
            if split in ("train", "val") and stem and seen.get(stem) != "train":
                seen[stem] = split
    init = (config.get("init") or {}).get("from")
    if init and Path(init).resolve() != folder.resolve() and Path(init).exists():
        for stem, split in run_images(init).items():
            if seen.get(stem) != "train":
                seen[stem] = split
    return seen


def _learns_ldr(sources, init_source) -> bool:
    """Whether the run learns LDR photos as radiance (``predict`` then converts them
    unasked): a source built with ``--convert-ldr``, or an ``--init`` run that did."""
    from skyseg.data.generators import read_dataset_info

    if init_source is not None and init_source.config.get("convert_ldr"):
        return True
    return any(read_dataset_info(s.path).metadata.get("convert_ldr") for s in sources)


def _check_arguments(epochs, batch_size, learning_rate, patience, workers) -> None:
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ConfigError(f"--epochs must be a whole number >= 1, got {epochs!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"--batch-size must be a whole number >= 1, got {batch_size!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ConfigError(f"--learning-rate must be a positive number, got {learning_rate!r}")
    if not (isinstance(patience, int) and patience >= 1):
        raise ConfigError(f"--patience must be a whole number >= 1, got {patience!r}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ConfigError(f"--workers must be a whole number >= 1, got {workers!r}")


def train_model(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    epochs: int = 100,
    batch_size: int = 8,
    learning_rate: float | None = None,
    architecture: str | None = None,
    backbone: str | None = None,
    encoder_weights: str | os.PathLike | None = None,
    loss: str = "bce_jaccard",
    seed: int = 0,
    resume: bool = False,
    augmentation: Augmentation | None | str = "default",
    mixed_precision: bool = False,
    workers: int = 2,
    patience: int = 15,
    deterministic: bool | None = None,
    steps_per_epoch: int | None = None,
    bn_momentum: float = 0.9,
    optimizer: str = "adamw",
    weight_decay: float = 1e-4,
    schedule: str = "cosine",
    warmup_epochs: float = 1.0,
    ema: float | None = 0.99,
    clip_norm: float | None = 1.0,
    callbacks=(),
    verbose: int = 0,
    init: str | os.PathLike | None = None,
    freeze_encoder_epochs: int = 0,
    max_minutes: float | None = None,
    strategy: str = "auto",
    collective_timeout: float | None = None,
) -> TrainResult:
    """Train a segmentation network on a patch dataset and fill a run folder.

    Args:
        data_dir: dataset folder of ``skyseg build-dataset`` (train and val splits),
            or several sources: a list of folders, ``"DIR=WEIGHT"`` strings or
            :class:`~skyseg.data.generators.DataSource` s (see
            :func:`~skyseg.data.generators.parse_sources`); training patches are then
            drawn from each by its weight (:class:`~skyseg.data.generators.MixedBatches`),
            and validation scores every source's val patches.
        out_dir: the run folder (created; must not hold another run unless ``resume``).
        epochs: total epochs (a resumed run counts the ones already done).
        batch_size: patches per batch (split across GPUs when there are several).
        learning_rate: the peak learning rate (reached after the warm-up;
            with ``schedule="plateau"`` the initial one); None: 1e-3, or with
            ``init`` a tenth of the source run's (1e-4 when unknown).
        architecture: ``"unet"`` (default), ``"fpn"``, ``"linknet"`` or
            ``"pspnet"``; with ``init``, the source's (give none, or the same).
        backbone: encoder, e.g. ``"resnet34"`` (the default; see
            :data:`skyseg.training.model.BACKBONES`); with ``init``, the source's.
        encoder_weights: None (random, the default: nothing is downloaded),
            a local weights file (e.g. ``resnet34_imagenet_1000_no_top.h5``), or
            ``"imagenet"`` (downloaded once by segmentation_models; needs internet).
        loss: a name of :data:`skyseg.image.metrics.LOSSES`.
        seed: the one seed of the run.
        resume: continue the run in ``out_dir`` from its last finished epoch.
        augmentation: for the training patches: ``"default"``
            (:meth:`~skyseg.data.augmentation.Augmentation.default` of the dataset's
            mode), a dict of changes to that default (``{"exposure_ev": 4.0}``;
            :meth:`~skyseg.data.augmentation.Augmentation.changed`), an
            :class:`~skyseg.data.augmentation.Augmentation`, or None (none);
            validation patches are never augmented.
        mixed_precision: float16 compute (for GPUs).
        workers: threads reading and augmenting patches.
        patience: epochs without a better validation IoU before stopping.
        steps_per_epoch: batches per epoch (None: one pass over the training
            patches). Shorter epochs validate and checkpoint more often, which
            a CPU run on a large dataset needs.
        bn_momentum: momentum of the BatchNormalization moving statistics.
            0.9 (PyTorch's default; Keras' is 0.99) lets the statistics used
            for validation and prediction follow the data within ~20 steps, so
            short runs validate truthfully; the weights do not depend on it.
        optimizer: ``"adamw"`` (decoupled weight decay) or ``"adam"``.
        weight_decay: AdamW's decay (BatchNorm parameters and biases excluded).
        schedule: ``"cosine"`` (linear warm-up over ``warmup_epochs``, then a
            cosine down to 1 % at the last epoch) or ``"plateau"`` (halve
            when the validation loss stalls for 5 epochs).
        warmup_epochs: epochs (fractions allowed) of linear warm-up.
        ema: momentum of the moving average of the weights used for
            validation, ``model_best.h5`` and prediction; None or 0: none.
        clip_norm: clip of the global gradient norm; None or 0: none.
        deterministic: TensorFlow op determinism; None (default): on without
            GPUs, off with GPUs (see the module notes).
        callbacks: extra Keras callbacks.
        verbose: Keras' progress output (0 silent, 1 progress bar, 2 one line per epoch).
        init: a run folder (its best model) or a model file to start from:
            all its weights, its architecture and backbone (fine-tuning). On
            ``resume`` it may be left out (the run's own is used).
        freeze_encoder_epochs: keep the encoder's weights and BatchNorm
            statistics fixed for this many first epochs (0: never).
        max_minutes: time budget of this call: stop after the last epoch
            that fits (see :class:`TimeBudget`); None: no budget.
        strategy: ``"auto"`` (multi-worker when ``TF_CONFIG`` names two
            tasks or more, else MirroredStrategy with two GPUs or more),
            ``"mirrored"`` or ``"multi-worker"`` (see :mod:`skyseg.training.distribute`:
            ``batch_size`` is then per worker, the chief alone writes ``out_dir``).
        collective_timeout: multi-worker: seconds an all-reduce waits for the
            other workers before the run stops (None: 600).

    Returns:
        a :class:`TrainResult`.

    Raises:
        ConfigError: bad option, unknown architecture/backbone/loss, a run
            folder that holds another run (without ``resume``) or a resume
            with a different configuration (the message names the keys).
        DatasetError: dataset folder missing, empty or inconsistent.
        DistributedError: multi-worker: a worker was lost or timed out.
        ModelError: weights cannot be loaded or downloaded; ``init`` is not a
            run folder or model file.
        ConfigError: also ``init`` with another ``backbone``/``architecture``,
            or a dataset whose preprocessing differs from the ``init`` run's
            (the message names the options to fix).

    Example:
        >>> train("DATA", "runs/r18", backbone="resnet18", encoder_weights=None,
        ...       epochs=20)  # doctest: +SKIP
        >>> train("DATA-new-camera", "runs/new-camera", init="runs/r18",
        ...       freeze_encoder_epochs=2, max_minutes=10)  # doctest: +SKIP
    """
    started = time.time()
    budget = TimeBudget(max_minutes) if max_minutes is not None else None
    from skyseg.data.generators import check_sources, open_batches, parse_sources

    sources = parse_sources(data_dir)
    out_dir, data_dir = Path(out_dir), Path(sources[0].path)
    source = _resolve_init(init, resume, out_dir)
    architecture, backbone, learning_rate = _model_choices(source, architecture, backbone,
                                                           learning_rate)
    _check_freeze(freeze_encoder_epochs)
    _check_arguments(epochs, batch_size, learning_rate, patience, workers)
    architecture, backbone = check_model_choice(architecture, backbone)
    from skyseg.training import distribute
    cluster = distribute.check_strategy(strategy, collective_timeout)
    encoder_weights = _check_loss_and_encoder_weights(loss, encoder_weights)
    info = check_sources(sources)
    if source is not None:
        _check_init_preprocessing(source, info.preprocessing, data_dir)
    ema, clip_norm = _check_recipe_options(bn_momentum, schedule=schedule, optimizer=optimizer,
                                           weight_decay=weight_decay,
                                           warmup_epochs=warmup_epochs, ema=ema,
                                           clip_norm=clip_norm)
    if isinstance(augmentation, dict):  # changes to the default of the data's mode
        augmentation = Augmentation.default(info.mode).changed(augmentation)
    elif isinstance(augmentation, str):
        if augmentation != "default":
            raise ConfigError(f"augmentation must be 'default', a dict of changes to it, an "
                              f"Augmentation or None, got {augmentation!r}")
        augmentation = Augmentation.default(info.mode)
    # Plain batches first: they check the dataset without importing TensorFlow.
    train_batches = open_batches(sources, "train", batch_size=batch_size,
                                 augmentation=augmentation, seed=seed, workers=workers,
                                 steps_per_epoch=steps_per_epoch)
    val_batches = open_batches(sources, "val", batch_size=batch_size, seed=seed,
                               workers=workers)
    _check_patch_size(train_batches.patch_size, architecture)
    settings = RunSettings(
        architecture=architecture, backbone=backbone, encoder_weights=encoder_weights,
        patch_size=train_batches.patch_size, mode=info.mode,
        preprocessing=info.preprocessing.to_dict(), loss=loss, optimizer=optimizer,
        learning_rate=learning_rate, weight_decay=float(weight_decay), schedule=schedule,
        warmup_epochs=float(warmup_epochs),
        total_steps=epochs * distribute.global_steps(len(train_batches), cluster),
        ema=ema, clip_norm=clip_norm, batch_size=batch_size, epochs=epochs, seed=seed,
        augmentation=augmentation.to_dict() if augmentation is not None else None,
        mixed_precision=bool(mixed_precision), deterministic=deterministic,
        patience=patience, steps_per_epoch=steps_per_epoch, bn_momentum=float(bn_momentum),
        train_patches=len(train_batches.pairs), val_patches=len(val_batches.pairs),
        workers=workers,
        data=(str(data_dir.resolve()) if len(sources) == 1
              else [source.to_json() for source in sources]),
        created=time.strftime("%Y-%m-%dT%H:%M:%S"), skyseg_version=_version(),
        init=source.record if source is not None else None,
        freeze_encoder_epochs=int(freeze_encoder_epochs),
        max_minutes=float(max_minutes) if max_minutes is not None else None,
        distribution=_distribution_record(cluster, batch_size),
        convert_ldr=_learns_ldr(sources, source))
    place = _RunPlace(out_dir=out_dir, data_dir=data_dir, sources=tuple(sources),
                      augmentation=augmentation,
                      preprocessing=info.preprocessing, cluster=cluster, strategy=strategy,
                      collective_timeout=collective_timeout, budget=budget)
    state = _prepare_run_folder(out_dir, settings.to_json(), resume, write=place.writes)
    if state is not None:
        settings = settings.resumed(read_run_config(out_dir))
        if _nothing_to_resume(state, epochs, out_dir):
            return _result(out_dir, state, {})
    if place.writes:
        _write_json(out_dir / CONFIG_FILE, settings.to_json())
        info.preprocessing.save(out_dir / PREPROCESSING_FILE)
    start = (f"resuming after epoch {state['epoch']}" if state and state["epoch"]
             else f"all weights from {source.model_path}" if source is not None
             else f"encoder weights: {encoder_weights or 'random'}")
    final_state, skipped = _train_with_keras(settings, state, place, start=start,
                                             callbacks=callbacks, verbose=verbose)
    logger.info("%s: %d epochs, best validation IoU %.4f at epoch %s (%.0f s)", out_dir,
                final_state["epoch"], final_state["best_val_iou"] or 0.0,
                final_state["best_epoch"], time.time() - started)
    return _result(out_dir, final_state, skipped)


@dataclass(frozen=True)
class RunSettings:
    """What a training run is: the checked options and the dataset facts of ``config.json``.

    :func:`train_model` builds it once from its arguments (after checking
    them) and the dataset; :meth:`to_json` is ``config.json``, whose keys
    :data:`RESUMABLE_KEYS` aside are compared on ``--resume``.
    ``reduce_lr`` and ``checkpoint_monitor`` follow from the others. The last
    five (``init``, ``freeze_encoder_epochs``, ``max_minutes``,
    ``distribution``, ``convert_ldr``) are written only when in use, so runs made before
    those options still resume.

    Example:
        >>> settings = RunSettings.from_json(read_run_config("runs/r18"))  # doctest: +SKIP
        >>> settings.backbone, settings.total_steps  # doctest: +SKIP
        ('resnet18', 4800)
    """

    architecture: str
    backbone: str
    encoder_weights: str | None
    patch_size: int
    mode: str
    preprocessing: dict
    loss: str
    optimizer: str
    learning_rate: float
    weight_decay: float
    schedule: str
    warmup_epochs: float
    total_steps: int
    ema: float | None
    clip_norm: float | None
    batch_size: int
    epochs: int
    seed: int
    augmentation: dict | None
    mixed_precision: bool
    deterministic: bool | None
    patience: int
    steps_per_epoch: int | None
    bn_momentum: float
    train_patches: int
    val_patches: int
    workers: int
    data: str | list  # the dataset folder, or the sources' {path, weight, name}
    created: str
    skyseg_version: str
    init: dict | None = None
    freeze_encoder_epochs: int = 0
    max_minutes: float | None = None
    distribution: dict | None = None
    convert_ldr: bool = False

    #: config.json's keys in order (before the optional ones).
    KEYS: ClassVar[tuple[str, ...]] = (
        "architecture", "backbone", "encoder_weights", "patch_size", "mode", "preprocessing",
        "loss", "optimizer", "learning_rate", "weight_decay", "schedule", "warmup_epochs",
        "total_steps", "ema", "clip_norm", "batch_size", "epochs", "seed", "augmentation",
        "mixed_precision", "deterministic", "patience", "steps_per_epoch", "bn_momentum",
        "reduce_lr", "checkpoint_monitor", "train_patches", "val_patches", "workers", "data",
        "created", "skyseg_version")
    #: Keys written only when the option is in use (not None, not 0).
    OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = ("init", "freeze_encoder_epochs", "max_minutes",
                                                "distribution", "convert_ldr")

    @property
    def reduce_lr(self) -> dict | None:
        """The plateau schedule's rule (None with the cosine schedule)."""
        return ({"monitor": "val_loss", "factor": PLATEAU_FACTOR, "patience": PLATEAU_PATIENCE}
                if self.schedule == "plateau" else None)

    @property
    def checkpoint_monitor(self) -> str:
        """The score that picks ``model_best.h5``."""
        return "val_iou"

    def to_json(self) -> dict:
        """``config.json``: :data:`KEYS` in order, then the optional keys in use."""
        config = {key: getattr(self, key) for key in self.KEYS}
        config.update({key: getattr(self, key) for key in self.OPTIONAL_KEYS
                       if getattr(self, key) not in (None, 0)})
        return config

    @classmethod
    def from_json(cls, config: dict, *, what: str = CONFIG_FILE) -> RunSettings:
        """Read :meth:`to_json`'s dict back (``reduce_lr``, ``checkpoint_monitor`` recomputed).

        Raises:
            ConfigError: a key is missing (a run made by an older skyseg; ``what``
                names the file in the message).
        """
        names = [item.name for item in fields(cls)]
        missing = [name for name in names if name not in config and name not in cls.OPTIONAL_KEYS]
        if missing:
            raise ConfigError(f"{what}: lacks {', '.join(missing)}; it was not written by this "
                              "skyseg train (re-run the training)")
        return cls(**{name: config[name] for name in names if name in config})

    def resumed(self, saved: dict) -> RunSettings:
        """These settings for a resumed run: the saved ``total_steps`` (its schedule) kept."""
        return replace(self, total_steps=saved.get("total_steps", self.total_steps))


@dataclass(frozen=True)
class _RunPlace:
    """Where and with what a run trains, besides its settings (none of it in ``config.json``)."""

    out_dir: Path
    data_dir: Path  # as given (messages name patch files under it); the first source's
    sources: tuple  # the generators.DataSource s (one for a single dataset folder)
    augmentation: Augmentation | None
    preprocessing: object  # the dataset's Preprocessing
    cluster: object  # skyseg.training.distribute's cluster of a multi-worker run, else None
    strategy: str
    collective_timeout: float | None
    budget: TimeBudget | None

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder (other workers write nothing there)."""
        return self.cluster is None or self.cluster.chief


def _nothing_to_resume(state: dict, epochs: int, out_dir: Path) -> bool:
    """True (and say so) when the resumed run already reached ``epochs`` or stopped early."""
    if state["epoch"] < epochs and not state.get("stopped_early"):
        return False
    why = "stopped early" if state.get("stopped_early") else f"reached {state['epoch']} epochs"
    logger.info("%s: the run already %s; nothing to resume (raise --epochs to go on)",
                out_dir, why)
    return True


def _train_with_keras(settings: RunSettings, state: dict | None, place: _RunPlace, *,
                      start: str, callbacks, verbose: int) -> tuple[dict, dict]:
    """Build or load the model and fit it; the final state and the skipped patch files."""
    from skyseg.backend import import_keras
    from skyseg.training import distribute

    keras = import_keras()
    import tensorflow as tf

    # The multi-worker strategy must come before any other TensorFlow work; it
    # waits for every worker, and the first collective confirms they all came.
    initial_epoch = state["epoch"] if state else 0
    with distribute.join_watchdog(place.cluster, place.collective_timeout):
        distribution = distribute.make_strategy(tf, place.strategy, place.cluster,
                                                place.collective_timeout)
        distribute.agree(tf, distribution, place.cluster, initial_epoch,
                         "the epoch to resume after")
    out_dir = place.out_dir
    # Other workers save what the chief saves (the saves hold collectives), but here.
    record_dir = out_dir if place.writes else Path(tempfile.mkdtemp(prefix="skyseg-worker-"))
    previous_policy = keras.mixed_precision.global_policy()
    try:
        _configure_tensorflow(keras, tf, seed=settings.seed, deterministic=settings.deterministic,
                              mixed_precision=settings.mixed_precision)
        with distribution.scope():
            model = _make_model(settings, state, out_dir, keras)
        from skyseg.data.generators import open_batches

        train_sequence = open_batches(place.sources, "train", keras=True,
                                      batch_size=settings.batch_size,
                                      augmentation=place.augmentation, seed=settings.seed,
                                      workers=settings.workers,
                                      steps_per_epoch=settings.steps_per_epoch)
        val_sequence = open_batches(place.sources, "val", keras=True,
                                    batch_size=settings.batch_size, seed=settings.seed,
                                    workers=settings.workers)
        train_sequence.set_epoch(initial_epoch)
        own_callbacks, recorder = _epoch_callbacks(
            keras, settings=settings, state=state, out_dir=out_dir, record_dir=record_dir,
            sequences=(train_sequence, val_sequence), preprocessing=place.preprocessing,
            budget=place.budget if place.budget is None or place.cluster is None
            else distribute.AgreedBudget(place.budget, tf, distribution))
        logger.info("training %s/%s on %d patches (%d px, %s), validating on %d; %s",
                    settings.architecture, settings.backbone, settings.train_patches,
                    settings.patch_size, settings.mode, settings.val_patches, start)
        try:
            _fit(model, tf, keras, place.cluster, train_sequence, val_sequence,
                 initial_epoch=initial_epoch, epochs=settings.epochs,
                 callbacks=[*own_callbacks, *callbacks], verbose=verbose, out_dir=out_dir)
        finally:
            train_sequence.close()
            val_sequence.close()
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if record_dir != out_dir:
            shutil.rmtree(record_dir, ignore_errors=True)
    return recorder.state, {**train_sequence.skipped, **val_sequence.skipped}


def _resolve_init(init, resume: bool, out_dir: Path) -> _InitSource | None:
    """The run or model file to start from: ``init``, or on resume the run's own."""
    if init is None and resume:
        init = _saved_init(out_dir)
    return _init_source(init) if init is not None else None


def _check_loss_and_encoder_weights(loss: str, encoder_weights):
    """The encoder weights as recorded (None, "imagenet" or a resolved path), checked."""
    from skyseg.image.metrics import LOSSES

    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    encoder_weights = _parse_encoder_weights(encoder_weights)
    if encoder_weights not in (None, "imagenet") and not Path(encoder_weights).is_file():
        raise ModelError(f"{encoder_weights}: encoder weights file not found; pass a "
                         "segmentation_models backbone .h5 file, imagenet or none")
    return encoder_weights


def _check_recipe_options(bn_momentum, *, schedule, optimizer, weight_decay, warmup_epochs, ema,
                          clip_norm) -> tuple[float | None, float | None]:
    """``(ema, clip_norm)`` as recorded (None when off), after checking the recipe."""
    if not 0.0 < float(bn_momentum) < 1.0:
        raise ConfigError(f"--bn-momentum must be between 0 and 1, got {bn_momentum}")
    from skyseg.training.recipe import check_recipe

    ema = float(ema) if ema else None
    clip_norm = float(clip_norm) if clip_norm else None
    check_recipe(schedule=schedule, optimizer=optimizer, weight_decay=float(weight_decay),
                 warmup_epochs=float(warmup_epochs), ema_momentum=ema, clip_norm=clip_norm)
    return ema, clip_norm


def _distribution_record(cluster, batch_size: int) -> dict | None:
    """What ``config.json`` keeps of a multi-worker run (None otherwise)."""
    if cluster is None:
        return None
    return {"strategy": "multi-worker", "workers": cluster.workers,
            "global_batch_size": batch_size * cluster.workers}


def _configure_tensorflow(keras, tf, *, seed: int, deterministic: bool | None,
                          mixed_precision: bool) -> None:
    """Seed, op determinism (on CPUs by default) and the float16 policy of a run."""
    keras.utils.set_random_seed(seed)
    gpus = tf.config.list_logical_devices("GPU")
    if deterministic or (deterministic is None and not gpus):
        if gpus:
            logger.warning("op determinism on a GPU: TensorFlow raises on ops without a "
                           "deterministic GPU kernel (e.g. the U-Net's up-sampling gradient)")
        tf.config.experimental.enable_op_determinism()
    if mixed_precision:
        if not gpus:
            logger.warning("--mixed-precision on a CPU: float16 is slower there, not faster")
        keras.mixed_precision.set_global_policy("mixed_float16")


def _epoch_callbacks(keras, *, settings: RunSettings, state: dict | None, out_dir: Path,
                     record_dir: Path, sequences, preprocessing, budget) -> tuple[list, object]:
    """skyseg's callbacks of ``model.fit``, in their order, and the run recorder among them.

    The weight average comes first: validation (``on_test_*``) must see the
    averaged weights before any other callback reads the scores.
    """
    train_sequence, val_sequence = sequences
    average = _weight_average(settings, state, out_dir)
    recorder = _make_recorder(keras)(
        out_dir=record_dir, epochs=settings.epochs, state=state, train_sequence=train_sequence,
        val_sequence=val_sequence, preprocessing=preprocessing, average=average)
    plateau = (keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", mode="min", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE,
        verbose=0) if settings.schedule == "plateau" else None)
    stopper = keras.callbacks.EarlyStopping(monitor="val_iou", mode="max",
                                            patience=settings.patience, verbose=0)
    recorder.plateau, recorder.stopper, recorder.budget = plateau, stopper, budget
    freeze_epochs = settings.freeze_encoder_epochs
    freeze = ([_make_encoder_freeze(keras)(freeze_epochs, settings.backbone)]
              if freeze_epochs else [])
    schedule_callbacks = [c for c in (average, plateau) if c is not None]
    board = _tensorboard(keras, record_dir / TENSORBOARD_DIR)
    return [*schedule_callbacks, *board, stopper, recorder, *freeze], recorder


def _fit(model, tf, keras, cluster, train_sequence, val_sequence, *, initial_epoch: int,
         epochs: int, callbacks: list, verbose: int, out_dir: Path) -> None:
    """``model.fit`` over the sequences; a lost worker becomes a DistributedError."""
    from skyseg.training import distribute
    try:
        model.fit(
            **distribute.fit_inputs(tf, keras, cluster, train_sequence, val_sequence,
                                    initial_epoch),
            epochs=epochs,
            initial_epoch=initial_epoch,
            # The sequence shuffles itself from the seed; Keras' shuffle
            # would use Python's global random state, lost on resume.
            shuffle=False,
            workers=1,
            use_multiprocessing=False,
            callbacks=callbacks,
            verbose=verbose,
        )
    except KeyboardInterrupt:
        logger.warning("%s: interrupted; continue with skyseg train --resume (the last "
                       "finished epoch is kept)", out_dir)
        raise
    except Exception as exc:
        lost = distribute.worker_lost(tf, exc, cluster)
        if lost is not None:
            raise lost from exc
        raise


def _version() -> str:
    from skyseg import __version__
    return __version__


def _check_patch_size(patch_size: int, architecture: str) -> None:
    if patch_size % 32 and architecture != "pspnet":
        raise DatasetError(f"patch size {patch_size} is not a multiple of 32, which the "
                           "network's 5 down-samplings need; rebuild the dataset with "
                           "--patch-size 256 (or another multiple of 32)")
    if architecture == "pspnet" and patch_size % 48:
        raise ConfigError(f"PSPNet needs patches whose size is a multiple of 48, got "
                          f"{patch_size}; use unet/fpn/linknet or rebuild with 288 px patches")


def _result(out_dir: Path, state: dict, skipped: dict) -> TrainResult:
    return TrainResult(
        run_dir=out_dir,
        epochs=int(state["epoch"]),
        best_epoch=state.get("best_epoch"),
        best_val_iou=float(state.get("best_val_iou") or 0.0),
        history=list(state.get("history", [])),
        skipped=skipped,
        stopped_early=bool(state.get("stopped_early")),
        stopped_on_budget=bool(state.get("stopped_on_budget")),
    )


def _write_json(path: Path, data: dict) -> None:
    from skyseg.io import write_text

    write_text(path, json.dumps(data, indent=2) + "\n")


def _prepare_run_folder(out_dir: Path, config: dict, resume: bool,
                        write: bool = True) -> dict | None:
    """Create or check the run folder; the saved training state when resuming.

    ``write=False`` (a multi-worker run's non-chief): only read it.
    """
    from skyseg.training.model import read_model_attributes

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: --out is a file; pass a folder for the run")
    config_path, last_path = out_dir / CONFIG_FILE, out_dir / MODEL_LAST
    existing = config_path.is_file() or last_path.is_file()
    if existing and not resume and write:
        raise ConfigError(f"{out_dir}: already holds a training run; pass --resume to continue "
                          "it or choose another --out")
    if resume and config_path.is_file():
        try:
            saved = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_path}: not valid JSON ({exc}); cannot resume, use "
                              "another --out") from exc
        keys = sorted((set(saved) | set(config)) - set(RESUMABLE_KEYS))
        differing = [key for key in keys if saved.get(key) != config.get(key)]
        if differing:
            details = ", ".join(f"{key}: {saved.get(key)!r} -> {config.get(key)!r}"
                                for key in differing[:6])
            raise ConfigError(
                f"{out_dir}: cannot resume, the configuration differs in {differing} "
                f"({details}); pass the run's options again or choose another --out"
            )
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        return None
    if write:  # a worker that writes nothing leaves the chief's folder alone
        _remove_temporaries(out_dir)
    if not last_path.is_file():
        logger.info("%s: no finished epoch to resume from; starting the run", out_dir)
        return None
    state = read_model_attributes(last_path).get("state")
    if not isinstance(state, dict) or "epoch" not in state:
        raise ModelError(f"{last_path}: holds no training state (not written by skyseg "
                         "train?); cannot resume, choose another --out")
    logger.info("%s: resuming after epoch %d", out_dir, state["epoch"])
    return state


def _remove_temporaries(out_dir: Path) -> None:
    """Delete the half-written files (``.NAME.xxxx.tmp.ext``) a killed run leaves behind."""
    from skyseg.io.write import remove_temporaries

    stale = remove_temporaries([out_dir])
    if stale:
        logger.info("%s: removed %d half-written file(s) of the killed run: %s", out_dir,
                    len(stale), ", ".join(sorted(path.name for path in stale)))


def _tensorboard(keras, folder: Path) -> list:
    """The TensorBoard callback, or none when the tensorboard package is missing.

    TensorFlow 2.21 no longer installs tensorboard, and without it every
    summary op fails, so the run goes on without TensorBoard logs.
    """
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        logger.warning("tensorboard is not installed: no TensorBoard logs in %s "
                       "(pip install tensorboard); history.csv and curves.png are written",
                       folder)
        return []
    return [keras.callbacks.TensorBoard(log_dir=str(folder), write_graph=False,
                                        profile_batch=0)]


def _make_model(settings: RunSettings, state: dict | None, out_dir: Path, keras):
    from skyseg.image import metrics
    from skyseg.training.model import build_model, load_model
    from skyseg.training.recipe import exclude_from_decay, make_optimizer

    if state is not None:
        model = load_model(out_dir / MODEL_LAST, compile=True)
        if settings.schedule == "plateau":
            keras.backend.set_value(model.optimizer.learning_rate, state["lr"])
        exclude_from_decay(model.optimizer)
        return model
    input_shape = ((settings.patch_size, settings.patch_size, 3)
                   if settings.architecture == "pspnet" else (None, None, 3))
    model = build_model(settings.architecture, settings.backbone,
                        encoder_weights=settings.encoder_weights, input_shape=input_shape)
    if settings.init:
        _copy_weights(settings.init["model"], model)
    # Set before compiling; saved in the model file, so a resumed run keeps it.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = settings.bn_momentum
    steps_per_epoch = settings.total_steps // settings.epochs
    optimizer = make_optimizer(
        keras, optimizer=settings.optimizer, learning_rate=settings.learning_rate,
        schedule=settings.schedule, total_steps=settings.total_steps,
        warmup_steps=round(settings.warmup_epochs * steps_per_epoch),
        weight_decay=settings.weight_decay, clip_norm=settings.clip_norm)
    model.compile(optimizer=optimizer, loss=metrics.get_loss(settings.loss),
                  metrics=metrics.make_metrics())
    return model


#: Name of the weight average's arrays inside ``model_last.h5``.
AVERAGE_ARRAYS = "weight_average"


def _weight_average(settings: RunSettings, state: dict | None, out_dir: Path):
    """The weight-average callback (None without ``ema``), continued from a resumed run."""
    if not settings.ema:
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
    return weight_average_class()(settings.ema, arrays=arrays, updates=updates)


def _make_recorder(keras):
    """The callback class that writes the run folder (defined once Keras is imported).

    Its methods call the module's functions (:func:`_history_row`,
    :func:`_epoch_state`, :func:`_save_checkpoint`, :func:`_write_epoch_files`);
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
            _restore_callbacks(self.state, plateau=self.plateau, stopper=self.stopper)

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_started = time.time()
            if self.train_sequence.epoch != epoch:
                # Keras calls on_epoch_end once per epoch; this catches a change.
                logger.debug("patch order epoch %d, Keras epoch %d: realigning",
                             self.train_sequence.epoch, epoch)
                self.train_sequence.set_epoch(epoch)

        def on_epoch_end(self, epoch, logs=None):
            lr = float(keras.backend.get_value(self.model.optimizer.learning_rate))
            row = _history_row(epoch + 1, dict(logs or {}), lr,
                               time.time() - self._epoch_started)
            best = self.state["best_val_iou"]
            improved = math.isfinite(row["val_iou"]) and (best is None or row["val_iou"] > best)
            if improved:
                _save_checkpoint(self.model, self.out_dir / MODEL_BEST, self.average,
                                 attributes={"epoch": row["epoch"], "val_iou": row["val_iou"]})
            stopped_early = bool(self.model.stop_training and row["epoch"] < self.epochs)
            self.state = _epoch_state(
                self.state, row, lr=lr, improved=improved, stopped_early=stopped_early,
                stopped_on_budget=_budget_stop(self.budget, self.model, row["epoch"],
                                               self.epochs, stopped_early),
                plateau=self.plateau, stopper=self.stopper,
                skipped=len(self.train_sequence.skipped) + len(self.val_sequence.skipped),
                average=self.average)
            _save_checkpoint(self.model, self.out_dir / MODEL_LAST, self.average,
                             attributes={"state": self.state}, last=True)
            if self._samples is None:
                x, y = self.val_sequence.batch(0, 0)
                self._samples = (x[:4], y[:4])
            _write_epoch_files(self.out_dir, self.state, self.model, self._samples,
                               self.preprocessing, self.average)
            _log_epoch(row, self.epochs, improved, self.state["skipped"])

    return RunRecorder


def _history_row(epoch: int, logs: dict, lr: float, seconds: float) -> dict:
    """One row of ``history.csv`` (:data:`HISTORY_COLUMNS`; a missing score is NaN)."""
    row = {"epoch": epoch}
    for key in HISTORY_COLUMNS[1:-2]:
        row[key] = float(logs[key]) if key in logs else float("nan")
    row["lr"] = float(logs.get("lr", lr))
    row["seconds"] = round(seconds, 3)
    return row


def _restore_callbacks(saved: dict, *, plateau, stopper) -> None:
    """Give the plateau and early-stopping callbacks back the counters a resumed state holds."""
    if saved.get("plateau") and plateau is not None:
        plateau.wait = saved["plateau"]["wait"]
        plateau.cooldown_counter = saved["plateau"]["cooldown_counter"]
        plateau.best = float(saved["plateau"]["best"])
    if saved.get("stopper") and stopper is not None:
        stopper.wait = saved["stopper"]["wait"]
        stopper.best = float(saved["stopper"]["best"])
        stopper.best_epoch = saved["stopper"]["best_epoch"]


def _epoch_state(previous: dict, row: dict, *, lr: float, improved: bool, stopped_early: bool,
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


def _averaged(average):
    """A context in which the model holds the weights validation saw (the weight average)."""
    import contextlib

    return average.applied() if average is not None else contextlib.nullcontext()


def _save_checkpoint(model, path: Path, average, *, attributes: dict, last: bool = False) -> None:
    """``model_best.h5`` (the averaged weights, no optimizer) or, with ``last``,
    ``model_last.h5`` (the trained weights, the optimizer and the weight average's arrays)."""
    from skyseg.training.model import save_model

    if not last:
        with _averaged(average):
            save_model(model, path, include_optimizer=False, attributes=attributes)
        return
    arrays = {AVERAGE_ARRAYS: average.arrays()} if average is not None else None
    save_model(model, path, include_optimizer=True, attributes=attributes, arrays=arrays)


def _write_epoch_files(out_dir: Path, state: dict, model, samples, preprocessing,
                       average) -> None:
    """``history.csv``, ``curves.png`` and ``samples.png`` (``samples``: images, masks)."""
    write_history(out_dir / HISTORY_FILE, state["history"])
    plot_curves(out_dir / CURVES_FILE, state["history"], best_epoch=state["best_epoch"])
    x, y = samples
    with _averaged(average):
        probability = np.asarray(model(x, training=False), dtype=np.float32)
    plot_samples(out_dir / SAMPLES_FILE, x, y, probability, preprocessing)


def _log_epoch(row: dict, epochs: int, improved: bool, skipped: int) -> None:
    logger.info("epoch %d/%d: loss %.4f iou %.4f | val_loss %.4f val_iou %.4f%s (%.1f s)",
                row["epoch"], epochs, row["loss"], row["iou"], row["val_loss"], row["val_iou"],
                " best" if improved else "", row["seconds"])
    if skipped:
        logger.warning("%d damaged patch file(s) skipped so far", skipped)


def _save_figure(figure, path: Path) -> None:
    from skyseg.io import atomic_output

    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


def plot_curves(path: Path, history: list[dict], *, best_epoch: int | None = None) -> None:
    """``curves.png``: loss and IoU per epoch, training vs validation."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    for axes, key, title in zip(figure.subplots(1, 2), ("loss", "iou"), ("loss", "IoU (sky)"),
                                strict=True):
        axes.plot(epochs, [row[key] for row in history], "o-", label="training", markersize=3)
        axes.plot(epochs, [row[f"val_{key}"] for row in history], "o-", label="validation",
                  markersize=3)
        if best_epoch is not None:
            axes.axvline(best_epoch, color="grey", linestyle=":",
                         label=f"best (epoch {best_epoch})")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        if len(epochs) == 1:
            axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
    _save_figure(figure, path)


def plot_samples(path: Path, images: np.ndarray, masks: np.ndarray, probabilities: np.ndarray,
                 preprocessing) -> None:
    """``samples.png``: per row a patch (tonemapped if HDR), its true mask, the prediction.

    Args:
        path: the PNG to write.
        images: float32 (N, P, P, 3) network input.
        masks: uint8 (N, P, P, 1) truth (255 = ignore, shown grey).
        probabilities: float32 (N, P, P, 1).
        preprocessing: the dataset's, to show the images as people see them.
    """
    from matplotlib.figure import Figure

    from skyseg.image.metrics import iou_score
    from skyseg.image.preprocess import tonemap

    count = len(images)
    figure = Figure(figsize=(7.5, 2.5 * count), layout="constrained")
    grid = figure.subplots(count, 3, squeeze=False)
    for row, (image, mask, probability) in enumerate(zip(images, masks, probabilities,
                                                         strict=True)):
        values = preprocessing.invert(image)
        display = tonemap(values, is_hdr=preprocessing.is_hdr)
        truth = mask[:, :, 0].astype(np.float32)
        truth[mask[:, :, 0] == 255] = 0.5
        score = iou_score(mask[:, :, 0], probability[:, :, 0])
        panels = ((display, "image", None), (truth, "true sky (grey: ignored)", "gray"),
                  (probability[:, :, 0], f"predicted sky (IoU {score:.3f})", "gray"))
        for column, (panel, title, cmap) in enumerate(panels):
            axes = grid[row, column]
            axes.imshow(panel, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None,
                        interpolation="nearest")
            axes.set_axis_off()
            if row == 0 or column == 2:
                axes.set_title(title, fontsize=9)
    _save_figure(figure, path)


# --------------------------------------------------------------------------- fine-tuning, budget


@dataclass
class _InitSource:
    """The run or model file a fine-tuning run starts from."""

    given: Path
    model_path: Path
    config: dict
    preprocessing: object  # Preprocessing or None (a bare model file)

    @property
    def record(self) -> dict:
        """What ``config.json`` keeps of it (``init``)."""
        from skyseg.training.model import read_model_attributes

        try:
            attributes = read_model_attributes(self.model_path)
        except ModelError:  # not HDF5 (a .keras file): no skyseg attributes
            attributes = {}
        state = attributes.get("state") or {}
        return {
            "from": str(self.given.resolve()),
            "model": str(self.model_path.resolve()),
            "architecture": self.config.get("architecture"),
            "backbone": self.config.get("backbone"),
            "epoch": attributes.get("epoch", state.get("epoch")),
            "val_iou": attributes.get("val_iou"),
        }


def _init_source(init) -> _InitSource:
    """Resolve ``--init``: a run folder (its best model) or a model file, with config and
    preprocessing when they are there."""
    from skyseg.image.preprocess import Preprocessing
    from skyseg.io.run_folder import MODEL_BEST, MODEL_LAST, resolve_model_path

    given = resolve_model_path(init)
    if given.is_dir():
        model_path = next((given / n for n in (MODEL_BEST, MODEL_LAST)
                           if (given / n).is_file()), None)
        if model_path is None:
            raise ModelError(f"--init {given}: run folder has no {MODEL_BEST} or {MODEL_LAST}; "
                             "pass a run folder of skyseg train that finished an epoch, or a "
                             "model file")
        folder = given
    elif given.is_file():
        model_path, folder = given, given.parent
    else:
        raise ModelError(f"--init {given}: no such run folder or model file; pass the --out "
                         "of a skyseg train run or its model_best.h5")
    config = read_run_config(folder, what=f"--init {given}: ")
    preprocessing = (Preprocessing.load(folder / PREPROCESSING_FILE)
                     if (folder / PREPROCESSING_FILE).is_file() else None)
    return _InitSource(given=given, model_path=model_path, config=config,
                       preprocessing=preprocessing)


def _saved_init(out_dir: Path):
    """The ``init`` a run to resume was started with (its ``from``), or None."""
    try:
        saved = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    record = saved.get("init") if isinstance(saved, dict) else None
    return record.get("from") if isinstance(record, dict) else None


def _model_choices(source: _InitSource | None, architecture, backbone, learning_rate):
    """Architecture, backbone and learning rate, taken from ``init`` where it has them."""
    if source is None:
        return (architecture or "unet", backbone or "resnet34",
                DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate)
    chosen = {"architecture": architecture, "backbone": backbone}
    for key, value in chosen.items():
        known = source.config.get(key)
        if value is not None and known is not None and str(value).lower() != known:
            raise ConfigError(
                f"--{key} {value} conflicts with --init {source.given}, a {known} model (all "
                f"its weights are loaded); leave --{key} out, it is taken from the --init run")
        if known is None and value is None:
            raise ConfigError(f"--init {source.given}: no {CONFIG_FILE} beside the model says its "
                              f"{key}; pass --architecture and --backbone of that model")
        chosen[key] = value if value is not None else known
    if learning_rate is None:
        base = source.config.get("learning_rate")
        base = base if isinstance(base, (int, float)) and base > 0 else DEFAULT_LEARNING_RATE
        learning_rate = float(base) * INIT_LEARNING_RATE_FACTOR
    return chosen["architecture"], chosen["backbone"], learning_rate


def _check_freeze(epochs) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"--freeze-encoder-epochs must be a whole number >= 0, got {epochs!r}")


def _check_init_preprocessing(source: _InitSource, preprocessing, data_dir: Path) -> None:
    """The dataset must be preprocessed as the ``init`` model's training data was."""
    if source.preprocessing is None:
        logger.warning("--init %s: no %s beside the model; cannot check that %s is "
                       "preprocessed the same way", source.given, PREPROCESSING_FILE, data_dir)
        return
    theirs, ours = source.preprocessing.to_dict(), preprocessing.to_dict()
    differing = sorted(key for key in set(theirs) | set(ours) if theirs.get(key) != ours.get(key))
    if not differing:
        return
    options = {"mode": "--mode", "scale": "--scale", "clip_max": "--clip-max",
               "exposure_key": "--exposure-key"}
    named = sorted({options.get(key, "the log transform") for key in differing})
    details = ", ".join(f"{key}: {ours.get(key)!r} here, {theirs.get(key)!r} in the --init run"
                        for key in differing)
    raise ConfigError(
        f"{data_dir}: the dataset's preprocessing differs from that of --init {source.given} "
        f"({details}); rebuild it with skyseg build-dataset --like {source.given} (or the "
        f"matching {', '.join(named)})")


def _copy_weights(model_path, model) -> None:
    """Load every weight of the model file into ``model`` (same architecture and backbone)."""
    from skyseg.training.model import load_model

    source = load_model(model_path)
    weights = source.get_weights()
    expected = [w.shape for w in model.get_weights()]
    if [w.shape for w in weights] != expected:
        raise ModelError(f"--init {model_path}: its {len(weights)} weight arrays do not fit the "
                         f"{len(expected)} of the model built from its configuration; pass the "
                         "model's --architecture and --backbone")
    model.set_weights(weights)
    del source


def _encoder_layer_names(backbone: str) -> set[str]:
    """Names of the layers of a backbone (the encoder of segmentation_models networks)."""
    from skyseg.backend import import_segmentation_models
    from skyseg.training import lite0

    if backbone == lite0.BACKBONE:
        from skyseg.training.model import build_model

        model = build_model("unet", backbone)
        return {layer.name for layer in model.layers if layer.name.startswith(lite0.ENCODER_PREFIX)}
    sm = import_segmentation_models()
    # The factory wants the Keras submodules segmentation_models injects into its own calls.
    get_backbone = sm.inject_global_submodules(sm.Backbones.get_backbone)
    encoder = get_backbone(backbone, input_shape=(None, None, 3), weights=None,
                           include_top=False)
    return {layer.name for layer in encoder.layers}


def _make_encoder_freeze(keras):
    """The callback class that keeps the encoder fixed for the first epochs."""

    class EncoderFreeze(keras.callbacks.Callback):
        """Encoder layers not trainable (BatchNorm in inference mode) for ``epochs`` epochs.

        The optimizer is built over all weights first, and the layers are
        trainable again whenever the model is validated and saved, so a
        checkpoint loads with the optimizer state of every weight and
        ``--resume`` freezes again by epoch number.
        """

        def __init__(self, epochs: int, backbone: str):
            super().__init__()
            self.epochs = epochs
            self.backbone = backbone
            self.layers = []
            self.frozen = False
            self.announced = False

        def on_train_begin(self, logs=None):
            names = _encoder_layer_names(self.backbone)
            self.layers = [layer for layer in self.model.layers if layer.name in names]
            if not self.layers:
                logger.warning("--freeze-encoder-epochs: no encoder layer of %s found in the "
                               "model; nothing is frozen", self.backbone)
            with self.model.distribute_strategy.scope():
                self.model.optimizer.build(self.model.trainable_variables)

        def _set(self, frozen: bool) -> None:
            for layer in self.layers:
                layer.trainable = not frozen
            self.frozen = frozen

        def on_epoch_begin(self, epoch, logs=None):
            if epoch < self.epochs:
                if not self.announced:
                    logger.info("encoder (%d layers) frozen up to epoch %d", len(self.layers),
                                self.epochs)
                    self.announced = True
                self._set(True)
            elif epoch == self.epochs or self.model.train_function is None:
                self._set(False)
                # The traced step holds the variables it trains: trace it again.
                self.model.train_function = self.model.make_train_function(force=True)
                logger.info("encoder trainable from epoch %d", epoch + 1)

        def on_test_begin(self, logs=None):
            # Validation after the training steps: make the layers trainable
            # for the checkpoints written at the end of the epoch.
            if self.frozen:
                self._set(False)

    return EncoderFreeze


def _budget_stop(budget: TimeBudget | None, model, epoch: int, epochs: int,
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


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, action="append", metavar="DIR[=WEIGHT]",
                        help="dataset folder written by skyseg build-dataset; repeat for several "
                             "sources, each with its sampling weight (e.g. --data pano=3 "
                             "--data camvid=1)")
    parser.add_argument("--out", required=True, type=Path, help="run folder to create (or resume)")
    parser.add_argument("--epochs", type=int, default=100, help="total number of epochs")
    parser.add_argument("--batch-size", type=int, default=8, help="patches per batch")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate (after the warm-up; with --schedule plateau "
                             "the initial one); default 1e-3, with --init a tenth of the "
                             "--init run's")
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "adam"),
                        help="AdamW (decoupled weight decay) or Adam")
    parser.add_argument("--weight-decay", type=float, default=1e-4,
                        help="AdamW's weight decay (not on BatchNorm parameters and biases); "
                             "0 with --optimizer adam")
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "plateau"),
                        help="cosine: linear warm-up then a cosine decay to 1%% at the last "
                             "epoch; plateau: halve when the validation loss stalls 5 epochs")
    parser.add_argument("--warmup-epochs", type=float, default=1.0,
                        help="epochs of linear learning-rate warm-up (cosine schedule)")
    parser.add_argument("--ema", type=float, default=0.99,
                        help="momentum of the moving average of the weights used for "
                             "validation, model_best.h5 and prediction; 0 for none")
    parser.add_argument("--clip-norm", type=float, default=1.0,
                        help="clip of the global gradient norm; 0 for none")
    parser.add_argument("--architecture", default=None,
                        help="unet (default), fpn, linknet or pspnet; with --init the --init "
                             "run's")
    parser.add_argument("--backbone", default=None,
                        help="encoder, e.g. resnet18, resnet34 (default); with --init the "
                             "--init run's")
    parser.add_argument("--init", default=None, metavar="RUN_OR_MODEL",
                        help="fine-tune: start from all weights of this run folder (its best "
                             "model) or model file; build the dataset with --like RUN")
    parser.add_argument("--freeze-encoder-epochs", type=int, default=0, metavar="N",
                        help="keep the encoder fixed for the first N epochs (with --init)")
    parser.add_argument("--max-minutes", type=float, default=None, metavar="M",
                        help="time budget: stop after the last epoch that fits in M minutes "
                             "(--resume goes on with a new budget)")
    parser.add_argument("--encoder-weights", default="none", metavar="none|imagenet|PATH",
                        help="initial encoder weights: none (random), a local .h5 file such "
                             "as resnet34_imagenet_1000_no_top.h5, or imagenet (downloaded "
                             "once; needs internet)")
    parser.add_argument("--loss", default="bce_jaccard",
                        help="bce_jaccard, bce_dice, dice, focal, jaccard or bce")
    parser.add_argument("--seed", type=int, default=0, help="the one seed of the run")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last finished epoch")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="compute in float16 (GPUs with tensor cores)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="augment training patches (flip, rotation, shift, zoom, shear, "
                             "exposure, gamma, colour; LDR also the sky's exposure and texture)")
    parser.add_argument("--augment-set", action="append", default=[], metavar="NAME=VALUE",
                        help="change one setting of the default augmentation, e.g. "
                             "exposure_ev=4 (HDR shot at any exposure) or sky_texture_ev=0; "
                             "repeatable; names: those of skyseg.data.augmentation.Augmentation")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads reading and augmenting patches")
    parser.add_argument("--patience", type=int, default=15,
                        help="epochs without a better validation IoU before stopping")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="batches per epoch (default: one pass over the training patches); "
                             "shorter epochs validate and checkpoint more often")
    parser.add_argument("--bn-momentum", type=float, default=0.9,
                        help="BatchNorm moving-statistics momentum (Keras' default is 0.99; "
                             "0.9 makes short runs validate truthfully)")
    parser.add_argument("--strategy", default="auto", choices=("auto", "mirrored", "multi-worker"),
                        help="auto: multi-worker when TF_CONFIG names two tasks or more, else "
                             "all local GPUs when there are two or more; mirrored: all local "
                             "GPUs; multi-worker: MultiWorkerMirroredStrategy from TF_CONFIG "
                             "(--batch-size per worker; the chief writes --out)")
    parser.add_argument("--collective-timeout", type=float, default=None, metavar="SECONDS",
                        help="multi-worker: stop when an all-reduce waits longer than this "
                             "for another worker, or the workers have not all joined after "
                             "this (default 600)")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                        help="repeatable TensorFlow ops (default: on CPUs, off on GPUs, where "
                             "the U-Net's up-sampling gradient has no deterministic kernel)")
    parser.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                        help="track the run in MLflow (pip install 'skyseg[mlflow]'): at URI, "
                             "else $MLFLOW_TRACKING_URI, else file:./mlruns; --resume goes on "
                             "in the same MLflow run")
    parser.add_argument("--mlflow-experiment", default=None, metavar="NAME",
                        help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME or skyseg)")


def progress_verbosity(quiet: bool = False) -> int:
    """Keras' ``verbose`` for a command: a progress bar on a terminal, else silent.

    The log has one line per epoch anyway.
    """
    return 1 if sys.stdout.isatty() and not quiet else 0


def run(args: argparse.Namespace) -> int:
    verbose = progress_verbosity(getattr(args, "quiet", False))
    tracker = None
    if getattr(args, "mlflow", None) is not None:
        from skyseg.training.tracking import MlflowTracker

        tracker = MlflowTracker(args.out, tracking_uri=args.mlflow or None,
                                experiment=args.mlflow_experiment, resume=args.resume)
    try:
        result = _train_from_args(args, verbose, [tracker.callback()] if tracker else [])
    except BaseException as exc:
        if tracker is not None:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    if tracker is not None:
        tracker.finish()
    return report_training(result)


def report_training(result: TrainResult) -> int:
    """Log where the best model is, a budget stop and damaged patches; the exit status.

    What ``skyseg train`` (and the pipeline's train step) shows at the end:
    0, or 1 when damaged patch files were left out.
    """
    logger.info("run folder %s: best validation IoU %.4f (epoch %s) in %s", result.run_dir,
                result.best_val_iou, result.best_epoch, MODEL_BEST)
    if result.stopped_on_budget:
        logger.info("stopped on the --max-minutes budget after epoch %d; skyseg train --resume "
                    "continues", result.epochs)
    if result.skipped:
        logger.warning("%d damaged patch file(s) were left out:", len(result.skipped))
        for message in result.skipped.values():
            logger.warning("  SKIPPED %s", message)
        return 1
    return 0


def _augmentation_from_args(args: argparse.Namespace) -> str | dict | None:
    """``"default"``, the ``--augment-set`` changes to it, or None for --no-augment."""
    from skyseg.data.augmentation import parse_changes

    changes = parse_changes(args.augment_set)
    if not args.augment:
        if changes:
            raise ConfigError("--augment-set changes the augmentation that --no-augment "
                              "turns off; drop one of them")
        return None
    return changes or "default"


def _train_from_args(args: argparse.Namespace, verbose: int, callbacks: list) -> TrainResult:
    return train_model(
        args.data[0] if len(args.data) == 1 else args.data, args.out, epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate, architecture=args.architecture,
        backbone=args.backbone, encoder_weights=args.encoder_weights, loss=args.loss,
        seed=args.seed, resume=args.resume,
        augmentation=_augmentation_from_args(args),
        mixed_precision=args.mixed_precision, workers=args.workers, patience=args.patience,
        deterministic=args.deterministic, steps_per_epoch=args.steps_per_epoch,
        bn_momentum=args.bn_momentum, optimizer=args.optimizer,
        weight_decay=args.weight_decay, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, ema=args.ema, clip_norm=args.clip_norm,
        verbose=verbose, init=args.init, freeze_encoder_epochs=args.freeze_encoder_epochs,
        max_minutes=args.max_minutes, strategy=args.strategy,
        collective_timeout=args.collective_timeout, callbacks=callbacks,
    )


#: ``skyseg.training.train.train`` reads naturally inside the module; the package exports
#: :func:`train_model` (``skyseg.training.train`` is this module once the CLI imported it).
train = train_model

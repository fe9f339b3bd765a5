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

The options are one :class:`~skyseg.training.options.TrainOptions`; the
checked options and the dataset's facts are the run's
:class:`~skyseg.training.settings.RunSettings` (``config.json``); the callback
that fills the run folder is in :mod:`skyseg.training.recorder`, fine-tuning in
:mod:`skyseg.training.finetune`.

Example:
    >>> result = train("DATA", "runs/resnet34", epochs=50)  # doctest: +SKIP
    >>> result.best_val_iou  # doctest: +SKIP
    0.962
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from skyseg.data.augmentation import Augmentation
from skyseg.errors import ConfigError, DatasetError, ModelError
from skyseg.io.run_folder import (
    CONFIG_FILE,
    MODEL_BEST,
    MODEL_LAST,
    PREPROCESSING_FILE,
    read_run_config,
)
from skyseg.options import add_options, from_args
from skyseg.training.finetune import (
    InitSource,
    check_init_preprocessing,
    copy_weights,
    encoder_freeze_class,
    model_choices,
    resolve_init,
)
from skyseg.training.model import check_encoder_weights, check_model_choice
from skyseg.training.options import (
    TrainOptions,
    add_augmentation_arguments,
    augmentation_from_args,
    check_counts,
)
from skyseg.training.recorder import (
    AVERAGE_ARRAYS,
    TimeBudget,
    pause_callbacks_for_tests,
    recorder_class,
    weight_average,
)
from skyseg.training.settings import (
    PLATEAU_FACTOR,
    PLATEAU_PATIENCE,
    RESUMABLE_KEYS,
    RunSettings,
)

__all__ = ["train", "train_model", "TrainOptions", "RunSettings", "TrainResult", "TimeBudget",
           "report_training", "progress_verbosity", "CLI_HELP", "add_arguments", "run",
           "TENSORBOARD_DIR", "AVERAGE_ARRAYS", "run_images"]

logger = logging.getLogger("skyseg")

CLI_HELP = "train a U-Net on a patch dataset (checkpoints, history, curves, resume)"

TENSORBOARD_DIR = "tensorboard"


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


def train_model(data_dir: str | os.PathLike | list, out_dir: str | os.PathLike,
                options: TrainOptions | None = None, *, callbacks=(), verbose: int = 0,
                **overrides) -> TrainResult:
    """Train a segmentation network on a patch dataset and fill a run folder.

    Args:
        data_dir: dataset folder of ``skyseg build-dataset`` (train and val splits),
            or several sources: a list of folders, ``"DIR=WEIGHT"`` strings or
            :class:`~skyseg.data.generators.DataSource` s (see
            :func:`~skyseg.data.generators.parse_sources`); training patches are then
            drawn from each by its weight (:class:`~skyseg.data.generators.MixedBatches`),
            and validation scores every source's val patches.
        out_dir: the run folder (created; must not hold another run unless ``resume``).
        options: the run's :class:`~skyseg.training.options.TrainOptions`
            (None: the defaults, those of ``skyseg train``).
        callbacks: extra Keras callbacks (after skyseg's own).
        verbose: Keras' progress output (0 silent, 1 progress bar, 2 one line per epoch).
        **overrides: fields of ``options`` to change (``epochs=3``).

    Returns:
        a :class:`TrainResult`.

    Raises:
        TypeError: an override that is not a field of ``TrainOptions``.
        ConfigError: bad option, unknown architecture/backbone/loss, a run
            folder that holds another run (without ``resume``) or a resume
            with a different configuration (the message names the keys);
            ``init`` with another ``backbone``/``architecture``, or a dataset
            whose preprocessing differs from the ``init`` run's (the message
            names the options to fix); ``mlflow`` without the mlflow package.
        DatasetError: dataset folder missing, empty or inconsistent.
        DistributedError: multi-worker: a worker was lost or timed out.
        ModelError: weights cannot be loaded or downloaded; ``init`` is not a
            run folder or model file.

    Example:
        >>> train("DATA", "runs/r18", backbone="resnet18", encoder_weights=None,
        ...       epochs=20)  # doctest: +SKIP
        >>> train("DATA-new-camera", "runs/new-camera", init="runs/r18",
        ...       freeze_encoder_epochs=2, max_minutes=10)  # doctest: +SKIP
        >>> train("DATA", "runs/short", TrainOptions(epochs=5, patience=2))  # doctest: +SKIP
    """
    options = replace(options if options is not None else TrainOptions(), **overrides)
    tracker = _tracker(out_dir, options)
    if tracker is None:
        return _train(data_dir, Path(out_dir), options, callbacks=callbacks, verbose=verbose)
    try:
        result = _train(data_dir, Path(out_dir), options,
                        callbacks=[*callbacks, tracker.callback()], verbose=verbose)
    except BaseException as exc:
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish()
    return result


def _tracker(out_dir, options: TrainOptions):
    """The MLflow tracker of the run (None without ``mlflow``); refuses before training
    when mlflow is not installed."""
    if options.mlflow is None:
        return None
    from skyseg.training.tracking import MlflowTracker

    return MlflowTracker(out_dir, tracking_uri=options.mlflow or None,
                         experiment=options.mlflow_experiment, resume=options.resume)


def _train(data_dir, out_dir: Path, options: TrainOptions, *, callbacks,
           verbose: int) -> TrainResult:
    """Plan the run, prepare (or resume) its folder and train: :func:`train_model`'s steps."""
    started = time.time()
    budget = TimeBudget(options.max_minutes) if options.max_minutes is not None else None
    settings, place, source = _plan_run(data_dir, out_dir, options, budget)
    state = _prepare_run_folder(out_dir, settings.to_json(), options.resume, write=place.writes)
    if state is not None:
        settings = settings.resumed(read_run_config(out_dir))
        if _nothing_to_resume(state, settings.options.epochs, out_dir):
            return _result(out_dir, state, {})
    if place.writes:
        _write_json(out_dir / CONFIG_FILE, settings.to_json())
        place.preprocessing.save(out_dir / PREPROCESSING_FILE)
    start = (f"resuming after epoch {state['epoch']}" if state and state["epoch"]
             else f"all weights from {source.model_path}" if source is not None
             else f"encoder weights: {settings.options.encoder_weights or 'random'}")
    final_state, skipped = _train_with_keras(settings, state, place, start=start,
                                             callbacks=callbacks, verbose=verbose)
    logger.info("%s: %d epochs, best validation IoU %.4f at epoch %s (%.0f s)", out_dir,
                final_state["epoch"], final_state["best_val_iou"] or 0.0,
                final_state["best_epoch"], time.time() - started)
    return _result(out_dir, final_state, skipped)


def _plan_run(data_dir, out_dir: Path, options: TrainOptions,
              budget: TimeBudget | None) -> tuple[RunSettings, _RunPlace, InitSource | None]:
    """Check the options against the data (no TensorFlow yet): the run's settings, where it
    trains, and the run it starts from."""
    from skyseg.data.generators import check_sources, open_batches, parse_sources
    from skyseg.training import distribute

    sources = parse_sources(data_dir)
    data_dir = Path(sources[0].path)
    source = resolve_init(options.init, options.resume, out_dir)
    options = _resolved_model(options, source)
    cluster = distribute.check_strategy(options.strategy, options.collective_timeout)
    options = replace(options, encoder_weights=_check_loss_and_encoder_weights(
        options.loss, options.encoder_weights))
    info = check_sources(sources)
    if source is not None:
        check_init_preprocessing(source, info.preprocessing, data_dir)
    options = _resolved_recipe(options, info.mode)
    # Plain batches first: they check the dataset without importing TensorFlow.
    train_batches = open_batches(sources, "train", batch_size=options.batch_size,
                                 augmentation=options.augmentation, seed=options.seed,
                                 workers=options.workers, steps_per_epoch=options.steps_per_epoch)
    val_batches = open_batches(sources, "val", batch_size=options.batch_size, seed=options.seed,
                               workers=options.workers)
    _check_patch_size(train_batches.patch_size, options.architecture)
    settings = RunSettings(
        options, patch_size=train_batches.patch_size, mode=info.mode,
        preprocessing=info.preprocessing.to_dict(),
        total_steps=options.epochs * distribute.global_steps(len(train_batches), cluster),
        train_patches=len(train_batches.pairs), val_patches=len(val_batches.pairs),
        data=(str(data_dir.resolve()) if len(sources) == 1
              else [item.to_json() for item in sources]),
        created=time.strftime("%Y-%m-%dT%H:%M:%S"), skyseg_version=_version(),
        init_record=source.record if source is not None else None,
        distribution=_distribution_record(cluster, options.batch_size),
        convert_ldr=_learns_ldr(sources, source))
    place = _RunPlace(out_dir=out_dir, sources=tuple(sources),
                      preprocessing=info.preprocessing, cluster=cluster, budget=budget)
    return settings, place, source


def _resolved_model(options: TrainOptions, source: InitSource | None) -> TrainOptions:
    """The options with the architecture, backbone and learning rate chosen (from ``init``
    where it has them), the counts checked."""
    architecture, backbone, learning_rate = model_choices(
        source, options.architecture, options.backbone, options.learning_rate)
    check_counts(options, learning_rate)
    architecture, backbone = check_model_choice(architecture, backbone)
    return replace(options, architecture=architecture, backbone=backbone,
                   learning_rate=learning_rate)


def _resolved_recipe(options: TrainOptions, mode: str) -> TrainOptions:
    """The options with the recipe checked (``ema`` and ``clip_norm`` None when off, numbers
    as floats) and the augmentation of the dataset's ``mode``."""
    ema, clip_norm = _check_recipe_options(
        options.bn_momentum, schedule=options.schedule, optimizer=options.optimizer,
        weight_decay=options.weight_decay, warmup_epochs=options.warmup_epochs,
        ema=options.ema, clip_norm=options.clip_norm)
    return replace(
        options, ema=ema, clip_norm=clip_norm, weight_decay=float(options.weight_decay),
        warmup_epochs=float(options.warmup_epochs), bn_momentum=float(options.bn_momentum),
        mixed_precision=bool(options.mixed_precision),
        freeze_encoder_epochs=int(options.freeze_encoder_epochs),
        max_minutes=float(options.max_minutes) if options.max_minutes is not None else None,
        augmentation=_resolved_augmentation(options.augmentation, mode))


def _resolved_augmentation(augmentation, mode: str) -> Augmentation | None:
    """``augmentation`` as an Augmentation (or None): ``"default"`` and dicts of changes are
    taken relative to the default of the dataset's ``mode``."""
    if isinstance(augmentation, dict):
        return Augmentation.default(mode).changed(augmentation)
    if isinstance(augmentation, str):
        if augmentation != "default":
            raise ConfigError(f"augmentation must be 'default', a dict of changes to it, an "
                              f"Augmentation or None, got {augmentation!r}")
        return Augmentation.default(mode)
    return augmentation


@dataclass(frozen=True)
class _RunPlace:
    """Where and with what a run trains, besides its settings (none of it in ``config.json``)."""

    out_dir: Path
    sources: tuple  # the generators.DataSource s (one for a single dataset folder)
    preprocessing: object  # the dataset's Preprocessing
    cluster: object  # skyseg.training.distribute's cluster of a multi-worker run, else None
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

    keras = import_keras()
    import tensorflow as tf

    options, out_dir = settings.options, place.out_dir
    initial_epoch = state["epoch"] if state else 0
    distribution = _start_strategy(tf, place, options, initial_epoch)
    # Other workers save what the chief saves (the saves hold collectives), but here.
    record_dir = out_dir if place.writes else Path(tempfile.mkdtemp(prefix="skyseg-worker-"))
    previous_policy = keras.mixed_precision.global_policy()
    try:
        _configure_tensorflow(keras, tf, seed=options.seed, deterministic=options.deterministic,
                              mixed_precision=options.mixed_precision)
        with distribution.scope():
            model = _make_model(settings, state, out_dir, keras)
        sequences = _keras_sequences(place.sources, options, initial_epoch)
        try:
            own_callbacks, recorder = _epoch_callbacks(
                keras, settings=settings, state=state, out_dir=out_dir, record_dir=record_dir,
                sequences=sequences, preprocessing=place.preprocessing,
                budget=_agreed_budget(tf, place, distribution))
            logger.info("training %s/%s on %d patches (%d px, %s), validating on %d; %s",
                        options.architecture, options.backbone, settings.train_patches,
                        settings.patch_size, settings.mode, settings.val_patches, start)
            _fit(model, tf, keras, place.cluster, *sequences, initial_epoch=initial_epoch,
                 epochs=options.epochs, callbacks=[*own_callbacks, *callbacks],
                 verbose=verbose, out_dir=out_dir)
        finally:
            for sequence in sequences:
                sequence.close()
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if record_dir != out_dir:
            shutil.rmtree(record_dir, ignore_errors=True)
    return recorder.state, {**sequences[0].skipped, **sequences[1].skipped}


def _start_strategy(tf, place: _RunPlace, options: TrainOptions, initial_epoch: int):
    """The ``tf.distribute`` strategy of the run, the workers agreeing on ``initial_epoch``.

    The multi-worker strategy must come before any other TensorFlow work; it
    waits for every worker, and the first collective confirms they all came.
    """
    from skyseg.training import distribute

    with distribute.join_watchdog(place.cluster, options.collective_timeout):
        distribution = distribute.make_strategy(tf, options.strategy, place.cluster,
                                                options.collective_timeout)
        distribute.agree(tf, distribution, place.cluster, initial_epoch,
                         "the epoch to resume after")
    return distribution


def _agreed_budget(tf, place: _RunPlace, distribution):
    """The time budget; on several workers one they all agree on (the slowest decides)."""
    if place.budget is None or place.cluster is None:
        return place.budget
    from skyseg.training import distribute

    return distribute.AgreedBudget(place.budget, tf, distribution)


def _keras_sequences(sources, options: TrainOptions, initial_epoch: int) -> tuple:
    """The training and validation ``keras.utils.Sequence`` s, the training one at
    ``initial_epoch``'s patch order."""
    from skyseg.data.generators import open_batches

    train_sequence = open_batches(sources, "train", keras=True, batch_size=options.batch_size,
                                  augmentation=options.augmentation, seed=options.seed,
                                  workers=options.workers,
                                  steps_per_epoch=options.steps_per_epoch)
    val_sequence = open_batches(sources, "val", keras=True, batch_size=options.batch_size,
                                seed=options.seed, workers=options.workers)
    train_sequence.set_epoch(initial_epoch)
    return train_sequence, val_sequence


def _epoch_callbacks(keras, *, settings: RunSettings, state: dict | None, out_dir: Path,
                     record_dir: Path, sequences, preprocessing, budget) -> tuple[list, object]:
    """skyseg's callbacks of ``model.fit``, in their order, and the run recorder among them.

    The weight average comes first: validation (``on_test_*``) must see the
    averaged weights before any other callback reads the scores.
    """
    options = settings.options
    train_sequence, val_sequence = sequences
    average = weight_average(options.ema, state, out_dir)
    recorder = recorder_class(keras)(
        out_dir=record_dir, epochs=options.epochs, state=state, train_sequence=train_sequence,
        val_sequence=val_sequence, preprocessing=preprocessing, average=average)
    plateau = (keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", mode="min", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE,
        verbose=0) if options.schedule == "plateau" else None)
    stopper = keras.callbacks.EarlyStopping(monitor="val_iou", mode="max",
                                            patience=options.patience, verbose=0)
    recorder.plateau, recorder.stopper, recorder.budget = plateau, stopper, budget
    freeze_epochs = options.freeze_encoder_epochs
    freeze = ([encoder_freeze_class(keras)(freeze_epochs, options.backbone)]
              if freeze_epochs else [])
    schedule_callbacks = [c for c in (average, plateau) if c is not None]
    board = _tensorboard(keras, record_dir / TENSORBOARD_DIR)
    hooks = pause_callbacks_for_tests(keras)
    return [*schedule_callbacks, *board, stopper, recorder, *freeze, *hooks], recorder


def _check_loss_and_encoder_weights(loss: str, encoder_weights):
    """The encoder weights as recorded (None, "imagenet" or a resolved path), checked."""
    from skyseg.image.metrics import LOSSES

    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    return check_encoder_weights(encoder_weights)


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
        _check_resumable(out_dir, config)
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


def _check_resumable(out_dir: Path, config: dict) -> None:
    """The run's saved ``config.json`` must match ``config`` but for :data:`RESUMABLE_KEYS`."""
    config_path = out_dir / CONFIG_FILE
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
    """The compiled model: the resumed run's ``model_last.h5``, or a new one (with the
    ``init`` run's weights when there is one)."""
    from skyseg.image import metrics
    from skyseg.training.model import build_model, load_model
    from skyseg.training.recipe import exclude_from_decay, make_optimizer

    options = settings.options
    if state is not None:
        model = load_model(out_dir / MODEL_LAST, compile=True)
        if options.schedule == "plateau":
            keras.backend.set_value(model.optimizer.learning_rate, state["lr"])
        exclude_from_decay(model.optimizer)
        return model
    input_shape = ((settings.patch_size, settings.patch_size, 3)
                   if options.architecture == "pspnet" else (None, None, 3))
    model = build_model(options.architecture, options.backbone,
                        encoder_weights=options.encoder_weights, input_shape=input_shape)
    if settings.init_record:
        copy_weights(settings.init_record["model"], model)
    # Set before compiling; saved in the model file, so a resumed run keeps it.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = options.bn_momentum
    steps_per_epoch = settings.total_steps // options.epochs
    optimizer = make_optimizer(
        keras, optimizer=options.optimizer, learning_rate=options.learning_rate,
        schedule=options.schedule, total_steps=settings.total_steps,
        warmup_steps=round(options.warmup_epochs * steps_per_epoch),
        weight_decay=options.weight_decay, clip_norm=options.clip_norm)
    model.compile(optimizer=optimizer, loss=metrics.get_loss(options.loss),
                  metrics=metrics.make_metrics())
    return model


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``skyseg train``'s options: ``--data``, ``--out``, those of :class:`TrainOptions`
    and the augmentation's (``--augment``, ``--augment-set``)."""
    parser.add_argument("--data", required=True, action="append", metavar="DIR[=WEIGHT]",
                        help="dataset folder written by skyseg build-dataset; repeat for several "
                             "sources, each with its sampling weight (e.g. --data pano=3 "
                             "--data camvid=1)")
    parser.add_argument("--out", required=True, type=Path, help="run folder to create (or resume)")
    # The augmentation's options stand where --help has always listed them.
    names = [item.name for item in fields(TrainOptions)]
    later = names[names.index("augmentation"):]
    add_options(parser, TrainOptions, skip=later)
    add_augmentation_arguments(parser)
    add_options(parser, TrainOptions, skip=[name for name in names if name not in later])


def progress_verbosity(quiet: bool = False) -> int:
    """Keras' ``verbose`` for a command: a progress bar on a terminal, else silent.

    The log has one line per epoch anyway.
    """
    return 1 if sys.stdout.isatty() and not quiet else 0


def run(args: argparse.Namespace) -> int:
    """``skyseg train``: train with the command line's options; the exit status."""
    options = from_args(TrainOptions, args, augmentation=augmentation_from_args(args))
    data = args.data[0] if len(args.data) == 1 else args.data
    result = train_model(data, args.out, options,
                         verbose=progress_verbosity(getattr(args, "quiet", False)))
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


#: ``skyseg.training.train.train`` reads naturally inside the module; the package exports
#: :func:`train_model` (``skyseg.training.train`` is this module once the CLI imported it).
train = train_model

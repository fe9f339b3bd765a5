"""The options of ``skyseg train``: one dataclass, the one place each default is written.

:class:`TrainOptions` gives ``skyseg train``'s command-line options
(:func:`~skyseg.options.add_options`), the ``train`` section of the pipeline's
YAML file (:func:`~skyseg.options.from_mapping`) and the keyword arguments of
:func:`skyseg.training.train.train_model`. The command line spells the
augmentation as ``--augment/--no-augment`` and ``--augment-set NAME=VALUE``
(:func:`augmentation_from_args`); Python and YAML set ``augmentation`` itself.

Example:
    >>> options = TrainOptions(epochs=5, backbone="resnet18")
    >>> options.epochs, options.batch_size, options.patience
    (5, 8, 15)
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from skyseg.data.augmentation import Augmentation
from skyseg.errors import ConfigError
from skyseg.options import option
from skyseg.training.model import ARCHITECTURES

__all__ = ["TrainOptions", "add_augmentation_arguments", "augmentation_from_args", "check_counts",
           "DEFAULT_LEARNING_RATE", "INIT_LEARNING_RATE_FACTOR"]

#: Learning rate when none is given; a run started from another (``init``)
#: takes INIT_LEARNING_RATE_FACTOR times the source run's learning rate.
DEFAULT_LEARNING_RATE = 1e-3
INIT_LEARNING_RATE_FACTOR = 0.1


@dataclass(frozen=True)
class TrainOptions:
    """What ``skyseg train`` can be told (besides ``--data`` and ``--out``).

    The field order is ``skyseg train --help``'s.

    Attributes:
        epochs: total epochs (a resumed run counts the ones already done).
        batch_size: patches per batch (split across GPUs when there are several).
        learning_rate: the peak learning rate (reached after the warm-up;
            with ``schedule="plateau"`` the initial one); None: 1e-3, or with
            ``init`` a tenth of the source run's (1e-4 when unknown).
        architecture: ``"unet"`` (default), ``"fpn"``, ``"linknet"`` or
            ``"pspnet"``; with ``init``, the source's (give none, or the same).
        backbone: encoder, e.g. ``"resnet34"`` (the default; see
            :data:`skyseg.training.model.BACKBONES`); with ``init``, the source's.
        encoder_weights: ``"none"`` or None (random, the default: nothing is downloaded),
            a local weights file (e.g. ``resnet34_imagenet_1000_no_top.h5``), or
            ``"imagenet"`` (downloaded once by segmentation_models; needs internet).
        loss: a name of :data:`skyseg.image.metrics.LOSSES`.
        seed: the one seed of the run.
        resume: continue the run in the run folder from its last finished epoch.
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
            GPUs, off with GPUs (see :mod:`skyseg.training.train`).
        init: a run folder (its best model) or a model file to start from:
            all its weights, its architecture and backbone (fine-tuning). On
            ``resume`` it may be left out (the run's own is used).
        freeze_encoder_epochs: keep the encoder's weights and BatchNorm
            statistics fixed for this many first epochs (0: never).
        max_minutes: time budget of this call: stop after the last epoch
            that fits (see :class:`~skyseg.training.recorder.TimeBudget`); None: no budget.
        strategy: ``"auto"`` (multi-worker when ``TF_CONFIG`` names two
            tasks or more, else MirroredStrategy with two GPUs or more),
            ``"mirrored"`` or ``"multi-worker"`` (see :mod:`skyseg.training.distribute`:
            ``batch_size`` is then per worker, the chief alone writes the run folder).
        collective_timeout: multi-worker: seconds an all-reduce waits for the
            other workers before the run stops (None: 600).
        mlflow: track the run in MLflow (``pip install 'skyseg[mlflow]'``): at this
            tracking URI ("": ``$MLFLOW_TRACKING_URI``, else ``file:./mlruns``);
            None: not tracked. A resumed run goes on in the same MLflow run.
        mlflow_experiment: the MLflow experiment (None: ``$MLFLOW_EXPERIMENT_NAME``
            or ``skyseg``).
    """

    epochs: int = option(100, "total number of epochs")
    batch_size: int = option(8, "patches per batch")
    learning_rate: float | None = option(
        None, "peak learning rate (after the warm-up; with --schedule plateau the initial one); "
              "default 1e-3, with --init a tenth of the --init run's")
    optimizer: str = option("adamw", "AdamW (decoupled weight decay) or Adam",
                            choices=("adamw", "adam"))
    weight_decay: float = option(
        1e-4, "AdamW's weight decay (not on BatchNorm parameters and biases); 0 with "
              "--optimizer adam")
    schedule: str = option(
        "cosine", "cosine: linear warm-up then a cosine decay to 1%% at the last epoch; "
                  "plateau: halve when the validation loss stalls 5 epochs",
        choices=("cosine", "plateau"))
    warmup_epochs: float = option(1.0, "epochs of linear learning-rate warm-up (cosine schedule)")
    ema: float | None = option(
        0.99, "momentum of the moving average of the weights used for validation, "
              "model_best.h5 and prediction; 0 for none")
    clip_norm: float | None = option(1.0, "clip of the global gradient norm; 0 for none")
    architecture: str | None = option(
        None, "unet (default), fpn, linknet or pspnet; with --init the --init run's",
        choices=ARCHITECTURES)
    backbone: str | None = option(
        None, "encoder, e.g. resnet18, resnet34 (default); with --init the --init run's")
    init: str | None = option(
        None, "fine-tune: start from all weights of this run folder (its best model) or model "
              "file; build the dataset with --like RUN", metavar="RUN_OR_MODEL")
    freeze_encoder_epochs: int = option(
        0, "keep the encoder fixed for the first N epochs (with --init)", metavar="N")
    max_minutes: float | None = option(
        None, "time budget: stop after the last epoch that fits in M minutes (--resume goes "
              "on with a new budget)", metavar="M")
    encoder_weights: str | None = option(
        "none", "initial encoder weights: none (random), a local .h5 file such as "
              "resnet34_imagenet_1000_no_top.h5, or imagenet (downloaded once; needs internet)",
        metavar="none|imagenet|PATH")
    loss: str = option("bce_jaccard", "bce_jaccard, bce_dice, dice, focal, jaccard or bce")
    seed: int = option(0, "the one seed of the run")
    resume: bool = option(False, "continue the run in --out from its last finished epoch")
    mixed_precision: bool = option(False, "compute in float16 (GPUs with tensor cores)")
    augmentation: Augmentation | dict | str | None = option(
        "default", "the training patches' augmentation: default (that of the dataset's mode), "
                   "a mapping of changes to it, or none (command line: --augment, --augment-set)",
        cli=False)
    workers: int = option(2, "threads reading and augmenting patches")
    patience: int = option(15, "epochs without a better validation IoU before stopping")
    steps_per_epoch: int | None = option(
        None, "batches per epoch (default: one pass over the training patches); shorter epochs "
              "validate and checkpoint more often")
    bn_momentum: float = option(
        0.9, "BatchNorm moving-statistics momentum (Keras' default is 0.99; 0.9 makes short "
             "runs validate truthfully)")
    strategy: str = option(
        "auto", "auto: multi-worker when TF_CONFIG names two tasks or more, else all local GPUs "
                "when there are two or more; mirrored: all local GPUs; multi-worker: "
                "MultiWorkerMirroredStrategy from TF_CONFIG (--batch-size per worker; the chief "
                "writes --out)", choices=("auto", "mirrored", "multi-worker"))
    collective_timeout: float | None = option(
        None, "multi-worker: stop when an all-reduce waits longer than this for another worker, "
              "or the workers have not all joined after this (default 600)", metavar="SECONDS")
    deterministic: bool | None = option(
        None, "repeatable TensorFlow ops (default: on CPUs, off on GPUs, where the U-Net's "
              "up-sampling gradient has no deterministic kernel)",
        action=argparse.BooleanOptionalAction)
    mlflow: str | None = option(
        None, "track the run in MLflow (pip install 'skyseg[mlflow]'): at URI, else "
              "$MLFLOW_TRACKING_URI, else file:./mlruns; --resume goes on in the same MLflow run",
        nargs="?", const="", metavar="URI")
    mlflow_experiment: str | None = option(
        None, "MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME or skyseg)", metavar="NAME")


def add_augmentation_arguments(parser: argparse.ArgumentParser) -> None:
    """``--augment/--no-augment`` and ``--augment-set``: the command line's ``augmentation``."""
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="augment training patches (flip, rotation, shift, zoom, shear, "
                             "exposure, gamma, colour; LDR also the sky's exposure and texture)")
    parser.add_argument("--augment-set", action="append", default=[], metavar="NAME=VALUE",
                        help="change one setting of the default augmentation, e.g. "
                             "exposure_ev=4 (HDR shot at any exposure) or sky_texture_ev=0; "
                             "repeatable; names: those of skyseg.data.augmentation.Augmentation")


def augmentation_from_args(args: argparse.Namespace) -> str | dict | None:
    """``"default"``, the ``--augment-set`` changes to it, or None for ``--no-augment``.

    Raises:
        ConfigError: ``--no-augment`` with ``--augment-set``, or an unknown setting.
    """
    from skyseg.data.augmentation import parse_changes

    changes = parse_changes(args.augment_set)
    if not args.augment:
        if changes:
            raise ConfigError("--augment-set changes the augmentation that --no-augment "
                              "turns off; drop one of them")
        return None
    return changes or "default"


def check_counts(options: TrainOptions, learning_rate: float) -> None:
    """The whole-number options and the learning rate in range.

    Raises:
        ConfigError: naming the option and the value received.
    """
    _check_whole("freeze-encoder-epochs", options.freeze_encoder_epochs, 0)
    _check_whole("epochs", options.epochs, 1)
    _check_whole("batch-size", options.batch_size, 1)
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ConfigError(f"--learning-rate must be a positive number, got {learning_rate!r}")
    _check_whole("patience", options.patience, 1)
    _check_whole("workers", options.workers, 1)


def _check_whole(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"--{name} must be a whole number >= {least}, got {value!r}")

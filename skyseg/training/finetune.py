"""Fine-tuning: a run that starts from all the weights of another run (``--init``).

The source is a run folder (its best model) or a model file
(:func:`read_init_source`); its architecture and backbone are the new run's,
the default learning rate a tenth of its own (:func:`model_choices`), and the
dataset must be preprocessed as its training data was
(:func:`check_init_preprocessing`). :func:`encoder_freeze_class` gives the
callback that keeps the encoder fixed for the first epochs
(``--freeze-encoder-epochs``).

Example:
    >>> source = read_init_source("runs/r18")  # doctest: +SKIP
    >>> model_choices(source, None, None, None)  # doctest: +SKIP
    ('unet', 'resnet18', 0.0001)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from skyseg.errors import ConfigError, ModelError
from skyseg.io.run_folder import CONFIG_FILE, PREPROCESSING_FILE, read_run_config
from skyseg.training.options import DEFAULT_LEARNING_RATE, INIT_LEARNING_RATE_FACTOR

__all__ = ["InitSource", "read_init_source", "resolve_init", "model_choices",
           "check_init_preprocessing", "copy_weights", "encoder_layer_names",
           "encoder_freeze_class"]

logger = logging.getLogger("skyseg")


@dataclass
class InitSource:
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


def resolve_init(init, resume: bool, out_dir: Path) -> InitSource | None:
    """The run or model file to start from: ``init``, or on resume the run's own."""
    if init is None and resume:
        init = _saved_init(out_dir)
    return read_init_source(init) if init is not None else None


def read_init_source(init) -> InitSource:
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
    return InitSource(given=given, model_path=model_path, config=config,
                      preprocessing=preprocessing)


def _saved_init(out_dir: Path):
    """The ``init`` a run to resume was started with (its ``from``), or None."""
    try:
        saved = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    record = saved.get("init") if isinstance(saved, dict) else None
    return record.get("from") if isinstance(record, dict) else None


def model_choices(source: InitSource | None, architecture, backbone, learning_rate):
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


def check_init_preprocessing(source: InitSource, preprocessing, data_dir: Path) -> None:
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


def copy_weights(model_path, model) -> None:
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


def encoder_layer_names(backbone: str) -> set[str]:
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


def encoder_freeze_class(keras):
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
            names = encoder_layer_names(self.backbone)
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

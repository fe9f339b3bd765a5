"""The network: a segmentation_models factory and the run folder it lives in.

``segmentation_models`` is imported here and nowhere else. The factory
returns a plain Keras (tf-keras, Keras 2) model taking ``float32 (N, H, W, 3)``
preprocessed images (H and W multiples of 32) and giving ``float32
(N, H, W, 1)`` sky probabilities.

A run folder written by ``skyseg train`` holds ``model_best.h5``,
``model_last.h5``, ``preprocessing.json`` and ``config.json``;
:func:`load_run` reads a run folder or a bare model file back.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from skyseg.backend import import_keras, import_segmentation_models
from skyseg.errors import ConfigError, ModelError, first_line
from skyseg.image.preprocess import Preprocessing
from skyseg.io.run_folder import MODEL_BEST, MODEL_LAST, PREPROCESSING_FILE, read_run_config

__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "build_model",
    "load_model",
    "read_model_arrays",
    "save_model",
    "read_model_attributes",
    "check_model_choice",
    "check_encoder_weights",
    "load_run",
    "ModelEnsemble",
    "LoadedModel",
    "TEST_PAUSE_IN_SAVE",
    "TEST_NOTIFY_FD",
    "pause_for_tests",
]

logger = logging.getLogger("skyseg")

ARCHITECTURES = ("unet", "fpn", "linknet", "pspnet")
#: segmentation_models 1.0.1's backbones (sm.Backbones.models_names()).
BACKBONES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152",
    "seresnext50", "seresnext101", "senet154", "resnext50", "resnext101",
    "vgg16", "vgg19", "densenet121", "densenet169", "densenet201",
    "inceptionresnetv2", "inceptionv3", "mobilenet", "mobilenetv2",
    "efficientnetb0", "efficientnetb1", "efficientnetb2", "efficientnetb3",
    "efficientnetb4", "efficientnetb5", "efficientnetb6", "efficientnetb7",
    # skyseg's own (skyseg.training.lite0): a U-Net only; its ImageNet weights ship with skyseg.
    "efficientnetlite0",
)

#: The sky model shipped with skyseg (a run folder): ``skyseg predict`` without
#: ``--model``, ``--init default``, Label Studio pre-annotations.
_ATTRIBUTE_GROUP = "skyseg"
_ARRAY_GROUP = "skyseg_arrays"
#: Test hook, not an option: ``NAME`` or ``NAME:N`` makes the N-th (default
#: first) :func:`save_model` of a file named NAME in this process stop for an
#: hour half-way through, its temporary file holding the model without
#: skyseg's attributes, so that tests can kill the process in the middle of a
#: checkpoint write (tests/test_train_kill.py).
TEST_PAUSE_IN_SAVE = "SKYSEG_TEST_PAUSE_IN_SAVE"
#: A file descriptor (a pipe the test opened) on which a pausing test hook writes one
#: line, so that the test waits on it instead of polling a log.
TEST_NOTIFY_FD = "SKYSEG_TEST_NOTIFY_FD"
_saves_seen: dict[str, int] = {}


def _check_choice(value: str, choices, what: str) -> str:
    if value not in choices:
        import difflib

        close = difflib.get_close_matches(str(value), choices, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown {what} {value!r}{hint} Choose one of: {', '.join(choices)}"
        )
    return value


def check_model_choice(architecture: str, backbone: str) -> tuple[str, str]:
    """Validate an architecture and backbone name without importing TensorFlow.

    Returns:
        the lower-cased ``(architecture, backbone)``.

    Raises:
        ConfigError: unknown name (the message suggests close names).

    Example:
        >>> check_model_choice("UNet", "resnet34")
        ('unet', 'resnet34')
    """
    return (_check_choice(str(architecture).lower(), ARCHITECTURES, "architecture"),
            _check_choice(str(backbone).lower(), BACKBONES, "backbone"))


def build_model(
    architecture: str = "unet",
    backbone: str = "resnet34",
    *,
    encoder_weights: str | os.PathLike | None = None,
    input_shape: tuple = (None, None, 3),
    encoder_freeze: bool = False,
):
    """A segmentation network with one sigmoid output channel (sky probability).

    Args:
        architecture: ``"unet"`` (default), ``"fpn"``, ``"linknet"`` or ``"pspnet"``.
        backbone: any of :data:`BACKBONES` (default ``"resnet34"``).
        encoder_weights: ``None`` (random, default), ``"imagenet"`` (downloaded
            by segmentation_models, needs internet; for ``efficientnetlite0`` the
            weights shipped with skyseg) or a path to a local weights file
            (``resnet34_imagenet_1000_no_top.h5``; an ``.npz`` for Lite0).
        input_shape: ``(H, W, 3)``; ``(None, None, 3)`` accepts any multiple
            of 32. PSPNet needs fixed sizes, multiples of 48.
        encoder_freeze: keep the encoder's weights fixed while training.

    Returns:
        a ``tf.keras.Model``.

    Raises:
        ConfigError: unknown architecture or backbone, bad input shape.
        ModelError: weights cannot be downloaded or loaded.

    Example:
        >>> model = build_model("unet", "resnet18")  # doctest: +SKIP
        >>> model.output_shape  # doctest: +SKIP
        (None, None, None, 1)
    """
    architecture, backbone = check_model_choice(architecture, backbone)
    input_shape = tuple(input_shape)
    if architecture == "pspnet" and (None in input_shape[:2] or any(
            s % 48 for s in input_shape[:2])):
        raise ConfigError(
            f"PSPNet needs a fixed input size that is a multiple of 48, got {input_shape[:2]}; "
            "pass e.g. input_shape=(288, 288, 3) or use unet/fpn/linknet"
        )
    encoder_weights = check_encoder_weights(encoder_weights)
    if backbone == "efficientnetlite0":
        return _build_lite0(architecture, encoder_weights, input_shape)
    local_weights = (Path(encoder_weights) if encoder_weights not in (None, "imagenet")
                     else None)
    sm = import_segmentation_models()
    factory = {"unet": sm.Unet, "fpn": sm.FPN, "linknet": sm.Linknet, "pspnet": sm.PSPNet}
    kwargs = dict(
        backbone_name=backbone,
        input_shape=input_shape,
        classes=1,
        activation="sigmoid",
        encoder_weights="imagenet" if encoder_weights == "imagenet" else None,
        encoder_freeze=encoder_freeze,
    )
    try:
        model = factory[architecture](**kwargs)
    except Exception as exc:
        if encoder_weights == "imagenet":
            raise ModelError(
                f"could not get ImageNet weights for {backbone} ({type(exc).__name__}: {exc}); "
                "on a machine without internet pass --encoder-weights /path/to/"
                f"{backbone}_imagenet_1000_no_top.h5, or none to train from scratch"
            ) from exc
        raise ModelError(f"could not build {architecture}/{backbone}: {exc}") from exc
    if local_weights is not None:
        _load_encoder_weights(model, local_weights)
    return _float32_output(import_keras(), model)


def check_encoder_weights(encoder_weights: str | os.PathLike | None) -> str | None:
    """Encoder weights as a run records them, checked without importing TensorFlow.

    Returns:
        None (random: ``None``, ``"none"``), ``"imagenet"``, or a local
        weights file's resolved path.

    Raises:
        ModelError: a local weights file that is not there.

    Example:
        >>> check_encoder_weights("None"), check_encoder_weights("imagenet")
        (None, 'imagenet')
    """
    if encoder_weights is None or str(encoder_weights).lower() in ("none", "null", ""):
        return None
    if str(encoder_weights).lower() == "imagenet":
        return "imagenet"
    path = Path(encoder_weights).resolve()
    if not path.is_file():
        raise ModelError(
            f"{path}: encoder weights file not found; pass the path of a "
            "segmentation_models backbone file (e.g. resnet34_imagenet_1000_no_top.h5), "
            "'imagenet' to download, or none"
        )
    return str(path)


def _build_lite0(architecture: str, encoder_weights, input_shape: tuple):
    """The Lite0 U-Net of :mod:`skyseg.training.lite0`; ``"imagenet"``: the file skyseg ships."""
    from skyseg.training import lite0
    if architecture != "unet":
        raise ConfigError(f"the {lite0.BACKBONE} backbone comes as a U-Net only, got "
                          f"{architecture!r}; pass --architecture unet")
    weights = (lite0.IMAGENET_WEIGHTS if encoder_weights == "imagenet"
               else None if encoder_weights is None else Path(encoder_weights))
    keras = import_keras()
    model = lite0.build_lite0_unet(keras, input_shape=input_shape, encoder_weights=weights)
    return _float32_output(keras, model)


def _float32_output(keras, model):
    if keras.mixed_precision.global_policy().compute_dtype != "float32":
        # Under mixed precision the sigmoid computes in float16; the losses,
        # metrics and callers want float32 probabilities.
        output = keras.layers.Activation("linear", dtype="float32", name="probability")(
            model.output)
        model = keras.Model(model.input, output, name=model.name)
    return model


def _load_encoder_weights(model, path: Path) -> None:
    """Load a backbone weights file into the encoder layers by name."""
    import numpy as np

    before = [w.copy() for w in (layer.get_weights() for layer in model.layers) for w in w]
    try:
        model.load_weights(str(path), by_name=True, skip_mismatch=True)
    except Exception as exc:
        raise ModelError(
            f"{path}: cannot load encoder weights ({type(exc).__name__}: {exc}); "
            "pass an .h5 backbone weights file from segmentation_models/classification_models"
        ) from exc
    after = [w for layer in model.layers for w in layer.get_weights()]
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    if changed == 0:
        raise ModelError(
            f"{path}: no layer of the model matched the weights file; is it for this backbone?"
        )
    logger.info("loaded encoder weights from %s (%d arrays)", path, changed)


def save_model(model, path: str | os.PathLike, *, include_optimizer: bool = True,
               attributes: dict | None = None, arrays: dict | None = None) -> Path:
    """Save a Keras model atomically as HDF5 (``.h5``).

    HDF5 rather than the ``.keras`` zip: tf-keras loads a ResNet U-Net from
    HDF5 in about 1.5 s and from ``.keras`` in about 20 s.

    Args:
        model: the Keras model.
        path: the ``.h5`` file.
        include_optimizer: also save the optimizer's state (to resume training).
        attributes: JSON-serialisable values stored in the file's root
            attributes (read back with :func:`read_model_attributes`); being
            in the same file as the weights, they can never disagree with them.
        arrays: name -> list of numpy arrays stored beside the model (read
            back with :func:`read_model_arrays`), e.g. the weight average.

    Example:
        >>> save_model(model, "run/model_last.h5", attributes={"epoch": 3})  # doctest: +SKIP
    """
    import warnings

    from skyseg.io import atomic_output

    path = Path(path)
    with atomic_output(path) as temporary, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save\\(\\)`.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="tf_keras")
        model.save(str(temporary), include_optimizer=include_optimizer, save_format="h5")
        _pause_for_tests(path, temporary)
        if attributes or arrays:
            import h5py

            # Datasets in a "skyseg" group rather than HDF5 attributes, which
            # are limited to 64 KiB (a long history would not fit).
            with h5py.File(temporary, "r+") as handle:
                group = handle.require_group(_ATTRIBUTE_GROUP)
                for key, value in (attributes or {}).items():
                    group.create_dataset(key, data=json.dumps(value))
                for name, values in (arrays or {}).items():
                    folder = handle.require_group(f"{_ARRAY_GROUP}/{name}")
                    for index, value in enumerate(values):
                        folder.create_dataset(str(index), data=value)
    return path


def _pause_for_tests(path: Path, temporary: Path) -> None:
    """The :data:`TEST_PAUSE_IN_SAVE` hook (does nothing unless that variable is set)."""
    wanted = os.environ.get(TEST_PAUSE_IN_SAVE)
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if path.name != name:
        return
    _saves_seen[name] = _saves_seen.get(name, 0) + 1
    if _saves_seen[name] == int(count or 1):
        pause_for_tests(f"{TEST_PAUSE_IN_SAVE}={wanted}: pausing in the middle of writing "
                        f"{temporary}")


def pause_for_tests(message: str) -> None:
    """A test hook's pause: log ``message``, tell the waiting test and wait to be killed.

    The test learns of the pause from one line on the file descriptor
    :data:`TEST_NOTIFY_FD` names (when set).
    """
    logger.warning("%s (test hook)", message)
    descriptor = os.environ.get(TEST_NOTIFY_FD)
    if descriptor:
        os.write(int(descriptor), (message + "\n").encode())
    import threading

    threading.Event().wait()  # until the test kills the process


def read_model_arrays(path: str | os.PathLike, name: str) -> list | None:
    """The list of arrays :func:`save_model` stored under ``name``; None when absent.

    Raises:
        ModelError: the file is missing or not HDF5.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            folder = handle.get(f"{_ARRAY_GROUP}/{name}")
            if folder is None:
                return None
            return [folder[str(index)][()] for index in range(len(folder))]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: not a readable HDF5 model file ({exc}); re-run skyseg "
                         "train") from exc


def read_model_attributes(path: str | os.PathLike) -> dict:
    """The attributes :func:`save_model` stored in an ``.h5`` file (without loading the model).

    Raises:
        ModelError: the file is missing or not HDF5.

    Example:
        >>> read_model_attributes("run/model_last.h5")["epoch"]  # doctest: +SKIP
        3
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        with h5py.File(path, "r") as handle:
            group = handle.get(_ATTRIBUTE_GROUP)
            raw = {key: group[key][()] for key in group} if group is not None else {}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: not a readable HDF5 model file ({exc}); re-run skyseg "
                         "train") from exc
    values = {}
    for key, value in raw.items():
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: stored {key!r} is not valid JSON ({exc}); re-run "
                             "skyseg train") from exc
    return values


def _custom_objects() -> dict:
    """Loss and metric objects a compiled training model refers to."""
    try:
        from skyseg.image import metrics
    except ImportError:
        return {}
    from skyseg.training import recipe
    getter = getattr(metrics, "custom_objects", None)
    return {**(getter() if callable(getter) else {}), **recipe.custom_objects()}


def load_model(path: str | os.PathLike, *, compile: bool = False):
    """Load a Keras model file (``.h5``, or ``.keras`` which loads much slower).

    Raises:
        ModelError: missing, not a model, or damaged.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model file not found; pass a run folder or a .h5 model file")
    keras = import_keras()
    try:
        return keras.models.load_model(
            str(path), compile=compile, custom_objects=_custom_objects() if compile else None
        )
    except Exception as exc:
        raise ModelError(
            f"{path}: not a readable Keras model ({type(exc).__name__}: {first_line(exc)}); "
            "re-run skyseg train or pass another model"
        ) from exc


@dataclass
class LoadedModel:
    """A model ready for prediction, with the preprocessing it was trained with.

    Attributes:
        model: the Keras model.
        preprocessing: what to apply to images before the model.
        config: the training configuration (empty for a bare model file).
        path: the model file.
    """

    model: object
    preprocessing: Preprocessing
    config: dict = field(default_factory=dict)
    path: Path | None = None


@dataclass
class ModelEnsemble:
    """Several models whose sky probabilities are averaged: an ensemble of runs.

    Runs trained with different seeds disagree most where one of them is
    wrong (a white ceiling, an overcast sky), so their mean probability is
    steadier than any one of them. Each member predicts with its own
    preprocessing and scale; all must be of one mode (HDR or LDR).

    Attributes:
        members: two or more :class:`LoadedModel`.

    Example:
        >>> ensemble = ModelEnsemble([load_run("runs/a"), load_run("runs/b")])  # doctest: +SKIP
        >>> ensemble.preprocessing.mode  # doctest: +SKIP
        'hdr'
    """

    members: list[LoadedModel]

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ConfigError(f"an ensemble needs at least two models, got {len(self.members)}")
        first = self.members[0]
        for member in self.members[1:]:
            if member.preprocessing.mode != first.preprocessing.mode:
                raise ModelError(
                    f"{member.path}: this {member.preprocessing.mode.upper()} model cannot join "
                    f"the {first.preprocessing.mode.upper()} model {first.path} in an ensemble; "
                    "average runs of one kind (all HDR or all LDR)"
                )

    @property
    def preprocessing(self) -> Preprocessing:
        """The first member's preprocessing (the mode is the same for all)."""
        return self.members[0].preprocessing

    @property
    def path(self) -> Path | None:
        """The first member's model file."""
        return self.members[0].path


def load_run(path: str | os.PathLike, *, preprocessing: Preprocessing | None = None,
             which: str = "best") -> LoadedModel:
    """Load a model for prediction from a run folder or a model file.

    Args:
        path: a run folder of ``skyseg train`` or a ``.h5``/``.keras`` file.
            A model file uses the ``preprocessing.json`` beside it.
        preprocessing: overrides the saved preprocessing (needed for a bare
            model file with no ``preprocessing.json``).
        which: ``"best"`` (default) or ``"last"`` checkpoint of a run folder.

    Raises:
        ModelError: nothing loadable at ``path``.
        ConfigError: preprocessing missing or invalid.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(
            f"{path}: no such run folder or model file; pass the --out of skyseg train"
        )
    if path.is_dir():
        candidates = [MODEL_BEST, MODEL_LAST] if which == "best" else [MODEL_LAST, MODEL_BEST]
        model_path = next((path / n for n in candidates if (path / n).is_file()), None)
        if model_path is None:
            raise ModelError(
                f"{path}: run folder has no {MODEL_BEST} or {MODEL_LAST}; did training finish "
                "an epoch? (skyseg train --resume continues it)"
            )
        folder = path
    else:
        model_path, folder = path, path.parent
    config = read_run_config(folder, error=ModelError)
    if preprocessing is None:
        prep_path = folder / PREPROCESSING_FILE
        if not prep_path.is_file():
            raise ConfigError(
                f"{model_path}: no {PREPROCESSING_FILE} beside the model, so the preprocessing "
                "it was trained with is unknown; pass --mode hdr|ldr (or a Preprocessing)"
            )
        preprocessing = Preprocessing.load(prep_path)
    model = load_model(model_path)
    return LoadedModel(model=model, preprocessing=preprocessing, config=config, path=model_path)

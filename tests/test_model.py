"""The model factory, HDF5 saving with stored attributes, and loading a run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skyseg.backend import import_keras
from skyseg.errors import ConfigError, ModelError
from skyseg.image.preprocess import Preprocessing
from skyseg.training.model import (
    build_model,
    check_model_choice,
    load_model,
    load_run,
    read_model_attributes,
    save_model,
)


def tiny_model(compiled: bool = True):
    """A two-layer network, enough for saving and loading (no segmentation_models)."""
    from skyseg.image import metrics
    keras = import_keras()
    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(hidden)
    model = keras.Model(inputs, outputs)
    if compiled:
        model.compile(keras.optimizers.Adam(1e-3), loss=metrics.bce_jaccard_loss,
                      metrics=metrics.make_metrics())
    return model


# --------------------------------------------------------------------------- names


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet35'; did you mean "
                                          r"[a-z0-9, ]*resnet34.*\? Choose one of: resnet18"):
        build_model("unet", "resnet35")


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="unknown architecture 'deeplab'"):
        check_model_choice("deeplab", "resnet34")


def test_pspnet_needs_a_multiple_of_48():
    with pytest.raises(ConfigError, match="PSPNet needs a fixed input size that is a multiple "
                                          "of 48"):
        build_model("pspnet", "resnet18", input_shape=(64, 64, 3))


def test_missing_local_encoder_weights():
    with pytest.raises(ModelError, match="nowhere.h5: encoder weights file not found"):
        build_model("unet", "resnet18", encoder_weights="/nowhere.h5")


def test_imagenet_weights_that_cannot_be_downloaded(monkeypatch):
    from skyseg.backend import import_segmentation_models

    sm = import_segmentation_models()

    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no route to host")

    monkeypatch.setattr(sm._KERAS_UTILS, "get_file", offline)
    with pytest.raises(ModelError, match="could not get ImageNet weights for resnet18 .*pass "
                                         "--encoder-weights /path/to/resnet18_imagenet"):
        build_model("unet", "resnet18", encoder_weights="imagenet")


# --------------------------------------------------------------------------- networks


@pytest.mark.slow
@pytest.mark.parametrize(("architecture", "size"), [("unet", 32), ("fpn", 32),
                                                    ("linknet", 32), ("pspnet", 48)])
def test_architectures_give_one_probability_channel(architecture, size):
    shape = (size, size, 3) if architecture == "pspnet" else (None, None, 3)
    model = build_model(architecture, "resnet18", input_shape=shape)
    out = model.predict_on_batch(np.random.default_rng(0).random((1, size, size, 3)))
    assert out.shape == (1, size, size, 1)
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.slow
def test_mixed_precision_keeps_float32_probabilities():
    keras = import_keras()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("unet", "resnet18")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.layers[1].compute_dtype == "float16"
    assert model.output.dtype == "float32"


# --------------------------------------------------------------------------- files


def test_save_and_load_keep_weights_optimizer_and_attributes(tmp_path):
    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    y = (x[..., :1] > 0.5).astype(np.uint8)
    model.train_on_batch(x, y)
    state = {"epoch": 3, "history": [{"epoch": 1, "loss": float("nan")}] * 400}
    path = save_model(model, tmp_path / "model_last.h5", attributes={"state": state})
    assert not list(tmp_path.glob("*.tmp*"))
    attributes = read_model_attributes(path)
    assert attributes["state"]["epoch"] == 3 and len(attributes["state"]["history"]) == 400
    loaded = load_model(path, compile=True)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(loaded.optimizer.iterations.numpy()) == 1
    # Same optimizer state: one more identical step gives identical results.
    np.testing.assert_array_equal(model.train_on_batch(x, y), loaded.train_on_batch(x, y))


def test_read_attributes_of_a_non_model_file(tmp_path):
    path = tmp_path / "model_last.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(ModelError, match="model_last.h5: not a readable HDF5 model file"):
        read_model_attributes(path)


def test_load_run_reads_model_preprocessing_and_config(tmp_path):
    model = tiny_model()
    save_model(model, tmp_path / "model_best.h5", include_optimizer=False)
    save_model(model, tmp_path / "model_last.h5")
    Preprocessing(mode="hdr", clip_max=1e4).save(tmp_path / "preprocessing.json")
    (tmp_path / "config.json").write_text(json.dumps({"backbone": "tiny", "patch_size": 32}))
    loaded = load_run(tmp_path)
    assert loaded.path == tmp_path / "model_best.h5"
    assert loaded.preprocessing == Preprocessing(mode="hdr", clip_max=1e4)
    assert loaded.config["patch_size"] == 32
    assert load_run(tmp_path, which="last").path == tmp_path / "model_last.h5"


def test_load_run_without_preprocessing(tmp_path):
    save_model(tiny_model(compiled=False), tmp_path / "model_best.h5", include_optimizer=False)
    with pytest.raises(ConfigError, match="no preprocessing.json beside the model"):
        load_run(tmp_path)


def test_load_run_of_an_empty_folder(tmp_path):
    with pytest.raises(ModelError, match="run folder has no model_best.h5 or model_last.h5"):
        load_run(tmp_path)


def test_mixed_precision_optimizer_state_survives_save_and_load(tmp_path):
    keras = import_keras()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model()
        x = np.random.default_rng(1).random((2, 8, 8, 3)).astype(np.float32)
        y = (x[..., :1] > 0.5).astype(np.uint8)
        model.train_on_batch(x, y)
        loaded = load_model(save_model(model, tmp_path / "model_last.h5"), compile=True)
        assert type(loaded.optimizer).__name__.startswith("LossScaleOptimizer")
        np.testing.assert_array_equal(model.train_on_batch(x, y), loaded.train_on_batch(x, y))
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize(("error", "expected"), [
    (OSError("unable to open file\n(truncated header)"), "unable to open file"),
    (ValueError("  padded  "), "padded"),
    (KeyError(), "KeyError"),
    (RuntimeError("x" * 300), "x" * 200),
])
def test_first_line_of_an_error_message(error, expected):
    from skyseg.errors import first_line

    assert first_line(error) == expected

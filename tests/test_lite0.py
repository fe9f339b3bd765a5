"""The EfficientNet-Lite0 U-Net (skyseg.training.lite0) and its shipped ImageNet encoder weights."""

from __future__ import annotations

import numpy as np
import pytest

from skyseg.backend import import_keras
from skyseg.errors import ConfigError, ModelError
from skyseg.training import lite0
from skyseg.training.model import BACKBONES, build_model, load_model


def test_shipped_weights_fill_every_encoder_layer_and_nothing_else():
    arrays = lite0.load_encoder_arrays(lite0.IMAGENET_WEIGHTS)
    model = build_model("unet", "efficientnetlite0", encoder_weights="imagenet")
    encoder = [layer for layer in model.layers
               if layer.name.startswith(lite0.ENCODER_PREFIX) and layer.weights]
    loaded = {f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}": w.numpy()
              for layer in encoder for w in layer.weights}
    assert set(loaded) == set(arrays)
    # A convolution and its batch norm are 1 + 4 arrays: the stem, block 0
    # (depthwise, project), 15 blocks (expand, depthwise, project), the head.
    assert len(arrays) == 5 + 2 * 5 + 15 * 3 * 5 + 5 == 245
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value.astype(np.float32))
    # The stem sees 3 colours and makes 32 channels; the head makes 1280.
    assert arrays["lite0_stem_conv/kernel"].shape == (3, 3, 3, 32)
    assert arrays["lite0_head_conv/kernel"].shape == (1, 1, 320, 1280)
    # The decoder is not in the file: random, and trained by skyseg.
    assert not any(key.startswith("decoder") for key in arrays)


def test_lite0_unet_maps_any_multiple_of_32_to_a_probability_of_the_same_size(tmp_path):
    model = build_model("unet", "efficientnetlite0")
    x = np.random.default_rng(0).normal(size=(2, 64, 96, 3)).astype(np.float32)
    y = model(x, training=False).numpy()
    assert y.shape == (2, 64, 96, 1)
    assert 0.0 <= y.min() and y.max() <= 1.0
    # Plain Keras layers: the saved file loads without custom objects, same outputs.
    path = tmp_path / "lite0.h5"
    model.save(str(path), save_format="h5")
    np.testing.assert_allclose(load_model(path)(x, training=False).numpy(), y, atol=1e-6)


def test_lite0_is_a_unet_only_and_its_weights_must_fit(tmp_path):
    assert "efficientnetlite0" in BACKBONES
    with pytest.raises(ConfigError, match="U-Net only"):
        build_model("fpn", "efficientnetlite0")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{"lite0_stem_conv/kernel": np.zeros((3, 3, 3, 16), np.float16)})
    with pytest.raises(ModelError, match="lite0_stem_conv/kernel of shape"):
        lite0.build_lite0_unet(import_keras(), encoder_weights=wrong)
    with pytest.raises(ModelError, match="not found"):
        lite0.load_encoder_arrays(tmp_path / "missing.npz")

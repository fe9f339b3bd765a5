"""Make ``predict_reference.npz``: probabilities of the predict path before refinement existed.

Run once at commit 6afff2a (before ``--refine``), from the repository root::

    PYTHONPATH=$PWD python tests/data/make_predict_reference.py

``tests/test_predict.py`` checks that ``--refine none`` still gives these
arrays bit for bit. The tiny network and the images are rebuilt from seeds
there; the arrays stored are the images and the probabilities.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import skyseg  # noqa: E402,F401  (Keras 2 environment before TensorFlow)

#: (name, mode, scale, height, width, tta): shrunk panoramas and photos, HDR and LDR.
CASES = (
    ("ldr_half_pano", "ldr", 0.5, 48, 96, False),
    ("ldr_half_photo", "ldr", 0.5, 37, 51, False),
    ("hdr_full_tta", "hdr", 1.0, 40, 60, True),
    ("hdr_quarter_pano", "hdr", 0.25, 64, 128, False),
)


def tiny_network():
    """Two 3x3 convolutions with seeded weights (relu, then sigmoid)."""
    from skyseg.backend import import_keras

    keras = import_keras()
    inputs = keras.Input((None, None, 3))
    first = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    second = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")
    outputs = second(first(inputs))
    weights = np.random.default_rng(11)
    first.set_weights([weights.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32),
                       weights.normal(0, 0.1, 4).astype(np.float32)])
    second.set_weights([weights.normal(0, 0.5, (3, 3, 4, 1)).astype(np.float32),
                        np.array([0.05], np.float32)])
    return keras.Model(inputs, outputs)


def case_image(mode: str, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if mode == "ldr":
        return rng.integers(0, 256, (height, width, 3)).astype(np.float32)
    return np.exp(rng.normal(0, 2, (height, width, 3))).astype(np.float32)


def main() -> int:
    from skyseg.image.preprocess import Preprocessing
    from skyseg.predict.image import predict_image
    from skyseg.training.model import LoadedModel

    network = tiny_network()
    arrays = {}
    for seed, (name, mode, scale, height, width, tta) in enumerate(CASES):
        image = case_image(mode, height, width, seed)
        loaded = LoadedModel(model=network, preprocessing=Preprocessing(mode=mode, scale=scale))
        arrays[f"{name}_image"] = image
        arrays[f"{name}_probability"] = predict_image(
            loaded, image, is_hdr=mode == "hdr", tile_size=32, overlap=8, tta=tta)
    np.savez_compressed(HERE / "predict_reference.npz", **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())

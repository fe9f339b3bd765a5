"""skyseg: sky segmentation for photographs and 8K HDR panoramas.

Stage functions are imported on first use, so ``import skyseg`` stays fast
and TensorFlow loads only in the stages that need it (train, predict,
evaluate, dataset patch extraction).

Example:
    >>> import skyseg
    >>> image = skyseg.read_image("pano.exr")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
import os

# segmentation_models 1.0.1 needs Keras 2 (tf-keras); both must be chosen
# before TensorFlow is imported anywhere in the process.
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skyseg.errors import (  # noqa: E402
    AnnotationError,
    ConfigError,
    DatasetError,
    ImageReadError,
    ImageWriteError,
    ModelError,
    SkysegError,
)

__version__ = "0.1.0"

logging.getLogger("skyseg").addHandler(logging.NullHandler())

#: Public name -> module that defines it (imported on first access).
_LAZY = {
    "ImageInfo": "skyseg.io",
    "read_image": "skyseg.io",
    "read_image_info": "skyseg.io",
    "find_images": "skyseg.io",
    "write_png": "skyseg.io",
    "write_jpeg": "skyseg.io",
    "write_tiff": "skyseg.io",
    "write_exr": "skyseg.io",
    "Preprocessing": "skyseg.preprocess",
    "log_transform": "skyseg.preprocess",
    "inverse_log_transform": "skyseg.preprocess",
    "sanitize_radiance": "skyseg.preprocess",
    "clip_radiance": "skyseg.preprocess",
    "tonemap": "skyseg.preprocess",
    "CocoLabels": "skyseg.annotations",
    "load_coco": "skyseg.annotations",
    "original_name": "skyseg.annotations",
    "match_images": "skyseg.annotations",
    "mask_to_task": "skyseg.labelstudio",
    "task_to_mask": "skyseg.labelstudio",
    "export_masks": "skyseg.masks",
    "make_demo_data": "skyseg.demo",
    "build_dataset": "skyseg.dataset",
    "train_model": "skyseg.train",
    "build_model": "skyseg.model",
    "load_run": "skyseg.model",
    "default_model": "skyseg.model",
    "run_images": "skyseg.train",
    "ModelEnsemble": "skyseg.model",
    "PatchSequence": "skyseg.generators",
    "PatchBatches": "skyseg.generators",
    "Augmentation": "skyseg.augmentation",
    "predict_tiled": "skyseg.tiling",
    "predict_image": "skyseg.predict",
    "predict_files": "skyseg.predict",
    "guided_upsample": "skyseg.refine",
    "evaluate_model": "skyseg.evaluate",
    "segmentation_scores": "skyseg.evaluate",
}

__all__ = [
    "__version__",
    "SkysegError",
    "ImageReadError",
    "ImageWriteError",
    "AnnotationError",
    "DatasetError",
    "ModelError",
    "ConfigError",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'skyseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

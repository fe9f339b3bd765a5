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
    "Preprocessing": "skyseg.image.preprocess",
    "log_transform": "skyseg.image.preprocess",
    "inverse_log_transform": "skyseg.image.preprocess",
    "sanitize_radiance": "skyseg.image.preprocess",
    "clip_radiance": "skyseg.image.preprocess",
    "tonemap": "skyseg.image.preprocess",
    "CocoLabels": "skyseg.labels.annotations",
    "load_coco": "skyseg.labels.annotations",
    "original_name": "skyseg.labels.annotations",
    "match_images": "skyseg.labels.annotations",
    "mask_to_task": "skyseg.labels.labelstudio",
    "task_to_mask": "skyseg.labels.labelstudio",
    "export_masks": "skyseg.labels.masks",
    "make_demo_data": "skyseg.demo.synthetic",
    "build_dataset": "skyseg.data.dataset",
    "train_model": "skyseg.training.train",
    "build_model": "skyseg.training.model",
    "load_run": "skyseg.training.model",
    "default_model": "skyseg.io.run_folder",
    "run_images": "skyseg.training.train",
    "ModelEnsemble": "skyseg.training.model",
    "PatchSequence": "skyseg.data.generators",
    "PatchBatches": "skyseg.data.generators",
    "Augmentation": "skyseg.data.augmentation",
    "predict_tiled": "skyseg.predict.tiling",
    "predict_image": "skyseg.predict.image",
    "predict_files": "skyseg.predict.files",
    "guided_upsample": "skyseg.predict.refine",
    "evaluate_model": "skyseg.evaluation.evaluate",
    # One options object per stage: the same defaults as the command line and the YAML file.
    "DemoOptions": "skyseg.demo.synthetic",
    "PreviewsOptions": "skyseg.labels.previews",
    "MasksOptions": "skyseg.labels.masks",
    "CategoryOptions": "skyseg.labels.annotations",
    "DatasetOptions": "skyseg.data.dataset",
    "TrainOptions": "skyseg.training.options",
    "PredictOptions": "skyseg.predict.options",
    "EvaluateOptions": "skyseg.evaluation.evaluate",
    "segmentation_scores": "skyseg.evaluation.evaluate",
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

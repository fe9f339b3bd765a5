"""TensorFlow, imported once, late, and quietly.

Every stage that needs TensorFlow gets it from :func:`import_tensorflow`, so
the environment variables segmentation_models needs are set first and the
start-up chatter of TensorFlow's C++ core ("Could not find cuda drivers",
"failed call to cuInit" on machines without a GPU) stays out of the
terminal. What it printed is kept at debug level (``skyseg -v``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os

from skyseg.errors import ModelError

__all__ = ["import_tensorflow", "import_keras", "import_segmentation_models"]

logger = logging.getLogger("skyseg")

_STARTED = False


def import_tensorflow():
    """The ``tensorflow`` module, imported (and its devices listed) on first call."""
    global _STARTED
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _STARTED:
        import tensorflow as tf

        return tf
    from skyseg.io.native import capture_native_output

    with capture_native_output() as captured:
        import tensorflow as tf

        devices = tf.config.list_physical_devices()
    _STARTED = True
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    text = captured[0].strip() if captured else ""
    if text:
        logger.debug("TensorFlow start-up messages:\n%s", text)
    logger.debug("TensorFlow %s devices: %s", tf.__version__,
                 ", ".join(d.name for d in devices) or "none")
    return tf


def import_keras():
    """The Keras 2 API (tf-keras), importing TensorFlow on first call.

    Raises:
        ModelError: TensorFlow was imported before skyseg without
            ``TF_USE_LEGACY_KERAS=1``, so ``tf.keras`` is Keras 3, which
            segmentation_models cannot use.
    """
    from skyseg.backend import import_tensorflow

    tf = import_tensorflow()
    keras = tf.keras
    version = getattr(keras, "__version__", "2")
    if not str(version).startswith("2"):
        raise ModelError(
            f"tf.keras is Keras {version}; segmentation_models needs Keras 2 (tf-keras). "
            "Set TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (import skyseg first)"
        )
    return keras


def import_segmentation_models():
    """``segmentation_models``, imported quietly (it prints on import)."""
    import_keras()
    with contextlib.redirect_stdout(io.StringIO()):
        import segmentation_models as sm
    return sm

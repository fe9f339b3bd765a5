"""TensorFlow, imported once, late, and quietly.

Every stage that needs TensorFlow gets it from :func:`import_tensorflow`, so
the environment variables segmentation_models needs are set first and the
start-up chatter of TensorFlow's C++ core ("Could not find cuda drivers",
"failed call to cuInit" on machines without a GPU) stays out of the
terminal. What it printed is kept at debug level (``skyseg -v``).
"""

from __future__ import annotations

import logging
import os

__all__ = ["import_tensorflow"]

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

"""A run folder's files: where a trained model, its settings and its history live.

A run folder (``skyseg train --out RUN``) holds ``model_best.h5``, ``model_last.h5``,
``config.json`` (the run's settings), ``preprocessing.json`` (what predict must apply),
``history.csv`` (one row per epoch) and pictures. ``"default"`` names the model shipped
with skyseg. Nothing here needs TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from skyseg.errors import ConfigError, ModelError
from skyseg.resources import RESOURCES

__all__ = ["DEFAULT_MODEL_DIR", "DEFAULT_MODEL_NAME", "MODEL_BEST", "MODEL_LAST",
           "PREPROCESSING_FILE", "CONFIG_FILE", "HISTORY_FILE", "CURVES_FILE", "SAMPLES_FILE",
           "HISTORY_COLUMNS", "default_model", "resolve_model_path", "is_model_path",
           "read_run_config", "write_history", "read_history"]

DEFAULT_MODEL_DIR = RESOURCES / "models" / "default"
#: What ``--model`` / ``--init`` may say to mean :data:`DEFAULT_MODEL_DIR`.
DEFAULT_MODEL_NAME = "default"
MODEL_BEST = "model_best.h5"
MODEL_LAST = "model_last.h5"
PREPROCESSING_FILE = "preprocessing.json"
CONFIG_FILE = "config.json"


def default_model() -> Path:
    """The run folder of the model shipped with skyseg.

    Raises:
        ModelError: the shipped model is missing (a broken install).

    Example:
        >>> default_model().name
        'default'
    """
    if not (DEFAULT_MODEL_DIR / MODEL_BEST).is_file():
        raise ModelError(f"{DEFAULT_MODEL_DIR}: the shipped sky model is missing; reinstall "
                         "skyseg, or pass --model RUN (a run folder of skyseg train)")
    return DEFAULT_MODEL_DIR


def resolve_model_path(model) -> Path:
    """``"default"`` or None -> :func:`default_model`; anything else as a path."""
    if model is None or str(model) == DEFAULT_MODEL_NAME and not Path(str(model)).exists():
        return default_model()
    return Path(model)


def is_model_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a model rather than images: a ``.h5``/``.keras`` file, or a
    folder holding ``model_best.h5``, ``model_last.h5`` or ``config.json``."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in (".h5", ".keras")
    return path.is_dir() and any((path / name).is_file()
                                 for name in (MODEL_BEST, MODEL_LAST, CONFIG_FILE))


def read_run_config(folder: str | os.PathLike, *, what: str = "",
                    error: type[Exception] = ConfigError) -> dict:
    """A run folder's ``config.json`` as a dict ({} when the folder has none).

    Args:
        folder: the run folder.
        what: put before the message (e.g. ``"--init RUN: "``).
        error: the error class raised for a file that is not JSON.

    Raises:
        ``error``: the file is not valid JSON (the message names it).
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what}{path}: not valid JSON ({exc})") from exc
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
SAMPLES_FILE = "samples.png"
HISTORY_COLUMNS = ("epoch", "loss", "iou", "dice", "val_loss", "val_iou", "val_dice", "lr",
                   "seconds")


def write_history(path: Path, history: list[dict]) -> None:
    """Write the history rows as CSV (atomically), columns :data:`HISTORY_COLUMNS`."""
    from skyseg.io import write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: _format_value(row.get(key)) for key in HISTORY_COLUMNS})
    write_text(path, buffer.getvalue())


def read_history(path: str | os.PathLike) -> list[dict]:
    """Read a ``history.csv`` back: a list of dicts with int epoch and float values."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: int(value) if key == "epoch" else float(value) for key, value in row.items()}
            for row in rows]


def _format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)

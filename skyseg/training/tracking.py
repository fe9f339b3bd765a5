"""Experiment tracking on MLflow: one MLflow run per training run.

``skyseg train --mlflow [URI]`` records a training run in MLflow, beside its
run folder: the configuration as parameters (nested keys joined with dots),
each epoch's ``loss``, ``iou``, ``dice``, ``val_loss``, ``val_iou``,
``val_dice``, ``lr`` and ``seconds`` as metrics with step = epoch, the tags
``skyseg.dataset``, ``skyseg.version`` and ``skyseg.run_dir``, and as
artifacts ``config.json``, ``history.csv``, ``curves.png`` and
``samples.png`` (after every epoch) and ``model_best.h5`` with
``preprocessing.json`` (at the end). ``skyseg evaluate --mlflow`` adds its
summary to the same MLflow run.

The MLflow run's id is kept in ``RUN/mlflow.json``. Epochs are logged after
``model_last.h5`` (the commit point of an epoch) is written, and every call
logs all rows of ``history.csv`` MLflow has not seen yet, so a run killed at
any moment and continued with ``--resume`` has every epoch once in the same
MLflow run. The parameters are logged once; those a resume may change
(``epochs``, ``workers``, ...) keep their first value in MLflow and the
current one in ``config.json``.

Where: the URI given to ``--mlflow``, else ``MLFLOW_TRACKING_URI``, else
``file:./mlruns`` (a folder store, made absolute so that a resume or an
evaluation from another folder finds it). The file store needs no server and
works with ``mlflow-skinny``; MLflow 3 refuses it unless
``MLFLOW_ALLOW_FILE_STORE`` is set, which this module sets for file URIs.

mlflow is an optional dependency (``pip install 'skyseg[mlflow]'``), imported
only here and only when tracking is asked for.

Example:
    >>> tracker = MlflowTracker("runs/r18", experiment="skies")  # doctest: +SKIP
    >>> train("DATA", "runs/r18", callbacks=[tracker.callback()])  # doctest: +SKIP
    >>> tracker.finish()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from skyseg.errors import ConfigError, first_line

__all__ = ["MlflowTracker", "import_mlflow", "resolve_tracking_uri", "flatten_params",
           "read_tracking_record", "find_training_run", "log_evaluation", "TRACKING_FILE",
           "DEFAULT_TRACKING_URI", "DEFAULT_EXPERIMENT"]

logger = logging.getLogger("skyseg")

#: In the run folder: tracking URI, experiment and run id of the MLflow run.
TRACKING_FILE = "mlflow.json"
DEFAULT_TRACKING_URI = "file:./mlruns"
DEFAULT_EXPERIMENT = "skyseg"
INSTALL_HINT = "pip install 'skyseg[mlflow]'"
#: MLflow 2.x up to 2.?: 500 characters; newer: 6000. Used when MLflow does not say.
_FALLBACK_PARAM_LENGTH = 500
#: MLflow's limits of one log_batch call.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000


def import_mlflow():
    """The ``mlflow`` module.

    Raises:
        ConfigError: mlflow is not installed (the message says how to install it).
    """
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError(f"--mlflow: the mlflow package is not installed ({exc}); "
                          f"{INSTALL_HINT} (or pip install mlflow-skinny), or leave out "
                          "--mlflow") from exc
    return mlflow


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``MLFLOW_TRACKING_URI``, else ``file:./mlruns``.

    A folder store (``file:`` URI or a plain path) is made absolute.

    Example:
        >>> resolve_tracking_uri("http://mlflow.example:5000")
        'http://mlflow.example:5000'
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    folder = _file_store_folder(uri)
    return folder.resolve().as_uri() if folder is not None else uri


def _file_store_folder(uri: str) -> Path | None:
    """The folder of a file-store URI (``file:./x``, ``file:///x``, ``./x``); None otherwise."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        # file:./mlruns has no netloc and a relative path; file:///abs an absolute one.
        return Path((parsed.netloc or "") + parsed.path)
    if parsed.scheme == "":
        return Path(uri)
    return None


def _allow_file_store(uri: str) -> None:
    # MLflow 3 refuses its folder store unless told; mlflow-skinny has no other
    # store without a server (sqlite needs SQLAlchemy), so skyseg opts in.
    if _file_store_folder(uri) is not None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _param_length_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return _FALLBACK_PARAM_LENGTH
    return int(MAX_PARAM_VAL_LENGTH)


def flatten_params(config: dict, *, limit: int = _FALLBACK_PARAM_LENGTH,
                   prefix: str = "") -> dict[str, str]:
    """A configuration as flat MLflow parameters: nested keys joined with dots, values as text.

    Lists are written as JSON; values longer than ``limit`` characters are cut
    and end with ``...``.

    Example:
        >>> flatten_params({"backbone": "resnet18", "preprocessing": {"mode": "hdr"},
        ...                 "ema": None, "sizes": [1, 2]})
        {'backbone': 'resnet18', 'preprocessing.mode': 'hdr', 'ema': 'None', 'sizes': '[1, 2]'}
    """
    params: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            params.update(flatten_params(value, limit=limit, prefix=f"{name}."))
            continue
        text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
        params[name] = text if len(text) <= limit else text[:limit - 3] + "..."
    return params


def read_tracking_record(run_dir: str | os.PathLike) -> dict | None:
    """The ``mlflow.json`` of a run folder (``tracking_uri``, ``experiment_id``, ``run_id``).

    Returns None when the folder has none.

    Raises:
        ConfigError: the file is damaged.
    """
    path = Path(run_dir) / TRACKING_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc}); delete it to start a new MLflow "
                          "run") from exc
    if not isinstance(record, dict) or not record.get("run_id") or not record.get(
            "tracking_uri"):
        raise ConfigError(f"{path}: holds no MLflow run id and tracking URI; delete it to start "
                          "a new MLflow run")
    return record


class MlflowTracker:
    """Records one training run (its run folder) in one MLflow run.

    Stateful: :meth:`start` opens (or, on a resumed run, reopens) the MLflow
    run, :meth:`log_epochs` logs the finished epochs it has not logged yet,
    :meth:`finish` logs the final artifacts and closes the run.
    :meth:`callback` gives a Keras callback that calls the first two; it must
    come after skyseg's own (``train(callbacks=[...])`` puts it there), so
    that the epoch's files are written when it runs.

    Args:
        run_dir: the training run folder (``--out``).
        tracking_uri: where to log (see :func:`resolve_tracking_uri`); on a
            resumed run the one in ``mlflow.json`` is used.
        experiment: MLflow experiment name (created if needed); None:
            ``MLFLOW_EXPERIMENT_NAME`` or ``"skyseg"``.
        resume: continue the MLflow run of ``mlflow.json`` when there is one.

    Raises:
        ConfigError: mlflow is not installed.
    """

    def __init__(self, run_dir: str | os.PathLike, *, tracking_uri: str | None = None,
                 experiment: str | None = None, resume: bool = False):
        import_mlflow()  # fail before training, not after the first epoch
        self.run_dir = Path(run_dir)
        self.given_uri = tracking_uri
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment = (experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
                           or DEFAULT_EXPERIMENT)
        self.resume = resume
        self.run_id: str | None = None
        self.client = None
        self.logged_epoch = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Open the MLflow run (a new one, or the run folder's on resume); its id.

        Writes ``mlflow.json`` and logs the parameters (only the new ones on a
        resumed run), the tags and ``config.json``.
        """
        if self.run_id is not None:
            return self.run_id
        from skyseg.io.run_folder import CONFIG_FILE

        record = read_tracking_record(self.run_dir) if self.resume else None
        if record is not None:
            if self.given_uri and resolve_tracking_uri(self.given_uri) != record["tracking_uri"]:
                logger.warning("--mlflow %s: this run is tracked in %s (%s); going on there",
                               self.given_uri, record["tracking_uri"], TRACKING_FILE)
            self.tracking_uri = record["tracking_uri"]
        self.client = self._client(self.tracking_uri)
        config = _read_json(self.run_dir / CONFIG_FILE)
        run = self._reopen(record) if record is not None else None
        if run is None:
            run = self._create(config)
        self.run_id = run.info.run_id
        from skyseg.io import write_text

        write_text(self.run_dir / TRACKING_FILE, json.dumps({
            "tracking_uri": self.tracking_uri, "experiment_id": run.info.experiment_id,
            "experiment": self.experiment, "run_id": self.run_id}, indent=2) + "\n")
        self._log_params(run, config)
        self._log_artifacts([CONFIG_FILE])
        self.logged_epoch = self._last_logged_epoch()
        logger.info("MLflow: run %s in %s (experiment %s)", self.run_id, self.tracking_uri,
                    self.experiment)
        return self.run_id

    def log_epochs(self) -> int:
        """Log the rows of ``history.csv`` not logged yet, and the epoch's artifacts.

        A failure of the tracking server is logged as a warning (the rows are
        logged on the next call): tracking never stops a training run.

        Returns:
            the last epoch logged.
        """
        from skyseg.io.run_folder import CURVES_FILE, HISTORY_FILE, SAMPLES_FILE, read_history

        if self.run_id is None:
            self.start()
        path = self.run_dir / HISTORY_FILE
        if not path.is_file():
            return self.logged_epoch
        rows = [row for row in read_history(path) if row["epoch"] > self.logged_epoch]
        if not rows:
            return self.logged_epoch
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, int(row["epoch"]))
                   for row in rows for key, value in row.items()
                   if key != "epoch" and math.isfinite(value)]
        try:
            for first in range(0, len(metrics), _METRICS_PER_BATCH):
                self.client.log_batch(self.run_id,
                                      metrics=metrics[first:first + _METRICS_PER_BATCH])
            self._log_artifacts([HISTORY_FILE, CURVES_FILE, SAMPLES_FILE])
        except Exception as exc:  # noqa: BLE001 -- a tracking hiccup must not end training
            logger.warning("MLflow: could not log epoch %d (%s); it is logged with the next "
                           "epoch or at the end", rows[-1]["epoch"], first_line(exc))
            return self.logged_epoch
        self.logged_epoch = rows[-1]["epoch"]
        return self.logged_epoch

    def finish(self, status: str = "FINISHED") -> None:
        """Log what is left (epochs, the best model, ``preprocessing.json``) and close the run.

        Args:
            status: the MLflow run status: ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``.
                Only ``"FINISHED"`` logs the best model.
        """
        from skyseg.io.run_folder import MODEL_BEST, PREPROCESSING_FILE

        if self.run_id is None:
            if status != "FINISHED" or not (self.run_dir / "config.json").is_file():
                return  # nothing was trained: no MLflow run to open or close
            self.start()
        if status == "FINISHED":
            self.log_epochs()
            self._log_artifacts([MODEL_BEST, PREPROCESSING_FILE])
        self.client.set_terminated(self.run_id, status=status)
        logger.info("MLflow: run %s %s", self.run_id, status.lower())

    def callback(self):
        """A Keras callback: :meth:`start` when training begins, :meth:`log_epochs` per epoch."""
        from skyseg.backend import import_keras

        keras = import_keras()
        tracker = self

        class MlflowCallback(keras.callbacks.Callback):
            """Logs each finished epoch of a skyseg run folder to MLflow."""

            def on_train_begin(self, logs=None):
                tracker.start()

            def on_epoch_end(self, epoch, logs=None):
                tracker.log_epochs()

        return MlflowCallback()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _client(uri: str):
        import_mlflow()
        _allow_file_store(uri)
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=uri)

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment)

    def _create(self, config: dict):
        tags = {
            "skyseg.dataset": str(config.get("data", "")),
            "skyseg.version": str(config.get("skyseg_version", "")),
            "skyseg.run_dir": str(self.run_dir.resolve()),
        }
        return self.client.create_run(self._experiment_id(), tags=tags,
                                      run_name=self.run_dir.resolve().name)

    def _reopen(self, record: dict):
        """The MLflow run of ``mlflow.json``, running again; None when it is gone."""
        try:
            run = self.client.get_run(record["run_id"])
        except Exception as exc:  # noqa: BLE001 -- MlflowException, or the store is gone
            logger.warning("MLflow: run %s of %s not found in %s (%s); starting a new MLflow "
                           "run with the whole history", record["run_id"], TRACKING_FILE,
                           self.tracking_uri, first_line(exc))
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        self.experiment = record.get("experiment") or self.experiment
        return run

    def _log_params(self, run, config: dict) -> None:
        from mlflow.entities import Param

        params = flatten_params(config, limit=_param_length_limit())
        logged = run.data.params
        changed = sorted(key for key in params if key in logged and logged[key] != params[key])
        if changed:
            logger.info("MLflow: parameters changed on resume keep their first value in MLflow "
                        "(config.json has the current ones): %s", ", ".join(changed))
        new = [Param(key, value) for key, value in params.items() if key not in logged]
        for first in range(0, len(new), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[first:first + _PARAMS_PER_BATCH])

    def _last_logged_epoch(self) -> int:
        history = self.client.get_metric_history(self.run_id, "val_iou")
        return max((int(metric.step) for metric in history), default=0)

    def _log_artifacts(self, names, artifact_path: str | None = None) -> None:
        for name in names:
            path = self.run_dir / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_path)


def log_evaluation(model: str | os.PathLike, summary: dict,
                   out_dir: str | os.PathLike | None = None) -> str:
    """Log an evaluation summary to the MLflow run of the training run that made ``model``.

    Metrics ``eval_<metric>_mean`` and ``eval_<metric>_median`` for each
    score, ``eval_pooled_iou``, ``eval_pooled_dice`` and ``eval_images``; the
    tag ``skyseg.evaluation.evaluate.truth``; and ``summary.json`` and ``metrics.csv``
    of ``out_dir`` as artifacts under ``evaluate/<out_dir name>/``.

    Args:
        model: the run folder, or a model file in it.
        summary: :attr:`skyseg.evaluation.evaluate.Evaluation.summary`.
        out_dir: the evaluation's output folder (None: no artifacts).

    Returns:
        the MLflow run id.

    Raises:
        ConfigError: mlflow is missing, or the run folder has no ``mlflow.json``
            (see :func:`find_training_run`).
    """
    record = find_training_run(model)
    client = MlflowTracker._client(record["tracking_uri"])
    run_id = record["run_id"]
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    values = {"eval_images": summary.get("images", 0)}
    for statistic in ("mean", "median"):
        for metric, value in (summary.get(statistic) or {}).items():
            values[f"eval_{metric}_{statistic}"] = value
    for metric, value in (summary.get("pooled") or {}).items():
        values[f"eval_pooled_{metric}"] = value
    metrics = [Metric(key, float(value), stamp, 0) for key, value in values.items()
               if isinstance(value, (int, float)) and math.isfinite(value)]
    client.log_batch(run_id, metrics=metrics)
    if summary.get("truth") is not None:
        client.set_tag(run_id, "skyseg.evaluation.evaluate.truth", str(summary["truth"]))
    if out_dir is not None:
        out_dir = Path(out_dir)
        for name in ("summary.json", "metrics.csv"):
            if (out_dir / name).is_file():
                client.log_artifact(run_id, str(out_dir / name),
                                    f"evaluate/{out_dir.resolve().name}")
    logger.info("MLflow: evaluation logged to run %s in %s", run_id, record["tracking_uri"])
    return run_id


def find_training_run(model: str | os.PathLike) -> dict:
    """The ``mlflow.json`` record of the run folder ``model`` is (or is in).

    Raises:
        ConfigError: mlflow is missing, or there is no ``mlflow.json``.
    """
    import_mlflow()
    model = Path(model)
    folder = model if model.is_dir() else model.parent
    record = read_tracking_record(folder)
    if record is None:
        raise ConfigError(f"--mlflow: {folder} has no {TRACKING_FILE}, so its MLflow run is "
                          "unknown; train it with skyseg train --mlflow, or leave out --mlflow")
    return record


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}

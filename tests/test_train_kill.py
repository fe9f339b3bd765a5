"""Training survives ``kill -9`` anywhere: mid-epoch, and while a checkpoint is being written.

Each test runs ``python -m skyseg train`` in a subprocess with a test hook
that pauses it at a chosen point (after a batch of an epoch, in the middle of
writing a checkpoint) and says so on a pipe; the test waits on that pipe, kills
the process with SIGKILL, checks what is left in the run folder, resumes with
``--resume`` and compares the history with an uninterrupted run (CPU training
is deterministic: same numbers, the ``seconds`` column aside).
"""

from __future__ import annotations

import importlib.util
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from skyseg.io import TEMP_MARKER
from skyseg.io.run_folder import HISTORY_COLUMNS, MODEL_LAST, read_history
from skyseg.training.model import TEST_NOTIFY_FD, TEST_PAUSE_IN_SAVE, read_model_attributes
from skyseg.training.recorder import TEST_PAUSE_IN_EPOCH

from .conftest import ROOT, run_cli
from .synthetic_patches import write_dataset

EPOCHS = 3
OPTIONS = ["--epochs", EPOCHS, "--batch-size", 8, "--learning-rate", 1e-3, "--backbone",
           "resnet18", "--encoder-weights", "none", "--seed", 0, "--bn-momentum", 0.6,
           "--steps-per-epoch", 8]
#: Hang guard: seconds a subprocess may take before the test gives up (and kills it).
TIMEOUT = 240
#: mlflow is in the dev extra; with it the mid-epoch kill is also tracked.
HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None


def start_training(data: Path, run_dir: Path, log: Path, *extra: str,
                   **env: str) -> tuple[subprocess.Popen, int]:
    """``python -m skyseg train`` in the background, its log (stderr) in ``log``.

    Returns the process and the read end of the pipe its test hooks announce a pause on.
    """
    notice, announce = os.pipe()
    environment = dict(os.environ, **env)
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    environment[TEST_NOTIFY_FD] = str(announce)
    try:
        with open(log, "w") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "skyseg", "train", "--data", str(data), "--out",
                 str(run_dir), *map(str, OPTIONS), *extra],
                cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=handle,
                pass_fds=(announce,))
    finally:
        os.close(announce)  # the child's copy is the only writer: its exit means end of file
    return process, notice


def wait_for_pause(process: subprocess.Popen, notice: int, log: Path) -> str:
    """Block until the training's test hook announces its pause; the announcement.

    Fails when the process ends first (the pipe closes without a line).
    """
    with os.fdopen(notice, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], TIMEOUT)  # a hang guard, not a timing
        line = pipe.readline().decode() if ready else ""
    if not line:
        status = process.poll()
        pytest.fail(f"training (status {status}) did not pause within {TIMEOUT} s:\n"
                    f"{log.read_text(errors='replace')[-3000:]}")
    return line


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def temporaries(run_dir: Path) -> list[Path]:
    return sorted(path for path in run_dir.iterdir() if TEMP_MARKER in path.name)


def comparable(rows):
    return [{key: row[key] for key in HISTORY_COLUMNS if key != "seconds"} for row in rows]


def resume_and_compare(data: Path, run_dir: Path, reference: list[dict], *extra: str) -> str:
    """``--resume`` to the end; the history must be the uninterrupted run's. Returns the log."""
    result = run_cli("train", "--data", data, "--out", run_dir, "--resume", *OPTIONS, *extra,
                     timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after epoch 1" in result.stderr
    history = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    for resumed, uninterrupted in zip(comparable(history), comparable(reference), strict=True):
        assert resumed == pytest.approx(uninterrupted, rel=1e-5, abs=1e-6)
    assert read_model_attributes(run_dir / MODEL_LAST)["state"]["epoch"] == EPOCHS
    assert temporaries(run_dir) == []
    return result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """32 training and 8 validation patches of 32 px."""
    return write_dataset(tmp_path_factory.mktemp("kill") / "data",
                         counts={"train": 32, "val": 8}, size=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The history of an uninterrupted run of the same command."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli("train", "--data", data, "--out", run_dir, *OPTIONS, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_history(run_dir / "history.csv")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_history(data, reference,
                                                                       tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reading a folder store
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    tracking = ["--mlflow", (tmp_path / "mlruns").as_uri()] if HAVE_MLFLOW else []
    # Paused after batch 3 of epoch 2's 8: a third of the way into the epoch.
    process, notice = start_training(data, run_dir, log, *tracking,
                                     **{TEST_PAUSE_IN_EPOCH: "2:3"})
    try:
        assert "after batch 3 of epoch 2" in wait_for_pause(process, notice, log)
        assert process.poll() is None, "epoch 2 already ended: too fast to kill mid-epoch"
        kill(process)
    finally:
        kill(process)
    # Epoch 1 is committed, nothing of epoch 2.
    assert f"epoch 2/{EPOCHS}:" not in log.read_text(), "epoch 2 finished before the kill"
    assert read_model_attributes(run_dir / MODEL_LAST)["state"]["epoch"] == 1
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [1]
    if HAVE_MLFLOW:  # the killed run's finished epoch is in MLflow already
        assert [m.step for m in mlflow_metric(tmp_path / "mlruns", "val_iou")] == [1]
    resume_and_compare(data, run_dir, reference, *tracking)
    if HAVE_MLFLOW:  # one MLflow run, each epoch once, the values of history.csv
        logged = mlflow_metric(tmp_path / "mlruns", "val_iou")
        assert [m.step for m in logged] == [1, 2, 3]
        assert [m.value for m in logged] == [row["val_iou"] for row in read_history(
            run_dir / "history.csv")]


def mlflow_metric(store: Path, key: str) -> list:
    """The history of ``key`` in the one run of the store's skyseg experiment, by step."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("skyseg").experiment_id])
    return sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_never_leaves_a_truncated_one(data, reference,
                                                                         tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    # Epoch 2's model_last.h5 stops half-written (the test hook of skyseg.training.model).
    process, notice = start_training(data, run_dir, log,
                                     **{TEST_PAUSE_IN_SAVE: f"{MODEL_LAST}:2"})
    try:
        assert "pausing in the middle of writing" in wait_for_pause(process, notice, log)
        kill(process)
    finally:
        kill(process)
    # The half-written file is the temporary one; model_last.h5 is epoch 1's, whole.
    (half_written,) = temporaries(run_dir)
    assert half_written.name.startswith(f".{Path(MODEL_LAST).stem}.")
    assert "state" not in read_model_attributes(half_written)
    assert read_model_attributes(run_dir / MODEL_LAST)["state"]["epoch"] == 1
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [1]
    # Whatever model_best.h5 is (epoch 2's was written before the kill), it is whole.
    assert read_model_attributes(run_dir / "model_best.h5")["epoch"] in (1, 2)
    stderr = resume_and_compare(data, run_dir, reference)
    assert f"removed 1 half-written file(s) of the killed run: {half_written.name}" in stderr

"""Multi-worker training: TF_CONFIG checks, two workers on loopback, a lost worker stops the other."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skyseg.errors import ConfigError, DatasetError
from skyseg.io.run_folder import read_history
from skyseg.training.distribute import Cluster, check_strategy, global_steps, read_cluster
from skyseg.training.model import TEST_NOTIFY_FD
from skyseg.training.recorder import TEST_PAUSE_IN_EPOCH

from .synthetic_patches import write_dataset

ROOT = Path(__file__).resolve().parents[1]
#: No test may hang CI: every worker process is killed after this.
PROCESS_TIMEOUT = 240
TRAIN_OPTIONS = ["--epochs", "2", "--batch-size", "4", "--backbone", "resnet18",
                 "--encoder-weights", "none", "--seed", "0", "--collective-timeout", "60"]


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


# --------------------------------------------------------------------------- TF_CONFIG


def test_read_cluster_ranks_the_chief_first():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    environ = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                     "index": 1}})}
    assert read_cluster(environ) == Cluster(workers=3, rank=2, task="worker:1")
    environ = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "chief",
                                                                     "index": 0}})}
    assert read_cluster(environ).chief
    assert read_cluster({"TF_CONFIG": tf_config([1, 2], 0)}) == Cluster(2, 0, "worker:0")


def test_a_single_task_or_no_tf_config_is_not_a_cluster():
    assert read_cluster({}) is None
    assert read_cluster({"TF_CONFIG": tf_config([1], 0)}) is None


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}}), "lacks 'cluster' or 'task'"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}),
     "is not in the cluster"),
    (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker",
                                                                         "index": 0}}),
     r"job type\(s\) \['ps'\]"),
])
def test_bad_tf_config_names_the_variable_and_the_fix(text, message):
    with pytest.raises(ConfigError, match=message) as error:
        read_cluster({"TF_CONFIG": text})
    assert "TF_CONFIG" in str(error.value)


def test_multi_worker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="multi-worker needs TF_CONFIG"):
        check_strategy("multi-worker", None)
    assert check_strategy("auto", None) is None
    with pytest.raises(ConfigError, match="--strategy 'ring' is unknown"):
        check_strategy("ring", None)
    with pytest.raises(ConfigError, match="--collective-timeout must be a positive"):
        check_strategy("auto", 0.0)


def test_auto_becomes_multi_worker_with_a_cluster(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    assert check_strategy("auto", None) == Cluster(2, 1, "worker:1")
    assert check_strategy("mirrored", None) is None


def _watched(block: str, timeout: float) -> subprocess.CompletedProcess:
    """A process that runs the statement ``block`` in a join watchdog of ``timeout`` seconds."""
    code = ("import sys, threading\n"
            "from skyseg.training.distribute import join_watchdog, read_cluster\n"
            f"cluster = read_cluster({{'TF_CONFIG': {tf_config([5001, 5002], 1)!r}}})\n"
            f"with join_watchdog(cluster, {timeout}):\n"
            f"    {block}\n"
            "print('after the block')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_join_watchdog_kills_a_worker_whose_cluster_never_forms():
    assert read_cluster({"TF_CONFIG": tf_config([5001, 5002], 1)}).addresses == (
        "127.0.0.1:5001", "127.0.0.1:5002")
    # The block never ends (TensorFlow waiting for a worker that never came): only the
    # watchdog can end the process (subprocess.run's timeout is a hang guard).
    hung = _watched("threading.Event().wait()", 1)
    assert hung.returncode == -signal.SIGKILL
    assert "after the block" not in hung.stdout
    message = hung.stderr.strip().splitlines()[-1]
    assert message.startswith("skyseg train: error: worker:1 of 2 workers: the cluster did not "
                              "form within 1 s")
    assert "127.0.0.1:5001, 127.0.0.1:5002" in message and "same TF_CONFIG" in message
    # A cluster that forms in time: the watcher goes away and the worker goes on.
    quick = _watched("pass", 5)
    assert quick.returncode == 0 and "after the block" in quick.stdout
    assert "error" not in quick.stderr


def test_global_steps_share_the_batches():
    assert global_steps(9, None) == 9
    assert global_steps(9, Cluster(2, 0, "worker:0")) == 4
    with pytest.raises(DatasetError, match="cannot be shared by 3 workers"):
        global_steps(2, Cluster(3, 0, "worker:0"))


# --------------------------------------------------------------------------- two workers


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_workers(data: Path, outs: list[Path], logs: Path, *extra,
                  hooks: dict[int, dict] | None = None) -> list[subprocess.Popen]:
    """One ``skyseg train --strategy multi-worker`` process per entry of ``outs``; ``hooks``:
    worker index -> extra environment (test hooks) of that worker alone."""
    ports = free_ports(len(outs))
    processes = []
    for index, out in enumerate(outs):
        env = dict(os.environ, TF_CONFIG=tf_config(ports, index),
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   **(hooks or {}).get(index, {}))
        descriptors = (int(env[TEST_NOTIFY_FD]),) if TEST_NOTIFY_FD in env else ()
        log = open(logs / f"worker{index}.log", "w")  # noqa: SIM115 (closed with the process)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "skyseg", "train", "--strategy", "multi-worker",
             "--data", str(data), "--out", str(out), *TRAIN_OPTIONS, *map(str, extra)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, pass_fds=descriptors))
    return processes


def wait_all(processes: list[subprocess.Popen], timeout: float = PROCESS_TIMEOUT) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for process in processes:
            codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return codes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """16 training and 4 validation patches of 32 px: 4 batches of 4, 2 steps of 2 workers."""
    return write_dataset(tmp_path_factory.mktemp("distribute") / "data",
                         counts={"train": 16, "val": 4}, size=32)


@pytest.mark.slow
def test_two_workers_train_and_only_the_chief_writes(data, tmp_path):
    run_dir = tmp_path / "run"
    # The second worker's --out is its own folder, so anything it wrote would show.
    other = tmp_path / "other"
    codes = wait_all(start_workers(data, [run_dir, other], tmp_path))
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    history = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2]
    assert (run_dir / "model_best.h5").is_file() and (run_dir / "model_last.h5").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["distribution"] == {"strategy": "multi-worker", "workers": 2,
                                      "global_batch_size": 8}
    # 4 batches of 4 shared by 2 workers: 2 steps an epoch, the schedule knows it.
    assert config["total_steps"] == 4
    assert not other.exists()
    assert "worker:1 of 2 workers" in logs[1] and "chief" in logs[0]
    # Both workers saw the same (all-reduced) scores.
    assert "epoch 2/2" in logs[1]
    line = next(line for line in logs[0].splitlines() if "epoch 2/2" in line)
    assert line.split("(")[0] in logs[1]

    # A worker that cannot see the run folder would start afresh: both stop, saying why.
    codes = wait_all(start_workers(data, [run_dir, other], tmp_path, "--resume", "--epochs", 3))
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [2, 2], logs
    assert all("the workers disagree on the epoch to resume after" in log for log in logs)
    assert "filesystem all workers share" in logs[1]

    # --resume goes on from the chief's run folder on both workers.
    codes = wait_all(start_workers(data, [run_dir, run_dir], tmp_path, "--resume",
                                   "--epochs", 3))
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [1, 2, 3]
    assert "resuming after epoch 2" in logs[1]
    assert not other.exists()
    assert not list(run_dir.glob("*worker*"))


@pytest.mark.slow
def test_a_worker_alone_stops_when_the_other_never_starts(data, tmp_path):
    # Only worker 0 of two starts: TensorFlow alone would wait an hour for worker 1.
    env = dict(os.environ, TF_CONFIG=tf_config(free_ports(2), 0),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    options = [option if option != "60" else "8" for option in TRAIN_OPTIONS]
    # Without the watchdog TensorFlow waits an hour and the hang guard (timeout) fails this.
    process = subprocess.run(
        [sys.executable, "-m", "skyseg", "train", "--strategy", "multi-worker", "--data",
         str(data), "--out", str(tmp_path / "run"), *options],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=PROCESS_TIMEOUT)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    errors = [line for line in process.stderr.splitlines() if "skyseg train: error:" in line]
    assert errors and "the cluster did not form within 8 s" in errors[-1], process.stderr[-3000:]
    assert "start them all again with --resume" in errors[-1]
    # Only whole files: the run's settings, no weights.
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == [
        "config.json", "preprocessing.json"]


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["worker-killed", "chief-killed"])
def test_a_killed_worker_stops_the_other_with_a_clear_error(data, tmp_path, victim):
    run_dir = tmp_path / "run"
    # The victim pauses once training runs (after the first batch of epoch 2: an epoch is
    # finished) and says so on a pipe; the survivor goes on to wait for it.
    notice, announce = os.pipe()
    hook = {TEST_PAUSE_IN_EPOCH: "2:1", TEST_NOTIFY_FD: str(announce)}
    try:
        processes = start_workers(data, [run_dir, run_dir], tmp_path, "--epochs", 1000,
                                  hooks={victim: hook})
    finally:
        os.close(announce)  # the victim's copy is the only writer
    try:
        with os.fdopen(notice, "rb") as pipe:  # PROCESS_TIMEOUT: a hang guard
            paused = select.select([pipe], [], [], PROCESS_TIMEOUT)[0] and pipe.readline()
        assert paused, "training did not start"
        assert all(process.poll() is None for process in processes)
        processes[victim].send_signal(signal.SIGKILL)
        survivor = processes[1 - victim]
        code = survivor.wait(timeout=180)  # a hang guard: TimeoutExpired fails the test
    finally:
        wait_all(processes, timeout=5)
    log = (tmp_path / f"worker{1 - victim}.log").read_text()
    assert code == 2, log
    message = [line for line in log.splitlines() if "skyseg train: error:" in line]
    assert message, log
    assert "lost contact with another worker" in message[0] or "timed out" in message[0]
    assert "--resume" in message[0]

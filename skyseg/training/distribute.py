"""Training on several machines: TensorFlow's ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``.

``skyseg train --strategy multi-worker`` runs one process per machine (or
per GPU); each reads the cluster from the ``TF_CONFIG`` environment variable
that TensorFlow defines::

    {"cluster": {"worker": ["node1:12345", "node2:12345"]},
     "task": {"type": "worker", "index": 0}}

Worker 0 (or the task of type ``chief`` when the cluster names one) is the
chief: it alone writes the run folder. The others run the same steps (the
weights stay in sync through all-reduce) and write their checkpoints and plots
into a temporary folder that is removed at the end, so nothing of theirs lands
in ``--out``.

Data: every worker builds the same shuffled epoch (one seed) and takes its own
share of its batches: worker ``r`` of ``W`` reads batches ``r, r + W, r + 2W``
..., so the workers read disjoint patches and one step trains on ``W``
batches: the global batch is ``--batch-size x W`` and an epoch has
``len(batches) // W`` steps. Validation runs over the whole validation split
on every worker; the metrics are summed over the workers, so the scores are
those of a one-process run.

Failures: TensorFlow's coordination service notices a worker that stopped
(killed, machine lost) within seconds and aborts the collectives of the
others; a worker that hangs is caught by the collective timeout
(``collective_timeout``). Either way the survivors stop with a
:class:`DistributedError` naming the cause; ``--resume`` continues from the
last finished epoch once all workers are started again. A worker that never
starts (a wrong host or port in ``TF_CONFIG``, a job array task that did not
run) is caught by :func:`join_watchdog`: TensorFlow would wait for it for an
hour inside the strategy's constructor, deaf to SIGTERM, so after the same
timeout a watcher process writes the error and kills the worker.

The module imports without TensorFlow; the functions that need it take it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field

from skyseg.errors import ConfigError, SkysegError

__all__ = ["STRATEGIES", "Cluster", "DistributedError", "read_cluster", "check_strategy",
           "make_strategy", "join_watchdog", "global_steps", "fit_inputs", "agree",
           "AgreedBudget", "worker_lost"]

logger = logging.getLogger("skyseg")

STRATEGIES = ("auto", "mirrored", "multi-worker")
#: Seconds a collective operation (one all-reduce) may wait for the other workers.
DEFAULT_COLLECTIVE_TIMEOUT = 600.0


class DistributedError(SkysegError):
    """A worker of a multi-worker run was lost or the workers disagree."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker run (from ``TF_CONFIG``).

    Attributes:
        workers: processes training together (chief included).
        rank: this process's number, 0 for the chief.
        task: ``"worker:1"`` style name for messages.
        addresses: every task's ``host:port`` (chief first), for messages.
    """

    workers: int
    rank: int
    task: str
    addresses: tuple[str, ...] = field(default=(), compare=False)

    @property
    def chief(self) -> bool:
        """True for the one process that writes the run folder."""
        return self.rank == 0


def read_cluster(environ=None) -> Cluster | None:
    """Parse ``TF_CONFIG``; None when it is unset or names a single task.

    Raises:
        ConfigError: ``TF_CONFIG`` is not JSON, has no ``cluster``/``task``,
            names a task outside the cluster, or holds job types other than
            ``chief`` and ``worker``.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    fix = ('set it to {"cluster": {"worker": ["host1:port", "host2:port"]}, '
           '"task": {"type": "worker", "index": N}}')
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc}); {fix}") from exc
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(f"TF_CONFIG={text!r} lacks 'cluster' or 'task'; {fix}")
    other = sorted(set(cluster) - {"chief", "worker"})
    if other:
        raise ConfigError(f"TF_CONFIG: job type(s) {other} are not used by skyseg train "
                          f"(MultiWorkerMirroredStrategy takes 'chief' and 'worker'); {fix}")
    chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    kind, index = task.get("type"), task.get("index", 0)
    tasks = {"chief": chiefs, "worker": workers}
    if kind not in tasks or not isinstance(index, int) or not 0 <= index < len(tasks[kind]):
        raise ConfigError(f"TF_CONFIG: task {task!r} is not in the cluster {cluster!r}; {fix}")
    if len(chiefs) > 1:
        raise ConfigError(f"TF_CONFIG: {len(chiefs)} chief tasks; there can be one")
    total = len(chiefs) + len(workers)
    if total < 2:
        return None
    rank = index if kind == "chief" else len(chiefs) + index
    return Cluster(workers=total, rank=rank, task=f"{kind}:{index}",
                   addresses=tuple(str(address) for address in chiefs + workers))


def check_strategy(strategy: str, collective_timeout: float | None,
                   max_minutes: float | None = None) -> Cluster | None:
    """Check ``--strategy`` and ``TF_CONFIG`` before any work; the cluster of a multi-worker run.

    ``"auto"`` becomes multi-worker when ``TF_CONFIG`` names two tasks or more.

    Raises:
        ConfigError: unknown strategy; ``multi-worker`` without a ``TF_CONFIG``
            of two tasks or more; a bad ``TF_CONFIG``; a timeout that is not positive.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r} is unknown; choose one of: "
                          f"{', '.join(STRATEGIES)}")
    if collective_timeout is not None and not (math.isfinite(collective_timeout)
                                               and collective_timeout > 0):
        raise ConfigError(f"--collective-timeout must be a positive number of seconds, got "
                          f"{collective_timeout!r}")
    if strategy == "mirrored":
        return None
    cluster = read_cluster()
    if strategy == "multi-worker" and cluster is None:
        raise ConfigError("--strategy multi-worker needs TF_CONFIG naming two workers or more "
                          '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                          '"task": {"type": "worker", "index": 0}}); see README "More than '
                          'one machine"')
    return cluster


def make_strategy(tf, strategy: str, cluster: Cluster | None,
                  collective_timeout: float | None = None):
    """The ``tf.distribute`` strategy; call it before any other TensorFlow work.

    ``cluster`` (from :func:`check_strategy`): MultiWorkerMirroredStrategy.
    Otherwise ``"mirrored"``: MirroredStrategy over the local GPUs (or the
    CPU); ``"auto"``: MirroredStrategy with two GPUs or more, else the
    default strategy.

    Raises:
        ConfigError: TensorFlow was already started in this process (the
            multi-worker strategy must come first), or a worker sees several GPUs.
    """
    if cluster is not None:
        timeout = DEFAULT_COLLECTIVE_TIMEOUT if collective_timeout is None else collective_timeout
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        try:
            result = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except RuntimeError as exc:
            raise ConfigError(f"--strategy multi-worker: TensorFlow was already started in "
                              f"this process ({exc}); run each worker as its own skyseg train "
                              "process") from exc
        if result.num_replicas_in_sync != cluster.workers:
            raise ConfigError(
                f"--strategy multi-worker: {cluster.task} sees "
                f"{result.num_replicas_in_sync // cluster.workers} GPUs; run one worker per "
                "GPU (one task per GPU, CUDA_VISIBLE_DEVICES set to its GPU)")
        logger.info("multi-worker training: %s of %d workers%s, collective timeout %g s",
                    cluster.task, cluster.workers,
                    " (chief: writes the run folder)" if cluster.chief else "", timeout)
        return result
    gpus = tf.config.list_physical_devices("GPU")
    if strategy == "mirrored" or len(gpus) > 1:
        logger.info("training on %d GPUs (MirroredStrategy)", len(gpus))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


#: The watchdog of :func:`join_watchdog`, run as ``python -c`` beside the worker:
#: argv = parent pid, seconds, message. The parent closing stdin (or dying) ends it.
_WATCHER = """
import os, select, signal, sys
pid, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], seconds)
if not ready:
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)
"""


@contextlib.contextmanager
def join_watchdog(cluster: Cluster | None, timeout: float | None = None, *,
                  prog: str = "skyseg train"):
    """Kill this process if the block (forming the cluster) outlasts ``timeout`` seconds.

    ``MultiWorkerMirroredStrategy()`` waits for every task of ``TF_CONFIG``
    to connect; for a task that never starts it waits for an hour inside
    TensorFlow, holding the interpreter (no Python thread or signal handler
    runs) and ignoring SIGTERM. So a small watcher process waits beside it:
    when the block has not finished after ``timeout`` (None:
    :data:`DEFAULT_COLLECTIVE_TIMEOUT`), it writes ``PROG: error: MESSAGE``
    (the CLI's form) to stderr and kills this process (SIGKILL: exit status
    137 in a shell). By then the chief has written only the run folder's
    ``config.json`` and ``preprocessing.json`` (whole files), so the workers
    start again with ``--resume``. POSIX only (elsewhere: no watchdog).

    Args:
        cluster: from :func:`check_strategy`; None: no watchdog.
        timeout: seconds.
        prog: the command named in the message.
    """
    if cluster is None or os.name != "posix":
        yield
        return
    import subprocess

    timeout = DEFAULT_COLLECTIVE_TIMEOUT if timeout is None else float(timeout)
    message = (f"{prog}: error: {cluster.task} of {cluster.workers} workers: the cluster did "
               f"not form within {timeout:g} s (a task of TF_CONFIG never started or cannot "
               f"be reached: {', '.join(cluster.addresses) or 'see TF_CONFIG'}); start every "
               "worker with the same TF_CONFIG and its own task index (or raise "
               "--collective-timeout), then start them all again with --resume")
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(os.getpid()), str(timeout),
                                message], stdin=subprocess.PIPE)
    try:
        yield
    finally:
        watcher.stdin.close()
        watcher.wait()


def global_steps(batches: int, cluster: Cluster | None) -> int:
    """Steps of an epoch: ``batches // workers`` (each step trains on one batch per worker).

    Raises:
        DatasetError: fewer batches than workers.
    """
    if cluster is None:
        return batches
    if batches < cluster.workers:
        from skyseg.errors import DatasetError

        raise DatasetError(f"{batches} training batch(es) per epoch cannot be shared by "
                           f"{cluster.workers} workers; lower --batch-size, raise "
                           "--steps-per-epoch or add patches")
    return batches // cluster.workers


def fit_inputs(tf, keras, cluster: Cluster | None, train_sequence, val_sequence,
               initial_epoch: int) -> dict:
    """Keyword arguments of ``model.fit`` for the data: the sequences, or per-worker datasets.

    Multi-worker: ``keras.utils.experimental.DatasetCreator`` datasets built
    on each worker from generators that walk the epochs from
    ``initial_epoch`` on; worker ``r`` takes batches ``r, r + W, ...`` of
    each training epoch and every batch of the validation split.
    """
    if cluster is None:
        return {"x": train_sequence, "validation_data": val_sequence}
    steps = global_steps(len(train_sequence), cluster)
    side = train_sequence.patch_size
    signature = (tf.TensorSpec((None, side, side, 3), tf.float32),
                 tf.TensorSpec((None, side, side, 1), tf.uint8))

    def dataset(generator):
        data = tf.data.Dataset.from_generator(generator, output_signature=signature)
        options = tf.data.Options()
        # The generators shard by hand; TensorFlow must not shard again.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        return data.with_options(options).prefetch(2)

    def train_fn(context):
        rank, workers = context.input_pipeline_id, context.num_input_pipelines

        def batches():
            epoch = initial_epoch
            while True:
                for step in range(steps):
                    yield train_sequence.epoch_batch(step * workers + rank, epoch)
                epoch += 1

        return dataset(batches)

    def val_fn(context):
        def batches():
            while True:
                for index in range(len(val_sequence)):
                    yield val_sequence.batch(index, 0)

        return dataset(batches)

    creator = keras.utils.experimental.DatasetCreator
    return {"x": creator(train_fn), "steps_per_epoch": steps,
            "validation_data": creator(val_fn), "validation_steps": len(val_sequence)}


def _reduce(tf, strategy, value: float, operation: str) -> float:
    per_replica = strategy.run(lambda: tf.constant(float(value)))
    return float(strategy.reduce(operation, per_replica, axis=None))


def agree(tf, strategy, cluster: Cluster | None, value: float, what: str) -> None:
    """Check that every worker holds the same ``value``; a collective, so all must call it.

    Raises:
        DistributedError: the workers differ (e.g. they resume from different
            epochs because ``--out`` is not on a filesystem they share).
    """
    if cluster is None:
        return
    # tf.distribute reduces by SUM or MEAN only: equal values have no variance.
    total = _reduce(tf, strategy, value, "SUM")
    squares = _reduce(tf, strategy, float(value) ** 2, "SUM")
    if abs(cluster.workers * squares - total ** 2) > 1e-6 * max(1.0, total ** 2):
        raise DistributedError(
            f"the workers disagree on {what} ({cluster.task} has {value:g}, the mean is "
            f"{total / cluster.workers:g}); --out must be a folder on a filesystem all "
            "workers share")


class AgreedBudget:
    """A :class:`~skyseg.training.recorder.TimeBudget` that all workers stop on together.

    Each worker times its own epochs; training stops when any worker's budget
    says so, so all stop after the same epoch.
    """

    def __init__(self, budget, tf, strategy):
        self.budget, self._tf, self._strategy = budget, tf, strategy

    def epoch_ended(self) -> bool:
        over = self.budget.epoch_ended()
        return _reduce(self._tf, self._strategy, 1.0 if over else 0.0, "SUM") > 0

    def __getattr__(self, name):
        return getattr(self.budget, name)


def worker_lost(tf, exc: BaseException, cluster: Cluster | None) -> DistributedError | None:
    """The :class:`DistributedError` for a TensorFlow error of a lost or stuck worker, else None."""
    if cluster is None or not isinstance(exc, (tf.errors.UnavailableError,
                                               tf.errors.DeadlineExceededError,
                                               tf.errors.CancelledError,
                                               tf.errors.AbortedError)):
        return None
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = next((line for line in lines if "unhealthy" in line or "aborted" in line.lower()
                  or "timed out" in line.lower() or "connect" in line.lower()),
                 lines[-1] if lines else type(exc).__name__)
    kind = ("timed out waiting for another worker"
            if isinstance(exc, tf.errors.DeadlineExceededError)
            else "lost contact with another worker")
    return DistributedError(
        f"multi-worker training: {cluster.task} {kind} ({type(exc).__name__}: {cause[:300]}); "
        "stopping. Start all workers again with --resume to continue from the last finished "
        "epoch")

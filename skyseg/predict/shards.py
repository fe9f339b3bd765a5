"""``skyseg predict --shard i/N``: one task of a job array (see :mod:`skyseg.data.shards`)."""

from __future__ import annotations

from pathlib import Path

from skyseg.data.shards import describe, outputs_complete, parse_shard, shard_paths
from skyseg.errors import ConfigError
from skyseg.predict.files import find_inputs
from skyseg.predict.options import PredictOptions
from skyseg.predict.outputs import output_paths

__all__ = ["PredictShard"]


class PredictShard:
    """``skyseg predict --shard i/N``: the shard's inputs, without those already complete.

    Complete: every output ``--save`` asks for exists and is not older than
    the model file (so a new model is not skipped). ``--overwrite`` redoes them.
    """

    def __init__(self, shard: tuple[int, int], inputs: list[Path], todo: list[Path]):
        self.shard, self.inputs, self.todo = shard, inputs, todo

    @classmethod
    def from_args(cls, args, options: PredictOptions) -> PredictShard | None:
        """None without ``--shard``; else the shard, ``args.inputs`` narrowed to what is left.

        Args:
            args: the parsed command line (``inputs``, ``model``, ``out``).
            options: its :class:`~skyseg.predict.options.PredictOptions` (``shard``,
                ``save``, ``overwrite``, ``which``).
        """
        shard = parse_shard(options.shard)
        if shard is None:
            return None
        save = options.outputs
        if "labelstudio" in save:
            raise ConfigError("--save labelstudio writes one file for the whole batch; run it "
                              "without --shard (or leave labelstudio out of the shards)")
        inputs = shard_paths(find_inputs(args.inputs), shard)
        since = None if options.overwrite else _model_time(args.model, options.which)
        todo = [path for path in inputs if options.overwrite or not outputs_complete(
            [output_paths(args.out, path.stem)[name] for name in save], since)]
        args.inputs = [str(path) for path in todo]
        return cls(shard, inputs, todo)

    def log_summary(self, report=None) -> None:
        import logging

        failed = len(report.failures) if report is not None else 0
        logging.getLogger("skyseg").info(
            "%s: %d input(s); %d already complete (skipped), %d predicted, %d failed",
            describe(self.shard), len(self.inputs), len(self.inputs) - len(self.todo),
            len(self.todo) - failed, failed)


def _model_time(model, which: str) -> float | None:
    """mtime of the model file ``predict`` will load (a run folder's best or last)."""
    from skyseg.io.run_folder import MODEL_BEST, MODEL_LAST

    path = Path(model)
    if path.is_dir():
        path = path / (MODEL_LAST if which == "last" else MODEL_BEST)
    try:
        return path.stat().st_mtime
    except OSError:
        return None

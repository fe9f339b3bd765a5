"""Sky masks for images of any size, 8K HDR panoramas first.

``skyseg predict MODEL INPUT... --out DIR`` (also ``python -m skyseg.predict``
with the same arguments) writes, for each input:

- ``<stem>_mask.png``: uint8, 255 = sky, 0 = not sky, the input's size;
- ``<stem>_overlay.png``: the tonemapped image with the sky tinted magenta at
  50% opacity, no larger than ``--overlay-max-size`` on its long side;
- with ``--save ...,prob``: ``<stem>_prob.png``, the sky probability as 16-bit
  (0..65535 for 0..1);
- with ``--save ...,exr``: ``<stem>_sky.exr``, the original radiance (LDR
  inputs: linear sRGB 0..1) as RGB with the sky probability as alpha;
- with ``--save ...,labelstudio``: one ``labelstudio.json`` for the batch,
  a Label Studio task per input with the mask as polygon pre-annotations
  (:mod:`skyseg.labels.labelstudio`; ``--image-url-prefix``,
  ``--labelstudio-from-name``, ``--labelstudio-to-name``), written at the end.

MODEL is a run folder of ``skyseg train`` or a model file; the preprocessing
saved with it is applied exactly. An HDR model on an LDR file (or the
reverse) is an error unless ``--convert`` asks for a conversion.

Defaults for 8K: 1088-pixel tiles, 64 pixels of overlap, one tile per
network call. 1088 = 1024 + 64, so 4 rows x 8 columns of tiles cover an
8192x4096 panorama (32 reflected rows at the top and bottom, wrap-around
columns) with 13% more pixels than the image; 1024-pixel tiles need 5 x 9
tiles (of 896x992 after shrinking, +19%). Measured with
``scripts/bench_predict.py`` (randomly initialised ResNet34 U-Net, the
project's 2 shared CPU cores, 8192x4096 EXR, mask + overlay):

====  =====  ========  ==========  ==========  ================  ========
tile  tiles  overhead  end-to-end  pure model  end-to-end/model  peak RSS
====  =====  ========  ==========  ==========  ================  ========
1088  4 x 8  1.129     137.7 s     136.8 s     1.006             2.08 GB
2112  2 x 4  1.063     133.7 s     141.1 s     0.947             3.06 GB
====  =====  ========  ==========  ==========  ================  ========

(Pure model time is the mean of runs before and after the end-to-end one;
other jobs on the shared machine moved it by up to 15%, hence a ratio
below 1.) Both run the network at about 0.25-0.28 megapixels/s; what is not
the network (reading, cutting and preprocessing tiles, merging, writing)
adds about 3 s, because tiles are prepared in a background thread and the
overlay picture is made while the network runs. 2112-pixel tiles waste
fewer pixels but need 1 GB more memory, over the 2.5 GB budget. A batch of
two 1088-pixel tiles costs 0.31 GB more and showed no reliable speed-up on
this CPU, so the default batch is one tile. Two 8K panoramas in one call
with every output (mask, overlay, 16-bit probability, sky EXR) peaked at
2.28 GB.

The network is called through one compiled function per loaded model
(``tf.function(lambda x: model(x, training=False))``, traced once per tile
shape), about 14% faster than ``model.predict_on_batch``. With it, and the
pure model time now taken as that compiled call on the image's own pixels
(1024x1024 tiles, no overlap), the same 8K run measured 152.6 s for
``predict_files`` against 150.7 s (ratio 1.01; 1.14 with the 19 s of
start-up: TensorFlow, model, trace), peak RSS 1.95 GB, on the shared machine
with other jobs running (the pure model time was 186 s before the run and
115 s after it).

Coarse to fine: with a run trained at ``--scale`` < 1 or with ``--max-side``,
the network runs on the shrunk image and :mod:`skyseg.predict.refine` brings the
probability back to full size along the image's edges (``--refine``).
Giant inputs are refused from their header before decoding (``--max-pixels``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from skyseg.io import IMAGE_SUFFIXES, prepare_output_folder
from skyseg.io.run_folder import DEFAULT_MODEL_NAME, is_model_path, resolve_model_path
from skyseg.log import BatchReport
from skyseg.options import from_args
from skyseg.predict.files import predict_files
from skyseg.predict.loading import load_predictor
from skyseg.predict.options import PredictionOptions, PredictOptions, add_stage_options
from skyseg.training.model import LoadedModel, ModelEnsemble

__all__ = [
    "CLI_HELP",
    "add_arguments",
    "run",
    "add_model_argument",
    "resolve_model_argument",
    "load_for_cli",
    "report_predictions",
]

logger = logging.getLogger("skyseg")

CLI_HELP = "predict sky masks (and overlays) for images of any size, 8K panoramas included"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders or glob patterns (EXR, HDR, TIFF, JPG, PNG); "
                             "a run folder or .h5 file first is the model (the older form "
                             "skyseg predict RUN INPUT...)")
    add_model_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_stage_options(parser, PredictOptions)


def run(args: argparse.Namespace) -> int:
    from skyseg.predict.shards import PredictShard

    options = from_args(PredictOptions, args)
    resolve_model_argument(args)
    shard = PredictShard.from_args(args, options)  # narrows args.inputs to what the shard has left
    if shard is not None and not shard.todo:
        shard.log_summary()
        return 0
    loaded = load_for_cli(args, options)
    report = predict_files(loaded, args.inputs, args.out,
                           dataclasses.replace(options, ensemble=[]))  # loaded has them
    status = report_predictions(report, args.out)
    if shard is not None:
        shard.log_summary(report)
    return status


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model RUN`` (default: the model shipped with skyseg)."""
    parser.add_argument("--model", default=None, metavar="RUN",
                        help="run folder of skyseg train, or a .h5 model file (default: the sky "
                             f"model shipped with skyseg, also named '{DEFAULT_MODEL_NAME}')")


def resolve_model_argument(args: argparse.Namespace) -> argparse.Namespace:
    """Settle ``args.model``: ``--model``, else a model given first among the inputs (the
    form ``skyseg predict RUN INPUT...``), else the shipped model. Idempotent.

    Raises:
        ModelError: no model given and the shipped one is missing.
    """
    if getattr(args, "_model_resolved", False):
        return args
    inputs = getattr(args, "inputs", None)
    if getattr(args, "model", None) is None and inputs and len(inputs) > 1 \
            and _names_a_model(inputs[0]):
        args.model, args.inputs = inputs[0], inputs[1:]
    args.model = str(resolve_model_path(getattr(args, "model", None)))
    args._model_resolved = True
    return args


def _names_a_model(text: str) -> bool:
    """A first input that is a run folder or model file, or a missing path that is neither
    an image nor a pattern (``skyseg predict no_such_run a.jpg``: the model is missing)."""
    if is_model_path(text):
        return True
    path = Path(text)
    return (not path.exists() and not any(char in text for char in "*?[")
            and path.suffix.lower() not in IMAGE_SUFFIXES)


def report_predictions(report: BatchReport, out_dir: str | os.PathLike) -> int:
    """Log where :func:`predict_files` wrote; its exit status (0, or 1 when files failed)."""
    logger.info("outputs in %s", out_dir)
    return report.exit_code


def load_for_cli(args: argparse.Namespace,
                 options: PredictionOptions) -> LoadedModel | ModelEnsemble:
    """The model of a ``predict`` or ``evaluate`` command, after the cheap checks.

    The options were checked when made; the ``--out`` folder is made here, so a
    typo fails in a second rather than after the (slow) model load.

    Args:
        args: parsed arguments with ``model`` and ``out``.
        options: the command's options (``--ensemble`` runs join ``model`` in a
            :class:`~skyseg.training.model.ModelEnsemble`; ``--mode``, ``--which``).

    Raises:
        ImageWriteError: ``--out`` cannot be created or written.
        ModelError: the model cannot be loaded.
    """
    resolve_model_argument(args)
    prepare_output_folder(args.out)
    models = [args.model, *options.ensemble]
    return load_predictor(models if len(models) > 1 else args.model, mode=options.mode,
                          which=options.which)

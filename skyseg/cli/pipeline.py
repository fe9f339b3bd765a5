"""The whole workflow in one command: previews, dataset, training, prediction, evaluation.

``skyseg pipeline`` (what ``./run_pipeline.sh`` runs) calls the stage
functions in order (``make_demo_data``, ``make_previews``, ``build_dataset``,
``train_model``, ``predict_files``, ``evaluate_model``) with keyword
arguments, then each stage's ``report_*`` function, as the stage's command
does. Before each step it logs the equivalent ``skyseg`` command line, so any
step can be re-run by hand; it is shown, never parsed. With no data given it
runs the bundled demo: eight real labelled HDR panoramas shipped with skyseg
(``skyseg/resources/demo``), the shipped model fine-tuned on four of them and
scored on the other four, as a user adapting it to a camera would
(``--demo synthetic``: generated scenes, ``skyseg demo-data``, trained from
scratch as before).

Stage flags switch stages on and off (``--train=false``, or ``TRAIN=false``
in the environment). Before anything runs, the plan is checked: a stage whose
input a switched-off stage would have made must find that input on disk, or
the pipeline stops with a message saying which flag to switch on. A stage
that fails for some inputs only (exit status 1) lets the pipeline go on; a
fatal failure (exit status 2) stops it. A second run reuses what exists:
previews and dataset are kept, training resumes (and ends at once when it
had finished), prediction and evaluation are redone.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from skyseg.cli.config import DEMOS, STAGE_FLAGS, PipelineConfig, load_config
from skyseg.errors import ConfigError
from skyseg.options import parse_bool
from skyseg.training.model import ARCHITECTURES

__all__ = ["run_pipeline", "plan_pipeline", "link_held_out", "Step", "CLI_HELP", "add_arguments",
           "run"]

logger = logging.getLogger("skyseg")

CLI_HELP = "run the whole workflow (the demo when no data is given); what run_pipeline.sh runs"

#: Settings of the bundled real demo: the shipped model (an EfficientNet-Lite0
#: U-Net) fine-tuned on the four training panoramas for 3 x 25 batches, a few
#: minutes of CPU. A config file or options override them.
REAL_DEMO_DEFAULTS = {
    "init": "default",
    "patch_size": 256,
    "stride": 128,
    "epochs": 3,
    "steps_per_epoch": 25,
    "batch_size": 8,
    "learning_rate": 2e-4,
    "patience": 15,
}
#: Smaller settings for the synthetic demo (``--demo synthetic``) so that the
#: whole pipeline fits in a few minutes on a laptop CPU.
DEMO_DEFAULTS = {
    # Train on the 1024x512 panoramas shrunk to 256x128: a 128-px patch then
    # holds the whole height, sky to ground, and a ResNet18 U-Net reaches a
    # held-out IoU above 0.9 in a few minutes of CPU (ResNet34 at full size
    # needs hours there). Predict shrinks the same way and returns full-size masks.
    "scale": 0.25,
    "patch_size": 128,
    "stride": 32,
    "backbone": "resnet18",
    "epochs": 15,
    "batch_size": 8,
    "patience": 15,
}
#: Long side of the previews the pipeline writes.
PREVIEW_SIZE = 2048


def _stem_list(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Path(line.strip()).stem for line in lines if line.strip() and not line.startswith("#")]


def _has_model(run_dir: Path) -> bool:
    from skyseg.io.run_folder import MODEL_BEST, MODEL_LAST

    return (run_dir / MODEL_BEST).is_file() or (run_dir / MODEL_LAST).is_file()


def _check_demo_folder(config: PipelineConfig) -> None:
    """Refuse a work folder whose demo data another skyseg version (or setting) made.

    Everything in the folder (dataset, run, predictions) was made from those
    scenes, so regenerating the demo alone would mix two demos.
    """
    from skyseg.demo.synthetic import FORMAT_VERSION

    meta_path = config.demo_dir / "demo.json"
    if not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        made = (meta.get("format"), meta.get("settings", {}).get("scenes"),
                meta.get("settings", {}).get("width"), meta.get("settings", {}).get("seed"))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        made = None
    wanted = (FORMAT_VERSION, config.demo_scenes, config.demo_width, config.seed)
    if made != wanted:
        raise ConfigError(
            f"{config.work_dir} holds a demo made by another skyseg version or with other "
            f"settings (format, scenes, width, seed: {made} -> now {wanted}); everything in "
            f"it was made from that demo: delete the folder (rm -rf {config.work_dir}) or "
            "pass another --work-dir"
        )


@dataclass
class Step:
    """One stage of a pipeline run: the function it calls and the command it stands for.

    Attributes:
        stage: the stage's name (``skyseg STAGE``).
        command: the ``skyseg`` arguments that would do the same by hand; shown
            in the log, never parsed (``skyseg`` + :func:`shlex.join` of it).
        module: the stage module, imported when the step runs.
        function: the stage function of ``module`` (e.g. ``"build_dataset"``).
        kwargs: its keyword arguments.
        report: the function of ``module`` that shows the result and gives
            the exit status, as the command does (e.g. ``"report_dataset"``).
        report_kwargs: its keyword arguments besides the result.
        held_out: the source whose held-out image folder the step reads (linked
            just before), or None.
    """

    stage: str
    command: list[str]
    module: str
    function: str
    kwargs: dict
    report: str
    report_kwargs: dict = field(default_factory=dict)
    held_out: _Data | None = None

    @property
    def command_line(self) -> str:
        """``skyseg ...``: the step as a command to run by hand."""
        return "skyseg " + shlex.join(self.command)

    def __call__(self) -> int:
        """Call the stage function, then its report; the stage's exit status."""
        module = importlib.import_module(self.module)
        result = getattr(module, self.function)(**self.kwargs)
        return int(getattr(module, self.report)(result, **self.report_kwargs) or 0)


def _command(stage: str, *arguments, options=()) -> list[str]:
    """``[stage, *arguments, --flag value ...]``: None and False leave a flag out, True
    gives the flag alone."""
    argv = [stage, *(str(argument) for argument in arguments)]
    for flag, value in options:
        if value is None or value is False:
            continue
        argv += [flag] if value is True else [flag, str(value)]
    return argv


@dataclass(frozen=True)
class _Data:
    """One labelled source as the steps see it: the config's own ``images``/``coco``
    (name ``""``, the folders of before), or a ``sources:`` entry (its own subfolders)."""

    name: str
    images_dir: Path
    coco_file: Path | None
    split_files: dict
    split: str | None
    group_pattern: str | None
    mode: str | None
    convert_ldr: bool
    ignore_sky_gaps: bool
    stride: int | None
    weight: float
    dataset_dir: Path
    held_out_dir: Path
    predictions_dir: Path
    evaluation_dir: Path

    @property
    def label(self) -> str:
        return f"source {self.name!r}: " if self.name else ""

    @property
    def target(self) -> Path:
        """What predict and evaluate read: the held-out images when there is a val split."""
        return self.held_out_dir if "val" in self.split_files else self.images_dir


def _data(config: PipelineConfig) -> list[_Data]:
    """The sources of a pipeline run, in the config's order."""
    if not config.sources:
        return [_Data("", config.images_dir, config.coco_file, config.resolved_split_files(),
                      config.split, config.group_pattern, config.mode, False,
                      config.ignore_sky_gaps, config.stride, 1.0, config.dataset_dir,
                      config.work_dir / "held_out", config.predictions_dir,
                      config.evaluation_dir)]
    return [_Data(source.name, source.images, source.coco, dict(source.split_files),
                  source.split, source.group_pattern, source.mode, source.convert_ldr,
                  source.ignore_sky_gaps, source.stride or config.stride, source.weight,
                  config.dataset_dir / source.name, config.work_dir / "held_out" / source.name,
                  config.predictions_dir / source.name, config.evaluation_dir / source.name)
            for source in config.sources]


def plan_pipeline(config: PipelineConfig) -> list[Step]:
    """The stages the pipeline will run, after checking their inputs.

    Returns:
        the :class:`Step` of each stage, in order.

    Raises:
        ConfigError: a switched-off stage's output is needed and missing, or
            the data settings are incomplete.
    """
    sources = _data(config)
    if config.uses_synthetic_demo:
        _check_demo_folder(config)
    elif not config.uses_demo:
        for data in sources:
            _check_source(config, data)
    for data in sources:
        if not config.build_dataset and config.train and not (
                data.dataset_dir / "dataset.json").is_file():
            raise ConfigError(
                f"training needs the patch dataset in {data.dataset_dir}, which is not there; "
                "switch BUILD_DATASET on (--build-dataset=true) or point work_dir at a built one"
            )
    untrained = [run for run in config.run_dirs if not _has_model(run)]
    if not config.train and (config.predict or config.evaluate) and untrained:
        raise ConfigError(
            f"prediction and evaluation need a trained model in {untrained[0]}, which has "
            "none; switch TRAIN on (--train=true) or point work_dir at a finished run"
        )
    steps = [_demo_step(config)] if config.uses_synthetic_demo else []
    if config.previews:
        # Previews are for labelling HDR images; photos are labelled as they are.
        steps += [_previews_step(config, data) for data in sources
                  if data.mode != "ldr" and not data.convert_ldr]
    if config.build_dataset:
        steps += [_build_step(config, data) for data in sources]
    if config.train:
        steps += [_train_step(config, member) for member in range(len(config.run_dirs))]
    if config.predict:
        steps += [_predict_step(config, data) for data in sources]
    if config.evaluate:
        steps += [_evaluate_step(config, data) for data in sources]
    return steps


def _check_source(config: PipelineConfig, data: _Data) -> None:
    if not data.images_dir.is_dir():
        raise ConfigError(f"{data.label}images folder {data.images_dir} not found; set images: "
                          "in the config or --images")
    needs_labels = config.build_dataset or config.evaluate
    if needs_labels and (data.coco_file is None or not data.coco_file.is_file()):
        raise ConfigError(
            f"{data.label}the COCO export {data.coco_file} is missing; building the dataset "
            "and evaluating need it (set coco: or --coco, or switch those stages off)"
        )


def _demo_step(config: PipelineConfig) -> Step:
    kwargs = dict(out_dir=config.demo_dir, scenes=config.demo_scenes, width=config.demo_width,
                  seed=config.seed)
    return Step("demo-data", _command("demo-data", options=[
        ("--out", config.demo_dir), ("--scenes", config.demo_scenes),
        ("--width", config.demo_width), ("--seed", config.seed)]),
        "skyseg.demo.synthetic", "make_demo_data", kwargs, "report_demo_data")


def _previews_step(config: PipelineConfig, data: _Data) -> Step:
    out_dir = config.previews_dir / data.name if data.name else config.previews_dir
    kwargs = dict(inputs=[str(data.images_dir)], out_dir=out_dir, max_size=PREVIEW_SIZE)
    return Step("previews", _command("previews", data.images_dir, options=[
        ("--out", out_dir), ("--max-size", PREVIEW_SIZE)]),
        "skyseg.labels.previews", "make_previews", kwargs, "report_previews", {"out_dir": out_dir})


def _build_step(config: PipelineConfig, data: _Data) -> Step:
    from skyseg.data.dataset import clip_preprocessing

    split_files = data.split_files
    like = _init_path(config)
    mode = data.mode or ("hdr" if data.convert_ldr else None)
    kwargs = dict(coco=data.coco_file, images_dir=data.images_dir,
                  out_dir=data.dataset_dir, seed=config.seed, dtype=config.dtype,
                  mode=mode, patch_size=config.patch_size or None,
                  stride=data.stride or None, like=like,
                  preprocessing=clip_preprocessing(config.clip_max or None, mode=mode,
                                                   like=like),
                  scale=config.scale or None, split_files=split_files or None,
                  split=data.split or None, group_pattern=data.group_pattern or None,
                  ignore_sky_gaps=data.ignore_sky_gaps, exposure_key=config.exposure_key,
                  convert_ldr=data.convert_ldr)
    return Step("build-dataset", _command("build-dataset", options=[
        ("--coco", data.coco_file), ("--images", data.images_dir),
        ("--out", data.dataset_dir), ("--seed", config.seed), ("--dtype", config.dtype),
        ("--mode", kwargs["mode"]), ("--patch-size", kwargs["patch_size"]),
        ("--stride", kwargs["stride"]), ("--clip-max", config.clip_max or None),
        ("--scale", kwargs["scale"]), ("--exposure-key", config.exposure_key),
        *(("--split-file", f"{name}={path}") for name, path in split_files.items()),
        ("--split", kwargs["split"]), ("--group-pattern", kwargs["group_pattern"]),
        ("--ignore-sky-gaps", data.ignore_sky_gaps), ("--like", like),
        ("--convert-ldr", data.convert_ldr)]),
        "skyseg.data.dataset", "build_dataset", kwargs, "report_dataset")


def _init_path(config: PipelineConfig) -> Path | None:
    """The run training starts from (``init``; ``default``: the shipped model), or None."""
    if not config.init:
        return None
    from skyseg.io.run_folder import resolve_model_path

    return resolve_model_path(config.init)


def _train_step(config: PipelineConfig, member: int = 0) -> Step:
    """Training of ensemble member ``member`` (0: ``run`` with ``seed``; k: ``run-{k+1}``
    with ``seed + k``)."""
    from skyseg.training.train import progress_verbosity

    run_dir, seed = config.run_dirs[member], config.seed + member
    resume = (run_dir / "config.json").is_file()
    init = _init_path(config)
    # A fine-tuned run takes its architecture and backbone from the run it starts from.
    architecture, backbone = (None, None) if init is not None else (config.architecture,
                                                                     config.backbone)
    sources = _data(config)
    data = (sources[0].dataset_dir if len(sources) == 1
            else [f"{item.dataset_dir}={item.weight:g}" for item in sources])
    kwargs = dict(data_dir=data, out_dir=run_dir, epochs=config.epochs,
                  batch_size=config.batch_size, learning_rate=config.learning_rate,
                  architecture=architecture, backbone=backbone, seed=seed, init=init,
                  encoder_weights=config.encoder_weights or None,
                  steps_per_epoch=config.steps_per_epoch or None, resume=resume,
                  verbose=progress_verbosity())
    if config.patience:  # else train_model's (and --patience's) default
        kwargs["patience"] = config.patience
    return Step("train", _command("train", options=[
        *(("--data", item) for item in (data if isinstance(data, list) else [data])),
        ("--out", run_dir), ("--epochs", config.epochs),
        ("--batch-size", config.batch_size), ("--learning-rate", config.learning_rate),
        ("--architecture", architecture), ("--backbone", backbone), ("--init", init),
        ("--seed", seed), ("--encoder-weights", kwargs["encoder_weights"]),
        ("--steps-per-epoch", kwargs["steps_per_epoch"]),
        ("--patience", kwargs.get("patience")), ("--resume", resume)]),
        "skyseg.training.train", "train_model", kwargs, "report_training")


def _predict_step(config: PipelineConfig, data: _Data) -> Step:
    from skyseg.predict.predictor import default_prediction_options

    held_out = str(data.held_out_dir)
    inputs = (config.predict_inputs if config.predict_inputs and not config.sources
              else [str(data.target)])
    options = {}
    if config.tile_size:
        options["tile_size"] = config.tile_size
    if config.tta:
        options["tta"] = True
    kwargs = dict(model=_models(config), inputs=list(inputs),
                  out_dir=data.predictions_dir, **default_prediction_options(**options))
    return Step("predict", _command("predict", *inputs, options=[
        ("--model", config.run_dir), ("--out", data.predictions_dir),
        ("--tile-size", options.get("tile_size")),
        ("--tta", config.tta), *_ensemble_options(config)]),
        "skyseg.predict.predictor", "predict_files", kwargs, "report_predictions",
        {"out_dir": data.predictions_dir}, held_out=data if held_out in inputs else None)


def _evaluate_step(config: PipelineConfig, data: _Data) -> Step:
    from skyseg.predict.predictor import default_prediction_options

    target = data.target
    kwargs = dict(model=_models(config), images=target, coco=data.coco_file,
                  out_dir=data.evaluation_dir, **default_prediction_options())
    return Step("evaluate", _command("evaluate", config.run_dir, options=[
        ("--images", target), ("--coco", data.coco_file),
        ("--out", data.evaluation_dir), *_ensemble_options(config)]),
        "skyseg.evaluation.evaluate", "evaluate_model", kwargs, "report_evaluation",
        held_out=data if target == data.held_out_dir else None)


def _models(config: PipelineConfig) -> str | list[str]:
    """The run folder to predict with, or the list of all members' (an ensemble)."""
    runs = [str(run) for run in config.run_dirs]
    return runs[0] if len(runs) == 1 else runs


def _ensemble_options(config: PipelineConfig) -> list[tuple[str, Path]]:
    """``--ensemble RUN`` of every member after the first, for the logged command lines."""
    return [("--ensemble", run) for run in config.run_dirs[1:]]


def link_held_out(data: _Data) -> Path | None:
    """A folder of links to the validation images, so predict/evaluate see only those."""
    split_files = data.split_files
    if "val" not in split_files:
        return None
    val_list = Path(split_files["val"])
    if not val_list.is_file():
        raise ConfigError(f"validation list {val_list} not found; fix split_files")
    stems = set(_stem_list(val_list))
    from skyseg.io import IMAGE_SUFFIXES

    folder = data.held_out_dir
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in sorted(data.images_dir.iterdir()):
        if path.stem in stems and path.suffix.lower() in IMAGE_SUFFIXES:
            target = folder / path.name
            try:
                target.symlink_to(path.resolve())
            except OSError:  # file systems without symbolic links
                shutil.copy2(path, target)
    return folder


def run_pipeline(config: PipelineConfig) -> int:
    """Run the planned stages; returns 0, 1 (some inputs failed) or 2 (a stage failed).

    Each stage function is called directly with keyword arguments; its
    equivalent command line is logged first, so any step can be re-run by hand.

    Raises:
        ConfigError: as :func:`plan_pipeline`.
    """
    from skyseg.cli.commands import exit_status

    steps = plan_pipeline(config)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float, int]] = []
    worst = 0
    start_all = time.perf_counter()
    linked: set[str] = set()
    for step in steps:
        if step.held_out is not None and step.held_out.name not in linked:
            link_held_out(step.held_out)  # needs the demo data / images, made by earlier steps
            linked.add(step.held_out.name)
        logger.info("== %s: %s", step.stage, step.command_line)
        start = time.perf_counter()
        status = exit_status(f"skyseg {step.stage}", step)
        elapsed = time.perf_counter() - start
        timings.append((step.stage, elapsed, status))
        if status >= 2:
            logger.error("pipeline stopped: stage %s failed (exit status %d); see the message "
                         "above. Earlier results are kept; fix it and run again.", step.stage,
                         status)
            _summary(config, timings, time.perf_counter() - start_all)
            return 2
        worst = max(worst, status)
    _summary(config, timings, time.perf_counter() - start_all)
    return worst


def _summary(config: PipelineConfig, timings, total: float) -> None:
    lines = ["", "skyseg pipeline summary", ""]
    for stage, elapsed, status in timings:
        state = {0: "ok", 1: "some inputs failed"}.get(status, f"FAILED ({status})")
        lines.append(f"  {stage:<14} {elapsed:7.1f} s  {state}")
    lines.append(f"  {'total':<14} {total:7.1f} s")
    lines.append("")
    lines.append("Results:")
    where = [
        ("demo data", config.demo_dir if config.uses_demo else None),
        ("previews", config.previews_dir),
        ("dataset", config.dataset_dir),
        *(("model", run) for run in config.run_dirs),
        ("curves", config.run_dir / "curves.png"),
        ("predictions", config.predictions_dir),
        ("evaluation", config.evaluation_dir),
    ]
    for label, path in where:
        if path is not None and Path(path).exists():
            lines.append(f"  {label:<12} {path}")
    for data in _data(config):
        overlays = sorted(data.predictions_dir.glob("*_overlay.png")) if \
            data.predictions_dir.is_dir() else []
        for overlay in overlays:
            lines.append(f"  overlay      {overlay}")
        metrics = _evaluation_means(data.evaluation_dir)
        if metrics:
            pooled = metrics.pop("pooled_iou", None)
            lines.append(f"  {data.label}held-out scores (mean over images): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
                         + (f"; pooled IoU (all pixels) {pooled:.3f}" if pooled is not None
                            else ""))
    print("\n".join(lines))


def _evaluation_means(folder: Path) -> dict[str, float]:
    summary = folder / "summary.json"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
            means = data.get("mean", {})
            scores = {k: float(v) for k, v in means.items() if isinstance(v, (int, float))}
            pooled = data.get("pooled", {}).get("iou")
            if isinstance(pooled, (int, float)):
                scores["pooled_iou"] = float(pooled)
            return scores
        except (json.JSONDecodeError, ValueError, AttributeError):
            return {}
    table = folder / "metrics.csv"
    if not table.is_file():
        return {}
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    means = {}
    for key in ("iou", "dice", "boundary_f"):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")]
        if values:
            means[key] = sum(values) / len(values)
    return means


#: Options of the command line besides flags and data: (config key, type, help).
_OPTIONS = (
    ("epochs", int, "training epochs"),
    ("steps_per_epoch", int, "batches per training epoch (default: a pass over the patches)"),
    ("batch_size", int, "patches per training batch"),
    ("learning_rate", float, "peak learning rate (after the warm-up)"),
    ("backbone", str, "encoder of the U-Net (resnet34, resnet18, ...)"),
    ("patch_size", int, "training patch side in pixels"),
    ("stride", int, "step between training patches"),
    ("scale", float, "shrink images by this factor for training and prediction (e.g. 0.25)"),
    ("exposure_key", float, "HDR: bring each image's log-average luminance to this before the "
                            "log transform (e.g. 0.18; default: absolute radiance)"),
    ("tile_size", int, "prediction tile side (a multiple of 32)"),
    ("demo_scenes", int, "number of demo scenes"),
    ("demo_width", int, "width of the demo panoramas (height = width / 2)"),
    ("seed", int, "the one seed of every random choice"),
    ("members", int, "train this many runs (seeds seed, seed + 1, ...) and predict with the "
                     "mean of their probabilities (default 1; each adds one training)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file of settings (see skyseg/config.py); options override it")
    flags = parser.add_argument_group(
        "stage flags", "true/false; also from the environment: "
        + ", ".join(f"{v}" for v in STAGE_FLAGS.values()))
    for key in STAGE_FLAGS:
        flags.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="BOOL", default=None,
                           help=f"run the {key.replace('_', ' ')} stage (default true)")
    data = parser.add_argument_group("data (default: the bundled demo)")
    data.add_argument("--work-dir", type=Path, default=None,
                      help="folder for every result (default outputs/demo)")
    data.add_argument("--images", type=Path, default=None, help="folder of your images")
    data.add_argument("--coco", type=Path, default=None, help="your Label Studio COCO export")
    data.add_argument("--split-file", action="append", default=None, metavar="NAME=FILE",
                      help="image list of a split (train=..., val=...); repeatable")
    data.add_argument("--mode", choices=("hdr", "ldr"), default=None)
    data.add_argument("--demo", choices=DEMOS, default=None,
                      help="without --images: the bundled real panoramas (real, the default) "
                           "or generated synthetic scenes (synthetic)")
    options = parser.add_argument_group(
        "main options", "the rest (and these) can be set in the --config file")
    for name, kind, text in _OPTIONS:
        options.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                             dest=name, help=text)
    options.add_argument("--architecture", choices=ARCHITECTURES, default=None,
                         help="decoder of the network (default unet)")
    options.add_argument("--init", default=None, metavar="RUN",
                         help="fine-tune this run (default: the shipped model for the bundled "
                              "demo, none for your data); 'default' is the shipped model")


def config_from_args(args: argparse.Namespace, environ=None) -> PipelineConfig:
    """Defaults < YAML < environment < command line."""
    config = load_config(args.config)
    explicit = set()
    if args.config is not None:
        import yaml

        explicit = set(yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {})
    config.apply_environment(os.environ if environ is None else environ)
    values = {}
    for key in STAGE_FLAGS:
        value = getattr(args, key)
        if value is not None:
            values[key] = parse_bool(value, name=f"--{key.replace('_', '-')}")
    for key in ("work_dir", "images", "coco", "mode", "architecture", "demo", "init",
                *(name for name, _, _ in _OPTIONS)):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if args.split_file:
        pairs = {}
        for item in args.split_file:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--split-file expects NAME=FILE, got {item!r}")
            pairs[name] = path
        values["split_files"] = pairs
    config.update(values, source="command line")
    explicit |= set(values)
    if config.images is None and args.work_dir is None and "work_dir" not in explicit:
        config.work_dir = Path("outputs/demo")
    if config.uses_demo:
        defaults = dict(DEMO_DEFAULTS if config.demo == "synthetic" else REAL_DEMO_DEFAULTS)
        if explicit & {"architecture", "backbone", "encoder_weights"}:
            defaults.pop("init", None)  # another network: trained from scratch, not fine-tuned
        for key, value in defaults.items():
            if key not in explicit:
                setattr(config, key, value)
    elif "work_dir" not in explicit:
        config.work_dir = Path("outputs/pipeline")
    return config


def run(args: argparse.Namespace) -> int:
    return run_pipeline(config_from_args(args))

"""The whole workflow in one command: previews, dataset, training, prediction, evaluation.

``skyseg pipeline`` (what ``./run_pipeline.sh`` runs) calls the stage
functions in order (``make_demo_data``, ``make_previews``, ``build_dataset``,
``train_model``, ``predict_files``, ``evaluate_model``), each with its stage's
options object (the config's section, see :mod:`skyseg.cli.config`), then each
stage's ``report_*`` function, as the stage's command does. Before each step it
logs the equivalent ``skyseg`` command line, made from the same options object
(:func:`skyseg.options.to_argv`), so any step can be re-run by hand; it is
shown, never parsed. With no data given it
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
import dataclasses
import importlib
import json
import logging
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from skyseg.cli.config import PipelineConfig, SourceConfig, add_arguments, config_from_args
from skyseg.errors import ConfigError
from skyseg.options import to_argv

__all__ = ["run_pipeline", "plan_pipeline", "link_held_out", "Step", "CLI_HELP", "add_arguments",
           "config_from_args", "run"]

logger = logging.getLogger("skyseg")

CLI_HELP = "run the whole workflow (the demo when no data is given); what run_pipeline.sh runs"


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
    wanted = (FORMAT_VERSION, config.demo_data.scenes, config.demo_data.width, config.seed)
    if made != wanted:
        raise ConfigError(
            f"{config.work_dir} holds a demo made by another skyseg version or with other "
            f"settings (format, scenes, width, seed: {made} -> now {wanted}); everything in "
            f"it was made from that demo: delete the folder (rm -rf {config.work_dir}) or "
            "pass another --work-dir"
        )


@dataclass
class Step:
    """One stage of a pipeline run: a call of the stage function, and the command line
    that makes the same call.

    Both come from the same values: the stage's options object (its command-line options
    are :func:`~skyseg.options.to_argv` of it) and the other arguments, each with its
    spelling on the command line.

    Attributes:
        stage: the stage's name (``skyseg STAGE``; its module is ``commands.STAGES[stage]``).
        function: the stage function (e.g. ``"build_dataset"``).
        arguments: ``(parameter, flag, value)`` of each argument besides the options, in
            command-line order; flag None: a positional argument, ``""``: none (the
            command works the value out alike, e.g. ``verbose``).
        options: the stage's options object, passed as ``options``.
        report: the module's function that shows the result and gives the exit status,
            as the command does (e.g. ``"report_dataset"``).
        report_kwargs: its keyword arguments besides the result.
        held_out: the source whose held-out image folder the step reads (linked
            just before), or None.
        command: the ``skyseg`` arguments that make the same call by hand.

    Raises:
        ConfigError: the options hold a setting the command line cannot give.
    """

    stage: str
    function: str
    arguments: list[tuple[str, str | None, object]]
    options: object
    report: str
    report_kwargs: dict = field(default_factory=dict)
    held_out: _Data | None = None

    @property
    def kwargs(self) -> dict:
        """The stage function's keyword arguments."""
        return {name: value for name, _, value in self.arguments} | {"options": self.options}

    command: list[str] = field(init=False)

    def __post_init__(self):
        argv = [self.stage]
        for _, flag, value in self.arguments:
            argv += _spelled(flag, value)
        try:
            self.command = argv + to_argv(self.options)
        except ValueError as exc:  # a setting the command line cannot give
            raise ConfigError(f"pipeline step {self.stage}: {exc}; the pipeline runs only what "
                              f"the command line of skyseg {self.stage} can say (it logs that "
                              "command), so remove the setting from the config") from exc

    @property
    def command_line(self) -> str:
        """``skyseg ...``: the step as a command to run by hand (shown, never parsed)."""
        return "skyseg " + shlex.join(self.command)

    def __call__(self) -> int:
        """Call the stage function, then its report; the stage's exit status."""
        from skyseg.cli.commands import STAGES

        module = importlib.import_module(STAGES[self.stage])
        result = getattr(module, self.function)(**self.kwargs)
        return int(getattr(module, self.report)(result, **self.report_kwargs) or 0)


def _spelled(flag: str | None, value) -> list[str]:
    """One argument on the command line: None and False leave it out, True gives the flag
    alone, a list repeats the flag (or gives each positional value)."""
    if value is None or value is False or flag == "":
        return []
    if value is True:
        return [flag]
    values = [str(item) for item in (value if isinstance(value, list) else [value])]
    return values if flag is None else [part for item in values for part in (flag, item)]


@dataclass(frozen=True)
class _Data:
    """One labelled source as the steps see it: the config's own ``images``/``coco``
    (name ``""``, the folders of before), or a ``sources:`` entry (its own subfolders)."""

    source: SourceConfig
    work_dir: Path

    def folder(self, kind: str) -> Path:
        """``work_dir/KIND/NAME``: the source's ``dataset``, ``held_out``, ``predictions`` or
        ``evaluation`` folder (name ``""``: ``work_dir/KIND`` itself)."""
        return self.work_dir / kind / self.source.name

    @property
    def label(self) -> str:
        return f"source {self.source.name!r}: " if self.source.name else ""

    @property
    def target(self) -> Path:
        """What predict and evaluate read: the held-out images when there is a val split."""
        source = self.source
        return self.folder("held_out") if "val" in source.split_files else source.images


def _data(config: PipelineConfig) -> list[_Data]:
    """The sources of a pipeline run, in the config's order."""
    sources = config.sources or [SourceConfig(
        name="", images=config.images_dir, coco=config.coco_file,
        split_files=config.resolved_split_files(), split=config.split,
        group_pattern=config.group_pattern, mode=config.mode,
        convert_ldr=config.dataset.convert_ldr, ignore_sky_gaps=config.dataset.ignore_sky_gaps)]
    return [_Data(source, config.work_dir) for source in sources]


def plan_pipeline(config: PipelineConfig) -> list[Step]:
    """The stages the pipeline will run, after checking their inputs.

    Returns:
        the :class:`Step` of each stage, in order.

    Raises:
        ConfigError: a switched-off stage's output is needed and missing, or
            the data settings are incomplete.
    """
    sources = _data(config)
    _check_inputs(config, sources)
    steps = [_demo_step(config)] if config.uses_synthetic_demo else []
    if config.previews:
        # Previews are for labelling HDR images; photos are labelled as they are.
        steps += [_previews_step(config, data) for data in sources
                  if data.source.mode != "ldr" and not data.source.convert_ldr]
    if config.build_dataset:
        steps += [_build_step(config, data) for data in sources]
    if config.train:
        steps += [_train_step(config, member) for member in range(len(config.run_dirs))]
    if config.predict:
        steps += [_predict_step(config, data) for data in sources]
    if config.evaluate:
        steps += [_evaluate_step(config, data) for data in sources]
    return steps


def _check_inputs(config: PipelineConfig, sources: list[_Data]) -> None:
    """Each stage's input is there, or a stage before it will make it.

    Raises:
        ConfigError: naming what is missing and the flag or setting that fixes it.
    """
    if config.uses_synthetic_demo:
        _check_demo_folder(config)
    elif not config.uses_demo:
        for data in sources:
            _check_source(config, data)
    for data in sources:
        dataset = data.folder("dataset")
        if not config.build_dataset and config.train and not (dataset / "dataset.json").is_file():
            raise ConfigError(
                f"training needs the patch dataset in {dataset}, which is not there; "
                "switch BUILD_DATASET on (--build-dataset=true) or point work_dir at a built one"
            )
    untrained = [run for run in config.run_dirs if not _has_model(run)]
    if not config.train and (config.predict or config.evaluate) and untrained:
        raise ConfigError(
            f"prediction and evaluation need a trained model in {untrained[0]}, which has "
            "none; switch TRAIN on (--train=true) or point work_dir at a finished run"
        )


def _check_source(config: PipelineConfig, data: _Data) -> None:
    if not data.source.images.is_dir():
        raise ConfigError(f"{data.label}images folder {data.source.images} not found; set images: "
                          "in the config or --images")
    needs_labels = config.build_dataset or config.evaluate
    if needs_labels and (data.source.coco is None or not data.source.coco.is_file()):
        raise ConfigError(
            f"{data.label}the COCO export {data.source.coco} is missing; building the dataset "
            "and evaluating need it (set coco: or --coco, or switch those stages off)"
        )


def _demo_step(config: PipelineConfig) -> Step:
    options = dataclasses.replace(config.demo_data, seed=config.seed)
    return Step("demo-data", "make_demo_data", [("out_dir", "--out", config.demo_dir)], options,
                "report_demo_data")


def _previews_step(config: PipelineConfig, data: _Data) -> Step:
    out_dir = config.work_dir / "previews" / data.source.name
    return Step("previews", "make_previews",
                [("inputs", None, [str(data.source.images)]), ("out_dir", "--out", out_dir)],
                config.preview, "report_previews", {"out_dir": out_dir})


def _build_step(config: PipelineConfig, data: _Data) -> Step:
    source = data.source
    options = dataclasses.replace(
        config.dataset, seed=config.seed, mode=source.mode or ("hdr" if source.convert_ldr
                                                               else None),
        split_files=source.split_files or None, split=source.split,
        group_pattern=source.group_pattern, stride=source.stride or config.dataset.stride,
        ignore_sky_gaps=source.ignore_sky_gaps, convert_ldr=source.convert_ldr,
        like=_init_path(config))
    return Step("build-dataset", "build_dataset",
                [("coco", "--coco", source.coco), ("images_dir", "--images", source.images),
                 ("out_dir", "--out", data.folder("dataset"))], options, "report_dataset")


def _init_path(config: PipelineConfig) -> Path | None:
    """The run training starts from (``init``; ``default``: the shipped model), or None."""
    if not config.training.init:
        return None
    from skyseg.io.run_folder import resolve_model_path

    return resolve_model_path(config.training.init)


def _train_step(config: PipelineConfig, member: int = 0) -> Step:
    """Training of ensemble member ``member`` (0: ``run`` with ``seed``; k: ``run-{k+1}``
    with ``seed + k``)."""
    from skyseg.training.train import progress_verbosity

    run_dir = config.run_dirs[member]
    init = _init_path(config)
    options = dataclasses.replace(config.training, seed=config.seed + member,
                                  init=None if init is None else str(init),
                                  resume=(run_dir / "config.json").is_file())
    if init is not None:
        # A fine-tuned run takes its architecture and backbone from the run it starts from.
        options = dataclasses.replace(options, architecture=None, backbone=None)
    sources = _data(config)
    weighted = [(item.folder("dataset"), item.source.weight) for item in sources]
    data = (weighted[0][0] if len(sources) == 1
            else [f"{folder}={weight:g}" for folder, weight in weighted])
    return Step("train", "train_model",
                [("data_dir", "--data", data), ("out_dir", "--out", run_dir),
                 ("verbose", "", progress_verbosity())], options, "report_training")


def _predict_step(config: PipelineConfig, data: _Data) -> Step:
    inputs = (config.predict_inputs if config.predict_inputs and not config.sources
              else [str(data.target)])
    options = dataclasses.replace(config.prediction, ensemble=_ensemble(config))
    out_dir = data.folder("predictions")
    return Step("predict", "predict_files",
                [("inputs", None, list(inputs)), ("model", "--model", str(config.run_dir)),
                 ("out_dir", "--out", out_dir)], options, "report_predictions",
                {"out_dir": out_dir},
                held_out=data if str(data.folder("held_out")) in inputs else None)


def _evaluate_step(config: PipelineConfig, data: _Data) -> Step:
    target = data.target
    options = dataclasses.replace(config.evaluation, ensemble=_ensemble(config))
    return Step("evaluate", "evaluate_model",
                [("model", None, str(config.run_dir)), ("images", "--images", target),
                 ("coco", "--coco", data.source.coco),
                 ("out_dir", "--out", data.folder("evaluation"))], options, "report_evaluation",
                held_out=data if target == data.folder("held_out") else None)


def _ensemble(config: PipelineConfig) -> list[str]:
    """The members after the first, whose probabilities are averaged with ``run``'s."""
    return [str(run) for run in config.run_dirs[1:]]


def link_held_out(data: _Data) -> Path | None:
    """A folder of links to the validation images, so predict/evaluate see only those."""
    split_files = data.source.split_files
    if "val" not in split_files:
        return None
    val_list = Path(split_files["val"])
    if not val_list.is_file():
        raise ConfigError(f"validation list {val_list} not found; fix split_files")
    stems = set(_stem_list(val_list))
    from skyseg.io import IMAGE_SUFFIXES

    folder = data.folder("held_out")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in sorted(data.source.images.iterdir()):
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
        if step.held_out is not None and step.held_out.source.name not in linked:
            link_held_out(step.held_out)  # needs the demo data / images, made by earlier steps
            linked.add(step.held_out.source.name)
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
        ("previews", config.work_dir / "previews"),
        ("dataset", config.work_dir / "dataset"),
        *(("model", run) for run in config.run_dirs),
        ("curves", config.run_dir / "curves.png"),
        ("predictions", config.work_dir / "predictions"),
        ("evaluation", config.work_dir / "evaluation"),
    ]
    for label, path in where:
        if path is not None and Path(path).exists():
            lines.append(f"  {label:<12} {path}")
    for data in _data(config):
        overlays = sorted(data.folder("predictions").glob("*_overlay.png")) if \
            data.folder("predictions").is_dir() else []
        for overlay in overlays:
            lines.append(f"  overlay      {overlay}")
        metrics = _evaluation_means(data.folder("evaluation"))
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


def run(args: argparse.Namespace) -> int:
    return run_pipeline(config_from_args(args))

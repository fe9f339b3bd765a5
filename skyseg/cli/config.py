"""The pipeline's configuration: its own settings and one options object per stage.

Only ``skyseg pipeline`` (and ``run_pipeline.sh`` through it) reads a config file.
Precedence, lowest first: each stage's defaults (its options class; the demo's
settings, :data:`REAL_DEMO_DEFAULTS` or :data:`DEMO_DEFAULTS`, when no data is given),
the YAML file, environment variables (the stage flags ``PREVIEWS``,
``BUILD_DATASET``, ``TRAIN``, ``PREDICT``, ``EVALUATE``), command-line options.

Example YAML (every key optional)::

    work_dir: outputs/my-skies
    images: /data/skies/exr        # omit to use the bundled demo (real panoramas)
    coco: /data/skies/result.json
    split_files: {train: /data/skies/train.txt, val: /data/skies/val.txt}
    train: true                    # a stage flag: previews, build_dataset, train, predict, evaluate
    dataset: {patch_size: 512}     # skyseg build-dataset's options
    training:                      # skyseg train's options
      epochs: 30
      backbone: resnet34
    prediction: {tile_size: 1088, tta: true}

Each section holds one stage's options, named as the fields of its options class
(``skyseg STAGE --help`` lists them, with ``-`` for ``_``): ``demo_data`` (the
synthetic demo), ``preview``, ``dataset``, ``training``, ``prediction``,
``evaluation`` (:data:`SECTIONS`). The flat keys of before still work: ``epochs: 30``
is ``training: {epochs: 30}`` (:data:`FLAT_KEYS`). The seed, the data's mode and
splits are the pipeline's own settings, for every stage.

Several labelled sources in one training (each its own dataset, its own
held-out images and evaluation; ``weight``: its share of the training
patches)::

    work_dir: outputs/skies
    training: {init: default}      # fine-tune the shipped model
    sources:
      - name: panoramas
        images: /data/skies/hdr
        coco: /data/skies/result.json
        split_files: {train: /data/skies/train.txt, val: /data/skies/val.txt}
        weight: 2
      - name: photos
        images: /data/photos
        coco: /data/photos/result.json
        split: "0.8,0.2"
        convert_ldr: true          # LDR photos into the HDR model, as linear radiance
        ignore_sky_gaps: true
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from skyseg.data.dataset import DatasetOptions
from skyseg.demo.synthetic import DemoOptions
from skyseg.errors import ConfigError
from skyseg.evaluation.evaluate import EvaluateOptions
from skyseg.labels.previews import PreviewsOptions
from skyseg.options import add_options, from_mapping, option, option_fields, option_flag, parse_bool
from skyseg.predict.options import PredictOptions
from skyseg.training.options import TrainOptions

__all__ = ["PipelineConfig", "SourceConfig", "STAGE_FLAGS", "SECTIONS", "FLAT_KEYS", "DEMOS",
           "PREVIEW_SIZE", "REAL_DEMO_DEFAULTS", "DEMO_DEFAULTS", "load_config", "read_yaml",
           "add_arguments", "config_from_args"]

#: Stage flag -> the section of that stage's options.
_FLAG_SECTIONS = {"previews": "preview", "build_dataset": "dataset", "train": "training",
                  "predict": "prediction", "evaluate": "evaluation"}
#: Stage flag -> environment variable, in workflow order.
STAGE_FLAGS = {flag: flag.upper() for flag in _FLAG_SECTIONS}
#: What ``demo`` may be: the bundled real panoramas or generated synthetic scenes.
DEMOS = ("real", "synthetic")
#: Section of the YAML file -> the options class of its stage.
SECTIONS = {"demo_data": DemoOptions, "preview": PreviewsOptions, "dataset": DatasetOptions,
            "training": TrainOptions, "prediction": PredictOptions,
            "evaluation": EvaluateOptions}
#: The flat keys of the YAML file of before -> (section, field) they set.
FLAT_KEYS = {
    "demo_scenes": ("demo_data", "scenes"),
    "demo_width": ("demo_data", "width"),
    **{key: ("dataset", key) for key in ("patch_size", "stride", "dtype", "clip_max", "scale",
                                         "exposure_key", "ignore_sky_gaps")},
    **{key: ("training", key) for key in ("epochs", "batch_size", "learning_rate",
                                          "architecture", "backbone", "encoder_weights",
                                          "init", "steps_per_epoch", "patience")},
    "tile_size": ("prediction", "tile_size"),
    "tta": ("prediction", "tta"),
}
#: Stage options the pipeline sets for every stage from its own settings (seed, mode and
#: splits), from ``members`` (ensemble), ``training.init`` (like) and the run folder (resume).
_PIPELINE_SETS = ("seed", "mode", "split", "split_files", "group_pattern", "ensemble", "like",
                  "resume")
#: Long side of the previews the pipeline writes.
PREVIEW_SIZE = 2048

#: Settings of the bundled real demo: the shipped model (an EfficientNet-Lite0
#: U-Net) fine-tuned on the four training panoramas for 3 x 25 batches, a few
#: minutes of CPU. A config file or options override them.
REAL_DEMO_DEFAULTS = {
    "dataset": {"patch_size": 256, "stride": 128},
    "training": {"init": "default", "epochs": 3, "steps_per_epoch": 25, "batch_size": 8,
                 "learning_rate": 2e-4, "patience": 15},
}
#: Smaller settings for the synthetic demo (``--demo synthetic``) so that the
#: whole pipeline fits in a few minutes on a laptop CPU.
DEMO_DEFAULTS = {
    # Train on the 1024x512 panoramas shrunk to 256x128: a 128-px patch then
    # holds the whole height, sky to ground, and a ResNet18 U-Net reaches a
    # held-out IoU above 0.9 in a few minutes of CPU (ResNet34 at full size
    # needs hours there). Predict shrinks the same way and returns full-size masks.
    "dataset": {"scale": 0.25, "patch_size": 128, "stride": 32},
    "training": {"backbone": "resnet18", "epochs": 15, "batch_size": 8, "patience": 15},
}
#: Settings that mean another network than the shipped one: the demo then trains from
#: scratch rather than fine-tuning it.
_OTHER_NETWORK = {"training.architecture", "training.backbone", "training.encoder_weights"}

#: ``skyseg pipeline``'s command line: the data, then settings of the pipeline and of the
#: stages (flat keys); the rest can be set in the --config file.
_DATA_OPTIONS = ("work_dir", "images", "coco", "split_files", "mode", "demo")
_MAIN_OPTIONS = ("epochs", "steps_per_epoch", "batch_size", "learning_rate", "backbone",
                 "patch_size", "stride", "scale", "exposure_key", "tile_size", "demo_scenes",
                 "demo_width", "seed", "members", "architecture", "init")


def _section(cls, help: str, **values):
    return option(default_factory=lambda: cls(**values), help=help, cli=False, yaml=False)


@dataclass
class SourceConfig:
    """One labelled source of a pipeline (a ``sources:`` entry of the YAML config)."""

    name: str = option(help="names its dataset (work_dir/dataset/NAME), held-out images, "
                            "predictions and evaluation folders")
    images: Path = option(help="folder of its images")
    coco: Path = option(help="its Label Studio COCO export")
    weight: float = option(1.0, "its share of the training patches, relative to the others'")
    split_files: dict[str, Path] = option(default_factory=dict, help="image list of each split "
                                          "(train, val); its val images are scored on their own")
    split: str | None = option(None, "train/val fractions when there are no split files")
    group_pattern: str | None = option(None, "images whose names match alike stay together")
    mode: str | None = option(None, "hdr or ldr (default: from the images)",
                              choices=("hdr", "ldr"))
    convert_ldr: bool = option(False, "build LDR photos into an HDR dataset (linear radiance)")
    ignore_sky_gaps: bool = option(False, "leave sky between bare branches out of training")
    stride: int | None = option(None, "its patch stride (default: the dataset section's)")

    @classmethod
    def from_mapping(cls, values, *, source: str, base: Path | None = None) -> SourceConfig:
        """A ``sources:`` entry, paths relative to ``base`` (the config file's folder).

        Raises:
            ConfigError: not a mapping, a missing or unknown key, a bad value.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: each entry of sources is a mapping with name, images "
                              f"and coco; got {values!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        missing = [key for key in ("name", "images", "coco") if not values.get(key)]
        name = values.get("name", "?")
        if unknown or missing:
            raise ConfigError(f"{source}: source {name!r}: "
                              + (f"unknown key(s) {unknown}; " if unknown else "")
                              + (f"missing {', '.join(missing)}; " if missing else "")
                              + f"known keys: {', '.join(sorted(known))}")
        entry = from_mapping(cls, values, source=f"{source}: source {name!r}", base=base,
                             start=cls(name="", images=Path(), coco=Path()))
        if not entry.weight > 0:
            raise ConfigError(f"{source}: source {entry.name!r}: weight must be positive, got "
                              f"{entry.weight:g}")
        return entry


@dataclass
class PipelineConfig:
    """Everything ``skyseg pipeline`` needs; the defaults run the bundled demo.

    The pipeline's own settings are fields (stage flags, data, demo, members, seed,
    sources); each stage's options are a section, an object of the stage's options
    class (:data:`SECTIONS`): ``config.training.epochs``.

    Example:
        >>> config = PipelineConfig(training=TrainOptions(epochs=3))
        >>> config.training.epochs, config.run_dir
        (3, PosixPath('outputs/demo/run'))
    """

    previews: bool = option(True, "make JPEG previews of HDR images for labelling", cli=False)
    build_dataset: bool = option(True, "build the patch dataset", cli=False)
    train: bool = option(True, "train the model (each member of an ensemble)", cli=False)
    predict: bool = option(True, "predict the held-out images", cli=False)
    evaluate: bool = option(True, "score the held-out images against their labels", cli=False)

    work_dir: Path = option(Path("outputs/demo"), "folder for every result (default "
                                                  "outputs/demo; outputs/pipeline for your data)")
    images: Path | None = option(None, "folder of your images")
    coco: Path | None = option(None, "your Label Studio COCO export")
    split_files: dict[str, Path] = option(
        default_factory=dict, help="image list of a split (train=..., val=...); repeatable",
        flag="--split-file", metavar="NAME=FILE", action="append", type=str)
    split: str | None = option(None, "train/val fractions when there are no split files",
                               cli=False)
    group_pattern: str | None = option(None, "images whose names match alike stay in one split",
                                       cli=False)
    mode: str | None = option(None, "hdr or ldr (default: from the images)",
                              choices=("hdr", "ldr"))
    demo: str = option("real", "without --images: the bundled real panoramas (real, the "
                               "default) or generated synthetic scenes (synthetic)",
                       choices=DEMOS)
    predict_inputs: list[str] | None = option(
        None, "what to predict (default: the held-out images)", cli=False)
    members: int = option(1, "train this many runs (seeds seed, seed + 1, ...) and predict with "
                             "the mean of their probabilities (default 1; each adds one training)")
    seed: int = option(0, "the one seed of every random choice")
    sources: list[SourceConfig] = option(default_factory=list, cli=False, yaml=False,
                                         help="several labelled sources, each with its own "
                                              "dataset, held-out images and scores")

    demo_data: DemoOptions = _section(DemoOptions, "the synthetic demo's scenes")
    preview: PreviewsOptions = _section(PreviewsOptions, "skyseg previews",
                                        max_size=PREVIEW_SIZE)
    dataset: DatasetOptions = _section(DatasetOptions, "skyseg build-dataset")
    training: TrainOptions = _section(TrainOptions, "skyseg train")
    prediction: PredictOptions = _section(PredictOptions, "skyseg predict")
    evaluation: EvaluateOptions = _section(EvaluateOptions, "skyseg evaluate")

    # ------------------------------------------------------------------ derived paths
    @property
    def uses_demo(self) -> bool:
        return self.images is None and not self.sources

    @property
    def uses_synthetic_demo(self) -> bool:
        return self.uses_demo and self.demo == "synthetic"

    @property
    def demo_dir(self) -> Path:
        """The demo's data: the bundled real panoramas, or the synthetic scenes' folder."""
        if self.demo == "real":
            from skyseg.resources import RESOURCES

            return RESOURCES / "demo"
        return self.work_dir / "demo"

    @property
    def images_dir(self) -> Path:
        return self.demo_dir / "images" if self.images is None else Path(self.images)

    @property
    def coco_file(self) -> Path | None:
        return self.demo_dir / "result.json" if self.images is None else self.coco

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "run"

    @property
    def run_dirs(self) -> list[Path]:
        """``run``, then ``run-2``, ``run-3``, ... : one folder per ensemble member."""
        return [self.run_dir] + [self.work_dir / f"run-{k}" for k in range(2, self.members + 1)]

    def resolved_split_files(self) -> dict[str, Path]:
        if self.split_files or self.split or self.group_pattern:
            return {k: Path(v) for k, v in self.split_files.items()}
        if self.uses_demo:
            return {"train": self.demo_dir / "train.txt", "val": self.demo_dir / "val.txt"}
        return {}

    # ------------------------------------------------------------------ loading
    def update(self, values: dict, *, source: str, base: Path | None = None) -> set[str]:
        """Set what a mapping (a YAML file's, the command line's) gives, types converted.

        Args:
            values: own settings, sections (``{"training": {"epochs": 3}}``) and flat keys
                (``{"epochs": 3}``).
            source: names the file in error messages.
            base: relative paths are taken relative to this folder (the file's).

        Returns:
            what was set: own settings by name, stage options as ``section.field``.

        Raises:
            ConfigError: an unknown key (the known ones are listed), a bad value.
        """
        own, sections = _sort_settings(values, source)
        given = set(own) | {f"{name}.{key}" for name, settings in sections.items()
                            for key in settings}
        if "sources" in own:
            self.sources = _read_sources(own.pop("sources"), source=source, base=base)
        updated = from_mapping(PipelineConfig, own, source=source, base=base, start=self)
        for key in own:
            setattr(self, key, getattr(updated, key))
        for name, settings in sections.items():
            setattr(self, name, from_mapping(SECTIONS[name], settings, source=f"{source}: {name}",
                                             base=base, start=getattr(self, name)))
        self._check(source)
        return given

    def _check(self, source: str) -> None:
        if self.members is None or self.members < 1:
            raise ConfigError(f"{source}: members = {self.members!r}; give 1 (one run) or "
                              "more (an ensemble of runs trained with seeds seed, seed + 1, ...)")
        if self.sources and self.images is not None:
            raise ConfigError(f"{source}: give either images/coco or sources, not both")

    def apply_environment(self, environ=None) -> None:
        """Stage flags from PREVIEWS, BUILD_DATASET, TRAIN, PREDICT, EVALUATE."""
        environ = os.environ if environ is None else environ
        for key, variable in STAGE_FLAGS.items():
            if environ.get(variable, "").strip():
                setattr(self, key, parse_bool(environ[variable], name=variable))


def _own_keys() -> list[str]:
    return [field.name for field, _ in option_fields(PipelineConfig) if field.name not in SECTIONS]


def _sort_settings(values, source: str) -> tuple[dict, dict[str, dict]]:
    """``values`` as (own settings, section -> its settings), flat keys in their section.

    Raises:
        ConfigError: not a mapping, an unknown key, a section that is not a mapping or
            sets what the pipeline sets, a stage flag given settings.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got "
                          f"{type(values).__name__}")
    own_keys = _own_keys()
    unknown = sorted(set(values) - set(own_keys) - set(SECTIONS) - set(FLAT_KEYS))
    if unknown:
        known = sorted([*own_keys, *SECTIONS, *FLAT_KEYS])
        raise ConfigError(f"{source}: unknown setting(s) {unknown}; known: {', '.join(known)}")
    own: dict = {}
    sections: dict[str, dict] = {}
    for key, value in values.items():
        if key in _FLAG_SECTIONS and isinstance(value, dict):
            raise ConfigError(f"{source}: {key} is a stage flag (true or false); the stage's "
                              f"options go in the {_FLAG_SECTIONS[key]} section")
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key}: expected a mapping of "
                                  f"{SECTIONS[key].__name__} settings, got {value!r}")
            sections.setdefault(key, {}).update(value)
        elif key in FLAT_KEYS:
            section, name = FLAT_KEYS[key]
            sections.setdefault(section, {})[name] = value
        else:
            own[key] = value
    for name, settings in sections.items():
        theirs = sorted(set(settings) & set(_PIPELINE_SETS))
        if theirs:
            raise ConfigError(f"{source}: {name}: {', '.join(theirs)} the pipeline sets for "
                              "every stage (seed, mode and the splits from the top level of "
                              "the file, ensemble from members, like from training.init, resume "
                              "from the run folder); remove them from the section")
    return own, sections


def _read_sources(values, *, source: str, base: Path | None) -> list[SourceConfig]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{source}: sources = {values!r} is not a valid value; give a list "
                          "of entries with name, images and coco")
    entries = [SourceConfig.from_mapping(item, source=source, base=base) for item in values]
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: two sources share a name in {names}; name each "
                          "source differently")
    return entries


def read_yaml(path: str | os.PathLike) -> dict:
    """The settings of a YAML config file (an empty file: none).

    Raises:
        ConfigError: missing file, invalid YAML, not a mapping.
    """
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the file") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return values


def load_config(path: str | os.PathLike | None) -> PipelineConfig:
    """Defaults, updated from a YAML file when ``path`` is given (relative paths in it are
    relative to the file, not to the shell).

    Raises:
        ConfigError: missing file, invalid YAML, unknown keys, bad values.
    """
    config = PipelineConfig()
    if path is not None:
        config.update(read_yaml(path), source=str(path), base=Path(path).parent)
    return config


# ---------------------------------------------------------------------- the command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``skyseg pipeline``'s options, made from :class:`PipelineConfig` and the stages'
    options classes (their help); an option not given leaves the setting alone."""
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file of settings (see skyseg/cli/config.py); options "
                             "override it")
    flags = parser.add_argument_group(
        "stage flags", "true/false; also from the environment: " + ", ".join(STAGE_FLAGS.values()))
    for field, _ in option_fields(PipelineConfig):
        if field.name in STAGE_FLAGS:
            flags.add_argument(option_flag(field), dest=field.name, metavar="BOOL", default=None,
                               help=f"{field.metadata['help']} (default true)")
    data = parser.add_argument_group("data (default: the bundled demo)")
    add_options(data, PipelineConfig, only=_DATA_OPTIONS, default=argparse.SUPPRESS)
    main = parser.add_argument_group("main options",
                                     "the rest (and these) can be set in the --config file")
    for key in _MAIN_OPTIONS:
        if key in FLAT_KEYS:
            section, name = FLAT_KEYS[key]
            add_options(main, SECTIONS[section], only=(name,), dest_prefix=f"{section}.",
                        flags={name: "--" + key.replace("_", "-")}, default=argparse.SUPPRESS)
        else:
            add_options(main, PipelineConfig, only=(key,), default=argparse.SUPPRESS)


def _command_line_settings(args: argparse.Namespace) -> dict:
    """The settings the parsed command line gives, as :meth:`PipelineConfig.update` takes them.

    Raises:
        ConfigError: a stage flag that is not true/false, a bad ``--split-file``.
    """
    from skyseg.data.splits import parse_split_file_args

    values: dict = {}
    for key in STAGE_FLAGS:
        if getattr(args, key, None) is not None:
            values[key] = parse_bool(getattr(args, key), name=f"--{key.replace('_', '-')}")
    for dest, value in vars(args).items():
        section, dot, name = dest.partition(".")
        if dot and section in SECTIONS:
            values.setdefault(section, {})[name] = value
        elif dest in _DATA_OPTIONS or dest in _MAIN_OPTIONS:
            values[dest] = value
    if "split_files" in values:
        values["split_files"] = parse_split_file_args(values["split_files"])
    return values


def config_from_args(args: argparse.Namespace, environ=None) -> PipelineConfig:
    """Defaults < YAML < environment < command line; the demo's settings
    (:data:`REAL_DEMO_DEFAULTS`, :data:`DEMO_DEFAULTS`) where neither the file nor the
    command line set them.

    Raises:
        ConfigError: as :meth:`PipelineConfig.update`, a stage flag that is not true/false.
    """
    config = PipelineConfig()
    explicit: set[str] = set()
    if args.config is not None:
        explicit |= config.update(read_yaml(args.config), source=str(args.config),
                                  base=Path(args.config).parent)
    config.apply_environment(os.environ if environ is None else environ)
    explicit |= config.update(_command_line_settings(args), source="command line")
    if "work_dir" not in explicit:
        config.work_dir = Path("outputs/demo" if config.uses_demo else "outputs/pipeline")
    if config.uses_demo:
        _apply_demo_settings(config, explicit)
    return config


def _apply_demo_settings(config: PipelineConfig, explicit: set[str]) -> None:
    """The demo's settings, in each section, for what ``explicit`` does not name."""
    settings = DEMO_DEFAULTS if config.demo == "synthetic" else REAL_DEMO_DEFAULTS
    for section, values in settings.items():
        keep = {key: value for key, value in values.items()
                if f"{section}.{key}" not in explicit}
        if explicit & _OTHER_NETWORK:
            keep.pop("init", None)  # another network: trained from scratch, not fine-tuned
        setattr(config, section, dataclasses.replace(getattr(config, section), **keep))

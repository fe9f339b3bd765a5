"""The pipeline's configuration: one dataclass, loaded from YAML at the edge.

Stage functions take flat keyword arguments; only ``skyseg pipeline`` (and
``run_pipeline.sh`` through it) reads a config file. Precedence, lowest
first: the defaults below, the YAML file, environment variables (the stage
flags ``PREVIEWS``, ``BUILD_DATASET``, ``TRAIN``, ``PREDICT``, ``EVALUATE``),
command-line options.

Example YAML (every key optional)::

    work_dir: outputs/my-skies
    images: /data/skies/exr        # omit to use the bundled demo (real panoramas)
    coco: /data/skies/result.json
    split_files: {train: /data/skies/train.txt, val: /data/skies/val.txt}
    train: true
    epochs: 30
    backbone: resnet34

Several labelled sources in one training (each its own dataset, its own
held-out images and evaluation; ``weight``: its share of the training
patches)::

    work_dir: outputs/skies
    init: default                  # fine-tune the shipped model
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

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from skyseg.errors import ConfigError
from skyseg.options import parse_bool

__all__ = ["PipelineConfig", "SourceConfig", "STAGE_FLAGS", "load_config"]

#: Stage flag -> environment variable, in workflow order.
STAGE_FLAGS = {
    "previews": "PREVIEWS",
    "build_dataset": "BUILD_DATASET",
    "train": "TRAIN",
    "predict": "PREDICT",
    "evaluate": "EVALUATE",
}


@dataclass
class SourceConfig:
    """One labelled source of a pipeline (a ``sources:`` entry of the YAML config).

    Attributes:
        name: names its dataset (``work_dir/dataset/NAME``), held-out images,
            predictions and evaluation folders.
        images, coco: the images and their Label Studio COCO export.
        weight: its share of the training patches, relative to the others'.
        split_files, split, group_pattern: how its images split into
            train/val (as ``skyseg build-dataset``); its val images are
            predicted and scored on their own.
        mode: ``hdr``/``ldr`` (None: from the images).
        convert_ldr: build LDR photos into an HDR dataset (linear radiance).
        ignore_sky_gaps: leave sky between bare branches out (as build-dataset).
        stride: its patch stride (None: the pipeline's).
    """

    name: str
    images: Path
    coco: Path
    weight: float = 1.0
    split_files: dict[str, Path] = field(default_factory=dict)
    split: str | None = None
    group_pattern: str | None = None
    mode: str | None = None
    convert_ldr: bool = False
    ignore_sky_gaps: bool = False
    stride: int | None = None

    @classmethod
    def from_mapping(cls, values, *, source: str, base: Path | None = None) -> SourceConfig:
        """A ``sources:`` entry, paths relative to ``base`` (the config file's folder).

        Raises:
            ConfigError: not a mapping, a missing or unknown key, a bad value.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: each entry of sources is a mapping with name, images "
                              f"and coco; got {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        missing = [key for key in ("name", "images", "coco") if not values.get(key)]
        if unknown or missing:
            raise ConfigError(f"{source}: source {values.get('name', '?')!r}: "
                              + (f"unknown key(s) {unknown}; " if unknown else "")
                              + (f"missing {', '.join(missing)}; " if missing else "")
                              + f"known keys: {', '.join(sorted(known))}")

        def path(value) -> Path:
            value = Path(os.path.expanduser(str(value)))
            return value if base is None or value.is_absolute() else base / value

        try:
            weight = float(values.get("weight", 1.0))
            stride = values.get("stride")
            stride = None if stride is None else int(stride)
            split_files = values.get("split_files") or {}
            if not isinstance(split_files, dict):
                raise ValueError("split_files")
            entry = cls(name=str(values["name"]), images=path(values["images"]),
                        coco=path(values["coco"]), weight=weight,
                        split_files={str(k): path(v) for k, v in split_files.items()},
                        split=None if values.get("split") is None else str(values["split"]),
                        group_pattern=values.get("group_pattern"), mode=values.get("mode"),
                        convert_ldr=parse_bool(values.get("convert_ldr", False),
                                               name="convert_ldr"),
                        ignore_sky_gaps=parse_bool(values.get("ignore_sky_gaps", False),
                                                   name="ignore_sky_gaps"),
                        stride=stride)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: source {values.get('name')!r}: a bad value ({exc})"
                              ) from exc
        if not weight > 0:
            raise ConfigError(f"{source}: source {entry.name!r}: weight must be positive, got "
                              f"{weight:g}")
        return entry


@dataclass
class PipelineConfig:
    """Everything ``skyseg pipeline`` needs; defaults run the bundled demo.

    Stage flags: previews, build_dataset, train, predict, evaluate.
    Data: ``images`` + ``coco`` (None: the bundled demo, ``demo``:
    ``"real"``, eight real labelled HDR panoramas shipped with skyseg, or
    ``"synthetic"``, scenes generated into ``work_dir/demo``), ``split_files``
    or ``split`` / ``group_pattern``, ``mode`` (hdr/ldr, None: from the images).
    Dataset: patch_size, stride, dtype, clip_max, scale (shrink factor),
    exposure_key (HDR: each image's log-average luminance before the log
    transform, e.g. 0.18; None or 0: absolute radiance),
    ignore_sky_gaps (sky between bare branches left out of training).
    Training: epochs, batch_size, learning_rate, architecture, backbone,
    encoder_weights, steps_per_epoch, patience, init (a run to fine-tune, or
    ``default``: the model shipped with skyseg); members (how many runs are
    trained, with seeds seed, seed + 1, ...: prediction and evaluation
    average them, an ensemble).
    Prediction: predict_inputs (None: the validation images), tile_size, tta.
    ``seed`` drives every random choice.
    """

    previews: bool = True
    build_dataset: bool = True
    train: bool = True
    predict: bool = True
    evaluate: bool = True

    work_dir: Path = Path("outputs/demo")
    images: Path | None = None
    coco: Path | None = None
    split_files: dict[str, Path] = field(default_factory=dict)
    split: str | None = None
    group_pattern: str | None = None
    mode: str | None = None

    demo: str = "real"
    demo_scenes: int = 64
    demo_width: int = 1024

    patch_size: int | None = None
    stride: int | None = None
    dtype: str = "float16"
    clip_max: float | None = None
    scale: float | None = None
    exposure_key: float | None = None
    ignore_sky_gaps: bool = False

    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    architecture: str = "unet"
    backbone: str = "resnet34"
    encoder_weights: str | None = None
    init: str | None = None
    steps_per_epoch: int | None = None
    patience: int | None = None
    members: int = 1

    predict_inputs: list[str] | None = None
    tile_size: int | None = None
    tta: bool = False

    seed: int = 0
    sources: list[SourceConfig] = field(default_factory=list)

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
    def previews_dir(self) -> Path:
        return self.work_dir / "previews"

    @property
    def dataset_dir(self) -> Path:
        return self.work_dir / "dataset"

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "run"

    @property
    def run_dirs(self) -> list[Path]:
        """``run``, then ``run-2``, ``run-3``, ... : one folder per ensemble member."""
        return [self.run_dir] + [self.work_dir / f"run-{k}" for k in range(2, self.members + 1)]

    @property
    def predictions_dir(self) -> Path:
        return self.work_dir / "predictions"

    @property
    def evaluation_dir(self) -> Path:
        return self.work_dir / "evaluation"

    def resolved_split_files(self) -> dict[str, Path]:
        if self.split_files or self.split or self.group_pattern:
            return {k: Path(v) for k, v in self.split_files.items()}
        if self.uses_demo:
            return {"train": self.demo_dir / "train.txt", "val": self.demo_dir / "val.txt"}
        return {}

    # ------------------------------------------------------------------ loading
    def update(self, values: dict, *, source: str) -> None:
        """Set fields from a mapping, converting types; unknown keys are an error."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {unknown}; known: {', '.join(sorted(fields))}"
            )
        for key, value in values.items():
            setattr(self, key, _convert(key, value, getattr(self, key), source))
        if self.demo not in DEMOS:
            raise ConfigError(f"{source}: demo = {self.demo!r}; choose one of "
                              f"{', '.join(DEMOS)}")
        if self.members is None or self.members < 1:
            raise ConfigError(f"{source}: members = {self.members!r}; give 1 (one run) or "
                              "more (an ensemble of runs trained with seeds seed, seed + 1, ...)")

    def apply_environment(self, environ=None) -> None:
        """Stage flags from PREVIEWS, BUILD_DATASET, TRAIN, PREDICT, EVALUATE."""
        environ = os.environ if environ is None else environ
        for key, variable in STAGE_FLAGS.items():
            if environ.get(variable, "").strip():
                setattr(self, key, parse_bool(environ[variable], name=variable))

    def to_dict(self) -> dict:
        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        return {key: plain(value) for key, value in dataclasses.asdict(self).items()}


#: What ``demo`` may be: the bundled real panoramas or generated synthetic scenes.
DEMOS = ("real", "synthetic")
_PATH_KEYS = {"work_dir", "images", "coco"}
_BOOL_KEYS = set(STAGE_FLAGS) | {"tta", "ignore_sky_gaps"}
_INT_KEYS = {"demo_scenes", "demo_width", "patch_size", "stride", "epochs", "batch_size",
             "steps_per_epoch", "patience", "tile_size", "seed", "members"}
_FLOAT_KEYS = {"learning_rate", "clip_max", "scale", "exposure_key"}


def _convert(key: str, value, current, source: str):
    if value is None:
        return None
    try:
        if key in _BOOL_KEYS:
            return parse_bool(value, name=key)
        if key in _PATH_KEYS:
            return Path(os.path.expanduser(str(value)))
        if key in _INT_KEYS:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if key in _FLOAT_KEYS:
            return float(value)
        if key == "split_files":
            if not isinstance(value, dict):
                raise ValueError
            return {str(k): Path(os.path.expanduser(str(v))) for k, v in value.items()}
        if key == "sources":
            if not isinstance(value, list) or not value:
                raise ValueError("sources")
            entries = [SourceConfig.from_mapping(item, source=source) for item in value]
            names = [entry.name for entry in entries]
            if len(set(names)) != len(names):
                raise ConfigError(f"{source}: two sources share a name in {names}; name each "
                                  "source differently")
            return entries
        if key == "predict_inputs":
            return [str(v) for v in ([value] if isinstance(value, str) else value)]
        return str(value)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {key} = {value!r} is not a valid value") from exc


def load_config(path: str | os.PathLike | None) -> PipelineConfig:
    """Defaults, updated from a YAML file when ``path`` is given.

    Raises:
        ConfigError: missing file, invalid YAML, unknown keys, bad values.
    """
    config = PipelineConfig()
    if path is None:
        return config
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
        return config
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    base = path.parent
    config.update(values, source=str(path))
    # Relative paths in a config file are relative to the file, not to the shell.
    for key in ("images", "coco"):
        value = getattr(config, key)
        if value is not None and not value.is_absolute():
            setattr(config, key, base / value)
    if "work_dir" in values and not config.work_dir.is_absolute():
        config.work_dir = base / config.work_dir
    config.split_files = {k: v if v.is_absolute() else base / v
                          for k, v in config.split_files.items()}
    if "sources" in values:
        config.sources = [SourceConfig.from_mapping(item, source=str(path), base=base)
                          for item in values["sources"]]
        if config.images is not None:
            raise ConfigError(f"{path}: give either images/coco or sources, not both")
    return config

"""What a training run is: its checked options and what its data adds (``config.json``).

:class:`RunSettings` holds a :class:`~skyseg.training.options.TrainOptions`
(checked, with the values ``train_model`` chose filled in: architecture,
backbone, learning rate, the augmentation of the dataset's mode) and the facts
of the run (patch size, patch counts, schedule length, where the data is).
:meth:`RunSettings.to_json` is ``config.json``, in the key order runs have
always had; :meth:`RunSettings.from_json` reads it back, taking the options a
run made before them lacks from ``TrainOptions``' defaults.

Example:
    >>> from skyseg.training.options import TrainOptions
    >>> settings = RunSettings(TrainOptions(schedule="plateau"), patch_size=256, mode="hdr",
    ...                        preprocessing={}, total_steps=1000, train_patches=80,
    ...                        val_patches=20, data="DATA", created="", skyseg_version="")
    >>> settings.reduce_lr["factor"], settings.options.epochs
    (0.5, 100)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

from skyseg.data.augmentation import Augmentation
from skyseg.errors import ConfigError
from skyseg.io.run_folder import CONFIG_FILE
from skyseg.training.options import TrainOptions

__all__ = ["RunSettings", "RESUMABLE_KEYS", "PLATEAU_FACTOR", "PLATEAU_PATIENCE"]

#: The learning rate is multiplied by this after PLATEAU_PATIENCE epochs without a
#: lower validation loss.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 5
#: Config keys that may differ when a run is resumed (they do not change the result).
#: ``total_steps`` follows ``epochs``; the saved optimizer keeps the schedule it
#: started with (raising --epochs on resume goes on at the final learning rate).
RESUMABLE_KEYS = ("epochs", "total_steps", "workers", "data", "created", "skyseg_version",
                  "max_minutes", "init")


@dataclass(frozen=True)
class RunSettings:
    """A training run's checked options and the facts of its data (``config.json``).

    Attributes:
        options: the run's options, checked; ``architecture``, ``backbone``,
            ``learning_rate`` and ``encoder_weights`` resolved, ``augmentation``
            an :class:`~skyseg.data.augmentation.Augmentation` or None, ``ema``
            and ``clip_norm`` None when off.
        patch_size, mode, preprocessing: the dataset's.
        total_steps: optimizer steps of the whole schedule.
        train_patches, val_patches: readable patch files of each split.
        data: the dataset folder, or the sources' ``{path, weight, name}``.
        created, skyseg_version: when and by which skyseg.
        init_record: what ``config.json`` keeps of the ``init`` run (its ``init``).
        distribution: a multi-worker run's workers and global batch size.
        convert_ldr: the run learns LDR photos as radiance.

    ``config.json``'s keys not in :data:`RESUMABLE_KEYS` are compared on
    ``--resume``. The optional ones (:data:`OPTIONAL_KEYS`) are written only
    when in use, so runs made before those options still resume.
    """

    options: TrainOptions
    patch_size: int
    mode: str
    preprocessing: dict
    total_steps: int
    train_patches: int
    val_patches: int
    data: str | list
    created: str
    skyseg_version: str
    init_record: dict | None = None
    distribution: dict | None = None
    convert_ldr: bool = False

    #: config.json's keys in order (before the optional ones).
    KEYS: ClassVar[tuple[str, ...]] = (
        "architecture", "backbone", "encoder_weights", "patch_size", "mode", "preprocessing",
        "loss", "optimizer", "learning_rate", "weight_decay", "schedule", "warmup_epochs",
        "total_steps", "ema", "clip_norm", "batch_size", "epochs", "seed", "augmentation",
        "mixed_precision", "deterministic", "patience", "steps_per_epoch", "bn_momentum",
        "reduce_lr", "checkpoint_monitor", "train_patches", "val_patches", "workers", "data",
        "created", "skyseg_version")
    #: Keys written only when the option is in use (not None, not 0).
    OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = ("init", "freeze_encoder_epochs", "max_minutes",
                                                "distribution", "convert_ldr")
    #: Keys that follow from the others (not read back).
    DERIVED_KEYS: ClassVar[tuple[str, ...]] = ("reduce_lr", "checkpoint_monitor")

    @property
    def reduce_lr(self) -> dict | None:
        """The plateau schedule's rule (None with the cosine schedule)."""
        return ({"monitor": "val_loss", "factor": PLATEAU_FACTOR, "patience": PLATEAU_PATIENCE}
                if self.options.schedule == "plateau" else None)

    @property
    def checkpoint_monitor(self) -> str:
        """The score that picks ``model_best.h5``."""
        return "val_iou"

    def _value(self, key: str):
        if key == "init":
            return self.init_record
        if key == "augmentation":
            augmentation = self.options.augmentation
            return augmentation.to_dict() if augmentation is not None else None
        if key in _OPTION_NAMES:
            return getattr(self.options, key)
        return getattr(self, key)

    def to_json(self) -> dict:
        """``config.json``: :data:`KEYS` in order, then the optional keys in use."""
        config = {key: self._value(key) for key in self.KEYS}
        config.update({key: self._value(key) for key in self.OPTIONAL_KEYS
                       if self._value(key) not in (None, 0)})
        return config

    @classmethod
    def from_json(cls, config: dict, *, what: str = CONFIG_FILE) -> RunSettings:
        """Read :meth:`to_json`'s dict back (``reduce_lr``, ``checkpoint_monitor`` recomputed).

        Raises:
            ConfigError: a key is missing (a run made by an older skyseg; ``what``
                names the file in the message).
        """
        missing = [key for key in cls.KEYS if key not in config and key not in cls.DERIVED_KEYS]
        if missing:
            raise ConfigError(f"{what}: lacks {', '.join(missing)}; it was not written by this "
                              "skyseg train (re-run the training)")
        augmentation = config["augmentation"]
        options = TrainOptions(
            **{key: config[key] for key in _OPTION_NAMES if key in config
               and key not in ("augmentation", "init")},
            augmentation=Augmentation.from_dict(augmentation) if augmentation else None,
            init=(config.get("init") or {}).get("from"))
        facts = {item.name: config[item.name] for item in fields(cls)
                 if item.name in config and item.name != "options"}
        return cls(options, init_record=config.get("init"), **facts)

    def resumed(self, saved: dict) -> RunSettings:
        """These settings for a resumed run: the saved ``total_steps`` (its schedule) kept."""
        return replace(self, total_steps=saved.get("total_steps", self.total_steps))


#: The options config.json records.
_OPTION_NAMES = tuple(item.name for item in fields(TrainOptions)
                      if item.name in RunSettings.KEYS + RunSettings.OPTIONAL_KEYS)

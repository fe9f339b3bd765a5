"""The trainer: it learns, fills the run folder, resumes after a kill, refuses bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skyseg.data.generators import list_patches
from skyseg.errors import ConfigError, DatasetError, ModelError
from skyseg.image.metrics import iou_score
from skyseg.io.run_folder import HISTORY_COLUMNS, read_history
from skyseg.training.train import train, train_model

from .synthetic_patches import write_dataset

EPOCHS = 3
#: The options of the reference run; the CLI resume below repeats them.
#: BatchNorm momentum 0.6: the moving statistics used for validation follow
#: the data within a few of the 24 steps of a test run.
OPTIONS = dict(epochs=EPOCHS, batch_size=8, learning_rate=1e-3, backbone="resnet18",
               encoder_weights=None, seed=0, workers=2, bn_momentum=0.6)
CLI_OPTIONS = ["--epochs", EPOCHS, "--batch-size", 8, "--learning-rate", 1e-3, "--backbone",
               "resnet18", "--encoder-weights", "none", "--seed", 0, "--bn-momentum", 0.6]


def kill_during(epoch: int, batch: int):
    """A callback that raises at ``batch`` of ``epoch`` (0-based), as a killed process."""
    from skyseg.backend import import_keras

    keras = import_keras()

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, current, logs=None):
            self.epoch = current

        def on_train_batch_end(self, current, logs=None):
            if self.epoch == epoch and current == batch:
                raise RuntimeError("simulated kill")

    return Kill()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """64 training and 16 validation patches of 32 px; training patch 9 is damaged."""
    root = write_dataset(tmp_path_factory.mktemp("train") / "data",
                         counts={"train": 64, "val": 16}, size=32)
    damaged = root / "X_train" / "train" / "9.tif"
    damaged.write_bytes(damaged.read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted run of EPOCHS epochs."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    return train(dataset, run_dir, **OPTIONS)


def comparable(rows):
    return [{key: row[key] for key in HISTORY_COLUMNS if key != "seconds"} for row in rows]


# --------------------------------------------------------------------------- real training


@pytest.mark.slow
def test_training_learns_the_sky(reference, dataset):
    masks = np.stack([np.asarray(__import__("imagecodecs").png_decode(m.read_bytes()))
                      for _, m in list_patches(dataset, "val")])
    constant_scores = [iou_score(masks, np.ones(masks.shape)), iou_score(masks, np.zeros(
        masks.shape))]
    final = reference.history[-1]["val_iou"]
    assert final > 0.9
    assert final > max(constant_scores) + 0.3
    assert reference.best_val_iou == max(row["val_iou"] for row in reference.history)


@pytest.mark.slow
def test_a_damaged_patch_is_skipped_and_training_goes_on(reference, dataset):
    assert list(reference.skipped) == [str(dataset / "X_train" / "train" / "9.tif")]
    assert reference.epochs == EPOCHS


@pytest.mark.slow
def test_run_folder_holds_everything_predict_needs(reference, dataset):
    from skyseg.image.preprocess import Preprocessing
    from skyseg.io import read_image
    from skyseg.training.model import read_model_attributes

    run_dir = reference.run_dir
    for name in ("model_best.h5", "model_last.h5", "preprocessing.json", "config.json",
                 "history.csv", "curves.png", "samples.png"):
        assert (run_dir / name).is_file(), name
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]
    config = json.loads((run_dir / "config.json").read_text())
    dataset_info = json.loads((dataset / "dataset.json").read_text())
    assert {key: config[key] for key in ("architecture", "backbone", "patch_size", "mode",
                                         "seed", "epochs", "batch_size", "encoder_weights")} == {
        "architecture": "unet", "backbone": "resnet18", "patch_size": 32, "mode": "hdr",
        "seed": 0, "epochs": EPOCHS, "batch_size": 8, "encoder_weights": None}
    assert config["preprocessing"] == dataset_info["preprocessing"]
    assert config["deterministic"] is None  # auto: on for CPUs (the resume test relies on it)
    assert Preprocessing.load(run_dir / "preprocessing.json").to_dict() == \
        dataset_info["preprocessing"]
    history = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert comparable(history) == comparable(reference.history)
    assert read_model_attributes(run_dir / "model_last.h5")["state"]["epoch"] == EPOCHS
    assert read_model_attributes(run_dir / "model_best.h5")["epoch"] == reference.best_epoch
    curves, samples = read_image(run_dir / "curves.png"), read_image(run_dir / "samples.png")
    assert curves.shape[1] > 500 and samples.shape[0] > 500
    assert curves.std() > 10 and samples.std() > 10  # drawn, not blank


@pytest.mark.slow
def test_load_run_reproduces_the_validation_iou(reference, dataset):
    import imagecodecs
    import tifffile

    from skyseg.training.model import load_run

    loaded = load_run(reference.run_dir)
    pairs = list_patches(dataset, "val")
    images = np.stack([tifffile.imread(i).astype(np.float32) for i, _ in pairs])
    masks = np.stack([imagecodecs.png_decode(m.read_bytes()) for _, m in pairs])
    probability = loaded.model.predict(images, verbose=0)[..., 0]
    assert iou_score(masks, probability) == pytest.approx(reference.best_val_iou, abs=2e-3)


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_uninterrupted_history(reference, dataset, tmp_path, cli):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(dataset, run_dir, callbacks=[kill_during(epoch=1, batch=3)], **OPTIONS)
    # Killed during the second epoch: the first is kept, nothing of the second.
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [1]
    result = cli("train", "--data", dataset, "--out", run_dir, "--resume", *CLI_OPTIONS)
    assert result.returncode == 1, result.stderr  # 1: a damaged patch was left out
    assert "resuming after epoch 1" in result.stderr
    assert "SKIPPED" in result.stderr and "9.tif" in result.stderr
    history = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    # One seed, deterministic ops, the optimizer and schedules restored: the same numbers.
    for resumed, uninterrupted in zip(comparable(history), comparable(reference.history),
                                      strict=True):
        assert resumed == pytest.approx(uninterrupted, rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------- resume rules


@pytest.mark.slow
def test_resume_with_another_configuration_names_the_keys(reference, dataset):
    options = {**OPTIONS, "learning_rate": 0.01, "backbone": "resnet34"}
    with pytest.raises(ConfigError, match=r"cannot resume, the configuration differs in "
                                          r"\['backbone', 'learning_rate'\] \(backbone: "
                                          r"'resnet18' -> 'resnet34', learning_rate: 0.001 -> "
                                          r"0.01\)"):
        train(dataset, reference.run_dir, resume=True, **options)


@pytest.mark.slow
def test_a_run_folder_is_not_overwritten_without_resume(reference, dataset):
    with pytest.raises(ConfigError, match="already holds a training run; pass --resume"):
        train(dataset, reference.run_dir, **OPTIONS)


@pytest.mark.slow
def test_resuming_a_finished_run_trains_nothing(reference, dataset):
    before = (reference.run_dir / "model_last.h5").stat().st_mtime_ns
    result = train(dataset, reference.run_dir, resume=True, **OPTIONS)
    assert result.epochs == EPOCHS and comparable(result.history) == comparable(
        reference.history)
    assert (reference.run_dir / "model_last.h5").stat().st_mtime_ns == before


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def small_dataset(tmp_path):
    return write_dataset(tmp_path / "data", counts={"train": 4, "val": 2}, size=32)


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="dataset.json: not found"):
        train(tmp_path / "empty", tmp_path / "run", encoder_weights=None)
    (tmp_path / "empty" / "dataset.json").write_text(json.dumps(
        {"mode": "hdr", "patch_size": 32, "preprocessing": {"mode": "hdr"}}))
    for folder in ("X_train/train", "Y_train/train"):
        (tmp_path / "empty" / folder).mkdir(parents=True)
    with pytest.raises(DatasetError, match="no patches in the train split"):
        train(tmp_path / "empty", tmp_path / "run", encoder_weights=None)


def test_image_and_mask_counts_differ(small_dataset, tmp_path):
    (small_dataset / "Y_train" / "train" / "2.png").unlink()
    with pytest.raises(DatasetError, match="4 image patches .* but 3 mask patches"):
        train(small_dataset, tmp_path / "run", encoder_weights=None)


def test_no_validation_split(small_dataset, tmp_path):
    import shutil

    shutil.rmtree(small_dataset / "X_val")
    with pytest.raises(DatasetError, match="has no val split"):
        train(small_dataset, tmp_path / "run", encoder_weights=None)


def test_patch_size_not_a_multiple_of_32(tmp_path):
    data = write_dataset(tmp_path / "data", counts={"train": 2, "val": 1}, size=40)
    with pytest.raises(DatasetError, match="patch size 40 is not a multiple of 32"):
        train(data, tmp_path / "run", encoder_weights=None)


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"backbone": "resnet35"}, ConfigError, "unknown backbone 'resnet35'"),
    ({"architecture": "segnet"}, ConfigError, "unknown architecture 'segnet'"),
    ({"loss": "iou"}, ConfigError, "unknown loss 'iou'"),
    ({"epochs": 0}, ConfigError, "--epochs must be a whole number >= 1, got 0"),
    ({"learning_rate": -1.0}, ConfigError, "--learning-rate must be a positive number"),
    ({"encoder_weights": "/missing/resnet34.h5"}, ModelError,
     "resnet34.h5: encoder weights file not found"),
])
def test_bad_options(small_dataset, tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        train(small_dataset, tmp_path / "run", **{"encoder_weights": None, **options})
    assert not (tmp_path / "run").exists()


def test_cli_errors_are_one_line_with_status_2(small_dataset, tmp_path, cli):
    result = cli("train", "--data", tmp_path / "nothing", "--out", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"skyseg train: error: {tmp_path / 'nothing'}: dataset folder not found; pass the "
        "--out folder of skyseg build-dataset"]
    result = cli("train", "--data", small_dataset, "--out", tmp_path / "run", "--backbone",
                 "resnet35")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown backbone 'resnet35'" in result.stderr


def test_package_exports_train_model_even_after_the_module_is_imported(tmp_path):
    import importlib

    import skyseg

    importlib.import_module("skyseg.training.train")  # what the CLI does; rebinds skyseg.training.train
    assert skyseg.train_model is train_model
    with pytest.raises(DatasetError, match="dataset folder not found"):
        skyseg.train_model(tmp_path / "nothing", tmp_path / "run")


@pytest.mark.slow
def test_short_epochs_and_batch_norm_momentum_are_kept(dataset, tmp_path):
    from skyseg.backend import import_keras
    from skyseg.training.model import load_model

    result = train(dataset, tmp_path / "run", **{**OPTIONS, "epochs": 2, "bn_momentum": 0.8},
                   steps_per_epoch=3)
    assert result.epochs == 2 and len(read_history(tmp_path / "run" / "history.csv")) == 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["steps_per_epoch"] == 3 and config["bn_momentum"] == 0.8
    keras = import_keras()
    model = load_model(tmp_path / "run" / "model_last.h5")
    momenta = {layer.momentum for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.8}


def test_bad_batch_norm_momentum(dataset, tmp_path):
    with pytest.raises(ConfigError, match="--bn-momentum must be between 0 and 1, got 1.5"):
        train(dataset, tmp_path / "run", **{**OPTIONS, "bn_momentum": 1.5})


# --------------------------------------------------------------------------- fine-tuning (--init)


def fake_source(folder, *, backbone="resnet18", learning_rate=1e-3, **preprocessing):
    """A run folder as far as the checks before loading any weights look."""
    from skyseg.image.preprocess import Preprocessing

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(
        {"architecture": "unet", "backbone": backbone, "learning_rate": learning_rate}))
    Preprocessing(**{"mode": "hdr", **preprocessing}).save(folder / "preprocessing.json")
    (folder / "model_best.h5").write_bytes(b"not read before the checks")
    return folder


class ZeroSteps(Exception):
    """Raised by a callback before the first training step."""


@pytest.mark.slow
def test_initialised_run_with_zero_steps_predicts_exactly_as_its_source(reference, dataset,
                                                                        tmp_path):
    from skyseg.backend import import_keras
    from skyseg.image.preprocess import Preprocessing
    from skyseg.predict.image import predict_image
    from skyseg.training.model import LoadedModel, load_run

    keras = import_keras()
    image = np.random.default_rng(3).uniform(0, 6, (40, 72, 3)).astype(np.float32)
    image[:16] *= 4  # some brighter sky
    source = load_run(reference.run_dir)
    expected = predict_image(source, image, tile_size=32, overlap=8)
    run_dir = tmp_path / "run"
    seen = {}

    class Check(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            loaded = LoadedModel(model=self.model,
                                 preprocessing=Preprocessing.load(run_dir / "preprocessing.json"))
            seen["probability"] = predict_image(loaded, image, tile_size=32, overlap=8)
            seen["weights"] = self.model.get_weights()
            raise ZeroSteps

    # No --backbone: resnet18 comes from the source (the default would be resnet34).
    with pytest.raises(ZeroSteps):
        train(dataset, run_dir, init=reference.run_dir, epochs=2, encoder_weights=None,
              callbacks=[Check()])
    np.testing.assert_array_equal(seen["probability"], expected)
    for ours, theirs in zip(seen["weights"], source.model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["architecture"], config["backbone"]) == ("unet", "resnet18")
    assert config["learning_rate"] == pytest.approx(1e-4)  # a tenth of the source's 1e-3
    assert config["init"]["from"] == str(reference.run_dir.resolve())
    assert config["init"]["model"] == str((reference.run_dir / "model_best.h5").resolve())
    assert config["init"]["epoch"] == reference.best_epoch


@pytest.mark.slow
def test_frozen_encoder_then_trainable_and_resume_in_the_frozen_phase(reference, dataset,
                                                                      tmp_path):
    from skyseg.backend import import_keras
    from skyseg.training.finetune import encoder_layer_names
    from skyseg.training.model import load_model

    keras = import_keras()
    encoder = encoder_layer_names("resnet18")
    source = load_model(reference.run_dir / "model_best.h5")
    # Weighted layers have the same names in every build (the others are numbered).
    source_weights = {layer.name: layer.get_weights() for layer in source.layers if layer.weights}
    changed = {}

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            moved = {layer.name for layer in self.model.layers if layer.weights and any(
                not np.array_equal(a, b) for a, b in zip(layer.get_weights(),
                                                          source_weights[layer.name],
                                                          strict=True))}
            changed[epoch] = (moved & encoder, moved - encoder)

    options = dict(init=reference.run_dir, epochs=3, freeze_encoder_epochs=2,
                   steps_per_epoch=2, encoder_weights=None, seed=0, bn_momentum=0.6)
    uninterrupted = train(dataset, tmp_path / "a", callbacks=[Watch()], **options)
    assert not changed[0][0] and not changed[1][0]  # encoder (and its BN statistics) fixed
    assert changed[0][1] and changed[1][1]          # decoder trained
    assert changed[2][0]                            # epoch 3: the encoder trains too
    saved = load_model(tmp_path / "a" / "model_last.h5")
    assert all(layer.trainable for layer in saved.layers)

    run_dir = tmp_path / "b"
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(dataset, run_dir, callbacks=[kill_during(epoch=1, batch=0)], **options)
    # --init is taken from the run's config.json on --resume.
    resumed = train(dataset, run_dir, resume=True,
                    **{k: v for k, v in options.items() if k != "init"})
    assert resumed.epochs == 3
    for ours, theirs in zip(comparable(resumed.history), comparable(uninterrupted.history),
                            strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6)


def test_init_with_a_conflicting_backbone(dataset, tmp_path):
    source = fake_source(tmp_path / "source", backbone="resnet18")
    with pytest.raises(ConfigError, match=r"--backbone resnet34 conflicts with --init .*source, "
                                          r"a resnet18 model .* leave --backbone out"):
        train(dataset, tmp_path / "run", init=source, backbone="resnet34")
    with pytest.raises(ConfigError, match="--architecture fpn conflicts with --init"):
        train(dataset, tmp_path / "run", init=source, architecture="fpn")
    assert not (tmp_path / "run").exists()


def test_init_on_a_dataset_preprocessed_otherwise_names_the_fix(dataset, tmp_path):
    source = fake_source(tmp_path / "source", scale=0.5, clip_max=1000.0)
    with pytest.raises(ConfigError, match=r"preprocessing differs from that of --init .*source "
                                          r"\(clip_max: None here, 1000.0 in the --init run, "
                                          r"scale: 1.0 here, 0.5 in the --init run\); rebuild it "
                                          r"with skyseg build-dataset --like .*source \(or the "
                                          r"matching --clip-max, --scale\)"):
        train(dataset, tmp_path / "run", init=source)
    ldr = fake_source(tmp_path / "ldr", mode="ldr")
    with pytest.raises(ConfigError, match="mode: 'hdr' here, 'ldr' in the --init run"):
        train(dataset, tmp_path / "run", init=ldr)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("init", "options", "message"), [
    ("missing", {}, "--init .*missing: no such run folder or model file"),
    ("empty", {}, "run folder has no model_best.h5 or model_last.h5"),
    ("source", {"freeze_encoder_epochs": -1}, "--freeze-encoder-epochs must be a whole number"),
    ("source", {"max_minutes": 0}, "--max-minutes must be a positive number of minutes"),
])
def test_bad_init_options(dataset, tmp_path, init, options, message):
    fake_source(tmp_path / "source")
    (tmp_path / "empty").mkdir()
    with pytest.raises((ConfigError, ModelError), match=message):
        train(dataset, tmp_path / "run", init=tmp_path / init, **options)


def test_cli_init_conflict_is_one_line(dataset, tmp_path, cli):
    source = fake_source(tmp_path / "source", backbone="resnet18")
    result = cli("train", "--data", dataset, "--out", tmp_path / "run", "--init", source,
                 "--backbone", "resnet50")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--backbone resnet50 conflicts with --init" in result.stderr


# --------------------------------------------------------------------------- time budget


class FakeClock:
    """Each reading is ``step`` seconds after the previous one."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_time_budget_stops_before_an_epoch_that_would_not_fit(monkeypatch):
    from skyseg.training.train import TimeBudget

    clock = iter([0.0, 10.0, 70.0, 100.0, 190.0, 250.0])
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: next(clock)))
    budget = TimeBudget(4)           # 240 s from t = 0
    budget.training_started()        # t = 10 (setup took 10 s)
    assert not budget.epoch_ended()  # t = 70: 60 s epoch; 70 + 60 <= 240
    assert not budget.epoch_ended()  # t = 100: 30 s epoch; 100 + 60 <= 240
    assert budget.epoch_ended()      # t = 190: 90 s epoch; 190 + 90 > 240: stop
    assert budget.longest == 90 and budget.elapsed == 190


@pytest.mark.slow
def test_max_minutes_stops_at_an_epoch_boundary_and_resumes(reference, dataset, tmp_path,
                                                             monkeypatch):
    from skyseg.training.model import read_model_attributes
    from skyseg.training.train import TimeBudget

    # Every clock reading is a minute later: start, training start, then each epoch end.
    # 3.5 minutes: epoch 1 ends at 2 min (+1 fits), epoch 2 at 3 min (+1 does not).
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(FakeClock(60.0)))
    run_dir = tmp_path / "run"
    result = train(dataset, run_dir, max_minutes=3.5, **OPTIONS)
    assert result.stopped_on_budget and not result.stopped_early
    assert result.epochs == 2 and [r["epoch"] for r in read_history(run_dir / "history.csv")] \
        == [1, 2]
    state = read_model_attributes(run_dir / "model_last.h5")["state"]
    assert state["epoch"] == 2 and state["stopped_on_budget"] is True
    assert json.loads((run_dir / "config.json").read_text())["max_minutes"] == 3.5

    # Resumed with another budget (counted from the resumed start): the last epoch.
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(FakeClock(60.0)))
    resumed = train(dataset, run_dir, resume=True, max_minutes=10, **OPTIONS)
    assert resumed.epochs == EPOCHS and not resumed.stopped_on_budget
    for ours, theirs in zip(comparable(resumed.history), comparable(reference.history),
                            strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------- config.json


class BeforeKeras(Exception):
    """Raised where the trainer imports Keras: config.json is written by then."""


def written_config(monkeypatch, data, run_dir, **options) -> dict:
    """The config.json train_model writes, without importing TensorFlow."""
    import skyseg.training.model

    def stop():
        raise BeforeKeras

    monkeypatch.setattr(skyseg.training.model, "import_keras", stop)
    with pytest.raises(BeforeKeras):
        train(data, run_dir, **options)
    return json.loads((run_dir / "config.json").read_text())


#: The keys of config.json, in order, as train_model wrote them before RunSettings.
CONFIG_KEYS = [
    "architecture", "backbone", "encoder_weights", "patch_size", "mode", "preprocessing", "loss",
    "optimizer", "learning_rate", "weight_decay", "schedule", "warmup_epochs", "total_steps",
    "ema", "clip_norm", "batch_size", "epochs", "seed", "augmentation", "mixed_precision",
    "deterministic", "patience", "steps_per_epoch", "bn_momentum", "reduce_lr",
    "checkpoint_monitor", "train_patches", "val_patches", "workers", "data", "created",
    "skyseg_version"]
#: The keys of options in use, after those.
OPTIONAL_KEYS = ["init", "freeze_encoder_epochs", "max_minutes"]


def test_config_json_keys_values_and_order(small_dataset, tmp_path, monkeypatch):
    config = written_config(monkeypatch, small_dataset, tmp_path / "run", encoder_weights=None,
                            epochs=3, batch_size=2, schedule="plateau", ema=0, clip_norm=None)
    assert list(config) == CONFIG_KEYS
    created = config.pop("created")
    assert len(created) == 19 and created[10] == "T"
    expected = {
        "architecture": "unet", "backbone": "resnet34", "encoder_weights": None,
        "patch_size": 32, "mode": "hdr", "loss": "bce_jaccard", "optimizer": "adamw",
        "learning_rate": 1e-3, "weight_decay": 1e-4, "schedule": "plateau",
        "warmup_epochs": 1.0, "total_steps": 3 * 2, "ema": None, "clip_norm": None,
        "batch_size": 2, "epochs": 3, "seed": 0, "mixed_precision": False,
        "deterministic": None, "patience": 15, "steps_per_epoch": None, "bn_momentum": 0.9,
        "reduce_lr": {"monitor": "val_loss", "factor": 0.5, "patience": 5},
        "checkpoint_monitor": "val_iou", "train_patches": 4, "val_patches": 2, "workers": 2,
        "data": str(small_dataset.resolve())}
    assert {key: config[key] for key in expected} == expected
    from skyseg import __version__
    from skyseg.data.augmentation import Augmentation
    from skyseg.image.preprocess import Preprocessing

    assert config["skyseg_version"] == __version__
    assert config["augmentation"] == Augmentation().to_dict()
    assert config["preprocessing"] == Preprocessing(mode="hdr").to_dict()


def test_config_json_optional_keys_come_last_in_order(dataset, tmp_path, monkeypatch):
    source = fake_source(tmp_path / "source", learning_rate=2e-3)
    config = written_config(monkeypatch, dataset, tmp_path / "run", init=source,
                            freeze_encoder_epochs=2, max_minutes=5, encoder_weights=None,
                            epochs=2, batch_size=8)
    assert list(config) == CONFIG_KEYS + OPTIONAL_KEYS
    assert config["init"] == {"from": str(source.resolve()),
                              "model": str((source / "model_best.h5").resolve()),
                              "architecture": "unet", "backbone": "resnet18", "epoch": None,
                              "val_iou": None}
    assert (config["freeze_encoder_epochs"], config["max_minutes"]) == (2, 5.0)
    assert config["learning_rate"] == pytest.approx(2e-4)
    assert config["reduce_lr"] is None and config["ema"] == 0.99 and config["clip_norm"] == 1.0
    assert config["total_steps"] == 2 * 8  # 63 readable training patches of 64, batches of 8


def test_resume_keeps_the_saved_total_steps(small_dataset, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    first = written_config(monkeypatch, small_dataset, run_dir, encoder_weights=None, epochs=3,
                           batch_size=2)
    saved = {**first, "total_steps": 99}
    (run_dir / "config.json").write_text(json.dumps(saved))
    import h5py  # a model_last.h5 as far as resuming reads it before Keras: its state

    with h5py.File(run_dir / "model_last.h5", "w") as handle:
        handle.require_group("skyseg").create_dataset(
            "state", data=json.dumps({"epoch": 1, "history": [], "best_val_iou": None,
                                      "best_epoch": None, "stopped_early": False}))
    resumed = written_config(monkeypatch, small_dataset, run_dir, encoder_weights=None,
                             epochs=5, batch_size=2, resume=True)
    assert list(resumed) == CONFIG_KEYS
    assert resumed["total_steps"] == 99 and resumed["epochs"] == 5
    assert {**resumed, "created": None} == {**saved, "epochs": 5, "created": None}
    saved["seed"] = 1
    (run_dir / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"differs in \['seed'\] \(seed: 1 -> 0\)"):
        train(small_dataset, run_dir, encoder_weights=None, epochs=5, batch_size=2, resume=True)


def test_run_settings_read_back_from_config_json(dataset, tmp_path, monkeypatch):
    from skyseg.training.train import RunSettings

    source = fake_source(tmp_path / "source")
    config = written_config(monkeypatch, dataset, tmp_path / "run", init=source,
                            max_minutes=5, encoder_weights=None, epochs=2, batch_size=8)
    settings = RunSettings.from_json(config)
    assert settings.to_json() == config and list(settings.to_json()) == list(config)
    assert (settings.options.backbone, settings.total_steps,
            settings.options.freeze_encoder_epochs) == (
        "resnet18", 16, 0)
    with pytest.raises(ConfigError, match="old.json: lacks loss, seed; it was not written"):
        RunSettings.from_json({key: value for key, value in config.items()
                               if key not in ("loss", "seed")}, what="old.json")


def test_default_augmentation_follows_the_dataset_mode(tmp_path, monkeypatch):
    """LDR data gets the sky exposure and texture changes; HDR data the plain default."""
    from skyseg.data.augmentation import Augmentation

    configs = {}
    for mode in ("ldr", "hdr"):
        data = write_dataset(tmp_path / f"data-{mode}", counts={"train": 2, "val": 1}, size=32,
                             mode=mode)
        configs[mode] = written_config(monkeypatch, data, tmp_path / f"run-{mode}",
                                       encoder_weights=None, epochs=1, batch_size=2)
    assert configs["ldr"]["augmentation"] == Augmentation.default("ldr").to_dict()
    assert configs["ldr"]["augmentation"]["sky_exposure_ev"] == 1.5
    assert configs["ldr"]["augmentation"]["sky_texture_ev"] == 2.0
    assert configs["hdr"]["augmentation"] == Augmentation().to_dict()
    assert "sky_texture_ev" not in configs["hdr"]["augmentation"]
    with pytest.raises(ConfigError, match="augmentation must be 'default'"):
        train_model(tmp_path / "data-ldr", tmp_path / "run-bad", augmentation="ldr")


def test_augment_set_changes_the_default_of_the_data_mode(tmp_path, monkeypatch):
    """``skyseg train --augment-set``: changes on top of the default of the dataset's mode."""
    import argparse

    from skyseg.data.augmentation import Augmentation
    from skyseg.training.options import augmentation_from_args
    from skyseg.training.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def changes(*options):
        return augmentation_from_args(parser.parse_args(["--data", "d", "--out", "o",
                                                          *options]))

    assert changes() == "default"
    assert changes("--no-augment") is None
    assert changes("--augment-set", "exposure_ev=4", "--augment-set", "sky_texture_ev=0") == {
        "exposure_ev": 4.0, "sky_texture_ev": 0.0}
    with pytest.raises(ConfigError, match="--no-augment turns off"):
        changes("--no-augment", "--augment-set", "exposure_ev=4")
    with pytest.raises(ConfigError, match="unknown setting 'ev'"):
        changes("--augment-set", "ev=4")

    configs = {}
    for mode in ("hdr", "ldr"):
        data = write_dataset(tmp_path / f"data-{mode}", counts={"train": 2, "val": 1}, size=32,
                             mode=mode)
        configs[mode] = written_config(monkeypatch, data, tmp_path / f"run-{mode}",
                                       encoder_weights=None, epochs=1, batch_size=2,
                                       augmentation={"exposure_ev": 4.0})
    assert configs["hdr"]["augmentation"] == {**Augmentation().to_dict(), "exposure_ev": 4.0}
    assert configs["ldr"]["augmentation"] == {**Augmentation.default("ldr").to_dict(),
                                              "exposure_ev": 4.0}


# --------------------------------------------------------------------------- several sources

def _record_images(root, stems_by_split: dict[str, list[str]], **extra) -> None:
    """Add the ``images`` table build-dataset writes (and ``extra`` keys) to dataset.json."""
    meta = json.loads((root / "dataset.json").read_text())
    meta["images"] = {f"{stem}.hdr": {"stem": stem, "split": split}
                      for split, stems in stems_by_split.items() for stem in stems}
    meta.update(extra)
    (root / "dataset.json").write_text(json.dumps(meta))


def test_two_sources_train_one_run_that_knows_what_it_learnt_from(tmp_path):
    from skyseg.predict.loading import accepts_ldr
    from skyseg.training.model import load_run
    from skyseg.training.train import run_images

    panoramas = write_dataset(tmp_path / "panoramas", counts={"train": 8}, size=32, seed=1)
    photos = write_dataset(tmp_path / "photos", counts={"train": 16, "val": 8}, size=32, seed=2)
    _record_images(panoramas, {"train": ["city", "forest"]})
    _record_images(photos, {"train": ["street_1"], "val": ["street_2"]}, convert_ldr=True)
    run = tmp_path / "run"
    result = train([f"{panoramas}=3", photos], run, **{**OPTIONS, "epochs": 1},
                   steps_per_epoch=2)
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == [
        {"path": str(panoramas.resolve()), "weight": 3.0, "name": "panoramas"},
        {"path": str(photos.resolve()), "weight": 1.0, "name": "photos"}]
    # Validated on the one source with a val split; trained on both.
    assert config["train_patches"] == 24 and config["val_patches"] == 8
    assert config["convert_ldr"] is True and accepts_ldr(load_run(run))
    assert result.history and result.history[0]["val_iou"] >= 0.0
    assert run_images(run) == {"city": "train", "forest": "train", "street_1": "train",
                               "street_2": "val"}
    # A run fine-tuned from it learnt from those images too, and keeps converting LDR photos.
    tuned = tmp_path / "tuned"
    train(photos, tuned, epochs=1, batch_size=8, init=run, seed=0, steps_per_epoch=1,
          encoder_weights=None)
    assert run_images(tuned)["city"] == "train"
    assert json.loads((tuned / "config.json").read_text())["convert_ldr"] is True


# --------------------------------------------------------------------------- options


def test_command_line_python_and_run_settings_share_one_set_of_defaults():
    """``skyseg train``'s defaults are TrainOptions' (epochs 100, batch 8, patience 15)."""
    import argparse

    from skyseg.options import from_args
    from skyseg.training.options import TrainOptions, augmentation_from_args
    from skyseg.training.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", "d", "--out", "o"])
    options = from_args(TrainOptions, args, augmentation=augmentation_from_args(args))
    assert options == TrainOptions()
    assert (options.epochs, options.batch_size, options.patience, options.workers) == (
        100, 8, 15, 2)
    assert (options.ema, options.clip_norm, options.bn_momentum, options.schedule) == (
        0.99, 1.0, 0.9, "cosine")
    args = parser.parse_args(["--data", "d", "--out", "o", "--epochs", "3", "--no-augment",
                              "--mlflow", "--no-deterministic"])
    assert from_args(TrainOptions, args, augmentation=augmentation_from_args(args)) == \
        TrainOptions(epochs=3, augmentation=None, mlflow="", deterministic=False)


def test_train_model_takes_options_and_overrides(tmp_path):
    from skyseg.training.options import TrainOptions

    with pytest.raises(TypeError, match="epoch"):
        train_model(tmp_path / "nothing", tmp_path / "run", epoch=3)
    # Overrides change the options object (the checks see epochs=0).
    data = write_dataset(tmp_path / "data", counts={"train": 2, "val": 1}, size=32)
    with pytest.raises(ConfigError, match="--epochs must be a whole number >= 1, got 0"):
        train_model(data, tmp_path / "run", TrainOptions(patience=3), epochs=0)

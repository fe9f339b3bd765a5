"""Pipeline configuration: YAML, environment flags, command line, and the stage plan."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from skyseg.cli.config import (
    DEMO_DEFAULTS,
    REAL_DEMO_DEFAULTS,
    PipelineConfig,
    add_arguments,
    config_from_args,
    load_config,
)
from skyseg.cli.pipeline import plan_pipeline
from skyseg.errors import ConfigError
from skyseg.options import parse_bool


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("text,value", [("true", True), ("False", False), ("1", True), ("off", False),
                                        ("YES", True), (" no ", False)])
def test_parse_bool(text, value):
    assert parse_bool(text) is value


def test_parse_bool_rejects_other_words():
    with pytest.raises(ConfigError, match="TRAIN must be true or false, got 'maybe'"):
        parse_bool("maybe", name="TRAIN")


def test_defaults_run_the_real_demo_fine_tuning_the_shipped_model():
    config = config_from_args(_args(), environ={})
    assert config.uses_demo and config.work_dir == Path("outputs/demo")
    assert config.demo == "real" and config.training.init == "default"
    assert config.dataset.patch_size == REAL_DEMO_DEFAULTS["dataset"]["patch_size"]
    stages = [step.stage for step in plan_pipeline(config)]
    assert stages == ["previews", "build-dataset", "train", "predict", "evaluate"]
    # Another network on the demo is trained from scratch, not fine-tuned.
    assert config_from_args(_args("--backbone", "resnet18"), environ={}).training.init is None


def test_synthetic_demo_keeps_its_small_settings():
    config = config_from_args(_args("--demo", "synthetic"), environ={})
    assert config.uses_synthetic_demo and config.training.init is None
    assert config.dataset.patch_size == DEMO_DEFAULTS["dataset"]["patch_size"]
    stages = [step.stage for step in plan_pipeline(config)]
    assert stages == ["demo-data", "previews", "build-dataset", "train", "predict", "evaluate"]


def test_precedence_yaml_then_environment_then_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("train: false\nepochs: 3\nwork_dir: runs/x\n")
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml")), environ={})
    assert config.train is False and config.training.epochs == 3
    assert config.work_dir == tmp_path / "runs/x"  # relative to the config file
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml")), environ={"TRAIN": "true"})
    assert config.train is True
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml"), "--train=false"),
                              environ={"TRAIN": "true"})
    assert config.train is False


def test_architecture_from_the_command_line_or_yaml(tmp_path, capsys):
    # None: skyseg train's default, unet
    assert config_from_args(_args(), environ={}).training.architecture is None
    assert config_from_args(_args("--architecture", "linknet"),
                            environ={}).training.architecture == "linknet"
    (tmp_path / "c.yaml").write_text("architecture: fpn\n")
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml")), environ={})
    assert config.training.architecture == "fpn"
    train = next(step for step in plan_pipeline(config) if step.stage == "train")
    assert "--architecture fpn" in train.command_line
    with pytest.raises(SystemExit):
        _args("--architecture", "linkent")
    assert "invalid choice: 'linkent'" in capsys.readouterr().err


def test_exposure_key_reaches_the_dataset_step(tmp_path):
    build = next(step for step in plan_pipeline(config_from_args(_args(), environ={}))
                 if step.stage == "build-dataset")
    assert build.options.exposure_key is None and "--exposure-key" not in build.command_line
    (tmp_path / "c.yaml").write_text("exposure_key: 0\n")
    for args in (("--exposure-key", "0.5"), ("--config", str(tmp_path / "c.yaml"))):
        config = config_from_args(_args(*args), environ={})
        build = next(step for step in plan_pipeline(config) if step.stage == "build-dataset")
        assert build.options.exposure_key == float(args[1] if args[0] != "--config" else 0)
        assert f"--exposure-key {build.options.exposure_key:g}" in build.command_line


def test_environment_flags(tmp_path):
    config = config_from_args(_args(), environ={"PREVIEWS": "false", "EVALUATE": "0", "TRAIN": ""})
    assert (config.previews, config.evaluate, config.train) == (False, False, True)
    with pytest.raises(ConfigError, match="PREDICT must be true or false"):
        config_from_args(_args(), environ={"PREDICT": "sometimes"})


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['epoch'\]"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "value.yaml").write_text("epochs: many\n")
    with pytest.raises(ConfigError, match="epochs = 'many' is not a valid int"):
        load_config(tmp_path / "value.yaml")


def test_switched_off_stage_whose_output_is_missing_is_a_clear_error(tmp_path):
    config = PipelineConfig(work_dir=tmp_path, build_dataset=False)
    with pytest.raises(ConfigError, match="training needs the patch dataset .* switch BUILD_DATASET on"):
        plan_pipeline(config)
    config = PipelineConfig(work_dir=tmp_path, train=False)
    with pytest.raises(ConfigError, match="need a trained model .* switch TRAIN on"):
        plan_pipeline(config)


def test_all_stages_off_but_predict_with_an_existing_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model_best.h5").write_bytes(b"x")
    config = PipelineConfig(work_dir=tmp_path, previews=False, build_dataset=False, train=False,
                            evaluate=False)
    steps = plan_pipeline(config)
    assert [step.stage for step in steps] == ["predict"]
    assert steps[0].command[-4:-2] == ["--model", str(tmp_path / "run")]
    assert steps[0].kwargs["model"] == str(tmp_path / "run")
    config.demo = "synthetic"
    assert [step.stage for step in plan_pipeline(config)] == ["demo-data", "predict"]


def test_user_data_needs_images_and_coco(tmp_path):
    with pytest.raises(ConfigError, match="images folder .* not found"):
        plan_pipeline(PipelineConfig(work_dir=tmp_path, images=tmp_path / "none"))
    (tmp_path / "img").mkdir()
    with pytest.raises(ConfigError, match="the COCO export .* is missing"):
        plan_pipeline(PipelineConfig(work_dir=tmp_path, images=tmp_path / "img",
                                     coco=tmp_path / "x.json"))


def test_second_run_resumes_training(tmp_path):
    config = PipelineConfig(work_dir=tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    train = {step.stage: step for step in plan_pipeline(config)}["train"]
    assert train.command[-1] == "--resume" and train.options.resume is True


def test_bad_split_file_option():
    with pytest.raises(ConfigError, match="--split-file 'train.txt': expected NAME=FILE"):
        config_from_args(_args("--split-file", "train.txt"), environ={})


@pytest.mark.parametrize("meta", [
    {"format": 1, "settings": {"scenes": 16, "width": 1024, "height": 512, "seed": 0}},
    "not json",
])
def test_a_demo_made_by_another_version_is_refused_with_the_fix(tmp_path, meta):
    import json

    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "demo.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    with pytest.raises(ConfigError, match=r"another skyseg version .*\(rm -rf .* --work-dir"):
        plan_pipeline(PipelineConfig(work_dir=tmp_path, demo="synthetic"))


def test_the_same_demo_is_reused(tmp_path):
    import json

    from skyseg.demo.synthetic import FORMAT_VERSION

    config = PipelineConfig(work_dir=tmp_path, demo="synthetic")
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo.json").write_text(json.dumps({
        "format": FORMAT_VERSION, "settings": {"scenes": config.demo_data.scenes,
                                               "width": config.demo_data.width,
                                               "seed": config.seed}}))
    assert [step.stage for step in plan_pipeline(config)][0] == "demo-data"


# --------------------------------------------------------------------------- sections

def test_yaml_sections_and_the_flat_keys_of_before_set_the_same_options(tmp_path):
    (tmp_path / "flat.yaml").write_text("epochs: 30\nbackbone: resnet18\npatch_size: 128\n"
                                        "tile_size: 512\ntta: true\ndemo_scenes: 8\n")
    (tmp_path / "nested.yaml").write_text(
        "training: {epochs: 30, backbone: resnet18}\ndataset: {patch_size: 128}\n"
        "prediction: {tile_size: 512, tta: true}\ndemo_data: {scenes: 8}\n")
    flat, nested = load_config(tmp_path / "flat.yaml"), load_config(tmp_path / "nested.yaml")
    assert flat == nested
    assert (nested.training.epochs, nested.training.backbone, nested.dataset.patch_size,
            nested.prediction.tile_size, nested.prediction.tta, nested.demo_data.scenes) == (
        30, "resnet18", 128, 512, True, 8)
    assert nested.training.batch_size == 8  # the rest: skyseg train's defaults


def test_every_flat_key_names_a_field_of_its_section():
    import dataclasses

    from skyseg.cli.config import FLAT_KEYS, SECTIONS

    for key, (section, name) in FLAT_KEYS.items():
        assert name in {field.name for field in dataclasses.fields(SECTIONS[section])}, key


@pytest.mark.parametrize("text, match", [
    ("training: {epoch: 3}\n", r"c\.yaml: training: unknown setting\(s\) \['epoch'\]; known: "
                               r".*epochs"),
    ("training: 3\n", r"c\.yaml: training: expected a mapping of TrainOptions settings"),
    ("train: {epochs: 3}\n", r"train is a stage flag \(true or false\); the stage's options go "
                             "in the training section"),
    ("dataset: {seed: 3}\n", r"c\.yaml: dataset: seed the pipeline sets for every stage"),
    ("prediction: {wrap: sideways}\n", r"prediction: wrap = 'sideways'; choose one of auto, on"),
    ("training: {epochs: many}\n", r"c\.yaml: training: epochs = 'many' is not a valid int"),
])
def test_yaml_section_errors_name_the_section_and_the_fix(tmp_path, text, match):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "c.yaml")


def test_demo_settings_give_way_to_the_file_and_the_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("training: {epochs: 7}\n")
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml"), "--stride", "64"),
                              environ={})
    assert (config.training.epochs, config.dataset.stride) == (7, 64)
    assert config.training.steps_per_epoch == REAL_DEMO_DEFAULTS["training"]["steps_per_epoch"]
    assert config.dataset.patch_size == REAL_DEMO_DEFAULTS["dataset"]["patch_size"]


def test_pipeline_options_are_the_stages_own(capsys):
    """skyseg pipeline's --epochs, --tile-size, ... are made from the stages' options classes:
    the same help, and no default of their own (the stage's, or the demo's, applies)."""
    import dataclasses

    from skyseg.predict.options import PredictOptions
    from skyseg.training.options import TrainOptions

    parser = argparse.ArgumentParser(prog="pipeline")
    add_arguments(parser)
    helps = {action.option_strings[0]: action for action in parser._actions
             if action.option_strings}
    fields = {f.name: f for f in dataclasses.fields(TrainOptions)}
    assert helps["--epochs"].help == fields["epochs"].metadata["help"]
    assert helps["--architecture"].choices == fields["architecture"].metadata["choices"]
    tile = {f.name: f for f in dataclasses.fields(PredictOptions)}["tile_size"]
    assert helps["--tile-size"].help == tile.metadata["help"]
    assert helps["--epochs"].default is argparse.SUPPRESS
    args = parser.parse_args(["--epochs", "4", "--tile-size", "256", "--demo-scenes", "2"])
    config = config_from_args(args, environ={})
    assert (config.training.epochs, config.prediction.tile_size, config.demo_data.scenes) == (
        4, 256, 2)


def test_pipeline_help_imports_no_tensorflow_and_top_level_names_resolve():
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    code = ("import sys, contextlib, io\n"
            "from skyseg.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    for argv in (['--help'], ['pipeline', '--help']):\n"
            "        try:\n            main(argv)\n"
            "        except SystemExit:\n            pass\n"
            "print('tensorflow' in sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    import skyseg

    missing = [name for name in skyseg.__all__ if not hasattr(skyseg, name)]
    assert missing == []


def test_a_setting_the_stage_command_line_cannot_give_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "c.yaml").write_text("preview: {max_pixels: 1000}\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.preview.max_pixels == 1000
    with pytest.raises(ConfigError, match=r"pipeline step previews: PreviewsOptions\.max_pixels "
                                          r"= 1000.0 has no command-line option; .*remove the "
                                          "setting"):
        plan_pipeline(config)

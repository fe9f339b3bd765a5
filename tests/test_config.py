"""Pipeline configuration: YAML, environment flags, command line, and the stage plan."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from skyseg.cli.config import PipelineConfig, load_config
from skyseg.cli.pipeline import (
    DEMO_DEFAULTS,
    REAL_DEMO_DEFAULTS,
    add_arguments,
    config_from_args,
    plan_pipeline,
)
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
    assert config.demo == "real" and config.init == "default"
    assert config.patch_size == REAL_DEMO_DEFAULTS["patch_size"]
    stages = [step.stage for step in plan_pipeline(config)]
    assert stages == ["previews", "build-dataset", "train", "predict", "evaluate"]
    # Another network on the demo is trained from scratch, not fine-tuned.
    assert config_from_args(_args("--backbone", "resnet18"), environ={}).init is None


def test_synthetic_demo_keeps_its_small_settings():
    config = config_from_args(_args("--demo", "synthetic"), environ={})
    assert config.uses_synthetic_demo and config.init is None
    assert config.patch_size == DEMO_DEFAULTS["patch_size"]
    stages = [step.stage for step in plan_pipeline(config)]
    assert stages == ["demo-data", "previews", "build-dataset", "train", "predict", "evaluate"]


def test_precedence_yaml_then_environment_then_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("train: false\nepochs: 3\nwork_dir: runs/x\n")
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml")), environ={})
    assert config.train is False and config.epochs == 3
    assert config.work_dir == tmp_path / "runs/x"  # relative to the config file
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml")), environ={"TRAIN": "true"})
    assert config.train is True
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml"), "--train=false"),
                              environ={"TRAIN": "true"})
    assert config.train is False


def test_architecture_from_the_command_line_or_yaml(tmp_path, capsys):
    assert config_from_args(_args(), environ={}).architecture == "unet"
    assert config_from_args(_args("--architecture", "linknet"), environ={}).architecture == "linknet"
    (tmp_path / "c.yaml").write_text("architecture: fpn\n")
    config = config_from_args(_args("--config", str(tmp_path / "c.yaml")), environ={})
    assert config.architecture == "fpn"
    train = next(step for step in plan_pipeline(config) if step.stage == "train")
    assert "--architecture fpn" in train.command_line
    with pytest.raises(SystemExit):
        _args("--architecture", "linkent")
    assert "invalid choice: 'linkent'" in capsys.readouterr().err


def test_exposure_key_reaches_the_dataset_step(tmp_path):
    build = next(step for step in plan_pipeline(config_from_args(_args(), environ={}))
                 if step.stage == "build-dataset")
    assert build.kwargs["exposure_key"] is None and "--exposure-key" not in build.command_line
    (tmp_path / "c.yaml").write_text("exposure_key: 0\n")
    for args in (("--exposure-key", "0.5"), ("--config", str(tmp_path / "c.yaml"))):
        config = config_from_args(_args(*args), environ={})
        build = next(step for step in plan_pipeline(config) if step.stage == "build-dataset")
        assert build.kwargs["exposure_key"] == float(args[1] if args[0] != "--config" else 0)
        assert f"--exposure-key {build.kwargs['exposure_key']:g}" in build.command_line


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
    with pytest.raises(ConfigError, match="epochs = 'many' is not a valid value"):
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
    assert train.command[-1] == "--resume" and train.kwargs["resume"] is True


def test_bad_split_file_option():
    with pytest.raises(ConfigError, match="--split-file expects NAME=FILE"):
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
        "format": FORMAT_VERSION, "settings": {"scenes": config.demo_scenes,
                                               "width": config.demo_width, "seed": config.seed}}))
    assert [step.stage for step in plan_pipeline(config)][0] == "demo-data"

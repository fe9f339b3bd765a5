"""`skyseg pipeline` end to end on a tiny demo: every stage, the summary, a second run, flags."""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli

TINY = ["--demo", "synthetic", "--demo-scenes", "4", "--demo-width", "128", "--patch-size", "64", "--stride", "64",
        "--epochs", "1", "--steps-per-epoch", "2", "--backbone", "resnet18", "--batch-size", "4"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline") / "work"
    result = run_cli("pipeline", "--work-dir", work, *TINY)
    return work, result


@pytest.mark.slow
def test_whole_pipeline_on_a_tiny_demo(first_run):
    work, result = first_run
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("demo-data", "previews", "build-dataset", "train", "predict", "evaluate"):
        assert f"== {stage}: skyseg {stage}" in result.stderr
    assert (work / "run" / "model_best.h5").is_file()
    held_out = sorted(p.name for p in (work / "held_out").iterdir())
    assert held_out and all(name.endswith(".exr") for name in held_out)
    overlays = sorted(work.glob("predictions/*_overlay.png"))
    assert len(overlays) == len(held_out)
    for overlay in overlays:
        assert f"overlay      {overlay}" in result.stdout
    summary = json.loads((work / "evaluation" / "summary.json").read_text())
    assert summary["images"] == len(held_out)
    assert "held-out scores (mean over images): iou" in result.stdout
    assert "pooled IoU (all pixels)" in result.stdout


@pytest.mark.slow
def test_second_run_reuses_and_flags_switch_stages_off(first_run):
    work, first = first_run
    assert first.returncode == 0
    model = work / "run" / "model_best.h5"
    stamp = model.stat().st_mtime_ns
    result = run_cli("pipeline", "--work-dir", work, *TINY, "--previews=false",
                     "--evaluate=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 files written" in result.stderr or "reused" in result.stderr
    assert "== previews" not in result.stderr and "== evaluate" not in result.stderr
    assert "nothing to resume" in result.stderr  # training had finished its epochs
    assert model.stat().st_mtime_ns == stamp


def test_switched_off_stage_without_its_output_is_one_clear_line(tmp_path):
    result = run_cli("pipeline", "--work-dir", tmp_path / "empty", "--build-dataset=false")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "training needs the patch dataset" in lines[0] and "BUILD_DATASET" in lines[0]


def test_bad_flag_value_is_one_clear_line(tmp_path):
    result = run_cli("pipeline", "--work-dir", tmp_path, "--train=perhaps")
    assert result.returncode == 2
    assert result.stderr.strip() == ("skyseg pipeline: error: --train must be true or false, "
                                     "got 'perhaps'")


# --------------------------------------------------------------------------- direct calls

#: Stage -> (module, stage function) the pipeline calls.
STAGE_FUNCTIONS = {
    "demo-data": ("skyseg.demo.synthetic", "make_demo_data"),
    "previews": ("skyseg.labels.previews", "make_previews"),
    "build-dataset": ("skyseg.data.dataset", "build_dataset"),
    "train": ("skyseg.training.train", "train_model"),
    "predict": ("skyseg.predict.predictor", "predict_files"),
    "evaluate": ("skyseg.evaluation.evaluate", "evaluate_model"),
}


def _meaning(value):
    """A value as a comparison of call arguments sees it: paths as text, "none" as None,
    sequences (and "a,b" lists) as tuples."""
    from pathlib import PurePath

    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return tuple(_meaning(item) for item in value)
    if isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, str) and "," in value:
        return tuple(value.split(","))
    return value


def _call_arguments(bound: dict) -> dict:
    """A stage function's arguments with its options object's fields (and keyword overrides)
    spelled out; ``ensemble`` runs join ``model``, as predict_files and evaluate_model load
    them (``skyseg predict`` passes them joined)."""
    import dataclasses

    arguments = dict(bound)
    options = arguments.pop("options", None)
    if options is not None:
        arguments.update({field.name: getattr(options, field.name)
                          for field in dataclasses.fields(options)})
    arguments.update(arguments.pop("overrides", {}))
    if arguments.get("ensemble"):
        arguments["model"] = [arguments["model"], *arguments["ensemble"]]
        arguments["ensemble"] = []
    return arguments


def _record_stage_calls(monkeypatch, calls: dict) -> None:
    """Replace each stage function by a fast fake that records its arguments (defaults
    filled in) and returns what the real one would, so the reports run."""
    import importlib
    import inspect
    from types import SimpleNamespace

    from skyseg.demo.synthetic import DemoData
    from skyseg.evaluation.evaluate import Evaluation
    from skyseg.log import BatchReport
    from skyseg.training.train import TrainResult

    def demo(out_dir, **kwargs):
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        (out_dir / "images" / "scene_01.exr").write_bytes(b"")
        (out_dir / "val.txt").write_text("scene_01\n")
        return DemoData(out_dir, ["scene_01"], [], ["scene_01"])

    results = {
        "demo-data": demo,
        "previews": lambda **kwargs: BatchReport("previews"),
        "build-dataset": lambda out_dir, **kwargs: SimpleNamespace(
            splits={"train": 3}, sky_fraction={"train": 0.5}, out_dir=out_dir, exit_code=0),
        "train": lambda out_dir, **kwargs: TrainResult(out_dir, 1, 1, 0.5),
        "predict": lambda **kwargs: BatchReport("predict"),
        "evaluate": lambda out_dir, **kwargs: Evaluation([], {"images": 0}, BatchReport("x"),
                                                         [], out_dir),
    }
    for stage, (module_name, name) in STAGE_FUNCTIONS.items():
        module = importlib.import_module(module_name)
        signature = inspect.signature(getattr(module, name))

        def fake(*args, _stage=stage, _signature=signature, **kwargs):
            bound = _signature.bind(*args, **kwargs)
            bound.apply_defaults()
            calls[_stage] = arguments = _call_arguments(bound.arguments)
            return results[_stage](**{key: arguments[key] for key in arguments
                                      if key == "out_dir"})

        fake.__signature__ = signature  # a second recording binds like the real function
        monkeypatch.setattr(module, name, fake)
    monkeypatch.setattr("skyseg.training.train.train", importlib.import_module("skyseg.training.train").train_model)
    monkeypatch.setattr("skyseg.predict.predictor.load_predictor", lambda model, **kwargs: model)


def _assert_cli_makes_the_same_call(monkeypatch, step) -> None:
    """Call a step as the pipeline does, then run its logged command line through the CLI:
    both make the same stage-function call."""
    from skyseg.cli import commands as cli
    direct: dict = {}
    _record_stage_calls(monkeypatch, direct)
    step()
    by_hand: dict = {}
    _record_stage_calls(monkeypatch, by_hand)
    assert cli.main(step.command) == 0, step.command_line
    assert ({key: _meaning(value) for key, value in by_hand[step.stage].items()}
            == {key: _meaning(value) for key, value in direct[step.stage].items()})


def test_stages_are_called_directly_with_their_command_lines_arguments(tmp_path, monkeypatch,
                                                                        capsys, caplog):
    """The pipeline calls the stage functions with keyword arguments, not the CLI; and the
    command line it logs for each step makes ``skyseg`` call the same function the same way."""
    import argparse
    import logging

    from skyseg.cli import commands as cli
    from skyseg.cli.config import PipelineConfig
    from skyseg.cli.pipeline import plan_pipeline, run_pipeline
    from skyseg.data.dataset import DatasetOptions
    from skyseg.demo.synthetic import DemoOptions
    from skyseg.predict.options import PredictOptions
    from skyseg.training.options import TrainOptions

    config = PipelineConfig(
        work_dir=tmp_path / "work", demo="synthetic", mode="hdr", seed=7,
        demo_data=DemoOptions(scenes=4, width=128),
        dataset=DatasetOptions(clip_max=5e4, patch_size=64, stride=32, scale=0.5,
                               ignore_sky_gaps=True),
        training=TrainOptions(epochs=2, steps_per_epoch=3, patience=4, learning_rate=2e-3,
                              backbone="resnet18", encoder_weights="imagenet"),
        prediction=PredictOptions(tile_size=128, tta=True))
    direct: dict = {}
    _record_stage_calls(monkeypatch, direct)
    monkeypatch.setattr(logging.getLogger("skyseg"), "propagate", True)
    caplog.set_level(logging.INFO, logger="skyseg")

    def no_parsing(*args, **kwargs):
        raise AssertionError("the pipeline parsed a command line")

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", no_parsing)
        patch.setattr(cli, "main", no_parsing)
        assert run_pipeline(config) == 0
    steps = plan_pipeline(config)
    assert list(direct) == [step.stage for step in steps] == list(STAGE_FUNCTIONS)
    # What the pipeline passes, spelled out for the settings above.
    assert direct["demo-data"] == dict(out_dir=config.demo_dir, scenes=4, width=128, seed=7,
                                       overwrite=False)
    build = direct["build-dataset"]
    assert (build["patch_size"], build["stride"], build["scale"], build["seed"]) == (
        64, 32, 0.5, 7)
    assert build["clip_max"] == 5e4 and build["mode"] == "hdr"
    assert build["ignore_sky_gaps"] is True
    assert build["split_files"] == {"train": config.demo_dir / "train.txt",
                                    "val": config.demo_dir / "val.txt"}
    train = direct["train"]
    assert (train["epochs"], train["steps_per_epoch"], train["patience"], train["backbone"],
            train["learning_rate"], train["resume"], train["verbose"]) == (
        2, 3, 4, "resnet18", 2e-3, False, 0)
    held_out = str(config.work_dir / "held_out")
    assert direct["predict"]["inputs"] == [held_out]
    assert (direct["predict"]["tile_size"], direct["predict"]["tta"]) == (128, True)
    assert direct["evaluate"]["images"] == config.work_dir / "held_out"
    assert direct["evaluate"]["model"] == direct["predict"]["model"] == str(config.run_dir)
    assert f"== train: {steps[3].command_line}" in caplog.messages
    for flag in (" --encoder-weights imagenet", " --steps-per-epoch 3", " --patience 4"):
        assert flag in steps[3].command_line
    assert "train: 3 patches, sky fraction 0.500" in capsys.readouterr().out  # build's report
    # Each logged command line, run through the CLI, makes the same call.
    for step in steps:
        by_hand: dict = {}
        _record_stage_calls(monkeypatch, by_hand)
        assert cli.main(step.command) == 0, step.command_line
        expected = {key: _meaning(value) for key, value in direct[step.stage].items()}
        got = {key: _meaning(value) for key, value in by_hand[step.stage].items()}
        assert got == expected, step.stage


def test_members_train_one_run_per_seed_and_predict_with_their_ensemble(tmp_path, monkeypatch):
    from skyseg.cli.config import PipelineConfig
    from skyseg.cli.pipeline import plan_pipeline
    from skyseg.demo.synthetic import DemoOptions
    from skyseg.errors import ConfigError
    from skyseg.training.options import TrainOptions

    work = tmp_path / "work"
    config = PipelineConfig(work_dir=work, demo="synthetic", members=3, seed=7,
                            demo_data=DemoOptions(scenes=4, width=128),
                            training=TrainOptions(epochs=2, backbone="resnet18"))
    steps = plan_pipeline(config)
    assert [step.stage for step in steps] == ["demo-data", "previews", "build-dataset", "train",
                                              "train", "train", "predict", "evaluate"]
    runs = [work / "run", work / "run-2", work / "run-3"]
    trains = steps[3:6]
    assert [(step.kwargs["out_dir"], step.options.seed) for step in trains] == list(
        zip(runs, (7, 8, 9), strict=True))
    assert f"--out {runs[1]} " in trains[1].command_line and " --seed 8" in trains[1].command_line
    predict, evaluate = steps[6:]
    assert (_call_arguments(predict.kwargs)["model"] == _call_arguments(evaluate.kwargs)["model"]
            == [str(run) for run in runs])
    assert predict.command_line.endswith(f"--ensemble {runs[1]} --ensemble {runs[2]}")
    assert evaluate.command_line.endswith(f"--ensemble {runs[1]} --ensemble {runs[2]}")
    # Each logged command line, run through the CLI, makes the same call as the pipeline.
    (work / "held_out").mkdir(parents=True)
    for step in (trains[2], predict, evaluate):
        _assert_cli_makes_the_same_call(monkeypatch, step)
    # Predicting without training needs every member's model.
    runs[0].mkdir(parents=True)
    (runs[0] / "model_best.h5").write_bytes(b"")
    config.train = False
    with pytest.raises(ConfigError, match=r"trained model in .*run-2, which has none"):
        plan_pipeline(config)
    with pytest.raises(ConfigError, match=r"x\.yaml: members = 0; give 1"):
        PipelineConfig().update({"members": 0}, source="x.yaml")
    assert PipelineConfig().run_dirs == [PipelineConfig().run_dir]


# --------------------------------------------------------------------------- the real demo

def test_the_default_demo_fine_tunes_the_shipped_model_on_real_panoramas(tmp_path, monkeypatch):
    """No data given: the bundled real panoramas, four to fine-tune the shipped model on
    and four held out; every logged command line makes the same call through the CLI."""
    from skyseg.cli import commands as cli
    from skyseg.cli.pipeline import config_from_args, plan_pipeline
    from skyseg.io.run_folder import DEFAULT_MODEL_DIR
    from skyseg.resources import RESOURCES

    parser = cli.build_parser()
    config = config_from_args(parser.parse_args(["pipeline", "--work-dir",
                                                 str(tmp_path / "work")]))
    demo = RESOURCES / "demo"
    assert config.uses_demo and not config.uses_synthetic_demo
    assert config.images_dir == demo / "images" and config.coco_file == demo / "result.json"
    train_list = (demo / "train.txt").read_text().split()
    val_list = (demo / "val.txt").read_text().split()
    assert sorted(train_list + val_list) == sorted(p.stem for p in (demo / "images").iterdir())
    assert not set(train_list) & set(val_list)
    steps = plan_pipeline(config)
    assert [step.stage for step in steps] == ["previews", "build-dataset", "train", "predict",
                                              "evaluate"]
    build, train = _call_arguments(steps[1].kwargs), _call_arguments(steps[2].kwargs)
    assert build["like"] == DEFAULT_MODEL_DIR and build["split_files"] == {
        "train": demo / "train.txt", "val": demo / "val.txt"}
    assert train["init"] == str(DEFAULT_MODEL_DIR)
    assert train["architecture"] is None and train["backbone"] is None
    assert (train["epochs"], train["steps_per_epoch"]) == (3, 25)
    assert f"--init {DEFAULT_MODEL_DIR}" in steps[2].command_line
    for step in steps:
        direct: dict = {}
        _record_stage_calls(monkeypatch, direct)
        (tmp_path / "work" / "held_out").mkdir(parents=True, exist_ok=True)
        step()
        by_hand: dict = {}
        _record_stage_calls(monkeypatch, by_hand)
        assert cli.main(step.command) == 0, step.command_line
        assert ({key: _meaning(value) for key, value in by_hand[step.stage].items()}
                == {key: _meaning(value) for key, value in direct[step.stage].items()})
    with pytest.raises(Exception, match="demo = 'fake'; choose one of real, synthetic"):
        config.update({"demo": "fake"}, source="x.yaml")


@pytest.mark.slow
def test_real_demo_end_to_end_in_short(tmp_path):
    """The bundled real demo, with a training of two batches: every stage runs, the
    held-out panoramas are predicted and scored."""
    work = tmp_path / "work"
    result = run_cli("pipeline", "--work-dir", work, "--epochs", "1", "--steps-per-epoch", "1",
                     "--batch-size", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "== demo-data" not in result.stderr
    held_out = sorted(p.stem for p in (work / "held_out").iterdir())
    assert held_out == ["park", "studio", "sunset", "warehouse"]
    assert sorted(p.name for p in (work / "predictions").glob("*_mask.png")) == [
        f"{stem}_mask.png" for stem in held_out]
    summary = json.loads((work / "evaluation" / "summary.json").read_text())
    assert summary["images"] == 4
    config = json.loads((work / "run" / "config.json").read_text())
    assert config["backbone"] == "efficientnetlite0" and config["init"]["from"].endswith(
        "models/default")


# --------------------------------------------------------------------------- several sources

def _two_sources_yaml(tmp_path):
    """A YAML config with two sources made of the bundled panoramas (links)."""
    from skyseg.resources import RESOURCES

    demo = RESOURCES / "demo"
    lines = ["init: default", "epochs: 1", "steps_per_epoch: 1", "batch_size: 2",
             "patch_size: 256", "stride: 256", "sources:"]
    for name, train, val, weight in (("outdoor", ["city"], ["park"], 3),
                                     ("indoor", ["apartment"], ["studio"], 1)):
        images = tmp_path / name / "images"
        images.mkdir(parents=True)
        for stem in train + val:
            (images / f"{stem}.hdr").symlink_to(demo / "images" / f"{stem}.hdr")
        (tmp_path / name / "train.txt").write_text("\n".join(train) + "\n")
        (tmp_path / name / "val.txt").write_text("\n".join(val) + "\n")
        coco = json.loads((demo / "result.json").read_text())
        keep = [image for image in coco["images"]
                if any(image["file_name"].endswith(f"-{stem}.jpg") for stem in train + val)]
        ids = {image["id"] for image in keep}
        coco.update(images=keep, annotations=[a for a in coco["annotations"]
                                              if a["image_id"] in ids])
        (tmp_path / name / "result.json").write_text(json.dumps(coco))
        lines += [f"  - name: {name}", f"    images: {name}/images",
                  f"    coco: {name}/result.json", f"    weight: {weight}",
                  f"    split_files: {{train: {name}/train.txt, val: {name}/val.txt}}"]
    path = tmp_path / "two.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sources_in_the_config_build_one_dataset_each_and_train_one_run(tmp_path, monkeypatch):
    from skyseg.cli.config import load_config
    from skyseg.cli.pipeline import link_held_out, plan_pipeline
    from skyseg.errors import ConfigError

    config = load_config(_two_sources_yaml(tmp_path))
    config.work_dir = tmp_path / "work"
    assert [(s.name, s.weight) for s in config.sources] == [("outdoor", 3.0), ("indoor", 1.0)]
    assert config.sources[0].images == tmp_path / "outdoor" / "images"  # relative to the file
    steps = plan_pipeline(config)
    assert [step.stage for step in steps] == ["previews", "previews", "build-dataset",
                                              "build-dataset", "train", "predict", "predict",
                                              "evaluate", "evaluate"]
    work = config.work_dir
    assert [step.kwargs["out_dir"] for step in steps[2:4]] == [work / "dataset" / "outdoor",
                                                              work / "dataset" / "indoor"]
    train = steps[4]
    assert train.kwargs["data_dir"] == [f"{work / 'dataset' / 'outdoor'}=3",
                                        f"{work / 'dataset' / 'indoor'}=1"]
    assert (f"--data {work / 'dataset' / 'outdoor'}=3 --data {work / 'dataset' / 'indoor'}=1"
            in train.command_line)
    assert [step.kwargs["out_dir"] for step in steps[7:]] == [work / "evaluation" / "outdoor",
                                                             work / "evaluation" / "indoor"]
    assert steps[5].kwargs["inputs"] == [str(work / "held_out" / "outdoor")]
    for step in steps:
        if step.held_out is not None:
            link_held_out(step.held_out)
        _assert_cli_makes_the_same_call(monkeypatch, step)
    for bad, message in (([{"name": "a", "images": "x"}], "missing coco"),
                         ([{"name": "a", "images": "x", "coco": "y", "colour": 1}],
                          r"unknown key\(s\) \['colour'\]"),
                         ([{"name": "a", "images": "x", "coco": "y", "weight": -1}],
                          "weight must be positive"),
                         ([{"name": "a", "images": "x", "coco": "y"},
                           {"name": "a", "images": "z", "coco": "y"}], "share a name")):
        with pytest.raises(ConfigError, match=message):
            config.update({"sources": bad}, source="x.yaml")


@pytest.mark.slow
def test_two_sources_end_to_end_report_each_source(tmp_path):
    path = _two_sources_yaml(tmp_path)
    work = tmp_path / "work"
    result = run_cli("pipeline", "--config", path, "--work-dir", work)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((work / "run" / "config.json").read_text())
    assert [item["name"] for item in config["data"]] == ["outdoor", "indoor"]
    for name, stem in (("outdoor", "park"), ("indoor", "studio")):
        summary = json.loads((work / "evaluation" / name / "summary.json").read_text())
        assert summary["images"] == 1
        assert (work / "predictions" / name / f"{stem}_mask.png").is_file()
        assert f"source '{name}': held-out scores" in result.stdout

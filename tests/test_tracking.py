"""MLflow tracking: one MLflow run per training run, continued on resume, evaluation added."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from skyseg.cli.commands import main
from skyseg.errors import ConfigError
from skyseg.io import write_png
from skyseg.io.run_folder import read_history
from skyseg.training.tracking import (
    TRACKING_FILE,
    MlflowTracker,
    flatten_params,
    log_evaluation,
    resolve_tracking_uri,
)

from .synthetic_patches import write_dataset

TRAIN_OPTIONS = ["--batch-size", "8", "--learning-rate", "1e-3", "--backbone", "resnet18",
                 "--encoder-weights", "none", "--seed", "0", "--bn-momentum", "0.6",
                 "--workers", "1"]


def test_docstring_examples():
    import doctest

    from skyseg.training import tracking
    assert doctest.testmod(tracking).failed == 0


def test_flatten_params_joins_nested_keys_and_cuts_long_values():
    params = flatten_params({"a": {"b": {"c": 1}, "d": None}, "e": [1, 2], "f": "x" * 30,
                             "g": {}}, limit=10)
    assert params == {"a.b.c": "1", "a.d": "None", "e": "[1, 2]", "f": "xxxxxxx...", "g": "{}"}


def test_tracking_uri_given_then_environment_then_local_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == (tmp_path / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_tracking_uri(None) == "http://tracking.example:5000"
    assert resolve_tracking_uri("file:./elsewhere") == (tmp_path / "elsewhere").resolve().as_uri()
    assert resolve_tracking_uri("store") == (tmp_path / "store").resolve().as_uri()


def test_missing_mlflow_is_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'skyseg\[mlflow\]'"):
        MlflowTracker(tmp_path / "run")
    data = write_dataset(tmp_path / "data", counts={"train": 8, "val": 8}, size=32)
    status = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                   "--mlflow", *TRAIN_OPTIONS])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("skyseg train: error: --mlflow: the mlflow package is not "
                              "installed")
    assert "pip install 'skyseg[mlflow]'" in err[-1]
    assert not (tmp_path / "run" / "model_last.h5").exists()  # refused before training


def test_evaluate_mlflow_needs_a_tracked_run(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"run has no mlflow.json.*skyseg train --mlflow"):
        log_evaluation(tmp_path / "run", {"images": 1})


# --------------------------------------------------------------------------- real MLflow store


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A 2-epoch run tracked in a local MLflow file store, then resumed to 3 epochs."""
    pytest.importorskip("mlflow", reason="mlflow is in the dev extra: pip install -e .[dev]")
    root = tmp_path_factory.mktemp("tracking")
    data = write_dataset(root / "data", counts={"train": 16, "val": 8}, size=32, mode="ldr")
    store = (root / "mlruns").as_uri()
    run_dir = root / "run"
    first = main(["train", "--data", str(data), "--out", str(run_dir), "--epochs", "2",
                  "--mlflow", store, "--mlflow-experiment", "sky-tests", *TRAIN_OPTIONS])
    record_after_first = json.loads((run_dir / TRACKING_FILE).read_text())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    snapshot = client.get_run(record_after_first["run_id"])
    resumed = main(["train", "--data", str(data), "--out", str(run_dir), "--epochs", "3",
                    "--resume", "--mlflow", store, "--mlflow-experiment", "sky-tests",
                    *TRAIN_OPTIONS])
    return dict(root=root, data=data, store=store, run_dir=run_dir, client=client,
                statuses=(first, resumed), first_record=record_after_first,
                first_run=snapshot)


@pytest.mark.slow
def test_a_training_run_is_one_mlflow_run_with_params_metrics_tags_artifacts(tracked):
    client, record, first = tracked["client"], tracked["first_record"], tracked["first_run"]
    assert tracked["statuses"] == (0, 0)
    experiment = client.get_experiment_by_name("sky-tests")
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [record["run_id"]]
    assert record["tracking_uri"] == tracked["store"]
    # After the first command: 2 epochs, 2 steps of each metric.
    params = first.data.params
    config = json.loads((tracked["run_dir"] / "config.json").read_text())
    assert params["backbone"] == "resnet18" and params["epochs"] == "2"
    assert params["preprocessing.mode"] == "ldr"  # nested dicts flattened
    assert params["augmentation.rotation"] == str(config["augmentation"]["rotation"])
    assert params["encoder_weights"] == "None"
    assert first.data.tags["skyseg.dataset"] == str(tracked["data"].resolve())
    assert first.data.tags["skyseg.version"] == config["skyseg_version"]
    assert first.info.status == "FINISHED"
    assert first.info.run_name == "run"
    assert sorted(first.data.metrics) == ["dice", "iou", "loss", "lr", "seconds", "val_dice",
                                          "val_iou", "val_loss"]


@pytest.mark.slow
def test_resume_continues_the_same_mlflow_run(tracked):
    client, run_id = tracked["client"], tracked["first_record"]["run_id"]
    assert json.loads((tracked["run_dir"] / TRACKING_FILE).read_text()) == tracked[
        "first_record"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = read_history(tracked["run_dir"] / "history.csv")
    for key in ("loss", "iou", "val_loss", "val_iou", "lr"):
        logged = client.get_metric_history(run_id, key)
        # Every epoch exactly once, step = epoch, the values of history.csv.
        assert sorted(metric.step for metric in logged) == [1, 2, 3], key
        by_step = {metric.step: metric.value for metric in logged}
        assert [by_step[row["epoch"]] for row in history] == pytest.approx(
            [row[key] for row in history], rel=1e-12), key
    # The first values of options a resume may change stay (MLflow forbids changing them).
    assert run.data.params["epochs"] == "2"
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {"config.json", "history.csv", "curves.png", "samples.png", "model_best.h5",
            "preprocessing.json"} <= artifacts
    local = client.download_artifacts(run_id, "history.csv", str(tracked["root"] / "dl"))
    assert [row["epoch"] for row in read_history(local)] == [1, 2, 3]


@pytest.mark.slow
def test_evaluate_logs_its_summary_to_the_training_run(tracked, capsys):
    rng = np.random.default_rng(0)
    images, masks = tracked["root"] / "images", tracked["root"] / "masks"
    images.mkdir()
    masks.mkdir()
    for k in range(2):
        picture = rng.integers(0, 60, (64, 64, 3)).astype(np.uint8)
        picture[:30] = (150, 200, 250)
        write_png(images / f"img{k}.png", picture)
        truth = np.zeros((64, 64), np.uint8)
        truth[:30] = 1
        write_png(masks / f"img{k}.png", truth)
    out = tracked["root"] / "eval-val"
    status = main(["evaluate", str(tracked["run_dir"]), "--images", str(images), "--masks",
                   str(masks), "--out", str(out), "--tile-size", "64", "--mlflow"])
    assert status == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    client, run_id = tracked["client"], tracked["first_record"]["run_id"]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["eval_images"] == 2
    assert metrics["eval_iou_mean"] == pytest.approx(summary["mean"]["iou"])
    assert metrics["eval_iou_median"] == pytest.approx(summary["median"]["iou"])
    assert metrics["eval_pooled_iou"] == pytest.approx(summary["pooled"]["iou"])
    assert metrics["eval_boundary_f_mean"] == pytest.approx(summary["mean"]["boundary_f"])
    artifacts = {item.path for item in client.list_artifacts(run_id, "evaluate/eval-val")}
    assert artifacts == {"evaluate/eval-val/summary.json", "evaluate/eval-val/metrics.csv"}
    # The training metrics are untouched and there is still one run.
    assert len(client.get_metric_history(run_id, "val_iou")) == 3

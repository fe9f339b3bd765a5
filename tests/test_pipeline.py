"""`skyseg pipeline` end to end on a tiny demo: every stage, the summary, a second run, flags."""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli

TINY = ["--demo-scenes", "4", "--demo-width", "128", "--patch-size", "64", "--stride", "64",
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

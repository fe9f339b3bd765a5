"""The benchmarks under scripts/: their shared harness and their scoring, by hand."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    """The script ``scripts/NAME.py`` as a module, with the folder on the path as
    ``python scripts/NAME.py`` has it (so that ``from harness import`` works)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    module = importlib.import_module(name)
    assert Path(module.__file__).parent == SCRIPTS, module.__file__
    return module


def test_scripts_hold_benchmarks_and_their_harness_only():
    names = sorted(path.name for path in SCRIPTS.iterdir() if path.is_file())
    assert names == ["bench_build.py", "bench_camvid.py", "bench_damaged.py", "bench_finetune.py",
                     "bench_loader.py", "bench_predict.py", "bench_read.py", "bench_real_hdri.py",
                     "bench_refine.py", "harness.py"]
    for name in names:
        if name.startswith("bench_"):
            text = (SCRIPTS / name).read_text(encoding="utf-8")
            assert "from harness import" in text, name
            # One copy of the harness's jobs: no private peak-memory or path set-up.
            assert "ru_maxrss" not in text and "VmHWM" not in text, name
            assert "sys.path.insert" not in text, name


# --------------------------------------------------------------------------- harness

def test_table_aligns_titles_and_values_by_the_column_format():
    harness = _script("harness")
    table = harness.Table([("model", "<10"), ("IoU", ">7.3f"), ("false sky", ">9.2%"),
                           ("change", ">+8.4f"), ("epochs", ">6")])
    assert table.header() == "model          IoU false sky   change epochs"
    assert table.row("demo", 0.92549, 0.0123, -0.00104, 7) == (
        "demo         0.925     1.23%  -0.0010      7")
    # Text in a number column is aligned like the numbers, None is "-", trailing columns
    # may be left out.
    assert table.row("base", "12.5", None) == "base          12.5         -"
    with pytest.raises(ValueError, match="6 values for 5 columns"):
        table.row(1, 2, 3, 4, 5, 6)
    indented = harness.Table([("", "<4"), ("a", "6.1f")], indent="  ", gap="")
    assert indented.header() == "  " + "    " + "     a"  # indent, 4 wide, 6 wide
    assert indented.row("x", 2.25) == "  " + "x   " + "   2.2"


def test_timer_and_stopwatch_add_up_what_they_time():
    harness = _script("harness")
    with harness.Timer() as timer:
        pass
    assert timer.seconds >= 0.0
    watch = harness.Stopwatch()
    double = watch.wrap("double", lambda value: 2 * value)
    assert double(3) == 6 and double(4) == 8
    watch.add("double", 1.5)
    watch.add("other", 0.25)
    assert sorted(watch.seconds) == ["double", "other"]
    assert watch.seconds["double"] >= 1.5 and watch.seconds["other"] == 0.25
    with pytest.raises(ZeroDivisionError):  # an error still counts its time, and passes
        watch.wrap("fails", lambda: 1 / 0)()
    assert "fails" in watch.seconds


def test_child_peak_memory_is_the_childs_own():
    harness = _script("harness")
    megabytes = 2**20
    # 40 million float64 = 320,000,000 bytes = 305.2 MiB, all written.
    big = harness.run_child(["-c", "import numpy as np, sys; a = np.ones(40_000_000); "
                             "print(int(a.sum())); print('to stderr', file=sys.stderr)"])
    assert big.returncode == 0 and big.stdout == "40000000\n"
    assert big.stderr == "to stderr\n"  # the harness's report line is taken out
    assert big.peak_rss_mb >= 320_000_000 / megabytes
    # A parent holding 200 MiB does not lend it to a child that holds next to nothing.
    held = np.ones(200 * megabytes // 8)
    assert harness.peak_rss_mb() >= 200
    small = harness.run_child(["-c", "pass"])
    assert small.peak_rss_mb < 100
    del held
    module = harness.run_child(["-m", "json.tool", "--help"])
    assert module.returncode == 0 and "json.tool" in module.stdout
    failing = harness.run_child(["-c", "raise SystemExit(3)"])
    assert failing.returncode == 3


def test_child_runs_a_script_with_its_folder_on_the_path(tmp_path):
    harness = _script("harness")
    (tmp_path / "helper.py").write_text("VALUE = 41\n")
    (tmp_path / "script.py").write_text(
        "import sys\nfrom helper import VALUE\nprint(VALUE + 1, sys.argv[1:])\n")
    child = harness.run_child([tmp_path / "script.py", "--flag", "x"])
    assert child.returncode == 0 and child.stdout == "42 ['--flag', 'x']\n"
    with pytest.raises(RuntimeError, match=r"no peak memory reported \(exit -9\)"):
        harness.run_child(["-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])


def test_upscale_keeps_a_constant_and_scales_the_size():
    harness = _script("harness")
    image = np.zeros((2, 4, 3), np.float32)
    image[..., 0], image[..., 1], image[..., 2] = 1.0, 2.0, 0.5
    big = harness.upscale(image, 16, 8)
    assert big.shape == (8, 16, 3) and big.dtype == np.float32
    np.testing.assert_allclose(big[..., 0], 1.0)
    np.testing.assert_allclose(big[..., 1], 2.0)
    np.testing.assert_allclose(big[..., 2], 0.5)


def test_panorama_is_made_once_per_size_and_noise(tmp_path):
    from skyseg.io import read_image

    from .conftest import shared_path

    harness = _script("harness")
    shared_path("exr-samples")
    plain = harness.panorama(64, cache=tmp_path)
    assert plain.name == "KernerEnvLatLong_64x32.exr"
    assert read_image(plain).shape == (32, 64, 3)
    stamp = plain.stat().st_mtime_ns
    assert harness.panorama(64, 32, cache=tmp_path) == plain
    assert plain.stat().st_mtime_ns == stamp  # cached, not made again
    noisy = harness.panorama(64, cache=tmp_path, noise=0.01)
    assert noisy.name == "KernerEnvLatLong_64x32_noise0.01.exr"
    ratio = read_image(noisy) / np.maximum(read_image(plain), 1e-3)
    bright = read_image(plain) > 0.05  # half floats: relative noise shows where it is not tiny
    assert 0.003 < float(np.std(ratio[bright])) < 0.03  # 1 % noise, as asked


# --------------------------------------------------------------------------- benchmarks

def test_worst_drop_counts_only_falls_after_the_first_fifth():
    bench = _script("bench_camvid")
    # A fall in epoch 2 of 10 (inside the first 20 %) does not count; 0.92 -> 0.85 does.
    values = [0.5, 0.3, 0.8, 0.9, 0.92, 0.85, 0.9, 0.91, 0.93, 0.93]
    assert bench.worst_drop(values) == pytest.approx(0.07)
    assert bench.worst_drop([0.1, 0.2, 0.3]) == 0.0


def test_augment_options_change_one_range_each():
    bench = _script("bench_camvid")
    augmentation = bench.augmentation(argparse.Namespace(
        augment=["white_balance=0.5", "horizontal_flip=false", "fill=constant"]))
    assert augmentation.white_balance == 0.5
    assert augmentation.horizontal_flip is False
    assert augmentation.fill == "constant"
    assert augmentation.exposure_ev == 2.0  # the others keep their defaults
    with pytest.raises(SystemExit, match="--augment .colour=1.: unknown setting .colour."):
        bench.augmentation(argparse.Namespace(augment=["colour=1"]))


def test_real_panorama_scores_by_hand():
    bench = _script("bench_real_hdri")
    truth = np.array([[1, 1, 1, 1],
                      [1, 1, 255, 0],
                      [0, 0, 0, 0]], np.uint8)
    sky = np.array([[1, 1, 1, 0],
                    [1, 1, 1, 1],
                    [0, 1, 0, 0]], bool)
    row = bench.score(sky, truth, tolerance=2)
    # 5 of 6 sky pixels found, 2 of 5 not-sky pixels called sky; the ignored one counts not.
    assert (row["tp"], row["fp"], row["fn"], row["not_sky"]) == (5, 2, 1, 5)
    assert row["iou"] == pytest.approx(5 / 8) and row["false_sky"] == pytest.approx(2 / 5)
    rows = [{**row, "group": "outdoor"},
            {"group": "outdoor", "tp": 3, "fp": 0, "fn": 1, "not_sky": 4, "boundary_f": 0.5},
            {"group": "indoor", "false_sky": 0.01}, {"group": "indoor", "false_sky": 0.03}]
    summary = bench.summarise(rows)
    assert summary["pooled_iou"] == pytest.approx(8 / 12)  # (5 + 3) / (8 + 4)
    assert summary["boundary_f"] == pytest.approx((row["boundary_f"] + 0.5) / 2)
    assert summary["outdoor_false_sky"] == pytest.approx(2 / 9)
    assert summary["indoor_false_sky"] == pytest.approx(0.02)


def test_each_panorama_is_scored_by_a_fold_that_never_saw_it():
    bench = _script("bench_real_hdri")
    from skyseg.evaluation.check import Panorama

    panoramas = [Panorama("outdoor", Path(f"{stem}.hdr")) for stem in ("city", "park", "lab")]
    results = {
        "fold1": [{"stem": "city", "seen": "train", "iou": 0.99},
                  {"stem": "park", "seen": "-", "iou": 0.8},
                  {"stem": "lab", "seen": "val", "iou": 0.9}],
        "fold2": [{"stem": "city", "seen": "-", "iou": 0.7},
                  {"stem": "park", "seen": "-", "iou": 0.6},
                  {"stem": "lab", "seen": "train", "iou": 0.95}],
    }
    crossed, missing = bench.cross_validated(results, 2, panoramas)
    assert [(r["stem"], r["iou"]) for r in crossed] == [("city", 0.7), ("park", 0.8)]
    assert missing == ["lab"]


def test_refine_acceptance_by_hand():
    bench = _script("bench_refine")
    none = {"boundary_f": 0.50, "pooled_iou": 0.900}
    assert bench.accepted(none, {"boundary_f": 0.531, "pooled_iou": 0.896})  # +0.031, -0.004
    assert not bench.accepted(none, {"boundary_f": 0.529, "pooled_iou": 0.95})  # +0.029
    assert not bench.accepted(none, {"boundary_f": 0.60, "pooled_iou": 0.894})  # -0.006


def test_few_shot_images_are_spread_over_the_new_sequence():
    bench = _script("bench_finetune")
    stems = ([f"0001TP_{i:03d}" for i in range(20)] + [f"0006R0_{i:03d}" for i in range(3)]
             + [f"0016E5_{i:03d}" for i in range(2)])
    chosen = bench.pick_images(stems, "0001TP", 5, seed=0)
    assert chosen["base"] == stems[20:]
    # One frame in each fifth of the 20 (0-3, 4-7, ...); one of the five is val.
    assert [int(stem[-3:]) // 4 for stem in chosen["picked"]] == [0, 1, 2, 3, 4]
    assert len(chosen["val"]) == 1 and sorted(chosen["train"] + chosen["val"]) == sorted(
        chosen["picked"])
    assert sorted(chosen["test"] + chosen["picked"]) == stems[:20]
    assert bench.pick_images(stems, "0001TP", 5, seed=0) == chosen  # seeded
    with pytest.raises(SystemExit, match="--labelled must be between 2 and 19"):
        bench.pick_images(stems, "0001TP", 20, seed=0)


def test_build_benchmark_labels_every_copy():
    bench = _script("bench_build")
    data = bench.coco_labels(["a", "a_copy1"])
    assert [image["file_name"] for image in data["images"]] == [
        "images/0badcafe-a.jpg", "images/0badcafe-a_copy1.jpg"]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in data["annotations"]] == [
        (2, 1, 1), (3, 1, 2), (4, 2, 1), (5, 2, 2)]
    sky = data["annotations"][0]["segmentation"][0]
    assert sky[:4] == [0.0, 0.0, 2048.0, 0.0] and len(sky) == 4 + 2 * 65


def test_damaged_benchmark_counts_what_each_read_gave(tmp_path):
    from skyseg.io import write_exr

    bench = _script("bench_damaged")
    write_exr(tmp_path / "good.exr", np.ones((4, 8, 3), np.float32))
    (tmp_path / "bad.exr").write_bytes(b"v/1\x01 not an exr")
    counts = bench.read_all([tmp_path / "bad.exr", tmp_path / "good.exr"])
    assert (counts["named"], counts["read_ok"], counts["other"]) == (1, 1, 0)
    assert counts["slowest"][1] in ("bad.exr", "good.exr")


@pytest.mark.slow
def test_real_panorama_benchmark_marks_what_the_model_learnt_from(tmp_path, capsys):
    from .conftest import shared_path

    data = shared_path("real-hdri")
    bench = _script("bench_real_hdri")
    assert bench.main(["--model", f"shipped={bench.ROOT / 'skyseg/resources/models/default'}",
                       "--data", str(data), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    print(out)  # the figures, for the log
    rows = [line.split() for line in out.splitlines() if line.startswith("shipped ")
            and "/" in line.split()[1]]
    assert len(rows) == 8
    # The shipped model learnt from every shared panorama: no figure passes for held out.
    assert {row[2] for row in rows} == {"train"}
    assert "never seen (held out)   no panorama" in out
    assert (tmp_path / "shipped" / "contact_sheet.png").is_file()
    assert bench.main(["--data", str(tmp_path / "none")]) == 2


@pytest.mark.slow
def test_predict_benchmark_times_every_stage_of_a_small_panorama(tmp_path):
    from .conftest import shared_path

    shared_path("exr-samples")
    harness = _script("harness")
    bench = _script("bench_predict")
    source = harness.panorama(256, cache=tmp_path)
    # A run trained at half scale: the network at 128x64, refined back to full size.
    figures = bench.run_one(source, 64, 256, 128, scale=0.5, full_model_tiles=1)
    # Every stage's functions were found and called (a moved function would time nothing).
    assert set(figures["stages_s"]) == {"read", "preprocess", "network", "merge", "refine",
                                        "write"}
    assert figures["mask_size"] == [256, 128] and figures["working_size"] == [128, 64]
    assert figures["tiles"] == 2 * 3 and figures["tile_shape"] == [64, 64]  # overlap 16 px
    assert figures["whole_to_full_model"] == pytest.approx(
        figures["whole_process_s"] / figures["full_model_s"])
    assert figures["outputs"] == [f"{source.stem}_mask.png", f"{source.stem}_overlay.png"]
    assert figures["peak_rss_gb"] >= figures["rss_after_build_gb"] > 0
    assert figures["bytes_per_pixel"] == pytest.approx(
        figures["peak_rss_gb"] * 2**30 / (256 * 128))

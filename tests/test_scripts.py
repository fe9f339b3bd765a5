"""The pure helpers of the benchmark and check scripts under scripts/."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_label_convention_counts_sky_between_branches_labelled_tree():
    check = _script("check_label_convention")
    image = np.full((300, 300, 3), 200.0, np.float32)  # bright sky everywhere ...
    image[150:] = 40.0  # ... above dark ground
    image[134:150:4, 150:] = 20.0  # dark branches in the right half, just above the ground
    mask = np.zeros((300, 300), np.uint8)
    mask[:150] = 1
    tree_labelled = mask.copy()
    tree_labelled[134:150, 150:] = 0  # one labeller: the whole crown is tree
    alike_tree, sky_tree = check.sky_coloured_not_sky(image, tree_labelled)
    alike_sky, sky_sky = check.sky_coloured_not_sky(image, mask)
    # The gaps between the branches (sky brightness, labelled tree) are counted;
    # the branches themselves and the dark ground are not.
    gaps = int((image[134:150, 150:, 0] == 200.0).sum())
    assert 0.9 * gaps <= alike_tree <= gaps
    assert alike_sky == 0
    assert sky_sky == 150 * 300 and sky_tree == 150 * 300 - 16 * 150


def test_demo_levels_measure_exposure_sky_and_its_lead_over_the_ground():
    check = _script("check_demo_levels")
    image = np.full((40, 80, 3), 0.25, np.float32)  # ground: 2 stops below 1
    image[:10] = 4.0  # sky: 2 stops above 1
    image[0, 0] = np.nan  # damaged pixels count as black, not as NaN
    sky = np.zeros((40, 80), bool)
    sky[:10] = True
    values = check.levels(image, sky)
    assert values["sky"] == pytest.approx(2.0)
    assert values["sky_minus_ground"] == pytest.approx(4.0)
    expected = (10 * 80 * 2.0 + 30 * 80 * -2.0 - 2.0 + np.log2(check.FLOOR)) / (40 * 80)
    assert values["exposure"] == pytest.approx(expected)
    assert np.isnan(check.levels(image, np.ones((40, 80), bool))["sky_minus_ground"])
    # Unlabelled: the top rows stand in for the sky, the bottom half for the ground.
    real = check.real_levels(image, top_rows=8)
    assert real["sky"] == pytest.approx(2.0) and real["sky_minus_ground"] == pytest.approx(4.0)
    assert check.darker_share(0.0, [-3.0, -1.0, 1.0, 2.0]) == 0.5
    assert np.isnan(check.darker_share(0.0, []))


def test_demo_levels_place_real_panoramas_among_the_demo_scenes(tmp_path, capsys):
    from skyseg.demo.synthetic import make_demo_data
    from skyseg.io import write_hdr

    check = _script("check_demo_levels")
    demo = tmp_path / "demo"
    make_demo_data(demo, scenes=4, width=64, seed=3)  # town, indoor, seam, overcast
    real = tmp_path / "real"
    (real / "outdoor").mkdir(parents=True)
    (real / "indoor").mkdir()
    bright = np.full((32, 64, 3), 64.0, np.float32)  # brighter than any demo scene
    bright[16:] = 8.0
    write_hdr(real / "outdoor" / "bright.hdr", bright)
    write_hdr(real / "indoor" / "dark.hdr", np.full((32, 64, 3), 1e-5, np.float32))
    assert check.main([str(demo), "--data", str(real)]) == 0
    lines = capsys.readouterr().out.splitlines()
    themes = sorted(line.split()[1] for line in lines if line.startswith("demo "))
    assert themes == ["indoor", "overcast", "seam", "town"]
    bright_line = next(line for line in lines if "outdoor/bright" in line)
    assert bright_line.endswith("of the demo's outdoor scenes darker")
    assert bright_line.split("%")[0].split()[-1] == "100"  # brighter than every demo scene
    assert "+3.00" in bright_line  # the top band is 3 stops above the ground
    dark_line = next(line for line in lines if "indoor/dark" in line)
    assert dark_line.split("%")[0].split()[-1] == "0"  # darker than every demo room
    # A damaged panorama is listed at the end and gives status 1; the others are printed.
    (real / "outdoor" / "broken.hdr").write_bytes(b"#?RADIANCE\nnot an image")
    assert check.main([str(demo), "--data", str(real)]) == 1
    captured = capsys.readouterr()
    assert "outdoor/bright" in captured.out and "broken.hdr" in captured.err.splitlines()[-1]
    (real / "outdoor" / "broken.hdr").unlink()
    # Folders that cannot be used: one line naming the fix, status 2.
    assert check.main([str(real), "--data", str(real)]) == 2
    assert "skyseg demo-data --out DIR" in capsys.readouterr().err
    assert check.main([str(demo), "--data", str(tmp_path / "none")]) == 2
    assert "pass --data DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_real_hdri_check_scores_indoor_sky_for_one_run_or_an_ensemble(tmp_path, capsys):
    from skyseg.io import write_hdr

    from .test_predict import make_run

    check = _script("check_real_hdri")
    real = tmp_path / "real"
    for group in ("indoor", "outdoor"):
        (real / group).mkdir(parents=True)
        write_hdr(real / group / f"{group}.hdr", np.full((32, 64, 3), 0.5, np.float32))
    sky = make_run(tmp_path / "sky", "constant", mode="hdr", value=0.8)  # sky everywhere
    ground = make_run(tmp_path / "ground", "constant", mode="hdr", value=0.1)
    assert check.main([str(sky), "--data", str(real)]) == 1
    out = capsys.readouterr().out
    assert "indoor/indoor.hdr" in out and "100.0%" in out and "ABOVE the target" in out
    assert (sky / "real-hdri" / "indoor_indoor_overlay.png").is_file()
    assert (sky / "real-hdri" / "contact_sheet.png").is_file()
    # Averaged with a run that sees no sky: 0.45 everywhere, so nothing is sky.
    assert check.main([str(sky), str(ground), "--data", str(real)]) == 0
    out = capsys.readouterr().out
    assert f"run {sky} + {ground}" in out and "indoor mean 0.0%: within" in out
    assert (sky / "real-hdri-ensemble" / "contact_sheet.png").is_file()
    # An unreadable panorama is listed and gives status 1; the others are still scored.
    (real / "outdoor" / "broken.hdr").write_bytes(b"#?RADIANCE\nnot an image")
    assert check.main([str(sky), str(ground), "--data", str(real)]) == 1
    captured = capsys.readouterr()
    assert "outdoor/outdoor.hdr" in captured.out and "broken.hdr" in captured.err
    assert check.main([str(tmp_path / "none"), "--data", str(real)]) == 2
    assert "no such run folder" in capsys.readouterr().err


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


@pytest.mark.slow
def test_real_panorama_benchmark_marks_what_the_model_learnt_from(tmp_path, capsys):
    from .conftest import shared_path

    data = shared_path("real-hdri")
    bench = _script("bench_real_hdri")
    assert bench.main(["--model", f"shipped={bench.ROOT / 'skyseg/resources/models/default'}",
                       "--data", str(data), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("shipped ")
            and "/" in line.split()[1]]
    assert len(rows) == 8
    # The shipped model learnt from every shared panorama: no figure passes for held out.
    assert {row[2] for row in rows} == {"train"}
    assert "never seen (held out)   no panorama" in out
    assert (tmp_path / "shipped" / "contact_sheet.png").is_file()
    assert bench.main(["--data", str(tmp_path / "none")]) == 2

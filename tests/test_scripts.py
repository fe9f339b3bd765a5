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

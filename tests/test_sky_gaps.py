"""Sky seen through gaps between branches: found, and only there (skyseg.labels.sky_gaps)."""

from __future__ import annotations

import numpy as np
import pytest

from skyseg.labels.sky_gaps import find_sky_gaps, ignore_sky_gaps, sky_coloured_not_sky
from tests.conftest import shared_path


def _street() -> tuple[np.ndarray, np.ndarray, dict[str, tuple[slice, slice]]]:
    """240x240: bright sky above dark ground, a bare crown and a white wall labelled not sky."""
    image = np.full((240, 240, 3), 200.0, np.float32)
    image[60:] = 40.0  # ground
    mask = np.zeros((240, 240), np.uint8)
    mask[:60] = 1
    crown = (slice(46, 60), slice(70, 120))
    wall = (slice(30, 60), slice(0, 40))
    image[46:60:3, 70:] = 30.0  # dark branches, bright sky between them
    image[46:60, 70:120:7] = 30.0  # and twigs across
    mask[crown] = 0  # labelled tree, gaps and all
    mask[wall] = 0  # white wall as bright as the sky: smooth and large
    return image, mask, {"crown": crown, "wall": wall}


def test_gaps_between_branches_found_and_only_there():
    image, mask, parts = _street()
    gaps = find_sky_gaps(image, mask)
    crown_gaps = image[parts["crown"]][..., 0] == 200.0
    found = gaps[parts["crown"]]
    assert found[crown_gaps].mean() >= 0.9  # the light between the branches
    assert not found[~crown_gaps].any()  # never the branches
    assert not gaps[parts["wall"]].any()  # a smooth white wall stays not sky
    assert not gaps[mask == 1].any()  # labelled sky is never touched
    outside = np.ones_like(gaps)
    outside[parts["crown"]] = False
    assert not gaps[outside].any()


def test_smooth_wall_is_sky_coloured_but_no_gap():
    image, mask, parts = _street()
    alike = sky_coloured_not_sky(image, mask)
    assert alike[parts["wall"]].mean() > 0.3  # near the sky and as bright ...
    assert not find_sky_gaps(image, mask)[parts["wall"]].any()  # ... but large and smooth


def test_small_smooth_gap_counts_whatever_its_texture():
    image, mask, _ = _street()
    mask[20:23, 100:103] = 0  # a 9-pixel hole in the sky traced as not sky, sky-coloured
    assert find_sky_gaps(image, mask)[20:23, 100:103].all()
    assert not find_sky_gaps(image, mask, max_area=0.0)[20:23, 100:103].any()


@pytest.mark.parametrize("factor", [1 / 255, 1000.0])
def test_same_gaps_for_ldr_range_and_hdr_radiance(factor):
    image, mask, _ = _street()
    np.testing.assert_array_equal(find_sky_gaps(image * factor, mask),
                                  find_sky_gaps(image, mask))
    np.testing.assert_array_equal(find_sky_gaps(image.mean(-1), mask),
                                  find_sky_gaps(image, mask))


def test_ignore_sky_gaps_marks_255_on_a_copy():
    image, mask, _ = _street()
    before = mask.copy()
    out, count = ignore_sky_gaps(image, mask)
    np.testing.assert_array_equal(mask, before)
    gaps = find_sky_gaps(image, mask)
    assert count == gaps.sum() > 0
    assert (out[gaps] == 255).all()
    np.testing.assert_array_equal(out[~gaps], mask[~gaps])


def test_nothing_without_sky_and_size_mismatch():
    image, mask, _ = _street()
    assert not find_sky_gaps(image, np.zeros_like(mask)).any()
    with pytest.raises(ValueError, match="differ in size"):
        find_sky_gaps(image[:100], mask)


def test_real_camvid_crown():
    from skyseg.io import read_image
    from skyseg.labels.annotations import load_coco

    root = shared_path("camvid-sky")
    stem = "0006R0_f03510"  # bare trees against a white sky, labelled tree
    image = read_image(root / "images" / f"{stem}.jpg")
    mask = load_coco(root / "result.json").mask(stem, *image.shape[:2])
    gaps = find_sky_gaps(image, mask)
    assert not gaps[mask != 0].any()
    assert gaps.sum() > 0.02 * (mask == 1).sum()
    assert not gaps[image.shape[0] * 2 // 3:].any()  # nothing on the road and the cars

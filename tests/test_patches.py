"""Patch grid, padding and banded extraction (tiny images, so TensorFlow work stays small)."""

from __future__ import annotations

import numpy as np
import pytest

from skyseg.data.patches import (
    IGNORE,
    extract_patches,
    pad_to_grid,
    patch_grid,
    patch_starts,
)
from skyseg.errors import ConfigError

# (length, patch, stride): smaller than a patch, exactly a patch, exact multiple of
# the stride, off by one either side, a 1-pixel remainder, a 1-pixel image.
AXIS_CASES = [
    (1, 16, 10), (9, 16, 10), (15, 16, 10), (16, 16, 10), (17, 16, 10), (26, 16, 10),
    (27, 16, 10), (36, 16, 10), (37, 16, 10), (40, 16, 10), (70, 16, 10), (32, 16, 16),
    (33, 16, 16), (31, 16, 16), (100, 16, 1), (256, 256, 100), (4096, 256, 100),
    (8192, 256, 100), (360, 512, 512), (480, 512, 512),
]


@pytest.mark.parametrize(("length", "patch", "stride"), AXIS_CASES)
def test_starts_cover_every_pixel_and_stay_inside(length, patch, stride):
    starts = patch_starts(length, patch, stride)
    covered = np.zeros(max(length, patch), bool)
    for start in starts:
        covered[start:start + patch] = True
    assert covered[:length].all()
    assert starts[0] == 0
    assert list(starts) == sorted(set(starts))
    if length >= patch:
        assert starts[-1] == length - patch  # last patch aligned to the border
        assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))
        # regular steps everywhere except possibly the last one
        assert all(b - a == stride for a, b in zip(starts[:-1], starts[1:-1], strict=False))
    else:
        assert starts == (0,)


def test_starts_known_values():
    assert patch_starts(40, 16, 10) == (0, 10, 20, 24)
    assert patch_starts(36, 16, 10) == (0, 10, 20)
    assert patch_starts(37, 16, 10) == (0, 10, 20, 21)
    assert patch_starts(16, 16, 10) == (0,)
    assert patch_starts(17, 16, 16) == (0, 1)
    assert len(patch_starts(8192, 256, 100)) == 81
    assert len(patch_starts(4096, 256, 100)) == 40


def test_grid_counts_and_valid_size():
    grid = patch_grid(40, 70, 16, 10)
    assert grid.rows == (0, 10, 20, 24)
    assert grid.cols == (0, 10, 20, 30, 40, 50, 54)
    assert len(grid) == 28 == len(grid.positions())
    assert grid.positions()[8] == (10, 10)
    small = patch_grid(5, 70, 16, 10)
    assert small.padded_size == (16, 70)
    assert small.valid_size(0, 54) == (5, 16)
    assert patch_grid(20, 20, 16).stride == 16


@pytest.mark.parametrize(("patch", "stride", "match"), [
    (16, 17, "larger than the patch size"),
    (16, 0, "at least 1"),
    (16, -3, "at least 1"),
    (1, 1, "at least 2"),
    (0, 1, "at least 2"),
    (16.5, 10, "whole number"),
    (16, "10", "whole number"),
])
def test_bad_patch_options(patch, stride, match):
    with pytest.raises(ConfigError, match=match):
        patch_grid(40, 70, patch, stride)


def test_pad_reflects_image_and_ignores_mask():
    image = np.arange(3 * 4 * 1, dtype=np.float32).reshape(3, 4, 1).repeat(3, axis=2)
    mask = np.ones((3, 4), np.uint8)
    grid = patch_grid(3, 4, 6, 2)
    padded, padded_mask = pad_to_grid(image, mask, grid)
    assert padded.shape == (6, 6, 3) and padded_mask.shape == (6, 6)
    np.testing.assert_array_equal(padded[:3, :4], image)
    np.testing.assert_array_equal(padded[3, :4], image[1])  # reflect: row 3 mirrors row 1
    np.testing.assert_array_equal(padded[:3, 4], image[:, 2])
    assert (padded_mask[:3, :4] == 1).all()
    assert (padded_mask[3:] == IGNORE).all() and (padded_mask[:, 4:] == IGNORE).all()


def test_pad_one_pixel_image_and_large_pad():
    image = np.full((1, 2, 3), 7.0, np.float32)
    image[0, 1] = 9.0
    padded, mask = pad_to_grid(image, None, patch_grid(1, 2, 16, 10))
    assert padded.shape == (16, 16, 3) and mask is None
    assert set(np.unique(padded)) == {7.0, 9.0}
    assert (padded[:, 0] == 7.0).all()  # reflection repeats back and forth


def test_pad_rejects_wrong_size():
    with pytest.raises(ConfigError, match="planned for 40x70"):
        pad_to_grid(np.zeros((41, 70, 3), np.float32), None, patch_grid(40, 70, 16, 10))


def _numpy_padded(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]):
    """The image reflected out to ``size`` by numpy (a 1-pixel axis repeats), the mask IGNORE."""
    for axis, target in enumerate(size):
        widths = [(0, 0)] * image.ndim
        widths[axis] = (0, target - image.shape[axis])
        image = np.pad(image, widths, mode="reflect" if image.shape[axis] > 1 else "edge")
    mask = np.pad(mask, [(0, size[0] - mask.shape[0]), (0, size[1] - mask.shape[1])],
                  constant_values=IGNORE)
    return image, mask


@pytest.mark.parametrize("size", [(40, 70), (16, 16), (17, 33), (5, 70), (9, 9), (1, 1), (36, 26)])
def test_extract_patches_equal_the_slices(size):
    height, width = size
    rng = np.random.default_rng(7)
    image = rng.random((height, width, 3), dtype=np.float32) * 10 - 2
    mask = (rng.random((height, width)) > 0.5).astype(np.uint8)
    grid = patch_grid(height, width, 16, 10)
    padded, padded_mask = _numpy_padded(image, mask, grid.padded_size)
    bands = list(extract_patches(image, grid, mask=mask))
    # Left to right, top to bottom: the grid's positions in order.
    assert [(b.row, c) for b in bands for c in b.cols] == grid.positions()
    assert all(b.row == grid.rows[b.row_index] for b in bands)
    covered = np.zeros((height, width), bool)
    count = 0
    for band in bands:
        assert band.images.shape == (len(band.cols), 16, 16, 3)
        assert band.masks.shape == (len(band.cols), 16, 16)
        assert band.images.dtype == np.float32 and band.masks.dtype == np.uint8
        for j, col in enumerate(band.cols):
            row = band.row
            np.testing.assert_array_equal(band.images[j], padded[row:row + 16, col:col + 16])
            np.testing.assert_array_equal(band.masks[j], padded_mask[row:row + 16, col:col + 16])
            valid_h, valid_w = grid.valid_size(row, col)
            np.testing.assert_array_equal(band.images[j, :valid_h, :valid_w],
                                          image[row:row + valid_h, col:col + valid_w])
            assert (band.masks[j, valid_h:] == IGNORE).all()
            assert (band.masks[j, :, valid_w:] == IGNORE).all()
            covered[row:row + valid_h, col:col + valid_w] = True
            count += 1
    assert count == len(grid)
    assert covered.all()


def test_extract_without_mask_keeps_dtype():
    image = np.arange(20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3)
    grid = patch_grid(20, 30, 8, 8)
    bands = list(extract_patches(image, grid))
    assert bands[0].masks is None
    assert sum(len(b.images) for b in bands) == len(grid) == 3 * 4
    # 30 wide at 8/8: regular columns 0, 8, 16, then the border-aligned 22 on its own.
    assert [b.cols for b in bands[:2]] == [(0, 8, 16), (22,)]
    np.testing.assert_array_equal(bands[-1].images[-1], image[12:20, 22:30])


def test_extract_rejects_mismatched_mask():
    with pytest.raises(ConfigError, match="mask is"):
        next(extract_patches(np.zeros((20, 30, 3), np.float32), patch_grid(20, 30, 8, 8),
                             mask=np.zeros((20, 31), np.uint8)))


def test_float16_patches_match_numpy_rounding_bitwise():
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 3.0, (20, 30, 3)).astype(np.float32)
    image[0, 0, 0] = 70000.0  # overflows float16 to inf, as numpy does
    image[0, 1, 0] = 1e-7  # subnormal in float16
    image[0, 2, 0] = 2049.0001  # ties and rounding
    grid = patch_grid(20, 30, 8, 5)
    mask = np.ones((20, 30), np.uint8)
    with np.errstate(over="ignore"):
        expected = image.astype(np.float16)
    for band in extract_patches(image, grid, mask=mask, dtype=np.float16):
        assert band.images.dtype == np.float16
        for j, col in enumerate(band.cols):
            np.testing.assert_array_equal(
                band.images[j].view(np.uint16),
                expected[band.row:band.row + 8, col:col + 8].view(np.uint16))
            assert (band.masks[j] == 1).all()

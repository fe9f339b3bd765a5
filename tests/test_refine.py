"""Tests of skyseg.predict.refine: the guided upsampling of a coarse sky probability."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skyseg.errors import ConfigError
from skyseg.image.preprocess import upsample_linear
from skyseg.predict import refine as refine_module
from skyseg.predict.refine import (
    check_refine,
    downsample_guide,
    guide_floor,
    guide_image,
    guided_upsample,
)


def _area(values: np.ndarray, factor: int) -> np.ndarray:
    height, width = values.shape[:2]
    return cv2.resize(np.ascontiguousarray(values, np.float32),
                      (width // factor, height // factor), interpolation=cv2.INTER_AREA)


def _blur(values: np.ndarray, sigma: float, *, wrap: bool = False) -> np.ndarray:
    """Gaussian blur (a network's soft output); columns wrap on a panorama."""
    pad = int(4 * sigma) + 1
    padded = np.pad(values, ((0, 0), (pad, pad)), mode="wrap" if wrap else "edge")
    blurred = cv2.GaussianBlur(padded, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return blurred[:, pad:-pad]


def _step_scene(edge: int, *, hdr: bool, height: int = 64, width: int = 128):
    """Sky (bright, textured) left of column ``edge``, ground (dark) right of it."""
    rng = np.random.default_rng(3)
    truth = np.zeros((height, width), np.float32)
    truth[:, :edge] = 1.0
    if hdr:
        image = np.where(truth[..., None] > 0, 4.0, 0.05).astype(np.float32)
        image = image * np.exp(rng.normal(0, 0.05, (height, width, 3))).astype(np.float32)
    else:
        image = np.where(truth[..., None] > 0, 200.0, 60.0).astype(np.float32)
        image = image + rng.normal(0, 2, (height, width, 3)).astype(np.float32)
    return image, truth


def _first_ground_column(mask: np.ndarray) -> np.ndarray:
    """Per row, the first column that is not sky."""
    return np.argmin(mask, axis=1)


@pytest.mark.parametrize("hdr", [False, True])
@pytest.mark.parametrize("edge", [50, 53])
def test_sharp_step_edge_is_recovered_within_one_pixel(hdr, edge):
    image, truth = _step_scene(edge, hdr=hdr)
    # What a network at a quarter of the size gives: the 4x area average of the
    # truth, blurred and off by most of a coarse pixel.
    coarse = _area(truth, 4)
    coarse = _blur(np.roll(coarse, 1, axis=1), 1.0)
    coarse[:, 0] = 1.0
    refined = guided_upsample(coarse, image, is_hdr=hdr)
    assert refined.shape == truth.shape and refined.dtype == np.float32
    found = _first_ground_column(refined > 0.5)
    assert np.abs(found - edge).max() <= 1
    # Linear upsampling of the same probability misses the edge by pixels.
    linear = _first_ground_column(upsample_linear(coarse, *truth.shape) > 0.5)
    assert np.abs(linear - edge).min() >= 2


def test_horizontal_edge_and_exact_area_average():
    image, truth = _step_scene(45, hdr=True)
    image, truth = image.transpose(1, 0, 2).copy(), truth.T.copy()  # sky above row 45
    refined = guided_upsample(_area(truth, 4), image, is_hdr=True)
    rows = np.argmin(refined > 0.5, axis=0)
    assert np.abs(rows - 45).max() <= 1


def _panorama(height: int = 64, width: int = 128):
    """A wavy horizon that crosses x = 0 continuously; truth and HDR image."""
    x = np.arange(width)
    horizon = height / 2 + 9 * np.sin(2 * np.pi * x / width) + 4 * np.cos(6 * np.pi * x / width)
    truth = (np.arange(height)[:, None] < horizon[None, :]).astype(np.float32)
    rng = np.random.default_rng(8)
    image = np.where(truth[..., None] > 0, np.float32(3.0), np.float32(0.08))
    image = np.repeat(image, 3, axis=2) * np.exp(rng.normal(0, 0.05, image.shape)).astype(np.float32)
    return image, truth


def test_wrap_has_no_seam_and_commutes_with_a_roll():
    image, truth = _panorama()
    coarse = _blur(_area(truth, 4), 1.0, wrap=True)
    refined = guided_upsample(coarse, image, is_hdr=True, wrap=True)
    for shift in (4, 36, 64):  # whole coarse pixels
        rolled = guided_upsample(np.roll(coarse, shift // 4, axis=1), np.roll(image, shift, axis=1),
                                 is_hdr=True, wrap=True)
        np.testing.assert_allclose(rolled, np.roll(refined, shift, axis=1), atol=1e-5)
    # No seam: across x = 0 the map changes no more than between any two columns.
    across = np.abs(refined[:, 0] - refined[:, -1]).max()
    inside = np.abs(np.diff(refined, axis=1)).max()
    assert across <= inside + 1e-6
    mask = refined > 0.5
    assert np.count_nonzero(mask != truth.astype(bool)) <= 0.01 * mask.size
    seam_errors = np.count_nonzero(mask[:, [0, -1]] != truth[:, [0, -1]].astype(bool))
    assert seam_errors <= 2 * 2  # at most one pixel per column at the horizon
    # Without wrap the borders are reflected: the columns at x = 0 and W-1 then
    # come out differently, which is the seam wrap avoids.
    unwrapped = guided_upsample(coarse, image, is_hdr=True, wrap=False)
    assert np.abs(unwrapped - refined)[:, [0, -1]].max() > 1e-3


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("shape, coarse_shape", [((64, 128), (16, 32)), ((37, 51), (10, 13)),
                                                 ((40, 40), (40, 40))])
def test_bands_give_the_same_result_as_the_whole_image(wrap, shape, coarse_shape):
    rng = np.random.default_rng(5)
    image = np.exp(rng.normal(0, 1.5, (*shape, 3))).astype(np.float32)
    coarse = rng.random(coarse_shape, dtype=np.float32)
    whole = guided_upsample(coarse, image, is_hdr=True, wrap=wrap, band_rows=10_000)
    for band_rows in (1, 7, 16):
        banded = guided_upsample(coarse, image, is_hdr=True, wrap=wrap, band_rows=band_rows)
        np.testing.assert_allclose(banded, whole, atol=1e-6)
    assert whole.shape == shape and whole.dtype == np.float32
    assert whole.min() >= 0.0 and whole.max() <= 1.0


@pytest.mark.parametrize("shape, size", [((64, 128), (16, 32)), ((37, 51), (10, 13)),
                                         ((30, 45), (30, 15))])
def test_downsampled_guide_is_the_area_average_of_the_guide(shape, size):
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (*shape, 3)).astype(np.float32)
    # The LDR guide: Rec.709 luminance of the 0..255 values, / 255.
    guide = (0.2126 * image[..., 0] + 0.7152 * image[..., 1] + 0.0722 * image[..., 2]) / 255
    np.testing.assert_allclose(guide_image(image, is_hdr=False), guide, atol=1e-6)
    expected = cv2.resize(guide.astype(np.float32), size[::-1], interpolation=cv2.INTER_AREA)
    for band_rows in (3, 256):
        small = downsample_guide(image, size, is_hdr=False, floor=0.0, band_rows=band_rows)
        np.testing.assert_allclose(small, expected, atol=1e-5)


def test_hdr_guide_ignores_exposure():
    image, truth = _panorama()
    coarse = _blur(_area(truth, 4), 1.2, wrap=True)
    base = guided_upsample(coarse, image, is_hdr=True, wrap=True)
    brighter = guided_upsample(coarse, image * np.float32(64.0), is_hdr=True, wrap=True)
    np.testing.assert_allclose(brighter, base, atol=1e-5)
    assert guide_floor(image, is_hdr=False) == 0.0


def test_flat_probability_stays_flat_and_edges_are_not_invented():
    image, _ = _panorama()
    for value in (0.0, 0.3, 1.0):
        refined = guided_upsample(np.full((16, 32), value, np.float32), image, is_hdr=True)
        np.testing.assert_allclose(refined, value, atol=1e-5)


def test_a_wire_thinner_than_the_coarse_grid_comes_back_only_if_the_network_saw_it():
    # A dark 1-px wire across the sky, predicted at a quarter of the size.
    image = np.full((64, 128, 3), 3.0, np.float32)
    image[32] = 0.05
    truth = np.ones((64, 128), np.float32)
    truth[32] = 0.0
    # Missed by the network (no dip at all in the coarse probability): the
    # filter has nothing to follow, the wire stays sky (README says so).
    missed = guided_upsample(np.ones((16, 32), np.float32), image, is_hdr=True)
    assert (missed[32] > 0.5).all()
    # Seen as a quarter-pixel dip (the area average): the guide's dark line
    # turns the dip into the wire at full resolution.
    seen = guided_upsample(_area(truth, 4), image, is_hdr=True)
    assert (seen[32] <= 0.5).all()
    assert (np.delete(seen, 32, axis=0) > 0.5).all()


def test_bad_inputs():
    image = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ConfigError, match="expected a probability"):
        guided_upsample(np.zeros(4, np.float32), image, is_hdr=False)
    with pytest.raises(ConfigError, match="expected an image"):
        guided_upsample(np.zeros((4, 4), np.float32), image[..., 0], is_hdr=False)
    with pytest.raises(ConfigError, match="larger than the image"):
        guided_upsample(np.zeros((16, 4), np.float32), image, is_hdr=False)
    with pytest.raises(ConfigError, match="radius"):
        guided_upsample(np.zeros((4, 4), np.float32), image, is_hdr=False, radius=0)
    with pytest.raises(ConfigError, match="eps"):
        guided_upsample(np.zeros((4, 4), np.float32), image, is_hdr=False, eps=0)
    with pytest.raises(ConfigError, match="--refine must be one of auto, guided, none"):
        check_refine("bilateral")


def test_docstring_examples():
    import doctest

    assert doctest.testmod(refine_module).failed == 0

"""Augmentation: image and mask move together; exposure and gamma are exact on radiance."""

from __future__ import annotations

import numpy as np
import pytest

from skyseg.data.augmentation import (
    Augmentation,
    adjust_radiance,
    adjust_sky_exposure,
    affine_matrix,
    augment_values,
    random_affine,
    sky_texture,
    to_float32,
    warp_image,
    warp_mask,
)
from skyseg.errors import ConfigError
from skyseg.image.preprocess import Preprocessing, srgb_decode, srgb_encode


def blocks(rng: np.random.Generator, size: int = 64, block: int = 8) -> np.ndarray:
    """A random 0/1 pattern of ``block`` x ``block`` squares: uint8 (size, size)."""
    cells = rng.integers(0, 2, size=(size // block, size // block), dtype=np.uint8)
    return np.kron(cells, np.ones((block, block), np.uint8))


def pattern_pair(rng, size=64):
    """A mask and an image whose three channels are that mask (so they can be compared)."""
    mask = blocks(rng, size)
    image = np.repeat(mask[:, :, None].astype(np.float32), 3, axis=2)
    return image, mask


# --------------------------------------------------------------------------- geometry


def test_identity_leaves_image_and_mask_unchanged(rng):
    image, mask = rng.random((16, 24, 3)).astype(np.float32), blocks(rng, 16)[:, :16]
    identity = affine_matrix((16, 24))
    np.testing.assert_array_equal(warp_image(image, identity), image)
    identity = affine_matrix((16, 16))
    np.testing.assert_array_equal(warp_mask(mask, identity), mask)


def test_flip_mirrors_left_right_exactly(rng):
    image, mask = rng.random((8, 12, 3)).astype(np.float32), blocks(rng, 8, 2)
    np.testing.assert_array_equal(warp_image(image, affine_matrix((8, 12), flip=True)),
                                  image[:, ::-1])
    np.testing.assert_array_equal(warp_mask(mask, affine_matrix((8, 8), flip=True)),
                                  mask[:, ::-1])


def test_whole_pixel_shift_moves_content_and_marks_invented_pixels_ignored(rng):
    image = rng.random((10, 10, 3)).astype(np.float32)
    mask = blocks(rng, 10, 2)
    matrix = affine_matrix((10, 10), shift=(0.0, 0.3))  # samples 3 columns to the right
    warped_image, warped_mask = warp_image(image, matrix), warp_mask(mask, matrix)
    np.testing.assert_array_equal(warped_image[:, :7], image[:, 3:])
    np.testing.assert_array_equal(warped_mask[:, :7], mask[:, 3:])
    assert (warped_mask[:, 7:] == 255).all()
    # Reflection about the last column: columns 10, 11, 12 read 8, 7, 6.
    np.testing.assert_array_equal(warped_image[:, 7:], image[:, [8, 7, 6]])
    constant = warp_image(image, matrix, fill="constant", cval=-1.0)
    assert (constant[:, 7:] == -1.0).all()
    np.testing.assert_array_equal(constant[:, :7], image[:, 3:])


def test_quarter_turn_is_clockwise(rng):
    image = rng.random((9, 9, 3)).astype(np.float32)
    mask = blocks(rng, 9, 3)
    matrix = affine_matrix((9, 9), rotation=90)
    np.testing.assert_allclose(warp_image(image, matrix), np.rot90(image, k=-1), atol=1e-5)
    np.testing.assert_array_equal(warp_mask(mask, matrix), np.rot90(mask, k=-1))


def test_zoom_in_by_two_magnifies_about_the_centre():
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    warped = warp_image(image, affine_matrix((8, 8), zoom=(0.5, 0.5)))
    # Output pixel (0, 0) samples source (1.75, 1.75): bilinear between rows/cols 1 and 2.
    assert warped[0, 0] == pytest.approx(1.75 * 8 + 1.75)
    assert warped[3, 4] == pytest.approx(3.25 * 8 + 3.75)


@pytest.mark.parametrize("seed", range(6))
def test_random_draws_keep_image_and_mask_aligned(seed):
    """A known pattern, drawn into the image and the mask, ends up in the same place."""
    rng = np.random.default_rng(seed)
    image, mask = pattern_pair(rng)
    augmentation = Augmentation(exposure_ev=0.0, gamma=1.0)
    out_image, out_mask = augmentation.apply(image, mask, rng)
    valid = out_mask != 255
    agreement = np.mean(np.rint(out_image[:, :, 0][valid]) == out_mask[valid])
    # Bilinear vs nearest sampling differ only at some block corners.
    assert agreement > 0.97
    # The test has teeth: the same image against a mask moved by another draw.
    other_image, other_mask = augmentation.apply(image, mask, np.random.default_rng(seed + 100))
    both = valid & (other_mask != 255)
    assert np.mean(np.rint(out_image[:, :, 0][both]) == other_mask[both]) < 0.8


def source_positions(matrix, shape):
    """float64 (row, col) source position of every output pixel: two (H, W) arrays."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    source = np.einsum("ij,jhw->ihw", matrix, np.stack([rows, cols, np.ones_like(rows)]))
    return source[0], source[1]


def smooth_image(size=48):
    """Three smooth channels (gradients below 0.15 per pixel)."""
    rows, cols = np.mgrid[0:size, 0:size] / size
    return np.stack([np.sin(3 * rows + 2 * cols), np.cos(4 * cols) * rows, rows ** 2 - cols],
                    axis=-1).astype(np.float32)


# OpenCV releases before 5 round sub-pixel positions to 1/32 pixel: at most
# half of that times the steepest gradient.
BILINEAR_TOLERANCE = 0.15 / 64 + 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_warp_matches_reference_bilinear_with_reflection(seed):
    """The matrix convention and the reflection agree with scipy's mirror-mode interpolation."""
    from scipy import ndimage

    image = smooth_image()
    matrix = random_affine(np.random.default_rng(seed), image.shape[:2])
    rows, cols = source_positions(matrix, image.shape[:2])
    assert ((rows < 0) | (rows > 47) | (cols < 0) | (cols > 47)).any()  # reflection is used
    expected = np.stack([ndimage.map_coordinates(image[:, :, c].astype(np.float64), [rows, cols],
                                                 order=1, mode="mirror") for c in range(3)], -1)
    np.testing.assert_allclose(warp_image(image, matrix), expected, atol=BILINEAR_TOLERANCE)


def test_constant_fill_matches_reference_inside_and_is_the_constant_outside(rng):
    from scipy import ndimage

    image = smooth_image()
    matrix = random_affine(rng, image.shape[:2])
    rows, cols = source_positions(matrix, image.shape[:2])
    warped = warp_image(image, matrix, fill="constant", cval=-5.0)
    inside = (rows >= 0) & (rows <= 47) & (cols >= 0) & (cols <= 47)
    outside = (rows < -1) | (rows > 48) | (cols < -1) | (cols > 48)
    assert inside.sum() > 1000 and outside.sum() > 50
    expected = np.stack([ndimage.map_coordinates(image[:, :, c].astype(np.float64), [rows, cols],
                                                 order=1) for c in range(3)], -1)
    np.testing.assert_allclose(warped[inside], expected[inside], atol=BILINEAR_TOLERANCE)
    assert (warped[outside] == -5.0).all()


@pytest.mark.parametrize("seed", range(4))
def test_mask_takes_the_nearest_source_pixel_and_marks_outside_ignored(seed):
    """Every mask pixel is the one nearest its source, or 255 where that lies outside."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 2, size=(32, 40), dtype=np.uint8)
    matrix = random_affine(rng, mask.shape)
    warped = warp_mask(mask, matrix)
    rows, cols = source_positions(matrix, mask.shape)
    near_rows, near_cols = np.floor(rows + 0.5).astype(int), np.floor(cols + 0.5).astype(int)
    outside = (near_rows < 0) | (near_rows > 31) | (near_cols < 0) | (near_cols > 39)
    expected = np.where(outside, 255, mask[near_rows.clip(0, 31), near_cols.clip(0, 39)])
    # Within 1/256 pixel of a tie between two pixels, either is right.
    tie = (np.abs(rows - np.floor(rows) - 0.5) < 1 / 256) | (
        np.abs(cols - np.floor(cols) - 0.5) < 1 / 256)
    np.testing.assert_array_equal(warped[~tie], expected[~tie])
    assert outside.any() and set(np.unique(warped)) == {0, 1, 255}


def test_sky_stays_up_no_vertical_flip():
    augmentation = Augmentation()
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 1
    image = np.zeros((64, 64, 3), np.float32)
    rows = np.mgrid[0:64, 0:64][0]
    for seed in range(40):
        _, out = augmentation.apply(image, mask, np.random.default_rng(seed))
        # The sky's mean row stays above the ground's: never upside down.
        assert rows[out == 1].mean() < rows[out == 0].mean() - 10


def test_horizontal_flip_is_drawn_about_half_the_time():
    flips = sum(random_affine(np.random.default_rng(seed), (8, 8), rotation=0, shift=0, zoom=0,
                              shear=0)[1, 1] < 0 for seed in range(200))
    assert 70 < flips < 130
    no_flip = [random_affine(np.random.default_rng(seed), (8, 8), rotation=0, shift=0, zoom=0,
                             shear=0, horizontal_flip=False) for seed in range(20)]
    for matrix in no_flip:
        np.testing.assert_array_equal(matrix, np.eye(3))


def test_draws_stay_within_their_ranges():
    augmentation = Augmentation(rotation=15, shift=0.3, zoom=0.3, shear=0.1, exposure_ev=1.0,
                                gamma=1.25)
    for seed in range(100):
        draw = augmentation.draw(np.random.default_rng(seed), (64, 64))
        determinant = abs(np.linalg.det(draw["matrix"][:2, :2]))
        assert 0.7 ** 2 - 1e-9 <= determinant <= 1.3 ** 2 + 1e-9
        assert -1.0 <= draw["exposure_ev"] <= 1.0
        assert 1 / 1.25 - 1e-12 <= draw["gamma"] <= 1.25 + 1e-12


def test_same_seed_same_augmentation(rng):
    image, mask = pattern_pair(rng, 32)
    first = Augmentation().apply(image, mask, np.random.default_rng(7), Preprocessing())
    second = Augmentation().apply(image, mask, np.random.default_rng(7), Preprocessing())
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_float16_patches_warp_like_float32(rng):
    image = rng.random((32, 32, 3)).astype(np.float16)
    matrix = random_affine(rng, (32, 32))
    np.testing.assert_array_equal(warp_image(image, matrix),
                                  warp_image(image.astype(np.float32), matrix))


def test_warp_writes_into_out(rng):
    image, mask = pattern_pair(rng, 16)
    matrix = random_affine(rng, (16, 16))
    out_image, out_mask = np.empty((16, 16, 3), np.float32), np.empty((16, 16), np.uint8)
    assert warp_image(image, matrix, out=out_image) is out_image
    assert warp_mask(mask, matrix, out=out_mask) is out_mask
    np.testing.assert_array_equal(out_image, warp_image(image, matrix))
    np.testing.assert_array_equal(out_mask, warp_mask(mask, matrix))
    # A strided ``out`` (one channel block of a wider array) is filled too.
    wide = np.zeros((16, 16, 5), np.float32)
    assert warp_image(image, matrix, out=wide[:, :, 1:4]).base is wide
    np.testing.assert_array_equal(wide[:, :, 1:4], out_image)
    assert (wide[:, :, [0, 4]] == 0).all()


# --------------------------------------------------------------------------- photometry


def log_uniform_radiance(rng, shape=(16, 16, 3)) -> np.ndarray:
    return (10.0 ** rng.uniform(-3, 4, size=shape)).astype(np.float32)


@pytest.mark.parametrize(("gamma", "exposure_ev"), [(1.2, 1.5), (0.8, -2.0), (1.0, 0.5),
                                                    (1.1, 0.0)])
def test_exposure_and_gamma_are_exact_on_radiance_float32(rng, gamma, exposure_ev):
    preprocessing = Preprocessing(mode="hdr")
    radiance = log_uniform_radiance(rng)
    stored = preprocessing.apply(radiance)
    augmented = augment_values(stored, preprocessing, gamma=gamma, exposure_ev=exposure_ev)
    expected = 2.0 ** exposure_ev * radiance.astype(np.float64) ** gamma
    np.testing.assert_allclose(preprocessing.invert(augmented), expected, rtol=2e-4, atol=1e-6)


def test_exposure_respects_the_clip_of_the_preprocessing(rng):
    preprocessing = Preprocessing(mode="hdr", clip_max=500.0)
    radiance = log_uniform_radiance(rng)
    stored = preprocessing.apply(radiance)
    augmented = augment_values(stored, preprocessing, exposure_ev=2.0)
    expected = np.minimum(4.0 * np.minimum(radiance, 500.0), 500.0)
    np.testing.assert_allclose(preprocessing.invert(augmented), expected, rtol=2e-4, atol=1e-6)


def test_split_log_transform_is_inverted_exactly_too(rng):
    preprocessing = Preprocessing(mode="hdr", log_split_around1=True, input_mul=4.0)
    radiance = log_uniform_radiance(rng)
    augmented = augment_values(preprocessing.apply(radiance), preprocessing, gamma=0.9,
                               exposure_ev=-1.0)
    np.testing.assert_allclose(preprocessing.invert(augmented),
                               0.5 * radiance.astype(np.float64) ** 0.9, rtol=2e-4, atol=1e-6)


def test_float16_patches_use_a_table_with_the_same_result(rng):
    preprocessing = Preprocessing(mode="hdr")
    stored = preprocessing.apply(log_uniform_radiance(rng, (64, 64, 3))).astype(np.float16)
    through_table = augment_values(stored, preprocessing, gamma=1.15, exposure_ev=0.7)
    direct = augment_values(stored.astype(np.float32), preprocessing, gamma=1.15,
                            exposure_ev=0.7)
    assert through_table.dtype == np.float32
    np.testing.assert_allclose(through_table, direct, rtol=1e-6, atol=1e-6)
    # ... and exact on the radiance the float16 patch stands for.
    radiance = preprocessing.invert(stored.astype(np.float32)).astype(np.float64)
    np.testing.assert_allclose(preprocessing.invert(through_table),
                               2 ** 0.7 * np.maximum(radiance, 0) ** 1.15, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["hdr", "ldr"])
def test_float16_table_is_right_for_each_patch_whatever_came_before(rng, mode):
    """The table is refilled per patch, only where its codes lie: every patch still exact."""
    preprocessing = Preprocessing(mode=mode)
    if mode == "hdr":
        wide = preprocessing.apply(log_uniform_radiance(rng, (64, 64, 3)))
    else:
        wide = rng.random((64, 64, 3)).astype(np.float32)
    patches = [wide, np.abs(wide) + 0.5, -np.abs(wide) - 0.01, np.abs(wide) * 0.01, wide]
    for index, values in enumerate(patches):
        values = values.astype(np.float16)
        gamma, exposure_ev = 0.85 + 0.1 * index, 1.0 - 0.4 * index
        out = np.empty(values.shape, np.float32)
        through_table = augment_values(values, preprocessing, gamma=gamma,
                                       exposure_ev=exposure_ev, out=out)
        assert through_table is out
        direct = augment_values(values.astype(np.float32), preprocessing, gamma=gamma,
                                exposure_ev=exposure_ev)
        np.testing.assert_allclose(through_table, direct, rtol=1e-6, atol=1e-6)


def test_to_float32_is_exact_for_every_float16():
    every = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(256, 16, 16)
    np.testing.assert_array_equal(to_float32(every), every.astype(np.float32))
    out = np.empty((256, 16, 16), np.float32)
    assert to_float32(every, out=out) is out
    np.testing.assert_array_equal(out, every.astype(np.float32))
    values = np.array([[1.5, -2.0]], np.float64)
    assert to_float32(values).dtype == np.float32


def test_ldr_patches_change_linear_light_and_saturate_at_white(rng):
    preprocessing = Preprocessing(mode="ldr")
    values = rng.random((16, 16, 3)).astype(np.float32)
    augmented = augment_values(values, preprocessing, gamma=1.1, exposure_ev=1.0)
    expected = np.minimum(2.0 * srgb_decode(values).astype(np.float64) ** 1.1, 1.0)
    np.testing.assert_allclose(srgb_decode(augmented), expected, rtol=1e-4, atol=1e-6)
    assert augmented.max() <= 1.0


def test_no_change_returns_the_values(rng):
    values = rng.random((4, 4, 3)).astype(np.float16)
    np.testing.assert_array_equal(augment_values(values, Preprocessing()), values)


def test_adjust_radiance_formula():
    radiance = np.array([0.0, 0.5, 1.0, 8.0], np.float32)
    np.testing.assert_allclose(adjust_radiance(radiance, gamma=2.0, exposure_ev=-1.0),
                               [0.0, 0.125, 0.5, 32.0], rtol=1e-6)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"zoom": 1.0}, r"zoom must be in \[0, 1\), got 1.0"),
    ({"gamma": 0.8}, r"gamma must be >= 1 .*got 0.8"),
    ({"rotation": -5}, "rotation must be a range >= 0, got -5"),
    ({"fill": "wrap"}, "fill must be one of"),
])
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Augmentation(**kwargs)


def test_settings_round_trip_and_refuse_unknown_keys():
    augmentation = Augmentation(rotation=5.0, fill="constant")
    assert Augmentation.from_dict(augmentation.to_dict()) == augmentation
    with pytest.raises(ConfigError, match=r"unknown augmentation parameter\(s\) \['vflip'\]"):
        Augmentation.from_dict({"vflip": True})
    # A run saved before the sky settings existed trained without them.
    old = {k: v for k, v in Augmentation(sky_exposure_ev=1.0, sky_texture_ev=1.0).to_dict().items()
           if not k.startswith("sky_")}
    assert Augmentation.from_dict(old).sky_exposure_ev == 0.0
    assert Augmentation.from_dict(old).sky_texture_ev == 0.0
    assert "sky_texture_ev" not in Augmentation(sky_texture_ev=0.0).to_dict()
    assert Augmentation(sky_texture_ev=1.0).to_dict()["sky_texture_ev"] == 1.0


# --------------------------------------------------------------------------- colour


@pytest.mark.parametrize("gains", [(0.3, 0.0, -0.3), (-0.1, 0.2, -0.1)])
def test_white_balance_is_exact_on_radiance(rng, gains):
    from skyseg.data.augmentation import adjust_colour

    prep = Preprocessing(mode="hdr")
    radiance = rng.uniform(0.01, 50.0, size=(8, 8, 3)).astype(np.float32)
    out = adjust_colour(prep.apply(radiance), prep, gains_ev=gains)
    expected = radiance * np.exp2(np.array(gains, np.float32))
    np.testing.assert_allclose(prep.invert(out), expected, rtol=1e-4)


def test_saturation_zero_is_grey_of_the_same_luminance(rng):
    from skyseg.data.augmentation import adjust_colour

    prep = Preprocessing(mode="ldr")
    values = rng.uniform(0.05, 0.95, size=(6, 6, 3)).astype(np.float32)
    grey = adjust_colour(values, prep, saturation=0.0)
    assert np.ptp(grey, axis=-1).max() < 1e-5
    weights = np.array([0.2126, 0.7152, 0.0722], np.float32)
    np.testing.assert_allclose(srgb_decode(grey)[..., 0], srgb_decode(values) @ weights,
                               rtol=1e-4, atol=1e-6)


def test_colour_draws_stay_in_range_and_keep_the_mask(rng):
    augmentation = Augmentation(white_balance=0.2, saturation=0.3)
    prep = Preprocessing(mode="ldr")
    image, mask = pattern_pair(rng, 32)
    for _ in range(50):
        draw = augmentation.draw(rng, (32, 32))
        assert abs(sum(draw["gains_ev"])) < 1e-9
        assert all(abs(g) <= 0.4 for g in draw["gains_ev"])
        assert 0.7 <= draw["saturation"] <= 1.3
    draw = {**augmentation.draw(rng, (32, 32)), "matrix": None}
    out_image, out_mask = augmentation.apply_draw(image * 0.5 + 0.25, mask, draw, prep)
    assert np.array_equal(out_mask, mask)
    assert not np.allclose(out_image, image * 0.5 + 0.25)


@pytest.mark.parametrize("seed", range(4))
def test_zoomed_in_crops_keep_image_and_mask_aligned(seed):
    """Strong zoom-ins (random-resized crops of a whole image) move image and mask alike."""
    rng = np.random.default_rng(seed)
    image, mask = pattern_pair(rng)
    augmentation = Augmentation(zoom=0.6, shift=0.3, rotation=0.0, shear=0.0,
                                exposure_ev=0.0, gamma=1.0)
    out_image, out_mask = augmentation.apply(image, mask, rng)
    valid = out_mask != 255
    assert valid.mean() > 0.3
    assert np.mean(np.rint(out_image[:, :, 0][valid]) == out_mask[valid]) > 0.97


# ----------------------------------------------------------------------------- sky exposure

@pytest.mark.parametrize("mode", ["hdr", "ldr"])
def test_sky_exposure_changes_the_sky_alone(rng, mode):
    prep = Preprocessing(mode=mode)
    linear = rng.uniform(0.05, 0.3, (32, 32, 3)).astype(np.float32)
    stored = prep.apply(linear) if mode == "hdr" else srgb_encode(linear)
    mask = np.zeros((32, 32), np.uint8)
    mask[:12] = 1
    mask[12:14] = 255  # ignored pixels count as not sky
    out = adjust_sky_exposure(stored, mask, prep, -1.5)
    back = prep.invert(out) if mode == "hdr" else srgb_decode(out)
    np.testing.assert_allclose(back[:6], linear[:6] * 2 ** -1.5, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(back[20:], linear[20:], rtol=1e-3, atol=1e-5)
    edge = back[11:14] / linear[11:14]  # feathered: between the two gains
    assert (edge > 2 ** -1.5 - 1e-3).all() and (edge < 1 + 1e-3).all()
    np.testing.assert_array_equal(adjust_sky_exposure(stored, mask, prep, 0.0), stored)


def test_sky_exposure_draw_keeps_the_other_draws_and_the_mask(rng):
    plain = Augmentation(sky_exposure_ev=0.0, sky_texture_ev=0.0)
    sky = Augmentation(sky_exposure_ev=1.5, sky_texture_ev=0.0)
    first = plain.draw(np.random.default_rng(5), (32, 32))
    second = sky.draw(np.random.default_rng(5), (32, 32))
    assert first["sky_exposure_ev"] == 0.0 and -1.5 <= second["sky_exposure_ev"] <= 1.5
    assert {k: v for k, v in first.items() if k not in ("matrix", "sky_exposure_ev")} == {
        k: v for k, v in second.items() if k not in ("matrix", "sky_exposure_ev")}
    np.testing.assert_array_equal(first["matrix"], second["matrix"])
    prep = Preprocessing(mode="ldr")
    image = rng.uniform(0, 1, (32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), np.uint8)
    mask[:10] = 1
    out_plain, mask_plain = plain.apply_draw(image, mask, first, prep)
    out_sky, mask_sky = sky.apply_draw(image, mask, second, prep)
    np.testing.assert_array_equal(mask_plain, mask_sky)
    assert not np.allclose(out_plain, out_sky)
    with pytest.raises(ConfigError, match="sky_exposure_ev"):
        Augmentation(sky_exposure_ev=-1)


def test_ground_highlights_brighten_the_not_sky_alone_and_clip_ldr_white(rng):
    prep = Preprocessing(mode="ldr")
    linear = rng.uniform(0.1, 0.3, (32, 32, 3)).astype(np.float32)
    stored = srgb_encode(linear)
    mask = np.zeros((32, 32), np.uint8)
    mask[:12] = 1
    mask[12:14] = 255  # ignored pixels belong to neither region
    out = srgb_decode(adjust_sky_exposure(stored, mask, prep, 0.0, ground_ev=4.0))
    np.testing.assert_allclose(out[:8], linear[:8], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(out[20:], 1.0, atol=1e-6)  # 16x a grey wall: clipped white
    # Sky and ground together, in one pass, as HDR keeps the radiance exact.
    hdr = Preprocessing(mode="hdr")
    back = hdr.invert(adjust_sky_exposure(hdr.apply(linear), mask, hdr, -1.0, ground_ev=2.0))
    np.testing.assert_allclose(back[:8], linear[:8] / 2, rtol=1e-3)
    np.testing.assert_allclose(back[20:], linear[20:] * 4, rtol=1e-3)


def test_ground_highlight_draw_is_blobs_after_the_other_draws(rng):
    plain = Augmentation.default("ldr")
    lit = plain.changed({"ground_highlight_ev": 4.0})
    first = plain.draw(np.random.default_rng(7), (48, 48))
    second = lit.draw(np.random.default_rng(7), (48, 48))
    assert first["ground_exposure_ev"] == 0.0
    np.testing.assert_array_equal(first["sky_exposure_ev"], second["sky_exposure_ev"])
    np.testing.assert_array_equal(first["matrix"], second["matrix"])
    ground = second["ground_exposure_ev"]
    assert ground.shape == (48, 48) and ground.min() == 0.0 and 0 < ground.max() <= 4.0
    assert 0.1 < np.mean(ground > 0) < 0.9  # blobs, not the whole patch
    image = rng.uniform(0.2, 0.5, (48, 48, 3)).astype(np.float32)
    mask = np.zeros((48, 48), np.uint8)
    mask[:16] = 1
    out_plain, mask_plain = plain.apply_draw(image, mask, first, Preprocessing(mode="ldr"))
    out_lit, mask_lit = lit.apply_draw(image, mask, second, Preprocessing(mode="ldr"))
    np.testing.assert_array_equal(mask_plain, mask_lit)
    assert out_lit.mean() > out_plain.mean()
    assert "ground_highlight_ev" not in plain.to_dict()
    assert Augmentation.from_dict(lit.to_dict()) == lit
    with pytest.raises(ConfigError, match="ground_highlight_ev"):
        Augmentation(ground_highlight_ev=-1)


def test_sky_texture_is_smooth_seeded_and_within_one():
    first = sky_texture(np.random.default_rng(3), (64, 48))
    again = sky_texture(np.random.default_rng(3), (64, 48))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (64, 48) and first.dtype == np.float32
    assert np.abs(first).max() == pytest.approx(1.0)
    assert np.abs(np.diff(first, axis=0)).max() < 0.5  # light and shade, not noise


def test_sky_texture_draw_changes_the_sky_by_a_field(rng):
    augmentation = Augmentation(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False,
                                exposure_ev=0, gamma=1.0, white_balance=0, saturation=0,
                                sky_texture_ev=2.0)
    draw = augmentation.draw(np.random.default_rng(1), (32, 32))
    field = draw["sky_exposure_ev"]
    assert field.shape == (32, 32) and 0 < np.abs(field).max() <= 2.0
    prep = Preprocessing(mode="hdr")
    linear = np.full((32, 32, 3), 0.5, np.float32)
    mask = np.zeros((32, 32), np.uint8)
    mask[:16] = 1
    image, out_mask = augmentation.apply_draw(prep.apply(linear), mask, draw, prep)
    back = prep.invert(image)
    np.testing.assert_allclose(back[:8, :, 0], 0.5 * 2 ** field[:8], rtol=1e-3)
    np.testing.assert_allclose(back[24:], linear[24:], rtol=1e-4)
    np.testing.assert_array_equal(out_mask, mask)


def test_parse_changes_types_each_setting_and_names_bad_items():
    from skyseg.data.augmentation import parse_changes

    changes = parse_changes(["exposure_ev=4", "horizontal_flip=No", "fill=constant",
                             " rotation = 5 ", "exposure_ev=3"])
    assert changes == {"exposure_ev": 3.0, "horizontal_flip": False, "fill": "constant",
                       "rotation": 5.0}
    assert parse_changes([]) == {}
    for item, message in [("exposure_ev", "write NAME=VALUE"), ("=4", "write NAME=VALUE"),
                          ("colour=1", "unknown setting 'colour'; choose from rotation"),
                          ("zoom=wide", "zoom is a number"),
                          ("horizontal_flip=maybe", "horizontal_flip must be true or false")]:
        with pytest.raises(ConfigError, match=f"--augment-set '{item}': {message}"):
            parse_changes([item])


def test_changed_replaces_settings_and_checks_their_ranges():
    hdr = Augmentation.default("hdr").changed({"exposure_ev": 4.0, "sky_texture_ev": 1.0})
    assert (hdr.exposure_ev, hdr.sky_texture_ev) == (4.0, 1.0)
    assert hdr.gamma == Augmentation().gamma  # the others as they were
    ldr = Augmentation.default("ldr").changed({"white_balance": 0.5})
    assert ldr.sky_exposure_ev == Augmentation.default("ldr").sky_exposure_ev
    assert Augmentation.default("ldr").changed({}) == Augmentation.default("ldr")
    with pytest.raises(ConfigError, match="saturation must be in"):
        Augmentation().changed({"saturation": 1.5})
    with pytest.raises(ConfigError, match="unknown augmentation parameter"):
        Augmentation().changed({"hue": 0.1})

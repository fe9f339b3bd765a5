"""HDR preprocessing: the log transform and its inverse, sanitising, clipping, tonemapping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skyseg.errors import ConfigError
from skyseg.image.preprocess import (
    Preprocessing,
    clip_radiance,
    inverse_log_transform,
    ldr_to_radiance,
    log_transform,
    luminance,
    normalize_ldr,
    sanitize_radiance,
    srgb_decode,
    srgb_encode,
    tonemap,
)

RADIANCE = np.logspace(-3, 5, 20001, dtype=np.float64).astype(np.float32)


def _original_log_transform(x, split):
    """The original pipeline's formula, in float64, as the reference."""
    x = np.asarray(x, np.float64) * 1.0 + 1e-3
    y = np.where(x < 1.0, np.log(x), np.power(x, 1 / 7.5) - 1.0) if split else np.log(x)
    return (y + 2.5) * (1 / 2.2 / 2)


@pytest.mark.parametrize("split", [False, True])
def test_log_transform_matches_the_original_formula(split):
    ours = log_transform(RADIANCE, log_split_around1=split)
    assert ours.dtype == np.float32
    assert np.allclose(ours, _original_log_transform(RADIANCE, split), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("input_mul", [1.0, 256.0])
def test_round_trip_relative_error_below_1e5(split, input_mul):
    forward = log_transform(RADIANCE, log_split_around1=split, input_mul=input_mul)
    back = inverse_log_transform(forward, log_split_around1=split, input_mul=input_mul)
    relative = np.abs(back.astype(np.float64) - RADIANCE) / RADIANCE
    assert relative.max() < 1e-5, relative.max()


def test_split_branch_is_continuous_at_one():
    around = np.array([1 - 1e-3 - 1e-6, 1 - 1e-3 + 1e-6], np.float32)  # x + eps just below/above 1
    values = log_transform(around, log_split_around1=True)
    assert abs(values[1] - values[0]) < 1e-5


def test_transform_of_large_arrays_is_chunked_identically(rng):
    image = (rng.random((700, 9, 3)) * 1e4).astype(np.float32)  # > one 256-row chunk
    rowwise = np.stack([log_transform(row) for row in image])
    assert np.array_equal(log_transform(image), rowwise)


def test_zero_radiance_maps_to_a_finite_value():
    assert np.isfinite(log_transform(np.zeros(3, np.float32))).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"log_epsilon": 0.0}, "log_epsilon must be positive"),
    ({"input_mul": -1.0}, "input_mul must be a positive number"),
    ({"log_pow": 0.0}, "log_pow must be positive"),
    ({"output_scale": 0.0}, "output_scale must be a non-zero number"),
])
def test_bad_transform_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        log_transform(np.ones(2, np.float32), **kwargs)


def test_sanitize_counts_and_repairs():
    image = np.array([[[np.nan, 1.0, -2.0], [np.inf, 5.0, -np.inf]]], np.float32)
    clean, counts = sanitize_radiance(image)
    assert counts == {"nan": 1, "posinf": 1, "neginf": 1, "negative": 1}
    assert clean.tolist() == [[[0.0, 1.0, 0.0], [5.0, 5.0, 0.0]]]
    assert np.isnan(image[0, 0, 0])  # the input is untouched by default


def test_clip_radiance():
    sun = np.array([0.5, 2e4, 1e5], np.float32)
    assert clip_radiance(sun.copy(), 1000.0).tolist() == [0.5, 1000.0, 1000.0]
    assert clip_radiance(sun.copy(), None).tolist() == sun.tolist()
    with pytest.raises(ConfigError, match="clip_max must be a positive radiance"):
        clip_radiance(sun, 0.0)


def test_preprocessing_defaults_are_the_original_pipeline():
    prep = Preprocessing()
    assert prep.log_parameters() == {
        "input_mul": 1.0, "log_epsilon": 1e-3, "log_split_around1": False, "log_pow": 7.5,
        "output_bias": 2.5, "output_scale": 1 / 2.2 / 2,
    }
    assert prep.mode == "hdr" and prep.clip_max is None


def test_preprocessing_hdr_apply_invert(rng):
    prep = Preprocessing(mode="hdr", clip_max=1e4)
    radiance = (rng.random((4, 5, 3)) * 100).astype(np.float32)
    radiance[0, 0] = [5e4, np.nan, -1]
    x, counts = prep.apply_with_counts(radiance)
    assert counts["nan"] == 1 and counts["negative"] == 1
    back = prep.invert(x)
    assert np.allclose(back[1:], radiance[1:], rtol=1e-5)
    assert np.allclose(back[0, 0], [1e4, 0, 0], rtol=1e-5, atol=1e-6)


def test_luminance_is_rec709():
    primaries = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)
    np.testing.assert_allclose(luminance(primaries), [0.2126, 0.7152, 0.0722, 1.0], rtol=1e-6)
    assert luminance(primaries).dtype == np.float32
    assert luminance(primaries, dtype=np.float64).dtype == np.float64


def test_exposure_key_brings_the_log_average_to_the_key_and_is_saved(rng, tmp_path):
    prep = Preprocessing(mode="hdr", exposure_key=0.18, clip_max=1e4)
    radiance = np.exp(rng.normal(1.0, 2.0, (30, 40, 3))).astype(np.float32)
    gain = prep.image_gain(radiance)
    scaled = radiance.astype(np.float64) * gain
    rec709 = 0.2126 * scaled[..., 0] + 0.7152 * scaled[..., 1] + 0.0722 * scaled[..., 2]
    assert np.exp(np.mean(np.log(rec709 + 1e-6))) == pytest.approx(0.18, rel=1e-3)
    # The same scene 6 stops darker gives the same network input (the clip included).
    np.testing.assert_allclose(prep.apply(radiance / 64, prep.image_gain(radiance / 64)),
                               prep.apply(radiance, gain), atol=1e-5)
    # A dark image with +Inf and the largest float32 in it stays finite.
    dark = np.full((4, 4, 3), 1e-6, np.float32)
    dark[0, 0], dark[0, 1] = np.inf, 3e38
    assert prep.image_gain(dark) > 1 and np.isfinite(prep.apply(dark, prep.image_gain(dark))).all()
    # A black image keeps gain 1; LDR and absolute-radiance runs never scale.
    assert prep.image_gain(np.zeros((4, 4, 3), np.float32)) == 1.0
    assert Preprocessing(mode="hdr").image_gain(radiance) == 1.0
    prep.save(tmp_path / "p.json")
    assert Preprocessing.load(tmp_path / "p.json") == prep
    # A preprocessing.json written before the option loads as absolute radiance.
    old = Preprocessing().to_dict()
    del old["exposure_key"]
    assert Preprocessing.from_dict(old).exposure_key is None
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="exposure_key must be a positive luminance"):
            Preprocessing(mode="hdr", exposure_key=bad)
    with pytest.raises(ConfigError, match=r"exposure_key .* \(mode ldr\)"):
        Preprocessing(mode="ldr", exposure_key=0.18)


def test_preprocessing_ldr():
    prep = Preprocessing(mode="ldr")
    image = np.array([[[0, 127.5, 255]]], np.float32)
    assert np.allclose(prep.apply(image), [[[0, 0.5, 1]]])
    assert np.allclose(prep.invert(prep.apply(image)), image)


def test_preprocessing_save_load(tmp_path):
    prep = Preprocessing(mode="hdr", log_split_around1=True, clip_max=3e3)
    prep.save(tmp_path / "p.json")
    assert Preprocessing.load(tmp_path / "p.json") == prep
    assert json.loads((tmp_path / "p.json").read_text())["clip_max"] == 3e3


def test_preprocessing_rejects_unknown_keys_and_modes(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preprocessing parameter\(s\) \['log_eps'\]"):
        Preprocessing.from_dict({"mode": "hdr", "log_eps": 1e-3})
    with pytest.raises(ConfigError, match="mode must be 'hdr' or 'ldr', got 'hd'"):
        Preprocessing(mode="hd")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        Preprocessing.load(tmp_path / "bad.json")


def test_normalize_ldr_clips():
    assert normalize_ldr(np.array([-5, 300], np.float32)).tolist() == [0.0, 1.0]


def test_srgb_round_trip():
    values = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.allclose(srgb_decode(srgb_encode(values)), values, atol=1e-6)
    assert np.allclose(ldr_to_radiance(srgb_encode(values) * 255), values, atol=1e-6)


def test_tonemap_is_uint8_monotonic_and_survives_the_sun(rng):
    sky = np.full((64, 128, 3), [0.2, 0.4, 1.0], np.float32)
    sky[:, :64] *= np.linspace(0.2, 1.0, 64, dtype=np.float32)[None, :, None]
    sky[30:34, 100:104] = 5e4  # a sun 50,000 times the sky
    sky[0, 0] = np.nan
    out = tonemap(sky)
    assert out.dtype == np.uint8 and out.shape == sky.shape
    blue = out[10, :64, 2].astype(int)
    assert (np.diff(blue) >= 0).all() and blue[-1] > blue[0]  # brighter stays brighter
    assert out[32, 102].min() == 255  # the sun saturates
    assert 60 < out[10, 80, 2] < 255  # the sky is neither black nor blown out
    assert out[0, 0].tolist() == [0, 0, 0]


def test_tonemap_ldr_rounds():
    assert tonemap(np.array([[[0.4, 254.6, 300]]], np.float32), is_hdr=False).tolist() == [[[0, 255, 255]]]


def test_tonemap_exposure_ev_brightens():
    grey = np.full((4, 4, 3), 0.05, np.float32)
    assert tonemap(grey, exposure=1.0, exposure_ev=2).mean() > tonemap(grey, exposure=1.0).mean()


# ----------------------------------------------------------------------------- scale


def test_scaled_size_rounds_and_never_vanishes():
    from skyseg.image.preprocess import scaled_size

    assert scaled_size(4096, 8192, 0.25) == (1024, 2048)
    assert scaled_size(3, 5, 0.1) == (1, 1)
    assert scaled_size(33, 65, 0.5) == (16, 32)  # 16.5 and 32.5 round to even


def test_rescale_image_keeps_the_energy(rng):
    from skyseg.image.preprocess import rescale_image

    radiance = (rng.random((64, 128, 3)) * 10).astype(np.float32)
    radiance[10, 20] = 5e4  # the sun keeps its energy when shrunk
    small = rescale_image(radiance, (16, 32))
    assert small.shape == (16, 32, 3) and small.dtype == np.float32
    assert small.sum() * 16 == pytest.approx(radiance.sum(), rel=1e-5)
    blocks = radiance.reshape(16, 4, 32, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(small, blocks, rtol=1e-5)


def test_rescale_mask_votes_and_keeps_ignore():
    from skyseg.image.preprocess import rescale_mask

    mask = np.array([[1, 1, 0, 0, 255, 255],
                     [1, 0, 0, 0, 255, 1]], np.uint8)
    # 2x2 blocks: 3 of 4 sky -> sky; 0 sky -> not sky; 3 of 4 ignored -> ignored.
    assert rescale_mask(mask, (1, 3)).tolist() == [[1, 0, 255]]
    half = np.array([[1, 0], [1, 0]], np.uint8)
    assert rescale_mask(half, (1, 1)).tolist() == [[1]]  # ties go to sky


def test_upsample_linear_is_exact_on_ramps_and_seamless_when_wrapping():
    from skyseg.image.preprocess import upsample_linear

    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))
    big = upsample_linear(ramp, 8, 32)
    # Pixel centres aligned: inside the image the ramp is linear in x.
    np.testing.assert_allclose(big[:, 2:30], np.tile((np.arange(2, 30) + 0.5) / 4 - 0.5, (8, 1)),
                               atol=1e-5)
    assert big[:, 0].tolist() == [0.0] * 8  # clamped at the border
    circle = np.zeros((2, 8), np.float32)
    circle[:, 0] = 1.0
    wrapped = upsample_linear(circle, 4, 32, wrap=True)
    # Both ends of the row lean towards column 0: no seam at x = 0.
    assert wrapped[0, 0] == pytest.approx(wrapped[0, 3]) and wrapped[0, -1] > 0
    np.testing.assert_allclose(np.roll(upsample_linear(np.roll(circle, 3, axis=1), 4, 32, wrap=True),
                                       -12, axis=1), wrapped, atol=1e-6)


def test_preprocessing_scale_is_validated_and_saved(tmp_path):
    with pytest.raises(ConfigError, match=r"scale must be in \(0, 1\]"):
        Preprocessing(scale=0.0)
    with pytest.raises(ConfigError, match=r"scale must be in \(0, 1\]"):
        Preprocessing(scale=2)
    Preprocessing(scale=0.25).save(tmp_path / "p.json")
    assert Preprocessing.load(tmp_path / "p.json").scale == 0.25
    assert Preprocessing.from_dict({"mode": "ldr"}).scale == 1.0  # files from before scale


def test_docstring_examples():
    import doctest

    from skyseg.image import preprocess

    assert doctest.testmod(preprocess).failed == 0

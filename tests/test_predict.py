"""`skyseg predict`: tiny Keras models through the tiled path, outputs, bad input, the CLI.

The networks here are one or two layers with hand-set weights (an identity that
passes one input channel through, a constant, a symmetric blur), saved as real
run folders, so the whole path (load_run, preprocessing, tiling, writing) runs
while the maths stays checkable.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from skyseg.backend import import_keras
from skyseg.cli.commands import main
from skyseg.errors import ConfigError, ImageWriteError, ModelError
from skyseg.image.preprocess import Preprocessing
from skyseg.io import prepare_output_folder, read_image, write_exr, write_png
from skyseg.io import write as write_module
from skyseg.predict import files as files_module
from skyseg.predict import predictor as predict_module
from skyseg.predict.files import predict_files
from skyseg.predict.image import Prediction, predict_image
from skyseg.predict.options import check_tile_size
from skyseg.predict.outputs import overlay_background, probability_to_mask
from skyseg.training.model import LoadedModel, load_run, save_model

from .conftest import ROOT, shared_path

pytestmark = pytest.mark.slow  # every test here runs a (tiny) Keras network


def _keras_model(kind: str, value: float = 0.0):
    """identity: output = preprocessed channel 0; constant: output = value;
    symmetric: 3x3 left-right symmetric conv + sigmoid; hblur: mean over 9 columns."""
    keras = import_keras()
    inputs = keras.Input((None, None, 3))
    if kind == "identity":
        layer = keras.layers.Conv2D(1, 1, use_bias=False)
        outputs = layer(inputs)
        layer.set_weights([np.array([1, 0, 0], np.float32).reshape(1, 1, 3, 1)])
    elif kind == "constant":
        layer = keras.layers.Conv2D(1, 1)
        outputs = layer(inputs)
        layer.set_weights([np.zeros((1, 1, 3, 1), np.float32), np.array([value], np.float32)])
    elif kind == "symmetric":
        layer = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")
        outputs = layer(inputs)
        kernel = np.random.default_rng(5).normal(size=(3, 3, 3, 1)).astype(np.float32) / 3
        kernel[:, 2] = kernel[:, 0]  # columns a, b, a: left-right symmetric
        layer.set_weights([kernel, np.array([0.1], np.float32)])
    elif kind == "hblur":
        layer = keras.layers.Conv2D(1, (1, 9), padding="same", use_bias=False)
        outputs = layer(inputs)
        kernel = np.zeros((1, 9, 3, 1), np.float32)
        kernel[0, :, 0, 0] = 1 / 9
        layer.set_weights([kernel])
    else:
        raise ValueError(kind)
    return keras.Model(inputs, outputs)


def make_run(folder, kind: str = "identity", *, mode: str = "ldr", value: float = 0.0):
    """A run folder with model_best.h5 and preprocessing.json; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(_keras_model(kind, value), folder / "model_best.h5", include_optimizer=False)
    Preprocessing(mode=mode).save(folder / "preprocessing.json")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {
        "identity": load_run(make_run(base / "identity")),
        "constant": load_run(make_run(base / "constant", "constant", value=0.3)),
        "symmetric": load_run(make_run(base / "symmetric", "symmetric")),
        "hblur": load_run(make_run(base / "hblur", "hblur")),
        "identity_path": base / "identity",
        "hdr": make_run(base / "hdr", "constant", mode="hdr", value=0.75),
    }


def _ldr(rng, height, width):
    return rng.integers(0, 256, (height, width, 3)).astype(np.float32)


@pytest.mark.parametrize("shape, overlap, wrap", [((45, 77), 0.25, "off"), ((33, 66), 5, "auto"),
                                                  ((100, 61), 0, "off"), ((70, 140), 0.5, "on")])
def test_identity_network_round_trips_through_tiling(runs, rng, shape, overlap, wrap):
    image = _ldr(rng, *shape)
    probability = predict_image(runs["identity"], image, is_hdr=False, tile_size=32,
                                overlap=overlap, wrap=wrap, batch_size=3)
    assert probability.dtype == np.float32 and probability.shape == shape
    np.testing.assert_allclose(probability, image[..., 0] / 255, atol=1e-6)


def test_constant_network_gives_a_constant_map_including_borders(runs, rng):
    image = _ldr(rng, 50, 100)
    result = predict_image(runs["constant"], image, is_hdr=False, tile_size=32, overlap=8,
                           details=True)
    assert isinstance(result, Prediction) and result.wrap  # 100 = 2 x 50: a panorama
    np.testing.assert_allclose(result.probability, 0.3, atol=1e-6)
    for border in (result.probability[0], result.probability[-1], result.probability[:, 0],
                   result.probability[:, -1]):
        np.testing.assert_allclose(border, 0.3, atol=1e-6)
    assert probability_to_mask(result.probability).max() == 0
    # Strictly above the threshold is sky, as skyseg.image.metrics decides in training.
    assert probability_to_mask(np.full((2, 2), 0.5, np.float32)).max() == 0
    assert probability_to_mask(np.full((2, 2), 0.51, np.float32)).min() == 255


def _area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` area-averaged to ``size`` = (h, w) (what a smaller camera records), by OpenCV."""
    import cv2

    return cv2.resize(np.ascontiguousarray(image, np.float32), size[::-1],
                      interpolation=cv2.INTER_AREA)


def _bilinear(values: np.ndarray, height: int, width: int, *, wrap: bool) -> np.ndarray:
    """Bilinear upsampling with pixel centres aligned (source x = (x + 0.5) w / W - 0.5),
    written out with ``np.interp``: border samples repeat; columns wrap on a panorama."""
    small_h, small_w = values.shape
    xs = (np.arange(width) + 0.5) * small_w / width - 0.5
    ys = (np.arange(height) + 0.5) * small_h / height - 0.5
    rows = np.stack([np.interp(xs, np.arange(small_w), row, period=small_w if wrap else None)
                     for row in values])
    return np.stack([np.interp(ys, np.arange(small_h), column) for column in rows.T], axis=1)


def _log_input(radiance: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """The default HDR network input written out: (log(gain x + 1e-3) + 2.5) / 2.2 / 2."""
    return (np.log(radiance.astype(np.float64) * gain + 1e-3) + 2.5) / 2.2 / 2


@pytest.mark.parametrize("shape, small, wrap", [((40, 80), (20, 40), True),
                                                ((37, 51), (18, 26), False)])
def test_model_trained_on_shrunk_images_predicts_shrunk_and_returns_full_size(tmp_path, rng, shape,
                                                                               small, wrap):
    folder = make_run(tmp_path / "half")
    Preprocessing(mode="ldr", scale=0.5).save(folder / "preprocessing.json")
    image = _ldr(rng, *shape)
    result = predict_image(load_run(folder), image, is_hdr=False, tile_size=32, overlap=8,
                           refine="none", details=True)
    assert result.probability.shape == shape and result.wrap is wrap
    # Half of 37 x 51 rounds to 18 x 26 (halves to even).
    expected = _bilinear(_area(image, small)[..., 0] / 255, *shape, wrap=wrap)
    np.testing.assert_allclose(result.probability, expected, atol=1e-6)


def test_exposure_key_gain_is_the_whole_images_and_cancels_the_file_exposure(tmp_path, rng):
    folder = make_run(tmp_path / "keyed")
    prep = Preprocessing(mode="hdr", exposure_key=0.18)
    prep.save(folder / "preprocessing.json")
    loaded = load_run(folder)
    image = np.exp(rng.normal(0.0, 2.0, (40, 80, 3))).astype(np.float32)
    image[:, :20] *= 50.0  # a bright part that one tile alone would normalise away
    probability = predict_image(loaded, image, is_hdr=True, tile_size=32, overlap=8)
    # Every tile got the gain of the whole image, so the tiles agree with one pass: the
    # gain brings the log-average Rec.709 luminance of the whole image to the key 0.18.
    lum = image.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    gain = 0.18 / np.exp(np.mean(np.log(lum + 1e-6)))
    expected = _log_input(image[..., 0], gain)
    np.testing.assert_allclose(probability, np.clip(expected, 0, 1), atol=1e-5)
    brighter = predict_image(loaded, image * 32, is_hdr=True, tile_size=32, overlap=8)
    np.testing.assert_allclose(brighter, probability, atol=1e-5)
    # A run saved before the option (no exposure_key) sees absolute radiance.
    Preprocessing(mode="hdr").save(folder / "preprocessing.json")
    old = predict_image(load_run(folder), image, is_hdr=True, tile_size=32, overlap=8)
    np.testing.assert_allclose(old, np.clip(_log_input(image[..., 0]), 0, 1), atol=1e-5)
    assert np.abs(old - probability).max() > 0.1


def test_docstring_examples():
    import doctest

    from skyseg.predict import image, loading, options, outputs

    for module in (predict_module, files_module, image, loading, options, outputs):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_image_smaller_than_a_tile(runs, rng):
    image = _ldr(rng, 7, 5)
    result = predict_image(runs["identity"], image, is_hdr=False, details=True)
    assert result.tiles == 1 and result.tile_shape == (96, 96)  # not a 1088-px tile
    np.testing.assert_allclose(result.probability, image[..., 0] / 255, atol=1e-6)


def test_model_with_a_fixed_input_size_gets_tiles_of_that_size(tmp_path, rng):
    keras = import_keras()
    inputs = keras.Input((32, 64, 3))
    layer = keras.layers.Conv2D(1, 1, use_bias=False)
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([np.array([0, 0, 1], np.float32).reshape(1, 1, 3, 1)])
    save_model(model, tmp_path / "model_best.h5", include_optimizer=False)
    Preprocessing(mode="ldr").save(tmp_path / "preprocessing.json")
    image = _ldr(rng, 45, 20)  # smaller than the fixed width: padded, not shrunk
    result = predict_image(tmp_path, image, is_hdr=False, tile_size=1024, details=True)
    assert result.tile_shape == (32, 64) and result.tiles == 2  # 45 + 8 rows: 2 x 1 tiles
    np.testing.assert_allclose(result.probability, image[..., 2] / 255, atol=1e-6)


def test_tta_flip_of_a_symmetric_network_changes_nothing(runs, rng):
    image = _ldr(rng, 60, 90)
    plain = predict_image(runs["symmetric"], image, is_hdr=False, tile_size=32, overlap=8)
    flipped = predict_image(runs["symmetric"], image, is_hdr=False, tile_size=32, overlap=8,
                            tta=True, details=True)
    assert flipped.passes == ["plain", "flip"]
    np.testing.assert_allclose(flipped.probability, plain, atol=1e-6)
    # On a panorama TTA adds the half-width roll; a pixel-wise network ignores it too.
    pano = _ldr(rng, 40, 80)
    both = predict_image(runs["identity"], pano, is_hdr=False, tile_size=32, overlap=8, tta=True,
                         details=True)
    assert both.passes == ["plain", "flip", "roll"]
    np.testing.assert_allclose(both.probability, pano[..., 0] / 255, atol=1e-6)


def test_wrap_commutes_with_roll_and_has_no_seam(runs):
    # 96x192 panorama, 64-px tiles, 16 px overlap: 4 column tiles 48 px apart.
    x = np.arange(192, dtype=np.float32)
    row = 127.5 + 100 * np.sin(2 * np.pi * x / 192) + 20 * np.sin(6 * np.pi * x / 192)
    image = np.repeat(np.repeat(row[None, :, None], 96, axis=0), 3, axis=2)
    image[:, :, 0] += np.linspace(-20, 20, 96, dtype=np.float32)[:, None]
    model = runs["hblur"]
    plain = predict_image(model, image, is_hdr=False, tile_size=64, overlap=16)
    for shift in (48, 96):
        rolled = predict_image(model, np.roll(image, shift, axis=1), is_hdr=False, tile_size=64,
                               overlap=16)
        np.testing.assert_allclose(rolled, np.roll(plain, shift, axis=1), atol=1e-5)
    across = np.abs(plain[:, 0] - plain[:, -1]).max()
    inside = np.abs(np.diff(plain, axis=1)).max()
    assert across <= inside * 1.01
    mask = probability_to_mask(plain)
    seam = np.count_nonzero(mask[:, 0] != mask[:, -1])
    assert seam <= np.count_nonzero(mask[:, 1:] != mask[:, :-1], axis=0).max()
    unwrapped = predict_image(model, image, is_hdr=False, tile_size=64, overlap=16, wrap="off")
    assert np.abs(unwrapped[:, 0] - unwrapped[:, -1]).max() > 2 * inside  # the seam it avoids


def test_hdr_ldr_mismatch_needs_convert(runs, rng):
    image = _ldr(rng, 20, 30)
    hdr_model = load_run(runs["hdr"])
    with pytest.raises(ModelError, match="trained on HDR radiance but this is an LDR image; "
                                         "pass --convert"):
        predict_image(hdr_model, image, is_hdr=False)
    converted = predict_image(hdr_model, image, is_hdr=False, convert=True)
    np.testing.assert_allclose(converted, 0.75, atol=1e-6)
    with pytest.raises(ModelError, match="trained on LDR .* but this is an HDR"):
        predict_image(runs["identity"], image / 100, is_hdr=True)


@pytest.mark.parametrize("size, nearest", [(1000, "992 or 1024"), (20, "32"), (100, "96 or 128")])
def test_tile_size_not_a_multiple_of_32(size, nearest):
    with pytest.raises(ConfigError, match=f"--tile-size {size} is not a multiple of 32.*use "
                                          f"{nearest}$"):
        check_tile_size(size)


def test_bad_settings(runs, rng):
    image = _ldr(rng, 20, 30)
    with pytest.raises(ConfigError, match="--batch-size must be a positive"):
        predict_image(runs["identity"], image, batch_size=0)
    with pytest.raises(ConfigError, match="--wrap must be auto, on or off"):
        predict_image(runs["identity"], image, wrap="yes")
    with pytest.raises(ConfigError, match="more than half a tile"):
        predict_image(runs["identity"], image, overlap=0.9)
    with pytest.raises(ConfigError, match=r"expected an image \(H, W, 3\)"):
        predict_image(runs["identity"], image[..., 0])


def _exr_scene(rng, height=40, width=80):
    image = np.full((height, width, 3), [0.3, 0.5, 1.2], np.float32)
    image[height // 2:] = [0.05, 0.04, 0.02]
    image[3:6, 10:13] = 3e4  # a sun
    return image * np.float32(rng.uniform(0.5, 2))


def test_outputs_of_every_kind(runs, rng, tmp_path):
    scene = _exr_scene(rng)
    write_exr(tmp_path / "pano.exr", scene, half=False)
    write_png(tmp_path / "photo.png", _ldr(rng, 30, 45).astype(np.uint8))
    out = tmp_path / "out"
    report = predict_files(runs["hdr"], [tmp_path / "pano.exr", tmp_path / "photo.png"], out,
                           save="mask,overlay,prob,exr", overlay_max_size=40, convert=True,
                           tile_size=32, overlap=8)
    assert report.exit_code == 0 and len(report.done) == 2
    mask = np.asarray(Image.open(out / "pano_mask.png"))
    assert mask.dtype == np.uint8 and mask.shape == (40, 80) and set(np.unique(mask)) == {255}
    overlay = Image.open(out / "pano_overlay.png")
    assert overlay.size == (40, 20) and overlay.mode == "RGB"
    prob = np.asarray(Image.open(out / "pano_prob.png"))
    assert prob.dtype == np.uint16 and (prob == round(0.75 * 65535)).all()
    sky = read_image(out / "pano_sky.exr")
    np.testing.assert_allclose(sky, scene, rtol=1e-3)  # half float: 3 significant digits
    import OpenEXR

    with OpenEXR.File(str(out / "pano_sky.exr"), separate_channels=True) as handle:
        alpha = handle.channels()["A"].pixels
        assert handle.channels()["R"].pixels.dtype == np.float16
    np.testing.assert_allclose(alpha, 0.75, atol=1e-3)
    # The LDR photo's EXR holds linear values 0..1.
    photo_sky = read_image(out / "photo_sky.exr")
    assert photo_sky.shape == (30, 45, 3) and 0 <= photo_sky.min() and photo_sky.max() <= 1.0


def test_very_bright_sun_goes_to_a_float32_exr(runs, tmp_path):
    image = np.full((16, 32, 3), 0.5, np.float32)
    image[2, 2] = 2e5  # above the half-float range
    write_exr(tmp_path / "sun.exr", image, half=False)
    predict_files(runs["hdr"], [tmp_path / "sun.exr"], tmp_path / "out", save="exr")
    np.testing.assert_allclose(read_image(tmp_path / "out" / "sun_sky.exr")[2, 2], 2e5)


def test_overlay_background_shrinks_hdr_before_tonemapping(rng):
    scene = _exr_scene(rng, 400, 800)
    small = overlay_background(scene, is_hdr=True, max_size=200)
    assert small.shape == (100, 200, 3) and small.dtype == np.uint8
    sky, ground = small[:40].mean(axis=(0, 1)), small[60:].mean(axis=(0, 1))
    assert sky[2] > sky[0] and ground.mean() < sky.mean()


def test_damaged_file_among_several_inputs(runs, rng, tmp_path, capsys):
    for name in ("a", "c"):
        write_png(tmp_path / f"{name}.png", _ldr(rng, 20, 30).astype(np.uint8))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    out = tmp_path / "out"
    status = main(["predict", str(runs["identity_path"]), str(tmp_path / "a.png"),
                   str(tmp_path / "b.png"), str(tmp_path / "c.png"), "--out", str(out),
                   "--tile-size", "32"])
    assert status == 1
    assert (out / "a_mask.png").is_file() and (out / "c_mask.png").is_file()
    assert (out / "a_overlay.png").is_file() and not (out / "b_mask.png").exists()
    err = capsys.readouterr().err
    assert "2 of 3 done, 1 failed" in err and f"FAILED {tmp_path / 'b.png'}" in err


def test_ldr_file_into_hdr_model_is_reported_per_file(runs, rng, tmp_path):
    write_exr(tmp_path / "good.exr", _exr_scene(rng))
    write_png(tmp_path / "photo.png", _ldr(rng, 20, 30).astype(np.uint8))
    report = predict_files(runs["hdr"], [tmp_path], tmp_path / "out")
    assert report.exit_code == 1 and report.done == [str(tmp_path / "good.exr")]
    assert "pass --convert" in report.failures[0][1]


def test_name_clash_is_reported(runs, rng, tmp_path):
    write_png(tmp_path / "a.png", _ldr(rng, 10, 10).astype(np.uint8))
    Image.fromarray(_ldr(rng, 10, 10).astype(np.uint8)).save(tmp_path / "a.jpg")
    report = predict_files(runs["identity"], [tmp_path / "a.jpg", tmp_path / "a.png"],
                           tmp_path / "out")
    assert report.exit_code == 1 and "would overwrite" in report.failures[0][1]


def _one_line_error(capsys, status, expected):
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("skyseg predict: error: "), err
    assert expected in err[0]


def test_missing_model(tmp_path, rng, capsys):
    write_png(tmp_path / "a.png", _ldr(rng, 10, 10).astype(np.uint8))
    status = main(["predict", str(tmp_path / "no_run"), str(tmp_path / "a.png"), "--out",
                   str(tmp_path / "out")])
    _one_line_error(capsys, status, "no such run folder or model file")


def test_corrupt_model(tmp_path, rng, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_best.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    Preprocessing(mode="ldr").save(run / "preprocessing.json")
    write_png(tmp_path / "a.png", _ldr(rng, 10, 10).astype(np.uint8))
    status = main(["predict", str(run), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")])
    _one_line_error(capsys, status, "not a readable Keras model")


def test_bare_model_file_needs_mode(runs, tmp_path, rng, capsys):
    bare = tmp_path / "bare.h5"
    save_model(_keras_model("identity"), bare, include_optimizer=False)
    write_png(tmp_path / "a.png", _ldr(rng, 10, 10).astype(np.uint8))
    status = main(["predict", str(bare), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, status, "pass --mode hdr|ldr")
    assert main(["predict", str(bare), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                 "--mode", "ldr"]) == 0
    assert (tmp_path / "o" / "a_mask.png").is_file()
    capsys.readouterr()
    status = main(["predict", str(runs["identity_path"] / "model_best.h5"),
                   str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--mode", "hdr"])
    _one_line_error(capsys, status, "trained with LDR preprocessing but --mode hdr")


def test_output_folder_not_writable(runs, tmp_path, rng, capsys, monkeypatch):
    write_png(tmp_path / "a.png", _ldr(rng, 10, 10).astype(np.uint8))
    (tmp_path / "file").write_text("not a folder")
    status = main(["predict", str(runs["identity_path"]), str(tmp_path / "a.png"), "--out",
                   str(tmp_path / "file" / "out")])
    _one_line_error(capsys, status, "cannot create the output folder")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(write_module.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(ImageWriteError, match="output folder is not writable "
                                              r"\(Permission denied\); choose a writable --out"):
        prepare_output_folder(tmp_path / "locked")


@pytest.mark.parametrize("args, expected", [
    (["--tile-size", "1000"], "--tile-size 1000 is not a multiple of 32 (the U-Net halves the "
                              "tile 5 times); use 992 or 1024"),
    (["--save", "mask,png"], "unknown output(s) ['png']"),
    (["--threshold", "1.5"], "--threshold must be between 0 and 1"),
    (["--overlap", "0.7"], "more than half a tile"),
    (["--max-side", "10"], "--max-side must be a whole number of pixels >= 32, got 10"),
    (["--max-pixels", "-5"], "--max-pixels must be a positive whole number of pixels"),
])
def test_bad_options_fail_before_loading_the_model(tmp_path, capsys, args, expected):
    status = main(["predict", str(tmp_path / "no_run"), str(tmp_path / "a.png"), "--out",
                   str(tmp_path / "out"), *args])
    _one_line_error(capsys, status, expected)


def test_real_panorama_sample_wraps_automatically(runs, tmp_path):
    sample = shared_path("exr-samples", "MultiResolution_KernerEnvLatLong.exr")
    image, info = read_image(sample, return_info=True)
    result = predict_image(load_run(runs["hdr"]), image, is_hdr=info.is_hdr, tile_size=256,
                           details=True)
    assert result.wrap and result.probability.shape == (512, 1024)
    np.testing.assert_allclose(result.probability, 0.75, atol=1e-6)
    report = predict_files(runs["hdr"], [sample], tmp_path, overlay_max_size=512, tile_size=256)
    assert report.exit_code == 0
    assert Image.open(tmp_path / "MultiResolution_KernerEnvLatLong_overlay.png").size == (512, 256)


def test_python_m_skyseg_predict_takes_the_same_arguments(runs, tmp_path, rng):
    write_png(tmp_path / "a.png", _ldr(rng, 12, 18).astype(np.uint8))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "skyseg.predict", str(runs["identity_path"]), str(tmp_path),
         "--out", str(tmp_path / "out"), "--save", "mask,prob", "--tile-size", "64"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "a_mask.png").is_file() and (tmp_path / "out" / "a_prob.png").is_file()
    help_text = subprocess.run([sys.executable, "-m", "skyseg.predict", "--help"], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=120).stdout
    for option in ("--tile-size", "--overlap", "--batch-size", "--wrap", "--tta", "--threshold",
                   "--save", "--overlay-max-size", "--convert", "--refine", "--max-side",
                   "--max-pixels"):
        assert option in help_text


def test_background_reads_and_writes_stay_within_the_memory_budget(runs, rng, tmp_path,
                                                                     monkeypatch):
    import threading

    for name in ("a", "b", "c"):
        write_png(tmp_path / f"{name}.png", _ldr(rng, 20, 30).astype(np.uint8))
    events = []
    real_read, real_predict, real_write = (files_module.read_image,
                                           files_module.predict_image,
                                           files_module.write_outputs)

    def read(path, **kwargs):
        events.append(("read", path.stem, threading.current_thread().name))
        return real_read(path, **kwargs)

    def predict(loaded, image, *args, **kwargs):
        events.append(("predict", kwargs["name"][0], ""))
        return real_predict(loaded, image, *args, **kwargs)

    def write(out_dir, stem, probability, **kwargs):
        result = real_write(out_dir, stem, probability, **kwargs)
        events.append(("written", stem, ""))
        return result

    monkeypatch.setattr(files_module, "read_image", read)
    monkeypatch.setattr(files_module, "predict_image", predict)
    monkeypatch.setattr(files_module, "write_outputs", write)
    # Small images: read ahead in the reader thread.
    assert predict_files(runs["identity"], [tmp_path], tmp_path / "out1").exit_code == 0
    assert {thread for kind, _, thread in events if kind == "read"} == {"skyseg-read_0"}
    # Over the budget: every read in the foreground, each image written before the next.
    events.clear()
    monkeypatch.setattr(files_module, "_BACKGROUND_BYTES", 100)
    assert predict_files(runs["identity"], [tmp_path], tmp_path / "out2").exit_code == 0
    assert {thread for kind, _, thread in events if kind == "read"} == {"MainThread"}
    order = [(kind, stem) for kind, stem, _ in events if kind != "read"]
    assert order == [("predict", "a"), ("written", "a"), ("predict", "b"), ("written", "b"),
                     ("predict", "c"), ("written", "c")]


def test_labelstudio_pre_annotations_for_a_batch(runs, tmp_path):
    """--save labelstudio: one task per good input, in order, drawn back as the masks."""
    import json

    from skyseg.labels.labelstudio import task_to_mask

    sky = np.zeros((48, 96, 3), np.uint8)
    sky[:20] = 255          # identity network: probability = red / 255
    sky[6:10, 30:60] = 0    # a wire: a hole in the sky
    sky[30:40, 70:80] = 255  # a second sky region (a reflection)
    write_png(tmp_path / "a_sky.png", sky)
    write_png(tmp_path / "b_ground.png", np.zeros((40, 64, 3), np.uint8))
    (tmp_path / "c_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    out = tmp_path / "out"
    status = main(["predict", str(runs["identity_path"]), str(tmp_path / "*.png"), "--out",
                   str(out), "--save", "mask,labelstudio", "--tile-size", "32",
                   "--image-url-prefix", "/data/local-files/?d=cam/",
                   "--labelstudio-from-name", "tag", "--labelstudio-to-name", "img"])
    assert status == 1  # c_broken failed, and is left out
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=cam/a_sky.png",
                                                    "/data/local-files/?d=cam/b_ground.png"]
    assert tasks[1]["predictions"][0]["result"] == []
    prediction = tasks[0]["predictions"][0]
    assert prediction["model_version"] == "skyseg identity/model_best.h5"
    assert 0.9 < prediction["score"] <= 1.0
    assert {(r["from_name"], r["to_name"], r["type"]) for r in prediction["result"]} == {
        ("tag", "img", "polygonlabels")}
    labels = sorted(r["value"]["polygonlabels"][0] for r in prediction["result"])
    assert labels == ["non-sky", "sky", "sky"]
    mask = np.asarray(Image.open(out / "a_sky_mask.png")) // 255
    np.testing.assert_array_equal(task_to_mask(tasks[0]), mask)
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_labelstudio_options_are_checked_before_the_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="--labelstudio-from-name must be the name"):
        predict_files(tmp_path / "missing-run", [ROOT / "docs" / "overlay.png"], tmp_path / "o",
                      save="labelstudio", labelstudio_from_name="")


# --- coarse to fine: --refine, --max-side; giant inputs: --max-pixels -----------------------

def _reference_cases():
    """The cases of tests/data/make_predict_reference.py with their saved outputs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_predict_reference", ROOT / "tests" / "data" / "make_predict_reference.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker, np.load(ROOT / "tests" / "data" / "predict_reference.npz")


def test_refine_none_reproduces_the_output_before_refinement_bit_for_bit():
    maker, saved = _reference_cases()
    network = maker.tiny_network()
    for name, mode, scale, _, _, tta in maker.CASES:
        loaded = LoadedModel(model=network, preprocessing=Preprocessing(mode=mode, scale=scale))
        image = saved[f"{name}_image"]
        probability = predict_image(loaded, image, is_hdr=mode == "hdr", tile_size=32,
                                    overlap=8, tta=tta, refine="none")
        assert probability.dtype == np.float32
        assert np.array_equal(probability, saved[f"{name}_probability"]), name
        if scale == 1.0:  # nothing to refine: auto leaves the full-size output alone
            auto = predict_image(loaded, image, is_hdr=mode == "hdr", tile_size=32, overlap=8,
                                 tta=tta)
            assert np.array_equal(auto, saved[f"{name}_probability"]), name


@pytest.mark.parametrize("shape, small, wrap", [((40, 80), (20, 40), True),
                                                ((37, 51), (18, 26), False)])
def test_shrunk_prediction_is_refined_along_the_image(tmp_path, rng, shape, small, wrap):
    from skyseg.predict.refine import guided_upsample  # its maths: tests/test_refine.py

    folder = make_run(tmp_path / "half")
    Preprocessing(mode="ldr", scale=0.5).save(folder / "preprocessing.json")
    image = _ldr(rng, *shape)
    result = predict_image(load_run(folder), image, is_hdr=False, tile_size=32, overlap=8,
                           details=True)
    assert result.upsampling == "guided" and result.working_shape == small
    assert result.probability.shape == shape and result.probability.dtype == np.float32
    assert 0.0 <= result.probability.min() and result.probability.max() <= 1.0
    expected = guided_upsample(_area(image, small)[..., 0] / 255, image, is_hdr=False, wrap=wrap)
    np.testing.assert_allclose(result.probability, expected, atol=1e-6)
    linear = predict_image(load_run(folder), image, is_hdr=False, tile_size=32, overlap=8,
                           refine="none", details=True)
    assert linear.upsampling == "linear"
    assert np.abs(linear.probability - result.probability).max() > 0.01


def test_max_side_shrinks_the_working_size_and_refines(runs, rng):
    image = _ldr(rng, 40, 80)
    result = predict_image(runs["identity"], image, is_hdr=False, tile_size=32, overlap=8,
                           max_side=40, details=True)
    assert result.working_shape == (20, 40) and result.upsampling == "guided"
    assert result.probability.shape == (40, 80)
    plain = predict_image(runs["identity"], image, is_hdr=False, tile_size=32, overlap=8,
                          max_side=40, refine="none", details=True)
    assert plain.upsampling == "linear" and plain.working_shape == (20, 40)
    # Larger than the image: nothing shrinks, nothing to refine under auto.
    full = predict_image(runs["identity"], image, is_hdr=False, tile_size=32, overlap=8,
                         max_side=4096, details=True)
    assert full.working_shape == (40, 80) and full.upsampling == "none"
    np.testing.assert_allclose(full.probability, image[..., 0] / 255, atol=1e-6)
    # Forced guided filtering at full size.
    forced = predict_image(runs["identity"], image, is_hdr=False, tile_size=32, overlap=8,
                           refine="guided", details=True)
    assert forced.upsampling == "guided" and forced.probability.shape == (40, 80)


def test_refined_panorama_commutes_with_a_roll_and_has_no_seam(runs):
    # A horizon that crosses x = 0 continuously, predicted at half size.
    x = np.arange(192)
    horizon = 48 + 12 * np.sin(2 * np.pi * x / 192) + 5 * np.cos(6 * np.pi * x / 192)
    sky = np.arange(96)[:, None] < horizon[None, :]
    image = np.repeat(np.where(sky, 210.0, 40.0)[..., None], 3, axis=2).astype(np.float32)
    image += np.random.default_rng(4).normal(0, 3, image.shape).astype(np.float32)
    options = dict(is_hdr=False, tile_size=32, overlap=8, max_side=96)
    plain = predict_image(runs["identity"], image, **options)
    for shift in (2, 50, 96):  # whole pixels of the half-size grid
        rolled = predict_image(runs["identity"], np.roll(image, shift, axis=1), **options)
        np.testing.assert_allclose(rolled, np.roll(plain, shift, axis=1), atol=1e-5)
    across = np.abs(plain[:, 0] - plain[:, -1]).max()
    inside = np.abs(np.diff(plain, axis=1)).max()
    assert across <= inside + 1e-6
    mask = plain > 0.5
    assert np.count_nonzero(mask != sky) <= 0.01 * sky.size


def test_giant_input_is_refused_before_decoding_and_the_batch_goes_on(runs, rng, tmp_path,
                                                                      capsys, monkeypatch):
    import struct

    write_png(tmp_path / "a.png", _ldr(rng, 20, 30).astype(np.uint8))
    # 33 bytes of PNG header that claim 30000x30000 pixels (10.8 GB as float32).
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(
        ">I4sIIBBBBB", 13, b"IHDR", 30000, 30000, 8, 2, 0, 0, 0) + bytes(4))
    import skyseg.io.ldr

    real_png = skyseg.io.ldr.read_png
    decoded = []

    def read_png(path):
        decoded.append(path.name)
        return real_png(path)

    monkeypatch.setattr(skyseg.io.ldr, "read_png", read_png)
    out = tmp_path / "out"
    status = main(["predict", str(runs["identity_path"]), str(tmp_path / "a.png"),
                   str(tmp_path / "bomb.png"), "--out", str(out), "--tile-size", "32"])
    assert status == 1 and (out / "a_mask.png").is_file() and not (out / "bomb_mask.png").exists()
    assert decoded == ["a.png"]
    err = capsys.readouterr().err
    assert "1 of 2 done, 1 failed" in err
    line = next(line for line in err.splitlines() if "30000x30000" in line)
    assert f"{tmp_path / 'bomb.png'}: 30000x30000 pixels (900 MP) is more than --max-pixels" in line
    # A higher limit lets the header through (the decoder then finds no pixel data).
    report = predict_files(runs["identity"], [tmp_path / "bomb.png"], out, max_pixels=10**9)
    assert report.exit_code == 1 and "30000x30000" not in report.failures[0][1]


def test_parse_save_keeps_order_drops_repeats_and_names_the_choices():
    from skyseg.predict.outputs import SAVE_CHOICES, parse_save

    assert parse_save("mask, overlay,mask") == ("mask", "overlay")
    assert parse_save(["exr", "mask"]) == ("exr", "mask")
    with pytest.raises(ConfigError, match=r"--save mask,sky: unknown output\(s\) \['sky'\]"):
        parse_save("mask,sky")
    with pytest.raises(ConfigError, match=f"--save \\(empty\\).*{','.join(SAVE_CHOICES)}"):
        parse_save(" , ")


def test_ensemble_averages_its_members_each_at_its_own_scale(tmp_path, rng):
    from skyseg.predict.loading import load_predictor
    from skyseg.training.model import ModelEnsemble

    identity = make_run(tmp_path / "identity")
    constant = make_run(tmp_path / "constant", "constant", value=0.3)
    half = make_run(tmp_path / "half")
    Preprocessing(mode="ldr", scale=0.5).save(half / "preprocessing.json")
    image = _ldr(rng, 40, 56)
    options = dict(is_hdr=False, tile_size=32, overlap=8, refine="none")
    alone = [predict_image(load_run(run), image, details=True, **options)
             for run in (identity, constant, half)]
    ensemble = load_predictor([identity, constant, half])
    assert isinstance(ensemble, ModelEnsemble) and len(ensemble.members) == 3
    assert ensemble.preprocessing.mode == "ldr" and ensemble.path == identity / "model_best.h5"
    result = predict_image(ensemble, image, details=True, **options)
    half_size = _bilinear(_area(image, (20, 28))[..., 0] / 255, 40, 56, wrap=False)
    expected = (image[..., 0] / 255 + 0.3 + half_size) / 3
    np.testing.assert_allclose(result.probability, expected, atol=1e-6)
    assert result.probability.shape == (40, 56) and result.probability.dtype == np.float32
    assert result.tiles == sum(a.tiles for a in alone)
    # The half-scale member really ran at half size (it is not the identity's output).
    assert np.abs(alone[2].probability - image[..., 0] / 255).max() > 0.05
    # A list is an ensemble; nested ensembles flatten; a list of one is that model.
    np.testing.assert_array_equal(
        predict_image([load_run(identity), [constant, half]], image, **options),
        result.probability)
    assert len(load_predictor([ensemble, identity]).members) == 4
    assert not isinstance(load_predictor([identity]), ModelEnsemble)


def test_ensemble_refuses_hdr_with_ldr_and_needs_two_models(tmp_path):
    from skyseg.predict.loading import load_predictor
    from skyseg.training.model import ModelEnsemble

    ldr = make_run(tmp_path / "ldr")
    hdr = make_run(tmp_path / "hdr", "constant", mode="hdr", value=0.5)
    with pytest.raises(ModelError, match=r"hdr[/\\]model_best\.h5: this HDR model cannot join "
                                         r"the LDR model .*all HDR or all LDR"):
        load_predictor([ldr, hdr])
    with pytest.raises(ConfigError, match="no model given"):
        load_predictor([])
    with pytest.raises(ConfigError, match="at least two models"):
        ModelEnsemble([load_run(ldr)])


def test_cli_ensemble_for_predict_and_evaluate(tmp_path, rng, capsys):
    import json

    identity = make_run(tmp_path / "identity")
    constant = make_run(tmp_path / "constant", "constant", value=0.3)
    image = _ldr(rng, 24, 40).astype(np.uint8)
    (tmp_path / "in").mkdir()
    write_png(tmp_path / "in" / "a.png", image)
    assert main(["predict", str(identity), str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--save", "prob", "--tile-size", "32", "--ensemble", str(constant)]) == 0
    probability = np.asarray(Image.open(tmp_path / "out" / "a_prob.png")) / 65535
    np.testing.assert_allclose(probability, (image[..., 0] / 255 + 0.3) / 2, atol=2e-5)
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "masks" / "a.png", (image[..., 0] > 100).astype(np.uint8))
    assert main(["evaluate", str(identity), "--images", str(tmp_path / "in"), "--masks",
                 str(tmp_path / "masks"), "--out", str(tmp_path / "ev"), "--tile-size", "32",
                 "--ensemble", str(constant)]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["model"] == "identity/model_best.h5 + constant/model_best.h5"
    # The mean is above 0.5 exactly where channel 0 is above 0.7 * 255.
    expected = (image[..., 0] / 255 + 0.3) / 2 > 0.5
    truth = image[..., 0] > 100
    iou = np.sum(expected & truth) / np.sum(expected | truth)
    assert summary["pooled"]["iou"] == pytest.approx(iou, abs=1e-6)
    capsys.readouterr()
    status = main(["predict", str(identity), str(tmp_path / "in"), "--out", str(tmp_path / "o2"),
                   "--ensemble", str(tmp_path / "no_run")])
    _one_line_error(capsys, status, "no such run folder or model file")


# --------------------------------------------------------------------------- the shipped model

def test_which_argument_is_the_model(tmp_path, runs):
    import argparse

    from skyseg.io.run_folder import DEFAULT_MODEL_DIR
    from skyseg.predict.predictor import resolve_model_argument

    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    run = str(runs["identity_path"])

    def resolved(inputs, model=None):
        args = resolve_model_argument(argparse.Namespace(inputs=list(inputs), model=model))
        return args.model, args.inputs

    assert resolved([str(image)]) == (str(DEFAULT_MODEL_DIR), [str(image)])
    assert resolved([run, str(image)]) == (run, [str(image)])  # the older form
    assert resolved([str(image)], model=run) == (run, [str(image)])
    assert resolved([str(image)], model="default") == (str(DEFAULT_MODEL_DIR), [str(image)])
    # A missing first path that is no image nor pattern is a missing model ...
    assert resolved([str(tmp_path / "no_run"), str(image)])[0] == str(tmp_path / "no_run")
    # ... but a missing image, or a pattern, is an input.
    for first in (str(tmp_path / "gone.exr"), str(tmp_path / "*")):
        assert resolved([first, str(image)]) == (str(DEFAULT_MODEL_DIR), [first, str(image)])


def test_shipped_model_predicts_with_no_model_argument_and_takes_photos_unasked(tmp_path, rng):
    """``skyseg predict INPUT --out DIR``: the shipped HDR model, which learnt photos as
    linear radiance, also predicts an LDR photo without --convert."""
    from skyseg.io.run_folder import default_model
    from skyseg.predict.loading import accepts_ldr

    shipped = load_run(default_model())
    assert shipped.preprocessing.is_hdr and accepts_ldr(shipped)
    assert shipped.config["backbone"] == "efficientnetlite0"
    write_png(tmp_path / "photo.png", _ldr(rng, 40, 64).astype(np.uint8))
    write_exr(tmp_path / "pano.exr", np.full((32, 64, 3), 0.5, np.float32))
    for argv in (["predict", str(tmp_path / "photo.png"), str(tmp_path / "pano.exr")],
                 ["predict", "--model", "default", str(tmp_path / "photo.png"),
                  str(tmp_path / "pano.exr")]):
        out = tmp_path / f"out{len(argv)}"
        assert main([*argv, "--out", str(out)]) == 0
        for stem, shape in (("photo", (40, 64)), ("pano", (32, 64))):
            mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
            assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}

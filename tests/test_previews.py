"""`skyseg previews`: tonemapped JPGs to label, batch behaviour, and the CLI around it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from skyseg.cli.commands import main
from skyseg.io import read_image, write_exr
from skyseg.labels.previews import make_previews

from .conftest import ROOT


def _scene(rng, height=48, width=96):
    image = np.full((height, width, 3), [0.3, 0.5, 1.2], np.float32)
    image[height // 2:] = [0.05, 0.04, 0.02]
    image[5:8, 10:13] = 3e4  # the sun
    return image * rng.uniform(0.5, 2)


def test_previews_of_exr_samples(tmp_path, exr_samples):
    inputs = [exr_samples / "MultiResolution_KernerEnvLatLong.exr", exr_samples / "Tiles_GoldenGate.exr"]
    report = make_previews(inputs, tmp_path, max_size=256)
    assert report.exit_code == 0 and len(report.done) == 2
    pano = Image.open(tmp_path / "MultiResolution_KernerEnvLatLong.jpg")
    assert pano.size == (256, 128)
    bridge = Image.open(tmp_path / "Tiles_GoldenGate.jpg")
    assert bridge.size == (256, round(860 * 256 / 1262))
    # The dusk sky over the Golden Gate is blue-ish and visible (not black, not white).
    sky = np.asarray(bridge)[:20].reshape(-1, 3).mean(axis=0)
    assert sky[2] > sky[0] and sky.min() > 60 and sky.min() < 230


def test_preview_full_size_and_up_to_date_skip(tmp_path, rng):
    write_exr(tmp_path / "a.exr", _scene(rng))
    out = tmp_path / "out"
    make_previews([tmp_path / "a.exr"], out)
    assert Image.open(out / "a.jpg").size == (96, 48)
    stamp = (out / "a.jpg").stat().st_mtime_ns
    make_previews([tmp_path / "a.exr"], out)
    assert (out / "a.jpg").stat().st_mtime_ns == stamp  # reused, not rewritten
    make_previews([tmp_path / "a.exr"], out, overwrite=True)
    assert read_image(out / "a.jpg").shape == (48, 96, 3)


def test_damaged_input_among_good_ones(tmp_path, rng, cli):
    write_exr(tmp_path / "good.exr", _scene(rng))
    (tmp_path / "bad.exr").write_bytes(b"\x76\x2f\x31\x01" + bytes(40))
    result = cli("previews", tmp_path / "bad.exr", tmp_path / "good.exr", "--out", tmp_path / "out")
    assert result.returncode == 1
    assert (tmp_path / "out" / "good.jpg").is_file()
    assert not (tmp_path / "out" / "bad.jpg").exists()
    assert "1 of 2 done, 1 failed" in result.stderr
    assert f"FAILED {tmp_path / 'bad.exr'}: damaged" in result.stderr


def test_image_above_max_pixels_is_refused_and_the_others_written(tmp_path, rng, cli):
    write_exr(tmp_path / "big.exr", _scene(rng))  # 96x48 = 4608 pixels
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "small.png")
    result = cli("previews", tmp_path / "big.exr", tmp_path / "small.png", "--out",
                 tmp_path / "out", "--max-pixels", 1000)
    assert result.returncode == 1, result.stderr
    assert (tmp_path / "out" / "small.jpg").is_file() and not (tmp_path / "out" / "big.jpg").exists()
    assert "96x48 pixels" in result.stderr and "--max-pixels 1000" in result.stderr
    # 0: no limit; a bad value is one line naming the option.
    assert make_previews([tmp_path / "big.exr"], tmp_path / "all", max_pixels=None).exit_code == 0
    result = cli("previews", tmp_path / "big.exr", "--out", tmp_path / "out", "--max-pixels", -3)
    assert result.returncode == 2 and "--max-pixels must be a positive whole number" in \
        result.stderr


def test_name_clash_is_reported(tmp_path, rng):
    write_exr(tmp_path / "a.exr", _scene(rng))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    report = make_previews([tmp_path / "a.exr", tmp_path / "a.png"], tmp_path / "out")
    assert report.exit_code == 1
    assert "already taken" in report.failures[0][1]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["previews", str(tmp_path / "none*.exr"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skyseg previews: error: no images found")
    assert main(["previews", str(tmp_path), "--out", str(tmp_path), "--max-size", "3"]) == 2
    assert "--max-size must be at least 16" in capsys.readouterr().err


def test_help_lists_stages_without_importing_tensorflow():
    code = (
        "import sys, contextlib, io\n"
        "from skyseg.cli.commands import main\n"
        "buffer = io.StringIO()\n"
        "with contextlib.redirect_stdout(buffer):\n"
        "    try:\n        main(['--help'])\n"
        "    except SystemExit:\n        pass\n"
        "assert 'previews' in buffer.getvalue(), buffer.getvalue()\n"
        "assert 'tensorflow' not in sys.modules\n"
        "import skyseg\nskyseg.read_image\nassert 'tensorflow' not in sys.modules\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_every_stage_has_help(cli):
    from skyseg.cli.commands import STAGES

    for stage in STAGES:
        result = cli(stage, "--help")
        assert result.returncode == 0, (stage, result.stderr)
        assert f"usage: skyseg {stage}" in result.stdout


def test_no_stage_prints_help_and_fails(cli):
    result = cli()
    assert result.returncode == 2
    assert "stages:" in result.stdout


def test_command_line_defaults_are_the_options_defaults():
    from skyseg.cli.commands import build_parser
    from skyseg.labels.previews import PreviewsOptions
    from skyseg.options import from_args

    args = build_parser().parse_args(["previews", "in.exr", "--out", "o"])
    assert from_args(PreviewsOptions, args) == PreviewsOptions()
    args = build_parser().parse_args(["previews", "in.exr", "--out", "o", "--exposure", "-1"])
    assert from_args(PreviewsOptions, args) == PreviewsOptions(exposure_ev=-1.0)
    with pytest.raises(TypeError, match="size"):
        make_previews(["in.exr"], "o", size=5)

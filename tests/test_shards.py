"""Job-array shards: predict --shard i/N, build-dataset --shard / --combine."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from skyseg.cli.commands import main
from skyseg.data.dataset import build_dataset
from skyseg.data.shards import outputs_complete, parse_shard, shard_paths, shard_range
from skyseg.errors import ConfigError
from skyseg.io import write_png

from .test_dataset import ODD_SIZES, PATCH, STRIDE, make_labelled_set, tree


@pytest.mark.parametrize("count, total", [(0, 3), (1, 2), (7, 3), (10, 4), (5, 5), (3, 7)])
def test_shards_are_disjoint_and_cover_the_list(count, total):
    blocks = [list(shard_range(count, (index, total))) for index in range(1, total + 1)]
    assert sum(blocks, []) == list(range(count))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.parametrize("text, expected", [("1/2", (1, 2)), (" 3 / 3 ", (3, 3)), (None, None)])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"])
def test_bad_shard_names_the_option_and_the_fix(text):
    with pytest.raises(ConfigError, match=r"--shard .*(e\.g\. --shard 1/4|between 1 and N)"):
        parse_shard(text)


def test_files_sharing_a_stem_stay_in_one_shard():
    paths = [Path("b.png"), Path("a.jpg"), Path("a.png"), Path("c.exr")]
    first, second = shard_paths(paths, (1, 2)), shard_paths(paths, (2, 2))
    assert first == [Path("a.jpg"), Path("a.png")] and second == [Path("b.png"), Path("c.exr")]


def test_outputs_complete(tmp_path):
    done = tmp_path / "x_mask.png"
    assert not outputs_complete([done])
    done.write_bytes(b"png")
    assert outputs_complete([done])
    assert not outputs_complete([done], since=done.stat().st_mtime + 10)  # a newer model
    (tmp_path / "empty.png").write_bytes(b"")
    assert not outputs_complete([done, tmp_path / "empty.png"])


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def predict_setup(tmp_path_factory):
    from .test_predict import make_run

    base = tmp_path_factory.mktemp("shards")
    run = make_run(base / "run", "symmetric")
    inputs = base / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    for index in range(5):
        size = (40 + 8 * index, 64 + 4 * index)
        write_png(inputs / f"img{index}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return run, inputs


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())
            if path.suffix == ".png"}


@pytest.mark.slow
def test_predict_shards_write_exactly_the_unsharded_outputs(predict_setup, tmp_path, capsys):
    run, inputs = predict_setup
    options = ["--tile-size", "64", "--quiet"]
    assert main(["predict", str(run), str(inputs), "--out", str(tmp_path / "all"),
                 *options]) == 0
    sharded = tmp_path / "sharded"
    names = []
    for index in (1, 2):
        assert main(["predict", str(run), str(inputs), "--out", str(sharded), "--shard",
                     f"{index}/2", *options]) == 0
        names.append(set(outputs(sharded)) - set().union(*names))
    assert names[0] and names[1] and not names[0] & names[1]
    assert {name.split("_")[0] for name in names[0]} == {"img0", "img1"}
    assert outputs(sharded) == outputs(tmp_path / "all")  # byte-identical masks and overlays

    # A re-run (e.g. of a killed array task) rewrites nothing.
    times = {path.name: path.stat().st_mtime_ns for path in sharded.iterdir()}
    capsys.readouterr()
    for index in (1, 2):
        assert main(["predict", str(run), str(inputs), "--out", str(sharded), "--shard",
                     f"{index}/2", "-v"]) == 0
    assert {path.name: path.stat().st_mtime_ns for path in sharded.iterdir()} == times
    assert "shard 2/2: 3 input(s); 3 already complete (skipped), 0 predicted, 0 failed" \
        in capsys.readouterr().err

    # A killed task left one output missing: only that input is predicted again.
    (sharded / "img3_mask.png").unlink()
    capsys.readouterr()
    assert main(["predict", str(run), str(inputs), "--out", str(sharded), "--shard", "2/2",
                 "-v"]) == 0
    assert "shard 2/2: 3 input(s); 2 already complete (skipped), 1 predicted, 0 failed" \
        in capsys.readouterr().err
    assert outputs(sharded) == outputs(tmp_path / "all")
    assert all(path.stat().st_mtime_ns == times[path.name] for path in sharded.iterdir()
               if not path.name.startswith("img3"))

    # --overwrite predicts the whole shard again.
    capsys.readouterr()
    assert main(["predict", str(run), str(inputs), "--out", str(sharded), "--shard", "1/2",
                 "--overwrite", "-v"]) == 0
    assert "shard 1/2: 2 input(s); 0 already complete (skipped), 2 predicted" in capsys.readouterr().err


@pytest.mark.slow
def test_outputs_older_than_the_model_are_predicted_again(predict_setup, tmp_path, capsys):
    run, inputs = predict_setup
    out = tmp_path / "out"
    assert main(["predict", str(run), str(inputs), "--out", str(out), "--shard", "1/3",
                 "-q"]) == 0
    for path in out.iterdir():
        os.utime(path, (0, 0))  # written before the model file
    capsys.readouterr()
    assert main(["predict", str(run), str(inputs), "--out", str(out), "--shard", "1/3",
                 "-v"]) == 0
    assert "1 input(s); 0 already complete (skipped), 1 predicted" in capsys.readouterr().err


def test_predict_shard_refuses_labelstudio(predict_setup, tmp_path, capsys):
    run, inputs = predict_setup
    assert main(["predict", str(run), str(inputs), "--out", str(tmp_path), "--shard", "1/2",
                 "--save", "mask,labelstudio"]) == 2
    assert "--save labelstudio writes one file" in capsys.readouterr().err


# --------------------------------------------------------------------------- build-dataset


def test_dataset_shards_combined_equal_one_build(tmp_path):
    coco, images = make_labelled_set(tmp_path / "set")
    kwargs = dict(mode="ldr", patch_size=PATCH, stride=STRIDE, seed=5, split=(0.6, 0.4))
    one = build_dataset(coco, images, tmp_path / "one", **kwargs)
    shard_dirs = [tmp_path / f"shard{index}" for index in (1, 2, 3)]
    built = []
    for index, folder in enumerate(shard_dirs, start=1):
        result = build_dataset(coco, images, folder, shard=(index, 3), **kwargs)
        assert result.exit_code == 0 and sum(result.splits.values()) > 0
        assert not (folder / "manifest.csv").exists()  # a shard is not a dataset yet
        built.append({name for name in tree(folder) if name.startswith(("X_", "Y_"))})
    assert all(built) and not (built[0] & built[1] or built[1] & built[2] or built[0] & built[2])
    combined = build_dataset(coco, images, tmp_path / "combined", combine=shard_dirs, **kwargs)
    assert combined.splits == one.splits and combined.sky_fraction == one.sky_fraction
    # Same manifest, statistics, splits, patches and state, byte for byte.
    assert tree(tmp_path / "combined") == tree(tmp_path / "one")
    assert len(ODD_SIZES) == len(json_sources(tmp_path / "combined"))


def json_sources(folder: Path) -> dict:
    import json

    return json.loads((folder / "dataset.json").read_text())["sources"]


def test_combine_builds_what_no_shard_finished_and_checks_the_settings(tmp_path):
    coco, images = make_labelled_set(tmp_path / "set")
    kwargs = dict(mode="ldr", patch_size=PATCH, stride=STRIDE, seed=5)
    build_dataset(coco, images, tmp_path / "one", **kwargs)
    build_dataset(coco, images, tmp_path / "s1", shard=(1, 2), **kwargs)
    # Shard 2 never ran: combining builds its images.
    build_dataset(coco, images, tmp_path / "combined", combine=[tmp_path / "s1"], **kwargs)
    assert tree(tmp_path / "combined") == tree(tmp_path / "one")
    with pytest.raises(Exception, match="built with other settings"):
        build_dataset(coco, images, tmp_path / "other", combine=[tmp_path / "s1"],
                      **{**kwargs, "seed": 6})
    with pytest.raises(ConfigError, match="not both"):
        build_dataset(coco, images, tmp_path / "x", shard=(1, 2), combine=[tmp_path / "s1"],
                      **kwargs)


def test_build_dataset_cli_shard_and_combine(tmp_path, capsys):
    coco, images = make_labelled_set(tmp_path / "set")
    common = ["build-dataset", "--coco", str(coco), "--images", str(images), "--mode", "ldr",
              "--patch-size", str(PATCH), "--stride", str(STRIDE), "-q"]
    for index in (1, 2):
        assert main([*common, "--out", str(tmp_path / f"s{index}"), "--shard", f"{index}/2"]) == 0
    assert main([*common, "--out", str(tmp_path / "data"), "--combine", str(tmp_path / "s1"),
                 str(tmp_path / "s2")]) == 0
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert tree(tmp_path / "data") == tree(tmp_path / "one")
    assert main([*common, "--out", str(tmp_path / "bad"), "--shard", "3/2"]) == 2
    assert "--shard 3/2: i must be between 1 and N" in capsys.readouterr().err

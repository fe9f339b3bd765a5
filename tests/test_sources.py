"""Several labelled sources in one training run: parse_sources, check_sources, MixedBatches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skyseg.data.generators import (
    DataSource,
    MixedBatches,
    check_sources,
    open_batches,
    parse_sources,
)
from skyseg.errors import ConfigError, DatasetError
from tests.synthetic_patches import write_dataset


def _constant_masks(root, value: int) -> None:
    """Set every mask of a synthetic dataset to ``value``, to tell its patches apart."""
    from skyseg.io import write_png

    for path in root.glob("Y_*/*/*.png"):
        write_png(path, np.full((32, 32), value, np.uint8))


@pytest.fixture
def two_sources(tmp_path):
    sky = write_dataset(tmp_path / "sky", counts={"train": 6, "val": 3}, seed=1, pad=False)
    ground = write_dataset(tmp_path / "ground", counts={"train": 20, "val": 2}, seed=2,
                           pad=False)
    _constant_masks(sky, 1)
    _constant_masks(ground, 0)
    return sky, ground


def test_parse_sources_reads_dir_weight_pairs_mappings_and_names(tmp_path):
    sources = parse_sources(["data/pano=3", "data/camvid", {"path": "x/y", "weight": 0.5,
                                                           "name": "photos"}])
    assert [(s.name, s.weight) for s in sources] == [("pano", 3.0), ("camvid", 1.0),
                                                      ("photos", 0.5)]
    # A real folder whose name holds '=' is that folder, weight 1.
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_sources([str(odd)])[0] == DataSource(odd, 1.0, "a=b")
    with pytest.raises(ConfigError, match="must be a number, got 'lots'"):
        parse_sources(["data/pano=lots"])
    with pytest.raises(ConfigError, match="weight must be a positive number, got 0.0"):
        parse_sources(["data/pano=0"])
    with pytest.raises(ConfigError, match="two data sources are named pano"):
        parse_sources(["a/pano", "b/pano=2"])
    with pytest.raises(ConfigError, match="no training data given"):
        parse_sources([])


def test_training_patches_follow_the_weights_not_the_patch_counts(two_sources):
    sky, ground = two_sources
    batches = MixedBatches(parse_sources([f"{sky}=3", f"{ground}=1"]), "train", batch_size=8,
                           seed=5, steps_per_epoch=50)
    assert len(batches) == 50 and len(batches.pairs) == 26
    shares = [float((batches.batch(i, 0)[1] == 1).mean()) for i in range(50)]
    # 400 patches drawn, each from "sky" with probability 3/4: binomial sd 0.022.
    assert abs(np.mean(shares) - 0.75) < 0.07
    # Seeded: the same batch whatever came before; another epoch draws anew.
    x1, y1 = batches.batch(7, 2)
    batches.batch(3, 0)
    x2, y2 = batches.batch(7, 2)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(batches.batch(7, 3)[0], x1)


def test_validation_holds_every_patch_of_every_source_in_order(two_sources):
    sky, ground = two_sources
    val = MixedBatches(parse_sources([f"{sky}=3", f"{ground}=1"]), "val", batch_size=4)
    assert len(val) == 2  # 3 + 2 patches, batches of 4
    masks = np.concatenate([val[i][1] for i in range(len(val))])
    assert masks.shape == (5, 32, 32, 1)
    assert [int(m.max()) for m in masks] == [1, 1, 1, 0, 0]
    assert val.source_of(range(5)) == ["sky"] * 3 + ["ground"] * 2


def test_a_source_without_a_validation_split_is_left_out_of_validation(tmp_path, two_sources):
    sky, _ = two_sources
    train_only = write_dataset(tmp_path / "pano", counts={"train": 4}, seed=3)
    val = MixedBatches(parse_sources([sky, train_only]), "val", batch_size=8)
    assert [s.name for s in val.sources] == ["sky"] and len(val.pairs) == 3
    train = MixedBatches(parse_sources([sky, train_only]), "train", batch_size=8)
    assert len(train.pairs) == 10
    with pytest.raises(DatasetError, match="no source has a val split"):
        MixedBatches(parse_sources([train_only]), "val")


def test_sources_must_fit_one_model(tmp_path, two_sources):
    sky, _ = two_sources
    bigger = write_dataset(tmp_path / "bigger", counts={"train": 2, "val": 1}, size=64)
    with pytest.raises(DatasetError, match="its patch size \\(64\\) differs from that of"):
        check_sources(parse_sources([sky, bigger]))
    other = write_dataset(tmp_path / "other", counts={"train": 2, "val": 1})
    meta = json.loads((other / "dataset.json").read_text())
    meta["preprocessing"]["log_pow"] = 5.0
    (other / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="its preprocessing .* rebuild it with"):
        check_sources(parse_sources([sky, other]))


def test_one_source_is_the_plain_patch_batches(two_sources):
    sky, ground = two_sources
    single = open_batches(sky, "train", batch_size=2)
    assert type(single).__name__ == "PatchBatches"
    assert type(open_batches([sky, ground], "train", batch_size=2)).__name__ == "MixedBatches"

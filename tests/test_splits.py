"""Splits by image, by group, from lists: seeded, and never leaking."""

from __future__ import annotations

from collections import Counter

import pytest

from skyseg.data.splits import (
    assign_splits,
    check_groups_disjoint,
    group_keys,
    parse_split,
    parse_split_file_args,
    read_split_files,
)
from skyseg.errors import ConfigError, DatasetError

STEMS = [f"seq{g}_{i:03d}" for g in range(7) for i in range(3 + 2 * g)]


def test_parse_split_accepts_two_and_three_way():
    assert parse_split("0.75,0.25") == (0.75, 0.25)
    assert parse_split(" 0.6, 0.2 ,0.2") == (0.6, 0.2, 0.2)
    assert parse_split((0.5, 0.5)) == (0.5, 0.5)


@pytest.mark.parametrize(("text", "match"), [
    ("0.75", "expected 2"),
    ("0.5,0.2,0.2,0.1", "expected 2"),
    ("0.7,0.2", "sum to 0.9"),
    ("0.75;0.25", "comma-separated"),
    ("a,b", "comma-separated"),
    ("1.0,0", "above 0"),
    ("1.25,-0.25", "above 0"),
    ("nan,0.5", "above 0"),
])
def test_parse_split_rejects(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_split(text)


def test_split_by_image_is_seeded_and_order_free():
    first = assign_splits(STEMS, (0.75, 0.25), seed=3)
    again = assign_splits(list(reversed(STEMS)), (0.75, 0.25), seed=3)
    other = assign_splits(STEMS, (0.75, 0.25), seed=4)
    assert first == again
    assert first != other
    counts = Counter(first.values())
    assert set(first) == set(STEMS)
    assert abs(counts["val"] - 0.25 * len(STEMS)) <= 1


def test_three_way_split_fractions():
    stems = [f"img{i:03d}" for i in range(100)]
    counts = Counter(assign_splits(stems, "0.6,0.2,0.2", seed=0).values())
    assert counts == {"train": 60, "val": 20, "test": 20}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fractions", ["0.75,0.25", "0.6,0.2,0.2", "0.34,0.33,0.33"])
def test_no_group_in_two_splits(seed, fractions):
    split = assign_splits(STEMS, fractions, seed=seed, group_pattern=r"^(seq\d+)_")
    by_group: dict[str, set[str]] = {}
    for stem, name in split.items():
        by_group.setdefault(stem.split("_")[0], set()).add(name)
    assert all(len(names) == 1 for names in by_group.values())
    assert len(set(split.values())) == len(fractions.split(","))  # no empty split
    check_groups_disjoint(split, r"^(seq\d+)_")


def test_every_split_non_empty_for_tiny_inputs():
    assert sorted(assign_splits(["a", "b"], (0.9, 0.1), seed=0).values()) == ["train", "val"]
    assert sorted(assign_splits(["a", "b", "c"], (0.8, 0.1, 0.1), seed=5).values()) == \
        ["test", "train", "val"]


def test_too_few_images_or_groups():
    with pytest.raises(ConfigError, match="needs at least 3 images, got 2"):
        assign_splits(["a", "b"], (0.6, 0.2, 0.2))
    with pytest.raises(ConfigError, match="needs at least 2 groups, got 1"):
        assign_splits(["s1_a", "s1_b"], (0.5, 0.5), group_pattern="^(s1)")


def test_group_keys_whole_match_and_errors():
    assert group_keys(["abc12", "abd34"], r"ab.") == {"abc12": "abc", "abd34": "abd"}
    with pytest.raises(ConfigError, match="matches no group in 1 file name"):
        group_keys(["seq1_a", "other"], r"^(seq\d)")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        group_keys(["a"], r"(unclosed")


def test_split_files(tmp_path):
    (tmp_path / "train.txt").write_text("# comment\na\nimages/b.jpg\n\n")
    (tmp_path / "val.txt").write_text("c.exr\n")
    files = parse_split_file_args([f"train={tmp_path / 'train.txt'}",
                                   f"val={tmp_path / 'val.txt'}"])
    assert read_split_files(files) == {"a": "train", "b": "train", "c": "val"}


@pytest.mark.parametrize(("items", "match"), [
    (["train"], "expected NAME=FILE"),
    (["train="], "expected NAME=FILE"),
    (["../x=a.txt"], "must be letters"),
    (["train=a.txt", "train=b.txt"], "given twice"),
])
def test_split_file_args_rejected(items, match):
    with pytest.raises(ConfigError, match=match):
        parse_split_file_args(items)


def test_split_file_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"--split-file val=.*nope.txt: file not found"):
        read_split_files({"val": tmp_path / "nope.txt"})


def test_split_file_empty_or_overlapping(tmp_path):
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match="the list is empty"):
        read_split_files({"train": tmp_path / "empty.txt"})
    (tmp_path / "a.txt").write_text("x\ny\n")
    (tmp_path / "b.txt").write_text("y\n")
    with pytest.raises(ConfigError, match="'y' is listed in both 'train' and 'val'"):
        read_split_files({"train": tmp_path / "a.txt", "val": tmp_path / "b.txt"})


def test_leaking_lists_detected():
    with pytest.raises(DatasetError, match="group 'seq1' .* has images in train, val"):
        check_groups_disjoint({"seq1_a": "train", "seq1_b": "val", "seq2_a": "val"},
                              r"^(seq\d)_")

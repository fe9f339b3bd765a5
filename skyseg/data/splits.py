"""Train / validation (/ test) splits by source image, by group, or from lists.

Overlapping patches of one image in two splits leak, and so do consecutive
frames of one video: the split is made over source images, or over groups
of them (``--group-pattern``, a regular expression on the file stem whose
first group, or whole match, is the group key), never over patches. The
assignment is seeded: the same stems, fractions and seed give the same
split, whatever order the stems come in.

Fractions split the *images* (not the groups): groups are shuffled with the
seed and each goes to the split where the middle of its run of images falls,
so unequal groups still give close to the requested shares; every split gets
at least one group.

Example:
    >>> split = assign_splits(["a", "b", "c", "d"], (0.75, 0.25), seed=0)
    >>> sorted(split.values())
    ['train', 'train', 'train', 'val']
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError, DatasetError
from skyseg.io import IMAGE_SUFFIXES

__all__ = [
    "SPLIT_NAMES",
    "parse_split",
    "group_keys",
    "assign_splits",
    "parse_split_file_args",
    "read_split_files",
    "check_groups_disjoint",
]

logger = logging.getLogger("skyseg")

#: The names of 2- and 3-way splits, in the order of ``--split`` fractions.
SPLIT_NAMES = ("train", "val", "test")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def parse_split(text) -> tuple[float, ...]:
    """``"0.75,0.25"`` or ``"0.6,0.2,0.2"`` -> fractions of (train, val[, test]).

    Also accepts a sequence of numbers.

    Raises:
        ConfigError: not 2 or 3 numbers, a fraction not above 0, or a sum
            other than 1 (within 1e-6).

    Example:
        >>> parse_split("0.6,0.2,0.2")
        (0.6, 0.2, 0.2)
    """
    original = text
    if isinstance(text, str):
        parts = [part.strip() for part in text.split(",")]
        try:
            values = tuple(float(part) for part in parts)
        except ValueError:
            raise ConfigError(
                f"--split {original!r}: expected comma-separated fractions such as 0.75,0.25 "
                "(train,val) or 0.6,0.2,0.2 (train,val,test)"
            ) from None
    else:
        try:
            values = tuple(float(value) for value in text)
        except (TypeError, ValueError):
            raise ConfigError(f"split {original!r}: expected 2 or 3 fractions such as "
                              "(0.75, 0.25)") from None
    if len(values) not in (2, 3):
        raise ConfigError(
            f"--split {original!r}: expected 2 (train,val) or 3 (train,val,test) fractions, "
            f"got {len(values)}"
        )
    if not all(np.isfinite(value) and value > 0 for value in values):
        raise ConfigError(f"--split {original!r}: every fraction must be above 0 and finite")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"--split {original!r}: fractions sum to {sum(values):g}, not 1; "
                          "e.g. 0.75,0.25")
    return values


def group_keys(stems: Iterable[str], pattern: str | None = None) -> dict[str, str]:
    """The group of each stem: the regex's first group, or whole match; the stem itself if None.

    The pattern is searched (``re.search``) in the stem.

    Raises:
        ConfigError: the pattern does not compile, or does not match some
            stem (the message names the first few).

    Example:
        >>> group_keys(["0001TP_006690", "0016E5_07959"], r"^([^_]+)_")
        {'0001TP_006690': '0001TP', '0016E5_07959': '0016E5'}
    """
    stems = list(stems)
    if pattern is None:
        return {stem: stem for stem in stems}
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--group-pattern {pattern!r} is not a valid regular expression "
                          f"({exc})") from exc
    keys: dict[str, str] = {}
    unmatched = []
    for stem in stems:
        match = regex.search(stem)
        key = None
        if match is not None:
            key = match.group(1) if regex.groups else match.group(0)
        if not key:
            unmatched.append(stem)
        else:
            keys[stem] = key
    if unmatched:
        shown = ", ".join(unmatched[:3]) + (f" and {len(unmatched) - 3} more"
                                            if len(unmatched) > 3 else "")
        raise ConfigError(
            f"--group-pattern {pattern!r} matches no group in {len(unmatched)} file name(s): "
            f"{shown}; change the pattern so that every image belongs to a group"
        )
    return keys


def assign_splits(stems: Iterable[str], fractions, *, seed: int = 0,
                  group_pattern: str | None = None) -> dict[str, str]:
    """Assign each stem to ``train``/``val``(/``test``), whole groups at a time.

    Args:
        stems: image stems (unique).
        fractions: ``(train, val)`` or ``(train, val, test)``, or a string for
            :func:`parse_split`.
        seed: shuffles the groups; same stems + fractions + seed -> same split.
        group_pattern: regular expression giving each stem's group (see
            :func:`group_keys`); None: each image is its own group.

    Returns:
        ``{stem: split name}``.

    Raises:
        ConfigError: bad fractions or pattern, duplicate stems, or fewer
            groups than splits.

    Example:
        >>> assign_splits(["s1_a", "s1_b", "s2_a"], (0.5, 0.5), group_pattern="^(s[0-9])")["s1_a"]
        'train'
    """
    fractions = parse_split(fractions)
    stems = list(stems)
    if len(set(stems)) != len(stems):
        raise ConfigError("assign_splits: image stems must be unique")
    names = SPLIT_NAMES[:len(fractions)]
    keys = group_keys(stems, group_pattern)
    members: dict[str, list[str]] = {}
    for stem in sorted(stems):
        members.setdefault(keys[stem], []).append(stem)
    groups = sorted(members)
    what = "groups" if group_pattern else "images"
    if len(groups) < len(names):
        raise ConfigError(
            f"a {len(names)}-way split needs at least {len(names)} {what}, got {len(groups)}; "
            "add images, use fewer splits" + (" or a finer --group-pattern" if group_pattern
                                              else "")
        )
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    bounds = np.cumsum(fractions)
    total = len(stems)
    chosen: dict[str, int] = {}
    done = 0
    for group in order:
        size = len(members[group])
        middle = (done + size / 2) / total
        chosen[group] = min(int(np.searchsorted(bounds, middle, side="right")), len(names) - 1)
        done += size
    # Tiny inputs can leave a split empty: move a group from the split with
    # the most groups, taking the last one the shuffle gave it.
    for index in range(len(names)):
        if index in chosen.values():
            continue
        counts = {i: sum(1 for g in order if chosen[g] == i) for i in range(len(names))}
        donor = max(counts, key=lambda i: (counts[i], -i))
        moved = [g for g in order if chosen[g] == donor][-1]
        chosen[moved] = index
    return {stem: names[chosen[keys[stem]]] for stem in stems}


def parse_split_file_args(items: Iterable[str]) -> dict[str, Path]:
    """``["train=a.txt", "val=b.txt"]`` -> ``{"train": Path("a.txt"), ...}``.

    Raises:
        ConfigError: an item without ``=``, a bad or repeated split name.

    Example:
        >>> parse_split_file_args(["train=lists/train.txt"])
        {'train': PosixPath('lists/train.txt')}
    """
    files: dict[str, Path] = {}
    for item in items:
        name, sep, path = str(item).partition("=")
        name = name.strip()
        if not sep or not path.strip():
            raise ConfigError(f"--split-file {item!r}: expected NAME=FILE, e.g. "
                              "--split-file train=train.txt")
        if not _NAME.match(name):
            raise ConfigError(f"--split-file {item!r}: split name {name!r} must be letters, "
                              "digits, '_' or '-' (it becomes the folder X_<name>/<name>)")
        if name in files:
            raise ConfigError(f"--split-file: split {name!r} is given twice")
        files[name] = Path(path.strip())
    return files


def _stem_of(line: str) -> str:
    name = line.replace("\\", "/").rsplit("/", 1)[-1]
    root, suffix = os.path.splitext(name)
    return root if suffix.lower() in IMAGE_SUFFIXES else name


def read_split_files(files: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """Read split lists: one image stem (or file name) per line.

    Blank lines and lines starting with ``#`` are skipped; folders and image
    extensions are stripped (``images/a.jpg`` -> ``a``).

    Args:
        files: ``{split name: list file}``.

    Returns:
        ``{stem: split name}``.

    Raises:
        ConfigError: a list file is missing or unreadable, is empty, or a
            stem appears in two lists.

    Example:
        >>> read_split_files({"train": "train.txt", "val": "val.txt"})  # doctest: +SKIP
        {'0001TP_006690': 'train', ...}
    """
    if not files:
        raise ConfigError("no split files given; pass --split-file NAME=FILE at least twice")
    assignment: dict[str, str] = {}
    for name, path in files.items():
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"--split-file {name}={path}: file not found; check the path") \
                from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--split-file {name}={path}: cannot read it ({exc})") from exc
        stems = [_stem_of(line.strip()) for line in text.splitlines()
                 if line.strip() and not line.strip().startswith("#")]
        if not stems:
            raise ConfigError(f"--split-file {name}={path}: the list is empty; put one image "
                              "name per line")
        for stem in stems:
            previous = assignment.get(stem)
            if previous is not None and previous != name:
                raise ConfigError(
                    f"--split-file: image {stem!r} is listed in both {previous!r} and {name!r}; "
                    "an image must be in one split only"
                )
            assignment[stem] = name
    return assignment


def check_groups_disjoint(assignment: Mapping[str, str], pattern: str) -> None:
    """Refuse a split in which one group (by ``pattern``) has images in two splits.

    Raises:
        DatasetError: names the first group found in two splits.

    Example:
        >>> check_groups_disjoint({"s1_a": "train", "s2_a": "val"}, "^(s[0-9])")
    """
    keys = group_keys(assignment, pattern)
    seen: dict[str, set[str]] = {}
    for stem in sorted(assignment):
        seen.setdefault(keys[stem], set()).add(assignment[stem])
    for key in sorted(seen):
        if len(seen[key]) > 1:
            raise DatasetError(
                f"group {key!r} (by --group-pattern {pattern!r}) has images in "
                f"{', '.join(sorted(seen[key]))}: the split leaks; move the whole group into "
                "one split list"
            )

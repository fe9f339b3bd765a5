"""Build the patch dataset the trainer reads from labelled images.

``skyseg build-dataset --coco FILE --images DIR --out DATA`` turns every
labelled image into square patches covering all its pixels and writes::

    DATA/X_<split>/<split>/<id>.tif   preprocessed image patch, float16 (or float32), (P, P, 3)
    DATA/Y_<split>/<split>/<id>.png   mask patch, uint8 (P, P): 0 not sky, 1 sky, 255 padding
    DATA/manifest.csv                 id, split, source, row, col, size, valid size, sky fraction
    DATA/dataset.json                 mode, patch_size, stride, dtype, seed, preprocessing,
                                      splits (patches per split), stats, sources, skipped
    DATA/.build/                      plan and per-image "done" records (resume state)

Images are processed one at a time (read, sanitise and transform in row
chunks, rasterise the mask, cut patches one patch row at a time, write,
free), so an 8192x4096 EXR needs about its own size in memory (0.4 GB) plus
TensorFlow. Images smaller than a patch are padded (reflected image, mask
255): padding is excluded from training through the mask's ignore value.

Determinism and resume: every image's patch grid is planned from its header
first, and the images, sorted by split then stem, get consecutive patch id
ranges. Each image writes only its own ids, through temp-and-rename writers,
and is marked done (``.build/done/<n>.json``) only after all its files are
in place. A build started again with the same inputs and settings removes
temporary files and the files of unfinished images, redoes those and skips
the rest; with any number of ``--workers`` the result is byte-identical to an
uninterrupted one-worker build.

Bad inputs (damaged or unreadable images, images without labels, labelled
images not on disk) are skipped and listed at the end (exit status 1); the
rest is built.

Example:
    >>> lists = {"train": "train.txt", "val": "val.txt"}
    >>> result = build_dataset("result.json", "images", "data", mode="ldr",
    ...                        split_files=lists)  # doctest: +SKIP
    >>> result.splits  # doctest: +SKIP
    {'train': 367, 'val': 101}
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import dataclasses
import functools
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from skyseg.data.patches import (
    IGNORE,
    check_patch_options,
    extract_patches,
    import_tensorflow,
    patch_grid,
)
from skyseg.data.shards import describe, parse_shard, shard_range
from skyseg.data.splits import (
    SPLIT_NAMES,
    assign_splits,
    check_groups_disjoint,
    parse_split,
    parse_split_file_args,
    read_split_files,
)
from skyseg.errors import ConfigError, DatasetError, SkysegError
from skyseg.image.preprocess import (
    Preprocessing,
    ldr_to_radiance,
    rescale_image,
    rescale_mask,
    scaled_size,
)
from skyseg.io import (
    DEFAULT_MAX_PIXELS,
    add_max_pixels_argument,
    atomic_output,
    check_max_pixels,
    find_images,
    read_image,
    read_image_info,
    refuse_too_large,
    write_bytes,
    write_png,
    write_text,
    write_tiff,
)
from skyseg.io.write import remove_temporaries
from skyseg.labels.annotations import CategoryOptions
from skyseg.labels.sky_gaps import ignore_sky_gaps
from skyseg.log import BatchReport, for_each, progress
from skyseg.options import add_options, from_args, option

__all__ = [
    "build_dataset",
    "DatasetOptions",
    "clip_preprocessing",
    "check_exposure_key",
    "report_dataset",
    "settings_like",
    "BuildResult",
    "DEFAULT_PATCH",
    "QUANTILES",
    "CLI_HELP",
    "add_arguments",
    "run",
]

logger = logging.getLogger("skyseg")

CLI_HELP = "cut labelled images into the train/val patch dataset (TIFF + PNG patches)"

#: (patch size, stride) by mode, as in the original pipeline.
DEFAULT_PATCH = {"hdr": (256, 100), "ldr": (512, 512)}
DTYPES = ("float16", "float32")
COMPRESSIONS = ("none", "zlib", "zstd", "lzw")
#: Percentiles of the preprocessed values reported in dataset.json.
QUANTILES = (0.25, 0.5, 25.0, 50.0, 75.0, 99.5)
#: Values sampled per image for the quantiles (exact quantiles of 8K images
#: would hold every value in memory).
SAMPLE_PER_IMAGE = 20000
FORMAT_VERSION = 1
STATE_DIR = ".build"
#: Rows preprocessed at a time: bounds the temporaries of an 8K image.
_CHUNK_ROWS = 256
_FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class _Item:
    """One planned image: where it goes and which patch ids it owns."""

    index: int
    stem: str
    path: str
    split: str
    height: int
    width: int
    first_id: int
    count: int


@dataclass(frozen=True)
class _Settings:
    """What a worker needs to build one image (picklable)."""

    out_dir: str
    coco: str
    sky_categories: tuple[str, ...]
    non_sky_categories: tuple[str, ...]
    mode: str
    patch_size: int
    stride: int
    dtype: str
    compression: str | None
    seed: int
    id_digits: int
    preprocessing: dict
    ignore_sky_gaps: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    convert_ldr: bool = False


@dataclass
class BuildResult:
    """What :func:`build_dataset` did.

    Attributes:
        out_dir: the dataset folder.
        splits: patches per split.
        sky_fraction: share of sky among the labelled (non-padding) patch
            pixels, per split.
        report: built and skipped images (with the reasons).
        unassigned: labelled images in no ``--split-file`` list (not built).
    """

    out_dir: Path
    splits: dict[str, int]
    sky_fraction: dict[str, float]
    report: BatchReport
    unassigned: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every image was built, 1 when some were skipped."""
        return self.report.exit_code


# --------------------------------------------------------------------------- labels (the seam)

@functools.lru_cache(maxsize=4)
def _load_labels(coco: str, sky_categories: tuple, non_sky_categories: tuple):
    """The COCO labels, loaded once per process (workers load their own copy)."""
    from skyseg.labels.annotations import load_coco

    return load_coco(coco, sky_categories=sky_categories, non_sky_categories=non_sky_categories)


def _match(labels, images_dir: Path, mode: str | None):
    from skyseg.labels.annotations import match_images

    return match_images(labels, images_dir, mode=mode)


def _has_annotations(labels, stem: str) -> bool:
    entry = labels.entry(stem)
    annotations = getattr(entry, "annotations", None)
    return annotations is None or len(annotations) > 0


# --------------------------------------------------------------------------- options

def _check_options(dtype, compression, workers, mode, preprocessing, seed):
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    compression = None if compression in (None, "none") else compression
    if compression is not None and compression not in COMPRESSIONS:
        raise ConfigError(f"--compression must be one of {', '.join(COMPRESSIONS)}, "
                          f"got {compression!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"--workers must be a whole number of at least 1, got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"--seed must be a whole number of at least 0, got {seed!r}")
    if mode not in (None, "hdr", "ldr"):
        raise ConfigError(f"--mode must be 'hdr' or 'ldr' (or left out to detect it), "
                          f"got {mode!r}")
    if preprocessing is not None:
        if not isinstance(preprocessing, Preprocessing):
            preprocessing = Preprocessing.from_dict(dict(preprocessing))
        if mode is not None and preprocessing.mode != mode:
            raise ConfigError(f"--mode {mode} contradicts the preprocessing's mode "
                              f"{preprocessing.mode!r}; give one of them")
    return compression, preprocessing


def settings_like(run: str | os.PathLike) -> dict:
    """The dataset settings a trained run was built with, to build a dataset that fits it.

    Args:
        run: a run folder of ``skyseg train``, or a model file with its
            ``preprocessing.json`` beside it; ``"default"``: the shipped model.

    Returns:
        ``{"preprocessing": Preprocessing, "patch_size": int or None,
        "stride": int or None}``: the run's ``preprocessing.json`` (mode,
        log transform, clip, scale), its ``config.json`` patch size, and the
        stride of the dataset it was trained on (its ``dataset.json``, when
        that folder is still there).

    Raises:
        ConfigError: no such run, or no ``preprocessing.json`` in it.

    Example:
        >>> settings_like("runs/resnet34")["preprocessing"].scale  # doctest: +SKIP
        0.25
    """
    from skyseg.io.run_folder import PREPROCESSING_FILE, read_run_config, resolve_model_path

    run = resolve_model_path(run)  # "default": the shipped model
    folder = run if run.is_dir() else run.parent
    if not run.exists():
        raise ConfigError(f"--like {run}: no such run folder or model file; pass the --out of "
                          "skyseg train")
    if not (folder / PREPROCESSING_FILE).is_file():
        raise ConfigError(f"--like {run}: no {PREPROCESSING_FILE} in {folder}; pass a run folder "
                          "of skyseg train (or give --mode/--scale/--patch-size yourself)")
    preprocessing = Preprocessing.load(folder / PREPROCESSING_FILE)
    config = read_run_config(folder, what=f"--like {run}: ")
    patch_size = config.get("patch_size") if isinstance(config.get("patch_size"), int) else None
    stride = None
    data = config.get("data")
    if isinstance(data, str) and (Path(data) / "dataset.json").is_file():
        try:
            built = json.loads((Path(data) / "dataset.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            built = {}
        if built.get("patch_size") == patch_size and isinstance(built.get("stride"), int):
            stride = built["stride"]
    return {"preprocessing": preprocessing, "patch_size": patch_size, "stride": stride}


def _apply_like(like, mode, preprocessing, patch_size, stride, scale):
    """Fill the options ``--like`` gives; explicit ones that contradict it are errors."""
    settings = settings_like(like)
    theirs = settings["preprocessing"]
    if mode is not None and mode != theirs.mode:
        raise ConfigError(f"--mode {mode} contradicts --like {like}, trained in {theirs.mode} "
                          "mode; leave --mode out")
    if scale is not None and float(scale) != theirs.scale:
        raise ConfigError(f"--scale {scale:g} contradicts --like {like}, trained at scale "
                          f"{theirs.scale:g}; leave --scale out")
    if preprocessing is not None:
        given = (preprocessing if isinstance(preprocessing, Preprocessing)
                 else Preprocessing.from_dict(dict(preprocessing)))
        if given.to_dict() != theirs.to_dict():
            raise ConfigError(f"the preprocessing given contradicts --like {like}'s; leave "
                              "--clip-max (and the preprocessing) out")
    if patch_size is None:
        patch_size = settings["patch_size"]
        if stride is None:
            stride = settings["stride"]
    logger.info("settings like %s: %s mode, scale %g, clip %s, exposure key %s, patches of %s "
                "px, stride %s", like, theirs.mode, theirs.scale, theirs.clip_max,
                theirs.exposure_key,
                patch_size or "default", stride or "default")
    return theirs.mode, theirs, patch_size, stride, None


def _patch_options(mode: str, patch_size, stride) -> tuple[int, int]:
    default_size, default_stride = DEFAULT_PATCH[mode]
    if patch_size is None:
        patch_size = default_size
        stride = default_stride if stride is None else stride
    elif stride is None:
        # Keep the mode's overlap: 256/100 for HDR scales to 128/50; LDR does not overlap.
        stride = max(1, round(patch_size * default_stride / default_size))
    return check_patch_options(patch_size, stride)


# --------------------------------------------------------------------------- planning

def _split_order(names) -> list[str]:
    names = list(dict.fromkeys(names))
    known = [name for name in SPLIT_NAMES if name in names]
    return known + [name for name in names if name not in known]


def _display(stems: Sequence[str], limit: int = 5) -> str:
    stems = list(stems)
    return ", ".join(stems[:limit]) + (f" and {len(stems) - limit} more"
                                       if len(stems) > limit else "")


def _differing_keys(one: dict, other: dict) -> list[str]:
    """Sorted keys whose values differ between two build plans (missing counts as None)."""
    return sorted(key for key in set(one) | set(other) if one.get(key) != other.get(key))


def _require_same_plan(plan_path: Path, plan: dict, *, unreadable: tuple[str, str],
                       differs: tuple[str, str]) -> None:
    """Refuse a build plan saved at ``plan_path`` that is not ``plan``.

    Raises:
        DatasetError: ``"<unreadable[0]> (<the error>); <unreadable[1]>"`` when the
            saved plan cannot be read, ``"<differs[0]> (differs in <keys>);
            <differs[1]>"`` when it differs.
    """
    try:
        saved = json.loads(plan_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{unreadable[0]} ({exc}); {unreadable[1]}") from exc
    if saved != plan:
        differing = _differing_keys(saved, plan) or sorted(set(saved) ^ set(plan))
        raise DatasetError(f"{differs[0]} (differs in {', '.join(differing)}); {differs[1]}")


def _state_files(out_dir: Path) -> tuple[Path, Path]:
    state = out_dir / STATE_DIR
    return state / "plan.json", state / "done"


def _patch_paths(out_dir: Path, split: str, name: str) -> tuple[Path, Path]:
    return (out_dir / f"X_{split}" / split / f"{name}.tif",
            out_dir / f"Y_{split}" / split / f"{name}.png")


def _item_names(item: _Item, digits: int) -> list[str]:
    return [f"{pid:0{digits}d}" for pid in range(item.first_id, item.first_id + item.count)]


def _remove_item_files(out_dir: Path, item: _Item, digits: int) -> int:
    removed = 0
    for name in _item_names(item, digits):
        for path in _patch_paths(out_dir, item.split, name):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _remove_temporaries(out_dir: Path) -> int:
    """Delete the temporary files a killed build leaves (they contain ``.tmp``)."""
    folders = [out_dir, out_dir / STATE_DIR, out_dir / STATE_DIR / "done"]
    for child in out_dir.glob("[XY]_*"):
        if child.is_dir():
            folders.extend(sub for sub in child.iterdir() if sub.is_dir())
    return len(remove_temporaries(folders))


def _check_out_dir(out_dir: Path, plan: dict) -> None:
    """Refuse a folder that holds something other than this very build."""
    plan_path, _ = _state_files(out_dir)
    if plan_path.is_file():
        _require_same_plan(
            plan_path, plan,
            unreadable=(f"{plan_path}: unreadable build state",
                        f"delete {out_dir} or choose another --out"),
            differs=(f"{out_dir}: holds a dataset built with other settings or inputs",
                     "choose another --out folder or delete this one to rebuild"))
        return
    # A build killed before its plan was written leaves at most an empty state folder.
    leftovers = [child.name for child in out_dir.iterdir() if child.name != STATE_DIR] \
        if out_dir.is_dir() else []
    if leftovers:
        raise DatasetError(
            f"{out_dir}: folder is not empty ({_display(sorted(leftovers), 3)}) and holds no "
            "skyseg build state; choose an empty or new --out folder"
        )


# --------------------------------------------------------------------------- one image

def _preprocess_in_place(image: np.ndarray, prep: Preprocessing) -> dict:
    """Turn ``image`` (as read) into network input in row chunks; sum the sanitiser's counts.

    ``read_image`` has already made every value finite over the whole image,
    so chunk-wise sanitising (negatives -> 0) gives the same result as one
    call on the whole image, without its full-size temporaries.
    """
    totals: dict[str, int] = {}
    gain = prep.image_gain(image)
    for start in range(0, image.shape[0], _CHUNK_ROWS):
        chunk = image[start:start + _CHUNK_ROWS]
        out, counts = prep.apply_with_counts(chunk, gain)
        chunk[...] = out
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + int(value)
    return totals


def _sample_values(image: np.ndarray, seed: int, index: int) -> np.ndarray:
    flat = image.reshape(-1)
    if flat.size <= SAMPLE_PER_IMAGE:
        return flat.astype(np.float32)
    rng = np.random.default_rng([seed, index])
    return flat[np.sort(rng.integers(0, flat.size, SAMPLE_PER_IMAGE))].astype(np.float32)


def _build_image(item: _Item, settings: _Settings) -> dict:
    """Read, preprocess, label and cut one image; write its patches, then its done record.

    Raises:
        SkysegError: the image cannot be read, does not match its header or
            mode, or its labels cannot be rasterised. Its files are removed.
    """
    out_dir = Path(settings.out_dir)
    try:
        return _write_image(item, settings, out_dir)
    except SkysegError:
        _remove_item_files(out_dir, item, settings.id_digits)
        raise
    finally:
        _release_memory()


def _release_memory() -> None:
    """Hand the freed heap of the last image back to the system before the next one.

    glibc keeps freed small blocks in its arenas; without the trim, image
    ``n + 1`` of a long build starts about 50 MB higher (measured on 8K EXRs).
    The trim takes well under a millisecond; ``gc.collect()`` would take
    0.2 s with TensorFlow loaded and frees nothing here (no cycles hold arrays).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _write_image(item: _Item, settings: _Settings, out_dir: Path) -> dict:
    path = Path(item.path)
    # TensorFlow first: image n of a long build reads with TensorFlow loaded,
    # so a one-image build then shows the same peak memory.
    import_tensorflow()
    image, info = read_image(path, return_info=True, max_pixels=settings.max_pixels)
    if (info.height, info.width) != (item.height, item.width):
        raise DatasetError(f"{path}: header says {item.width}x{item.height} but the pixels are "
                           f"{info.width}x{info.height}; the file is damaged")
    if settings.convert_ldr and settings.mode == "hdr" and not info.is_hdr:
        image = ldr_to_radiance(image)  # sRGB display values -> linear 0..1
    elif info.is_hdr != (settings.mode == "hdr"):
        raise DatasetError(f"{path}: is {'an HDR' if info.is_hdr else 'an LDR'} image but the "
                           f"dataset is built in {settings.mode.upper()} mode; pass --mode "
                           f"{'hdr' if info.is_hdr else 'ldr'} or remove it")
    prep = Preprocessing.from_dict(settings.preprocessing)
    height, width = scaled_size(item.height, item.width, prep.scale)
    if prep.scale != 1.0:
        image = rescale_image(image, (height, width))  # radiance averaged, before the log
    labels = _load_labels(settings.coco, settings.sky_categories, settings.non_sky_categories)
    mask = labels.mask(item.stem, item.height, item.width)
    if prep.scale != 1.0:
        mask = rescale_mask(mask, (height, width))
    gap_pixels = 0
    if settings.ignore_sky_gaps:  # on the pixel values as read, before the log transform
        mask, gap_pixels = ignore_sky_gaps(image, mask)
    counts = _preprocess_in_place(image, prep)
    if settings.dtype == "float16":
        # max and -min instead of abs(): no full-size temporary for an 8K image.
        peak = max(float(image.max()), -float(image.min())) if image.size else 0.0
        if peak > _FLOAT16_MAX:
            raise DatasetError(f"{path}: preprocessed values reach {peak:g}, beyond float16; "
                               "use --dtype float32 or a preprocessing with a smaller scale")
    sample = _sample_values(image, settings.seed, item.index)
    image_sky = int(np.count_nonzero(mask == 1))

    grid = patch_grid(height, width, settings.patch_size, settings.stride)
    if len(grid) != item.count:
        raise DatasetError(f"{path}: planned {item.count} patches but the grid has {len(grid)}")
    dtype = np.dtype(settings.dtype)
    names = iter(_item_names(item, settings.id_digits))
    rows = []
    for band in extract_patches(image, grid, mask=mask, dtype=dtype):
        for j, col in enumerate(band.cols):
            name = next(names)
            x_path, y_path = _patch_paths(out_dir, item.split, name)
            write_tiff(x_path, band.images[j], compression=settings.compression)
            # Level 1: three times faster than 6 on these mostly flat masks, same pixels.
            write_png(y_path, band.masks[j], level=1)
            valid_h, valid_w = grid.valid_size(band.row, col)
            sky = int(np.count_nonzero(band.masks[j] == 1))
            rows.append([name, band.row, col, valid_h, valid_w, sky])
    del image, mask

    record = {
        "index": item.index, "stem": item.stem, "source": path.name, "split": item.split,
        "height": item.height, "width": item.width, "first_id": item.first_id,
        "count": item.count, "nonfinite": max(int(info.nonfinite), 0),
        "sanitised": counts, "sky_pixels": image_sky, "rows": rows,
    }
    if settings.ignore_sky_gaps:
        record["sky_gap_pixels"] = gap_pixels
    _, done_dir = _state_files(out_dir)
    buffer = io.BytesIO()
    np.save(buffer, sample, allow_pickle=False)
    write_bytes(done_dir / f"{item.index:06d}.npy", buffer.getvalue())
    # The done record goes last: it is the mark that every file above is in place.
    write_text(done_dir / f"{item.index:06d}.json", json.dumps(record, sort_keys=True) + "\n")
    return record


def _read_done(out_dir: Path, item: _Item, digits: int) -> dict | None:
    """The done record of ``item`` when it and all its files exist, else None."""
    _, done_dir = _state_files(out_dir)
    record_path = done_dir / f"{item.index:06d}.json"
    if not record_path.is_file() or not (done_dir / f"{item.index:06d}.npy").is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("first_id") != item.first_id or record.get("count") != item.count:
        return None
    for name in _item_names(item, digits):
        if not all(path.is_file() for path in _patch_paths(out_dir, item.split, name)):
            return None
    return record


# --------------------------------------------------------------------------- summary

@dataclass
class _Tally:
    """What the finished images add up to, per split (and per source image)."""

    splits: list[str]
    patches: dict[str, int]
    sky: dict[str, int]
    valid: dict[str, int]
    padding: dict[str, int]
    image_sky: dict[str, int]
    image_pixels: dict[str, int]
    samples: dict[str, list[np.ndarray]]
    lines: list[list]
    nonfinite: dict[str, int] = field(default_factory=dict)
    negative: dict[str, int] = field(default_factory=dict)
    images: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def empty(cls, splits: list[str]) -> _Tally:
        def zeros():
            return {name: 0 for name in splits}

        header = ["id", "split", "source", "row", "col", "size", "valid_height", "valid_width",
                  "sky_fraction"]
        return cls(splits, zeros(), zeros(), zeros(), zeros(), zeros(), zeros(),
                   {name: [] for name in splits}, [header])

    def add(self, item: _Item, record: dict, size: int, scale: float, done_dir: Path) -> None:
        """Count one finished image: its patches (manifest lines), sky and value sample."""
        split = item.split
        for name, row, col, valid_h, valid_w, sky_count in record["rows"]:
            pixels = valid_h * valid_w
            self.lines.append([name, split, record["source"], row, col, size, valid_h, valid_w,
                               f"{sky_count / pixels:.6f}"])
            self.patches[split] += 1
            self.sky[split] += sky_count
            self.valid[split] += pixels
            self.padding[split] += size * size - pixels
        self.image_sky[split] += record["sky_pixels"]
        self.image_pixels[split] += int(np.prod(scaled_size(item.height, item.width, scale)))
        self.samples[split].append(np.load(done_dir / f"{item.index:06d}.npy",
                                           allow_pickle=False))
        self.nonfinite[record["source"]] = record["nonfinite"]
        self.negative[record["source"]] = record["sanitised"].get("negative", 0)
        image = {"stem": item.stem, "split": split, "height": item.height, "width": item.width,
                 "patches": item.count, "first_id": item.first_id}
        if "sky_gap_pixels" in record:
            image["sky_gap_pixels"] = record["sky_gap_pixels"]
        self.images[record["source"]] = image

    def stats(self, size: int) -> dict:
        """The ``stats`` of ``dataset.json``."""
        splits, patches = self.splits, self.patches
        return {
            "patches": patches,
            "sky_fraction": _ratios(self.sky, self.valid),
            "sky_fraction_images": _ratios(self.image_sky, self.image_pixels),
            "padding_fraction": {name: (round(self.padding[name] / (patches[name] * size * size),
                                              6) if patches[name] else None)
                                 for name in splits},
            "quantiles_percent": {**{name: _quantiles(self.samples[name]) for name in splits},
                                  "all": _quantiles([v for name in splits
                                                     for v in self.samples[name]])},
            "quantile_sample_per_image": SAMPLE_PER_IMAGE,
            "nonfinite_repaired": self.nonfinite,
            "negative_clamped": self.negative,
        }


def _summarise(out_dir: Path, plan: dict, items: list[_Item], records: dict[int, dict],
               report: BatchReport, unassigned: list[str],
               without_sky: list[str]) -> tuple[dict, dict]:
    """Write ``manifest.csv`` and ``dataset.json``; the patches and sky fraction per split."""
    _, done_dir = _state_files(out_dir)
    size = plan["patch_size"]
    scale = float(plan["preprocessing"].get("scale", 1.0))
    tally = _Tally.empty(_split_order(plan["split_names"]))
    for item in items:
        if item.index in records:
            tally.add(item, records[item.index], size, scale, done_dir)
    stats = tally.stats(size)
    sources = {name: split for name, split in
               sorted((Path(item.path).name, item.split) for item in items
                      if item.index in records)}
    summary = {
        "format": FORMAT_VERSION,
        **{key: plan[key] for key in ("mode", "patch_size", "stride", "dtype", "compression",
                                      "seed", "id_digits", "preprocessing")},
        "mask_values": {"not_sky": 0, "sky": 1, "ignore": IGNORE},
        "ignore_sky_gaps": bool(plan.get("ignore_sky_gaps", False)),
        "convert_ldr": bool(plan.get("convert_ldr", False)),
        "split_method": plan["split_method"],
        "coco": plan["coco"],
        "images_dir": plan["images_dir"],
        "splits": tally.patches,
        "stats": stats,
        "sources": sources,
        "images": tally.images,
        "skipped": sorted(({"image": item, "error": message}
                           for item, message in report.failures), key=lambda d: d["image"]),
        "unassigned": sorted(unassigned),
        "without_sky_regions": sorted(without_sky),
    }
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(tally.lines)
    write_text(out_dir / "manifest.csv", buffer.getvalue())
    write_text(out_dir / "dataset.json", json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return tally.patches, stats["sky_fraction"]


def _quantiles(values: list[np.ndarray]) -> dict | None:
    """:data:`QUANTILES` (percent) of the pooled sample values, or None without any."""
    if not values:
        return None
    pooled = np.concatenate(values)
    return {f"{q:g}": round(float(v), 6) for q, v in zip(QUANTILES, np.percentile(
        pooled, QUANTILES), strict=True)}


def _ratios(numerators: dict, denominators: dict) -> dict:
    """Per split ``numerators / denominators`` rounded to 6 places (None over 0)."""
    return {name: (round(numerators[name] / denominators[name], 6) if denominators[name]
                   else None) for name in denominators}


# --------------------------------------------------------------------------- the stage

class _SplitFileTexts(argparse.Action):
    """``--split-file NAME=FILE``, repeatable, kept as the texts given: :func:`run` parses
    them, so a bad one is the stage's one-line error rather than argparse's usage."""

    def __init__(self, option_strings, dest, metavar="NAME=FILE", **settings):
        super().__init__(option_strings, dest, metavar=metavar, **settings)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values])


@dataclass
class DatasetOptions(CategoryOptions):
    """The options of ``skyseg build-dataset`` (and of :func:`build_dataset`).

    Attributes:
        mode: ``"hdr"`` (log transform) or ``"ldr"`` (/255); None: from the
            images (all HDR or all LDR).
        patch_size: patch side; default 256 (HDR) or 512 (LDR).
        stride: step between patches; default 100 (HDR, 256 patches), the
            patch size (LDR); with another HDR patch size, the same overlap.
        split: ``(train, val[, test])`` fractions or ``"0.75,0.25"``;
            default 0.75,0.25. Not with ``split_files``.
        split_files: ``{split name: file with one image stem per line}``.
        group_pattern: regex on the stem; images of one group (first group
            of the match, or the whole match) stay in one split. With
            ``split_files`` it checks the lists do not split a group.
        seed: seeds the split and the statistics' sampling.
        dtype: ``"float16"`` or ``"float32"`` image patches.
        compression: ``"none"`` (or None), ``"zlib"``, ``"zstd"`` or ``"lzw"`` (lossless TIFF).
        workers: images built in parallel processes (same bytes as one).
        clip_max: HDR: clip radiance above this before the log transform
            (not with ``like`` or ``preprocessing``).
        exposure_key: HDR: each (shrunk) image is multiplied so that its
            log-average luminance is this (e.g. 0.18) before the log transform
            (saved in the preprocessing, so predict does the same): the
            network sees radiance relative to the image's own exposure, which
            HDR files of different sources do not share. None: the given
            ``preprocessing``'s (default: absolute radiance); 0: absolute
            radiance.
        scale: shrink every image (and its mask) by this factor before
            cutting patches (0 < scale <= 1; None: the preprocessing's, 1).
            Saved in the preprocessing, so predict shrinks its input alike;
            patch rows and columns in the manifest are in shrunk pixels.
        like: a run folder (or model file) of ``skyseg train`` whose
            preprocessing (mode, scale, clip), patch size and stride to use
            (see :func:`settings_like`), so that the dataset fits that model
            for ``skyseg train --init``. An explicit ``patch_size``/``stride``
            still wins; a different ``mode``, ``scale`` or ``preprocessing``
            is an error.
        shard: ``(i, N)`` or ``"i/N"``: build only block ``i`` of ``N``
            (1-based) of the planned images (the plan and splits are those of
            the whole build); no manifest or statistics (see ``combine``).
        combine: shard folders (the ``out_dir`` of ``shard`` builds with the
            same inputs and settings) whose finished images are copied into
            ``out_dir``; what none finished is built here, then the manifest,
            statistics and splits are written as by one process.
        convert_ldr: with ``mode="hdr"``, LDR photos are built too, decoded
            from sRGB to linear radiance 0..1
            (:func:`~skyseg.image.preprocess.ldr_to_radiance`, what ``predict
            --convert`` does), so photos and panoramas can train one HDR model.
        ignore_sky_gaps: mark labelled-not-sky pixels that look like the sky
            beside them, in small or textured regions (sky between bare
            branches, which labellers call tree or sky), as ignore (255), so
            training learns neither convention (:mod:`skyseg.labels.sky_gaps`).
            Their count per image is in ``dataset.json``.
        max_pixels: images whose header claims more pixels are skipped and
            listed, before any is decoded (None: no limit).
        preprocessing: Python only: a
            :class:`~skyseg.image.preprocess.Preprocessing` (or its dict);
            default ``Preprocessing(mode)``.

    Example:
        >>> DatasetOptions(mode="ldr", split="0.6,0.2,0.2").dtype
        'float16'
    """

    mode: str | None = option(
        None, "hdr: log transform of radiance; ldr: /255 (default: from the images)",
        choices=("hdr", "ldr"))
    patch_size: int | None = option(None, "patch side in pixels (default: 256 HDR, 512 LDR)")
    stride: int | None = option(
        None, "step between patches (default: 100 for HDR 256 patches, the patch size for LDR)")
    split: str | tuple[float, ...] | None = option(
        None, "train,val[,test] fractions by source image, e.g. 0.75,0.25 or 0.6,0.2,0.2 "
        "(default 0.75,0.25)")
    split_files: dict[str, Path] | None = option(
        None, "split from lists: a file of image stems per split, e.g. --split-file "
        "train=train.txt --split-file val=val.txt", flag="--split-file", action=_SplitFileTexts)
    group_pattern: str | None = option(
        None, "keep images whose stems share this regex's first group (or whole match) in one "
        r"split, e.g. '^([^_]+)_' for a sequence prefix", metavar="REGEX")
    seed: int = option(0, "seed of the split and statistics")
    dtype: str = option("float16", "image patch type", choices=DTYPES)
    compression: str | None = option(
        "none", "lossless TIFF compression of the image patches", choices=COMPRESSIONS)
    workers: int = option(1, "images built in parallel processes (each loads TensorFlow)")
    clip_max: float | None = option(
        None, "HDR: clip radiance above this before the log transform")
    exposure_key: float | None = option(
        None, "HDR: bring each image's log-average luminance to this (e.g. 0.18) before the "
        "log transform, so the model sees radiance relative to the image's exposure; predict "
        "does the same (default: absolute radiance)", metavar="LUMINANCE")
    scale: float | None = option(
        None, "shrink images by this factor before cutting patches, e.g. 0.25 for 8K panoramas "
        "on a CPU (default 1: full resolution); predict applies the same")
    like: Path | None = option(
        None, "take the preprocessing (mode, scale, clip), patch size and stride from this "
        "training run, so the dataset fits it for skyseg train --init RUN", metavar="RUN")
    shard: str | tuple[int, int] | None = option(
        None, "job arrays: build only block I of N (1-based) of the planned images (splits are "
        "decided on all of them) into this --out; then --combine the shard folders",
        metavar="I/N", yaml=False)  # one job of an array: a command line, not a setting
    combine: tuple[Path, ...] | None = option(
        None, "gather the images built by --shard runs (same inputs and options) into --out, "
        "build what none finished, write the manifest and statistics", nargs="+", type=Path,
        metavar="SHARD_DIR", yaml=False)
    convert_ldr: bool = option(
        False, "with --mode hdr: take LDR photos too, decoded from sRGB to linear radiance "
        "(0..1), so photos and HDR panoramas train one HDR model")
    ignore_sky_gaps: bool = option(
        False, "leave sky-coloured not-sky pixels in small or textured regions next to sky (sky "
        "between bare branches, labelled tree by some, sky by others) out of training (mask "
        "value 255)")
    max_pixels: float | None = option(
        DEFAULT_MAX_PIXELS, "images whose header claims more pixels are skipped and listed "
        "(None: no limit)", cli=False)  # the CLI's --max-pixels is io's
    preprocessing: Preprocessing | dict | None = option(
        None, "the preprocessing (Python only)", cli=False, yaml=False)


def build_dataset(coco: str | os.PathLike, images_dir: str | os.PathLike,
                  out_dir: str | os.PathLike, options: DatasetOptions | None = None,
                  **overrides) -> BuildResult:
    """Cut the labelled images of ``images_dir`` into the patch dataset ``out_dir``.

    Args:
        coco: Label Studio COCO export (``result.json``).
        images_dir: folder with the images (EXR/HDR/TIFF for HDR, JPEG/PNG for LDR).
        out_dir: dataset folder (created; empty, or a build of the same inputs
            and settings to resume).
        options: a :class:`DatasetOptions` (each field is described there).
        overrides: fields of :class:`DatasetOptions` to change (``mode="ldr"``).

    Returns:
        a :class:`BuildResult`; ``result.exit_code`` is 1 when images were skipped.

    Raises:
        ConfigError: bad option values, no images to build, mixed HDR and LDR
            images without ``mode``.
        DatasetError: ``out_dir`` holds something else (another build's
            settings or unrelated files).
        AnnotationError: the COCO file is unusable.
        TypeError: an override that is not a field of :class:`DatasetOptions`.

    Example:
        >>> result = build_dataset("result.json", "panoramas", "data", mode="hdr",
        ...                        group_pattern=r"^([^_]+)_", workers=2)  # doctest: +SKIP
        >>> result.splits, result.exit_code  # doctest: +SKIP
        ({'train': 9720, 'val': 3240}, 0)
    """
    options, list_assignment = _checked(dataclasses.replace(options or DatasetOptions(),
                                                            **overrides))
    coco, images_dir, out_dir = Path(coco), Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise ConfigError(f"{images_dir}: images folder not found; check --images")
    report = BatchReport("build-dataset")
    labels = _load_labels(str(coco), options.sky_categories, options.non_sky_categories)
    candidates, without_sky = _labelled_images(labels, coco, images_dir, options.mode, report)
    # Splits are decided over the labelled images before any pixel is read,
    # so an unreadable file never moves the others between splits.
    splits_plan = _plan_splits(candidates, list_assignment, options.split_files, options.split,
                               seed=options.seed, group_pattern=options.group_pattern,
                               report=report, source=f"{images_dir} with {coco}")
    if options.convert_ldr and options.mode != "hdr":
        raise ConfigError("--convert-ldr builds LDR photos into an HDR dataset; pass --mode hdr "
                          "with it (or leave --convert-ldr out)")
    headers, mode = _read_headers(candidates, splits_plan.assignment, options.mode, images_dir,
                                  report, options.max_pixels, convert_ldr=options.convert_ldr)
    options = _settle_for_mode(options, mode, images_dir)
    items, digits = _plan_items(headers, splits_plan, options.preprocessing.scale,
                                options.patch_size, options.stride)
    plan = _plan_record(options, splits_plan, items, digits, coco, images_dir)
    stale = _prepare_out_dir(out_dir, plan)
    if options.combine:
        _gather_shards(options.combine, out_dir, plan, items, digits)
    mine = (set(shard_range(len(items), options.shard)) if options.shard is not None else None)
    records, pending = _resume(out_dir, items, digits, mine, report, stale)
    settings = _Settings(
        str(out_dir), str(coco), options.sky_categories, options.non_sky_categories, mode,
        options.patch_size, options.stride, options.dtype, options.compression,
        int(options.seed), digits, options.preprocessing.to_dict(),
        bool(options.ignore_sky_gaps), options.max_pixels, bool(options.convert_ldr))
    _build_pending(pending, settings, options.workers, records, report)
    if options.shard is not None:
        return _shard_result(out_dir, options.shard, items, mine, records, report,
                             splits_plan.unassigned)
    splits, sky_fraction = _summarise(out_dir, plan, items, records, report,
                                      splits_plan.unassigned, without_sky)
    report.log_summary()
    return BuildResult(out_dir, splits, sky_fraction, report, splits_plan.unassigned)


def _checked(options: DatasetOptions) -> tuple[DatasetOptions, dict | None]:
    """The options checked and made explicit before any file is read (``like``'s settings
    filled in, ``clip_max`` as a preprocessing, ``split`` as fractions, ``shard`` as
    ``(i, N)``); and the split of each listed image when ``split_files`` are given.

    Raises:
        ConfigError: a bad or contradictory option; a list file that cannot be read.
    """
    preprocessing, mode = options.preprocessing, options.mode
    if options.clip_max is not None:
        if preprocessing is not None:
            raise ConfigError("give either --clip-max or a preprocessing, not both")
        preprocessing = clip_preprocessing(options.clip_max, mode=mode, like=options.like)
    shard = parse_shard(options.shard)
    if shard is not None and options.combine:
        raise ConfigError("give either --shard (build one block) or --combine (gather the "
                          "blocks), not both")
    exposure_key = check_exposure_key(options.exposure_key)
    patch_size, stride, scale = options.patch_size, options.stride, options.scale
    if options.like is not None:
        if exposure_key is not None:
            raise ConfigError(f"--exposure-key comes from --like {options.like}; leave "
                              "--exposure-key out")
        mode, preprocessing, patch_size, stride, scale = _apply_like(
            options.like, mode, preprocessing, patch_size, stride, scale)
    compression, preprocessing = _check_options(options.dtype, options.compression,
                                                options.workers, mode, preprocessing,
                                                options.seed)
    if preprocessing is not None:
        mode = preprocessing.mode
    if patch_size is not None or stride is not None:
        # Early check of explicit values (the defaults depend on the mode).
        check_patch_options(patch_size if patch_size is not None else max(stride, 2),
                            stride if stride is not None else 1)
    split_files = options.split_files
    if split_files and options.split is not None:
        raise ConfigError("give either --split fractions or --split-file lists, not both")
    fractions = None if split_files else parse_split(
        options.split if options.split is not None else (0.75, 0.25))
    checked = dataclasses.replace(
        options, mode=mode, preprocessing=preprocessing, shard=shard, exposure_key=exposure_key,
        patch_size=patch_size, stride=stride, scale=scale, compression=compression,
        split=fractions, max_pixels=check_max_pixels(options.max_pixels), clip_max=None)
    return checked, (read_split_files(split_files) if split_files else None)


def _settle_for_mode(options: DatasetOptions, mode: str, images_dir: Path) -> DatasetOptions:
    """The options once the mode is known: patch size, stride and the whole preprocessing.

    Raises:
        ConfigError: ``exposure_key`` for LDR images; a bad patch size or stride.
    """
    patch_size, stride = _patch_options(mode, options.patch_size, options.stride)
    preprocessing = options.preprocessing or Preprocessing(mode=mode)
    if options.exposure_key is not None:
        if mode != "hdr":
            raise ConfigError(f"--exposure-key applies to HDR radiance; the images of "
                              f"{images_dir} are LDR (leave --exposure-key out)")
        preprocessing = dataclasses.replace(preprocessing,
                                            exposure_key=options.exposure_key or None)
    if options.scale is not None:
        preprocessing = dataclasses.replace(preprocessing, scale=options.scale)
    return dataclasses.replace(options, mode=mode, patch_size=patch_size, stride=stride,
                               preprocessing=preprocessing)


def _plan_record(options: DatasetOptions, splits_plan: _SplitPlan, items: list[_Item],
                 digits: int, coco: Path, images_dir: Path) -> dict:
    """The build plan saved in ``.build/plan.json``: a resumed build must match it."""
    plan = {
        "format": FORMAT_VERSION, "mode": options.mode, "patch_size": options.patch_size,
        "stride": options.stride, "dtype": options.dtype, "compression": options.compression,
        "seed": int(options.seed), "id_digits": digits,
        "preprocessing": options.preprocessing.to_dict(), "split_names": splits_plan.names,
        "split_method": splits_plan.method, "coco": str(coco.resolve()),
        "images_dir": str(images_dir.resolve()),
        "images": [asdict(item) | {"path": Path(item.path).name} for item in items],
    }
    if options.like is not None:
        plan["like"] = str(Path(options.like).resolve())
    if options.ignore_sky_gaps:  # absent when off: builds of earlier versions still resume
        plan["ignore_sky_gaps"] = True
    if options.convert_ldr:
        plan["convert_ldr"] = True
    return plan


def _build_pending(pending: list[_Item], settings: _Settings, workers: int,
                   records: dict[int, dict], report: BatchReport) -> None:
    """Build the images still to build; their done records go into ``records``."""
    logger.info("building %d image(s), %d patches of %d px (stride %d), %s mode, %s",
                len(pending), sum(item.count for item in pending), settings.patch_size,
                settings.stride, settings.mode, settings.dtype)
    for item, outcome in _run(pending, settings, workers):
        if isinstance(outcome, SkysegError):
            report.failed(Path(item.path).name, outcome)
        else:
            records[item.index] = outcome
            report.succeeded(item.path)


def _labelled_images(labels, coco: Path, images_dir: Path, mode: str | None,
                     report: BatchReport) -> tuple[list[tuple[Path, str]], list[str]]:
    """``[(path, stem)]`` of the labelled images found, and the stems without any region.

    Labels without an image, and images without labels, go into ``report``.
    """
    matched, missing = _match(labels, images_dir, mode)
    for stem in missing:
        report.failed(stem, f"{stem}: labelled in {coco} but no image of that name in "
                            f"{images_dir}; add the file or remove its labels")
    matched_paths = {Path(path).resolve() for path, _ in matched}
    known = {stem.casefold() for stem in labels.stems()}
    for path in find_images(images_dir):
        if path.stem.casefold() not in known and path.resolve() not in matched_paths:
            report.failed(path.name, f"{path}: has no labels in {coco}; label it in Label Studio "
                                     "and export again, or move it out of --images")
    candidates = [(Path(path), stem) for path, stem in matched]
    # An exported image without any region was submitted empty in Label
    # Studio: it has no sky (CamVid has such frames); it is built, all 0.
    without_sky = sorted(stem for _, stem in candidates if not _has_annotations(labels, stem))
    if without_sky:
        logger.info("%d labelled image(s) have no sky or non-sky region and count as all "
                    "'not sky': %s", len(without_sky), _display(without_sky))
    return candidates, without_sky


@dataclass(frozen=True)
class _SplitPlan:
    """Which split each labelled image goes to, and how that was decided."""

    assignment: dict[str, str]
    names: list[str]
    method: dict
    unassigned: list[str] = field(default_factory=list)


def _plan_splits(candidates, list_assignment, split_files, fractions, *, seed, group_pattern,
                 report: BatchReport, source: str) -> _SplitPlan:
    """The splits from the ``--split-file`` lists, else drawn from ``fractions``."""
    if list_assignment is not None:
        assignment = {stem: list_assignment[stem] for _, stem in candidates
                      if stem in list_assignment}
        unassigned = sorted(stem for _, stem in candidates if stem not in list_assignment)
        absent = sorted(set(list_assignment) - {stem for _, stem in candidates})
        if absent:
            logger.warning("%d image(s) in the --split-file lists are not among the labelled "
                           "images found: %s", len(absent), _display(absent))
        if unassigned:
            logger.warning("%d labelled image(s) are in no --split-file list and are left out: "
                           "%s", len(unassigned), _display(unassigned))
        if group_pattern is not None:
            check_groups_disjoint(assignment, group_pattern)
        return _SplitPlan(assignment, _split_order(split_files),
                          {"files": {name: str(Path(path).resolve())
                                     for name, path in split_files.items()},
                           "group_pattern": group_pattern}, unassigned)
    if not candidates:
        raise ConfigError(f"no labelled images to build from {source}; "
                          f"{len(report.failures)} problem(s): "
                          f"{_display([m for _, m in report.failures], 2)}")
    assignment = assign_splits([stem for _, stem in candidates], fractions, seed=seed,
                               group_pattern=group_pattern)
    return _SplitPlan(assignment, list(SPLIT_NAMES[:len(fractions)]),
                      {"fractions": list(fractions), "group_pattern": group_pattern})


def _read_headers(candidates, assignment: dict, mode: str | None, images_dir: Path,
                  report: BatchReport, max_pixels: int | None, *,
                  convert_ldr: bool = False) -> tuple[list, str]:
    """``[(path, stem, ImageInfo)]`` of the assigned images of the mode, and the mode
    (from the images when None); unreadable, too large (``max_pixels``) or other-mode
    images go into ``report``."""
    def read_header(candidate: tuple[Path, str]) -> tuple[Path, str, object]:
        path, stem = candidate
        info = read_image_info(path)
        refuse_too_large(path, info.height, info.width, max_pixels)
        return path, stem, info

    # Success is recorded once the image is built.
    headers = for_each([(p, s) for p, s in candidates if s in assignment], read_header, report,
                       desc="headers", unit="image", name=lambda candidate: candidate[0].name,
                       record_success=False)
    if not headers:
        raise ConfigError(f"no readable labelled images to build in {images_dir}; "
                          f"{_display([m for _, m in report.failures], 2)}")
    if mode is None:
        kinds = {info.is_hdr for _, _, info in headers}
        if len(kinds) > 1:
            hdr = sorted(p.name for p, _, info in headers if info.is_hdr)
            ldr = sorted(p.name for p, _, info in headers if not info.is_hdr)
            raise ConfigError(f"{images_dir}: mixes HDR ({_display(hdr, 2)}) and LDR "
                              f"({_display(ldr, 2)}) images; pass --mode hdr or --mode ldr")
        mode = "hdr" if kinds.pop() else "ldr"
    kept = []
    for path, stem, info in headers:
        if info.is_hdr == (mode == "hdr") or (convert_ldr and mode == "hdr"):
            kept.append((path, stem, info))
        else:
            report.failed(path.name, f"{path}: is {'an HDR' if info.is_hdr else 'an LDR'} image "
                                     f"but the dataset is built in {mode.upper()} mode; give "
                                     f"the {mode.upper()} original of {stem!r} or another --mode")
    if not kept:
        raise ConfigError(f"no {mode.upper()} images to build in {images_dir}; check --mode")
    return kept, mode


def _plan_items(headers, splits: _SplitPlan, scale: float, patch_size: int,
                stride: int) -> tuple[list[_Item], int]:
    """The images in split then name order, each with its first patch id; the id width."""
    order = {name: i for i, name in enumerate(splits.names)}
    planned = sorted(headers, key=lambda h: (order[splits.assignment[h[1]]], h[1]))
    items: list[_Item] = []
    next_id = 0
    for index, (path, stem, info) in enumerate(planned):
        count = len(patch_grid(*scaled_size(info.height, info.width, scale),
                               patch_size, stride))
        items.append(_Item(index, stem, str(path), splits.assignment[stem], info.height,
                           info.width, next_id, count))
        next_id += count
    return items, max(6, len(str(max(next_id - 1, 0))))


def _prepare_out_dir(out_dir: Path, plan: dict) -> int:
    """Check ``out_dir`` against the plan, save it, make the split folders; the number of
    temporary files of a killed build removed."""
    _check_out_dir(out_dir, plan)
    plan_path, done_dir = _state_files(out_dir)
    done_dir.mkdir(parents=True, exist_ok=True)
    if not plan_path.is_file():
        write_text(plan_path, json.dumps(plan, indent=1) + "\n")
    for name in plan["split_names"]:
        for prefix in ("X", "Y"):
            (out_dir / f"{prefix}_{name}" / name).mkdir(parents=True, exist_ok=True)
    return _remove_temporaries(out_dir)


def _resume(out_dir: Path, items: list[_Item], digits: int, mine: set | None,
            report: BatchReport, stale: int) -> tuple[dict[int, dict], list[_Item]]:
    """The records of images already built, and the items (of this shard) still to build.

    The files of an image that was not finished are removed.
    """
    records: dict[int, dict] = {}
    pending: list[_Item] = []
    for item in items:
        if mine is not None and item.index not in mine:
            continue  # another shard's image: leave its files alone
        record = _read_done(out_dir, item, digits)
        if record is not None:
            records[item.index] = record
            report.succeeded(item.path)
        else:
            stale += _remove_item_files(out_dir, item, digits)
            pending.append(item)
    if records or stale:
        logger.info("resuming: %d image(s) already built, %d to build, %d stale file(s) removed",
                    len(records), len(pending), stale)
    return records, pending


def _shard_result(out_dir, shard, items, mine, records, report, unassigned) -> BuildResult:
    """A shard writes patches and done records only; ``--combine`` writes the summary."""
    splits: dict[str, int] = {}
    for item in items:
        if item.index in records:
            splits[item.split] = splits.get(item.split, 0) + item.count
    logger.info("%s: %d of %d image(s), %d built, %d failed, %d patches; combine the shards "
                "with the same command and --combine SHARD_DIR... --out DATA", describe(shard),
                len(mine), len(items), len(records), len(report.failures), sum(splits.values()))
    report.log_summary()
    return BuildResult(out_dir, splits, {}, report, unassigned)


def _gather_shards(shard_dirs, out_dir: Path, plan: dict, items: list[_Item],
                   digits: int) -> None:
    """Copy the images the shard folders finished into ``out_dir`` (files, then done record)."""
    import shutil

    _, done_dir = _state_files(out_dir)
    copied = 0
    for shard_dir in map(Path, shard_dirs):
        shard_plan, shard_done = _state_files(shard_dir)
        _require_same_plan(
            shard_plan, plan,
            unreadable=(f"--combine {shard_dir}: no readable build state",
                        "pass the --out folders of skyseg build-dataset --shard"),
            differs=(f"--combine {shard_dir}: built with other settings or inputs",
                     "combine with the options and inputs the shards were built with"))
        for item in items:
            if _read_done(out_dir, item, digits) is not None:
                continue
            if _read_done(shard_dir, item, digits) is None:
                continue
            for name in _item_names(item, digits):
                for source, target in zip(_patch_paths(shard_dir, item.split, name),
                                          _patch_paths(out_dir, item.split, name), strict=True):
                    with atomic_output(target) as temporary:
                        shutil.copyfile(source, temporary)
            for suffix in (".npy", ".json"):  # the record last: it marks the image done
                name = f"{item.index:06d}{suffix}"
                with atomic_output(done_dir / name) as temporary:
                    shutil.copyfile(shard_done / name, temporary)
            copied += 1
    logger.info("combined %d image(s) from %d shard folder(s)", copied, len(shard_dirs))


def _run(pending: list[_Item], settings: _Settings, workers: int):
    """Yield ``(item, record or SkysegError)`` as images finish, in one or several processes."""
    total = sum(item.count for item in pending)
    bar = progress(total=total, desc="patches", unit="patch")
    try:
        if workers == 1 or len(pending) <= 1:
            for item in pending:
                try:
                    yield item, _build_image(item, settings)
                except SkysegError as exc:
                    yield item, exc
                bar.update(item.count)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # "spawn": TensorFlow is not fork-safe, and each worker imports its own.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)),
                                 mp_context=context) as pool:
            futures = {pool.submit(_build_image, item, settings): item for item in pending}
            try:
                for future in as_completed(futures):
                    item = futures[future]
                    try:
                        yield item, future.result()
                    except SkysegError as exc:
                        yield item, exc
                    bar.update(item.count)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()


# --------------------------------------------------------------------------- CLI

def check_exposure_key(value) -> float | None:
    """Validate ``--exposure-key``: None (not given), 0 (absolute radiance) or a luminance > 0.

    Example:
        >>> check_exposure_key(0.18), check_exposure_key(0), check_exposure_key(None)
        (0.18, 0.0, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0:
        raise ConfigError(f"--exposure-key must be a luminance > 0 (e.g. 0.18) or 0 for "
                          f"absolute radiance, got {value!r}")
    return float(value)


def clip_preprocessing(clip_max: float | None, *, mode: str | None,
                       like: str | os.PathLike | None = None) -> Preprocessing | None:
    """The ``preprocessing`` of :func:`build_dataset` for ``--clip-max`` (None without it).

    Raises:
        ConfigError: ``clip_max`` with ``like`` (the run fixes it), or without ``mode="hdr"``.

    Example:
        >>> clip_preprocessing(50000.0, mode="hdr").clip_max
        50000.0
    """
    if clip_max is None:
        return None
    if like is not None:
        raise ConfigError("--clip-max comes from --like RUN; leave --clip-max out")
    if mode != "hdr":
        raise ConfigError("--clip-max applies to HDR radiance; add --mode hdr")
    return Preprocessing(mode="hdr", clip_max=clip_max)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coco", required=True, type=Path,
                        help="Label Studio COCO export (result.json)")
    parser.add_argument("--images", required=True, type=Path, help="folder with the images")
    parser.add_argument("--out", required=True, type=Path,
                        help="dataset folder to create (or to resume a killed build in)")
    add_options(parser, DatasetOptions)
    add_max_pixels_argument(parser)


def run(args: argparse.Namespace) -> int:
    split_files = parse_split_file_args(args.split_files) if args.split_files else None
    options = from_args(DatasetOptions, args, split_files=split_files,
                        max_pixels=args.max_pixels or None)
    return report_dataset(build_dataset(args.coco, args.images, args.out, options))


def report_dataset(result: BuildResult) -> int:
    """Print the patches and sky fraction of each split; the build's exit status.

    What ``skyseg build-dataset`` (and the pipeline's build step) shows at the end.
    """
    for name, count in result.splits.items():
        fraction = result.sky_fraction.get(name)
        print(f"{name}: {count} patches, sky fraction "
              f"{'n/a' if fraction is None else f'{fraction:.3f}'}")
    print(f"dataset in {result.out_dir}")
    return result.exit_code

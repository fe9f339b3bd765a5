"""The build-dataset stage on tiny synthetic images (and a few real CamVid frames).

Patch 16 / stride 10 on images of a few dozen pixels keeps TensorFlow's work
small; every build here takes well under a second after TensorFlow's import.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import skyseg.data.dataset as dataset_module
from skyseg.data.dataset import build_dataset
from skyseg.errors import ConfigError, DatasetError
from skyseg.image.preprocess import Preprocessing
from skyseg.io import TEMP_MARKER, read_image, write_exr, write_png
from skyseg.labels.annotations import load_coco
from tests.conftest import ROOT, shared_path

# (stem, height, width): smaller than a patch both ways and one way, exactly a
# patch, exact multiples of the stride (26 = 16 + 10), off by one, a 1-pixel
# remainder (37: patches at 0, 10, 20 and 21), a typical odd size.
ODD_SIZES = [
    ("seqA_000", 40, 70),
    ("seqA_001", 9, 12),
    ("seqA_002", 5, 40),
    ("seqB_000", 16, 16),
    ("seqB_001", 26, 36),
    ("seqB_002", 17, 27),
    ("seqC_000", 37, 31),
    ("seqC_001", 15, 41),
    ("seqD_000", 1, 30),
    ("seqD_001", 33, 1),
]
PATCH, STRIDE = 16, 10


def patch_count(height: int, width: int, size: int, stride: int) -> int:
    """The patches covering an image, by a formula of its own: along an axis of ``length``
    pixels, 1 when ``length <= size``, else ``ceil((length - size) / stride) + 1``."""
    def along(length: int) -> int:
        return 1 if length <= size else -(-(length - size) // stride) + 1

    return along(height) * along(width)


def _coco_entry(image_id: int, stem: str, suffix: str, height: int, width: int) -> dict:
    return {"id": image_id, "width": width, "height": height,
            "file_name": f"images/{secrets.token_hex(4)}-{stem}{suffix}"}


def _sky_annotations(start_id: int, image_id: int, height: int, width: int) -> list[dict]:
    """Sky over the upper 40 % of the picture, minus a small non-sky hole."""
    top = max(1.0, 0.4 * height)
    sky = [0, 0, width, 0, width, top, 0, top]
    hole_w = max(1.0, width / 5)
    hole = [width / 2, 0, width / 2 + hole_w, 0, width / 2 + hole_w, top / 2, width / 2, top / 2]
    return [
        {"id": start_id, "image_id": image_id, "category_id": 1, "segmentation": [sky],
         "iscrowd": 0, "area": 1.0, "bbox": [0, 0, width, top]},
        {"id": start_id + 1, "image_id": image_id, "category_id": 2, "segmentation": [hole],
         "iscrowd": 0, "area": 1.0, "bbox": [0, 0, 1, 1]},
    ]


def make_labelled_set(folder: Path, sizes=ODD_SIZES, *, kind: str = "ldr", seed: int = 0,
                      unlabelled: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Write images (PNG for LDR, float32 EXR for HDR) and a Label Studio style COCO file."""
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True)
    coco = {"images": [], "annotations": [],
            "categories": [{"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"}]}
    suffix = ".png" if kind == "ldr" else ".exr"
    for image_id, (stem, height, width) in enumerate(sizes):
        if kind == "ldr":
            write_png(images / f"{stem}.png",
                      rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        else:
            radiance = np.exp(rng.normal(0.0, 2.0, (height, width, 3))).astype(np.float32)
            write_exr(images / f"{stem}.exr", radiance, half=False)
        if stem in unlabelled:
            continue
        coco["images"].append(_coco_entry(image_id, stem, suffix, height, width))
        coco["annotations"] += _sky_annotations(2 * image_id, image_id, height, width)
    coco_path = folder / "result.json"
    coco_path.write_text(json.dumps(coco))
    return coco_path, images


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``: relative path -> bytes."""
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def read_manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def ldr_set(tmp_path_factory):
    return make_labelled_set(tmp_path_factory.mktemp("ldr"))


@pytest.fixture(scope="module")
def ldr_build(ldr_set, tmp_path_factory):
    coco, images = ldr_set
    out = tmp_path_factory.mktemp("ldr_out") / "data"
    result = build_dataset(coco, images, out, mode="ldr", patch_size=PATCH, stride=STRIDE,
                           dtype="float32", seed=3)
    return result, out


# ----------------------------------------------------------------------------- layout and sizes

def test_layout_counts_and_coverage(ldr_set, ldr_build):
    coco, images = ldr_set
    result, out = ldr_build
    assert result.exit_code == 0
    info = json.loads((out / "dataset.json").read_text())
    for key in ("mode", "patch_size", "stride", "dtype", "seed", "preprocessing", "splits",
                "stats", "sources"):
        assert key in info
    assert (info["mode"], info["patch_size"], info["stride"], info["dtype"]) == \
        ("ldr", PATCH, STRIDE, "float32")
    assert Preprocessing.from_dict(info["preprocessing"]) == Preprocessing(mode="ldr")
    rows = read_manifest(out)
    assert len({row["id"] for row in rows}) == len(rows)
    assert info["splits"] == result.splits
    assert sum(info["splits"].values()) == len(rows)
    # By hand, patch rows x columns at 16/10 (an axis of L > 16 pixels has starts 0, 10, ...
    # up to L - 16, plus L - 16 when the last one stops short): 40x70 -> 4x7, 9x12 -> 1x1,
    # 5x40 -> 1x4, 16x16 -> 1x1, 26x36 -> 2x3, 17x27 -> 2x3, 37x31 -> 4x3, 15x41 -> 1x4,
    # 1x30 -> 1x3, 33x1 -> 3x1.
    assert len(rows) == 28 + 1 + 4 + 1 + 6 + 6 + 12 + 4 + 3 + 3
    for split in info["splits"]:
        x_files = sorted(p.stem for p in (out / f"X_{split}" / split).iterdir())
        y_files = sorted(p.stem for p in (out / f"Y_{split}" / split).iterdir())
        assert x_files == y_files == sorted(r["id"] for r in rows if r["split"] == split)
    # Every pixel of every source lies in a patch; patch positions stay inside the image.
    for stem, height, width in ODD_SIZES:
        covered = np.zeros((height, width), bool)
        mine = [r for r in rows if r["source"] == f"{stem}.png"]
        assert len(mine) == patch_count(height, width, PATCH, STRIDE)
        for r in mine:
            row, col = int(r["row"]), int(r["col"])
            vh, vw = int(r["valid_height"]), int(r["valid_width"])
            assert (vh, vw) == (min(PATCH, height - row), min(PATCH, width - col))
            covered[row:row + vh, col:col + vw] = True
        assert covered.all(), stem
    stats = info["stats"]
    assert set(stats["quantiles_percent"]["all"]) == {"0.25", "0.5", "25", "50", "75", "99.5"}
    assert 0 < stats["sky_fraction"]["train"] < 1
    assert set(stats["nonfinite_repaired"]) == {f"{s}.png" for s, _, _ in ODD_SIZES}
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))


def test_patches_line_up_with_source_and_mask(ldr_set, ldr_build):
    coco, images = ldr_set
    _, out = ldr_build
    labels = load_coco(coco)
    prep = Preprocessing(mode="ldr")
    for r in read_manifest(out):
        stem = Path(r["source"]).stem
        source = read_image(images / r["source"])
        mask = labels.mask(stem, *source.shape[:2])
        row, col = int(r["row"]), int(r["col"])
        vh, vw = int(r["valid_height"]), int(r["valid_width"])
        x = tifffile.imread(out / f"X_{r['split']}" / r["split"] / f"{r['id']}.tif")
        y = np.asarray(Image.open(out / f"Y_{r['split']}" / r["split"] / f"{r['id']}.png"))
        assert x.shape == (PATCH, PATCH, 3) and x.dtype == np.float32
        assert y.shape == (PATCH, PATCH) and y.dtype == np.uint8
        np.testing.assert_allclose(prep.invert(x[:vh, :vw]), source[row:row + vh, col:col + vw],
                                   atol=1e-4)
        np.testing.assert_array_equal(y[:vh, :vw], mask[row:row + vh, col:col + vw])
        assert (y[vh:] == 255).all() and (y[:, vw:] == 255).all()
        assert set(np.unique(y[:vh, :vw])) <= {0, 1}
        assert float(r["sky_fraction"]) == pytest.approx((y == 1).sum() / (vh * vw), abs=1e-6)


def test_hdr_patch_inverts_to_radiance(tmp_path):
    sizes = [("pano_a", 40, 70), ("pano_b", 12, 30)]
    coco, images = make_labelled_set(tmp_path, sizes, kind="hdr", seed=5)
    out = tmp_path / "data"
    result = build_dataset(coco, images, out, patch_size=PATCH, stride=STRIDE, dtype="float32",
                           split=(0.5, 0.5))
    assert result.exit_code == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["mode"] == "hdr"  # detected from the EXR files
    prep = Preprocessing.from_dict(info["preprocessing"])
    assert prep.exposure_key is None  # absolute radiance unless asked
    labels = load_coco(coco)
    for r in read_manifest(out):
        source = read_image(images / r["source"])
        row, col, vh, vw = (int(r[k]) for k in ("row", "col", "valid_height", "valid_width"))
        x = tifffile.imread(out / f"X_{r['split']}" / r["split"] / f"{r['id']}.tif")
        np.testing.assert_allclose(prep.invert(x[:vh, :vw]), source[row:row + vh, col:col + vw],
                                   rtol=1e-4, atol=1e-6)
        y = np.asarray(Image.open(out / f"Y_{r['split']}" / r["split"] / f"{r['id']}.png"))
        mask = labels.mask(Path(r["source"]).stem, *source.shape[:2])
        np.testing.assert_array_equal(y[:vh, :vw], mask[row:row + vh, col:col + vw])


def test_scale_shrinks_images_and_masks_before_the_patches(tmp_path, cli):
    from skyseg.image.preprocess import rescale_image, rescale_mask, scaled_size

    sizes = [("pano_a", 40, 80), ("pano_b", 25, 50)]
    coco, images = make_labelled_set(tmp_path, sizes, kind="hdr", seed=6)
    out = tmp_path / "data"
    result = cli("build-dataset", "--coco", coco, "--images", images, "--out", out,
                 "--patch-size", 8, "--stride", 6, "--dtype", "float32", "--scale", 0.5,
                 "--split", "0.5,0.5")
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "dataset.json").read_text())
    prep = Preprocessing.from_dict(info["preprocessing"])
    assert prep.scale == 0.5
    labels = load_coco(coco)
    rows = read_manifest(out)
    for stem, height, width in sizes:
        small = scaled_size(height, width, 0.5)
        assert sum(r["source"] == f"{stem}.exr" for r in rows) == patch_count(*small, 8, 6)
        radiance = rescale_image(read_image(images / f"{stem}.exr"), small)
        mask = rescale_mask(labels.mask(stem, height, width), small)
        for r in (r for r in rows if r["source"] == f"{stem}.exr"):
            row, col = int(r["row"]), int(r["col"])
            x = tifffile.imread(out / f"X_{r['split']}" / r["split"] / f"{r['id']}.tif")
            np.testing.assert_allclose(prep.invert(x), radiance[row:row + 8, col:col + 8],
                                       rtol=1e-4, atol=1e-6)
            y = np.asarray(Image.open(out / f"Y_{r['split']}" / r["split"] / f"{r['id']}.png"))
            np.testing.assert_array_equal(y, mask[row:row + 8, col:col + 8])


def test_exposure_key_makes_the_patches_independent_of_the_file_exposure(tmp_path, cli):
    sizes = [("pano_a", 24, 48), ("pano_b", 20, 40)]
    coco, images = make_labelled_set(tmp_path / "dark", sizes, kind="hdr", seed=9)
    bright = tmp_path / "bright" / "images"
    bright.mkdir(parents=True)
    for stem, _, _ in sizes:  # the same scenes, 5 stops brighter
        write_exr(bright / f"{stem}.exr", read_image(images / f"{stem}.exr") * 32, half=False)
    options = dict(patch_size=8, stride=8, dtype="float32", split=(0.5, 0.5), seed=1)
    build_dataset(coco, images, tmp_path / "d1", exposure_key=0.18, **options)
    result = cli("build-dataset", "--coco", coco, "--images", bright, "--out", tmp_path / "d2",
                 "--patch-size", 8, "--stride", 8, "--dtype", "float32", "--split", "0.5,0.5",
                 "--seed", 1, "--exposure-key", 0.18)
    assert result.returncode == 0, result.stderr
    prep = Preprocessing.from_dict(
        json.loads((tmp_path / "d2" / "dataset.json").read_text())["preprocessing"])
    assert prep.exposure_key == 0.18
    for r in read_manifest(tmp_path / "d1"):
        name = f"X_{r['split']}/{r['split']}/{r['id']}.tif"
        x = tifffile.imread(tmp_path / "d1" / name)
        np.testing.assert_allclose(x, tifffile.imread(tmp_path / "d2" / name), atol=1e-5)
        # Radiance relative to the whole image's exposure: one gain per image.
        source = read_image(bright / r["source"])
        source *= np.float32(prep.image_gain(source))
        row, col = int(r["row"]), int(r["col"])
        np.testing.assert_allclose(prep.invert(x), source[row:row + 8, col:col + 8], rtol=1e-4,
                                   atol=1e-6)
    # Without the key (or with 0): absolute radiance, so the two exposures differ.
    build_dataset(coco, images, tmp_path / "d3", **options)
    build_dataset(coco, bright, tmp_path / "d4", exposure_key=0, **options)
    r = read_manifest(tmp_path / "d3")[0]
    name = f"X_{r['split']}/{r['split']}/{r['id']}.tif"
    x3, x4 = (tifffile.imread(tmp_path / d / name) for d in ("d3", "d4"))
    prep = Preprocessing.from_dict(
        json.loads((tmp_path / "d4" / "dataset.json").read_text())["preprocessing"])
    assert prep.exposure_key is None
    np.testing.assert_allclose(prep.invert(x4), prep.invert(x3) * 32, rtol=1e-4, atol=1e-5)


def test_float16_and_compression_store_the_same_values(ldr_set, ldr_build, tmp_path):
    coco, images = ldr_set
    _, out32 = ldr_build
    out16 = tmp_path / "data16"
    build_dataset(coco, images, out16, mode="ldr", patch_size=PATCH, stride=STRIDE, seed=3,
                  compression="zlib")
    info = json.loads((out16 / "dataset.json").read_text())
    assert info["dtype"] == "float16" and info["compression"] == "zlib"
    assert read_manifest(out16) == read_manifest(out32)
    for r in read_manifest(out16)[:20]:
        name = Path(f"X_{r['split']}") / r["split"] / f"{r['id']}.tif"
        x16, x32 = tifffile.imread(out16 / name), tifffile.imread(out32 / name)
        assert x16.dtype == np.float16
        np.testing.assert_array_equal(x16, x32.astype(np.float16))


# ----------------------------------------------------------------------------- splits

def test_no_source_or_group_in_two_splits(ldr_set, tmp_path):
    coco, images = ldr_set
    out = tmp_path / "data"
    result = build_dataset(coco, images, out, mode="ldr", patch_size=PATCH, stride=STRIDE,
                           split="0.5,0.25,0.25", group_pattern=r"^(seq[A-Z])_", seed=1)
    rows = read_manifest(out)
    by_source: dict[str, set] = {}
    by_group: dict[str, set] = {}
    for r in rows:
        by_source.setdefault(r["source"], set()).add(r["split"])
        by_group.setdefault(r["source"][:4], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_source.values())
    assert all(len(s) == 1 for s in by_group.values())
    assert set(result.splits) == {"train", "val", "test"}
    assert all(count > 0 for count in result.splits.values())
    info = json.loads((out / "dataset.json").read_text())
    assert {name: split for name, split in info["sources"].items()} == \
        {source: splits.pop() for source, splits in by_source.items()}


def test_split_files_and_unlisted_images(ldr_set, tmp_path):
    coco, images = ldr_set
    (tmp_path / "train.txt").write_text("seqA_000\nseqA_001\nseqB_000\n")
    (tmp_path / "val.txt").write_text("seqC_000.png\n")
    out = tmp_path / "data"
    result = build_dataset(coco, images, out, mode="ldr", patch_size=PATCH, stride=STRIDE,
                           split_files={"train": tmp_path / "train.txt",
                                        "val": tmp_path / "val.txt"})
    info = json.loads((out / "dataset.json").read_text())
    assert info["sources"] == {"seqA_000.png": "train", "seqA_001.png": "train",
                               "seqB_000.png": "train", "seqC_000.png": "val"}
    assert sorted(info["unassigned"]) == sorted(result.unassigned) == sorted(
        s for s, _, _ in ODD_SIZES if s not in ("seqA_000", "seqA_001", "seqB_000", "seqC_000"))
    assert result.exit_code == 0
    with pytest.raises(DatasetError, match="group 'seqA' .* has images in train, val"):
        (tmp_path / "val2.txt").write_text("seqA_002\n")
        build_dataset(coco, images, tmp_path / "data2", mode="ldr", patch_size=PATCH,
                      stride=STRIDE, group_pattern=r"^(seq[A-Z])_",
                      split_files={"train": tmp_path / "train.txt",
                                   "val": tmp_path / "val2.txt"})


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_with_one_or_two_workers(ldr_set, tmp_path):
    coco, images = ldr_set
    kwargs = dict(mode="ldr", patch_size=PATCH, stride=STRIDE, seed=11)
    build_dataset(coco, images, tmp_path / "one", workers=1, **kwargs)
    build_dataset(coco, images, tmp_path / "two", workers=2, **kwargs)
    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    patches = sum(patch_count(h, w, PATCH, STRIDE) for _, h, w in ODD_SIZES)
    # X and Y per patch, a done record and a value sample per image, plan, manifest, json
    assert len(one) == 2 * patches + 2 * len(ODD_SIZES) + 3
    assert one == two
    build_dataset(coco, images, tmp_path / "other", workers=1, **{**kwargs, "seed": 12})
    other = json.loads((tmp_path / "other" / "dataset.json").read_text())
    assert other["sources"] != json.loads((tmp_path / "one" / "dataset.json").read_text())[
        "sources"]


def test_resume_after_a_kill_gives_the_uninterrupted_dataset(ldr_set, ldr_build, tmp_path,
                                                             monkeypatch):
    coco, images = ldr_set
    _, reference = ldr_build
    out = tmp_path / "data"
    kwargs = dict(mode="ldr", patch_size=PATCH, stride=STRIDE, dtype="float32", seed=3)
    real_write_png = dataset_module.write_png
    calls = {"n": 0}

    def dying_write_png(path, array, **options):
        calls["n"] += 1
        if calls["n"] > 40:  # the 41st mask: in the middle of an image
            raise RuntimeError("simulated kill")
        return real_write_png(path, array, **options)

    monkeypatch.setattr(dataset_module, "write_png", dying_write_png)
    with pytest.raises(RuntimeError, match="simulated kill"):
        build_dataset(coco, images, out, **kwargs)
    monkeypatch.setattr(dataset_module, "write_png", real_write_png)
    assert not (out / "dataset.json").exists()
    written = [p for p in out.rglob("*.tif")]
    assert 0 < len(written) < len(read_manifest(reference))
    # A killed process also leaves temporary files behind.
    stray = written[-1].parent / f".{written[-1].stem}.deadbeef{TEMP_MARKER}.tif"
    stray.write_bytes(b"half a tiff")
    (out / ".build" / "done" / f".000009.cafe{TEMP_MARKER}.json").write_text("{")

    result = build_dataset(coco, images, out, **kwargs)
    assert result.exit_code == 0
    assert tree(out) == tree(reference)
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))
    # Running again on a finished dataset changes nothing.
    build_dataset(coco, images, out, **kwargs)
    assert tree(out) == tree(reference)


#: Runs ``skyseg ARGS``, killing itself with SIGKILL half-way through writing its
#: ``KILL_AT``-th mask patch (that patch's image file is complete, its mask a temporary).
_KILLED_CLI = """
import os, signal, sys
import skyseg.data.dataset as dataset
from skyseg.cli.commands import main
from skyseg.io.write import atomic_output

real_write_png, calls = dataset.write_png, [0]

def write_png(path, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT"]):
        with atomic_output(path) as temporary:
            temporary.write_bytes(b"half a png")
            os.kill(os.getpid(), signal.SIGKILL)
    return real_write_png(path, *args, **kwargs)

dataset.write_png = write_png
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill_of_the_cli(tmp_path):
    """A real kill -9 in the middle of the writing, then the same command again."""
    sizes = [(f"big_{i:02d}", 100, 150) for i in range(12)]  # 150 patches each at 16/10
    coco, images = make_labelled_set(tmp_path, sizes, seed=9)
    reference, out = tmp_path / "reference", tmp_path / "data"
    options = ["--mode", "ldr", "--patch-size", "16", "--stride", "10", "--seed", "2", "-q"]
    build_dataset(coco, images, reference, mode="ldr", patch_size=16, stride=10, seed=2)
    # Patch 389 of 1800: in the third image, mid-way through an X/Y pair (file 777).
    env = dict(os.environ, PYTHONPATH=str(ROOT), KILL_AT="389")
    command = [sys.executable, "-c", _KILLED_CLI, "build-dataset", "--coco", str(coco),
               "--images", str(images), "--out", str(out), *options]
    process = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    assert process.returncode == -signal.SIGKILL, process.stderr
    files = [path.name for path in out.glob("[XY]_*/*/*")]
    assert len([name for name in files if TEMP_MARKER not in name]) == 777
    assert len([name for name in files if TEMP_MARKER in name]) == 1
    assert not (out / "dataset.json").exists()
    result = build_dataset(coco, images, out, mode="ldr", patch_size=16, stride=10, seed=2)
    assert result.exit_code == 0
    assert tree(out) == tree(reference)
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))


def test_resume_redoes_an_image_whose_files_went_missing(ldr_set, ldr_build, tmp_path):
    coco, images = ldr_set
    _, reference = ldr_build
    out = tmp_path / "data"
    shutil.copytree(reference, out)
    victim = next((out / "Y_train" / "train").iterdir())
    victim.unlink()
    build_dataset(coco, images, out, mode="ldr", patch_size=PATCH, stride=STRIDE,
                  dtype="float32", seed=3)
    assert tree(out) == tree(reference)


def test_out_folder_of_another_build_or_unrelated_is_refused(ldr_set, ldr_build, tmp_path):
    coco, images = ldr_set
    _, reference = ldr_build
    out = tmp_path / "data"
    shutil.copytree(reference, out)
    with pytest.raises(DatasetError, match=r"other settings or inputs \(differs in .*stride"):
        build_dataset(coco, images, out, mode="ldr", patch_size=PATCH, stride=8,
                      dtype="float32", seed=3)
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty .*notes.txt.* holds no skyseg build state"):
        build_dataset(coco, images, unrelated, mode="ldr", patch_size=PATCH, stride=STRIDE)


# ----------------------------------------------------------------------------- bad inputs

def test_damaged_images_are_skipped_and_listed(tmp_path):
    sizes = [("good_0", 20, 30), ("good_1", 18, 22), ("good_2", 30, 20), ("truncated", 24, 24),
             ("garbage", 20, 20)]
    coco, images = make_labelled_set(tmp_path, sizes)
    whole = (images / "truncated.png").read_bytes()
    (images / "truncated.png").write_bytes(whole[: len(whole) // 2])  # header fine, pixels not
    (images / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    out = tmp_path / "data"
    result = build_dataset(coco, images, out, mode="ldr", patch_size=PATCH, stride=STRIDE)
    assert result.exit_code == 1
    failed = {item: message for item, message in result.report.failures}
    assert set(failed) == {"truncated.png", "garbage.png"}
    assert all(name in failed[name] for name in failed)
    info = json.loads((out / "dataset.json").read_text())
    assert {entry["image"] for entry in info["skipped"]} == {"truncated.png", "garbage.png"}
    sources = {r["source"] for r in read_manifest(out)}
    assert sources == {"good_0.png", "good_1.png", "good_2.png"}
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))
    total = sum(patch_count(h, w, PATCH, STRIDE) for s, h, w in sizes if s.startswith("good"))
    assert len(list(out.rglob("*.tif"))) == len(list(out.rglob("*.png"))) == total


def test_unlabelled_and_missing_images_are_listed(tmp_path):
    sizes = [("a_0", 20, 30), ("a_1", 18, 22), ("a_2", 30, 20), ("stray", 20, 20)]
    coco, images = make_labelled_set(tmp_path, sizes, unlabelled=("stray",))
    (images / "a_2.png").unlink()  # labelled, but not on disk
    out = tmp_path / "data"
    result = build_dataset(coco, images, out, mode="ldr", patch_size=PATCH, stride=STRIDE)
    assert result.exit_code == 1
    failed = dict(result.report.failures)
    assert "has no labels" in failed["stray.png"]
    assert "no image of that name" in failed["a_2"]
    assert {r["source"] for r in read_manifest(out)} == {"a_0.png", "a_1.png"}


def test_image_with_no_regions_is_built_as_no_sky(tmp_path):
    coco, images = make_labelled_set(tmp_path, [("a", 20, 30), ("b", 20, 30)])
    data = json.loads(coco.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1]
    coco.write_text(json.dumps(data))
    out = tmp_path / "data"
    result = build_dataset(coco, images, out, mode="ldr", patch_size=PATCH, stride=STRIDE)
    assert result.exit_code == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["without_sky_regions"] == ["b"]
    for r in read_manifest(out):
        if r["source"] == "b.png":
            y = np.asarray(Image.open(out / f"Y_{r['split']}" / r["split"] / f"{r['id']}.png"))
            assert set(np.unique(y)) <= {0, 255}


def test_mixed_hdr_and_ldr_need_a_mode(tmp_path):
    coco, images = make_labelled_set(tmp_path / "l", [("a", 20, 30), ("b", 20, 30)])
    write_exr(images / "c.exr", np.ones((20, 30, 3), np.float32))
    data = json.loads(coco.read_text())
    data["images"].append(_coco_entry(7, "c", ".jpg", 20, 30))
    data["annotations"] += _sky_annotations(100, 7, 20, 30)
    coco.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="mixes HDR .*c.exr.* and LDR .* pass --mode"):
        build_dataset(coco, images, tmp_path / "data", patch_size=PATCH, stride=STRIDE)


def test_image_of_the_other_mode_is_skipped(tmp_path):
    coco, images = make_labelled_set(tmp_path, [("a", 20, 30), ("b", 20, 30)])
    write_exr(images / "c.exr", np.ones((20, 30, 3), np.float32))
    data = json.loads(coco.read_text())
    data["images"].append(_coco_entry(7, "c", ".jpg", 20, 30))
    data["annotations"] += _sky_annotations(100, 7, 20, 30)
    coco.write_text(json.dumps(data))
    result = build_dataset(coco, images, tmp_path / "data", mode="ldr", patch_size=PATCH,
                           stride=STRIDE)
    assert result.exit_code == 1
    failed = dict(result.report.failures)
    assert "c.exr: is an HDR image but the dataset is built in LDR mode" in failed["c.exr"]
    assert {r["source"] for r in read_manifest(tmp_path / "data")} == {"a.png", "b.png"}
    with pytest.raises(ConfigError, match="no HDR images to build"):
        build_dataset(coco, images, tmp_path / "data_hdr", mode="hdr", patch_size=PATCH,
                      stride=STRIDE, split_files={"train": _list(tmp_path, "a", "b")})


def _list(folder: Path, *stems: str) -> Path:
    path = folder / "list.txt"
    path.write_text("".join(f"{stem}\n" for stem in stems))
    return path


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(patch_size=16, stride=17), ConfigError, "larger than the patch size"),
    (dict(patch_size=16, stride=0), ConfigError, "at least 1"),
    (dict(patch_size=1), ConfigError, "at least 2"),
    (dict(dtype="float64"), ConfigError, "--dtype must be one of"),
    (dict(compression="jpeg"), ConfigError, "--compression must be one of"),
    (dict(workers=0), ConfigError, "--workers must be"),
    (dict(seed=-1), ConfigError, "--seed must be"),
    (dict(split="0.5,0.4"), ConfigError, "sum to 0.9"),
    (dict(split="0.5,0.5", split_files={"train": "t.txt"}), ConfigError, "not both"),
    (dict(mode="ldr", preprocessing=Preprocessing(mode="hdr")), ConfigError, "contradicts"),
    (dict(split=(0.4, 0.3, 0.3), group_pattern="^(seq)"), ConfigError, "at least 3 groups"),
])
def test_bad_options(ldr_set, tmp_path, kwargs, error, match):
    coco, images = ldr_set
    with pytest.raises(error, match=match):
        build_dataset(coco, images, tmp_path / "data", **{"mode": "ldr", **kwargs}
                      if "preprocessing" not in kwargs else kwargs)


def test_missing_images_folder(ldr_set, tmp_path):
    coco, _ = ldr_set
    with pytest.raises(ConfigError, match="images folder not found"):
        build_dataset(coco, tmp_path / "nowhere", tmp_path / "data")


# ----------------------------------------------------------------------------- CLI

@pytest.mark.parametrize(("extra", "match"), [
    (["--split", "0.75;0.25"], "comma-separated fractions"),
    (["--split", "0.6,0.2,0.1"], "sum to 0.9"),
    (["--split-file", "train=missing_list.txt", "--split-file", "val=also_missing.txt"],
     "missing_list.txt: file not found"),
    (["--split-file", "train"], "expected NAME=FILE"),
    (["--patch-size", "16", "--stride", "32"], "stride 32 is larger than the patch size 16"),
    (["--stride", "-5"], "stride must be at least 1"),
    (["--mode", "ldr", "--clip-max", "100"], "--clip-max applies to HDR"),
    (["--exposure-key", "0.18"], "--exposure-key applies to HDR radiance"),
    (["--exposure-key", "-1"], "--exposure-key must be a luminance > 0"),
])
def test_cli_bad_arguments_one_line_exit_2(cli, ldr_set, tmp_path, extra, match):
    coco, images = ldr_set
    proc = cli("build-dataset", "--coco", coco, "--images", images, "--out", tmp_path / "d",
               *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and match in lines[0], proc.stderr


def test_cli_builds_and_lists_failures_exit_1(cli, tmp_path):
    coco, images = make_labelled_set(tmp_path, [("a", 20, 30), ("b", 24, 18), ("c", 17, 17)])
    (images / "c.png").write_bytes(b"not a png at all")
    proc = cli("build-dataset", "--coco", coco, "--images", images, "--out", tmp_path / "d",
               "--patch-size", "16", "--stride", "10", "--mode", "ldr", "--split", "0.5,0.5")
    assert proc.returncode == 1, proc.stderr
    assert "FAILED" in proc.stderr and "c.png" in proc.stderr
    assert "train:" in proc.stdout and "val:" in proc.stdout
    assert (tmp_path / "d" / "dataset.json").is_file()


def test_images_above_max_pixels_are_skipped_and_listed(cli, tmp_path):
    coco, images = make_labelled_set(tmp_path, [("a", 20, 30), ("b", 24, 18), ("big", 40, 70)])
    proc = cli("build-dataset", "--coco", coco, "--images", images, "--out", tmp_path / "d",
               "--patch-size", "16", "--stride", "10", "--mode", "ldr", "--split", "0.5,0.5",
               "--max-pixels", "1000")
    assert proc.returncode == 1, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "big.png: 70x40 pixels" in failed[0]
    assert "--max-pixels 1000" in failed[0]
    assert {row["source"] for row in read_manifest(tmp_path / "d")} == {"a.png", "b.png"}
    proc = cli("build-dataset", "--coco", coco, "--images", images, "--out", tmp_path / "e",
               "--max-pixels", "0.5")
    assert proc.returncode == 2 and "--max-pixels must be a positive whole number" in proc.stderr


# ----------------------------------------------------------------------------- real data

def test_camvid_frames_line_up(tmp_path):
    root = shared_path("camvid-sky")
    data = json.loads((root / "result.json").read_text())
    keep = {"0001TP_006690", "0016E5_07959", "0006R0_f00930"}
    images = tmp_path / "images"
    images.mkdir()
    entries = [e for e in data["images"] if any(e["file_name"].endswith(f"-{k}.jpg")
                                                 for k in keep)]
    assert len(entries) >= 2
    ids = {e["id"] for e in entries}
    subset = {"images": entries, "categories": data["categories"],
              "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
    coco = tmp_path / "result.json"
    coco.write_text(json.dumps(subset))
    for entry in entries:
        name = entry["file_name"].split("-", 1)[1]
        shutil.copy(root / "images" / name, images / name)
    out = tmp_path / "data"
    result = build_dataset(coco, images, out, mode="ldr", patch_size=256, stride=200,
                           split=(0.5, 0.5), dtype="float32")
    assert result.exit_code == 0
    rows = read_manifest(out)
    assert len(rows) == 6 * len(entries)  # 360x480 at 256/200: rows 0,104; cols 0,200,224
    labels = load_coco(coco)
    for r in rows[:6]:
        source = read_image(images / r["source"])
        mask = labels.mask(Path(r["source"]).stem, 360, 480)
        row, col = int(r["row"]), int(r["col"])
        x = tifffile.imread(out / f"X_{r['split']}" / r["split"] / f"{r['id']}.tif")
        y = np.asarray(Image.open(out / f"Y_{r['split']}" / r["split"] / f"{r['id']}.png"))
        np.testing.assert_allclose(x * 255, source[row:row + 256, col:col + 256], atol=1e-3)
        np.testing.assert_array_equal(y, mask[row:row + 256, col:col + 256])


def test_ignore_sky_gaps_marks_the_gaps_of_the_shrunk_image(tmp_path):
    from skyseg.image.preprocess import rescale_image, rescale_mask
    from skyseg.labels.sky_gaps import ignore_sky_gaps

    root = shared_path("camvid-sky")
    data = json.loads((root / "result.json").read_text())
    stem = "0006R0_f03510"  # bare trees against a white sky, labelled tree
    entries = [e for e in data["images"] if e["file_name"].endswith(f"-{stem}.jpg")]
    subset = {"images": entries, "categories": data["categories"],
              "annotations": [a for a in data["annotations"] if a["image_id"] == entries[0]["id"]]}
    coco = tmp_path / "result.json"
    coco.write_text(json.dumps(subset))
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(root / "images" / f"{stem}.jpg", images)
    lists = {"train": _list(tmp_path, stem)}
    plain = build_dataset(coco, images, tmp_path / "plain", mode="ldr", patch_size=256,
                          stride=256, scale=0.5, split_files=lists, dtype="float32")
    out = tmp_path / "gaps"
    result = build_dataset(coco, images, out, mode="ldr", patch_size=256, stride=256, scale=0.5,
                           split_files=lists, dtype="float32", ignore_sky_gaps=True)
    assert result.exit_code == plain.exit_code == 0

    image = rescale_image(read_image(images / f"{stem}.jpg"), (180, 240))
    mask = rescale_mask(load_coco(coco).mask(stem, 360, 480), (180, 240))
    expected, count = ignore_sky_gaps(image, mask)
    y = np.asarray(Image.open(out / "Y_train" / "train" / "000000.png"))
    np.testing.assert_array_equal(y[:180, :240], expected)
    assert count > 0 and np.count_nonzero(y == 255) == count + 256 * 256 - 180 * 240
    np.testing.assert_array_equal(  # the image patches do not change
        tifffile.imread(out / "X_train" / "train" / "000000.tif"),
        tifffile.imread(tmp_path / "plain" / "X_train" / "train" / "000000.tif"))
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["ignore_sky_gaps"] is True
    assert summary["images"][f"{stem}.jpg"]["sky_gap_pixels"] == count
    assert json.loads((tmp_path / "plain" / "dataset.json").read_text())["ignore_sky_gaps"] is False
    # A build without the option keeps its plan as before (older builds resume);
    # the other setting in the same folder is refused, not mixed.
    assert "ignore_sky_gaps" not in json.loads((tmp_path / "plain" / ".build" / "plan.json").read_text())
    with pytest.raises(DatasetError, match="ignore_sky_gaps"):
        build_dataset(coco, images, tmp_path / "plain", mode="ldr", patch_size=256, stride=256,
                      scale=0.5, split_files=lists, dtype="float32", ignore_sky_gaps=True)


# ----------------------------------------------------------------------------- --like RUN

def fake_run(folder: Path, data: Path | None, *, patch_size: int = 8, **preprocessing) -> Path:
    """A run folder of skyseg train as far as --like reads it."""
    folder.mkdir(parents=True)
    Preprocessing(**preprocessing).save(folder / "preprocessing.json")
    config = {"patch_size": patch_size, "data": str(data) if data else None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_like_copies_the_preprocessing_patch_size_and_stride(tmp_path, cli):
    from skyseg.data.dataset import settings_like

    # The run was trained on a dataset of 8-px patches, stride 6, at half size, clipped.
    old_data = tmp_path / "old-data"
    old_data.mkdir()
    (old_data / "dataset.json").write_text(json.dumps({"patch_size": 8, "stride": 6}))
    run = fake_run(tmp_path / "run", old_data, mode="hdr", scale=0.5, clip_max=1000.0)
    settings = settings_like(run)
    assert settings["patch_size"] == 8 and settings["stride"] == 6
    assert settings["preprocessing"] == Preprocessing.load(run / "preprocessing.json")

    coco, images = make_labelled_set(tmp_path / "new", [("cam_a", 30, 40), ("cam_b", 20, 36)],
                                     kind="hdr", seed=8)
    out = tmp_path / "data"
    result = cli("build-dataset", "--coco", coco, "--images", images, "--out", out,
                 "--like", run, "--split", "0.5,0.5")
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "dataset.json").read_text())
    # Exactly what skyseg train --init compares with the run's preprocessing.json.
    assert info["preprocessing"] == json.loads((run / "preprocessing.json").read_text())
    assert (info["patch_size"], info["stride"], info["mode"]) == (8, 6, "hdr")
    rows = read_manifest(out)
    assert len(rows) == sum(patch_count(h // 2, w // 2, 8, 6) for h, w in ((30, 40),
                                                                               (20, 36)))

    # An explicit patch size wins (stride: the mode's overlap); a model file works as RUN.
    (run / "model_best.h5").write_bytes(b"")
    other = build_dataset(coco, images, tmp_path / "data32", like=run / "model_best.h5",
                          patch_size=32, split=(0.5, 0.5))
    info = json.loads((tmp_path / "data32" / "dataset.json").read_text())
    assert other.exit_code == 0 and (info["patch_size"], info["stride"]) == (32, 12)
    assert info["preprocessing"]["scale"] == 0.5 and info["preprocessing"]["clip_max"] == 1000.0


def test_like_without_the_old_dataset_takes_the_default_stride(ldr_set, tmp_path):
    run = fake_run(tmp_path / "run", tmp_path / "deleted", patch_size=16, mode="ldr")
    coco, images = ldr_set
    result = build_dataset(coco, images, tmp_path / "data", like=run, seed=3)
    info = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert result.exit_code == 0 and (info["patch_size"], info["stride"]) == (16, 16)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "ldr"}, r"--mode ldr contradicts --like .*run, trained in hdr mode"),
    ({"scale": 1.0}, r"--scale 1 contradicts --like .*run, trained at scale 0.5"),
    ({"preprocessing": Preprocessing(mode="hdr", scale=0.5, clip_max=10.0)},
     "preprocessing given contradicts --like"),
])
def test_like_contradicted(ldr_set, tmp_path, kwargs, match):
    run = fake_run(tmp_path / "run", None, mode="hdr", scale=0.5)
    coco, images = ldr_set
    with pytest.raises(ConfigError, match=match):
        build_dataset(coco, images, tmp_path / "data", like=run, **kwargs)
    assert not (tmp_path / "data").exists()


def test_like_needs_a_run(ldr_set, tmp_path, cli):
    coco, images = ldr_set
    with pytest.raises(ConfigError, match="--like .*nothing: no such run folder"):
        build_dataset(coco, images, tmp_path / "data", like=tmp_path / "nothing")
    (tmp_path / "bare").mkdir()
    with pytest.raises(ConfigError, match="no preprocessing.json in"):
        build_dataset(coco, images, tmp_path / "data", like=tmp_path / "bare")
    result = cli("build-dataset", "--coco", coco, "--images", images, "--out", tmp_path / "d",
                 "--like", tmp_path / "bare", "--clip-max", 100)
    assert result.returncode == 2 and "--clip-max comes from --like RUN" in result.stderr
    with pytest.raises(ConfigError, match="--exposure-key comes from --like"):
        build_dataset(coco, images, tmp_path / "data", like=tmp_path / "bare", exposure_key=0.3)


def _srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB decoding formula (IEC 61966-2-1), written out here as the test's oracle."""
    v = values.astype(np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def test_convert_ldr_builds_photos_as_linear_radiance_into_an_hdr_dataset(tmp_path):
    sizes = [("photo_a", 20, 30), ("photo_b", 18, 24)]
    coco, images = make_labelled_set(tmp_path / "set", sizes, kind="ldr", seed=4)
    out = tmp_path / "data"
    result = build_dataset(coco, images, out, mode="hdr", convert_ldr=True, patch_size=PATCH,
                           stride=STRIDE, dtype="float32", split=(0.5, 0.5))
    assert result.exit_code == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["mode"] == "hdr" and info["convert_ldr"] is True
    prep = Preprocessing(mode="hdr")
    for r in read_manifest(out):
        source = np.asarray(Image.open(images / r["source"]))
        row, col = int(r["row"]), int(r["col"])
        vh, vw = int(r["valid_height"]), int(r["valid_width"])
        x = tifffile.imread(out / f"X_{r['split']}" / r["split"] / f"{r['id']}.tif")
        np.testing.assert_allclose(prep.invert(x[:vh, :vw]),
                                   _srgb_to_linear(source[row:row + vh, col:col + vw]),
                                   rtol=1e-3, atol=1e-5)
    # Without --convert-ldr an LDR photo has no place in an HDR dataset; with it, HDR is needed.
    with pytest.raises(ConfigError, match="no HDR images to build"):
        build_dataset(coco, images, tmp_path / "refused", mode="hdr", patch_size=PATCH,
                      stride=STRIDE, split=(0.5, 0.5))
    with pytest.raises(ConfigError, match="--convert-ldr .* pass --mode hdr"):
        build_dataset(coco, images, tmp_path / "ldr", mode="ldr", convert_ldr=True,
                      patch_size=PATCH, stride=STRIDE)


# ----------------------------------------------------------------------------- options

def test_command_line_defaults_are_the_options_defaults():
    from skyseg.cli.commands import build_parser
    from skyseg.data.dataset import DatasetOptions
    from skyseg.options import from_args

    args = build_parser().parse_args(["build-dataset", "--coco", "c.json", "--images", "i",
                                      "--out", "o"])
    assert from_args(DatasetOptions, args) == DatasetOptions()
    args = build_parser().parse_args(["build-dataset", "--coco", "c.json", "--images", "i",
                                      "--out", "o", "--split-file", "train=t.txt",
                                      "--split-file", "val=v.txt", "--combine", "s1", "s2"])
    assert args.split_files == ["train=t.txt", "val=v.txt"]
    assert [str(path) for path in args.combine] == ["s1", "s2"]


def test_options_object_and_keywords_are_one_api(ldr_set, tmp_path):
    from skyseg.data.dataset import DatasetOptions

    coco, images = ldr_set
    options = DatasetOptions(mode="ldr", patch_size=PATCH, stride=STRIDE, seed=4)
    by_object = build_dataset(coco, images, tmp_path / "a", options)
    by_keywords = build_dataset(coco, images, tmp_path / "b", mode="ldr", patch_size=PATCH,
                                stride=STRIDE, seed=4)
    assert by_object.splits == by_keywords.splits
    with pytest.raises(TypeError, match="patch_sise"):
        build_dataset(coco, images, tmp_path / "c", options, patch_sise=8)


def test_options_from_a_yaml_section(tmp_path):
    from skyseg.data.dataset import DatasetOptions
    from skyseg.options import from_mapping

    options = from_mapping(DatasetOptions, {"split_files": {"train": "lists/train.txt"},
                                            "like": "runs/a", "seed": "3", "dtype": "float32",
                                            "sky_categories": "Sky, Clouds"},
                           source="c.yml", base=tmp_path)
    assert options == DatasetOptions(split_files={"train": tmp_path / "lists/train.txt"},
                                     like=tmp_path / "runs/a", seed=3, dtype="float32",
                                     sky_categories=("Sky", "Clouds"))
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['shard'\]"):
        from_mapping(DatasetOptions, {"shard": "1/2"}, source="c.yml")

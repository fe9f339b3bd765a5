"""Benchmark of ``skyseg build-dataset`` on one 8192x4096 HDR panorama.

Makes an 8192x4096 half-float EXR by upscaling the OpenEXR sample
``MultiResolution_KernerEnvLatLong.exr`` (1024x512) 8x (bilinear, plus 1 %
noise so that compression figures are not those of a blurred image), labels it with a COCO
polygon drawn on a 2048x1024 "preview" (sky above a wavy horizon, a hole for
a pole), then builds the patch dataset at 256/100 in a child process, once
with float16 and once with float32 patches, and prints:

- peak RSS of the whole build process, and of a process that only imports
  TensorFlow (the part the builder cannot avoid), and of one importing
  skyseg's dataset module without TensorFlow;
- wall time and patches per second;
- bytes on disk per source image, float16 against float32 (and zlib).

The inputs are cached in ``--cache`` (default ``$SKYSEG_BENCH_CACHE`` or
``/tmp/skyseg-bench``), never in the repository; the built datasets are
deleted after they are measured unless ``--keep``.

Usage::

    python scripts/bench_build.py [--cache DIR] [--no-float32] [--zlib] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from harness import CACHE, ROOT, Timer, panorama, run_child

WIDTH, HEIGHT = 8192, 4096
PREVIEW_WIDTH, PREVIEW_HEIGHT = 2048, 1024
STEM = "kerner_8k"
#: Multiplicative noise on the upscaled sample, like a sensor's (see the module doc).
NOISE = 0.01


def make_inputs(cache: Path, copies: int = 1) -> tuple[Path, Path, Path]:
    """The 8K EXR (and ``copies - 1`` hard links to it), COCO labels and a split list."""
    images = cache / "images"
    exr = images / f"{STEM}.exr"
    images.mkdir(parents=True, exist_ok=True)
    if not exr.is_file():
        os.link(panorama(WIDTH, HEIGHT, noise=NOISE, cache=cache), exr)
    names = [STEM] + [f"{STEM}_copy{i}" for i in range(1, copies)]
    for name in names[1:]:
        if not (images / f"{name}.exr").exists():
            os.link(exr, images / f"{name}.exr")
    for stale in images.glob(f"{STEM}_copy*.exr"):
        if stale.stem not in names:
            stale.unlink()
    coco, split = cache / "result.json", cache / "train.txt"
    # The labels are cheap: written each run for the number of copies.
    coco.write_text(json.dumps(coco_labels(names)))
    split.write_text("".join(f"{name}\n" for name in names))
    return exr, coco, split


def coco_labels(names: list[str]) -> dict:
    """COCO labels drawn on a 2048x1024 preview: sky above a wavy horizon, a hole for a pole."""
    xs = np.linspace(0, PREVIEW_WIDTH, 65)
    horizon = PREVIEW_HEIGHT * (0.45 + 0.04 * np.sin(xs / PREVIEW_WIDTH * 6 * math.pi))
    sky = [0.0, 0.0, float(PREVIEW_WIDTH), 0.0]
    for x, y in zip(xs[::-1], horizon[::-1], strict=True):
        sky += [float(x), float(y)]
    pole = [1000.0, 100.0, 1012.0, 100.0, 1012.0, 500.0, 1000.0, 500.0]
    data = {"images": [], "annotations": [],
            "categories": [{"id": 1, "name": "sky"}, {"id": 2, "name": "non-sky"}]}
    for number, name in enumerate(names, start=1):
        data["images"].append({"id": number, "width": PREVIEW_WIDTH,
                               "height": PREVIEW_HEIGHT,
                               "file_name": f"images/0badcafe-{name}.jpg"})
        data["annotations"] += [
            {"id": 2 * number, "image_id": number, "category_id": 1, "segmentation": [sky],
             "iscrowd": 0, "area": 0, "bbox": [0, 0, PREVIEW_WIDTH, PREVIEW_HEIGHT]},
            {"id": 2 * number + 1, "image_id": number, "category_id": 2,
             "segmentation": [pole], "iscrowd": 0, "area": 0, "bbox": [1000, 100, 12, 400]},
        ]
    return data


def measured(arguments: list[str]) -> tuple[float, float, object]:
    """Wall time, peak RSS (MB) and the outcome of a Python child; exits when it reports none."""
    try:
        child = run_child(arguments)
    except RuntimeError as exc:
        sys.exit(str(exc))
    return child.wall_s, child.peak_rss_mb, child


def folder_bytes(root: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in root.glob(pattern) if path.is_file())


def build(cache: Path, coco: Path, split: Path, dtype: str, compression: str,
          keep: bool, copies: int) -> dict:
    out = cache / f"data_{dtype}_{compression}"
    if out.exists():
        shutil.rmtree(out)
    command = ["-m", "skyseg", "build-dataset", "--coco", str(coco),
               "--images", str(cache / "images"), "--out", str(out), "--mode", "hdr",
               "--patch-size", "256", "--stride", "100", "--dtype", dtype,
               "--compression", compression, "--split-file", f"train={split}", "--quiet"]
    wall, rss, done = measured(command)
    if done.returncode != 0:
        sys.exit(f"build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    info = json.loads((out / "dataset.json").read_text())
    patches = sum(info["splits"].values())
    figures = {
        "dtype": dtype, "compression": compression, "wall_s": wall, "peak_rss_mb": rss,
        "patches": patches, "x_bytes": folder_bytes(out, "X_*/*/*.tif") / copies,
        "y_bytes": folder_bytes(out, "Y_*/*/*.png") / copies, "sky": info["stats"]["sky_fraction"],
        "quantiles": info["stats"]["quantiles_percent"]["all"],
    }
    if not keep:
        shutil.rmtree(out)
    return figures


def print_builds(results: list[dict], tf_wall: float, tf_rss: float, copies: int) -> None:
    for figures in results:
        print(f"build 256/100 {figures['dtype']:7s} {figures['compression']:4s}: peak RSS "
              f"{figures['peak_rss_mb']:6.0f} MB (build beyond TF import: "
              f"{figures['peak_rss_mb'] - tf_rss:+.0f} MB), wall "
              f"{figures['wall_s']:5.1f} s (incl. ~{tf_wall:.0f} s imports), "
              f"{figures['patches']} patches, "
              f"{figures['patches'] / figures['wall_s']:6.1f} patches/s "
              f"({figures['patches'] / max(figures['wall_s'] - tf_wall, 1e-9):6.1f} without the "
              f"import)")
    print("bytes on disk per source image (8192x4096):")
    for figures in results:
        total = figures["x_bytes"] + figures["y_bytes"]
        print(f"  {figures['dtype']:7s} {figures['compression']:4s}: images "
              f"{figures['x_bytes'] / 1e6:8.1f} MB + masks {figures['y_bytes'] / 1e6:6.1f} MB = "
              f"{total / 1e6:8.1f} MB ({total * copies / figures['patches'] / 1e3:.1f} kB per "
              "patch)")
    first = results[0]
    print(f"sky fraction of the patches: {first['sky']}; value quantiles (percent): "
          f"{first['quantiles']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--no-float32", action="store_true", help="skip the float32 build")
    parser.add_argument("--zlib", action="store_true", help="also build float16 + zlib")
    parser.add_argument("--keep", action="store_true", help="keep the built datasets")
    parser.add_argument("--copies", type=int, default=1,
                        help="build N images (hard links of the one EXR): the peak of image 2+ "
                             "of a longer build")
    args = parser.parse_args(argv)
    if ROOT in args.cache.resolve().parents or args.cache.resolve() == ROOT:
        sys.exit("--cache must be outside the repository")

    with Timer() as made:
        exr, coco, split = make_inputs(args.cache, args.copies)
    print(f"input: {exr} x {args.copies} ({exr.stat().st_size / 1e6:.1f} MB, {WIDTH}x{HEIGHT} "
          f"half-float EXR; made/checked in {made.seconds:.1f} s)")

    base_wall, base_rss, _ = measured(["-c", "import skyseg.data.dataset"])
    tf_wall, tf_rss, _ = measured(
        ["-c", "from skyseg.backend import import_tensorflow; import_tensorflow()"])
    print(f"python + skyseg.data.dataset import (no TensorFlow): peak RSS {base_rss:7.0f} MB, "
          f"{base_wall:5.1f} s")
    print(f"python + TensorFlow import alone:                peak RSS {tf_rss:7.0f} MB, "
          f"{tf_wall:5.1f} s")

    runs = [("float16", "none")]
    if not args.no_float32:
        runs.append(("float32", "none"))
    if args.zlib:
        runs.append(("float16", "zlib"))
    results = [build(args.cache, coco, split, dtype, compression, args.keep, args.copies)
               for dtype, compression in runs]
    print_builds(results, tf_wall, tf_rss, args.copies)
    print("goal: peak RSS < 1500 MB (whole-image tf.image.extract_patches: ~4800 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

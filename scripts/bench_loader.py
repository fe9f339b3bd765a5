"""Benchmark: patches per second from the training Sequence vs the model's training step.

Writes a temporary dataset of 256x256x3 float16 TIFF patches (HDR, preprocessed,
radiance log-uniform over 5 decades, so that exposure/gamma see the whole stored
range) with PNG masks shaped like real ones (sky above a wavy horizon, a quarter
of them with an ignored band as at an image border), then measures in the same
process:

* the CPU cost of each stage of one patch, in one thread: reading the image
  (the dataset's TIFF layout, and tifffile for reference), reading the mask
  (and a per-pixel noise mask, the worst case for PNG), the checks,
  exposure/gamma (float16 lookup table), the warps of image and mask;
* the :class:`skyseg.data.generators.PatchBatches` loader with augmentation on
  (flip, rotation, shift, zoom, shear, exposure, gamma), with 1 and 2
  worker threads, plus without augmentation for reference (median of
  ``--repeats`` epochs, the system load average printed alongside);
* the training step of a ResNet34 U-Net (random weights, compiled as
  ``skyseg train`` compiles it) on batches of the same size.

It prints both rates and their ratio. The loader must never be the
bottleneck on a GPU; the target is at least 1,000 patches/s. The CPU
milliseconds per patch are also the cores needed per 1,000 patches/s.

Usage:
    python scripts/bench_loader.py [--patches 192] [--batch-size 8] [--steps 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import Table, load_average

from skyseg.data.augmentation import (
    Augmentation,
    augment_values,
    to_float32,
    warp_image,
    warp_mask,
)
from skyseg.data.generators import PatchBatches, _read_image_patch
from skyseg.image.preprocess import Preprocessing
from skyseg.io import write_png, write_tiff

TARGET = 1000.0


def sky_mask(rng: np.random.Generator, size: int, padded: bool) -> np.ndarray:
    """1 above a random wavy horizon, 0 below; ``padded``: the last quarter of columns 255."""
    cols = np.arange(size)
    horizon = (rng.uniform(0.2, 0.8) * size + rng.uniform(-0.2, 0.2) * (cols - size / 2)
               + rng.uniform(2, 12) * np.sin(cols / rng.uniform(8, 40)))
    mask = (np.arange(size)[:, None] < horizon[None, :]).astype(np.uint8)
    if padded:
        mask[:, -size // 4:] = 255
    return mask


def write_patches(root: Path, count: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    preprocessing = Preprocessing(mode="hdr")
    for split, n in (("train", count), ("val", 1)):
        (root / f"X_{split}" / split).mkdir(parents=True)
        (root / f"Y_{split}" / split).mkdir(parents=True)
        for index in range(n):
            radiance = (10.0 ** rng.uniform(-2, 3, size=(size, size, 3))).astype(np.float32)
            write_tiff(root / f"X_{split}" / split / f"{index}.tif",
                       preprocessing.apply(radiance).astype(np.float16))
            write_png(root / f"Y_{split}" / split / f"{index}.png",
                      sky_mask(rng, size, padded=index % 4 == 3))
    (root / "dataset.json").write_text(json.dumps(
        {"mode": "hdr", "patch_size": size, "preprocessing": preprocessing.to_dict()}))


def stage_costs(root: Path, size: int, repeats: int = 3) -> None:
    """Print the CPU milliseconds of each stage of one augmented patch, in this thread."""
    import imagecodecs

    batches = PatchBatches(root, "train", batch_size=1, augmentation=Augmentation())
    augmentation, preprocessing = batches.augmentation, batches.info.preprocessing
    pairs = batches.pairs
    rng = np.random.default_rng(0)
    draws = [augmentation.draw(rng, (size, size)) for _ in pairs]
    noise_png = imagecodecs.png_encode((rng.random((size, size)) > 0.5).astype(np.uint8))
    # One-time work first: the TIFF layout, the float16 tables, OpenCV.
    batches.batch(0, 0)
    image, mask = (array.copy() for array in batches._load(0))
    values = np.empty(image.shape, np.float32)
    x = np.empty((1, size, size, 3), np.float32)
    y = np.empty((1, size, size, 1), np.uint8)

    def timed(function) -> float:
        start = time.process_time()
        for _ in range(repeats):
            for index in range(len(pairs)):
                function(index)
        return (time.process_time() - start) / (repeats * len(pairs)) * 1e3

    def photometric(index: int) -> None:
        draw = draws[index]
        augment_values(image, preprocessing, gamma=draw["gamma"],
                       exposure_ev=draw["exposure_ev"], out=values)

    stages = {
        "read image: TIFF layout (bytes)": lambda i: batches._reader.read(pairs[i][0]),
        "read image: tifffile, for reference": lambda i: _read_image_patch(pairs[i][0]),
        "read mask: PNG": lambda i: imagecodecs.png_decode(pairs[i][1].read_bytes()),
        "read mask: PNG of noise, worst case": lambda i: imagecodecs.png_decode(noise_png),
        "read + check pair (as the loader does)": lambda i: batches._load(i),
        "exposure/gamma (float16 table)": photometric,
        "float16 -> float32 only (no exposure/gamma)": lambda i: to_float32(image, out=values),
        "warp image (bilinear, reflect)": lambda i: warp_image(
            values, draws[i]["matrix"], out=x[0]),
        "warp mask (nearest, 255 outside)": lambda i: warp_mask(
            mask, draws[i]["matrix"], out=y[0, :, :, 0]),
        "whole patch (read, check, augment)": lambda i: batches._fill(0, i, x, y, [draws[i]]),
    }
    print(f"stages of one {size}x{size}x3 patch, CPU ms in one thread ({load_average()}):")
    table = Table([("stage", "<44"), ("CPU ms", ">6.3f")], indent="  ")
    for name, function in stages.items():
        table.print_row(name, timed(function))


def loader_rate(root: Path, batch_size: int, workers: int, augment: bool,
                repeats: int) -> tuple[float, float, float, float]:
    """Patches per second (median, min, max over ``repeats`` epochs) and CPU ms per patch."""
    batches = PatchBatches(root, "train", batch_size=batch_size, workers=workers,
                           augmentation=Augmentation() if augment else None)
    batches.batch(0, 99)  # warm-up: thread pool, work buffers, file cache
    rates, cpu, patches = [], 0.0, 0
    for epoch in range(repeats):
        batches.set_epoch(epoch)
        wall, start = time.perf_counter(), time.process_time()
        count = 0
        for index in range(len(batches)):
            x, _ = batches[index]
            count += len(x)
        rates.append(count / (time.perf_counter() - wall))
        cpu += time.process_time() - start
        patches += count
    batches.close()
    return statistics.median(rates), min(rates), max(rates), cpu / patches * 1e3


def model_rate(batch_size: int, size: int, steps: int, backbone: str) -> tuple[float, str]:
    """(patches per second of training steps, device description)."""
    from skyseg.backend import import_keras
    from skyseg.image import metrics
    from skyseg.training.model import build_model

    keras = import_keras()
    import tensorflow as tf

    model = build_model("unet", backbone)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=metrics.bce_jaccard_loss,
                  metrics=metrics.make_metrics())
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, size, size, 3)).astype(np.float32)
    y = (rng.random((batch_size, size, size, 1)) > 0.5).astype(np.uint8)
    model.train_on_batch(x, y)  # trace and warm up
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    elapsed = time.perf_counter() - start
    gpus = tf.config.list_logical_devices("GPU")
    device = f"{len(gpus)} GPU" if gpus else f"CPU ({os.cpu_count()} cores)"
    return steps * batch_size / elapsed, device


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=192, help="patches in the dataset")
    parser.add_argument("--size", type=int, default=256, help="patch side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs of the loader")
    parser.add_argument("--backbone", default="resnet34")
    parser.add_argument("--no-model", action="store_true", help="measure the loader only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skyseg-bench-") as folder:
        root = Path(folder)
        write_patches(root, args.patches, args.size)
        stage_costs(root, args.size)
        print(f"loader: {args.patches} patches {args.size}x{args.size}x3 float16 TIFF + PNG "
              f"mask, batch {args.batch_size}, median of {args.repeats} epochs "
              f"({load_average()}):")
        plain, low, high, plain_cpu = loader_rate(root, args.batch_size, 1, False, args.repeats)
        print(f"  no augmentation, 1 worker : {plain:8.1f} patches/s  ({low:.0f}-{high:.0f}; "
              f"{plain_cpu:.2f} ms CPU per patch)")
        rates = {}
        for workers in (1, 2):
            rate, low, high, cpu = loader_rate(root, args.batch_size, workers, True,
                                               args.repeats)
            rates[workers] = rate
            print(f"  augmentation, {workers} worker{'s' if workers > 1 else ' '}   : "
                  f"{rate:8.1f} patches/s  ({low:.0f}-{high:.0f}; {cpu:.2f} ms CPU per patch "
                  f"= {cpu:.2f} cores per 1,000 patches/s)")
        print(f"  ({load_average()})")
    if not args.no_model:
        rate, device = model_rate(args.batch_size, args.size, args.steps, args.backbone)
        print(f"model: unet/{args.backbone} training step, batch {args.batch_size}, {device}: "
              f"{rate:8.2f} patches/s ({args.batch_size / rate:.2f} s per step)")
        for workers, loader in rates.items():
            print(f"  ratio loader/model, {workers} worker{'s' if workers > 1 else ''}: "
                  f"{loader / rate:8.1f}x")
    best = max(rates.values())
    verdict = "met" if best >= TARGET else "NOT met on this machine"
    print(f"target >= {TARGET:.0f} patches/s: {verdict} (best {best:.1f} patches/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

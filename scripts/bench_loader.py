"""Benchmark: patches per second from the training Sequence vs the model's training step.

Writes a temporary dataset of 256x256x3 float16 TIFF patches (HDR, preprocessed)
with PNG masks, then measures in the same process:

* the :class:`skyseg.generators.PatchBatches` loader with augmentation on
  (flip, rotation, shift, zoom, shear, exposure, gamma), with 1 and 2
  worker threads, plus without augmentation for reference;
* the training step of a ResNet34 U-Net (random weights, compiled as
  ``skyseg train`` compiles it) on batches of the same size.

It prints both rates and their ratio. The loader must never be the
bottleneck on a GPU; the target is at least 1,000 patches/s.

Usage:
    python scripts/bench_loader.py [--patches 192] [--batch-size 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skyseg.augmentation import Augmentation  # noqa: E402
from skyseg.generators import PatchBatches  # noqa: E402
from skyseg.io import write_png, write_tiff  # noqa: E402
from skyseg.preprocess import Preprocessing  # noqa: E402

TARGET = 1000.0


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
            mask = (rng.random((size, size)) > 0.5).astype(np.uint8)
            write_png(root / f"Y_{split}" / split / f"{index}.png", mask)
    (root / "dataset.json").write_text(json.dumps(
        {"mode": "hdr", "patch_size": size, "preprocessing": preprocessing.to_dict()}))


def loader_rate(root: Path, batch_size: int, workers: int, augment: bool) -> tuple[float, float]:
    """(patches per second of wall time, milliseconds of CPU per patch) over one epoch."""
    batches = PatchBatches(root, "train", batch_size=batch_size, workers=workers,
                           augmentation=Augmentation() if augment else None)
    batches.batch(0, 99)  # warm-up: thread pool, work buffers, file cache
    wall, cpu = time.perf_counter(), time.process_time()
    patches = 0
    for index in range(len(batches)):
        x, _ = batches[index]
        patches += len(x)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    batches.close()
    return patches / wall, cpu / patches * 1e3


def model_rate(batch_size: int, size: int, steps: int, backbone: str) -> tuple[float, str]:
    """(patches per second of training steps, device description)."""
    from skyseg import metrics
    from skyseg.model import build_model, import_keras

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


def compare_warps(size: int, repeats: int = 20) -> None:
    """CPU milliseconds per patch of the ways to warp a (size, size, 3) patch bilinearly."""
    from scipy import ndimage
    from skimage import transform

    from skyseg.augmentation import random_affine, warp_image, warp_mask

    rng = np.random.default_rng(0)
    image = rng.random((size, size, 3)).astype(np.float32)
    mask = (rng.random((size, size)) > 0.5).astype(np.uint8)
    matrix = random_affine(rng, (size, size))

    def timed(function) -> float:
        function()
        start = time.process_time()
        for _ in range(repeats):
            function()
        return (time.process_time() - start) / repeats * 1e3

    def scipy_warp():
        for channel in range(3):
            ndimage.affine_transform(image[:, :, channel], matrix[:2, :2], matrix[:2, 2],
                                     order=1, mode="mirror")

    tform = transform.AffineTransform(matrix=matrix[[1, 0, 2]][:, [1, 0, 2]])
    results = {
        "skyseg numpy bilinear (image)": timed(lambda: warp_image(image, matrix)),
        "skyseg numpy nearest (mask)": timed(lambda: warp_mask(mask, matrix)),
        "scipy.ndimage.affine_transform order=1 (image)": timed(scipy_warp),
        "skimage.transform.warp order=1 (image)": timed(
            lambda: transform.warp(image, tform, order=1, mode="symmetric")),
    }
    try:
        from skyseg.model import import_keras

        import_keras()
        import tensorflow as tf

        batch = np.repeat(image[None], 8, axis=0)
        inverse = matrix  # output -> source, in (row, col); TF wants (x, y) order
        flat = np.array([inverse[1, 1], inverse[1, 0], inverse[1, 2], inverse[0, 1],
                         inverse[0, 0], inverse[0, 2], 0, 0], np.float32)
        transforms = np.tile(flat, (8, 1))

        def tf_warp():
            tf.raw_ops.ImageProjectiveTransformV3(
                images=batch, transforms=transforms, output_shape=[size, size],
                fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT").numpy()

        results["tf ImageProjectiveTransformV3 on CPU (image, batch of 8)"] = timed(tf_warp) / 8
    except ImportError:
        pass
    print(f"warp of one {size}x{size}x3 float32 patch, CPU ms:")
    for name, value in results.items():
        print(f"  {name:58s} {value:7.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=192, help="patches in the dataset")
    parser.add_argument("--size", type=int, default=256, help="patch side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--backbone", default="resnet34")
    parser.add_argument("--no-model", action="store_true", help="measure the loader only")
    parser.add_argument("--warps", action="store_true",
                        help="also compare numpy, scipy, skimage and TensorFlow warps")
    args = parser.parse_args(argv)
    if args.warps:
        compare_warps(args.size)
    with tempfile.TemporaryDirectory(prefix="skyseg-bench-") as folder:
        root = Path(folder)
        write_patches(root, args.patches, args.size)
        print(f"loader: {args.patches} patches {args.size}x{args.size}x3 float16 TIFF + PNG "
              f"mask, batch {args.batch_size}")
        plain, plain_cpu = loader_rate(root, args.batch_size, 1, augment=False)
        print(f"  no augmentation, 1 worker : {plain:8.1f} patches/s  "
              f"({plain_cpu:.2f} ms CPU per patch)")
        rates = {}
        for workers in (1, 2):
            rate, cpu = loader_rate(root, args.batch_size, workers, augment=True)
            rates[workers] = rate
            print(f"  augmentation, {workers} worker{'s' if workers > 1 else ' '}   : "
                  f"{rate:8.1f} patches/s  ({cpu:.2f} ms CPU per patch)")
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

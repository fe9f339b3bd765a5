"""Real-data benchmark: CamVid sky, trained from scratch for a time budget, scored at full size.

Usage:
    python scripts/bench_camvid.py [--minutes 30] [--work outputs/camvid-bench]

1. Builds an LDR patch dataset from ../shared/data/camvid-sky with its
   standard split (train.txt: 367 images, val.txt: 101), reused when present.
   By default images are shrunk by 0.5 (240x180) and cut into 128-px patches:
   on a CPU, 30 minutes then cover two passes over the training set.
2. Trains the ResNet34 U-Net from random weights (no download) until the
   time budget is spent (``skyseg train --max-minutes``): training stops at
   the end of the epoch after which another epoch would not fit (epochs are
   ``--steps-per-epoch`` batches; the budget counts from the start of training
   setup).
3. Runs ``skyseg evaluate`` on the 101 val images at full size, through the
   predict path, against the COCO polygons.

Prints val IoU, Dice and boundary F (mean over images and pooled), training
time and training patches per second. Leaves the run folder
(``WORK/run``) so the model can be evaluated on other data with
``skyseg evaluate WORK/run ...``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared/data/camvid-sky")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "camvid-bench")
    parser.add_argument("--scale", type=float, default=0.5,
                        help="shrink factor of images for training and prediction")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backbone", default="resnet34")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps-per-epoch", type=int, default=150,
                        help="batches between validations (validation costs ~40 s on a CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from skyseg.dataset import build_dataset
    from skyseg.evaluate import evaluate_model
    from skyseg.log import configure_logging
    from skyseg.train import train_model

    configure_logging(0)
    camvid = args.camvid
    if not (camvid / "result.json").is_file():
        sys.exit(f"CamVid sky data not found in {camvid} (pass --camvid)")
    work = args.work
    dataset = work / f"dataset-{args.scale:g}-{args.patch_size}-{args.stride}"
    run_dir = work / "run"
    evaluation = work / "evaluation"

    start = time.perf_counter()
    build_dataset(camvid / "result.json", camvid / "images", dataset, mode="ldr",
                          patch_size=args.patch_size, stride=args.stride, seed=args.seed,
                          scale=args.scale,
                          split_files={"train": camvid / "train.txt", "val": camvid / "val.txt"})
    build_seconds = time.perf_counter() - start
    counts = json.loads((dataset / "dataset.json").read_text())["splits"]

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a benchmark run starts from scratch
    start = time.perf_counter()
    result = train_model(dataset, run_dir, epochs=100000, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, backbone=args.backbone,
                         encoder_weights=None, seed=args.seed, patience=100000,
                         steps_per_epoch=args.steps_per_epoch, max_minutes=args.minutes)
    train_seconds = time.perf_counter() - start
    patches_seen = result.epochs * args.steps_per_epoch * args.batch_size

    start = time.perf_counter()
    scores = evaluate_model(run_dir, camvid / "images", coco=camvid / "result.json",
                            only=camvid / "val.txt", out_dir=evaluation)
    evaluate_seconds = time.perf_counter() - start
    summary = scores.summary

    print()
    print(f"CamVid sky benchmark ({args.backbone} U-Net from scratch, {args.minutes:g} min budget)")
    print(f"  dataset: {counts} patches of {args.patch_size} px (stride {args.stride}, images "
          f"shrunk by {args.scale:g}), "
          f"built in {build_seconds:.0f} s -> {dataset}")
    print(f"  training: {result.epochs} epochs x {args.steps_per_epoch} steps x batch "
          f"{args.batch_size} = {patches_seen} patches in {train_seconds / 60:.1f} min "
          f"({patches_seen / train_seconds:.2f} patches/s); best val-patch IoU "
          f"{result.best_val_iou:.4f} at epoch {result.best_epoch}")
    print(f"  evaluation on {summary['images']} val images at full size "
          f"({evaluate_seconds:.0f} s) -> {evaluation}")
    for metric in ("iou", "dice", "boundary_f", "precision", "recall"):
        print(f"    {metric:<11} mean {summary['mean'][metric]:.4f}  "
              f"median {summary['median'][metric]:.4f}")
    print(f"    pooled IoU {summary['pooled']['iou']:.4f}, pooled Dice {summary['pooled']['dice']:.4f}")
    print(f"  run folder (kept): {run_dir}")


if __name__ == "__main__":
    main()

"""Few-shot adaptation benchmark: fine-tune a base model on 10 labelled images of a new scene.

Usage:
    python scripts/bench_finetune.py [--base-minutes 30] [--minutes 10] [--labelled 10]
                                     [--work outputs/finetune-bench]

CamVid's three video sequences stand for three cameras (file prefixes
0001TP: 62 images, 0006R0: 101, 0016E5: 305 in ../shared/data/camvid-sky):

1. base: a ResNet34 U-Net trained from random weights on 0006R0 + 0016E5
   (85/15 split by image) for ``--base-minutes`` (``skyseg train
   --max-minutes``); reused from ``WORK/base`` when it is there
   (``--retrain-base`` trains it again).
2. the new camera: ``--labelled`` images of 0001TP, spread over the sequence
   (seeded), are "labelled" (their COCO polygons are used), built into a
   patch dataset with ``build-dataset --like WORK/base`` and split by image
   into train and val (val: a fifth, at least one); the other 0001TP images
   are the test set and are never used for training or validation.
3. three models scored at full size on the test images, through the predict
   path (``skyseg evaluate``):
   - zero-shot: the base model as it is;
   - fine-tuned: ``skyseg train --init WORK/base`` on the labelled images
     within ``--minutes`` (``--max-minutes``), default learning rate (a tenth
     of the base run's), optionally ``--freeze-encoder-epochs``;
   - from scratch: the same images, the same time budget, random weights,
     the base run's learning rate.

Prints, per model: test IoU (mean, median, pooled), Dice, boundary F,
training epochs and minutes. Figures on a shared CPU are noisy; compare the
three rows of one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from harness import ROOT, SHARED_DATA, Table, Timer

SEQUENCES = ("0001TP", "0006R0", "0016E5")
SCORES = Table([("model", "<22"), ("IoU mean", ">9.4f"), ("median", ">8.4f"),
                ("pooled", ">8.4f"), ("Dice", ">7.4f"), ("bound.F", ">8.4f"),
                ("epochs", ">8"), ("minutes", ">8.1f")], indent="  ", gap="")


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=SHARED_DATA / "camvid-sky")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "finetune-bench")
    parser.add_argument("--target", default="0001TP", choices=SEQUENCES,
                        help="the sequence that plays the new camera")
    parser.add_argument("--labelled", type=int, default=10, help="labelled images of the target")
    parser.add_argument("--base-minutes", type=float, default=30.0,
                        help="training budget of the base model")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="training budget of the fine-tuned and from-scratch models")
    parser.add_argument("--retrain-base", action="store_true",
                        help="train the base model again even when WORK/base exists")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backbone", default="resnet34")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="base and from-scratch learning rate (fine-tuning: a tenth)")
    parser.add_argument("--base-steps-per-epoch", type=int, default=150)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="fine-tune/scratch batches per epoch (default: one pass over the "
                             "labelled patches)")
    parser.add_argument("--freeze-encoder-epochs", type=int, default=0)
    parser.add_argument("--patience", type=int, default=1000,
                        help="fine-tune/scratch early stopping (default: the budget decides)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def pick_images(stems: list[str], target: str, labelled: int, seed: int) -> dict[str, list[str]]:
    """The base images (other sequences) and the target's labelled train/val and test images.

    The labelled images are spread over the target sequence: one random frame in each of
    ``labelled`` equal stretches (seeded); a fifth of them (at least one) are val.
    """
    by_sequence = {s: [stem for stem in stems if stem.startswith(s)] for s in SEQUENCES}
    frames = by_sequence[target]
    if not 2 <= labelled < len(frames):
        sys.exit(f"--labelled must be between 2 and {len(frames) - 1}")
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, len(frames), labelled + 1).astype(int)
    picked = [frames[int(rng.integers(lo, hi))] for lo, hi in zip(edges[:-1], edges[1:],
                                                                   strict=True)]
    val = sorted(rng.choice(picked, size=max(1, labelled // 5), replace=False).tolist())
    return {"base": [stem for s in SEQUENCES if s != target for stem in by_sequence[s]],
            "picked": picked, "train": [stem for stem in picked if stem not in val],
            "val": val, "test": [stem for stem in frames if stem not in picked]}


def write_lists(lists: Path, chosen: dict[str, list[str]]) -> None:
    lists.mkdir(parents=True, exist_ok=True)
    for name in ("base", "train", "val", "test"):
        (lists / f"{name}.txt").write_text("\n".join(chosen[name]) + "\n")


def _split_lists(lists: Path, stems: list[str], seed: int) -> dict[str, Path]:
    """85/15 split of the base images, by image, seeded; written as list files."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(stems))
    cut = int(round(len(stems) * 0.85))
    parts = {"train": sorted(stems[i] for i in order[:cut]),
             "val": sorted(stems[i] for i in order[cut:])}
    files = {}
    for name, values in parts.items():
        files[name] = lists / f"base-{name}.txt"
        files[name].write_text("\n".join(values) + "\n")
    return files


def base_model(args, coco: Path, base_stems: list[str]) -> tuple[Path, dict]:
    """The base run (trained here, or reused from ``WORK/base``) and its epochs and minutes."""
    from skyseg.data.dataset import build_dataset
    from skyseg.training.train import train_model

    base_run = args.work / "base"
    if not args.retrain_base and (base_run / "model_best.h5").is_file():
        print(f"reusing the base model in {base_run} (--retrain-base to train it again)")
        return base_run, {}
    base_data = args.work / f"base-data-{args.scale:g}-{args.patch_size}-{args.stride}"
    with Timer() as build:
        build_dataset(coco, args.camvid / "images", base_data, mode="ldr", scale=args.scale,
                      patch_size=args.patch_size, stride=args.stride, seed=args.seed,
                      split_files=_split_lists(args.work / "lists", base_stems, args.seed))
    print(f"base dataset built in {build.seconds:.0f} s")
    if base_run.exists():
        shutil.rmtree(base_run)
    with Timer() as training:
        result = train_model(base_data, base_run, epochs=100000, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, backbone=args.backbone,
                             encoder_weights=None, seed=args.seed, patience=100000,
                             steps_per_epoch=args.base_steps_per_epoch,
                             max_minutes=args.base_minutes)
    return base_run, {"epochs": result.epochs, "minutes": training.seconds / 60}


def few_shot_runs(args, few: Path, base_run: Path) -> dict[str, tuple[Path, dict]]:
    """Fine-tuned (``--init`` the base) and from scratch: the same images, the same budget."""
    from skyseg.training.train import train_model

    rows = {}
    for name, folder, options in (
        ("fine-tuned (--init)", "finetuned", {
            "init": base_run, "freeze_encoder_epochs": args.freeze_encoder_epochs}),
        ("from scratch", "scratch", {"backbone": args.backbone, "encoder_weights": None,
                                     "learning_rate": args.learning_rate}),
    ):
        run_dir = args.work / folder
        if run_dir.exists():
            shutil.rmtree(run_dir)
        with Timer() as training:
            result = train_model(few, run_dir, epochs=100000, batch_size=args.batch_size,
                                 seed=args.seed, patience=args.patience,
                                 steps_per_epoch=args.steps_per_epoch, max_minutes=args.minutes,
                                 **options)
        rows[name] = (run_dir, {"epochs": result.epochs, "minutes": training.seconds / 60,
                                "stopped_on_budget": result.stopped_on_budget})
    return rows


def print_scores(args, chosen: dict, splits: dict, scores: dict, rows: dict) -> None:
    print()
    print(f"Few-shot adaptation benchmark: new camera = CamVid {args.target}; base trained on "
          f"{' + '.join(s for s in SEQUENCES if s != args.target)} ({args.backbone} U-Net, "
          f"images shrunk by {args.scale:g}, {args.patch_size}-px patches)")
    print(f"  labelled: {len(chosen['picked'])} images ({len(chosen['train'])} train / "
          f"{len(chosen['val'])} val; patches {splits}); test: the other "
          f"{len(chosen['test'])} images of {args.target}, at full size")
    print(f"  budgets: base {args.base_minutes:g} min, fine-tune and scratch {args.minutes:g} "
          "min each (shared CPU: times are noisy)")
    SCORES.print_header()
    for name, summary in scores.items():
        info = rows[name][1]
        SCORES.print_row(name, summary["mean"]["iou"], summary["median"]["iou"],
                         summary["pooled"]["iou"], summary["mean"]["dice"],
                         summary["mean"]["boundary_f"], info.get("epochs"), info.get("minutes"))
    print(f"  runs and evaluations (kept): {args.work}")


def main(argv=None) -> None:
    args = parse_arguments(argv)

    from skyseg.data.dataset import build_dataset
    from skyseg.evaluation.evaluate import evaluate_model
    from skyseg.labels.annotations import load_coco
    from skyseg.log import configure_logging

    configure_logging(0)
    coco = args.camvid / "result.json"
    if not coco.is_file():
        sys.exit(f"CamVid sky data not found in {args.camvid} (pass --camvid)")
    chosen = pick_images(sorted(load_coco(coco).stems()), args.target, args.labelled, args.seed)
    lists = args.work / "lists"
    write_lists(lists, chosen)
    base_run, base_info = base_model(args, coco, chosen["base"])

    # The labelled images of the new camera, preprocessed like the base run.
    few = args.work / f"labelled-{args.target}-{args.labelled}-seed{args.seed}"
    if few.exists():
        shutil.rmtree(few)
    build_dataset(coco, args.camvid / "images", few, like=base_run, seed=args.seed,
                  split_files={"train": lists / "train.txt", "val": lists / "val.txt"})
    splits = json.loads((few / "dataset.json").read_text())["splits"]

    rows = {"base, zero-shot": (base_run, base_info), **few_shot_runs(args, few, base_run)}
    scores = {name: evaluate_model(run_dir, args.camvid / "images", coco=coco,
                                   only=chosen["test"],
                                   out_dir=args.work / "evaluation" / run_dir.name).summary
              for name, (run_dir, _) in rows.items()}
    print_scores(args, chosen, splits, scores, rows)


if __name__ == "__main__":
    main()

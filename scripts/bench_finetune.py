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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEQUENCES = ("0001TP", "0006R0", "0016E5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared/data/camvid-sky")
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
    args = parser.parse_args()

    import numpy as np

    from skyseg.data.dataset import build_dataset
    from skyseg.evaluation.evaluate import evaluate_model
    from skyseg.labels.annotations import load_coco
    from skyseg.log import configure_logging
    from skyseg.training.train import train_model

    configure_logging(0)
    camvid, work = args.camvid, args.work
    coco = camvid / "result.json"
    if not coco.is_file():
        sys.exit(f"CamVid sky data not found in {camvid} (pass --camvid)")
    stems = sorted(load_coco(coco).stems())
    by_sequence = {s: [stem for stem in stems if stem.startswith(s)] for s in SEQUENCES}
    target = by_sequence[args.target]
    base_stems = [stem for s in SEQUENCES if s != args.target for stem in by_sequence[s]]
    if not 2 <= args.labelled < len(target):
        sys.exit(f"--labelled must be between 2 and {len(target) - 1}")
    rng = np.random.default_rng(args.seed)
    # Spread over the sequence: one random frame in each of `labelled` equal stretches.
    edges = np.linspace(0, len(target), args.labelled + 1).astype(int)
    picked = [target[int(rng.integers(lo, hi))] for lo, hi in zip(edges[:-1], edges[1:],
                                                                   strict=True)]
    val_count = max(1, args.labelled // 5)
    val = sorted(rng.choice(picked, size=val_count, replace=False).tolist())
    train = [stem for stem in picked if stem not in val]
    test = [stem for stem in target if stem not in picked]
    lists = work / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    for name, values in (("base", base_stems), ("train", train), ("val", val), ("test", test)):
        (lists / f"{name}.txt").write_text("\n".join(values) + "\n")

    # 1. base model
    base_run = work / "base"
    base_info = {}
    if args.retrain_base or not (base_run / "model_best.h5").is_file():
        base_data = work / f"base-data-{args.scale:g}-{args.patch_size}-{args.stride}"
        start = time.perf_counter()
        build_dataset(coco, camvid / "images", base_data, mode="ldr", scale=args.scale,
                      patch_size=args.patch_size, stride=args.stride, seed=args.seed,
                      split_files=_split_lists(lists, base_stems, args.seed))
        print(f"base dataset built in {time.perf_counter() - start:.0f} s")
        if base_run.exists():
            shutil.rmtree(base_run)
        start = time.perf_counter()
        result = train_model(base_data, base_run, epochs=100000, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, backbone=args.backbone,
                             encoder_weights=None, seed=args.seed, patience=100000,
                             steps_per_epoch=args.base_steps_per_epoch,
                             max_minutes=args.base_minutes)
        base_info = {"epochs": result.epochs, "minutes": (time.perf_counter() - start) / 60}
    else:
        print(f"reusing the base model in {base_run} (--retrain-base to train it again)")

    # 2. the labelled images of the new camera, preprocessed like the base run
    few = work / f"labelled-{args.target}-{args.labelled}-seed{args.seed}"
    if few.exists():
        shutil.rmtree(few)
    build_dataset(coco, camvid / "images", few, like=base_run, seed=args.seed,
                  split_files={"train": lists / "train.txt", "val": lists / "val.txt"})
    splits = json.loads((few / "dataset.json").read_text())["splits"]

    # 3. fine-tuned and from scratch, same data, same budget
    rows = {"base, zero-shot": (base_run, base_info)}
    for name, folder, options in (
        ("fine-tuned (--init)", "finetuned", {
            "init": base_run, "freeze_encoder_epochs": args.freeze_encoder_epochs}),
        ("from scratch", "scratch", {"backbone": args.backbone, "encoder_weights": None,
                                     "learning_rate": args.learning_rate}),
    ):
        run_dir = work / folder
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        result = train_model(few, run_dir, epochs=100000, batch_size=args.batch_size,
                             seed=args.seed, patience=args.patience,
                             steps_per_epoch=args.steps_per_epoch, max_minutes=args.minutes,
                             **options)
        rows[name] = (run_dir, {"epochs": result.epochs,
                                "minutes": (time.perf_counter() - start) / 60,
                                "stopped_on_budget": result.stopped_on_budget})

    scores = {}
    for name, (run_dir, _) in rows.items():
        evaluation = evaluate_model(run_dir, camvid / "images", coco=coco, only=test,
                                    out_dir=work / "evaluation" / run_dir.name)
        scores[name] = evaluation.summary

    print()
    print(f"Few-shot adaptation benchmark: new camera = CamVid {args.target}; base trained on "
          f"{' + '.join(s for s in SEQUENCES if s != args.target)} ({args.backbone} U-Net, "
          f"images shrunk by {args.scale:g}, {args.patch_size}-px patches)")
    print(f"  labelled: {len(picked)} images ({len(train)} train / {len(val)} val; patches "
          f"{splits}); test: the other {len(test)} images of {args.target}, at full size")
    print(f"  budgets: base {args.base_minutes:g} min, fine-tune and scratch {args.minutes:g} "
          "min each (shared CPU: times are noisy)")
    header = (f"  {'model':<22}{'IoU mean':>9}{'median':>8}{'pooled':>8}{'Dice':>7}"
              f"{'bound.F':>8}{'epochs':>8}{'minutes':>8}")
    print(header)
    for name, summary in scores.items():
        info = rows[name][1]
        epochs = info.get("epochs", "-")
        minutes = f"{info['minutes']:.1f}" if "minutes" in info else "-"
        print(f"  {name:<22}{summary['mean']['iou']:>9.4f}{summary['median']['iou']:>8.4f}"
              f"{summary['pooled']['iou']:>8.4f}{summary['mean']['dice']:>7.4f}"
              f"{summary['mean']['boundary_f']:>8.4f}{epochs!s:>8}{minutes:>8}")
    print(f"  runs and evaluations (kept): {work}")


def _split_lists(lists: Path, stems: list[str], seed: int) -> dict[str, Path]:
    """85/15 split of the base images, by image, seeded; written as list files."""
    import numpy as np

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


if __name__ == "__main__":
    main()

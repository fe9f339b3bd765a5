"""Real-data benchmark: CamVid sky, trained from scratch for a time budget, scored at full size.

Usage:
    python scripts/bench_camvid.py [--minutes 30] [--protocols standard,loso] [--seeds 0]

Protocols (each trains its own model from random weights, no download):

* ``standard``: CamVid's lists (train.txt: 367 images, val.txt: 101). Both
  lists hold sequence 0016E5, so this val number flatters the model: it has
  seen the same street minutes earlier.
* ``loso`` (leave one sequence out): train on the two other sequences and
  validate on ``--holdout`` (default 0001TP, 62 images), a street the model
  never saw. This is the number that speaks for new images.

For each protocol and seed: a dataset of images shrunk by ``--scale`` and cut
into ``--patch-size`` patches (default: four 160-px patches, each 2/3 of the
240x180 image, so context still decides; 2.6x cheaper than one padded 256-px
patch per image, hence 2.6x more training steps in the budget), the number of
epochs that fits the time budget (measured by two short runs of skyseg's own
training, so the cosine schedule ends at the budget; ``--epochs`` fixes it),
training with skyseg's default recipe (``skyseg train --max-minutes`` stops
after the last epoch that fits, should the estimate be off), then ``skyseg evaluate`` on the
held-out images at full size through the predict path.

Prints, per run: the seed, the per-epoch validation IoU (validation
patches, averaged weights), the worst drop below the best so far after the
first 20 % of epochs, and the full-size IoU (mean over images and pooled),
Dice, boundary F, precision, recall, scored on the labels as drawn and
again without the sky gaps between bare branches (``skyseg evaluate
--ignore-sky-gaps``: the share of the error that is one labelling convention
against another); with several seeds, their spread. The datasets are built
with ``--ignore-sky-gaps`` (those gaps left out of training; CamVid's
sequences label them differently); ``--keep-sky-gaps`` trains on them as
labelled. The augmentation is ``skyseg train``'s default for LDR data
(sky exposure and texture included); ``--augment NAME=VALUE`` changes it.
Leaves the run folders in ``WORK/<protocol>-seed<N>/run``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from harness import ROOT, SHARED_DATA, Timer

from skyseg.training.model import ARCHITECTURES  # TensorFlow only when a model is built

SEQUENCES = ("0001TP", "0006R0", "0016E5")


def worst_drop(values: list[float], skip_fraction: float = 0.2) -> float:
    """Largest fall below the best value so far, after the first ``skip_fraction`` of epochs."""
    start = int(len(values) * skip_fraction)
    best, drop = float("-inf"), 0.0
    for index, value in enumerate(values):
        if index >= start and best > float("-inf"):
            drop = max(drop, best - value)
        best = max(best, value)
    return drop


def protocol_lists(protocol: str, camvid: Path, holdout: str, folder: Path) -> dict[str, Path]:
    """``{"train": list file, "val": list file}`` of image stems for the protocol."""
    if protocol == "standard":
        return {"train": camvid / "train.txt", "val": camvid / "val.txt"}
    stems = sorted(path.stem for path in (camvid / "images").glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    lists = {"train": [s for s in stems if not s.startswith(holdout + "_")],
             "val": [s for s in stems if s.startswith(holdout + "_")]}
    files = {}
    for split, names in lists.items():
        files[split] = folder / f"loso-{holdout}-{split}.txt"
        files[split].write_text("\n".join(names) + "\n")
    return files


def measure_epoch_seconds(dataset: Path, backbone: str, batch_size: int, seed: int,
                          work: Path, train_patches: int, architecture: str = "unet") -> tuple:
    """Seconds of one training epoch and of one validation pass, measured on this machine.

    Two short runs of skyseg's own training (the same data loading, augmentation,
    weight average and validation as the real run), 2 epochs of 4 and of 16 steps: the
    difference of their second epochs is 12 training steps, the rest is validation.
    """
    from skyseg.training.train import train_model

    seconds = {}
    for steps in (4, 16):
        folder = work / f"timing-{steps}"
        shutil.rmtree(folder, ignore_errors=True)
        result = train_model(dataset, folder, epochs=2, steps_per_epoch=steps,
                             batch_size=batch_size, architecture=architecture,
                             backbone=backbone, encoder_weights=None, seed=seed,
                             patience=100000)
        seconds[steps] = float(result.history[-1]["seconds"])
        shutil.rmtree(folder, ignore_errors=True)
    step = max(seconds[16] - seconds[4], 1e-3) / 12
    val_seconds = max(seconds[4] - 4 * step, 0.0)
    return step * max(1, train_patches // batch_size), val_seconds


def augmentation(args):
    """The default augmentation of LDR data with the ``--augment NAME=VALUE`` changes."""
    from skyseg.data.augmentation import Augmentation, parse_changes
    from skyseg.errors import ConfigError

    try:
        return Augmentation.default("ldr").changed(parse_changes(args.augment,
                                                                 option="--augment"))
    except ConfigError as exc:
        sys.exit(str(exc))


def run_one(protocol: str, seed: int, args, camvid: Path) -> dict:
    from skyseg.data.dataset import build_dataset
    from skyseg.evaluation.evaluate import evaluate_model
    from skyseg.training.train import train_model

    work = args.work / f"{protocol}-seed{seed}"
    lists = protocol_lists(protocol, camvid, args.holdout, args.work)
    tag = protocol if protocol == "standard" else f"loso-{args.holdout}"
    gaps = "-gaps" if args.ignore_sky_gaps else ""
    dataset = args.work / f"dataset-{tag}-{args.scale:g}-{args.patch_size}-{args.stride}{gaps}"
    with Timer() as build:
        build_dataset(camvid / "result.json", camvid / "images", dataset, mode="ldr",
                      patch_size=args.patch_size, stride=args.stride, seed=0, scale=args.scale,
                      split_files=lists, ignore_sky_gaps=args.ignore_sky_gaps)
    counts = json.loads((dataset / "dataset.json").read_text())["splits"]

    budget = args.minutes * 60.0
    if args.epochs:  # as many as another run had, to compare seeds at one schedule
        epoch_seconds, val_seconds, epochs = float("nan"), 0.0, args.epochs
    else:
        epoch_seconds, val_seconds = measure_epoch_seconds(dataset, args.backbone,
                                                           args.batch_size, seed, work,
                                                           counts["train"], args.architecture)
        epochs = max(1, int(budget / (epoch_seconds + val_seconds)))
    run_dir = work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a benchmark run starts from scratch
    with Timer() as training:
        result = train_model(dataset, run_dir, epochs=epochs, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, architecture=args.architecture,
                             backbone=args.backbone,
                             encoder_weights=None, seed=seed, patience=100000,
                             max_minutes=args.minutes, augmentation=augmentation(args),
                             weight_decay=args.weight_decay)
    with Timer() as evaluation:
        scores = evaluate_model(run_dir, camvid / "images", coco=camvid / "result.json",
                                only=lists["val"], out_dir=work / "evaluation")
    neutral = evaluate_model(run_dir, camvid / "images", coco=camvid / "result.json",
                             only=lists["val"], out_dir=work / "evaluation-without-gaps",
                             ignore_sky_gaps=True)
    val_ious = [row["val_iou"] for row in result.history]
    return {"protocol": protocol, "seed": seed, "counts": counts, "dataset": dataset,
            "build_seconds": build.seconds, "planned_epochs": epochs,
            "epoch_estimate": epoch_seconds + val_seconds, "epochs": result.epochs,
            "train_seconds": training.seconds, "evaluate_seconds": evaluation.seconds,
            "val_ious": val_ious, "worst_drop": worst_drop(val_ious),
            "best_epoch": result.best_epoch, "best_val_iou": result.best_val_iou,
            "summary": scores.summary, "neutral": neutral.summary, "run_dir": run_dir,
            "gap_share": sum(row["ignored"] for row in neutral.rows) / max(len(neutral.rows), 1)}


def report(run: dict, args) -> None:
    summary = run["summary"]
    print()
    print(f"[{run['protocol']}] seed {run['seed']}: {args.architecture} with a {args.backbone} "
          f"encoder from scratch, {args.minutes:g} min budget")
    print(f"  augmentation: {augmentation(args)}; weight decay {args.weight_decay:g}; "
          f"sky gaps {'ignored' if args.ignore_sky_gaps else 'as labelled'}")
    print(f"  dataset: {run['counts']} patches of {args.patch_size} px (stride {args.stride}, "
          f"images shrunk by {args.scale:g}), built in {run['build_seconds']:.0f} s")
    print(f"  training: {run['epochs']} of {run['planned_epochs']} planned epochs "
          f"(estimated {run['epoch_estimate']:.0f} s each) in {run['train_seconds'] / 60:.1f} "
          f"min; best epoch {run['best_epoch']}")
    print("  val IoU per epoch (validation patches, averaged weights): "
          + " ".join(f"{v:.3f}" for v in run["val_ious"]))
    print(f"  worst drop below the best so far (after the first 20 % of epochs): "
          f"{run['worst_drop']:.4f}")
    print(f"  full-size evaluation of {summary['images']} held-out images "
          f"({run['evaluate_seconds']:.0f} s):")
    for metric in ("iou", "dice", "boundary_f", "precision", "recall"):
        print(f"    {metric:<11} mean {summary['mean'][metric]:.4f}  "
              f"median {summary['median'][metric]:.4f}")
    print(f"    pooled IoU {summary['pooled']['iou']:.4f}, pooled Dice "
          f"{summary['pooled']['dice']:.4f}")
    neutral = run["neutral"]
    print(f"  without the sky gaps between bare branches (either labelling convention; "
          f"{run['gap_share'] * 100:.2f} % of the pixels): pooled IoU "
          f"{neutral['pooled']['iou']:.4f}, mean {neutral['mean']['iou']:.4f}, precision "
          f"{neutral['mean']['precision']:.4f}, recall {neutral['mean']['recall']:.4f}")
    print(f"  run folder (kept): {run['run_dir']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training time budget of each run")
    parser.add_argument("--protocols", default="standard,loso",
                        help="comma-separated: standard, loso")
    parser.add_argument("--holdout", default="0001TP", choices=SEQUENCES,
                        help="the sequence left out by the loso protocol")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--camvid", type=Path, default=SHARED_DATA / "camvid-sky")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "camvid-bench")
    parser.add_argument("--scale", type=float, default=0.5,
                        help="shrink factor of images for training and prediction")
    parser.add_argument("--patch-size", type=int, default=160,
                        help="160 at scale 0.5: four patches of 2/3 of the 240x180 image; "
                             "256 holds the whole image (padded)")
    parser.add_argument("--stride", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--architecture", default="unet", choices=ARCHITECTURES,
                        help="decoder: linknet's steps cost about 0.6 of the U-Net's")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many epochs instead of fitting them to the budget "
                             "(still cut by --minutes)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--keep-sky-gaps", dest="ignore_sky_gaps", action="store_false",
                        help="train on the sky gaps between bare branches as labelled (default: "
                             "build the datasets with skyseg build-dataset --ignore-sky-gaps, "
                             "so neither sequence's convention is taught)")
    parser.add_argument("--augment", action="append", default=[], metavar="NAME=VALUE",
                        help="change one augmentation range, e.g. white_balance=0.5 "
                             "(repeatable; names of skyseg.data.augmentation.Augmentation)")
    args = parser.parse_args()

    from skyseg.log import configure_logging

    configure_logging(0)
    camvid = args.camvid
    if not (camvid / "result.json").is_file():
        sys.exit(f"CamVid sky data not found in {camvid} (pass --camvid)")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs = []
    for protocol in args.protocols.split(","):
        if protocol not in ("standard", "loso"):
            sys.exit(f"unknown protocol {protocol!r}; choose standard or loso")
        for seed in seeds:
            runs.append(run_one(protocol, seed, args, camvid))
            report(runs[-1], args)
    print()
    print("summary (full-size pooled IoU on the held-out images of each protocol):")
    for protocol in args.protocols.split(","):
        pooled = [r["summary"]["pooled"]["iou"] for r in runs if r["protocol"] == protocol]
        drops = [r["worst_drop"] for r in runs if r["protocol"] == protocol]
        print(f"  {protocol:<8} seeds {seeds}: pooled IoU "
              + ", ".join(f"{v:.4f}" for v in pooled)
              + f"; spread {max(pooled) - min(pooled):.4f}; worst drop {max(drops):.4f}")
        neutral = [r["neutral"]["pooled"]["iou"] for r in runs if r["protocol"] == protocol]
        print(f"  {'':<8} without the sky gaps: "
              + ", ".join(f"{v:.4f}" for v in neutral)
              + f"; spread {max(neutral) - min(neutral):.4f}")


if __name__ == "__main__":
    main()

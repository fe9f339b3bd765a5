"""Train skyseg's shipped sky model from the shared data: one command, seeded, resumable.

    python tools/train_default_model.py --work outputs/default-model --install

1. links the labelled real panoramas of ``../shared/data/real-hdri`` (outdoor
   and indoor) into ``WORK/panoramas`` and builds two patch datasets of them
   (256 px, stride 128): the four of fold A (city, forest, apartment, lab)
   and all eight;
2. builds CamVid (``../shared/data/camvid-sky``, the standard 367 train / 101
   val lists) as LDR photos decoded to linear radiance (``--convert-ldr``),
   sky between bare branches left out (``--ignore-sky-gaps``: sky for skyseg,
   tree for CamVid's labellers, so neither is taught);
3. stage 1 (``WORK/stage1``): an EfficientNet-Lite0 U-Net from its shipped
   ImageNet encoder, trained on CamVid and fold A, half of every batch from
   each (``--data panoramas=1 --data camvid=1``), exposure augmentation of
   +-4 EV (the panoramas' skies differ by 5 stops), 16 epochs of 80 batches
   of 8, seed 0, the best checkpoint picked on CamVid val. The other four
   panoramas (park, sunset, studio, warehouse) are never seen: scored by
   ``scripts/bench_real_hdri.py --model stage1=WORK/stage1``, the held-out
   figure of the recipe;
4. stage 2 (``WORK/run``): stage 1 fine-tuned on CamVid and all eight
   panoramas, 6 epochs of 80 batches, learning rate 2e-4;
5. with ``--install``, copies stage 2's model (without optimizer state),
   ``config.json`` (plus the list of images it learnt from) and
   ``preprocessing.json`` into ``skyseg/resources/models/default``, the model
   ``skyseg predict`` uses when no ``--model`` is given.

Run again after an interruption: the builds and the trainings resume. About
45 minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FOLD_A = ("city", "forest", "apartment", "lab")
COMMON = ["--steps-per-epoch", "80", "--batch-size", "8", "--augment-set", "exposure_ev=4",
          "--seed", "0"]
STAGE1 = ["--backbone", "efficientnetlite0", "--encoder-weights", "imagenet", "--epochs", "16",
          *COMMON]
STAGE2 = ["--epochs", "6", "--learning-rate", "2e-4", *COMMON]


def skyseg(*args) -> None:
    command = [sys.executable, "-m", "skyseg", *map(str, args)]
    print("+ skyseg " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "default-model",
                        help="folder for the datasets and the run")
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder")
    parser.add_argument("--install", action="store_true",
                        help="copy the trained model into skyseg/resources/models/default")
    args = parser.parse_args(argv)
    hdri, camvid = args.data / "real-hdri", args.data / "camvid-sky"
    if not (hdri / "labels" / "result.json").is_file() or not (camvid / "result.json").is_file():
        print(f"train_default_model: {args.data} lacks real-hdri/ or camvid-sky/; pass --data",
              file=sys.stderr)
        return 2
    work = args.work.resolve()
    images = work / "panoramas"
    images.mkdir(parents=True, exist_ok=True)
    stems = []
    for path in sorted([*(hdri / "outdoor").glob("*.hdr"), *(hdri / "indoor").glob("*.hdr")]):
        link = images / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
        stems.append(path.stem)
    for name, chosen in (("panoramas-fold-a", FOLD_A), ("panoramas-all", stems)):
        (work / f"{name}.txt").write_text("\n".join(chosen) + "\n")
        skyseg("build-dataset", "--coco", hdri / "labels" / "result.json", "--images", images,
               "--out", work / name, "--mode", "hdr", "--patch-size", 256, "--stride", 128,
               "--split-file", f"train={work / f'{name}.txt'}")
    skyseg("build-dataset", "--coco", camvid / "result.json", "--images", camvid / "images",
           "--out", work / "camvid", "--mode", "hdr", "--convert-ldr", "--ignore-sky-gaps",
           "--patch-size", 256, "--stride", 112, "--workers", 2,
           "--split-file", f"train={camvid / 'train.txt'}",
           "--split-file", f"val={camvid / 'val.txt'}")
    camvid_data = f"{work / 'camvid'}=1"
    stage1, run = work / "stage1", work / "run"
    skyseg("train", "--data", f"{work / 'panoramas-fold-a'}=1", "--data", camvid_data,
           "--out", stage1, *STAGE1, *resume(stage1))
    skyseg("train", "--data", f"{work / 'panoramas-all'}=1", "--data", camvid_data,
           "--out", run, "--init", stage1, *STAGE2, *resume(run))
    if args.install:
        install(run)
    return 0


def resume(run: Path) -> list[str]:
    return ["--resume"] if (run / "config.json").is_file() else []


def install(run: Path) -> None:
    """The run's last weight average (no optimizer state), preprocessing and history as
    the shipped model, its config listing the images it learnt from."""
    sys.path.insert(0, str(ROOT))
    from skyseg.io.run_folder import DEFAULT_MODEL_DIR, read_run_config
    from skyseg.training.model import (
        load_model,
        read_model_arrays,
        read_model_attributes,
        save_model,
    )
    from skyseg.training.train import AVERAGE_ARRAYS, run_images

    DEFAULT_MODEL_DIR.mkdir(parents=True, exist_ok=True)
    # The last epoch's weight average, not the best on CamVid val: over stage 2 that
    # score moves by less than 0.001, so "best" would be an early epoch that has seen
    # the four new panoramas least. No optimizer state: 22 MB.
    last = run / "model_last.h5"
    model = load_model(last)
    model.set_weights(read_model_arrays(last, AVERAGE_ARRAYS))
    save_model(model, DEFAULT_MODEL_DIR / "model_best.h5", include_optimizer=False,
               attributes={"epoch": read_model_attributes(last).get("epoch")})
    for name in ("preprocessing.json", "history.csv"):
        shutil.copy2(run / name, DEFAULT_MODEL_DIR / name)
    # The datasets stay on this machine: the config keeps the list of what the model
    # learnt from, so that no figure on those images passes for a held-out one.
    config = read_run_config(run)
    config["trained_on"] = dict(sorted(run_images(run).items()))
    (DEFAULT_MODEL_DIR / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"installed {run} as {DEFAULT_MODEL_DIR} ({len(config['trained_on'])} images)")


if __name__ == "__main__":
    sys.exit(main())

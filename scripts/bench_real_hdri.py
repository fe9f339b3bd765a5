"""Sky masks on the real labelled HDR panoramas: the measure of a sky model.

For each model, predicts every labelled panorama of ``real-hdri`` (outdoor and
indoor, 1024x512 Radiance ``.hdr``, labels ``labels/<stem>.png``: 1 sky,
0 not, 255 ignore) with skyseg's predict API at its default settings, and prints
per panorama:

- IoU of the sky (ignored pixels left out);
- boundary F at ``--tolerance`` pixels (default 2);
- false sky share: pixels called sky among those labelled not sky (indoors
  this is the whole story: an indoor panorama is all not-sky but its windows);
- whether the model learnt from that panorama (``train``), picked its
  checkpoint on it (``val``) or never saw it (``-``), from the run folders'
  datasets (:func:`skyseg.training.train.run_images`).

Then per model: outdoor pooled IoU, mean boundary F and indoor false sky
share, over all panoramas and over those it never saw (the held-out figure;
a figure on a ``train`` panorama flatters the model). With ``--folds RUN
RUN ...`` (runs of one recipe trained on different panoramas) each panorama
is scored by the fold run that never saw it: the cross-validated figure of the
recipe. Overlays (sky tinted magenta) go to ``--out`` with a contact sheet per
model.

Usage::

    python scripts/bench_real_hdri.py                      # the shipped model (+ outputs/demo/run)
    python scripts/bench_real_hdri.py --model demo=outputs/demo/run --model mine=runs/x
    python scripts/bench_real_hdri.py --folds runs/foldA runs/foldB

Exit status 0, 2 when the data or a model cannot be used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "real-hdri"
GROUPS = ("outdoor", "indoor")


def panoramas(data: Path) -> list[tuple[str, Path, Path]]:
    """``[(group, image, label)]`` of the labelled panoramas under ``data``."""
    found = []
    for group in GROUPS:
        for image in sorted((data / group).glob("*.hdr")):
            label = data / "labels" / f"{image.stem}.png"
            if label.is_file():
                found.append((group, image, label))
    return found


def score(sky: np.ndarray, truth: np.ndarray, tolerance: float) -> dict:
    """Counts and scores of one boolean sky mask against a 0/1/255 label."""
    from skyseg.evaluation.evaluate import boundary_scores

    valid = truth != 255
    true_sky, predicted = (truth == 1) & valid, sky & valid
    tp = int(np.count_nonzero(true_sky & predicted))
    fp = int(np.count_nonzero(predicted & ~true_sky))
    fn = int(np.count_nonzero(true_sky & ~predicted))
    not_sky = int(np.count_nonzero((truth == 0) & valid))
    union = tp + fp + fn
    return {"tp": tp, "fp": fp, "fn": fn, "not_sky": not_sky,
            "iou": tp / union if union else 1.0,
            "boundary_f": boundary_scores(sky, truth, tolerance=tolerance)["boundary_f"],
            "false_sky": fp / not_sky if not_sky else 0.0}


def summarise(rows: list[dict]) -> dict:
    """Outdoor pooled IoU and mean boundary F, indoor mean false sky share."""
    outdoor = [r for r in rows if r["group"] == "outdoor"]
    indoor = [r for r in rows if r["group"] == "indoor"]
    out = {"outdoor": len(outdoor), "indoor": len(indoor)}
    if outdoor:
        tp, fp, fn = (sum(r[k] for r in outdoor) for k in ("tp", "fp", "fn"))
        out["pooled_iou"] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
        out["boundary_f"] = float(np.mean([r["boundary_f"] for r in outdoor]))
        out["outdoor_false_sky"] = (sum(r["fp"] for r in outdoor)
                                    / max(1, sum(r["not_sky"] for r in outdoor)))
    if indoor:
        out["indoor_false_sky"] = float(np.mean([r["false_sky"] for r in indoor]))
    return out


def _format_summary(name: str, what: str, summary: dict) -> str:
    parts = [f"{name:<10} {what:<22}"]
    if "pooled_iou" in summary:
        parts.append(f"outdoor ({summary['outdoor']}): pooled IoU {summary['pooled_iou']:.3f}, "
                     f"boundary F {summary['boundary_f']:.3f}, false sky "
                     f"{summary['outdoor_false_sky']:.1%}")
    if "indoor_false_sky" in summary:
        parts.append(f"indoor ({summary['indoor']}): false sky {summary['indoor_false_sky']:.2%}")
    if len(parts) == 1:
        parts.append("no panorama")
    return "  ".join(parts)


def bench_model(name: str, loaded, seen: dict, files, out: Path, tolerance: float) -> list[dict]:
    """Predict and score every panorama with one model; overlays into ``out/name``."""
    from PIL import Image

    from skyseg.image.overlay import contact_sheet, resize_uint8, tint
    from skyseg.io import read_image, write_png
    from skyseg.predict.predictor import overlay_background, predict_image, probability_to_mask

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    rows, thumbnails = [], []
    for group, image_path, label_path in files:
        start = time.perf_counter()
        image, info = read_image(image_path, return_info=True)
        truth = np.asarray(Image.open(label_path))
        probability = predict_image(loaded, image, is_hdr=info.is_hdr, name=image_path.name)
        sky = probability_to_mask(probability, value=1).astype(bool)
        row = {"model": name, "group": group, "stem": image_path.stem,
               "seen": seen.get(image_path.stem, "-"), **score(sky, truth, tolerance),
               "seconds": time.perf_counter() - start}
        rows.append(row)
        overlay = tint(overlay_background(image, is_hdr=info.is_hdr, max_size=None), sky)
        write_png(folder / f"{group}_{image_path.stem}_overlay.png", overlay)
        thumbnails.append(resize_uint8(overlay, 512))
        print(f"{name:<10} {group + '/' + image_path.stem:<18} {row['seen']:>5} "
              f"{row['iou']:>7.3f} {row['boundary_f']:>8.3f} {row['false_sky']:>9.2%} "
              f"{row['seconds']:>6.1f}", flush=True)
    if thumbnails:
        write_png(folder / "contact_sheet.png", contact_sheet(thumbnails))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=RUN",
                        help="a model to score (repeatable; default: the shipped model, and "
                             "outputs/demo/run when it exists)")
    parser.add_argument("--folds", nargs="+", type=Path, default=None, metavar="RUN",
                        help="runs of one recipe on different panoramas: each panorama scored "
                             "by a run that never saw it (cross-validated figure)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"real-hdri folder (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-real-hdri",
                        help="folder for the overlays (one subfolder per model)")
    parser.add_argument("--tolerance", type=float, default=2.0,
                        help="boundary F distance tolerance in pixels")
    args = parser.parse_args(argv)

    files = panoramas(args.data)
    if not files:
        print(f"bench_real_hdri: no labelled panoramas in {args.data} (expected outdoor/*.hdr, "
              "indoor/*.hdr and labels/<stem>.png); pass --data", file=sys.stderr)
        return 2
    from skyseg.errors import SkysegError
    from skyseg.io.run_folder import DEFAULT_MODEL_DIR
    from skyseg.predict.predictor import load_predictor
    from skyseg.training.train import run_images

    models = []
    for item in args.model:
        name, sep, run = item.partition("=")
        models.append((name, Path(run)) if sep else (Path(item).name, Path(item)))
    if not models and args.folds is None:
        models.append(("shipped", DEFAULT_MODEL_DIR))
        if (ROOT / "outputs" / "demo" / "run").is_dir():
            models.append(("demo", ROOT / "outputs" / "demo" / "run"))
    models += [(f"fold{k + 1}", run) for k, run in enumerate(args.folds or [])]

    print(f"data {args.data}: {len(files)} labelled panoramas; boundary tolerance "
          f"{args.tolerance:g} px; seen: train = learnt from, val = picked the checkpoint, "
          "- = never seen")
    print(f"{'model':<10} {'panorama':<18} {'seen':>5} {'IoU':>7} {'bound F':>8} "
          f"{'false sky':>9} {'s':>6}")
    results: dict[str, list[dict]] = {}
    for name, run in models:
        try:
            loaded = load_predictor(run)
            seen = run_images(run)
        except SkysegError as exc:
            print(f"bench_real_hdri: {name}: {exc}", file=sys.stderr)
            return 2
        results[name] = bench_model(name, loaded, seen, files, args.out, args.tolerance)
        del loaded

    print()
    for name, _ in models:
        rows = results[name]
        print(_format_summary(name, "all panoramas", summarise(rows)))
        unseen = [r for r in rows if r["seen"] == "-"]
        print(_format_summary(name, "never seen (held out)", summarise(unseen)))
    if args.folds:
        fold_names = [f"fold{k + 1}" for k in range(len(args.folds))]
        crossed, missing = [], []
        for _, image_path, _ in files:
            row = next((r for f in fold_names for r in results[f]
                        if r["stem"] == image_path.stem and r["seen"] == "-"), None)
            (crossed.append(row) if row is not None else missing.append(image_path.stem))
        print(_format_summary("folds", "cross-validated", summarise(crossed)))
        if missing:
            print(f"every fold saw {', '.join(missing)}: not in the cross-validated figure")
    print(f"overlays in {args.out}/<model>/ (all of a model: contact_sheet.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

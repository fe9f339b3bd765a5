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
model. Finding, predicting and drawing the panoramas is ``skyseg check
real-hdri``'s (:mod:`skyseg.evaluation.check`); this script adds the scores.

Usage::

    python scripts/bench_real_hdri.py                      # the shipped model (+ outputs/demo/run)
    python scripts/bench_real_hdri.py --model demo=outputs/demo/run --model mine=runs/x
    python scripts/bench_real_hdri.py --folds runs/foldA runs/foldB

Exit status 0; 1 when a panorama could not be read (listed at the end, the others
scored); 2 when the data or a model cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from harness import ROOT, SHARED_DATA, Table

DEFAULT_DATA = SHARED_DATA / "real-hdri"
GROUPS = ("outdoor", "indoor")
ROWS = Table([("model", "<10"), ("panorama", "<18"), ("seen", ">5"), ("IoU", ">7.3f"),
              ("bound F", ">8.3f"), ("false sky", ">9.2%"), ("s", ">6.1f")])


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


def bench_model(name: str, run: Path, panoramas, out: Path, tolerance: float,
                report) -> list[dict]:
    """Predict and score every panorama with one model; overlays into ``out/name``."""
    from PIL import Image

    from skyseg.evaluation.check import predict_panoramas
    from skyseg.training.train import run_images

    seen = run_images(run)
    rows = []
    for result in predict_panoramas(run, panoramas, out / name, report=report):
        panorama = result.panorama
        truth = np.asarray(Image.open(panorama.label))
        row = {"model": name, "group": panorama.group, "stem": panorama.path.stem,
               "seen": seen.get(panorama.path.stem, "-"),
               **score(result.sky, truth, tolerance), "seconds": result.seconds}
        rows.append(row)
        ROWS.print_row(name, f"{panorama.group}/{panorama.path.stem}", row["seen"], row["iou"],
                       row["boundary_f"], row["false_sky"], row["seconds"])
    return rows


def models_to_score(args) -> list[tuple[str, Path]]:
    """``(name, run)`` of ``--model`` and ``--folds``; the shipped model (and the demo's) else."""
    from skyseg.io.run_folder import DEFAULT_MODEL_DIR

    models = []
    for item in args.model:
        name, sep, run = item.partition("=")
        models.append((name, Path(run)) if sep else (Path(item).name, Path(item)))
    if not models and args.folds is None:
        models.append(("shipped", DEFAULT_MODEL_DIR))
        if (ROOT / "outputs" / "demo" / "run").is_dir():
            models.append(("demo", ROOT / "outputs" / "demo" / "run"))
    models += [(f"fold{k + 1}", run) for k, run in enumerate(args.folds or [])]
    return models


def cross_validated(results: dict[str, list[dict]], folds: int, panoramas) -> tuple[list, list]:
    """Each panorama's row from a fold run that never saw it; the stems every fold saw."""
    fold_names = [f"fold{k + 1}" for k in range(folds)]
    crossed, missing = [], []
    for panorama in panoramas:
        stem = panorama.path.stem
        row = next((r for f in fold_names for r in results[f]
                    if r["stem"] == stem and r["seen"] == "-"), None)
        (crossed.append(row) if row is not None else missing.append(stem))
    return crossed, missing


def print_summaries(results: dict[str, list[dict]], args, panoramas) -> None:
    print()
    for name, rows in results.items():
        print(_format_summary(name, "all panoramas", summarise(rows)))
        unseen = [r for r in rows if r["seen"] == "-"]
        print(_format_summary(name, "never seen (held out)", summarise(unseen)))
    if args.folds:
        crossed, missing = cross_validated(results, len(args.folds), panoramas)
        print(_format_summary("folds", "cross-validated", summarise(crossed)))
        if missing:
            print(f"every fold saw {', '.join(missing)}: not in the cross-validated figure")
    print(f"overlays in {args.out}/<model>/ (all of a model: contact_sheet.png)")


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

    from skyseg.errors import SkysegError
    from skyseg.evaluation.check import find_panoramas
    from skyseg.log import BatchReport

    try:
        panoramas = find_panoramas(args.data, groups=GROUPS, labelled=True)
    except SkysegError as exc:
        print(f"bench_real_hdri: {exc}", file=sys.stderr)
        return 2
    print(f"data {args.data}: {len(panoramas)} labelled panoramas; boundary tolerance "
          f"{args.tolerance:g} px; seen: train = learnt from, val = picked the checkpoint, "
          "- = never seen")
    ROWS.print_header()
    report = BatchReport("bench_real_hdri")
    results: dict[str, list[dict]] = {}
    for name, run in models_to_score(args):
        try:
            results[name] = bench_model(name, run, panoramas, args.out, args.tolerance, report)
        except SkysegError as exc:
            print(f"bench_real_hdri: {name}: {exc}", file=sys.stderr)
            return 2
    print_summaries(results, args, panoramas)
    for _, message in report.failures:
        print(f"bench_real_hdri: not read: {message}", file=sys.stderr)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""Does guided refinement help? Boundary F and IoU with ``--refine none`` vs ``guided``.

Usage::

    python scripts/bench_refine.py RUN [--images DIR --coco FILE --list FILE]
    python scripts/bench_refine.py --oracle 0.5 [--blur 1.0]

With a run folder (e.g. the CamVid benchmark model, trained at scale 0.5):
evaluates the labelled images (default: CamVid val, ``../shared/data/camvid-sky``
with ``val.txt``) at full size through the predict path twice, with
``--refine none`` (linear upsampling) and ``--refine guided``, and prints mean
boundary F (2 px), mean and pooled IoU for both and the differences.
Acceptance (issue 11): boundary F up by >= 0.03, pooled IoU down by at most
0.005. ``--images/--coco/--list`` point it at other data (the demo's held-out
panoramas: ``--images WORK/demo --coco WORK/demo/result.json --list
WORK/demo/test.txt`` or similar).

With ``--oracle SCALE`` no network runs: the coarse probability is the truth
mask shrunk by SCALE (area average) and blurred by ``--blur`` coarse pixels
(a stand-in for a network's soft output), so the figures show what the
upsampling alone does, for the guided filter's radius and eps
(``--radius``, ``--eps``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import SHARED_DATA, Table, Timer

CAMVID = SHARED_DATA / "camvid-sky"


def evaluate_both(run: Path, images: Path, coco: Path, only: Path | None,
                  tile_size: int) -> dict:
    from skyseg.evaluation.evaluate import evaluate_model
    from skyseg.predict.loading import load_predictor

    loaded = load_predictor(run)
    results = {}
    for refine in ("none", "guided"):
        with Timer() as timer, tempfile.TemporaryDirectory(prefix="skyseg-bench-refine-") as out:
            evaluation = evaluate_model(loaded, images, coco=coco, out_dir=out, only=only,
                                        worst=0, refine=refine, tile_size=tile_size)
        summary = evaluation.summary
        results[refine] = {
            "images": summary["images"],
            "boundary_f": summary["mean"]["boundary_f"],
            "iou": summary["mean"]["iou"],
            "pooled_iou": summary["pooled"]["iou"],
            "seconds": timer.seconds,
            "failed": len(evaluation.report.failures),
        }
    results["scale"] = loaded.preprocessing.scale
    return results


def oracle(images: Path, coco: Path, only: Path | None, scale: float, blur: float,
           radius: int, eps: float) -> dict:
    """Truth shrunk and blurred as the coarse probability; no network."""
    import cv2
    import numpy as np

    from skyseg.evaluation.evaluate import boundary_scores
    from skyseg.image.metrics import confusion_counts, scores_from_counts
    from skyseg.image.preprocess import scaled_size, upsample_linear
    from skyseg.io import read_image
    from skyseg.labels.annotations import load_coco
    from skyseg.predict.refine import guided_upsample

    labels = load_coco(coco)
    stems = ([line.strip() for line in only.read_text().splitlines() if line.strip()]
             if only else sorted(p.stem for p in images.iterdir()))
    results = {}
    rows: dict[str, list] = {"none": [], "guided": []}
    pooled = {refine: dict.fromkeys(("tp", "fp", "fn"), 0) for refine in rows}
    for stem in stems:
        found = sorted(images.glob(f"{Path(stem).stem}.*"))
        if not found:
            continue
        image, info = read_image(found[0], return_info=True)
        height, width = image.shape[:2]
        truth = labels.mask(Path(stem).stem, height, width)
        coarse = cv2.resize((truth == 1).astype(np.float32),
                            scaled_size(height, width, scale)[::-1], interpolation=cv2.INTER_AREA)
        if blur > 0:
            coarse = cv2.GaussianBlur(coarse, (0, 0), blur)
        for refine in rows:
            if refine == "none":
                probability = upsample_linear(coarse, height, width)
            else:
                probability = guided_upsample(coarse, image, is_hdr=info.is_hdr, radius=radius,
                                              eps=eps)
            prediction = probability > 0.5
            rows[refine].append(boundary_scores(prediction, truth)["boundary_f"])
            counts = confusion_counts(truth, prediction.view(np.uint8))
            for key in pooled[refine]:
                pooled[refine][key] += counts[key]
    for refine in rows:
        results[refine] = {
            "images": len(rows[refine]),
            "boundary_f": float(np.mean(rows[refine])),
            "pooled_iou": scores_from_counts(pooled[refine])["iou"],
        }
    results["scale"] = scale
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="run folder of skyseg train")
    parser.add_argument("--images", type=Path, default=CAMVID / "images")
    parser.add_argument("--coco", type=Path, default=CAMVID / "result.json")
    parser.add_argument("--list", default=str(CAMVID / "val.txt"), dest="only",
                        help="images to score, one per line ('' for every labelled image)")
    parser.add_argument("--tile-size", type=int, default=1088)
    parser.add_argument("--oracle", type=float, default=None, metavar="SCALE",
                        help="no network: the truth shrunk by SCALE and blurred is the coarse "
                             "probability")
    parser.add_argument("--blur", type=float, default=1.0,
                        help="oracle: Gaussian sigma in coarse pixels")
    parser.add_argument("--radius", type=int, default=None, help="oracle: guided filter radius")
    parser.add_argument("--eps", type=float, default=None, help="oracle: guided filter eps")
    args = parser.parse_args()
    only = Path(args.only) if args.only else None

    import skyseg  # noqa: F401
    from skyseg.log import configure_logging
    from skyseg.predict.refine import DEFAULT_EPS, DEFAULT_RADIUS

    configure_logging(-1)
    if args.oracle is not None:
        radius = args.radius or DEFAULT_RADIUS
        eps = args.eps or DEFAULT_EPS
        results = oracle(args.images, args.coco, only, args.oracle, args.blur, radius, eps)
        print(f"oracle: truth shrunk by {args.oracle}, blurred {args.blur} coarse px; guided "
              f"radius {radius}, eps {eps:g}")
    elif args.run is None:
        parser.error("give a RUN folder or --oracle SCALE")
    else:
        results = evaluate_both(args.run, args.images, args.coco, only, args.tile_size)
        print(f"model {args.run} (scale {results['scale']:g}) on {args.images}"
              f"{f' ({only.name})' if only else ''}")
    print_comparison(results["none"], results["guided"])
    return 0


def print_comparison(none: dict, guided: dict) -> None:
    """The figures of both, their change, and the verdict of the acceptance test."""
    table = Table([("", "<16"), ("none", ">10.4f"), ("guided", ">10.4f"), ("change", ">+10.4f")],
                  gap="")
    table.print_header()
    for key, label in (("boundary_f", "boundary F 2px"), ("iou", "mean IoU"),
                       ("pooled_iou", "pooled IoU")):
        if key in none:
            table.print_row(label, none[key], guided[key], guided[key] - none[key])
    if "seconds" in none:
        table.print_row("seconds", f"{none['seconds']:.1f}", f"{guided['seconds']:.1f}")
    print(f"images scored: {none['images']} / {guided['images']}")
    print(f"acceptance (boundary F +0.03, pooled IoU -0.005 at most): "
          f"{'met' if accepted(none, guided) else 'NOT met'}")


def accepted(none: dict, guided: dict) -> bool:
    """Issue 11's bar: boundary F up by 0.03 or more, pooled IoU down by 0.005 at most."""
    return (guided["boundary_f"] - none["boundary_f"] >= 0.03
            and none["pooled_iou"] - guided["pooled_iou"] <= 0.005)


if __name__ == "__main__":
    sys.exit(main())

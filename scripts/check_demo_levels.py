"""Is the demo's light like real panoramas'? Exposure statistics of both, side by side.

The demo model only sees synthetic scenes; what it makes of real files depends
on how far their light is from the demo's. This prints, in stops (log2 of
luminance, Rec. 709 weights), for every scene kind of a ``skyseg demo-data``
folder and for every real panorama of ``real-hdri/{indoor,outdoor}``:

- ``exposure``: the log-average luminance of the whole image;
- ``sky``: the median luminance of the sky. Demo scenes: from their masks.
  Real panoramas have no labels, so their top band (``--top-rows``, default
  the top fifth of the rows) stands in: nearly all sky in open outdoor
  scenes, ceiling and lamps indoors, tree crowns in a forest;
- ``sky - ground``: the sky's median over the rest's median (demo), or the top
  band's over the bottom half's (real): how much brighter than the ground the
  sky is;
- for each real panorama, the share of demo scenes of its group (indoor:
  the ``indoor`` kind; outdoor: the others) that are darker than it: near 0 or
  100 % means the real file lies at the edge of what the demo shows (the
  training's exposure augmentation, +-2 EV, reaches a little beyond it).

Usage::

    python scripts/check_demo_levels.py DEMO_DIR [--data DIR] [--top-rows N]

``DEMO_DIR`` is a ``skyseg demo-data --out`` folder (the pipeline's
``outputs/demo/demo``); ``--data`` defaults to ``../shared/data/real-hdri``.
Exit status 0; 1 when a real panorama could not be read (the others are
still printed, the failures listed at the end); 2 when a folder cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "real-hdri"
GROUPS = ("indoor", "outdoor")
#: Luminance floor before the logarithm (black pixels would give -inf).
FLOOR = 1e-6


def log_luminance(image: np.ndarray) -> np.ndarray:
    """log2 of the Rec. 709 luminance of linear RGB (H, W, 3); NaN/Inf as 0, floored."""
    from skyseg.image.preprocess import luminance

    clean = np.nan_to_num(np.asarray(image, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.log2(np.maximum(luminance(clean), FLOOR).astype(np.float64))


def levels(image: np.ndarray, sky: np.ndarray) -> dict:
    """Exposure, sky and sky-over-ground (stops) of an image (H, W, 3) given a sky region.

    ``sky``: bool (H, W), the sky (or the region standing in for it); the rest
    is the ground. Either may be empty: its entries are then NaN.
    """
    log_lum = log_luminance(image)
    sky = np.asarray(sky, bool)
    sky_median = float(np.median(log_lum[sky])) if sky.any() else float("nan")
    ground_median = float(np.median(log_lum[~sky])) if (~sky).any() else float("nan")
    return {"exposure": float(log_lum.mean()), "sky": sky_median,
            "sky_minus_ground": sky_median - ground_median}


def real_levels(image: np.ndarray, top_rows: int) -> dict:
    """:func:`levels` of an unlabelled panorama: its top rows as the sky, its bottom half as
    the ground (the band between is left out)."""
    log_lum = log_luminance(image)
    height = log_lum.shape[0]
    top_rows = max(1, min(top_rows, height // 2))
    sky_median = float(np.median(log_lum[:top_rows]))
    return {"exposure": float(log_lum.mean()), "sky": sky_median,
            "sky_minus_ground": sky_median - float(np.median(log_lum[height - height // 2:]))}


def darker_share(value: float, population: list[float]) -> float:
    """Share (0..1) of ``population`` below ``value``; NaN when it is empty."""
    if not population:
        return float("nan")
    return float(np.mean(np.asarray(population) < value))


def _demo_scenes(demo: Path):
    from PIL import Image

    from skyseg.io import read_image

    meta = json.loads((demo / "demo.json").read_text(encoding="utf-8"))
    for scene in meta["scenes"]:
        image = read_image(demo / "images" / f"{scene['name']}.exr")
        with Image.open(demo / "masks" / f"{scene['name']}.png") as picture:
            mask = np.asarray(picture) > 0
        if mask.shape != image.shape[:2]:
            raise ValueError(f"masks/{scene['name']}.png is {mask.shape[1]}x{mask.shape[0]}, "
                             f"its image {image.shape[1]}x{image.shape[0]}")
        yield scene["theme"], levels(image, mask)


def _row(name: str, values: list[dict], extra: str = "") -> str:
    def span(key):
        column = np.array([v[key] for v in values], float)
        column = column[np.isfinite(column)]
        if column.size == 0:
            return f"{'-':>15s}"
        if column.size == 1:
            return f"{column[0]:+15.2f}"
        return f"{column.min():+7.2f}..{column.max():+6.2f}"
    return f"{name:22s} {len(values):3d} {span('exposure')} {span('sky')} {span('sky_minus_ground')}{extra}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path, help="a skyseg demo-data folder (with demo.json)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder with indoor/ and outdoor/ .hdr files (default {DEFAULT_DATA})")
    parser.add_argument("--top-rows", type=int, default=None,
                        help="rows at the top of a real panorama that stand in for its sky "
                             "(default: a fifth of its height)")
    args = parser.parse_args(argv)
    if not (args.demo / "demo.json").is_file():
        print(f"check_demo_levels: {args.demo} has no demo.json; pass a folder made by "
              "`skyseg demo-data --out DIR`", file=sys.stderr)
        return 2
    files = {group: sorted((args.data / group).glob("*.hdr")) for group in GROUPS}
    if not any(files.values()):
        print(f"check_demo_levels: no real panoramas in {args.data} (expected indoor/*.hdr and "
              "outdoor/*.hdr); pass --data DIR where they are", file=sys.stderr)
        return 2
    if args.top_rows is not None and args.top_rows < 1:
        parser.error(f"--top-rows must be at least 1, got {args.top_rows}")

    from skyseg.errors import SkysegError
    from skyseg.io import read_image

    by_theme: dict[str, list[dict]] = {}
    try:
        for theme, values in _demo_scenes(args.demo):
            by_theme.setdefault(theme, []).append(values)
    except (SkysegError, OSError, KeyError, ValueError) as exc:
        print(f"check_demo_levels: {args.demo}: cannot read the demo ({exc}); make it again "
              "with `skyseg demo-data --out DIR --overwrite`", file=sys.stderr)
        return 2
    header = f"{'':22s} {'n':>3s} {'exposure':>15s} {'sky':>15s} {'sky - ground':>15s}"
    print("stops (log2 luminance); ranges over the scenes of a kind")
    print(header)
    for theme in sorted(by_theme):
        print(_row(f"demo {theme}", by_theme[theme]))
    exposures = {
        "indoor": [v["exposure"] for v in by_theme.get("indoor", [])],
        "outdoor": [v["exposure"] for t, vs in by_theme.items() if t != "indoor" for v in vs],
    }
    failures = []
    for group in GROUPS:
        for path in files[group]:
            try:
                image = read_image(path)
            except (SkysegError, OSError) as exc:
                failures.append(f"{path}: {exc}")
                continue
            values = real_levels(image, args.top_rows or image.shape[0] // 5)
            share = darker_share(values["exposure"], exposures[group])
            print(_row(f"real {group}/{path.stem}", [values],
                       f"   {share:6.0%} of the demo's {group} scenes darker"))
    for failure in failures:
        print(f"check_demo_levels: skipped {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

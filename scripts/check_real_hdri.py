"""How much of real HDR panoramas a trained run calls sky: the demo's reality check.

Predicts with a run folder (``skyseg train --out RUN``, e.g. the demo's
``outputs/demo/run``) on every ``real-hdri/{indoor,outdoor}/*.hdr`` panorama
(eight real 1024x512 Poly Haven panoramas, no labels) with skyseg's predict
API at its default settings, and prints per panorama the share of pixels
called sky. An indoor panorama has (almost) no sky, so its share is a
false-positive rate: the mean over the indoor panoramas is the figure to keep
small (target: at most 3 %). The outdoor ones are for the eye: the overlays
(sky tinted magenta) go to ``--out``, with all of them on ``contact_sheet.png``.

Usage::

    python scripts/check_real_hdri.py RUN [RUN ...] [--out DIR] [--data DIR]

Several runs are an ensemble: their sky probabilities are averaged, as
``skyseg predict RUN --ensemble RUN2`` does. ``--data`` defaults to
``../shared/data/real-hdri`` beside the repository. Exit status: 0 when the
indoor mean is within the target, 1 when not or when a panorama could not be
read (listed at the end), 2 when the data or the run cannot be used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "real-hdri"
GROUPS = ("indoor", "outdoor")
#: Largest mean share of sky on the indoor panoramas that passes.
INDOOR_TARGET = 0.03


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                        help="run folder (or model file) to predict with; several: their "
                             "probabilities averaged")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for <group>_<name>_overlay.png (default: RUN/real-hdri, "
                             "for several runs the first's real-hdri-ensemble)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder with indoor/ and outdoor/ .hdr files (default {DEFAULT_DATA})")
    args = parser.parse_args(argv)

    files = {group: sorted((args.data / group).glob("*.hdr")) for group in GROUPS}
    if not args.data.is_dir() or not any(files.values()):
        print(f"check_real_hdri: no real panoramas in {args.data} (expected indoor/*.hdr and "
              "outdoor/*.hdr); pass --data DIR where they are", file=sys.stderr)
        return 2

    from skyseg.errors import SkysegError
    from skyseg.image.overlay import contact_sheet, resize_uint8, tint
    from skyseg.io import read_image, write_png
    from skyseg.predict.predictor import overlay_background, predict_image, probability_to_mask

    try:
        from skyseg.predict.predictor import load_predictor

        loaded = load_predictor(args.runs)
    except SkysegError as exc:
        print(f"check_real_hdri: {exc}", file=sys.stderr)
        return 2
    first = args.runs[0]
    out = args.out if args.out is not None else (first if first.is_dir() else first.parent) / (
        "real-hdri" if len(args.runs) == 1 else "real-hdri-ensemble")
    out.mkdir(parents=True, exist_ok=True)

    shares: dict[str, list[float]] = {group: [] for group in GROUPS}
    thumbnails = []
    failed: list[str] = []
    print(f"run {' + '.join(str(run) for run in args.runs)}, data {args.data}")
    print(f"{'panorama':<22} {'size':>10} {'sky share':>10} {'seconds':>8}")
    for group in GROUPS:
        for path in files[group]:
            start = time.perf_counter()
            try:
                image, info = read_image(path, return_info=True)
            except SkysegError as exc:
                failed.append(str(exc))
                continue
            probability = predict_image(loaded, image, is_hdr=info.is_hdr, name=path.name)
            sky = probability_to_mask(probability, value=1)
            share = float(sky.mean())
            shares[group].append(share)
            background = overlay_background(image, is_hdr=info.is_hdr, max_size=None)
            overlay = tint(background, sky)
            write_png(out / f"{group}_{path.stem}_overlay.png", overlay)
            thumbnails.append(resize_uint8(overlay, 512))
            elapsed = time.perf_counter() - start
            size = f"{image.shape[1]}x{image.shape[0]}"
            print(f"{group + '/' + path.name:<22} {size:>10} {share:>9.1%} {elapsed:>8.1f}")
    for group in GROUPS:
        if shares[group]:
            mean = sum(shares[group]) / len(shares[group])
            print(f"mean sky share, {group}: {mean:.1%} over {len(shares[group])} panoramas")
    if thumbnails:  # every overlay on one page, two a row, to look at them together
        write_png(out / "contact_sheet.png", contact_sheet(thumbnails))
    print(f"overlays in {out} (all of them: contact_sheet.png)")
    for message in failed:
        print(f"not read: {message}", file=sys.stderr)
    if not shares["indoor"]:
        print("no indoor panoramas: nothing to hold against the target", file=sys.stderr)
        return 2
    indoor = sum(shares["indoor"]) / len(shares["indoor"])
    verdict = "within" if indoor <= INDOOR_TARGET else "ABOVE"
    print(f"indoor mean {indoor:.1%}: {verdict} the target of {INDOOR_TARGET:.0%}")
    return 0 if indoor <= INDOOR_TARGET and not failed else 1


if __name__ == "__main__":
    sys.exit(main())

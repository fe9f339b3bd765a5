"""How each sequence of a labelled set treats sky seen through trees: a label-convention check.

For every labelled image, counts the pixels labelled *not sky* that lie next to
labelled sky (a window of 12 % of the shorter side holds more than 1.2 % sky) and have the
brightness of that nearby sky (within 15 %; the rule of :mod:`skyseg.labels.sky_gaps`): mostly sky seen between the
branches of bare trees, which one labeller calls tree and another sky. Prints,
per group (the first ``--group-chars`` characters of the image name, CamVid's
sequence), that count per labelled sky pixel. Groups that differ by several
points label the same thing differently, and a model trained on one scores
the other lower the longer it trains (leave-one-sequence-out drift).

Usage::

    python scripts/check_label_convention.py [--camvid DIR] [--group-chars 6]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sky_coloured_not_sky(image: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """``(not-sky pixels next to sky with its brightness, sky pixels)`` of one image.

    ``image``: (H, W, 3) any range; ``mask``: uint8 (H, W), 1 = sky, 0 = not sky.
    The rule is skyseg's (:func:`skyseg.labels.sky_gaps.sky_coloured_not_sky`), which
    ``skyseg build-dataset --ignore-sky-gaps`` narrows to gaps and leaves out of training.
    """
    from skyseg.labels.sky_gaps import sky_coloured_not_sky as alike

    return int(alike(image, mask).sum()), int((mask == 1).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared/data/camvid-sky")
    parser.add_argument("--group-chars", type=int, default=6)
    args = parser.parse_args()

    from skyseg.io import read_image
    from skyseg.labels.annotations import load_coco

    labels = load_coco(args.camvid / "result.json")
    groups = defaultdict(lambda: [0, 0, 0])
    for stem in labels.stems():
        path = args.camvid / "images" / f"{stem}.jpg"
        image = read_image(path)
        mask = labels.mask(stem, image.shape[0], image.shape[1])
        alike, sky = sky_coloured_not_sky(image, mask)
        if sky < 100:
            continue
        entry = groups[stem[:args.group_chars]]
        entry[0] += alike
        entry[1] += sky
        entry[2] += 1
    print("group    images  sky-coloured not-sky pixels next to sky, per labelled sky pixel")
    for group, (alike, sky, images) in sorted(groups.items()):
        print(f"{group:<8} {images:>6}  {alike / sky:.4f}")


if __name__ == "__main__":
    main()

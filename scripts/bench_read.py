"""Time ``skyseg.read_image`` on an 8192x4096 half-float EXR against a bare OpenEXR read.

Usage: python scripts/bench_read.py [--repeats N]

Both reads decode the same file (the harness's test panorama) in the same
process, alternating, so the ratio is measured under the same conditions. The
bare read is ``OpenEXR.File(path).channels()["RGB"].pixels`` (the binding's
interleaved half array, no conversion); ``read_image`` adds the header check,
damage detection, channel selection, float32 conversion and the non-finite repair.
"""

from __future__ import annotations

import argparse
import statistics

from harness import Timer, panorama, peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import OpenEXR

    import skyseg

    path = panorama(8192)
    bare_times, ours_times = [], []
    for _ in range(args.repeats):
        with Timer() as bare:
            pixels = OpenEXR.File(str(path)).channels()["RGB"].pixels
        bare_times.append(bare.seconds)
        shape = pixels.shape
        del pixels
        with Timer() as ours:
            image = skyseg.read_image(path)
        ours_times.append(ours.seconds)
        assert image.shape == (4096, 8192, 3), image.shape
        del image
    bare, ours = statistics.median(bare_times), statistics.median(ours_times)
    print(f"file: {path} ({path.stat().st_size / 1e6:.1f} MB, bare array {shape})")
    print(f"bare OpenEXR.File read: median {bare:.3f} s  (min {min(bare_times):.3f})")
    print(f"skyseg.read_image:      median {ours:.3f} s  (min {min(ours_times):.3f})")
    print(f"ratio read_image / bare: {ours / bare:.2f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

"""Damaged-file benchmark: read every file of ../shared/data/exr-damaged in one process.

Usage:
    python scripts/bench_damaged.py [--folder ../shared/data/exr-damaged]

Prints how many gave a ``SkysegError`` naming the file (all should), the
slowest file, the total time and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import SHARED_DATA, Timer, peak_rss_mb


def read_all(files: list[Path]) -> dict:
    """Read each file; count what happened and time each read."""
    from skyseg import SkysegError, read_image

    counts = {"named": 0, "read_ok": 0, "other": 0}
    slowest = (0.0, None)
    for path in files:
        with Timer() as timer:
            try:
                read_image(path)
                counts["read_ok"] += 1
            except SkysegError as exc:
                counts["named"] += str(path) in str(exc) or path.name in str(exc)
            except Exception as exc:  # noqa: BLE001 - what the benchmark is here to catch
                counts["other"] += 1
                print(f"NOT a SkysegError: {path.name}: {type(exc).__name__}: {exc}")
        slowest = max(slowest, (timer.seconds, path.name))
    return {**counts, "slowest": slowest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=SHARED_DATA / "exr-damaged")
    args = parser.parse_args()

    files = sorted(p for p in args.folder.iterdir() if p.is_file()
                   and p.name not in ("README.md", "LICENSE")) if args.folder.is_dir() else []
    if not files:
        sys.exit(f"no files in {args.folder} (pass --folder)")
    with Timer() as total:
        counts = read_all(files)
    slowest_s, slowest_name = counts["slowest"]
    print(f"{len(files)} damaged EXRs: {counts['named']} SkysegError naming the file, "
          f"{counts['read_ok']} read without error, {counts['other']} other exceptions")
    print(f"total {total.seconds:.2f} s, slowest {slowest_name} {slowest_s:.3f} s, "
          f"peak RSS {peak_rss_mb():.0f} MB")
    return 0 if counts["named"] == len(files) else 1


if __name__ == "__main__":
    sys.exit(main())

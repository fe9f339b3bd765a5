"""Damaged-file benchmark: read every file of ../shared/data/exr-damaged in one process.

Usage:
    python scripts/bench_damaged.py [--folder ../shared/data/exr-damaged]

Prints how many gave a ``SkysegError`` naming the file (all should), the
slowest file, the total time and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared/data/exr-damaged")
    args = parser.parse_args()

    from skyseg import SkysegError, read_image

    files = sorted(p for p in args.folder.iterdir() if p.is_file()
                   and p.name not in ("README.md", "LICENSE")) if args.folder.is_dir() else []
    if not files:
        sys.exit(f"no files in {args.folder} (pass --folder)")
    named = read_ok = other = 0
    slowest = (0.0, None)
    start = time.perf_counter()
    for path in files:
        began = time.perf_counter()
        try:
            read_image(path)
            read_ok += 1
        except SkysegError as exc:
            named += str(path) in str(exc) or path.name in str(exc)
        except Exception as exc:  # noqa: BLE001 - what the benchmark is here to catch
            other += 1
            print(f"NOT a SkysegError: {path.name}: {type(exc).__name__}: {exc}")
        slowest = max(slowest, (time.perf_counter() - began, path.name))
    total = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(files)} damaged EXRs: {named} SkysegError naming the file, {read_ok} read "
          f"without error, {other} other exceptions")
    print(f"total {total:.2f} s, slowest {slowest[1]} {slowest[0]:.3f} s, peak RSS {peak_mb:.0f} MB")
    return 0 if named == len(files) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark `skyseg predict` on an 8192x4096 HDR panorama.

Makes (once, cached outside the repository) an 8K EXR by upscaling the
lat-long sample ``MultiResolution_KernerEnvLatLong.exr``, builds a randomly
initialised ResNet34 U-Net, and for each tile size, in a fresh process so
that peak memory is its own, measures:

- end-to-end wall time of ``predict_files`` with default settings otherwise
  (read the EXR, tile, preprocess, predict, merge, write mask + overlay);
- pure model time for the same tiles (same shapes, same batches, same
  Keras call, graph already traced) in the same process, timed before and
  after the end-to-end run (the mean is used; the two show the drift that
  other jobs on a shared machine cause);
- their ratio (target <= 1.3), the pixel overhead of the overlap, the model
  time the image's own pixels would take, and the peak RSS (target < 2.5 GB).

Usage::

    python scripts/bench_predict.py [--tile-sizes 1088,2080] [--cache /tmp/skyseg_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT.parent / "shared" / "data" / "exr-samples" / "MultiResolution_KernerEnvLatLong.exr"


def make_panorama(cache: Path, width: int = 8192, height: int = 4096) -> Path:
    """The 8K test panorama (bilinear upscale of the 1024x512 sample), cached."""
    import numpy as np
    from PIL import Image

    from skyseg.io import read_image, write_exr

    target = cache / f"KernerEnvLatLong_{width}x{height}.exr"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    small = read_image(SAMPLE)
    big = np.empty((height, width, 3), np.float32)
    for c in range(3):
        big[:, :, c] = np.asarray(Image.fromarray(np.ascontiguousarray(small[:, :, c]))
                                  .resize((width, height), Image.BILINEAR))
    np.maximum(big, 0, out=big)
    write_exr(target, big)
    return target


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_one(panorama: Path, tile_size: int, width: int, height: int, *, copies: int = 1,
            save: str = "mask,overlay", model_time: bool = True) -> dict:
    """One tile size, in this process; returns the figures."""
    import numpy as np

    import skyseg.predict
    from skyseg.model import LoadedModel, build_model
    from skyseg.predict import DEFAULT_BATCH_SIZE, default_overlap, keras_predictor, predict_files
    from skyseg.preprocess import Preprocessing
    from skyseg.tiling import tile_grid

    figures: dict = {"tile_size": tile_size}
    start = time.perf_counter()
    from skyseg.backend import import_tensorflow

    import_tensorflow().keras.utils.set_random_seed(0)
    model = build_model("unet", "resnet34", encoder_weights=None)
    loaded = LoadedModel(model=model, preprocessing=Preprocessing(mode="hdr"))
    figures["build_s"] = time.perf_counter() - start
    figures["rss_after_build_gb"] = peak_rss_gb()

    overlap = default_overlap(tile_size)
    grid = tile_grid(height, width, tile_size=tile_size, overlap=overlap, wrap=True)
    batch_size = DEFAULT_BATCH_SIZE
    predict_batch = keras_predictor(model)
    batch = np.random.default_rng(0).normal(
        0, 1, (batch_size, *grid.tile_shape, 3)).astype(np.float32)
    start = time.perf_counter()
    predict_batch(batch)  # traces the graph for this shape, as the first tile would
    figures["warmup_s"] = time.perf_counter() - start
    batches = -(-grid.count // batch_size) * copies

    def pure_model_time() -> float:
        """The same number of same-shaped batches through the same Keras call."""
        begin = time.perf_counter()
        for _ in range(batches):
            predict_batch(batch)
        return time.perf_counter() - begin

    # Timed before and after the end-to-end run: other jobs on a shared machine
    # change the speed, and the mean of both brackets the run.
    if not model_time:
        pure_model_time = lambda: float("nan")  # noqa: E731  (memory-only run)
    figures["model_before_s"] = pure_model_time()

    calls: list[float] = []

    def timed_predictor(network):
        inner = keras_predictor(network)

        def predict(tiles):
            begin = time.perf_counter()
            result = inner(tiles)
            calls.append(time.perf_counter() - begin)
            return result

        return predict

    skyseg.predict.keras_predictor = timed_predictor
    with tempfile.TemporaryDirectory(prefix="skyseg-bench-") as out:
        inputs = [panorama]
        for k in range(1, copies):  # more images: the read-ahead / write-behind path
            copy = Path(out) / f"copy{k}{panorama.suffix}"
            shutil.copyfile(panorama, copy)  # not a link: find_images drops duplicates
            inputs.append(copy)
        start = time.perf_counter()
        report = predict_files(loaded, inputs, out, tile_size=tile_size, save=save,
                               show_progress=False)
        figures["end_to_end_s"] = time.perf_counter() - start
        if report.exit_code != 0:
            raise SystemExit(f"prediction failed: {report.failures}")
        figures["outputs"] = sorted(set(os.listdir(out)) - {p.name for p in inputs})
    skyseg.predict.keras_predictor = keras_predictor
    figures["peak_rss_gb"] = peak_rss_gb()
    figures["model_calls_in_pipeline_s"] = sum(calls)

    figures["model_after_s"] = pure_model_time()
    figures["model_s"] = (figures["model_before_s"] + figures["model_after_s"]) / 2
    figures.update(
        tiles=grid.count, grid=f"{grid.rows.count}x{grid.cols.count}",
        tile_shape=list(grid.tile_shape), overlap_px=overlap, batch_size=batch_size,
        pixel_overhead=grid.pixel_overhead,
        ratio=figures["end_to_end_s"] / figures["model_s"],
        image_pixels_model_s=figures["model_s"] / grid.pixel_overhead,
        megapixels_per_s=grid.count * grid.tile_shape[0] * grid.tile_shape[1]
        / figures["model_s"] / 1e6,
    )
    figures["ratio_to_image_pixels"] = figures["end_to_end_s"] / figures["image_pixels_model_s"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile-sizes", default="1088,2112",
                        help="comma-separated tile sizes (multiples of 32)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "skyseg_bench",
                        help="where the 8K panorama is kept between runs")
    parser.add_argument("--size", default="8192x4096",
                        help="panorama WIDTHxHEIGHT (smaller for a quick check)")
    parser.add_argument("--copies", type=int, default=1,
                        help="predict this many copies of the panorama in one call")
    parser.add_argument("--save", default="mask,overlay", help="outputs, as for skyseg predict")
    parser.add_argument("--no-model-time", action="store_true",
                        help="skip the pure model timing (for a quicker memory check)")
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import skyseg  # noqa: F401  (sets the Keras 2 environment before TensorFlow)

    width, height = (int(v) for v in args.size.lower().split("x"))
    panorama = make_panorama(args.cache, width, height)
    if args.single is not None:
        print(json.dumps(run_one(panorama, args.single, width, height, copies=args.copies,
                                 save=args.save, model_time=not args.no_model_time)))
        return 0

    print(f"panorama: {panorama} ({width}x{height}, {panorama.stat().st_size / 1e6:.1f} MB)")
    print(f"CPU cores: {os.cpu_count()}, load average at start: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    results = []
    for tile_size in (int(t) for t in args.tile_sizes.split(",")):
        child = subprocess.run(
            [sys.executable, __file__, "--single", str(tile_size), "--cache", str(args.cache),
             "--size", args.size, "--copies", str(args.copies), "--save", args.save,
             *(["--no-model-time"] if args.no_model_time else [])],
            capture_output=True, text=True,
        )
        if child.returncode != 0:
            print(f"tile {tile_size}: failed\n{child.stderr[-3000:]}")
            continue
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        results.append(figures)
        print(
            f"\n{args.copies} image(s), saving {args.save}\n"
            f"tile {tile_size} (overlap {figures['overlap_px']} px, batch "
            f"{figures['batch_size']}): {figures['tiles']} tiles per image ({figures['grid']} rows x "
            f"columns) of {figures['tile_shape'][0]}x{figures['tile_shape'][1]}\n"
            f"  end-to-end wall time     {figures['end_to_end_s']:8.1f} s  "
            f"(read + tiles + model + merge + write {', '.join(figures['outputs'])})\n"
            f"  pure model time, same tiles {figures['model_s']:5.1f} s  "
            f"({figures['megapixels_per_s']:.3f} MP/s; mean of {figures['model_before_s']:.1f} s "
            f"before and {figures['model_after_s']:.1f} s after)\n"
            f"  model calls inside the run {figures['model_calls_in_pipeline_s']:6.1f} s  "
            f"(the rest, {figures['end_to_end_s'] - figures['model_calls_in_pipeline_s']:.1f} s,"
            " is read + waiting for tiles + merge + write)\n"
            f"  ratio end-to-end / model {figures['ratio']:8.3f}    (target <= 1.3)\n"
            f"  pixel overhead of overlap{figures['pixel_overhead']:8.3f}  "
            f"(tile pixels / image pixels)\n"
            f"  model time, image pixels {figures['image_pixels_model_s']:8.1f} s  "
            f"-> end-to-end / that = {figures['ratio_to_image_pixels']:.3f}\n"
            f"  peak RSS                 {figures['peak_rss_gb']:8.2f} GB  (target < 2.5; "
            f"{figures['rss_after_build_gb']:.2f} GB after building the model)\n"
            f"  model build {figures['build_s']:.1f} s, graph trace {figures['warmup_s']:.1f} s "
            "(not in the end-to-end time)"
        )
    print(f"\nload average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark `skyseg predict` on a large HDR panorama, stage by stage.

Makes (once, cached outside the repository) a panorama EXR by upscaling the
lat-long sample ``MultiResolution_KernerEnvLatLong.exr`` (8192x4096 by
default; ``--size 16384x8192`` for the giant case), builds a randomly
initialised ResNet34 U-Net, and for each tile size, in a fresh process so
that peak memory is its own, measures in one run:

- start-up: importing TensorFlow, building the model, tracing the compiled
  inference function for the tile shape (what a fresh ``skyseg predict``
  pays before the first tile);
- ``predict_files`` wall time (read the EXR, shrink if the run's scale or
  ``--max-side`` asks, tile, preprocess, network, merge, refine, write mask +
  overlay) and the time spent in each stage: read, preprocess (shrinking,
  cutting and log-transforming tiles, in the tile thread), network, merge,
  refine (guided or linear upsampling), write (overlay picture + PNGs, partly
  in the writer thread). Stages in other threads overlap the network, so the
  stage times may add up to more than the wall time;
- pure model time: the same compiled call on the image's own pixels in
  1024x1024 tiles (at the working resolution), timed before and after the
  run in the same process (the mean is used; the two show the drift other
  jobs on a shared machine cause), and the ratios wall / pure model for
  ``predict_files`` and for the whole process (start-up included);
- for a shrunk run (``--scale`` < 1 or ``--max-side``): the full-resolution
  model time of the same image, extrapolated from a few 1024x1024 tiles, and
  the whole-process wall / that;
- peak RSS and bytes per input pixel.

``--members N`` predicts with an ensemble of N such networks (differently
initialised; ``skyseg predict --ensemble``): the pure model time is then
N times one network's.

Acceptance (issue 11): full resolution, wall <= 1.3x pure model, peak RSS
<= 2.5 GB; ``--scale 0.25``: whole-process wall <= 0.4x the full-resolution
model time, peak RSS <= 2 GB.

Usage::

    python scripts/bench_predict.py [--tile-sizes 1088] [--scale 0.25] [--max-side N]
        [--refine auto|guided|none] [--size 8192x4096] [--cache /tmp/skyseg-bench]
        [--members N]
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402  (the clock starts before any import)
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from harness import CACHE, Stopwatch, load_average, panorama, peak_rss_mb, run_child  # noqa: E402


def peak_rss_gb() -> float:
    return peak_rss_mb() / 1024


def build_networks(members: int, scale: float):
    """``members`` randomly initialised ResNet34 U-Nets (seeds 0, 1, ...): one, or an ensemble."""
    from skyseg.backend import import_tensorflow
    from skyseg.image.preprocess import Preprocessing
    from skyseg.training.model import LoadedModel, ModelEnsemble, build_model

    networks = []
    for member in range(members):
        import_tensorflow().keras.utils.set_random_seed(member)
        networks.append(LoadedModel(model=build_model("unet", "resnet34", encoder_weights=None),
                                    preprocessing=Preprocessing(mode="hdr", scale=scale)))
    return networks[0] if members == 1 else ModelEnsemble(networks), networks[0].model


def pure_model_clock(predict_batch, work_h: int, work_w: int, members: int, rng):
    """A function timing the model alone on the image's own pixels (at the working size).

    1024x1024 tiles (smaller when the working image is), through the same compiled
    call; one network's time on the image, times the members (all are alike).
    """
    from skyseg.predict.tiling import tile_grid

    pure = tile_grid(work_h, work_w, tile_size=1024, overlap=0, wrap=True)
    pure_batch = rng.normal(0, 1, (1, *pure.tile_shape, 3)).astype("float32")
    predict_batch(pure_batch)  # trace

    def pure_model_time() -> float:
        begin = time.perf_counter()
        for _ in range(pure.count):
            predict_batch(pure_batch)
        return members * (time.perf_counter() - begin) * work_h * work_w / (
            pure.count * pure.tile_shape[0] * pure.tile_shape[1])

    return pure_model_time


#: Functions ``predict_files`` calls, by name, and the stage whose time they are.
STAGE_FUNCTIONS = {
    "read_image": "read",
    "rescale_image": "preprocess",
    "extract_tile": "preprocess",
    "guided_upsample": "refine",
    "upsample_linear": "refine",
    "overlay_background": "write",
    "write_outputs": "write",
    "keras_predictor": "network",  # what it returns: the compiled call
}


def stage_functions() -> dict:
    """``(owner, name) -> stage`` of the functions to time while ``predict_files`` runs.

    Each name in every module of :mod:`skyseg.predict` that has it (a module calls the
    name it imported), and the methods that preprocess and merge tiles.
    """
    import skyseg.predict.predictor  # noqa: F401  (and with it the modules it uses)
    from skyseg.image.preprocess import Preprocessing
    from skyseg.predict.tiling import TileAccumulator

    modules = [module for name, module in sorted(sys.modules.items())
               if name.startswith("skyseg.predict.") and module is not None]
    found = {(module, name): stage for module in modules
             for name, stage in STAGE_FUNCTIONS.items() if callable(getattr(module, name, None))}
    return {**found, (Preprocessing, "apply"): "preprocess",
            (TileAccumulator, "add"): "merge", (TileAccumulator, "result"): "merge"}


@contextlib.contextmanager
def timed_stages(watch: Stopwatch):
    """Wrap :func:`stage_functions` so that ``watch`` adds up their seconds; restore them after."""
    stages = stage_functions()
    saved = {key: getattr(*key) for key in stages}
    for (owner, name), stage in stages.items():
        function = saved[(owner, name)]
        if name == "keras_predictor":
            setattr(owner, name, lambda network, f=function, s=stage: watch.wrap(s, f(network)))
        else:
            setattr(owner, name, watch.wrap(stage, function))
    try:
        yield
    finally:
        for (owner, name), function in saved.items():
            setattr(owner, name, function)


def predict_once(loaded, panorama: Path, figures: dict, **options) -> Stopwatch:
    """``predict_files`` on the panorama, its stages timed; outputs and mask size in ``figures``."""
    from PIL import Image

    from skyseg.predict.files import predict_files

    watch = Stopwatch()
    with timed_stages(watch), tempfile.TemporaryDirectory(prefix="skyseg-bench-") as out:
        begin = time.perf_counter()
        report = predict_files(loaded, [panorama], out, show_progress=False, **options)
        figures["predict_s"] = time.perf_counter() - begin
        if report.exit_code != 0:
            raise SystemExit(f"prediction failed: {report.failures}")
        figures["outputs"] = sorted(os.listdir(out))
        with Image.open(Path(out) / f"{panorama.stem}_mask.png") as mask:
            figures["mask_size"] = list(mask.size)
    return watch


def full_model_time(predict_batch, tiles: int, width: int, height: int, rng) -> float:
    """Full-resolution model time of a width x height image, from a few 1024x1024 tiles."""
    full_batch = rng.normal(0, 1, (1, 1024, 1024, 3)).astype("float32")
    predict_batch(full_batch)  # trace
    begin = time.perf_counter()
    for _ in range(tiles):
        predict_batch(full_batch)
    return (time.perf_counter() - begin) / (tiles * 1024 * 1024) * width * height


def run_one(panorama: Path, tile_size: int, width: int, height: int, *, scale: float = 1.0,
            max_side: int | None = None, refine: str = "auto", save: str = "mask,overlay",
            full_model_tiles: int = 2, members: int = 1) -> dict:
    """One setting, in this process; returns the figures."""
    import numpy as np

    from skyseg.predict.image import working_size
    from skyseg.predict.loading import keras_predictor
    from skyseg.predict.options import ImageOptions, default_overlap
    from skyseg.predict.tiling import tile_grid

    figures: dict = {"tile_size": tile_size, "scale": scale, "max_side": max_side,
                     "refine": refine, "members": members}
    loaded, model = build_networks(members, scale)
    figures["rss_after_build_gb"] = peak_rss_gb()
    work_h, work_w = working_size(height, width, scale=scale, max_side=max_side)
    overlap = default_overlap(tile_size)
    grid = tile_grid(work_h, work_w, tile_size=tile_size, overlap=overlap, wrap=True)
    predict_batch = keras_predictor(model)
    rng = np.random.default_rng(0)
    batch_size = ImageOptions().batch_size  # skyseg predict's default
    batch = rng.normal(0, 1, (batch_size, *grid.tile_shape, 3)).astype(np.float32)
    predict_batch(batch)  # traces the compiled function for this shape, as the first tile would
    figures["startup_s"] = time.perf_counter() - _STARTED
    pure_model_time = pure_model_clock(predict_batch, work_h, work_w, members, rng)
    figures["model_before_s"] = pure_model_time()

    watch = predict_once(loaded, panorama, figures, tile_size=tile_size, save=save,
                         refine=refine, max_side=max_side)
    # What a fresh `skyseg predict` process takes: start-up + predict_files
    # (the pure-model timing before the run is the benchmark's, not predict's).
    figures["whole_process_s"] = figures["startup_s"] + figures["predict_s"]
    figures["peak_rss_gb"] = peak_rss_gb()
    figures["stages_s"] = dict(watch.seconds)
    figures["model_after_s"] = pure_model_time()
    figures["model_s"] = (figures["model_before_s"] + figures["model_after_s"]) / 2
    figures.update(
        working_size=[work_w, work_h], tiles=grid.count,
        grid=f"{grid.rows.count}x{grid.cols.count}", tile_shape=list(grid.tile_shape),
        overlap_px=overlap, pixel_overhead=grid.pixel_overhead,
        ratio=figures["predict_s"] / figures["model_s"],
        whole_ratio=figures["whole_process_s"] / figures["model_s"],
        bytes_per_pixel=figures["peak_rss_gb"] * 1024**3 / (width * height),
    )
    if (work_h, work_w) != (height, width) and full_model_tiles > 0:
        figures["full_model_s"] = full_model_time(predict_batch, full_model_tiles, width, height,
                                                  rng)
        figures["whole_to_full_model"] = figures["whole_process_s"] / figures["full_model_s"]
    return figures


def describe(figures: dict, width: int, height: int, save: str) -> str:
    stages = figures["stages_s"]
    work_w, work_h = figures["working_size"]
    lines = [
        f"\n{width}x{height} panorama, network at {work_w}x{work_h} (scale {figures['scale']}, "
        f"--max-side {figures['max_side']}), --refine {figures['refine']}, saving {save}"
        + (f", an ensemble of {figures['members']} networks" if figures["members"] > 1 else ""),
        f"tile {figures['tile_size']} (overlap {figures['overlap_px']} px): {figures['tiles']} "
        f"tiles ({figures['grid']} rows x columns) of {figures['tile_shape'][0]}x"
        f"{figures['tile_shape'][1]}, pixel overhead {figures['pixel_overhead']:.3f}",
        f"  start-up (TensorFlow, model, trace) {figures['startup_s']:7.1f} s",
    ]
    for stage in ("read", "preprocess", "network", "merge", "refine", "write"):
        lines.append(f"  {stage:35}{stages.get(stage, 0.0):7.1f} s")
    lines += [
        f"  predict_files wall                 {figures['predict_s']:7.1f} s  (stages in other "
        "threads overlap the network)",
        f"  whole process (start-up + predict) {figures['whole_process_s']:7.1f} s",
        f"  pure model, image pixels           {figures['model_s']:7.1f} s  (compiled call, "
        f"1024x1024 tiles; {figures['model_before_s']:.1f} s before, "
        f"{figures['model_after_s']:.1f} s after)",
        f"  ratio predict_files / pure model   {figures['ratio']:7.3f}",
        f"  ratio whole process / pure model   {figures['whole_ratio']:7.3f}",
    ]
    if "full_model_s" in figures:
        lines.append(f"  full-resolution model time (est.) {figures['full_model_s']:8.1f} s  -> "
                     f"whole process / that = {figures['whole_to_full_model']:.3f}")
    lines += [
        f"  peak RSS                           {figures['peak_rss_gb']:7.2f} GB  "
        f"({figures['bytes_per_pixel']:.1f} bytes per input pixel; "
        f"{figures['rss_after_build_gb']:.2f} GB after building the model)",
        f"  mask {figures['mask_size'][0]}x{figures['mask_size'][1]}, outputs "
        f"{', '.join(figures['outputs'])}",
    ]
    return "\n".join(lines)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile-sizes", default="1088",
                        help="comma-separated tile sizes (multiples of 32)")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="where the panorama is kept between runs")
    parser.add_argument("--size", default="8192x4096",
                        help="panorama WIDTHxHEIGHT (smaller for a quick check)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="the run's preprocessing scale (0.25: a model trained at a quarter)")
    parser.add_argument("--max-side", type=int, default=None, help="as for skyseg predict")
    parser.add_argument("--refine", default="auto", help="as for skyseg predict")
    parser.add_argument("--save", default="mask,overlay", help="outputs, as for skyseg predict")
    parser.add_argument("--full-model-tiles", type=int, default=2,
                        help="1024x1024 tiles timed to estimate the full-resolution model time "
                             "of a shrunk run (0: skip)")
    parser.add_argument("--members", type=int, default=1,
                        help="predict with an ensemble of this many networks")
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def child_arguments(args: argparse.Namespace, tile_size: int) -> list[str]:
    """This script's command line for one tile size, measured in a fresh process."""
    return [__file__, "--single", str(tile_size), "--cache", str(args.cache),
            "--size", args.size, "--scale", str(args.scale), "--refine", args.refine,
            "--save", args.save, "--full-model-tiles", str(args.full_model_tiles),
            "--members", str(args.members),
            *(["--max-side", str(args.max_side)] if args.max_side else [])]


def main() -> int:
    args = parse_arguments()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import skyseg  # noqa: F401  (sets the Keras 2 environment before TensorFlow)

    width, height = (int(v) for v in args.size.lower().split("x"))
    source = panorama(width, height, cache=args.cache)
    if args.single is not None:
        print(json.dumps(run_one(source, args.single, width, height, scale=args.scale,
                                 max_side=args.max_side, refine=args.refine, save=args.save,
                                 full_model_tiles=args.full_model_tiles,
                                 members=args.members)))
        return 0
    print(f"panorama: {source} ({width}x{height}, {source.stat().st_size / 1e6:.1f} MB)")
    print(f"CPU cores: {os.cpu_count()}, at start: {load_average()}")
    for tile_size in (int(t) for t in args.tile_sizes.split(",")):
        child = run_child(child_arguments(args, tile_size))
        if child.returncode != 0:
            print(f"tile {tile_size}: failed\n{child.stderr[-3000:]}")
            continue
        print(describe(json.loads(child.stdout.strip().splitlines()[-1]), width, height,
                       args.save))
    print(f"\nat end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

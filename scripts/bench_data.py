"""Benchmark inputs shared by the scripts in this folder.

The 8K test panorama is the OpenEXR sample ``MultiResolution_KernerEnvLatLong.exr``
(1024x512, sun in frame) upscaled 8x bilinearly to 8192x4096 and written as a
half-float ZIP scanline EXR. It is made once and cached outside the repository
(``$SKYSEG_BENCH_CACHE`` or ``~/.cache/skyseg-bench``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_DATA = Path(os.environ.get("SKYSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
SOURCE = SHARED_DATA / "exr-samples" / "MultiResolution_KernerEnvLatLong.exr"
CACHE = Path(os.environ.get("SKYSEG_BENCH_CACHE", Path.home() / ".cache" / "skyseg-bench"))


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upscale of float32 (H, W, 3) by an integer factor (wrapping in x)."""
    from PIL import Image

    height, width = image.shape[:2]
    size = (width * factor, height * factor)
    planes = [np.asarray(Image.fromarray(image[..., c], mode="F").resize(size, Image.BILINEAR))
              for c in range(3)]
    return np.stack(planes, axis=-1).astype(np.float32)


def panorama_8k(width: int = 8192) -> Path:
    """Path of the cached ``width`` x ``width/2`` panorama EXR, made on first use."""
    from skyseg.io import read_image, write_exr

    target = CACHE / f"KernerEnvLatLong_{width}x{width // 2}.exr"
    if target.is_file():
        return target
    if not SOURCE.is_file():
        sys.exit(f"benchmark source {SOURCE} is missing (set SKYSEG_SHARED_DATA)")
    CACHE.mkdir(parents=True, exist_ok=True)
    image = read_image(SOURCE)
    write_exr(target, upscale(image, width // image.shape[1]), half=True, compression="zip")
    return target

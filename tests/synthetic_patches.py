"""Tiny patch datasets on disk, laid out as ``skyseg build-dataset`` writes them.

Not a test module: test_generators.py and test_train.py import it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from skyseg.image.preprocess import Preprocessing
from skyseg.io import write_png, write_tiff


def sky_patch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A clearly learnable pair: bright sky above a random horizon, dark textured ground.

    Returns:
        ``(radiance float32 (size, size, 3), mask uint8 (size, size))``.
    """
    horizon = int(rng.integers(size // 5, size - size // 5))
    tilt = rng.uniform(-0.3, 0.3)
    rows, cols = np.mgrid[0:size, 0:size]
    sky = rows < horizon + tilt * (cols - size / 2)
    radiance = np.empty((size, size, 3), np.float32)
    sky_colour = np.array([0.6, 0.8, 1.0], np.float32) * rng.uniform(2.0, 8.0)
    ground_colour = np.array([0.5, 0.4, 0.3], np.float32) * rng.uniform(0.02, 0.2)
    radiance[sky] = sky_colour
    radiance[~sky] = ground_colour
    radiance *= rng.uniform(0.7, 1.3, size=(size, size, 1)).astype(np.float32)
    return radiance, sky.astype(np.uint8)


def write_dataset(root: Path, *, counts: dict[str, int], size: int = 32, seed: int = 0,
                  dtype=np.float16, mode: str = "hdr", pad: bool = True) -> Path:
    """Write ``counts[split]`` synthetic patch pairs per split plus dataset.json and manifest.csv.

    With ``pad``, every fourth patch has its last quarter of columns marked
    255 (ignore) in the mask, as padding at an image border.
    """
    rng = np.random.default_rng(seed)
    preprocessing = Preprocessing(mode=mode)
    root = Path(root)
    manifest = ["id,split,source,row,col"]
    identifier = 0
    for split, count in counts.items():
        image_dir = root / f"X_{split}" / split
        mask_dir = root / f"Y_{split}" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            radiance, mask = sky_patch(rng, size)
            if mode == "ldr":
                radiance = np.clip(radiance / 8.0 * 255.0, 0, 255)
            if pad and identifier % 4 == 3:
                radiance[:, -size // 4:] = 0.0
                mask[:, -size // 4:] = 255
            values = preprocessing.apply(radiance).astype(dtype)
            write_tiff(image_dir / f"{identifier}.tif", values)
            write_png(mask_dir / f"{identifier}.png", mask)
            manifest.append(f"{identifier},{split},scene{identifier % 5}.exr,0,0")
            identifier += 1
    (root / "dataset.json").write_text(json.dumps({
        "mode": mode, "patch_size": size, "stride": size, "dtype": np.dtype(dtype).name,
        "seed": seed, "preprocessing": preprocessing.to_dict(),
    }, indent=2))
    (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    return root

"""The patch grid that covers every pixel, and banded patch extraction.

A grid of ``P x P`` patches with stride ``S`` starts at 0 and steps by ``S``;
when the last regular patch does not reach the border, one more row (or
column) of patches is aligned to the border, so every pixel lies in at least
one patch. An image smaller than a patch along an axis is padded at the end
(bottom / right) to ``P``: the image by reflection, the mask with 255
("ignore"), which is how padding is kept out of the loss.

Extraction uses ``tf.image.extract_patches`` one patch row (a band of ``P``
image rows) at a time, so memory stays at one band plus its patches whatever
the image height: about 90 MB for an 8192-wide image at 256/100. Image and mask
go through the same call (the mask as a fourth channel), so they line up by
construction.

Example:
    >>> grid = patch_grid(360, 480, 256, 100)
    >>> grid.rows, grid.cols
    ((0, 100, 104), (0, 100, 200, 224))
    >>> len(grid)
    12
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from skyseg.backend import import_tensorflow
from skyseg.errors import ConfigError
from skyseg.image.metrics import IGNORE

__all__ = [
    "IGNORE",
    "PatchGrid",
    "PatchBand",
    "patch_starts",
    "patch_grid",
    "pad_to_grid",
    "extract_patches",
    "check_patch_options",
]

logger = logging.getLogger("skyseg")



def check_patch_options(patch_size, stride) -> tuple[int, int]:
    """Validate a patch size and stride; return them as ints.

    Raises:
        ConfigError: patch size below 2, stride below 1, stride larger than
            the patch (pixels between patches would be in no patch), or a
            non-integer value.

    Example:
        >>> check_patch_options(256, 100)
        (256, 100)
    """
    for name, value in (("patch size", patch_size), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be a whole number of pixels, got {value!r}")
    if patch_size < 2:
        raise ConfigError(f"patch size must be at least 2 pixels, got {patch_size}; "
                          "use e.g. --patch-size 256")
    if stride < 1:
        raise ConfigError(f"stride must be at least 1 pixel, got {stride}; "
                          f"use a stride between 1 and the patch size {patch_size}")
    if stride > patch_size:
        raise ConfigError(
            f"stride {stride} is larger than the patch size {patch_size}: the pixels between "
            f"patches would be in no patch; use a stride of at most {patch_size}"
        )
    return int(patch_size), int(stride)


def patch_starts(length: int, patch_size: int, stride: int) -> tuple[int, ...]:
    """First pixel of each patch along one axis of ``length`` pixels.

    ``0, S, 2S, ...`` while a patch fits, then one patch aligned to the
    border if the last regular one stops short of it. A length below the
    patch size gives ``(0,)`` (the axis is padded to the patch size).

    Example:
        >>> patch_starts(40, 16, 10)
        (0, 10, 20, 24)
        >>> patch_starts(36, 16, 10)
        (0, 10, 20)
        >>> patch_starts(9, 16, 10)
        (0,)
    """
    if length < 1:
        raise ConfigError(f"image size must be at least 1 pixel, got {length}")
    if length <= patch_size:
        return (0,)
    starts = list(range(0, length - patch_size + 1, stride))
    if starts[-1] + patch_size < length:
        starts.append(length - patch_size)
    return tuple(starts)


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of one image lie.

    Attributes:
        height, width: the image's size.
        patch_size, stride: as given.
        rows, cols: top row / left column of each patch row / column, in the
            image's coordinates (padding, if any, lies after the image).

    Patches are numbered row by row: patch ``k`` is at
    ``(rows[k // len(cols)], cols[k % len(cols)])``.
    """

    height: int
    width: int
    patch_size: int
    stride: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(height, width) after padding: at least the patch size on each axis."""
        return max(self.height, self.patch_size), max(self.width, self.patch_size)

    def positions(self) -> list[tuple[int, int]]:
        """(row, col) of every patch, in patch-number order."""
        return [(row, col) for row in self.rows for col in self.cols]

    def valid_size(self, row: int, col: int) -> tuple[int, int]:
        """Rows and columns of the patch at (row, col) that are image, not padding."""
        return (min(self.patch_size, self.height - row), min(self.patch_size, self.width - col))


def patch_grid(height: int, width: int, patch_size: int, stride: int | None = None) -> PatchGrid:
    """The grid of ``patch_size`` patches, ``stride`` apart, covering an image.

    Args:
        height, width: image size in pixels.
        patch_size: side of the square patches.
        stride: step between patches (default: ``patch_size``, no overlap).

    Raises:
        ConfigError: as :func:`check_patch_options`, or an empty image.

    Example:
        >>> patch_grid(40, 70, 16, 10).cols
        (0, 10, 20, 30, 40, 50, 54)
    """
    patch_size, stride = check_patch_options(patch_size, patch_size if stride is None else stride)
    return PatchGrid(int(height), int(width), patch_size, stride,
                     patch_starts(int(height), patch_size, stride),
                     patch_starts(int(width), patch_size, stride))


def pad_to_grid(image: np.ndarray, mask: np.ndarray | None, grid: PatchGrid):
    """Pad an image (reflect) and its mask (255) at the bottom/right to the grid's padded size.

    Args:
        image: ``(H, W, C)`` array of the grid's size.
        mask: ``uint8 (H, W)`` or None.

    Returns:
        ``(image, mask)``; the inputs themselves when no padding is needed.
        Reflection repeats as needed, so a 1-pixel-wide image pads to copies
        of its one column.

    Example:
        >>> grid = patch_grid(3, 5, 4, 2)
        >>> image, mask = pad_to_grid(np.zeros((3, 5, 3), np.float32), np.ones((3, 5), np.uint8),
        ...                           grid)
        >>> image.shape, mask[3, 0]
        ((4, 5, 3), np.uint8(255))
    """
    if image.shape[:2] != (grid.height, grid.width):
        raise ConfigError(f"image is {image.shape[0]}x{image.shape[1]} (HxW) but the patch grid "
                          f"was planned for {grid.height}x{grid.width}")
    pad_rows = grid.padded_size[0] - grid.height
    pad_cols = grid.padded_size[1] - grid.width
    if not (pad_rows or pad_cols):
        return image, mask
    # "reflect" needs two samples along the axis; one sample can only repeat.
    mode_rows = "reflect" if grid.height > 1 else "edge"
    mode_cols = "reflect" if grid.width > 1 else "edge"
    padded = np.pad(image, ((0, pad_rows), (0, 0), (0, 0)), mode=mode_rows)
    padded = np.pad(padded, ((0, 0), (0, pad_cols), (0, 0)), mode=mode_cols)
    if mask is not None:
        mask = np.pad(mask, ((0, pad_rows), (0, pad_cols)), mode="constant",
                      constant_values=IGNORE)
    return padded, mask


@dataclass
class PatchBand:
    """Consecutive patches of one patch row.

    Attributes:
        row_index: which patch row (0-based) of the grid.
        row: its top row in the image.
        cols: left column of each patch.
        images: ``(n, P, P, C)`` patches, the image's dtype (or the one asked for).
        masks: ``uint8 (n, P, P)`` mask patches (255 on padding), or None.
    """

    row_index: int
    row: int
    cols: tuple[int, ...]
    images: np.ndarray
    masks: np.ndarray | None




def _patches(tf, band, patch_size: int, stride: int, count: int) -> np.ndarray:
    """``(count, P, P, C)`` patches of a ``(P, W, C)`` band tensor, ``stride`` apart, from x = 0."""
    out = tf.image.extract_patches(band[None], sizes=[1, patch_size, patch_size, 1],
                                   strides=[1, patch_size, stride, 1], rates=[1, 1, 1, 1],
                                   padding="VALID")
    # On the CPU .numpy() shares the tensor's buffer: no copy.
    return out.numpy().reshape(count, patch_size, patch_size, int(band.shape[2]))


def extract_patches(image: np.ndarray, grid: PatchGrid, *, mask: np.ndarray | None = None,
                    dtype=None) -> Iterator[PatchBand]:
    """Cut an image (and its mask) into the grid's patches, one patch row at a time.

    Each band of ``P`` rows goes through ``tf.image.extract_patches``: the
    regular columns in one call and, when the grid has a border-aligned last
    column, that patch in a second call, yielded as its own
    :class:`PatchBand` so the regular patches are never copied to join them.
    At most one patch row of patches exists at a time (about 64 MB of
    float32 patches for an 8192-wide image at 256/100). The mask goes
    through the same calls with the same sizes and strides. Images smaller
    than a patch are padded as in :func:`pad_to_grid`.

    Args:
        image: ``(H, W, C)`` float array (float32 for the network input).
        grid: from :func:`patch_grid` with the image's size.
        mask: ``uint8 (H, W)`` labels, or None.
        dtype: type of the image patches (e.g. ``np.float16``; rounded to
            nearest as ``astype`` does); None: the image's. The conversion
            happens in TensorFlow, band by band, much faster than numpy's
            float16 conversion patch by patch.

    Yields:
        :class:`PatchBand` objects, top to bottom, left to right: one per
        patch row, or two when the row has a border-aligned last column.
        Patch ``j`` of a band equals ``image[row:row + P, cols[j]:cols[j] + P]``.

    Raises:
        ConfigError: image or mask size differs from the grid's.

    Example:
        >>> image = np.random.default_rng(0).random((40, 70, 3), dtype=np.float32)
        >>> bands = list(extract_patches(image, patch_grid(40, 70, 16, 10)))  # doctest: +SKIP
        >>> [band.cols for band in bands[:2]]  # doctest: +SKIP
        [(0, 10, 20, 30, 40, 50), (54,)]
        >>> np.array_equal(bands[2].images[2], image[10:26, 20:36])  # doctest: +SKIP
        True
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ConfigError(f"expected an (H, W, C) image, got shape {image.shape}")
    if mask is not None and np.asarray(mask).shape != image.shape[:2]:
        raise ConfigError(f"mask is {np.asarray(mask).shape} but the image is {image.shape[:2]}")
    out_dtype = np.dtype(image.dtype if dtype is None else dtype)
    image, mask = pad_to_grid(image, mask, grid)
    tf = import_tensorflow()
    size, stride = grid.patch_size, grid.stride
    n_regular = (image.shape[1] - size) // stride + 1
    # (first column, patch count, columns) of the regular run, then of the border patch
    runs = [(0, n_regular, grid.cols[:n_regular])]
    if len(grid.cols) > n_regular:
        runs.append((grid.cols[-1], 1, grid.cols[n_regular:]))
    for row_index, row in enumerate(grid.rows):
        band = tf.convert_to_tensor(np.ascontiguousarray(image[row:row + size]))
        if band.dtype.as_numpy_dtype != out_dtype:
            band = tf.cast(band, out_dtype)
        mask_band = None
        if mask is not None:
            mask_band = tf.convert_to_tensor(np.ascontiguousarray(mask[row:row + size, :, None]))
        for first, count, cols in runs:
            # VALID from column 0 over the whole width gives exactly the regular run.
            images = _patches(tf, band[:, first:] if first else band, size, stride, count)
            masks = None
            if mask_band is not None:
                masks = _patches(tf, mask_band[:, first:] if first else mask_band, size, stride,
                                 count)[..., 0]
            yield PatchBand(row_index, row, cols, images, masks)
            del images, masks
        del band, mask_band

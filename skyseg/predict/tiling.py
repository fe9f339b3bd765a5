"""Tile grids, a smooth weight window and the streaming overlap-aware merge.

Plain numpy: the network is any callable on batches, so the maths here is
tested with identity and constant functions.

How an image of any size becomes tiles and back:

- **Grid.** Along each axis tiles of ``tile`` pixels step by about
  ``tile - overlap`` and are spread evenly. A plain axis is covered from
  ``-overlap // 2`` to ``length + overlap // 2`` (the image's own border
  pixels then sit inside a tile's ramp, not on its outermost column), and
  pixels outside the image are *reflected* (``numpy.pad(mode="reflect")``,
  repeated for tiles larger than the image). A *wrapping* axis (the
  horizontal axis of an equirectangular panorama) is a circle: ``n`` tiles
  start at ``offset + k * length / n`` and column indices are taken modulo
  the width, so a tile crossing x = 0 reads the columns at the far side and
  adds its prediction back into them. There is no border and no seam.
- **Tile sizes.** ``tile_size`` is the largest side. The number of tiles
  along an axis follows from it; then (``shrink``) the tile side becomes the
  smallest multiple of ``multiple`` (32 for the U-Net) that still covers the
  axis with that many tiles, so few pixels are wasted: a photo of 200 rows
  and 300 columns with 64 px overlap is one 288x384 tile (32 reflected
  pixels each side, rounded up to 32), not a 1024x1024 one, and an
  8192x4096 panorama with ``tile_size=1024`` is 5 x 9 tiles of 896x992.
- **Window.** Each tile's prediction is multiplied by a separable window
  that rises from almost 0 to 1 over ``overlap`` pixels with a raised
  cosine (strictly positive, so every pixel has weight), and the merged map
  is the weighted sum divided by the *sum of the weights* that reached each
  pixel. Because the grid is a product grid and the window separable, that
  sum is the outer product of two 1-D sums: no second full-size array.
- **Streaming.** Tiles are cut, prepared (e.g. preprocessed) and fed to the
  model ``batch_size`` at a time by a background thread (one batch ahead),
  and each output is added into one ``float32 (H, W)`` accumulator, so
  memory does not grow with the number of tiles.
- **Test-time augmentation.** ``flip``: every tile is also predicted
  mirrored left-right and the mirrored prediction mirrored back; both count
  with the same weight. ``column_offsets``: extra passes over a wrapping
  axis with the grid shifted (predict uses a half-width roll). Never
  vertical flips: sky is up.

Example:
    >>> import numpy as np
    >>> image = np.random.default_rng(0).random((37, 53, 3), dtype=np.float32)
    >>> merged = predict_tiled(image, lambda batch: batch[..., 0], tile_size=32, overlap=8)
    >>> bool(np.allclose(merged, image[..., 0], atol=1e-6))
    True
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from skyseg.errors import ConfigError

__all__ = [
    "AxisTiles",
    "TileGrid",
    "axis_tiles",
    "tile_grid",
    "weight_window",
    "reflect_indices",
    "resolve_overlap",
    "extract_tile",
    "TileAccumulator",
    "predict_tiled",
]

logger = logging.getLogger("skyseg")

#: Rows normalised at a time at the end (keeps the temporary small at 8K).
_CHUNK_ROWS = 512


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def reflect_indices(indices: np.ndarray, length: int) -> np.ndarray:
    """Map any integer positions into ``0..length-1`` by mirroring at the borders.

    Same convention as ``numpy.pad(mode="reflect")`` (the border pixel is not
    repeated), applied as often as needed, so pads larger than the image work.

    Example:
        >>> reflect_indices(np.arange(-3, 6), 4).tolist()
        [3, 2, 1, 0, 1, 2, 3, 2, 1]
    """
    indices = np.asarray(indices, dtype=np.intp)
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= length, period - folded, folded)


def weight_window(size: int, ramp: int) -> np.ndarray:
    """1-D blending window: a raised-cosine rise over ``ramp`` pixels, 1 inside.

    Strictly positive (the first sample is ``sin(pi / (4 * ramp))**2``), so a
    pixel covered by a single tile edge still has weight; symmetric; at most 1.

    Args:
        size: window length (tile side).
        ramp: pixels of the rise at each end (the overlap); 0 gives all ones.

    Returns:
        float32 ``(size,)``.

    Example:
        >>> [round(float(v), 3) for v in weight_window(6, 2)]
        [0.146, 0.854, 1.0, 1.0, 0.854, 0.146]
    """
    if size < 1 or ramp < 0:
        raise ConfigError(f"weight window needs size >= 1 and ramp >= 0, got {size}, {ramp}")
    position = np.arange(size, dtype=np.float64)
    if ramp == 0:
        return np.ones(size, np.float32)
    distance = np.minimum(position, size - 1 - position) + 0.5
    rise = np.sin(0.5 * np.pi * np.minimum(distance / ramp, 1.0)) ** 2
    return rise.astype(np.float32)


@dataclass(frozen=True)
class AxisTiles:
    """Tiles along one axis.

    Attributes:
        length: image pixels along the axis.
        tile: tile side along the axis (pixels fed to the model).
        starts: first image coordinate of each tile; may be negative or run
            past ``length`` (reflected pixels) on a plain axis, and is in
            ``0..length-1`` on a wrapping axis.
        ramp: length of the window's rise (the overlap).
        wrap: the axis is a circle (indices modulo ``length``).
    """

    length: int
    tile: int
    starts: tuple[int, ...]
    ramp: int
    wrap: bool

    @property
    def count(self) -> int:
        return len(self.starts)

    def window(self) -> np.ndarray:
        """The tile's 1-D weight window, float32 ``(tile,)``."""
        return weight_window(self.tile, self.ramp)

    def source_indices(self, k: int) -> np.ndarray:
        """Image coordinates the ``k``-th tile reads (reflected or wrapped)."""
        raw = self.starts[k] + np.arange(self.tile)
        if self.wrap:
            return np.mod(raw, self.length)
        return reflect_indices(raw, self.length)

    def pieces(self, k: int) -> list[tuple[slice, slice]]:
        """Where the ``k``-th tile's output goes: ``[(image_slice, tile_slice), ...]``.

        On a plain axis the reflected margins are dropped (one piece). On a
        wrapping axis the tile is cut where it crosses x = 0, and each part
        goes back to the columns it was read from (a tile wider than the
        image gives several pieces, each a run without repeats).
        """
        start = self.starts[k]
        if not self.wrap:
            lo, hi = max(start, 0), min(start + self.tile, self.length)
            return [(slice(lo, hi), slice(lo - start, hi - start))] if hi > lo else []
        pieces = []
        done = 0
        while done < self.tile:
            position = (start + done) % self.length
            run = min(self.tile - done, self.length - position)
            pieces.append((slice(position, position + run), slice(done, done + run)))
            done += run
        return pieces

    def weight_sum(self) -> np.ndarray:
        """Sum of the windows of all tiles at each pixel: float32 ``(length,)``."""
        total = np.zeros(self.length, np.float32)
        window = self.window()
        for k in range(self.count):
            for image_part, tile_part in self.pieces(k):
                total[image_part] += window[tile_part]
        return total


def resolve_overlap(overlap: float, tile: int) -> int:
    """Overlap in pixels: a fraction of the tile (``0 <= overlap < 1``) or pixels (``>= 1``).

    Rounded to an even number (half of it is the reflected margin at a border).

    Raises:
        ConfigError: negative, a fraction above 0.5, a non-integer pixel
            count, or more than half the tile.

    Example:
        >>> resolve_overlap(0.25, 256), resolve_overlap(64, 1088)
        (64, 64)
    """
    if not (isinstance(overlap, (int, float, np.integer, np.floating)) and math.isfinite(overlap)):
        raise ConfigError(f"--overlap must be a number, got {overlap!r}")
    if overlap < 0:
        raise ConfigError(f"--overlap must be >= 0, got {overlap}")
    if overlap < 1:
        if overlap > 0.5:
            raise ConfigError(
                f"--overlap {overlap} is more than half a tile; use a fraction in 0..0.5 "
                "(or a number of pixels)"
            )
        pixels = overlap * tile
    else:
        if overlap != int(overlap):
            raise ConfigError(
                f"--overlap {overlap}: values >= 1 are pixels and must be whole; "
                "use a fraction below 1 or an integer"
            )
        pixels = int(overlap)
        if pixels > tile // 2:
            raise ConfigError(
                f"--overlap {pixels} px is more than half the {tile}-px tile; "
                f"use at most {tile // 2}"
            )
    return 2 * int(round(pixels / 2))


def axis_tiles(length: int, tile_size: int, overlap: int, *, wrap: bool = False,
               multiple: int = 32, shrink: bool = True, offset: int = 0) -> AxisTiles:
    """Place tiles along one axis.

    Args:
        length: image pixels along the axis (>= 1).
        tile_size: the largest tile side (a multiple of ``multiple``).
        overlap: pixels shared by neighbouring tiles (even, at most half a tile).
        wrap: the axis is a circle (panorama width).
        multiple: tile sides are multiples of this.
        shrink: allow a smaller tile when the axis needs less than
            ``tile_size`` (False for models with a fixed input size).
        offset: shift of the grid on a wrapping axis (pixels).

    Returns:
        an :class:`AxisTiles`.

    Example:
        >>> axis_tiles(4096, 1088, 64).starts
        (-32, 992, 2016, 3040)
        >>> axis_tiles(8192, 1088, 64, wrap=True).count
        8
    """
    if length < 1:
        raise ConfigError(f"cannot tile an axis of {length} pixels")
    if tile_size < multiple or tile_size % multiple:
        raise ConfigError(f"tile size {tile_size} must be a positive multiple of {multiple}")
    if overlap < 0 or overlap > tile_size // 2:
        raise ConfigError(f"overlap {overlap} must be in 0..{tile_size // 2} px")
    margin = overlap // 2
    tile = tile_size
    if wrap:
        count = max(1, math.ceil(length / (tile - overlap)))
        if shrink:
            # The smallest tile that still covers the circle with this many tiles.
            tile = min(tile, _round_up(math.ceil(length / count) + overlap, multiple))
        starts = tuple(int((offset + round(k * length / count)) % length) for k in range(count))
        return AxisTiles(length, tile, starts, overlap, True)
    extent = length + 2 * margin
    count = 1 if tile >= extent else math.ceil((extent - tile) / (tile - overlap)) + 1
    if shrink:
        # The smallest tile that still covers the extent with this many tiles.
        needed = math.ceil((extent + (count - 1) * overlap) / count)
        tile = min(tile, _round_up(needed, multiple))
    if count == 1:
        starts = ((length - tile) // 2,)
    else:
        step = (extent - tile) / (count - 1)
        starts = tuple(int(-margin + round(k * step)) for k in range(count))
    return AxisTiles(length, tile, starts, overlap, False)


@dataclass(frozen=True)
class TileGrid:
    """A product grid of tiles over an image.

    Attributes:
        rows: tiles along the height (never wraps).
        cols: tiles along the width (wraps for panoramas).
    """

    rows: AxisTiles
    cols: AxisTiles

    @property
    def height(self) -> int:
        return self.rows.length

    @property
    def width(self) -> int:
        return self.cols.length

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(tile height, tile width)."""
        return self.rows.tile, self.cols.tile

    @property
    def count(self) -> int:
        return self.rows.count * self.cols.count

    @property
    def pixel_overhead(self) -> float:
        """Pixels fed to the model / image pixels (1.0 = no overlap or padding)."""
        return self.count * self.rows.tile * self.cols.tile / (self.height * self.width)

    def positions(self) -> Iterator[tuple[int, int]]:
        """(row index, column index) of every tile, row by row."""
        for i in range(self.rows.count):
            for j in range(self.cols.count):
                yield i, j


def tile_grid(height: int, width: int, *, tile_size: int | tuple[int, int], overlap: int,
              wrap: bool = False, multiple: int = 32, shrink: bool = True,
              column_offset: int = 0) -> TileGrid:
    """The tile grid of an ``height x width`` image (see :func:`axis_tiles`).

    ``tile_size`` is one side for square tiles or ``(tile_height, tile_width)``.

    Example:
        >>> grid = tile_grid(4096, 8192, tile_size=1088, overlap=64, wrap=True)
        >>> grid.count, grid.tile_shape, round(grid.pixel_overhead, 3)
        (32, (1088, 1088), 1.129)
    """
    tile_height, tile_width = _pair(tile_size)
    return TileGrid(
        axis_tiles(height, tile_height, overlap, multiple=multiple, shrink=shrink),
        axis_tiles(width, tile_width, overlap, wrap=wrap, multiple=multiple, shrink=shrink,
                   offset=column_offset),
    )


def _pair(tile_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(tile_size, (tuple, list)):
        if len(tile_size) != 2:
            raise ConfigError(f"tile size must be one number or (height, width), got {tile_size}")
        return int(tile_size[0]), int(tile_size[1])
    return int(tile_size), int(tile_size)


def _as_slice(indices: np.ndarray) -> slice | None:
    """The slice equal to ``indices`` when they are a plain ascending run, else None."""
    if len(indices) and indices[-1] - indices[0] == len(indices) - 1 and (
            np.diff(indices) == 1).all():
        return slice(int(indices[0]), int(indices[-1]) + 1)
    return None


def extract_tile(image: np.ndarray, grid: TileGrid, i: int, j: int) -> np.ndarray:
    """Copy tile ``(i, j)`` out of ``image`` (H, W[, C]), reflecting or wrapping as needed.

    Only the tile is copied (never a full-width band of reflected rows).

    Returns:
        array ``(tile_h, tile_w[, C])`` of ``image``'s dtype.
    """
    rows = grid.rows.source_indices(i)
    cols = grid.cols.source_indices(j)
    row_run, col_run = _as_slice(rows), _as_slice(cols)
    if row_run is not None and col_run is not None:
        return np.array(image[row_run, col_run])
    if col_run is not None:
        return image[:, col_run][rows]
    if row_run is not None:
        return image[row_run][:, cols]
    return image[np.ix_(rows, cols)]


class TileAccumulator:
    """Weighted sum of tile predictions over an image, normalised at the end.

    Holds one ``float32 (H, W)`` array plus two 1-D weight sums; every grid
    added must share the row tiling (passes may shift the columns).

    Example:
        >>> grid = tile_grid(5, 7, tile_size=32, overlap=0)
        >>> acc = TileAccumulator(5, 7)
        >>> acc.add_grid(grid)
        >>> acc.add(grid, 0, 0, np.full(grid.tile_shape, 0.25, np.float32))
        >>> float(acc.result().max())
        0.25
    """

    def __init__(self, height: int, width: int) -> None:
        self.values = np.zeros((height, width), np.float32)
        self._row_weights: np.ndarray | None = None
        self._col_weights = np.zeros(width, np.float32)
        self._rows: AxisTiles | None = None
        self._windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add_grid(self, grid: TileGrid, passes: int = 1) -> None:
        """Account for the weights of every tile of ``grid`` (``passes`` times)."""
        if (grid.height, grid.width) != self.values.shape:
            raise ConfigError(f"grid {grid.height}x{grid.width} does not fit the accumulator "
                              f"{self.values.shape[0]}x{self.values.shape[1]}")
        if self._rows is None:
            self._rows = grid.rows
            self._row_weights = grid.rows.weight_sum()
        elif grid.rows != self._rows:
            raise ConfigError("every pass of a tiled prediction must use the same row tiling")
        self._col_weights += np.float32(passes) * grid.cols.weight_sum()

    def add(self, grid: TileGrid, i: int, j: int, prediction: np.ndarray) -> None:
        """Add the weighted prediction ``(tile_h, tile_w)`` of tile ``(i, j)``."""
        key = id(grid)
        if key not in self._windows:
            self._windows[key] = (grid.rows.window(), grid.cols.window())
        row_window, col_window = self._windows[key]
        (image_rows, tile_rows), = grid.rows.pieces(i)
        weighted = prediction[tile_rows] * row_window[tile_rows, None]
        for image_cols, tile_cols in grid.cols.pieces(j):
            self.values[image_rows, image_cols] += weighted[:, tile_cols] * col_window[tile_cols]

    def result(self) -> np.ndarray:
        """The merged map, float32 ``(H, W)`` (normalised in place; call once)."""
        if self._row_weights is None:
            raise ConfigError("no tiles were added to the accumulator")
        if not (self._row_weights > 0).all() or not (self._col_weights > 0).all():
            raise ConfigError("some pixels were not covered by any tile")
        for start in range(0, self.values.shape[0], _CHUNK_ROWS):
            stop = start + _CHUNK_ROWS
            self.values[start:stop] /= self._row_weights[start:stop, None] * self._col_weights
        return self.values


def _as_maps(output, count: int, shape: tuple[int, int]) -> np.ndarray:
    """The model's output as float32 ``(count, tile_h, tile_w)``."""
    array = np.asarray(output, dtype=np.float32)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != (count, *shape):
        raise ConfigError(
            f"the model returned shape {array.shape} for a batch of {count} tiles of "
            f"{shape[0]}x{shape[1]}; expected ({count}, {shape[0]}, {shape[1]}[, 1])"
        )
    return array


def _tile_batches(image: np.ndarray, grids: list[TileGrid], flips: tuple[bool, ...], prepare,
                  batch_size: int) -> Iterator[tuple[list, np.ndarray]]:
    """``(entries, batch)``: the tiles of every grid (each also mirrored when ``flips`` has
    True), prepared, ``batch_size`` at a time; an entry is ``(grid, i, j, mirrored, tile)``."""
    pending: list = []
    for grid in grids:
        for i, j in grid.positions():
            tile = extract_tile(image, grid, i, j)
            tile = np.asarray(prepare(tile) if prepare is not None else tile, np.float32)
            for mirrored in flips:
                pending.append((grid, i, j, mirrored, tile[:, ::-1] if mirrored else tile))
                if len(pending) == batch_size:
                    yield pending, np.stack([entry[4] for entry in pending])
                    pending = []
    if pending:
        yield pending, np.stack([entry[4] for entry in pending])


class _Prefetcher:
    """Runs a batch generator one batch ahead in a background thread."""

    _DONE = object()

    def __init__(self, batches: Iterator) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(batches,), daemon=True,
                                        name="skyseg-tiles")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, batches: Iterator) -> None:
        try:
            for batch in batches:
                if not self._put(batch):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._DONE)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def predict_tiled(
    image: np.ndarray,
    predict_batch: Callable[[np.ndarray], np.ndarray],
    *,
    tile_size: int | tuple[int, int],
    overlap: float,
    wrap: bool = False,
    batch_size: int = 1,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    flip: bool = False,
    column_offsets: tuple[int, ...] = (0,),
    multiple: int = 32,
    shrink: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Predict a whole image tile by tile and merge the tiles seamlessly.

    Args:
        image: ``(H, W, C)`` array (e.g. float32 radiance), any size >= 1x1.
        predict_batch: ``f(batch (N, th, tw, C) float32) -> (N, th, tw[, 1])``.
        tile_size: largest tile side fed to ``predict_batch`` (multiple of
            ``multiple``), or ``(height, width)``; smaller images get a
            smaller tile unless ``shrink`` is False.
        overlap: overlap of neighbouring tiles, a fraction of the (smaller)
            tile side (< 1) or pixels (>= 1); see :func:`resolve_overlap`.
        wrap: treat the width as a circle (equirectangular panorama).
        batch_size: tiles per call of ``predict_batch``.
        prepare: applied to each cut-out tile before the model (element-wise
            preprocessing; runs in the background thread).
        flip: also predict each tile mirrored left-right (TTA).
        column_offsets: one pass per offset of the column grid (pixels);
            only meaningful with ``wrap``.
        multiple: tile sides are multiples of this.
        shrink: allow tiles smaller than ``tile_size`` for small images.
        on_batch: called with the number of tiles after each batch (progress).

    Returns:
        float32 ``(H, W)``: the weighted average of the tiles' outputs.

    Raises:
        ConfigError: bad sizes, or the model returned the wrong shape.

    Example:
        >>> image = np.ones((40, 70, 3), np.float32)
        >>> merged = predict_tiled(image, lambda b: np.full(b.shape[:3], 0.3), tile_size=32,
        ...                        overlap=0.25)
        >>> merged.shape, round(float(merged.min()), 6), round(float(merged.max()), 6)
        ((40, 70), 0.3, 0.3)
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ConfigError(f"expected an image (H, W, C), got shape {image.shape}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    height, width = image.shape[:2]
    overlap_px = resolve_overlap(overlap, min(_pair(tile_size)))
    offsets = tuple(dict.fromkeys(column_offsets)) if wrap else (0,)
    grids = [tile_grid(height, width, tile_size=tile_size, overlap=overlap_px, wrap=wrap,
                       multiple=multiple, shrink=shrink, column_offset=offset)
             for offset in offsets]
    flips = (False, True) if flip else (False,)
    accumulator = TileAccumulator(height, width)
    for grid in grids:
        accumulator.add_grid(grid, passes=len(flips))
    tile_shape = grids[0].tile_shape

    prefetcher = _Prefetcher(_tile_batches(image, grids, flips, prepare, batch_size))
    try:
        for entries, batch in prefetcher:
            maps = _as_maps(predict_batch(batch), len(entries), tile_shape)
            for (grid, i, j, mirrored, _), prediction in zip(entries, maps, strict=True):
                accumulator.add(grid, i, j, prediction[:, ::-1] if mirrored else prediction)
            if on_batch is not None:
                on_batch(len(entries))
    finally:
        prefetcher.close()
    return accumulator.result()

"""Tile grid, weight window and overlap-aware merge, with numpy stand-ins for the network."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from skyseg.errors import ConfigError
from skyseg.predict import tiling
from skyseg.predict.tiling import (
    TileAccumulator,
    axis_tiles,
    extract_tile,
    predict_tiled,
    reflect_indices,
    resolve_overlap,
    tile_grid,
    weight_window,
)


def identity(batch):
    """Output = input channel 0 (a pixel-wise model)."""
    return batch[..., 0]


def horizontal_blur(radius):
    """A contextual, left-right symmetric model: mean over 2r+1 columns, zeros beyond
    the tile (like a CNN's zero padding), so tile borders are visibly wrong."""

    def model(batch):
        channel = batch[..., 0]
        padded = np.pad(channel, ((0, 0), (0, 0), (radius, radius)))
        width = channel.shape[2]
        return sum(padded[:, :, k:k + width] for k in range(2 * radius + 1)) / (2 * radius + 1)

    return model


def test_docstring_examples():
    assert doctest.testmod(tiling).failed == 0


def test_reflect_indices_match_numpy_pad():
    for length in (1, 2, 5):
        values = np.arange(length)
        pad = 7
        expected = np.pad(values, pad, mode="reflect") if length > 1 else np.zeros(length + 2 * pad)
        assert reflect_indices(np.arange(-pad, length + pad), length).tolist() == expected.tolist()


def test_weight_window_is_smooth_positive_and_symmetric():
    window = weight_window(64, 16)
    assert window.dtype == np.float32
    assert (window > 0).all() and window.max() == 1.0
    np.testing.assert_array_equal(window, window[::-1])
    assert np.all(np.diff(window[:16]) > 0) and (window[16:48] == 1).all()
    assert np.abs(np.diff(window)).max() < 0.1  # no step: a raised cosine
    np.testing.assert_array_equal(weight_window(5, 0), np.ones(5, np.float32))


@pytest.mark.parametrize("overlap, tile, pixels", [(0, 256, 0), (0.25, 256, 64), (0.1, 100, 10),
                                                  (0.5, 64, 32), (64, 1088, 64), (7, 64, 8)])
def test_resolve_overlap(overlap, tile, pixels):
    assert resolve_overlap(overlap, tile) == pixels


@pytest.mark.parametrize("overlap, match", [(-0.1, "must be >= 0"), (0.6, "more than half a tile"),
                                            (40, "more than half the 64-px tile"),
                                            (2.5, "must be whole"), (float("nan"), "a number")])
def test_bad_overlap(overlap, match):
    with pytest.raises(ConfigError, match=match):
        resolve_overlap(overlap, 64)


def test_bad_tile_size():
    with pytest.raises(ConfigError, match="multiple of 32"):
        axis_tiles(100, 100, 0)


@pytest.mark.parametrize("length, tile_size, overlap", [(37, 32, 8), (100, 64, 16), (4096, 1088, 64),
                                                        (1, 64, 16), (33, 32, 0), (640, 256, 128)])
@pytest.mark.parametrize("wrap", [False, True])
def test_every_pixel_is_covered_and_tiles_are_multiples_of_32(length, tile_size, overlap, wrap):
    axis = axis_tiles(length, tile_size, overlap, wrap=wrap)
    assert axis.tile % 32 == 0 and axis.tile <= tile_size
    assert (axis.weight_sum() > 0).all()
    for k in range(axis.count):
        covered = sum(image.stop - image.start for image, _ in axis.pieces(k))
        assert covered == (axis.tile if wrap else min(axis.starts[k] + axis.tile, length)
                           - max(axis.starts[k], 0))
        if not wrap:
            assert axis.starts[k] >= -axis.tile and axis.starts[k] < length


def test_8k_panorama_grid():
    grid = tile_grid(4096, 8192, tile_size=1088, overlap=64, wrap=True)
    assert grid.rows.starts == (-32, 992, 2016, 3040)  # 32 reflected rows top and bottom
    assert grid.cols.starts == tuple(range(0, 8192, 1024))
    assert grid.count == 32 and grid.tile_shape == (1088, 1088)
    assert grid.pixel_overhead == pytest.approx(32 * 1088**2 / (4096 * 8192))


def test_tiles_shrink_to_what_their_count_needs():
    grid = tile_grid(4096, 8192, tile_size=1024, overlap=64, wrap=True)
    assert (grid.rows.count, grid.cols.count, grid.tile_shape) == (5, 9, (896, 992))
    assert 5 * 896 - 4 * 64 >= 4096 + 64 and 9 * (992 - 64) >= 8192  # still covered
    assert tile_grid(300, 200, tile_size=1024, overlap=64).tile_shape == (384, 288)
    fixed = tile_grid(300, 200, tile_size=1024, overlap=64, shrink=False)
    assert fixed.tile_shape == (1024, 1024) and fixed.count == 1


def test_wrapping_tile_reads_and_writes_back_across_x0():
    axis = axis_tiles(100, 64, 16, wrap=True, offset=70)
    k = 0
    assert axis.starts[k] == 70
    assert axis.source_indices(k).tolist() == list(range(70, 100)) + list(range(0, 34))
    assert axis.pieces(k) == [(slice(70, 100), slice(0, 30)), (slice(0, 34), slice(30, 64))]
    # A tile wider than the whole circle comes back in several runs without repeats.
    wide = axis_tiles(20, 64, 0, wrap=True, shrink=False)
    assert [(p.stop - p.start) for p, _ in wide.pieces(0)] == [20, 20, 20, 4]


def _source(start: int, tile: int, length: int, wrap: bool) -> np.ndarray:
    """Positions a tile starting at ``start`` reads, by numpy's own padding: reflected
    (``numpy.pad(mode="reflect")``, the border pixel not repeated) or wrapped."""
    before, after = max(0, -start), max(0, start + tile - length)
    padded = np.pad(np.arange(length), (before, after), mode="wrap" if wrap else "reflect")
    return padded[start + before:start + before + tile]


def test_extract_tile_reflects_rows_and_wraps_columns(rng):
    image = rng.random((10, 12, 3), dtype=np.float32)
    grid = tile_grid(10, 12, tile_size=32, overlap=0, wrap=True)
    tile = extract_tile(image, grid, 0, 0)
    rows = _source(grid.rows.starts[0], 32, 10, wrap=False)
    cols = np.mod(np.arange(32) + grid.cols.starts[0], 12)
    np.testing.assert_array_equal(tile, image[np.ix_(rows, cols)])


@pytest.mark.parametrize("shape, wrap", [((100, 200), True), ((100, 150), False), ((20, 300), True)])
def test_every_tile_equals_fancy_indexing(rng, shape, wrap):
    image = rng.random((*shape, 2), dtype=np.float32)
    grid = tile_grid(*shape, tile_size=64, overlap=16, wrap=wrap)
    (tile_h, tile_w), (height, width) = grid.tile_shape, shape
    for i, j in grid.positions():
        expected = image[np.ix_(_source(grid.rows.starts[i], tile_h, height, wrap=False),
                                _source(grid.cols.starts[j], tile_w, width, wrap=wrap))]
        tile = extract_tile(image, grid, i, j)
        np.testing.assert_array_equal(tile, expected)
        assert tile.flags.owndata or tile.base is not image  # a copy, never a view


@pytest.mark.parametrize("shape", [(37, 53), (101, 67), (64, 128), (5, 7), (1, 1), (333, 77)])
@pytest.mark.parametrize("overlap", [0, 0.1, 0.25, 0.5, 7])
@pytest.mark.parametrize("wrap", [False, True])
def test_identity_model_round_trips(rng, shape, overlap, wrap):
    image = rng.random((*shape, 3), dtype=np.float32)
    merged = predict_tiled(image, identity, tile_size=32, overlap=overlap, wrap=wrap,
                           batch_size=3)
    assert merged.dtype == np.float32 and merged.shape == shape
    np.testing.assert_allclose(merged, image[..., 0], rtol=1e-6, atol=1e-6)


def test_identity_with_flip_and_roll_passes(rng):
    image = rng.random((40, 80, 3), dtype=np.float32)
    merged = predict_tiled(image, identity, tile_size=32, overlap=0.25, wrap=True, flip=True,
                           column_offsets=(0, 52))
    np.testing.assert_allclose(merged, image[..., 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, wrap", [((37, 53), False), ((64, 128), True), ((3, 200), False)])
def test_constant_model_gives_a_constant_map_including_borders(shape, wrap):
    image = np.zeros((*shape, 3), np.float32)
    merged = predict_tiled(image, lambda batch: np.full(batch.shape[:3], 0.7, np.float32),
                           tile_size=32, overlap=0.25, wrap=wrap)
    np.testing.assert_allclose(merged, 0.7, rtol=0, atol=1e-6)
    for border in (merged[0], merged[-1], merged[:, 0], merged[:, -1]):
        np.testing.assert_allclose(border, 0.7, atol=1e-6)


def test_image_smaller_than_a_tile_uses_one_small_tile(rng):
    image = rng.random((9, 20, 3), dtype=np.float32)
    shapes = []

    def model(batch):
        shapes.append(batch.shape)
        return batch[..., 1]

    merged = predict_tiled(image, model, tile_size=1024, overlap=64)
    # 9 rows + 2 x 32 reflected = 73 -> 96; 20 columns + 64 = 84 -> 96: one small tile.
    assert shapes == [(1, 96, 96, 3)]
    np.testing.assert_allclose(merged, image[..., 1], atol=1e-6)


def test_batches_are_streamed_and_bounded(rng):
    image = rng.random((100, 300, 3), dtype=np.float32)
    sizes = []

    def model(batch):
        sizes.append(len(batch))
        return batch[..., 0]

    # 32-px tiles 24 px apart cover 100 + 8 rows and 300 + 8 columns (4 reflected pixels
    # at each border): ceil(100 / 24) = 5 rows of ceil(300 / 24) = 13 tiles.
    tiles = 5 * 13
    seen = []
    predict_tiled(image, model, tile_size=32, overlap=8, batch_size=4, on_batch=seen.append)
    assert sum(sizes) == tiles and max(sizes) == 4
    assert len(sizes) == -(-tiles // 4) and seen == sizes


def test_prepare_runs_on_each_tile(rng):
    image = rng.random((50, 70, 3), dtype=np.float32)
    merged = predict_tiled(image, identity, tile_size=32, overlap=8, prepare=lambda t: 2 * t + 1)
    np.testing.assert_allclose(merged, 2 * image[..., 0] + 1, rtol=1e-6)


def test_contextual_model_matches_the_whole_image_away_from_tile_borders(rng):
    """Where a pixel's context lies inside every tile covering it, tiling changes nothing."""
    image = rng.random((64, 96, 3), dtype=np.float32)
    radius = 2
    whole = horizontal_blur(radius)(np.pad(image, ((0, 0), (radius, radius), (0, 0)),
                                           mode="wrap")[None])[0, :, radius:-radius]
    merged = predict_tiled(image, horizontal_blur(radius), tile_size=64, overlap=0, wrap=True)
    grid = tile_grid(64, 96, tile_size=64, overlap=0, wrap=True)
    inside = np.ones(96, bool)
    for start in grid.cols.starts:
        for edge in (start, start + 63):
            inside[np.mod(np.arange(edge - radius, edge + radius + 1), 96)] = False
    np.testing.assert_allclose(merged[:, inside], whole[:, inside], atol=1e-6)
    assert not np.allclose(merged[:, ~inside], whole[:, ~inside], atol=1e-3)


@pytest.mark.parametrize("shift", [48, 96, -48, 144])
def test_wrap_commutes_with_horizontal_roll_for_a_contextual_model(rng, shift):
    # 192 columns, 64-px tiles with 16 px overlap: four tiles 48 px apart, so a
    # roll by a multiple of 48 moves the content exactly onto the next tiles.
    image = rng.random((40, 192, 3), dtype=np.float32)
    model = horizontal_blur(3)
    rolled = predict_tiled(np.roll(image, shift, axis=1), model, tile_size=64, overlap=16,
                           wrap=True)
    np.testing.assert_allclose(rolled, np.roll(predict_tiled(image, model, tile_size=64,
                                                             overlap=16, wrap=True),
                                               shift, axis=1), atol=1e-5)


@pytest.mark.parametrize("shift", [1, 37, 100])
def test_wrap_commutes_with_any_roll_for_a_pixelwise_model(rng, shift):
    image = rng.random((50, 100, 3), dtype=np.float32)

    def model(batch):
        return 1 / (1 + np.exp(-(batch[..., 0] * 3 - batch[..., 2])))

    rolled = predict_tiled(np.roll(image, shift, axis=1), model, tile_size=32, overlap=0.25,
                           wrap=True)
    plain = predict_tiled(image, model, tile_size=32, overlap=0.25, wrap=True)
    np.testing.assert_allclose(rolled, np.roll(plain, shift, axis=1), atol=1e-5)


def _seam_jump(merged):
    """Jump across x = 0 and the largest jump between any other neighbouring columns."""
    across = np.abs(merged[:, 0] - merged[:, -1]).max()
    inside = np.abs(np.diff(merged, axis=1)).max()
    return across, inside


def test_no_seam_at_x0_with_wrap_and_a_seam_without():
    height, width = 32, 256
    x = np.arange(width, dtype=np.float32)
    row = np.sin(2 * np.pi * x / width) + 0.3 * np.sin(6 * np.pi * x / width)
    image = np.repeat(np.repeat(row[None, :, None], height, axis=0), 3, axis=2)
    model = horizontal_blur(6)
    wrapped = predict_tiled(image, model, tile_size=64, overlap=16, wrap=True)
    across, inside = _seam_jump(wrapped)
    assert across <= inside * 1.01
    # The test can see a seam: without wrap the border is reflected, not continued.
    plain = predict_tiled(image, model, tile_size=64, overlap=16, wrap=False)
    across_plain, inside_plain = _seam_jump(plain)
    assert across_plain > 2 * inside_plain


def test_tta_flip_of_a_symmetric_model_changes_nothing(rng):
    image = rng.random((45, 90, 3), dtype=np.float32)
    model = horizontal_blur(2)
    for wrap in (False, True):
        plain = predict_tiled(image, model, tile_size=32, overlap=0.25, wrap=wrap)
        flipped = predict_tiled(image, model, tile_size=32, overlap=0.25, wrap=wrap, flip=True)
        np.testing.assert_allclose(flipped, plain, atol=1e-6)


def test_tta_flip_of_an_asymmetric_model_averages_both_directions(rng):
    image = rng.random((32, 32, 3), dtype=np.float32)

    def left_neighbour(batch):  # output = the pixel to the left (0 at the tile's edge)
        out = np.zeros(batch.shape[:3], np.float32)
        out[:, :, 1:] = batch[:, :, :-1, 0]
        return out

    merged = predict_tiled(image, left_neighbour, tile_size=32, overlap=0, flip=True)
    expected = np.zeros((32, 32), np.float32)
    expected[:, 1:] += image[:, :-1, 0] / 2
    expected[:, :-1] += image[:, 1:, 0] / 2
    np.testing.assert_allclose(merged, expected, atol=1e-6)


def test_model_with_wrong_output_shape(rng):
    image = rng.random((20, 20, 3), dtype=np.float32)
    with pytest.raises(ConfigError, match=r"returned shape \(1, 16, 16\)"):
        predict_tiled(image, lambda b: np.zeros((len(b), 16, 16)), tile_size=32, overlap=0)


def test_model_errors_propagate_and_stop_the_tile_thread(rng):
    image = rng.random((200, 200, 3), dtype=np.float32)

    def broken(batch):
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        predict_tiled(image, broken, tile_size=32, overlap=0)


def test_prepare_errors_reach_the_caller(rng):
    image = rng.random((40, 40, 3), dtype=np.float32)

    def prepare(tile):
        raise ConfigError("bad tile")

    with pytest.raises(ConfigError, match="bad tile"):
        predict_tiled(image, identity, tile_size=32, overlap=0, prepare=prepare)


def test_accumulator_rejects_mismatched_grids():
    accumulator = TileAccumulator(10, 10)
    with pytest.raises(ConfigError, match="does not fit"):
        accumulator.add_grid(tile_grid(10, 11, tile_size=32, overlap=0))
    with pytest.raises(ConfigError, match="no tiles"):
        accumulator.result()


def test_bad_image_and_batch_size():
    with pytest.raises(ConfigError, match="expected an image"):
        predict_tiled(np.zeros((4, 4)), identity, tile_size=32, overlap=0)
    with pytest.raises(ConfigError, match="batch-size must be at least 1"):
        predict_tiled(np.zeros((4, 4, 3)), identity, tile_size=32, overlap=0, batch_size=0)

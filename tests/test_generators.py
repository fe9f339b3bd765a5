"""The patch Sequence: batches, order, augmentation, damaged files, bad datasets."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from skyseg.data.augmentation import Augmentation
from skyseg.data.generators import PatchBatches, list_patches, read_dataset_info, read_patch
from skyseg.errors import ConfigError, DatasetError
from skyseg.io import write_png, write_tiff

from .synthetic_patches import write_dataset


@pytest.fixture
def dataset(tmp_path):
    """20 train and 6 val patches of 32 px (float16, HDR)."""
    return write_dataset(tmp_path / "data", counts={"train": 20, "val": 6}, size=32)


def stored(path):
    import tifffile

    return tifffile.imread(path)


def test_pairs_match_by_id_in_numeric_order(dataset):
    pairs = list_patches(dataset, "train")
    assert [p[0].stem for p in pairs] == [str(i) for i in range(20)]
    assert all(image.stem == mask.stem for image, mask in pairs)
    assert [p[0].stem for p in list_patches(dataset, "val")] == [str(i) for i in range(20, 26)]


def test_temporary_files_are_not_patches(dataset):
    (dataset / "X_train" / "train" / ".20.ab12.tmp.tif").write_bytes(b"partial")
    assert len(list_patches(dataset, "train")) == 20


def test_dataset_info(dataset):
    info = read_dataset_info(dataset)
    assert (info.mode, info.patch_size, info.preprocessing.mode) == ("hdr", 32, "hdr")


def test_training_batches_are_full_and_typed(dataset):
    batches = PatchBatches(dataset, "train", batch_size=8)
    assert len(batches) == 2  # 20 // 8: the remainder is left out, a different one each epoch
    x, y = batches[1]
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (8, 32, 32, 1) and y.dtype == np.uint8
    assert set(np.unique(y)) <= {0, 1, 255}
    with pytest.raises(IndexError):
        batches[2]


def test_validation_batches_cover_every_patch_once_unaugmented(dataset):
    batches = PatchBatches(dataset, "val", batch_size=4)
    assert len(batches) == 2
    x = np.concatenate([batches[0][0], batches[1][0]])
    assert x.shape[0] == 6
    for row, (image_path, _) in enumerate(list_patches(dataset, "val")):
        np.testing.assert_array_equal(x[row], stored(image_path).astype(np.float32))


def test_each_epoch_reshuffles_from_the_seed(dataset):
    batches = PatchBatches(dataset, "train", batch_size=4, seed=3)
    first = batches.order(0)
    batches.on_epoch_end()
    assert batches.epoch == 1
    assert not np.array_equal(batches.order(1), first)
    assert sorted(batches.order(1)) == list(range(20))
    again = PatchBatches(dataset, "train", batch_size=4, seed=3)
    np.testing.assert_array_equal(again.order(0), first)
    assert not np.array_equal(PatchBatches(dataset, "train", seed=4).order(0), first)


def test_set_epoch_gives_the_batches_of_that_epoch(dataset):
    augmentation = Augmentation()
    walked = PatchBatches(dataset, "train", batch_size=4, augmentation=augmentation, seed=1)
    for _ in range(3):
        walked.on_epoch_end()
    jumped = PatchBatches(dataset, "train", batch_size=4, augmentation=augmentation, seed=1)
    jumped.set_epoch(3)
    for index in range(len(walked)):
        for a, b in zip(walked[index], jumped[index], strict=True):
            np.testing.assert_array_equal(a, b)


def test_short_epochs_walk_one_stream_of_passes(dataset):
    # 20 patches, batch 4: a pass is 5 batches; epochs of 2 batches walk through
    # pass 0 (batches 0-4), then pass 1, without restarting a pass per epoch.
    augmentation = Augmentation()
    full = PatchBatches(dataset, "train", batch_size=4, augmentation=augmentation, seed=2)
    short = PatchBatches(dataset, "train", batch_size=4, augmentation=augmentation, seed=2,
                         steps_per_epoch=2)
    assert len(full) == 5 and len(short) == 2
    stream = []
    for epoch in range(5):  # 10 batches = two whole passes
        short.set_epoch(epoch)
        stream += [short[index] for index in range(len(short))]
    expected = [full.batch(index, passes) for passes in range(2) for index in range(5)]
    for got, want in zip(stream, expected, strict=True):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    longer = PatchBatches(dataset, "train", batch_size=4, steps_per_epoch=50)
    assert len(longer) == 5  # never more than a pass
    assert len(PatchBatches(dataset, "val", batch_size=4, steps_per_epoch=1)) == 2  # not for val
    with pytest.raises(ConfigError, match="steps per epoch must be at least 1, got 0"):
        PatchBatches(dataset, "train", steps_per_epoch=0)


def test_threads_do_not_change_the_batches(dataset):
    augmentation = Augmentation()
    one = PatchBatches(dataset, "train", batch_size=8, augmentation=augmentation, workers=1)
    three = PatchBatches(dataset, "train", batch_size=8, augmentation=augmentation, workers=3)
    try:
        for index in range(len(one)):
            np.testing.assert_array_equal(one[index][0], three[index][0])
            np.testing.assert_array_equal(one[index][1], three[index][1])
    finally:
        three.close()


def test_augmented_batches_differ_and_keep_masks_aligned(dataset):
    plain = PatchBatches(dataset, "train", batch_size=8, shuffle=True)
    augmented = PatchBatches(dataset, "train", batch_size=8, shuffle=True,
                             augmentation=Augmentation(exposure_ev=0, gamma=1))
    x_plain, y_plain = plain[0]
    x_aug, y_aug = augmented[0]
    assert not np.array_equal(x_plain, x_aug)
    assert (y_aug == 255).sum() > (y_plain == 255).sum()  # invented pixels are ignored
    # Synthetic sky is bright, ground dark: the moved masks still say where the sky went.
    info = read_dataset_info(dataset)
    radiance = info.preprocessing.invert(x_aug)[..., 2]
    sky, ground = y_aug[..., 0] == 1, y_aug[..., 0] == 0
    assert np.mean(radiance[sky] > 1.0) > 0.97
    assert np.mean(radiance[ground] < 1.0) > 0.97


def test_a_damaged_patch_is_skipped_counted_and_replaced(dataset, caplog):
    bad = dataset / "X_train" / "train" / "5.tif"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated, as by a full disk
    batches = PatchBatches(dataset, "train", batch_size=4)
    with caplog.at_level(logging.WARNING, logger="skyseg"):
        for epoch in range(3):
            batches.set_epoch(epoch)
            for index in range(len(batches)):
                x, y = batches[index]
                assert x.shape == (4, 32, 32, 3) and np.isfinite(x).all()
    assert list(batches.skipped) == [str(bad)]
    assert batches.skipped[str(bad)].startswith(f"{bad}: ")
    warnings = [r for r in caplog.records if "skipping damaged patch" in r.getMessage()]
    assert len(warnings) == 1 and "5.tif" in warnings[0].getMessage()


def test_the_replacement_is_the_next_readable_patch_of_the_order(dataset):
    batches = PatchBatches(dataset, "val", batch_size=3)
    (dataset / "X_val" / "val" / "21.tif").write_bytes(b"garbage")
    x, _ = batches[0]  # order 20, 21, 22: 21 is replaced by 23, the first patch after the batch
    pairs = list_patches(dataset, "val")
    np.testing.assert_array_equal(x[1], stored(pairs[3][0]).astype(np.float32))


@pytest.mark.parametrize("sky", [{}, {"sky_exposure_ev": 1.5, "sky_texture_ev": 2.0},
                                 {"ground_highlight_ev": 4.0}])
def test_augmented_batch_is_the_augmentation_of_each_patch(tmp_path, sky):
    """The loader's fused path (in place, threads, lookup table) equals the public functions."""
    root = write_dataset(tmp_path / "data", counts={"train": 12, "val": 1}, size=48)
    augmentation = Augmentation(**sky)
    batches = PatchBatches(root, "train", batch_size=4, augmentation=augmentation, seed=5,
                           workers=2)
    batches.set_epoch(2)
    x, y = batches[1]
    batches.close()
    pairs, order = list_patches(root, "train"), batches.order(2)
    rng = np.random.default_rng([5, 2, 1])
    for slot in range(4):
        image, mask = read_patch(*pairs[order[4 + slot]], 48)
        draw = augmentation.draw(rng, (48, 48))
        expected_image, expected_mask = augmentation.apply_draw(
            image, mask, draw, read_dataset_info(root).preprocessing)
        np.testing.assert_array_equal(x[slot], expected_image)
        np.testing.assert_array_equal(y[slot, :, :, 0], expected_mask)
    assert (y == 1).any()  # there is sky to change


def test_tiff_patches_are_read_through_their_shared_layout(dataset):
    """After one tifffile read, same-layout files are read as bytes; others go to tifffile."""
    pairs = list_patches(dataset, "val")
    write_tiff(pairs[1][0], stored(pairs[1][0]), compression="zlib")
    renamed = bytearray(pairs[2][0].read_bytes())  # one header byte differs, same length
    renamed[renamed.index(b"tifffile.py") + 10] = ord("Y")
    pairs[2][0].write_bytes(bytes(renamed))
    pairs[3][0].write_bytes(pairs[3][0].read_bytes() + b"\0")  # one byte longer
    batches = PatchBatches(dataset, "val", batch_size=6)
    x, _ = batches[0]
    layout = batches._reader.layout
    assert layout is not None
    assert layout.read(pairs[0][0]) is not None and layout.read(pairs[4][0]) is not None
    assert [layout.read(image_path) for image_path, _ in pairs[1:4]] == [None] * 3
    for row, (image_path, _) in enumerate(pairs):
        np.testing.assert_array_equal(x[row], stored(image_path).astype(np.float32))
    assert batches.skipped == {}


def test_the_layout_is_not_learnt_from_a_patch_of_the_wrong_size(dataset):
    pairs = list_patches(dataset, "val")
    write_tiff(pairs[0][0], np.zeros((16, 16, 3), np.float16))
    batches = PatchBatches(dataset, "val", batch_size=3)
    x, _ = batches[0]
    assert list(batches.skipped) == [str(pairs[0][0])]
    assert batches._reader.layout is not None and batches._reader.layout.shape == (32, 32, 3)
    np.testing.assert_array_equal(x[2], stored(pairs[2][0]).astype(np.float32))


def test_a_compressed_dataset_is_read_by_tifffile(dataset):
    pairs = list_patches(dataset, "val")
    for image_path, _ in pairs:
        write_tiff(image_path, stored(image_path), compression="zlib")
    batches = PatchBatches(dataset, "val", batch_size=6)
    x, _ = batches[0]
    assert batches._reader.layout is None
    for row, (image_path, _) in enumerate(pairs):
        np.testing.assert_array_equal(x[row], stored(image_path).astype(np.float32))


def test_non_finite_values_in_a_same_layout_patch_are_caught(dataset):
    pairs = list_patches(dataset, "val")
    values = stored(pairs[1][0])
    values[3, 4, 1] = np.inf
    write_tiff(pairs[1][0], values)  # same shape and type: read through the layout
    batches = PatchBatches(dataset, "val", batch_size=3)
    x, _ = batches[0]
    assert batches._reader.layout is not None
    assert batches.skipped[str(pairs[1][0])].endswith("has NaN/Inf values; re-run skyseg "
                                                       "build-dataset")
    np.testing.assert_array_equal(x[1], stored(pairs[3][0]).astype(np.float32))


def test_batches_survive_pickling(dataset):
    import pickle

    batches = PatchBatches(dataset, "train", batch_size=4, augmentation=Augmentation(),
                           workers=2)
    first = batches[0]
    copy = pickle.loads(pickle.dumps(batches))
    batches.close()
    for a, b in zip(first, copy[0], strict=True):
        np.testing.assert_array_equal(a, b)
    copy.close()


@pytest.mark.parametrize(("what", "message"), [
    ("mask_values", r"mask values \[7\] found, expected 0 \(not sky\), 1 \(sky\) or 255"),
    ("image_shape", r"image patch is float16 \(16, 16, 3\), expected float \(32, 32, 3\)"),
    ("nan", "NaN/Inf"),
    ("mask_missing_bytes", "unreadable mask patch"),
])
def test_read_patch_rejects_damage(dataset, what, message):
    image_path, mask_path = list_patches(dataset, "train")[0]
    if what == "mask_values":
        write_png(mask_path, np.full((32, 32), 7, np.uint8))
    elif what == "image_shape":
        write_tiff(image_path, np.zeros((16, 16, 3), np.float16))
    elif what == "nan":
        write_tiff(image_path, np.full((32, 32, 3), np.nan, np.float16))
    else:
        mask_path.write_bytes(mask_path.read_bytes()[:20])
    with pytest.raises(DatasetError, match=message):
        read_patch(image_path, mask_path, 32)


def test_every_patch_damaged_is_an_error(dataset):
    for image_path, _ in list_patches(dataset, "val"):
        image_path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="none of the 6 val patches is readable"):
        PatchBatches(dataset, "val", batch_size=2)[0]


def test_ldr_integer_patches_are_scaled_to_unit_range(tmp_path):
    root = write_dataset(tmp_path / "ldr", counts={"train": 2, "val": 1}, size=32, mode="ldr")
    image_path, mask_path = list_patches(root, "train")[0]
    values = np.arange(32 * 32 * 3, dtype=np.uint32).reshape(32, 32, 3) % 256
    write_png(image_path.with_suffix(".png"), values.astype(np.uint8))
    image_path.unlink()
    image, _ = read_patch(image_path.with_suffix(".png"), mask_path, 32)
    np.testing.assert_allclose(image, values / 255.0, rtol=1e-6)


# --------------------------------------------------------------------------- bad datasets


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(DatasetError, match="dataset.json: not found; is .* a folder made by"):
        PatchBatches(tmp_path / "data", "train")


def test_empty_split_folders(dataset):
    for folder in ("X_train", "Y_train"):
        for path in (dataset / folder / "train").iterdir():
            path.unlink()
    with pytest.raises(DatasetError, match="no patches in the train split"):
        PatchBatches(dataset, "train")


def test_missing_split(dataset):
    with pytest.raises(DatasetError, match="has no test split"):
        list_patches(dataset, "test")


def test_image_and_mask_counts_differ(dataset):
    (dataset / "Y_train" / "train" / "7.png").unlink()
    (dataset / "Y_train" / "train" / "99.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"20 image patches .* but 20 mask patches .*no mask "
                                           r"for 1 image\(s\), e.g. \['7'\]; no image for 1 "
                                           r"mask\(s\), e.g. \['99'\]"):
        list_patches(dataset, "train")
    (dataset / "Y_train" / "train" / "99.png").unlink()
    with pytest.raises(DatasetError, match="20 image patches .* but 19 mask patches"):
        PatchBatches(dataset, "train")


def test_dataset_json_without_preprocessing(dataset):
    (dataset / "dataset.json").write_text(json.dumps({"mode": "hdr", "patch_size": 32}))
    with pytest.raises(DatasetError, match='no "preprocessing" mapping'):
        read_dataset_info(dataset)
    (dataset / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_dataset_info(dataset)


def test_bad_batch_settings(dataset):
    with pytest.raises(ConfigError, match="batch size must be at least 1, got 0"):
        PatchBatches(dataset, "train", batch_size=0)
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        PatchBatches(dataset, "train", workers=0)


# --------------------------------------------------------------------------- Keras


def test_patch_sequence_is_a_keras_sequence(dataset):
    from skyseg.backend import import_keras
    from skyseg.data.generators import PatchSequence

    keras = import_keras()
    sequence = PatchSequence(dataset, "val", batch_size=4)
    assert isinstance(sequence, keras.utils.Sequence)
    assert isinstance(sequence, PatchBatches)
    assert len(sequence) == 2 and sequence[1][0].shape == (2, 32, 32, 3)


def test_importing_the_training_modules_does_not_import_tensorflow():
    code = ("import sys, skyseg, skyseg.data.generators, skyseg.training.train, skyseg.image.metrics, "
            "skyseg.data.augmentation, skyseg.training.model; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

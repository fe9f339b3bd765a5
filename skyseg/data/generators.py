"""Batches of training patches from a dataset folder, as a ``keras.utils.Sequence``.

The folder is the one ``skyseg build-dataset`` writes::

    DATA/X_<split>/<split>/<id>.tif   image patch (P, P, 3), float16/float32, preprocessed
    DATA/Y_<split>/<split>/<id>.png   mask patch uint8 (P, P): 0, 1, 255 = ignore
    DATA/dataset.json                 "mode", "patch_size", "preprocessing", ...

Image patches may also be uint8 TIFF/PNG/JPEG display values (LDR), which
are divided by 255 on reading.

:class:`PatchBatches` does the work in plain Python and numpy;
:class:`PatchSequence` is the same class on top of ``keras.utils.Sequence``
so that ``model.fit`` takes it. It is built on first access, so importing
this module does not import TensorFlow.

Batches: ``x`` float32 ``(B, P, P, 3)``, ``y`` uint8 ``(B, P, P, 1)`` in
{0, 1, 255}. ``len(sequence)`` counts batches. A shuffled (training)
sequence returns only full batches (the remainder of an epoch is left out,
a different one each epoch); an unshuffled one (validation) returns every
patch, the last batch possibly smaller.

Reproducibility: the order of epoch ``e`` is a permutation drawn from
``(seed, e)`` and the augmentation of batch ``i`` from ``(seed, e, i)``, so
a batch does not depend on which thread made it or on earlier batches, and
a resumed run sees the very batches of an uninterrupted one.
:meth:`PatchBatches.on_epoch_end` moves to the next epoch; ``set_epoch``
jumps to one.

Speed: the image patches of a dataset share one uncompressed TIFF layout
(same bytes outside the pixels), learnt from the first file tifffile reads;
the others are read as raw bytes (any file that differs goes through
tifffile). float16 values become float32 through lookup tables (exposure and
gamma included, see :func:`~skyseg.data.augmentation.augment_values`), warps run
in OpenCV, and each thread reuses its buffers: 1.5-3 ms of CPU per
augmented 256x256 patch depending on the machine's load, a quarter to a
third of the previous numpy version (``scripts/bench_loader.py``).

Damaged patches (unreadable file, wrong shape, non-finite values, mask
values other than 0/1/255) are logged once, counted in
:attr:`PatchBatches.skipped` and replaced by the next readable patch of the
epoch's order, so batches stay full.

Example:
    >>> batches = PatchBatches("DATA", "train", batch_size=8)  # doctest: +SKIP
    >>> x, y = batches[0]  # doctest: +SKIP
    >>> x.shape, y.shape  # doctest: +SKIP
    ((8, 256, 256, 3), (8, 256, 256, 1))
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skyseg.data.augmentation import (
    Augmentation,
    adjust_colour,
    augment_values,
    to_float32,
    warp_image,
    warp_mask,
)
from skyseg.errors import ConfigError, DatasetError
from skyseg.image.preprocess import Preprocessing

__all__ = [
    "SPLITS",
    "DatasetInfo",
    "read_dataset_info",
    "list_patches",
    "read_patch",
    "PatchBatches",
    "PatchSequence",  # noqa: F822 (built on first access, see __getattr__)
    "DataSource",
    "parse_sources",
    "check_sources",
    "MixedBatches",
    "MixedSequence",  # noqa: F822 (built on first access, see __getattr__)
    "open_batches",
]

logger = logging.getLogger("skyseg")

SPLITS = ("train", "val", "test")
IMAGE_PATCH_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MASK_PATCH_SUFFIX = ".png"
DATASET_FILE = "dataset.json"


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says about a patch dataset.

    Attributes:
        root: the dataset folder.
        mode: ``"hdr"`` or ``"ldr"``.
        patch_size: side of the square patches (None when not recorded).
        preprocessing: how the image patches were made from the images.
        metadata: the whole ``dataset.json``.
    """

    root: Path
    mode: str
    patch_size: int | None
    preprocessing: Preprocessing
    metadata: dict = field(default_factory=dict)


def read_dataset_info(data_dir: str | os.PathLike) -> DatasetInfo:
    """Read ``DATA/dataset.json``.

    Raises:
        DatasetError: folder or file missing, not JSON, or without a valid
            ``"preprocessing"``.

    Example:
        >>> info = read_dataset_info("DATA")  # doctest: +SKIP
        >>> info.mode, info.patch_size  # doctest: +SKIP
        ('hdr', 256)
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; pass the --out folder of "
                           "skyseg build-dataset")
    path = root / DATASET_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: not found; is {root} a folder made by skyseg build-dataset? "
                           "(re-run it to write dataset.json)")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); re-run skyseg build-dataset") from exc
    if not isinstance(metadata, dict) or not isinstance(metadata.get("preprocessing"), dict):
        raise DatasetError(f"{path}: no \"preprocessing\" mapping; re-run skyseg build-dataset")
    try:
        preprocessing = Preprocessing.from_dict(metadata["preprocessing"], source=str(path))
    except ConfigError as exc:
        raise DatasetError(str(exc)) from exc
    mode = metadata.get("mode", preprocessing.mode)
    if mode != preprocessing.mode:
        raise DatasetError(f"{path}: mode {mode!r} differs from the preprocessing's mode "
                           f"{preprocessing.mode!r}; re-run skyseg build-dataset")
    patch_size = metadata.get("patch_size")
    if patch_size is not None and not (isinstance(patch_size, int) and patch_size > 0):
        raise DatasetError(f"{path}: patch_size must be a positive integer, got {patch_size!r}")
    return DatasetInfo(root=root, mode=mode, patch_size=patch_size,
                       preprocessing=preprocessing, metadata=metadata)


def _patch_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files = {}
    for path in folder.iterdir():
        if path.suffix.lower() in suffixes and ".tmp" not in path.name and path.is_file():
            files[path.stem] = path
    return files


def _sort_key(identifier: str):
    # Numeric ids sort as numbers (2 before 10), others as text after them.
    return (0, int(identifier), "") if identifier.isdigit() else (1, 0, identifier)


def list_patches(data_dir: str | os.PathLike, split: str = "train") -> list[tuple[Path, Path]]:
    """The (image patch, mask patch) file pairs of a split, matched by id, sorted.

    Raises:
        DatasetError: unknown split, folder missing or empty, or images and
            masks that do not pair up (the message gives both counts and
            some unmatched ids).

    Example:
        >>> pairs = list_patches("DATA", "val")  # doctest: +SKIP
        >>> pairs[0]  # doctest: +SKIP
        (PosixPath('DATA/X_val/val/0.tif'), PosixPath('DATA/Y_val/val/0.png'))
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(data_dir)
    image_dir = root / f"X_{split}" / split
    mask_dir = root / f"Y_{split}" / split
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder not found; {root} has no {split} split "
                               "(run skyseg build-dataset with a split that includes it)")
    images = _patch_files(image_dir, IMAGE_PATCH_SUFFIXES)
    masks = _patch_files(mask_dir, (MASK_PATCH_SUFFIX,))
    if not images and not masks:
        raise DatasetError(f"{image_dir}: no patches in the {split} split (empty folder); "
                           "re-run skyseg build-dataset")
    if images.keys() != masks.keys():
        only_images = sorted(images.keys() - masks.keys(), key=_sort_key)
        only_masks = sorted(masks.keys() - images.keys(), key=_sort_key)
        details = []
        if only_images:
            details.append(f"no mask for {len(only_images)} image(s), e.g. {only_images[:3]}")
        if only_masks:
            details.append(f"no image for {len(only_masks)} mask(s), e.g. {only_masks[:3]}")
        raise DatasetError(
            f"{root}: {split} split has {len(images)} image patches in {image_dir} but "
            f"{len(masks)} mask patches in {mask_dir} ({'; '.join(details)}); "
            "re-run skyseg build-dataset or remove the strays"
        )
    return [(images[key], masks[key]) for key in sorted(images, key=_sort_key)]


def _read_image_patch(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        array = tifffile.imread(path)
    elif path.suffix.lower() == ".png":
        import imagecodecs

        array = imagecodecs.png_decode(path.read_bytes())
    else:
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / np.float32(255.0)
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / np.float32(65535.0)
    return array


_LOCAL = threading.local()


def _thread_buffer(nbytes: int) -> np.ndarray:
    """This thread's reusable byte buffer of at least ``nbytes``."""
    buffer = getattr(_LOCAL, "buffer", None)
    if buffer is None or buffer.size < nbytes:
        buffer = _LOCAL.buffer = np.empty(nbytes, np.uint8)
    return buffer


def _thread_image(shape: tuple[int, ...]) -> np.ndarray:
    """This thread's reusable float32 image of ``shape``."""
    image = getattr(_LOCAL, "image", None)
    if image is None or image.shape != shape:
        image = _LOCAL.image = np.empty(shape, np.float32)
    return image


@dataclass(frozen=True)
class _TiffLayout:
    """Where the pixels lie in the uncompressed TIFF image patches of a dataset.

    ``skyseg build-dataset`` writes every image patch with the same shape,
    type and tags, so its files share every byte outside the pixel data.
    Learnt from one file that tifffile decoded; a file of the same length
    with the same bytes before and after the pixels is then read as those
    bytes, without parsing (a tenth of tifffile's time). Any other file
    (compressed, another shape, damaged) is left to tifffile.
    """

    size: int
    offset: int
    head: bytes
    tail: bytes
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def learn(cls, path: Path, image: np.ndarray) -> _TiffLayout | None:
        """The layout of ``path`` whose pixels tifffile decoded as ``image``, or None."""
        import io

        import tifffile

        if image.dtype not in (np.float16, np.float32) or not image.dtype.isnative:
            return None
        data = path.read_bytes()
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if len(tif.pages) != 1:
                return None
            page = tif.pages[0]
            if page.compression != 1 or not page.is_contiguous or page.fillorder != 1:
                return None
            offset, end = page.dataoffsets[0], page.dataoffsets[0] + image.nbytes
            # Tag values inside the pixel bytes would make files with equal
            # head and tail differ in meaning; tifffile never writes them so.
            if any(offset <= tag.valueoffset < end for tag in page.tags.values()):
                return None
        if data[offset:end] != np.ascontiguousarray(image).tobytes():
            return None
        return cls(size=len(data), offset=offset, head=data[:offset], tail=data[end:],
                   dtype=image.dtype.str, shape=image.shape)

    def read(self, path: Path) -> np.ndarray | None:
        """The pixels of ``path`` (a view of this thread's buffer, valid until its next
        read), or None when the file does not have this layout."""
        buffer = _thread_buffer(self.size + 1)
        count = 0
        with open(path, "rb", buffering=0) as file:
            # One byte more than expected: a longer file shows as a longer read.
            while count <= self.size:
                got = file.readinto(memoryview(buffer)[count:self.size + 1])
                if not got:
                    break
                count += got
        end = self.size - len(self.tail)
        if (count != self.size or buffer[:self.offset].tobytes() != self.head
                or buffer[end:self.size].tobytes() != self.tail):
            return None
        return buffer[self.offset:end].view(self.dtype).reshape(self.shape)


class _ImageReader:
    """Reads the image patches of one dataset; TIFFs through a learnt :class:`_TiffLayout`.

    Args:
        patch_size: the dataset's patch side, if known: the layout is learnt
            only from a patch of that size (not from a stray damaged one).
    """

    def __init__(self, patch_size: int | None = None):
        self.patch_size = patch_size
        self.layout: _TiffLayout | None = None
        self._learnt = False

    def read(self, path: Path) -> np.ndarray:
        """The image patch as stored; may be a view of this thread's buffer."""
        tiff = path.suffix.lower() in (".tif", ".tiff")
        if tiff and self.layout is not None:
            image = self.layout.read(path)
            if image is not None:
                return image
        image = _read_image_patch(path)
        side = self.patch_size or image.shape[0]
        if tiff and not self._learnt and image.shape == (side, side, 3):
            # From the first TIFF patch that decodes; two threads may both
            # learn, and either layout is right.
            self._learnt = True
            try:
                self.layout = _TiffLayout.learn(path, image)
            except (OSError, ValueError):  # the file changed since; tifffile it stays
                self.layout = None
        return image


def _all_finite(image: np.ndarray) -> bool:
    if image.dtype == np.float16:
        # Exponent bits all set = Inf or NaN; 10x faster than np.isfinite on float16.
        return int((image.view(np.uint16) & 0x7C00).max()) != 0x7C00
    return bool(np.isfinite(image).all())


def read_patch(image_path: str | os.PathLike, mask_path: str | os.PathLike,
               patch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one pair of patches.

    Args:
        image_path: TIFF (float: stored network input; uint8: display values)
            or PNG/JPEG (display values).
        mask_path: PNG with values 0, 1 and 255.
        patch_size: expected side; None accepts any square size.

    Returns:
        ``(image, mask)``: image ``(P, P, 3)`` float16 or float32 as stored
        (integer patches become float32 in 0..1), mask ``uint8 (P, P)``.

    Raises:
        DatasetError: unreadable file, wrong shape or type, non-finite
            image values, mask values other than 0/1/255.
    """
    return _read_pair(Path(image_path), Path(mask_path), patch_size, _read_image_patch)


def _read_pair(image_path: Path, mask_path: Path, patch_size: int | None,
               read_image) -> tuple[np.ndarray, np.ndarray]:
    import imagecodecs

    try:
        image = read_image(image_path)
    except Exception as exc:
        raise DatasetError(f"{image_path}: unreadable image patch ({type(exc).__name__}: "
                           f"{exc}); delete it or re-run skyseg build-dataset") from exc
    try:
        mask = imagecodecs.png_decode(mask_path.read_bytes())
    except Exception as exc:
        raise DatasetError(f"{mask_path}: unreadable mask patch ({type(exc).__name__}: "
                           f"{exc}); delete it or re-run skyseg build-dataset") from exc
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    side = patch_size or image.shape[0]
    if image.ndim != 3 or image.shape != (side, side, 3) or image.dtype.kind != "f":
        raise DatasetError(f"{image_path}: image patch is {image.dtype} {image.shape}, expected "
                           f"float ({side}, {side}, 3)")
    if mask.dtype != np.uint8 or mask.shape != (side, side):
        raise DatasetError(f"{mask_path}: mask patch is {mask.dtype} {mask.shape}, expected "
                           f"uint8 ({side}, {side})")
    if not _all_finite(image):
        raise DatasetError(f"{image_path}: image patch has NaN/Inf values; re-run skyseg "
                           "build-dataset")
    if mask.max() > 1 and ((mask > 1) & (mask != 255)).any():
        bad = (mask > 1) & (mask != 255)
        values = np.unique(mask[bad]).tolist()[:5]
        raise DatasetError(f"{mask_path}: mask values {values} found, expected 0 (not sky), "
                           "1 (sky) or 255 (ignore)")
    return image, mask


class PatchBatches:
    """Batches of (image, mask) patches of one split, optionally augmented.

    Args:
        data_dir: the dataset folder (``dataset.json`` and ``X_*/Y_*`` folders).
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: patches per batch.
        augmentation: an :class:`~skyseg.data.augmentation.Augmentation`, or None
            (never for validation).
        shuffle: a new order every epoch and full batches only; default:
            True for ``"train"``.
        seed: the seed of the orders and of the augmentation.
        workers: threads reading and augmenting the patches of a batch.
        steps_per_epoch: shorter epochs of this many batches (shuffled
            training only). Epochs then walk one endless stream of shuffled
            passes over the patches, so no patch waits for a pass that an
            epoch cut short: epoch ``e`` holds batches ``e * steps ...`` of it.

    Raises:
        DatasetError: see :func:`read_dataset_info` and :func:`list_patches`.
        ConfigError: ``batch_size``, ``workers`` or ``steps_per_epoch`` below 1.

    Example:
        >>> batches = PatchBatches("DATA", "train", augmentation=Augmentation())  # doctest: +SKIP
        >>> len(batches), batches.skipped  # doctest: +SKIP
        (125, {})
    """

    def __init__(self, data_dir: str | os.PathLike, split: str = "train", *,
                 batch_size: int = 8, augmentation: Augmentation | None = None,
                 shuffle: bool | None = None, seed: int = 0, workers: int = 1,
                 steps_per_epoch: int | None = None):
        if int(batch_size) < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if steps_per_epoch is not None and int(steps_per_epoch) < 1:
            raise ConfigError(f"steps per epoch must be at least 1, got {steps_per_epoch}")
        if int(workers) < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.info = read_dataset_info(data_dir)
        self.split = split
        self.pairs = list_patches(data_dir, split)
        self.batch_size = int(batch_size)
        self.augmentation = augmentation
        self.shuffle = (split == "train") if shuffle is None else bool(shuffle)
        self.seed = int(seed)
        self.workers = int(workers)
        self.steps_per_epoch = (int(steps_per_epoch) if steps_per_epoch is not None
                                and self.shuffle else None)
        self.epoch = 0
        #: Damaged patch file -> reason; they are replaced in every batch.
        self.skipped: dict[str, str] = {}
        self._bad: set[int] = set()
        self._lock = threading.Lock()
        self._orders: dict[int, np.ndarray] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._reader = _ImageReader(self.info.patch_size)

    # -- Sequence protocol -------------------------------------------------

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return min(self.steps_per_epoch, self._pass_length())
        return self._pass_length()

    def _pass_length(self) -> int:
        """Batches in one full pass over the patches."""
        if self.shuffle:
            return max(1, len(self.pairs) // self.batch_size)
        return -(-len(self.pairs) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.epoch_batch(index, self.epoch)

    def epoch_batch(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch`` as ``sequence[index]`` at that epoch (any thread)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
        if self.steps_per_epoch is not None:
            passes, index = divmod(epoch * len(self) + index, self._pass_length())
            return self.batch(index, passes)
        return self.batch(index, epoch)

    def on_epoch_end(self) -> None:
        """Move to the next epoch (a new order and new augmentation draws)."""
        self.epoch += 1

    def set_epoch(self, epoch: int) -> None:
        """Continue at ``epoch`` (0-based), as after ``epoch`` calls of :meth:`on_epoch_end`."""
        self.epoch = int(epoch)

    # -- batches -----------------------------------------------------------

    @property
    def patch_size(self) -> int:
        """Side of the patches (from ``dataset.json``, else from the first readable one)."""
        if self.info.patch_size:
            return self.info.patch_size
        for position in range(len(self.pairs)):
            try:
                return self._load(position)[0].shape[0]
            except DatasetError:
                continue
        raise self._all_bad()

    def order(self, epoch: int) -> np.ndarray:
        """Patch positions in the order of ``epoch``."""
        order = self._orders.get(epoch)
        if order is None:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs))
            else:
                order = np.arange(len(self.pairs))
            with self._lock:
                if len(self._orders) > 4:
                    self._orders.clear()
                self._orders[epoch] = order
        return order

    def batch(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch``: ``(x float32 (B, P, P, 3), y uint8 (B, P, P, 1))``."""
        order = self.order(epoch)
        count = len(order)
        start = index * self.batch_size
        stop = start + self.batch_size if self.shuffle else min(start + self.batch_size, count)
        slots = [int(order[i % count]) for i in range(start, stop)]
        side = self.patch_size
        x = np.empty((len(slots), side, side, 3), np.float32)
        y = np.empty((len(slots), side, side, 1), np.uint8)
        draws = None
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, epoch, index])
            draws = [self.augmentation.draw(rng, (side, side)) for _ in slots]

        def fill(slot: int) -> int | None:
            position = slots[slot]
            if position in self._bad:
                return slot
            try:
                self._fill(slot, position, x, y, draws)
            except DatasetError:
                return slot
            return None

        if self.workers > 1 and len(slots) > 1:
            failed = [s for s in self._executor().map(fill, range(len(slots))) if s is not None]
        else:
            failed = [s for s in map(fill, range(len(slots))) if s is not None]
        # Replacements come from the rest of the epoch's order, in order, so
        # the batch is the same whatever the threads did.
        candidates = (int(order[(stop + k) % count]) for k in range(count))
        for slot in failed:
            for position in candidates:
                if position in self._bad:
                    continue
                try:
                    self._fill(slot, position, x, y, draws)
                    break
                except DatasetError:
                    continue
            else:
                raise self._all_bad()
        return x, y

    def _fill(self, slot: int, position: int, x: np.ndarray, y: np.ndarray, draws) -> None:
        image, mask = self._load(position)
        draw = draws[slot] if draws is not None else None
        matrix = draw["matrix"] if draw is not None else None
        # Values (exposure, gamma, float16 -> float32) straight into the batch,
        # or into this thread's scratch image when the geometry follows.
        values = x[slot] if matrix is None else _thread_image(image.shape)
        if draw is not None and self.augmentation.photometric:
            augment_values(image, self.info.preprocessing, gamma=draw["gamma"],
                           exposure_ev=draw["exposure_ev"], out=values)
        else:
            to_float32(image, out=values)
        if draw is not None and self.augmentation.colour:
            adjust_colour(values, self.info.preprocessing, gains_ev=draw["gains_ev"],
                          saturation=draw["saturation"], out=values)
        if draw is not None:
            changed = self.augmentation.apply_region_exposure(values, mask, draw,
                                                              self.info.preprocessing)
            if changed is not values:
                values[...] = changed
        if matrix is None:
            y[slot, :, :, 0] = mask
            return
        warp_image(values, matrix, fill=self.augmentation.fill, out=x[slot])
        warp_mask(mask, matrix, out=y[slot, :, :, 0])

    def _load(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Read and check a pair; the image may be a view of this thread's buffer."""
        image_path, mask_path = self.pairs[position]
        try:
            return _read_pair(image_path, mask_path, self.info.patch_size, self._reader.read)
        except DatasetError as exc:
            with self._lock:
                first = position not in self._bad
                self._bad.add(position)
                self.skipped[str(image_path)] = str(exc)
            if first:
                logger.warning("skipping damaged patch: %s", exc)
            raise

    def _all_bad(self) -> DatasetError:
        example = next(iter(self.skipped.values()), "")
        return DatasetError(
            f"{self.info.root}: none of the {len(self.pairs)} {self.split} patches is readable "
            f"(e.g. {example}); re-run skyseg build-dataset"
        )

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers,
                                                    thread_name_prefix="skyseg-patches")
        return self._pool

    def close(self) -> None:
        """Stop the worker threads (they also stop with the process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self):
        # Picklable for Keras' multiprocessing workers: no threads or locks.
        state = dict(self.__dict__)
        state["_pool"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.info.root)!r}, {self.split!r}, "
                f"patches={len(self.pairs)}, batch_size={self.batch_size}, "
                f"augmentation={'on' if self.augmentation else 'off'}, epoch={self.epoch})")


# --------------------------------------------------------------------------- several sources

@dataclass(frozen=True)
class DataSource:
    """One labelled source of a training run: a patch dataset and its sampling weight.

    Attributes:
        path: the dataset folder of ``skyseg build-dataset``.
        weight: the share of training patches drawn from it, relative to the
            other sources' weights (> 0).
        name: how reports and ``config.json`` name it (default: the folder name).
    """

    path: Path
    weight: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(f"source {self.path}: weight must be a positive number, got "
                              f"{self.weight!r} (write DIR=WEIGHT, e.g. data/camvid=1)")
        if not self.name:
            object.__setattr__(self, "name", Path(self.path).name)

    def to_json(self) -> dict:
        return {"path": str(Path(self.path).resolve()), "weight": float(self.weight),
                "name": self.name}


def parse_sources(data) -> list[DataSource]:
    """Training sources from what a user gives: one folder, ``"DIR=WEIGHT"`` strings,
    ``{"path": ..., "weight": ..., "name": ...}`` mappings or :class:`DataSource` s.

    Raises:
        ConfigError: no source, a weight that is not a positive number, or two
            sources with one name.

    Example:
        >>> [(s.name, s.weight) for s in parse_sources(["data/pano=3", "data/camvid"])]
        [('pano', 3.0), ('camvid', 1.0)]
    """
    items = [data] if isinstance(data, (str, os.PathLike, dict, DataSource)) else list(data)
    if not items:
        raise ConfigError("no training data given; pass --data DIR (several: DIR=WEIGHT each)")
    sources = []
    for item in items:
        if isinstance(item, DataSource):
            sources.append(item)
        elif isinstance(item, dict):
            unknown = sorted(set(item) - {"path", "weight", "name"})
            if unknown or "path" not in item:
                raise ConfigError(f"a data source is {{path, weight, name}}, got {item!r}")
            sources.append(DataSource(Path(item["path"]), _weight(item.get("weight", 1.0), item),
                                      str(item.get("name") or "")))
        else:
            text = os.fspath(item)
            path, sep, weight = text.rpartition("=")
            if not sep or not path or Path(text).is_dir():
                path, weight = text, "1"
            sources.append(DataSource(Path(path), _weight(weight, text)))
    names = [source.name for source in sources]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"two data sources are named {', '.join(twice)}; give each a "
                          "folder of its own name (or a name in the YAML config)")
    return sources


def _weight(value, given) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"data source {given!r}: the weight after '=' must be a number, got "
                          f"{value!r} (e.g. data/panoramas=3)") from None


def check_sources(sources: list[DataSource]) -> DatasetInfo:
    """The first source's :class:`DatasetInfo`, after checking that all sources fit one model.

    Raises:
        DatasetError: a dataset folder is missing or unreadable, or its mode,
            patch size or preprocessing differs from the first source's (the
            message names both and the option to rebuild with).
    """
    infos = [read_dataset_info(source.path) for source in sources]
    first = infos[0]
    for source, info in zip(sources[1:], infos[1:], strict=True):
        for what, mine, theirs in (("mode", info.mode, first.mode),
                                   ("patch size", info.patch_size, first.patch_size),
                                   ("preprocessing", info.preprocessing.to_dict(),
                                    first.preprocessing.to_dict())):
            if mine != theirs:
                raise DatasetError(
                    f"{source.path}: its {what} ({mine}) differs from that of {sources[0].path} "
                    f"({theirs}); sources of one run must fit one model: rebuild it with "
                    f"skyseg build-dataset --like RUN or the same --mode/--patch-size/--scale")
    return first


class MixedBatches:
    """Batches drawn from several patch datasets by weight; the interface of :class:`PatchBatches`.

    Training (``split="train"``): each patch of batch ``i`` of epoch ``e``
    picks its source with probability ``weight / sum(weights)`` and a patch of
    that source uniformly, both drawn from ``(seed, e, i)`` like the
    augmentation, so a small labelled source (a few panoramas) is seen as
    often as its weight says, not as often as its patch count. An epoch has
    ``steps_per_epoch`` batches, by default as many as one pass over all
    training patches. Validation: every patch of every source, in order.

    Args:
        sources: the :class:`DataSource` s (see :func:`parse_sources`).
        split, batch_size, augmentation, seed, workers, steps_per_epoch: as
            :class:`PatchBatches`.

    Raises:
        DatasetError: see :func:`check_sources`; a source without patches in ``split``.

    Example:
        >>> batches = MixedBatches(parse_sources(["pano=3", "camvid=1"]), "train")  # doctest: +SKIP
        >>> x, y = batches[0]  # doctest: +SKIP
    """

    def __init__(self, sources: list[DataSource], split: str = "train", *, batch_size: int = 8,
                 augmentation: Augmentation | None = None, seed: int = 0, workers: int = 1,
                 steps_per_epoch: int | None = None):
        self.info = check_sources(sources)
        self.split = split
        self.shuffle = split == "train"
        parts = []
        for source in sources:
            try:
                parts.append((source, PatchBatches(
                    source.path, split, batch_size=batch_size,
                    augmentation=augmentation if self.shuffle else None,
                    shuffle=self.shuffle, seed=seed, workers=1)))
            except DatasetError:
                if self.shuffle or not (Path(source.path) / DATASET_FILE).is_file():
                    raise
                # A source may have no validation split (panoramas all used for
                # training); it is validated elsewhere, by panorama.
        if not parts:
            names = ", ".join(str(source.path) for source in sources)
            raise DatasetError(f"no source has a {split} split: {names}; give at least one a "
                               f"{split} split (build-dataset --split-file)")
        self.sources = [source for source, _ in parts]
        self.parts = [part for _, part in parts]
        self.pairs = [pair for part in self.parts for pair in part.pairs]
        self.batch_size = int(batch_size)
        self.augmentation = augmentation if self.shuffle else None
        self.seed = int(seed)
        self.workers = int(workers)
        weights = np.array([source.weight for source in self.sources], dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.steps_per_epoch = (int(steps_per_epoch) if steps_per_epoch is not None
                                and self.shuffle else None)
        self.epoch = 0
        self._pool: ThreadPoolExecutor | None = None

    @property
    def skipped(self) -> dict[str, str]:
        return {key: value for part in self.parts for key, value in part.skipped.items()}

    @property
    def patch_size(self) -> int:
        return self.parts[0].patch_size

    def __len__(self) -> int:
        if not self.shuffle:
            return -(-len(self.pairs) // self.batch_size)
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return max(1, len(self.pairs) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.epoch_batch(index, self.epoch)

    def epoch_batch(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
        return self.batch(index, epoch)

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def source_of(self, positions) -> list[str]:
        """The source name of each position in :attr:`pairs` (validation reports)."""
        bounds = np.cumsum([len(part.pairs) for part in self.parts])
        return [self.sources[int(np.searchsorted(bounds, p, side="right"))].name
                for p in positions]

    def batch(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch``: ``(x float32 (B, P, P, 3), y uint8 (B, P, P, 1))``."""
        if not self.shuffle:
            return self._validation_batch(index)
        side = self.patch_size
        rng = np.random.default_rng([self.seed, epoch, index])
        picks = rng.choice(len(self.parts), size=self.batch_size, p=self.probabilities)
        positions = [int(rng.integers(len(self.parts[p].pairs))) for p in picks]
        draws = ([self.augmentation.draw(rng, (side, side)) for _ in picks]
                 if self.augmentation is not None else None)
        x = np.empty((self.batch_size, side, side, 3), np.float32)
        y = np.empty((self.batch_size, side, side, 1), np.uint8)

        def fill(slot: int) -> None:
            part = self.parts[picks[slot]]
            # A damaged patch gives way to the next ones of its source, in order.
            for step in range(len(part.pairs)):
                try:
                    part._fill(slot, (positions[slot] + step) % len(part.pairs), x, y, draws)
                    return
                except DatasetError:
                    continue
            raise part._all_bad()

        if self.workers > 1:
            list(self._executor().map(fill, range(self.batch_size)))
        else:
            for slot in range(self.batch_size):
                fill(slot)
        return x, y

    def _validation_batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start = index * self.batch_size
        positions = range(start, min(start + self.batch_size, len(self.pairs)))
        bounds = np.concatenate([[0], np.cumsum([len(part.pairs) for part in self.parts])])
        side = self.patch_size
        x = np.empty((len(positions), side, side, 3), np.float32)
        y = np.empty((len(positions), side, side, 1), np.uint8)
        for slot, position in enumerate(positions):
            which = int(np.searchsorted(bounds, position, side="right")) - 1
            part = self.parts[which]
            local = position - int(bounds[which])
            for step in range(len(part.pairs)):
                try:
                    part._fill(slot, (local + step) % len(part.pairs), x, y, None)
                    break
                except DatasetError:
                    continue
            else:
                raise part._all_bad()
        return x, y

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="skyseg-mixed")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for part in self.parts:
            part.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def __repr__(self) -> str:
        shares = ", ".join(f"{s.name}={p:.2f}" for s, p in
                           zip(self.sources, self.probabilities, strict=True))
        return f"{type(self).__name__}({self.split!r}, {shares}, patches={len(self.pairs)})"


def open_batches(data, split: str = "train", **options):
    """:class:`PatchBatches` for one dataset folder, :class:`MixedBatches` for several
    (``data``: as :func:`parse_sources` takes; ``options``: as :class:`PatchBatches`).
    With ``keras=True``, the ``keras.utils.Sequence`` versions."""
    keras = options.pop("keras", False)
    sources = parse_sources(data)
    if len(sources) == 1:
        cls = _patch_sequence_class() if keras else PatchBatches
        return cls(sources[0].path, split, **options)
    cls = _mixed_sequence_class() if keras else MixedBatches
    options.pop("shuffle", None)
    return cls(sources, split, **options)


@functools.cache
def _mixed_sequence_class():
    from skyseg.backend import import_keras

    keras = import_keras()

    class MixedSequence(MixedBatches, keras.utils.Sequence):
        __doc__ = ("A :class:`MixedBatches` that is also a ``keras.utils.Sequence``.\n\n"
                   + (MixedBatches.__doc__ or ""))

    MixedSequence.__module__ = __name__
    return MixedSequence


@functools.cache
def _patch_sequence_class():
    from skyseg.backend import import_keras

    keras = import_keras()

    class PatchSequence(PatchBatches, keras.utils.Sequence):
        __doc__ = ("A :class:`PatchBatches` that is also a ``keras.utils.Sequence``, for "
                   "``model.fit``.\n\n" + (PatchBatches.__doc__ or ""))

    PatchSequence.__module__ = __name__
    return PatchSequence


def __getattr__(name: str):
    if name == "PatchSequence":
        return _patch_sequence_class()
    if name == "MixedSequence":
        return _mixed_sequence_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

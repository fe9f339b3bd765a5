"""A batch of image files through the network: ``skyseg predict``'s work.

:func:`predict_files` finds the inputs, loads the model once and predicts one
image at a time; while one image is in the network, the next is read and the
previous one's files are written in background threads (at most one of each)
when that holds at most 256 MiB, so peak memory stays that of one 8K
panorama. A bad file is reported and the batch goes on.

Example:
    >>> report = predict_files("runs/hdr", ["panos/"], "results")  # doctest: +SKIP
    >>> report.exit_code  # doctest: +SKIP
    0
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from pathlib import Path

from skyseg.errors import ConfigError, SkysegError
from skyseg.io import find_images, prepare_output_folder, read_image, read_image_info
from skyseg.log import BatchReport, for_each
from skyseg.predict.image import predict_image
from skyseg.predict.loading import load_predictor, model_label
from skyseg.predict.options import PredictOptions, with_overrides
from skyseg.predict.outputs import overlay_background, write_outputs

__all__ = ["predict_files", "find_inputs"]

logger = logging.getLogger("skyseg")

#: Most memory a background read or write may hold while the network runs on
#: another image. An 8K panorama's float32 pixels are 384 MiB: it is read in
#: the foreground, and its sky EXR written in the foreground, so that peak
#: memory stays that of one image (< 2.5 GB with the default tiles).
_BACKGROUND_BYTES = 256 * 2**20


def predict_files(
    model,
    inputs,
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    show_progress: bool = True,
    **overrides,
) -> BatchReport:
    """Predict every input and write its outputs; bad files are reported, not fatal.

    While one image is in the network, the next is read and the previous
    one's files are written in background threads (at most one of each), when
    that holds at most 256 MiB: an 8K panorama is read in the foreground, and
    its sky EXR written in the foreground, so peak memory is one image's.

    Args:
        model: a :class:`~skyseg.training.model.LoadedModel`, run folder or model file
            (or a list of them, or a :class:`~skyseg.training.model.ModelEnsemble`:
            their probabilities averaged).
        inputs: image files, folders or glob patterns (any mix of formats).
        out_dir: output folder (created).
        options: a :class:`~skyseg.predict.options.PredictOptions`; None: the defaults.
        show_progress: a progress bar over each image's tiles.
        **overrides: fields of the options to change, for instance
            ``save`` (from :data:`~skyseg.predict.outputs.SAVE_CHOICES`, list or "a,b"),
            ``threshold``, ``overlay_max_size`` (None: full size), ``mode`` (of a
            bare model file), ``max_pixels`` (a file whose header claims more
            pixels is refused before decoding, reported like any bad file; None:
            no limit), ``image_url_prefix`` (``labelstudio``: put before each file
            name in ``data.image``; HDR inputs are named by their ``skyseg
            previews`` JPG, ``<stem>.jpg``, which is what Label Studio shows),
            :func:`~skyseg.predict.image.predict_image`'s options (``tile_size``,
            ``tta``, ...); ``ensemble``: more models averaged with ``model``.

    Returns:
        a :class:`~skyseg.log.BatchReport` (``exit_code`` 1 when some failed).

    Raises:
        TypeError: a keyword that is not an option.
        ConfigError: bad options, or no images found.
        ModelError: the model cannot be loaded.
        ImageWriteError: the output folder cannot be written.
    """
    options = with_overrides(PredictOptions, options, overrides, caller="predict_files")
    paths = find_inputs(inputs)
    out_dir = prepare_output_folder(out_dir)
    collector = _labelstudio_collector(options)
    loaded = load_predictor([model, *options.ensemble] if options.ensemble else model,
                            mode=options.mode, which=options.which)
    if collector is not None and loaded.path is not None:
        collector.model_version = f"skyseg {model_label(loaded)}"
    report = BatchReport("predict")
    queue = _claim_output_stems(paths, report)
    with _Batch(loaded, queue, out_dir, options, report, collector=collector,
                show_progress=show_progress) as batch:
        # Success is the write queue's to record: an image is done once its files are.
        for_each(list(enumerate(queue)), batch.predict, report, desc="predict", unit="image",
                 name=lambda item: item[1], record_success=False)
        batch.writes.settle()
    if collector is not None:
        _write_labelstudio(collector, out_dir, report, batch.task_names)
    report.log_summary()
    return report


def find_inputs(inputs) -> list[Path]:
    """The image files that ``inputs`` (files, folders, glob patterns) name, sorted.

    Raises:
        ConfigError: none at all.
    """
    paths = find_images(inputs)
    if not paths:
        raise ConfigError(f"no images found in {[str(i) for i in inputs]}; pass files, folders "
                          "or glob patterns of .exr/.hdr/.jpg/.png/.tif images")
    return paths


class _Batch:
    """The images of :func:`predict_files`, one in the network, the next read in the
    background, the previous one written in the background (within the memory budget).

    A context manager: leaving it shuts both background threads down.
    """

    def __init__(self, loaded, queue: list[Path], out_dir: Path, options: PredictOptions,
                 report: BatchReport, *, collector, show_progress: bool):
        self.loaded, self.queue, self.out_dir, self.options = loaded, queue, out_dir, options
        self.collector, self.show_progress = collector, show_progress
        self.reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="skyseg-read")
        self.writes = _WriteQueue(report)
        self.reads: dict[int, concurrent.futures.Future] = {}
        self.task_names: dict[str, str] = {}

    def __enter__(self) -> _Batch:
        self._read_ahead(0)
        return self

    def __exit__(self, *exc_info) -> None:
        for executor in (self.reader, self.writes.executor):
            executor.shutdown(wait=True, cancel_futures=True)

    def predict(self, item: tuple[int, Path]) -> None:
        """Read, predict and queue the writing of input number ``index``.

        Raises:
            SkysegError: the file cannot be read or predicted (the batch goes on).
        """
        index, path = item
        try:
            image, info = self._read(index, path)
        finally:
            self._read_ahead(index + 1)
        background = None
        if "overlay" in self.options.outputs:
            background = self.writes.executor.submit(
                overlay_background, image, is_hdr=info.is_hdr,
                max_size=self.options.overlay_max_size)
        try:
            probability = predict_image(self.loaded, image, self.options, is_hdr=info.is_hdr,
                                        name=path.name, show_progress=self.show_progress)
        except SkysegError:
            if background is not None:
                background.cancel()
            raise
        self._write(path, image, info.is_hdr, probability, background)

    def _read(self, index: int, path: Path):
        read = self.reads.pop(index, None)
        if read is not None:
            return read.result()
        return read_image(path, return_info=True, max_pixels=self.options.max_pixels)

    def _read_ahead(self, index: int) -> None:
        if index < len(self.queue) and _read_ahead_fits(self.queue[index]):
            self.reads[index] = self.reader.submit(read_image, self.queue[index],
                                                   return_info=True,
                                                   max_pixels=self.options.max_pixels)

    def _write(self, path: Path, image, is_hdr: bool, probability, background) -> None:
        self.writes.settle()  # the previous image's files: at most one write job at a time
        task = path.name if not is_hdr else f"{path.stem}.jpg"
        self.task_names[str(path)] = task
        save = self.options.outputs
        self.writes.pending = (path, self.writes.executor.submit(
            _write_job, self.out_dir, path.stem, probability, save, self.options.threshold,
            background, image if "exr" in save else None, is_hdr,
            self.collector and (self.collector, task)))
        if _write_bytes(image.shape[:2], save) > _BACKGROUND_BYTES:
            self.writes.settle()  # too big to hold while the next image is predicted


def _claim_output_stems(paths: list[Path], report: BatchReport) -> list[Path]:
    """The inputs to predict: a file whose stem an earlier one has is a failure (same outputs)."""
    claimed: dict[str, Path] = {}
    queue: list[Path] = []
    for path in paths:
        if path.stem in claimed:
            report.failed(path, f"{path}: its outputs {path.stem}_* would overwrite those of "
                                f"{claimed[path.stem]}; rename one of the two")
            continue
        claimed[path.stem] = path
        queue.append(path)
    return queue


class _WriteQueue:
    """The background writer of :func:`predict_files`: one job of files pending at a time.

    ``pending`` is ``(input path, future of its written files)``; :meth:`settle`
    waits for it and records the input as done or failed in the report.
    """

    def __init__(self, report: BatchReport):
        self.report = report
        self.executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="skyseg-write")
        self.pending: tuple[Path, concurrent.futures.Future] | None = None

    def settle(self) -> None:
        if self.pending is None:
            return
        done_path, future = self.pending
        self.pending = None
        try:
            written = future.result()
            self.report.succeeded(done_path)
            logger.info("%s -> %s", done_path, ", ".join(p.name for p in written.values()))
        except SkysegError as exc:
            self.report.failed(done_path, exc)


def _labelstudio_collector(options: PredictOptions):
    """The Label Studio task collector when ``labelstudio`` is saved, else None."""
    if "labelstudio" not in options.outputs:
        return None
    from skyseg.labels.labelstudio import TaskCollector

    return TaskCollector(image_url_prefix=options.image_url_prefix,
                         from_name=options.labelstudio_from_name,
                         to_name=options.labelstudio_to_name, threshold=options.threshold)


def _write_labelstudio(collector, out_dir: Path, report: BatchReport, task_names: dict) -> None:
    """``labelstudio.json`` with the tasks of the inputs that succeeded (failed ones listed)."""
    from skyseg.labels.labelstudio import LABELSTUDIO_FILE

    done = [task_names[item] for item in report.done if item in task_names]
    left_out = [item for item, _ in report.failures]
    try:
        collector.write(out_dir / LABELSTUDIO_FILE, done)
    except SkysegError as exc:
        report.failed(out_dir / LABELSTUDIO_FILE, exc)
        return
    if left_out:
        logger.warning("%s leaves out %d failed input(s): %s", out_dir / LABELSTUDIO_FILE,
                       len(left_out), ", ".join(left_out))


def _read_ahead_fits(path: Path) -> bool:
    """Whether reading ``path`` while another image is predicted stays within budget."""
    try:
        info = read_image_info(path)
    except SkysegError:
        return False  # read it in the foreground, where its error is reported
    return info.height * info.width * 12 <= _BACKGROUND_BYTES


def _write_bytes(shape: tuple[int, int], save) -> int:
    """Memory a write job holds: probability + mask, and for the EXR the image plus
    its half-float RGBA and the encoder's channel copies."""
    pixels = shape[0] * shape[1]
    return pixels * (5 + (28 if "exr" in save else 0))


def _write_job(out_dir, stem, probability, save, threshold, background, image, is_hdr,
               labelstudio=None):
    background = background.result() if background is not None else None
    written = write_outputs(out_dir, stem, probability, save=save, threshold=threshold,
                            background=background, image=image, is_hdr=is_hdr)
    if labelstudio:
        collector, name = labelstudio
        collector.add(name, probability)
    return written

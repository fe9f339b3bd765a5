"""How good a model's sky masks are on labelled images, and where it fails.

``skyseg evaluate MODEL --images DIR (--coco FILE | --masks DIR) --out DIR``
predicts every labelled image at full size through the same tiled path as
``skyseg predict`` and writes:

- ``metrics.csv``: one row per image: IoU, Dice, precision, recall and
  boundary F-score (boundary pixels matched within 2 px), plus the true,
  predicted and ignored fractions of the image;
- ``summary.json``: mean and median of each score, the pooled IoU/Dice (all
  pixels of all images together), the settings and any failures;
- ``worst/<rank>_<stem>_errors.png`` for the five images with the lowest IoU:
  false positives (predicted sky that is not) in orange-red, false negatives
  (missed sky) in blue, ignored pixels grey.

Mean and median are printed at the end.

**Truth masks** (``--masks DIR``): for image ``scene.exr`` the file
``scene_mask.png`` (what ``skyseg masks`` and ``skyseg predict`` write) or
``scene.png``, single channel (or grey RGB), same size as the image or the
same aspect ratio (then resized, nearest neighbour). Values:

- 0 = not sky, 1 = sky, 255 = ignore (not counted anywhere);
- a mask with no value 1 is a 0/255 picture: there 255 means sky;
- any other value is an error for that image.

**Scores**: a pixel is predicted sky when its probability is above
``--threshold`` (strictly, as in training). Pixel counts and IoU, Dice,
precision and recall come from :func:`skyseg.image.metrics.confusion_counts` and
:func:`skyseg.image.metrics.scores_from_counts`, the rule the training metrics use,
so IoU and Dice here are the training IoU and Dice of a whole image. When a
denominator is empty (e.g. no sky in the truth) a score is 1.0 if
prediction and truth agree there is nothing, else 0.0. This module adds
:func:`boundary_scores`; :func:`segmentation_scores` combines them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import heapq
import io
import json
import logging
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skyseg.errors import AnnotationError, ConfigError, ImageReadError
from skyseg.image import metrics
from skyseg.image.metrics import IGNORE
from skyseg.image.overlay import error_overlay, resize_mask
from skyseg.io import (
    find_images,
    prepare_output_folder,
    read_image,
    write_png,
    write_text,
)
from skyseg.labels import sky_gaps
from skyseg.labels.annotations import CategoryOptions
from skyseg.log import BatchReport, for_each
from skyseg.options import from_args, option
from skyseg.predict.image import predict_image
from skyseg.predict.loading import load_predictor, model_label
from skyseg.predict.options import (
    PredictionOptions,
    add_stage_options,
    image_options,
    with_overrides,
)
from skyseg.predict.outputs import overlay_background
from skyseg.predict.predictor import load_for_cli, resolve_model_argument

__all__ = [
    "METRICS",
    "DEFAULT_TOLERANCE",
    "EvaluateOptions",
    "truth_from_mask",
    "read_truth_mask",
    "boundary_scores",
    "segmentation_scores",
    "summarise",
    "Evaluation",
    "evaluate_model",
    "report_evaluation",
    "CLI_HELP",
    "add_arguments",
    "run",
]

logger = logging.getLogger("skyseg")

CLI_HELP = "score a model on labelled images (IoU, Dice, boundary F) and show the worst cases"

#: Per-image scores, in the CSV's order.
METRICS = ("iou", "dice", "precision", "recall", "boundary_f")
#: Boundary pixels within this distance (pixels, Euclidean) count as matched.
DEFAULT_TOLERANCE = 2
#: Long side of the error overlays.
DEFAULT_ERROR_OVERLAY_SIZE = 1024
_MASK_NAMES = ("{stem}_mask.png", "{stem}.png")


def truth_from_mask(mask: np.ndarray, *, source: str = "mask") -> np.ndarray:
    """Normalise a truth mask to uint8 {0 = not sky, 1 = sky, 255 = ignore}.

    The rule: values must be 0, 1 or 255. If 1 occurs, 255 marks pixels to
    ignore; if 1 never occurs the mask is a 0/255 picture and 255 is sky.

    Raises:
        AnnotationError: other values, or not a single-channel mask.

    Example:
        >>> truth_from_mask(np.array([[0, 1, 255]])).tolist()
        [[0, 1, 255]]
        >>> truth_from_mask(np.array([[0, 255, 255]])).tolist()
        [[0, 1, 1]]
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] in (3, 4):
        if not (np.array_equal(mask[..., 0], mask[..., 1])
                and np.array_equal(mask[..., 0], mask[..., 2])):
            raise AnnotationError(
                f"{source}: a colour mask; expected one channel with 0 = not sky, 1 = sky, "
                "255 = ignore (or 0/255)"
            )
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise AnnotationError(f"{source}: expected an (H, W) mask, got shape {mask.shape}")
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    values = np.unique(mask)
    unexpected = [v for v in values.tolist() if v not in (0, 1, IGNORE)]
    if unexpected:
        shown = ", ".join(str(v) for v in unexpected[:5])
        raise AnnotationError(
            f"{source}: mask values {shown}{'...' if len(unexpected) > 5 else ''} are not "
            "0 (not sky), 1 (sky) or 255 (ignore; sky in a 0/255 mask); re-export the mask"
        )
    truth = mask.astype(np.uint8)
    if 1 not in values:
        truth[truth == IGNORE] = 1
    return truth


def read_truth_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a truth mask file as uint8 {0, 1, 255} (see :func:`truth_from_mask`).

    Raises:
        ImageReadError: missing or unreadable file.
        AnnotationError: values outside the rule.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as handle:
            handle.load()
            mask = np.asarray(handle)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: mask file not found") from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageReadError(
            f"{path}: unreadable mask ({type(exc).__name__}: {exc}); re-export it as PNG"
        ) from exc
    return truth_from_mask(mask, source=str(path))


def _check_same_size(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.shape != truth.shape:
        raise ConfigError(f"prediction {prediction.shape} and truth {truth.shape} differ in size")


def _inner_boundary(region: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` with a 4-neighbour in ``outside`` (image borders are not edges)."""
    edge = np.zeros_like(region)
    edge[1:] |= outside[:-1]
    edge[:-1] |= outside[1:]
    edge[:, 1:] |= outside[:, :-1]
    edge[:, :-1] |= outside[:, 1:]
    return edge & region


def _disk(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= radius * radius


def boundary_scores(prediction: np.ndarray, truth: np.ndarray, *,
                    tolerance: float = DEFAULT_TOLERANCE) -> dict[str, float]:
    """Boundary precision, recall and F-score with a distance tolerance.

    The boundary of a mask is its sky pixels that touch a non-sky pixel
    (4-neighbourhood). Only edges between two pixels the truth does not
    ignore count, in both masks: the truth cannot say whether an edge against
    an ignored pixel is right. A boundary pixel is matched when the other mask's
    boundary lies within ``tolerance`` pixels (Euclidean).

    Returns:
        ``{"boundary_precision", "boundary_recall", "boundary_f"}``; both
        boundaries empty scores 1.0, only one empty 0.0.

    Example:
        >>> truth = np.zeros((6, 6), np.uint8); truth[:3] = 1
        >>> prediction = np.zeros((6, 6), bool); prediction[:4] = True
        >>> boundary_scores(prediction, truth)["boundary_f"]
        1.0
    """
    from scipy.ndimage import binary_dilation

    prediction = np.asarray(prediction).astype(bool, copy=False)
    truth = np.asarray(truth)
    _check_same_size(prediction, truth)
    valid = truth != IGNORE
    true_edge = _inner_boundary(truth == 1, truth == 0)
    predicted_edge = _inner_boundary(prediction & valid, ~prediction & valid)
    true_count = int(np.count_nonzero(true_edge))
    predicted_count = int(np.count_nonzero(predicted_edge))
    if true_count == 0 or predicted_count == 0:
        score = 1.0 if true_count == predicted_count else 0.0
        return {"boundary_precision": score, "boundary_recall": score, "boundary_f": score}
    disk = _disk(tolerance)
    near_true = binary_dilation(true_edge, structure=disk)
    near_predicted = binary_dilation(predicted_edge, structure=disk)
    precision = np.count_nonzero(predicted_edge & near_true) / predicted_count
    recall = np.count_nonzero(true_edge & near_predicted) / true_count
    f_score = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"boundary_precision": float(precision), "boundary_recall": float(recall),
            "boundary_f": float(f_score)}


def segmentation_scores(prediction: np.ndarray, truth: np.ndarray, *,
                        tolerance: float = DEFAULT_TOLERANCE) -> dict[str, float]:
    """All per-image scores of a predicted mask against a truth mask.

    Args:
        prediction: (H, W), non-zero = sky.
        truth: uint8 (H, W): 0 not sky, 1 sky, 255 ignore (see :func:`truth_from_mask`).
        tolerance: boundary matching distance in pixels.

    Returns:
        ``iou, dice, precision, recall, boundary_f`` (plus boundary precision
        and recall, and the counts ``tp, fp, fn, tn``).

    Example:
        >>> truth = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
        >>> prediction = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
        >>> scores = segmentation_scores(prediction, truth)
        >>> round(scores["iou"], 4), scores["dice"], scores["recall"]
        (0.6667, 0.8, 0.75)
    """
    decision = np.asarray(prediction).astype(bool, copy=False)
    truth = np.asarray(truth)
    _check_same_size(decision, truth)
    counts = metrics.confusion_counts(truth, decision.view(np.uint8))
    scores: dict[str, float] = metrics.scores_from_counts(counts)
    scores.update(boundary_scores(decision, truth, tolerance=tolerance))
    scores.update({key: counts[key] for key in ("tp", "fp", "fn", "tn")})
    return scores


def summarise(rows: list[dict]) -> dict:
    """Mean and median of each of :data:`METRICS` over images, and pooled IoU/Dice.

    Example:
        >>> summary = summarise([dict(iou=0.5, dice=0.6, precision=1, recall=0.5, boundary_f=0.2,
        ...                           tp=1, fp=0, fn=1), dict(iou=1.0, dice=1.0, precision=1,
        ...                           recall=1, boundary_f=1.0, tp=2, fp=0, fn=0)])
        >>> summary["mean"]["iou"], summary["median"]["iou"], summary["pooled"]["iou"]
        (0.75, 0.75, 0.75)
    """
    if not rows:
        return {"images": 0}
    pooled = metrics.scores_from_counts(
        {key: sum(row[key] for row in rows) for key in ("tp", "fp", "fn")})
    return {
        "images": len(rows),
        "mean": {m: float(statistics.fmean(row[m] for row in rows)) for m in METRICS},
        "median": {m: float(statistics.median(row[m] for row in rows)) for m in METRICS},
        "pooled": {"iou": pooled["iou"], "dice": pooled["dice"]},
    }


@dataclass
class Evaluation:
    """Result of :func:`evaluate_model`.

    Attributes:
        rows: one dict per image (``image``, ``stem``, size, scores, fractions).
        summary: :func:`summarise` of the rows plus settings.
        report: failures (unreadable images or masks) and missing truths.
        worst: ``(stem, iou, overlay path or None)`` of the worst images, worst first.
        out_dir: where the files went (None when nothing was written).
    """

    rows: list[dict]
    summary: dict
    report: BatchReport
    worst: list[tuple[str, float, Path | None]] = field(default_factory=list)
    out_dir: Path | None = None


def _mask_pairs(images_dir: Path, masks_dir: Path) -> tuple[list, list[str]]:
    """(image, stem, truth(h, w)) for each image with a mask file; stems without one."""
    if not masks_dir.is_dir():
        raise ConfigError(f"{masks_dir}: masks folder not found; check --masks")
    mask_files = {p.name: p for p in masks_dir.iterdir() if p.is_file()}
    used = {(masks_dir / name).resolve() for name in mask_files}
    pairs, missing = [], []
    for image_path in find_images(images_dir):
        if image_path.resolve() in used and image_path.stem.endswith("_mask"):
            continue  # a mask stored beside the images, not an image to score
        stem = image_path.stem
        found = next((mask_files[n.format(stem=stem)] for n in _MASK_NAMES
                      if n.format(stem=stem) in mask_files
                      and mask_files[n.format(stem=stem)].resolve() != image_path.resolve()),
                     None)
        if found is None:
            missing.append(stem)
            continue
        pairs.append((image_path, stem, _mask_reader(found)))
    return pairs, missing


def _mask_reader(path: Path) -> Callable[[int, int], np.ndarray]:
    def truth(height: int, width: int) -> np.ndarray:
        return _fit(read_truth_mask(path), height, width, str(path))

    return truth


def _fit(truth: np.ndarray, height: int, width: int, source: str) -> np.ndarray:
    """The truth at the image's size: as is, or resized when only the scale differs."""
    if truth.shape == (height, width):
        return truth
    th, tw = truth.shape
    if abs(th / tw - height / width) > 0.01 * height / width:
        raise AnnotationError(
            f"{source}: mask is {tw}x{th} but the image is {width}x{height} (another aspect "
            "ratio); is it the mask of another image?"
        )
    logger.debug("%s: resizing the %dx%d mask to %dx%d", source, tw, th, width, height)
    return resize_mask(truth, height, width)


def _coco_pairs(images_dir: Path, coco: Path, *, mode: str, sky_categories,
                non_sky_categories) -> tuple[list, list[str]]:
    from skyseg.labels.annotations import load_coco, match_images

    labels = load_coco(coco, sky_categories=sky_categories, non_sky_categories=non_sky_categories)
    matched, missing = match_images(labels, images_dir, mode=mode)

    def reader(stem: str) -> Callable[[int, int], np.ndarray]:
        return lambda height, width: labels.mask(stem, height, width)

    return [(path, stem, reader(stem)) for path, stem in matched], missing


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = ["image", "stem", "width", "height", *METRICS, "boundary_precision",
               "boundary_recall", "sky_true", "sky_predicted", "ignored"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


@dataclass
class EvaluateOptions(PredictionOptions, CategoryOptions):
    """The options of ``skyseg evaluate``: the prediction options, the COCO categories
    (``--sky-category``, :class:`~skyseg.labels.annotations.CategoryOptions`) and what is
    scored.

    ``mlflow`` is the command line's to act on (:func:`run` logs the summary to the
    training run's MLflow run); :func:`evaluate_model` only scores.

    Example:
        >>> EvaluateOptions(worst=2, tile_size=512).sky_categories
        ('sky',)
    """

    only: Path | None = option(None, "score only the images named in this file, one per line "
                                     "(e.g. the val.txt of a split)", flag="--list",
                               metavar="FILE")
    worst: int = option(5, "error overlays of this many lowest-IoU images")
    tolerance: float = option(DEFAULT_TOLERANCE, "boundary F-score matching distance in pixels")
    ignore_sky_gaps: bool = option(False, "leave sky-coloured not-sky pixels between bare "
                                          "branches (labelled tree by some, sky by others) out "
                                          "of the scores")
    mlflow: bool = option(False, "log the summary to the MLflow run of the training run "
                                 "(skyseg train --mlflow; found through MODEL's run folder)")

    def __post_init__(self):
        PredictionOptions.__post_init__(self)
        CategoryOptions.__post_init__(self)
        if self.worst < 0:
            raise ConfigError(f"--worst must be >= 0, got {self.worst}")


def _stems_to_keep(only) -> set[str]:
    """Stems from an iterable, or from a list file (comments and extensions ignored)."""
    if isinstance(only, (str, os.PathLike)):
        path = Path(only)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ConfigError(f"{path}: image list not found; check --list") from exc
        only = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return {Path(str(item)).stem for item in only}


def evaluate_model(
    model,
    images: str | os.PathLike,
    options: EvaluateOptions | None = None,
    *,
    masks: str | os.PathLike | None = None,
    coco: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    show_progress: bool = False,
    **overrides,
) -> Evaluation:
    """Predict every labelled image in ``images`` at full size and score it.

    Args:
        model: a :class:`~skyseg.training.model.LoadedModel`, run folder or model file
            (or a list of them, or a :class:`~skyseg.training.model.ModelEnsemble`:
            their probabilities averaged).
        images: folder of images (EXR/HDR/JPG/PNG/TIFF).
        options: an :class:`EvaluateOptions`; None: the defaults.
        masks: folder of truth masks (``<stem>_mask.png`` or ``<stem>.png``);
            or
        coco: a Label Studio COCO export (read by :mod:`skyseg.labels.annotations`:
            sky polygons minus non-sky polygons, matched by original name).
        out_dir: where to write ``metrics.csv``, ``summary.json`` and the
            worst overlays; None writes nothing.
        show_progress: a progress bar over each image's tiles.
        **overrides: fields of the options to change (see :class:`EvaluateOptions`),
            for instance ``threshold``, ``worst``, ``tolerance``, ``only`` (an
            iterable of stems, or the path of a list file like val.txt),
            ``sky_categories``, ``ignore_sky_gaps``, ``max_pixels``, ``mode``, and
            :func:`~skyseg.predict.image.predict_image`'s options (tiling, ``refine``,
            ``max_side``).

    Returns:
        an :class:`Evaluation`.

    Raises:
        TypeError: a keyword that is not an option.
        ConfigError: neither or both of ``masks``/``coco``; no labelled image found; a bad
            option.
        ModelError: the model cannot be loaded.

    Example:
        >>> result = evaluate_model("runs/hdr", "val", masks="val_masks")  # doctest: +SKIP
        >>> result.summary["mean"]["iou"]  # doctest: +SKIP
        0.93
    """
    if (masks is None) == (coco is None):
        raise ConfigError("give exactly one source of truth: --masks DIR or --coco FILE")
    options = with_overrides(EvaluateOptions, options, overrides, caller="evaluate_model")
    images = Path(images)
    if not images.is_dir():
        raise ConfigError(f"{images}: images folder not found; check --images")
    output = prepare_output_folder(out_dir) if out_dir is not None else None
    loaded = load_predictor([model, *options.ensemble] if options.ensemble else model,
                            mode=options.mode, which=options.which)
    pairs, missing, source = _labelled_images(images, masks, coco, options,
                                              mode=loaded.preprocessing.mode)
    report = BatchReport("evaluate")
    worst = _WorstImages(options.worst, pictures=output is not None)
    score = functools.partial(_score_image, loaded=loaded, options=options, worst=worst,
                              show_progress=show_progress)
    rows = for_each(list(enumerate(pairs)), score, report, desc="evaluate", unit="image",
                    name=lambda item: item[1][0])
    summary = summarise(rows)
    summary.update(model=model_label(loaded), threshold=options.threshold,
                   tolerance_px=options.tolerance, truth=source,
                   ignore_sky_gaps=bool(options.ignore_sky_gaps), missing_truth=missing,
                   failed=[item for item, _ in report.failures], options=image_options(options))
    worst_list = worst.write(output)
    summary["worst"] = [{"stem": s, "iou": v, "overlay": str(p) if p else None}
                        for s, v, p in worst_list]
    if output is not None:
        _write_csv(output / "metrics.csv", rows)
        write_text(output / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    report.log_summary()
    return Evaluation(rows, summary, report, worst_list, output)


def _labelled_images(images: Path, masks, coco, options: EvaluateOptions, *,
                     mode: str) -> tuple[list, list[str], str]:
    """(image, stem, truth(h, w)) of each image to score, the stems without truth, and
    where the truth comes from (for messages and ``summary.json``).

    Raises:
        ConfigError: no image to score.
    """
    if masks is not None:
        pairs, missing = _mask_pairs(images, Path(masks))
        source = f"masks in {masks}"
    else:
        pairs, missing = _coco_pairs(images, Path(coco), mode=mode,
                                     sky_categories=options.sky_categories,
                                     non_sky_categories=options.non_sky_categories)
        source = f"labels in {coco}"
    if options.only is not None:
        pairs, missing = _keep_listed(pairs, missing, options.only, images)
    _log_missing_truth(missing, source, images, from_masks=masks is not None)
    if not pairs:
        raise ConfigError(f"no image in {images} has truth ({source}); check the folder names "
                          "and that masks are called <stem>_mask.png or <stem>.png")
    return pairs, missing, source


def _score_image(item: tuple[int, tuple], *, loaded, options: EvaluateOptions,
                 worst: _WorstImages, show_progress: bool) -> dict:
    """Read, predict and score image number ``index``: its row of ``metrics.csv``.

    Raises:
        SkysegError: the image or its truth cannot be read, or not predicted.
    """
    index, (path, stem, truth_of) = item
    image, info = read_image(path, return_info=True, max_pixels=options.max_pixels)
    truth = truth_of(*image.shape[:2])
    if options.ignore_sky_gaps:
        truth, _ = sky_gaps.ignore_sky_gaps(image, truth)
    probability = predict_image(loaded, image, options, is_hdr=info.is_hdr, name=path.name,
                                show_progress=show_progress)
    prediction = probability > np.float32(options.threshold)
    del probability
    row = _score_row(path, stem, prediction, truth, tolerance=options.tolerance)
    worst.offer(row["iou"], index, stem,
                lambda: _error_picture(image, info.is_hdr, prediction, truth))
    return row


class _WorstImages:
    """The ``count`` lowest-IoU images so far, with their (small) error pictures.

    Only the current worst few pictures are held in memory.
    """

    def __init__(self, count: int, *, pictures: bool):
        self.count, self.pictures = count, pictures
        self.heap: list[tuple[float, int, str, np.ndarray | None]] = []

    def offer(self, iou: float, index: int, stem: str,
              picture: Callable[[], np.ndarray]) -> None:
        """Keep image ``index`` if it is among the worst; ``picture()`` is made only then."""
        if not self.count or (len(self.heap) >= self.count and iou >= -self.heap[0][0]):
            return
        entry = (-iou, -index, stem, picture() if self.pictures else None)
        if len(self.heap) < self.count:
            heapq.heappush(self.heap, entry)
        else:
            heapq.heapreplace(self.heap, entry)

    def write(self, output: Path | None) -> list[tuple[str, float, Path | None]]:
        """The worst images, lowest IoU first, their error pictures written to ``worst/``."""
        worst_list: list[tuple[str, float, Path | None]] = []
        for rank, (negative_iou, _, stem, picture) in enumerate(sorted(self.heap,
                                                                       reverse=True), 1):
            target = None
            if output is not None and picture is not None:
                (output / "worst").mkdir(exist_ok=True)
                target = write_png(output / "worst" / f"{rank}_{stem}_errors.png", picture)
            worst_list.append((stem, -negative_iou, target))
        return worst_list


def _keep_listed(pairs: list, missing: list[str], only, images: Path) -> tuple[list, list[str]]:
    """The pairs and missing stems that ``only`` lists (a listed stem found nowhere is logged)."""
    wanted = _stems_to_keep(only)
    pairs = [pair for pair in pairs if pair[1] in wanted]
    missing = [stem for stem in missing if stem in wanted]
    absent = sorted(wanted - {pair[1] for pair in pairs} - set(missing))
    if absent:
        logger.warning("%d listed image(s) are not in %s: %s", len(absent), images,
                       ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""))
    return pairs, missing


def _log_missing_truth(missing: list[str], source: str, images: Path, *,
                       from_masks: bool) -> None:
    """Say which images are not scored for lack of truth (a warning with a masks folder)."""
    if not missing:
        return
    listed = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
    if from_masks:
        logger.warning("%d image(s) without truth (%s) are not scored: %s", len(missing),
                       source, listed)
    else:  # labelled elsewhere (e.g. the training images): normal for a held-out folder
        logger.info("%d labelled image(s) are not in %s, so not scored: %s", len(missing),
                    images, listed)


def _score_row(path: Path, stem: str, prediction: np.ndarray, truth: np.ndarray, *,
               tolerance: float) -> dict:
    """One row of ``metrics.csv``: bool (H, W) prediction against uint8 (H, W) truth."""
    scores = segmentation_scores(prediction, truth, tolerance=tolerance)
    pixels = prediction.size
    return {"image": str(path), "stem": stem, "width": prediction.shape[1],
            "height": prediction.shape[0], **scores,
            "sky_true": np.count_nonzero(truth == 1) / pixels,
            "sky_predicted": np.count_nonzero(prediction) / pixels,
            "ignored": np.count_nonzero(truth == IGNORE) / pixels}


def _error_picture(image, is_hdr, prediction, truth) -> np.ndarray:
    background = overlay_background(image, is_hdr=is_hdr, max_size=DEFAULT_ERROR_OVERLAY_SIZE)
    height, width = background.shape[:2]
    return error_overlay(background, resize_mask(prediction, height, width),
                         resize_mask(truth, height, width))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?", default=None,
                        help="run folder of skyseg train, or a .h5 model file (default: the sky "
                             "model shipped with skyseg)")
    parser.add_argument("--images", required=True, type=Path, help="folder of labelled images")
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--coco", type=Path, help="Label Studio COCO export (result.json)")
    truth.add_argument("--masks", type=Path,
                       help="folder of truth masks <stem>_mask.png or <stem>.png: 0 not sky, "
                            "1 sky, 255 ignore (a mask without 1 is 0/255 with 255 = sky)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for metrics.csv, summary.json and worst/ overlays")
    add_stage_options(parser, EvaluateOptions)


def run(args: argparse.Namespace) -> int:
    if not args.images.is_dir():
        raise ConfigError(f"{args.images}: images folder not found; check --images")
    options = from_args(EvaluateOptions, args)
    resolve_model_argument(args)
    if options.mlflow:
        from skyseg.training.tracking import find_training_run

        find_training_run(args.model)  # before the evaluation: mlflow installed, run known
    loaded = load_for_cli(args, options)
    result = evaluate_model(
        loaded, args.images, dataclasses.replace(options, ensemble=[]),  # loaded has them
        masks=args.masks, coco=args.coco, out_dir=args.out)
    if options.mlflow:
        from skyseg.training.tracking import log_evaluation

        log_evaluation(args.model, result.summary, args.out)
    return report_evaluation(result)


def report_evaluation(result: Evaluation) -> int:
    """Print the mean and median scores and the worst images; the exit status.

    What ``skyseg evaluate`` (and the pipeline's evaluate step) shows at the
    end: 0, or 1 when images failed.
    """
    summary = result.summary
    if summary.get("images"):
        table = result.out_dir / "metrics.csv" if result.out_dir is not None else "not written"
        lines = [f"{summary['images']} images scored ({table})",
                 f"{'':12}{'mean':>8}{'median':>8}"]
        for metric in METRICS:
            lines.append(f"{metric:12}{summary['mean'][metric]:8.4f}"
                         f"{summary['median'][metric]:8.4f}")
        lines.append(f"pooled IoU {summary['pooled']['iou']:.4f}, "
                     f"Dice {summary['pooled']['dice']:.4f}")
        lines.append("worst: " + ", ".join(f"{stem} ({iou:.3f})"
                                            for stem, iou, _ in result.worst))
        print("\n".join(lines))
    return result.report.exit_code

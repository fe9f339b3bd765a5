"""Sky masks <-> Label Studio pre-annotations (polygon predictions people correct).

``skyseg predict ... --save mask,labelstudio`` writes ``OUT/labelstudio.json``:
one Label Studio task per input, in the format Label Studio documents for
importing pre-annotations (Basic Label Studio JSON with a ``predictions``
key)::

    [{"data": {"image": "scene.jpg"},
      "predictions": [{"model_version": "run-name", "score": 0.97, "result": [
          {"id": "sky1", "type": "polygonlabels", "from_name": "label", "to_name": "image",
           "original_width": 8192, "original_height": 4096, "image_rotation": 0,
           "value": {"points": [[0.0, 0.0], [100.0, 0.0], [100.0, 41.3], ...],
                     "closed": true, "polygonlabels": ["sky"]}},
          {"id": "non-sky2", ..., "value": {"points": [...], "polygonlabels": ["non-sky"]}}]}]}]

``from_name``/``to_name`` are the names of the ``PolygonLabels`` and
``Image`` tags of the project's labelling configuration (default ``label``
and ``image``); the labels are ``sky`` and ``non-sky``, as the COCO reader
(:mod:`skyseg.labels.annotations`) expects. Points are percent (0..100) of the
image's width and height. ``score`` is the model's mean certainty,
``mean(|2p - 1|)`` over the pixels: sorting the tasks by prediction score in
Label Studio's Data Manager puts the images the model was least sure of first.

Geometry. The mask is traced with OpenCV (``cv2.findContours``, full
hierarchy) on the mask enlarged 2x, so every vertex lies a quarter pixel
inside the sky side of the boundary between a sky and a non-sky pixel;
each contour is simplified by ``cv2.approxPolyDP`` to ``tolerance`` pixels
(default 1), finer where the polygons would redraw the mask at an IoU below
``min_iou`` (default 0.99; fine branches and wires in small images). One
``sky`` polygon per sky region and one ``non-sky`` polygon per hole in it;
sky that shows through a hole (a patch of sky inside a tree) is cut out of
the hole's polygon along a zero-width slit and gets its own ``sky`` polygon,
so that *union(sky) minus union(non-sky)* -- the rule of
:mod:`skyseg.labels.annotations` -- redraws the mask (IoU >= ``min_iou``; the
pixels that differ lie on the boundary). Vertices a quarter pixel from the
image border are put on the border.

:func:`result_to_mask` draws a result back with the COCO reader's own
rasterisation, and :func:`tasks_to_coco` turns corrected tasks into the COCO
file Label Studio's export would give, so the loop label -> predict ->
correct -> ``skyseg build-dataset`` can be checked without Label Studio.

Plain NumPy and OpenCV: no TensorFlow.

Example:
    >>> import numpy as np
    >>> mask = np.zeros((4, 8), np.uint8)
    >>> mask[:2] = 1
    >>> result = mask_to_result(mask)
    >>> [(r["value"]["polygonlabels"], r["value"]["points"]) for r in result]
    [(['sky'], [[0.0, 0.0], [0.0, 43.75], [100.0, 43.75], [100.0, 0.0]])]
    >>> bool((result_to_mask(result) == mask).all())
    True
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from skyseg.errors import AnnotationError, ConfigError

__all__ = [
    "LABELSTUDIO_FILE",
    "DEFAULT_FROM_NAME",
    "DEFAULT_TO_NAME",
    "DEFAULT_TOLERANCE",
    "mask_polygons",
    "mask_to_result",
    "mask_to_task",
    "certainty_score",
    "result_to_mask",
    "task_to_mask",
    "tasks_to_coco",
    "TaskCollector",
]

logger = logging.getLogger("skyseg")

#: The file ``skyseg predict --save labelstudio`` writes in its output folder.
LABELSTUDIO_FILE = "labelstudio.json"
DEFAULT_FROM_NAME = "label"
DEFAULT_TO_NAME = "image"
#: Largest distance (pixels) between a simplified polygon and the traced boundary.
DEFAULT_TOLERANCE = 1.0
#: Polygons must redraw the mask at least this well (else the tolerance is halved).
DEFAULT_MIN_IOU = 0.99
SKY_LABEL = "sky"
NON_SKY_LABEL = "non-sky"
#: Decimals of the percent coordinates: 1e-4 % of 8192 px is 0.008 px.
_DECIMALS = 4
_ROWS = 512


def _check_mask(mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ConfigError(f"a mask must be a non-empty 2-D array (H, W), got shape {mask.shape}")
    if mask.dtype == bool:
        return mask.view(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ConfigError(f"a mask must be an integer or bool array of 0 and 1, got {mask.dtype}; "
                          "threshold probabilities first (probability > 0.5)")
    low, high = int(mask.min()), int(mask.max())
    if low < 0 or high > 1:
        raise ConfigError(f"a mask must hold 0 (not sky) and 1 (sky), got values from {low} to "
                          f"{high}; divide a 0/255 mask PNG by 255")
    return mask.astype(np.uint8, copy=False)


def mask_polygons(mask: np.ndarray, *, tolerance: float = DEFAULT_TOLERANCE,
                  min_iou: float | None = DEFAULT_MIN_IOU) -> list[tuple[str, np.ndarray]]:
    """The sky and non-sky polygons that redraw ``mask``, in pixel coordinates.

    Args:
        mask: uint8 or bool (H, W), 1 = sky, 0 = not sky.
        tolerance: largest distance in pixels between a polygon and the
            boundary it simplifies (``cv2.approxPolyDP``); 0 keeps every
            boundary step.
        min_iou: when the polygons redraw the mask with a lower IoU (fine
            detail: branches, wires, small images), the tolerance is halved
            until they do (at 0 they redraw it exactly); None: no check.

    Returns:
        ``[(label, points)]``, label ``"sky"`` or ``"non-sky"``, points
        float64 (N >= 3, 2) of continuous ``(x, y)`` (pixel ``(i, j)`` is the
        square ``[j, j+1) x [i, i+1)``), outer sky boundaries before the
        holes cut out of them; empty when there is no sky.

    Raises:
        ConfigError: not a 2-D 0/1 mask, a negative tolerance, or
            ``min_iou`` outside 0..1.

    Example:
        >>> mask = np.zeros((6, 6), np.uint8)
        >>> mask[1:5, 1:5] = 1
        >>> mask[2:4, 2:4] = 0
        >>> [(label, len(points)) for label, points in mask_polygons(mask)]
        [('sky', 4), ('non-sky', 4)]
    """
    import cv2

    mask = _check_mask(mask)
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    if min_iou is not None and not 0 <= min_iou <= 1:
        raise ConfigError(f"min_iou must be between 0 and 1 (or None), got {min_iou!r}")
    height, width = mask.shape
    if not mask.any():
        return []
    # Traced at twice the size: a vertex of the 2x grid is a quarter pixel
    # inside its original pixel, so sky pixel centres end up inside the sky
    # polygons and those of holes outside, whatever side the boundary is on.
    large = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(large, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    del large
    hierarchy = hierarchy[0]
    depth = np.zeros(len(contours), dtype=int)
    for index in range(len(contours)):
        parent, level = hierarchy[index][3], 0
        while parent >= 0:
            level += 1
            parent = hierarchy[parent][3]
        depth[index] = level
    while True:
        polygons = _polygons(contours, hierarchy, depth, tolerance, width, height)
        if min_iou is None or tolerance == 0:
            return polygons
        drawn = _draw(polygons, height, width)
        union = np.count_nonzero(drawn | mask)
        score = np.count_nonzero(drawn & mask) / union
        if score >= min_iou:
            return polygons
        logger.debug("polygons at %.3g px redraw the mask at IoU %.4f < %.4f; finer", tolerance,
                     score, min_iou)
        tolerance = tolerance / 2 if tolerance > 0.125 else 0.0


def _polygons(contours, hierarchy, depth, tolerance: float, width: int, height: int
              ) -> list[tuple[str, np.ndarray]]:
    """Labelled polygons of the traced contours, simplified to ``tolerance`` pixels."""
    simplified = [_simplify(contour[:, 0, :], 2.0 * tolerance) for contour in contours]
    points = [_to_pixels(p, width, height) for p in simplified]
    sky, holes = [], []
    for index in np.argsort(depth, kind="stable"):
        if depth[index] % 2 == 0:
            sky.append((SKY_LABEL, points[index]))
            continue
        # A hole with sky inside it: cut its islands out along slits, so the
        # non-sky polygon does not remove the island's sky.
        polygon = points[index]
        child = hierarchy[index][2]
        while child >= 0:
            polygon = _splice(polygon, points[child])
            child = hierarchy[child][0]
        holes.append((NON_SKY_LABEL, polygon))
    return sky + holes


def _draw(polygons: list[tuple[str, np.ndarray]], height: int, width: int) -> np.ndarray:
    """Rasterise labelled pixel polygons as the COCO reader does (sky minus non-sky)."""
    from skyseg.labels.annotations import Annotation, CocoLabels, ImageEntry

    annotations = tuple(Annotation(id=n, role=label, category=label,
                                   segmentation=[p.ravel().tolist()])
                        for n, (label, p) in enumerate(polygons))
    entry = ImageEntry(image_id=0, file_name="mask", original_name="mask", stem="mask",
                       width=width, height=height, annotations=annotations)
    return CocoLabels("polygons", {"mask": entry}).mask("mask", height, width)


def _simplify(contour: np.ndarray, epsilon: float) -> np.ndarray:
    """``approxPolyDP`` that keeps at least 3 points (tiny regions stay polygons)."""
    import cv2

    if epsilon > 0 and len(contour) > 3:
        approximated = cv2.approxPolyDP(contour.reshape(-1, 1, 2), epsilon, True)[:, 0, :]
        if len(approximated) >= 3:
            return approximated
    if len(contour) >= 3:
        return contour
    # One or two boundary cells of the 2x grid: a region of one pixel or a
    # one-pixel line; its 2x2 cell block as a polygon.
    low, high = contour.min(axis=0), contour.max(axis=0)
    return np.array([[low[0], low[1]], [high[0], low[1]], [high[0], high[1]],
                     [low[0], high[1]]])


def _to_pixels(cells: np.ndarray, width: int, height: int) -> np.ndarray:
    """2x grid cell indices -> continuous pixel coordinates; border quarter pixels snapped."""
    points = (cells.astype(np.float64) + 0.5) / 2.0
    x, y = points[:, 0], points[:, 1]
    x[x <= 0.25] = 0.0
    x[x >= width - 0.25] = width
    y[y <= 0.25] = 0.0
    y[y >= height - 0.25] = height
    return points


def _splice(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer`` with ``inner`` cut out along a zero-width slit between their closest vertices.

    findContours gives holes and the regions inside them opposite
    orientations, so the island's area has winding number 0 (even-odd: two
    crossings): it is outside the spliced polygon.
    """
    distances = ((outer[:, None, :] - inner[None, :, :]) ** 2).sum(axis=2)
    i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
    return np.concatenate([outer[:i + 1], inner[j:], inner[:j + 1], outer[i:]])


def _percent(points: np.ndarray, width: int, height: int) -> list[list[float]]:
    scaled = points * (100.0 / width, 100.0 / height)
    return np.round(scaled, _DECIMALS).tolist()


def mask_to_result(mask: np.ndarray, *, from_name: str = DEFAULT_FROM_NAME,
                   to_name: str = DEFAULT_TO_NAME, tolerance: float = DEFAULT_TOLERANCE,
                   min_iou: float | None = DEFAULT_MIN_IOU, id_prefix: str = "") -> list[dict]:
    """Label Studio ``polygonlabels`` results that redraw ``mask``.

    Args:
        mask: uint8 or bool (H, W), 1 = sky, 0 = not sky.
        from_name: ``name`` of the project's ``PolygonLabels`` tag.
        to_name: ``name`` of its ``Image`` tag.
        tolerance, min_iou: polygon simplification (see :func:`mask_polygons`).
        id_prefix: put before each result's id (ids are unique within a task).

    Returns:
        a list of result dicts (empty when there is no sky): ``id``, ``type``
        ``"polygonlabels"``, ``from_name``, ``to_name``, ``original_width``,
        ``original_height``, ``image_rotation`` 0, and ``value`` with
        ``points`` (percent of width and height), ``closed`` and
        ``polygonlabels`` ``["sky"]`` or ``["non-sky"]``.

    Raises:
        ConfigError: not a 2-D 0/1 mask, or empty tag names.
    """
    for option, value in (("from_name", from_name), ("to_name", to_name)):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"Label Studio {option} must be a tag name such as "
                              f"{DEFAULT_FROM_NAME!r}, got {value!r}")
    mask = _check_mask(mask)
    height, width = mask.shape
    result = []
    for number, (label, points) in enumerate(
            mask_polygons(mask, tolerance=tolerance, min_iou=min_iou), 1):
        result.append({
            "id": f"{id_prefix}{label}{number}",
            "type": "polygonlabels",
            "from_name": from_name,
            "to_name": to_name,
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {"points": _percent(points, width, height), "closed": True,
                      "polygonlabels": [label]},
        })
    return result


def certainty_score(probability: np.ndarray) -> float:
    """Mean of ``|2p - 1|`` over the pixels: 1 = every pixel decided with certainty.

    Args:
        probability: float (H, W) sky probability in 0..1.

    Example:
        >>> certainty_score(np.array([[0.0, 1.0, 0.5, 0.75]]))
        0.625
    """
    probability = np.asarray(probability)
    if probability.size == 0:
        return 0.0
    total = 0.0
    for start in range(0, probability.shape[0], _ROWS):
        block = probability[start:start + _ROWS].astype(np.float64)
        total += float(np.abs(2.0 * block - 1.0).sum())
    return round(total / probability.size, 6)


def mask_to_task(mask: np.ndarray, image: str, *, from_name: str = DEFAULT_FROM_NAME,
                 to_name: str = DEFAULT_TO_NAME, tolerance: float = DEFAULT_TOLERANCE,
                 min_iou: float | None = DEFAULT_MIN_IOU, model_version: str | None = None,
                 score: float | None = None,
                 data_key: str = "image") -> dict:
    """A Label Studio task with the mask as its prediction.

    Args:
        mask: uint8 or bool (H, W), 1 = sky.
        image: what Label Studio loads the image from (``data.image``): a URL,
            ``/data/local-files/?d=...`` or the name of an uploaded file.
        from_name, to_name, tolerance, min_iou: see :func:`mask_to_result`.
        model_version: shown in Label Studio with the prediction.
        score: the prediction's score (e.g. :func:`certainty_score`).
        data_key: the ``$variable`` of the project's ``Image`` tag value.

    Returns:
        ``{"data": {data_key: image}, "predictions": [{"result": [...], ...}]}``;
        a mask without sky gives an empty ``result``.
    """
    prediction: dict = {"result": mask_to_result(mask, from_name=from_name, to_name=to_name,
                                                 tolerance=tolerance, min_iou=min_iou)}
    if model_version is not None:
        prediction["model_version"] = str(model_version)
    if score is not None:
        prediction["score"] = float(score)
    return {"data": {data_key: str(image)}, "predictions": [prediction]}


def _result_entry(result: Sequence[Mapping], *, sky_labels, non_sky_labels, from_name,
                  where: str):
    """An :class:`~skyseg.labels.annotations.ImageEntry` of the result's polygons
    (pixel coordinates)."""
    from skyseg.labels.annotations import Annotation, ImageEntry

    roles = {**{name.casefold(): SKY_LABEL for name in sky_labels},
             **{name.casefold(): NON_SKY_LABEL for name in non_sky_labels}}
    annotations, size = [], None
    if not isinstance(result, (list, tuple)):
        raise AnnotationError(f"{where}: result is a {type(result).__name__}, expected a list "
                              "of regions")
    for index, region in enumerate(result):
        if not isinstance(region, Mapping) or region.get("type") != "polygonlabels":
            continue
        if from_name is not None and region.get("from_name") != from_name:
            continue
        value = region.get("value") or {}
        labels = [roles.get(str(name).casefold()) for name in value.get("polygonlabels", [])]
        role = next((label for label in labels if label is not None), None)
        if role is None:
            continue
        try:
            region_size = (int(region["original_height"]), int(region["original_width"]))
            points = np.asarray(value["points"], dtype=np.float64).reshape(-1, 2)
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError(f"{where}: region {region.get('id', index)!r} lacks "
                                  "original_width/original_height or has malformed points "
                                  f"({exc}); export the task again") from exc
        if size is not None and region_size != size:
            raise AnnotationError(f"{where}: regions give two image sizes, {size[1]}x{size[0]} "
                                  f"and {region_size[1]}x{region_size[0]}")
        size = region_size
        pixels = points / 100.0 * (size[1], size[0])
        annotations.append(Annotation(id=region.get("id", index), role=role,
                                      category=str(value["polygonlabels"][0]),
                                      segmentation=[pixels.ravel().tolist()]))
    height, width = size if size is not None else (None, None)
    return ImageEntry(image_id=0, file_name="task", original_name="task", stem="task",
                      width=width, height=height, annotations=tuple(annotations))


def result_to_mask(result: Sequence[Mapping], height: int | None = None,
                   width: int | None = None, *, sky_labels: Iterable[str] = (SKY_LABEL,),
                   non_sky_labels: Iterable[str] = (NON_SKY_LABEL,),
                   from_name: str | None = None) -> np.ndarray:
    """Draw Label Studio polygon results back: union of sky minus union of non-sky.

    The same rasterisation as the COCO reader (:meth:`skyseg.labels.annotations.CocoLabels.mask`,
    pycocotools; a pixel is in a polygon when its centre is), so what this
    draws is what ``skyseg build-dataset`` makes of the corrected export.

    Args:
        result: ``predictions[k]["result"]`` or ``annotations[k]["result"]``.
        height, width: size of the mask to draw (default: the results'
            ``original_height``/``original_width``; polygons scale to another
            size). Needed when the result is empty.
        sky_labels, non_sky_labels: polygon label names.
        from_name: only regions of this control tag (default: all).

    Returns:
        uint8 (height, width), 1 = sky.

    Raises:
        AnnotationError: malformed regions (no size, bad points, fewer than 3 points).
        ConfigError: an empty result without ``height`` and ``width``.
    """
    from skyseg.labels.annotations import CocoLabels

    entry = _result_entry(result, sky_labels=tuple(sky_labels),
                          non_sky_labels=tuple(non_sky_labels), from_name=from_name,
                          where="Label Studio result")
    if height is None or width is None:
        if entry.width is None:
            raise ConfigError("the result has no polygon to take the image size from; pass "
                              "height and width")
        height = entry.height if height is None else height
        width = entry.width if width is None else width
    labels = CocoLabels("Label Studio result", {entry.stem: entry})
    return labels.mask(entry.stem, int(height), int(width))


def task_to_mask(task: Mapping, height: int | None = None, width: int | None = None, *,
                 source: str = "annotations", **options) -> np.ndarray:
    """Draw a task's first annotation (or prediction) back as a mask.

    Args:
        task: a Label Studio task (as exported, or as written by predict).
        height, width: see :func:`result_to_mask`.
        source: ``"annotations"`` (what people submitted; falls back to the
            predictions when there is none) or ``"predictions"``.
        **options: :func:`result_to_mask`'s label options.
    """
    items = task.get(source) or (task.get("predictions") if source == "annotations" else None)
    result = items[0].get("result", []) if items else []
    return result_to_mask(result, height, width, **options)


def tasks_to_coco(tasks: Sequence[Mapping], *, source: str = "annotations",
                  data_key: str = "image") -> dict:
    """The COCO file Label Studio's export would give for these tasks.

    Polygons become COCO polygons in pixels (``x / 100 * original_width``),
    categories are named ``sky`` and ``non-sky``, and ``file_name`` is
    ``images/<name>``, as Label Studio writes it; :func:`skyseg.labels.annotations.load_coco`
    and ``skyseg build-dataset`` read it.

    Args:
        tasks: Label Studio tasks (``labelstudio.json`` or an export in JSON format).
        source: ``"annotations"`` (falls back to predictions when a task has
            none) or ``"predictions"``.
        data_key: the ``data`` key holding the image.

    Raises:
        AnnotationError: a task without ``data[data_key]``, or malformed regions.
    """
    from skyseg.labels.annotations import original_name

    categories = [{"id": 0, "name": NON_SKY_LABEL}, {"id": 1, "name": SKY_LABEL}]
    category_ids = {NON_SKY_LABEL: 0, SKY_LABEL: 1}
    images, annotations = [], []
    for number, task in enumerate(tasks):
        image = (task.get("data") or {}).get(data_key) if isinstance(task, Mapping) else None
        if not isinstance(image, str):
            raise AnnotationError(f"task {number}: has no data.{data_key}; is this a Label "
                                  "Studio task list?")
        items = task.get(source) or (task.get("predictions") if source == "annotations"
                                     else None)
        result = items[0].get("result", []) if items else []
        entry = _result_entry(result, sky_labels=(SKY_LABEL,), non_sky_labels=(NON_SKY_LABEL,),
                              from_name=None, where=f"task {number} ({image})")
        record = {"id": number, "file_name": f"images/{original_name(image)}"}
        if entry.width is not None:
            record.update(width=entry.width, height=entry.height)
        images.append(record)
        for annotation in entry.annotations:
            flat = annotation.segmentation[0]
            x, y = np.asarray(flat[0::2]), np.asarray(flat[1::2])
            area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
            annotations.append({
                "id": len(annotations), "image_id": number,
                "category_id": category_ids[annotation.role], "segmentation": [flat],
                "bbox": [float(x.min()), float(y.min()), float(x.max() - x.min()),
                         float(y.max() - y.min())],
                "ignore": 0, "iscrowd": 0, "area": area,
            })
    return {"images": images, "categories": categories, "annotations": annotations,
            "info": {"description": "skyseg.labels.labelstudio.tasks_to_coco"}}


class TaskCollector:
    """Collects one task per predicted image (thread-safe) and writes them as one JSON file.

    Used by ``skyseg predict --save labelstudio``: the write job of each
    image adds its task; :meth:`write` writes the tasks of the images that
    succeeded, in input order, atomically at the end of the batch.

    Args:
        image_url_prefix: put before each file name in ``data.image``
            (e.g. ``/data/local-files/?d=sky/`` for Label Studio's local
            storage, or an https URL of the folder).
        from_name, to_name, tolerance, min_iou: see :func:`mask_to_result`.
        model_version: recorded in each prediction.

    Example:
        >>> collector = TaskCollector(image_url_prefix="https://example.org/panos/")
        >>> collector.add("a.jpg", np.zeros((2, 2), np.float32))
        >>> collector.tasks(["a.jpg"])[0]["data"]["image"]
        'https://example.org/panos/a.jpg'
    """

    def __init__(self, *, image_url_prefix: str = "", from_name: str = DEFAULT_FROM_NAME,
                 to_name: str = DEFAULT_TO_NAME, tolerance: float = DEFAULT_TOLERANCE,
                 min_iou: float | None = DEFAULT_MIN_IOU, model_version: str | None = None,
                 threshold: float = 0.5):
        for option, value in (("--labelstudio-from-name", from_name),
                              ("--labelstudio-to-name", to_name)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{option} must be the name of a tag of the Label Studio "
                                  f"project, got {value!r}")
        if not (np.isfinite(tolerance) and tolerance >= 0):
            raise ConfigError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
        self.image_url_prefix = image_url_prefix or ""
        self.from_name, self.to_name, self.tolerance = from_name, to_name, float(tolerance)
        self.min_iou = min_iou
        self.model_version = model_version
        self.threshold = float(threshold)
        self._tasks: dict[str, dict] = {}
        self._lock = threading.Lock()

    def add(self, name: str, probability: np.ndarray) -> None:
        """The task of one image from its sky probability (float32 (H, W) in 0..1)."""
        mask = np.greater(probability, np.float32(self.threshold)).view(np.uint8)
        task = mask_to_task(mask, f"{self.image_url_prefix}{name}", from_name=self.from_name,
                            to_name=self.to_name, tolerance=self.tolerance,
                            min_iou=self.min_iou, model_version=self.model_version,
                            score=certainty_score(probability))
        with self._lock:
            self._tasks[str(name)] = task

    def tasks(self, names: Iterable[str]) -> list[dict]:
        """The tasks of ``names`` that were added, in that order."""
        with self._lock:
            return [self._tasks[str(n)] for n in names if str(n) in self._tasks]

    def write(self, path: str | Path, names: Iterable[str]) -> Path:
        """Write the tasks of ``names`` (in that order) as a JSON list, atomically."""
        import json

        from skyseg.io import write_text

        tasks = self.tasks(names)
        path = write_text(path, json.dumps(tasks, separators=(",", ":")) + "\n")
        points = sum(len(r["value"]["points"]) for t in tasks
                     for r in t["predictions"][0]["result"])
        logger.info("%s: %d Label Studio task(s), %d polygon points", path, len(tasks), points)
        return path

"""Label Studio COCO exports -> sky masks.

A Label Studio project exports its polygons as COCO JSON. This module reads
such a file, maps its categories *by name* (``sky`` and ``non-sky`` unless
configured otherwise; ids differ between projects), and rasterises one mask
per image with pycocotools::

    mask = union(sky polygons / RLEs) - union(non-sky polygons / RLEs)

``non-sky`` marks things inside the sky (poles, wires, branches, birds).

Names. Label Studio writes ``file_name`` as ``images/1a2b3c4d-scene.jpg`` or
``/data/upload/7/1a2b3c4d-scene.jpg``: the folder and the 8-hex upload prefix
are stripped (:func:`original_name`) and the *stem* (``scene``) is what
matches files on disk, whatever their extension: an annotation drawn on the
preview ``scene.jpg`` applies to ``scene.exr`` (:func:`match_images`). A path
from the JSON is never opened; only files listed in the images folder are.

Geometry. Coordinates are continuous pixel coordinates of the image that was
labelled (``width`` x ``height`` in the JSON): the image spans ``[0, width] x
[0, height]`` and pixel ``(row i, column j)`` is the square ``[j, j+1) x
[i, i+1)``. pycocotools fills a pixel when its centre ``(j + 0.5, i + 0.5)``
lies inside the polygon (vertices are quantised to 1/5 pixel), so a rectangle
with integer corners ``x0..x1, y0..y1`` covers exactly columns ``x0 .. x1-1``
and rows ``y0 .. y1-1``. When the image on disk is larger (or smaller) than
the labelled one, x is scaled by ``width / json_width`` and y by ``height /
json_height`` (a 2048x1024 preview of an 8192x4096 EXR: both by 4); the two
ratios must agree to rounding (1 %), else the annotation belongs to another
picture and :meth:`CocoLabels.mask` raises. Polygons are then clipped to the
image. RLE masks carry their own size and are resized nearest-neighbour when
it differs from the target. An image entry without ``width``/``height`` takes
the size of its first RLE annotation as the labelled size, else the target
size (no scaling): Label Studio always writes both, so this only serves
hand-written files.

Annotations without a segmentation but with a ``bbox`` (Label Studio exports
rectangles that way) count as that rectangle.

Example:
    >>> labels = load_coco("result.json")  # doctest: +SKIP
    >>> matched, missing = match_images(labels, "images")  # doctest: +SKIP
    >>> path, stem = matched[0]  # doctest: +SKIP
    >>> info = read_image_info(path)  # doctest: +SKIP
    >>> mask = labels.mask(stem, info.height, info.width)  # doctest: +SKIP
    >>> mask.dtype, mask.shape == (info.height, info.width)  # doctest: +SKIP
    (dtype('uint8'), True)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote

import numpy as np

from skyseg.errors import AnnotationError, ConfigError, ImageReadError
from skyseg.io import HDR_SUFFIXES, IMAGE_SUFFIXES, TEMP_MARKER, read_image_info
from skyseg.options import option

__all__ = [
    "Annotation",
    "ImageEntry",
    "CocoLabels",
    "load_coco",
    "CategoryOptions",
    "original_name",
    "match_images",
    "DEFAULT_SKY_CATEGORIES",
    "DEFAULT_NON_SKY_CATEGORIES",
]

logger = logging.getLogger("skyseg")

DEFAULT_SKY_CATEGORIES = ("sky",)
DEFAULT_NON_SKY_CATEGORIES = ("non-sky",)

SKY = "sky"
NON_SKY = "non-sky"


class _CategoryNames(argparse.Action):
    """``--sky-category A B --sky-category C`` -> ``("A", "B", "C")``.

    Repeatable, several names per use; the first use replaces the default rather than
    adding to it (argparse's own ``extend`` would keep ``sky`` in the list).
    """

    def __init__(self, option_strings, dest, nargs="+", metavar="NAME", **settings):
        super().__init__(option_strings, dest, nargs=nargs, metavar=metavar, **settings)

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        given = () if current is self.default or current is None else tuple(current)
        setattr(namespace, self.dest, given + tuple(values))


@dataclass
class CategoryOptions:
    """Which COCO categories are sky and which are cut out of it, by name.

    The options of every stage that reads a COCO export (``skyseg masks``,
    ``build-dataset``, ``evaluate``) inherit from this class, so ``--sky-category``
    and ``--non-sky-category`` are defined here once.

    Example:
        >>> CategoryOptions(non_sky_categories=("pole", "wire")).sky_categories
        ('sky',)
    """

    sky_categories: tuple[str, ...] = option(
        DEFAULT_SKY_CATEGORIES,
        "category names that are sky, case-insensitive; repeatable "
        f"(default: {' '.join(DEFAULT_SKY_CATEGORIES)})",
        flag="--sky-category", action=_CategoryNames)
    non_sky_categories: tuple[str, ...] = option(
        DEFAULT_NON_SKY_CATEGORIES,
        "category names cut out of the sky (poles, wires, branches); repeatable (default: "
        f"{' '.join(DEFAULT_NON_SKY_CATEGORIES)}, may be absent from the file)",
        flag="--non-sky-category", action=_CategoryNames)

    def __post_init__(self):
        # One name given as text (YAML ``sky_categories: sky``, or a Python call) is one name.
        for name in ("sky_categories", "non_sky_categories"):
            value = getattr(self, name)
            setattr(self, name, (value,) if isinstance(value, str) else tuple(value))


#: Label Studio prefixes every uploaded file with 8 random hex digits and '-'.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-fA-F]{8}-(?=.)")

#: How far the x and y scale factors may differ before the labelled picture
#: is considered another picture (previews round their size to whole pixels).
_ASPECT_TOLERANCE = 0.01


@dataclass(frozen=True)
class Annotation:
    """One sky or non-sky region of an image entry.

    Attributes:
        id: the annotation's ``id`` in the COCO file (its index when absent).
        role: ``"sky"`` or ``"non-sky"``.
        category: the category name as written in the file.
        segmentation: the raw COCO segmentation (polygon list or RLE dict).
        bbox: the raw ``[x, y, width, height]``, used when there is no segmentation.
    """

    id: object
    role: str
    category: str
    segmentation: object
    bbox: object = None


@dataclass(frozen=True)
class ImageEntry:
    """One image of the COCO file.

    Attributes:
        image_id: the image's ``id`` in the file.
        file_name: ``file_name`` as written (never opened).
        original_name: the name without folders and upload prefix (``scene.jpg``).
        stem: ``original_name`` without its extension (``scene``).
        width: labelled width in pixels, or None when the file does not say.
        height: labelled height in pixels, or None.
        annotations: its sky and non-sky annotations (other categories dropped).
        fallback_stem: the stem of the name with the upload-like prefix kept,
            for files on disk whose real name starts with 8 hex digits and '-'
            (None when there was no such prefix).
    """

    image_id: object
    file_name: str
    original_name: str
    stem: str
    width: int | None
    height: int | None
    annotations: tuple[Annotation, ...]
    fallback_stem: str | None = None


def _basename(file_name: str) -> str:
    text = file_name.replace("\\", "/")
    if "?" in text:
        # Label Studio local-files storage: /data/local-files/?d=folder/scene.jpg
        path_part, _, query = text.partition("?")
        values = parse_qs(query).get("d")
        text = values[0].replace("\\", "/") if values else path_part
    elif "%" in text and re.search(r"%[0-9A-Fa-f]{2}", text):
        text = unquote(text)
    return text.rsplit("/", 1)[-1].strip()


def original_name(file_name: str) -> str:
    """The name a Label Studio ``file_name`` had before upload.

    Strips folders (``/`` or ``\\``), a local-storage query (``?d=...``) and
    the 8-hex upload prefix followed by ``-``.

    Args:
        file_name: ``file_name`` of a COCO image entry.

    Returns:
        the bare file name, e.g. ``"scene.jpg"``.

    Raises:
        AnnotationError: nothing usable is left (empty, ``..``).

    Example:
        >>> original_name("/data/upload/7/1a2b3c4d-scene.jpg")
        'scene.jpg'
        >>> original_name("images\\\\scene.jpg")
        'scene.jpg'
    """
    name = _basename(str(file_name))
    name = _UPLOAD_PREFIX.sub("", name, count=1)
    if name in ("", ".", "..") or not Path(name).stem:
        raise AnnotationError(
            f"file_name {file_name!r} has no usable image name; it should end in the "
            "labelled image's name, e.g. 'images/1a2b3c4d-scene.jpg'"
        )
    return name


def _stem(name: str) -> str:
    return Path(name).stem


def _load_json(path: Path) -> object:
    if not path.exists():
        raise AnnotationError(f"{path}: COCO file not found; check --coco (a Label Studio "
                              "export in COCO format, usually result.json)")
    if path.is_dir():
        raise AnnotationError(f"{path}: is a folder; --coco expects the exported JSON file "
                              "(usually result.json inside it)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not a COCO JSON file (not UTF-8 text: {exc.reason} at "
                              f"byte {exc.start}); export the project from Label Studio as "
                              "COCO") from exc
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read the COCO file ({exc.strerror or exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                              f"{exc.colno}); export the project from Label Studio as COCO "
                              "again") from exc


def _size(value, key: str, path: Path, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value == int(value) and value > 0
    ):
        raise AnnotationError(f"{path}: {where} has {key}={value!r}; expected a positive whole "
                              f"number of pixels (or no {key} at all)")
    return int(value)


def _normalise(name: str) -> str:
    return str(name).strip().casefold()


def _category_roles(path: Path, categories: list, sky_categories, non_sky_categories
                    ) -> tuple[dict, dict]:
    """Map category ids to roles; check the configured names against the file."""
    sky_names = [_normalise(n) for n in sky_categories]
    non_sky_names = [_normalise(n) for n in non_sky_categories]
    if not sky_names:
        raise ConfigError("no sky category configured; pass at least one --sky-category NAME")
    both = sorted(set(sky_names) & set(non_sky_names))
    if both:
        raise ConfigError(f"category {both[0]!r} is configured as both sky and non-sky; "
                          "give each name to one of --sky-category / --non-sky-category")
    names: dict[object, str] = {}
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise AnnotationError(f"{path}: categories[{index}] is {str(category)[:80]}; expected "
                                  "an object with 'id' and 'name'")
        names[category["id"]] = str(category["name"])
    in_file = {_normalise(n) for n in names.values()}
    # The default non-sky name may be absent: projects that labelled no holes
    # export only 'sky'. Any other configured name must exist (typo guard).
    optional = set(non_sky_names) if tuple(non_sky_names) == DEFAULT_NON_SKY_CATEGORIES else set()
    for configured, flag in ((sky_names, "--sky-category"),
                             (non_sky_names, "--non-sky-category")):
        for name in configured:
            if name in in_file:
                continue
            if name in optional:
                logger.info("%s: no %r category; no holes are cut out of the sky", path, name)
                continue
            listed = ", ".join(repr(n) for n in sorted(set(names.values()))) or "none"
            raise AnnotationError(f"{path}: category {name!r} ({flag}) is not in the file, "
                                  f"whose categories are {listed}; check the spelling or pass "
                                  f"{flag} with one of them")
    roles = {}
    for category_id, name in names.items():
        key = _normalise(name)
        if key in sky_names:
            roles[category_id] = SKY
        elif key in non_sky_names:
            roles[category_id] = NON_SKY
    return roles, names


def load_coco(path: str | os.PathLike, *, sky_categories=DEFAULT_SKY_CATEGORIES,
              non_sky_categories=DEFAULT_NON_SKY_CATEGORIES) -> CocoLabels:
    """Read and check a Label Studio COCO export.

    Args:
        path: the exported JSON file (``result.json``).
        sky_categories: category names that are sky (case-insensitive).
        non_sky_categories: category names cut out of the sky (case-insensitive).

    Returns:
        a :class:`CocoLabels` with one entry per image.

    Raises:
        AnnotationError: the file is missing, not JSON, not an object, lacks
            ``images``, ``annotations`` or ``categories``; an annotation points
            to an unknown image id; two images have the same original stem;
            a configured category is not in the file (except the default
            ``non-sky``, which a project without holes does not have).
        ConfigError: no sky category, or a name given as both sky and non-sky.

    Annotations in other categories are ignored with one warning listing
    them. Segmentations are checked when :meth:`CocoLabels.mask` rasterises
    them, so one bad polygon fails its image only.

    Example:
        >>> labels = load_coco("result.json", non_sky_categories=("pole", "wire"))  # doctest: +SKIP
        >>> labels.stems()[:2]  # doctest: +SKIP
        ['0001TP_006690', '0001TP_006720']
    """
    path = Path(path)
    if isinstance(sky_categories, str):
        sky_categories = (sky_categories,)
    if isinstance(non_sky_categories, str):
        non_sky_categories = (non_sky_categories,)
    data = _load_coco_object(path)
    roles, category_names = _category_roles(path, data["categories"], sky_categories,
                                            non_sky_categories)
    images = _read_image_records(path, data["images"])
    _attach_annotations(path, data["annotations"], images, roles, category_names)
    missing_size = sum(1 for record in images.values() if record["width"] is None)
    if missing_size:
        logger.warning("%s: %d images have no width/height; their polygons are taken in the "
                       "pixels of the image on disk (no scaling)", path, missing_size)
    entries = {
        record["stem"]: ImageEntry(
            image_id=record["id"], file_name=record["file_name"],
            original_name=record["original_name"], stem=record["stem"],
            width=record["width"], height=record["height"],
            annotations=tuple(record["annotations"]), fallback_stem=record["fallback_stem"],
        )
        for record in images.values()
    }
    logger.debug("%s: %d images, %d sky/non-sky annotations", path, len(entries),
                 sum(len(e.annotations) for e in entries.values()))
    return CocoLabels(path, entries)


def _load_coco_object(path: Path) -> dict:
    """The JSON object of a COCO export, with its three lists checked."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a COCO object with 'images', 'annotations' and "
                              f"'categories', got a JSON {type(data).__name__}; export the project "
                              "from Label Studio as COCO")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AnnotationError(f"{path}: lacks {key!r}; this is not a COCO export (in Label "
                                  "Studio: Export > COCO)")
        if not isinstance(data[key], list):
            raise AnnotationError(f"{path}: {key!r} is a {type(data[key]).__name__}, expected a "
                                  "list; the file is damaged, export it again")
    return data


def _read_image_records(path: Path, images_list: list) -> dict[object, dict]:
    """``{image id: record}`` of the file's ``images``; ids and stems must be unique."""
    images: dict[object, dict] = {}
    by_stem: dict[str, dict] = {}
    for index, image in enumerate(images_list):
        where = f"images[{index}]"
        if not isinstance(image, dict) or "id" not in image or not isinstance(
            image.get("file_name"), str
        ):
            raise AnnotationError(f"{path}: {where} is {str(image)[:80]}; expected an object with "
                                  "'id' and 'file_name'")
        image_id = image["id"]
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            raise AnnotationError(f"{path}: {where} has id {image_id!r}; expected a number")
        if image_id in images:
            raise AnnotationError(f"{path}: image id {image_id!r} appears twice ({where} and "
                                  f"{images[image_id]['file_name']!r}); the file is damaged, "
                                  "export it again")
        record = _image_record(path, image, where, by_stem)
        images[image_id] = by_stem[record["stem"]] = record
    return images


def _image_record(path: Path, image: dict, where: str, by_stem: dict[str, dict]) -> dict:
    """One entry of ``images`` as a record: names, labelled size, no annotations yet."""
    try:
        name = original_name(image["file_name"])
    except AnnotationError as exc:
        raise AnnotationError(f"{path}: {where}: {exc}") from exc
    stem = _stem(name)
    if stem in by_stem:
        raise AnnotationError(
            f"{path}: {image['file_name']!r} and {by_stem[stem]['file_name']!r} are both "
            f"image {stem!r} (same name after removing folder, upload prefix and extension); "
            "delete one of the two tasks in Label Studio and export again"
        )
    basename = _basename(image["file_name"])
    record = {
        "id": image["id"],
        "file_name": image["file_name"],
        "original_name": name,
        "stem": stem,
        "width": _size(image.get("width"), "width", path, where),
        "height": _size(image.get("height"), "height", path, where),
        "annotations": [],
        "fallback_stem": _stem(basename) if basename != name else None,
    }
    if (record["width"] is None) != (record["height"] is None):
        record["width"] = record["height"] = None
    return record


def _attach_annotations(path: Path, annotations: list, images: dict[object, dict],
                        roles: dict, category_names: dict) -> None:
    """Add each sky or non-sky annotation to its image's record; warn once about the others."""
    unknown: Counter = Counter()
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise AnnotationError(f"{path}: annotations[{index}] is {str(annotation)[:80]}; "
                                  "expected an object")
        annotation_id = annotation.get("id", index)
        image_id = annotation.get("image_id")
        if not isinstance(image_id, (int, str)) or image_id not in images:
            raise AnnotationError(f"{path}: annotation id {annotation_id!r} refers to image id "
                                  f"{image_id!r}, which is not in 'images'; the export is "
                                  "incomplete, export the project again")
        category_id = annotation.get("category_id")
        hashable = isinstance(category_id, (int, str))
        role = roles.get(category_id) if hashable else None
        if role is None:
            known = hashable and category_id in category_names
            unknown[category_names[category_id] if known else f"id {category_id!r}"] += 1
            continue
        images[image_id]["annotations"].append(Annotation(
            id=annotation_id, role=role, category=category_names[category_id],
            segmentation=annotation.get("segmentation"), bbox=annotation.get("bbox"),
        ))
    if unknown:
        listed = ", ".join(f"{name!r} ({count})" for name, count in sorted(unknown.items()))
        logger.warning("%s: ignoring %d annotations in categories that are neither sky nor "
                       "non-sky: %s; map them with --sky-category / --non-sky-category",
                       path, sum(unknown.values()), listed)


def _decode(rle) -> np.ndarray:
    """pycocotools' decode, without the NumPy 2 DeprecationWarning it emits on every call."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept",
                                category=DeprecationWarning)
        return mask_utils.decode(rle)


def _rle_counts(text: str) -> list[int]:
    """Decode COCO's compressed RLE string (as pycocotools' rleFrString) to run lengths.

    Raises:
        ValueError: a character outside COCO's alphabet, a truncated value,
            or a negative run.
    """
    counts: list[int] = []
    position, length = 0, len(text)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                raise ValueError("the string ends in the middle of a run length")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {text[position]!r} is not in COCO's RLE alphabet")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise ValueError(f"run {len(counts)} has negative length {value}")
        counts.append(value)
    return counts


class CocoLabels:
    """The sky labels of a COCO file: one :class:`ImageEntry` per image stem.

    Made by :func:`load_coco`. ``len(labels)`` is the number of images;
    ``stem in labels`` tells whether an image is labelled.

    Example:
        >>> labels = load_coco("result.json")  # doctest: +SKIP
        >>> labels.entry("scene").width  # doctest: +SKIP
        2048
        >>> labels.mask("scene", 4096, 8192).shape  # doctest: +SKIP
        (4096, 8192)
    """

    def __init__(self, path: str | os.PathLike, entries: dict[str, ImageEntry]):
        self.path = Path(path)
        self._entries = dict(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, stem: object) -> bool:
        return stem in self._entries

    def __repr__(self) -> str:
        return f"CocoLabels({str(self.path)!r}, {len(self)} images)"

    def stems(self) -> list[str]:
        """Stems of the labelled images, sorted."""
        return sorted(self._entries)

    def entry(self, stem: str) -> ImageEntry:
        """The image entry for ``stem``.

        Raises:
            AnnotationError: no image of that stem in the file.
        """
        try:
            return self._entries[stem]
        except KeyError:
            raise AnnotationError(f"{self.path}: no labelled image {stem!r}; labelled images "
                                  f"are {', '.join(self.stems()[:5])}"
                                  f"{', ...' if len(self) > 5 else ''}") from None

    def _where(self, entry: ImageEntry, annotation: Annotation | None = None) -> str:
        text = f"{self.path}: image {entry.file_name!r}"
        if annotation is not None:
            text += f", annotation id {annotation.id!r}"
        return text

    def _labelled_size(self, entry: ImageEntry, height: int, width: int) -> tuple[int, int]:
        if entry.width is not None and entry.height is not None:
            return entry.height, entry.width
        for annotation in entry.annotations:
            segmentation = annotation.segmentation
            if isinstance(segmentation, dict):
                size = segmentation.get("size")
                if isinstance(size, (list, tuple)) and len(size) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size
                ):
                    return int(size[0]), int(size[1])
        return height, width

    def _check_aspect(self, entry: ImageEntry, source: tuple[int, int],
                      target: tuple[int, int], what: str) -> None:
        scale_y, scale_x = target[0] / source[0], target[1] / source[1]
        tolerance = _ASPECT_TOLERANCE + 1.0 / source[0] + 1.0 / source[1]
        if abs(scale_x / scale_y - 1.0) > tolerance:
            raise AnnotationError(
                f"{self._where(entry)}: {what} {source[1]}x{source[0]} but the image to mask is "
                f"{target[1]}x{target[0]}; the aspect ratios differ, so these labels belong to "
                "another picture; check that --images holds the labelled images"
            )

    def _polygons(self, entry: ImageEntry, annotation: Annotation) -> list[np.ndarray]:
        """The annotation's polygons as (N, 2) float arrays of (x, y), checked."""
        segmentation = annotation.segmentation
        if segmentation is None or (isinstance(segmentation, list) and not segmentation):
            bbox = annotation.bbox
            if bbox is None or (isinstance(bbox, list) and not bbox):
                logger.debug("%s: no segmentation and no bbox; skipped",
                             self._where(entry, annotation))
                return []
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError) as exc:
                raise AnnotationError(f"{self._where(entry, annotation)}: bbox {str(bbox)[:60]} "
                                      "is not [x, y, width, height]; redraw the region") from exc
            if not all(map(math.isfinite, (x, y, w, h))) or w < 0 or h < 0:
                raise AnnotationError(f"{self._where(entry, annotation)}: bbox {bbox} is not a "
                                      "finite [x, y, width, height]; redraw the region")
            return [np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])]
        if not isinstance(segmentation, list):
            raise AnnotationError(f"{self._where(entry, annotation)}: segmentation is a "
                                  f"{type(segmentation).__name__}; expected polygons (a list "
                                  "of [x1, y1, x2, y2, ...]) or an RLE object with 'counts' and "
                                  "'size'")
        # COCO nests polygons ([[x, y, ...], ...]); accept a bare flat list too.
        polygons = segmentation if all(isinstance(p, list) for p in segmentation) else [
            segmentation]
        result = []
        for number, polygon in enumerate(polygons):
            try:
                values = np.asarray(polygon, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise AnnotationError(f"{self._where(entry, annotation)}: polygon {number} holds "
                                      f"non-numbers ({str(polygon)[:60]}); redraw it") from exc
            if values.ndim != 1 or values.size % 2:
                raise AnnotationError(f"{self._where(entry, annotation)}: polygon {number} has "
                                      f"{values.size} coordinates; expected x, y pairs "
                                      "[x1, y1, x2, y2, ...]; redraw it")
            if values.size < 6:
                raise AnnotationError(f"{self._where(entry, annotation)}: polygon {number} has "
                                      f"{values.size // 2} points, a polygon needs at least 3; "
                                      "delete or redraw it in Label Studio and export again")
            if not np.isfinite(values).all():
                raise AnnotationError(f"{self._where(entry, annotation)}: polygon {number} has "
                                      "NaN or infinite coordinates; redraw it")
            result.append(values.reshape(-1, 2))
        return result

    def _rle(self, entry: ImageEntry, annotation: Annotation, height: int, width: int) -> dict:
        """The annotation's RLE as a pycocotools RLE of size (height, width)."""
        from pycocotools import mask as mask_utils

        segmentation = annotation.segmentation
        size, counts = segmentation.get("size"), segmentation.get("counts")
        where = self._where(entry, annotation)
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size
        )):
            raise AnnotationError(f"{where}: RLE size {size!r} is not [height, width]; export "
                                  "the project again")
        rle_height, rle_width = int(size[0]), int(size[1])
        if rle_height * rle_width >= 2**31:
            # pycocotools counts runs in 32-bit integers
            raise AnnotationError(f"{where}: RLE size {rle_width}x{rle_height} is too large "
                                  "(2^31 pixels at most); export the project again")
        if isinstance(counts, str):
            try:
                runs = _rle_counts(counts)
            except ValueError as exc:
                raise AnnotationError(f"{where}: compressed RLE counts are damaged ({exc}); "
                                      "export the project again") from exc
            rle = {"size": [rle_height, rle_width], "counts": counts.encode("ascii")}
        elif isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
                raise AnnotationError(f"{where}: RLE counts must be whole numbers >= 0; export "
                                      "the project again")
            runs = counts
            rle = None
        else:
            raise AnnotationError(f"{where}: RLE counts is a {type(counts).__name__}; expected a "
                                  "string (compressed) or a list of run lengths")
        if sum(runs) != rle_height * rle_width:
            raise AnnotationError(f"{where}: RLE runs add up to {sum(runs)} pixels but its size "
                                  f"{rle_width}x{rle_height} has {rle_height * rle_width}; the "
                                  "mask is damaged, export the project again")
        if rle is None:
            rle = mask_utils.frPyObjects({"size": [rle_height, rle_width], "counts": runs},
                                         rle_height, rle_width)
        if (rle_height, rle_width) == (height, width):
            return rle
        from skyseg.image.overlay import resize_mask

        self._check_aspect(entry, (rle_height, rle_width), (height, width), "its RLE mask is")
        resized = resize_mask(_decode(rle), height, width)
        return mask_utils.encode(np.asfortranarray(resized, dtype=np.uint8))

    def mask(self, stem: str, height: int, width: int) -> np.ndarray:
        """Rasterise the labels of ``stem`` at ``height`` x ``width``.

        Args:
            stem: a labelled image's stem (see :meth:`stems`).
            height: rows of the image on disk.
            width: columns of the image on disk.

        Returns:
            uint8 (height, width) with 1 = sky, 0 = not sky: the union of the
            sky regions minus the union of the non-sky regions, scaled from
            the labelled size and clipped to the image.

        Raises:
            AnnotationError: unknown stem; a polygon with fewer than 3 points,
                an odd number or non-finite coordinates; a damaged RLE; a
                labelled size whose aspect ratio differs from the target's.
                The message names the COCO file, the image and the annotation id.
            ConfigError: height or width not positive.

        Example:
            >>> labels = load_coco("result.json")  # doctest: +SKIP
            >>> labels.mask("scene", 4, 6)  # doctest: +SKIP
            array([[1, 1, 1, 1, 1, 1],
                   [1, 1, 0, 0, 1, 1],
                   [0, 0, 0, 0, 0, 0],
                   [0, 0, 0, 0, 0, 0]], dtype=uint8)
        """
        from pycocotools import mask as mask_utils

        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"mask {name} must be a positive whole number, got {value!r}")
        height, width = int(height), int(width)
        entry = self.entry(stem)
        source_height, source_width = self._labelled_size(entry, height, width)
        scale_x, scale_y = width / source_width, height / source_height
        checked_polygon_scale = False
        rles = {SKY: [], NON_SKY: []}
        for annotation in entry.annotations:
            if isinstance(annotation.segmentation, dict):
                rles[annotation.role].append(self._rle(entry, annotation, height, width))
                continue
            polygons = self._polygons(entry, annotation)
            if polygons and not checked_polygon_scale:
                self._check_aspect(entry, (source_height, source_width), (height, width),
                                   "it was labelled at")
                checked_polygon_scale = True
            flat = []
            for points in polygons:
                clipped = _clip_to_image(points * (scale_x, scale_y), width, height)
                if len(clipped) >= 3:
                    flat.append(clipped.ravel().tolist())
            if flat:
                rles[annotation.role].extend(mask_utils.frPyObjects(flat, height, width))
        mask = np.zeros((height, width), dtype=np.uint8)
        if rles[SKY]:
            mask = _decode(mask_utils.merge(rles[SKY], intersect=False))
            if rles[NON_SKY]:
                holes = _decode(mask_utils.merge(rles[NON_SKY], intersect=False))
                mask &= holes ^ 1
        return np.ascontiguousarray(mask, dtype=np.uint8)


def _clip_to_image(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip a polygon ((N, 2) x, y) to ``[0, width] x [0, height]`` (Sutherland-Hodgman).

    Clipping keeps huge coordinates away from pycocotools' integer arithmetic.
    """
    if (points.min(axis=0) >= 0).all() and points[:, 0].max() <= width and (
        points[:, 1].max() <= height
    ):
        return points
    for axis, bound, keep_below in ((0, 0.0, False), (0, float(width), True),
                                    (1, 0.0, False), (1, float(height), True)):
        if len(points) == 0:
            break
        inside = points[:, axis] <= bound if keep_below else points[:, axis] >= bound
        output = []
        for index in range(len(points)):
            current, previous = points[index], points[index - 1]
            if inside[index] != inside[index - 1]:
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                crossing = previous + t * (current - previous)
                crossing[axis] = bound
                output.append(crossing)
            if inside[index]:
                output.append(current)
        points = np.array(output, dtype=np.float64).reshape(-1, 2)
    return points


def _is_float_tiff(path: Path) -> bool:
    try:
        return read_image_info(path).is_hdr
    except ImageReadError:
        return False


def _rank(path: Path, mode: str, labelled_suffix: str) -> tuple:
    suffix = path.suffix.lower()
    if suffix in HDR_SUFFIXES:
        hdr = True
    elif suffix in (".tif", ".tiff"):
        hdr = _is_float_tiff(path)
    else:
        hdr = False
    hdr_order = {".exr": 0, ".hdr": 1, ".pic": 1, ".tif": 2, ".tiff": 2}
    ldr_order = {".jpg": 0, ".jpeg": 0, ".png": 1, ".tif": 2, ".tiff": 2}
    same_as_labelled = 0 if suffix == labelled_suffix else 1
    if mode == "ldr":
        return (1 if hdr else 0, same_as_labelled,
                hdr_order.get(suffix, 3) if hdr else ldr_order.get(suffix, 3), path.name)
    return (0 if hdr else 1, hdr_order.get(suffix, 3) if hdr else same_as_labelled,
            ldr_order.get(suffix, 3), path.name)


def match_images(labels: CocoLabels, images_dir: str | os.PathLike, *, mode: str | None = None
                 ) -> tuple[list[tuple[Path, str]], list[str]]:
    """Find each labelled image in ``images_dir`` by its stem.

    Only files listed in ``images_dir`` (not recursively) with a supported
    extension (:data:`skyseg.io.IMAGE_SUFFIXES`, any case) are candidates; a
    path from the JSON is never opened, so ``../../etc/passwd`` in a
    ``file_name`` can only match ``images_dir/passwd.<ext>``. Stems match
    exactly, else case-insensitively when that is unique; a name whose
    upload-like prefix was stripped but is not on disk is tried with it.

    When several files share a stem (``scene.exr`` and its preview
    ``scene.jpg``): mode ``"hdr"`` and ``None`` prefer EXR, then Radiance
    ``.hdr``, then float TIFF (the labels were drawn on a preview for the HDR
    original); mode ``"ldr"`` prefers the labelled file's own extension, then
    JPEG, PNG, integer TIFF.

    Args:
        labels: from :func:`load_coco`.
        images_dir: the folder holding the images.
        mode: ``"hdr"``, ``"ldr"`` or None.

    Returns:
        ``(matched, missing)``: ``matched`` is a list of ``(path, stem)``
        sorted by stem, ``missing`` the sorted stems of labelled images not
        on disk (the caller reports them and goes on).

    Raises:
        ConfigError: ``images_dir`` is not a folder; unknown ``mode``.

    Example:
        >>> matched, missing = match_images(load_coco("result.json"), "images")  # doctest: +SKIP
    """
    if mode not in (None, "hdr", "ldr"):
        raise ConfigError(f"mode must be 'hdr', 'ldr' or None, got {mode!r}")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ConfigError(f"{images_dir}: images folder not found; check --images")
    by_stem: dict[str, list[Path]] = {}
    by_folded: dict[str, list[Path]] = {}
    for child in sorted(images_dir.iterdir()):
        if (child.suffix.lower() in IMAGE_SUFFIXES and TEMP_MARKER not in child.name
                and child.is_file()):
            by_stem.setdefault(child.stem, []).append(child)
            by_folded.setdefault(child.stem.casefold(), []).append(child)

    def candidates(stem: str) -> list[Path]:
        found = by_stem.get(stem)
        if found:
            return found
        folded = by_folded.get(stem.casefold(), [])
        return folded if len({p.stem for p in folded}) == 1 else []

    matched: list[tuple[Path, str]] = []
    missing: list[str] = []
    for stem in labels.stems():
        entry = labels.entry(stem)
        found = candidates(stem)
        if not found and entry.fallback_stem:
            found = candidates(entry.fallback_stem)
        if not found:
            missing.append(stem)
            continue
        labelled_suffix = Path(entry.original_name).suffix.lower()
        best = min(found, key=lambda p: _rank(p, mode or "hdr", labelled_suffix))
        if len(found) > 1:
            logger.debug("%s: several images (%s); using %s", stem,
                         ", ".join(p.name for p in found), best.name)
        matched.append((best, stem))
    return matched, missing

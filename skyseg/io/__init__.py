"""Image input and output: every file becomes ``float32 (H, W, 3)``.

HDR files (EXR, Radiance ``.hdr``, float TIFF) give linear radiance; LDR files
(JPEG, PNG, integer TIFF) give display values scaled to 0..255 (16-bit files
too), EXIF orientation applied. Non-finite values are repaired on reading
(NaN and -Inf to 0, +Inf to the largest finite value in the image) and
counted in :class:`ImageInfo`, so what leaves this module is always finite.

Writers (:mod:`skyseg.io.write`) write to a temporary name and rename.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError, ImageReadError, ImageTooLargeError
from skyseg.io.write import (
    TEMP_MARKER,
    atomic_output,
    prepare_output_folder,
    write_bytes,
    write_exr,
    write_hdr,
    write_jpeg,
    write_png,
    write_text,
    write_tiff,
)

__all__ = [
    "ImageInfo",
    "read_image",
    "read_image_info",
    "check_image_size",
    "check_max_pixels",
    "add_max_pixels_argument",
    "refuse_too_large",
    "DEFAULT_MAX_PIXELS",
    "find_images",
    "repair_nonfinite",
    "image_format",
    "HDR_SUFFIXES",
    "LDR_SUFFIXES",
    "IMAGE_SUFFIXES",
    "atomic_output",
    "prepare_output_folder",
    "write_bytes",
    "write_text",
    "write_png",
    "write_jpeg",
    "write_tiff",
    "write_exr",
    "write_hdr",
    "TEMP_MARKER",
]

logger = logging.getLogger("skyseg")

HDR_SUFFIXES = (".exr", ".hdr", ".pic")
LDR_SUFFIXES = (".jpg", ".jpeg", ".png")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = HDR_SUFFIXES + LDR_SUFFIXES + TIFF_SUFFIXES

#: Most pixels an image may have before it is decoded: a 16384x8192 panorama
#: (134 MP) passes, a 30000x30000 PNG bomb (900 MP, 10.8 GB as float32) does not.
DEFAULT_MAX_PIXELS = 300_000_000

_FORMATS = {
    ".exr": "exr",
    ".hdr": "hdr",
    ".pic": "hdr",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
}


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` learnt about a file.

    Attributes:
        path: the file read.
        format: ``"exr"``, ``"hdr"``, ``"jpeg"``, ``"png"`` or ``"tiff"``.
        is_hdr: True for linear radiance (EXR, Radiance, float TIFF).
        source_dtype: the stored sample type (``"float16"``, ``"uint8"``, ...).
        height: rows of the returned image.
        width: columns of the returned image.
        channels: how colour was stored (``"RGB"``, ``"Y/RY/BY"``, ``"Y"``, ...).
        nonfinite: NaN/Inf samples repaired on reading (-1 when only the
            header was read).
    """

    path: Path
    format: str
    is_hdr: bool
    source_dtype: str
    height: int
    width: int
    channels: str = "RGB"
    nonfinite: int = -1

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width


_MAGIC = (
    (b"\x76\x2f\x31\x01", "exr"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"#?", "hdr"),
)


def image_format(path: str | os.PathLike) -> str:
    """The format of ``path``: from its first bytes, else from its extension.

    Content wins over the name, so ``scene.exr`` that is really a JPEG reads
    as a JPEG and an EXR without extension reads as EXR.

    Raises:
        ImageReadError: neither the content nor the extension is a format
            skyseg reads.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        head = b""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    suffix = path.suffix.lower()
    try:
        return _FORMATS[suffix]
    except KeyError:
        raise ImageReadError(
            f"{path}: unsupported extension {suffix or '(none)'!r} and unrecognised content "
            f"(header={head[:8]!r}); skyseg reads {', '.join(sorted(set(IMAGE_SUFFIXES)))}"
        ) from None


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, expected an image file")
    return path


def repair_nonfinite(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN and -Inf by 0 and +Inf by the largest finite value, in place.

    Args:
        image: float array of any shape.

    Returns:
        ``(image, count)`` with the number of samples replaced.

    Example:
        >>> repair_nonfinite(np.array([1.0, np.nan, np.inf, -np.inf], np.float32))
        (array([1., 0., 1., 0.], dtype=float32), 3)
    """
    # Fast path: a float32 sum is finite only if every value is (it may also
    # overflow on huge finite values; then the exact check below decides).
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(image, axis=None, dtype=np.float32)):
            return image, 0
    finite = np.isfinite(image)
    if finite.all():
        return image, 0
    bad = ~finite
    count = int(bad.sum())
    largest = float(image[finite].max()) if finite.any() else 0.0
    largest = max(largest, 0.0)
    image[np.isnan(image)] = 0.0
    image[np.isposinf(image)] = largest
    image[np.isneginf(image)] = 0.0
    return image, count


def check_max_pixels(max_pixels) -> int | None:
    """Validate ``--max-pixels``: a positive whole number, or None (no limit).

    Raises:
        ConfigError: anything else.

    Example:
        >>> check_max_pixels(300e6)
        300000000
    """
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, float, np.integer,
                                                                   np.floating)) or (
            not np.isfinite(max_pixels) or max_pixels < 1 or max_pixels != int(max_pixels)):
        raise ConfigError(f"--max-pixels must be a positive whole number of pixels, got "
                          f"{max_pixels!r}; e.g. 300e6 accepts 16384x8192 panoramas")
    return int(max_pixels)


def add_max_pixels_argument(parser) -> None:
    """``--max-pixels N`` on an argparse parser (or group): the same option in every stage
    that reads images (``args.max_pixels``; 0 means no limit: pass ``args.max_pixels or None``)."""
    parser.add_argument("--max-pixels", type=float, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse, before decoding, images with more pixels than this "
                             f"(default {DEFAULT_MAX_PIXELS:.0e}: 16384x8192 panoramas pass; "
                             "0: no limit)")


def _header_size(path: Path, fmt: str) -> tuple[int, int]:
    """(height, width) from the file's header only, for every format."""
    if fmt in ("png", "jpeg"):
        from skyseg.io.ldr import jpeg_size, png_size

        try:
            return png_size(path) if fmt == "png" else jpeg_size(path)
        except ImageReadError:
            pass  # let the decoder report the damage in its own words
    return read_image_info(path).size


def check_image_size(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     *, fmt: str | None = None) -> tuple[int, int] | None:
    """Refuse a file whose header claims more than ``max_pixels`` pixels, before decoding.

    Args:
        path: an image file.
        max_pixels: the limit (None: no check).
        fmt: the format, when already known.

    Returns:
        (height, width) from the header, or None when not checked (no
        limit, or a header too damaged to read: the decoder then reports it).

    Raises:
        ImageTooLargeError: one line naming the file, its size and ``--max-pixels``.
    """
    if max_pixels is None:
        return None
    path = Path(path)
    try:
        height, width = _header_size(path, fmt or image_format(path))
    except ImageReadError:
        return None
    refuse_too_large(path, height, width, max_pixels)
    return height, width


def refuse_too_large(path: str | os.PathLike, height: int, width: int,
                     max_pixels: int | None) -> None:
    """Raise :class:`ImageTooLargeError` when ``height x width`` (from a header already
    read) is more than ``max_pixels`` (None: no limit); the message names ``--max-pixels``."""
    if max_pixels is None or height * width <= max_pixels:
        return
    raise ImageTooLargeError(
        f"{path}: {width}x{height} pixels ({height * width / 1e6:.0f} MP) is more than "
        f"--max-pixels {max_pixels} ({max_pixels / 1e6:.0f} MP); it was not decoded: "
        "shrink the image or raise --max-pixels if the machine has the memory "
        f"(about {height * width * 16 / 1e9:.1f} GB for this one)"
    )


def read_image(path: str | os.PathLike, *, return_info: bool = False,
               max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Read any supported image as ``float32 (H, W, 3)``.

    Args:
        path: an EXR, Radiance HDR, JPEG, PNG or TIFF file.
        return_info: also return an :class:`ImageInfo`.
        max_pixels: refuse, from the header and before decoding, a file with
            more pixels than this (a small file can decode to gigabytes);
            None: no limit. The default accepts 16384x8192 panoramas.

    Returns:
        ``image`` or ``(image, info)``. HDR: linear radiance (finite, may
        exceed 1, negatives kept for the preprocessing to clamp). LDR:
        values in 0..255.

    Raises:
        ImageReadError: missing file, unsupported extension, damaged data, or
            no colour channel. The message names the file.
        ImageTooLargeError: (an ImageReadError) more than ``max_pixels``.

    Example:
        >>> import skyseg
        >>> image = skyseg.read_image("pano.exr")  # doctest: +SKIP
        >>> image.dtype, image.shape  # doctest: +SKIP
        (dtype('float32'), (4096, 8192, 3))
    """
    path = _existing(path)
    fmt = image_format(path)
    check_image_size(path, check_max_pixels(max_pixels), fmt=fmt)
    channels = "RGB"
    if fmt == "exr":
        from skyseg.io.exr import read_exr

        image, details = read_exr(path)
        is_hdr, dtype = True, details["dtype"]
        channels = {"rgb": "RGB", "yca": "Y/RY/BY", "y": "Y"}.get(
            details["kind"], "/".join(details["channels"])
        )
    elif fmt == "hdr":
        from skyseg.io.radiance import read_hdr

        image, is_hdr, dtype = read_hdr(path), True, "rgbe"
    elif fmt == "tiff":
        from skyseg.io.ldr import read_tiff

        image, dtype, is_hdr = read_tiff(path)
    elif fmt == "png":
        from skyseg.io.ldr import read_png

        image, dtype = read_png(path)
        is_hdr = False
    else:
        from skyseg.io.ldr import read_pil

        image, dtype = read_pil(path)
        is_hdr = False
    image = np.ascontiguousarray(image, dtype=np.float32)
    image, repaired = repair_nonfinite(image)
    if repaired:
        logger.warning("%s: repaired %d non-finite samples (NaN/-Inf -> 0, +Inf -> max)",
                       path, repaired)
    if not return_info:
        return image
    info = ImageInfo(path=path, format=fmt, is_hdr=is_hdr, source_dtype=dtype,
                     height=image.shape[0], width=image.shape[1], channels=channels,
                     nonfinite=repaired)
    return image, info


def read_image_info(path: str | os.PathLike) -> ImageInfo:
    """Describe an image from its header, without decoding pixels where possible.

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    path = _existing(path)
    fmt = image_format(path)
    try:
        if fmt == "exr":
            from skyseg.io.exr import read_exr_header

            details = read_exr_header(path)
            return ImageInfo(path, fmt, True, details["dtype"], details["height"],
                             details["width"], "/".join(details["channels"]))
        if fmt == "hdr":
            from skyseg.io.radiance import read_hdr_header

            height, width = read_hdr_header(path)
            return ImageInfo(path, fmt, True, "rgbe", height, width)
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                shape, dtype = page.shape, page.dtype
                planar = int(getattr(page, "planarconfig", 1) or 1)
            if len(shape) == 3 and planar == 2:
                shape = shape[1:]
            return ImageInfo(path, fmt, dtype.kind == "f", str(dtype), shape[0], shape[1])
        from skyseg.io.ldr import image_size_pil

        height, width = image_size_pil(path)
        return ImageInfo(path, fmt, False, "uint8", height, width)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(
            f"{path}: cannot read the image header ({type(exc).__name__}: {exc}); "
            "the file is damaged or not what its extension says"
        ) from exc


def find_images(inputs, *, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted list of image paths.

    Folders contribute their images (not recursively); glob patterns are
    expanded; explicit files are kept whatever their extension so that the
    reader can report an unsupported one. Missing paths are kept too, so the
    batch job reports them with the other failures.

    Example:
        >>> find_images([])
        []
    """
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            found.append(path)

    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and child.suffix.lower() in suffixes and (
                    TEMP_MARKER not in child.name
                ):
                    add(child)
        elif glob.has_magic(text) and not path.exists():
            for match in sorted(glob.glob(text)):
                match_path = Path(match)
                if match_path.is_file() and match_path.suffix.lower() in suffixes:
                    add(match_path)
        else:
            add(path)
    return found

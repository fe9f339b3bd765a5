"""JPEG, PNG and TIFF reading.

JPEG and 8-bit PNG decode through Pillow; 16-bit PNG through imagecodecs
(Pillow reduces 16-bit RGB to 8 bits). The EXIF orientation tag is applied
in numpy so every format shares one code path. TIFF reads through tifffile;
a float TIFF is HDR radiance, an integer TIFF is LDR.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from skyseg.errors import ImageReadError

__all__ = ["read_pil", "read_png", "read_tiff", "apply_orientation", "exif_orientation",
           "to_rgb", "png_size", "jpeg_size", "image_size_pil"]


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip ``array`` (H, W[, C]) upright for an EXIF orientation 1..8."""
    swap = (1, 0) + tuple(range(2, array.ndim))
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.transpose(swap)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array.transpose(swap)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def exif_orientation(image) -> int:
    """The EXIF orientation (1..8) of an open Pillow image, 1 when absent or invalid."""
    try:
        value = int(image.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF blocks are common; they do not make the pixels bad
        return 1
    return value if 1 <= value <= 8 else 1


def to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W), (H, W, 1..4) -> (H, W, 3): grey replicated, alpha dropped."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (1, 2):
        return np.repeat(array[:, :, :1], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return array[:, :, :3]
    raise ImageReadError(
        f"{path}: pixel array of shape {array.shape} is not an image skyseg can read as RGB; "
        "save it as (H, W) grey or (H, W, 3) RGB"
    )


def _scale_to_255(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32)
    if array.dtype == np.uint16:
        return array.astype(np.float32) * np.float32(255.0 / 65535.0)
    if array.dtype == np.bool_:
        return array.astype(np.float32) * 255.0
    if array.dtype in (np.int32, np.uint32):
        return (array.astype(np.float64) * (255.0 / 4294967295.0)).astype(np.float32)
    raise ImageReadError(f"{path}: unsupported pixel type {array.dtype}; save as 8 or 16 bit")


def read_pil(path: Path) -> tuple[np.ndarray, str]:
    """JPEG (or any Pillow format) as ``float32 (H, W, 3)`` in 0..255, upright."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            orientation = exif_orientation(image)
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image)
                dtype = "uint16"
                array = array.astype(np.uint16) if mode != "I" else array
            else:
                array = np.asarray(image.convert("RGB"))
                dtype = "uint8"
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file not found; check the path") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(
            f"{path}: not a readable image (unknown or damaged format); re-export it"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{path}: Pillow refuses to decode it ({exc}); shrink the image"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(
            f"{path}: damaged or truncated image ({exc}); re-export or re-download it"
        ) from exc
    array = apply_orientation(array, orientation)
    return np.ascontiguousarray(to_rgb(_scale_to_255(array, path), path)), dtype


def read_png(path: Path) -> tuple[np.ndarray, str]:
    """PNG (8 or 16 bit, grey/RGB/alpha/palette) as ``float32 (H, W, 3)`` in 0..255."""
    import imagecodecs
    from PIL import Image

    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file not found; check the path") from exc
    if not blob.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ImageReadError(
            f"{path}: not a PNG file (header={blob[:8]!r}); check the file or its extension"
        )
    try:
        array = imagecodecs.png_decode(blob)
    except Exception:
        # Palette and odd PNGs that libpng's simple API refuses: Pillow knows them.
        return read_pil(path)
    try:
        with Image.open(path) as image:
            orientation = exif_orientation(image)
            if image.mode == "P":
                return read_pil(path)
    except Exception:
        orientation = 1
    dtype = str(array.dtype)
    array = apply_orientation(np.asarray(array), orientation)
    return np.ascontiguousarray(to_rgb(_scale_to_255(array, path), path)), dtype


def read_tiff(path: Path) -> tuple[np.ndarray, str, bool]:
    """TIFF as ``float32 (H, W, 3)``; returns (image, source dtype, is_hdr).

    Float TIFFs are radiance (HDR); integer TIFFs are scaled to 0..255.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            array = page.asarray()
            planar = getattr(page, "planarconfig", None)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file not found; check the path") from exc
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error...
        raise ImageReadError(
            f"{path}: damaged or unreadable TIFF ({type(exc).__name__}: {exc}); re-export it"
        ) from exc
    if array.ndim == 3 and planar is not None and int(planar) == 2 and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    dtype = str(array.dtype)
    if np.issubdtype(array.dtype, np.floating):
        return np.ascontiguousarray(to_rgb(array.astype(np.float32), path)), dtype, True
    return np.ascontiguousarray(to_rgb(_scale_to_255(array, path), path)), dtype, False


def png_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk (the first 24 bytes; nothing decoded).

    Raises:
        ImageReadError: not a PNG, or no IHDR chunk first.

    Example:
        >>> import struct, tempfile
        >>> head = b"\\x89PNG\\r\\n\\x1a\\n" + struct.pack(">I4sII", 13, b"IHDR", 30000, 20000)
        >>> with tempfile.NamedTemporaryFile(suffix=".png") as f:
        ...     _ = f.write(head); f.flush(); png_size(f.name)
        (20000, 30000)
    """
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        raise ImageReadError(f"{path}: not a PNG file or no IHDR chunk (header={head[:16]!r}); "
                             "the file is damaged or not what its extension says")
    width, height = struct.unpack(">II", head[16:24])
    return height, width


#: JPEG start-of-frame markers (baseline, progressive, lossless, ...): the
#: others in 0xC0..0xCF are DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from a JPEG's start-of-frame segment, skipping the segments before it.

    Reads segment headers only (EXIF and other blocks are skipped with seek),
    never the entropy-coded data.

    Raises:
        ImageReadError: not a JPEG, or no frame header before the image data.
    """
    with open(path, "rb") as handle:
        if handle.read(2) != b"\xff\xd8":
            raise ImageReadError(f"{path}: not a JPEG file (no SOI marker); "
                                 "the file is damaged or not what its extension says")
        while True:
            byte = handle.read(1)
            while byte == b"\xff":  # fill bytes before a marker
                marker = handle.read(1)
                if marker != b"\xff":
                    break
            else:
                raise ImageReadError(f"{path}: damaged JPEG (no marker where one is expected); "
                                     "re-export it")
            code = marker[0] if marker else -1
            if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
                continue  # segments without a length
            length_bytes = handle.read(2)
            if len(length_bytes) < 2 or code in (0xD9, 0xDA):
                raise ImageReadError(f"{path}: damaged JPEG (no frame header before the image "
                                     "data); re-export it")
            length = struct.unpack(">H", length_bytes)[0]
            if code in _SOF_MARKERS:
                frame = handle.read(5)
                if len(frame) < 5:
                    raise ImageReadError(f"{path}: truncated JPEG frame header; re-export it")
                _, height, width = struct.unpack(">BHH", frame)
                return height, width
            if length < 2:
                raise ImageReadError(f"{path}: damaged JPEG (segment length {length}); "
                                     "re-export it")
            handle.seek(length - 2, os.SEEK_CUR)


def image_size_pil(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) after EXIF orientation, reading only the header."""
    from PIL import Image

    try:
        opened = Image.open(path)
    except Exception:
        # More pixels than Pillow opens (skyseg's own size check decides), or
        # a header Pillow cannot place: the size from the header itself.
        with open(path, "rb") as handle:
            is_png = handle.read(4) == b"\x89PNG"
        try:
            return png_size(path) if is_png else jpeg_size(path)
        except ImageReadError:
            pass
        raise
    with opened as image:
        width, height = image.size
        if exif_orientation(image) in (5, 6, 7, 8):
            width, height = height, width
    return height, width

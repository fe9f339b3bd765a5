"""Radiance RGBE (``.hdr`` / ``.pic``) reading and writing in numpy.

Reads flat and new-style run-length encoded files with the standard
``-Y H +X W`` orientation (other orientations are rearranged), applying the
``EXPOSURE`` header so values are radiance. Writes flat RGBE.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from skyseg.errors import ImageReadError

__all__ = ["read_hdr", "read_hdr_header", "encode_hdr"]

_RESOLUTION = re.compile(rb"^([-+])([XY]) (\d+) ([-+])([XY]) (\d+)$")


def _bad(path: Path, what: str) -> ImageReadError:
    return ImageReadError(
        f"{path}: damaged or unsupported Radiance HDR file ({what}); re-export it as .hdr or .exr"
    )


def _parse_header(path: Path, blob: bytes) -> tuple[int, int, tuple, float, int]:
    """Returns (height, width, orientation, exposure, offset of pixel data)."""
    if not (blob.startswith(b"#?RADIANCE") or blob.startswith(b"#?RGBE") or blob.startswith(b"#?")):
        raise ImageReadError(
            f"{path}: not a Radiance HDR file (header={blob[:10]!r}, expected b'#?RADIANCE'); "
            "check the file"
        )
    end = blob.find(b"\n\n")
    if end < 0:
        raise _bad(path, "header has no end")
    exposure = 1.0
    fmt = b"32-bit_rle_rgbe"
    for line in blob[:end].split(b"\n")[1:]:
        if line.startswith(b"FORMAT="):
            fmt = line[7:].strip()
        elif line.startswith(b"EXPOSURE="):
            try:
                exposure *= float(line[9:].strip())
            except ValueError as exc:
                raise _bad(path, f"EXPOSURE {line[9:]!r}") from exc
    if fmt != b"32-bit_rle_rgbe":
        raise _bad(path, f"FORMAT {fmt.decode(errors='replace')} (only 32-bit_rle_rgbe)")
    line_end = blob.find(b"\n", end + 2)
    if line_end < 0:
        raise _bad(path, "no resolution line")
    match = _RESOLUTION.match(blob[end + 2:line_end].strip())
    if not match:
        raise _bad(path, f"resolution line {blob[end + 2:line_end][:40]!r}")
    sign1, axis1, n1, sign2, axis2, n2 = match.groups()
    if axis1 == axis2:
        raise _bad(path, "resolution line names one axis twice")
    n1, n2 = int(n1), int(n2)
    if not (0 < n1 <= 65536 and 0 < n2 <= 65536):
        raise _bad(path, f"size {n1}x{n2}")
    orientation = (sign1, axis1, sign2, axis2)
    height, width = (n1, n2) if axis1 == b"Y" else (n2, n1)
    if not exposure > 0:
        raise _bad(path, f"EXPOSURE {exposure}")
    return height, width, orientation, exposure, line_end + 1


def read_hdr_header(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of a Radiance file, reading only its header."""
    path = Path(path)
    with open(path, "rb") as handle:
        blob = handle.read(65536)
    height, width, *_ = _parse_header(path, blob)
    return height, width


def _decode_scanlines(path: Path, data: memoryview, rows: int, length: int) -> np.ndarray:
    out = np.empty((rows, length, 4), dtype=np.uint8)
    pos = 0
    size = len(data)
    raw = bytes(data)
    for row in range(rows):
        if pos + 4 > size:
            raise _bad(path, f"truncated at scanline {row}")
        b0, b1, b2, b3 = raw[pos], raw[pos + 1], raw[pos + 2], raw[pos + 3]
        if 8 <= length < 32768 and b0 == 2 and b1 == 2 and not (b2 & 0x80):
            if (b2 << 8 | b3) != length:
                raise _bad(path, f"scanline {row} length {(b2 << 8) | b3} != {length}")
            pos += 4
            for channel in range(4):
                target = out[row, :, channel]
                x = 0
                while x < length:
                    if pos >= size:
                        raise _bad(path, f"truncated in scanline {row}")
                    count = raw[pos]
                    pos += 1
                    if count > 128:
                        count -= 128
                        if x + count > length or pos >= size:
                            raise _bad(path, f"bad run in scanline {row}")
                        target[x:x + count] = raw[pos]
                        pos += 1
                    else:
                        if count == 0 or x + count > length or pos + count > size:
                            raise _bad(path, f"bad dump in scanline {row}")
                        target[x:x + count] = np.frombuffer(raw, np.uint8, count, pos)
                        pos += count
                    x += count
        else:
            # Flat (or old-style RLE, which real files no longer use): 4 bytes a pixel.
            need = 4 * length
            if pos + need > size:
                raise _bad(path, f"truncated at scanline {row}")
            out[row] = np.frombuffer(raw, np.uint8, need, pos).reshape(length, 4)
            pos += need
    return out


def read_hdr(path: str | os.PathLike) -> np.ndarray:
    """Read a Radiance RGBE file as ``float32 (H, W, 3)`` radiance.

    Raises:
        ImageReadError: not a Radiance file, truncated or malformed.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        blob = handle.read()
    height, width, orientation, exposure, offset = _parse_header(path, blob)
    sign1, axis1, sign2, _axis2 = orientation
    rows, length = (height, width) if axis1 == b"Y" else (width, height)
    rgbe = _decode_scanlines(path, memoryview(blob)[offset:], rows, length)
    mantissa = rgbe[:, :, :3].astype(np.float32)
    exponent = rgbe[:, :, 3].astype(np.int32)
    scale = np.where(exponent > 0, np.ldexp(np.float32(1.0), exponent - (128 + 8)), 0.0)
    image = (mantissa + 0.5) * scale[:, :, None].astype(np.float32)
    image[exponent == 0] = 0.0
    if axis1 == b"X":
        image = image.transpose(1, 0, 2)
        sign_y, sign_x = sign2, sign1
    else:
        sign_y, sign_x = sign1, sign2
    if sign_y == b"+":
        image = image[::-1]
    if sign_x == b"-":
        image = image[:, ::-1]
    return np.ascontiguousarray(image / np.float32(exposure), dtype=np.float32)


def encode_hdr(image: np.ndarray) -> bytes:
    """Flat RGBE bytes for ``float (H, W, 3)`` radiance (negative values become 0)."""
    array = np.clip(np.asarray(image, dtype=np.float64), 0, None)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"RGBE image must be (H, W, 3), got {array.shape}")
    height, width = array.shape[:2]
    brightest = array.max(axis=2)
    mantissa, exponent = np.frexp(brightest)
    valid = brightest > 1e-32
    scale = np.where(valid, mantissa * 256.0 / np.where(valid, brightest, 1.0), 0.0)
    rgbe = np.zeros((height, width, 4), dtype=np.uint8)
    rgbe[:, :, :3] = np.clip(np.floor(array * scale[:, :, None]), 0, 255).astype(np.uint8)
    rgbe[:, :, 3] = np.where(valid, np.clip(exponent + 128, 0, 255), 0).astype(np.uint8)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode()
    return header + rgbe.tobytes()

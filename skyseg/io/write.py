"""Writers that never leave a half-written file.

Each writer encodes into a temporary file in the destination folder
(``.<name>.<random>.tmp<suffix>``) and renames it over the destination only
when the encoder has finished; a killed process leaves at most a stray
``.tmp`` file, never a truncated PNG/TIFF/EXR under the real name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from skyseg.errors import ImageWriteError

__all__ = ["atomic_output", "write_png", "write_jpeg", "write_tiff", "write_exr", "write_hdr",
           "write_bytes", "write_text", "prepare_output_folder", "TEMP_MARKER",
           "remove_temporaries"]

#: Every temporary file skyseg writes contains this; resumable stages delete them.
TEMP_MARKER = ".tmp"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary file keeps ``path``'s suffix so encoders that look at it
    still see ``.png`` / ``.tif`` / ``.exr``. On any exception the temporary
    file is removed and the destination is left as it was.

    Raises:
        ImageWriteError: the folder does not exist or is not writable.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_output(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise ImageWriteError(
            f"{path}: output folder {folder} does not exist; create it or choose another --out"
        )
    temporary = folder / f".{path.stem}.{secrets.token_hex(4)}{TEMP_MARKER}{path.suffix}"
    try:
        yield temporary
        os.replace(temporary, path)
    except PermissionError as exc:
        raise ImageWriteError(
            f"{path}: cannot write here ({exc.strerror}); choose a writable output folder"
        ) from exc
    except OSError as exc:
        raise ImageWriteError(
            f"{path}: write failed ({exc.strerror or exc}); check free disk space and the folder"
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def prepare_output_folder(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` (and its parents) if needed and check that files can be written in it.

    Every stage that writes into an ``--out`` folder starts here, so the
    message for a folder that cannot be made or written is the same everywhere.

    Raises:
        ImageWriteError: it cannot be created or written to.

    Example:
        >>> import tempfile, pathlib
        >>> prepare_output_folder(pathlib.Path(tempfile.mkdtemp()) / "out" / "masks").is_dir()
        True
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(
            f"{out_dir}: cannot create the output folder ({exc.strerror or exc}); "
            "choose a writable --out"
        ) from exc
    try:
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".skyseg-probe", suffix=".tmp"):
            pass
    except OSError as exc:
        raise ImageWriteError(
            f"{out_dir}: output folder is not writable ({exc.strerror or exc}); "
            "choose a writable --out"
        ) from exc
    return out_dir


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def _check_integer_image(path: Path, array: np.ndarray, dtypes: tuple) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype not in dtypes:
        raise ImageWriteError(
            f"{path}: expected {' or '.join(np.dtype(d).name for d in dtypes)} pixels, "
            f"got {array.dtype}; convert before writing"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 2, 3, 4))):
        raise ImageWriteError(f"{path}: expected (H, W) or (H, W, C) pixels, got {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return np.ascontiguousarray(array)


def write_png(path: str | os.PathLike, array: np.ndarray, *, level: int = 6) -> Path:
    """Write a uint8 or uint16 (H, W) / (H, W, 3|4) array as PNG.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "mask.png"
        >>> _ = write_png(out, np.zeros((4, 5), np.uint8))
    """
    import imagecodecs

    path = Path(path)
    array = _check_integer_image(path, array, (np.uint8, np.uint16))
    blob = imagecodecs.png_encode(array, level=level)
    return write_bytes(path, blob)


def write_jpeg(path: str | os.PathLike, array: np.ndarray, *, quality: int = 92) -> Path:
    """Write a uint8 (H, W, 3) array as JPEG."""
    from PIL import Image

    path = Path(path)
    array = _check_integer_image(path, array, (np.uint8,))
    with atomic_output(path) as temporary:
        Image.fromarray(array).save(temporary, format="JPEG", quality=quality)
    return path


def write_tiff(path: str | os.PathLike, array: np.ndarray, *,
               compression: str | None = None) -> Path:
    """Write an (H, W) or (H, W, C) array as TIFF (any dtype tifffile knows).

    Args:
        compression: ``None``, ``"zlib"``, ``"lzw"`` or ``"zstd"`` (lossless).
    """
    import tifffile

    path = Path(path)
    array = np.ascontiguousarray(array)
    photometric = "rgb" if array.ndim == 3 and array.shape[2] in (3, 4) else "minisblack"
    kwargs = {}
    if compression and compression != "none":
        kwargs["compression"] = compression
        if array.dtype.kind == "f" and compression in ("zlib", "lzw", "zstd"):
            kwargs["predictor"] = True
    with atomic_output(path) as temporary:
        tifffile.imwrite(temporary, array, photometric=photometric, **kwargs)
    return path


def write_exr(path: str | os.PathLike, image: np.ndarray, *, half: bool = True,
              compression: str = "zip") -> Path:
    """Write float (H, W, 3) RGB or (H, W, 4) RGBA as a scanline OpenEXR file.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "sky.exr"
        >>> _ = write_exr(out, np.ones((4, 8, 4), np.float32))
    """
    from skyseg.io.exr import encode_exr

    path = Path(path)
    with atomic_output(path) as temporary:
        try:
            encode_exr(temporary, image, half=half, compression=compression)
        except ImageWriteError:
            raise
        except Exception as exc:  # the binding raises RuntimeError on I/O trouble
            raise ImageWriteError(f"{path}: EXR encoder failed ({exc})") from exc
    return path


def write_hdr(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write float (H, W, 3) radiance as a flat Radiance RGBE file."""
    from skyseg.io.radiance import encode_hdr

    return write_bytes(path, encode_hdr(image))


def remove_temporaries(folders) -> list[Path]:
    """Delete the half-written files (``.NAME.xxxx.tmp.ext``) a killed writer left in ``folders``.

    Args:
        folders: folders to look in (not recursively); missing ones are skipped.

    Returns:
        the files removed.
    """
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if TEMP_MARKER in path.name and path.is_file():
                path.unlink()
                removed.append(path)
    return removed

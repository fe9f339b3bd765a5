"""Image I/O: every EXR shape, Radiance, JPEG/PNG/TIFF, damaged files, atomic writers."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import skyseg
from skyseg.errors import ImageReadError, ImageWriteError, SkysegError
from skyseg.io import (
    find_images,
    read_image,
    read_image_info,
    repair_nonfinite,
    write_exr,
    write_hdr,
    write_jpeg,
    write_png,
    write_tiff,
)
from skyseg.io.exr import luminance_weights, to_rec709_matrix

from .conftest import SHARED_DATA, shared_path

# (file, height, width) of the display window, from the files' headers.
EXR_SAMPLES = [
    ("Beachball_multipart.0001.exr", 1556, 2048),
    ("Chromaticities_XYZ.exr", 406, 610),
    ("DisplayWindow_t08.exr", 401, 501),
    ("LuminanceChroma_CrissyField.exr", 810, 1218),
    ("LuminanceChroma_Garden.exr", 493, 874),
    ("LuminanceChroma_MtTamNorth.exr", 796, 1198),
    ("MultiResolution_Bonita.exr", 832, 550),
    ("MultiResolution_KernerEnvLatLong.exr", 512, 1024),
    ("ScanLines_Cannon.exr", 566, 780),
    ("ScanLines_MtTamWest.exr", 732, 1214),
    ("ScanLines_Tree.exr", 906, 928),
    ("TestImages_AllHalfValues.exr", 256, 256),
    ("TestImages_BrightRingsNanInf.exr", 800, 800),
    ("TestImages_WideFloatRange.exr", 500, 500),
    ("Tiles_GoldenGate.exr", 860, 1262),
]


def _exr(path: Path, channels: dict, **header) -> Path:
    import OpenEXR

    head = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    head.update(header)
    OpenEXR.File(head, channels).write(str(path))
    return path


# --------------------------------------------------------------------------- EXR, real files


def test_every_exr_sample_is_listed(exr_samples):
    on_disk = sorted(p.name for p in exr_samples.glob("*.exr"))
    assert on_disk == sorted(name for name, _, _ in EXR_SAMPLES)


@pytest.mark.parametrize("name,height,width", EXR_SAMPLES)
def test_exr_sample_loads_as_finite_float32_rgb(exr_samples, name, height, width):
    image, info = read_image(exr_samples / name, return_info=True)
    assert image.dtype == np.float32
    assert image.shape == (height, width, 3)
    assert np.isfinite(image).all()
    assert info.is_hdr and info.format == "exr"
    assert (info.height, info.width) == (height, width)
    header_info = read_image_info(exr_samples / name)
    assert header_info.size == (height, width)


def test_nan_inf_pixels_are_repaired_and_counted(exr_samples):
    image, info = read_image(exr_samples / "TestImages_BrightRingsNanInf.exr", return_info=True)
    assert info.nonfinite == 18
    assert np.isfinite(image).all()


def test_luminance_only_exr_is_grey(exr_samples):
    image, info = read_image(exr_samples / "LuminanceChroma_Garden.exr", return_info=True)
    assert info.channels == "Y"
    assert np.array_equal(image[..., 0], image[..., 1])
    assert np.array_equal(image[..., 1], image[..., 2])


def test_lone_channel_is_grey(exr_samples):
    image, info = read_image(exr_samples / "TestImages_WideFloatRange.exr", return_info=True)
    assert info.channels == "G"
    assert np.array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize("name", ["LuminanceChroma_MtTamNorth.exr", "LuminanceChroma_CrissyField.exr"])
def test_luminance_chroma_keeps_luminance_and_has_colour(exr_samples, name):
    import OpenEXR

    image, info = read_image(exr_samples / name, return_info=True)
    assert info.channels == "Y/RY/BY"
    stored_y = OpenEXR.File(str(exr_samples / name), separate_channels=True).channels()["Y"]
    weights = luminance_weights(None)
    recomputed = image @ weights.astype(np.float32)
    # Luminance survives the chroma reconstruction exactly up to float rounding.
    assert np.allclose(recomputed, stored_y.pixels.astype(np.float32), rtol=1e-3, atol=1e-4)
    # It is a colour picture, not grey.
    assert float(np.abs(image[..., 0] - image[..., 2]).mean()) > 0.01 * float(image.mean())


def test_mttam_sky_is_blue(exr_samples):
    # The top rows of MtTamNorth are clear sky: blue must exceed red there.
    image = read_image(exr_samples / "LuminanceChroma_MtTamNorth.exr")
    sky = image[:40, 600:1100].reshape(-1, 3).mean(axis=0)
    assert sky[2] > sky[0]


def test_data_window_inside_display_window(exr_samples):
    import OpenEXR

    path = exr_samples / "DisplayWindow_t08.exr"
    image = read_image(path)
    channels = OpenEXR.File(str(path), separate_channels=True).channels()
    red = channels["R"].pixels.astype(np.float32)
    # dataWindow (30, 40)-(429, 339) inside displayWindow (0, 0)-(500, 400).
    assert np.array_equal(image[40:340, 30:430, 0], red)
    outside = np.ones(image.shape[:2], bool)
    outside[40:340, 30:430] = False
    assert not image[outside].any()


def test_multipart_reads_first_part_with_colour(exr_samples):
    import OpenEXR

    path = exr_samples / "Beachball_multipart.0001.exr"
    image = read_image(path)
    part = OpenEXR.File(str(path), separate_channels=True).parts[0]
    green = part.channels["G"].pixels.astype(np.float32)
    # Part 0 "rgba_right": dataWindow (654, 245)-(1530, 1120).
    assert np.array_equal(image[245:1121, 654:1531, 1], green)


def test_non_rec709_chromaticities_are_converted(exr_samples):
    import OpenEXR

    path = exr_samples / "Chromaticities_XYZ.exr"
    raw = OpenEXR.File(str(path), separate_channels=True).channels()
    xyz = np.stack([raw[c].pixels.astype(np.float32) for c in "RGB"], axis=-1)
    image = read_image(path)
    # Equal-energy XYZ white -> D65 Rec.709: the result is the matrix applied to XYZ.
    matrix = to_rec709_matrix((1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1 / 3, 1 / 3))
    assert np.allclose(image, xyz @ matrix.T.astype(np.float32), rtol=1e-4, atol=1e-5)
    assert not np.allclose(image, xyz)


# ---------------------------------------------------------------------- EXR, synthetic files


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_exr_round_trip(tmp_path, rng, dtype):
    image = (rng.random((13, 21, 3)) * 50).astype(np.float32)
    write_exr(tmp_path / "a.exr", image, half=dtype == np.float16)
    back, info = read_image(tmp_path / "a.exr", return_info=True)
    assert info.source_dtype == np.dtype(dtype).name
    assert np.array_equal(back, image.astype(dtype).astype(np.float32))


def test_exr_rgba_alpha_is_dropped(tmp_path, rng):
    rgba = rng.random((6, 8, 4)).astype(np.float32)
    write_exr(tmp_path / "a.exr", rgba, half=False)
    assert np.array_equal(read_image(tmp_path / "a.exr"), rgba[..., :3])


def test_exr_layer_prefix_and_tiles(tmp_path, rng):
    import OpenEXR

    tiles = OpenEXR.TileDescription()
    tiles.xSize = tiles.ySize = 16
    planes = {c: rng.random((20, 30)).astype(np.float32) for c in "RGB"}
    _exr(tmp_path / "t.exr", {f"beauty.{c}": planes[c] for c in "RGB"},
         type=OpenEXR.tiledimage, tiles=tiles)
    image = read_image(tmp_path / "t.exr")
    assert np.array_equal(image, np.stack([planes[c] for c in "RGB"], axis=-1))


def test_exr_luminance_chroma_round_trip(tmp_path, rng):
    # The binding writes full-resolution chroma only; subsampled chroma is
    # covered by the real LuminanceChroma samples and test_chroma_upsampling.
    rgb = (rng.random((8, 12, 3)) * 4 + 0.05).astype(np.float32)
    y = rgb @ luminance_weights(None).astype(np.float32)
    channels = {"Y": y, "RY": (rgb[..., 0] - y) / y, "BY": (rgb[..., 2] - y) / y}
    _exr(tmp_path / "yca.exr", channels)
    image, info = read_image(tmp_path / "yca.exr", return_info=True)
    assert info.channels == "Y/RY/BY"
    assert np.allclose(image, rgb, rtol=1e-5, atol=1e-6)


def test_chroma_upsampling_is_linear_between_samples():
    from skyseg.io.exr import _upsample

    samples = np.array([[0.0, 2.0, 4.0], [2.0, 4.0, 6.0]], np.float32)  # rows 0, 2; cols 0, 2, 4
    full = _upsample(samples, 2, 2, (0, 0), (4, 6))
    expected = np.add.outer(np.minimum(np.arange(4), 2), np.minimum(np.arange(6), 4)).astype(np.float32)
    assert np.allclose(full, expected)


def test_exr_without_colour_channel_is_a_clear_error(tmp_path):
    path = _exr(tmp_path / "depth.exr", {"Z": np.ones((4, 4), np.float32)})
    with pytest.raises(ImageReadError, match=r"depth\.exr: no colour channel"):
        read_image(path)


def test_truncated_exr_is_a_clear_error(tmp_path, rng):
    write_exr(tmp_path / "full.exr", rng.random((64, 64, 3)).astype(np.float32))
    blob = (tmp_path / "full.exr").read_bytes()
    (tmp_path / "cut.exr").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.exr: damaged"):
        read_image(tmp_path / "cut.exr")


def test_not_an_exr_is_a_clear_error(tmp_path):
    (tmp_path / "fake.exr").write_bytes(b"hello world, not an image")
    with pytest.raises(ImageReadError, match=r"fake\.exr: not an OpenEXR file"):
        read_image(tmp_path / "fake.exr")


# ----------------------------------------------------------------------------- damaged files


def _damaged_files() -> list[Path]:
    folder = SHARED_DATA / "exr-damaged"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name not in ("README.md", "LICENSE"))


DAMAGED = _damaged_files()


def test_all_185_damaged_files_are_present():
    folder = shared_path("exr-damaged")
    assert folder.is_dir()
    assert len(DAMAGED) == 185


# A hang guard, not a speed claim: scripts/bench_damaged.py measures how fast they fail.
@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", DAMAGED, ids=[p.name[:60] for p in DAMAGED])
def test_damaged_exr_gives_skyseg_error_naming_the_file(path):
    with pytest.raises(SkysegError) as caught:
        skyseg.read_image(path)
    assert str(path) in str(caught.value)


def test_damaged_files_batch_does_not_crash_a_fresh_process(tmp_path, cli):
    # A batch command over every damaged file: one process, every file reported, none crashes it.
    shared_path("exr-damaged")
    result = cli("previews", *DAMAGED, "--out", tmp_path / "out")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "0 of 185 done, 185 failed" in result.stderr
    assert not list((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------ Radiance HDR


def _rle_hdr(image: np.ndarray) -> tuple[bytes, np.ndarray]:
    """New-style RLE Radiance bytes (runs for repeats, dumps otherwise)."""
    height, width = image.shape[:2]
    flat = io.BytesIO()
    brightest = image.max(axis=2)
    mantissa, exponent = np.frexp(brightest)
    scale = np.where(brightest > 0, mantissa * 256.0 / np.where(brightest > 0, brightest, 1), 0)
    rgbe = np.zeros((height, width, 4), np.uint8)
    rgbe[..., :3] = np.floor(image * scale[..., None]).astype(np.uint8)
    rgbe[..., 3] = np.where(brightest > 0, exponent + 128, 0)
    flat.write(f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\nEXPOSURE=2.0\n\n-Y {height} +X {width}\n".encode())
    for row in rgbe:
        flat.write(bytes([2, 2, width >> 8, width & 255]))
        for channel in range(4):
            values = row[:, channel]
            x = 0
            while x < width:
                run = 1
                while x + run < width and run < 127 and values[x + run] == values[x]:
                    run += 1
                if run >= 3:
                    flat.write(bytes([128 + run, values[x]]))
                    x += run
                else:
                    count = min(128, width - x)
                    flat.write(bytes([count]) + values[x:x + count].tobytes())
                    x += count
    return flat.getvalue(), rgbe


def test_hdr_flat_round_trip(tmp_path, rng):
    image = (rng.random((5, 9, 3)) * 100).astype(np.float32)
    write_hdr(tmp_path / "a.hdr", image)
    back, info = read_image(tmp_path / "a.hdr", return_info=True)
    assert info.is_hdr and back.shape == (5, 9, 3)
    # RGBE keeps 8 bits of mantissa relative to the brightest channel of each pixel.
    assert (np.abs(back - image) <= image.max(axis=2, keepdims=True) / 128).all()


def test_hdr_rle_and_exposure(tmp_path):
    image = np.zeros((4, 40, 3), np.float32)
    image[:, :20] = [1.0, 0.5, 0.25]  # long runs
    image[:, 20:] = np.linspace(0.1, 3, 20)[None, :, None]  # dumps
    blob, rgbe = _rle_hdr(image)
    (tmp_path / "rle.hdr").write_bytes(blob)
    back = read_image(tmp_path / "rle.hdr")
    expected = (rgbe[..., :3] + 0.5) * np.ldexp(1.0, rgbe[..., 3].astype(int) - 136)[..., None]
    assert np.allclose(back, expected / 2.0, rtol=1e-6)  # EXPOSURE=2 divides radiance by 2


def test_hdr_orientation_is_applied(tmp_path):
    written = write_hdr(tmp_path / "a.hdr", np.arange(6, dtype=np.float32).reshape(1, 2, 3) + 1)
    flipped = written.read_bytes().replace(b"-Y 1 +X 2", b"-Y 1 -X 2")
    (tmp_path / "b.hdr").write_bytes(flipped)
    a, b = read_image(tmp_path / "a.hdr"), read_image(tmp_path / "b.hdr")
    assert np.array_equal(a[:, ::-1], b)


def test_truncated_hdr_is_a_clear_error(tmp_path):
    path = write_hdr(tmp_path / "a.hdr", np.ones((8, 8, 3), np.float32))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ImageReadError, match=r"a\.hdr: damaged or unsupported Radiance HDR file"):
        read_image(path)


# ------------------------------------------------------------------------- JPEG, PNG, TIFF


def _exif_jpeg(path: Path, array: np.ndarray, orientation: int) -> Image.Image:
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format="JPEG", quality=100, exif=exif.tobytes(), subsampling=0)
    return Image.open(path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_matches_pillow(tmp_path, orientation):
    array = np.zeros((16, 24, 3), np.uint8)
    array[:8, :8] = 255  # a white block in the top-left corner
    reference = np.asarray(ImageOps.exif_transpose(_exif_jpeg(tmp_path / "o.jpg", array, orientation)))
    image = read_image(tmp_path / "o.jpg")
    assert image.shape == reference.shape
    assert np.array_equal(image, reference.astype(np.float32))
    assert read_image_info(tmp_path / "o.jpg").size == reference.shape[:2]


def test_grey_jpeg_becomes_rgb(tmp_path):
    Image.fromarray(np.full((5, 7), 100, np.uint8)).save(tmp_path / "g.jpg")
    image, info = read_image(tmp_path / "g.jpg", return_info=True)
    assert image.shape == (5, 7, 3) and not info.is_hdr
    assert np.allclose(image, 100, atol=1)


def test_truncated_jpeg_is_a_clear_error(tmp_path, rng):
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "f.jpg")
    blob = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ImageReadError, match=r"t\.jpg: damaged or truncated image"):
        read_image(tmp_path / "t.jpg")


def _png16(path: Path, array: np.ndarray) -> None:
    height, width = array.shape[:2]
    colour = 2 if array.ndim == 3 else 0
    big = array.astype(">u2")
    raw = b"".join(b"\x00" + big[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("shape", [(4, 5, 3), (4, 5)])
def test_16_bit_png_keeps_its_precision(tmp_path, shape):
    array = (np.arange(np.prod(shape)).reshape(shape) * 997 % 65536).astype(np.uint16)
    _png16(tmp_path / "p.png", array)
    image, info = read_image(tmp_path / "p.png", return_info=True)
    assert info.source_dtype == "uint16"
    expected = array.astype(np.float32) * np.float32(255 / 65535)
    if array.ndim == 2:
        expected = np.repeat(expected[..., None], 3, axis=2)
    assert np.allclose(image, expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA"])
def test_8_bit_png_modes(tmp_path, rng, mode):
    rgb = (rng.random((6, 9, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    if mode == "P":
        image = image.quantize(16)
    else:
        image = image.convert(mode)
    image.save(tmp_path / "p.png")
    expected = np.asarray(image.convert("RGB"), np.float32)
    assert np.array_equal(read_image(tmp_path / "p.png"), expected)


def test_png_exif_orientation(tmp_path):
    array = np.zeros((4, 6, 3), np.uint8)
    array[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(tmp_path / "o.png", exif=exif.tobytes())
    image = read_image(tmp_path / "o.png")
    assert image.shape == (6, 4, 3)
    assert np.array_equal(image, np.rot90(array, k=-1).astype(np.float32))


def test_float_tiff_is_hdr_and_integer_tiff_is_ldr(tmp_path, rng):
    radiance = (rng.random((5, 6, 3)) * 1000).astype(np.float32)
    write_tiff(tmp_path / "f.tif", radiance)
    image, info = read_image(tmp_path / "f.tif", return_info=True)
    assert info.is_hdr and np.array_equal(image, radiance)
    write_tiff(tmp_path / "h.tif", radiance.astype(np.float16), compression="zlib")
    assert np.array_equal(read_image(tmp_path / "h.tif"), radiance.astype(np.float16).astype(np.float32))
    sixteen = (rng.random((5, 6, 3)) * 65535).astype(np.uint16)
    write_tiff(tmp_path / "i.tif", sixteen)
    image, info = read_image(tmp_path / "i.tif", return_info=True)
    assert not info.is_hdr
    assert np.allclose(image, sixteen * np.float32(255 / 65535), atol=1e-3)


def test_planar_tiff(tmp_path, rng):
    import tifffile

    planes = rng.random((3, 5, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "p.tif", planes, photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "p.tif"), np.moveaxis(planes, 0, -1))
    assert read_image_info(tmp_path / "p.tif").size == (5, 7)


# -------------------------------------------------------------------------------- dispatch


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope\.exr: file not found"):
        read_image(tmp_path / "nope.exr")


def test_unsupported_extension(tmp_path):
    (tmp_path / "a.bmp").write_bytes(b"BM" + bytes(60))
    with pytest.raises(ImageReadError, match=r"a\.bmp: unsupported extension '\.bmp'"):
        read_image(tmp_path / "a.bmp")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)


def test_content_wins_over_extension(tmp_path, rng):
    image = rng.random((4, 4, 3)).astype(np.float32)
    write_exr(tmp_path / "x.exr", image, half=False)
    os.replace(tmp_path / "x.exr", tmp_path / "really_exr.jpg")
    back, info = read_image(tmp_path / "really_exr.jpg", return_info=True)
    assert info.format == "exr" and np.array_equal(back, image)


def test_repair_nonfinite():
    values = np.array([[np.nan, 2.0], [np.inf, -np.inf]], np.float32)
    repaired, count = repair_nonfinite(values)
    assert count == 3
    assert repaired.tolist() == [[0.0, 2.0], [2.0, 0.0]]


def test_find_images(tmp_path):
    for name in ["b.exr", "a.jpg", "notes.txt", ".c.1234.tmp.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    found = find_images([tmp_path, str(tmp_path / "sub" / "*.png"), tmp_path / "missing.exr"])
    assert [p.name for p in found] == ["a.jpg", "b.exr", "d.png", "missing.exr"]


# ---------------------------------------------------------------------------------- writers


def test_write_png_round_trip_8_and_16_bit(tmp_path, rng):
    mask = (rng.random((7, 9)) > 0.5).astype(np.uint8) * 255
    write_png(tmp_path / "m.png", mask)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")), mask)
    prob = (rng.random((7, 9)) * 65535).astype(np.uint16)
    write_png(tmp_path / "p.png", prob)
    import imagecodecs

    assert np.array_equal(imagecodecs.png_decode((tmp_path / "p.png").read_bytes()), prob)


def test_writer_into_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImageWriteError, match="does not exist; create it"):
        write_png(tmp_path / "no" / "m.png", np.zeros((2, 2), np.uint8))


def test_prepare_output_folder_creates_parents_and_leaves_nothing(tmp_path):
    from skyseg.io import prepare_output_folder

    target = prepare_output_folder(tmp_path / "a" / "b")
    assert target == tmp_path / "a" / "b" and target.is_dir()
    assert list(target.iterdir()) == []  # the write probe is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageWriteError, match=r"file.x: cannot create the output folder .*"
                                              "choose a writable --out"):
        prepare_output_folder(tmp_path / "file" / "x")


def test_writer_into_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    # chmod does not stop root (CI may run as root), so refuse the rename itself.
    from skyseg.io import write

    def refuse(source, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(write.os, "replace", refuse)
    with pytest.raises(ImageWriteError, match=r"m\.png: cannot write here \(Permission denied\)"):
        write_png(tmp_path / "m.png", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "m.png"
    write_png(target, np.full((2, 2), 7, np.uint8))
    before = target.read_bytes()
    import imagecodecs

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(imagecodecs, "png_encode", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_png(target, np.zeros((2, 2), np.uint8))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_interrupted_exr_write_leaves_no_half_file(tmp_path, monkeypatch):
    from skyseg.io import exr

    def dying(path, image, **kwargs):
        Path(path).write_bytes(b"\x76\x2f\x31\x01half")  # the encoder got half way
        raise KeyboardInterrupt

    monkeypatch.setattr(exr, "encode_exr", dying)
    with pytest.raises(KeyboardInterrupt):
        write_exr(tmp_path / "sky.exr", np.ones((2, 2, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_write_jpeg_rejects_float(tmp_path):
    with pytest.raises(ImageWriteError, match="expected uint8 pixels, got float32"):
        write_jpeg(tmp_path / "a.jpg", np.zeros((2, 2, 3), np.float32))


# --------------------------------------------------------------------------- giant inputs

GIANT = 30000  # 30000 x 30000 = 900 MP: 10.8 GB as float32 RGB


def _giant_png(path: Path) -> Path:
    ihdr = struct.pack(">IIBBBBB", GIANT, GIANT, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return path


def _giant_jpeg(path: Path) -> Path:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, GIANT, GIANT, 3) + bytes(9)
    path.write_bytes(b"\xff\xd8" + app0 + b"\xff\xff" + sof0 + b"\xff\xd9")
    return path


def _giant_tiff(path: Path) -> Path:
    # Little-endian TIFF, one IFD describing a 30000x30000 RGB strip that is not there.
    entries = [(256, 4, 1, GIANT), (257, 4, 1, GIANT), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 2), (273, 4, 1, 8), (277, 3, 1, 3), (278, 4, 1, GIANT),
               (279, 4, 1, GIANT * GIANT * 3)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0))
    return path


def _giant_hdr(path: Path) -> Path:
    path.write_bytes(f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {GIANT} +X {GIANT}\n".encode())
    return path


def _giant_exr(path: Path) -> Path:
    # A 1x1 data window inside a 30000x30000 display window: read_image would
    # return the display window, 10.8 GB of zeros.
    pixel = np.ones((1, 1), np.float16)
    return _exr(path, {"R": pixel, "G": pixel, "B": pixel},
                displayWindow=(np.array([0, 0], np.int32), np.array([GIANT - 1] * 2, np.int32)),
                dataWindow=(np.array([0, 0], np.int32), np.array([0, 0], np.int32)))


GIANT_MAKERS = {"png": _giant_png, "jpg": _giant_jpeg, "tif": _giant_tiff, "hdr": _giant_hdr,
                "exr": _giant_exr}


def _refuse_decoding(monkeypatch) -> None:
    """Make every pixel decoder fail the test if it is called."""
    import skyseg.io.exr
    import skyseg.io.ldr
    import skyseg.io.radiance

    def refuse(*args, **kwargs):
        raise AssertionError("a pixel decoder was called")

    for module, name in ((skyseg.io.exr, "read_exr"), (skyseg.io.radiance, "read_hdr"),
                         (skyseg.io.ldr, "read_png"), (skyseg.io.ldr, "read_pil"),
                         (skyseg.io.ldr, "read_tiff")):
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture
def no_decoding(monkeypatch):
    _refuse_decoding(monkeypatch)


@pytest.mark.parametrize("suffix", sorted(GIANT_MAKERS))
def test_header_claiming_too_many_pixels_is_refused_without_decoding(tmp_path, suffix,
                                                                     no_decoding):
    from skyseg.errors import ImageTooLargeError

    path = GIANT_MAKERS[suffix](tmp_path / f"giant.{suffix}")
    assert path.stat().st_size < 2000
    assert read_image_info(path).size == (GIANT, GIANT)
    with pytest.raises(ImageTooLargeError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, ImageReadError)
    assert message.startswith(f"{path}: 30000x30000 pixels (900 MP) is more than --max-pixels "
                              "300000000 (300 MP)")


@pytest.mark.parametrize("suffix", ["png", "jpg", "tif", "hdr", "exr"])
def test_max_pixels_limit_on_real_files(tmp_path, rng, suffix, monkeypatch):
    from skyseg.errors import ImageTooLargeError

    path = tmp_path / f"small.{suffix}"
    pixels = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    {"png": lambda: write_png(path, pixels), "jpg": lambda: write_jpeg(path, pixels),
     "tif": lambda: write_tiff(path, pixels),
     "hdr": lambda: write_hdr(path, pixels.astype(np.float32)),
     "exr": lambda: write_exr(path, pixels.astype(np.float32))}[suffix]()
    assert read_image(path, max_pixels=1200).shape == (30, 40, 3)  # exactly the limit
    assert read_image(path, max_pixels=None).shape == (30, 40, 3)
    _refuse_decoding(monkeypatch)
    with pytest.raises(ImageTooLargeError, match="40x30 pixels .* --max-pixels 1199"):
        read_image(path, max_pixels=1199)


def test_max_pixels_must_be_a_positive_whole_number():
    from skyseg.errors import ConfigError
    from skyseg.io import check_max_pixels

    assert check_max_pixels(None) is None and check_max_pixels(3e8) == 300_000_000
    for bad in (0, -1, 2.5, float("nan"), "many", True):
        with pytest.raises(ConfigError, match="--max-pixels must be a positive whole number"):
            check_max_pixels(bad)

"""From pixels as read to what the network sees, and back.

HDR: linear radiance is sanitised (NaN -> 0, +Inf -> the largest finite
value, negatives -> 0: the log of a negative is NaN), optionally brought to
the image's own exposure (``exposure_key``: the whole image is multiplied so
that its log-average luminance is the key, :meth:`Preprocessing.image_gain`;
a tile or a band of rows gets the whole image's gain), optionally clipped at
a radiance level (the sun can be 10^5 times the sky), then log transformed
with the original pipeline's parameters::

    x' = x * input_mul + log_epsilon
    y  = log(x')                               (log_split_around1 False)
    y  = log(x') if x' < 1 else x'^(1/log_pow) - 1   (log_split_around1 True)
    out = (y + output_bias) * output_scale

:func:`inverse_log_transform` undoes it exactly. LDR: 0..255 values / 255.

A :class:`Preprocessing` holds the parameters; the trainer saves it beside
the model (``preprocessing.json``) and predict applies the very same one.

A :class:`Preprocessing` may also shrink images (``scale`` < 1) before the
pixel transform: build-dataset cuts patches from the shrunk image and predict
shrinks the input the same way and brings the probability back to full size
(:func:`upsample_linear`). A U-Net trained at a quarter of an 8K panorama's
size sees the whole sky-to-ground context in one patch and predicts 16 times
faster.

The tonemapper (auto exposure, highlight roll-off, sRGB) makes the previews
people label and the overlays they check.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyseg.errors import ConfigError

__all__ = [
    "Preprocessing",
    "auto_exposure",
    "log_transform",
    "inverse_log_transform",
    "LOG_DEFAULTS",
    "sanitize_radiance",
    "clip_radiance",
    "normalize_ldr",
    "denormalize_ldr",
    "srgb_encode",
    "srgb_decode",
    "luminance",
    "tonemap",
    "radiance_to_ldr",
    "ldr_to_radiance",
    "scaled_size",
    "rescale_image",
    "rescale_mask",
    "upsample_linear",
]

logger = logging.getLogger("skyseg")

#: Rows processed at a time by the element-wise transforms: keeps the
#: temporaries of an 8192-wide image to a few tens of MB.
_CHUNK_ROWS = 256

#: The log transform's parameters and their defaults (the original pipeline's values).
LOG_DEFAULTS = dict(
    input_mul=1.0,
    log_epsilon=1e-3,
    log_split_around1=False,
    log_pow=7.5,
    output_bias=2.5,
    output_scale=1 / 2.2 / 2,
)


def _log_parameters(parameters: dict, *, caller: str) -> tuple:
    """The log transform's parameters, defaults filled in and checked, in
    :data:`LOG_DEFAULTS` order."""
    unknown = sorted(set(parameters) - set(LOG_DEFAULTS))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments {unknown}")
    values = {**LOG_DEFAULTS, **parameters}
    _check_log_parameters(values["input_mul"], values["log_epsilon"], values["log_pow"],
                          values["output_scale"])
    return tuple(values.values())


def _check_log_parameters(input_mul, log_epsilon, log_pow, output_scale) -> None:
    if not (np.isfinite(input_mul) and input_mul > 0):
        raise ConfigError(f"input_mul must be a positive number, got {input_mul!r}")
    if not (np.isfinite(log_epsilon) and log_epsilon > 0):
        raise ConfigError(
            f"log_epsilon must be positive (the log of 0 is -inf), got {log_epsilon!r}; "
            "the original pipeline used 1e-3"
        )
    if not (np.isfinite(log_pow) and log_pow > 0):
        raise ConfigError(f"log_pow must be positive, got {log_pow!r}")
    if not (np.isfinite(output_scale) and output_scale != 0):
        raise ConfigError(f"output_scale must be a non-zero number, got {output_scale!r}")


def _chunked(function, array: np.ndarray) -> np.ndarray:
    """Apply an element-wise ``function`` to ``array`` in row chunks, into float32."""
    array = np.asarray(array)
    out = np.empty(array.shape, dtype=np.float32)
    if array.ndim == 0 or array.shape[0] <= _CHUNK_ROWS:
        out[...] = function(array.astype(np.float32, copy=False))
        return out
    for start in range(0, array.shape[0], _CHUNK_ROWS):
        block = array[start:start + _CHUNK_ROWS].astype(np.float32, copy=False)
        out[start:start + _CHUNK_ROWS] = function(block)
    return out


def log_transform(radiance: np.ndarray, **parameters) -> np.ndarray:
    """Map non-negative linear radiance to the network's input range.

    Args:
        radiance: float array, any shape, values >= 0 (sanitise first).
        **parameters: any of :data:`LOG_DEFAULTS` (the others keep their defaults):
        input_mul: multiplier before the transform (2**8 shifts 8 EV up).
        log_epsilon: added before the log so that 0 maps to a finite value.
        log_split_around1: log below 1, ``x**(1/log_pow) - 1`` above.
        log_pow: the power of the compression above 1.
        output_bias: added after the log.
        output_scale: multiplied last.

    Returns:
        float32 array of the same shape.

    Raises:
        TypeError: a keyword that is not one of these.
        ConfigError: a parameter out of its range.

    Example:
        >>> round(float(log_transform(np.float32(1.0) - 1e-3)), 6)  # (log 1 + 2.5) / 4.4
        0.568182
    """
    input_mul, log_epsilon, log_split_around1, log_pow, output_bias, output_scale = (
        _log_parameters(parameters, caller="log_transform"))
    mul, eps = np.float32(input_mul), np.float32(log_epsilon)
    bias, scale, inv_pow = np.float32(output_bias), np.float32(output_scale), 1.0 / log_pow

    def forward(block: np.ndarray) -> np.ndarray:
        x = block * mul if input_mul != 1.0 else block.copy()
        x += eps
        if log_split_around1:
            below = x < 1.0
            y = np.empty_like(x)
            y[below] = np.log(x[below])
            y[~below] = np.power(x[~below], np.float32(inv_pow)) - np.float32(1.0)
        else:
            y = np.log(x)
        y += bias
        y *= scale
        return y

    return _chunked(forward, radiance)


def inverse_log_transform(values: np.ndarray, **parameters) -> np.ndarray:
    """Exact inverse of :func:`log_transform` (the same keyword ``parameters``).

    Example:
        >>> x = np.array([0.0, 1e-3, 1.0, 1e5], np.float32)
        >>> bool(np.allclose(inverse_log_transform(log_transform(x)), x, rtol=1e-5, atol=1e-7))
        True
    """
    input_mul, log_epsilon, log_split_around1, log_pow, output_bias, output_scale = (
        _log_parameters(parameters, caller="inverse_log_transform"))
    mul, eps = np.float32(input_mul), np.float32(log_epsilon)
    bias, scale = np.float32(output_bias), np.float32(output_scale)

    def backward(block: np.ndarray) -> np.ndarray:
        y = block / scale
        y -= bias
        if log_split_around1:
            below = y < 0.0
            x = np.empty_like(y)
            x[below] = np.exp(y[below])
            x[~below] = np.power(y[~below] + np.float32(1.0), np.float32(log_pow))
        else:
            x = np.exp(y)
        x -= eps
        if input_mul != 1.0:
            x /= mul
        return x

    return _chunked(backward, values)


def sanitize_radiance(image: np.ndarray, *, copy: bool = True) -> tuple[np.ndarray, dict]:
    """Make radiance safe for the log: finite and non-negative.

    NaN -> 0, +Inf -> the largest finite value, -Inf and negatives -> 0.

    Args:
        image: float array (H, W, 3) of linear radiance.
        copy: work on a copy (False repairs ``image`` in place).

    Returns:
        ``(image, counts)`` with float32 image and counts
        ``{"nan", "posinf", "neginf", "negative"}`` of samples changed.

    Example:
        >>> clean, counts = sanitize_radiance(np.array([np.nan, -1, np.inf, 2], np.float32))
        >>> clean.tolist(), counts["nan"], counts["negative"]
        ([0.0, 0.0, 2.0, 2.0], 1, 1)
    """
    image = np.array(image, dtype=np.float32, copy=copy)
    counts = {"nan": 0, "posinf": 0, "neginf": 0, "negative": 0}
    finite = np.isfinite(image)
    if not finite.all():
        nan = np.isnan(image)
        posinf = np.isposinf(image)
        neginf = np.isneginf(image)
        counts.update(nan=int(nan.sum()), posinf=int(posinf.sum()), neginf=int(neginf.sum()))
        largest = max(float(image[finite].max()), 0.0) if finite.any() else 0.0
        image[nan | neginf] = 0.0
        image[posinf] = largest
    negative = image < 0
    counts["negative"] = int(negative.sum())
    if counts["negative"]:
        image[negative] = 0.0
    if any(counts.values()):
        logger.debug("sanitised radiance: %s", counts)
    return image, counts


def clip_radiance(image: np.ndarray, max_value: float | None) -> np.ndarray:
    """Clip radiance above ``max_value`` (None: unchanged). Works in place on float32.

    Example:
        >>> clip_radiance(np.array([1.0, 5e4], np.float32), 100.0).tolist()
        [1.0, 100.0]
    """
    if max_value is None:
        return image
    if not (np.isfinite(max_value) and max_value > 0):
        raise ConfigError(f"clip_max must be a positive radiance or None, got {max_value!r}")
    return np.minimum(image, np.float32(max_value), out=image)


def normalize_ldr(image: np.ndarray) -> np.ndarray:
    """0..255 display values -> float32 0..1 (values outside are clipped)."""
    out = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return np.clip(out, 0.0, 1.0, out=out)


def denormalize_ldr(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize_ldr` on 0..1: float32 0..255."""
    return np.asarray(values, dtype=np.float32) * np.float32(255.0)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear 0..1 -> sRGB-encoded 0..1 (IEC 61966-2-1), float32."""
    x = np.clip(np.asarray(linear, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(
        np.float32
    )


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded 0..1 -> linear 0..1 (exact inverse of :func:`srgb_encode`)."""
    x = np.clip(np.asarray(encoded, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4)).astype(
        np.float32
    )


def luminance(image: np.ndarray, *, dtype=np.float32) -> np.ndarray:
    """Rec.709 luminance of (..., 3) linear RGB, computed in ``dtype`` (float64: exact colours)."""
    image = np.asarray(image, dtype=dtype)
    return image[..., 0] * 0.2126 + image[..., 1] * 0.7152 + image[..., 2] * 0.0722


def auto_exposure(image: np.ndarray, *, key: float = 0.18) -> float:
    """Multiplier that maps the log-average luminance to ``key`` (Reinhard)."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 262144)))
    sample = luminance(image[::step, ::step])
    sample = sample[np.isfinite(sample)]
    sample = sample[sample > 0]
    if sample.size == 0:
        return 1.0
    log_average = float(np.exp(np.mean(np.log(sample + 1e-6))))
    return key / max(log_average, 1e-9)


def tonemap(image: np.ndarray, *, is_hdr: bool = True, exposure_ev: float = 0.0,
            exposure: float | None = None) -> np.ndarray:
    """Display version of an image: uint8 (H, W, 3) sRGB.

    HDR: auto exposure (log-average luminance to 0.18, plus ``exposure_ev``
    stops, or a fixed ``exposure`` multiplier), an extended Reinhard roll-off
    whose white point is the bright end of the image (so the sky keeps its
    clouds and the sun saturates), then the sRGB curve. LDR (0..255): rounded.

    Example:
        >>> tonemap(np.full((2, 2, 3), 0.18, np.float32)).shape
        (2, 2, 3)
    """
    image = np.asarray(image, dtype=np.float32)
    if not is_hdr:
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
    scale = (exposure if exposure is not None else auto_exposure(image)) * 2.0 ** exposure_ev
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 262144)))
    sample = luminance(image[::step, ::step]) * scale
    sample = sample[np.isfinite(sample)]
    white = float(np.percentile(sample, 99.5)) if sample.size else 1.0
    white_sq = np.float32(min(max(white, 1.0), 1e18) ** 2)
    out = np.empty(image.shape[:2] + (3,), dtype=np.uint8)
    for start in range(0, image.shape[0], _CHUNK_ROWS):
        block = np.nan_to_num(image[start:start + _CHUNK_ROWS], nan=0.0, posinf=0.0, neginf=0.0)
        block = np.maximum(block * np.float32(scale), 0.0)
        mapped = block * (1.0 + block / white_sq) / (1.0 + block)
        out[start:start + _CHUNK_ROWS] = np.rint(srgb_encode(mapped) * 255.0).astype(np.uint8)
    return out


def radiance_to_ldr(image: np.ndarray) -> np.ndarray:
    """HDR radiance -> float32 0..255 display values (tonemapped), for an LDR model."""
    return tonemap(image, is_hdr=True).astype(np.float32)


def ldr_to_radiance(image: np.ndarray) -> np.ndarray:
    """0..255 sRGB display values -> float32 linear values 0..1, for an HDR model."""
    return srgb_decode(np.asarray(image, dtype=np.float32) / 255.0)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of an image resized by ``scale``: rounded, at least 1.

    Example:
        >>> scaled_size(4096, 8192, 0.25)
        (1024, 2048)
    """
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescale_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float32 (H, W, C) to ``size`` = (h, w) by area averaging (shrinking).

    Area averaging of linear radiance is what a lower-resolution camera would
    record, so the sun keeps its energy; enlarging uses bilinear interpolation.
    """
    import cv2

    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height <= image.shape[0] and width <= image.shape[1]
    out = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (width, height),
                     interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out.reshape(height, width, *image.shape[2:])


def rescale_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 (H, W) mask of 0/1/255 (ignore) to ``size`` by area vote.

    A pixel of the result is 255 when mostly ignored pixels cover it, else 1
    when sky covers at least half of its labelled part, else 0.
    """
    import cv2

    height, width = size
    if mask.shape == (height, width):
        return mask
    interpolation = cv2.INTER_AREA
    ignored = cv2.resize((mask == 255).astype(np.float32), (width, height),
                         interpolation=interpolation)
    sky = cv2.resize((mask == 1).astype(np.float32), (width, height),
                     interpolation=interpolation)
    out = (sky >= 0.5 * (1.0 - ignored) - 1e-6).astype(np.uint8)
    out[ignored > 0.5] = 255
    return out


def bilinear_positions(size: int, source: int, circular: bool):
    """Bilinear sampling of ``source`` samples at ``size`` outputs, pixel centres aligned.

    Returns:
        ``(low, high, weight)``: int index arrays and float32 weights of
        ``high`` (``size`` each); ``circular`` wraps around (panorama
        columns), otherwise the border sample repeats.

    Example:
        >>> low, high, weight = bilinear_positions(4, 2, False)
        >>> low.tolist(), high.tolist(), weight.tolist()
        ([0, 0, 0, 1], [0, 1, 1, 1], [0.0, 0.25, 0.75, 0.0])
    """
    centre = (np.arange(size, dtype=np.float64) + 0.5) * source / size - 0.5
    low = np.floor(centre)
    weight = (centre - low).astype(np.float32)
    low = low.astype(np.intp)
    high = low + 1
    if circular:
        return low % source, high % source, weight
    weight[low < 0] = 0.0
    weight[high > source - 1] = 0.0
    return np.clip(low, 0, source - 1), np.clip(high, 0, source - 1), weight


def upsample_linear(values: np.ndarray, height: int, width: int, *,
                    wrap: bool = False) -> np.ndarray:
    """Bilinear resize of float32 (h, w) to (height, width), pixel centres aligned.

    With ``wrap`` the columns form a circle (an equirectangular panorama), so
    the result has no seam at x = 0. Works in row blocks: an 8K result needs
    no full-size temporaries besides itself.

    Example:
        >>> upsample_linear(np.array([[0.0, 1.0]], np.float32), 1, 4).tolist()
        [[0.0, 0.25, 0.75, 1.0]]
    """
    values = np.asarray(values, dtype=np.float32)
    small_h, small_w = values.shape
    positions = bilinear_positions
    row_low, row_high, row_weight = positions(height, small_h, False)
    col_low, col_high, col_weight = positions(width, small_w, wrap)
    columns = (values[:, col_low] * (1.0 - col_weight) + values[:, col_high] * col_weight)
    out = np.empty((height, width), dtype=np.float32)
    for start in range(0, height, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, height)
        weight = row_weight[start:stop, None]
        out[start:stop] = (columns[row_low[start:stop]] * (1.0 - weight)
                           + columns[row_high[start:stop]] * weight)
    return out


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing a model was trained with; predict applies the same.

    Attributes:
        mode: ``"hdr"`` (sanitise, clip, log transform) or ``"ldr"`` (/255).
        input_mul, log_epsilon, log_split_around1, log_pow, output_bias,
            output_scale: the log transform (see :func:`log_transform`).
        clip_max: radiance above this is clipped before the transform
            (None: no clipping).
        scale: images are resized by this factor (0 < scale <= 1, area
            averaging of radiance) before the transform, by build-dataset and
            by predict alike; 1 keeps the full resolution.
        exposure_key: HDR only: each (shrunk) image is multiplied so that its
            log-average luminance is this (:func:`auto_exposure`) before the
            clip and the transform, so the network sees radiance relative to
            the image's own exposure (:meth:`image_gain`); None: absolute
            radiance (runs trained before this option).

    Example:
        >>> prep = Preprocessing(mode="hdr", clip_max=1000.0)
        >>> x = prep.apply(np.full((2, 2, 3), 2000.0, np.float32))
        >>> float(prep.invert(x)[0, 0, 0])  # doctest: +ELLIPSIS
        1000.0...
    """

    mode: str = "hdr"
    input_mul: float = LOG_DEFAULTS["input_mul"]
    log_epsilon: float = LOG_DEFAULTS["log_epsilon"]
    log_split_around1: bool = LOG_DEFAULTS["log_split_around1"]
    log_pow: float = LOG_DEFAULTS["log_pow"]
    output_bias: float = LOG_DEFAULTS["output_bias"]
    output_scale: float = LOG_DEFAULTS["output_scale"]
    clip_max: float | None = None
    scale: float = 1.0
    exposure_key: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("hdr", "ldr"):
            raise ConfigError(f"preprocessing mode must be 'hdr' or 'ldr', got {self.mode!r}")
        _check_log_parameters(self.input_mul, self.log_epsilon, self.log_pow, self.output_scale)
        if not (isinstance(self.scale, (int, float)) and 0.0 < float(self.scale) <= 1.0):
            raise ConfigError(
                f"scale must be in (0, 1] (a fraction of the full resolution), got {self.scale!r}"
            )
        if self.clip_max is not None and not (np.isfinite(self.clip_max) and self.clip_max > 0):
            raise ConfigError(
                f"clip_max must be a positive radiance or None, got {self.clip_max!r}"
            )

        if self.exposure_key is not None and not (
                self.mode == "hdr" and np.isfinite(self.exposure_key) and self.exposure_key > 0):
            raise ConfigError(
                f"exposure_key must be a positive luminance for HDR, or None, got "
                f"{self.exposure_key!r} (mode {self.mode})"
            )

    @property
    def is_hdr(self) -> bool:
        return self.mode == "hdr"

    def image_gain(self, image: np.ndarray) -> float:
        """The multiplier :meth:`apply` needs for this whole (shrunk) image: 1.0 unless
        ``exposure_key`` is set (then :func:`auto_exposure` of the image)."""
        if self.exposure_key is None or self.mode != "hdr":
            return 1.0
        return auto_exposure(image, key=self.exposure_key)

    def log_parameters(self) -> dict:
        """The keyword arguments of :func:`log_transform`."""
        return {key: getattr(self, key) for key in LOG_DEFAULTS}

    def apply(self, image: np.ndarray, gain: float = 1.0) -> np.ndarray:
        """Network input for an image as read (radiance or 0..255): float32, same shape.

        ``gain``: the whole image's :meth:`image_gain` when ``image`` is a part
        of it (a tile, a band of rows).
        """
        return self.apply_with_counts(image, gain)[0]

    def apply_with_counts(self, image: np.ndarray, gain: float = 1.0) -> tuple[np.ndarray, dict]:
        """Like :meth:`apply`, also returning the sanitiser's counts."""
        if self.mode == "ldr":
            clean, counts = sanitize_radiance(image)
            return normalize_ldr(clean), counts
        clean, counts = sanitize_radiance(image)
        if gain != 1.0:
            with np.errstate(over="ignore"):
                clean *= np.float32(gain)
            if gain > 1.0:  # a repaired +Inf (the largest finite value) stays finite
                np.minimum(clean, np.finfo(np.float32).max, out=clean)
        clip_radiance(clean, self.clip_max)
        return log_transform(clean, **self.log_parameters()), counts

    def invert(self, values: np.ndarray) -> np.ndarray:
        """Back from network input to radiance (HDR) or 0..255 (LDR)."""
        if self.mode == "ldr":
            return denormalize_ldr(values)
        return inverse_log_transform(values, **self.log_parameters())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "preprocessing") -> Preprocessing:
        """Build from a dict, refusing unknown keys (a typo must not pass silently)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of preprocessing parameters")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown preprocessing parameter(s) {unknown}; known: {sorted(known)}"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically)."""
        from skyseg.io import write_text

        return write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Preprocessing:
        """Read a JSON file written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: preprocessing file not found") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{path}: not valid JSON ({exc}); re-run training to rewrite it"
            ) from exc
        return cls.from_dict(data, source=str(path))

"""Pictures to check masks by eye: tinted overlays and error maps.

Plain numpy on uint8 display images (see :func:`skyseg.image.preprocess.tonemap`).
Masks are ``(H, W)`` arrays where non-zero means sky (0/1 or 0/255) unless a
function says otherwise.
"""

from __future__ import annotations

import numpy as np

from skyseg.errors import ConfigError

__all__ = ["SKY_COLOR", "FALSE_POSITIVE_COLOR", "FALSE_NEGATIVE_COLOR", "IGNORE_COLOR",
           "contact_sheet", "tint", "error_overlay", "mask_boundary", "resize_uint8", "resize_mask"]

#: Sky tint: magenta stands out against blue sky, clouds and ground alike.
SKY_COLOR = (255, 0, 255)
#: Predicted sky that is not sky.
FALSE_POSITIVE_COLOR = (255, 40, 0)
#: Sky that was missed.
FALSE_NEGATIVE_COLOR = (0, 160, 255)
#: Pixels the truth marks as "ignore" (255).
IGNORE_COLOR = (128, 128, 128)


def _check(image: np.ndarray, mask: np.ndarray, name: str = "mask") -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"overlay image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ConfigError(
            f"{name} of shape {mask.shape} does not match the image {image.shape[:2]}; "
            "resize one of them"
        )


def _blend(image: np.ndarray, where: np.ndarray, color, opacity: float) -> None:
    if not where.any():
        return
    pixels = image[where].astype(np.float32)
    pixels = pixels * (1.0 - opacity) + np.asarray(color, np.float32) * opacity
    image[where] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that touch a non-mask pixel (4-neighbourhood), as bool."""
    mask = np.asarray(mask).astype(bool)
    edge = np.zeros_like(mask)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[1:] != mask[:-1]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, 1:] != mask[:, :-1]
    return edge & mask


def tint(image: np.ndarray, mask: np.ndarray, *, color=SKY_COLOR, opacity: float = 0.5,
         outline: bool = True) -> np.ndarray:
    """The image with the mask's pixels tinted (and outlined) in ``color``.

    Args:
        image: uint8 (H, W, 3) display image.
        mask: (H, W), non-zero = tinted.
        color: RGB of the tint.
        opacity: 0 (invisible) .. 1 (solid).
        outline: draw the mask's border solid, so thin gaps stay visible.

    Returns:
        a new uint8 (H, W, 3) array.

    Example:
        >>> out = tint(np.zeros((2, 2, 3), np.uint8), np.array([[1, 0], [0, 0]]), outline=False)
        >>> out[0, 0].tolist(), out[1, 1].tolist()
        ([128, 0, 128], [0, 0, 0])
    """
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"opacity must be in 0..1, got {opacity}")
    mask = np.asarray(mask)
    _check(image, mask)
    out = image.copy()
    sky = mask.astype(bool)
    _blend(out, sky, color, opacity)
    if outline:
        out[mask_boundary(sky)] = color
    return out


def error_overlay(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray, *,
                  opacity: float = 0.6) -> np.ndarray:
    """Show false positives and false negatives of a predicted mask in two colours.

    Args:
        image: uint8 (H, W, 3) display image.
        prediction: (H, W), non-zero = predicted sky.
        truth: (H, W) with 0 = not sky, 1 = sky, 255 = ignore.

    Returns:
        uint8 (H, W, 3): false positives in :data:`FALSE_POSITIVE_COLOR`,
        false negatives in :data:`FALSE_NEGATIVE_COLOR`, ignored pixels grey,
        correct pixels untouched.
    """
    prediction = np.asarray(prediction).astype(bool)
    truth = np.asarray(truth)
    _check(image, prediction, "prediction")
    _check(image, truth, "truth")
    valid = truth != 255
    sky = (truth == 1) & valid
    out = image.copy()
    _blend(out, prediction & ~sky & valid, FALSE_POSITIVE_COLOR, opacity)
    _blend(out, ~prediction & sky, FALSE_NEGATIVE_COLOR, opacity)
    _blend(out, ~valid, IGNORE_COLOR, opacity)
    return out


def resize_uint8(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """Shrink uint8 (H, W[, 3]) so the long side is at most ``max_size`` (Lanczos).

    Images already small enough are returned unchanged.
    """
    if max_size is None:
        return image
    height, width = image.shape[:2]
    scale = max_size / max(height, width)
    if scale >= 1:
        return image
    from PIL import Image

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS, reducing_gap=3.0))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer (H, W) mask to (height, width)."""
    mask = np.asarray(mask)
    rows = np.minimum((np.arange(height) + 0.5) * mask.shape[0] / height, mask.shape[0] - 1)
    cols = np.minimum((np.arange(width) + 0.5) * mask.shape[1] / width, mask.shape[1] - 1)
    return mask[rows.astype(np.intp)][:, cols.astype(np.intp)]


def contact_sheet(images: list[np.ndarray], *, columns: int = 2) -> np.ndarray:
    """uint8 (H, W, 3) images side by side, ``columns`` a row, zero-padded to one size.

    Example:
        >>> contact_sheet([np.ones((2, 3, 3), np.uint8)] * 3).shape
        (4, 6, 3)
    """
    width = max(image.shape[1] for image in images)
    padded = [np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0))) for image in images]
    while len(padded) % columns:
        padded.append(np.zeros_like(padded[0]))
    rows = [np.concatenate(padded[i:i + columns], axis=1) for i in range(0, len(padded), columns)]
    height = max(row.shape[0] for row in rows)
    rows = [np.pad(row, ((0, height - row.shape[0]), (0, 0), (0, 0))) for row in rows]
    return np.concatenate(rows, axis=0)

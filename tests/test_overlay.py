"""Overlays: tint, error colours, boundaries, resizing."""

from __future__ import annotations

import numpy as np
import pytest

from skyseg.errors import ConfigError
from skyseg.image.overlay import (
    FALSE_NEGATIVE_COLOR,
    FALSE_POSITIVE_COLOR,
    SKY_COLOR,
    error_overlay,
    mask_boundary,
    resize_mask,
    resize_uint8,
    tint,
)


def test_tint_half_opacity_exact():
    image = np.full((3, 3, 3), 100, np.uint8)
    mask = np.zeros((3, 3), np.uint8)
    mask[0, 0] = 1
    out = tint(image, mask, outline=False)
    expected = np.rint(np.array([100, 100, 100]) * 0.5 + np.array(SKY_COLOR) * 0.5)
    assert out[0, 0].tolist() == expected.tolist()
    assert (out[1:, :] == 100).all()
    assert (image == 100).all()  # input untouched


def test_tint_outline_marks_the_border():
    mask = np.zeros((5, 5), np.uint8)
    mask[1:4, 1:4] = 255
    out = tint(np.zeros((5, 5, 3), np.uint8), mask)
    assert out[1, 1].tolist() == list(SKY_COLOR)
    assert out[2, 2].tolist() == [128, 0, 128]  # interior: blended, not solid


def test_mask_boundary():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    edge = mask_boundary(mask)
    assert edge.sum() == 8 and not edge[2, 2]


def test_error_overlay_colours():
    image = np.zeros((1, 4, 3), np.uint8)
    prediction = np.array([[1, 1, 0, 0]])
    truth = np.array([[1, 0, 1, 255]], np.uint8)
    out = error_overlay(image, prediction, truth, opacity=1.0)
    assert out[0, 0].tolist() == [0, 0, 0]  # true positive: untouched
    assert out[0, 1].tolist() == list(FALSE_POSITIVE_COLOR)
    assert out[0, 2].tolist() == list(FALSE_NEGATIVE_COLOR)
    assert out[0, 3].tolist() == [128, 128, 128]  # ignored


@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.uint8), np.zeros((3, 3), np.float32)])
def test_shape_and_dtype_errors(bad):
    image = np.zeros((3, 3, 3), np.uint8)
    if bad.dtype == np.float32:
        with pytest.raises(ConfigError, match="overlay image must be uint8"):
            tint(bad[..., None].repeat(3, 2), np.zeros((3, 3)))
    else:
        with pytest.raises(ConfigError, match=r"mask of shape \(2, 3\) does not match"):
            tint(image, bad)


def test_resize_uint8_keeps_aspect():
    out = resize_uint8(np.zeros((400, 1000, 3), np.uint8), 100)
    assert out.shape == (40, 100, 3)
    small = np.zeros((10, 20, 3), np.uint8)
    assert resize_uint8(small, 100) is small


def test_resize_mask_nearest():
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    assert resize_mask(mask, 4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]


def test_docstring_examples():
    import doctest

    from skyseg.image import overlay

    assert doctest.testmod(overlay).failed == 0

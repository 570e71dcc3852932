"""The fracture overlay picture: the bundle's ``overlay.png`` and the Deploy app's Secondary Capture."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.reporting.plots import (  # noqa: E402
    BANNER_BACKGROUND,
    banner_height,
    fracture_overlay,
    render_heatmap_overlay,
    save_fracture_overlay,
)

ROWS, COLS = 120, 160


def radiograph() -> np.ndarray:
    return np.linspace(0, 1, ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS)


def test_overlay_keeps_grey_where_the_heatmap_is_zero_and_burns_in_the_banner():
    image = radiograph()
    heatmap = np.zeros((ROWS, COLS), np.float32)
    heatmap[80:100, 100:120] = 1.0
    picture = render_heatmap_overlay(image, heatmap, caption_lines=["NOT FOR DIAGNOSTIC USE", "probability 0.9"])
    assert picture.shape == (ROWS, COLS, 3) and picture.dtype == np.uint8

    band = banner_height(ROWS)
    grey = np.rint(image * 255).astype(np.uint8)
    untouched = picture[band:].copy()
    np.testing.assert_array_equal(untouched[:, :100, 0], grey[band:, :100])  # no heatmap: exact grey
    np.testing.assert_array_equal(untouched[:, :100, 0], untouched[:, :100, 2])
    spot = picture[85:95, 105:115].astype(int)
    assert (np.abs(spot[..., 0] - spot[..., 2]) > 40).all()  # coloured where the heatmap is 1
    top = picture[:band].reshape(-1, 3)
    is_background = (top == BANNER_BACKGROUND).all(axis=1)
    assert is_background.mean() > 0.5 and not is_background.all()  # a dark band with text in it
    assert not (picture[:band, :, 0] == grey[:band]).all()
    no_banner = render_heatmap_overlay(image, np.zeros_like(heatmap))
    np.testing.assert_array_equal(no_banner[..., 1], grey)  # no caption, no heatmap: the radiograph itself


def test_overlay_rejects_a_heatmap_on_another_grid():
    with pytest.raises(ValueError, match="same shape"):
        render_heatmap_overlay(np.zeros((10, 12)), np.zeros((12, 10)))


def test_fracture_overlay_circles_the_result_peaks_and_is_what_the_png_holds(tmp_path):
    image = np.full((ROWS, COLS), 0.2, np.float32)
    result = {"fracture_probability": 0.8, "threshold": 0.5, "positive": True, "peaks": [{"x": 40.0, "y": 80.0}]}
    picture = fracture_overlay(image[None], np.zeros((1, ROWS, COLS), np.float32), result)
    ring = picture[80 - 6 : 80 + 7, 40 - 6 : 40 + 7]
    assert (ring == 255).all(axis=-1).any()  # a white circle around the peak
    assert (picture[80, 40] == np.rint(0.2 * 255)).all()  # its centre is left as it was
    assert not (picture[100:, 100:] == 255).any()  # nothing far from it
    path = save_fracture_overlay(image, np.zeros((ROWS, COLS), np.float32), result, tmp_path / "overlay.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), picture)

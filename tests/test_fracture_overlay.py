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


# ------------------------------------------------------------------------ drawn without matplotlib, at a bounded size
def matplotlib_blend(image: np.ndarray, heatmap: np.ndarray, max_alpha: float = 0.6) -> np.ndarray:
    """The overlay's pixels (no peaks, no banner) as the bundle drew them through matplotlib's ``jet`` before issue 20:
    the reference the numpy/PIL drawing must reproduce exactly at full size."""
    from matplotlib import colormaps

    grey = np.clip(image, 0.0, 1.0)
    heatmap = np.clip(heatmap, 0.0, 1.0)
    alpha = (max_alpha * heatmap)[..., None]
    colour = colormaps["jet"](heatmap)[..., :3].astype(np.float32)
    blend = np.rint(((1.0 - alpha) * grey[..., None] + alpha * colour) * 255.0).astype(np.uint8)
    return np.where((heatmap > 0)[..., None], blend, np.rint(grey * 255.0).astype(np.uint8)[..., None])


def spotted(rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy radiograph and a heatmap with a smooth footprint (zero elsewhere), 1.0 and 0.0 included."""
    rng = np.random.default_rng(seed)
    image = rng.random((rows, cols), dtype=np.float32)
    yy, xx = np.mgrid[0:rows, 0:cols]
    heatmap = np.exp(-((yy - 0.6 * rows) ** 2 + (xx - 0.4 * cols) ** 2) / (2 * (0.1 * rows) ** 2)).astype(np.float32)
    heatmap[heatmap < 0.05] = 0.0
    heatmap[int(0.6 * rows), int(0.4 * cols)] = 1.0
    return image, heatmap


def test_jet_table_is_matplotlibs_jet():
    from matplotlib import colormaps

    from scripts.reporting.plots import JET_LUT, jet_colours

    np.testing.assert_array_equal(JET_LUT, colormaps["jet"](np.arange(256))[:, :3].astype(np.float32))
    values = np.concatenate([np.random.default_rng(1).random(10_000, dtype=np.float32), [0.0, 1.0, 0.5, 255 / 256]])
    values = values.astype(np.float32)
    np.testing.assert_array_equal(jet_colours(values), colormaps["jet"](values)[:, :3].astype(np.float32))


def test_full_size_overlay_is_the_matplotlib_drawing_pixel_for_pixel():
    image, heatmap = spotted(ROWS, COLS)
    picture = render_heatmap_overlay(image, heatmap)  # no peaks, no banner: the blend alone
    np.testing.assert_array_equal(picture, matplotlib_blend(image, heatmap))
    # a size bound the picture already meets changes nothing
    np.testing.assert_array_equal(render_heatmap_overlay(image, heatmap, max_size=COLS), picture)


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = array.shape
    return array.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3), dtype=np.float64)


@pytest.mark.parametrize("max_size", [256, 300])
def test_bounded_overlay_is_the_full_size_drawing_of_the_reduced_radiograph_with_its_peaks_moved(max_size):
    """A 800 x 1,200 radiograph bounded to ``max_size``: reduced by the whole factor f = ceil(1200 / max_size) (here 5
    or 4), each picture pixel the mean of an f x f block, and the peaks marked where the radiograph's pixel
    ``[x, y]`` lands, ``(x + 0.5) / f - 0.5``: the same picture as the full-size drawing of the block means with the
    peaks moved there (within one grey level: float sums in another order)."""
    from scripts.reporting.plots import overlay_reduction

    rows, cols = 800, 1200
    factor = overlay_reduction((rows, cols), max_size)
    assert factor == -(-cols // max_size)
    image, heatmap = spotted(rows, cols)
    peaks = np.array([[487.0, 502.0], [903.3, 171.8]])
    result = {"fracture_probability": 0.9, "threshold": 0.5, "positive": True,
              "peaks": [{"x": x, "y": y} for x, y in peaks]}  # fmt: skip
    picture = fracture_overlay(image, heatmap, result, max_size=max_size)
    assert picture.shape == (rows // factor, cols // factor, 3) and max(picture.shape) <= max_size

    moved = {**result, "peaks": [{"x": x, "y": y} for x, y in (peaks + 0.5) / factor - 0.5]}
    expected = fracture_overlay(block_mean(image, factor), block_mean(heatmap, factor), moved)
    assert np.abs(picture.astype(int) - expected.astype(int)).max() <= 1
    # the circles are there: white pixels around each moved peak, none around where the unmoved one would be
    for x, y in (peaks + 0.5) / factor - 0.5:
        ring = picture[int(y) - 8 : int(y) + 9, int(x) - 8 : int(x) + 9]
        assert (ring == 255).all(axis=-1).any()


def test_overlay_png_is_written_at_the_bounded_size_with_fast_compression(tmp_path):
    rows, cols = 600, 900
    _, heatmap = spotted(rows, cols)
    image = np.linspace(0, 1, rows * cols, dtype=np.float32).reshape(rows, cols)  # smooth: compression shows
    result = {"fracture_probability": 0.3, "threshold": 0.5, "positive": False, "peaks": [{"x": 300.0, "y": 360.0}]}
    path = save_fracture_overlay(image, heatmap, result, tmp_path / "overlay.png", max_size=300)
    written = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(written, fracture_overlay(image, heatmap, result, max_size=300))
    assert written.shape == (200, 300, 3)
    slow = save_fracture_overlay(image, heatmap, result, tmp_path / "slow.png", max_size=300, compress_level=9)
    assert Path(slow).stat().st_size < Path(path).stat().st_size  # level 1 is the fast, larger file


def test_overlay_size_bound_must_be_positive():
    from scripts.reporting.plots import overlay_reduction

    assert overlay_reduction((2000, 2500), None) == 1 and overlay_reduction((2000, 2500), 1024) == 3
    assert overlay_reduction((100, 120), 1024) == 1
    with pytest.raises(ValueError, match="positive"):
        overlay_reduction((10, 10), -5)


# ------------------------------------------------------------------------ the fast pieces (issue 20): equal, not close
@pytest.mark.parametrize(
    ("rows", "cols", "factor"), [(20, 20, 1), (21, 32, 2), (50, 62, 3), (7, 13, 5), (3, 40, 5), (40, 3, 5)]
)
def test_block_mean_is_the_mean_of_each_block_partial_blocks_included(rows, cols, factor):
    """The radiograph's reduction (float32 sums of strided views): each picture pixel the mean of its f x f block, the
    last row and column of blocks partial where f does not divide the size (2000 x 2500 at f = 3 has both)."""
    from scripts.reporting.plots import _block_mean

    array = np.random.default_rng(factor).random((rows, cols), dtype=np.float32)
    reduced = _block_mean(array, factor)
    assert reduced.dtype == np.float32 and reduced.shape == (-(-rows // factor), -(-cols // factor))
    expected = np.array([[array[r : r + factor, c : c + factor].mean(dtype=np.float64)
                          for c in range(0, cols, factor)] for r in range(0, rows, factor)])  # fmt: skip
    np.testing.assert_allclose(reduced, expected, rtol=0, atol=1e-6)
    if factor == 1:
        assert reduced is array  # nothing to reduce: no copy


def test_heatmap_footprint_is_the_box_of_every_non_zero_value():
    from scripts.reporting.plots import heatmap_footprint

    heatmap = np.zeros((40, 60), np.float32)
    assert heatmap_footprint(heatmap) is None
    heatmap[5, 50] = 0.1  # the top row's only value is at the right
    heatmap[30, 2] = 0.2  # the bottom row's only value is at the left
    heatmap[12, 20] = 1.0
    assert heatmap_footprint(heatmap) == (slice(5, 31), slice(2, 51))


def test_png_writer_is_read_back_pixel_for_pixel_and_checks_its_input(tmp_path):
    """write_png (Sub filter by numpy, one zlib stream): PIL reads every pixel back, its chunks' CRCs verify, a
    strided view is written as its values, and a higher level makes a smaller file of the same pixels."""
    from scripts.reporting.plots import write_png

    rng = np.random.default_rng(3)
    noisy = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    smooth = np.repeat(np.linspace(0, 255, 200 * 300).reshape(200, 300, 1), 3, axis=-1).astype(np.uint8)
    strided = rng.integers(0, 256, (30, 40, 4), dtype=np.uint8)[..., :3]  # not contiguous
    for name, picture in {"noisy": noisy, "smooth": smooth, "strided": strided, "one_pixel": noisy[:1, :1]}.items():
        path = write_png(picture, tmp_path / f"{name}.png")
        with Image.open(path) as png:
            png.verify()  # signature, chunk order and CRCs
        with Image.open(path) as png:
            assert png.mode == "RGB" and png.size == picture.shape[1::-1]
            np.testing.assert_array_equal(np.asarray(png), picture)
    fast, small = write_png(smooth, tmp_path / "l1.png", 1), write_png(smooth, tmp_path / "l9.png", 9)
    assert Path(small).stat().st_size < Path(fast).stat().st_size
    np.testing.assert_array_equal(np.asarray(Image.open(small)), np.asarray(Image.open(fast)))
    for bad in (noisy.astype(np.float32), noisy[..., 0], noisy[..., :2], noisy[:0]):
        with pytest.raises(ValueError, match="uint8"):
            write_png(bad, tmp_path / "bad.png")

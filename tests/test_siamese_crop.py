"""The Siamese window: the re-based grid samples the mirrored window where the full grid sampled the mirrored ROI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from custom_transforms.siamese_crop import RandSiameseCropd, SiameseCrop


def _warp(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """grid_sample as the network's ``warp`` does it (border padding, align_corners=False), for (C, h, w)."""
    return F.grid_sample(
        image[None], grid.permute(1, 2, 0)[None], mode="bilinear", padding_mode="border", align_corners=False
    )[0]


def _packed(h=64, w=128, shift=(5.0, -7.0), scale=1.04, seed=0):
    """A packed input whose grid maps ROI pixel (x, y) to mirrored pixel (scale * x + sx, scale * y + sy)."""
    g = torch.Generator().manual_seed(seed)
    roi = torch.rand(3, h, w, generator=g)
    mirrored = torch.rand(3, h, w, generator=g)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    mx, my = scale * xs + shift[0], scale * ys + shift[1]
    grid = torch.stack([(2 * mx + 1) / w - 1, (2 * my + 1) / h - 1])
    return torch.cat([roi, mirrored, grid]), (mx, my)


def test_window_warp_equals_warp_of_the_whole_roi():
    x, (mx, my) = _packed()
    crop = SiameseCrop((32, 32))
    row, col = 16, 40
    window, _ = crop(x, row, col)
    expected = _warp(x[3:6], x[6:8])[:, row : row + 32, col : col + 32]
    got = _warp(window[3:6], window[6:8])
    # where the grid points inside the mirrored window (one pixel of bilinear support to spare)
    top, left = crop.mirrored_origin(x[6:8, row : row + 32, col : col + 32], (64, 128))
    px, py = mx[row : row + 32, col : col + 32] - left, my[row : row + 32, col : col + 32] - top
    inside = (px >= 0) & (px <= 31) & (py >= 0) & (py <= 31)
    assert inside.float().mean() > 0.8
    assert torch.allclose(got[:, inside], expected[:, inside], atol=1e-5)
    # the ROI channels are the plain window
    assert torch.equal(window[0:3], x[0:3, row : row + 32, col : col + 32])


def test_mirrored_window_is_centred_on_where_the_grid_points():
    x, (mx, my) = _packed(shift=(9.0, 3.0), scale=1.0)
    crop = SiameseCrop((32, 32))
    window, _ = crop(x, 10, 20)
    # pure translation by (9, 3): the mirrored window starts at (10 + 3, 20 + 9), the re-based grid is the identity
    assert crop.mirrored_origin(x[6:8, 10:42, 20:52], (64, 128)) == (13, 29)
    assert torch.equal(window[3:6], x[3:6, 13:45, 29:61])
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    identity = torch.stack([(2 * xs + 1) / 32 - 1, (2 * ys + 1) / 32 - 1])
    assert torch.allclose(window[6:8], identity, atol=1e-5)


def test_window_outside_the_roi_is_refused():
    x, _ = _packed()
    with pytest.raises(ValueError, match="leaves the ROI"):
        SiameseCrop((32, 32))(x, 40, 0)


def test_positive_windows_contain_the_fracture_and_cut_the_target_alike():
    x, _ = _packed()
    target = torch.zeros(2, 64, 128)
    target[0, 50:54, 110:114] = 1.0  # a fracture disc near the bottom-right corner
    target[1] = target[0]
    crop = RandSiameseCropd(size=(32, 32), positive_fraction=1.0)
    for seed in range(20):
        crop.set_random_state(seed)
        out = crop({"siamese_input": x, "target": target})
        assert out["siamese_input"].shape == (8, 32, 32) and out["target"].shape == (2, 32, 32)
        assert out["target"][0].sum() > 0  # the fracture is inside every positive window
        # a mask pixel (rows 50-53, columns 110-113) within the window's central half (+-8 px), kept in the ROI
        origins = [
            (r, c)
            for r in range(33)
            for c in range(97)
            if torch.equal(out["siamese_input"][0:3], x[0:3, r : r + 32, c : c + 32])
        ]
        ((r, c),) = origins
        assert 26 <= r <= 32 and 86 <= c <= 96


def test_negative_images_get_uniform_windows():
    x, _ = _packed()
    crop = RandSiameseCropd(size=(32, 32), positive_fraction=1.0)
    origins = set()
    for seed in range(30):
        crop.set_random_state(seed)
        out = crop({"siamese_input": x, "target": torch.zeros(2, 64, 128)})
        match = [
            (r, c)
            for r in range(33)
            for c in range(97)
            if torch.equal(out["siamese_input"][0], x[0, r : r + 32, c : c + 32])
        ]
        origins.add(match[0])
    assert len(origins) > 20
    assert np.mean([r for r, _ in origins]) == pytest.approx(16, abs=6)


def test_twin_windows_go_where_the_sibling_s_breaks_are():
    from custom_transforms.siamese_crop import CropPointsd

    x, _ = _packed()
    box = np.array([[2.0, 0.0, 100.0], [0.0, 2.0, 50.0], [0.0, 0.0, 1.0]])  # ROI pixel -> original pixel
    data = {
        "siamese_input": x,
        "target": torch.zeros(2, 64, 128),
        "roi_fractures": np.zeros((0, 2)),
        "fractures_removed": [[100.0 + 2 * 40, 50.0 + 2 * 20]],
        "roi_to_original": box,
    }
    data = CropPointsd()(data)
    np.testing.assert_allclose(data["crop_points"], [[40.0, 20.0]])  # through the inverse of the box
    crop = RandSiameseCropd(size=(32, 32), positive_fraction=1.0)
    for seed in range(10):
        crop.set_random_state(seed)
        out = crop(dict(data))
        assert "crop_points" not in out
        origin = [
            (r, c)
            for r in range(33)
            for c in range(97)
            if torch.equal(out["siamese_input"][0], x[0, r : r + 32, c : c + 32])
        ]
        ((r, c),) = origin
        assert r + 8 <= 20 <= r + 24 and c + 8 <= 40 <= c + 24  # the point is in the window's central half

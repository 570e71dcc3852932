"""The Siamese window's augmentation: flips, rotations and scales keep the TPS correspondence; exposure on the right
channels; a twin gets its sibling's draw; the CPU recipe wires it after the crop (issue 14)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from custom_transforms.geometry import pixel_to_normalized
from custom_transforms.pseudocolor import PseudoColor
from custom_transforms.resampling import sample_affine
from custom_transforms.siamese_augment import GREY_CHANNELS, RandSiameseWindowAugmentd, SiameseWindowAugment
from custom_transforms.siamese_crop import RandSiameseCropd

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"


def _warp(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """grid_sample as the network's ``warp`` does it (border padding, align_corners=False), for (C, h, w)."""
    return F.grid_sample(
        image[None].double(),
        grid.permute(1, 2, 0)[None].double(),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )[0]


def _pixels(h: int, w: int):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return xs, ys


def _normalised(px: torch.Tensor, py: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.stack([pixel_to_normalized(px, w), pixel_to_normalized(py, h)]).float()


def _random_window(h: int = 6, w: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(8, h, w, generator=g) * 2 - 1, torch.rand(2, h, w, generator=g)


# -- flip ------------------------------------------------------------------------------------------------------------


def test_flip_moves_a_known_pixel_and_negates_the_grid_x():
    window, target = torch.zeros(8, 6, 10), torch.zeros(2, 6, 10)
    window[0, 2, 1] = 5.0  # ROI, row 2, column 1
    window[4, 3, 0] = 7.0  # mirrored ROI, row 3, column 0
    window[6, 1, 2], window[7, 1, 2] = 0.3, 0.4  # the grid at row 1, column 2
    target[1, 4, 9] = 1.0
    out, t = SiameseWindowAugment()(window, target, flip=True)
    # column j -> 10 - 1 - j
    assert out[0, 2, 8] == 5.0 and out[0].sum() == 5.0
    assert out[4, 3, 9] == 7.0 and out[4].sum() == 7.0
    assert out[6, 1, 7] == pytest.approx(-0.3) and out[7, 1, 7] == pytest.approx(0.4)
    assert out[6].abs().sum() == pytest.approx(0.3) and out[7].sum() == pytest.approx(0.4)
    assert t[1, 4, 0] == 1.0 and t.sum() == 1.0


def test_flip_keeps_the_warp_correspondence():
    window, _ = _random_window(8, 12)
    out, _ = SiameseWindowAugment()(window, flip=True)
    # warp(mirrored', grid') is the flip of warp(mirrored, grid), for any grid
    assert torch.allclose(_warp(out[3:6], out[6:8]), _warp(window[3:6], window[6:8]).flip(-1), atol=1e-6)


# -- rotation and scale ----------------------------------------------------------------------------------------------


def test_a_90_degree_rotation_of_a_square_window_moves_a_known_pixel():
    window, target = torch.zeros(8, 8, 8), torch.zeros(2, 8, 8)
    window[0, 1, 5] = 1.0  # ROI pixel x = 5, y = 1
    window[3, 6, 2] = 2.0  # mirrored pixel x = 2, y = 6
    target[0, 1, 5] = 1.0
    # a grid pointing 2 px to the right of each ROI pixel in the mirrored window: G(p) = p + (2, 0)
    xs, ys = _pixels(8, 8)
    window[6:8] = _normalised(xs + 2, ys, 8, 8)
    out, t = SiameseWindowAugment()(window, target, rotation_deg=90.0)
    # c = (3.5, 3.5), A = [[0, -1], [1, 0]]: the source pixel q lands at p = c + A^-1 (q - c) = (3.5 + (qy - 3.5),
    # 3.5 - (qx - 3.5)); ROI (5, 1) -> (1, 2), mirrored (2, 6) -> (6, 5)
    assert out[0, 2, 1] == pytest.approx(1.0) and out[0].sum() == pytest.approx(1.0)
    assert out[3, 5, 6] == pytest.approx(2.0) and out[3].sum() == pytest.approx(2.0)
    assert t[0, 2, 1] == pytest.approx(1.0) and t.sum() == pytest.approx(1.0)
    # the image channels are torch.rot90 of the window (counter-clockwise as displayed)
    assert torch.allclose(out[0:6], torch.rot90(window[0:6], 1, (-2, -1)), atol=1e-6)
    # the grid re-expressed: G'(p) = c + A^-1 (G(c + A (p - c)) - c) = p + A^-1 (2, 0) = p + (0, -2)
    assert torch.allclose(out[6:8], _normalised(xs, ys - 2, 8, 8), atol=1e-6)


def _smooth(xs: torch.Tensor, ys: torch.Tensor, phase: float = 0.0) -> torch.Tensor:
    """A smooth test image (wavelengths 17-31 px), as a function of pixel position, so the truth is exact."""
    return torch.sin(2 * math.pi * xs / 23 + 0.3 + phase) * torch.cos(2 * math.pi * ys / 17) + 0.5 * torch.sin(
        2 * math.pi * (xs + ys) / 31 + phase
    )


def _tps_like(xs: torch.Tensor, ys: torch.Tensor, h: int, w: int):
    """A smooth, non-affine ROI -> mirrored-window map in pixels (as a TPS over a window is)."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    gx = 1.03 * xs + 0.04 * ys + 1.0 + 0.003 * (ys - cy) ** 2
    gy = 0.97 * ys - 0.03 * xs + 2.0 + 0.002 * (xs - cx) ** 2
    return gx, gy


def _correspondence(rotation_deg: float, scale: float, reexpress: bool = True):
    """|warp(mirrored', grid')(p) - warp(mirrored, grid)(c + A (p - c))| on the interior, a 48 x 64 window."""
    h, w = 48, 64
    xs, ys = _pixels(h, w)
    gx, gy = _tps_like(xs, ys, h, w)
    roi = _smooth(xs, ys, phase=1.0)
    mirrored = _smooth(xs, ys)
    window = torch.cat([roi.expand(3, h, w), mirrored.expand(3, h, w), _normalised(gx, gy, h, w)]).float()
    augment = SiameseWindowAugment()
    out, _ = augment(window, rotation_deg=rotation_deg, scale=scale)
    grid = out[6:8]
    a = augment.similarity(rotation_deg, scale)
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    if not reexpress:  # the grid only resampled, as the images are
        m = np.eye(3)
        m[:2, :2], m[:2, 2] = a, c - a @ c
        grid = sample_affine(window[6:8], m, (h, w), antialias=False, padding_mode="reflection")
    # the truth: q = c + A (p - c); warp(mirrored, grid)(q) = mirrored(G(q)), the smooth function there
    qx = c[0] + a[0, 0] * (xs - c[0]) + a[0, 1] * (ys - c[1])
    qy = c[1] + a[1, 0] * (xs - c[0]) + a[1, 1] * (ys - c[1])
    gqx, gqy = _tps_like(qx, qy, h, w)
    truth = _smooth(gqx, gqy)
    # interior: q, G(q) and where mirrored' is read (c + A^-1 (G(q) - c)) at least 2 px inside the window
    inverse = np.linalg.inv(a)
    zx = c[0] + inverse[0, 0] * (gqx - c[0]) + inverse[0, 1] * (gqy - c[1])
    zy = c[1] + inverse[1, 0] * (gqx - c[0]) + inverse[1, 1] * (gqy - c[1])

    def inside(px, py):
        return (px >= 2) & (px <= w - 3) & (py >= 2) & (py <= h - 3)

    interior = inside(qx, qy) & inside(gqx, gqy) & inside(zx, zy)
    got = _warp(out[3:6], grid)
    error = (got - truth).abs()[:, interior].max().item()
    # the ROI channels: roi'(p) = roi(q)
    roi_error = (out[0:3].double() - _smooth(qx, qy, phase=1.0)).abs()[:, interior].max().item()
    return error, roi_error, interior.double().mean().item()


@pytest.mark.parametrize("rotation_deg, scale", [(8.0, 1.15), (-10.0, 0.82), (90.0, 1.0), (3.0, 1.0)])
def test_rotation_and_scale_keep_the_warp_correspondence(rotation_deg, scale):
    error, roi_error, share = _correspondence(rotation_deg, scale)
    assert share > 0.4
    # one bilinear interpolation of this image (range 3) errs by up to 0.03 (no augmentation, or roi'); the mirrored
    # side interpolates twice (mirrored', then the warp); a grid not re-expressed errs by 1.2 or more (next test)
    assert error < 0.1
    assert roi_error < 0.05


@pytest.mark.parametrize("rotation_deg, scale", [(8.0, 1.15), (-10.0, 0.82)])
def test_the_correspondence_fails_when_the_grid_is_not_reexpressed(rotation_deg, scale):
    error, _, _ = _correspondence(rotation_deg, scale, reexpress=False)
    assert error > 1.0


def test_the_target_is_zero_outside_and_the_images_are_reflected():
    window, target = torch.ones(8, 16, 16), torch.ones(2, 16, 16)
    out, t = SiameseWindowAugment()(window, target, scale=1.5)  # shows 1.5 times the window: a border outside
    assert t[:, 0, 0].abs().max() < 1e-6 and t[:, 8, 8].min() == pytest.approx(1.0)
    assert torch.allclose(out[0:6], torch.ones(6, 16, 16))  # reflection continues the constant image


# -- exposure --------------------------------------------------------------------------------------------------------


def test_gain_and_offset_act_on_the_right_channels():
    window, target = _random_window()
    highpass, _ = SiameseWindowAugment(offset_channels=GREY_CHANNELS["highpass"])(window, target, gain=1.2, offset=0.05)
    for ch in range(6):
        expected = 1.2 * window[ch] + (0.05 if ch in (0, 3) else 0.0)
        assert torch.allclose(highpass[ch], expected, atol=1e-6), ch
    assert torch.equal(highpass[6:8], window[6:8])  # the grid is geometry, not intensity
    replicate, t = SiameseWindowAugment()(window, target, gain=0.8, offset=-0.1)  # default: all six are grey
    assert torch.allclose(replicate[0:6], 0.8 * window[0:6] - 0.1, atol=1e-6)
    assert torch.equal(replicate[6:8], window[6:8]) and torch.equal(t, target)
    assert GREY_CHANNELS["highpass"] == (0, 3) and GREY_CHANNELS["replicate"] == (0, 1, 2, 3, 4, 5)


def test_highpass_exposure_equals_pseudocolour_of_the_reexposed_grey():
    grey = _smooth(*_pixels(32, 32)).float()[None] * 0.3 + 0.5
    colour = PseudoColor("highpass")(grey)
    window = torch.cat([colour, colour, torch.zeros(2, 32, 32)])
    out, _ = SiameseWindowAugment(offset_channels=GREY_CHANNELS["highpass"])(window, gain=1.25, offset=0.08)
    reexposed = PseudoColor("highpass")(1.25 * grey + 0.08)
    assert torch.allclose(out[0:3], reexposed, atol=1e-5) and torch.allclose(out[3:6], reexposed, atol=1e-5)


# -- the dictionary transform ----------------------------------------------------------------------------------------


def test_probability_zero_is_the_identity():
    window, target = _random_window(16, 16)
    augment = RandSiameseWindowAugmentd(flip_prob=0.0, affine_prob=0.0, intensity_prob=0.0)
    for seed in range(5):
        augment.set_random_state(seed)
        out = augment({"siamese_input": window, "target": target, "label": 1, "pair_id": None})
        assert torch.equal(out["siamese_input"], window) and torch.equal(out["target"], target)
        assert out["label"] == 1 and "pair_id" not in out


def test_the_draws_stay_in_their_ranges():
    augment = RandSiameseWindowAugmentd(
        flip_prob=0.5, rotation_deg=10.0, log_scale=0.2, gain=(0.75, 1.33), offset=(-0.1, 0.1)
    )
    augment.set_random_state(0)
    draws = [augment.randomize() for _ in range(400)]
    assert all(-10.0 <= d["rotation_deg"] <= 10.0 for d in draws)
    assert all(math.exp(-0.2) <= d["scale"] <= math.exp(0.2) for d in draws)
    assert all(0.75 <= d["gain"] <= 1.33 and -0.1 <= d["offset"] <= 0.1 for d in draws)
    assert 0.4 < np.mean([d["flip"] for d in draws]) < 0.6
    assert max(abs(d["rotation_deg"]) for d in draws) > 9.0 and max(d["scale"] for d in draws) > 1.2


def test_a_twin_gets_its_siblings_parameters():
    window, target = _random_window(16, 16)
    augment = RandSiameseWindowAugmentd()
    augment.set_random_state(3)

    def item(pair):
        return {"siamese_input": window, "target": target, "pair_id": pair}

    fractured, twin = augment(item("a.dcm")), augment(item("a.dcm"))
    single1, single2 = augment(item(None)), augment(item(None))
    next_pair = augment(item("b.dcm"))
    # the same input with the same parameters: the same output; other items draw their own
    assert torch.equal(fractured["siamese_input"], twin["siamese_input"])
    assert torch.equal(fractured["target"], twin["target"])
    assert not torch.allclose(fractured["siamese_input"], single1["siamese_input"])
    assert not torch.allclose(single1["siamese_input"], single2["siamese_input"])
    assert not torch.allclose(twin["siamese_input"], next_pair["siamese_input"])
    assert all("pair_id" not in out for out in (fractured, twin, single1, next_pair))


def test_after_the_crop_a_pair_shares_window_and_augmentation():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.rand(6, 64, 128, generator=g), _normalised(*_pixels(64, 128), 64, 128)])
    crop = RandSiameseCropd(size=(32, 32), keep_pair_key=True)
    augment = RandSiameseWindowAugmentd()
    crop.set_random_state(0)
    augment.set_random_state(0)
    outs = []
    for _ in range(2):  # the fractured image and its twin (identical pictures here)
        item = {
            "siamese_input": x,
            "target": torch.zeros(2, 64, 128),
            "crop_points": np.array([[30.0, 20.0]]),
            "pair_id": "a.dcm",
        }
        cut = crop(item)
        assert cut["pair_id"] == "a.dcm"  # kept for the augmentation
        outs.append(augment(cut))
    assert torch.equal(outs[0]["siamese_input"], outs[1]["siamese_input"])
    assert "pair_id" not in outs[0]
    # without keep_pair_key the crop removes it, as before
    assert "pair_id" not in RandSiameseCropd(size=(32, 32))({"siamese_input": x, "pair_id": "a.dcm"})


# -- the CPU recipe --------------------------------------------------------------------------------------------------


def test_the_cpu_recipe_augments_windows_after_the_crop():
    from monai.bundle import ConfigParser

    sys.path.insert(0, str(CONFIGS.parent))
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "scale_cpu.json")])
    recipe = json.loads((CONFIGS / "scale_cpu.json").read_text())["+train"]
    assert recipe["random_transforms"] == "$[@train#crop, @train#window_augment]"
    crop, augment = parser.get_parsed_content("train#random_transforms")
    assert isinstance(crop, RandSiameseCropd) and crop.keep_pair_key
    assert isinstance(augment, RandSiameseWindowAugmentd)
    assert augment.flip_prob == 0.5 and augment.rotation_deg == 10.0 and augment.log_scale == 0.2
    assert augment.gain == (0.75, 1.33) and augment.offset == (-0.1, 0.1)
    assert augment.augment.offset_channels == GREY_CHANNELS["highpass"]  # the recipe's pseudo-colour
    assert "pair_id" in parser.get_parsed_content("train#select_with_points").keys
    # an item of the cache through the random part: the batch keys of the trainer, pair_id gone
    item = {
        "siamese_input": torch.cat([torch.rand(6, 192, 384), _normalised(*_pixels(192, 384), 192, 384)]),
        "target": torch.zeros(2, 192, 384),
        "label": 1,
        "image_label": 1,
        "tps_warp": "tps",
        "crop_points": np.zeros((0, 2), np.float32),
        "pair_id": "a.dcm",
    }
    for transform in (crop, augment):
        item = transform(item)
    assert set(item) == {"siamese_input", "target", "label", "image_label", "tps_warp"}
    assert item["siamese_input"].shape == (8, 64, 64) and item["target"].shape == (2, 64, 64)

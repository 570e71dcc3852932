"""Landmark heatmaps: Gaussian targets, sub-pixel decoding of planted peaks, bilinear sampling."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.landmarks.heatmap_decoding import (  # noqa: E402
    decode_heatmaps,
    gaussian_heatmaps,
    heatmap_confidence,
    heatmap_value_near,
    local_expectation,
    sample_heatmaps,
    spatial_softmax,
)

# non-integer peaks, inside and on the border of a 40 x 64 map
PLANTED = torch.tensor([[37.3, 21.8], [10.45, 5.62], [50.71, 33.08], [0.2, 17.35], [63.0, 39.0], [62.7, 0.4]])


def test_gaussian_target_peak_and_width():
    hm = gaussian_heatmaps(torch.tensor([[5.0, 3.0]]), (8, 10), sigma=2.0)
    assert hm.shape == (1, 8, 10)
    assert hm[0, 3, 5] == pytest.approx(1.0)  # row 3 = y, column 5 = x
    assert hm[0, 3, 7] == pytest.approx(torch.exp(torch.tensor(-4 / 8)).item())  # 2 px away in x
    assert hm[0, 1, 5] == pytest.approx(torch.exp(torch.tensor(-4 / 8)).item())  # 2 px away in y


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.5])
def test_decoding_recovers_planted_peaks_to_subpixel_accuracy(sigma):
    maps = gaussian_heatmaps(PLANTED, (40, 64), sigma)
    coords, peaks = decode_heatmaps(maps)
    assert coords.shape == (len(PLANTED), 2)
    assert torch.allclose(coords, PLANTED, atol=1e-3)
    # the maps' own arg-max pixels are up to half a pixel off these points: the refinement is what makes this pass
    flat = maps.flatten(1).argmax(dim=1)
    argmax_xy = torch.stack([flat % maps.shape[-1], flat // maps.shape[-1]], dim=1).float()
    assert (argmax_xy - PLANTED).abs().max() > 0.4
    # peaks: each map's maximum, the value at its arg-max pixel
    assert torch.equal(peaks, maps.amax(dim=(-2, -1)))


def test_decoding_batched_and_noisy():
    torch.manual_seed(0)
    points = PLANTED[:3]
    maps = gaussian_heatmaps(points, (40, 64), 2.0)
    batch = torch.stack([maps, maps.flip(-1)])
    batch = batch + 0.01 * torch.randn_like(batch)
    coords, peaks = decode_heatmaps(batch, smooth_sigma=1.0)
    assert coords.shape == (2, 3, 2) and peaks.shape == (2, 3)
    assert (coords[0] - points).norm(dim=-1).max() < 0.15
    mirrored = points.clone()
    mirrored[:, 0] = 63 - points[:, 0]
    assert (coords[1] - mirrored).norm(dim=-1).max() < 0.15


def test_local_expectation_is_the_probability_weighted_mean_within_the_window():
    probs = torch.zeros(1, 2, 9, 12)
    # channel 0: mass 0.6 at (x=4, y=3) and 0.2 at (5, 3), (4, 5); a far mode (x=11, y=8) outside radius 2
    probs[0, 0, 3, 4], probs[0, 0, 3, 5], probs[0, 0, 5, 4], probs[0, 0, 8, 11] = 0.6, 0.2, 0.2, 0.5
    probs[0, 1, 0, 0] = 1.0  # a corner: the window is clipped by the border
    mean = local_expectation(probs, torch.tensor([[[4.0, 3.0], [0.0, 0.0]]]), radius=2)
    expected_x = (0.6 * 4 + 0.2 * 5 + 0.2 * 4) / 1.0
    expected_y = (0.6 * 3 + 0.2 * 3 + 0.2 * 5) / 1.0
    assert torch.allclose(mean[0, 0], torch.tensor([expected_x, expected_y]))
    assert torch.allclose(mean[0, 1], torch.tensor([0.0, 0.0]))
    wider = local_expectation(probs, torch.tensor([[[4.0, 3.0], [0.0, 0.0]]]), radius=20)  # takes the far mode in
    assert wider[0, 0, 0] > expected_x + 2


def test_expectation_decoding_keeps_a_symmetric_peak_and_moves_to_the_mean_of_a_skewed_one():
    points = torch.tensor([[20.3, 15.6]])
    gaussian = spatial_softmax(torch.log(gaussian_heatmaps(points, (40, 64), 2.0).clamp_min(1e-30)))
    coords, _ = decode_heatmaps(gaussian, expectation_radius=8)
    assert torch.allclose(coords, points, atol=1e-2)  # 4 sigma window: the truncated mean stays on the centre
    # a skewed distribution along x (a landmark on a contour): the mode stays, the mean moves towards the tail
    skewed = gaussian.clone()
    skewed[0, 16, 24:30] = skewed[0, 16, 20] * 0.5
    skewed = skewed / skewed.sum()
    peak, _ = decode_heatmaps(skewed)
    mean, _ = decode_heatmaps(skewed, expectation_radius=12)
    xs = torch.arange(64.0)
    window = skewed[0, 4:29, 8:33]
    expected_x = (window.sum(0) * xs[8:33]).sum() / window.sum()
    assert mean[0, 0] == pytest.approx(expected_x.item(), abs=1e-4)
    assert mean[0, 0] > peak[0, 0] + 0.5


def test_decoding_rejects_bad_shapes():
    with pytest.raises(ValueError, match="heatmaps must be"):
        decode_heatmaps(torch.zeros(10, 10))
    with pytest.raises(ValueError, match="at least 3 x 3"):
        decode_heatmaps(torch.zeros(1, 2, 10))


def test_sample_heatmaps_bilinear_at_points():
    ramp = torch.arange(20.0).repeat(4, 1)[None]  # value = x
    values = sample_heatmaps(ramp.expand(2, 4, 20), torch.tensor([[3.25, 1.0], [17.5, 2.5]]))
    assert torch.allclose(values, torch.tensor([3.25, 17.5]))


def test_heatmap_value_near_reads_the_peak_not_an_interpolation():
    maps = gaussian_heatmaps(PLANTED[:3], (40, 64), 1.0)
    values = heatmap_value_near(maps, PLANTED[:3])
    assert torch.allclose(values, maps.flatten(1).max(1).values)
    far = heatmap_value_near(maps, PLANTED[:3] + torch.tensor([6.0, 0.0]))
    assert far.max() < 1e-3


def test_spatial_softmax_confidence_is_probability_within_radius():
    logits = torch.zeros(2, 20, 30)
    logits[0, 5, 7] = 50.0  # all the mass on one pixel
    probabilities = spatial_softmax(logits)
    assert torch.allclose(probabilities.sum((-2, -1)), torch.ones(2))
    values = heatmap_confidence(probabilities, torch.tensor([[8.0, 6.0], [8.0, 6.0]]), "spatial_softmax", radius=1)
    assert values[0] == pytest.approx(1.0, abs=1e-6)  # within 1 px of (7, 5)
    assert values[1] == pytest.approx(9 / 600)  # uniform over 600 pixels, 3 x 3 window
    assert (
        heatmap_confidence(probabilities, torch.tensor([[10.0, 6.0], [0.0, 0.0]]), "spatial_softmax", radius=1)[0]
        < 1e-6
    )
    # at the corner, the window's outside part counts as zero
    assert heatmap_confidence(probabilities, torch.tensor([[0.0, 0.0], [0.0, 0.0]]), "spatial_softmax", radius=1)[
        1
    ] == pytest.approx(4 / 600)
    with pytest.raises(ValueError, match="activation"):
        heatmap_confidence(probabilities, torch.zeros(2, 2), "sigmoid")

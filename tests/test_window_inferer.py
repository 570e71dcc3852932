"""Scoring the whole ROI by training-sized windows (scripts.fracture.inferers.SiameseWindowInferer), and the configs
that turn it on (the CPU recipe trains on windows: configs/scale_cpu.json)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

from custom_transforms.siamese_augment import SiameseWindowAugment, flip_packed  # noqa: E402

from scripts.fracture.inferers import FlipAveragingInferer, InferenceModeInferer, SiameseWindowInferer  # noqa: E402


def _siamese_input(height: int, width: int) -> torch.Tensor:
    """(1, 8, H, W): a random ROI and mirrored ROI, and the identity grid (normalised, align_corners=False)."""
    torch.manual_seed(0)
    x = torch.rand(1, 8, height, width)
    x[0, 6] = ((torch.arange(width) + 0.5) / width * 2 - 1)[None, :].expand(height, width)
    x[0, 7] = ((torch.arange(height) + 0.5) / height * 2 - 1)[:, None].expand(height, width)
    return x


class _LocalColumn(torch.nn.Module):
    """Logit = the pixel's column inside the input it is given (so a window's logits say where the window was)."""

    def forward(self, x):
        n, _, h, w = x.shape
        return torch.arange(w, dtype=torch.float32).expand(n, 1, h, w).clone()


def test_pixels_take_the_centre_weighted_mean_of_the_windows_covering_them():
    inferer = SiameseWindowInferer((64, 64), overlap=0.5)
    assert inferer.positions(64, 96) == [(0, 0), (0, 32)]  # the last window flush with the edge
    out = inferer(_siamese_input(64, 96), _LocalColumn())
    assert out.shape == (1, 1, 64, 96)
    # columns 0-31: only the first window; 64-95: only the second (its local column = column - 32)
    assert out[0, 0, 5, 10].item() == pytest.approx(10.0)
    assert out[0, 0, 5, 80].item() == pytest.approx(48.0)
    # column 40: local column 40 of the first window, 8 of the second, weighted by a Gaussian (sd 16) about 31.5
    g40, g8 = math.exp(-0.5 * (8.5 / 16) ** 2), math.exp(-0.5 * (23.5 / 16) ** 2)
    assert out[0, 0, 5, 40].item() == pytest.approx((40 * g40 + 8 * g8) / (g40 + g8), rel=1e-5)  # 30.99


def test_a_pointwise_network_gives_the_same_heatmap_by_windows_and_whole():
    conv = torch.nn.Conv2d(3, 1, 1)  # reads the ROI channels only, which windows cut at the same pixels
    network = torch.nn.Sequential()
    network.forward = lambda x: conv(x[:, :3])
    x = _siamese_input(96, 160)
    with torch.no_grad():
        whole = conv(x[:, :3])
        by_windows = SiameseWindowInferer((64, 64), overlap=0.75, batch_size=5)(x, network)
    torch.testing.assert_close(by_windows, whole, rtol=1e-5, atol=1e-6)
    positions = SiameseWindowInferer((64, 64), overlap=0.75).positions(96, 160)
    assert sorted({r for r, _ in positions}) == [0, 16, 32] and sorted({c for _, c in positions})[-1] == 96


def test_no_window_or_a_window_as_large_as_the_roi_is_one_plain_call():
    calls = []

    def network(x):
        calls.append(tuple(x.shape))
        return x[:, :1]

    x = _siamese_input(64, 128)
    for inferer in (SiameseWindowInferer(None), SiameseWindowInferer((64, 128)), SiameseWindowInferer((96, 128))):
        torch.testing.assert_close(inferer(x, network), x[:, :1])
    assert calls == [(1, 8, 64, 128)] * 3
    with pytest.raises(ValueError, match="does not fit"):
        SiameseWindowInferer((32, 256))(x, network)
    with pytest.raises(ValueError, match="overlap"):
        SiameseWindowInferer((32, 32), overlap=1.0)


def test_inner_inferer_runs_each_batch_of_windows():
    seen = []

    class Spy(InferenceModeInferer):
        def __call__(self, inputs, network, *args, **kwargs):
            seen.append(len(inputs))
            return super().__call__(inputs, network)

    out = SiameseWindowInferer((32, 32), overlap=0.0, batch_size=3, inner=Spy())(_siamese_input(64, 64), _LocalColumn())
    assert seen == [3, 1] and out.shape == (1, 1, 64, 64)
    assert not out.is_inference()  # usable outside inference mode


def _parsed(files: list[str], key: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in files])
    return parser.get_parsed_content(key)


def test_the_cpu_recipe_scores_by_its_training_windows_and_the_paper_scale_by_the_whole_roi():
    crop = json.loads((BUNDLE / "configs" / "scale_cpu.json").read_text())["crop_size"]
    assert _parsed(["train.json"], "validate#inferer").inner.window_size is None
    assert _parsed(["inference.json"], "inferer").inner.window_size is None
    assert _parsed(["train.json", "scale_cpu.json"], "validate#inferer").inner.window_size == tuple(crop)
    inferer = _parsed(["inference.json", "scale_cpu.json"], "inferer").inner
    assert inferer.window_size == tuple(crop) and isinstance(inferer.inner, InferenceModeInferer)


def test_the_flip_average_is_off_unless_score_flip_turns_it_on(tmp_path):
    for files, key in ((["train.json"], "validate#inferer"), (["inference.json"], "inferer")):
        inferer = _parsed(files, key)
        assert isinstance(inferer, FlipAveragingInferer) and inferer.enabled is False
        on = tmp_path / "flip.json"
        on.write_text(json.dumps({"score_flip": True}))
        assert _parsed([*files, str(on)], key).enabled is True


class _GridX(torch.nn.Module):
    """Logit = the TPS grid's x (channel 6): the flip negates it, so the flip average must cancel it."""

    def forward(self, x):
        return x[:, 6:7].clone()


def test_flip_average_flips_the_second_heatmap_back_before_averaging():
    x = _siamese_input(8, 12)
    # a network that ignores its input: the column index; flipped back it reads w - 1 - j, the mean (w - 1) / 2
    out = FlipAveragingInferer(SiameseWindowInferer(None))(x, _LocalColumn())
    assert torch.allclose(out, torch.full((1, 1, 8, 12), 5.5))
    # the grid's x: negated and reversed by the flip, reversed back: -x; the average cancels it
    out = FlipAveragingInferer(SiameseWindowInferer(None))(x, _GridX())
    assert torch.allclose(out, torch.zeros(1, 1, 8, 12), atol=1e-6)
    assert torch.equal(FlipAveragingInferer(SiameseWindowInferer(None), enabled=False)(x, _GridX()), x[:, 6:7])


def test_flip_average_of_windows_is_the_mean_of_two_window_scorings():
    x = _siamese_input(64, 128)
    net = torch.nn.Conv2d(8, 1, 5, padding=2)
    windows = SiameseWindowInferer((64, 64), overlap=0.5)
    with torch.no_grad():
        expected = (windows(x, net) + windows(flip_packed(x), net).flip(-1)) / 2
        assert torch.allclose(FlipAveragingInferer(windows)(x, net), expected)


def test_flip_packed_is_the_augmentations_flip_on_a_batch_and_its_own_inverse():
    x = torch.cat([_siamese_input(6, 10), torch.rand(1, 8, 6, 10)])
    flipped = flip_packed(x)
    for item, result in zip(x, flipped, strict=True):
        assert torch.equal(result, SiameseWindowAugment()(item, flip=True)[0])
    assert torch.equal(flip_packed(flipped), x)
    with pytest.raises(ValueError, match="8 channels"):
        flip_packed(torch.zeros(1, 6, 4, 4))

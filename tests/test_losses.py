"""Losses and image-score pooling against values computed by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.fracture.losses import (  # noqa: E402
    VARIANT_LOSSES,
    AASNLoss,
    ContrastiveMarginLoss,
    ImageLevelLoss,
    any_overlap,
    loss_for_variant,
)
from scripts.fracture.networks import VARIANTS  # noqa: E402
from scripts.fracture.pooling import image_logit, image_score  # noqa: E402

LN3 = math.log(3.0)


def small_example():
    """4x4 heatmap, 2x2 distance map (each feature pixel covers a 2x2 block)."""
    logits = torch.zeros(1, 1, 4, 4)
    logits[0, 0, 0, :2] = LN3  # sigmoid = 3/4
    logits[0, 0, 3, 3] = -LN3  # sigmoid = 1/4
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, 0, 0] = 1.0  # M
    target[0, 0, 3, 3] = 1.0
    target[0, 1, 0, 3] = 1.0  # M-hat: one pixel in feature cell (0, 1)
    target[0, 1, 2, 0] = 0.4  # below 0.5: not in M-hat
    distance = torch.tensor([[[[0.1, 0.2], [0.4, 0.3]]]])
    return logits, distance, target


def test_bce_by_hand():
    logits, distance, target = small_example()
    # pixels: (0,0) z=ln3, m=1 -> log(4/3); (0,1) z=ln3, m=0 -> log 4; (3,3) z=-ln3, m=1 -> log 4;
    # the 13 others z=0 -> log 2
    expected = (math.log(4 / 3) + 2 * math.log(4) + 13 * math.log(2)) / 16
    assert AASNLoss(lambda_contrastive=0.0)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert loss_for_variant("vanilla")((logits, torch.zeros(1, 1, 0, 0)), target).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_contrastive_eq2_by_hand():
    logits, distance, target = small_example()
    # cell (0,1) is in M-hat: max(0, 0.5 - sqrt(0.2))^2 = 0.0557^2; the others contribute d: 0.1 + 0.4 + 0.3
    expected = (0.1 + (0.5 - math.sqrt(0.2)) ** 2 + 0.4 + 0.3) / 4
    assert ContrastiveMarginLoss(margin=0.5)((logits, distance), target).item() == pytest.approx(expected, rel=1e-6)
    # a distance above the margin in M-hat costs nothing
    far = distance.clone()
    far[0, 0, 0, 1] = 0.7
    assert ContrastiveMarginLoss(margin=0.5)((logits, far), target).item() == pytest.approx(0.8 / 4, rel=1e-6)


def test_total_loss_by_hand():
    logits, distance, target = small_example()
    bce = (math.log(4 / 3) + 2 * math.log(4) + 13 * math.log(2)) / 16
    contrastive = (0.8 + (0.5 - math.sqrt(0.2)) ** 2) / 4
    loss = AASNLoss(lambda_contrastive=0.5, margin=0.5)((logits, distance), target)
    assert loss.item() == pytest.approx(bce + 0.5 * contrastive, rel=1e-6)
    assert loss_for_variant("aasn")((logits, distance), target).item() == pytest.approx(loss.item())


def test_any_overlap():
    mask = torch.zeros(1, 1, 4, 6)
    mask[0, 0, 3, 5] = 1.0
    mask[0, 0, 0, 0] = 0.3
    cells = any_overlap(mask, (2, 3))
    assert cells.tolist() == [[[[False, False, False], [False, False, True]]]]


def test_image_level_loss_by_hand():
    logits = torch.zeros(2, 1, 4, 4)
    logits[:, :, :2] = 2 * LN3  # mean logit = ln 3 for both images
    target = torch.zeros(2, 2, 4, 4)
    target[0, 0, 1, 1] = 1.0  # image 0 fractured, image 1 not
    expected = (math.log(4 / 3) + math.log(4)) / 2
    assert ImageLevelLoss("mean")(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # LSE, r = 1, half the pixels 0 and half ln 3: log(mean(1, 3)) = log 2 -> sigmoid 2/3
    lse = torch.zeros(2, 1, 4, 4)
    lse[:, :, :2] = LN3
    expected = (math.log(3 / 2) + math.log(3)) / 2
    assert ImageLevelLoss("lse", lse_r=1.0)(lse, target).item() == pytest.approx(expected, rel=1e-6)


def test_pooling_by_hand():
    logits = torch.tensor([[[[0.0, LN3], [0.0, LN3]]], [[[-1.0, -2.0], [-3.0, -4.0]]]])
    assert image_logit(logits, "max").tolist() == pytest.approx([LN3, -1.0])
    assert image_score(logits, "max").tolist() == pytest.approx([0.75, 1 / (1 + math.e)])
    assert image_logit(logits, "mean").tolist() == pytest.approx([LN3 / 2, -2.5])
    assert image_logit(logits, "lse", lse_r=1.0)[0].item() == pytest.approx(math.log(2.0))
    # large r tends to the max, small r to the mean
    assert image_logit(logits, "lse", lse_r=1e4)[1].item() == pytest.approx(-1.0, abs=1e-3)
    assert image_logit(logits, "lse", lse_r=1e-4)[1].item() == pytest.approx(-2.5, abs=1e-3)
    with pytest.raises(ValueError, match="pooling"):
        image_logit(logits, "median")


def test_bad_inputs_are_rejected():
    logits, distance, target = small_example()
    with pytest.raises(ValueError, match="needs the distance map"):
        AASNLoss()((logits, torch.zeros(1, 1, 0, 0)), target)
    with pytest.raises(ValueError, match="needs the distance map"):
        AASNLoss()(logits, target)
    with pytest.raises(ValueError, match=r"target must be \(B, 2, H, W\)"):
        AASNLoss(lambda_contrastive=0)(logits, target[:, :1])
    with pytest.raises(ValueError, match="unknown network variant"):
        loss_for_variant("unet")


def test_every_variant_has_a_loss():
    assert set(VARIANT_LOSSES) == set(VARIANTS)
    assert isinstance(loss_for_variant("liu"), ContrastiveMarginLoss)
    assert not isinstance(loss_for_variant("liu"), AASNLoss)
    assert loss_for_variant("lse", lse_r=5.0).lse_r == 5.0
    assert loss_for_variant("chexnet").pooling == "mean"
    assert loss_for_variant("ff_cl").lambda_contrastive == 0.5
    assert loss_for_variant("ff").lambda_contrastive == 0.0

"""Training losses of AASN (paper Eq. 1-2), of the Liu et al. baseline and of the image-label (CAM) baselines.

All losses take ``(y_pred, y)`` as an Ignite ``SupervisedTrainer`` passes them, with ``y_pred`` either the heatmap
logits (B, 1, H, W) or the pair ``(heatmap logits, distance map d (B, 1, h, w))`` returned by ``forward_with_distance``
(see ``scripts.fracture.inferers.SiameseTrainingInferer``), and ``y`` the ``target`` (B, 2, H, W) = [M, M-hat]: the
fracture mask M (heatmap target) and the contrastive mask M-hat = M ∪ T∘M_f, at ROI resolution.

Normalisation: every sum over pixels is a mean over all pixels of the batch (BCE over the B*H*W heatmap pixels,
the contrastive term over the B*h*w feature pixels), so both terms are per-pixel averages and lambda weighs like
quantities whatever the image size or batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import convert_to_tensor

from scripts.fracture.pooling import SCORE_POOLINGS, image_logit

__all__ = [
    "AASNLoss",
    "ContrastiveMarginLoss",
    "ImageLevelLoss",
    "VARIANT_LOSSES",
    "any_overlap",
    "loss_for_variant",
    "split_prediction",
]

Prediction = torch.Tensor | Sequence[torch.Tensor]


def split_prediction(y_pred: Prediction) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(heatmap logits, distance map or None)`` from a network output (tensor or ``forward_with_distance`` pair)."""
    if isinstance(y_pred, torch.Tensor):
        return convert_to_tensor(y_pred, track_meta=False), None
    if len(y_pred) != 2:
        raise ValueError(f"y_pred must be the heatmap or a (heatmap, distance) pair, got {len(y_pred)} items")
    heatmap, distance = y_pred
    distance = convert_to_tensor(distance, track_meta=False)
    return convert_to_tensor(heatmap, track_meta=False), (None if distance.numel() == 0 else distance)


def _check_target(y: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
    y = convert_to_tensor(y, track_meta=False)
    expected = (heatmap.shape[0], 2, heatmap.shape[2], heatmap.shape[3])
    if tuple(y.shape) != expected:
        raise ValueError(
            f"target must be (B, 2, H, W) = [M, M-hat] at the heatmap's size {list(expected)}, got {list(y.shape)}"
        )
    return y.to(torch.float32)


def any_overlap(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bring a binary mask (B, 1, H, W) to a coarse grid: a coarse pixel is in the mask if any of its pixels is.

    Pixels count as inside when >= 0.5 (robust to interpolated masks). With H, W multiples of the coarse size each
    coarse pixel's footprint is its exact block of pixels (adaptive max pooling).
    """
    inside = (mask >= 0.5).to(torch.float32)
    return F.adaptive_max_pool2d(inside, tuple(int(s) for s in size)) > 0


class ContrastiveMarginLoss(nn.Module):
    """Pixel-wise contrastive margin loss of the paper's Eq. (2) on the squared distance map d = ||g(F) - g(F'_f)||^2.

    ``mean over feature pixels x of [ d(x) if x not in M-hat, max(0, margin - sqrt(d(x)))^2 if x in M-hat ]`` (the
    classic contrastive loss: squared distance for similar pixels, squared hinge on the distance for dissimilar
    ones), M-hat brought to the distance map's resolution by any-overlap. Taking channel 1 (M-hat) of the target, it
    is used alone by the
    Liu et al. baseline and as the lambda-weighted term of :class:`AASNLoss`.

    Args:
        margin: the margin m (paper: 0.5).
    """

    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.margin = float(margin)

    def contrastive(self, distance: torch.Tensor, contrastive_mask: torch.Tensor) -> torch.Tensor:
        """Eq. (2), mean-normalised, for d (B, 1, h, w) and M-hat (B, 1, H, W) at ROI resolution."""
        distance = distance.float()
        fracture = any_overlap(contrastive_mask, distance.shape[-2:])
        # eps keeps the gradient of the root finite where the two embeddings coincide
        hinge = torch.clamp(self.margin - torch.sqrt(distance + 1e-6), min=0.0).pow(2)
        per_pixel = torch.where(fracture, hinge, distance)
        return per_pixel.mean()

    def forward(self, y_pred: Prediction, y: torch.Tensor) -> torch.Tensor:
        heatmap, distance = split_prediction(y_pred)
        if distance is None:
            raise ValueError("ContrastiveMarginLoss needs the distance map: call the network's forward_with_distance")
        return self.contrastive(distance, _check_target(y, heatmap)[:, 1:2])


class AASNLoss(ContrastiveMarginLoss):
    """AASN's total loss, paper Eq. (1): ``L = Lb + lambda * Lc``.

    Lb is the pixel-wise binary cross-entropy (mean over pixels) between the heatmap logits and M (target channel 0);
    Lc is :class:`ContrastiveMarginLoss` on the distance map with M-hat (target channel 1). With
    ``lambda_contrastive=0`` this is the BCE alone (Vanilla, FF, FF-FA, CBN, DeepSymNet) and no distance is needed.

    Args:
        lambda_contrastive: lambda (paper: 0.5).
        margin: the margin m (paper: 0.5).
    """

    def __init__(self, lambda_contrastive: float = 0.5, margin: float = 0.5) -> None:
        super().__init__(margin)
        if lambda_contrastive < 0:
            raise ValueError(f"lambda_contrastive must be >= 0, got {lambda_contrastive}")
        self.lambda_contrastive = float(lambda_contrastive)

    def forward(self, y_pred: Prediction, y: torch.Tensor) -> torch.Tensor:
        heatmap, distance = split_prediction(y_pred)
        target = _check_target(y, heatmap)
        bce = F.binary_cross_entropy_with_logits(heatmap.float(), target[:, 0:1])
        if self.lambda_contrastive == 0:
            return bce
        if distance is None:
            raise ValueError(
                "AASNLoss with lambda_contrastive > 0 needs the distance map: train through "
                "scripts.fracture.inferers.SiameseTrainingInferer with a contrastive variant, or set "
                "lambda_contrastive=0"
            )
        return bce + self.lambda_contrastive * self.contrastive(distance, target[:, 1:2])


class ImageLevelLoss(nn.Module):
    """Image-label loss of the CAM baselines (CheXNet, LSE): BCE between the pooled heatmap logit and the image label.

    The label is 1 when the fracture mask M (target channel 0) has any pixel >= 0.5, i.e. the maximum of M.
    Mean over the batch.

    Args:
        pooling: how the image logit is pooled from the heatmap (``scripts.fracture.pooling``); must match the network's
            ``score_pooling``.
        lse_r: sharpness of LSE pooling.
    """

    def __init__(self, pooling: str = "mean", lse_r: float = 10.0) -> None:
        super().__init__()
        if pooling not in SCORE_POOLINGS:
            raise ValueError(f"pooling must be one of {SCORE_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.lse_r = float(lse_r)

    def forward(self, y_pred: Prediction, y: torch.Tensor) -> torch.Tensor:
        heatmap, _ = split_prediction(y_pred)
        target = _check_target(y, heatmap)
        label = (target[:, 0].flatten(1).amax(dim=1) >= 0.5).to(torch.float32)
        return F.binary_cross_entropy_with_logits(image_logit(heatmap, self.pooling, self.lse_r), label)


VARIANT_LOSSES = {
    "vanilla": "bce",
    "ff": "bce",
    "ff_fa": "bce",
    "ff_cl": "aasn",
    "ff_fa_cl_noproj": "aasn",
    "aasn": "aasn",
    "cbn": "bce",
    "deepsymnet": "bce",
    "liu": "contrastive",
    "chexnet": "image_mean",
    "lse": "image_lse",
}
"""Which loss each network variant of ``scripts.fracture.networks.build_network`` trains with."""


def loss_for_variant(
    variant: str, lambda_contrastive: float = 0.5, margin: float = 0.5, lse_r: float = 10.0
) -> nn.Module:
    """The training loss of a network variant (see ``VARIANT_LOSSES``).

    Args:
        variant: a name of ``scripts.fracture.networks.VARIANTS``.
        lambda_contrastive: lambda of Eq. (1) for the contrastive variants.
        margin: contrastive margin m (contrastive variants and Liu et al.; must match the Liu network's ``margin``).
        lse_r: LSE sharpness (LSE baseline; must match the network's ``lse_r``).
    """
    if variant not in VARIANT_LOSSES:
        raise ValueError(f"unknown network variant {variant!r}; expected one of {sorted(VARIANT_LOSSES)}")
    kind = VARIANT_LOSSES[variant]
    if kind == "bce":
        return AASNLoss(lambda_contrastive=0.0, margin=margin)
    if kind == "aasn":
        return AASNLoss(lambda_contrastive=lambda_contrastive, margin=margin)
    if kind == "contrastive":
        return ContrastiveMarginLoss(margin=margin)
    if kind == "image_mean":
        return ImageLevelLoss(pooling="mean")
    return ImageLevelLoss(pooling="lse", lse_r=lse_r)

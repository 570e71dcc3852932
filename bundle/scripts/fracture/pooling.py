"""Image-level fracture score from heatmap logits.

Every network of this bundle returns heatmap logits (B, 1, H, W) and carries an attribute ``score_pooling`` naming
how its image-level logit is pooled from them:

* ``"max"`` (AASN, its ablations, CBN, DeepSymNet, Liu et al.): the paper's rule, image probability = the maximum of
  the probability heatmap = ``sigmoid(max(logits))``;
* ``"mean"`` (CheXNet): global average pooling followed by a linear layer equals the mean of the class activation
  map, so the image logit is the mean of the heatmap logits;
* ``"lse"`` (LSE pooling, Wang et al. 2017): ``(1 / r) * log(mean(exp(r * logits)))``, between the mean (r -> 0) and
  the max (r -> inf) of the map.

The CAM baselines upsample their map by pixel repetition, so these pooled values equal those of their coarse map.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCORE_POOLINGS", "image_logit", "image_score"]

SCORE_POOLINGS = ("max", "mean", "lse")


def image_logit(logits: torch.Tensor, pooling: str = "max", lse_r: float = 10.0) -> torch.Tensor:
    """Pool heatmap logits (B, C, H, W) or (B, H, W) into one image logit per item, shape (B,), float32.

    Args:
        logits: heatmap logits; everything but the batch axis is pooled.
        pooling: ``"max"``, ``"mean"`` or ``"lse"``.
        lse_r: sharpness r of the LSE pooling.
    """
    if pooling not in SCORE_POOLINGS:
        raise ValueError(f"pooling must be one of {SCORE_POOLINGS}, got {pooling!r}")
    flat = torch.as_tensor(logits).float().flatten(1)
    if pooling == "max":
        return flat.amax(dim=1)
    if pooling == "mean":
        return flat.mean(dim=1)
    if lse_r <= 0:
        raise ValueError(f"lse_r must be positive, got {lse_r}")
    return (torch.logsumexp(lse_r * flat, dim=1) - math.log(flat.shape[1])) / lse_r


def image_score(logits: torch.Tensor, pooling: str = "max", lse_r: float = 10.0) -> torch.Tensor:
    """Image-level fracture probability (B,) = ``sigmoid(image_logit(logits, pooling, lse_r))``."""
    return torch.sigmoid(image_logit(logits, pooling, lse_r))

"""Baselines of the paper's Table 1 that are not fusion variants of :class:`scripts.fracture.aasn.AASN`.

CBN (gated concatenation) and DeepSymNet (absolute-difference fusion) are ``AASN(fusion=..., alignment="image",
contrastive=False)``: see ``scripts.fracture.networks``. This file holds the two other kinds, all on the same DenseNet
backbone and the same packed input (B, 8, H, W):

* :class:`SymmetryDistanceNet` (Liu et al.): a Siamese encoder and projection head trained with the contrastive
  margin loss alone; the learned distance itself is the fracture map.
* :class:`DenseNetCAM` (CheXNet; LSE pooling of Wang et al.): the whole DenseNet on the ROI alone, trained from image
  labels; the heatmap is the class activation map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from scripts.fracture.aasn import (
    ALIGNMENTS,
    HeatmapHead,
    ProjectionHead,
    SiameseDenseNetBase,
    densenet_features,
    densenet_parts,
    empty_distance,
    initialise_weights,
    squared_distance,
)
from scripts.fracture.pooling import SCORE_POOLINGS

__all__ = ["DenseNetCAM", "SymmetryDistanceNet"]


class SymmetryDistanceNet(SiameseDenseNetBase):
    """Liu et al. baseline: the learned Siamese feature distance used directly as the fracture map.

    ROI and (image-aligned) mirrored ROI go through the shared encoder (conv0 .. dense block ``split_block``) and the
    projection head g; ``d = ||g(F) - g(F'_f)||^2`` at feature resolution. The heatmap logits are ``d - margin``,
    bilinearly upsampled: probability 0.5 where the distance equals the contrastive margin, the boundary the loss
    (``scripts.fracture.losses.ContrastiveMarginLoss``) draws between symmetric and fractured pixels.

    Args:
        margin: the contrastive margin, the same as the loss's.
        alignment: ``"image"`` (as in the paper's comparison) or ``"feature"``.
        in_channels, init_features, growth_rate, block_config, bn_size, split_block, projection_channels,
        dropout_prob: as :class:`scripts.fracture.aasn.AASN`.
    """

    def __init__(
        self,
        margin: float = 0.5,
        alignment: str = "image",
        in_channels: int = 3,
        init_features: int = 64,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
        split_block: int = 3,
        projection_channels: int = 128,
        dropout_prob: float = 0.0,
    ) -> None:
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.margin = float(margin)
        self.alignment = alignment
        self.in_channels = in_channels
        self.score_pooling = "max"
        self.stride = 2 ** (len(block_config) + 1)
        self.encoder, transition, _ = densenet_parts(
            split_block, in_channels, init_features, growth_rate, block_config, bn_size, dropout_prob
        )
        self.projection = ProjectionHead(transition.conv.in_channels, projection_channels)
        initialise_weights(self.projection)

    def densenet_prefixes(self) -> dict[str, str]:
        """Where MONAI DenseNet's ``features.<child>`` modules live in this network (for pretrained weights)."""
        return {f"features.{name}": f"encoder.{name}" for name, _ in self.encoder.named_children()}

    @torch.jit.export
    def forward_with_distance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(heatmap logits (B, 1, H, W) = upsampled d - margin, distance map d (B, 1, H/s, W/s))``."""
        self._check_input(x)
        features, mirrored = self.siamese_features(x)
        embedded = self.projection(torch.cat([features, mirrored], dim=0))
        batch = x.shape[0]
        distance = squared_distance(embedded[:batch], embedded[batch:])
        heatmap = F.interpolate(
            distance - self.margin, size=[x.shape[2], x.shape[3]], mode="bilinear", align_corners=False
        )
        return heatmap, distance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmap logits (B, 1, H, W)."""
        return self.forward_with_distance(x)[0]


class DenseNetCAM(SiameseDenseNetBase):
    """CheXNet / LSE-pooling baseline: DenseNet on the ROI alone, trained with image labels, heatmap = CAM.

    The classifier is a per-pixel linear layer (1x1 conv) on the final ReLU features, giving the class activation map;
    the image logit is the map pooled by ``score_pooling`` (see ``scripts.fracture.pooling``): ``"mean"`` is exactly
    CheXNet's global average pooling + linear layer, ``"lse"`` is LSE pooling applied to the class map. The map is
    upsampled to the input size by pixel repetition so that pooling the returned heatmap gives the trained logit. The
    mirrored ROI and grid channels of the input are ignored.

    Args:
        score_pooling: ``"mean"`` (CheXNet) or ``"lse"`` (Wang et al.); ``"max"`` is allowed too.
        lse_r: sharpness r of LSE pooling.
        in_channels, init_features, growth_rate, block_config, bn_size, dropout_prob: as
        :class:`scripts.fracture.aasn.AASN`.
    """

    def __init__(
        self,
        score_pooling: str = "mean",
        lse_r: float = 10.0,
        in_channels: int = 3,
        init_features: int = 64,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
        dropout_prob: float = 0.0,
    ) -> None:
        super().__init__()
        if score_pooling not in SCORE_POOLINGS:
            raise ValueError(f"score_pooling must be one of {SCORE_POOLINGS}, got {score_pooling!r}")
        self.score_pooling = score_pooling
        self.lse_r = float(lse_r)
        self.alignment = "image"
        self.in_channels = in_channels
        self.stride = 2 ** (len(block_config) + 1)
        self.features = densenet_features(in_channels, init_features, growth_rate, block_config, bn_size, dropout_prob)
        self.head = HeatmapHead(self.features.norm5.num_features, upsample_mode="nearest")
        initialise_weights(self.head)

    def densenet_prefixes(self) -> dict[str, str]:
        """Where MONAI DenseNet's ``features.<child>`` modules live in this network (for pretrained weights)."""
        return {f"features.{name}": f"features.{name}" for name, _ in self.features.named_children()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class activation map logits (B, 1, H, W)."""
        self._check_input(x)
        return self.head(self.features(x[:, : self.in_channels]), [x.shape[2], x.shape[3]])

    @torch.jit.export
    def forward_with_distance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(CAM logits (B, 1, H, W), empty distance (B, 1, 0, 0))``: this baseline has no distance map."""
        return self.forward(x), empty_distance(x)

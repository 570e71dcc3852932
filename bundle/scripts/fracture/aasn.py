"""Anatomy-Aware Siamese Network (AASN, Chen et al., ECCV 2020, §3.3-3.5, Fig. 3-4) and its ablation variants.

The network is MONAI's DenseNet (DenseNet-121 by default) cut in two after dense block ``split_block``:

* **encoder** (conv0 .. dense block ``split_block``), one set of weights run on the ROI and on the mirrored ROI in a
  single batched pass (the two streams are stacked along the batch axis);
* **alignment** of the mirrored stream by the TPS sampling grid, either on the encoder features (``"feature"``, the
  paper's FA: the grid is resized to the feature resolution) or on the mirrored ROI before encoding (``"image"``);
* **fusion inside transition ``split_block``** after its ReLU (paper Fig. 4c): norm and ReLU run on both streams, the
  streams are fused, and only the 1x1 conv sees the fused channels (twice as many for concatenation);
* **decoder**: the rest of the DenseNet (remaining dense blocks and transitions, norm5) and a heatmap head
  (ReLU, 1x1 conv to one channel of logits at 1/32 resolution, bilinear upsampling to the input size);
* **projection head** g (1x1 conv = per-pixel linear, BatchNorm, ReLU) on the encoder features of both streams, its
  output scaled to unit length per pixel, giving the squared distance map ``d(x) = ||g(F(x)) - g(F'_f(x))||^2`` in
  [0, 4] used by the contrastive loss (paper Eq. 2). The paper does not say how g's output is scaled; its margin
  m = 0.5 only has a fixed meaning on normalised embeddings (with 128 unnormalised channels d is in the tens).

Input, ``siamese_input`` (B, 8, H, W): channels 0-2 the ROI, 3-5 the mirrored ROI, 6-7 the TPS sampling grid
(for every ROI pixel, where to sample the mirrored ROI; normalised [-1, 1], channel 6 = x, channel 7 = y,
``grid_sample(..., align_corners=False)`` convention). H and W must be multiples of the DenseNet's total stride (32).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import DenseNet

__all__ = [
    "AASN",
    "AbsDifferenceFusion",
    "ConcatFusion",
    "GatedConcatFusion",
    "HeatmapHead",
    "ProjectionHead",
    "SiameseDenseNetBase",
    "SiameseFusionTransition",
    "SIAMESE_INPUT_CHANNELS",
    "densenet_features",
    "densenet_parts",
    "empty_distance",
    "initialise_weights",
    "squared_distance",
    "warp",
]

SIAMESE_INPUT_CHANNELS = 8
"""ROI (3) + mirrored ROI (3) + TPS sampling grid (2)."""

FUSIONS = ("none", "concat", "gated_concat", "abs_difference")
ALIGNMENTS = ("feature", "image")


def warp(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at ``grid``: ``out[..., i, j] = image at grid[:, :, i, j]``.

    Args:
        image: (B, C, h, w) image or feature map.
        grid: (B, 2, H, W) normalised sampling positions (channel 0 = x, 1 = y, ``align_corners=False``). When its size
            differs from the image's, it is resampled bilinearly to (h, w): with ``align_corners=False`` the centre of
            a coarse pixel is the centre of its footprint, so a smooth warp is evaluated where the coarse pixel lies.

    Positions outside [-1, 1] take the nearest border value ("border" padding), so that the aligned map has no
    artificial zeros where the TPS reaches slightly past the ROI.
    """
    size = [image.shape[-2], image.shape[-1]]
    if grid.shape[-2] != size[0] or grid.shape[-1] != size[1]:
        grid = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
    grid = grid.to(image.dtype).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def squared_distance(features: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per-pixel squared Euclidean distance over channels, (B, C, h, w) x 2 -> (B, 1, h, w), computed in float32."""
    return (features.float() - other.float()).pow(2).sum(dim=1, keepdim=True)


def empty_distance(x: torch.Tensor) -> torch.Tensor:
    """The distance map of a variant that has none: shape (B, 1, 0, 0), float32 (``numel() == 0``)."""
    return torch.zeros((x.shape[0], 1, 0, 0), dtype=torch.float32, device=x.device)


def initialise_weights(module: nn.Module) -> None:
    """MONAI DenseNet's initialisation for modules added to it: Kaiming-normal convs, BatchNorm (1, 0), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def densenet_features(
    in_channels: int = 3,
    init_features: int = 64,
    growth_rate: int = 32,
    block_config: Sequence[int] = (6, 12, 24, 16),
    bn_size: int = 4,
    dropout_prob: float = 0.0,
) -> nn.Sequential:
    """MONAI's 2D DenseNet ``features`` (conv0 .. norm5), with each transition pooling before its 1x1 conv.

    A transition is BatchNorm, ReLU, 1x1 conv (no bias), 2x2 average pooling. The conv and the pooling are both linear
    and act on different axes (channels, space), so pooling first computes the same function with a quarter of the
    conv's multiply-adds. Module names and parameter shapes stay MONAI's (``transitionI.norm``, ``.conv`` ...).
    """
    densenet = DenseNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=1,
        init_features=init_features,
        growth_rate=growth_rate,
        block_config=block_config,
        bn_size=bn_size,
        dropout_prob=dropout_prob,
    )
    children = []
    for name, module in densenet.features.named_children():
        if name.startswith("transition"):
            order = ("norm", "relu", "pool", "conv")
            module = nn.Sequential(OrderedDict((part, getattr(module, part)) for part in order))
        children.append((name, module))
    return nn.Sequential(OrderedDict(children))


def densenet_parts(
    split_block: int,
    in_channels: int = 3,
    init_features: int = 64,
    growth_rate: int = 32,
    block_config: Sequence[int] = (6, 12, 24, 16),
    bn_size: int = 4,
    dropout_prob: float = 0.0,
) -> tuple[nn.Sequential, nn.Module, nn.Sequential]:
    """Cut the DenseNet of :func:`densenet_features` after dense block ``split_block``.

    Returns:
        ``(encoder, transition, decoder)``: conv0 .. dense block ``split_block``; transition ``split_block``
        (norm, relu, pool, conv); the remaining dense blocks, transitions and norm5. Module names inside each part are
        MONAI's (``denseblock1``, ``transition1``, ``norm5`` ...), which the pretrained-weight mapping relies on.
    """
    if not 1 <= split_block < len(block_config):
        raise ValueError(
            f"split_block must be in 1..{len(block_config) - 1} (a transition must follow the split), got {split_block}"
        )
    features = densenet_features(in_channels, init_features, growth_rate, block_config, bn_size, dropout_prob)
    children = list(features.named_children())
    split_at = [name for name, _ in children].index(f"transition{split_block}")
    encoder = nn.Sequential(OrderedDict(children[:split_at]))
    transition = children[split_at][1]
    decoder = nn.Sequential(OrderedDict(children[split_at + 1 :]))
    return encoder, transition, decoder


class ConcatFusion(nn.Module):
    """AASN / FF fusion: channel concatenation ``[F, F'_f]`` (the transition conv gets twice the channels)."""

    channel_factor = 2

    def forward(self, features: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
        return torch.cat([features, mirrored], dim=1)


class GatedConcatFusion(nn.Module):
    """CBN-style fusion (baseline): concatenation with the contralateral features weighted by a learned gate.

    ``[F, sigmoid(W [F, F'_f] + b) * F'_f]``: a per-pixel, per-channel gate computed from both streams decides how much
    of the mirrored side is passed on. This is our reading of "concatenation with gating", not CBN's full design.

    Args:
        channels: channels of each stream.
    """

    channel_factor = 2

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(2 * channels, channels, kernel_size=1, bias=True)

    def forward(self, features: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
        both = torch.cat([features, mirrored], dim=1)
        gate = torch.sigmoid(self.gate(both))
        return torch.cat([features, gate * mirrored], dim=1)


class AbsDifferenceFusion(nn.Module):
    """DeepSymNet-style fusion (baseline): the absolute difference ``|F - F'_f|`` (transition conv keeps its size)."""

    channel_factor = 1

    def forward(self, features: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
        return torch.abs(features - mirrored)


class SiameseFusionTransition(nn.Module):
    """A DenseNet transition (BatchNorm, ReLU, 1x1 conv, 2x2 avg-pool) that fuses two streams after its ReLU.

    Norm and ReLU (shared) run on both streams in one batched call; the fusion module combines them; the 1x1 conv has
    ``channel_factor`` times the transition's input channels. The pooling runs before the conv, which is the same
    function (both linear) at a quarter of the cost, as in :func:`densenet_features`. With ``fusion=None`` this is the
    plain transition (Vanilla), called with ``mirrored=None``.

    Args:
        transition: a DenseNet transition whose norm, relu and pool are reused; its conv is replaced when the fusion
            changes the channel count.
        fusion: the fusion module or ``None``.
    """

    def __init__(self, transition: nn.Module, fusion: nn.Module | None) -> None:
        super().__init__()
        self.norm = transition.norm
        self.relu = transition.relu
        self.fusion = fusion
        conv: nn.Conv2d = transition.conv
        factor = 1 if fusion is None else int(fusion.channel_factor)
        if factor != 1:
            conv = nn.Conv2d(factor * conv.in_channels, conv.out_channels, kernel_size=1, bias=False)
            nn.init.kaiming_normal_(conv.weight)
        self.conv = conv
        self.pool = transition.pool

    def forward(self, features: torch.Tensor, mirrored: torch.Tensor | None = None) -> torch.Tensor:
        if mirrored is None:
            return self.conv(self.pool(self.relu(self.norm(features))))
        batch = features.shape[0]
        both = self.relu(self.norm(torch.cat([features, mirrored], dim=0)))
        fusion = self.fusion
        if fusion is None:
            raise RuntimeError("SiameseFusionTransition without fusion was given a mirrored stream")
        fused = fusion(both[:batch], both[batch:])
        return self.conv(self.pool(fused))


class ProjectionHead(nn.Module):
    """Non-linear projection g of the contrastive branch: per-pixel linear (1x1 conv), BatchNorm, ReLU (paper §3.5).

    Args:
        in_channels: encoder feature channels.
        out_channels: embedding channels (the paper does not give it; 128 by default).
    """

    def __init__(self, in_channels: int, out_channels: int = 128) -> None:
        super().__init__()
        self.linear = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        self.norm = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.linear(x)))


class HeatmapHead(nn.Module):
    """Final ReLU (as DenseNet applies after norm5), 1x1 conv to one logit channel, upsampling to the input size.

    Args:
        in_channels: decoder output channels.
        upsample_mode: ``"bilinear"`` (``align_corners=False``, the default: a smooth map whose values at the coarse
            pixel centres are the coarse logits) or ``"nearest"`` (each coarse logit repeated over its footprint; keeps
            the mean, max and LSE of the map exactly, used by the CAM baselines).
    """

    def __init__(self, in_channels: int, upsample_mode: str = "bilinear") -> None:
        super().__init__()
        if upsample_mode not in ("bilinear", "nearest"):
            raise ValueError(f"upsample_mode must be 'bilinear' or 'nearest', got {upsample_mode!r}")
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1, bias=True)
        self.upsample_mode = upsample_mode

    def coarse(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the decoder resolution."""
        return self.conv(self.relu(x))

    def forward(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        logits = self.coarse(x)
        if self.upsample_mode == "nearest":
            return F.interpolate(logits, size=size, mode="nearest")
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SiameseDenseNetBase(nn.Module):
    """Input checking and the Siamese encoding shared by the networks of this bundle.

    Subclasses set ``self.encoder`` (conv0 .. dense block ``split_block``), ``self.alignment``, ``self.in_channels``,
    ``self.stride`` (total DenseNet stride, 32) and ``self.score_pooling``.
    """

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 2 * self.in_channels + 2:
            raise ValueError(
                f"siamese_input must be (B, {2 * self.in_channels + 2}, H, W) = [ROI, mirrored ROI, TPS grid (x, y)], "
                f"got shape {list(x.shape)}"
            )
        if x.shape[2] % self.stride != 0 or x.shape[3] % self.stride != 0:
            raise ValueError(
                f"siamese_input height and width must be multiples of {self.stride} (the DenseNet stride), got "
                f"{x.shape[2]}x{x.shape[3]}"
            )

    def siamese_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features of the ROI, F, and of the mirrored ROI aligned onto it, F'_f (both (B, C, H/s, W/s)).

        Both streams go through the shared encoder in one batched call. ``alignment="image"`` warps the mirrored ROI
        by the TPS grid before encoding; ``"feature"`` warps the mirrored features with the grid resized to their
        resolution.
        """
        c = self.in_channels
        roi = x[:, :c]
        mirrored = x[:, c : 2 * c]
        grid = x[:, 2 * c : 2 * c + 2]
        if self.alignment == "image":
            mirrored = warp(mirrored, grid)
        both = self.encoder(torch.cat([roi, mirrored], dim=0))
        batch = x.shape[0]
        features = both[:batch]
        mirrored_features = both[batch:]
        if self.alignment == "feature":
            mirrored_features = warp(mirrored_features, grid)
        return features, mirrored_features


class AASN(SiameseDenseNetBase):
    """Anatomy-Aware Siamese Network and the ablations of the paper's Table 2 (and the CBN / DeepSymNet fusions).

    ``forward(x)`` returns heatmap logits (B, 1, H, W) at input resolution (inference, export, inferers).
    ``forward_with_distance(x)`` returns ``(heatmap logits, distance map d (B, 1, H/s, W/s))`` with
    s = 2**(split_block + 1) (16 at the default split); variants without contrastive learning return a distance of
    shape (B, 1, 0, 0).

    Args:
        fusion: ``"concat"`` (AASN, FF), ``"none"`` (Vanilla: only the ROI is encoded), ``"gated_concat"`` (CBN),
            ``"abs_difference"`` (DeepSymNet).
        alignment: ``"feature"`` (warp the mirrored encoder features, FA) or ``"image"`` (warp the mirrored ROI before
            encoding). Unused when ``fusion="none"``.
        contrastive: compute the distance map for the contrastive loss (CL). Needs a mirrored stream.
        projection: apply the projection head g before the distance (otherwise d is taken on the encoder features).
            Used only with ``contrastive``.
        in_channels: channels per ROI (3: pseudo-colour).
        init_features: DenseNet stem filters (64 for DenseNet-121).
        growth_rate: DenseNet growth rate k (32).
        block_config: dense layers per block ((6, 12, 24, 16)).
        bn_size: bottleneck factor (4).
        split_block: the dense block after which encoder and decoder are split (3, as in the paper).
        projection_channels: output channels of g.
        dropout_prob: dropout after each dense layer (0).
    """

    def __init__(
        self,
        fusion: str = "concat",
        alignment: str = "feature",
        contrastive: bool = True,
        projection: bool = True,
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
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if contrastive and fusion == "none":
            raise ValueError("contrastive=True needs the mirrored stream; it cannot be combined with fusion='none'")
        self.fusion_mode = fusion
        self.alignment = alignment
        self.in_channels = in_channels
        self.split_block = split_block
        self.score_pooling = "max"
        self.stride = 2 ** (len(block_config) + 1)
        self.feature_stride = 2 ** (split_block + 1)

        self.encoder, transition, self.decoder = densenet_parts(
            split_block, in_channels, init_features, growth_rate, block_config, bn_size, dropout_prob
        )
        feature_channels: int = transition.conv.in_channels
        fusion_module: nn.Module | None = None
        if fusion == "concat":
            fusion_module = ConcatFusion()
        elif fusion == "gated_concat":
            fusion_module = GatedConcatFusion(feature_channels)
            initialise_weights(fusion_module)
        elif fusion == "abs_difference":
            fusion_module = AbsDifferenceFusion()
        self.transition = SiameseFusionTransition(transition, fusion_module)
        self.head = HeatmapHead(self.decoder.norm5.num_features)
        initialise_weights(self.head)

        self.projection = None
        if contrastive:
            self.projection = ProjectionHead(feature_channels, projection_channels) if projection else nn.Identity()
            initialise_weights(self.projection)

    def densenet_prefixes(self) -> dict[str, str]:
        """Where MONAI DenseNet's ``features.<child>`` modules live in this network (for pretrained weights)."""
        prefixes = {f"features.{name}": f"encoder.{name}" for name, _ in self.encoder.named_children()}
        prefixes[f"features.transition{self.split_block}"] = "transition"
        prefixes.update({f"features.{name}": f"decoder.{name}" for name, _ in self.decoder.named_children()})
        return prefixes

    def _heatmap(self, features: torch.Tensor, mirrored: torch.Tensor | None, size: list[int]) -> torch.Tensor:
        return self.head(self.decoder(self.transition(features, mirrored)), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmap logits (B, 1, H, W) of the packed ``siamese_input`` x (B, 8, H, W)."""
        self._check_input(x)
        size = [x.shape[2], x.shape[3]]
        if self.fusion_mode == "none":
            return self._heatmap(self.encoder(x[:, : self.in_channels]), None, size)
        features, mirrored = self.siamese_features(x)
        return self._heatmap(features, mirrored, size)

    @torch.jit.export
    def forward_with_distance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(heatmap logits (B, 1, H, W), distance map d (B, 1, H/s, W/s) or (B, 1, 0, 0) without CL)``."""
        self._check_input(x)
        size = [x.shape[2], x.shape[3]]
        if self.fusion_mode == "none":
            return self._heatmap(self.encoder(x[:, : self.in_channels]), None, size), empty_distance(x)
        features, mirrored = self.siamese_features(x)
        heatmap = self._heatmap(features, mirrored, size)
        projection = self.projection
        if projection is None:
            return heatmap, empty_distance(x)
        # Unit-length embeddings: d lies in [0, 4] whatever the embedding width, so the margin m = 0.5 keeps one
        # meaning. Unnormalised, d grows with the channels (about 30 times the BCE at initialisation with 128)
        # and the contrastive term drowns the heatmap's loss (tests/test_network_training.py, planted lesion).
        embedded = F.normalize(projection(torch.cat([features, mirrored], dim=0)), dim=1)
        batch = x.shape[0]
        return heatmap, squared_distance(embedded[:batch], embedded[batch:])

"""``build_network(variant, **kwargs)``: the AASN, its ablations (paper Table 2) and baselines (Table 1) by name.

=================== ================================================ ================= ===============
variant             network                                          loss              image score
=================== ================================================ ================= ===============
``vanilla``         DenseNet-121 on the ROI alone                     BCE               max
``ff``              concat fusion, image alignment                   BCE               max
``ff_fa``           concat fusion, feature alignment                 BCE               max
``ff_cl``           concat fusion, image alignment, CL with g        BCE + 0.5 Lc      max
``ff_fa_cl_noproj`` concat fusion, feature alignment, CL without g   BCE + 0.5 Lc      max
``aasn``            concat fusion, feature alignment, CL with g      BCE + 0.5 Lc      max
``cbn``             gated concat fusion, image alignment             BCE               max
``deepsymnet``      absolute-difference fusion, image alignment      BCE               max
``liu``             Siamese distance d as the map (logits d - m)     Lc alone          max
``chexnet``         CAM, global average pooling                      image-label BCE   mean
``lse``             CAM, LSE pooling                                 image-label BCE   lse
=================== ================================================ ================= ===============

The loss column is ``scripts.fracture.losses.loss_for_variant(variant)``; the image score is the network's
``score_pooling`` (``scripts.fracture.pooling.image_score``). Every network takes ``siamese_input`` (B, 8, H, W),
returns heatmap logits (B, 1, H, W) from ``forward`` and ``(heatmap, distance)`` from ``forward_with_distance``.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
import torch.nn as nn

from scripts.fracture.aasn import AASN
from scripts.fracture.baselines import DenseNetCAM, SymmetryDistanceNet

__all__ = ["VARIANTS", "build_network"]

logger = logging.getLogger(__name__)

VARIANTS: dict[str, dict[str, Any]] = {
    "vanilla": {"fusion": "none", "contrastive": False},
    "ff": {"fusion": "concat", "alignment": "image", "contrastive": False},
    "ff_fa": {"fusion": "concat", "alignment": "feature", "contrastive": False},
    "ff_cl": {"fusion": "concat", "alignment": "image", "contrastive": True, "projection": True},
    "ff_fa_cl_noproj": {"fusion": "concat", "alignment": "feature", "contrastive": True, "projection": False},
    "aasn": {"fusion": "concat", "alignment": "feature", "contrastive": True, "projection": True},
    "cbn": {"fusion": "gated_concat", "alignment": "image", "contrastive": False},
    "deepsymnet": {"fusion": "abs_difference", "alignment": "image", "contrastive": False},
    "liu": {},
    "chexnet": {"score_pooling": "mean"},
    "lse": {"score_pooling": "lse"},
}
"""Constructor arguments that define each variant (the rest, e.g. the DenseNet size, comes from ``build_network``)."""


def _network_class(variant: str) -> type:
    if variant == "liu":
        return SymmetryDistanceNet
    if variant in ("chexnet", "lse"):
        return DenseNetCAM
    return AASN


def _parameters(cls: type) -> set:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def build_network(
    variant: str = "aasn",
    pretrained: str | None = None,
    doubled_conv_rule: str = "original",
    channels_last: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a network variant, optionally initialised from a torchvision-format DenseNet-121 state dict.

    Args:
        variant: a key of ``VARIANTS``.
        pretrained: path of a torchvision-format DenseNet state dict (e.g. ImageNet ``densenet121-a639ec97.pth``),
        loaded with ``scripts.fracture.pretrained.load_torchvision_densenet``; the report of unmatched keys is logged.
        doubled_conv_rule: how the fused transition conv is initialised from the pretrained one
            (``scripts.fracture.pretrained.DOUBLED_CONV_RULES``).
        channels_last: store the conv weights channels-last (NHWC). Convolutions then produce channels-last outputs
            whatever the input's layout, which oneDNN (CPU) and tensor cores (CUDA) run faster; values are unchanged.
        kwargs: constructor arguments (DenseNet size ``init_features``, ``growth_rate``, ``block_config``,
            ``bn_size``; ``split_block``, ``projection_channels``, ``margin``, ``lse_r`` ...). Arguments of the other
            variants' networks are ignored (logged), so one ``network_kwargs`` serves every variant; unknown names
            raise ``TypeError``; the arguments that define the variant cannot be overridden.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown network variant {variant!r}; expected one of {sorted(VARIANTS)}")
    defining = VARIANTS[variant]
    clash = sorted(set(defining) & set(kwargs))
    if clash:
        raise ValueError(f"build_network({variant!r}): {clash} define the variant and cannot be overridden")
    cls = _network_class(variant)
    accepted = _parameters(cls)
    known = set().union(*(_parameters(c) for c in (AASN, SymmetryDistanceNet, DenseNetCAM)))
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(
            f"build_network({variant!r}): unknown network arguments {unknown}; expected some of {sorted(known)}"
        )
    ignored = sorted(set(kwargs) - accepted)
    if ignored:  # shared network_kwargs of a bundle config, meaningful for other variants only
        logger.info("build_network(%r): %s does not use %s", variant, cls.__name__, ignored)
    network = cls(**defining, **{k: v for k, v in kwargs.items() if k in accepted})
    if pretrained is not None:
        from scripts.fracture.pretrained import load_torchvision_densenet

        report = load_torchvision_densenet(network, pretrained, doubled_conv_rule=doubled_conv_rule)
        logger.info("%s initialised from %s: %s", variant, pretrained, report)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network

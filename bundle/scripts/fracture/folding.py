"""BatchNorm folded into the convolution before it, for inference: ``fold_batchnorm(network)`` returns a copy.

In eval mode a BatchNorm is a per-channel affine map ``y = s * x + t`` (``s = weight / sqrt(running_var + eps)``,
``t = bias - s * running_mean``). When it directly follows a convolution (no activation between them) the two are
one convolution with weights ``s * W`` and bias ``s * b + t``; the BatchNorm's pass over the activations goes.

In this bundle's networks that is:

* each dense layer's ``conv1 -> norm2`` (MONAI's ``_DenseLayer.layers`` sequence) and the stem's ``conv0 -> norm0``,
  i.e. every convolution directly followed by a BatchNorm inside an ``nn.Sequential``;
* the projection head's ``linear -> norm`` (``scripts.fracture.aasn.ProjectionHead``).

The other BatchNorms come *before* a ReLU and their convolution (DenseNet's pre-activation ``norm1``, the
transitions' ``norm``, ``norm5``), so they cannot be folded into a convolution and stay as they are.

The copy is for inference only: it is in eval mode, its BatchNorms that were folded are ``nn.Identity`` (so its
``state_dict`` is not the network's), and it computes the network's eval-mode function within float rounding
(tested against eager at 1e-4). Weights keep their memory format (channels-last stays channels-last). TorchScript
networks are returned as they are (``torch.jit.freeze`` folds them).
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from scripts.fracture.aasn import ProjectionHead

__all__ = ["fold_batchnorm"]

logger = logging.getLogger(__name__)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(norm) is nn.BatchNorm2d
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.running_var is not None
        and conv.out_channels == norm.num_features
    )


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    channels_last = conv.weight.dim() == 4 and conv.weight.is_contiguous(memory_format=torch.channels_last)
    fused = fuse_conv_bn_eval(conv.eval(), norm.eval())
    if channels_last and not fused.weight.is_contiguous(memory_format=torch.channels_last):
        fused = fused.to(memory_format=torch.channels_last)
    return fused


def _fold_module(module: nn.Module) -> int:
    """Fold in place inside ``module`` and its children; returns how many BatchNorms were folded."""
    folded = 0
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if conv is not None and norm is not None and _foldable(conv, norm):
                module._modules[first] = _fold(conv, norm)
                module._modules[second] = nn.Identity()
                folded += 1
    if isinstance(module, ProjectionHead) and _foldable(module.linear, module.norm):
        module.linear = _fold(module.linear, module.norm)
        module.norm = nn.Identity()
        folded += 1
    for child in module.children():
        folded += _fold_module(child)
    return folded


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """An eval-mode copy of ``network`` with every BatchNorm that directly follows a convolution folded into it
    (module docstring); the network itself is left unchanged. A TorchScript network is returned unchanged.

    Args:
        network: a bundle network (``scripts.fracture.networks.build_network``) or any ``nn.Module``.
    """
    if isinstance(network, torch.jit.ScriptModule):
        return network
    folded_network = copy.deepcopy(network).eval()
    with torch.no_grad():
        count = _fold_module(folded_network)
    logger.debug("fold_batchnorm: %d BatchNorm layers folded into %s", count, type(network).__name__)
    return folded_network

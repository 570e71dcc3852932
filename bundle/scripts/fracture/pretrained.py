"""ImageNet initialisation from a local torchvision-format DenseNet state dict (no download).

Name mapping, in two steps:

1. torchvision -> MONAI DenseNet: ``features.denseblockI.denselayerJ.<norm1|conv1|norm2|conv2>.<p>`` becomes
   ``features.denseblockI.denselayerJ.layers.<...>.<p>`` (MONAI keeps each dense layer in a ``layers`` Sequential);
   torchvision's legacy spelling ``norm.1`` / ``conv.2`` is accepted too, and a ``module.`` prefix is dropped. Every
   other name (``conv0``, ``norm0``, ``transitionI``, ``norm5``) is the same in both.
2. MONAI DenseNet -> this bundle's network: each network's ``densenet_prefixes()`` says where ``features.<child>``
   lives (AASN: ``encoder.*`` up to the split block, ``transition.*`` for the fused transition, ``decoder.*`` after).

The doubled transition conv (fusion by concatenation: input ``[F, F'_f]``, 2C channels) is initialised from the
pretrained conv W (C channels) by ``doubled_conv_rule``:

* ``"original"`` (default): ``[W, 0]``. The fused network then computes exactly the pretrained single-stream
  DenseNet, ignoring the mirrored stream until training gives it weight, so every symmetry variant starts from
  Vanilla's initialisation (the mirrored half still receives gradients from the first step).
* ``"average"``: ``[W / 2, W / 2]``. Identical to the pretrained network wherever the two streams agree.

Keys that find no place (the 1000-class ``classifier``, shape mismatches) are reported, as are the network's
parameters that stay at their random initialisation (heatmap head, projection head, gates).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = [
    "DOUBLED_CONV_RULES",
    "PretrainedReport",
    "load_torchvision_densenet",
    "read_state_dict",
    "torchvision_to_monai_key",
]

DOUBLED_CONV_RULES = ("original", "average")

_DENSE_LAYER = re.compile(
    r"^(?P<layer>.*denselayer\d+)\.(?P<module>norm|relu|conv)\.?(?P<index>[12])\.(?P<param>[a-z_]+)$"
)


def torchvision_to_monai_key(key: str) -> str:
    """Name of a torchvision DenseNet state-dict entry in MONAI's DenseNet (see the module docstring)."""
    if key.startswith("module."):
        key = key[len("module.") :]
    match = _DENSE_LAYER.match(key)
    if match:
        return f"{match['layer']}.layers.{match['module']}{match['index']}.{match['param']}"
    return key


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict with ``weights_only=True``, opening a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in loaded and isinstance(loaded[wrapper], Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path}: expected a state dict (a mapping of parameter names to tensors)")
    return dict(loaded)


@dataclass
class PretrainedReport:
    """What :func:`load_torchvision_densenet` did, by key.

    Attributes:
        loaded: network keys copied from the source.
        fused: network keys (doubled transition convs) initialised from the source by the doubled-conv rule.
        unmatched: source key -> why it was not used.
        not_initialised: network keys left at their random initialisation (BatchNorm ``num_batches_tracked``
            counters aside).
    """

    loaded: list[str] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)
    unmatched: dict[str, str] = field(default_factory=dict)
    not_initialised: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"{len(self.loaded)} tensors loaded, {len(self.fused)} doubled convs initialised "
            f"({', '.join(self.fused) or '-'}), {len(self.unmatched)} source keys unmatched, "
            f"{len(self.not_initialised)} network keys not initialised"
        ]
        lines += [f"  unmatched {key}: {why}" for key, why in sorted(self.unmatched.items())]
        lines += [f"  not initialised {key}" for key in sorted(self.not_initialised)]
        return "\n".join(lines)


def _doubled(weight: torch.Tensor, target_shape: torch.Size, rule: str) -> torch.Tensor:
    channels = weight.shape[1]
    doubled = torch.zeros(target_shape, dtype=weight.dtype)
    if rule == "original":
        doubled[:, :channels] = weight
    else:
        doubled[:, :channels] = weight / 2
        doubled[:, channels:] = weight / 2
    return doubled


def load_torchvision_densenet(
    network: nn.Module,
    state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    doubled_conv_rule: str = "original",
) -> PretrainedReport:
    """Initialise ``network``'s DenseNet parts from a torchvision-format DenseNet state dict, in place.

    Args:
        network: a bundle network with ``densenet_prefixes()`` (``scripts.fracture.networks.build_network``).
        state_dict: the state dict or the path of a file holding it.
        doubled_conv_rule: ``"original"`` ([W, 0]) or ``"average"`` ([W/2, W/2]) for convs whose input channels
            are doubled by fusion.

    Returns:
        the :class:`PretrainedReport`.
    """
    if doubled_conv_rule not in DOUBLED_CONV_RULES:
        raise ValueError(f"doubled_conv_rule must be one of {DOUBLED_CONV_RULES}, got {doubled_conv_rule!r}")
    if not hasattr(network, "densenet_prefixes"):
        raise TypeError(f"{type(network).__name__} has no densenet_prefixes(); build it with scripts.fracture.networks")
    source = read_state_dict(state_dict) if isinstance(state_dict, (str, os.PathLike)) else dict(state_dict)
    prefixes = network.densenet_prefixes()
    target = network.state_dict()
    updated = dict(target)
    report = PretrainedReport()
    for source_key, value in source.items():
        monai_key = torchvision_to_monai_key(source_key)
        prefix = next((p for p in prefixes if monai_key.startswith(p + ".")), None)
        if prefix is None:
            report.unmatched[source_key] = f"no counterpart in {type(network).__name__}"
            continue
        key = prefixes[prefix] + monai_key[len(prefix) :]
        if key not in target:
            report.unmatched[source_key] = f"{key} does not exist in {type(network).__name__}"
            continue
        shape = target[key].shape
        if value.shape == shape:
            updated[key] = value.to(target[key].dtype)
            report.loaded.append(key)
        elif value.dim() == 4 and len(shape) == 4 and shape[1] == 2 * value.shape[1] and shape[0] == value.shape[0]:
            updated[key] = _doubled(value, shape, doubled_conv_rule).to(target[key].dtype)
            report.fused.append(key)
        else:
            report.unmatched[source_key] = f"shape {list(value.shape)} != {key} {list(shape)}"
    used = set(report.loaded) | set(report.fused)
    # BatchNorm step counters are not weights (torchvision's ImageNet file has none)
    report.not_initialised = [k for k in target if k not in used and not k.endswith("num_batches_tracked")]
    network.load_state_dict(updated, strict=True)
    return report

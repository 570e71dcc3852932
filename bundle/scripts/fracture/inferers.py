"""Inferers that make the training workflow receive the distance map alongside the heatmap.

``SupervisedTrainer`` calls ``inferer(inputs, network)`` and hands the result to ``loss_function(y_pred, y)``. The
networks' ``forward`` returns the heatmap alone (what export, MONAI Label and Deploy need), so training goes through
:class:`SiameseTrainingInferer`, which calls ``forward_with_distance`` and yields ``(heatmap, distance)`` for
``scripts.fracture.losses``. Validation and inference use MONAI's ``SimpleInferer`` (heatmap only).

Under ``DistributedDataParallel`` the gradient synchronisation is armed by DDP's own ``forward``; calling the wrapped
module's ``forward_with_distance`` would bypass it. For multi-GPU training wrap the network as
``DistributedDataParallel(DistanceOutput(network))``: its ``forward`` is ``forward_with_distance``, and this inferer
then just calls the DDP module. Save and evaluate the inner ``network`` (its state-dict keys have no prefix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from monai.inferers import Inferer

__all__ = ["DistanceOutput", "SiameseTrainingInferer"]


class DistanceOutput(nn.Module):
    """A view of a network whose ``forward`` is the network's ``forward_with_distance`` (for DDP training).

    Args:
        network: a bundle network (``scripts.fracture.networks.build_network``).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        if not hasattr(network, "forward_with_distance"):
            raise TypeError(f"{type(network).__name__} has no forward_with_distance")
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.forward_with_distance(x)


class SiameseTrainingInferer(Inferer):
    """Training inferer: ``(heatmap logits (B, 1, H, W), distance map (B, 1, h, w))`` for the training loss.

    Calls ``network.forward_with_distance(inputs)`` when the network has it (eager or TorchScript); otherwise calls
    ``network(inputs)``, which must already return the pair (``DistributedDataParallel(DistanceOutput(net))``).
    """

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        forward_with_distance = getattr(network, "forward_with_distance", None)
        if forward_with_distance is not None:
            return forward_with_distance(inputs, *args, **kwargs)
        output = network(inputs, *args, **kwargs)
        if isinstance(output, torch.Tensor):
            raise TypeError(
                f"{type(network).__name__} returned only a heatmap: SiameseTrainingInferer needs a network with "
                "forward_with_distance, or DistributedDataParallel(scripts.fracture.inferers.DistanceOutput(network))"
            )
        return output

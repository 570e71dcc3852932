"""Inferers that make the training workflow receive the distance map alongside the heatmap.

``SupervisedTrainer`` calls ``inferer(inputs, network)`` and hands the result to ``loss_function(y_pred, y)``. The
networks' ``forward`` returns the heatmap alone (what export, MONAI Label and Deploy need), so training goes through
:class:`SiameseTrainingInferer`, which calls ``forward_with_distance`` and yields ``(heatmap, distance)`` for
``scripts.fracture.losses``. Validation uses MONAI's ``SimpleInferer`` (heatmap only); inference
(``configs/inference.json``, and through it MONAI Label and the Deploy app) uses :class:`InferenceModeInferer`:
the same call under ``torch.inference_mode``, optionally through a BatchNorm-folded copy of the network.

Under ``DistributedDataParallel`` the gradient synchronisation is armed by DDP's own ``forward``; calling the wrapped
module's ``forward_with_distance`` would bypass it. For multi-GPU training wrap the network as
``DistributedDataParallel(DistanceOutput(network))``: its ``forward`` is ``forward_with_distance``, and this inferer
then just calls the DDP module. Save and evaluate the inner ``network`` (its state-dict keys have no prefix).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from monai.inferers import Inferer

__all__ = ["DistanceOutput", "InferenceModeInferer", "SiameseTrainingInferer"]


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


class InferenceModeInferer(Inferer):
    """Inference: ``network(inputs)`` (heatmap logits) under ``torch.inference_mode``, nothing else around it.

    A ``MetaTensor`` input is passed on as its plain tensor (a view, no copy). The output is cloned out of inference
    mode (a copy of the heatmap, 0.5 MB at 256 x 512), so that post-processing, MONAI Label and the Deploy app may
    treat it as any tensor (in-place operations on an inference tensor raise outside inference mode).

    Args:
        fold_batchnorm: run an eval-mode copy of the network with its BatchNorms folded into the convolutions before
            them (``scripts.fracture.folding.fold_batchnorm``; same function within float rounding). The copy is
            made on the first call and again whenever the network's parameters or buffers change (a checkpoint
            loaded into it, MONAI Label reloading its weights); a network in training mode is run as it is.
    """

    def __init__(self, fold_batchnorm: bool = False) -> None:
        self.fold_batchnorm = bool(fold_batchnorm)
        self._source: weakref.ref | None = None
        self._versions: tuple[int, ...] = ()
        self._folded: nn.Module | None = None

    @staticmethod
    def _state_versions(network: nn.Module) -> tuple[int, ...]:
        """Where each parameter and buffer lives and its version counter (bumped by every in-place change, such as
        ``load_state_dict``'s copies): any change of the network's weights, or of their storage, changes it."""
        tensors = [*network.parameters(), *network.buffers()]
        return (len(tensors), *(v for t in tensors for v in (t.data_ptr(), int(t._version))))

    def folded(self, network: nn.Module) -> nn.Module:
        """The BatchNorm-folded copy of ``network`` (made again when its weights changed since the last call)."""
        from scripts.fracture.folding import fold_batchnorm

        versions = self._state_versions(network)
        source = None if self._source is None else self._source()
        if self._folded is None or source is not network or versions != self._versions:
            self._folded = fold_batchnorm(network)
            self._source, self._versions = weakref.ref(network), versions
        return self._folded

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        as_tensor = getattr(inputs, "as_tensor", None)
        if as_tensor is not None:  # MetaTensor: its plain tensor
            inputs = as_tensor()
        model = network
        if self.fold_batchnorm and isinstance(network, nn.Module) and not network.training:
            model = self.folded(network)
        with torch.inference_mode():
            output = model(inputs, *args, **kwargs)
        if isinstance(output, torch.Tensor):
            return output.clone()
        return output

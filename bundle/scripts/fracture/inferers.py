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

__all__ = [
    "DistanceOutput",
    "FlipAveragingInferer",
    "InferenceModeInferer",
    "SiameseTrainingInferer",
    "SiameseWindowInferer",
]


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


class SiameseWindowInferer(Inferer):
    """Whole-ROI heatmap logits assembled from windows of the size the network was trained on.

    A network trained on windows (``configs/scale_cpu.json``: 64 x 64, a 2 x 2 map at its stride of 32) has seen
    every position near a window's edge; run on the whole ROI at once, most positions have context it never saw, and
    its maximum drifts to wherever that context fires. Here each window is cut as in training
    (``custom_transforms.siamese_crop.SiameseCrop``: the mirrored ROI where the TPS grid points, the grid re-based),
    scored, and the windows' logits are averaged with a weight that favours their centres (a Gaussian of standard
    deviation ``window / 4``), so that a pixel is scored mostly by windows that had it in their central half, where
    the training put fractures. (MONAI's ``SlidingWindowInferer`` cuts every channel at the same pixels; the
    mirrored channels and the grid of a window need ``SiameseCrop``.)

    The configs build one for validation, evaluation and inference (``score_window``): ``null`` in ``train.json``
    and ``inference.json`` (a network trained on whole ROIs is run on the whole ROI), ``crop_size`` in
    ``configs/scale_cpu.json``.

    Args:
        window_size: ``(h, w)`` of the training windows; ``None``, or at least the ROI size: one call on the whole
            ROI.
        overlap: the share of a window that the next one overlaps, in [0, 1).
        batch_size: windows per network call.
        inner: the inferer that calls the network on each batch of windows (e.g. :class:`InferenceModeInferer`);
            ``None``: ``network(windows)``.
    """

    def __init__(
        self,
        window_size: tuple[int, int] | list[int] | None,
        overlap: float = 0.5,
        batch_size: int = 32,
        inner: Inferer | None = None,
    ) -> None:
        from custom_transforms.siamese_crop import SiameseCrop

        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap must lie in [0, 1), got {overlap}.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.overlap, self.batch_size, self.inner = float(overlap), int(batch_size), inner
        self.cropper = None if window_size is None else SiameseCrop(window_size)
        self.window_size = None if self.cropper is None else self.cropper.size
        if self.window_size is None:
            return
        h, w = self.window_size
        rows = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
        cols = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
        self.weight = torch.exp(-0.5 * ((rows[:, None] / (h / 4)) ** 2 + (cols[None, :] / (w / 4)) ** 2))

    def positions(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corners of windows covering a ``height`` x ``width`` ROI (the last ones flush with its edges)."""

        def starts(size: int, window: int) -> list[int]:
            step = max(1, round(window * (1.0 - self.overlap)))
            first = list(range(0, size - window + 1, step))
            return first if first[-1] == size - window else [*first, size - window]

        h, w = self.window_size
        return [(r, c) for r in starts(height, h) for c in starts(width, w)]

    def _call(self, windows: torch.Tensor, network: Callable[..., Any]) -> torch.Tensor:
        return network(windows) if self.inner is None else self.inner(windows, network)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        as_tensor = getattr(inputs, "as_tensor", None)
        if as_tensor is not None:
            inputs = as_tensor()
        height, width = int(inputs.shape[-2]), int(inputs.shape[-1])
        if self.window_size is None:
            return self._call(inputs, network)
        h, w = self.window_size
        if h >= height and w >= width:
            return self._call(inputs, network)
        if h > height or w > width:
            raise ValueError(f"window {self.window_size} does not fit the ROI ({height}, {width}).")
        positions = self.positions(height, width)
        weight = self.weight.to(inputs.device)
        total = None
        norm = torch.zeros((height, width), device=inputs.device)
        for row, col in positions:
            norm[row : row + h, col : col + w] += weight
        for index, image in enumerate(inputs):
            windows = torch.stack([self.cropper(image, row, col)[0] for row, col in positions])
            logits = torch.cat(
                [self._call(windows[i : i + self.batch_size], network) for i in range(0, len(windows), self.batch_size)]
            )
            if total is None:
                total = torch.zeros((inputs.shape[0], logits.shape[1], height, width), device=inputs.device)
            for (row, col), logit in zip(positions, logits, strict=True):
                total[index, :, row : row + h, col : col + w] += logit * weight
        return total / norm


class FlipAveragingInferer(Inferer):
    """Scores the packed Siamese input and its horizontal flip, and averages the two heatmaps' logits.

    The flip is ``custom_transforms.siamese_augment.flip_packed`` (the TPS grid kept consistent), the one the CPU
    recipe's window augmentation trains with, so the flipped input is one the network has learnt from; the flipped
    heatmap is flipped back before the average. It costs two passes. The paper scores one pass; ``score_flip`` in the
    configs turns this on (``false`` by default: a pass-through).

    Args:
        inner: the inferer that scores each of the two inputs (e.g. :class:`SiameseWindowInferer`).
        enabled: ``False``: only ``inner(inputs, network)``.
    """

    def __init__(self, inner: Inferer, enabled: bool = True) -> None:
        self.inner, self.enabled = inner, bool(enabled)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from custom_transforms.siamese_augment import flip_packed

        as_tensor = getattr(inputs, "as_tensor", None)
        if as_tensor is not None:
            inputs = as_tensor()
        direct = self.inner(inputs, network, *args, **kwargs)
        if not self.enabled:
            return direct
        flipped = self.inner(flip_packed(inputs), network, *args, **kwargs)
        return (direct + flipped.flip(-1)) / 2

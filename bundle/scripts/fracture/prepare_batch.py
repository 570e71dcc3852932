"""Batch preparation for the Ignite engines: the network input and the training target by key.

MONAI's default takes ``image``/``label``; here ``image`` is the original radiograph and ``label``
the image-level 0/1 label (kept for AUC), while the network reads ``siamese_input`` (B, 8, H, W) and
the loss ``target`` (B, 2, H, W) = [M, M-hat].

The engines store ``(input, target)`` in their output under MONAI's ``image``/``label`` names, which
shadow the batch's keys of the same names in postprocessing. The image-level label therefore
travels as ``image_label`` too (copied in preprocessing), and handlers read the batch for ``image``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.engines import PrepareBatch

__all__ = ["SiamesePrepareBatch"]


class SiamesePrepareBatch(PrepareBatch):
    """``(batch[input_key], batch[target_key])`` moved to ``device``; the target is ``None`` when absent
    (inference).

    Args:
        input_key: the network input.
        target_key: the loss target.
    """

    def __init__(self, input_key: str = "siamese_input", target_key: str = "target") -> None:
        self.input_key, self.target_key = input_key, target_key

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ):
        if self.input_key not in batchdata:
            raise KeyError(f"SiamesePrepareBatch: the batch lacks '{self.input_key}' (has {sorted(batchdata)}).")
        inputs = batchdata[self.input_key].to(device=device, non_blocking=non_blocking, **kwargs)
        target = batchdata.get(self.target_key)
        if target is not None:
            target = target.to(device=device, non_blocking=non_blocking, **kwargs)
        return inputs, target

"""Postprocessing transform: the image-level fracture score from the heatmap logits.

The score is ``scripts.fracture.pooling.image_score`` of the logits with the network's own pooling rule
(``network.score_pooling``: ``"max"`` for AASN, the paper's maximum of the probability heatmap).
It must run before the sigmoid is applied to the heatmap.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

from scripts.fracture.pooling import image_score

__all__ = ["ImageScore", "ImageScored"]


class ImageScore(Transform):
    """``(1, H, W)`` heatmap logits -> ``(1,)`` image probability.

    Args:
        pooling: ``"max"``, ``"mean"`` or ``"lse"`` (see ``scripts.fracture.pooling``).
        lse_r: LSE sharpness.
    """

    def __init__(self, pooling: str = "max", lse_r: float = 10.0) -> None:
        self.pooling, self.lse_r = pooling, float(lse_r)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = convert_to_tensor(logits, track_meta=False)
        return image_score(logits[None], self.pooling, self.lse_r).reshape(1)


class ImageScored(MapTransform):
    """Dictionary wrapper of :class:`ImageScore`: reads ``keys`` (logits), writes ``output_key``.

    Args:
        keys: the heatmap logits (one key).
        output_key: where the score goes.
        pooling: see :class:`ImageScore`.
        lse_r: see :class:`ImageScore`.
        allow_missing_keys: don't raise when the key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_key: str = "score",
        pooling: str = "max",
        lse_r: float = 10.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.scorer = ImageScore(pooling, lse_r)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.scorer(d[key])
        return d

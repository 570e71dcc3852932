"""Shrinking large radiographs before they are cached for training.

A 2,500 x 2,000 radiograph is 20 MB as float32, too much to cache a whole training set in memory,
while the anterior-pelvis ROI (about half the image width) is resampled to 512 pixels wide anyway.
:class:`LimitImageSized` box-filters the image so its longer side is at most ``max_size`` and moves
the points and the pixel spacing with it, so everything downstream (mirroring, ROI, TPS, fracture
discs in mm) is unchanged except for resolution. Used in the cached part of training and validation;
inference keeps the original grid, on which its outputs are reported.

With the pixel-centre convention (``custom_transforms.conventions``) a scale factor ``f`` (original
pixels per new pixel) maps ``x`` to ``(x + 0.5) / f - 0.5``; the spacing becomes ``spacing * f``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["LimitImageSized"]


class LimitImageSized(MapTransform):
    """Downsample ``keys`` images whose longer side exceeds ``max_size``, with their points and spacing.

    Args:
        keys: the image (a (C, H, W) MetaTensor with meta ``spacing_mm``).
        max_size: the longest side allowed, pixels; ``None`` or 0 disables the transform.
        point_keys: (N, 2) ``[x, y]`` arrays in the image's pixels to move with it.
        allow_missing_keys: don't raise when a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        max_size: int | None = 1280,
        point_keys: Sequence[str] = ("landmarks", "fractures"),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if max_size is not None and max_size < 0:
            raise ValueError(f"LimitImageSized: max_size must be >= 0 or None, got {max_size}.")
        self.max_size = max_size
        self.point_keys = tuple(point_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            h, w = int(image.shape[-2]), int(image.shape[-1])
            if not self.max_size or max(h, w) <= self.max_size:
                continue
            factor = max(h, w) / self.max_size
            size = (max(int(round(h / factor)), 1), max(int(round(w / factor)), 1))
            fy, fx = h / size[0], w / size[1]  # exact per-axis factors after rounding
            plain = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
            small = F.interpolate(plain[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[
                0
            ]
            meta = dict(getattr(image, "meta", {}) or {})
            spacing = meta.get("spacing_mm")
            if spacing is not None:
                meta["spacing_mm"] = (float(spacing[0]) * fy, float(spacing[1]) * fx)
            meta["downsample_factor"] = (fy, fx)
            meta["spatial_shape"] = np.array(size)
            meta.pop("affine", None)
            d[key] = MetaTensor(small, meta=meta)
            for pk in self.point_keys:
                if pk in d and d[pk] is not None:
                    pts = d[pk]
                    as_torch = isinstance(pts, torch.Tensor)
                    arr = pts.detach().cpu().numpy() if as_torch else np.asarray(pts)
                    moved = (arr.astype(np.float64) + 0.5) / np.array([fx, fy]) - 0.5
                    moved = moved.astype(arr.dtype if arr.dtype.kind == "f" else np.float32)
                    d[pk] = torch.as_tensor(moved) if as_torch else moved
        return d

"""Letterbox: the whole radiograph resized keeping its aspect ratio and padded to the detector's input size.

The image ``(C, H, W)`` is scaled by ``s = min(H_in / H, W_in / W)`` to ``(round(H s), round(W s))``
(antialiased bilinear, ``align_corners=False``, so the exact per-axis scales are
``sy = round(H s) / H`` and ``sx = round(W s) / W``) and centred in an ``(H_in, W_in)`` canvas of
``pad_value``. With pixel centres as the origin (``custom_transforms.conventions``) a point maps as::

    x_in = sx * (x + 0.5) - 0.5 + pad_left        y_in = sy * (y + 0.5) - 0.5 + pad_top

which is the homogeneous ``(3, 3)`` matrix stored as ``letterbox_matrix`` on the output's meta-data
(original ``[x, y, 1]`` -> input ``[x, y, 1]``); its inverse brings detections back.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from custom_transforms.geometry import transform_points

__all__ = ["LETTERBOX_MATRIX", "letterbox_matrix", "Letterbox", "Letterboxd"]

#: meta-data key of the original -> letterbox homogeneous matrix.
LETTERBOX_MATRIX = "letterbox_matrix"


def letterbox_matrix(image_size: Sequence[int], input_size: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The original -> letterbox matrix and the resized (unpadded) size.

    Args:
        image_size: ``(H, W)`` of the original image.
        input_size: ``(H_in, W_in)`` of the letterbox canvas.

    Returns:
        ``matrix`` ``(3, 3)`` float64 acting on ``[x, y, 1]`` and ``(new_h, new_w)``.
    """
    h, w = (int(v) for v in image_size)
    h_in, w_in = (int(v) for v in input_size)
    if min(h, w, h_in, w_in) <= 0:
        raise ValueError(f"sizes must be positive, got image {image_size} and input {input_size}.")
    scale = min(h_in / h, w_in / w)
    new_h = min(h_in, max(1, round(h * scale)))
    new_w = min(w_in, max(1, round(w * scale)))
    sy, sx = new_h / h, new_w / w
    pad_top, pad_left = (h_in - new_h) // 2, (w_in - new_w) // 2
    matrix = np.array(
        [[sx, 0.0, 0.5 * sx - 0.5 + pad_left], [0.0, sy, 0.5 * sy - 0.5 + pad_top], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )
    return matrix, (new_h, new_w)


class Letterbox(Transform):
    """Resize keeping the aspect ratio, then centre-pad to ``spatial_size``.

    Args:
        spatial_size: ``(H_in, W_in)`` of the output.
        pad_value: value of the padding.
        antialias: low-pass the image when shrinking (recommended: radiographs shrink several-fold).
    """

    def __init__(self, spatial_size: Sequence[int] = (256, 256), pad_value: float = 0.0, antialias: bool = True):
        if len(spatial_size) != 2:
            raise ValueError(f"spatial_size must be (H, W), got {spatial_size}.")
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self.pad_value = float(pad_value)
        self.antialias = bool(antialias)

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        """Args:
            img: ``(C, H, W)`` image.

        Returns:
            ``(C, H_in, W_in)`` MetaTensor carrying ``letterbox_matrix`` and ``original_spatial_shape`` meta.
        """
        if img.ndim != 3:
            raise ValueError(f"Letterbox expects a channel-first (C, H, W) image, got shape {tuple(img.shape)}.")
        meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
        data = torch.as_tensor(img).as_subclass(torch.Tensor).float()
        matrix, (new_h, new_w) = letterbox_matrix(data.shape[1:], self.spatial_size)
        resized = F.interpolate(
            data[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=self.antialias
        )[0]
        out = torch.full((data.shape[0], *self.spatial_size), self.pad_value, dtype=resized.dtype)
        top, left = (self.spatial_size[0] - new_h) // 2, (self.spatial_size[1] - new_w) // 2
        out[:, top : top + new_h, left : left + new_w] = resized
        meta[LETTERBOX_MATRIX] = matrix
        meta["original_spatial_shape"] = tuple(int(s) for s in data.shape[1:])
        return MetaTensor(out, meta=meta)


class Letterboxd(MapTransform):
    """Dictionary wrapper of :class:`Letterbox` that also maps landmark arrays into the letterbox frame.

    Args:
        keys: image keys.
        spatial_size: ``(H_in, W_in)``.
        landmark_keys: ``(N, 2)`` ``[x, y]`` point arrays mapped with the first image's matrix (in place).
        pad_value: value of the padding.
        antialias: low-pass the image when shrinking.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        spatial_size: Sequence[int] = (256, 256),
        landmark_keys: KeysCollection = ("landmarks",),
        pad_value: float = 0.0,
        antialias: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.letterbox = Letterbox(spatial_size, pad_value, antialias)
        self.landmark_keys = (landmark_keys,) if isinstance(landmark_keys, str) else tuple(landmark_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        matrix = None
        for key in self.key_iterator(d):
            d[key] = self.letterbox(d[key])
            matrix = d[key].meta[LETTERBOX_MATRIX] if matrix is None else matrix
        if matrix is not None:
            for key in self.landmark_keys:
                if key in d:
                    d[key] = transform_points(matrix, d[key]).astype(np.float32)
                elif not self.allow_missing_keys:
                    raise KeyError(f"Letterboxd: landmark key '{key}' is missing from the data.")
        return d

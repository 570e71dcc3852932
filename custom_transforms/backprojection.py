"""Putting ROI-space results (heatmaps, points) back on the original image grid.

``roi_to_original`` (written by :class:`~custom_transforms.roi.MirroredROId`) maps ROI pixel ``[u, v, 1]`` to
original pixel ``[x, y, 1]``. A map of a different resolution than the ROI (e.g. a heatmap at feature
resolution) covers the same ROI extent: its pixel ``j`` of ``n`` has ROI coordinate ``(j + 0.5) * N / n - 0.5``
for an ROI of ``N`` pixels, which is folded into the map used here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from .geometry import transform_points
from .resampling import sample_affine

__all__ = [
    "map_to_original_matrix",
    "roi_points_to_original",
    "original_points_to_roi",
    "ROIToOriginal",
    "ROIToOriginald",
]


def map_to_original_matrix(roi_to_original, roi_size=None, map_size=None) -> np.ndarray:
    """Pixel of a ``map_size`` map covering the ROI -> original pixel (3, 3). Sizes are (h, w); None = same."""
    a = np.asarray(roi_to_original, dtype=np.float64)
    if roi_size is None or map_size is None:
        return a
    roi_size, map_size = tuple(int(s) for s in roi_size), tuple(int(s) for s in map_size)
    if roi_size == map_size:
        return a
    sx, sy = roi_size[1] / map_size[1], roi_size[0] / map_size[0]
    # map pixel j -> ROI coordinate (j + 0.5) * s - 0.5
    to_roi = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return a @ to_roi


def roi_points_to_original(points, roi_to_original, roi_size=None, map_size=None) -> np.ndarray:
    """(N, 2) ``[x, y]`` points of an ROI-space map -> (N, 2) points of the original image."""
    return transform_points(map_to_original_matrix(roi_to_original, roi_size, map_size), points)


def original_points_to_roi(points, roi_to_original, roi_size=None, map_size=None) -> np.ndarray:
    """(N, 2) ``[x, y]`` points of the original image -> (N, 2) points of an ROI-space map."""
    return transform_points(np.linalg.inv(map_to_original_matrix(roi_to_original, roi_size, map_size)), points)


class ROIToOriginal(Transform):
    """Resample an ROI-space map (C, h, w) onto the original image grid (C, H, W); zero outside the ROI.

    Args:
        mode: ``"bilinear"`` or ``"nearest"`` (for label maps).
    """

    def __init__(self, mode: str = "bilinear") -> None:
        self.mode = mode

    def __call__(self, roi_map, roi_to_original, original_shape, roi_size=None) -> torch.Tensor:
        """
        Args:
            roi_map: (C, h, w) map covering the ROI.
            roi_to_original: (3, 3) ROI pixel -> original pixel.
            original_shape: (H, W) of the original image.
            roi_size: (h0, w0) of the ROI that ``roi_to_original`` refers to; None = the map's own size.
        """
        t = roi_map.as_tensor() if isinstance(roi_map, MetaTensor) else torch.as_tensor(roi_map)
        t = t.float()
        c, mh, mw = t.shape
        map_to_orig = map_to_original_matrix(roi_to_original, roi_size, (mh, mw))
        height, width = (int(s) for s in original_shape)
        out = torch.zeros((c, height, width), dtype=torch.float32)
        # Only the original pixels under the ROI's footprint can be non-zero.
        corners = transform_points(
            map_to_orig, [[-0.5, -0.5], [mw - 0.5, -0.5], [-0.5, mh - 0.5], [mw - 0.5, mh - 0.5]]
        )
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int), (width - 1, height - 1))
        if x0 > x1 or y0 > y1:
            return out
        window_to_map = np.linalg.inv(map_to_orig) @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
        out[:, y0 : y1 + 1, x0 : x1 + 1] = sample_affine(
            t, window_to_map, (y1 - y0 + 1, x1 - x0 + 1), antialias=False, mode=self.mode
        )
        return out


class ROIToOriginald(MapTransform):
    """Put ROI-space maps (e.g. ``pred``, (C, h, w)) back on the original image grid (C, H, W), zero outside.

    The output is a MetaTensor carrying the original image's meta-data (affine, spacing, file name) so that
    MONAI writers save it aligned with the image.

    Args:
        keys: the ROI-space maps (default ``"pred"``).
        roi_to_original_key: the (3, 3) ROI -> original map.
        image_key: the original image, for its size and meta-data.
        roi_size_key: the ROI size the map refers to (maps of another size are scaled to the same extent).
        mode: ``"bilinear"`` or ``"nearest"``.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        roi_to_original_key: str = "roi_to_original",
        image_key: str = "image",
        roi_size_key: str = "roi_size",
        mode: str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.roi_to_original_key = roi_to_original_key
        self.image_key = image_key
        self.roi_size_key = roi_size_key
        self.inverter = ROIToOriginal(mode)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = d[self.image_key]
        for key in self.key_iterator(d):
            out = self.inverter(d[key], d[self.roi_to_original_key], image.shape[-2:], d.get(self.roi_size_key))
            if isinstance(image, MetaTensor):
                out = MetaTensor(out, affine=image.affine, meta={k: v for k, v in image.meta.items() if k != "affine"})
            d[key] = out
        return d

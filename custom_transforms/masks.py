"""Fracture training targets in ROI space (paper §3.1 and §3.5).

* ``fracture_mask`` ``M``: the union of discs of radius ``radius_mm`` (default 20 mm, the paper's 2 cm) around
  the fracture points. A pixel belongs to a disc when its centre lies within the radius *in millimetres*, using
  the ROI's pixel size (row, col), so that the disc stays circular in physical space with anisotropic pixels.
* ``contrastive_mask`` ``M-hat = M ∪ T∘M_f``: ``M_f`` is the disc mask of the mirrored fracture points in the
  mirrored ROI, brought into the original ROI with the warp ``T`` by sampling it through ``tps_grid``
  (bilinear, then thresholded at 0.5). It marks where either side of the symmetric pair is fractured, i.e. where
  the contrastive loss must push the features apart instead of together.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from .conventions import DEFAULT_FRACTURE_RADIUS_MM
from .errors import AnnotationError
from .geometry import as_points

__all__ = ["disc_mask", "warp_mask", "FractureMask", "FractureMaskd"]


def disc_mask(points, size, spacing_mm, radius_mm: float = DEFAULT_FRACTURE_RADIUS_MM) -> torch.Tensor:
    """(1, h, w) float32 union of discs of ``radius_mm`` around ``points`` ([x, y] pixels of a (h, w) image).

    Args:
        points: (K, 2) centres; K may be 0 (empty mask).
        size: (h, w).
        spacing_mm: pixel size (row, col) in mm.
        radius_mm: disc radius in mm.
    """
    h, w = (int(s) for s in size)
    mask = np.zeros((h, w), dtype=np.float32)
    pts = as_points(points)
    dy, dx = float(spacing_mm[0]), float(spacing_mm[1])
    ry, rx = radius_mm / dy, radius_mm / dx  # semi-axes in pixels
    for cx, cy in pts:
        r0, r1 = max(0, int(np.ceil(cy - ry))), min(h - 1, int(np.floor(cy + ry)))
        c0, c1 = max(0, int(np.ceil(cx - rx))), min(w - 1, int(np.floor(cx + rx)))
        if r0 > r1 or c0 > c1:
            continue
        yy = ((np.arange(r0, r1 + 1) - cy) * dy)[:, None] ** 2
        xx = ((np.arange(c0, c1 + 1) - cx) * dx)[None, :] ** 2
        mask[r0 : r1 + 1, c0 : c1 + 1][yy + xx <= radius_mm**2] = 1.0
    return torch.from_numpy(mask)[None]


def warp_mask(mask: torch.Tensor, grid: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Sample a (C, h, w) mask through a (2, h', w') ``grid_sample`` grid; binarise at ``threshold``."""
    g = torch.as_tensor(grid, dtype=torch.float32)
    warped = F.grid_sample(
        torch.as_tensor(mask, dtype=torch.float32)[None],
        g.permute(1, 2, 0)[None],
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )[0]
    return (warped >= threshold).float()


def _resize_grid(grid: torch.Tensor, size) -> torch.Tensor:
    if tuple(grid.shape[-2:]) == tuple(size):
        return grid
    return F.interpolate(grid[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]


class FractureMask(Transform):
    """Array transform computing ``(fracture_mask, contrastive_mask)``.

    Args:
        radius_mm: disc radius in mm (paper: 2 cm).
        fallback_spacing_mm: ROI pixel size (row, col) to assume when the image had no spacing; None raises.
    """

    def __init__(self, radius_mm: float = DEFAULT_FRACTURE_RADIUS_MM, fallback_spacing_mm=None) -> None:
        if not radius_mm > 0:
            raise ValueError(f"radius_mm must be positive, got {radius_mm!r}")
        self.radius_mm = float(radius_mm)
        self.fallback_spacing_mm = fallback_spacing_mm

    def _spacing(self, spacing, source: str):
        if spacing is not None:
            return spacing
        if self.fallback_spacing_mm is None:
            raise AnnotationError(
                f"{source}: pixel spacing unknown, so the {self.radius_mm:g} mm fracture discs cannot be drawn; give "
                "'spacing_mm' in the annotation or set fallback_spacing_mm"
            )
        return self.fallback_spacing_mm

    def __call__(
        self,
        roi_fractures,
        roi_fractures_mirrored,
        roi_size,
        roi_spacing_mm,
        roi_mirrored_spacing_mm,
        tps_grid=None,
        source: str = "ROI",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mask = disc_mask(roi_fractures, roi_size, self._spacing(roi_spacing_mm, source), self.radius_mm)
        if tps_grid is None:
            return mask, None
        mirrored = disc_mask(
            roi_fractures_mirrored, roi_size, self._spacing(roi_mirrored_spacing_mm, source), self.radius_mm
        )
        warped = warp_mask(mirrored, _resize_grid(torch.as_tensor(tps_grid), roi_size))
        return mask, torch.from_numpy(np.maximum(mask.numpy(), warped.numpy()))


class FractureMaskd(MapTransform):
    """Draw ``fracture_mask`` M and ``contrastive_mask`` M-hat (1, h, w) in ROI space (see the module docstring).

    Args:
        keys: key of the ROI fracture points (default ``"roi_fractures"``).
        radius_mm: disc radius in mm.
        fallback_spacing_mm: ROI pixel size to assume when the spacing is unknown; None raises instead.
        mirrored_key: key of the mirrored-ROI fracture points.
        grid_key: key of the ``tps_grid``; when absent only ``fracture_mask`` is written.
        roi_key, roi_size_key, spacing_key, mirrored_spacing_key: inputs written by MirroredROId.
        mask_key, contrastive_key: output keys.
        allow_missing_keys: skip silently when the fracture points are absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "roi_fractures",
        radius_mm: float = DEFAULT_FRACTURE_RADIUS_MM,
        fallback_spacing_mm=None,
        mirrored_key: str = "roi_fractures_mirrored",
        grid_key: str = "tps_grid",
        roi_key: str = "roi",
        roi_size_key: str = "roi_size",
        spacing_key: str = "roi_spacing_mm",
        mirrored_spacing_key: str = "roi_mirrored_spacing_mm",
        mask_key: str = "fracture_mask",
        contrastive_key: str = "contrastive_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.masker = FractureMask(radius_mm, fallback_spacing_mm)
        self.mirrored_key = mirrored_key
        self.grid_key = grid_key
        self.roi_key = roi_key
        self.roi_size_key = roi_size_key
        self.spacing_key = spacing_key
        self.mirrored_spacing_key = mirrored_spacing_key
        self.mask_key = mask_key
        self.contrastive_key = contrastive_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            roi_size = d.get(self.roi_size_key) or tuple(d[self.roi_key].shape[-2:])
            meta = getattr(d.get(self.roi_key), "meta", None) or {}
            mask, contrastive = self.masker(
                d[key],
                d.get(self.mirrored_key, np.zeros((0, 2))),
                roi_size,
                d.get(self.spacing_key),
                d.get(self.mirrored_spacing_key),
                d.get(self.grid_key),
                str(meta.get("filename_or_obj", key)),
            )
            d[self.mask_key] = mask
            if contrastive is not None:
                d[self.contrastive_key] = contrastive
        return d

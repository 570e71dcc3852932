"""Resampling an image through one homogeneous affine map, with ``torch.nn.functional.grid_sample``.

Every resampled output of the preprocessing (ROI, mirrored ROI, back-projected heatmap) is computed once from its
source pixels through a single composed map ``A``: output pixel ``[u, v, 1]`` -> source pixel ``A @ [u, v, 1]``
(both in ``[x, y]`` = (column, row) pixel-centre coordinates). When an output pixel covers several source pixels
(down-sampling), ``k x k`` bilinear samples spread evenly over the output pixel's footprint are averaged (a box
filter, ``k`` = ceil(source pixels per output pixel) per axis) so that the ROI is not aliased.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["normalized_coordinates", "sample_affine", "MAX_SUPERSAMPLING"]

#: Upper bound on the supersampling factor per axis.
MAX_SUPERSAMPLING = 8


def normalized_coordinates(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel-centre coordinates -> ``grid_sample`` coordinates with ``align_corners=False``: ``(2 c + 1) / n - 1``."""
    return (2.0 * coords + 1.0) / size - 1.0


def sample_affine(
    image: torch.Tensor,
    out_to_src,
    out_size: tuple[int, int],
    antialias: bool = True,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Resample ``image`` (C, H, W) onto an ``out_size`` = (h, w) grid through ``out_to_src`` (3, 3).

    Args:
        image: source image, channel-first.
        out_to_src: homogeneous affine mapping output pixel ``[u, v, 1]`` to source pixel ``[x, y, 1]``.
        out_size: (h, w) of the output.
        antialias: average ``k x k`` samples per output pixel when the map shrinks the image.
        mode: ``grid_sample`` interpolation (``"bilinear"`` or ``"nearest"``).

    Returns:
        (C, h, w) float32 tensor; positions outside the source read as 0.
    """
    src = torch.as_tensor(image)
    src = src.as_tensor() if hasattr(src, "as_tensor") else src
    if src.dtype != torch.float32:
        src = src.float()
    c, height, width = src.shape
    h, w = (int(s) for s in out_size)
    a = np.asarray(out_to_src, dtype=np.float64)
    kx = ky = 1
    if antialias:
        kx = int(min(MAX_SUPERSAMPLING, max(1, math.ceil(np.hypot(a[0, 0], a[1, 0]) - 1e-6))))
        ky = int(min(MAX_SUPERSAMPLING, max(1, math.ceil(np.hypot(a[0, 1], a[1, 1]) - 1e-6))))
    # One affine from the normalised coordinates of the (supersampled) output grid to the normalised source
    # coordinates: fine output pixel centre (n_out) -> output pixel [u, v] -> source pixel [x, y] -> n_src.
    fine_w, fine_h = w * kx, h * ky
    out_from_norm = np.array(
        [[fine_w / (2.0 * kx), 0.0, (fine_w - 1.0) / (2.0 * kx) - (kx - 1.0) / (2.0 * kx)],
         [0.0, fine_h / (2.0 * ky), (fine_h - 1.0) / (2.0 * ky) - (ky - 1.0) / (2.0 * ky)],
         [0.0, 0.0, 1.0]]
    )
    norm_from_src = np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0.0, 0.0, 1.0]])
    theta = torch.as_tensor((norm_from_src @ a @ out_from_norm)[:2], dtype=torch.float32)
    # The grid is affine in (column, row): build it from two broadcast 1-D ramps rather than a full matmul.
    n_col = (2.0 * torch.arange(fine_w, dtype=torch.float32) + 1.0) / fine_w - 1.0
    n_row = (2.0 * torch.arange(fine_h, dtype=torch.float32) + 1.0) / fine_h - 1.0
    grid = torch.empty((1, fine_h, fine_w, 2), dtype=torch.float32)
    for k in range(2):
        torch.add((theta[k, 0] * n_col)[None, :], (theta[k, 1] * n_row + theta[k, 2])[:, None], out=grid[0, :, :, k])
    out = F.grid_sample(src[None], grid, mode=mode, padding_mode="zeros", align_corners=False)
    if kx > 1 or ky > 1:
        out = F.avg_pool2d(out, kernel_size=(ky, kx), stride=(ky, kx))
    return out[0]

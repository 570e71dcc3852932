"""Resampling an image through one homogeneous affine map, with ``torch.nn.functional.grid_sample``.

Every resampled output of the preprocessing (ROI, mirrored ROI, back-projected heatmap) and of the landmark
detector (augmented images, refinement patches) is computed once from its source pixels through a single composed
map ``A``: output pixel ``[u, v, 1]`` -> source pixel ``A @ [u, v, 1]``
(both in ``[x, y]`` = (column, row) pixel-centre coordinates). When an output pixel covers several source pixels
(down-sampling), ``k x k`` bilinear samples spread evenly over the output pixel's footprint are averaged (a box
filter, ``k`` = ceil(source pixels per output pixel) per axis) so that the ROI is not aliased.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import pixel_to_normalized

__all__ = ["sample_affine", "MAX_SUPERSAMPLING"]

#: Upper bound on the supersampling factor per axis.
MAX_SUPERSAMPLING = 8


def sample_affine(
    image: torch.Tensor,
    out_to_src,
    out_size: tuple[int, int],
    antialias: bool = True,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Resample ``image`` onto an ``out_size`` = (h, w) grid through ``out_to_src``.

    Args:
        image: source image (C, H, W), or a batch (B, C, H, W).
        out_to_src: homogeneous affine mapping output pixel ``[u, v, 1]`` to source pixel ``[x, y, 1]``: (3, 3), or
            (K, 3, 3) for K outputs (K = B, or one source image shared by all K, e.g. patches of one image).
        out_size: (h, w) of the output.
        antialias: average ``k x k`` samples per output pixel when the map shrinks the image (``k`` from the
            strongest shrinking among the matrices).
        mode: ``grid_sample`` interpolation (``"bilinear"`` or ``"nearest"``).
        padding_mode: ``grid_sample`` padding: ``"zeros"`` (default), ``"border"`` or ``"reflection"`` (about the
            source's outer pixel edges).

    Returns:
        float32 (C, h, w) for one image and one matrix, else (K, C, h, w); positions outside the source read as 0
        (with the default ``padding_mode``).
    """
    src = torch.as_tensor(image)
    src = src.as_tensor() if hasattr(src, "as_tensor") else src
    if src.dtype != torch.float32:
        src = src.float()
    if src.ndim not in (3, 4):
        raise ValueError(f"sample_affine: image must be (C, H, W) or (B, C, H, W), got shape {tuple(src.shape)}.")
    matrices = np.asarray(out_to_src.detach().cpu() if hasattr(out_to_src, "detach") else out_to_src, dtype=np.float64)
    single = src.ndim == 3 and matrices.ndim == 2
    batch = src if src.ndim == 4 else src[None]
    matrices = matrices if matrices.ndim == 3 else matrices[None]
    if matrices.shape[1:] != (3, 3):
        raise ValueError(f"sample_affine: out_to_src must be (3, 3) or (K, 3, 3), got shape {matrices.shape}.")
    k, b = len(matrices), batch.shape[0]
    if b not in (1, k):
        raise ValueError(f"sample_affine: {b} images and {k} matrices; give one image or one per matrix.")
    _, c, height, width = batch.shape
    h, w = (int(s) for s in out_size)
    kx = ky = 1
    if antialias:
        kx = int(min(MAX_SUPERSAMPLING, max(1, math.ceil(np.hypot(matrices[:, 0, 0], matrices[:, 1, 0]).max() - 1e-6))))
        ky = int(min(MAX_SUPERSAMPLING, max(1, math.ceil(np.hypot(matrices[:, 0, 1], matrices[:, 1, 1]).max() - 1e-6))))
    # One affine from the normalised coordinates of the (supersampled) output grid to the normalised source
    # coordinates: fine output pixel centre (n_out) -> output pixel [u, v] -> source pixel [x, y] -> n_src.
    fine_w, fine_h = w * kx, h * ky
    out_from_norm = np.array(
        [
            [fine_w / (2.0 * kx), 0.0, (fine_w - 1.0) / (2.0 * kx) - (kx - 1.0) / (2.0 * kx)],
            [0.0, fine_h / (2.0 * ky), (fine_h - 1.0) / (2.0 * ky) - (ky - 1.0) / (2.0 * ky)],
            [0.0, 0.0, 1.0],
        ]
    )
    norm_from_src = np.array(
        [[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0.0, 0.0, 1.0]]
    )
    theta = torch.as_tensor((norm_from_src @ matrices @ out_from_norm)[:, :2], dtype=torch.float32)
    # The grid is affine in (column, row): build it from two broadcast 1-D ramps rather than a full matmul.
    n_col = pixel_to_normalized(torch.arange(fine_w, dtype=torch.float32), fine_w)
    n_row = pixel_to_normalized(torch.arange(fine_h, dtype=torch.float32), fine_h)
    grid = torch.empty((k, fine_h, fine_w, 2), dtype=torch.float32)
    for axis in range(2):
        torch.add(
            (theta[:, axis, 0, None, None] * n_col[None, None, :]),
            (theta[:, axis, 1, None] * n_row[None, :] + theta[:, axis, 2, None])[:, :, None],
            out=grid[..., axis],
        )
    batch = batch.expand(k, c, height, width) if b == 1 and k > 1 else batch
    out = F.grid_sample(batch, grid.to(batch.device), mode=mode, padding_mode=padding_mode, align_corners=False)
    if kx > 1 or ky > 1:
        out = F.avg_pool2d(out, kernel_size=(ky, kx), stride=(ky, kx))
    return out[0] if single else out

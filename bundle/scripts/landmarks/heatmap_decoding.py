"""Landmark heatmaps: Gaussian targets and sub-pixel decoding.

A landmark at ``[x, y]`` (pixels, x = column, y = row, origin at the centre of the top-left pixel, as
in ``custom_transforms.conventions``) is encoded as ``exp(-|p - [x, y]|^2 / (2 sigma^2))`` sampled at
the pixel centres ``p``, so its peak value is 1.

A network may output such heatmaps directly (trained by regression) or *logits* whose softmax over the
image (:func:`spatial_softmax`, trained by cross-entropy against the normalised Gaussian) is a
probability map of the landmark's position; decoding works on either (the log of a softmax is the
logits up to a constant).

Decoding takes the arg-max pixel and refines it with one Newton step on the *logarithm* of the heatmap over its 3 x 3
neighbourhood (central differences; at the border the stencil moves inwards). The log of a Gaussian is a quadratic, so
for a Gaussian peak the step lands on the true centre exactly, whatever the sigma; for a network's heatmap an optional
Gaussian smoothing first makes the peak closer to that model (as in "DARK", Zhang et al., CVPR 2020). Where the
neighbourhood is not concave the arg-max pixel is kept.

For a probability map (spatial softmax) the *mode* is not the best point estimate when the landmark is
uncertain along a direction (a point on a smooth contour: the ASIS, the sciatic notch): the mean of the
distribution minimises the expected squared error. ``expectation_radius`` > 0 therefore replaces the
Newton step by the probability-weighted mean position within a square window of that half-size around
the arg-max (:func:`local_expectation`); the window keeps a distant second mode (the other side's
landmark) out of the mean. For a symmetric peak both estimates coincide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from custom_transforms.geometry import pixel_to_normalized

__all__ = [
    "gaussian_heatmaps",
    "spatial_softmax",
    "decode_heatmaps",
    "local_expectation",
    "sample_heatmaps",
    "heatmap_value_near",
    "HEATMAP_ACTIVATIONS",
    "activate_heatmaps",
    "heatmap_confidence",
]

#: heatmap values are floored here before taking logs (a network may output zeros or negatives).
_LOG_FLOOR = 1e-10
#: largest sub-pixel step accepted from the Newton refinement, in pixels (beyond, the fit is not trusted).
_MAX_STEP = 1.0


def gaussian_heatmaps(points: torch.Tensor, spatial_size: Sequence[int], sigma: float) -> torch.Tensor:
    """Render one Gaussian heatmap per point.

    Args:
        points: ``(N, 2)`` ``[x, y]`` pixel coordinates (a leading batch dimension is allowed).
        spatial_size: ``(H, W)`` of the heatmaps.
        sigma: standard deviation of the Gaussian in pixels.

    Returns:
        ``(N, H, W)`` (or ``(B, N, H, W)``) float32 heatmaps with peak value 1 at each point.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., N, 2), got {tuple(points.shape)}.")
    height, width = (int(s) for s in spatial_size)
    xs = torch.arange(width, dtype=torch.float32, device=points.device)
    ys = torch.arange(height, dtype=torch.float32, device=points.device)
    # separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2)
    gx = torch.exp(-((xs - points[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., N, W)
    gy = torch.exp(-((ys - points[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., N, H)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def _gaussian_blur(heatmaps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=heatmaps.dtype, device=heatmaps.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    b, n, h, w = heatmaps.shape
    flat = heatmaps.reshape(b * n, 1, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(b, n, h, w)


def local_expectation(heatmaps: torch.Tensor, centres: torch.Tensor, radius: int) -> torch.Tensor:
    """Heatmap-weighted mean position of each map within ``radius`` pixels (square window) of its centre.

    Args:
        heatmaps: ``(B, N, H, W)`` non-negative maps (probabilities).
        centres: ``(B, N, 2)`` ``[x, y]`` window centres (rounded to the nearest pixel).
        radius: half-size of the window in pixels (clipped at the map's border).

    Returns:
        ``(B, N, 2)`` float32 ``[x, y]``; the centre itself where the window holds no mass.
    """
    maps = torch.as_tensor(heatmaps).float().clamp_min(0)
    b, n, h, w = maps.shape
    xs = torch.arange(w, dtype=torch.float32, device=maps.device)
    ys = torch.arange(h, dtype=torch.float32, device=maps.device)
    centre_x, centre_y = centres[..., 0].round(), centres[..., 1].round()
    in_x = (xs - centre_x[..., None]).abs() <= radius  # (B, N, W)
    in_y = (ys - centre_y[..., None]).abs() <= radius  # (B, N, H)
    weights = maps * in_y[..., :, None] * in_x[..., None, :]
    mass = weights.sum(dim=(-1, -2))
    mean_x = (weights.sum(dim=-2) * xs).sum(dim=-1) / mass.clamp_min(1e-30)
    mean_y = (weights.sum(dim=-1) * ys).sum(dim=-1) / mass.clamp_min(1e-30)
    empty = mass <= 0
    mean = torch.stack((mean_x, mean_y), dim=-1)
    return torch.where(empty[..., None], centres.float(), mean)


def _newton_refined(maps: torch.Tensor, row: torch.Tensor, col: torch.Tensor, smooth_sigma: float) -> torch.Tensor:
    """``(B, N, 2)`` ``[x, y]``: the arg-max ``(row, col)`` moved by one Newton step on the log heatmap's 3 x 3
    quadratic fit (kept where that neighbourhood is not concave or the step exceeds :data:`_MAX_STEP`)."""
    b, n, h, w = maps.shape
    refine = _gaussian_blur(maps, smooth_sigma) if smooth_sigma > 0 else maps
    logs = torch.log(refine.clamp_min(_LOG_FLOOR)).reshape(b, n, h * w)
    # 3 x 3 stencil centred on the arg-max, moved inwards at the image border (a quadratic is fixed by
    # any 3 x 3 samples, so the fit stays exact there too): (b, n, 3, 3)
    centre_row = row.clamp(1, h - 2)
    centre_col = col.clamp(1, w - 2)
    d = torch.arange(-1, 2, device=maps.device)
    rows = (centre_row.unsqueeze(-1) + d).unsqueeze(-1).expand(b, n, 3, 3)
    cols = (centre_col.unsqueeze(-1) + d).unsqueeze(-2).expand(b, n, 3, 3)
    patch = logs.gather(-1, (rows * w + cols).reshape(b, n, 9)).reshape(b, n, 3, 3)

    gx = (patch[..., 1, 2] - patch[..., 1, 0]) / 2
    gy = (patch[..., 2, 1] - patch[..., 0, 1]) / 2
    hxx = patch[..., 1, 2] - 2 * patch[..., 1, 1] + patch[..., 1, 0]
    hyy = patch[..., 2, 1] - 2 * patch[..., 1, 1] + patch[..., 0, 1]
    hxy = (patch[..., 2, 2] - patch[..., 2, 0] - patch[..., 0, 2] + patch[..., 0, 0]) / 4
    det = hxx * hyy - hxy**2
    concave = (hxx < 0) & (det > 0)
    safe_det = torch.where(concave, det, torch.ones_like(det))
    # Newton step from the stencil centre, -H^{-1} g with H^{-1} = [[hyy, -hxy], [-hxy, hxx]] / det,
    # expressed relative to the arg-max pixel
    step_x = (centre_col - col).float() - (hyy * gx - hxy * gy) / safe_det
    step_y = (centre_row - row).float() - (hxx * gy - hxy * gx) / safe_det
    trusted = concave & (step_x.abs() <= _MAX_STEP) & (step_y.abs() <= _MAX_STEP)
    step_x = torch.where(trusted, step_x, torch.zeros_like(step_x))
    step_y = torch.where(trusted, step_y, torch.zeros_like(step_y))

    return torch.stack((col.float() + step_x, row.float() + step_y), dim=-1)


def decode_heatmaps(
    heatmaps: torch.Tensor, smooth_sigma: float = 0.0, expectation_radius: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel position of each heatmap's landmark: the refined peak, or the local mean.

    Args:
        heatmaps: ``(N, H, W)`` or ``(B, N, H, W)``, one channel per landmark.
        smooth_sigma: if positive, Gaussian smoothing (pixels) applied before the refinement only; the
            arg-max and the returned peak values come from the unsmoothed heatmaps.
        expectation_radius: if positive, return the heatmap-weighted mean within this many pixels of the
            arg-max (:func:`local_expectation`; for probability maps) instead of the Newton-refined peak.

    Returns:
        ``coords`` ``(..., N, 2)`` float32 ``[x, y]`` pixel coordinates and ``peaks`` ``(..., N)``, the
        heatmap maximum of each channel.
    """
    heatmaps = torch.as_tensor(heatmaps)
    if heatmaps.ndim not in (3, 4):
        raise ValueError(f"heatmaps must be (N, H, W) or (B, N, H, W), got shape {tuple(heatmaps.shape)}.")
    unbatched = heatmaps.ndim == 3
    maps = heatmaps.unsqueeze(0) if unbatched else heatmaps
    maps = maps.detach().float()
    b, n, h, w = maps.shape

    peaks, flat_index = maps.reshape(b, n, h * w).max(dim=-1)
    row = torch.div(flat_index, w, rounding_mode="floor")
    col = flat_index % w

    if h < 3 or w < 3:
        raise ValueError(f"heatmaps must be at least 3 x 3 pixels for sub-pixel decoding, got {h} x {w}.")
    if expectation_radius > 0:
        coords = local_expectation(maps, torch.stack((col, row), dim=-1).float(), int(expectation_radius))
    else:
        coords = _newton_refined(maps, row, col, smooth_sigma)
    coords[..., 0].clamp_(0, w - 1)
    coords[..., 1].clamp_(0, h - 1)
    if unbatched:
        return coords[0], peaks[0]
    return coords, peaks


def sample_heatmaps(heatmaps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear value of heatmap ``i`` at point ``i`` (pixels outside the map read as the nearest edge).

    Args:
        heatmaps: ``(N, H, W)`` or ``(B, N, H, W)``.
        points: ``(N, 2)`` or ``(B, N, 2)`` ``[x, y]`` pixel coordinates.

    Returns:
        ``(N,)`` or ``(B, N)`` values.
    """
    heatmaps = torch.as_tensor(heatmaps).float()
    points = torch.as_tensor(points, dtype=torch.float32, device=heatmaps.device)
    unbatched = heatmaps.ndim == 3
    maps = heatmaps.unsqueeze(0) if unbatched else heatmaps
    pts = points.unsqueeze(0) if unbatched else points
    b, n, h, w = maps.shape
    grid = torch.stack((pixel_to_normalized(pts[..., 0], w), pixel_to_normalized(pts[..., 1], h)), dim=-1)
    values = F.grid_sample(
        maps.reshape(b * n, 1, h, w), grid.reshape(b * n, 1, 1, 2), align_corners=False, padding_mode="border"
    ).reshape(b, n)
    return values[0] if unbatched else values


def spatial_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax of each ``(H, W)`` map over its pixels: ``(..., H, W)`` probabilities summing to 1 per map."""
    logits = torch.as_tensor(logits).float()
    shape = logits.shape
    return torch.softmax(logits.reshape(*shape[:-2], -1), dim=-1).reshape(shape)


def heatmap_value_near(
    heatmaps: torch.Tensor, points: torch.Tensor, radius: int = 1, reduce: str = "max"
) -> torch.Tensor:
    """Maximum (or sum) of heatmap ``i`` over the ``(2 radius + 1)^2`` pixels around point ``i`` (nearest pixel).

    With ``reduce="max"`` at a decoded peak this is the peak value itself (bilinear sampling between
    pixels would underestimate a narrow peak); with ``reduce="sum"`` on a probability map it is the
    probability that the landmark lies within ``radius`` pixels.

    Args:
        heatmaps: ``(N, H, W)`` or ``(B, N, H, W)``.
        points: ``(N, 2)`` or ``(B, N, 2)`` ``[x, y]`` pixel coordinates (clamped into the map).
        radius: half-size of the window in pixels.
        reduce: ``"max"`` or ``"sum"`` (pixels outside the map count as 0).

    Returns:
        ``(N,)`` or ``(B, N)`` values.
    """
    if reduce not in ("max", "sum"):
        raise ValueError(f"reduce must be 'max' or 'sum', got {reduce!r}.")
    heatmaps = torch.as_tensor(heatmaps).float()
    points = torch.as_tensor(points, dtype=torch.float32, device=heatmaps.device)
    unbatched = heatmaps.ndim == 3
    maps = heatmaps.unsqueeze(0) if unbatched else heatmaps
    pts = points.unsqueeze(0) if unbatched else points
    b, n, h, w = maps.shape
    size = 2 * int(radius) + 1
    flat = maps.reshape(b * n, 1, h, w)
    if reduce == "max":
        pooled = F.max_pool2d(flat, size, stride=1, padding=int(radius))
    else:
        pooled = F.avg_pool2d(flat, size, stride=1, padding=int(radius), count_include_pad=True) * size**2
    pooled = pooled.reshape(b, n, h * w)
    col = pts[..., 0].round().long().clamp(0, w - 1)
    row = pts[..., 1].round().long().clamp(0, h - 1)
    values = pooled.gather(-1, (row * w + col).unsqueeze(-1)).squeeze(-1)
    return values[0] if unbatched else values


#: How a network's output maps become heatmaps: ``"none"`` (regressed Gaussians, peak about 1) or
#: ``"spatial_softmax"`` (logits; the softmax over the pixels is a probability map).
HEATMAP_ACTIVATIONS: tuple[str, ...] = ("none", "spatial_softmax")


def activate_heatmaps(outputs: torch.Tensor, activation: str) -> torch.Tensor:
    """Heatmaps from network outputs ``(..., H, W)`` for the given activation (see :data:`HEATMAP_ACTIVATIONS`)."""
    if activation == "spatial_softmax":
        return spatial_softmax(outputs)
    if activation == "none":
        return torch.as_tensor(outputs).float()
    raise ValueError(f"heatmap activation must be one of {HEATMAP_ACTIVATIONS}, got {activation!r}.")


def heatmap_confidence(heatmaps: torch.Tensor, points: torch.Tensor, activation: str, radius: int = 3) -> torch.Tensor:
    """Confidence in ``[0, 1]`` of landmark ``i`` at point ``i`` of activated heatmap ``i``.

    ``"none"``: the heatmap maximum within one pixel (a regressed Gaussian peaks at about 1).
    ``"spatial_softmax"``: the probability that the landmark lies within ``radius`` pixels.
    """
    if activation == "spatial_softmax":
        return heatmap_value_near(heatmaps, points, radius, reduce="sum").clamp(0, 1)
    if activation == "none":
        return heatmap_value_near(heatmaps, points, 1, reduce="max").clamp(0, 1)
    raise ValueError(f"heatmap activation must be one of {HEATMAP_ACTIVATIONS}, got {activation!r}.")

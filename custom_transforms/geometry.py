"""Small helpers for 2-D homogeneous geometry on ``[x, y]`` points (x = column, y = row, pixel centres)."""

from __future__ import annotations

import numpy as np


def as_points(points, name: str = "points") -> np.ndarray:
    """Return ``points`` as a float64 array of shape ``(N, 2)`` (``N`` may be 0)."""
    arr = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected an array of [x, y] points with shape (N, 2), got shape {arr.shape}")
    return arr


def transform_points(matrix: np.ndarray, points) -> np.ndarray:
    """Apply a 3x3 homogeneous affine ``matrix`` (acting on ``[x, y, 1]``) to ``(N, 2)`` points."""
    pts = as_points(points)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:2, :2].T + m[:2, 2]


def scale_translate(scale_xy, offset_xy) -> np.ndarray:
    """Homogeneous matrix ``[x, y] -> [sx * x + ox, sy * y + oy]``."""
    return np.array(
        [[scale_xy[0], 0.0, offset_xy[0]], [0.0, scale_xy[1], offset_xy[1]], [0.0, 0.0, 1.0]], dtype=np.float64
    )


def spacing_xy(spacing_mm) -> np.ndarray:
    """Pixel size as ``(dx, dy)`` in mm from a ``(row, col)`` spacing; ``(1, 1)`` when the spacing is unknown."""
    if spacing_mm is None:
        return np.ones(2)
    return np.array([float(spacing_mm[1]), float(spacing_mm[0])])


def image_contains(points, shape_hw, tolerance: float = 0.0) -> np.ndarray:
    """Boolean mask of the points lying inside an image of ``shape_hw`` = (H, W).

    The image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` because integer coordinates are pixel centres.
    """
    pts = as_points(points)
    h, w = shape_hw
    lo = -0.5 - tolerance
    return (pts[:, 0] >= lo) & (pts[:, 0] <= w - 0.5 + tolerance) & (pts[:, 1] >= lo) & (pts[:, 1] <= h - 0.5 + tolerance)

"""The project's one toolkit for 2-D pixel geometry on ``[x, y]`` points (x = column, y = row, pixel centres).

Every module that moves points between frames, converts pixels to ``grid_sample`` coordinates or to millimetres
calls these functions instead of restating the arithmetic:

* :func:`transform_points`: a ``(3, 3)`` homogeneous matrix acting on ``[x, y, 1]`` column vectors, applied to
  points of any leading shape (ROI <-> original, letterbox, mirror, patch frames);
* :func:`pixel_to_normalized` / :func:`normalized_to_pixel`: pixel-centre coordinates <->
  ``torch.nn.functional.grid_sample`` coordinates with ``align_corners=False`` (``-1`` and ``1`` are the outer
  edges of the first and last pixel, so pixel ``c`` of ``n`` is at ``(2 c + 1) / n - 1``);
* :func:`spacing_xy` / :func:`pixels_to_mm`: the ``(row, col)`` spacing of the conventions applied to ``[x, y]``
  points (x is scaled by the column spacing, y by the row spacing);
* :func:`scale_translate`, :func:`image_contains`, :func:`as_points`.

Resampling an image through such a matrix is :func:`custom_transforms.resampling.sample_affine`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "as_points",
    "image_contains",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "pixels_to_mm",
    "scale_translate",
    "spacing_xy",
    "transform_points",
]


def _as_float64(values) -> np.ndarray:
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)


def as_points(points, name: str = "points") -> np.ndarray:
    """Return ``points`` as a float64 array of shape ``(N, 2)`` (``N`` may be 0)."""
    arr = _as_float64(points)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected an array of [x, y] points with shape (N, 2), got shape {arr.shape}")
    return arr


def transform_points(matrix, points) -> np.ndarray:
    """Apply a ``(3, 3)`` homogeneous matrix (acting on ``[x, y, 1]`` column vectors) to ``[x, y]`` points.

    Args:
        matrix: ``(3, 3)``; an affine map (last row ``[0, 0, 1]``), or a projective one, whose result is divided
            by its third coordinate.
        points: ``(..., 2)`` ``[x, y]`` points (numpy, torch or nested lists; any number of leading axes).

    Returns:
        float64 points of the same shape.
    """
    pts = _as_float64(points)
    if pts.size == 0:
        return pts.reshape(*pts.shape[:-1], 2) if pts.ndim >= 1 and pts.shape[-1:] == (2,) else pts.reshape(0, 2)
    if pts.shape[-1] != 2:
        raise ValueError(f"points: expected [x, y] points with shape (..., 2), got shape {pts.shape}")
    m = _as_float64(matrix)
    if m.shape != (3, 3):
        raise ValueError(f"matrix: expected a (3, 3) homogeneous matrix, got shape {m.shape}")
    mapped = pts @ m[:2, :2].T + m[:2, 2]
    if np.array_equal(m[2], [0.0, 0.0, 1.0]):
        return mapped
    w = pts @ m[2, :2] + m[2, 2]
    return mapped / w[..., None]


def pixel_to_normalized(coords, size):
    """Pixel-centre coordinates -> ``grid_sample`` coordinates (``align_corners=False``): ``(2 c + 1) / n - 1``.

    Args:
        coords: coordinates along one axis (numpy array, torch tensor or number).
        size: the number of pixels ``n`` along that axis.
    """
    return (2.0 * coords + 1.0) / size - 1.0


def normalized_to_pixel(coords, size):
    """``grid_sample`` coordinates (``align_corners=False``) -> pixel-centre coordinates: ``((u + 1) n - 1) / 2``.

    Args:
        coords: normalised coordinates along one axis (numpy array, torch tensor or number).
        size: the number of pixels ``n`` along that axis.
    """
    return ((coords + 1.0) * size - 1.0) / 2.0


def scale_translate(scale_xy, offset_xy) -> np.ndarray:
    """Homogeneous matrix ``[x, y] -> [sx * x + ox, sy * y + oy]``."""
    return np.array(
        [[scale_xy[0], 0.0, offset_xy[0]], [0.0, scale_xy[1], offset_xy[1]], [0.0, 0.0, 1.0]], dtype=np.float64
    )


def spacing_xy(spacing_mm) -> np.ndarray:
    """Pixel size as ``(dx, dy)`` in mm from a ``(row, col)`` spacing; ``(1, 1)`` when the spacing is unknown."""
    if spacing_mm is None:
        return np.ones(2)
    spacing = _as_float64(spacing_mm).reshape(-1)
    if spacing.shape != (2,):
        raise ValueError(f"spacing_mm: expected (row, col) in mm, got {spacing_mm!r}")
    return spacing[::-1].copy()


def pixels_to_mm(points, spacing_mm) -> np.ndarray:
    """``[x, y]`` pixel positions (or offsets) in mm: x times the column spacing, y times the row spacing.

    Args:
        points: ``(..., 2)`` ``[x, y]`` pixels.
        spacing_mm: ``(row, col)`` mm.
    """
    if spacing_mm is None:
        raise ValueError("pixels_to_mm: the pixel spacing is unknown (spacing_mm is None).")
    return _as_float64(points) * spacing_xy(spacing_mm)


def image_contains(points, shape_hw, tolerance: float = 0.0) -> np.ndarray:
    """Boolean mask of the points lying inside an image of ``shape_hw`` = (H, W).

    The image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` because integer coordinates are pixel centres.
    """
    pts = as_points(points)
    h, w = shape_hw
    lo = -0.5 - tolerance
    inside_x = (pts[:, 0] >= lo) & (pts[:, 0] <= w - 0.5 + tolerance)
    return inside_x & (pts[:, 1] >= lo) & (pts[:, 1] <= h - 0.5 + tolerance)

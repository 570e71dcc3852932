"""Signed-distance primitives and meshing, for the built-in (procedural) bones.

Distances are in mm, negative inside. Shapes are combined with a smooth minimum so that joins look
like bone rather than like welded pipes. A bone's outer surface is the zero level set, its
cortical-cancellous boundary a negative level set (``-cortex``), both meshed with marching cubes so
the projector gets closed, outward-oriented surfaces.
"""

from __future__ import annotations

import numpy as np

from .mesh import Mesh


def sphere(p: np.ndarray, centre, radius: float) -> np.ndarray:
    return np.linalg.norm(p - np.asarray(centre, dtype=np.float64), axis=-1) - radius


def ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    """Approximate distance to an axis-aligned ellipsoid (exact on the axes, good enough near it)."""
    q = (p - np.asarray(centre, dtype=np.float64)) / np.asarray(radii, dtype=np.float64)
    k = np.linalg.norm(q, axis=-1)
    return (k - 1.0) * np.min(radii)


def rounded_box(p: np.ndarray, centre, half_sizes, rounding: float) -> np.ndarray:
    """Axis-aligned box with rounded edges (exact distance)."""
    q = np.abs(p - np.asarray(centre, dtype=np.float64)) - (np.asarray(half_sizes, dtype=np.float64) - rounding)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    inside = np.minimum(q.max(axis=-1), 0.0)
    return outside + inside - rounding


def capsule(p: np.ndarray, a, b, radius_a: float, radius_b: float | None = None) -> np.ndarray:
    """Distance to a segment a-b swept by a sphere whose radius goes linearly from ``radius_a`` to ``radius_b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    rb = radius_a if radius_b is None else radius_b
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(p - closest, axis=-1) - (radius_a + (rb - radius_a) * t)


def polyline_tube(p: np.ndarray, points, radii) -> np.ndarray:
    """Union of capsules along a polyline with per-point radii."""
    d = None
    for i in range(len(points) - 1):
        di = capsule(p, points[i], points[i + 1], radii[i], radii[i + 1])
        d = di if d is None else np.minimum(d, di)
    return d


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: a fillet of size ``k`` where the shapes meet."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, -b)


def grid(lo, hi, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points of a regular grid ``(nx, ny, nz, 3)`` covering [lo, hi] and its origin."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    axes = [np.arange(lo[i], hi[i] + step, step) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1), lo


def mesh_level(values: np.ndarray, origin: np.ndarray, step: float, level: float = 0.0) -> Mesh:
    """Closed, outward-oriented surface ``values == level`` (the grid is padded so the surface closes)."""
    from skimage.measure import marching_cubes

    padded = np.pad(values, 1, mode="constant", constant_values=max(values.max(), level + 1.0))
    verts, faces, _, _ = marching_cubes(padded, level=level, spacing=(step, step, step))
    verts = verts - step + origin
    mesh = Mesh(verts.astype(np.float64), faces.astype(np.int64))
    if mesh.signed_volume() < 0:
        mesh = Mesh(mesh.vertices, mesh.faces[:, ::-1].copy())
    return mesh

"""Cone-beam projection of closed surfaces: per-pixel path length (mm) through each solid.

The surfaces are posed by a 4x4 matrix (anatomy LPS -> camera frame) and rasterised with their
signed crossing depths (:mod:`simulation.rasterize`); the depth chord is turned into the length along
each pixel's own ray by the camera's secant. Pixels whose rays cross a surface an odd number of
times (only possible for a surface that is not closed) are reported, never silently kept.
"""

from __future__ import annotations

import numpy as np

from .camera import ConeBeamCamera, apply
from .mesh import Mesh
from .rasterize import rasterize_chords


def path_length(mesh: Mesh, matrix: np.ndarray, camera: ConeBeamCamera, secant: np.ndarray | None = None) -> np.ndarray:
    """Length (mm) of every detector pixel's ray inside the solid bounded by ``mesh``.

    Args:
        mesh: closed, outward-oriented surface in the anatomy frame.
        matrix: 4x4 anatomy -> camera transform.
        camera: the cone-beam camera.
        secant: ``camera.secant()`` if already computed.

    Raises:
        ValueError: the surface is not closed as seen by some rays.
    """
    v = apply(matrix, mesh.vertices)
    faces = mesh.faces if np.linalg.det(matrix[:3, :3]) > 0 else mesh.faces[:, ::-1]
    depth = camera.depth(v)
    if np.any(depth <= 1.0):
        raise ValueError("a surface reaches the X-ray source; the pose or camera is wrong")
    chord, crossings = rasterize_chords(camera.project(v), depth, faces, camera.shape)
    open_rays = np.abs(crossings) > 0.5
    if open_rays.any():
        raise ValueError(f"surface is not closed: {int(open_rays.sum())} rays cross it an odd number of times")
    if secant is None:
        secant = camera.secant()
    return np.maximum(chord, 0.0) * secant

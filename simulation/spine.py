"""Lowest lumbar vertebrae (L5, L4) and the sacral tip with the coccyx, added to both anatomy sources.

The atlas's sacrum stops at S3 and neither source has a lumbar spine, yet an AP pelvic film shows L5
(often L4) above the sacrum and the sacral tip and coccyx in the midline of the pelvic inlet. Canonical
shapes are built once from signed-distance primitives (a vertebra: body, pedicles, transverse
processes, laminae, spinous and articular processes; the tip: a tapering curved rod) and placed from
the subject's own sacrum: on the S1 endplate (centre and normal fitted to the sacrum's top vertices
near the midline) with a 10 mm disc, and below the sacrum's lowest midline vertices, continuing its
curve forwards.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import sdf
from .mesh import Mesh

VERTEBRA_CORTEX_MM = 1.0
DISC_MM = 10.0
BODY_HEIGHT_MM = 27.0


@lru_cache(maxsize=1)
def canonical_vertebra(step: float = 1.6) -> tuple[Mesh, Mesh]:
    """Outer and inner surfaces of a lower lumbar vertebra; origin at the inferior endplate centre,
    +z along the spine (up), +y posterior, +x patient left."""
    p, origin = sdf.grid((-62, -22, -12), (62, 80, 42), step)
    # Body: an elliptic cylinder (24 x 17 mm half-axes), waisted by 2 mm at mid-height, flat endplates.
    x, y, z = p[..., 0], p[..., 1] - 1.0, p[..., 2]
    waist = 2.0 * np.clip(1.0 - ((z - BODY_HEIGHT_MM / 2) / (BODY_HEIGHT_MM / 2)) ** 2, 0.0, 1.0)
    radial = np.sqrt((x * 17.0 / 24.0) ** 2 + y**2) - (17.0 - waist * 17.0 / 24.0)
    slab = np.abs(z - BODY_HEIGHT_MM / 2) - BODY_HEIGHT_MM / 2
    d = np.maximum(radial, slab)
    for sx in (-1.0, 1.0):
        pedicle = sdf.capsule(p, (sx * 14.0, 12.0, 19.0), (sx * 15.0, 29.0, 19.0), 5.0)
        transverse = sdf.capsule(p, (sx * 16.0, 28.0, 20.0), (sx * 50.0, 30.0, 16.0), 6.0, 4.5)
        lamina = sdf.capsule(p, (sx * 15.0, 31.0, 19.0), (0.0, 41.0, 14.0), 4.5)
        superior_facet = sdf.capsule(p, (sx * 16.0, 31.0, 22.0), (sx * 18.0, 34.0, 36.0), 4.5)
        inferior_facet = sdf.capsule(p, (sx * 11.0, 36.0, 12.0), (sx * 13.0, 38.0, -4.0), 4.0)
        for part in (pedicle, transverse, lamina, superior_facet, inferior_facet):
            d = sdf.smooth_union(d, part, 3.0)
    spinous = sdf.capsule(p, (0.0, 40.0, 15.0), (0.0, 68.0, 10.0), 5.5, 4.0)
    d = sdf.smooth_union(d, spinous, 3.0)
    return sdf.mesh_level(d, origin, step), sdf.mesh_level(d, origin, step, -VERTEBRA_CORTEX_MM)


@lru_cache(maxsize=1)
def canonical_tip(step: float = 1.4) -> tuple[Mesh, Mesh]:
    """S4-S5 and the coccyx: origin at the top centre, running down (-z) and curving forwards (-y)."""
    p, origin = sdf.grid((-25, -40, -78), (25, 14, 8), step)
    t = np.linspace(0.0, 1.0, 6)
    centre = np.stack([np.zeros_like(t), -28.0 * t**2, -70.0 * t], axis=1)
    half_width = 14.0 - 10.5 * t
    half_depth = 6.0 - 3.0 * t
    d = None
    for i in range(len(t) - 1):
        k = half_depth[i] / half_width[i]
        q = p.copy()
        q[..., 0] *= k  # elliptic cross-section, wide in x
        di = sdf.capsule(q, centre[i], centre[i + 1], half_depth[i], half_depth[i + 1])
        d = di if d is None else sdf.smooth_union(d, di, 2.0)
    return sdf.mesh_level(d, origin, step), sdf.mesh_level(d, origin, step, -VERTEBRA_CORTEX_MM)


#: Anterior in LPS (-y): where a frame's front faces unless told otherwise.
_ANTERIOR = np.array([0.0, -1.0, 0.0])


def _frame(z_axis: np.ndarray, forward_hint: np.ndarray = _ANTERIOR) -> np.ndarray:
    """Rotation whose columns are (x, y, z) with z = z_axis and y as posterior as possible."""
    z = z_axis / np.linalg.norm(z_axis)
    y = -forward_hint - (-forward_hint @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=1)


def _place(meshes: tuple[Mesh, Mesh], rotation: np.ndarray, origin: np.ndarray) -> tuple[Mesh, Mesh]:
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = origin
    return meshes[0].transformed(m), meshes[1].transformed(m)


def sacral_endplate(sacrum: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Centre and upward normal of the S1 endplate: plane fitted to the highest midline vertices."""
    v = sacrum.vertices
    mid_x = 0.5 * (v[:, 0].min() + v[:, 0].max())
    near = np.abs(v[:, 0] - mid_x) < 14.0
    top = v[near][v[near][:, 2] > np.percentile(v[near][:, 2], 93)]
    centre = top.mean(axis=0)
    _, _, vt = np.linalg.svd(top - centre, full_matrices=False)
    normal = vt[2] if vt[2][2] > 0 else -vt[2]
    return centre, normal


def spine_meshes(sacrum: Mesh) -> dict[str, tuple[Mesh, Mesh]]:
    """L5, L4 and the sacral tip with the coccyx placed on ``sacrum`` (LPS mm)."""
    centre, normal = sacral_endplate(sacrum)
    up = np.array([0.0, 0.0, 1.0])
    # Lordosis: L5's axis halfway between the S1 endplate normal and the vertical, L4's nearly vertical.
    l5_axis = normal + up
    l5_rot = _frame(l5_axis)
    l5_origin = centre + DISC_MM * l5_rot[:, 2]
    l4_rot = _frame(0.3 * normal + up)
    l4_origin = l5_origin + (BODY_HEIGHT_MM + DISC_MM) * l5_rot[:, 2]
    v = sacrum.vertices
    mid_x = 0.5 * (v[:, 0].min() + v[:, 0].max())
    near = np.abs(v[:, 0] - mid_x) < 12.0
    low = v[near][v[near][:, 2] < np.percentile(v[near][:, 2], 5)]
    tip_top = low.mean(axis=0) + np.array([0.0, 0.0, 2.0])
    # The tip continues the sacrum's course from S1 to S3 (down and backwards), curving forwards itself.
    course = tip_top - centre
    tip_rot = _frame(-course, forward_hint=np.array([0.0, -1.0, 0.0]))
    return {
        "l5": _place(canonical_vertebra(), l5_rot, l5_origin),
        "l4": _place(canonical_vertebra(), l4_rot, l4_origin),
        "coccyx": _place(canonical_tip(), tip_rot, tip_top),
    }

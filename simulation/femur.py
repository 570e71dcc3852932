"""Proximal femora (head, neck, greater and lesser trochanters, shaft), added at the acetabula.

Neither anatomy source has femora, yet every AP pelvic radiograph shows them, and their overlap with
the ischium and the acetabular rim is part of what the detector has to see through. A canonical right
femur is built once from signed-distance primitives (LPS mm, head centre at the origin, shaft almost
vertical with 7 deg of adduction, neck-shaft angle 130 deg, anteversion 12 deg), scaled per subject to
the acetabulum, mirrored for the left side and posed per image (leg rotation and abduction).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import sdf
from .camera import rotation_y, rotation_z
from .mesh import Mesh

#: Canonical femoral head radius (mm); subjects are scaled so that head = acetabulum radius - joint space.
CANONICAL_HEAD_RADIUS = 23.0
#: Radiographic joint space (cartilage of head + acetabulum), mm.
JOINT_SPACE_MM = 3.5
NECK_SHAFT_ANGLE_DEG = 130.0
ANTEVERSION_DEG = 12.0
SHAFT_ADDUCTION_DEG = 7.0

#: Random leg pose per image: rotation about the shaft (internal + / external -) and abduction, degrees.
LEG_POSE_RANGES = {"rotation_deg": (-20.0, 15.0), "abduction_deg": (-4.0, 6.0)}


def _frame():
    """Canonical right-femur geometry: neck base point on the shaft axis, neck and shaft directions."""
    elev = np.deg2rad(180.0 - NECK_SHAFT_ANGLE_DEG - SHAFT_ADDUCTION_DEG)
    av = np.deg2rad(ANTEVERSION_DEG)
    # From the head towards the shaft: lateral (-x for the right side), down, and posterior (anteversion).
    neck_dir = np.array([-np.cos(elev) * np.cos(av), np.cos(elev) * np.sin(av), -np.sin(elev)])
    base = 52.0 * neck_dir
    ad = np.deg2rad(SHAFT_ADDUCTION_DEG)
    shaft_dir = np.array([np.sin(ad), 0.0, -np.cos(ad)])  # distal end medial (+x for the right side)
    return base, neck_dir, shaft_dir


@lru_cache(maxsize=1)
def canonical_right_femur(step: float = 2.2) -> tuple[Mesh, Mesh]:
    """Outer and inner (medullary / cancellous) surfaces of the canonical right femur."""
    base, neck_dir, shaft_dir = _frame()
    lateral = np.array([-1.0, 0.0, 0.0])
    posterior = np.array([0.0, 1.0, 0.0])
    p, origin = sdf.grid((-85, -35, -300), (30, 45, 30), step)
    up = np.array([0.0, 0.0, 1.0])
    head = sdf.sphere(p, (0, 0, 0), CANONICAL_HEAD_RADIUS)
    neck = sdf.capsule(p, 0.3 * base, base, 12.5, 15.0)
    greater = sdf.capsule(
        p, base + 17 * lateral + 8 * up + 3 * posterior, base + 13 * lateral + 38 * shaft_dir, 9.0, 11.0
    )
    inter = sdf.capsule(p, base + 4 * lateral, base + 55 * shaft_dir, 15.0, 13.5)
    lesser_c = base + 50 * shaft_dir + 12 * (-lateral) + 8 * posterior
    lesser = sdf.capsule(p, base + 42 * shaft_dir + 2 * (-lateral), lesser_c, 6.0, 5.0)
    shaft = sdf.capsule(p, base + 30 * shaft_dir, base + 330 * shaft_dir, 13.5, 12.0)
    d = sdf.smooth_union(head, neck, 6.0)
    d = sdf.smooth_union(d, inter, 8.0)
    d = sdf.smooth_union(d, greater, 9.0)
    d = sdf.smooth_union(d, lesser, 5.0)
    d = sdf.smooth_union(d, shaft, 10.0)
    # Cortex: thin in the head, neck and trochanters, thick in the diaphysis (medullary canal).
    depth_below = (p - base) @ shaft_dir
    cortex = np.interp(depth_below, [40.0, 110.0], [1.6, 5.0])
    outer = sdf.mesh_level(d, origin, step, 0.0)
    inner = sdf.mesh_level(d + cortex, origin, step, 0.0)
    return outer, inner


@dataclass(frozen=True)
class LegPose:
    rotation_deg: float = 0.0
    abduction_deg: float = 0.0

    @staticmethod
    def sample(rng: np.random.Generator) -> LegPose:
        return LegPose(*(float(rng.uniform(lo, hi)) for lo, hi in LEG_POSE_RANGES.values()))


def femur_transform(head_centre: np.ndarray, acetabulum_radius: float, side: str, pose: LegPose) -> np.ndarray:
    """4x4 transform placing the canonical right femur at ``head_centre`` (LPS) for side ``"r"``/``"l"``."""
    scale = max(acetabulum_radius - JOINT_SPACE_MM, 15.0) / CANONICAL_HEAD_RADIUS
    _, _, shaft_dir = _frame()
    # Leg rotation about the (vertical) long axis through the head; abduction swings the shaft laterally.
    r = rotation_z(pose.rotation_deg) @ rotation_y(-pose.abduction_deg)
    m = np.eye(4)
    m[:3, :3] = r * scale
    if side == "l":
        m = np.diag([-1.0, 1.0, 1.0, 1.0]) @ m  # mirror the right femur (rotations mirror with it)
    m[:3, 3] = head_centre
    return m


def femur_meshes(head_centre, acetabulum_radius: float, side: str, pose: LegPose) -> tuple[Mesh, Mesh]:
    """Outer and inner surfaces of one posed femur in the anatomy's LPS frame."""
    outer, inner = canonical_right_femur()
    m = femur_transform(np.asarray(head_centre, dtype=np.float64), acetabulum_radius, side, pose)
    return outer.transformed(m), inner.transformed(m)


__all__ = ["LegPose", "femur_meshes", "canonical_right_femur", "LEG_POSE_RANGES"]

"""A subject's pelvic anatomy, from the atlas or built in, in one form for the radiograph model.

An :class:`Anatomy` holds, in the LPS patient frame (mm): the pelvic bones (both hip bones and the
sacrum) as outer and inner (cortical-cancellous) closed surfaces, the 16 landmarks as 3D points, the
acetabula (centre and radius, where the femora are attached per image), and optional superior-ramus
corridors that guide fracture placement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from custom_transforms.conventions import LANDMARK_INDEX

from .atlas import ATLAS_ATTRIBUTION, load_member
from .landmarks import acetabulum_radius, atlas_landmarks
from .mesh import Mesh, inner_surface

#: Cortical thickness (mm) of the pelvic bones' outer shell before the thin-plate cap (mesh.inner_surface).
PELVIS_CORTEX_MM = 1.6


@dataclass
class Bone:
    """A bone as two closed surfaces: ``outer`` (periosteal) and ``inner`` (cancellous core)."""

    name: str
    outer: Mesh
    inner: Mesh | None = None


@dataclass
class Anatomy:
    """Everything the radiograph model needs to know about one subject.

    Args:
        subject: subject id (atlas member id, or ``P###`` for procedural subjects).
        source: ``"atlas"`` or ``"procedural"``.
        bones: bones by name: ``hip_r``, ``hip_l``, ``sacrum`` and the added ``l5``, ``l4``, ``coccyx``.
        landmarks: ``(16, 3)`` LPS mm, in :data:`~custom_transforms.conventions.LANDMARK_NAMES` order.
        acetabulum_radius: ``{"r": mm, "l": mm}``, radius of the sphere fitted to each acetabulum.
        ramus_corridors: ``{"r"/"l": Mesh}`` superior-ramus corridors (atlas only, may be empty).
        attribution: licence text every image rendered from this anatomy must carry, if any.
    """

    subject: str
    source: str
    bones: dict[str, Bone]
    landmarks: np.ndarray
    acetabulum_radius: dict[str, float]
    ramus_corridors: dict[str, Mesh] = field(default_factory=dict)
    attribution: str | None = None

    def acetabulum_centre(self, side: str) -> np.ndarray:
        return self.landmarks[LANDMARK_INDEX[f"acetabulum_center_{side}"]]

    @property
    def centre(self) -> np.ndarray:
        """Point the pose rotates about and the radiograph is centred on: between the acetabula and the
        iliac crests' lower part, about where a radiographer centres an AP pelvis."""
        mid = 0.5 * (self.acetabulum_centre("r") + self.acetabulum_centre("l"))
        return mid + np.array([0.0, 0.0, 25.0])


def add_spine(bones: dict[str, Bone]) -> None:
    """Add L5, L4 and the sacral tip with the coccyx, placed on the subject's sacrum (see :mod:`simulation.spine`)."""
    from .spine import spine_meshes

    for name, (outer, inner) in spine_meshes(bones["sacrum"].outer).items():
        bones[name] = Bone(name, outer, inner)


def atlas_anatomy(atlas_dir: str | Path, subject: str) -> Anatomy:
    """The anatomy of one atlas member (read, closed, cortex computed; cached per process)."""
    return _atlas_anatomy_cached(str(Path(atlas_dir).resolve()), str(subject))


@lru_cache(maxsize=8)
def _atlas_anatomy_cached(atlas_dir: str, subject: str) -> Anatomy:
    member = load_member(atlas_dir, subject)
    bones = {name: Bone(name, mesh, inner_surface(mesh, PELVIS_CORTEX_MM)) for name, mesh in member.bones.items()}
    add_spine(bones)
    radii = {side: acetabulum_radius(member.raw_vertices, side) for side in ("r", "l")}
    return Anatomy(
        subject=subject,
        source="atlas",
        bones=bones,
        landmarks=atlas_landmarks(member.raw_vertices),
        acetabulum_radius=radii,
        ramus_corridors=member.ramus_corridors,
        attribution=ATLAS_ATTRIBUTION,
    )

"""Radiograph simulator: AP pelvic radiographs with exact landmark and fracture labels.

Anatomy comes from the pelvis surface atlas (``anatomy="atlas"``) or from a built-in parametric pelvis
(``anatomy="procedural"``, no data files). Both go through the same cone-beam radiograph model.

Public API::

    from simulation import generate_dataset, render, atlas_anatomy, procedural_anatomy
    datalist = generate_dataset("/tmp/demo", 60, anatomy="procedural", seed=0, size=512)
"""

from .anatomy import Anatomy, Bone, atlas_anatomy
from .atlas import ATLAS_ATTRIBUTION, AtlasError, default_atlas_dir, list_members
from .camera import POSE_RANGES, ConeBeamCamera, Pose
from .dataset import generate_dataset
from .distractor import write_distractor
from .mesh import MeshError
from .procedural import procedural_anatomy
from .render import SimulatedRadiograph, render

__all__ = [
    "ATLAS_ATTRIBUTION",
    "Anatomy",
    "AtlasError",
    "Bone",
    "ConeBeamCamera",
    "MeshError",
    "POSE_RANGES",
    "Pose",
    "SimulatedRadiograph",
    "atlas_anatomy",
    "default_atlas_dir",
    "generate_dataset",
    "list_members",
    "procedural_anatomy",
    "render",
    "write_distractor",
]

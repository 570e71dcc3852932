"""Reading the pelvis surface atlas (layout of ``shared/data/pelvis_atlas``).

Layout (one member = one adult pelvis from CT, LPS mm, vertices in correspondence across members)::

    surface/left/LeftHip<ID>_cpd.vtk     surface/right/RightHip<ID>_cpd.vtk     surface/sacrum/Sacrum<ID>_cpd.vtk
    trajectory/superior_ramus_{left,right}/superior_ramus_<side>_<ID>.stl   (optional)

Licence: CC BY 4.0 (Han et al., Phys. Med. Biol. 2019); every image rendered from it carries
:data:`ATLAS_ATTRIBUTION`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .mesh import Mesh, MeshError, close_holes, read_stl_ascii, read_vtk_polydata

ATLAS_ATTRIBUTION = (
    "Anatomy: Open Source Atlas of Pelvis Segmentations and Surgical Trajectories (I-STAR Lab, Johns Hopkins), "
    "CC BY 4.0; Han R et al., Phys Med Biol 2019, doi:10.1088/1361-6560/ab1456; CT from TCIA CT Lymph Nodes "
    "(Roth et al. 2015, doi:10.7937/K9/TCIA.2015.AQIIDCNM)"
)

#: bone name -> (sub-folder, file prefix)
BONE_FILES: dict[str, tuple[str, str]] = {
    "hip_l": ("left", "LeftHip"),
    "hip_r": ("right", "RightHip"),
    "sacrum": ("sacrum", "Sacrum"),
}
#: Number of vertices every member must have per bone (the atlas's correspondence).
ATLAS_VERTEX_COUNT = 5000


class AtlasError(ValueError):
    """The atlas directory or one of its members is unusable; the message names the file."""


def default_atlas_dir() -> Path | None:
    """``../shared/data/pelvis_atlas`` relative to the repository, if it exists."""
    repo = Path(__file__).resolve().parent.parent
    candidate = repo.parent / "shared" / "data" / "pelvis_atlas"
    return candidate if candidate.is_dir() else None


def _surface_dir(atlas_dir: Path) -> Path:
    return atlas_dir / "surface"


def member_paths(atlas_dir: str | Path, subject: str) -> dict[str, Path]:
    """Paths of the three surfaces of a member."""
    s = _surface_dir(Path(atlas_dir))
    return {bone: s / folder / f"{prefix}{subject}_cpd.vtk" for bone, (folder, prefix) in BONE_FILES.items()}


def list_members(atlas_dir: str | Path) -> list[str]:
    """Ids of the members that have all three bones, sorted numerically.

    Raises:
        AtlasError: the directory does not exist, has no ``surface/`` folder, or holds no complete member;
            a member with some but not all of its three bones is named with the missing file.
    """
    atlas_dir = Path(atlas_dir)
    if not atlas_dir.is_dir():
        raise AtlasError(f"{atlas_dir}: atlas directory not found")
    surf = _surface_dir(atlas_dir)
    if not surf.is_dir():
        raise AtlasError(f"{surf}: missing; an atlas directory holds surface/left, surface/right, surface/sacrum")
    found: dict[str, set[str]] = {}
    for bone, (folder, prefix) in BONE_FILES.items():
        for p in sorted((surf / folder).glob(f"{prefix}*_cpd.vtk")):
            m = re.fullmatch(rf"{prefix}(\w+?)_cpd\.vtk", p.name)
            if m:
                found.setdefault(m.group(1), set()).add(bone)
    if not found:
        raise AtlasError(f"{surf}: no member surfaces found (expected e.g. left/LeftHip<ID>_cpd.vtk)")
    for subject, bones in sorted(found.items()):
        if len(bones) != len(BONE_FILES):
            missing = [member_paths(atlas_dir, subject)[b] for b in BONE_FILES if b not in bones]
            raise AtlasError(f"{missing[0]}: missing; member '{subject}' needs all three bones (left hip, right hip, sacrum)")
    return sorted(found, key=lambda s: (len(s), s))


@dataclass
class AtlasMember:
    """The surfaces of one atlas member (closed, outward-oriented, LPS mm)."""

    subject: str
    bones: dict[str, Mesh]
    raw_vertices: dict[str, np.ndarray]  # the file's vertices, indexable by landmark vertex ids
    ramus_corridors: dict[str, Mesh]  # "r"/"l" -> superior-ramus screw corridor surface (if present)


def load_member(atlas_dir: str | Path, subject: str) -> AtlasMember:
    """Read and check one member.

    Raises:
        AtlasError: unknown subject id, missing or malformed file, wrong vertex count, inside-out surface.
    """
    atlas_dir = Path(atlas_dir)
    return _load_member_cached(str(atlas_dir.resolve()), str(subject))


@lru_cache(maxsize=4)
def _load_member_cached(atlas_dir: str, subject: str) -> AtlasMember:
    members = list_members(atlas_dir)
    if subject not in members:
        raise AtlasError(f"{atlas_dir}: unknown subject id '{subject}'; available: {', '.join(members)}")
    bones: dict[str, Mesh] = {}
    raw: dict[str, np.ndarray] = {}
    for bone, path in member_paths(atlas_dir, subject).items():
        try:
            mesh = read_vtk_polydata(path)
        except MeshError as e:
            raise AtlasError(str(e)) from e
        if len(mesh.vertices) != ATLAS_VERTEX_COUNT:
            raise AtlasError(
                f"{path}: has {len(mesh.vertices)} vertices, expected {ATLAS_VERTEX_COUNT} "
                "(atlas members must be in vertex correspondence)"
            )
        raw[bone] = mesh.vertices.copy()
        closed = close_holes(mesh)
        vol = closed.signed_volume()
        if vol < 0:  # inward-oriented file: flip so that the projector sees outward normals
            closed = Mesh(closed.vertices, closed.faces[:, ::-1].copy())
            vol = -vol
        if vol < 1000.0:
            raise AtlasError(f"{path}: encloses only {vol:.0f} mm^3; not a closed bone surface in mm")
        bones[bone] = closed
    corridors: dict[str, Mesh] = {}
    for side, word in (("r", "right"), ("l", "left")):
        p = Path(atlas_dir) / "trajectory" / f"superior_ramus_{word}" / f"superior_ramus_{word}_{subject}.stl"
        if p.is_file():
            try:
                corridors[side] = read_stl_ascii(p)
            except MeshError as e:
                raise AtlasError(str(e)) from e
    return AtlasMember(subject, bones, raw, corridors)

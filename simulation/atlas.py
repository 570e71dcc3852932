"""Reading the pelvis surface atlas: the full folder (``shared/data/pelvis_atlas``) or the packed subset.

Full layout (one member = one adult pelvis from CT, LPS mm, vertices in correspondence across members)::

    surface/left/LeftHip<ID>_cpd.vtk     surface/right/RightHip<ID>_cpd.vtk     surface/sacrum/Sacrum<ID>_cpd.vtk
    trajectory/superior_ramus_{left,right}/superior_ramus_<side>_<ID>.stl   (optional)

Packed layout: a folder holding :data:`PACK_FILE` (one ``numpy.savez_compressed`` archive, written by
``python -m simulation.pack_atlas``); the package ships 12 members so in :data:`SUBSET_DIR`. Its arrays
(:func:`pack_key` names them): ``format``, ``members`` (ids), ``attribution``; per bone ``<bone>.vertices``
``(members, 5000, 3)`` float32 and ``<bone>.faces`` ``(F, 3)`` int32 (stored once: the faces are the same in
every member; ``<bone>.faces.<ID>`` per member otherwise); per superior-ramus corridor present
``ramus_<r|l>.vertices.<ID>`` and ``ramus_<r|l>.faces.<ID>``. Both layouts give the same member: the
packed vertices are the file's rounded to float32, everything after reading is shared.

Licence: CC BY 4.0 (Han et al., Phys. Med. Biol. 2019); every image rendered from it carries
:data:`ATLAS_ATTRIBUTION`.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .atlas_blend import blend_surfaces, parse_blend_id
from .atlas_warp import parse_warp_id, warp_surfaces
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
#: superior-ramus corridor side -> word used in the trajectory folder and file names
CORRIDOR_SIDES: dict[str, str] = {"r": "right", "l": "left"}
#: Number of vertices every member must have per bone (the atlas's correspondence).
ATLAS_VERTEX_COUNT = 5000
#: The packed atlas's file name inside its folder, and its format tag.
PACK_FILE = "pelvis_atlas_subset.npz"
PACK_FORMAT = "aasn-pelvis-atlas-pack/1"
#: The packed subset shipped with the package.
SUBSET_DIR = Path(__file__).resolve().parent / "atlas_subset"
#: The full atlas, when the repository sits beside a ``shared`` folder holding it.
SHARED_ATLAS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pelvis_atlas"


class AtlasError(ValueError):
    """The atlas directory or one of its members is unusable; the message names the file."""


def default_atlas_dir() -> Path | None:
    """``../shared/data/pelvis_atlas`` relative to the repository if it exists, else the packed subset shipped
    in the package (:data:`SUBSET_DIR`), else None."""
    if SHARED_ATLAS_DIR.is_dir():
        return SHARED_ATLAS_DIR
    return SUBSET_DIR if (SUBSET_DIR / PACK_FILE).is_file() else None


def pack_key(name: str, part: str, subject: str | None = None) -> str:
    """Name of an array in the packed atlas: ``<bone>.vertices``, ``<bone>.faces`` (shared by all members),
    ``<bone>.faces.<ID>`` and ``ramus_<side>.{vertices,faces}.<ID>``."""
    return f"{name}.{part}" if subject is None else f"{name}.{part}.{subject}"


def packed_file(atlas_dir: str | Path) -> Path | None:
    """The packed atlas ``atlas_dir`` stands for (the folder's :data:`PACK_FILE`, or a ``.npz`` file itself),
    or None for a folder in the full layout."""
    atlas_dir = Path(atlas_dir)
    if atlas_dir.suffix == ".npz" and atlas_dir.is_file():
        return atlas_dir
    p = atlas_dir / PACK_FILE
    return p if p.is_file() else None


def _surface_dir(atlas_dir: Path) -> Path:
    return atlas_dir / "surface"


def member_paths(atlas_dir: str | Path, subject: str) -> dict[str, Path]:
    """Paths of the three surfaces of a member (full layout)."""
    s = _surface_dir(Path(atlas_dir))
    return {bone: s / folder / f"{prefix}{subject}_cpd.vtk" for bone, (folder, prefix) in BONE_FILES.items()}


def _corridor_path(atlas_dir: Path, side: str, subject: str) -> Path:
    word = CORRIDOR_SIDES[side]
    return atlas_dir / "trajectory" / f"superior_ramus_{word}" / f"superior_ramus_{word}_{subject}.stl"


def _sorted_ids(ids) -> list[str]:
    return sorted(ids, key=lambda s: (len(s), s))


def list_members(atlas_dir: str | Path) -> list[str]:
    """Ids of the members that have all three bones, sorted numerically (full or packed atlas).

    Raises:
        AtlasError: the directory does not exist, has neither a ``surface/`` folder nor a packed atlas, or
            holds no complete member; a member with some but not all of its three bones is named with the
            missing file; an unreadable packed atlas is named.
    """
    atlas_dir = Path(atlas_dir)
    pack = packed_file(atlas_dir)
    if pack is not None:
        return list(_read_pack(str(pack))["members"])
    if not atlas_dir.is_dir():
        raise AtlasError(f"{atlas_dir}: atlas directory not found")
    surf = _surface_dir(atlas_dir)
    if not surf.is_dir():
        raise AtlasError(
            f"{surf}: missing; an atlas directory holds surface/left, surface/right, surface/sacrum "
            f"(or a packed {PACK_FILE})"
        )
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
            raise AtlasError(
                f"{missing[0]}: missing; member '{subject}' needs all three bones (left hip, right hip, sacrum)"
            )
    return _sorted_ids(found)


# ------------------------------------------------------------------------------------------ packed atlas
def _read_pack(path: str) -> dict:
    p = Path(path)
    st = p.stat()
    return _read_pack_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=2)
def _read_pack_cached(path: str, mtime_ns: int, size: int) -> dict:
    """The packed atlas's arrays, checked: ``{"members": [ids], <key>: array}``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise AtlasError(f"{path}: not a readable packed atlas ({e})") from e
    fmt = str(data.get("format", ""))
    if fmt != PACK_FORMAT:
        raise AtlasError(
            f"{path}: packed atlas format {fmt!r}, expected {PACK_FORMAT!r} "
            "(write it with python -m simulation.pack_atlas)"
        )
    members = [str(s) for s in np.atleast_1d(data.get("members", np.array([], dtype=str)))]
    if not members or len(set(members)) != len(members):
        raise AtlasError(f"{path}: the packed atlas's 'members' must list distinct ids, found {members}")
    for bone in BONE_FILES:
        key = pack_key(bone, "vertices")
        v = data.get(key)
        if v is None or v.ndim != 3 or v.shape[0] != len(members) or v.shape[2] != 3:
            shape = None if v is None else v.shape
            raise AtlasError(f"{path}: array '{key}' must have shape ({len(members)}, V, 3), found {shape}")
        if not np.all(np.isfinite(v)):
            raise AtlasError(f"{path}: array '{key}' holds non-finite coordinates")
    data["members"] = _sorted_ids(members)
    data["_row"] = {s: i for i, s in enumerate(members)}
    return data


def _pack_mesh(path: Path, data: dict, vertices: np.ndarray, faces_key: str, label: str) -> Mesh:
    faces = data.get(faces_key)
    if faces is None:
        raise AtlasError(f"{path}: array '{faces_key}' missing ({label})")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or faces.min() < 0 or faces.max() >= len(vertices):
        raise AtlasError(
            f"{path}: array '{faces_key}' must hold triangles of vertices 0..{len(vertices) - 1} ({label})"
        )
    return Mesh(vertices.astype(np.float64), faces.astype(np.int64))


def _read_packed_member(pack: Path, subject: str) -> tuple[dict, dict]:
    data = _read_pack(str(pack))
    row = data["_row"][subject]
    surfaces: dict[str, tuple[str, Mesh]] = {}
    for bone in BONE_FILES:
        where = f"{pack} [{bone} of member {subject}]"
        shared, own = pack_key(bone, "faces"), pack_key(bone, "faces", subject)
        key = own if own in data else shared
        surfaces[bone] = (where, _pack_mesh(pack, data, data[pack_key(bone, "vertices")][row], key, where))
    corridors: dict[str, tuple[str, Mesh]] = {}
    for side in CORRIDOR_SIDES:
        vkey = pack_key(f"ramus_{side}", "vertices", subject)
        if vkey in data:
            where = f"{pack} [ramus_{side} of member {subject}]"
            v = data[vkey]
            if v.ndim != 2 or v.shape[1] != 3 or not np.all(np.isfinite(v)):
                raise AtlasError(f"{pack}: array '{vkey}' must be finite (V, 3) coordinates")
            corridors[side] = (where, _pack_mesh(pack, data, v, pack_key(f"ramus_{side}", "faces", subject), where))
    return surfaces, corridors


# ------------------------------------------------------------------------------------------ members
def _read_files_member(atlas_dir: Path, subject: str) -> tuple[dict, dict]:
    surfaces: dict[str, tuple[str, Mesh]] = {}
    for bone, path in member_paths(atlas_dir, subject).items():
        try:
            surfaces[bone] = (str(path), read_vtk_polydata(path))
        except MeshError as e:
            raise AtlasError(str(e)) from e
    corridors: dict[str, tuple[str, Mesh]] = {}
    for side in CORRIDOR_SIDES:
        p = _corridor_path(atlas_dir, side, subject)
        if p.is_file():
            try:
                corridors[side] = (str(p), read_stl_ascii(p))
            except MeshError as e:
                raise AtlasError(str(e)) from e
    return surfaces, corridors


def read_member_surfaces(atlas_dir: str | Path, subject: str) -> tuple[dict[str, Mesh], dict[str, Mesh]]:
    """One member's surfaces as stored, before any repair: ``({bone: Mesh}, {"r"/"l": corridor Mesh})``
    (what :mod:`simulation.pack_atlas` packs). Works on the full and the packed atlas.

    Raises:
        AtlasError: unknown subject id, missing or malformed file.
    """
    surfaces, corridors = _read_raw(Path(atlas_dir), str(subject))
    return {b: m for b, (_, m) in surfaces.items()}, {s: m for s, (_, m) in corridors.items()}


def parent_members(subject: str) -> list[str] | None:
    """The atlas members a derived subject id is made from: a blend's two members
    (:mod:`simulation.atlas_blend`), a warp's base members (:mod:`simulation.atlas_warp`); None for any other
    id (a member itself, or an unknown id)."""
    warp = parse_warp_id(subject)
    if warp is not None:
        return parent_members(warp[0]) or [warp[0]]
    blend = parse_blend_id(subject)
    return None if blend is None else [blend[0], blend[1]]


def unknown_subjects(subjects, members: list[str]) -> list[str]:
    """The ids among ``subjects`` that are neither a member nor made from members (a blend of two,
    :mod:`simulation.atlas_blend`; a warp of a member or a blend, :mod:`simulation.atlas_warp`)."""

    def known(subject: str) -> bool:
        warp = parse_warp_id(subject)
        if warp is not None:
            return parse_warp_id(warp[0]) is None and known(warp[0])
        parts = parse_blend_id(subject)
        return subject in members or (parts is not None and parts[0] in members and parts[1] in members)

    return [str(s) for s in subjects if not known(str(s))]


def _read_raw(atlas_dir: Path, subject: str) -> tuple[dict, dict]:
    members = list_members(atlas_dir)
    if unknown_subjects([subject], members):
        raise AtlasError(f"{atlas_dir}: unknown subject id '{subject}'; available: {', '.join(members)}")
    if subject not in members:
        warp = parse_warp_id(subject)
        if warp is not None:
            return warp_surfaces(_read_raw(atlas_dir, warp[0]), warp[1], subject)
        a, b, share = parse_blend_id(subject)
        try:
            return blend_surfaces(_read_raw(atlas_dir, a), _read_raw(atlas_dir, b), share, subject)
        except ValueError as e:
            raise AtlasError(str(e)) from e
    pack = packed_file(atlas_dir)
    return _read_packed_member(pack, subject) if pack is not None else _read_files_member(atlas_dir, subject)


@dataclass
class AtlasMember:
    """The surfaces of one atlas member (closed, outward-oriented, LPS mm)."""

    subject: str
    bones: dict[str, Mesh]
    raw_vertices: dict[str, np.ndarray]  # the file's vertices, indexable by landmark vertex ids
    ramus_corridors: dict[str, Mesh]  # "r"/"l" -> superior-ramus screw corridor surface (if present)


def load_member(atlas_dir: str | Path, subject: str) -> AtlasMember:
    """Read and check one member (full or packed atlas).

    Raises:
        AtlasError: unknown subject id, missing or malformed file, wrong vertex count, inside-out surface.
    """
    atlas_dir = Path(atlas_dir)
    return _load_member_cached(str(atlas_dir.resolve()), str(subject))


@lru_cache(maxsize=4)
def _load_member_cached(atlas_dir: str, subject: str) -> AtlasMember:
    surfaces, corridors = _read_raw(Path(atlas_dir), subject)
    bones: dict[str, Mesh] = {}
    raw: dict[str, np.ndarray] = {}
    for bone, (where, mesh) in surfaces.items():
        if len(mesh.vertices) != ATLAS_VERTEX_COUNT:
            raise AtlasError(
                f"{where}: has {len(mesh.vertices)} vertices, expected {ATLAS_VERTEX_COUNT} "
                "(atlas members must be in vertex correspondence)"
            )
        raw[bone] = mesh.vertices.copy()
        closed = close_holes(mesh)
        vol = closed.signed_volume()
        if vol < 0:  # inward-oriented file: flip so that the projector sees outward normals
            closed = Mesh(closed.vertices, closed.faces[:, ::-1].copy())
            vol = -vol
        if vol < 1000.0:
            raise AtlasError(f"{where}: encloses only {vol:.0f} mm^3; not a closed bone surface in mm")
        bones[bone] = closed
    return AtlasMember(subject, bones, raw, {side: mesh for side, (_, mesh) in corridors.items()})

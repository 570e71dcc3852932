"""Pack a subset of the pelvis atlas into one compressed file that ships with the package.

Usage (from the repository root)::

    python -m simulation.pack_atlas --atlas-dir ../shared/data/pelvis_atlas \\
        --members 2,5,10,14,22,28,33,38,43,47,55,63 --out simulation/atlas_subset/

writes ``<out>/pelvis_atlas_subset.npz`` (the packed layout described in :mod:`simulation.atlas`, which owns
it and reads it back), ``<out>/LICENSE.txt`` (copied from the atlas) and ``<out>/README.md`` (source,
licence, citations, the member ids). Every member is checked as the simulator would load it before packing,
and read back from the written file afterwards: the vertices must equal the source's rounded to float32,
the faces the source's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .atlas import (
    ATLAS_ATTRIBUTION,
    BONE_FILES,
    PACK_FILE,
    PACK_FORMAT,
    SUBSET_DIR,
    AtlasError,
    list_members,
    load_member,
    pack_key,
    packed_file,
    read_member_surfaces,
)
from .mesh import Mesh, MeshError

#: The members shipped in ``simulation/atlas_subset``: every third id of the 32, and the last one.
SUBSET_MEMBERS = ("2", "5", "10", "14", "22", "28", "33", "38", "43", "47", "55", "63")

README = """# Pelvis atlas subset ({n} members, packed)

Real pelvic anatomy for the radiograph simulator, shipped so that a clone without the full atlas
(`../shared/data/pelvis_atlas`) can simulate radiographs from real anatomy: for {n} adults, the surfaces
of the left hip bone, right hip bone and sacrum (S1-S3), segmented from CT, and the safe screw corridors
through the left and right superior pubic rami, in one compressed numpy archive, `{pack}`.

**Members included** (atlas ids): {ids}.
They are spread over the 32 members of the project's copy of the atlas (which holds 32 of the atlas's 40;
the others are kept apart as unseen anatomy).

## Source, licence and attribution

Source: "Open Source Atlas of Pelvis Segmentations and Surgical Trajectories", I-STAR Lab,
Johns Hopkins University (public GitHub repository
rhan93/Altas-of-Pelvis-Segmentation-and-Trajectory-Planning).
Licence: Creative Commons Attribution 4.0 International (CC BY 4.0; `LICENSE.txt` beside this file,
https://creativecommons.org/licenses/by/4.0/). **Not for clinical use.**
Anything that ships images rendered from it must carry this attribution (the simulator writes
`simulation.ATLAS_ATTRIBUTION` into every image's DICOM ImageComments and into `datalist.json`). Cite:

- Han R, Uneri A, Silva T D, Ketcha M, Goerres J, Vogt S, Kleinszig G, Osgood G, Siewerdsen J H.
  Atlas-Based Automatic Planning and 3D-2D Fluoroscopic Guidance in Pelvic Trauma Surgery.
  Phys. Med. Biol. (2019). doi:10.1088/1361-6560/ab1456
- The CT images come from TCIA "CT Lymph Nodes" (Roth et al. 2015, doi:10.7937/K9/TCIA.2015.AQIIDCNM).

Changes made to the atlas files (CC BY 4.0 asks for them to be indicated): only {n} members are included;
the ASCII VTK surfaces (`surface/*/<Bone><ID>_cpd.vtk`) and ASCII STL corridors
(`trajectory/superior_ramus_*/superior_ramus_<side>_<ID>.stl`) were converted to arrays, the coordinates
rounded to float32 (about 0.00003 mm at 800 mm); the triangles of each bone, the same in every member, are
stored once; the corridors' STL vertices are merged by exact position. No coordinate was otherwise altered.

## Use

The simulator uses this folder when `../shared/data/pelvis_atlas` is absent; to use it even when that
exists, pass the folder as the atlas directory:

    python -m simulation generate --anatomy atlas --atlas-dir simulation/atlas_subset \\
        --n 4 --size 256 --out /tmp/subset4

or `simulation.atlas_anatomy(simulation.atlas.SUBSET_DIR, "{first}")` in Python.

## Format

`{pack}` (`numpy.load(..., allow_pickle=False)`), frame and units as in the atlas (LPS mm):
`format` (`{fmt}`), `members` (ids), `attribution`; per bone (`hip_l`, `hip_r`, `sacrum`)
`<bone>.vertices` (members x 5000 x 3, float32, vertices in correspondence across members) and
`<bone>.faces` (triangles, int32); per member and side (`r`, `l`) `ramus_<side>.vertices.<ID>` and
`ramus_<side>.faces.<ID>`. `simulation/atlas.py` reads it; regenerate with

    python -m simulation.pack_atlas --atlas-dir ../shared/data/pelvis_atlas \\
        --members {csv} --out simulation/atlas_subset/
"""


def _float32(mesh: Mesh) -> np.ndarray:
    return np.ascontiguousarray(mesh.vertices, dtype=np.float32)


def _int32(faces: np.ndarray, where: str) -> np.ndarray:
    if faces.size and (faces.min() < 0 or faces.max() > np.iinfo(np.int32).max):
        raise AtlasError(f"{where}: face indices do not fit int32")
    return np.ascontiguousarray(faces, dtype=np.int32)


def pack_arrays(atlas_dir: str | Path, members: list[str]) -> dict[str, np.ndarray]:
    """The arrays of the packed atlas for these members of ``atlas_dir`` (full or packed layout).

    Raises:
        AtlasError: unknown member id, or a member the simulator could not load (the message names the file).
    """
    available = list_members(atlas_dir)
    unknown = [s for s in members if s not in available]
    if unknown or not members or len(set(members)) != len(members):
        raise AtlasError(
            f"{atlas_dir}: members must be distinct ids of the atlas; unknown: {unknown}; "
            f"available: {', '.join(available)}"
        )
    arrays: dict[str, np.ndarray] = {
        "format": np.array(PACK_FORMAT),
        "members": np.array(members),
        "attribution": np.array(ATLAS_ATTRIBUTION),
    }
    surfaces, corridors = {}, {}
    for s in members:
        load_member(atlas_dir, s)  # the simulator's checks (vertex count, closable, orientation, volume)
        surfaces[s], corridors[s] = read_member_surfaces(atlas_dir, s)
    for bone in BONE_FILES:
        arrays[pack_key(bone, "vertices")] = np.stack([_float32(surfaces[s][bone]) for s in members])
        faces = [_int32(surfaces[s][bone].faces, f"{atlas_dir} [{bone} of member {s}]") for s in members]
        if all(np.array_equal(f, faces[0]) for f in faces[1:]):
            arrays[pack_key(bone, "faces")] = faces[0]
        else:
            for s, f in zip(members, faces):
                arrays[pack_key(bone, "faces", s)] = f
    for s in members:
        for side, mesh in sorted(corridors[s].items()):
            arrays[pack_key(f"ramus_{side}", "vertices", s)] = _float32(mesh)
            arrays[pack_key(f"ramus_{side}", "faces", s)] = _int32(mesh.faces, f"{atlas_dir} [ramus_{side} of {s}]")
    return arrays


def _check_round_trip(source: str | Path, packed: Path, members: list[str]) -> None:
    """The packed file gives back every member: vertices = the source's in float32, faces = the source's."""
    if list_members(packed) != sorted(members, key=lambda s: (len(s), s)):
        raise AtlasError(f"{packed}: lists {list_members(packed)}, expected {members}")
    for s in members:
        src, src_corr = read_member_surfaces(source, s)
        got, got_corr = read_member_surfaces(packed, s)
        pairs = [(b, src[b], got[b]) for b in BONE_FILES]
        if sorted(src_corr) != sorted(got_corr):
            raise AtlasError(f"{packed}: member {s} has corridors {sorted(got_corr)}, the source {sorted(src_corr)}")
        pairs += [(f"ramus_{side}", src_corr[side], got_corr[side]) for side in src_corr]
        for name, a, b in pairs:
            if not (np.array_equal(_float32(a), _float32(b)) and np.array_equal(a.faces, b.faces)):
                raise AtlasError(f"{packed}: {name} of member {s} differs from {source} after packing")


def pack(atlas_dir: str | Path, members: list[str], out_dir: str | Path) -> Path:
    """Write ``<out_dir>/pelvis_atlas_subset.npz``, ``LICENSE.txt`` and ``README.md``; return the archive's path.

    Raises:
        AtlasError: bad atlas, member id or missing licence file (named); the written file does not read back.
    """
    atlas_dir = Path(atlas_dir)
    members = [str(s) for s in members]
    source_root = atlas_dir if packed_file(atlas_dir) is None else packed_file(atlas_dir).parent
    licence = source_root / "LICENSE.txt"
    if not licence.is_file():
        raise AtlasError(f"{licence}: missing; the atlas's CC BY 4.0 licence must travel with the packed subset")
    arrays = pack_arrays(atlas_dir, members)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / PACK_FILE
    tmp = out / f".{PACK_FILE}.tmp"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, target)
    _check_round_trip(atlas_dir, target, members)
    if not (out / "LICENSE.txt").exists() or not (out / "LICENSE.txt").samefile(licence):
        shutil.copyfile(licence, out / "LICENSE.txt")
    (out / "README.md").write_text(
        README.format(
            n=len(members),
            pack=PACK_FILE,
            ids=", ".join(members),
            first=members[0],
            fmt=PACK_FORMAT,
            csv=",".join(members),
        )
    )
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulation.pack_atlas", description=__doc__.split("\n")[0])
    ap.add_argument("--atlas-dir", required=True, help="the full atlas folder (e.g. ../shared/data/pelvis_atlas)")
    ap.add_argument("--members", default=",".join(SUBSET_MEMBERS), help="comma-separated member ids")
    ap.add_argument("--out", default=str(SUBSET_DIR), help="output folder (default simulation/atlas_subset)")
    args = ap.parse_args(argv)
    members = [s.strip() for s in args.members.split(",") if s.strip()]
    try:
        path = pack(args.atlas_dir, members, args.out)
    except (AtlasError, MeshError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{path}: {len(members)} members ({', '.join(members)}), {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Closed triangle surfaces: reading (legacy VTK POLYDATA, ASCII STL), repair, normals and inner offsets.

A bone is represented by its outer surface and an inner surface (the boundary between cortical and
cancellous bone). Both must be closed and outward-oriented, because the projector integrates the
attenuation along each ray from the signed crossings of the surface (see :mod:`simulation.rasterize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MeshError(ValueError):
    """A surface file is missing, malformed or not a usable closed surface."""


@dataclass
class Mesh:
    """A triangle surface.

    Args:
        vertices: ``(V, 3)`` float64 positions in mm.
        faces: ``(F, 3)`` int64 vertex indices, counter-clockwise seen from outside (outward normals).
    """

    vertices: np.ndarray
    faces: np.ndarray

    def copy(self) -> Mesh:
        return Mesh(self.vertices.copy(), self.faces.copy())

    def transformed(self, matrix: np.ndarray) -> Mesh:
        """The mesh under a 4x4 homogeneous transform."""
        v = self.vertices @ matrix[:3, :3].T + matrix[:3, 3]
        faces = self.faces if np.linalg.det(matrix[:3, :3]) > 0 else self.faces[:, ::-1]
        return Mesh(v, faces)

    def signed_volume(self) -> float:
        v0, v1, v2 = (self.vertices[self.faces[:, k]] for k in range(3))
        return float(np.einsum("ij,ij->i", v0, np.cross(v1, v2)).sum() / 6.0)

    def face_normals(self) -> np.ndarray:
        v0, v1, v2 = (self.vertices[self.faces[:, k]] for k in range(3))
        return np.cross(v1 - v0, v2 - v0)

    def vertex_normals(self) -> np.ndarray:
        """Unit area-weighted vertex normals."""
        fn = self.face_normals()
        vn = np.zeros_like(self.vertices)
        for k in range(3):
            np.add.at(vn, self.faces[:, k], fn)
        norm = np.linalg.norm(vn, axis=1, keepdims=True)
        return vn / np.maximum(norm, 1e-12)


def read_vtk_polydata(path: str | Path) -> Mesh:
    """Read an ASCII legacy-VTK ``POLYDATA`` file with ``POINTS`` and triangular ``POLYGONS``.

    Raises:
        MeshError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: surface file not found")
    try:
        tokens = path.read_text(errors="strict").split()
    except (UnicodeDecodeError, OSError) as e:
        raise MeshError(f"{path}: not an ASCII legacy VTK file ({e})") from e
    if "POLYDATA" not in tokens[:40]:
        raise MeshError(f"{path}: expected 'DATASET POLYDATA' in the header of an ASCII legacy VTK file")
    try:
        i = tokens.index("POINTS")
        n = int(tokens[i + 1])
        pts = np.asarray(tokens[i + 3 : i + 3 + 3 * n], dtype=np.float64)
        if pts.size != 3 * n:
            raise MeshError(f"{path}: POINTS declares {n} points but the file holds {pts.size // 3}")
        j = tokens.index("POLYGONS")
        m = int(tokens[j + 1])
        cells = np.asarray(tokens[j + 3 : j + 3 + 4 * m], dtype=np.int64)
    except MeshError:
        raise
    except (ValueError, IndexError) as e:
        raise MeshError(f"{path}: malformed POINTS/POLYGONS section ({e})") from e
    if cells.size != 4 * m or np.any(cells.reshape(-1, 4)[:, 0] != 3):
        raise MeshError(f"{path}: POLYGONS must hold {m} triangles written as '3 i j k'")
    faces = cells.reshape(-1, 4)[:, 1:]
    if faces.size == 0 or faces.min() < 0 or faces.max() >= n:
        raise MeshError(f"{path}: POLYGONS refer to vertices outside 0..{n - 1}")
    if not np.all(np.isfinite(pts)):
        raise MeshError(f"{path}: POINTS hold non-finite coordinates")
    return Mesh(pts.reshape(n, 3), faces)


def read_stl_ascii(path: str | Path) -> Mesh:
    """Read an ASCII STL file (vertices are merged by exact position).

    Raises:
        MeshError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: STL file not found")
    try:
        lines = path.read_text().splitlines()
        verts = [ln.split()[1:4] for ln in lines if ln.strip().startswith("vertex")]
        v = np.asarray(verts, dtype=np.float64)
    except (UnicodeDecodeError, ValueError, OSError) as e:
        raise MeshError(f"{path}: not a readable ASCII STL file ({e})") from e
    if v.ndim != 2 or len(v) == 0 or len(v) % 3:
        raise MeshError(f"{path}: expected facets of three 'vertex x y z' lines")
    uniq, inverse = np.unique(v, axis=0, return_inverse=True)
    return Mesh(uniq, inverse.reshape(-1, 3).astype(np.int64))


def close_holes(mesh: Mesh) -> Mesh:
    """Make the surface a closed 2-cycle by fan-filling every boundary loop.

    The projector needs every ray to enter the solid as often as it leaves it; a mesh with a few
    boundary edges (small holes left by segmentation) would otherwise give streaks.
    """
    f = mesh.faces
    n = len(mesh.vertices) + 1
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    keys, counts = np.unique(directed[:, 0] * n + directed[:, 1], return_counts=True)
    reverse = (keys % n) * n + keys // n
    pos = np.clip(np.searchsorted(keys, reverse), 0, len(keys) - 1)
    reverse_counts = np.where(keys[pos] == reverse, counts[pos], 0)
    # A directed edge used more often than its reverse is on a hole's border (multiset difference
    # also handles non-manifold edges used three times).
    extra = counts - reverse_counts
    border: list[tuple[int, int]] = []
    for k, e in zip(keys[extra > 0].tolist(), extra[extra > 0].tolist()):
        border += [(k // n, k % n)] * e
    if not border:
        return mesh
    # Chain border edges a->b into loops; the filling triangles run b->a so the result is closed.
    nxt: dict[int, list[int]] = {}
    for a, b in border:
        nxt.setdefault(a, []).append(b)
    vertices = [mesh.vertices]
    new_faces = [mesh.faces]
    n_v = len(mesh.vertices)
    while nxt:
        start = next(iter(nxt))
        loop = [start]
        cur = start
        while True:
            outs = nxt.get(cur)
            if not outs:
                break
            b = outs.pop()
            if not outs:
                del nxt[cur]
            if b == start:
                break
            loop.append(b)
            cur = b
        if len(loop) < 3:
            continue
        centre = mesh.vertices[loop].mean(axis=0)
        vertices.append(centre[None])
        c = n_v
        n_v += 1
        tri = [(loop[(i + 1) % len(loop)], loop[i], c) for i in range(len(loop))]
        new_faces.append(np.asarray(tri, dtype=np.int64))
    return Mesh(np.concatenate(vertices), np.concatenate(new_faces))


def ray_thickness(mesh: Mesh, origins: np.ndarray, directions: np.ndarray, max_distance: float) -> np.ndarray:
    """Distance from each origin along its direction to the first crossing of the mesh.

    Only crossings closer than ``max_distance`` are searched (faces found with a k-d tree);
    farther ones give ``inf``. Used to measure the local bone thickness under each vertex (rays cast inwards).
    """
    from scipy.spatial import cKDTree

    v0, v1, v2 = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    centroids = (v0 + v1 + v2) / 3.0
    face_reach = np.sqrt(np.max([((v - centroids) ** 2).sum(1) for v in (v0, v1, v2)], axis=0))
    # A face crossing the ray before max_distance has its centroid within this radius of the ray's
    # midpoint; the few large faces (hole fillings) are tested against every ray.
    reach = np.percentile(face_reach, 99)
    large = np.nonzero(face_reach > reach)[0]
    small = np.nonzero(face_reach <= reach)[0]
    mid = origins + 0.5 * max_distance * directions
    lists = cKDTree(centroids[small]).query_ball_point(mid, 0.5 * max_distance + reach)
    counts = np.array([len(x) for x in lists]) + len(large)
    ray = np.repeat(np.arange(len(origins)), counts)
    face = np.concatenate([np.r_[small[np.asarray(x, dtype=np.int64)], large] for x in lists]).astype(np.int64)
    out = np.full(len(origins), np.inf)
    if len(ray) == 0:
        return out
    e1, e2 = (v1 - v0)[face], (v2 - v0)[face]
    d = directions[ray]
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", p, e1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        tv = origins[ray] - v0[face]
        u = np.einsum("ij,ij->i", tv, p) * inv
        q = np.cross(tv, e1)
        v = np.einsum("ij,ij->i", d, q) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
    ok = (np.abs(det) > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6) & (t < max_distance)
    np.minimum.at(out, ray[ok], t[ok])
    return out


def inner_surface(mesh: Mesh, cortex_mm: float | np.ndarray, max_fraction: float = 0.35) -> Mesh:
    """The cortical-cancellous boundary: every vertex moved inwards along its normal.

    The offset is ``cortex_mm`` but never more than ``max_fraction`` of the local thickness measured by
    an inward ray, so thin plates (the iliac wing's centre) keep a thin cancellous core instead of the
    offset surface folding through itself.

    Args:
        mesh: closed, outward-oriented surface.
        cortex_mm: cortical thickness (scalar or per vertex).
        max_fraction: cap of the offset as a fraction of the local thickness.
    """
    normals = mesh.vertex_normals()
    # Start the ray slightly inside so that the vertex's own faces are not hit.
    origins = mesh.vertices - 1e-3 * normals
    cortex = np.broadcast_to(np.asarray(cortex_mm, dtype=np.float64), (len(mesh.vertices),))
    # Only thicknesses below cortex / max_fraction can cap the offset, so search no farther.
    thickness = ray_thickness(mesh, origins, -normals, max_distance=float(cortex.max() / max_fraction))
    offset = np.minimum(cortex, max_fraction * thickness)
    return Mesh(mesh.vertices - offset[:, None] * normals, mesh.faces.copy())

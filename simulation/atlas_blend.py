"""Blended atlas members: new pelvic shapes between two real members, as extra training anatomy.

The atlas's vertices are in correspondence across members (vertex i is the same anatomical spot in every
member), so a weighted mean of two members' vertices is a pelvis of intermediate shape with the same
landmark vertices. Member ``b`` is first aligned rigidly onto member ``a`` (least squares over the vertices
of all three bones, no scaling), so the blend lives in ``a``'s CT frame and ``a``'s pose rules apply.
``a``'s superior-ramus corridors follow the blend: each corridor vertex moves as its nearest hip-bone vertex.

Why: an AASN trained on 23 members scores new radiographs of those members far better than radiographs of
unseen members (``benchmarks/results/fracture_learning_probes.md``, probe 20), so more anatomies are the lever,
and the atlas has only 32. A blend of two *training* members adds shape variety without touching held-out
anatomy.

A blend's subject id is ``<a>x<b>w<pp>``: ``pp`` per cent of member ``b`` (01-99) and the rest of ``a``, e.g.
``10x24w35``. Every part of the simulator that takes an atlas subject id takes a blend id.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from .mesh import Mesh

#: ``<a>x<b>w<pp>``: member ``a``, member ``b``, ``pp`` per cent of ``b``.
BLEND_ID = re.compile(r"(?P<a>[0-9A-Za-z]+?)x(?P<b>[0-9A-Za-z]+?)w(?P<pct>[0-9]{2})")
#: Range of ``b``'s share drawn by :func:`blend_ids`: far enough from both members to be a new shape.
BLEND_SHARE = (0.25, 0.75)


def blend_id(a: str, b: str, share: float) -> str:
    """The subject id of the blend with ``share`` (0.01-0.99) of member ``b`` and the rest of ``a``."""
    pct = int(round(100 * float(share)))
    if not 1 <= pct <= 99 or str(a) == str(b):
        raise ValueError(f"a blend needs two different members and a share of 0.01-0.99, got {a!r}, {b!r}, {share}")
    return f"{a}x{b}w{pct:02d}"


def parse_blend_id(subject: str) -> tuple[str, str, float] | None:
    """``(a, b, share of b)`` for a blend id, None for any other subject id."""
    m = BLEND_ID.fullmatch(str(subject))
    if m is None or m["a"] == m["b"] or int(m["pct"]) == 0:
        return None
    return m["a"], m["b"], int(m["pct"]) / 100.0


def blend_ids(members: list[str], n: int, seed: int) -> list[str]:
    """``n`` distinct blend ids of random pairs of ``members``, shares drawn from :data:`BLEND_SHARE` (seeded)."""
    members = sorted({str(m) for m in members}, key=lambda s: (len(s), s))  # the same ids for any order given
    if len(members) < 2:
        raise ValueError(f"blending needs at least two members, got {members}")
    rng = np.random.default_rng([int(seed), 7919])
    ids: list[str] = []
    while len(ids) < int(n):
        i, j = rng.choice(len(members), size=2, replace=False)
        candidate = blend_id(members[i], members[j], rng.uniform(*BLEND_SHARE))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def rigid_fit(moving: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` and translation ``t`` minimising ``|moving @ R.T + t - fixed|`` over corresponding points
    (a proper rotation, no reflection, no scaling: SciPy's Kabsch solution on the centred points)."""
    mc, fc = moving.mean(0), fixed.mean(0)
    rotation = Rotation.align_vectors(fixed - fc, moving - mc)[0].as_matrix()
    return rotation, fc - mc @ rotation.T


def blend_surfaces(
    a: tuple[dict, dict], b: tuple[dict, dict], share: float, subject: str
) -> tuple[dict[str, tuple[str, Mesh]], dict[str, tuple[str, Mesh]]]:
    """The blend of two members as read (``({bone: (where, Mesh)}, {side: (where, Mesh)})`` each): vertices
    ``(1 - share) * a + share * (b aligned onto a)`` with ``a``'s faces, and ``a``'s corridors moved along.

    Raises:
        ValueError: the members' bones differ in vertex count or faces (not in correspondence).
    """
    surf_a, corr_a = a
    surf_b, _ = b
    bones = sorted(surf_a)
    for bone in bones:
        ma, mb = surf_a[bone][1], surf_b[bone][1]
        if ma.vertices.shape != mb.vertices.shape or not np.array_equal(ma.faces, mb.faces):
            raise ValueError(
                f"{surf_b[bone][0]}: not in vertex correspondence with {surf_a[bone][0]} "
                "(same vertex count and faces needed to blend)"
            )
    va = np.concatenate([surf_a[bone][1].vertices for bone in bones])
    vb = np.concatenate([surf_b[bone][1].vertices for bone in bones])
    rotation, translation = rigid_fit(vb, va)
    blended = (1.0 - share) * va + share * (vb @ rotation.T + translation)
    surfaces: dict[str, tuple[str, Mesh]] = {}
    start = 0
    for bone in bones:
        mesh = surf_a[bone][1]
        count = len(mesh.vertices)
        surfaces[bone] = (f"blend {subject} [{bone}]", Mesh(blended[start : start + count], mesh.faces.copy()))
        start += count
    corridors: dict[str, tuple[str, Mesh]] = {}
    for side, (_, corridor) in corr_a.items():
        hip = f"hip_{side}"
        before, after = surf_a[hip][1].vertices, surfaces[hip][1].vertices
        nearest = cKDTree(before).query(corridor.vertices)[1]
        moved = corridor.vertices + (after - before)[nearest]
        corridors[side] = (f"blend {subject} [ramus_{side}]", Mesh(moved, corridor.faces.copy()))
    return surfaces, corridors

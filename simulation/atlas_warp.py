"""Warped atlas members: a member (or a blend) under a smooth random deformation that differs left and right.

A real pelvis is not symmetric: its two halves differ smoothly by a few millimetres. The AASN compares a side
with its mirror, so it has to learn that such smooth differences are normal and that a step or a gap is not.
The 23 training members show it 23 patterns of asymmetry, and blends of two members (:mod:`.atlas_blend`)
average two patterns, which shrinks them. A warp adds a new pattern: the displacement field is a sum of
Gaussian bumps at random places on the bones, so its left and right halves are independent.

The field ``d(x) = sum_k v_k exp(-|x - c_k|^2 / (2 sigma^2))`` moves every vertex of every bone and of the
superior-ramus corridors (each point by the field at its own position, so the corridors follow the bone).
Its centres ``c_k`` are random vertices of the hip bones and the sacrum, its vectors ``v_k`` have independent
normal components. With the defaults (sigma 25 mm, 3 mm per component) the field's gradient stays far below 1,
so the surface cannot fold, and it bends the bones over centimetres, never in steps that could look like a
break (the simulator's fractures are 1-3.5 mm steps over a few millimetres).

A warp's subject id is ``<base>v<nnnn>``: the base subject (a member or a blend id) and the four-digit seed of
its field, e.g. ``10v0412`` or ``10x24w35v0007``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .mesh import Mesh

#: ``<base>v<nnnn>``: a base subject id and the seed of its displacement field.
WARP_ID = re.compile(r"(?P<base>[0-9A-Za-z]+?)v(?P<seed>[0-9]{4})")
#: Width (mm) of each Gaussian bump of the field.
WARP_SIGMA_MM = 25.0
#: Standard deviation (mm) of each component of each bump's displacement vector.
WARP_AMPLITUDE_MM = 3.0
#: Number of bumps.
WARP_BUMPS = 16


def warp_id(base: str, seed: int) -> str:
    """The subject id of ``base`` warped by the field of ``seed`` (0-9999)."""
    if not 0 <= int(seed) <= 9999 or WARP_ID.fullmatch(str(base)) is not None:
        raise ValueError(f"a warp needs an unwarped base id and a seed of 0-9999, got {base!r}, {seed}")
    return f"{base}v{int(seed):04d}"


def parse_warp_id(subject: str) -> tuple[str, int] | None:
    """``(base, seed)`` for a warp id, None for any other subject id."""
    m = WARP_ID.fullmatch(str(subject))
    return None if m is None else (m["base"], int(m["seed"]))


def warp_ids(bases: list[str], n: int, seed: int) -> list[str]:
    """``n`` distinct warp ids of random ``bases``, each with its own field seed (seeded; order-independent)."""
    bases = sorted({str(b) for b in bases}, key=lambda s: (len(s), s))
    if not bases:
        raise ValueError("warping needs at least one base subject")
    if int(n) > 10000 * len(bases):
        raise ValueError(f"at most {10000 * len(bases)} distinct warps of {len(bases)} bases, asked for {n}")
    rng = np.random.default_rng([int(seed), 104729])
    ids: list[str] = []
    while len(ids) < int(n):
        candidate = warp_id(bases[int(rng.integers(len(bases)))], int(rng.integers(10000)))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def displacement_field(centres: np.ndarray, vectors: np.ndarray, sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    """The field ``x -> sum_k vectors[k] exp(-|x - centres[k]|^2 / (2 sigma^2))`` for points ``x`` (N, 3)."""

    def field(points: np.ndarray) -> np.ndarray:
        sq = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        return np.exp(-sq / (2.0 * sigma**2)) @ vectors

    return field


def random_field(anchor_points: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The field of ``seed``: :data:`WARP_BUMPS` bumps centred on random ``anchor_points`` (the base's bone
    vertices), vectors with components N(0, :data:`WARP_AMPLITUDE_MM`)."""
    rng = np.random.default_rng([int(seed), 15485863])
    centres = anchor_points[rng.choice(len(anchor_points), size=WARP_BUMPS, replace=False)]
    vectors = rng.normal(0.0, WARP_AMPLITUDE_MM, size=(WARP_BUMPS, 3))
    return displacement_field(centres, vectors, WARP_SIGMA_MM)


def warp_surfaces(
    base: tuple[dict, dict], seed: int, subject: str
) -> tuple[dict[str, tuple[str, Mesh]], dict[str, tuple[str, Mesh]]]:
    """The base as read (``({bone: (where, Mesh)}, {side: (where, Mesh)})``) with every bone and corridor vertex
    moved by the random field of ``seed`` (:func:`random_field`); faces and vertex order unchanged."""
    surfaces_in, corridors_in = base
    anchors = np.concatenate([surfaces_in[bone][1].vertices for bone in sorted(surfaces_in)])
    field = random_field(anchors, seed)
    surfaces = {
        bone: (f"warp {subject} [{bone}]", Mesh(mesh.vertices + field(mesh.vertices), mesh.faces.copy()))
        for bone, (_, mesh) in surfaces_in.items()
    }
    corridors = {
        side: (f"warp {subject} [ramus_{side}]", Mesh(mesh.vertices + field(mesh.vertices), mesh.faces.copy()))
        for side, (_, mesh) in corridors_in.items()
    }
    return surfaces, corridors

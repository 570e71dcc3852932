"""The 16 landmarks on the atlas, defined once as vertex indices (``atlas_landmarks.json``).

Because the atlas's vertices correspond across members, the same indices give each member's
landmarks. How the indices were chosen is in :mod:`simulation.landmark_rules`. Landmarks are
3D points (LPS mm) projected with the same camera as the bones.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from custom_transforms.conventions import LANDMARK_NAMES

from .landmark_rules import fit_sphere

DEFINITION_FILE = Path(__file__).with_name("atlas_landmarks.json")


@lru_cache(maxsize=1)
def landmark_definitions() -> dict[str, dict]:
    """``name -> {"bone", "vertex"}`` or ``{"bone", "sphere_fit_vertices"}`` for each per-side landmark."""
    return json.loads(DEFINITION_FILE.read_text())["landmarks"]


def _point(defn: dict, raw_vertices: dict[str, np.ndarray]) -> np.ndarray:
    v = raw_vertices[defn["bone"]]
    if "vertex" in defn:
        return v[defn["vertex"]]
    centre, _ = fit_sphere(v[defn["sphere_fit_vertices"]])
    return centre


def atlas_landmarks(raw_vertices: dict[str, np.ndarray]) -> np.ndarray:
    """The 16 landmarks ``(16, 3)`` (order :data:`LANDMARK_NAMES`) of a member, from its raw vertices.

    Midline landmarks are the mean of the two hips' symphyseal corner vertices.
    """
    defs = landmark_definitions()
    out = np.zeros((len(LANDMARK_NAMES), 3))
    for i, name in enumerate(LANDMARK_NAMES):
        if name.startswith("symphysis_"):
            out[i] = 0.5 * (_point(defs[f"{name}_r"], raw_vertices) + _point(defs[f"{name}_l"], raw_vertices))
        else:
            out[i] = _point(defs[name], raw_vertices)
    return out


def acetabulum_radius(raw_vertices: dict[str, np.ndarray], side: str) -> float:
    """Radius of the sphere fitted to the acetabular vertices of side ``"r"`` or ``"l"``."""
    defn = landmark_definitions()[f"acetabulum_center_{side}"]
    _, r = fit_sphere(raw_vertices[defn["bone"]][defn["sphere_fit_vertices"]])
    return r

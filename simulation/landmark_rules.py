"""How the atlas landmark vertices were chosen (run once; the result is ``atlas_landmarks.json``).

Each landmark has a geometric rule evaluated on an atlas member in its own CT frame (LPS: +x patient
left, +y posterior, +z superior; patients lie supine). The rules were applied to the reference member
(:data:`REFERENCE_MEMBER`, checked visually), whose vertex index nearest to each rule point is the
landmark; the vertices correspond across members, so that index serves every member (the picture
``docs/simulation_landmarks.png`` shows it on others). Applied to several members
(``derive_landmark_definitions(atlas, subjects=[...])``) the index minimises the summed distance to every
member's rule point; the rules are not robust enough for all 32 members' differing pelvic tilts, hence
one checked reference. ``acetabulum_center`` is not on the surface: it is the centre of the sphere
fitted to a fixed set of acetabular (lunate) vertices, those the rule selects (in at least half of
the members when several are used); each member's sphere is refitted to that set.

Rules, per hip bone (side sign ``s`` = +1 left, -1 right; "lateral" = larger ``s*x``):

- ``acetabulum_center``: iterative sphere fit to the concave cup on the lateral face: start 20 mm
  medial of the centroid of the laterally facing vertices 5-50 mm above the obturator foramen's top,
  then keep the vertices 12-40 mm from the centre whose normals point at it (cosine > 0.3 for 8
  iterations, then > 0.7), refit, 20 times.
- ``asis``: most anterior (min y) vertex at least 35 mm above the acetabulum centre.
- ``sciatic_notch``: apex of the greater sciatic notch: on the posterior border (the most posterior
  vertex of each 2 mm axial slice) between 10 mm below and 45 mm above the acetabulum centre, the
  slice where that border is most anterior.
- ``obturator_superior`` / ``obturator_inferior``: highest / lowest point, near its central column,
  of the obturator foramen outline seen along y (the AP view): the foramen is the largest hole of the
  hip bone's AP silhouette in its lower 45 %; the rule point is the vertex nearest that outline point
  in (x, z), with a small penalty on depth.
- ``pubic_tubercle``: highest vertex of the pubis 12-30 mm lateral of the symphyseal face, in
  front of and below the acetabulum centre.
- ``ischial_tuberosity``: lowest vertex behind the front of the acetabulum (y > centre - 10 mm).
- ``symphysis_superior`` / ``symphysis_inferior`` (midline): mean of one vertex per hip, the
  highest / lowest vertex within 6 mm of that hip's symphyseal face (its most medial point).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atlas import load_member

#: Member on which the rules were applied (checked visually); its vertex ids hold for all members.
REFERENCE_MEMBER = "2"
HIP_SIDES = {"r": ("hip_r", -1.0), "l": ("hip_l", 1.0)}


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere ``|p - c| = r`` through points ``(N, 3)``."""
    a = np.c_[2 * points, np.ones(len(points))]
    b = (points**2).sum(1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    c = sol[:3]
    return c, float(np.sqrt(sol[3] + c @ c))


def acetabulum_vertices(
    v: np.ndarray, normals: np.ndarray, s: float, obturator_top: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the acetabular cup vertices and the fitted centre.

    Start from the laterally facing vertices in the band 5-50 mm above the obturator foramen's top
    (the cup's floor lies there), then fit a sphere to the vertices whose normals point at the centre.
    """
    band = (v[:, 2] > obturator_top[1] + 5) & (v[:, 2] < obturator_top[1] + 50) & (s * (v[:, 0] - obturator_top[0]) > 0)
    lateral = band & (s * normals[:, 0] > 0.5)
    c = v[lateral].mean(axis=0) - np.array([s * 20.0, 0, 0])
    sel = np.arange(0)
    for it in range(20):
        d = c - v
        dist = np.linalg.norm(d, axis=1)
        facing = np.einsum("ij,ij->i", normals, d) / np.maximum(dist, 1e-9)
        # Loose acceptance first (to converge from a rough start), strict at the end.
        min_facing = 0.3 if it < 8 else 0.7
        sel = np.nonzero((dist > 12) & (dist < 40) & (facing > min_facing))[0]
        if len(sel) < 10:
            break
        c, _ = fit_sphere(v[sel])
    return sel, c


def _obturator_outline(v: np.ndarray, faces: np.ndarray, below_z: float, res: float = 0.5):
    """Top and bottom points ``(x, z)`` of the obturator hole in the AP silhouette of one hip bone."""
    from scipy import ndimage
    from skimage.draw import polygon

    lo = v[:, [0, 2]].min(0) - 2
    hi = v[:, [0, 2]].max(0) + 2
    shape = tuple(np.ceil((hi - lo) / res).astype(int) + 1)
    sil = np.zeros(shape, dtype=bool)
    p = (v[:, [0, 2]] - lo) / res
    for f in faces:
        rr, cc = polygon(p[f, 0], p[f, 1], shape)
        sil[rr, cc] = True
    sil = ndimage.binary_closing(sil, iterations=2)
    holes, n = ndimage.label(~sil)
    border = set(np.unique(np.r_[holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    best, best_size = None, 0
    for k in range(1, n + 1):
        if k in border:
            continue
        mask = holes == k
        zs = np.nonzero(mask)[1] * res + lo[1]
        if zs.mean() < below_z and mask.sum() > best_size:
            best, best_size = mask, mask.sum()
    if best is None:
        raise ValueError("no obturator foramen found in the AP silhouette")
    ix, iz = np.nonzero(best)
    xs = ix * res + lo[0]
    zs = iz * res + lo[1]
    centre_x = xs.mean()
    # Highest / lowest outline point near the hole's central column (robust to a slanted rim).
    near = np.abs(xs - centre_x) < 0.25 * (xs.max() - xs.min())
    top = (centre_x, zs[near].max())
    bottom = (centre_x, zs[near].min())
    return top, bottom


def rule_points(member) -> dict[str, np.ndarray | tuple]:
    """The rule point (3D, member frame) of every landmark, plus acetabular vertex sets."""
    out: dict[str, object] = {}
    sym_face = {}
    for side, (bone, s) in HIP_SIDES.items():
        mesh = member.bones[bone]
        v = member.raw_vertices[bone]
        normals = mesh.vertex_normals()[: len(v)]
        top, bottom = _obturator_outline(v, mesh.faces[(mesh.faces < len(v)).all(1)], np.percentile(v[:, 2], 45))
        sel, c = acetabulum_vertices(v, normals, s, np.array(top))
        out[f"acetabulum_set_{side}"] = sel
        out[f"acetabulum_center_{side}"] = c
        up = v[:, 2] > c[2] + 35
        out[f"asis_{side}"] = v[np.argmin(np.where(up, v[:, 1], np.inf))]
        # Sciatic notch: the posterior border's most anterior point between ischial spine and PIIS.
        best = None
        for z in np.arange(c[2] - 10, c[2] + 45, 2.0):
            sl = np.nonzero((v[:, 2] >= z) & (v[:, 2] < z + 2) & (v[:, 1] > c[1]))[0]
            if len(sl) == 0:
                continue
            k = sl[np.argmax(v[sl, 1])]
            if best is None or v[k, 1] < v[best, 1]:
                best = k
        out[f"sciatic_notch_{side}"] = v[best]
        for name, (x, z) in (("obturator_superior", top), ("obturator_inferior", bottom)):
            # The rim vertex nearest the outline point in the AP view (x, z), preferring the anterior half.
            d = np.hypot(v[:, 0] - x, v[:, 2] - z) + 0.05 * np.abs(v[:, 1] - c[1])
            out[f"{name}_{side}"] = v[np.argmin(d)]
        medial = v[np.argmin(s * v[:, 0])]
        sym_face[side] = medial
        lat = s * (v[:, 0] - medial[0])
        pubis = (lat > 12) & (lat < 30) & (v[:, 1] < c[1]) & (v[:, 2] < c[2])
        out[f"pubic_tubercle_{side}"] = v[np.argmax(np.where(pubis, v[:, 2], -np.inf))]
        post = v[:, 1] > c[1] - 10
        out[f"ischial_tuberosity_{side}"] = v[np.argmin(np.where(post, v[:, 2], np.inf))]
        face = s * (v[:, 0] - medial[0]) < 6
        out[f"symphysis_superior_{side}"] = v[np.argmax(np.where(face, v[:, 2], -np.inf))]
        out[f"symphysis_inferior_{side}"] = v[np.argmin(np.where(face, v[:, 2], np.inf))]
    return out


def derive_landmark_definitions(atlas_dir: str | Path, subjects=None) -> dict:
    """Apply the rules to the given members and choose the consensus vertex indices (see module doc)."""
    subjects = list(subjects or [REFERENCE_MEMBER])
    members = [load_member(atlas_dir, s) for s in subjects]
    rules = [rule_points(m) for m in members]
    definition: dict[str, dict] = {}
    point_names = [
        "asis", "sciatic_notch", "obturator_superior", "obturator_inferior", "pubic_tubercle",
        "ischial_tuberosity", "symphysis_superior", "symphysis_inferior",
    ]  # fmt: skip
    for side, (bone, _) in HIP_SIDES.items():
        for name in point_names:
            key = f"{name}_{side}"
            cost = sum(np.linalg.norm(m.raw_vertices[bone] - r[key], axis=1) for m, r in zip(members, rules))
            definition[key] = {
                "bone": bone,
                "vertex": int(np.argmin(cost)),
                "mean_rule_error_mm": float(cost.min() / len(members)),
            }
        votes = np.zeros(len(members[0].raw_vertices[bone]))
        for r in rules:
            votes[r[f"acetabulum_set_{side}"]] += 1
        definition[f"acetabulum_center_{side}"] = {
            "bone": bone,
            "sphere_fit_vertices": np.nonzero(votes >= len(members) / 2)[0].tolist(),
        }
    return {"subjects": subjects, "landmarks": definition}


if __name__ == "__main__":  # pragma: no cover - maintenance tool
    import sys

    result = derive_landmark_definitions(sys.argv[1])
    out = Path(__file__).with_name("atlas_landmarks.json")
    out.write_text(json.dumps(result, indent=1))
    for k, d in result["landmarks"].items():
        print(k, d.get("vertex"), round(d.get("mean_rule_error_mm", 0), 2), len(d.get("sphere_fit_vertices", [])))

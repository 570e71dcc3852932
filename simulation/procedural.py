"""The built-in pelvis: a parametric template needing no data files, and random subjects from it.

The template (LPS mm, origin midway between the acetabula) is a right hip bone built from
signed-distance primitives (iliac wing as a curved fan-shaped plate thickened at the crest and the
sciatic buttress, acetabular cup, superior and inferior pubic rami, pubic body, ischium and
tuberosity; the obturator foramen is the hole they enclose), the mirrored left hip bone, and a
curved, tapering sacrum with four pairs of foramina. Surfaces are meshed once per process with
marching cubes (outer at the zero level, cancellous core at ``-PELVIS_CORTEX_MM``).

Landmarks are vertex indices of the template meshes, chosen as the vertex nearest to each
landmark's anatomical target (targets listed in :func:`_landmark_targets`); ``acetabulum_center`` is
the cup's centre. Subjects (``P000``, ``P001``, ...) are smooth random deformations of the template
(size, width, height, depth, iliac flare, pubic-arch width, and a small independent warp per side
for natural asymmetry): vertices, and so landmarks, keep their correspondence, exactly as in the atlas.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from custom_transforms.conventions import LANDMARK_NAMES

from . import sdf
from .anatomy import PELVIS_CORTEX_MM, Anatomy, Bone, add_spine
from .mesh import Mesh

#: Acetabulum centre of the right template hip (the left is its mirror) and cup radius (mm).
ACETABULUM = np.array([-95.0, 0.0, 0.0])
CUP_RADIUS = 25.0
TEMPLATE_STEP_MM = 2.4
#: Iliac wing plate of the right hip: origin, in-plane direction towards the ASIS, normal (iliac fossa side).
WING_ORIGIN = ACETABULUM + np.array([22.0, 18.0, 20.0])
WING_U = np.array([-0.62, -0.78, 0.0])
WING_N = np.array([0.78, -0.62, 0.0])


def _wing_bend(u, w):
    """Out-of-plane offset of the wing's mid-surface (its curvature)."""
    return 0.0022 * u**2 - 0.0015 * w**2


def _wing_point(u: float, w: float) -> np.ndarray:
    """A point of the wing's mid-surface from plate coordinates (mm)."""
    return WING_ORIGIN + u * WING_U + w * np.array([0.0, 0.0, 1.0]) + _wing_bend(u, w) * WING_N


#: Ranges of the subject deformation (uniform).
SUBJECT_RANGES = {
    "scale": (0.9, 1.08),
    "width": (0.93, 1.08),
    "height": (0.93, 1.07),
    "depth": (0.92, 1.08),
    "flare_deg": (-7.0, 7.0),
    "pubic_arch": (-6.0, 6.0),
    "warp_mm": (0.5, 2.5),
}


def _right_hip_sdf(p: np.ndarray) -> np.ndarray:
    A = ACETABULUM
    # Acetabular cup: a thick shell open towards lateral-anterior-inferior.
    opening = np.array([-1.0, -0.55, -0.55])
    opening /= np.linalg.norm(opening)
    cup = sdf.sphere(p, A, CUP_RADIUS + 10.0)
    cup = sdf.subtract(cup, sdf.sphere(p, A + 3.0 * opening, CUP_RADIUS))
    cup = np.maximum(cup, (p - A) @ opening - 6.0)
    # Iliac wing: curved plate in the plane spanned by (towards ASIS) and up.
    q = p - WING_ORIGIN
    u = q @ WING_U
    w = q[..., 2]
    v = q @ WING_N - _wing_bend(u, w)
    # Fan outline: an ellipse (the crest) cut by the greater sciatic notch, merging into the body below.
    ell = (np.sqrt((u / 86.0) ** 2 + ((w - 46.0) / 72.0) ** 2) - 1.0) * 72.0
    notch = 45.0 - np.sqrt((u + 80.0) ** 2 + (w + 15.0) ** 2)  # greater sciatic notch (posterior)
    front = 40.0 - np.sqrt((u - 70.0) ** 2 + (w + 20.0) ** 2)  # between the anterior spines and the cup
    border = np.maximum(np.maximum(ell, notch), front)
    outline = np.maximum(border, -w - 55.0)
    edge = -border  # distance inside the crest / notch borders
    thickness = 3.5 + 9.0 * np.exp(-np.clip(edge, 0, None) / 7.0) + 26.0 * np.exp(-np.clip(w + 5.0, 0, None) / 20.0)
    # The plate thins out where it sinks into the acetabular mass, so it leaves no edge there.
    thickness = thickness * np.clip((w + 55.0) / 30.0, 0.0, 1.0)
    buttress = 16.0 * np.exp(-(((u + 70.0) / 22.0) ** 2) - (((w - 35.0) / 40.0) ** 2))  # sacro-iliac pillar
    wing = np.maximum(np.abs(v) - 0.5 * (thickness + buttress), outline)
    # Pubis and ischium.
    eminence = A + np.array([24.0, -16.0, -2.0])
    pubic_body = np.array([-15.0, -26.0, -42.0])
    tubercle = np.array([-24.0, -30.0, -24.0])
    sup_ramus = sdf.polyline_tube(
        p, [eminence, A + np.array([50.0, -24.0, -12.0]), tubercle + np.array([0.0, 2.0, -6.0])], [12.0, 9.5, 10.5]
    )
    body = sdf.rounded_box(p, pubic_body + np.array([3.0, 0.0, 0.0]), (12.0, 8.5, 21.0), 5.0)
    inf_junction = np.array([-52.0, 2.0, -84.0])
    inf_ramus = sdf.polyline_tube(
        p, [pubic_body + np.array([-3.0, 3.0, -14.0]), np.array([-33.0, -4.0, -78.0]), inf_junction], [8.0, 6.5, 7.5]
    )
    tuberosity_c = np.array([-78.0, 22.0, -72.0])
    ischium = sdf.capsule(p, A + np.array([4.0, 16.0, -20.0]), tuberosity_c, 15.0, 12.0)
    tuberosity = sdf.ellipsoid(p, tuberosity_c + np.array([2.0, 2.0, -4.0]), (14.0, 13.0, 17.0))
    isch_ramus = sdf.capsule(p, tuberosity_c + np.array([6.0, -4.0, -8.0]), inf_junction, 10.0, 7.5)
    d = sdf.smooth_union(cup, wing, 10.0)
    d = sdf.smooth_union(d, sup_ramus, 6.0)
    d = sdf.smooth_union(d, body, 6.0)
    d = sdf.smooth_union(d, inf_ramus, 5.0)
    d = sdf.smooth_union(d, ischium, 8.0)
    d = sdf.smooth_union(d, tuberosity, 6.0)
    d = sdf.smooth_union(d, isch_ramus, 5.0)
    # The symphysis: nothing crosses the midline gap.
    return np.maximum(d, p[..., 0] + 2.0)


def _sacrum_sdf(p: np.ndarray) -> np.ndarray:
    """S1-S3 as in the atlas: a curved plate whose AP outline is a rounded trapezoid (alae at the top,
    narrowing downwards), thick at the S1 body, with four pairs of anterior foramina."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    top, bottom = 97.0, 12.0
    t = np.clip((top - z) / (top - bottom), 0.0, 1.0)  # 0 at the S1 endplate, 1 at the lower end
    half_width = 56.0 - 36.0 * t**0.8
    # Outline: |x| < half_width(z), bottom < z < top (+ a rounded promontory on the S1 body), rounded by 6 mm.
    promontory = top + 6.0 * np.clip(1.0 - (x / 22.0) ** 2, 0.0, None)
    d2 = np.maximum.reduce([np.abs(x) - half_width, z - promontory, bottom - z])
    mid_y = 50.0 + 30.0 * t - 8.0 * t**2  # concave anteriorly, the lower end further back
    body = 40.0 - 24.0 * t  # AP thickness in the middle
    ala = 24.0 - 12.0 * t  # and at the lateral parts
    thickness = ala + (body - ala) * np.exp(-((x / 20.0) ** 2))
    # Rounded margins: the plate thins to nothing over its last 12 mm (an elliptical profile), so no
    # flat wall is seen edge-on.
    ramp = np.clip(-d2 / 12.0, 0.0, 1.0)
    half = 0.5 * thickness * np.sqrt(1.0 - (1.0 - ramp) ** 2) + 1.0
    d = np.maximum(d2 - 1.0, np.abs(y - mid_y) - half)
    for j, tj in enumerate((0.18, 0.42, 0.64, 0.85)):
        zc = top - tj * (top - bottom)
        for sx in (-1.0, 1.0):
            xc = sx * (21.0 - 7.0 * tj)
            r = 5.2 - 0.8 * j
            hole = np.sqrt((x - xc) ** 2 + ((z - zc) / 0.85) ** 2) - r
            hole = np.maximum(hole, y - (50.0 + 30.0 * tj) - 10.0)  # anterior foramina only: through the front half
            d = sdf.subtract(d, hole)
    return d


def _landmark_targets() -> dict[str, np.ndarray]:
    """Anatomical targets on the right template hip (mm) and the midline."""
    return {
        # On the wing's mid-surface: the anterior-superior corner of the fan, and the deepest point of
        # the greater sciatic notch (its circle's point facing the plate's centre), a little inside.
        "asis_r": _wing_point(80.0, 32.0),
        "sciatic_notch_r": _wing_point(-42.0, 15.0),
        "obturator_superior_r": np.array([-50.0, -14.0, -22.0]),
        "obturator_inferior_r": np.array([-42.0, -2.0, -70.0]),
        "pubic_tubercle_r": np.array([-24.0, -36.0, -18.0]),
        "ischial_tuberosity_r": np.array([-80.0, 25.0, -95.0]),
        "symphysis_superior_r": np.array([-2.0, -28.0, -21.0]),
        "symphysis_inferior_r": np.array([-2.0, -24.0, -63.0]),
    }


def _nearest_vertex(mesh: Mesh, target: np.ndarray) -> int:
    return int(np.argmin(np.linalg.norm(mesh.vertices - target, axis=1)))


@lru_cache(maxsize=1)
def template() -> dict:
    """Template meshes (right hip, left hip = mirror, sacrum; outer and inner) and landmark vertices."""
    step = TEMPLATE_STEP_MM
    p, origin = sdf.grid((-190, -125, -120), (0.0, 120, 165), step)
    hip = _right_hip_sdf(p)
    hip_outer = sdf.mesh_level(hip, origin, step, 0.0)
    hip_inner = sdf.mesh_level(hip, origin, step, -PELVIS_CORTEX_MM)
    ps, origin_s = sdf.grid((-65, 20, -20), (65, 110, 125), step)
    sac = _sacrum_sdf(ps)
    sac_outer = sdf.mesh_level(sac, origin_s, step, 0.0)
    sac_inner = sdf.mesh_level(sac, origin_s, step, -PELVIS_CORTEX_MM)
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    targets = _landmark_targets()
    vertices = {name: _nearest_vertex(hip_outer, target) for name, target in targets.items()}
    return {
        "hip_r": (hip_outer, hip_inner),
        "hip_l": (hip_outer.transformed(mirror), hip_inner.transformed(mirror)),
        "sacrum": (sac_outer, sac_inner),
        "landmark_vertices": vertices,
    }


def _warp(rng: np.random.Generator, amplitude: float, n: int = 6, scale: float = 45.0):
    """A smooth random displacement field (sum of Gaussian bumps), as a function of points."""
    centres = rng.uniform([-150, -60, -100], [150, 100, 120], size=(n, 3))
    vectors = rng.normal(0, amplitude, size=(n, 3))

    def field(x: np.ndarray) -> np.ndarray:
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        return (np.exp(-d2 / (2 * scale**2))[..., None] * vectors[None]).sum(1)

    return field


def subject_ids(n: int) -> list[str]:
    return [f"P{i:03d}" for i in range(n)]


def procedural_anatomy(subject: str, seed: int = 0) -> Anatomy:
    """A random built-in subject (``P###``): deterministic for (subject, seed)."""
    return _procedural_cached(str(subject), int(seed))


@lru_cache(maxsize=8)
def _procedural_cached(subject: str, seed: int) -> Anatomy:
    if not (subject.startswith("P") and subject[1:].isdigit()):
        raise ValueError(f"unknown procedural subject id '{subject}'; expected 'P' + digits, e.g. 'P007'")
    tpl = template()
    rng = np.random.default_rng([seed, int(subject[1:]), 7919])
    prm = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in SUBJECT_RANGES.items()}
    flare = np.deg2rad(prm["flare_deg"])
    warps = {side: _warp(rng, prm["warp_mm"]) for side in ("r", "l", "s")}

    def deform(v: np.ndarray, side: str) -> np.ndarray:
        out = v.copy()
        if side in ("r", "l"):
            sgn = -1.0 if side == "r" else 1.0
            a = sgn * ACETABULUM[0]
            # Iliac flare: rotate the wing about a vertical axis through the acetabulum, more with height.
            lift = np.clip(out[:, 2] / 90.0, 0.0, 1.0)
            ang = sgn * flare * lift
            dx, dy = out[:, 0] - a, out[:, 1]
            out[:, 0] = a + np.cos(ang) * dx - np.sin(ang) * dy
            out[:, 1] = np.sin(ang) * dx + np.cos(ang) * dy
            # Pubic arch: widen/narrow the lower pubis and ischium sideways.
            low = np.clip(-out[:, 2] / 80.0, 0.0, 1.0)
            out[:, 0] += sgn * prm["pubic_arch"] * low
        out = out + warps[side if side in ("r", "l") else "s"](out)
        out *= prm["scale"] * np.array([prm["width"], prm["depth"], prm["height"]])
        return out

    bones = {}
    for name, side in (("hip_r", "r"), ("hip_l", "l"), ("sacrum", "s")):
        outer, inner = tpl[name]
        bones[name] = Bone(
            name, Mesh(deform(outer.vertices, side), outer.faces), Mesh(deform(inner.vertices, side), inner.faces)
        )
    add_spine(bones)
    landmarks = np.zeros((len(LANDMARK_NAMES), 3))
    lv = tpl["landmark_vertices"]
    for i, name in enumerate(LANDMARK_NAMES):
        if name.startswith("acetabulum_center"):
            side = name[-1]
            c = ACETABULUM * (np.array([1.0, 1.0, 1.0]) if side == "r" else np.array([-1.0, 1.0, 1.0]))
            landmarks[i] = deform(c[None], side)[0]
        elif name.startswith("symphysis"):
            v = lv[f"{name}_r"]
            landmarks[i] = 0.5 * (bones["hip_r"].outer.vertices[v] + bones["hip_l"].outer.vertices[v])
        else:
            side = name[-1]
            landmarks[i] = bones[f"hip_{side}"].outer.vertices[lv[name[:-2] + "_r"]]
    cup = CUP_RADIUS * prm["scale"] * (prm["width"] * prm["depth"] * prm["height"]) ** (1 / 3)
    return Anatomy(
        subject=subject,
        source="procedural",
        bones=bones,
        landmarks=landmarks,
        acetabulum_radius={"r": cup, "l": cup},
    )

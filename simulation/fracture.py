"""Fractures of the anterior pelvic ring, cut in 3D and projected with the radiograph's camera.

Sites (per side): superior pubic ramus, inferior (ischiopubic) ramus, parasymphyseal pubic body,
ischium. A site is located from the landmarks and snapped to the centre of the bone's cross-section
(the centroid of the surface vertices in a thin slab across the bone there).

A fracture is a plane through that centre and a disc of the plane covering the cross-section. The
plane runs across the bone (normal = the bone's axis projected on the coronal plane, turned within it
by up to 30 deg) and nearly contains the AP direction (out-of-plane obliquity up to 8 deg for
hairlines, 25 deg for displaced fractures; a break the beam crosses very obliquely is smeared into
invisibility on a real film too):

- hairline (non-displaced): bone removed within ``gap/2`` of the plane, gap 0.3-0.9 mm, no shift;
- displaced: gap 1-3.5 mm, and the fragment on one side shifted by 1.5-6 mm (across the bone in the
  coronal plane, with an antero-posterior part of about 30 %) and rotated by up to 8 deg about the break, the motion
  fading out over 10-16 mm from the plane (the bone beyond is
  held by the rest of the ring).

Cutting happens in a local voxel patch around the break (0.2 mm voxels for hairlines, 0.45 mm for displaced ones, whose
gaps are at least 1 mm) built from the same closed surfaces (winding numbers along the patch's axis), with
partial-volume weights for sub-voxel gaps; the projector adds the patch's *change* (fractured minus intact) to the exact
surface projection, splatting each changed voxel along its own cone-beam ray.
The label is the projected centre of the cortical break: the centroid of the cortical voxels the
cut removes (for a displaced fracture, midway between that point and its moved copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from custom_transforms.conventions import LANDMARK_INDEX

from .camera import ConeBeamCamera, apply
from .rasterize import rasterize_fragments

SITES = ("superior_ramus", "inferior_ramus", "parasymphyseal", "ischium")
#: Relative frequency of the sites among anterior-ring fractures (rami dominate in trauma series).
SITE_WEIGHTS = {"superior_ramus": 0.42, "inferior_ramus": 0.30, "parasymphyseal": 0.12, "ischium": 0.16}
#: Share of displaced (vs hairline) fractures.
DISPLACED_FRACTION = 0.55
#: Number of fractures in a positive image: 1, 2 or 3 with these probabilities.
COUNT_PROBABILITIES = (0.6, 0.3, 0.1)
#: Probability that, given more than one fracture, the next one is on the other side (bilateral).
BILATERAL_PROBABILITY = 0.45


@dataclass
class Fracture:
    """One fracture in the anatomy's LPS frame (mm, degrees)."""

    site: str
    side: str
    kind: str  # "hairline" or "displaced"
    centre: np.ndarray
    normal: np.ndarray
    radius_mm: float
    gap_mm: float
    shift_mm: np.ndarray
    rotation_deg: float
    rotation_axis: np.ndarray
    falloff_mm: float
    fragment_sign: float

    def describe(self) -> dict:
        return {
            "site": self.site,
            "side": self.side,
            "kind": self.kind,
            "centre_mm": np.round(self.centre, 3).tolist(),
            "normal": np.round(self.normal, 4).tolist(),
            "gap_mm": round(float(self.gap_mm), 3),
            "shift_mm": np.round(self.shift_mm, 3).tolist(),
            "displacement_mm": round(float(np.linalg.norm(self.shift_mm)), 3),
            "rotation_deg": round(float(self.rotation_deg), 3),
        }


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _perpendicular_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``e2, e3`` with ``(e2, e3, n)`` right-handed orthonormal."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e2 = _unit(np.cross(helper, n))
    e3 = np.cross(n, e2)
    return e2, e3


def site_axis(anatomy, site: str, side: str, t: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A rough point and the bone's axis direction at parameter ``t`` in [0, 1] along a site, and the
    search radius of its cross-section."""
    li = LANDMARK_INDEX
    L = anatomy.landmarks
    s = 1.0 if side == "l" else -1.0
    acet = L[li[f"acetabulum_center_{side}"]]
    tub = L[li[f"pubic_tubercle_{side}"]]
    isch = L[li[f"ischial_tuberosity_{side}"]]
    obt_inf = L[li[f"obturator_inferior_{side}"]]
    sym_inf = L[li["symphysis_inferior"]]
    sym_mid = 0.5 * (L[li["symphysis_superior"]] + sym_inf)
    if site == "superior_ramus":
        # Along the ramus from the pubic tubercle to a little beyond the top of the obturator foramen
        # (the part inside the anterior-pelvis ROI), on the atlas's screw corridor when present.
        obt_sup = L[li[f"obturator_superior_{side}"]]
        corridor = anatomy.ramus_corridors.get(side)
        if corridor is not None:
            c = corridor.vertices.mean(0)
            _, _, vt = np.linalg.svd(corridor.vertices - c, full_matrices=False)
            axis = vt[0] * np.sign(vt[0] @ (acet - tub))
        else:
            c, axis = tub, _unit(acet - tub)
        lo = (tub - c) @ axis
        span = (acet - c) @ axis - lo
        t_obt = np.clip(((obt_sup - c) @ axis - lo) / span, 0.2, 0.7)
        return c + (lo + (0.12 + t * (1.1 * t_obt - 0.12)) * span) * axis, axis, 14.0
    if site == "inferior_ramus":
        start = sym_inf + np.array([s * 10.0, 0.0, 0.0])
        end = obt_inf + 0.3 * (isch - obt_inf)
        return start + (0.3 + 0.55 * t) * (end - start), _unit(end - start), 11.0
    if site == "parasymphyseal":
        return sym_mid + np.array([s * (9.0 + 9.0 * t), 0.0, 0.0]), np.array([s, 0.0, 0.0]), 22.0
    if site == "ischium":
        return acet + (0.5 + 0.25 * t) * (isch - acet), _unit(isch - acet), 17.0
    raise ValueError(f"unknown fracture site '{site}'; expected one of {SITES}")


def snap_to_cross_section(vertices: np.ndarray, point, axis, radius: float, slab: float = 2.5):
    """Centre and radius of the bone cross-section through ``point`` perpendicular to ``axis``."""
    d = vertices - point
    along = d @ axis
    radial = np.linalg.norm(d - along[:, None] * axis, axis=1)
    sel = (np.abs(along) < slab) & (radial < radius)
    if sel.sum() < 6:
        return None
    ring = vertices[sel]
    centre = ring.mean(axis=0)
    centre = centre - ((centre - point) @ axis) * axis  # stay in the plane
    r = np.linalg.norm((ring - centre) - np.outer((ring - centre) @ axis, axis), axis=1).max()
    return centre, float(r)


def sample_fracture(
    anatomy, site: str, side: str, rng: np.random.Generator, accept=None, tries: int = 16
) -> Fracture | None:
    """A random fracture at ``site`` on ``side``, or None when no position along the site is usable.

    Args:
        accept: optional ``accept(centre_lps) -> bool``; positions it rejects are drawn again (the renderer
            passes "projects inside the anterior-pelvis ROI").
        tries: positions drawn along the site before giving up.
    """
    bone = anatomy.bones[f"hip_{side}"].outer
    for _ in range(tries):
        point, axis, search = site_axis(anatomy, site, side, rng.uniform())
        snapped = snap_to_cross_section(bone.vertices, point, axis, search)
        if snapped is not None and (accept is None or accept(snapped[0])):
            break
    else:
        return None
    centre, cross_radius = snapped
    displaced = rng.uniform() < DISPLACED_FRACTION
    # Fracture lines seen on AP films run across the bone at varying angles; the plane is made to contain
    # the AP direction up to a small obliquity (a break the beam meets obliquely is smeared out and
    # would be invisible on the film as well): normal = the bone's axis in the coronal plane, turned in
    # that plane by up to 30 deg, then tilted out of it by up to 8 deg (hairline) or 25 deg (displaced).
    ap = np.array([0.0, 1.0, 0.0])
    coronal_axis = axis - (axis @ ap) * ap
    coronal_axis = _unit(coronal_axis if np.linalg.norm(coronal_axis) > 0.2 else np.array([1.0, 0.0, 0.0]))
    turn = np.deg2rad(rng.uniform(-30, 30))
    in_plane = _unit(np.cos(turn) * coronal_axis + np.sin(turn) * np.cross(ap, coronal_axis))
    oblique = np.deg2rad(rng.uniform(0, 25 if displaced else 8)) * rng.choice([-1.0, 1.0])
    normal = _unit(np.cos(oblique) * in_plane + np.sin(oblique) * ap)
    f2, f3 = _perpendicular_basis(normal)
    if displaced:
        gap = rng.uniform(1.0, 3.5)
        mag = rng.uniform(1.5, 6.0)
        # Mostly across the bone within the coronal plane (a shift along the beam would not show),
        # with a smaller antero-posterior part and up to 1 mm of distraction.
        across = _unit(np.cross(normal, ap))
        shift = mag * (rng.choice([-1.0, 1.0]) * across + rng.normal(0.0, 0.3) * ap) + rng.uniform(0.0, 1.0) * normal
        rotation = rng.uniform(-8, 8)
        b = rng.uniform(0, 2 * np.pi)
        rot_axis = np.cos(b) * f2 + np.sin(b) * f3
        falloff = rng.uniform(10.0, 16.0)
    else:
        gap = rng.uniform(0.3, 0.9)
        shift = np.zeros(3)
        rotation, rot_axis, falloff = 0.0, f2, 0.0
    return Fracture(
        site=site,
        side=side,
        kind="displaced" if displaced else "hairline",
        centre=centre,
        normal=normal,
        radius_mm=min(cross_radius + 2.0, 24.0),
        gap_mm=gap,
        shift_mm=shift,
        rotation_deg=rotation,
        rotation_axis=rot_axis,
        falloff_mm=falloff,
        fragment_sign=float(rng.choice([-1.0, 1.0])),
    )


def sample_fractures(anatomy, rng: np.random.Generator, accept=None) -> list[Fracture]:
    """One to three fractures at distinct sites, sometimes bilateral (``accept`` as in :func:`sample_fracture`)."""
    n = int(rng.choice([1, 2, 3], p=COUNT_PROBABILITIES))
    side = str(rng.choice(["r", "l"]))
    chosen: list[tuple[str, str]] = []
    out: list[Fracture] = []
    sites = list(SITE_WEIGHTS)
    weights = np.array([SITE_WEIGHTS[s] for s in sites])
    for k in range(n):
        if k > 0 and rng.uniform() < BILATERAL_PROBABILITY:
            side = "l" if side == "r" else "r"
        free = [i for i, s in enumerate(sites) if (s, side) not in chosen]
        p = weights[free] / weights[free].sum()
        site = sites[int(rng.choice(free, p=p))]
        chosen.append((site, side))
        frac = sample_fracture(anatomy, site, side, rng, accept)
        if frac is not None:
            out.append(frac)
    return out


def _rotation_matrix(axis: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    k = _unit(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def voxelize(mesh, origin: np.ndarray, axes: np.ndarray, shape: tuple[int, int, int], step: float) -> np.ndarray:
    """Inside indicator (float32) of a closed mesh on an oriented grid, by winding numbers along axis 0.

    Args:
        mesh: closed, outward-oriented surface.
        origin: position of voxel (0, 0, 0)'s centre.
        axes: ``(3, 3)`` rows = unit directions of grid axes 0, 1, 2, with (axis1, axis2, axis0) right-handed.
        shape: ``(n0, n1, n2)``.
        step: voxel size (mm).
    """
    n0, n1, n2 = shape
    local = (mesh.vertices - origin) @ axes.T / step  # voxel coordinates
    # Only faces whose footprint reaches the grid columns and that lie before its far end matter.
    fv = local[mesh.faces]
    keep = (
        (fv[:, :, 1].max(1) >= -1)
        & (fv[:, :, 1].min(1) <= n1)
        & (fv[:, :, 2].max(1) >= -1)
        & (fv[:, :, 2].min(1) <= n2)
        & (fv[:, :, 0].min(1) <= n0)
    )  # fmt: skip
    faces = mesh.faces[keep]
    size = n1 * n2 * (n0 + 1)
    delta = np.zeros(size)
    # Columns are (axis1 = u, axis2 = v); "depth" runs along axis 0.
    for pix, sign, depth in rasterize_fragments(local[:, 1:3], local[:, 0], faces, (n2, n1), perspective=False):
        # pixel index = row * n1 + col with row = axis2, col = axis1.
        start = np.clip(np.ceil(depth), 0, n0).astype(np.int64)
        # Moving along +axis0, a front face (sign -1) enters the solid: winding +1 after it.
        delta += np.bincount(pix * (n0 + 1) + start, weights=-sign, minlength=size)
    winding = np.cumsum(delta.reshape(n2, n1, n0 + 1), axis=2)[:, :, :n0]
    return (winding > 0.5).astype(np.float32).transpose(2, 1, 0)  # -> (n0, n1, n2)


def fracture_patch_projection(anatomy, frac: Fracture, matrix: np.ndarray, camera: ConeBeamCamera):
    """Change of cortical and cancellous path lengths (detector maps, mm) caused by one fracture, and
    the 3D label point (LPS) of the break; ``None`` if the cut removes no cortex."""
    bone = anatomy.bones[f"hip_{frac.side}"]
    n = frac.normal
    e2, e3 = _perpendicular_basis(n)
    axes = np.stack([n, e2, e3])
    displaced = frac.kind == "displaced"
    step = 0.45 if displaced else 0.2
    half_n = (frac.falloff_mm + frac.gap_mm + 2.0) if displaced else (frac.gap_mm / 2 + 1.0)
    half_p = frac.radius_mm + (np.linalg.norm(frac.shift_mm) + 3.0 if displaced else 1.0)
    n0 = int(np.ceil(2 * half_n / step)) + 1
    n12 = int(np.ceil(2 * half_p / step)) + 1
    origin = frac.centre - half_n * n - half_p * e2 - half_p * e3
    outer = voxelize(bone.outer, origin, axes, (n0, n12, n12), step)
    inner = voxelize(bone.inner, origin, axes, (n0, n12, n12), step) if bone.inner is not None else np.zeros_like(outer)
    s = origin @ n - frac.centre @ n + np.arange(n0) * step  # signed distance of each slice to the plane
    u = -half_p + np.arange(n12) * step
    radial = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
    in_disc = np.clip((frac.radius_mm - radial) / step + 0.5, 0.0, 1.0).astype(np.float32)  # (n1, n2)
    # Partial-volume gap: fraction of each voxel outside the slab |s| < gap/2.
    keep = np.clip((np.abs(s) - frac.gap_mm / 2) / step + 0.5, 0.0, 1.0).astype(np.float32)  # (n0,)
    cut = 1.0 - (1.0 - keep[:, None, None]) * in_disc[None]
    # Label: centroid of the cortex the cut removes.
    cortex = outer - inner
    removed = cortex * (1.0 - cut)
    if removed.sum() < 1.0:
        return None  # the plane missed the bone: no fracture to show or label
    grid_idx = np.nonzero(removed)
    wts = removed[grid_idx]
    pos = origin + np.stack(grid_idx, 1) * step @ axes
    break_centre = (pos * wts[:, None]).sum(0) / wts.sum()
    new_outer = outer * cut
    new_inner = inner * cut
    label = break_centre
    if displaced:
        rot = _rotation_matrix(frac.rotation_axis, frac.rotation_deg)
        side_s = frac.fragment_sign * s
        w_along = np.clip((frac.falloff_mm - side_s) / (frac.falloff_mm - frac.gap_mm / 2 - 1.0), 0.0, 1.0) * (
            side_s > 0
        )
        weight = w_along[:, None, None] * in_disc[None]
        idx = np.nonzero(weight > 0)
        if len(idx[0]):
            p = origin + np.stack(idx, 1) * step @ axes
            disp = (p - frac.centre) @ (rot - np.eye(3)).T + frac.shift_mm
            src = p - weight[idx][:, None] * disp
            src_vox = ((src - origin) @ axes.T / step).T
            moved_o = ndimage.map_coordinates(outer * cut, src_vox, order=1, mode="constant")
            moved_i = ndimage.map_coordinates(inner * cut, src_vox, order=1, mode="constant")
            # Nothing crosses the plane to the fixed side.
            src_s = (src - frac.centre) @ n * frac.fragment_sign
            ok = src_s > 0
            new_outer[idx] = np.where(ok, moved_o, 0.0)
            new_inner[idx] = np.where(ok, moved_i, 0.0)
        moved = break_centre + (break_centre - frac.centre) @ (rot - np.eye(3)).T + frac.shift_mm
        label = 0.5 * (break_centre + moved)
    d_cort = (new_outer - new_inner) - cortex
    d_canc = new_inner - inner
    return _splat(d_cort, origin, axes, step, matrix, camera), _splat(d_canc, origin, axes, step, matrix, camera), label


def _splat(values: np.ndarray, origin, axes, step, matrix, camera: ConeBeamCamera) -> np.ndarray:
    """Project voxel values onto the detector: each voxel adds ``value * step^3 / (cross-section of the
    pixel's ray cone at the voxel)`` of path length, bilinearly.

    Splatting points spaced wider than the pixels would leave a moire of holes, so the change is
    splatted on a grid coarsened until a pixel is at least as large as a projected voxel, then
    interpolated back to the detector grid.
    """
    h, w = camera.shape
    idx = np.nonzero(np.abs(values) > 1e-6)
    if len(idx[0]) == 0:
        return np.zeros((h, w))
    val = values[idx].astype(np.float64)
    p = apply(matrix, origin + np.stack(idx, 1) * step @ axes)
    uv = camera.project(p)
    depth = camera.depth(p)
    footprint = step * camera.sdd_mm / depth.min()  # projected voxel size on the detector (mm)
    f = int(max(1, np.ceil(1.2 * footprint / min(camera.pixel_mm))))
    hc, wc = -(-h // f), -(-w // f)
    # Cross-section of a pixel's ray cone at this depth, a_pix * (depth / sdd)^2 * cos(theta): the
    # path length a voxel adds is its volume over that area (times the ray's secant).
    area = (f * f) * camera.pixel_mm[0] * camera.pixel_mm[1] * (depth / camera.sdd_mm) ** 2
    xd = (uv[:, 0] - camera.centre[0]) * camera.pixel_mm[1]
    zd = (uv[:, 1] - camera.centre[1]) * camera.pixel_mm[0]
    secant = np.sqrt(1.0 + (xd**2 + zd**2) / camera.sdd_mm**2)
    contrib = val * step**3 * secant / area
    cu = (uv + 0.5) / f - 0.5  # pixel-centre convention on the coarse grid
    x0 = np.floor(cu[:, 0]).astype(np.int64)
    y0 = np.floor(cu[:, 1]).astype(np.int64)
    fx = cu[:, 0] - x0
    fy = cu[:, 1] - y0
    out = np.zeros(hc * wc)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xx, yy = x0 + dx, y0 + dy
        ok = (xx >= 0) & (xx < wc) & (yy >= 0) & (yy < hc)
        out += np.bincount(yy[ok] * wc + xx[ok], weights=(contrib * wt)[ok], minlength=hc * wc)
    out = out.reshape(hc, wc)
    if f == 1:
        return out
    # Back to the detector grid (pixel-centre aligned bilinear interpolation).
    ys = (np.arange(h) + 0.5) / f - 0.5
    xs = (np.arange(w) + 0.5) / f - 0.5
    return ndimage.map_coordinates(out, np.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest")

"""Soft tissue of varying habitus, and bowel gas, as path-length maps on the detector.

The body is modelled in the frame of the posed pelvis: above the hips an elliptic cylinder (fat
shell around muscle and viscera), below the ischia two thighs, blended over the groin. Path lengths are
computed for rays along the beam through the object plane at the isocentre (the body's smooth outline
makes the cone-beam correction negligible next to habitus variation). Bowel gas is a set of pockets and
colon segments (mm of gas along the ray) over the lesser pelvis, sacrum and iliac wings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Habitus ranges (mm): half-width of the abdomen/hips, half AP depth, subcutaneous fat, thigh half-width.
HABITUS_RANGES = {
    "half_width_mm": (150.0, 215.0),
    "half_depth_mm": (95.0, 150.0),
    "fat_mm": (8.0, 45.0),
    "thigh_half_width_mm": (70.0, 100.0),
}


@dataclass(frozen=True)
class Habitus:
    half_width_mm: float = 180.0
    half_depth_mm: float = 120.0
    fat_mm: float = 20.0
    thigh_half_width_mm: float = 85.0

    @staticmethod
    def sample(rng: np.random.Generator) -> Habitus:
        # Correlated: a wide patient is also deep and fatter.
        u = rng.uniform(0, 1)
        vals = {}
        for k, (lo, hi) in HABITUS_RANGES.items():
            t = np.clip(0.7 * u + 0.3 * rng.uniform(0, 1), 0, 1)
            vals[k] = float(lo + t * (hi - lo))
        return Habitus(**vals)


def _ellipse_chord(x: np.ndarray, half_width: float, half_depth: float) -> np.ndarray:
    return 2.0 * half_depth * np.sqrt(np.clip(1.0 - (x / half_width) ** 2, 0.0, None))


def body_path_lengths(
    xz: tuple[np.ndarray, np.ndarray], habitus: Habitus, hip_x: float, crotch_z: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fat and lean (muscle/viscera) path lengths (mm) at object-plane points ``(x, z)`` of the body frame.

    Args:
        xz: body-frame coordinates (mm; x to the patient's left, z superior, origin at the pelvis centre).
        habitus: body size.
        hip_x: lateral distance of each femoral shaft from the midline (thigh centres).
        crotch_z: height of the groin (the thighs separate below it).
    """
    x, z = xz
    a, b, f = habitus.half_width_mm, habitus.half_depth_mm, habitus.fat_mm
    # The abdomen narrows a little towards the waist.
    taper = 1.0 - 0.12 * np.clip((z - 60.0) / 150.0, 0.0, 1.0)
    outer = _ellipse_chord(x, a * taper, b)
    inner = _ellipse_chord(x, np.maximum(a * taper - f, 1.0), max(b - f, 1.0))
    ta, tb = habitus.thigh_half_width_mm, 0.85 * b
    tf = 0.8 * f
    thigh_outer = np.zeros_like(x)
    thigh_inner = np.zeros_like(x)
    for cx in (-hip_x - 10.0, hip_x + 10.0):
        thigh_outer = np.maximum(thigh_outer, _ellipse_chord(x - cx, ta, tb))
        thigh_inner = np.maximum(thigh_inner, _ellipse_chord(x - cx, max(ta - tf, 1.0), max(tb - tf, 1.0)))
    beta = np.clip((crotch_z + 50.0 - z) / 70.0, 0.0, 1.0)
    beta = beta * beta * (3 - 2 * beta)
    total = (1 - beta) * outer + beta * thigh_outer
    lean = (1 - beta) * inner + beta * thigh_inner
    return total - lean, lean


def bowel_gas(shape: tuple[int, int], pixel_mm: float, region: dict, rng: np.random.Generator) -> np.ndarray:
    """Gas path length (mm) on a detector grid, drawn at low resolution and smoothed.

    Colon segments are wandering tubes (with haustral folds as a modulation of their gas depth);
    small-bowel and rectal gas are irregular pockets (thresholded smooth noise) over the lesser pelvis.

    Args:
        shape: detector (H, W).
        pixel_mm: object-plane pixel size (mm): detector pixel size / magnification.
        region: pixel positions: ``"midline_x"``, ``"symphysis_y"``, ``"crest_y"``, ``"half_width_px"``.
        rng: random generator.
    """
    h, w = shape
    f = 4
    hs, ws = (h + f - 1) // f, (w + f - 1) // f
    mm = 1.0 / (pixel_mm * f)  # low-res pixels per mm
    mx, sy, cy, hw = (region[k] / f for k in ("midline_x", "symphysis_y", "crest_y", "half_width_px"))
    gas = np.zeros((hs, ws))
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float64)
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.35, 0.35, 0.2, 0.1]))):
        # A colon segment: a smooth random walk of a tube 25-50 mm wide (discs along a dense path).
        p = np.array([mx + rng.uniform(-0.9, 0.9) * hw, rng.uniform(cy, sy - 0.2 * (sy - cy))])
        heading = rng.uniform(0, 2 * np.pi)
        radius = 0.5 * rng.uniform(25, 50) * mm
        depth = float(rng.uniform(8, 25))
        for _k in range(int(rng.integers(12, 40))):
            heading += rng.normal(0, 0.12)
            p = p + 0.35 * radius * np.array([np.cos(heading), np.sin(heading)])
            lo_x, hi_x = int(max(p[0] - radius - 1, 0)), int(min(p[0] + radius + 2, ws))
            lo_y, hi_y = int(max(p[1] - radius - 1, 0)), int(min(p[1] + radius + 2, hs))
            if lo_x >= hi_x or lo_y >= hi_y:
                continue
            d2 = ((xx[lo_y:hi_y, lo_x:hi_x] - p[0]) ** 2 + (yy[lo_y:hi_y, lo_x:hi_x] - p[1]) ** 2) / radius**2
            np.maximum(
                gas[lo_y:hi_y, lo_x:hi_x], depth * np.sqrt(np.clip(1 - d2, 0, None)), out=gas[lo_y:hi_y, lo_x:hi_x]
            )
    # Haustra and uneven filling.
    mod = ndimage.gaussian_filter(rng.standard_normal((hs, ws)), 6 * mm)
    gas *= np.clip(0.75 + 0.25 * mod / max(mod.std(), 1e-9), 0.3, 1.2)
    # Irregular pockets over the lesser pelvis and iliac fossae.
    noise = ndimage.gaussian_filter(rng.standard_normal((hs, ws)), 7 * mm)
    noise /= max(noise.std(), 1e-9)
    window = np.exp(-(((xx - mx) / (1.1 * hw)) ** 2) - (((yy - 0.5 * (sy + cy)) / (0.7 * (sy - cy) + 1e-6)) ** 4))
    threshold = rng.uniform(1.2, 2.2)
    gas = np.maximum(gas, rng.uniform(8, 25) * np.clip(noise * window - threshold, 0, None) / 0.5)
    gas = ndimage.gaussian_filter(gas, 1.5 * mm)
    return ndimage.zoom(gas, f, order=1)[:h, :w]

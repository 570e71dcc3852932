"""Synthetic pelvis landmark configurations and radiograph-like images for tests and benchmarks.

The template is a plausible adult pelvis on an AP radiograph, in mm, symmetric about x = 0 (patient right =
viewer's left = negative x), y pointing down (caudal). Positions are rough anatomical proportions, not data.
"""

from __future__ import annotations

import numpy as np

from custom_transforms.conventions import LANDMARK_INDEX, LANDMARK_NAMES, PAIRED_LANDMARKS

#: Template half-pelvis, patient-left side (x > 0), in mm; the right side is its mirror image.
TEMPLATE_LEFT_MM = {
    "asis": (115.0, -110.0),
    "sciatic_notch": (55.0, -60.0),
    "acetabulum_center": (90.0, -30.0),
    "obturator_superior": (48.0, -5.0),
    "obturator_inferior": (55.0, 45.0),
    "pubic_tubercle": (22.0, -10.0),
    "ischial_tuberosity": (70.0, 65.0),
}
TEMPLATE_MIDLINE_MM = {"symphysis_superior": (0.0, -12.0), "symphysis_inferior": (0.0, 30.0)}


def template_landmarks_mm() -> np.ndarray:
    """(16, 2) symmetric template in LANDMARK_NAMES order, mm, symmetric about x = 0."""
    out = np.zeros((len(LANDMARK_NAMES), 2))
    for name in PAIRED_LANDMARKS:
        x, y = TEMPLATE_LEFT_MM[name]
        out[LANDMARK_INDEX[f"{name}_l"]] = (x, y)
        out[LANDMARK_INDEX[f"{name}_r"]] = (-x, y)
    for name, xy in TEMPLATE_MIDLINE_MM.items():
        out[LANDMARK_INDEX[name]] = xy
    return out


def place_landmarks(
    shape_hw, spacing_mm=(0.2, 0.2), angle_deg: float = 0.0, centre_xy=None, scale: float = 1.0, points_mm=None
) -> np.ndarray:
    """Template (or ``points_mm``) rotated in-plane by ``angle_deg``, scaled and placed in an image, in pixels.

    Args:
        shape_hw: (H, W) of the image.
        spacing_mm: pixel spacing (row, col).
        angle_deg: in-plane rotation (counter-clockwise on screen).
        centre_xy: pixel position of the template origin; default the image centre.
        scale: isotropic scale in physical space.
        points_mm: (16, 2) configuration in mm instead of the template.
    """
    pts = template_landmarks_mm() if points_mm is None else np.asarray(points_mm, dtype=np.float64)
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # y points down
    mm = scale * pts @ rot.T
    h, w = shape_hw
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) if centre_xy is None else np.asarray(centre_xy, dtype=np.float64)
    return mm / np.array([spacing_mm[1], spacing_mm[0]]) + centre


def landmark_dict(landmarks) -> dict:
    """{name: [x, y]} of a (16, 2) array, for annotation JSON."""
    return {n: [float(v) for v in landmarks[i]] for i, n in enumerate(LANDMARK_NAMES)}


def radiograph_like(shape_hw, landmarks, seed: int = 0, bits: int = 12) -> np.ndarray:
    """An integer image with bright blobs at the landmarks on a smooth background (not anatomy; for I/O tests)."""
    h, w = shape_hw
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.2 + 0.1 * np.sin(xx / max(w, 1) * 3.0) * np.cos(yy / max(h, 1) * 2.0)
    sigma = max(h, w) / 80.0
    for x, y in landmarks:
        img += 0.5 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    img += rng.normal(0.0, 0.01, size=img.shape)
    top = (1 << bits) - 1
    return np.clip(img / img.max() * top, 0, top).astype(np.uint16)


def write_annotation(path, landmarks, fractures=(), spacing_mm=None, image=None) -> str:
    """Write an annotation JSON in the project format; returns the path."""
    import json

    ann = {
        "image": str(image or ""),
        "landmarks": landmark_dict(landmarks),
        "fractures": [[float(a), float(b)] for a, b in fractures],
    }
    if spacing_mm is not None:
        ann["spacing_mm"] = [float(spacing_mm[0]), float(spacing_mm[1])]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(ann, f)
    return str(path)

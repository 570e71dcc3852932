"""Synthetic landmark configurations and images for the landmark detector tests (no data files needed)."""

from __future__ import annotations

import math

import numpy as np

# An AP pelvis in mm, viewer's orientation (patient right = small x), y down; order of LANDMARK_NAMES:
# asis, sciatic_notch, acetabulum_center, obturator_superior, obturator_inferior, pubic_tubercle,
# ischial_tuberosity (right, then left), symphysis_superior, symphysis_inferior.
_RIGHT = np.array([[-115, -70], [-70, -25], [-88, 20], [-45, 42], [-50, 88], [-22, 48], [-62, 108]], float)
TEMPLATE_MM = np.concatenate([_RIGHT, _RIGHT * [-1, 1], [[0, 45], [0, 85]]])


def random_pelvis(rng: np.random.Generator, centre=(0.0, 0.0), size: float = 1.0, noise_mm: float = 1.0) -> np.ndarray:
    """A plausible random configuration (mm): anatomical variation, axial rotation, in-plane pose."""
    s = TEMPLATE_MM.copy()
    s[:, 0] *= rng.uniform(0.9, 1.1)  # pelvic width
    s[:, 1] *= rng.uniform(0.9, 1.1)  # height
    axial = rng.uniform(-0.08, 0.08)  # rotation about the long axis foreshortens one side
    s[:, 0] *= 1 + axial * np.sign(s[:, 0])
    s[:, 0] += rng.normal() * 3 * (s[:, 1] > 60)  # pubic-arch shift
    s += rng.normal(size=s.shape) * noise_mm
    angle = rng.uniform(-0.1, 0.1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return size * rng.uniform(0.92, 1.08) * s @ rot.T + np.asarray(centre, float)


def training_shapes(count: int = 150, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([random_pelvis(rng, centre=rng.uniform(-30, 30, 2)) for _ in range(count)])

"""Drawn radiographs that are *not* AP pelvic radiographs: the project's one source of non-pelvic films.

The landmark detector trains on them as negatives (``scripts.landmarks.nonpelvic_radiographs``: a heatmap network
trained on pelvic radiographs alone learns where landmarks usually are and may put confident peaks there on any
image, a blank one included), its evaluation measures how many it refuses, the tests feed them to every component
that must refuse a film that is not a pelvis, and :func:`simulation.distractor.write_distractor` writes the chest
film as DICOM. Kinds (images ``(1, H, W)`` float32 in ``[0, 1]``, bone bright):

* ``blank``: a uniform level with a little noise (an unexposed or saturated detector);
* ``noise``: smooth random texture at a random scale;
* ``chest``: a PA chest film: soft-tissue body, dark lungs crossed by ribs, clavicles, spine, heart;
* ``extremity``: one or two long bones (cortical walls, medulla, joint ends) at a random angle;
* ``lateral``: a lateral lumbosacral/hip-like view: a column of vertebral blocks and one femoral head.

They are coarse drawings, meant to cover the ways an image can fail to be an AP pelvis, not to be
realistic radiographs of those body parts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["NONPELVIC_KINDS", "render_nonpelvic"]

NONPELVIC_KINDS: tuple[str, ...] = ("blank", "noise", "chest", "extremity", "lateral")


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return field
    return ndimage.gaussian_filter(field.astype(np.float32), sigma, mode="nearest", truncate=3.0)


def _band(distance: np.ndarray, half_width: float, soft: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.minimum((np.abs(distance) - half_width) / max(soft, 1e-3), 50.0)))


def _chest(u, v, rng) -> np.ndarray:
    img = 0.25 + 0.35 * _band(u / rng.uniform(0.8, 1.0), 1.0, 0.03)  # body
    lungs = np.zeros_like(u)
    for side in (-1, 1):
        cx, cy = side * rng.uniform(0.3, 0.4), rng.uniform(-0.1, 0.05)
        lungs = np.maximum(lungs, _band(np.hypot((u - cx) / 0.25, (v - cy) / 0.6), 1.0, 0.05))
    img = img - 0.3 * lungs
    ribs = np.zeros_like(u)
    for k in range(rng.integers(8, 12)):
        y0 = -0.6 + 0.12 * k
        curve = v - (y0 + rng.uniform(0.4, 0.7) * u**2)
        ribs = np.maximum(ribs, _band(curve, 0.012, 0.006))
    img = img + 0.25 * ribs * (0.4 + lungs)
    for side in (-1, 1):  # clavicles
        img = img + 0.3 * _band(v + 0.65 - 0.15 * np.abs(u), 0.02, 0.01) * (side * u > 0.05) * (np.abs(u) < 0.5)
    img = img + 0.35 * _band(u, 0.06, 0.01)  # spine
    img = img + 0.2 * _band(np.hypot((u - 0.1) / 0.25, (v - 0.25) / 0.22), 1.0, 0.05)  # heart
    return img


def _extremity(u, v, rng) -> np.ndarray:
    img = 0.2 + 0.2 * _band(u, rng.uniform(0.3, 0.5), 0.05)
    for _ in range(rng.integers(1, 3)):
        angle = rng.uniform(-0.5, 0.5)
        offset = rng.uniform(-0.25, 0.25)
        across = (u - offset) * math.cos(angle) - v * math.sin(angle)
        along = (u - offset) * math.sin(angle) + v * math.cos(angle)
        width = rng.uniform(0.06, 0.12)
        shaft = _band(across, width, 0.01) * _band(along, 0.7, 0.02)
        medulla = _band(across, 0.55 * width, 0.01) * _band(along, 0.65, 0.02)
        img = img + 0.55 * shaft - 0.25 * medulla
        end = rng.choice([-1, 1])
        img = img + 0.45 * _band(np.hypot(across, along - end * 0.72) / (2 * width), 1.0, 0.05)
    return img


def _lateral(u, v, rng) -> np.ndarray:
    img = 0.2 + 0.25 * _band(u / 0.9, 1.0, 0.05)
    x0 = rng.uniform(-0.2, 0.2)
    for k in range(6):  # vertebral bodies in a lordotic curve
        cy = -0.9 + 0.3 * k
        cx = x0 + 0.15 * math.sin(0.8 * k)
        img = img + 0.35 * _band(u - cx, 0.12, 0.01) * _band(v - cy, 0.11, 0.01)
    img = img + 0.4 * _band(np.hypot(u + rng.uniform(-0.3, 0.3), v - 0.6) / 0.15, 1.0, 0.03)  # femoral head
    return img


def render_nonpelvic(kind: str, spatial_size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """One synthetic non-pelvic radiograph.

    Args:
        kind: one of :data:`NONPELVIC_KINDS`.
        spatial_size: ``(H, W)``.
        rng: numpy random generator.

    Returns:
        ``(1, H, W)`` float32 in ``[0, 1]``.
    """
    h, w = (int(s) for s in spatial_size)
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    scale = max(h, w) / 2
    u, v = (xs - (w - 1) / 2) / scale, (ys - (h - 1) / 2) / scale  # about [-1, 1] on the long side
    if kind == "blank":
        img = np.full((h, w), rng.uniform(0.0, 1.0), dtype=np.float32)
    elif kind == "noise":
        img = _smooth(rng.normal(size=(h, w)), rng.uniform(0.5, 0.08 * max(h, w)))
        img = (img - img.min()) / max(float(np.ptp(img)), 1e-6)
    elif kind == "chest":
        img = _chest(u, v, rng)
    elif kind == "extremity":
        img = _extremity(u, v, rng)
    elif kind == "lateral":
        img = _lateral(u, v, rng)
    else:
        raise ValueError(f"unknown non-pelvic kind {kind!r}; expected one of {NONPELVIC_KINDS}.")
    if kind != "noise":
        img = _smooth(img, rng.uniform(0.0, 0.004 * max(h, w)))
        img = img * rng.uniform(0.7, 1.2) + rng.uniform(-0.1, 0.1)
    img = img + rng.normal(scale=rng.uniform(0.0, 0.03), size=img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)[None]

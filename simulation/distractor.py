"""Distractor radiographs for other components' tests: a chest-like film or a blank exposure.

They go through the same image formation and DICOM writer as the pelvic films (so only the content
differs), and carry their own body part and view, so a series selector or a plausibility check can be
tested on them. They carry no annotation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .dicom_writer import write_dx
from .radiograph import MU_CORTICAL_EXCESS, MU_SOFT, Exposure, form_image

DISTRACTOR_KINDS = ("chest", "blank")


def _chest(shape: tuple[int, int], pixel_mm: float, rng: np.random.Generator):
    """Attenuation, body mask and bone mask of a PA chest-like film."""
    h, w = shape
    f = 2
    mm = f / pixel_mm

    def layer():
        img = Image.new("F", (w * f, h * f), 0.0)
        return img, ImageDraw.Draw(img)

    def done(img):
        return np.asarray(img, dtype=np.float64).reshape(h, f, w, f).mean(axis=(1, 3))

    cx, top = w * f / 2 + rng.uniform(-0.03, 0.03) * w * f, h * f * 0.08
    body, d = layer()
    d.ellipse([cx - 190 * mm, top - 40 * mm, cx + 190 * mm, top + 480 * mm], fill=220.0)  # trunk, mm of tissue
    lungs, dl = layer()
    for sgn in (-1, 1):
        x0 = cx + sgn * 25 * mm
        x1 = cx + sgn * rng.uniform(140, 160) * mm
        dl.ellipse([min(x0, x1), top + 30 * mm, max(x0, x1), top + rng.uniform(260, 300) * mm], fill=120.0)  # mm of air
    heart, dh = layer()
    dh.ellipse([cx - 55 * mm, top + 150 * mm, cx + 110 * mm, top + 290 * mm], fill=110.0)  # heart to the patient's left
    bones, db = layer()
    db.rectangle([cx - 18 * mm, top - 40 * mm, cx + 18 * mm, h * f], fill=18.0)  # spine
    for k in range(10):  # posterior ribs: arcs across each lung
        y = top + (40 + 24 * k) * mm
        for sgn in (-1, 1):
            x_out = cx + sgn * (150 + 5 * k) * mm
            box = [min(cx, x_out), y - 30 * mm, max(cx, x_out) + (0 if sgn > 0 else 0), y + 60 * mm]
            db.arc(box, 200 if sgn < 0 else -20, 340 if sgn < 0 else 160, fill=6.0, width=int(9 * mm))
    for sgn in (-1, 1):  # clavicles
        db.line([cx + sgn * 20 * mm, top + 35 * mm, cx + sgn * 150 * mm, top + 15 * mm], fill=9.0, width=int(14 * mm))
    tissue = np.clip(done(body) - done(lungs) * 0.7, 0, None) + done(heart) * 0.3
    bone = done(bones)
    attenuation = MU_SOFT * tissue + MU_CORTICAL_EXCESS * bone
    return attenuation, tissue > 5.0, bone > 1.0


def write_distractor(
    path: str | Path,
    kind: str = "chest",
    size: tuple[int, int] | int = (512, 512),
    seed: int = 0,
    monochrome1: bool = False,
    modality: str | None = None,
) -> Path:
    """Write a non-pelvic radiograph as DICOM.

    Args:
        path: output file.
        kind: ``"chest"`` (PA chest-like film, CR, BodyPartExamined CHEST) or ``"blank"`` (an exposure
            with nothing in the beam, DX, BodyPartExamined PELVIS, as a mislabelled film would be).
        size: ``(H, W)`` or an int.
        seed: random seed (same seed, same file).
        monochrome1: store as MONOCHROME1.
        modality: override the modality (``"DX"`` or ``"CR"``).
    """
    if kind not in DISTRACTOR_KINDS:
        raise ValueError(f"kind must be one of {DISTRACTOR_KINDS}, got {kind!r}")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    rng = np.random.default_rng([seed, 2718])
    pixel = 430.0 / w
    if kind == "chest":
        attenuation, body, bone = _chest((h, w), pixel, rng)
        body_part, view, default_modality = "CHEST", "PA", "CR"
    else:
        attenuation = np.full((h, w), 0.02) + 0.01 * rng.uniform()
        body = np.ones((h, w), dtype=bool)
        bone = np.zeros((h, w), dtype=bool)
        bone[: h // 8, : w // 8] = True  # a reference region so the window is defined
        body_part, view, default_modality = "PELVIS", "AP", "DX"
    pixels = form_image(attenuation, body, bone, pixel, Exposure.sample(rng), rng)
    return write_dx(
        path,
        pixels,
        (pixel, pixel),
        subject=f"distractor-{kind}-{seed}",
        uid_seed=(seed, "distractor", kind),
        monochrome1=monochrome1,
        comments=f"Simulated {kind} distractor film, not a patient.",
        modality=modality or default_modality,
        body_part=body_part,
        view_position=view,
    )

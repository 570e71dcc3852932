"""Distractor radiographs for other components' tests: a chest film or a blank exposure, as DICOM.

They go through the same DICOM writer as the pelvic films and carry their own body part and view, so a series
selector or a plausibility check can be tested on them. The chest is the drawn chest film of
:mod:`simulation.nonpelvic` (the project's one non-pelvic film); the blank exposure goes through the pelvic films'
image formation with nothing in the beam. They carry no annotation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dicom_writer import write_dx
from .nonpelvic import render_nonpelvic
from .radiograph import Exposure, form_image

DISTRACTOR_KINDS = ("chest", "blank")


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
        kind: ``"chest"`` (PA chest film of :func:`simulation.nonpelvic.render_nonpelvic`, CR, BodyPartExamined
        CHEST) or ``"blank"`` (an exposure
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
        pixels = np.rint(render_nonpelvic("chest", (h, w), rng)[0] * 4095).astype(np.uint16)
        body_part, view, default_modality = "CHEST", "PA", "CR"
    else:
        attenuation = np.full((h, w), 0.02) + 0.01 * rng.uniform()
        body = np.ones((h, w), dtype=bool)
        bone = np.zeros((h, w), dtype=bool)
        bone[: h // 8, : w // 8] = True  # a reference region so the window is defined
        pixels = form_image(attenuation, body, bone, pixel, Exposure.sample(rng), rng)
        body_part, view, default_modality = "PELVIS", "AP", "DX"
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

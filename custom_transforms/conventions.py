"""Conventions shared by every part of the project. This module owns them; everything else imports them.

Landmarks
    16 named skeletal landmarks: seven bilateral pairs with suffix ``_r`` (patient right) and ``_l``
    (patient left), plus two points on the pubic symphysis. Arrays of landmarks are always ordered as
    :data:`LANDMARK_NAMES`, shape ``(16, 2)``.

Coordinates
    A point is ``[x, y]`` in pixels of the original image: ``x`` = column, ``y`` = row, origin at the
    centre of the top-left pixel (so pixel ``(row=r, col=c)`` has centre ``[c, r]``).
    Pixel spacing is in millimetres as ``(row, col)``, i.e. ``(dy, dx)``.
    Image arrays are channel-first ``(C, H, W)`` = ``(C, rows, cols)``.

Patient left/right
    On an AP pelvic radiograph displayed in the standard orientation the patient's right side is on
    the viewer's left (small x). ``_r`` landmarks therefore normally have smaller x than ``_l``.

Annotation file (one JSON per image)::

    {"image": "<path>", "landmarks": {"asis_r": [x, y], ...}, "fractures": [[x, y], ...],
     "spacing_mm": [row, col]}

    ``fractures`` may be empty; ``spacing_mm`` is optional and overrides the spacing read from DICOM.

NIfTI files on a radiograph's grid (heatmaps, label images)
    Voxel ``(i, j)`` is column ``i``, row ``j`` (the data array is the ``(H, W)`` image transposed), with
    the affine of :func:`radiograph_nifti_affine`: ``diag(-col_mm, -row_mm, 1, 1)``. That is how ITK (and
    so 3D Slicer) places a DX/CR image, whose header has no patient position or orientation: origin 0,
    spacing (col, row), identity direction in ITK's LPS space, which NIfTI's RAS affine writes with
    negated x and y. A file written so overlays the radiograph in such viewers, and ITK reads it back as
    the ``(rows, cols)`` array that was written.

Datalist
    MONAI-style JSON whose items carry ``image``, ``annotation``, ``label`` (0/1: any fracture),
    ``subject`` and ``fold`` (0-4). For fold ``k``: test = items with ``fold == k`` (20 %); of the
    rest a deterministic, subject-grouped 1/8 is validation (10 %), the remainder training (70 %).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAIRED_LANDMARKS: tuple[str, ...] = (
    "asis",
    "sciatic_notch",
    "acetabulum_center",
    "obturator_superior",
    "obturator_inferior",
    "pubic_tubercle",
    "ischial_tuberosity",
)
MIDLINE_LANDMARKS: tuple[str, ...] = ("symphysis_superior", "symphysis_inferior")

#: The canonical order of the 16 landmarks (right side, left side, then midline).
LANDMARK_NAMES: tuple[str, ...] = (
    tuple(f"{n}_r" for n in PAIRED_LANDMARKS) + tuple(f"{n}_l" for n in PAIRED_LANDMARKS) + MIDLINE_LANDMARKS
)
NUM_LANDMARKS = len(LANDMARK_NAMES)
LANDMARK_INDEX: dict[str, int] = {name: i for i, name in enumerate(LANDMARK_NAMES)}

#: Bilateral pairs as (right index, left index).
LANDMARK_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (LANDMARK_INDEX[f"{n}_r"], LANDMARK_INDEX[f"{n}_l"]) for n in PAIRED_LANDMARKS
)

#: Landmarks on the pubis and ischium whose bounding box is the anterior-pelvis ROI.
ROI_LANDMARK_NAMES: tuple[str, ...] = (
    tuple(
        f"{n}_{s}"
        for s in ("r", "l")
        for n in ("obturator_superior", "obturator_inferior", "pubic_tubercle", "ischial_tuberosity")
    )
    + MIDLINE_LANDMARKS
)
ROI_LANDMARK_INDICES: tuple[int, ...] = tuple(LANDMARK_INDEX[n] for n in ROI_LANDMARK_NAMES)


def mirror_name(name: str) -> str:
    """Name of the landmark a point becomes after reflection about the symmetry line (``_r`` <-> ``_l``)."""
    if name.endswith("_r"):
        return name[:-2] + "_l"
    if name.endswith("_l"):
        return name[:-2] + "_r"
    return name


#: ``MIRROR_PERMUTATION[i]`` is the index of the landmark that landmark ``i`` becomes after mirroring.
MIRROR_PERMUTATION: tuple[int, ...] = tuple(LANDMARK_INDEX[mirror_name(n)] for n in LANDMARK_NAMES)

#: Pixel spacings (mm) taken as real, from a DICOM, a NIfTI header or an annotation: a radiograph's pixel is between
#: a hundredth of a millimetre and two centimetres wide (a heavily downsampled film). Outside it the value is a typo
#: or a unit mistake, and millimetre sizes (the 2 cm fracture disc, the peaks' separation) would become millions of
#: pixels or less than one.
SPACING_RANGE_MM: tuple[float, float] = (0.01, 20.0)

#: Default network input size of the ROI, (H, W), as in the paper.
DEFAULT_ROI_SIZE: tuple[int, int] = (256, 512)
#: Default fracture disc radius in mm (the paper's 2 cm).
DEFAULT_FRACTURE_RADIUS_MM = 20.0


def radiograph_nifti_affine(spacing_mm: Sequence[float] | None) -> np.ndarray:
    """The NIfTI (RAS) affine of a radiograph's pixel grid, with voxel axis 0 = column and 1 = row.

    ``diag(-col_mm, -row_mm, 1, 1)``: ITK's geometry of a projection radiograph (origin 0, spacing
    (col, row), identity direction in LPS), see the module docstring.

    Args:
        spacing_mm: ``(row, col)`` pixel spacing in mm; ``None`` (unknown) is written as 1 mm.
    """
    row_mm, col_mm = (1.0, 1.0) if spacing_mm is None else (float(v) for v in np.asarray(spacing_mm).reshape(-1)[:2])
    if not (row_mm > 0 and col_mm > 0):
        raise ValueError(f"spacing_mm must be two positive (row, col) values, got {spacing_mm}.")
    return np.diag([-col_mm, -row_mm, 1.0, 1.0])

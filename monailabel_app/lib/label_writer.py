"""Writing a 2D label image on the radiograph's pixel grid, in a file a viewer overlays on the radiograph.

NIfTI labels carry the geometry ITK-based viewers (3D Slicer) give a projection radiograph, whose DX/CR header has no
patient position or orientation: voxel ``(i, j)`` = column ``i``, row ``j``, with the affine
``custom_transforms.conventions.radiograph_nifti_affine`` owns (``diag(-col_mm, -row_mm, 1, 1)``: spacing (column mm,
row mm), origin 0, identity direction in ITK's LPS space). So the label overlays the radiograph, and ITK reads it back
as the ``(rows, cols)`` array that was written; the bundle's heatmaps use the same geometry. PNG labels are plain
8-bit images of the radiograph's size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np

from custom_transforms.conventions import radiograph_nifti_affine

#: Extensions a label can be written as (the request's ``result_extension``).
LABEL_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".png")
DEFAULT_LABEL_EXTENSION = ".nii.gz"


def write_label(label: np.ndarray, spacing_mm: Sequence[float] | None, extension: str = DEFAULT_LABEL_EXTENSION) -> str:
    """Write ``label`` ``(H, W)`` to a new temporary file and return its path.

    Args:
        label: ``(H, W)`` integer label image (values < 256).
        spacing_mm: ``(row, col)`` pixel spacing in mm, or None (written as 1 mm).
        extension: one of :data:`LABEL_EXTENSIONS`.
    """
    if extension not in LABEL_EXTENSIONS:
        raise ValueError(
            f"result_extension {extension!r} is not supported; expected one of {', '.join(LABEL_EXTENSIONS)}."
        )
    label = np.ascontiguousarray(label, dtype=np.uint8)
    if label.ndim != 2:
        raise ValueError(f"expected a (H, W) label image, got shape {label.shape}.")
    fd, path = tempfile.mkstemp(suffix=extension, prefix="aasn_label_")
    os.close(fd)
    if extension == ".png":
        from PIL import Image

        Image.fromarray(label, mode="L").save(path)
        return path

    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(label.T[:, :, None]), radiograph_nifti_affine(spacing_mm))
    image.header.set_xyzt_units("mm")
    nib.save(image, path)
    return path

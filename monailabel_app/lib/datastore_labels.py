"""The datastore's final labels as the bundle's annotation files.

A final label saved by a viewer (``PUT /datastore/label``) is either

* an annotation JSON in the project's format (``{"landmarks": {name: [x, y]}, "fractures": [[x, y], ...]}``),
  used as it is after validation; or
* a label image (``.nii.gz``/``.nii``/``.nrrd``/``.png``) of the radiograph's size in the encoding of
  :mod:`lib.label_map` (landmark discs 1-16, fracture regions 17), turned into an annotation JSON.

The converted files are written once per label version (their name carries the label's modification time) in the
app's work folder, so that the bundle's ``LoadAnnotationd`` reads them like any annotation.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from custom_transforms.annotation import read_annotation
from custom_transforms.conventions import LANDMARK_NAMES
from lib.label_map import label_to_annotation

LABEL_IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".png")


def read_label_image(path: str) -> np.ndarray:
    """A label image as ``(H, W)`` (rows, columns) integers.

    NIfTI volumes are reoriented so that the array's axes run along +x = column and +y = row of the radiograph
    (LPS, the orientation :func:`lib.label_writer.write_label` and ITK give a radiograph), whatever axis flips the
    viewer stored; a single-slice volume is squeezed to 2D.
    """
    lower = path.lower()
    if lower.endswith(".png"):
        from PIL import Image

        array = np.asarray(Image.open(path))
    elif lower.endswith((".nii.gz", ".nii")):
        import nibabel as nib
        from nibabel import orientations

        image = nib.load(path)
        current = orientations.io_orientation(image.affine)
        wanted = orientations.axcodes2ornt(("L", "P", "S"))
        data = orientations.apply_orientation(
            np.asanyarray(image.dataobj), orientations.ornt_transform(current, wanted)
        )
        data = data.reshape(data.shape[:2]) if data.ndim == 3 and data.shape[2] == 1 else data
        array = np.asarray(data).T if data.ndim == 2 else data  # (x, y) -> (rows, cols)
    else:
        raise ValueError(
            f"{path}: label format not supported; expected JSON or one of {', '.join(LABEL_IMAGE_EXTENSIONS)}."
        )
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2D label image, got shape {array.shape}.")
    return array


def image_shape(image_path: str) -> tuple[int, int]:
    """``(H, W)`` of a radiograph, read with the project's loader."""
    from custom_transforms.loading import LoadPXR

    return tuple(int(s) for s in LoadPXR()(image_path).shape[-2:])  # type: ignore[return-value]


def annotation_from_label(label_path: str, image_path: str, work_dir: str) -> tuple[str, dict[str, Any]]:
    """The annotation JSON for a final label, and its content.

    Args:
        label_path: the datastore's final label (JSON or label image).
        image_path: the radiograph it labels.
        work_dir: where converted annotations are written.

    Returns:
        ``(path, {"landmarks": {name: [x, y]}, "fractures": [[x, y], ...]})``.

    Raises:
        ValueError: the label is malformed, misses a landmark, or its size differs from the radiograph's.
    """
    if label_path.lower().endswith(".json"):
        parsed = read_annotation(label_path)  # validates completeness and types (AnnotationError)
        landmarks = parsed["landmarks"].tolist()
        content = {"landmarks": dict(zip(LANDMARK_NAMES, landmarks)), "fractures": parsed["fractures"].tolist()}
        return label_path, content

    stamp = f"{os.path.realpath(label_path)}:{os.stat(label_path).st_mtime_ns}"
    name = f"{os.path.basename(image_path).split('.')[0]}_{hashlib.sha1(stamp.encode()).hexdigest()[:12]}.json"
    out = os.path.join(work_dir, "annotations", name)
    if os.path.isfile(out):
        with open(out) as f:
            return out, json.load(f)

    label = read_label_image(label_path)
    shape = image_shape(image_path)
    if tuple(label.shape) != shape:
        raise ValueError(
            f"{label_path}: label image is {label.shape[0]} x {label.shape[1]} (rows x cols) but the radiograph "
            f"{image_path} is {shape[0]} x {shape[1]}."
        )
    content = label_to_annotation(label, source=label_path)
    content["image"] = image_path
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=1)
    os.replace(tmp, out)
    return out, content

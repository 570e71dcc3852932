"""Reading and validating landmark / fracture annotations (format owned by :mod:`custom_transforms.conventions`).

Annotation JSON::

    {"image": "<path>", "landmarks": {"asis_r": [x, y], ...}, "fractures": [[x, y], ...], "spacing_mm": [row, col]}

Points are ``[x, y]`` pixels of the original image (x = column, y = row, origin at the centre of the top-left
pixel), so a point is inside an ``H x W`` image when ``-0.5 <= x <= W - 0.5`` and ``-0.5 <= y <= H - 0.5``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from .conventions import LANDMARK_NAMES, NUM_LANDMARKS, SPACING_RANGE_MM
from .errors import AnnotationError
from .geometry import image_contains

__all__ = ["SPACING_RANGE_MM", "read_annotation", "landmarks_to_array", "validate_points", "LoadAnnotationd"]


def _brief(value, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message names what was wrong without copying a file into it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_numbers(value) -> bool:
    """True when ``value`` holds booleans or text: JSON ``true``/``false`` are not coordinates, although numpy would
    read them as 1 and 0."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "bOSU" and (value.dtype.kind != "O" or any(_not_numbers(v) for v in value.flat))
    if isinstance(value, (list, tuple)):
        return any(_not_numbers(v) for v in value)
    return False


def _point(value, source: str, what: str) -> np.ndarray:
    if _not_numbers(value):
        raise AnnotationError(f"{source}: {what} must be [x, y] numbers, got {_brief(value)}")
    try:
        pt = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: {what} must be [x, y] numbers, got {_brief(value)}") from None
    if pt.shape != (2,):
        raise AnnotationError(f"{source}: {what} must be [x, y], got {_brief(value)}")
    if not np.all(np.isfinite(pt)):
        raise AnnotationError(f"{source}: {what} is not finite: {_brief(value)}")
    return pt


def landmarks_to_array(landmarks, source: str = "landmarks") -> np.ndarray:
    """Convert landmarks given as a ``{name: [x, y]}`` mapping or a ``(16, 2)`` array to a (16, 2) float32 array.

    Args:
        landmarks: the landmarks, in :data:`~custom_transforms.conventions.LANDMARK_NAMES` order if an array.
        source: a file or key name for the error messages.

    Raises:
        AnnotationError: a landmark is missing, unknown, not a finite ``[x, y]``, or the array has the wrong shape.
    """
    if isinstance(landmarks, Mapping):
        unknown = sorted(set(map(str, landmarks)) - set(LANDMARK_NAMES))
        if unknown:
            raise AnnotationError(
                f"{source}: unknown landmark name(s) {unknown}; expected names from {list(LANDMARK_NAMES)}"
            )
        missing = [n for n in LANDMARK_NAMES if n not in landmarks]
        if missing:
            raise AnnotationError(f"{source}: missing landmark(s) {missing}; all {NUM_LANDMARKS} are required")
        arr = np.stack([_point(landmarks[n], source, f"landmark '{n}'") for n in LANDMARK_NAMES])
        return arr.astype(np.float32)
    if _not_numbers(landmarks):
        raise AnnotationError(f"{source}: landmarks must be [x, y] numbers, got {_brief(landmarks)}")
    try:
        arr = np.asarray(landmarks.detach().cpu() if hasattr(landmarks, "detach") else landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: landmarks must be a name->[x, y] mapping or a (16, 2) array") from None
    if arr.shape != (NUM_LANDMARKS, 2):
        raise AnnotationError(f"{source}: landmarks array must have shape ({NUM_LANDMARKS}, 2), got {arr.shape}")
    for i, name in enumerate(LANDMARK_NAMES):
        if not np.all(np.isfinite(arr[i])):
            raise AnnotationError(f"{source}: landmark '{name}' is not finite: {arr[i].tolist()}")
    return arr.astype(np.float32)


def validate_points(points: np.ndarray, shape_hw, source: str, names=None, what: str = "point") -> None:
    """Raise :class:`AnnotationError` naming the first point outside an image of ``shape_hw`` = (H, W)."""
    inside = image_contains(points, shape_hw)
    if inside.all():
        return
    i = int(np.flatnonzero(~inside)[0])
    label = f"{what} '{names[i]}'" if names is not None else f"{what} {i}"
    h, w = shape_hw
    raise AnnotationError(
        f"{source}: {label} at [x, y] = {np.asarray(points[i]).tolist()} lies outside the {h} x {w} (rows x cols) "
        f"image (x must be in [-0.5, {w - 0.5}], y in [-0.5, {h - 0.5}])"
    )


def read_annotation(path: str | os.PathLike) -> dict:
    """Read an annotation JSON file into ``{"landmarks": (16, 2), "fractures": (K, 2), "spacing_mm": tuple | None}``.

    Validates types and completeness (not the image bounds, which need the image: see :class:`LoadAnnotationd`).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, Mapping):
        raise AnnotationError(f"{path}: expected a JSON object with 'landmarks', got {type(raw).__name__}")
    if "landmarks" not in raw:
        raise AnnotationError(f"{path}: field 'landmarks' is missing")
    if not isinstance(raw["landmarks"], Mapping):
        raise AnnotationError(f"{path}: field 'landmarks' must be an object {{name: [x, y]}}")
    landmarks = landmarks_to_array(raw["landmarks"], path)

    fractures_raw = raw.get("fractures") or []
    if not isinstance(fractures_raw, list):
        raise AnnotationError(f"{path}: field 'fractures' must be a list of [x, y] points")
    fractures = (
        np.stack([_point(p, path, f"fracture {i}") for i, p in enumerate(fractures_raw)])
        if fractures_raw
        else np.zeros((0, 2))
    )

    spacing = raw.get("spacing_mm")
    if spacing is not None:
        sp = _point(spacing, path, "field 'spacing_mm'")
        low, high = SPACING_RANGE_MM
        if np.any(sp < low) or np.any(sp > high):
            raise AnnotationError(
                f"{path}: field 'spacing_mm' must be two (row, col) pixel sizes between {low} and {high} mm, got "
                f"{_brief(spacing)}"
            )
        spacing = (float(sp[0]), float(sp[1]))
    return {"landmarks": landmarks, "fractures": fractures.astype(np.float32), "spacing_mm": spacing}


class LoadAnnotationd(MapTransform):
    """Load and validate the annotation of each image; set ``landmarks`` (16, 2), ``fractures`` (K, 2) float32.

    The annotation's ``spacing_mm``, when given, overrides the image's (meta ``spacing_source = "annotation"``).
    When the annotation key is absent or ``None`` but the dictionary already carries ``landmarks`` (a (16, 2)
    array or a name -> [x, y] mapping, e.g. from the landmark detector), those are validated and used, with no
    fractures unless ``fractures`` is present too.

    Args:
        keys: key(s) of the annotation path (default ``"annotation"``).
        image_key: key of the loaded image (a ``(C, H, W)`` MetaTensor), used for bounds and spacing.
        landmarks_key: output key of the landmarks.
        fractures_key: output key of the fracture points.
        allow_missing_keys: do not raise when neither the annotation nor ``landmarks`` is present.
    """

    def __init__(
        self,
        keys: KeysCollection = "annotation",
        image_key: str = "image",
        landmarks_key: str = "landmarks",
        fractures_key: str = "fractures",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.strict = not allow_missing_keys
        self.image_key = image_key
        self.landmarks_key = landmarks_key
        self.fractures_key = fractures_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = d.get(self.image_key)
        if image is None:
            raise AnnotationError(f"LoadAnnotationd: image key '{self.image_key}' is missing (load the image first)")
        shape_hw = tuple(int(s) for s in image.shape[-2:])
        for key in self.keys:
            path = d.get(key)
            if path is not None and not (isinstance(path, str) and path == ""):
                ann = read_annotation(path)
                source = os.fspath(path)
                landmarks, fractures = ann["landmarks"], ann["fractures"]
                if ann["spacing_mm"] is not None and isinstance(image, MetaTensor):
                    image.meta["spacing_mm"] = ann["spacing_mm"]
                    image.meta["spacing_source"] = "annotation"
                    affine = image.affine.clone()
                    affine[0, 0], affine[1, 1] = ann["spacing_mm"]
                    image.affine = affine
            elif self.landmarks_key in d and d[self.landmarks_key] is not None:
                source = f"data['{self.landmarks_key}'] of {_image_name(image)}"
                landmarks = landmarks_to_array(d[self.landmarks_key], source)
                fractures = _fractures_array(d.get(self.fractures_key), source)
            elif self.strict:
                raise AnnotationError(
                    f"{_image_name(image)}: no annotation ('{key}') and no '{self.landmarks_key}' in the data; "
                    "landmarks are required"
                )
            else:
                continue
            validate_points(landmarks, shape_hw, source, LANDMARK_NAMES, "landmark")
            validate_points(fractures, shape_hw, source, None, "fracture")
            d[self.landmarks_key] = landmarks
            d[self.fractures_key] = fractures
        return d


def _fractures_array(value, source: str) -> np.ndarray:
    if value is None:
        return np.zeros((0, 2), dtype=np.float32)
    arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)):
        raise AnnotationError(f"{source}: fractures must be finite [x, y] points of shape (K, 2), got {arr.shape}")
    return arr.astype(np.float32)


def _image_name(image) -> str:
    meta = getattr(image, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<image>"))

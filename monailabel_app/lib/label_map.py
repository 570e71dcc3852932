"""The label image through which the viewer and MONAI Label exchange landmarks and fracture sites.

Viewers (3D Slicer, OHIF) edit label images, not point lists, so a PXR's annotation travels as a 2D label image of
the radiograph's size (rows x columns) with one value per class:

* ``1 .. 16``: a small disc (radius :data:`LANDMARK_RADIUS_MM`) centred on each landmark, value = 1 + its index in
  :data:`custom_transforms.conventions.LANDMARK_NAMES`;
* ``17`` (:data:`FRACTURE_VALUE`): fracture regions, either the fracture heatmap thresholded at the bundle's
  operating point (infer) or the annotator's discs around fracture points.

The inverse (:func:`label_to_annotation`) takes each landmark's point as the centroid of its value's pixels and
each fracture point as the centroid of one connected fracture region, which gives back the annotation JSON of
``custom_transforms.conventions`` for training. Coordinates follow the project: ``[x, y]`` = (column, row) pixels,
origin at the centre of the top-left pixel; spacing in mm as ``(row, col)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from custom_transforms.conventions import LANDMARK_NAMES, NUM_LANDMARKS

#: Label value of each class: landmarks 1..16 in the conventions' order, then the fracture class.
LANDMARK_VALUES: dict[str, int] = {name: i + 1 for i, name in enumerate(LANDMARK_NAMES)}
FRACTURE_LABEL = "fracture"
FRACTURE_VALUE = NUM_LANDMARKS + 1
LABELS: dict[str, int] = {**LANDMARK_VALUES, FRACTURE_LABEL: FRACTURE_VALUE}

#: Default landmark disc radius: large enough to see and drag in a viewer, small enough that discs of neighbouring
#: landmarks (the two symphysis points are about 3 cm apart) do not touch.
LANDMARK_RADIUS_MM = 3.0
#: Radius in pixels used when the image has no pixel spacing.
LANDMARK_RADIUS_PX = 6.0


def _radii_px(spacing_mm: Sequence[float] | None, radius_mm: float, radius_px: float) -> tuple[float, float]:
    """Disc semi-axes ``(rows, cols)`` in pixels: ``radius_mm`` honouring anisotropic spacing, else ``radius_px``."""
    if spacing_mm is None:
        return float(radius_px), float(radius_px)
    dy, dx = (float(s) for s in spacing_mm)
    if not (dy > 0 and dx > 0):
        raise ValueError(f"spacing_mm must be two positive (row, col) values, got {spacing_mm}.")
    # at least one pixel each side, so that every disc covers its centre's neighbourhood
    return max(radius_mm / dy, 1.0), max(radius_mm / dx, 1.0)


def draw_discs(
    label: np.ndarray, points: np.ndarray, values: Sequence[int], radii_px: tuple[float, float]
) -> np.ndarray:
    """Paint an elliptical disc of ``values[i]`` around each ``points[i]`` (``[x, y]``) into ``label`` (in place).

    Args:
        label: ``(H, W)`` integer array.
        points: ``(N, 2)`` ``[x, y]`` pixel coordinates.
        values: ``N`` label values.
        radii_px: semi-axes ``(rows, cols)`` in pixels.
    """
    ry, rx = radii_px
    height, width = label.shape
    for (x, y), value in zip(np.asarray(points, dtype=np.float64), values):
        r0, r1 = max(int(np.floor(y - ry)), 0), min(int(np.ceil(y + ry)), height - 1)
        c0, c1 = max(int(np.floor(x - rx)), 0), min(int(np.ceil(x + rx)), width - 1)
        if r0 > r1 or c0 > c1:
            continue
        rows = np.arange(r0, r1 + 1, dtype=np.float64)[:, None]
        cols = np.arange(c0, c1 + 1, dtype=np.float64)[None, :]
        inside = ((rows - y) / ry) ** 2 + ((cols - x) / rx) ** 2 <= 1.0
        label[r0 : r1 + 1, c0 : c1 + 1][inside] = value
    return label


def landmarks_to_label(
    landmarks: np.ndarray,
    shape_hw: Sequence[int],
    spacing_mm: Sequence[float] | None = None,
    radius_mm: float = LANDMARK_RADIUS_MM,
    radius_px: float = LANDMARK_RADIUS_PX,
) -> np.ndarray:
    """The landmark label image: disc ``i + 1`` around landmark ``i``.

    Args:
        landmarks: ``(16, 2)`` ``[x, y]`` in the order of ``LANDMARK_NAMES``.
        shape_hw: ``(H, W)`` of the radiograph.
        spacing_mm: ``(row, col)`` pixel spacing, or None to use ``radius_px``.
        radius_mm: disc radius in mm.
        radius_px: disc radius in pixels when the spacing is unknown.

    Returns:
        ``(H, W)`` uint8 label image.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape ({NUM_LANDMARKS}, 2), got {landmarks.shape}.")
    label = np.zeros(tuple(int(s) for s in shape_hw), dtype=np.uint8)
    return draw_discs(label, landmarks, list(LANDMARK_VALUES.values()), _radii_px(spacing_mm, radius_mm, radius_px))


def fracture_points_to_label(
    fractures: np.ndarray,
    shape_hw: Sequence[int],
    spacing_mm: Sequence[float] | None,
    radius_mm: float,
    radius_px: float,
) -> np.ndarray:
    """Discs of :data:`FRACTURE_VALUE` around fracture points ``(K, 2)`` ``[x, y]`` (an annotator's drawing)."""
    label = np.zeros(tuple(int(s) for s in shape_hw), dtype=np.uint8)
    points = np.asarray(fractures, dtype=np.float64).reshape(-1, 2)
    return draw_discs(label, points, [FRACTURE_VALUE] * len(points), _radii_px(spacing_mm, radius_mm, radius_px))


def heatmap_to_label(probability: np.ndarray, threshold: float) -> np.ndarray:
    """The fracture label image: :data:`FRACTURE_VALUE` where the fracture probability is at least ``threshold``.

    Args:
        probability: ``(H, W)`` (or ``(1, H, W)``) heatmap probabilities on the radiograph's grid.
        threshold: the operating point.
    """
    probability = np.asarray(probability)
    if probability.ndim == 3 and probability.shape[0] == 1:
        probability = probability[0]
    if probability.ndim != 2:
        raise ValueError(f"expected a (H, W) heatmap, got shape {probability.shape}.")
    return np.where(probability >= threshold, FRACTURE_VALUE, 0).astype(np.uint8)


def label_to_annotation(label: np.ndarray, source: str = "label") -> dict:
    """Landmarks and fracture points from a label image (the inverse of the drawing functions).

    Args:
        label: ``(H, W)`` (or ``(1, H, W)``) integer label image.
        source: the label's file name, for the error messages.

    Returns:
        ``{"landmarks": {name: [x, y]}, "fractures": [[x, y], ...]}``: each landmark at the centroid of its
        value's pixels, one fracture point at the centroid of each 8-connected fracture region.

    Raises:
        ValueError: a landmark is absent from the label, or the label holds values that are no class.
    """
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 2:
        raise ValueError(f"{source}: expected a 2D label image (rows, columns), got shape {label.shape}.")
    label = np.rint(label).astype(np.int64)
    unknown = sorted(set(np.unique(label).tolist()) - set(LABELS.values()) - {0})
    if unknown:
        raise ValueError(
            f"{source}: label values {unknown} are no class; expected 0 (background), 1-{NUM_LANDMARKS} "
            f"(landmarks in the order {', '.join(LANDMARK_NAMES)}) and {FRACTURE_VALUE} (fracture)."
        )
    present = np.bincount(label.ravel(), minlength=FRACTURE_VALUE + 1)
    missing = [name for name, value in LANDMARK_VALUES.items() if present[value] == 0]
    if missing:
        raise ValueError(f"{source}: landmark(s) {', '.join(missing)} missing (no pixel with their label value).")

    rows, cols = np.indices(label.shape)
    index = list(LANDMARK_VALUES.values())
    xs = ndimage.mean(cols, labels=label, index=index)
    ys = ndimage.mean(rows, labels=label, index=index)
    landmarks = {name: [float(x), float(y)] for name, x, y in zip(LANDMARK_VALUES, xs, ys)}

    regions, count = ndimage.label(label == FRACTURE_VALUE, structure=np.ones((3, 3), dtype=bool))
    fractures = []
    if count:
        ids = list(range(1, count + 1))
        fx = ndimage.mean(cols, labels=regions, index=ids)
        fy = ndimage.mean(rows, labels=regions, index=ids)
        fractures = [[float(x), float(y)] for x, y in zip(fx, fy)]
    return {"landmarks": landmarks, "fractures": fractures}

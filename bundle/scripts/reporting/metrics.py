"""Evaluation metrics of the paper (§4, "Evaluation Metrics").

Classification
    The image score is the maximum of the fracture heatmap (probabilities). AUC and AP are computed
    with scikit-learn (``roc_auc_score``, ``average_precision_score``) against the image-level label.

Localisation: the paper's *modified FROC*
    A fracture point is *recalled* at threshold ``t`` when the heatmap at its pixel is ``>= t``.
    Pixels farther than ``radius_mm`` (20 mm, the paper's 2 cm) from every fracture point of the image
    are *negative*; the *false-positive ratio* of an image is the share of its negative pixels whose
    heatmap is ``>= t``. Pixels within ``radius_mm`` of a fracture point are the fracture's ambiguous
    extent and are excluded. The curve reports fracture recall (over all fracture points of all
    images) against the FP ratio averaged over images (every image counts, fractured or not).

    Recall only changes at the heatmap values of fracture points and the FP ratio never increases with
    ``t``, so the best recall at a given FP ratio is attained at one of those values; evaluating the
    curve there is exact, with no threshold grid.

    Recall per group of fractures (e.g. per fracture kind or site, :meth:`FROCCurve.recall_by_group`) is
    read at the whole curve's operating point: the threshold that gives the reported overall recall at
    that FP ratio, so that the groups' recalled fractures add up to the overall recall.

Points are ``[x, y]`` (column, row) pixels of the heatmap's grid, spacing ``(row, col)`` mm
(``custom_transforms.conventions``). A point's heatmap value is read at its nearest pixel; a point
outside the heatmap cannot be recalled (it counts as a miss).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "image_scores",
    "classification_metrics",
    "negative_region",
    "point_values",
    "FROCAccumulator",
    "FROCCurve",
    "modified_froc",
]


def image_scores(heatmaps: np.ndarray) -> np.ndarray:
    """Image-level fracture probability: the maximum of each heatmap (paper §4).

    Args:
        heatmaps: probabilities, shape ``(N, ...)``.
    """
    heatmaps = np.asarray(heatmaps)
    return heatmaps.reshape(heatmaps.shape[0], -1).max(axis=1)


def classification_metrics(scores: Sequence[float], labels: Sequence[int]) -> dict[str, float]:
    """AUC and AP of image scores against 0/1 labels; ``nan`` (with a warning) when one class is missing.

    Args:
        scores: one score per image, higher = more likely fractured.
        labels: image-level labels, 0 or 1.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(int)
    if scores.shape != labels.shape:
        raise ValueError(f"classification_metrics: {scores.shape[0]} scores but {labels.shape[0]} labels.")
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError(f"classification_metrics: labels must be 0/1, got {sorted(set(labels.tolist()))}.")
    if len(np.unique(labels)) < 2:
        warnings.warn("AUC/AP undefined: the labels contain a single class.", stacklevel=2)
        return {"auc": float("nan"), "ap": float("nan")}
    return {"auc": float(roc_auc_score(labels, scores)), "ap": float(average_precision_score(labels, scores))}


def negative_region(
    shape: Sequence[int], points: np.ndarray, spacing_mm: Sequence[float], radius_mm: float
) -> np.ndarray:
    """Boolean mask of pixels farther than ``radius_mm`` from every point (the FROC's negative area).

    Args:
        shape: ``(H, W)`` of the heatmap.
        points: ``(K, 2)`` ``[x, y]`` pixel coordinates on that grid (K may be 0).
        spacing_mm: ``(row, col)`` pixel spacing in mm of that grid.
        radius_mm: the excluded band around each point, in mm.
    """
    h, w = int(shape[0]), int(shape[1])
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    negative = np.ones((h, w), dtype=bool)
    if points.shape[0] == 0:
        return negative
    rows = np.arange(h, dtype=np.float64)[:, None]
    cols = np.arange(w, dtype=np.float64)[None, :]
    dy_mm, dx_mm = float(spacing_mm[0]), float(spacing_mm[1])
    for x, y in points:
        dist2 = ((cols - x) * dx_mm) ** 2 + ((rows - y) * dy_mm) ** 2
        negative &= dist2 > radius_mm**2
    return negative


def point_values(heatmap: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Heatmap value at each point's nearest pixel; ``-inf`` for points outside the grid (never recalled).

    Args:
        heatmap: ``(H, W)``.
        points: ``(K, 2)`` ``[x, y]`` pixel coordinates.
    """
    heatmap = np.asarray(heatmap)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    cols = np.rint(points[:, 0]).astype(np.int64)
    rows = np.rint(points[:, 1]).astype(np.int64)
    inside = (rows >= 0) & (rows < heatmap.shape[0]) & (cols >= 0) & (cols < heatmap.shape[1])
    values = np.full(points.shape[0], -np.inf)
    values[inside] = heatmap[rows[inside], cols[inside]]
    return values


@dataclass
class FROCCurve:
    """The modified FROC evaluated at every fracture-point value (descending thresholds).

    ``values`` holds the heatmap value of every fracture point in the order the points were added (``-inf``
    outside the grid) and ``image_index`` the image (order of addition) each belongs to.
    """

    thresholds: np.ndarray
    recall: np.ndarray
    fp_ratio: np.ndarray
    num_fractures: int
    num_images: int
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    image_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def threshold_at(self, max_fp_ratio: float) -> float:
        """The lowest threshold whose mean FP ratio is ``<= max_fp_ratio`` (``inf`` when none)."""
        ok = self.fp_ratio <= max_fp_ratio
        return float(self.thresholds[ok].min()) if ok.any() else float("inf")

    def recalled_at(self, max_fp_ratio: float) -> np.ndarray:
        """Which fracture points (order of ``values``) are recalled at the best recall whose mean FP ratio is
        ``<= max_fp_ratio``: heatmap value ``>=`` :meth:`threshold_at` (recall and FP ratio both fall with the
        threshold, so the lowest admissible threshold gives the best recall)."""
        return np.asarray(self.values) >= self.threshold_at(max_fp_ratio)

    def recall_at(self, max_fp_ratio: float) -> float:
        """Best fracture recall whose mean FP ratio is ``<= max_fp_ratio`` (0 when none; nan without fractures)."""
        if self.num_fractures == 0:
            return float("nan")
        return float(self.recalled_at(max_fp_ratio).mean())

    def recalled_per_image(self, max_fp_ratio: float) -> np.ndarray:
        """Number of recalled fracture points of each image (order of addition) at :meth:`recall_at`'s point."""
        hit = self.recalled_at(max_fp_ratio)
        return np.bincount(np.asarray(self.image_index)[hit], minlength=self.num_images)

    def recall_by_group(self, max_fp_ratio: float, groups: Sequence[Any]) -> dict[Any, dict[str, float]]:
        """Recall of each group of fracture points at :meth:`recall_at`'s operating point (one threshold for all).

        Args:
            max_fp_ratio: the FP area ratio, as in :meth:`recall_at`.
            groups: one label per fracture point (order of ``values``); ``None`` leaves a point out of every group.

        Returns:
            ``{label: {"num_fractures": n, "recall": r}}`` for the labels present (sorted), none for empty groups.
        """
        groups = list(groups)
        if len(groups) != self.num_fractures:
            raise ValueError(f"recall_by_group: {len(groups)} group labels for {self.num_fractures} fracture points.")
        hit = self.recalled_at(max_fp_ratio)
        out: dict[Any, dict[str, float]] = {}
        for label in sorted({g for g in groups if g is not None}, key=str):
            member = np.array([g == label for g in groups])
            out[label] = {"num_fractures": int(member.sum()), "recall": float(hit[member].mean())}
        return out


class FROCAccumulator:
    """Collects images one at a time and computes the modified FROC exactly.

    Only the sorted negative-pixel values and the fracture-point values of each image are kept.

    Args:
        radius_mm: band around each fracture point excluded from the negative area (paper: 20 mm).
    """

    def __init__(self, radius_mm: float = 20.0) -> None:
        if radius_mm < 0:
            raise ValueError(f"radius_mm must be >= 0, got {radius_mm}.")
        self.radius_mm = float(radius_mm)
        self.reset()

    def reset(self) -> None:
        self._negatives: list[np.ndarray] = []
        self._point_values: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._negatives)

    def add(self, heatmap: np.ndarray, points: np.ndarray, spacing_mm: Sequence[float]) -> None:
        """Add one image.

        Args:
            heatmap: ``(H, W)`` probabilities (a leading singleton channel is accepted).
            points: ``(K, 2)`` fracture points ``[x, y]`` on the heatmap's grid.
            spacing_mm: ``(row, col)`` spacing of that grid in mm.
        """
        heatmap = np.asarray(heatmap, dtype=np.float64)
        if heatmap.ndim == 3 and heatmap.shape[0] == 1:
            heatmap = heatmap[0]
        if heatmap.ndim != 2:
            raise ValueError(f"FROCAccumulator.add: heatmap must be (H, W), got shape {heatmap.shape}.")
        negative = negative_region(heatmap.shape, points, spacing_mm, self.radius_mm)
        self._negatives.append(np.sort(heatmap[negative]))
        self._point_values.append(point_values(heatmap, points))

    def fp_ratio(self, thresholds: np.ndarray) -> np.ndarray:
        """Mean over images of the share of negative pixels with heatmap ``>= t``, for each threshold."""
        thresholds = np.asarray(thresholds, dtype=np.float64)
        total = np.zeros(thresholds.shape, dtype=np.float64)
        for values in self._negatives:
            if values.size:  # an image whose whole grid is within the band has no negative area: FP ratio 0
                total += (values.size - np.searchsorted(values, thresholds, side="left")) / values.size
        return total / max(len(self._negatives), 1)

    def curve(self) -> FROCCurve:
        values = np.concatenate(self._point_values) if self._point_values else np.zeros(0)
        finite = np.unique(values[np.isfinite(values)])[::-1]
        thresholds = np.concatenate([[np.inf], finite])
        recall = (
            (values[None, :] >= thresholds[:, None]).sum(axis=1) / values.size
            if values.size
            else np.zeros(thresholds.shape)
        )
        sizes = [v.size for v in self._point_values]
        return FROCCurve(
            thresholds=thresholds,
            recall=recall,
            fp_ratio=self.fp_ratio(thresholds),
            num_fractures=int(values.size),
            num_images=len(self._negatives),
            values=values,
            image_index=np.repeat(np.arange(len(sizes), dtype=np.int64), sizes),
        )


def modified_froc(
    heatmaps: Sequence[np.ndarray],
    points: Sequence[np.ndarray],
    spacings_mm: Sequence[Sequence[float]],
    radius_mm: float = 20.0,
) -> FROCCurve:
    """The paper's modified FROC over a set of images (see the module docstring).

    Args:
        heatmaps: one ``(H, W)`` probability map per image.
        points: one ``(K, 2)`` array of fracture points ``[x, y]`` per image (K may be 0).
        spacings_mm: one ``(row, col)`` spacing per image.
        radius_mm: excluded band around fracture points (paper: 20 mm).
    """
    if not len(heatmaps) == len(points) == len(spacings_mm):
        raise ValueError(
            f"modified_froc: {len(heatmaps)} heatmaps, {len(points)} point sets, {len(spacings_mm)} spacings."
        )
    acc = FROCAccumulator(radius_mm)
    for h, p, s in zip(heatmaps, points, spacings_mm):
        acc.add(h, p, s)
    return acc.curve()

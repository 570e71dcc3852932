"""Landmark detection metrics: mean radial error (MRE) and success detection rate (SDR).

The radial error of a landmark is the Euclidean distance in mm between its detected and its true
position, with pixels converted by the image's ``(row, col)`` spacing (x by the column spacing, y by
the row spacing). MRE is the mean of radial errors (with their standard deviation); SDR at ``r`` mm is
the percentage of landmarks whose radial error is ``<= r``. Both are reported over all landmarks of all
images and per landmark. ``write_landmark_metrics`` writes them as ``landmark_metrics.json`` and the
errors as a per-case CSV, like the bundle's other evaluation outputs.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from custom_transforms.conventions import LANDMARK_NAMES

__all__ = [
    "SDR_THRESHOLDS_MM",
    "radial_errors_mm",
    "landmark_summary",
    "write_landmark_metrics",
    "MeanRadialErrorMetric",
    "SuccessDetectionRateMetric",
]

#: SDR radii reported by default (mm), as in cephalometric landmark challenges.
SDR_THRESHOLDS_MM: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)


def radial_errors_mm(pred, true, spacing_mm=None) -> np.ndarray:
    """Radial errors ``(..., N)`` in mm.

    Args:
        pred: ``(..., N, 2)`` detected ``[x, y]`` (pixels, or mm when ``spacing_mm`` is ``None``).
        true: ``(..., N, 2)`` true ``[x, y]`` in the same units.
        spacing_mm: ``(row, col)`` spacing, or ``(..., 2)`` one per image; ``None`` when already in mm.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred and true must both be (..., N, 2), got {pred.shape} and {true.shape}.")
    diff = pred - true
    if spacing_mm is not None:
        spacing = np.asarray(spacing_mm, dtype=np.float64)
        if spacing.shape[-1] != 2:
            raise ValueError(f"spacing_mm must be (row, col), got shape {spacing.shape}.")
        per_axis = spacing[..., ::-1]  # (col, row) = (dx, dy) for [x, y]
        diff = diff * np.expand_dims(per_axis, axis=-2)
    return np.linalg.norm(diff, axis=-1)


def _stats(errors: np.ndarray, thresholds: Sequence[float]) -> dict:
    errors = errors[np.isfinite(errors)]
    out = {
        "count": int(errors.size),
        "mre_mm": float(errors.mean()) if errors.size else float("nan"),
        "std_mm": float(errors.std()) if errors.size else float("nan"),
        "median_mm": float(np.median(errors)) if errors.size else float("nan"),
        "max_mm": float(errors.max()) if errors.size else float("nan"),
    }
    for r in thresholds:
        out[f"sdr_{r:g}mm"] = float(100.0 * (errors <= r).mean()) if errors.size else float("nan")
    return out


def landmark_summary(
    errors_mm, names: Sequence[str] = LANDMARK_NAMES, thresholds: Sequence[float] = SDR_THRESHOLDS_MM
) -> dict:
    """MRE, its std, median, max and SDR (in %) overall and per landmark.

    Args:
        errors_mm: ``(images, N)`` radial errors in mm (``nan`` entries are ignored).
        names: the ``N`` landmark names.
        thresholds: SDR radii in mm.

    Returns:
        ``{"overall": {...}, "per_landmark": {name: {...}}, "images": count}``.
    """
    errors = np.asarray(errors_mm, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[1] != len(names):
        raise ValueError(f"errors must be (images, {len(names)}), got {errors.shape}.")
    return {
        "images": int(errors.shape[0]),
        "overall": _stats(errors.reshape(-1), thresholds),
        "per_landmark": {name: _stats(errors[:, i], thresholds) for i, name in enumerate(names)},
    }


def write_landmark_metrics(
    errors_mm,
    output_dir: str | os.PathLike,
    case_ids: Sequence[str] | None = None,
    names: Sequence[str] = LANDMARK_NAMES,
    thresholds: Sequence[float] = SDR_THRESHOLDS_MM,
    extra: dict | None = None,
) -> dict:
    """Write ``landmark_metrics.json`` (summary) and ``landmark_errors.csv`` (one row per image) to ``output_dir``.

    Args:
        errors_mm: ``(images, N)`` radial errors in mm.
        output_dir: folder (created).
        case_ids: one identifier per image for the CSV (its index when ``None``).
        names: landmark names (CSV columns).
        thresholds: SDR radii in mm.
        extra: further entries merged into the JSON (e.g. the command, the data).

    Returns:
        The summary written to JSON.
    """
    errors = np.asarray(errors_mm, dtype=np.float64)
    summary = landmark_summary(errors, names, thresholds)
    if extra:
        summary.update(extra)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "landmark_metrics.json").write_text(json.dumps(summary, indent=2))
    ids = list(case_ids) if case_ids is not None else [str(i) for i in range(len(errors))]
    if len(ids) != len(errors):
        raise ValueError(f"{len(ids)} case ids for {len(errors)} images.")
    with open(out / "landmark_errors.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "mre_mm", *names])
        for case, row in zip(ids, errors):
            writer.writerow([case, f"{np.nanmean(row):.4f}", *(f"{v:.4f}" for v in row)])
    return summary


class MeanRadialErrorMetric(CumulativeIterationMetric):
    """MRE in mm for Ignite/MONAI evaluators: ``y_pred`` and ``y`` are ``(B, N, 2)`` positions in mm.

    ``aggregate()`` returns the mean over every landmark of every image seen.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("MeanRadialErrorMetric needs the true positions y.")
        return torch.linalg.vector_norm(torch.as_tensor(y_pred).float() - torch.as_tensor(y).float(), dim=-1)

    def aggregate(self) -> torch.Tensor:
        errors = self.get_buffer()
        if not isinstance(errors, torch.Tensor):
            raise ValueError("MeanRadialErrorMetric has no data to aggregate.")
        return errors.float().mean()


class SuccessDetectionRateMetric(MeanRadialErrorMetric):
    """Percentage of landmarks within ``radius_mm`` of the truth (same inputs as :class:`MeanRadialErrorMetric`).

    Args:
        radius_mm: success radius.
    """

    def __init__(self, radius_mm: float = 4.0) -> None:
        super().__init__()
        self.radius_mm = float(radius_mm)

    def aggregate(self) -> torch.Tensor:
        errors = self.get_buffer()
        if not isinstance(errors, torch.Tensor):
            raise ValueError("SuccessDetectionRateMetric has no data to aggregate.")
        return 100.0 * (errors <= self.radius_mm).float().mean()

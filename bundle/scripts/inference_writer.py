"""Writes the inference results of each image to ``output_dir/<image name>/``.

- ``heatmap.nii.gz``: fracture probabilities on the original image grid. NIfTI axis 0 is x (column),
  axis 1 is y (row), and the affine is ``diag(col_mm, row_mm, 1)``: voxel ``(i, j)`` is the point
  ``[x=i, y=j]`` of the project's convention, in mm from the centre of the top-left pixel.
- ``overlay.png``: the radiograph with the heatmap and the peaks.
- ``report.json``: ``fracture_probability`` (the image score), the operating ``threshold``,
  ``positive``, ``peaks`` (local maxima of the heatmap at or above the threshold, strongest first,
  each in original pixels ``[x, y]`` and in mm), ``max_location`` (the strongest point, always),
  the image's spacing, and the ``landmarks`` used with their source.

Peaks are found on the network's ROI-space heatmap (its native resolution) and mapped to original
pixels exactly with the ROI's homogeneous ``roi_to_original`` matrix (``[x, y, 1]`` column vectors).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from custom_transforms import ROIToOriginal
from custom_transforms.conventions import LANDMARK_NAMES

from .evaluation_writer import case_name, engine_items, to_numpy
from .plots import save_overlay

__all__ = ["FractureReportWriter", "find_peaks", "roi_to_original_points", "write_heatmap_nifti"]

logger = logging.getLogger(__name__)


def roi_to_original_points(points: np.ndarray, roi_to_original: np.ndarray) -> np.ndarray:
    """Map ``(P, 2)`` ROI pixels ``[x, y]`` to original pixels with a (3, 3) homogeneous matrix."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    matrix = np.asarray(roi_to_original, dtype=np.float64).reshape(3, 3)
    homogeneous = np.concatenate([points, np.ones((points.shape[0], 1))], axis=1) @ matrix.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def find_peaks(heatmap: np.ndarray, threshold: float, min_distance: int = 3, max_peaks: int = 10) -> np.ndarray:
    """Local maxima ``[x, y]`` of a (h, w) heatmap at or above ``threshold``, strongest first.

    Args:
        heatmap: probabilities (h, w).
        threshold: lowest value a peak may have.
        min_distance: minimal separation of peaks in pixels.
        max_peaks: at most this many.
    """
    from skimage.feature import peak_local_max

    rc = peak_local_max(
        np.asarray(heatmap, dtype=np.float64), min_distance=max(int(min_distance), 1), threshold_abs=threshold,
        exclude_border=False, num_peaks=max_peaks,
    )
    rc = rc[heatmap[rc[:, 0], rc[:, 1]] >= threshold] if len(rc) else rc
    return rc[:, ::-1].astype(np.float64).reshape(-1, 2)


def write_heatmap_nifti(heatmap: np.ndarray, spacing_mm: np.ndarray, path: str | os.PathLike) -> str:
    """Write a (H, W) heatmap as NIfTI with axis 0 = x (column), axis 1 = y (row), spacing in mm."""
    import nibabel as nib

    affine = np.diag([float(spacing_mm[1]), float(spacing_mm[0]), 1.0, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(heatmap, dtype=np.float32).T), affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return str(path)


class FractureReportWriter:
    """Ignite handler writing heatmap NIfTI, overlay PNG and ``report.json`` per inferred image.

    Args:
        output_dir: root folder; each image gets ``output_dir/<image name>/``.
        threshold: operating threshold on the image score (and the peaks' minimum probability).
        pred_key: ROI-space heatmap probabilities (1, h, w).
        original_pred_key: the heatmap on the original grid (1, H, W), when postprocessing made it; otherwise the
            writer puts ``pred`` back with ``custom_transforms.ROIToOriginal`` (using ``roi_size_key``).
        score_key: the image score (computed as the ROI heatmap maximum when absent).
        image_key: the original image (1, H, W) whose meta-data carry ``spacing_mm`` and the file name.
        roi_to_original_key: (3, 3) homogeneous ROI -> original pixel matrix.
        landmarks_key: (16, 2) landmarks used.
        landmark_source: what the report says about where the landmarks came from.
        peak_min_distance_mm: minimal separation of peaks in mm (converted to ROI pixels).
        max_peaks: how many peaks at most.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        threshold: float = 0.5,
        pred_key: str = "pred",
        original_pred_key: str = "pred_original",
        score_key: str = "score",
        image_key: str = "image",
        roi_to_original_key: str = "roi_to_original",
        roi_size_key: str = "roi_size",
        landmarks_key: str = "landmarks",
        landmark_source: str = "annotation",
        peak_min_distance_mm: float = 10.0,
        max_peaks: int = 10,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.threshold = float(threshold)
        self.pred_key, self.original_pred_key, self.score_key, self.image_key = (
            pred_key, original_pred_key, score_key, image_key,
        )
        self.roi_to_original_key, self.roi_size_key, self.landmarks_key = roi_to_original_key, roi_size_key, landmarks_key
        self.landmark_source = landmark_source
        self.peak_min_distance_mm, self.max_peaks = float(peak_min_distance_mm), int(max_peaks)
        self.reports: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_batch)

    def _write_batch(self, engine: Engine) -> None:
        for item in engine_items(engine):
            self.write(item)

    def write(self, item: dict) -> dict[str, Any]:
        """Write one image's outputs; returns its report."""
        for key in (self.pred_key, self.image_key, self.roi_to_original_key):
            if key not in item:
                raise KeyError(f"FractureReportWriter: the inference output lacks '{key}' (has {sorted(item)}).")
        image = item[self.image_key]
        meta = getattr(image, "meta", {}) or {}
        if "spacing_mm" not in meta:
            raise KeyError(f"FractureReportWriter: image meta-data lack 'spacing_mm' ({meta.get('filename_or_obj')}).")
        spacing = to_numpy(meta["spacing_mm"]).astype(np.float64).ravel()
        name = case_name(item, self.image_key, fallback=f"image{len(self.reports):04d}")
        out = self.output_dir / name
        out.mkdir(parents=True, exist_ok=True)

        roi_heatmap = to_numpy(item[self.pred_key]).astype(np.float64)
        roi_heatmap = roi_heatmap[0] if roi_heatmap.ndim == 3 else roi_heatmap
        if self.original_pred_key in item:
            original = item[self.original_pred_key]
        else:
            roi_size = item.get(self.roi_size_key)
            roi_size = None if roi_size is None else [int(v) for v in to_numpy(roi_size).ravel()]
            pred = torch.as_tensor(to_numpy(item[self.pred_key]))  # on the CPU, wherever the network ran
            original = ROIToOriginal()(pred, to_numpy(item[self.roi_to_original_key]), image.shape[-2:], roi_size)
        original = to_numpy(original).astype(np.float32)
        original = original[0] if original.ndim == 3 else original
        score = float(to_numpy(item[self.score_key]).ravel()[0]) if self.score_key in item else float(roi_heatmap.max())
        matrix = to_numpy(item[self.roi_to_original_key]).astype(np.float64).reshape(3, 3)

        def located(xy_roi: np.ndarray) -> list[dict[str, Any]]:
            xy = roi_to_original_points(xy_roi, matrix)
            values = roi_heatmap[np.rint(xy_roi[:, 1]).astype(int), np.rint(xy_roi[:, 0]).astype(int)]
            return [
                {"x": float(x), "y": float(y), "x_mm": float(x * spacing[1]), "y_mm": float(y * spacing[0]),
                 "probability": float(v)}
                for (x, y), v in zip(xy, values)
            ]

        # ROI pixel size in mm: lengths of the ROI's unit steps in original pixels, times the original spacing
        roi_pixel_mm = 0.5 * (np.hypot(*matrix[:2, 0]) * spacing[1] + np.hypot(*matrix[:2, 1]) * spacing[0])
        min_distance = max(int(round(self.peak_min_distance_mm / roi_pixel_mm)), 1)
        peaks = located(find_peaks(roi_heatmap, self.threshold, min_distance, self.max_peaks))
        r, c = np.unravel_index(int(np.argmax(roi_heatmap)), roi_heatmap.shape)
        landmarks = to_numpy(item[self.landmarks_key]).reshape(-1, 2) if self.landmarks_key in item else None
        report = {
            "image": str(meta.get("filename_or_obj", "")),
            "fracture_probability": score,
            "threshold": self.threshold,
            "positive": bool(score >= self.threshold),
            "peaks": peaks,
            "max_location": located(np.array([[float(c), float(r)]]))[0],
            "spacing_mm": [float(s) for s in spacing],
            "spacing_source": str(meta.get("spacing_source", "")),
            "coordinates": "[x, y] = (column, row) pixels of the original image from the centre of the top-left "
            "pixel; mm = pixels x spacing",
            "landmarks": (
                {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, landmarks)} if landmarks is not None else None
            ),
            "landmark_source": self.landmark_source,
            "heatmap_nifti": write_heatmap_nifti(original, spacing, out / "heatmap.nii.gz"),
            "overlay_png": save_overlay(
                to_numpy(image), original, out / "overlay.png",
                peaks=np.array([[p["x"], p["y"]] for p in peaks]).reshape(-1, 2),
                title=f"{name}: fracture probability {score:.3f} ({'positive' if score >= self.threshold else 'negative'}"
                f" at {self.threshold:g}) - research use, not for diagnosis",
                threshold=self.threshold,
            ),
        }
        with open(out / "report.json", "w") as f:
            json.dump(report, f, indent=2)
        self.reports.append(report)
        logger.info(f"{name}: fracture probability {score:.4f} -> {out / 'report.json'}")
        return report

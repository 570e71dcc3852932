"""Writes the inference results of each image to ``output_dir/<image name>/``, and a summary of the run.

``<image name>`` is the file name without its extension; when two inputs of a run share it (``a/pelvis.dcm``,
``b/pelvis.dcm``) a short hash of the full path is appended (:func:`custom_transforms.files.unique_image_stems`).

- ``heatmap.nii.gz``: fracture probabilities on the original image grid. NIfTI axis 0 is x (column),
  axis 1 is y (row), with the radiograph affine of ``custom_transforms.conventions.radiograph_nifti_affine``
  (``diag(-col_mm, -row_mm, 1, 1)``, ITK's placement of a radiograph): ITK-based viewers overlay it on the
  radiograph, and ITK or nibabel (after reorienting to LPS) read it back on the image's pixels.
- ``overlay.png``: the radiograph with the heatmap and the peaks.
- ``report.json``: ``status`` ``"ok"``, ``fracture_probability`` (the image score), the operating
  ``threshold``, ``positive``, ``peaks`` (local maxima of the heatmap at or above the threshold, strongest
  first, each in original pixels ``[x, y]`` and in mm), ``max_location`` (the strongest point, always), the
  image's spacing, the ``landmarks`` used and where they came from: ``landmark_source`` (``"annotation"`` or
  ``"detector"``, or what the data's ``landmark_source`` says), ``landmarks_detected`` and, for detected
  landmarks, ``landmark_plausibility``, ``landmark_confidence`` and ``corrected_by_shape_model`` by name
  (``null`` for annotated ones); ``tps_warp``: the warp between the mirrored ROI and the ROI (``"tps"``, or the
  smoother warp a folding spline fell back to, see :mod:`custom_transforms.tps`; ``null`` when the data do not
  say).

An image whose preprocessing failed (:meth:`FractureReportWriter.write_failure`, called by
:class:`~scripts.failure_tolerant_dataset.FailureTolerantDataset`) gets a ``report.json`` with its ``status``
(``not_a_pelvis``, ``unreadable``, ... see :mod:`.inference_failures`) and the ``error`` naming the file, and
no probability. At the end of the run ``output_dir/inference_summary.json`` lists every image with its status,
and one log line counts them.

Peaks are found on the network's ROI-space heatmap (its native resolution) and mapped to original pixels
exactly with the ROI's homogeneous ``roi_to_original`` matrix (``[x, y, 1]`` column vectors).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from custom_transforms import ROIToOriginal, roi_points_to_original
from custom_transforms.conventions import LANDMARK_NAMES, radiograph_nifti_affine
from custom_transforms.files import unique_image_stems

from scripts.reporting.evaluation_writer import case_name, engine_items, to_numpy
from scripts.reporting.inference_failures import describe_failure
from scripts.reporting.plots import save_heatmap_overlay

__all__ = [
    "FractureReportWriter", "SUMMARY_FILE", "find_peaks", "landmark_provenance", "tps_warp_name",
    "write_heatmap_nifti",
]

#: The run's summary, in ``output_dir``.
SUMMARY_FILE = "inference_summary.json"
#: Files of a successful report, removed when the image fails in a later run into the same folder.
_RESULT_FILES = ("heatmap.nii.gz", "overlay.png")

logger = logging.getLogger(__name__)



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
    """Write a (H, W) heatmap as NIfTI: axis 0 = x (column), axis 1 = y (row), the radiograph's affine.

    Args:
        heatmap: ``(H, W)`` values on the radiograph's grid.
        spacing_mm: ``(row, col)`` pixel spacing.
        path: the ``.nii.gz`` file.
    """
    import nibabel as nib

    img = nib.Nifti1Image(
        np.ascontiguousarray(np.asarray(heatmap, dtype=np.float32).T), radiograph_nifti_affine(spacing_mm)
    )
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return str(path)



class FractureReportWriter:
    """Ignite handler writing heatmap NIfTI, overlay PNG and ``report.json`` per inferred image, error reports for
    images that failed before the network, and the run's ``inference_summary.json``.

    Args:
        output_dir: root folder; each image gets ``output_dir/<image name>/``.
        threshold: operating threshold on the image score (and the peaks' minimum probability).
        pred_key: ROI-space heatmap probabilities (1, h, w).
        original_pred_key: the heatmap on the original grid (1, H, W), when postprocessing made it; otherwise the
            writer puts ``pred`` back with ``custom_transforms.ROIToOriginal`` (using ``roi_size_key``).
        score_key: the image score (computed as the ROI heatmap maximum when absent).
        image_key: the original image (1, H, W) whose meta-data carry ``spacing_mm`` and the file name.
        roi_to_original_key: (3, 3) homogeneous ROI -> original pixel matrix.
        roi_size_key: the ROI's (h, w), for the back-projection.
        landmarks_key: (16, 2) landmarks used.
        peak_min_distance_mm: minimal separation of peaks in mm (converted to ROI pixels).
        max_peaks: how many peaks at most.
        items: the run's input items (dicts with ``image``); when given, the summary lists each of them with the
            status of its ``report.json``, also for failures recorded in ``DataLoader`` workers. Otherwise it
            lists what this process wrote.

    Landmark provenance is read from the data (``scripts.landmarks.detector.DetectLandmarksd``'s keys):
    ``landmarks_detected``, ``landmark_confidence`` (16,), ``landmark_corrected`` (16,) and
    ``landmark_plausibility``; a ``landmark_source`` string in the data (e.g. ``"request"`` from MONAI Label)
    overrides the ``"detector"`` / ``"annotation"`` these imply.
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
        peak_min_distance_mm: float = 10.0,
        max_peaks: int = 10,
        items: Sequence[dict] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.threshold = float(threshold)
        self.pred_key, self.original_pred_key, self.score_key, self.image_key = (
            pred_key, original_pred_key, score_key, image_key,
        )
        self.roi_to_original_key, self.roi_size_key = roi_to_original_key, roi_size_key
        self.landmarks_key = landmarks_key
        self.peak_min_distance_mm, self.max_peaks = float(peak_min_distance_mm), int(max_peaks)
        self.items = None if items is None else list(items)
        self._folder_names = (
            {} if self.items is None else unique_image_stems([str(item.get(image_key, "")) for item in self.items])
        )
        self.reports: list[dict[str, Any]] = []
        self._report_files: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_batch)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.write_summary())

    def _write_batch(self, engine: Engine) -> None:
        for item in engine_items(engine):
            try:
                self.write(item)
            except Exception as error:  # one image's report failing must not stop the others
                meta = getattr(item.get(self.image_key), "meta", None) or {}
                self.write_failure({self.image_key: str(meta.get("filename_or_obj", ""))}, error)

    def _folder(self, item: dict) -> Path:
        image = item.get(self.image_key)
        path = (getattr(image, "meta", None) or {}).get("filename_or_obj", image)
        name = self._folder_names.get(os.path.abspath(str(path))) if isinstance(path, (str, os.PathLike)) else None
        return self.output_dir / (name or case_name(item, self.image_key, fallback=f"image{len(self.reports):04d}"))

    def write(self, item: dict) -> dict[str, Any]:
        """Write one image's outputs; returns its report."""
        for key in (self.pred_key, self.image_key, self.roi_to_original_key):
            if key not in item:
                raise KeyError(f"FractureReportWriter: the inference output lacks '{key}' (has {sorted(item)}).")
        image = item[self.image_key]
        meta = getattr(image, "meta", {}) or {}
        # unknown spacing (e.g. a PNG without annotation): pixels only, mm entries null, NIfTI at 1 mm
        spacing = meta.get("spacing_mm")
        spacing = None if spacing is None else to_numpy(spacing).astype(np.float64).ravel()
        out = self._folder(item)
        name = out.name
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
            xy = roi_points_to_original(xy_roi, matrix)
            values = roi_heatmap[np.rint(xy_roi[:, 1]).astype(int), np.rint(xy_roi[:, 0]).astype(int)]
            return [
                {
                    "x": float(x),
                    "y": float(y),
                    "x_mm": None if spacing is None else float(x * spacing[1]),
                    "y_mm": None if spacing is None else float(y * spacing[0]),
                    "probability": float(v),
                }
                for (x, y), v in zip(xy, values)
            ]

        # ROI pixel size in mm: lengths of the ROI's unit steps in original pixels, times the original spacing
        # (with unknown spacing the peak separation is taken in original pixels)
        unit = spacing if spacing is not None else np.ones(2)
        roi_pixel_mm = 0.5 * (np.hypot(*matrix[:2, 0]) * unit[1] + np.hypot(*matrix[:2, 1]) * unit[0])
        min_distance = max(int(round(self.peak_min_distance_mm / roi_pixel_mm)), 1)
        peaks = located(find_peaks(roi_heatmap, self.threshold, min_distance, self.max_peaks))
        r, c = np.unravel_index(int(np.argmax(roi_heatmap)), roi_heatmap.shape)
        landmarks = to_numpy(item[self.landmarks_key]).reshape(-1, 2) if self.landmarks_key in item else None
        report = {
            "image": str(meta.get("filename_or_obj", "")),
            "status": "ok",
            "fracture_probability": score,
            "threshold": self.threshold,
            "positive": bool(score >= self.threshold),
            "peaks": peaks,
            "max_location": located(np.array([[float(c), float(r)]]))[0],
            "spacing_mm": None if spacing is None else [float(s) for s in spacing],
            "spacing_source": str(meta.get("spacing_source", "")),
            "coordinates": "[x, y] = (column, row) pixels of the original image from the centre of the top-left "
            "pixel; mm = pixels x spacing",
            "landmarks": (
                {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, landmarks)} if landmarks is not None else None
            ),
            **landmark_provenance(item),
            "tps_warp": tps_warp_name(item),
            "heatmap_nifti": write_heatmap_nifti(original, spacing, out / "heatmap.nii.gz"),
            "overlay_png": save_heatmap_overlay(
                to_numpy(image),
                original,
                out / "overlay.png",
                peaks=np.array([[p["x"], p["y"]] for p in peaks]).reshape(-1, 2),
                title=f"{name}: fracture probability {score:.3f} "
                      f"({'positive' if score >= self.threshold else 'negative'}"
                f" at {self.threshold:g}) - research use, not for diagnosis",
                threshold=self.threshold,
            ),
        }
        self._save(report, out / "report.json")
        logger.info(f"{name}: fracture probability {score:.4f} -> {out / 'report.json'}")
        return report

    def write_failure(self, item: dict, error: BaseException) -> dict[str, Any]:
        """Write the error report of an image that could not be analysed (no probability), and log a warning.

        Args:
            item: the input item (``image`` = its path).
            error: what its preprocessing raised (see :func:`~.inference_failures.describe_failure`).
        """
        failure = describe_failure(str(item.get(self.image_key, "")), error)
        out = self._folder(item)
        out.mkdir(parents=True, exist_ok=True)
        for stale in _RESULT_FILES:  # a result of an earlier run must not sit beside this error
            (out / stale).unlink(missing_ok=True)
        report = {"image": failure.image, "status": failure.status, "error": failure.error}
        self._save(report, out / "report.json")
        logger.warning(
            f"no fracture report ({failure.status}): {failure.error}",  # the error names the file
            exc_info=error if failure.status == "failed" else None,  # unexpected: keep the traceback
        )
        return report

    def _save(self, report: dict[str, Any], path: Path) -> None:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        self.reports.append(report)
        self._report_files.append(str(path))

    def write_summary(self) -> list[dict[str, Any]]:
        """Write ``inference_summary.json`` (one entry per image) and log the counts; returns the entries."""
        if self.items is not None:
            reports = [self._read_report(item) for item in self.items]
        else:
            reports = [{**report, "_file": file} for report, file in zip(self.reports, self._report_files)]
        entries = []
        for report in reports:
            entry = {"image": report.get("image"), "status": report.get("status", "ok"), "report": report.get("_file")}
            if entry["status"] == "ok":
                summarised = ("fracture_probability", "positive", "landmark_source", "tps_warp")
                entry.update({k: report.get(k) for k in summarised})
            else:
                entry["error"] = report.get("error")
            entries.append(entry)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / SUMMARY_FILE
        with open(path, "w") as f:
            json.dump(entries, f, indent=2)
        counts = Counter(e["status"] for e in entries if e["status"] != "ok")
        reported = sum(e["status"] == "ok" for e in entries)
        line = f"{reported} images reported, {sum(counts.values())} refused"
        if counts:
            line += ": " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        (logger.warning if counts else logger.info)(f"{line} (summary: {path})")
        return entries

    def _read_report(self, item: dict) -> dict[str, Any]:
        """The ``report.json`` this run wrote for ``item`` (status ``missing`` when there is none)."""
        image = str(item.get(self.image_key, ""))
        file = self._folder({self.image_key: image}) / "report.json"
        try:
            report = json.loads(file.read_text())
        except (OSError, ValueError):
            return {"image": image, "status": "missing", "error": f"{image}: no report was written ({file})."}
        if os.path.realpath(str(report.get("image", ""))) != os.path.realpath(image):
            return {
                "image": image,
                "status": "missing",
                "error": f"{image}: {file} is the report of {report.get('image')} (same file name); rename one.",
            }
        return {**report, "_file": str(file)}


def tps_warp_name(item: dict, key: str = "tps_warp") -> str | None:
    """The name of the warp an item's TPS grid was made with (``custom_transforms.tps.TPSGridd``'s ``tps_warp``; a
    collated batch's one-element list unwrapped), or None when the data do not carry it.

    Args:
        item: the inference output merged with its batch.
        key: the key of the warp's name.
    """
    warp = item.get(key)
    if isinstance(warp, (list, tuple)):
        warp = warp[0] if warp else None
    return None if warp is None else str(warp)


def landmark_provenance(item: dict) -> dict[str, Any]:
    """Where an item's landmarks came from, for its report (see :class:`FractureReportWriter`).

    Args:
        item: the inference output merged with its batch (``landmarks_detected``, ``landmark_confidence``,
            ``landmark_corrected``, ``landmark_plausibility``, optionally ``landmark_source``).
    """
    detected = bool(to_numpy(item.get("landmarks_detected", False)).reshape(-1)[0])
    source = item.get("landmark_source")
    source = str(source[0] if isinstance(source, (list, tuple)) else source) if source else None
    provenance: dict[str, Any] = {
        "landmark_source": source or ("detector" if detected else "annotation"),
        "landmarks_detected": detected,
        "landmark_plausibility": None,
        "landmark_confidence": None,
        "corrected_by_shape_model": None,
    }
    if detected:
        if item.get("landmark_plausibility") is not None:
            provenance["landmark_plausibility"] = float(to_numpy(item["landmark_plausibility"]).reshape(-1)[0])
        if item.get("landmark_confidence") is not None:
            confidence = to_numpy(item["landmark_confidence"]).reshape(-1)
            provenance["landmark_confidence"] = {n: float(v) for n, v in zip(LANDMARK_NAMES, confidence)}
        if item.get("landmark_corrected") is not None:
            corrected = to_numpy(item["landmark_corrected"]).reshape(-1)
            provenance["corrected_by_shape_model"] = {n: bool(v) for n, v in zip(LANDMARK_NAMES, corrected)}
    return provenance

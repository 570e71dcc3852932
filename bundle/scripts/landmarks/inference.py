"""Landmark inference over a list of images: one ``landmarks.json`` (and an overlay PNG) per image.

The batch runs as the fracture inference does: each item is read with ``LoadPXR`` and given to the
:class:`~scripts.landmarks.detector.LandmarkDetector` inside a
:class:`~scripts.failure_tolerant_dataset.FailureTolerantDataset`, so an image that cannot be read, or that does not
look like an AP pelvic radiograph, gets an error report (its ``status`` from
:func:`~scripts.reporting.inference_failures.describe_failure`) and a warning in the log, and the batch goes on.
Each image's folder is named by :func:`custom_transforms.files.unique_image_stems`: its file name without the
extension, plus a short hash of its path when another input has the same name; the folder must lie inside
``output_dir`` (:func:`custom_transforms.files.contained_path`), else that image's error is recorded in the summary and
nothing is written for it. A used ``output_dir`` is refused unless ``overwrite`` (:mod:`scripts.run_guard`).

Output per image, in ``output_dir/<image name>/``: ``landmarks.json`` =
``{"image", "status": "ok", "spacing_mm", "spacing_source", "landmarks_detected": true, "plausibility",
"landmarks": {name: {"xy": [x, y], "xy_mm": [x, y], "confidence", "corrected_by_shape_model"}}}``
(or ``{"image", "status", "error"}``) and ``landmarks.png``; and ``output_dir/landmarks_summary.json`` listing
every image with its status and report file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from custom_transforms.files import UnsafePathError, contained_path, unique_image_stems
from custom_transforms.geometry import pixels_to_mm
from custom_transforms.loading import LoadPXR

from scripts.failure_tolerant_dataset import FailureTolerantDataset
from scripts.landmarks.detector import LandmarkDetection, LandmarkDetector
from scripts.reporting.inference_failures import describe_failure
from scripts.reporting.plots import save_landmark_overlay

__all__ = ["LANDMARKS_FILE", "OVERLAY_FILE", "SUMMARY_FILE", "detection_report", "run_landmark_inference"]

logger = logging.getLogger(__name__)

#: Each image's report, in its folder.
LANDMARKS_FILE = "landmarks.json"
#: Each image's overlay picture, in its folder.
OVERLAY_FILE = "landmarks.png"
#: The run's summary, in ``output_dir``.
SUMMARY_FILE = "landmarks_summary.json"


def detection_report(detection: LandmarkDetection, image_path: str, spacing_mm, spacing_source: str | None) -> dict:
    """JSON-ready report of one detection (landmarks in pixels and, when the spacing is known, mm)."""
    report = {
        "image": str(image_path),
        "status": "ok",
        "spacing_mm": None if spacing_mm is None else [float(s) for s in spacing_mm],
        "spacing_source": spacing_source,
        "landmarks_detected": True,
        **detection.to_dict(),
    }
    if spacing_mm is not None:
        for entry in report["landmarks"].values():
            entry["xy_mm"] = [float(v) for v in pixels_to_mm(entry["xy"], spacing_mm)]
    return report


def run_landmark_inference(
    detector: LandmarkDetector,
    items: Sequence[dict],
    output_dir: str | os.PathLike,
    overlay: bool = True,
) -> list[dict]:
    """Detect the landmarks of every item's ``image`` and write the reports.

    Args:
        detector: the landmark detector.
        items: dicts with ``image`` (a path).
        output_dir: where the per-image folders and ``landmarks_summary.json`` go.
        overlay: also write ``landmarks.png``.

    Returns:
        One summary entry per image, in the items' order: ``{"image", "status", "report"}``, ``status`` ``"ok"``
        or a failure status (``not_a_pelvis``, ``unreadable``, ...).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(item["image"]) for item in items]
    folders = unique_image_stems(paths)
    loader = LoadPXR()
    written: dict[str, dict] = {}

    def save(path: str, report: dict) -> Path | None:
        try:
            folder = contained_path(out, folders[os.path.abspath(path)], "image folder")
        except UnsafePathError as error:
            logger.error(f"{path}: nothing written: {error}")
            written[os.path.abspath(path)] = {"image": path, "status": "failed", "report": None, "error": str(error)}
            return None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / LANDMARKS_FILE).write_text(json.dumps(report, indent=2))
        written[os.path.abspath(path)] = {
            "image": path,
            "status": report["status"],
            "report": str(folder / LANDMARKS_FILE),
        }
        return folder

    def detect(item: dict) -> dict:
        path = str(item["image"])
        image = loader(path)
        return {"image": path, "pixels": image, "detection": detector(image, source=path)}

    def record_failure(item: dict, error: BaseException) -> None:
        failure = describe_failure(str(item["image"]), error)
        logger.warning(f"landmark detection skipped ({failure.status}): {failure.error}")
        save(failure.image, {"image": failure.image, "status": failure.status, "error": failure.error})

    for result in FailureTolerantDataset([{"image": p} for p in paths], transform=detect, on_failure=record_failure):
        path, image, detection = result["image"], result["pixels"], result["detection"]
        folder = save(
            path, detection_report(detection, path, image.meta.get("spacing_mm"), image.meta.get("spacing_source"))
        )
        if overlay and folder is not None:
            save_landmark_overlay(image[0].numpy(), detection, folder / OVERLAY_FILE)
    summary = [written[os.path.abspath(p)] for p in paths]
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    logger.info(f"landmarks of {sum(s['status'] == 'ok' for s in summary)}/{len(summary)} images written to {out}")
    return summary

"""Landmark inference over a list of images: one ``landmarks.json`` (and an overlay PNG) per image.

Each image is read with ``LoadPXR`` and given to the :class:`~.detector.LandmarkDetector`.
An image that cannot be read, or that does not look like an AP pelvic radiograph, gets a report with
an ``error`` entry and a warning in the log, and the batch goes on with the next image.

Output per image, in ``output_dir/<image name>/``: ``landmarks.json`` =
``{"image", "spacing_mm", "spacing_source", "landmarks_detected": true, "plausibility",
"landmarks": {name: {"xy": [x, y], "xy_mm": [x, y], "confidence", "corrected_by_shape_model"}}}``
(or ``{"image", "error"}``) and ``landmarks.png``; and ``output_dir/landmarks_summary.json`` listing
every image with its status.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom_transforms.loading import LoadPXR

from scripts.landmarks.detector import LandmarkDetection, LandmarkDetector, NotAPelvisError

__all__ = ["image_output_name", "detection_report", "save_overlay", "run_landmark_inference"]

logger = logging.getLogger(__name__)


def image_output_name(path: str | os.PathLike) -> str:
    """Folder name of an image's outputs: the file name without its image extension(s)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def detection_report(detection: LandmarkDetection, image_path: str, spacing_mm, spacing_source: str | None) -> dict:
    """JSON-ready report of one detection (landmarks in pixels and, when the spacing is known, mm)."""
    report = {
        "image": str(image_path),
        "spacing_mm": None if spacing_mm is None else [float(s) for s in spacing_mm],
        "spacing_source": spacing_source,
        "landmarks_detected": True,
        **detection.to_dict(),
    }
    if spacing_mm is not None:
        for name, entry in report["landmarks"].items():
            x, y = entry["xy"]
            entry["xy_mm"] = [x * float(spacing_mm[1]), y * float(spacing_mm[0])]
    return report


def save_overlay(image: np.ndarray, detection: LandmarkDetection, path: str | os.PathLike) -> None:
    """PNG of the radiograph with the landmarks (red: corrected by the shape model) and their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[-2:]
    fig = plt.figure(figsize=(6, 6 * h / w), dpi=120)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.asarray(image).reshape(h, w), cmap="gray", vmin=0, vmax=1)
    colours = np.where(detection.corrected, "red", "lime")
    ax.scatter(detection.landmarks[:, 0], detection.landmarks[:, 1], s=14, c=list(colours), edgecolors="black", linewidths=0.5)
    for (x, y), name in zip(detection.landmarks, detection.names):
        ax.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=5, color="yellow")
    ax.set_axis_off()
    ax.text(4, 4, f"plausibility {detection.plausibility:.2f}", color="cyan", fontsize=7, va="top")
    fig.savefig(path)
    plt.close(fig)


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
        One summary entry per image: ``{"image", "status": "ok" | "not_a_pelvis" | "unreadable", "report"}``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    loader = LoadPXR()
    summary = []
    for item in items:
        path = str(item["image"])
        folder = out / image_output_name(path)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            image = loader(path)
            detection = detector(image, source=path)
        except NotAPelvisError as e:
            status, report = "not_a_pelvis", {"image": path, "error": str(e)}
        except (OSError, ValueError, RuntimeError) as e:  # unreadable file, bad pixel data
            message = str(e) if path in str(e) else f"{path}: {e}"
            status, report = "unreadable", {"image": path, "error": message}
        else:
            status = "ok"
            report = detection_report(detection, path, image.meta.get("spacing_mm"), image.meta.get("spacing_source"))
            if overlay:
                save_overlay(image[0].numpy(), detection, folder / "landmarks.png")
        if status != "ok":
            logger.warning(f"landmark detection skipped: {report['error']}")
        (folder / "landmarks.json").write_text(json.dumps(report, indent=2))
        summary.append({"image": path, "status": status, "report": str(folder / "landmarks.json")})
    (out / "landmarks_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info(f"landmarks of {sum(s['status'] == 'ok' for s in summary)}/{len(summary)} images written to {out}")
    return summary

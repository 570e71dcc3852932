"""The message the AASN operator sends to the writers: one analysed radiograph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

__all__ = ["AASNFinding"]


@dataclass
class AASNFinding:
    """Result of the bundle's inference on one selected DICOM radiograph.

    Args:
        source: the input instance (pydicom dataset, pixel data included) whose identity the outputs copy.
        source_file: the file it was read from.
        report: the bundle's fracture result for this image (``scripts.reporting.fracture_result``, the content of
            its ``report.json``: ``fracture_probability``, ``threshold``, ``positive``, ``peaks``
            ``[{x, y, x_mm, y_mm, probability}]``, ``landmarks`` and their provenance (``landmark_source``,
            ``landmarks_detected``, ``landmark_confidence`` ...)), points in the project's convention: ``[x, y]`` =
            (column, row) pixels from the centre of the top-left pixel.
        heatmap: ``(H, W)`` fracture probabilities on the original image grid, or ``None`` on failure.
        image: ``(H, W)`` radiograph in ``[0, 1]``, bone bright, as the bundle's loader gave it.
        overlay: ``(H, W, 3)`` uint8, the bundle's overlay picture of the result (its ``overlay.png``), or ``None``.
        error: why the image could not be analysed (then ``report``, ``heatmap`` and ``image`` are empty).
        status: the bundle's status for the image (its ``report.json``'s ``status``): ``"ok"``, or e.g.
            ``"not_a_pelvis"`` (refused by the landmark detector), ``"unreadable"``, ``"failed"``.
    """

    source: Dataset
    source_file: str
    report: dict[str, Any] = field(default_factory=dict)
    heatmap: np.ndarray | None = None
    image: np.ndarray | None = None
    overlay: np.ndarray | None = None
    error: str | None = None
    status: str = "ok"

    def __post_init__(self) -> None:
        if self.error is not None and self.status == "ok":
            self.status = "failed"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def identity(self) -> dict[str, str]:
        """UIDs that tie the outputs to the input."""
        return {
            "study_instance_uid": str(self.source.get("StudyInstanceUID", "")),
            "series_instance_uid": str(self.source.get("SeriesInstanceUID", "")),
            "sop_instance_uid": str(self.source.get("SOPInstanceUID", "")),
            "sop_class_uid": str(self.source.get("SOPClassUID", "")),
        }

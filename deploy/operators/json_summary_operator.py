"""JSON summary of one run of the app: what was analysed, what it found, what was written, what was skipped.

Always written, also when nothing was analysed, so that a caller can tell "no pelvic radiograph in this
study" (``status: "no_pelvic_radiograph"``) from a crash (no file).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec

from .finding import AASNFinding

__all__ = ["SUMMARY_FILE_NAME", "JSONSummaryWriterOperator", "build_summary"]

logger = logging.getLogger(__name__)

SUMMARY_FILE_NAME = "aasn_summary.json"
#: Version of the summary's layout (bumped when keys change).
SUMMARY_SCHEMA_VERSION = "3"
#: Where each analysed image's landmarks came from, as the bundle's report gives it: ``landmark_source``
#: ("annotation" / "detector"), ``landmarks_detected`` and, for detected ones, the plausibility and per-landmark
#: confidence and shape-model corrections (by name).
LANDMARK_PROVENANCE_KEYS = (
    "landmark_source",
    "landmarks_detected",
    "landmark_plausibility",
    "landmark_confidence",
    "corrected_by_shape_model",
)


def build_summary(
    findings: list[AASNFinding],
    sr_files: list[dict[str, str]],
    sc_files: list[dict[str, str]],
    skipped_files: list[dict[str, str]],
    algorithm: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The summary as a JSON-serialisable dictionary.

    Args:
        findings: one per selected radiograph, analysed or failed.
        sr_files: ``{"sop_instance_uid", "file"}`` of the written SRs (by source SOP Instance UID).
        sc_files: the same for the Secondary Captures.
        skipped_files: ``{"file", "reason"}`` of input files that were not usable DICOM.
        algorithm: name and version of the model.
    """
    sr_by_source = {item["sop_instance_uid"]: item["file"] for item in sr_files}
    sc_by_source = {item["sop_instance_uid"]: item["file"] for item in sc_files}
    results = []
    for finding in findings:
        entry: dict[str, Any] = {**finding.identity, "source_file": finding.source_file}
        if finding.ok:
            entry.update(
                {
                    "status": "ok",
                    "fracture_probability": float(finding.report["fracture_probability"]),
                    "threshold": float(finding.report["threshold"]),
                    "positive": bool(finding.report["positive"]),
                    "peaks": finding.report.get("peaks", []),
                    "landmarks": finding.report.get("landmarks"),
                    **{key: finding.report.get(key) for key in LANDMARK_PROVENANCE_KEYS},
                    "spacing_mm": finding.report.get("spacing_mm"),
                    "outputs": {
                        "sr": sr_by_source.get(finding.identity["sop_instance_uid"]),
                        "secondary_capture": sc_by_source.get(finding.identity["sop_instance_uid"]),
                    },
                }
            )
        else:
            entry.update({"status": finding.status, "error": finding.error})
        results.append(entry)
    if not findings:
        status, message = "no_pelvic_radiograph", "No AP pelvic radiograph (CR/DX/DR, PELVIS, AP) found in the input."
    elif all(f.ok for f in findings):
        status, message = "ok", f"{len(findings)} radiograph(s) analysed."
    else:
        statuses = Counter(f.status for f in findings if not f.ok)
        failed = sum(statuses.values())
        status = "partial" if failed < len(findings) else "failed"
        message = (
            f"{failed} of {len(findings)} radiograph(s) could not be analysed: "
            + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
            + "."
        )
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "status": status,
        "message": message,
        "algorithm": algorithm or {},
        "coordinates": "peaks and landmarks: [x, y] = (column, row) pixels of the source image, origin at the "
        "centre of the top-left pixel; *_mm = pixels x spacing_mm (row, col)",
        "disclaimer": "Research output, not for diagnostic use.",
        "results": results,
        "skipped_files": skipped_files,
    }


class JSONSummaryWriterOperator(Operator):
    """Writes ``aasn_summary.json`` to the output folder.

    Named inputs:
        findings: list of :class:`~operators.finding.AASNFinding`.
        sr_files: from the SR writer.
        sc_files: from the Secondary Capture writer.
        skipped_files: from the DICOM loader.

    Args:
        fragment: the application.
        output_folder: where the summary is written.
        algorithm: name and version of the model, recorded in the summary.
    """

    def __init__(
        self, fragment: Fragment, *args, output_folder: Path, algorithm: dict[str, str] | None = None, **kwargs
    ):
        self.output_folder = Path(output_folder)
        self.algorithm = dict(algorithm or {})
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        for name in ("findings", "sr_files", "sc_files", "skipped_files"):
            spec.input(name)

    def compute(self, op_input, op_output, context):
        summary = build_summary(
            op_input.receive("findings") or [],
            op_input.receive("sr_files") or [],
            op_input.receive("sc_files") or [],
            op_input.receive("skipped_files") or [],
            self.algorithm,
        )
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / SUMMARY_FILE_NAME
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)
        logger.info("Wrote %s (status: %s, %s)", path, summary["status"], summary["message"])

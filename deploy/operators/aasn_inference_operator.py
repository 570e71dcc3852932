"""Runs the bundle's own inference on every selected radiograph of the study.

The operator does no image processing of its own: it hands the pydicom datasets that the SDK's loader already read
(and their file paths, for messages and annotation sidecars) to :class:`aasn_bundle.BundleInference`, which runs
the bundle's ``inference.json`` in memory (landmark detection, preprocessing, network, back-projection, fracture
result, overlay picture), so the app's probabilities, peaks and pictures are the bundle's.
"""

from __future__ import annotations

import logging

from monai.deploy.core import Fragment, Operator, OperatorSpec

from .finding import AASNFinding

__all__ = ["AASNInferenceOperator", "selected_instances"]

logger = logging.getLogger(__name__)


def selected_instances(study_selected_series_list) -> list[tuple[object, str]]:
    """``(pydicom dataset, file path)`` of every image instance in the selected series, in study order.

    Args:
        study_selected_series_list: the ``DICOMSeriesSelectorOperator``'s output.
    """
    instances = []
    seen = set()
    for study_selection in study_selected_series_list or []:
        for selected in study_selection.selected_series:
            for sop in selected.series.get_sop_instances():
                dataset = sop.get_native_sop_instance()
                uid = str(dataset.SOPInstanceUID)
                if uid in seen:  # a series matched by two selections is analysed once
                    continue
                seen.add(uid)
                if "PixelData" not in dataset:
                    logger.info("Ignoring instance %s of a selected series: it has no pixel data.", uid)
                    continue
                instances.append((dataset, str(dataset.filename)))
    return instances


class AASNInferenceOperator(Operator):
    """The AASN pipeline as a MONAI Deploy operator.

    Named input:
        study_selected_series_list: from ``DICOMSeriesSelectorOperator``.

    Named output:
        findings: list of :class:`~operators.finding.AASNFinding`, one per selected image (an image the
        bundle could not analyse, e.g. one its landmark detector refuses as not an AP pelvis, gives a finding with
        ``error`` and ``status`` set, and a log line naming the file and why).

    Args:
        fragment: the application.
        inference: the bundle runner (``aasn_bundle.BundleInference``).
    """

    def __init__(self, fragment: Fragment, *args, inference, **kwargs):
        self.inference = inference
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("study_selected_series_list")
        spec.output("findings")

    def compute(self, op_input, op_output, context):
        instances = selected_instances(op_input.receive("study_selected_series_list"))
        if not instances:
            logger.warning(
                "No AP pelvic radiograph (CR/DX/DR, body part PELVIS, view AP) in the input: nothing to analyse; "
                "writing an empty summary."
            )
            op_output.emit([], "findings")
            return
        logger.info("Analysing %d pelvic radiograph(s): %s", len(instances), [path for _, path in instances])
        results = self.inference.run(instances)
        findings = []
        for dataset, path in instances:
            result = results[path]
            if result.error is not None:  # e.g. not_a_pelvis: "<file>: does not look like an AP pelvic radiograph"
                logger.error("Could not analyse %s (%s): %s", path, result.status, result.error)
            elif result.report.get("landmarks_detected"):
                logger.info(
                    "Landmarks of %s detected by the bundle's detector (plausibility %.2f)",
                    path,
                    float(result.report.get("landmark_plausibility") or 0.0),
                )
            findings.append(
                AASNFinding(
                    source=dataset,
                    source_file=path,
                    report=result.report,
                    heatmap=result.heatmap,
                    image=result.image,
                    overlay=result.overlay,
                    error=result.error,
                    status=result.status,
                )
            )
        op_output.emit(findings, "findings")

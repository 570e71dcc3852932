"""DICOM Comprehensive SR with the AASN findings of one radiograph (TID 1500 Measurement Report, highdicom).

Content tree (codes from SNOMED CT, DICOM and UCUM; nothing private):

* Imaging Measurement Report, observer = this app as a device, procedure reported = plain radiography;
* one image-level group (TID 1501) for the finding *Fracture of bone* at the pelvis: the fracture
  probability (*Probability*), the operating threshold (*Threshold Value*) and the decision as a
  qualitative evaluation (*Present* / *Absent*), referencing the source image;
* the algorithm identification (TID 4019) with its parameters as text: the threshold and where the
  landmarks came from (``landmark_source=detector`` or ``annotation``; for detected ones the plausibility
  and the weakest landmark's confidence);
* one planar-ROI group (TID 1410) per heatmap peak: a ``POINT`` on the source image and the heatmap's
  probability there.

Coordinates: the project's points are ``[x, y]`` pixels with the origin at the *centre* of the top-left
pixel; DICOM spatial coordinates (PS3.3 C.18.6.1.2, SCOORD) put ``0.0\\0.0`` at the *top-left corner* of the
top-left pixel, column first. The conversion, owned here, is therefore ``(x + 0.5, y + 0.5)``.

Identity (PS3.3 C.17, C.7.1/C.7.2): patient and study modules are copied from the source instance by
highdicom; the SR gets a new series and SOP instance, and the source is listed as evidence.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from custom_transforms.version import read_version

from .finding import AASNFinding

__all__ = [
    "FRACTURE_OF_BONE",
    "FractureSRWriterOperator",
    "build_fracture_sr",
    "landmark_parameters",
    "to_dicom_scoord",
]

logger = logging.getLogger(__name__)

#: SNOMED CT 125605004 |Fracture of bone (disorder)|.
FRACTURE_OF_BONE = hd.sr.CodedConcept(value="125605004", scheme_designator="SCT", meaning="Fracture of bone")
#: Same UID for every run of this app, so that a PACS can group the reports of the same device.
DEVICE_UID = generate_uid(entropy_srcs=["aasn-pelvic-fracture MONAI Deploy app"])


def to_dicom_scoord(points_xy) -> np.ndarray:
    """Project points ``[x, y]`` (origin at the top-left pixel's centre) -> DICOM SCOORD (column, row).

    Args:
        points_xy: ``(N, 2)`` or ``(2,)`` pixel coordinates in the project's convention.
    """
    points = np.asarray(points_xy, dtype=np.float64)
    return (points + 0.5).astype(np.float32)


def landmark_parameters(report: dict) -> list[str]:
    """Where the landmarks behind the finding came from, as TID 4019 *Algorithm Parameter* texts.

    ``landmark_source=detector`` (or ``annotation``); for detected landmarks also the image's
    ``landmark_plausibility`` and the lowest per-landmark confidence with its landmark.

    Args:
        report: the bundle's report (``landmark_source``, ``landmarks_detected``, ``landmark_plausibility``,
            ``landmark_confidence``).
    """
    if not report.get("landmark_source"):
        return []
    parameters = [f"landmark_source={report['landmark_source']}"]
    if report.get("landmarks_detected"):
        if report.get("landmark_plausibility") is not None:
            parameters.append(f"landmark_plausibility={float(report['landmark_plausibility']):.3f}")
        confidence = report.get("landmark_confidence") or {}
        if confidence:
            weakest = min(confidence, key=confidence.get)
            parameters.append(f"lowest_landmark_confidence={float(confidence[weakest]):.3f} ({weakest})")
    return parameters


def build_fracture_sr(
    source: Dataset,
    report: dict,
    *,
    algorithm_name: str = "AASN pelvic fracture detection",
    algorithm_version: str | None = None,
    manufacturer: str = "AASN pelvic fracture bundle contributors",
    series_number: int = 9001,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sr.ComprehensiveSR:
    """Comprehensive SR of one radiograph's findings.

    Args:
        source: the analysed DX/CR instance.
        report: the bundle's report for it (``fracture_probability``, ``threshold``, ``positive``, ``peaks``).
        algorithm_name: name recorded in the algorithm identification (TID 4019).
        algorithm_version: the bundle version (default: the project's, :func:`custom_transforms.version.read_version`).
        manufacturer: Manufacturer of the SR.
        series_number: SeriesNumber of the new series.
        series_instance_uid: UID of the new series (generated when ``None``).
        sop_instance_uid: UID of the SR (generated when ``None``).
    """
    algorithm_version = algorithm_version or read_version()
    for key in ("fracture_probability", "threshold", "positive", "peaks"):
        if key not in report:
            raise KeyError(f"build_fracture_sr: the report of {source.get('SOPInstanceUID')} lacks '{key}'.")
    probability = float(report["fracture_probability"])
    threshold = float(report["threshold"])
    algorithm = hd.sr.AlgorithmIdentification(
        name=algorithm_name,
        version=str(algorithm_version),
        parameters=[f"threshold={threshold:g}", *landmark_parameters(report)],
    )
    unitless = codes.UCUM.NoUnits
    pelvis = [hd.sr.FindingSite(anatomic_location=codes.SCT.BoneStructureOfPelvis)]

    image_level = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="AASN image-level assessment"),
        finding_type=FRACTURE_OF_BONE,
        finding_sites=pelvis,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=codes.DCM.Probability, value=probability, unit=unitless, algorithm_id=algorithm),
            hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=threshold, unit=unitless),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=FRACTURE_OF_BONE, value=codes.SCT.Present if bool(report["positive"]) else codes.SCT.Absent
            )
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    peak_groups = []
    for index, peak in enumerate(report["peaks"], start=1):
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POINT,
            graphic_data=to_dicom_scoord([[float(peak["x"]), float(peak["y"])]]),
            source_image=hd.sr.SourceImageForRegion.from_source_image(source),
        )
        peak_groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"fracture peak {index}"),
                referenced_region=region,
                finding_type=FRACTURE_OF_BONE,
                finding_sites=pelvis,
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.DCM.Probability,
                        value=float(peak["probability"]),
                        unit=unitless,
                        algorithm_id=algorithm,
                    )
                ],
            )
        )
    observer = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=DEVICE_UID, name=algorithm_name, manufacturer_name=manufacturer, model_name=algorithm_name
            ),
        )
    )
    content = hd.sr.MeasurementReport(
        observation_context=observer,
        procedure_reported=codes.SCT.PlainRadiography,
        imaging_measurements=[image_level, *peak_groups],
    )
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=content[0],
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=algorithm_name,
        software_versions=str(algorithm_version),
        series_description="AASN fracture findings - NOT FOR DIAGNOSTIC USE",
        is_complete=True,
        is_final=False,
        is_verified=False,
    )


class FractureSRWriterOperator(Operator):
    """Writes one Comprehensive SR per analysed radiograph.

    Named input:
        findings: list of :class:`~operators.finding.AASNFinding` (failed ones are skipped).

    Named output:
        sr_files: list of ``{"sop_instance_uid": source SOP UID, "file": written path}``.

    Args:
        fragment: the application.
        output_folder: where ``sr_<source SOP Instance UID>.dcm`` files are written.
        algorithm_version: bundle version recorded in the SR.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: Path, algorithm_version: str | None = None, **kwargs):
        self.output_folder = Path(output_folder)
        self.algorithm_version = algorithm_version or read_version()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("findings")
        spec.output("sr_files")

    def compute(self, op_input, op_output, context):
        findings: list[AASNFinding] = op_input.receive("findings") or []
        written = []
        for finding in findings:
            if not finding.ok:
                continue
            sr = build_fracture_sr(finding.source, finding.report, algorithm_version=self.algorithm_version)
            self.output_folder.mkdir(parents=True, exist_ok=True)
            path = self.output_folder / f"sr_{finding.source.SOPInstanceUID}.dcm"
            sr.save_as(path, enforce_file_format=True)
            logger.info("Wrote SR %s for %s", path, finding.source_file)
            written.append({"sop_instance_uid": str(finding.source.SOPInstanceUID), "file": str(path)})
        op_output.emit(written, "sr_files")

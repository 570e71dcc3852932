"""DICOM Secondary Capture: the bundle's overlay picture of the result, with its burned-in warning banner.

The picture is the bundle's (``scripts.reporting.plots.fracture_overlay``, that of its ``overlay.png``, here never
reduced): the radiograph on its own pixel grid (same rows and columns, nothing added around it, so a point of the SC
is the same anatomy as that pixel of the source) with the heatmap (grey kept exactly where the heatmap is 0), the
peaks numbered as in the SR, and a banner over the top rows saying NOT FOR DIAGNOSTIC USE with the probability and
decision. This module only puts it into DICOM.

Identity: patient and study modules are copied from the source by highdicom's ``from_ref_dataset``; the SC
is a new series, derived from (Source Image Sequence) the source instance. BurnedInAnnotation is YES.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from .finding import AASNFinding

__all__ = ["BANNER_TEXT", "HeatmapSCWriterOperator", "build_heatmap_sc"]

logger = logging.getLogger(__name__)

#: The SC's description says what its burned-in banner says.
BANNER_TEXT = "NOT FOR DIAGNOSTIC USE"
#: Patient orientation (row direction, column direction) of an AP pelvic radiograph in standard display:
#: the patient's right is on the viewer's left, so x (columns) runs to the patient's Left and y (rows) to
#: the Feet. Used only when the source does not state its PatientOrientation.
AP_PATIENT_ORIENTATION = ("L", "F")


def build_heatmap_sc(
    source: Dataset,
    picture: np.ndarray,
    *,
    manufacturer: str = "AASN pelvic fracture bundle contributors",
    series_number: int = 9002,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sc.SCImage:
    """Secondary Capture of ``picture`` (RGB, the source's grid) in the source's study.

    Args:
        source: the analysed radiograph.
        picture: ``(H, W, 3)`` uint8 RGB, the bundle's overlay picture.
        manufacturer: Manufacturer of the SC.
        series_number: SeriesNumber of the new series.
        series_instance_uid: UID of the new series (generated when ``None``).
        sop_instance_uid: UID of the SC (generated when ``None``).
    """
    picture = np.ascontiguousarray(picture, dtype=np.uint8)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.shape[:2] != (source.Rows, source.Columns):
        raise ValueError(
            f"build_heatmap_sc: picture shape {picture.shape} is not ({source.Rows}, {source.Columns}, 3), the "
            f"grid of source {source.SOPInstanceUID}."
        )
    orientation = tuple(source.get("PatientOrientation") or ()) or AP_PATIENT_ORIENTATION
    # PixelSpacing only when the source calibrated it at the patient: ImagerPixelSpacing is at the detector.
    spacing = source.get("PixelSpacing")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=picture,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        pixel_spacing=tuple(float(s) for s in spacing) if spacing else None,
        patient_orientation=orientation,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    sc.SeriesDescription = f"AASN fracture heatmap - {BANNER_TEXT}"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "YES"
    sc.ConversionType = "WSD"  # made by software on a workstation, not digitised from film or video
    sc.ImageComments = f"{BANNER_TEXT}. Research output of the AASN pelvic fracture detector; heatmap overlay."
    # The anatomy imaged, as the source states it: BodyPartExamined (PELVIS, unpaired) tells a validator that
    # General Series Laterality is not required; ImageLaterality is copied when the source has one.
    for keyword in ("BodyPartExamined", "ImageLaterality"):
        if source.get(keyword):
            setattr(sc, keyword, source.get(keyword))
    sc.DerivationDescription = "AASN fracture probability heatmap blended over the source radiograph"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = DicomSequence([reference])
    return sc


class HeatmapSCWriterOperator(Operator):
    """Writes one Secondary Capture per analysed radiograph.

    Named input:
        findings: list of :class:`~operators.finding.AASNFinding` (failed ones are skipped).

    Named output:
        sc_files: list of ``{"sop_instance_uid": source SOP UID, "file": written path}``.

    Args:
        fragment: the application.
        output_folder: where ``sc_<source SOP Instance UID>.dcm`` files are written.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs):
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("findings")
        spec.output("sc_files")

    def compute(self, op_input, op_output, context):
        findings: list[AASNFinding] = op_input.receive("findings") or []
        written = []
        for finding in findings:
            if not finding.ok:
                continue
            sc = build_heatmap_sc(finding.source, finding.overlay)
            self.output_folder.mkdir(parents=True, exist_ok=True)
            path = self.output_folder / f"sc_{finding.source.SOPInstanceUID}.dcm"
            sc.save_as(path, enforce_file_format=True)
            logger.info("Wrote Secondary Capture %s for %s", path, finding.source_file)
            written.append({"sop_instance_uid": str(finding.source.SOPInstanceUID), "file": str(path)})
        op_output.emit(written, "sc_files")

"""DICOM Secondary Capture: the radiograph with the fracture heatmap overlay and a burned-in warning banner.

The picture keeps the source's pixel grid (same rows and columns, nothing added around it), so a point of
the SC is the same anatomy as that pixel of the source; the banner is drawn over the top rows.

Overlay: ``rgb = (1 - a) * grey + a * jet(heatmap)`` with ``a = max_alpha * heatmap``, so pixels where the
network sees nothing keep the radiograph's grey value exactly, and the colour (jet, as the bundle's own
overlay PNG) shows the fracture probability. Peaks are circled and numbered as in the SR.

Identity: patient and study modules are copied from the source by highdicom's ``from_ref_dataset``; the SC
is a new series, derived from (Source Image Sequence) the source instance. BurnedInAnnotation is YES.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
from matplotlib import colormaps
from monai.deploy.core import Fragment, Operator, OperatorSpec
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from .finding import AASNFinding

__all__ = ["BANNER_TEXT", "HeatmapSCWriterOperator", "build_heatmap_sc", "render_overlay"]

logger = logging.getLogger(__name__)

BANNER_TEXT = "NOT FOR DIAGNOSTIC USE"
#: Banner colours (RGB): yellow text on black.
BANNER_BACKGROUND = (0, 0, 0)
BANNER_FOREGROUND = (255, 255, 0)
#: Patient orientation (row direction, column direction) of an AP pelvic radiograph in standard display:
#: the patient's right is on the viewer's left, so x (columns) runs to the patient's Left and y (rows) to
#: the Feet. Used only when the source does not state its PatientOrientation.
AP_PATIENT_ORIENTATION = ("L", "F")


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return np.repeat(grey[..., None], 3, axis=-1)


def banner_height(rows: int) -> int:
    """Height in pixels of the warning banner drawn over the top of an image with ``rows`` rows."""
    return max(24, rows // 12)


def _font_fitting(draw: ImageDraw.ImageDraw, text: str, width: int, height: int) -> ImageFont.ImageFont:
    """The largest default font, at most ``height`` pixels tall, in which ``text`` fits ``width`` pixels."""
    size = max(6, int(height * 0.8))
    font = ImageFont.load_default(size=size)
    length = draw.textlength(text, font=font)
    if length > width:
        size = max(6, int(size * width / length))
        font = ImageFont.load_default(size=size)
    return font


def render_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    peaks_xy=(),
    caption: str = "",
    max_alpha: float = 0.6,
) -> np.ndarray:
    """RGB uint8 picture of the radiograph with the heatmap, numbered peaks and the warning banner.

    Args:
        image: ``(H, W)`` radiograph in ``[0, 1]``, bone bright.
        heatmap: ``(H, W)`` probabilities in ``[0, 1]`` on the same grid.
        peaks_xy: ``(P, 2)`` peak positions ``[x, y]`` (origin at the top-left pixel's centre).
        caption: text after the banner's warning (e.g. the probability).
        max_alpha: opacity of the colour where the heatmap is 1.
    """
    image = np.asarray(image, dtype=np.float32)
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    if image.ndim != 2 or heatmap.shape != image.shape:
        raise ValueError(
            f"render_overlay: expected a (H, W) image and a heatmap of the same shape, got {image.shape} and "
            f"{heatmap.shape}."
        )
    alpha = (max_alpha * heatmap)[..., None]
    colour = colormaps["jet"](heatmap)[..., :3].astype(np.float32)
    rgb = (1.0 - alpha) * _grey_rgb(image) + alpha * colour
    picture = Image.fromarray(np.rint(rgb * 255.0).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(picture)
    rows, cols = image.shape
    radius = max(4, min(rows, cols) // 40)
    font_peak = ImageFont.load_default(size=max(10, 2 * radius))
    for index, (x, y) in enumerate(np.asarray(peaks_xy, dtype=np.float64).reshape(-1, 2), start=1):
        box = (x - radius, y - radius, x + radius, y + radius)
        draw.ellipse(box, outline=(255, 255, 255), width=max(1, radius // 4))
        draw.text((x + radius + 2, y - radius), str(index), fill=(255, 255, 255), font=font_peak)
    height = banner_height(rows)
    draw.rectangle((0, 0, cols - 1, height - 1), fill=BANNER_BACKGROUND)
    lines = [BANNER_TEXT, caption] if caption else [BANNER_TEXT]
    margin = max(2, height // 8)
    for line_index, line in enumerate(lines):
        font = _font_fitting(draw, line, cols - 2 * margin, (height - 2 * margin) // len(lines))
        centre_y = margin + (line_index + 0.5) * (height - 2 * margin) / len(lines)
        draw.text((margin, centre_y), line, fill=BANNER_FOREGROUND, font=font, anchor="lm")
    return np.asarray(picture)


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
        picture: ``(H, W, 3)`` uint8 RGB, e.g. from :func:`render_overlay`.
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
            report = finding.report
            caption = (
                f"AASN fracture probability {float(report['fracture_probability']):.3f} "
                f"({'POSITIVE' if report['positive'] else 'negative'} at {float(report['threshold']):g})"
            )
            peaks = [[p["x"], p["y"]] for p in report.get("peaks", [])]
            picture = render_overlay(finding.image, finding.heatmap, peaks, caption)
            sc = build_heatmap_sc(finding.source, picture)
            self.output_folder.mkdir(parents=True, exist_ok=True)
            path = self.output_folder / f"sc_{finding.source.SOPInstanceUID}.dcm"
            sc.save_as(path, enforce_file_format=True)
            logger.info("Wrote Secondary Capture %s for %s", path, finding.source_file)
            written.append({"sop_instance_uid": str(finding.source.SOPInstanceUID), "file": str(path)})
        op_output.emit(written, "sc_files")

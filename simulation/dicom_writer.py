"""Writing a simulated radiograph as a DICOM DX (Digital X-Ray, For Presentation) file.

Identity is fake (``Simulated^<subject>``, ``SIM-<subject>``) and says so; UIDs are new ones under the
UUID-derived root 2.25, derived from the generator's seed and the image index so that a dataset is
reproducible byte for byte and never reuses an identifier of a real study. Pixels are 12 bits
stored in 16 allocated; ``MONOCHROME1`` files store ``4095 - value`` so that both photometric
interpretations display the same picture.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


#: Namespace of this simulator's name-based (version 5) UUIDs.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/aasn-pelvic-fracture/simulation")


def make_uid(*entropy: object) -> str:
    """A deterministic UID ``2.25.<UUID as integer>`` (ISO/IEC 9834-8) from a name-based UUID of ``entropy``."""
    return f"2.25.{uuid.uuid5(_UUID_NAMESPACE, '|'.join(str(e) for e in entropy)).int}"


def write_dx(
    path: str | Path,
    pixels: np.ndarray,
    spacing_mm: tuple[float, float],
    subject: str,
    uid_seed: tuple,
    monochrome1: bool = False,
    sdd_mm: float | None = None,
    sod_mm: float | None = None,
    comments: str = "",
    study_date: str = "20200101",
    modality: str = "DX",
    body_part: str = "PELVIS",
    view_position: str = "AP",
) -> Path:
    """Write ``pixels`` (uint16, 0..4095, bone bright) as a DX DICOM file.

    Args:
        path: output file.
        pixels: ``(H, W)`` 12-bit values, high = more attenuation.
        spacing_mm: ImagerPixelSpacing ``(row, col)``.
        subject: simulated subject id (fake identity only).
        uid_seed: entropy for the UIDs (e.g. ``(seed, index)``); studies are per subject.
        monochrome1: store inverted values with PhotometricInterpretation MONOCHROME1.
        sdd_mm, sod_mm: source-detector and source-isocentre distances.
        comments: ImageComments (attribution of the anatomy).
        study_date: fake date ``YYYYMMDD``.
        modality: ``"DX"`` (DX For Presentation storage) or ``"CR"`` (CR storage), for distractor images.
        body_part: BodyPartExamined.
        view_position: ViewPosition.
    """
    path = Path(path)
    if pixels.dtype != np.uint16 or pixels.ndim != 2 or int(pixels.max(initial=0)) > 4095:
        raise ValueError("pixels must be a 2D uint16 array with values in 0..4095")
    if modality not in ("DX", "CR"):
        raise ValueError(f"modality must be 'DX' or 'CR', got {modality!r}")
    sop_class = DX_FOR_PRESENTATION if modality == "DX" else CR_IMAGE_STORAGE
    sop_uid = make_uid("sop", *uid_seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = make_uid("study", uid_seed[0], subject)
    ds.SeriesInstanceUID = make_uid("series", *uid_seed)
    ds.FrameOfReferenceUID = make_uid("frame", *uid_seed)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"Simulated^{subject}"
    ds.PatientID = f"SIM-{subject}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Simulated image: no real patient data"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "SIM"
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(uid_seed[-1]) + 1 if str(uid_seed[-1]).isdigit() else 1
    ds.Modality = modality
    ds.Manufacturer = "AASN pelvic-fracture radiograph simulator"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view_position
    ds.PatientOrientation = ["L", "F"]  # rows run to the patient's left, columns to the feet
    ds.ImageLaterality = "U"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [f"{spacing_mm[0]:.6g}", f"{spacing_mm[1]:.6g}"]
    if sdd_mm is not None:
        ds.DistanceSourceToDetector = f"{sdd_mm:.2f}"
    if sod_mm is not None:
        ds.DistanceSourceToPatient = f"{sod_mm:.2f}"
        if sdd_mm is not None:
            ds.EstimatedRadiographicMagnificationFactor = f"{sdd_mm / sod_mm:.4f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower values mean less beam intensity (MONOCHROME1, bone low); -1 for MONOCHROME2.
    ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
    ds.LossyImageCompression = "00"
    if comments:
        ds.ImageComments = comments[:10240]
    stored = (4095 - pixels) if monochrome1 else pixels
    ds.PixelData = np.ascontiguousarray(stored.astype("<u2")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path

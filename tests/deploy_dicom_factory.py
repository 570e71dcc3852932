"""Small DICOM studies for the MONAI Deploy app's tests: radiographs, an RT object, corrupt files.

Every instance of a study shares the patient and study identity in :data:`IDENTITY` (fictitious, no PHI).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"

#: Patient and study attributes shared by the instances of a test study.
IDENTITY = {
    "PatientName": "Test^Pelvis",
    "PatientID": "AASN-TEST-0001",
    "PatientBirthDate": "19650412",
    "PatientSex": "F",
    "StudyID": "4711",
    "StudyDate": "20240312",
    "StudyTime": "101500",
    "AccessionNumber": "ACC-0001",
    "ReferringPhysicianName": "Referrer^Test",
    "StudyDescription": "Trauma series",
}

#: The Patient and Study attributes that a derived object (SR, SC) must copy from the analysed radiograph.
IDENTITY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def new_study_uid() -> str:
    return generate_uid()


def _base(sop_class_uid: str, study_uid: str, modality: str, series_number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.Manufacturer = "AASN test factory"
    for keyword, value in IDENTITY.items():
        setattr(ds, keyword, value)
    now = dt.datetime(2024, 3, 12, 10, 15)
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    return ds


def radiograph_dataset(
    pixels: np.ndarray,
    study_uid: str,
    *,
    modality: str = "DX",
    body_part: str = "PELVIS",
    view: str = "AP",
    spacing_mm: tuple[float, float] = (0.5, 0.5),
    photometric: str = "MONOCHROME2",
    series_number: int = 1,
    bits_stored: int = 12,
) -> Dataset:
    """A DX (For Presentation) or CR instance holding ``pixels`` (uint16, rows x columns)."""
    sop_class = DX_FOR_PRESENTATION if modality == "DX" else CR_IMAGE_STORAGE
    ds = _base(sop_class, study_uid, modality, series_number)
    pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view
    ds.SeriesDescription = f"{body_part} {view}"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"] if view == "AP" else ["P", "F"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [float(spacing_mm[0]), float(spacing_mm[1])]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelData = pixels.tobytes()
    return ds


def rt_structure_set_dataset(study_uid: str, series_number: int = 90) -> Dataset:
    """An RT Structure Set without pixel data (a non-image object in the same study)."""
    ds = _base(RTStructureSetStorage, study_uid, "RTSTRUCT", series_number)
    ds.StructureSetLabel = "distractor"
    ds.StructureSetDate = "20240312"
    ds.StructureSetTime = "101500"
    ds.StructureSetROISequence = []
    return ds


def save(ds: Dataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_corrupt_files(folder: str | Path) -> list[Path]:
    """A non-DICOM file and a DICOM file truncated inside its pixel data."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    garbage = folder / "not_dicom.dcm"
    garbage.write_bytes(b"this is not a DICOM file\n" * 8)
    truncated_source = radiograph_dataset(np.zeros((64, 64), np.uint16), new_study_uid())
    full = folder / "full.tmp"
    save(truncated_source, full)
    data = full.read_bytes()
    full.unlink()
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 2000])
    return [garbage, truncated]


def content_items(ds, value_type: str, concept_code: str | None = None) -> list:
    """All content items of a type (and concept name code) anywhere in an SR content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        names = item.get("ConceptNameCodeSequence", [])
        if item.ValueType == value_type and (concept_code is None or (names and names[0].CodeValue == concept_code)):
            found.append(item)
        found.extend(content_items(item, value_type, concept_code))
    return found

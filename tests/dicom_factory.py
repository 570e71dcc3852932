"""Writing small synthetic DICOM radiographs for tests (pydicom 2.4 and 3.x).

``write_dx(path, pixels, ...)`` writes a DX (or CR) image with the tags a real PXR carries and options for the
cases the loader must handle: photometric interpretation, BitsStored, rescale, VOI window / LUT, spacing tags,
and JPEG 2000 / RLE compression. No real patient data: identity tags are fixed dummies, UIDs are fresh.
"""

from __future__ import annotations

import datetime

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"


def _base_dataset(sop_class: str, syntax) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.ImplementationClassUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "TEST^PHANTOM"
    ds.PatientID = "PHANTOM-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = datetime.date.today().strftime("%Y%m%d")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    return ds


def _save(ds: Dataset, path) -> str:
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return str(path)


def write_dx(
    path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    bits_allocated: int = 16,
    signed: bool = False,
    spacing_mm=(0.15, 0.15),
    spacing_tag: str | None = "ImagerPixelSpacing",
    pixel_spacing_mm=None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    voi_lut: np.ndarray | None = None,
    voi_lut_first: int = 0,
    voi_lut_bits: int = 16,
    compression: str | None = None,
    modality: str = "DX",
    body_part: str = "PELVIS",
    view: str = "AP",
    sop_class: str | None = None,
    extra: dict | None = None,
) -> str:
    """Write a single-frame grey-scale radiograph.

    Args:
        path: output file.
        pixels: (H, W) stored values (integers within ``bits_stored``; higher bits are written as given).
        photometric: ``"MONOCHROME1"`` or ``"MONOCHROME2"``.
        bits_stored, bits_allocated, signed: pixel format.
        spacing_mm: value of ``spacing_tag`` (row, col).
        spacing_tag: ``"ImagerPixelSpacing"``, ``"PixelSpacing"`` or None for no spacing.
        pixel_spacing_mm: additionally write PixelSpacing with this value.
        rescale: (slope, intercept).
        window: (center, width); ``voi_function`` sets VOILUTFunction.
        voi_lut: a VOI LUT Sequence table (first mapped value ``voi_lut_first``, ``voi_lut_bits`` per entry).
        compression: None (explicit VR little endian), ``"jpeg2000"`` (lossless, via pylibjpeg-openjpeg) or ``"rle"``.
        modality, body_part, view: identifying tags.
        sop_class: override the SOP class (default DX or CR by modality).
        extra: further attributes to set.
    """
    pixels = np.asarray(pixels)
    if sop_class is None:
        sop_class = CR_IMAGE_STORAGE if modality == "CR" else DX_FOR_PRESENTATION
    # RLE is compressed by pydicom from an uncompressed dataset, so it starts as explicit VR little endian
    syntax = {None: ExplicitVRLittleEndian, "jpeg2000": JPEG2000Lossless, "rle": ExplicitVRLittleEndian}[compression]
    ds = _base_dataset(sop_class, syntax)
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if spacing_tag is not None:
        setattr(ds, spacing_tag, [f"{spacing_mm[0]:.6g}", f"{spacing_mm[1]:.6g}"])
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [f"{pixel_spacing_mm[0]:.6g}", f"{pixel_spacing_mm[1]:.6g}"]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:.6g}", f"{rescale[1]:.6g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:.6g}", f"{window[1]:.6g}"
        if voi_function:
            ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", [len(voi_lut) % 65536, int(voi_lut_first), int(voi_lut_bits)])  # LUTDescriptor
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # LUTData
        ds.VOILUTSequence = Sequence([item])
    for key, value in (extra or {}).items():
        setattr(ds, key, value)

    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
    stored = pixels.astype(dtype)
    if compression is None:
        ds.PixelData = stored.tobytes()
    elif compression == "jpeg2000":
        from openjpeg import encode as encode_j2k
        from pydicom.encaps import encapsulate

        # The codestream carries only BitsStored bits; pylibjpeg-openjpeg encodes losslessly by default.
        frame = encode_j2k(stored, bits_stored=bits_stored, photometric_interpretation=0, use_mct=False)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "00"
    elif compression == "rle":
        from pydicom.pixels import compress  # pydicom >= 3

        ds.PixelData = stored.tobytes()
        ds = compress(ds, RLELossless)
    return _save(ds, path)


def write_non_image(path) -> str:
    """A valid DICOM file without pixel data (an RT Plan), for the "not an image" error."""
    ds = _base_dataset(RT_PLAN_STORAGE, ExplicitVRLittleEndian)
    ds.Modality = "RTPLAN"
    ds.RTPlanLabel = "TEST"
    return _save(ds, path)

"""Loading pelvic radiographs (PXRs): DICOM (CR/DX/DR) through pydicom, PNG/JPEG/TIFF and NIfTI through MONAI readers.

Output convention (every format): a :class:`monai.data.MetaTensor` of shape ``(1, H, W)`` (rows, columns), float32
in ``[0, 1]`` where **brighter means more attenuating** (bone is bright, MONOCHROME2 display), with meta-data

* ``spacing_mm``: pixel spacing ``(row, col)`` in mm; absent when the file does not say, so that
  ``meta.get("spacing_mm")`` is ``None`` (a ``None`` value would break MONAI's batch collation of the meta-data);
* ``spacing_source``: where it came from: ``"PixelSpacing"`` or ``"ImagerPixelSpacing"`` (DICOM tags),
  ``"nifti_header"``, ``"annotation"`` (set later by :class:`~custom_transforms.annotation.LoadAnnotationd`)
  or ``"none"``;
* ``filename_or_obj``, ``spatial_shape`` and an ``affine`` scaling pixel indices to mm.

DICOM pixel pipeline (PS3.3 C.7.6.3, C.11.1, C.11.2): stored values are masked to *BitsStored* (sign-extended
when PixelRepresentation is 1), the modality LUT (RescaleSlope/RescaleIntercept or a Modality LUT Sequence) is
applied, then the first VOI window (WindowCenter/WindowWidth with VOILUTFunction LINEAR, LINEAR_EXACT or
SIGMOID) maps the values to ``[0, 1]``; without a window the first VOI LUT Sequence item is used, and without
either the modality values are min-max normalised. MONOCHROME1 images (and MONOCHROME2 ones with Presentation
LUT Shape INVERSE) are inverted last, so that both photometric interpretations of the same anatomy give the
same array.

Spacing: ``PixelSpacing`` is the spacing *calibrated at the patient* (DX IOD: present only when calibrated, or
when the detector spacing was corrected for the radiographic magnification), ``ImagerPixelSpacing`` the spacing
*at the detector face*, which overstates anatomical sizes by the geometric magnification (about 1.1-1.2 at a
1 m source-image distance). Millimetre quantities in this project (the 2 cm fracture disc) refer to anatomy, so
``PixelSpacing`` is preferred by default and ``ImagerPixelSpacing`` is the fall-back; ``spacing_priority``
changes the order. When neither tag exists a warning is issued and ``spacing_mm`` is left out.

Compressed transfer syntaxes are decoded by the pydicom pixel-data plugins that are installed; JPEG 2000,
JPEG-LS and lossless JPEG need ``pylibjpeg`` with ``pylibjpeg-openjpeg`` / ``pylibjpeg-libjpeg`` (see
``requirements.txt``). Works with pydicom 2.4 and 3.x.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from .conventions import SPACING_RANGE_MM
from .errors import PXRReadError

try:  # pydicom >= 3
    from pydicom.pixels import apply_modality_lut
except ImportError:  # pydicom 2.x
    from pydicom.pixel_data_handlers.util import apply_modality_lut

__all__ = ["LoadPXR", "LoadPXRd", "SPACING_TAGS", "is_dicom_file", "dicom_spacing", "window_to_unit", "voi_lut_to_unit"]

#: DICOM spacing tags in the default order of preference (patient plane first, then detector plane).
SPACING_TAGS: tuple[str, ...] = ("PixelSpacing", "ImagerPixelSpacing")

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Luminance weights of ITU-R BT.601, for the rare radiograph stored in colour.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file has the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _two_positive_floats(value) -> tuple[float, float] | None:
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    low, high = SPACING_RANGE_MM
    if len(pair) != 2 or not all(np.isfinite(pair)) or min(pair) < low or max(pair) > high:
        return None
    return pair  # type: ignore[return-value]


def dicom_spacing(
    ds, priority: Sequence[str] = SPACING_TAGS, source: str = ""
) -> tuple[tuple[float, float] | None, str]:
    """Spacing ``(row, col)`` in mm and the name of the tag it came from (``"none"`` with a warning if absent).

    Args:
        ds: a pydicom Dataset.
        priority: the tags to try, in order.
        source: a file name for the messages.
    """
    for tag in priority:
        if tag not in ds:
            continue
        value = _two_positive_floats(ds.data_element(tag).value)
        if value is None:
            warnings.warn(
                f"{source}: ignoring invalid {tag} {str(ds.data_element(tag).value)[:40]!r} (expected two pixel "
                f"sizes between {SPACING_RANGE_MM[0]} and {SPACING_RANGE_MM[1]} mm)",
                stacklevel=2,
            )
            continue
        return value, tag
    warnings.warn(
        f"{source}: neither {' nor '.join(priority)} is present; pixel spacing unknown (give 'spacing_mm' in the "
        "annotation to use millimetre sizes)",
        stacklevel=2,
    )
    return None, "none"


def window_to_unit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map values through a DICOM VOI window (PS3.3 C.11.2.1.2-3) onto ``[0, 1]``, in place for float32 input.

    Args:
        values: modality-LUT output values.
        center: WindowCenter.
        width: WindowWidth (>= 1 for LINEAR, > 0 otherwise).
        function: VOILUTFunction: ``LINEAR`` (default), ``LINEAR_EXACT`` or ``SIGMOID``.
    """
    out = values if values.dtype == np.float32 else values.astype(np.float32)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        out -= center
        out *= -4.0 / width
        np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
        return out
    if function == "LINEAR_EXACT":
        offset, scale = center - width / 2.0, 1.0 / width
    else:  # LINEAR: the window spans [c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2]
        width = max(width, 1.0)
        offset, scale = center - 0.5 - (width - 1.0) / 2.0, 1.0 / max(width - 1.0, 1e-6)
    out -= offset
    out *= scale
    np.clip(out, 0.0, 1.0, out=out)
    return out


def voi_lut_to_unit(values: np.ndarray, item, source: str = "") -> np.ndarray:
    """Map modality values through a VOI LUT Sequence item (PS3.3 C.11.2.1.1) onto ``[0, 1]``.

    Values below the first mapped value take the first entry, values beyond the table the last; the output is
    divided by the LUT's nominal maximum ``2**bits - 1`` (LUTDescriptor[2]).
    """
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
    except (AttributeError, TypeError, ValueError):
        raise PXRReadError(f"{source}: malformed VOI LUT Sequence LUTDescriptor") from None
    entries = entries or 65536  # 0 means 2**16 entries
    data = item.LUTData
    table = np.frombuffer(data, dtype="<u2") if isinstance(data, bytes) else np.asarray(data, dtype=np.float64).ravel()
    if table.size < entries or not 1 <= bits <= 16:
        raise PXRReadError(f"{source}: VOI LUT has {table.size} entries / {bits} bits, descriptor says {entries}")
    index = np.clip(np.rint(values) - first, 0, entries - 1).astype(np.int64)
    return (table[:entries].astype(np.float32) * (1.0 / float((1 << bits) - 1)))[index]


def _minmax_to_unit(values: np.ndarray, source: str) -> np.ndarray:
    out = values if values.dtype == np.float32 else values.astype(np.float32)
    lo, hi = float(out.min()), float(out.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise PXRReadError(f"{source}: pixel data contain non-finite values")
    if hi <= lo:
        warnings.warn(f"{source}: the image is constant ({lo}); loading it as all zeros", stacklevel=2)
        out[...] = 0.0
        return out
    out -= lo
    out *= 1.0 / (hi - lo)
    return out


def _first(value) -> float:
    """First item of a possibly multi-valued DICOM number."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return float(value)
    return float(value[0])


def _dicom_number(ds, keyword: str, default: float | None, source: str) -> float:
    """A numeric DICOM attribute (its first value when multi-valued): ``default`` when absent or empty; a value that
    is not a finite number is an unreadable image (a NaN slope would turn every pixel into NaN)."""
    value = ds.get(keyword) if keyword in ds else None
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        if default is None:
            raise PXRReadError(f"{source}: {keyword} is empty; expected a number")
        return float(default)
    try:
        number = _first(value)
    except (TypeError, ValueError, IndexError):
        raise PXRReadError(f"{source}: {keyword} {str(value)[:40]!r} is not a number") from None
    if not np.isfinite(number):
        raise PXRReadError(f"{source}: {keyword} is {number}; expected a finite number")
    return number


def _mask_bits_stored(arr: np.ndarray, ds) -> np.ndarray:
    """Keep only the BitsStored low bits (pydicom 2.x does not mask them), sign-extending signed data."""
    bits_stored = int(getattr(ds, "BitsStored", 0) or 0)
    if arr.dtype.kind not in "iu" or bits_stored <= 0 or bits_stored >= arr.dtype.itemsize * 8:
        return arr
    unsigned = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    mask = (1 << bits_stored) - 1
    if int(getattr(ds, "PixelRepresentation", 0) or 0) == 0:
        if (unsigned > mask).any():
            return (unsigned & mask).astype(arr.dtype)
        return arr
    low = (unsigned & mask).astype(np.int64)
    sign = 1 << (bits_stored - 1)
    return ((low ^ sign) - sign).astype(arr.dtype)


def _dicom_to_unit(ds, source: str, use_voi: bool = True) -> np.ndarray:
    """Decode the pixels of a radiograph dataset to float32 ``(H, W)`` in ``[0, 1]`` (bright = attenuating)."""
    if "PixelData" not in ds:
        sop = getattr(ds, "SOPClassUID", None)
        name = getattr(sop, "name", sop)
        raise PXRReadError(f"{source}: DICOM file has no Pixel Data (SOP class {name}); not an image")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames != 1:
        raise PXRReadError(f"{source}: expected a single-frame radiograph, got NumberOfFrames={frames}")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoders raise many types (RuntimeError, ValueError, NotImplementedError, ...)
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", syntax)
        raise PXRReadError(
            f"{source}: cannot decode the pixel data (transfer syntax {syntax_name}): {exc}. Compressed syntaxes "
            "need pylibjpeg with pylibjpeg-openjpeg (JPEG 2000) / pylibjpeg-libjpeg (JPEG, JPEG-LS)."
        ) from exc

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        warnings.warn(f"{source}: colour radiograph ({photometric}); converting to grey by luminance", stacklevel=2)
        return _minmax_to_unit(arr[..., :3].astype(np.float32) @ _LUMA, source)
    if arr.ndim != 2:
        raise PXRReadError(f"{source}: expected a 2-D grey-scale image, got pixel array of shape {arr.shape}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PXRReadError(f"{source}: unsupported PhotometricInterpretation {photometric!r} for a radiograph")

    arr = _mask_bits_stored(arr, ds)
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(arr, ds).astype(np.float32)
    else:
        values = arr.astype(np.float32)
        slope = _dicom_number(ds, "RescaleSlope", 1.0, source)
        intercept = _dicom_number(ds, "RescaleIntercept", 0.0, source)
        if slope == 0.0:
            raise PXRReadError(
                f"{source}: RescaleSlope is 0, which maps every pixel to the same value; expected a non-zero slope"
            )
        if slope != 1.0:
            values *= slope
        if intercept != 0.0:
            values += intercept

    if not use_voi:
        unit = _minmax_to_unit(values, source)
    elif "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowCenter is not None and ds.WindowWidth is not None:
        width, center = _dicom_number(ds, "WindowWidth", None, source), _dicom_number(ds, "WindowCenter", None, source)
        if width <= 0:
            raise PXRReadError(f"{source}: invalid WindowWidth {ds.WindowWidth!r} (must be > 0)")
        unit = window_to_unit(values, center, width, str(getattr(ds, "VOILUTFunction", "LINEAR")))
    elif "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        unit = voi_lut_to_unit(values, ds.VOILUTSequence[0], source)
    else:
        unit = _minmax_to_unit(values, source)

    # MONOCHROME1 shows low values bright; a MONOCHROME2 image may ask for the same with Presentation LUT Shape
    # INVERSE. (DX requires INVERSE together with MONOCHROME1, where it means the same single inversion.)
    shape = str(getattr(ds, "PresentationLUTShape", "") or "").upper()
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        np.subtract(1.0, unit, out=unit)
    return unit


def _nifti_spacing(path: str) -> tuple[tuple[float, float] | None, str]:
    """Spacing from a NIfTI header, trusted only when its spatial unit is a length."""
    import nibabel as nib

    header = nib.load(path).header
    unit = header.get_xyzt_units()[0]
    factor = {"mm": 1.0, "micron": 1e-3, "meter": 1e3}.get(unit)
    if factor is None:
        warnings.warn(f"{path}: NIfTI spatial unit is {unit!r}; pixel spacing unknown", stacklevel=2)
        return None, "none"
    zooms = header.get_zooms()
    return _two_positive_floats((zooms[0] * factor, zooms[1] * factor)), "nifti_header"


class LoadPXR(Transform):
    """Load a pelvic radiograph as a ``(1, H, W)`` float32 MetaTensor in ``[0, 1]`` (see the module docstring).

    Args:
        spacing_priority: DICOM spacing tags to use, in order of preference.
        apply_voi: apply the DICOM VOI window / LUT when present (else min-max normalise the modality values).
    """

    def __init__(self, spacing_priority: Sequence[str] = SPACING_TAGS, apply_voi: bool = True) -> None:
        unknown = set(spacing_priority) - set(SPACING_TAGS)
        if unknown:
            raise ValueError(f"spacing_priority: unknown tags {sorted(unknown)}; expected some of {SPACING_TAGS}")
        self.spacing_priority = tuple(spacing_priority)
        self.apply_voi = apply_voi

    def __call__(self, source) -> MetaTensor:
        """Load ``source``: a file path or an already-read pydicom Dataset."""
        if hasattr(source, "PixelData") or type(source).__name__ in ("Dataset", "FileDataset"):
            name = str(getattr(source, "filename", None) or "<pydicom Dataset>")
            return self._from_dataset(source, name)
        if not isinstance(source, (str, os.PathLike)):
            raise PXRReadError(
                f"LoadPXR: expected an image file path or a pydicom Dataset, got {type(source).__name__}"
            )
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise PXRReadError(f"{path}: image file not found")
        lower = path.lower()
        if lower.endswith(_NIFTI_SUFFIXES):
            return self._from_monai_reader(path, "nifti")
        if lower.endswith(_PIL_SUFFIXES) and not is_dicom_file(path):
            return self._from_monai_reader(path, "pil")
        return self._from_dicom_file(path)

    def _from_dicom_file(self, path: str) -> MetaTensor:
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as exc:
            raise PXRReadError(f"{path}: not a DICOM file and not a known image format ({exc})") from exc
        except Exception as exc:  # truncated / corrupt files raise assorted errors
            raise PXRReadError(f"{path}: cannot read DICOM file: {exc}") from exc
        return self._from_dataset(ds, path)

    def _from_dataset(self, ds, name: str) -> MetaTensor:
        unit = _dicom_to_unit(ds, name, self.apply_voi)
        spacing, spacing_source = dicom_spacing(ds, self.spacing_priority, name)
        meta = {"photometric_interpretation": str(getattr(ds, "PhotometricInterpretation", ""))}
        return _make_image(unit, spacing, spacing_source, name, meta)

    def _from_monai_reader(self, path: str, kind: str) -> MetaTensor:
        from monai.data import NibabelReader, PILReader
        from monai.transforms import LoadImage

        reader = NibabelReader() if kind == "nifti" else PILReader(reverse_indexing=False)
        try:
            img = LoadImage(reader=reader, image_only=True)(path)
        except Exception as exc:
            raise PXRReadError(f"{path}: cannot read image: {exc}") from exc
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour PNG/JPEG: PILReader keeps channels last
            arr = arr[..., :3] @ _LUMA
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise PXRReadError(f"{path}: expected a 2-D grey-scale image, got array of shape {arr.shape}")
        if kind == "nifti":
            spacing, spacing_source = _nifti_spacing(path)
        else:
            warnings.warn(f"{path}: {kind.upper()} images carry no pixel spacing; spacing unknown", stacklevel=2)
            spacing, spacing_source = None, "none"
        return _make_image(_minmax_to_unit(np.ascontiguousarray(arr), path), spacing, spacing_source, path, {})


def _make_image(unit: np.ndarray, spacing, spacing_source: str, name: str, extra: dict) -> MetaTensor:
    bad = int(unit.size - np.count_nonzero(np.isfinite(unit)))
    if bad:  # whatever the format or the path that made them: never hand NaN or infinite pixels on
        raise PXRReadError(
            f"{name}: {bad} of {unit.size} pixels are not finite (NaN or infinite) after decoding; expected finite "
            "pixel values (check the file's pixel data and its rescale / window attributes)"
        )
    h, w = unit.shape
    affine = torch.eye(4, dtype=torch.float64)
    if spacing is not None:
        affine[0, 0], affine[1, 1] = spacing
    meta = {
        "filename_or_obj": name,
        "spacing_source": spacing_source,
        "spatial_shape": (h, w),
        "original_channel_dim": "no_channel",
        **extra,
    }
    if spacing is not None:  # absent rather than None when unknown: MONAI cannot collate None meta values
        meta["spacing_mm"] = (float(spacing[0]), float(spacing[1]))
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))[None], affine=affine, meta=meta)


class LoadPXRd(MapTransform):
    """Dictionary wrapper of :class:`LoadPXR`: replaces each path under ``keys`` by the loaded image.

    Args:
        keys: keys holding image paths (default ``"image"``).
        spacing_priority: DICOM spacing tags to use, in order of preference.
        apply_voi: apply the DICOM VOI window / LUT when present.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        spacing_priority: Sequence[str] = SPACING_TAGS,
        apply_voi: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadPXR(spacing_priority=spacing_priority, apply_voi=apply_voi)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d

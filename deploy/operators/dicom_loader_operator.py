"""DICOM study loading that survives a bad file in the input folder.

The SDK's ``DICOMDataLoaderOperator`` skips files that are not DICOM at all, but a truncated file, or one
without the identifying UIDs, either stops the whole study or is dropped with a message that does not say
which file it was. PACS exports do contain such files (interrupted transfers, stray non-image objects),
so this subclass checks every file first, skips the bad ones with a warning naming the file and the
reason, and hands the rest to the SDK's own grouping into studies and series.

Reads: the check parses each file once, and the SDK's loader parses the usable ones again (its grouping reads by
path and takes no parsed datasets). The bundle then analyses the datasets the SDK read (``aasn_bundle``), so a
radiograph's pixel data are decoded once, by the bundle's loader.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
from monai.deploy.core import Fragment, OperatorSpec
from monai.deploy.operators import DICOMDataLoaderOperator
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length

__all__ = ["CheckedDICOMDataLoaderOperator", "dicom_file_problem"]

logger = logging.getLogger(__name__)

#: Annotation sidecars (``<image>.json``, landmarks for the bundle) live beside the images; they are not
#: DICOM and are not reported as bad files.
SIDECAR_SUFFIXES = (".json",)
#: Attributes without which an instance cannot be placed in a study and series, nor referenced.
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def dicom_file_problem(path: str | Path) -> str | None:
    """Why a file cannot be used as a DICOM instance, or ``None`` when it can.

    Checks that the file parses as DICOM (with its File Meta header), carries the UIDs in
    :data:`REQUIRED_UIDS`, and, for native (uncompressed) pixel data, holds as many pixel bytes as its
    image attributes announce. Compressed pixel data is only decoded by the step that uses it.

    Args:
        path: the file to check.
    """
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as err:
        return f"not a DICOM file ({err})"
    except Exception as err:  # truncated or otherwise unreadable: any parser error means unusable
        return f"unreadable DICOM ({type(err).__name__}: {err})"
    missing = [keyword for keyword in REQUIRED_UIDS if not ds.get(keyword)]
    if missing:
        return f"missing {', '.join(missing)}"
    if "PixelData" in ds:
        transfer_syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
        if transfer_syntax is None:
            return "pixel data without a Transfer Syntax UID in the File Meta header"
        if not transfer_syntax.is_encapsulated:
            try:
                expected = get_expected_length(ds, unit="bytes")
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                return f"incomplete image pixel module ({err})"
            actual = len(ds.PixelData)
            if actual < expected:
                return f"truncated pixel data ({actual} bytes, {expected} expected)"
    return None


class CheckedDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """``DICOMDataLoaderOperator`` that skips unusable files with a warning naming each one.

    Named input:
        input_folder: optional folder path, as in the SDK operator.

    Named outputs:
        dicom_study_list: list of ``DICOMStudy`` built from the usable files (possibly empty).
        skipped_files: list of ``{"file": path, "reason": text}`` for the files left out.

    Args:
        fragment: the application.
        input_folder: folder searched recursively for DICOM files.
    """

    SKIPPED_OUTPUT_NAME = "skipped_files"

    def __init__(self, fragment: Fragment, *args, input_folder: Path, **kwargs):
        self.skipped_files: list[dict[str, str]] = []
        # must_load=False: a folder with nothing usable gives an empty, well-formed result, not a crash.
        super().__init__(fragment, *args, input_folder=Path(input_folder), must_load=False, **kwargs)

    def setup(self, spec: OperatorSpec):
        super().setup(spec)
        spec.output(self.SKIPPED_OUTPUT_NAME)

    def compute(self, op_input, op_output, context):
        self.skipped_files = []
        super().compute(op_input, op_output, context)
        op_output.emit(list(self.skipped_files), self.SKIPPED_OUTPUT_NAME)

    def _load_data(self, files: list[str]):
        usable = []
        for file in sorted(files):
            if str(file).lower().endswith(SIDECAR_SUFFIXES):
                logger.info("Not a DICOM instance, left to the bundle: %s", file)
                continue
            problem = dicom_file_problem(file)
            if problem is None:
                usable.append(file)
            else:
                logger.warning("Skipping %s: %s", file, problem)
                self.skipped_files.append({"file": str(file), "reason": problem})
        studies = super()._load_data(usable)
        logger.info(
            "Loaded %d usable DICOM file(s) into %d study(ies); skipped %d.",
            len(usable),
            len(studies),
            len(self.skipped_files),
        )
        return studies

"""MONAI Label's DICOMweb datastore, adapted to 2D radiographs (CR/DX) in a PACS such as Orthanc.

MONAI Label 0.8.5's ``DICOMWebDatastore`` is built for CT/MR volumes. With a PACS of pelvic radiographs it
(checked against 0.8.5's code and with a DX here):

* lists series of ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``, by default ``{"Modality": "CT"}``: no radiograph;
* downloads ``dcmqi``'s ``itkimage2segimage`` from GitHub at server start (``MONAILabelApp._download_dcmqi_tools``);
* turns each image into NIfTI with SimpleITK/GDCM, which drops what the project's loader reads from the DICOM
  (VOI LUT or window, MONOCHROME1, the modality LUT, ``spacing_source``);
* saves a final label by converting it to DICOM SEG and storing it with STOW-RS. For a DX this cannot work:
  ``itkimage2segimage`` is not installed (and is no Debian package), and 0.8.5's other SEG writer (pydicom-seg)
  stops with ``'FileDataset' object has no attribute 'ImagePositionPatient'``: a projection radiograph has no
  patient-space plane position. A label in the project's annotation JSON (landmark points) has no SEG form at all;
* and before every training it re-reads the SEG series of the PACS and deletes the cached labels that have none.

:class:`RadiographDICOMwebDatastore` keeps MONAI Label's DICOMweb behaviour where it works for radiographs and
changes the rest:

* images: one image = one series (its id is the ``SeriesInstanceUID``, as in MONAI Label), listed by QIDO-RS per
  modality (``CR`` and ``DX`` unless ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` is set to something other than its
  CT default), fetched once with WADO-RS (MONAI Label's ``dicom_web_download_series``) and kept **as DICOM** in
  the cache, ``<cache>/<md5 of the DICOMweb URL>/<SeriesInstanceUID>.dcm`` (the cache is MONAI Label's:
  ``MONAI_LABEL_DICOMWEB_CACHE_PATH``, default ``~/.cache/monailabel/dicom``). A series must hold exactly one
  image instance;
* final labels (label image or annotation JSON) are saved where MONAI Label's DICOMweb datastore keeps its own copy,
  the cache's ``labels/final/<SeriesInstanceUID>.<ext>``, and **not** sent to the PACS (see above); training reads
  them from there (``datalist``), and they are never deleted for lacking a SEG in the PACS;
* no dcmqi download, no NIfTI conversion;
* no image uploads (``PUT /datastore/`` answers 405: the images are the PACS's), and labels are checked as the
  folder datastore checks them (:mod:`lib.upload_checks`: a plain tag, a known kind, a bounded size).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from typing import Any

from dicomweb_client import DICOMwebClient
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.dicom import dicom_web_download_series
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.utils.others.generic import md5_digest
from pydicom import dcmread
from pydicom.dataset import Dataset

from lib.upload_checks import check_label_tag, check_label_upload

logger = logging.getLogger(__name__)

#: QIDO-RS filters used when ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` keeps MONAI Label's CT default.
RADIOGRAPH_FILTERS = ({"Modality": "CR"}, {"Modality": "DX"})
MONAILABEL_DEFAULT_FILTER = {"Modality": "CT"}
#: A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters.
DICOM_UID = re.compile(r"[0-9][0-9.]{0,63}")
#: Suffixes the cache's file names end with (a SeriesInstanceUID has dots, so the suffix must be known).
KNOWN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".dcm", ".json", ".png")


def search_filters(setting: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The QIDO-RS filters of the image list: the setting when one is given, else one per radiograph modality."""
    if not setting or setting == MONAILABEL_DEFAULT_FILTER:
        return [dict(f) for f in RADIOGRAPH_FILTERS]
    return [dict(setting)]


class RadiographDICOMwebDatastore(DICOMWebDatastore):
    """A DICOMweb PACS of radiographs as MONAI Label's datastore (see the module docstring).

    Args:
        client: MONAI Label's DICOMweb client of the PACS (``DICOMwebClientX``).
        filters: QIDO-RS filters of the series to list (one query each; the union is the image list).
        cache_path: the cache folder (default: MONAI Label's, ``~/.cache/monailabel/dicom``); the datastore's own
            folder inside it is named after the MD5 of the DICOMweb URL, as MONAI Label names it.
        max_bytes: largest label file accepted from a client.
    """

    def __init__(
        self,
        client: DICOMwebClient,
        filters: list[dict[str, Any]],
        cache_path: str | None = None,
        max_bytes: int = 64 * 1024 * 1024,
    ):
        self.max_bytes = int(max_bytes)
        self._client = client
        self._search_filter = filters[0] if filters else {}
        self._filters = [dict(f) for f in filters]
        self._fetch_by_frame = False
        self._convert_to_nifti = False
        root = cache_path or os.path.join(os.path.expanduser("~"), ".cache", "monailabel", "dicom")
        path = os.path.join(root, md5_digest(client.base_url))
        logger.info(f"DICOMweb datastore {client.base_url}: series of {self._filters}, cache {path}")
        LocalDatastore.__init__(self, datastore_path=path, extensions=("*.dcm",), auto_reload=True)

    def _to_id(self, file: str) -> tuple[str, str]:
        for suffix in KNOWN_SUFFIXES:
            if file.lower().endswith(suffix):
                return file[: -len(suffix)], file[-len(suffix) :]
        return LocalDatastore._to_id(self, file)

    # --- images -------------------------------------------------------------------------------------------------

    def list_images(self) -> list[str]:
        series: list[str] = []
        for search in self._filters:
            for found in self._client.search_for_series(search_filters=search, get_remaining=True):
                uid = str(Dataset.from_json(found)["SeriesInstanceUID"].value)
                if uid not in series:
                    series.append(uid)
        return series

    def _series_meta(self, series_uid: str) -> Dataset | None:
        found = self._client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})
        matching = [Dataset.from_json(s) for s in found if s.get("0020000E", {}).get("Value") == [series_uid]]
        return matching[0] if matching else None

    def get_image_uri(self, image_id: str) -> str:
        """The cached DICOM file of series ``image_id``, fetched from the PACS the first time; "" when the PACS has
        no such series, or when ``image_id`` is not a DICOM UID (digits and dots: so that it is also a safe file name
        in the cache). Raises ``ValueError`` when the series does not hold exactly one image instance."""
        if not isinstance(image_id, str) or not DICOM_UID.fullmatch(image_id):
            return ""
        cached = LocalDatastore.get_image_uri(self, image_id)
        if cached and os.path.isfile(cached):
            return cached
        meta = self._series_meta(image_id) if image_id else None
        if meta is None:
            return ""
        download = tempfile.mkdtemp(prefix=".fetch_", dir=self._datastore_path)
        try:
            dicom_web_download_series(str(meta.StudyInstanceUID), image_id, download, self._client)
            images = sorted(f for f in os.listdir(download) if "PixelData" in dcmread(os.path.join(download, f)))
            if len(images) != 1:
                raise ValueError(
                    f"Series {image_id} of {self._client.base_url} holds {len(images)} image instances; the app "
                    "reads one radiograph per series."
                )
            info = {"SeriesInstanceUID": image_id}
            for field in ("StudyInstanceUID", "StudyDate", "Modality", "PatientID"):
                info[field] = str(meta.get(field, "")) or "UNK"
            # add_image copies the file to <cache>/<series uid>.dcm and records it
            LocalDatastore.add_image(self, image_id, os.path.join(download, images[0]), info)
        finally:
            shutil.rmtree(download, ignore_errors=True)
        return LocalDatastore.get_image_uri(self, image_id)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Refused (405): the images are the PACS's; store them there (the app fetches what it needs)."""
        raise HTTPException(
            405,
            f"this app's images come from the PACS {self._client.base_url}; store the image "
            "there (C-STORE or STOW-RS), not with PUT /datastore/",
        )

    # --- labels -------------------------------------------------------------------------------------------------

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        return LocalDatastore.get_label_uri(self, label_id, label_tag)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], label_id: str = ""
    ) -> str:
        """Save the label in the cache (``labels/<tag>/<SeriesInstanceUID>.<ext>``); not sent to the PACS. The tag
        and the file are checked as the folder datastore checks them (:mod:`lib.upload_checks`)."""
        check_label_tag(self, label_tag)
        if not self.get_image_uri(image_id):
            raise HTTPException(404, f"Image {image_id!r} is not in {self._client.base_url}; no label saved.")
        check_label_upload(label_filename, self.max_bytes)
        if label_tag == DefaultLabelTag.FINAL:
            logger.info(
                f"Final label of series {image_id} kept in the DICOMweb datastore's cache, not stored in the PACS as "
                "DICOM SEG (no SEG of a 2D radiograph in MONAI Label 0.8.5)"
            )
        return LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return LocalDatastore.get_labeled_images(self, label_tag, labels)

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        labelled = set(self.get_labeled_images(label_tag, labels))
        return [s for s in self.list_images() if s not in labelled]

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        """The cached images with a final label (MONAI Label's upstream version would first delete every cached
        label without a DICOM SEG in the PACS)."""
        return LocalDatastore.datalist(self, full_path)

    def status(self) -> dict[str, Any]:
        status = LocalDatastore.status(self)
        status["pacs"] = self._client.base_url
        return status


def dicomweb_datastore(url: str, max_bytes: int = 64 * 1024 * 1024) -> RadiographDICOMwebDatastore:
    """The app's datastore for ``--studies <DICOMweb URL>``, with MONAI Label's own client and settings (user and
    password, QIDO/WADO/STOW prefixes, cache folder, search filter) but without downloading dcmqi."""
    from dicomweb_client.session_utils import create_session_from_user_pass
    from monailabel.datastore.dicom import DICOMwebClientX

    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        session = create_session_from_user_pass(
            settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD
        )
    client = DICOMwebClientX(
        url=url.rstrip("/"),
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
    return RadiographDICOMwebDatastore(
        client, search_filters(settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER), cache, max_bytes
    )

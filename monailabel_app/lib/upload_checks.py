"""What the app's datastores accept from a client: image ids and label tags that stay inside the datastore, DICOM
radiographs of bounded size as images, and label files of bounded size and a known kind.

MONAI Label 0.8.5's ``LocalDatastore`` stores whatever ``PUT /datastore/`` sends, under the name the client gives
(``?image=../../x`` wrote outside the studies folder), and a label under any ``tag`` (a folder name that may be
``../..``). :class:`RadiographLocalDatastore` checks first; the DICOMweb datastore
(:mod:`lib.dicomweb_datastore`) applies the same label checks and takes no image uploads (its images come from the
PACS). A refused upload is an ``HTTPException`` with a message naming what was wrong (the request guards of
:mod:`lib.request_guard` then remove the temporary file).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from custom_transforms.files import UnsafePathError, contained_path

__all__ = ["LABEL_EXTENSIONS", "RadiographLocalDatastore", "check_dicom_radiograph", "check_label_upload", "check_name"]

#: Label files the app reads back (annotation JSON or a label image).
LABEL_EXTENSIONS = (".json", ".nii.gz", ".nii", ".png")


def check_name(root: str, name: str, what: str) -> None:
    """Refuse (422) a client-given name that would not be one plain file or folder inside ``root``."""
    try:
        contained_path(root, name, what)
    except UnsafePathError as error:
        raise HTTPException(422, str(error).replace(os.path.realpath(root), "the datastore")) from None


def _check_size(path: str, max_bytes: int, what: str) -> None:
    size = os.path.getsize(path)
    if size > max_bytes:
        raise HTTPException(
            413, f"{what}: {size} bytes, more than the app's limit of {max_bytes} bytes (max_upload_mb)"
        )
    if size == 0:
        raise HTTPException(422, f"{what}: the file is empty")


def check_dicom_radiograph(path: str, max_bytes: int) -> None:
    """Refuse an upload that is not a DICOM radiograph the project's loader can read, or that is too large."""
    from custom_transforms.errors import PXRReadError
    from custom_transforms.loading import LoadPXR, is_dicom_file

    _check_size(path, max_bytes, "uploaded image")
    if not is_dicom_file(path):
        raise HTTPException(
            422, "uploaded image: not a DICOM file (no 'DICM' preamble); the app stores DICOM radiographs only"
        )
    try:
        LoadPXR()(path)
    except PXRReadError as error:
        raise HTTPException(422, str(error).replace(path, "uploaded image")) from None


def check_label_upload(path: str, max_bytes: int) -> str:
    """Refuse a label file of an unknown kind or size; returns its extension."""
    lower = path.lower()
    extension = next((e for e in LABEL_EXTENSIONS if lower.endswith(e)), None)
    if extension is None:
        raise HTTPException(
            422, f"label: the file name must end in one of {list(LABEL_EXTENSIONS)} (annotation JSON or a label image)"
        )
    _check_size(path, max_bytes, "label")
    return extension


class RadiographLocalDatastore(LocalDatastore):
    """MONAI Label's folder datastore with the checks of the module docstring.

    Args:
        datastore_path: the studies folder.
        max_bytes: largest image or label file accepted.
        kwargs: ``LocalDatastore``'s other arguments.
    """

    def __init__(self, datastore_path: str, max_bytes: int, **kwargs) -> None:
        self.max_bytes = int(max_bytes)
        super().__init__(datastore_path, **kwargs)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Store an uploaded DICOM radiograph as ``<image_id>.dcm`` (422 / 413 otherwise)."""
        if not image_id:
            raise HTTPException(422, "image id: empty; give it as ?image=<id> (or name the uploaded file)")
        for name in (image_id, f"{image_id}.dcm"):
            check_name(self._datastore.image_path(), name, "image id")
        check_dicom_radiograph(image_filename, self.max_bytes)
        folder = tempfile.mkdtemp(prefix=".aasn_upload_", dir=os.path.dirname(image_filename) or None)
        try:  # stored with the .dcm extension, whatever the client called the file
            copy = os.path.join(folder, "upload.dcm")
            shutil.copyfile(image_filename, copy)
            return super().add_image(image_id, copy, image_info)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Store a label of an image of the datastore under a plain tag (404 / 422 / 413 otherwise)."""
        check_label_tag(self, label_tag)
        if image_id not in self._datastore.objects:
            raise HTTPException(404, f"Image {image_id!r} is not in the datastore; no label saved.")
        check_label_upload(label_filename, self.max_bytes)
        return super().save_label(image_id, label_filename, label_tag, label_info)


def check_label_tag(datastore: LocalDatastore, tag: str) -> None:
    """Refuse (422) a label tag that is not one plain folder name inside the datastore's labels folder."""
    labels = datastore._datastore.label_path(None)
    check_name(labels, str(tag), "label tag")

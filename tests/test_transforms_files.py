"""File-name conventions: an image's stem and the per-image output folders of a batch run."""

from __future__ import annotations

import hashlib
import os

import pytest

from custom_transforms.files import image_stem, unique_image_stems


@pytest.mark.parametrize(
    "path, stem",
    [
        ("/data/a/pelvis.dcm", "pelvis"),
        ("pelvis.DCM", "pelvis"),  # extensions match whatever their case
        ("scan.nii.gz", "scan"),  # .nii.gz is one extension
        ("scan.NII.GZ", "scan"),
        ("scan.nii", "scan"),
        ("film.dicom", "film"),
        ("film.tiff", "film"),
        ("IM0001", "IM0001"),  # DICOM without an extension
        ("1.2.840.10008.1", "1.2.840.10008.1"),  # a UID-named DICOM: its dots are not extensions
        ("notes.txt", "notes.txt"),  # not an image extension: kept whole
        ("two.dots.png", "two.dots"),
        # stripping would leave nothing or only dots ('', '.', '..'): the whole name is the stem
        (".dcm", ".dcm"),
        ("..dcm", "..dcm"),
        ("...dcm", "...dcm"),
        ("/x/..nii.gz", "..nii.gz"),
    ],
)
def test_image_stem(path, stem):
    assert image_stem(path) == stem


@pytest.mark.parametrize("path", ["", ".", "..", "/data/pxr/..", "/data/pxr/"])
def test_image_stem_refuses_paths_without_a_file_name(path):
    with pytest.raises(ValueError, match="expected the path of an image file, but it ends in no file name") as raised:
        image_stem(path)
    assert repr(path) in str(raised.value)  # the message names the path


def test_unique_image_stems_hash_only_the_clashing_names(tmp_path):
    a, b, c = str(tmp_path / "a" / "pelvis.dcm"), str(tmp_path / "b" / "pelvis.DCM"), str(tmp_path / "chest.png")
    names = unique_image_stems([a, b, c])
    assert names[c] == "chest"
    for path in (a, b):  # "pelvis" + "_" + the first 8 hex digits of the SHA-1 of the absolute path
        assert names[path] == "pelvis_" + hashlib.sha1(path.encode()).hexdigest()[:8]
    assert names[a] != names[b]


def test_unique_image_stems_key_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = unique_image_stems(["pelvis.dcm"])
    assert names == {os.path.join(str(tmp_path), "pelvis.dcm"): "pelvis"}

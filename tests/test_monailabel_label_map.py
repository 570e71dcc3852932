"""The label image that carries landmarks and fracture sites between a viewer and the MONAI Label app."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from custom_transforms.conventions import LANDMARK_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monailabel_app"))
from lib.label_map import (  # noqa: E402
    FRACTURE_VALUE,
    LABELS,
    fracture_points_to_label,
    heatmap_to_label,
    label_to_annotation,
    landmarks_to_label,
)


def _landmarks(rng, shape_hw, margin=12):
    h, w = shape_hw
    # a 4 x 4 grid with sub-pixel jitter keeps the discs apart
    xs = np.linspace(margin, w - 1 - margin, 4)
    ys = np.linspace(margin, h - 1 - margin, 4)
    grid = np.array([[x, y] for y in ys for x in xs])
    return grid + rng.uniform(-0.5, 0.5, grid.shape)


def test_label_values_follow_the_landmark_order_then_fracture():
    assert [LABELS[n] for n in LANDMARK_NAMES] == list(range(1, 17))
    assert LABELS["fracture"] == FRACTURE_VALUE == 17
    assert len(set(LABELS.values())) == len(LABELS)


@pytest.mark.parametrize("spacing", [None, (0.5, 0.5), (0.4, 0.7)])
def test_landmarks_round_trip_through_the_label_image(spacing):
    rng = np.random.default_rng(0)
    shape = (120, 150)
    points = _landmarks(rng, shape)
    label = landmarks_to_label(points, shape, spacing_mm=spacing, radius_mm=3.0, radius_px=4.0)
    assert label.dtype == np.uint8 and label.shape == shape
    assert set(np.unique(label)) == set(range(17))
    # the pixel nearest each point carries that landmark's value
    for i, (x, y) in enumerate(points):
        assert label[int(round(y)), int(round(x))] == i + 1
    back = label_to_annotation(label)
    recovered = np.array([back["landmarks"][n] for n in LANDMARK_NAMES])
    np.testing.assert_allclose(recovered, points, atol=0.35)
    assert back["fractures"] == []


def test_disc_radius_honours_anisotropic_spacing():
    shape = (101, 101)
    points = np.full((16, 2), -50.0)  # outside: not drawn
    points[0] = [50, 50]
    label = landmarks_to_label(points, shape, spacing_mm=(0.5, 1.0), radius_mm=5.0)
    rows, cols = np.nonzero(label == 1)
    assert rows.max() - rows.min() == 20  # 5 mm / 0.5 mm = 10 px each side
    assert cols.max() - cols.min() == 10  # 5 mm / 1 mm = 5 px each side


def test_fracture_regions_become_points_at_their_centres():
    rng = np.random.default_rng(1)
    shape = (120, 150)
    label = landmarks_to_label(_landmarks(rng, shape), shape, radius_px=3.0)
    fractures = np.array([[40.3, 60.2], [110.0, 61.7]])
    drawn = fracture_points_to_label(fractures, shape, spacing_mm=(1.0, 1.0), radius_mm=6.0, radius_px=6.0)
    label[drawn > 0] = FRACTURE_VALUE
    found = np.array(sorted(label_to_annotation(label)["fractures"]))
    np.testing.assert_allclose(found, fractures, atol=0.5)


def test_heatmap_thresholded_at_the_operating_point():
    heat = np.array([[0.1, 0.5], [0.49, 0.9]], dtype=np.float32)
    np.testing.assert_array_equal(heatmap_to_label(heat[None], 0.5), [[0, 17], [0, 17]])


def test_missing_landmark_and_unknown_value_are_named():
    shape = (60, 60)
    label = np.zeros(shape, np.uint8)
    label[5:8, 5:8] = 1
    with pytest.raises(ValueError, match=r"case7\.nii\.gz.*asis_l"):
        label_to_annotation(label, source="case7.nii.gz")
    label = landmarks_to_label(_landmarks(np.random.default_rng(2), shape, margin=5), shape, radius_px=1.0)
    label[0, 0] = 30
    with pytest.raises(ValueError, match=r"\[30\] are no class"):
        label_to_annotation(label, source="x")


@pytest.mark.parametrize("extension", [".nii.gz", ".png"])
def test_label_files_read_back_as_written(extension):
    from lib.datastore_labels import read_label_image
    from lib.label_writer import write_label

    label = np.zeros((30, 50), np.uint8)
    label[3, 40] = 7  # row 3, column 40: asymmetric, so a transposition or a flip shows
    label[25, 2] = 17
    path = write_label(label, (0.5, 0.8), extension)
    try:
        np.testing.assert_array_equal(read_label_image(path), label)
    finally:
        os.remove(path)


def test_nifti_label_has_the_radiograph_geometry_and_flipped_axes_are_undone(tmp_path):
    import nibabel as nib

    from lib.datastore_labels import read_label_image
    from lib.label_writer import write_label

    label = np.zeros((30, 50), np.uint8)
    label[3, 40] = 7
    path = write_label(label, (0.5, 0.8), ".nii.gz")
    image = nib.load(path)
    image = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    os.remove(path)
    # ITK's view of a DX: spacing (col, row) mm, origin 0, identity direction in LPS = diag(-1, -1, 1) in RAS
    np.testing.assert_allclose(image.affine, np.diag([-0.8, -0.5, 1.0, 1.0]))
    assert np.asarray(image.dataobj)[40, 3, 0] == 7  # axis 0 = column (x), axis 1 = row (y)
    # a viewer that stores the same label with the x axis flipped (RAS +x, data reversed along x)
    flipped_affine = np.diag([0.8, -0.5, 1.0, 1.0])
    flipped_affine[0, 3] = -0.8 * 49
    flipped = nib.Nifti1Image(np.asarray(image.dataobj)[::-1].copy(), flipped_affine)
    nib.save(flipped, tmp_path / "flipped.nii.gz")
    np.testing.assert_array_equal(read_label_image(str(tmp_path / "flipped.nii.gz")), label)


def test_annotation_from_a_label_image_and_a_json_label(tmp_path):
    from lib.datastore_labels import annotation_from_label
    from lib.label_writer import write_label

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dicom_factory import write_dx

    shape = (120, 150)
    points = _landmarks(np.random.default_rng(4), shape)
    pixels = np.full(shape, 100, np.uint16) + np.arange(150, dtype=np.uint16)
    image = write_dx(tmp_path / "case.dcm", pixels, spacing_mm=(1.0, 1.0))
    label = landmarks_to_label(points, shape, spacing_mm=(1.0, 1.0), radius_mm=3.0)
    label[fracture_points_to_label([[75.0, 60.0]], shape, (1.0, 1.0), 5.0, 5.0) > 0] = FRACTURE_VALUE
    label_path = tmp_path / "case.nii.gz"
    os.replace(write_label(label, (1.0, 1.0)), label_path)

    path, content = annotation_from_label(str(label_path), image, str(tmp_path / "work"))
    assert path.startswith(str(tmp_path / "work")) and Path(path).is_file()
    np.testing.assert_allclose([content["landmarks"][n] for n in LANDMARK_NAMES], points, atol=0.35)
    np.testing.assert_allclose(content["fractures"], [[75.0, 60.0]], atol=0.5)
    assert annotation_from_label(str(label_path), image, str(tmp_path / "work"))[0] == path  # converted once

    json_label = tmp_path / "case.json"
    json_label.write_text(json.dumps({"landmarks": dict(zip(LANDMARK_NAMES, points.tolist())), "fractures": []}))
    path, content = annotation_from_label(str(json_label), image, str(tmp_path / "work"))
    assert path == str(json_label) and content["fractures"] == []  # used as it is
    np.testing.assert_allclose([content["landmarks"][n] for n in LANDMARK_NAMES], points, atol=1e-4)

    with pytest.raises(ValueError, match=r"case\.nii\.gz: label image is 120 x 150 .* is 60 x 150"):
        small = write_dx(tmp_path / "small.dcm", np.full((60, 150), 100, np.uint16) + np.arange(150, dtype=np.uint16))
        annotation_from_label(str(label_path), small, str(tmp_path / "work2"))

"""The label image that carries landmarks and fracture sites between a viewer and the MONAI Label app."""

from __future__ import annotations

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

"""Fracture discs in mm (anisotropic spacing) and the contrastive mask M-hat = M ∪ T∘M_f."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom_transforms import (
    AnnotationError,
    FractureMask,
    FractureMaskd,
    MirroredROI,
    ROIToOriginal,
    TPSGrid,
    disc_mask,
    fit_symmetry_axis,
    original_points_to_roi,
)
from custom_transforms.geometry import transform_points
from synthetic_pelvis import place_landmarks


def extent(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_disc_radius_in_mm_with_anisotropic_spacing():
    # 0.2 mm rows, 0.4 mm columns: a 20 mm disc spans 201 rows and 101 columns and covers pi r^2 / (dy dx) pixels
    m = disc_mask([[150.0, 150.0]], (300, 300), (0.2, 0.4), 20.0)[0].numpy()
    assert extent(m) == (201, 101)
    assert m.sum() == pytest.approx(np.pi * 20.0**2 / (0.2 * 0.4), rel=0.01)
    assert m[150, 150] == 1 and m[150 + 100, 150] == 1 and m[150 + 101, 150] == 0 and m[150, 150 + 51] == 0


def test_disc_clipped_at_the_border_and_empty_without_fractures():
    m = disc_mask([[0.0, 0.0]], (50, 60), (1.0, 1.0), 10.0)[0].numpy()
    assert m[0, 0] == 1 and m[0, 10] == 1 and m[0, 11] == 0 and extent(m) == (11, 11)
    assert disc_mask(np.zeros((0, 2)), (50, 60), (1.0, 1.0))[0].sum() == 0


def test_disc_radius_is_20_mm_on_the_original_image_through_the_whole_geometry():
    # anisotropic original pixels; the ROI mask, put back on the original grid, is a 20 mm circle in mm
    shape, spacing = (700, 420), (0.5, 0.8)
    lm = place_landmarks(shape, spacing, 4.0)
    fracture = lm[3]
    fit = fit_symmetry_axis(lm, spacing, shape)
    out = MirroredROI((128, 256))(torch.zeros(1, *shape), lm, fit["mirror_matrix"], [fracture], spacing)
    mask, _ = FractureMask(20.0)(
        out["roi_fractures"],
        out["roi_fractures_mirrored"],
        (128, 256),
        out["roi_spacing_mm"],
        out["roi_mirrored_spacing_mm"],
    )
    back = ROIToOriginal(mode="nearest")(mask, out["roi_to_original"], shape)[0].numpy()
    rows, cols = extent(back > 0.5)
    assert rows * spacing[0] == pytest.approx(40.0, abs=2 * 0.5 + 2 * out["roi_spacing_mm"][0])
    assert cols * spacing[1] == pytest.approx(40.0, abs=2 * 0.8 + 2 * out["roi_spacing_mm"][1])


def test_contrastive_mask_adds_the_mirrored_fracture_at_the_symmetric_site():
    shape = (400, 380)
    lm = place_landmarks(shape, (1.0, 1.0), 5.0)
    fit = fit_symmetry_axis(lm)
    fracture = lm[5] + [3.0, 2.0]  # near pubic_tubercle_r
    out = MirroredROI((128, 256))(torch.zeros(1, *shape), lm, fit["mirror_matrix"], [fracture], (1.0, 1.0))
    grid = TPSGrid()(out["roi_landmarks"], out["roi_landmarks_mirrored"], (128, 256))
    mask, contrastive = FractureMask(12.0)(
        out["roi_fractures"],
        out["roi_fractures_mirrored"],
        (128, 256),
        out["roi_spacing_mm"],
        out["roi_mirrored_spacing_mm"],
        grid,
    )
    m, mh = mask[0].numpy(), contrastive[0].numpy()
    assert np.all(mh >= m) and mh.sum() == pytest.approx(2 * m.sum(), rel=0.03)  # M plus a disjoint disc of equal area
    extra = (mh > 0) & (m == 0)
    v, u = np.mgrid[0:128, 0:256]
    centroid = np.array([u[extra].mean(), v[extra].mean()])
    # for a symmetric pelvis the extra disc is centred on the fracture's mirror image, in the ROI
    expected = original_points_to_roi(transform_points(fit["mirror_matrix"], [fracture]), out["roi_to_original"])[0]
    np.testing.assert_allclose(centroid, expected, atol=0.5)


def test_dictionary_transform_and_missing_spacing():
    d = {
        "roi": torch.zeros(1, 32, 64),
        "roi_size": (32, 64),
        "roi_fractures": np.array([[10.0, 10.0]]),
        "roi_fractures_mirrored": np.array([[50.0, 10.0]]),
        "roi_spacing_mm": (1.0, 1.0),
        "roi_mirrored_spacing_mm": (1.0, 1.0),
        "tps_grid": torch.nn.functional.affine_grid(torch.eye(2, 3)[None], [1, 1, 32, 64], align_corners=False)[
            0
        ].permute(2, 0, 1),
    }
    out = FractureMaskd(radius_mm=5.0)(d)
    assert out["fracture_mask"].shape == (1, 32, 64) and out["contrastive_mask"].shape == (1, 32, 64)
    assert out["contrastive_mask"][0, 10, 50] == 1 and out["fracture_mask"][0, 10, 50] == 0
    no_spacing = {
        **d,
        "roi_spacing_mm": None,
        "roi": type("R", (), {"shape": (1, 32, 64), "meta": {"filename_or_obj": "case.png"}})(),
    }
    with pytest.raises(AnnotationError, match=r"case\.png.*spacing unknown"):
        FractureMaskd()(no_spacing)
    assert FractureMaskd(fallback_spacing_mm=(1.0, 1.0))(no_spacing)["fracture_mask"].sum() > 0

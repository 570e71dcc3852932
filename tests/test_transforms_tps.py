"""The TPS sampling grid: exact at the landmarks, smooth between them, aligning the mirrored ROI with the ROI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from custom_transforms import (
    LANDMARK_NAMES,
    MIRROR_PERMUTATION,
    GeometryError,
    MirroredROI,
    TPSGrid,
    TPSGridd,
    fit_symmetry_axis,
    fit_tps,
    tps_sampling_grid,
)
from custom_transforms.tps import MIN_JACOBIAN, SMOOTHING_SCHEDULE, jacobian_determinant
from synthetic_pelvis import place_landmarks

ROI_SIZE = (128, 256)


def grid_to_pixels(grid, size):
    """(2, h, w) normalised grid -> (h, w, 2) pixel coordinates of the sampled ROI."""
    h, w = size
    g = grid.numpy()
    return np.stack([((g[0] + 1) * w - 1) / 2, ((g[1] + 1) * h - 1) / 2], axis=-1)


def roi_pair(angle=5.0, asymmetry_mm=0.0, seed=0, shape=(400, 380)):
    """ROI landmarks and mirrored-ROI landmarks of a (possibly asymmetric) synthetic pelvis, and the ROI outputs."""
    rng = np.random.default_rng(seed)
    lm = place_landmarks(shape, (1.0, 1.0), angle) + rng.normal(0.0, asymmetry_mm, size=(16, 2))
    fit = fit_symmetry_axis(lm)
    return MirroredROI(ROI_SIZE)(torch.zeros(1, *shape), lm, fit["mirror_matrix"]), lm, fit


def sample_points(field, pts):
    """Bilinear sample of an (h, w, 2) field at [x, y] pixel points (align_corners=False convention)."""
    h, w = field.shape[:2]
    t = torch.from_numpy(field.transpose(2, 0, 1).astype(np.float64))[None]
    g = torch.from_numpy(np.stack([(2 * pts[:, 0] + 1) / w - 1, (2 * pts[:, 1] + 1) / h - 1], axis=-1))[None, None]
    return F.grid_sample(t, g, align_corners=False)[0, :, 0].numpy().T


def test_symmetric_configuration_gives_the_identity_grid():
    out, _, _ = roi_pair(angle=10.0)
    grid = TPSGrid()(out["roi_landmarks"], out["roi_landmarks_mirrored"], ROI_SIZE)
    identity = F.affine_grid(torch.eye(2, 3)[None], [1, 1, *ROI_SIZE], align_corners=False)[0].permute(2, 0, 1)
    np.testing.assert_allclose(grid.numpy(), identity.numpy(), atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_grid_maps_every_landmark_to_its_partner_and_is_smooth(seed):
    out, _, _ = roi_pair(angle=-4.0, asymmetry_mm=3.0, seed=seed)
    src, dst = out["roi_landmarks"].astype(np.float64), out["roi_landmarks_mirrored"].astype(np.float64)
    grid = TPSGrid()(src, dst, ROI_SIZE)
    assert grid.shape == (2, *ROI_SIZE) and grid.dtype == torch.float32
    field = grid_to_pixels(grid, ROI_SIZE)
    h, w = ROI_SIZE
    inside = (src[:, 0] > 0) & (src[:, 0] < w - 1) & (src[:, 1] > 0) & (src[:, 1] < h - 1)
    assert inside.sum() >= 8
    # the grid, read at each landmark of the original ROI, points at the same landmark in the mirrored ROI
    np.testing.assert_allclose(sample_points(field, src[inside]), dst[inside], atol=0.05)
    # ... and agrees everywhere with the exact spline evaluated pixel by pixel
    exact = fit_tps(src, dst, ROI_SIZE)
    v, u = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(field.reshape(-1, 2), exact(np.stack([u.ravel(), v.ravel()], 1)), atol=0.05)
    # smooth: the grid adds no roughness to the spline (same second differences), which bends gently, with a
    # positive, moderate Jacobian everywhere
    exact_field = exact(np.stack([u.ravel(), v.ravel()], 1)).reshape(h, w, 2)
    for axis in (0, 1):
        second = np.diff(field, n=2, axis=axis)
        np.testing.assert_allclose(second, np.diff(exact_field, n=2, axis=axis), atol=0.01)
        assert np.abs(second).max() < 0.25
    jac = np.gradient(field[..., 0], axis=1) * np.gradient(field[..., 1], axis=0) - np.gradient(
        field[..., 0], axis=0
    ) * np.gradient(field[..., 1], axis=1)
    assert 0.25 < jac.min() and jac.max() < 4.0


def test_affine_correspondence_gives_the_affine_grid_everywhere():
    out, _, _ = roi_pair()
    src = out["roi_landmarks"].astype(np.float64)
    a = np.array([[1.05, 0.04], [-0.03, 0.97]])
    dst = src @ a.T + [3.0, -2.0]
    field = grid_to_pixels(tps_sampling_grid(src, dst, ROI_SIZE), ROI_SIZE)
    h, w = ROI_SIZE
    v, u = np.mgrid[0:h, 0:w]
    expected = np.stack([u, v], axis=-1) @ a.T + [3.0, -2.0]
    np.testing.assert_allclose(field, expected, atol=1e-3)


def test_grid_aligns_the_mirrored_roi_with_the_roi():
    # A dot at a landmark's partner, seen in the mirrored ROI and warped with the grid, lies where the landmark
    # lies in the ROI. (Small dots: the warp's curvature shifts the centroid of a blob by O(sigma^2).)
    shape = (400, 380)
    rng = np.random.default_rng(3)
    lm = place_landmarks(shape, (1.0, 1.0), 3.0) + rng.normal(0.0, 4.0, size=(16, 2))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    fit = fit_symmetry_axis(lm)
    out = MirroredROI(ROI_SIZE, keep_aspect=False)(torch.zeros(1, *shape), lm, fit["mirror_matrix"])
    grid = TPSGrid()(out["roi_landmarks"], out["roi_landmarks_mirrored"], ROI_SIZE)
    h, w = ROI_SIZE
    for i in (3, 5, 10, 12, 14):  # one dot at a time: obturator_superior_r, pubic_tubercle_r, ..., symphysis_superior
        partner = MIRROR_PERMUTATION[i]
        img2 = torch.from_numpy(
            np.exp(-((xx - lm[partner, 0]) ** 2 + (yy - lm[partner, 1]) ** 2) / (2 * 1.0**2)).astype(np.float32)
        )[None]
        mirrored_roi = MirroredROI(ROI_SIZE, keep_aspect=False)(img2, lm, fit["mirror_matrix"])["roi_mirrored"]
        warped = F.grid_sample(mirrored_roi[None], grid.permute(1, 2, 0)[None], align_corners=False)[0, 0].numpy()
        v, u = np.mgrid[0:h, 0:w]
        centroid = np.array([(warped * u).sum(), (warped * v).sum()]) / warped.sum()
        np.testing.assert_allclose(centroid, out["roi_landmarks"][i], atol=0.3, err_msg=LANDMARK_NAMES[i])


def test_grid_at_feature_resolution_matches_the_resized_full_grid():
    out, _, _ = roi_pair(asymmetry_mm=2.0, seed=5)
    src, dst = out["roi_landmarks"], out["roi_landmarks_mirrored"]
    full = TPSGrid()(src, dst, ROI_SIZE)
    small = TPSGrid(output_size=(16, 32))(src, dst, ROI_SIZE)
    resized = F.interpolate(full[None], size=(16, 32), mode="bilinear", align_corners=False, antialias=False)[0]
    # normalised coordinates refer to the ROI edges, so both agree up to the interpolation of a smooth field
    np.testing.assert_allclose(small.numpy(), resized.numpy(), atol=2e-3)
    assert small.shape == (2, 16, 32)


def test_dictionary_transform():
    out, _, _ = roi_pair()
    d = TPSGridd()({**out})
    assert d["tps_grid"].shape == (2, *ROI_SIZE) and d["tps_warp"] == "tps"


def swapped_tubercles():
    """ROI landmarks and mirrored-ROI landmarks with the pubic tubercles exchanged in the mirrored ROI: plausible
    points (each one lies where a landmark lies), but the exact spline must carry each tubercle across the
    symphysis to the other's place and folds."""
    out, _, _ = roi_pair()
    src = out["roi_landmarks"].astype(np.float64)
    dst = src.copy()
    i, j = LANDMARK_NAMES.index("pubic_tubercle_r"), LANDMARK_NAMES.index("pubic_tubercle_l")
    dst[[i, j]] = dst[[j, i]]
    return out, src, dst


def pixel_jacobian(grid):
    field = grid_to_pixels(grid, grid.shape[1:])
    dx_du, dx_dv = np.gradient(field[..., 0], axis=1), np.gradient(field[..., 0], axis=0)
    dy_du, dy_dv = np.gradient(field[..., 1], axis=1), np.gradient(field[..., 1], axis=0)
    return dx_du * dy_dv - dx_dv * dy_du


def test_folding_warp_raises_without_fallback():
    _, src, dst = swapped_tubercles()
    with pytest.raises(GeometryError, match=r"case.dcm: the thin-plate spline warp folds \(Jacobian determinant -"):
        TPSGrid(fallback=False)(src, dst, ROI_SIZE, source="case.dcm")


def test_folding_landmarks_fall_back_to_the_least_smoothed_spline_that_does_not_fold(caplog):
    out, src, dst = swapped_tubercles()
    with caplog.at_level("WARNING", logger="custom_transforms.tps"):
        grid, choice = TPSGrid().grid_and_warp(src, dst, ROI_SIZE, source="case.dcm")
    assert pixel_jacobian(grid).min() >= MIN_JACOBIAN
    lam = choice.smoothing
    assert lam in SMOOTHING_SCHEDULE and choice.name == f"tps_regularised(lambda={lam:g})"
    assert choice.exact_fault.startswith("the thin-plate spline warp folds")
    # the grid is that smoothing spline, evaluated at the ROI's pixels
    h, w = ROI_SIZE
    v, u = np.mgrid[0:h, 0:w]
    smoothed = fit_tps(src, dst, ROI_SIZE, smoothing=lam)(np.stack([u.ravel(), v.ravel()], 1)).reshape(h, w, 2)
    np.testing.assert_allclose(grid_to_pixels(grid, ROI_SIZE), smoothed, atol=0.05)
    # ... and the schedule's step before it still folds
    previous = SMOOTHING_SCHEDULE[SMOOTHING_SCHEDULE.index(lam) - 1] if lam != SMOOTHING_SCHEDULE[0] else 0.0
    less = fit_tps(src, dst, ROI_SIZE, smoothing=previous)(np.stack([u.ravel(), v.ravel()], 1)).reshape(h, w, 2)
    assert jacobian_determinant(less, np.arange(w), np.arange(h)).min() < MIN_JACOBIAN
    # it misses the swapped tubercles, by what the choice reports, and the log names the file and the warp
    inside = (src[:, 0] > 0) & (src[:, 0] < w - 1) & (src[:, 1] > 0) & (src[:, 1] < h - 1)
    miss = np.linalg.norm(sample_points(grid_to_pixels(grid, ROI_SIZE), src[inside]) - dst[inside], axis=1)
    assert miss.max() == pytest.approx(choice.landmark_error_px, abs=0.1) and choice.landmark_error_px > 1.0
    assert "case.dcm: the thin-plate spline warp folds" in caplog.text and choice.name in caplog.text
    # the dictionary transform names the warp for the report
    d = TPSGridd()({**out, "roi_landmarks": src, "roi_landmarks_mirrored": dst})
    assert d["tps_warp"] == choice.name
    torch.testing.assert_close(d["tps_grid"], grid)


def test_affine_fit_is_the_last_fallback(monkeypatch):
    import custom_transforms.tps as tps

    monkeypatch.setattr(tps, "SMOOTHING_SCHEDULE", ())
    _, src, dst = swapped_tubercles()
    grid, choice = TPSGrid().grid_and_warp(src, dst, ROI_SIZE)
    assert choice.name == "affine" and choice.smoothing == float("inf")
    # the least-squares affine map of the landmarks, at every pixel
    design = np.hstack([np.ones((16, 1)), src])
    coefficients = np.linalg.lstsq(design, dst, rcond=None)[0]
    h, w = ROI_SIZE
    v, u = np.mgrid[0:h, 0:w]
    expected = coefficients[0] + np.stack([u, v], axis=-1) @ coefficients[1:]
    np.testing.assert_allclose(grid_to_pixels(grid, ROI_SIZE), expected, atol=2e-3)


def test_ill_conditioned_exact_spline_falls_back(monkeypatch):
    import custom_transforms.tps as tps

    monkeypatch.setattr(tps, "MAX_FIT_RESIDUAL_PX", -1.0)  # no exact spline is good enough
    out, _, _ = roi_pair(asymmetry_mm=3.0)
    _, choice = TPSGrid().grid_and_warp(out["roi_landmarks"], out["roi_landmarks_mirrored"], ROI_SIZE)
    assert choice.name == f"tps_regularised(lambda={SMOOTHING_SCHEDULE[0]:g})"
    assert "ill-conditioned" in choice.exact_fault
    with pytest.raises(GeometryError, match="ill-conditioned"):
        TPSGrid(fallback=False)(out["roi_landmarks"], out["roi_landmarks_mirrored"], ROI_SIZE)


def test_clean_landmarks_keep_the_exact_spline():
    out, _, _ = roi_pair(angle=-4.0, asymmetry_mm=3.0, seed=1)
    grid, choice = TPSGrid().grid_and_warp(out["roi_landmarks"], out["roi_landmarks_mirrored"], ROI_SIZE)
    assert choice.name == "tps" and choice.smoothing == 0 and choice.exact_fault is None
    assert choice.landmark_error_px < 1e-6 and choice.min_jacobian >= MIN_JACOBIAN
    strict = TPSGrid(fallback=False)(out["roi_landmarks"], out["roi_landmarks_mirrored"], ROI_SIZE)
    torch.testing.assert_close(grid, strict)


def test_mirror_reversed_landmarks_are_refused_even_with_fallback():
    # the mirrored ROI's landmarks flipped left-right but not renamed: every warp, down to the affine fit, turns
    # the ROI inside out; no smoothing makes such landmarks correspond
    out, _, _ = roi_pair(asymmetry_mm=2.0)
    src = out["roi_landmarks"].astype(np.float64)
    dst = out["roi_landmarks_mirrored"].astype(np.float64).copy()
    dst[:, 0] = ROI_SIZE[1] - 1 - dst[:, 0]
    refusal = r"case.dcm: .*folds.*affine fit of the landmarks \(determinant -.*mirror-reversed or misnamed"
    with pytest.raises(GeometryError, match=refusal):
        TPSGrid()(src, dst, ROI_SIZE, source="case.dcm")


def test_coincident_and_collinear_landmarks_raise():
    out, _, _ = roi_pair()
    src = out["roi_landmarks"].astype(np.float64)
    dst = src.copy()
    dst[LANDMARK_NAMES.index("symphysis_inferior")] = dst[LANDMARK_NAMES.index("symphysis_superior")]
    with pytest.raises(
        GeometryError, match="'symphysis_superior' and 'symphysis_inferior' coincide in the mirrored ROI"
    ):
        TPSGrid()(src, dst, ROI_SIZE)
    line = np.stack([np.linspace(0, 200, 16), np.linspace(10, 100, 16)], axis=1)
    with pytest.raises(GeometryError, match="collinear"):
        TPSGrid()(line, line, ROI_SIZE)

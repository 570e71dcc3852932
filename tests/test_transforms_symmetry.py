"""Symmetry axis (total least squares through pair midpoints and symphysis) and the reflection about it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from custom_transforms import (
    MIRROR_PERMUTATION,
    GeometryError,
    SymmetryAxisd,
    fit_symmetry_axis,
    mirror_landmarks,
    reflection_matrix,
)
from custom_transforms.geometry import transform_points
from synthetic_pelvis import place_landmarks, template_landmarks_mm

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("seed", range(5))
def test_reflection_twice_is_identity_and_fixes_the_axis(seed):
    rng = np.random.default_rng(seed)
    point, direction = rng.normal(size=2) * 100, rng.normal(size=2)
    m = reflection_matrix(point, direction)
    np.testing.assert_allclose(m @ m, np.eye(3), atol=1e-12)
    pts = rng.normal(size=(20, 2)) * 300
    np.testing.assert_allclose(transform_points(m, transform_points(m, pts)), pts, atol=1e-9)
    on_axis = point + np.outer(rng.normal(size=5), direction)
    np.testing.assert_allclose(transform_points(m, on_axis), on_axis, atol=1e-9)
    assert np.linalg.det(m[:2, :2]) == pytest.approx(-1.0)  # a reflection, not a rotation
    # distances are preserved
    d0 = np.linalg.norm(pts[0] - pts[1])
    assert np.linalg.norm(transform_points(m, pts[:1]) - transform_points(m, pts[1:2])) == pytest.approx(d0)


@pytest.mark.parametrize("angle", [0.0, 7.0, -12.0, 30.0, 60.0])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 0.8)])
def test_symmetric_configuration_gives_its_axis_and_mirrored_landmarks_land_on_partners(angle, spacing):
    shape = (900, 900)
    lm = place_landmarks(shape, spacing, angle_deg=angle)
    fit = fit_symmetry_axis(lm, spacing, shape)
    # expected axis direction: the template's vertical axis rotated by `angle`, expressed in pixels
    t = np.deg2rad(angle)
    down_mm = np.array([np.sin(t), np.cos(t)])  # place_landmarks rotates [0, 1] to this (y down)
    down_px = down_mm / (spacing[1], spacing[0])
    down_px /= np.linalg.norm(down_px)
    np.testing.assert_allclose(fit["direction"], down_px, atol=1e-9)
    assert fit["direction"][1] > 0
    mirrored = mirror_landmarks(lm, fit["mirror_matrix"])
    np.testing.assert_allclose(mirrored, lm, atol=1e-6)  # renamed mirror image == the original configuration
    np.testing.assert_allclose(fit["mirror_matrix"] @ fit["mirror_matrix"], np.eye(3), atol=1e-12)
    # the raw reflection of each landmark is its partner
    np.testing.assert_allclose(transform_points(fit["mirror_matrix"], lm), lm[list(MIRROR_PERMUTATION)], atol=1e-6)


def test_axis_is_the_total_least_squares_line_through_midpoints_and_symphysis():
    # Shift each pair (both members) and each symphysis point sideways by s_k with sum(s) = 0 and
    # sum(s * y) = 0: the nine fitted points then have zero x-y covariance, so their TLS line is exactly the
    # vertical through their centroid, although no pair is symmetric about it any more.
    lm_mm = template_landmarks_mm()
    fit_rows = [[i, int(MIRROR_PERMUTATION[i])] for i in range(7)] + [[14], [15]]
    y = np.array([lm_mm[rows[0], 1] for rows in fit_rows])
    basis = np.stack([np.ones(9), y - y.mean()], axis=1)
    s = RNG.normal(size=9) * 5.0
    s -= basis @ np.linalg.lstsq(basis, s, rcond=None)[0]
    for rows, shift in zip(fit_rows, s):
        lm_mm[rows, 0] += shift
    lm = place_landmarks((600, 600), (1.0, 1.0), points_mm=lm_mm, centre_xy=(290, 300))
    fit = fit_symmetry_axis(lm)
    np.testing.assert_allclose(fit["direction"], [0.0, 1.0], atol=1e-9)
    assert fit["point"][0] == pytest.approx(290.0)
    assert np.abs(mirror_landmarks(lm, fit["mirror_matrix"]) - lm).max() > 1.0


def test_dictionary_transform_uses_image_spacing():
    spacing = (0.5, 0.8)
    lm = place_landmarks((900, 900), spacing, angle_deg=20.0)
    img = MetaTensor(torch.zeros(1, 900, 900), meta={"spacing_mm": spacing, "filename_or_obj": "x.dcm"})
    out = SymmetryAxisd()({"image": img, "landmarks": lm})
    np.testing.assert_allclose(mirror_landmarks(lm, out["mirror_matrix"]), lm, atol=1e-6)
    assert set(out["symmetry_axis"]) == {"point", "direction"}
    # ignoring the anisotropic spacing would give a different (wrong) reflection
    wrong = fit_symmetry_axis(lm, None)["mirror_matrix"]
    assert np.abs(mirror_landmarks(lm, wrong) - lm).max() > 1.0


def test_coincident_landmarks_raise():
    with pytest.raises(GeometryError, match="coincide"):
        fit_symmetry_axis(np.full((16, 2), 50.0), source="case.dcm")


def test_coincident_midpoints_raise():
    # every pair symmetric about one point, symphysis points on it too: no line is defined
    lm = place_landmarks((600, 600), (1.0, 1.0))
    centre = lm.mean(axis=0)
    pts = lm.copy()
    for right, left in [(i, int(MIRROR_PERMUTATION[i])) for i in range(7)]:
        pts[left] = 2 * centre - pts[right]
    pts[14] = pts[15] = centre
    with pytest.raises(GeometryError, match=r"case\.dcm.*midpoints.*coincide"):
        fit_symmetry_axis(pts, source="case.dcm")


def test_collinear_landmarks_raise():
    lm = np.stack([np.full(16, 300.0), np.linspace(100, 500, 16)], axis=1)  # all on one vertical line
    with pytest.raises(GeometryError, match=r"case\.dcm.*not mirror images.*collinear"):
        fit_symmetry_axis(lm, source="case.dcm")


def test_axis_missing_the_image_raises():
    lm = place_landmarks((600, 600), (1.0, 1.0), centre_xy=(800, 300))  # the pelvis lies right of a 600-wide image
    with pytest.raises(GeometryError, match=r"case\.dcm.*does not cross the 600 x 600 image"):
        fit_symmetry_axis(lm, image_shape=(600, 600), source="case.dcm")
    fit_symmetry_axis(lm, image_shape=(600, 1200))  # fine when the image is wide enough


def test_scattered_midpoints_raise():
    lm = place_landmarks((600, 600), (1.0, 1.0))
    lm[:7, 0] -= np.array([0, 150, 0, 150, 0, 150, 0])  # shift right-side points so the midpoints zig-zag widely
    lm[14:, :] = [[150, 300], [450, 300]]
    with pytest.raises(GeometryError):
        fit_symmetry_axis(lm, source="case.dcm")

"""The thin-plate spline, exact and smoothed, against hand-computed answers.

The hand case: the four corners of the square [-1, 1]^2 mapped to themselves, except the corner (1, 1), moved by
``delta`` along x. On these corners 1, x, y and s = x y are orthogonal, and the kernel matrix has s as an
eigenvector: for a corner, its two neighbours (distance 2, U = 4 ln 4 = 8 ln 2) carry -s and the opposite corner
(distance 2 sqrt 2, U = 8 ln 8 = 24 ln 2) carries +s, so K s = (24 - 16) ln 2 s = 8 ln 2 s. The moved corner's
indicator is (1 + x + y + s) / 4, so the x part of the spline is

    weights  w = delta / (4 (8 ln 2 + lambda)) s,     affine part  x + delta / 4 (1 + x + y),

it misses the moved corner by lambda w = delta lambda / (4 (8 ln 2 + lambda)) (0 without smoothing, delta / 4 for
the affine fit), and at the centre the kernel terms cancel (all at distance sqrt 2, weights summing to 0): f(0, 0)
= (delta / 4, 0) for every lambda.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from custom_transforms.thin_plate_spline import ThinPlateSpline, tps_kernel

CORNERS = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
SIGNS = CORNERS[:, 0] * CORNERS[:, 1]
DELTA = 0.3


def moved_corner_values() -> np.ndarray:
    values = CORNERS.copy()
    values[0, 0] += DELTA
    return values


def test_kernel_is_r2_log_r2_and_zero_at_zero():
    np.testing.assert_allclose(tps_kernel(np.array([0.0, 1.0, 4.0, 8.0])), [0.0, 0.0, 4 * math.log(4), 8 * math.log(8)])


@pytest.mark.parametrize("smoothing", [0.0, 0.5, 3.0])
def test_square_with_one_moved_corner_matches_the_hand_solution(smoothing):
    spline = ThinPlateSpline(CORNERS, moved_corner_values(), smoothing)
    c = DELTA / (4 * (8 * math.log(2) + smoothing))
    np.testing.assert_allclose(spline.weights[:, 0], c * SIGNS, atol=1e-12)
    np.testing.assert_allclose(spline.weights[:, 1], 0.0, atol=1e-12)
    # affine part rows: offset, then the matrix acting on [x, y]; columns: output x, y
    np.testing.assert_allclose(spline.affine, [[DELTA / 4, 0.0], [1 + DELTA / 4, 0.0], [DELTA / 4, 1.0]], atol=1e-12)
    miss = moved_corner_values()[0, 0] - spline(CORNERS[:1])[0, 0]
    assert miss == pytest.approx(DELTA * smoothing / (4 * (8 * math.log(2) + smoothing)), abs=1e-12)
    np.testing.assert_allclose(spline([[0.0, 0.0]])[0], [DELTA / 4, 0.0], atol=1e-12)


def test_infinite_smoothing_is_the_least_squares_affine_fit():
    spline = ThinPlateSpline(CORNERS, moved_corner_values(), math.inf)
    np.testing.assert_array_equal(spline.weights, 0.0)
    np.testing.assert_allclose(spline.affine, [[DELTA / 4, 0.0], [1 + DELTA / 4, 0.0], [DELTA / 4, 1.0]], atol=1e-12)
    # the affine fit misses every corner by delta / 4, alternating in sign with x y
    np.testing.assert_allclose(moved_corner_values()[:, 0] - spline(CORNERS)[:, 0], DELTA / 4 * SIGNS, atol=1e-12)
    np.testing.assert_allclose(spline.linear_part, [[1 + DELTA / 4, DELTA / 4], [0.0, 1.0]], atol=1e-12)


def test_growing_smoothing_tends_to_the_affine_fit():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-1, 1, size=(16, 2))
    values = centres @ np.array([[1.1, 0.2], [-0.1, 0.9]]).T + 0.05 * rng.normal(size=(16, 2))
    affine = ThinPlateSpline(centres, values, math.inf)
    probe = rng.uniform(-1, 1, size=(50, 2))
    gaps = [np.abs(ThinPlateSpline(centres, values, lam)(probe) - affine(probe)).max() for lam in (1.0, 1e2, 1e4, 1e6)]
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))  # monotone
    assert gaps[-1] < 1e-5  # the kernel part shrinks like 1 / lambda


def test_without_smoothing_the_spline_interpolates_and_reproduces_an_affine_map_everywhere():
    rng = np.random.default_rng(1)
    centres = rng.uniform(-1, 1, size=(16, 2))
    values = centres + 0.1 * np.sin(3 * centres[:, ::-1])
    np.testing.assert_allclose(ThinPlateSpline(centres, values)(centres), values, atol=1e-10)
    matrix, offset = np.array([[0.9, 0.3], [-0.2, 1.2]]), np.array([0.4, -0.7])
    spline = ThinPlateSpline(centres, centres @ matrix.T + offset)
    np.testing.assert_allclose(spline.weights, 0.0, atol=1e-10)
    probe = rng.uniform(-2, 2, size=(30, 2))
    np.testing.assert_allclose(spline(probe), probe @ matrix.T + offset, atol=1e-10)


def test_bad_input_raises_value_errors():
    with pytest.raises(ValueError, match="smoothing must be >= 0"):
        ThinPlateSpline(CORNERS, CORNERS, -1.0)
    with pytest.raises(ValueError, match="at least 3 centres"):
        ThinPlateSpline(CORNERS[:2], CORNERS[:2])
    with pytest.raises(ValueError, match="singular"):
        ThinPlateSpline(np.vstack([CORNERS, CORNERS[:1]]), np.vstack([CORNERS, CORNERS[:1] + 1]))
    line = np.stack([np.linspace(0, 1, 5), np.linspace(0, 2, 5)], axis=1)
    with pytest.raises(ValueError, match="one line"):
        ThinPlateSpline(line, line, math.inf)

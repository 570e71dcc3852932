"""The geometry toolkit of ``custom_transforms``: point transforms, ``grid_sample`` coordinates, spacing, resampling.

Expected values are worked out by hand in the comments, so that a change of convention shows as a failure here and
not as a sub-pixel drift somewhere downstream.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom_transforms.geometry import (
    normalized_to_pixel,
    pixel_to_normalized,
    pixels_to_mm,
    spacing_xy,
    transform_points,
)
from custom_transforms.resampling import sample_affine

# x' = 2x + 10, y' = 3y - 1
AFFINE = np.array([[2.0, 0.0, 10.0], [0.0, 3.0, -1.0], [0.0, 0.0, 1.0]])


def test_transform_points_applies_the_matrix_to_column_vectors():
    # [1, 2] -> [2*1 + 10, 3*2 - 1] = [12, 5]; [-0.5, 0] -> [9, -1]
    np.testing.assert_array_equal(transform_points(AFFINE, [[1.0, 2.0], [-0.5, 0.0]]), [[12.0, 5.0], [9.0, -1.0]])
    # the translation column acts on [x, y, 1]: a rotation by 90 degrees about the origin, then a shift
    rotate = np.array([[0.0, -1.0, 5.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(transform_points(rotate, [[1.0, 0.0]]), [[5.0, 1.0]])  # [-0 + 5, 1 + 0]


def test_transform_points_keeps_any_leading_shape_and_torch_input():
    points = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])  # (2, 1, 2)
    out = transform_points(AFFINE, points)
    assert out.shape == (2, 1, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out[:, 0], [[12.0, 5.0], [10.0, -1.0]])
    np.testing.assert_array_equal(transform_points(AFFINE, [1.0, 2.0]), [12.0, 5.0])  # one point
    assert transform_points(AFFINE, np.zeros((0, 2))).shape == (0, 2)


def test_transform_points_divides_by_the_projective_coordinate():
    # w = 0.5 x + 1: [2, 4] -> [2, 4, 2] -> [1, 2]
    projective = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]])
    np.testing.assert_allclose(transform_points(projective, [[2.0, 4.0]]), [[1.0, 2.0]])


def test_transform_points_names_what_it_expected():
    with pytest.raises(
        ValueError, match=r"points: expected \[x, y\] points with shape \(\.\.\., 2\), got shape \(2, 3\)"
    ):
        transform_points(AFFINE, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"matrix: expected a \(3, 3\) homogeneous matrix, got shape \(2, 3\)"):
        transform_points(AFFINE[:2], [[0.0, 0.0]])


def test_grid_sample_coordinates_of_pixel_centres_and_edges():
    # 4 pixels span [-1, 1]: each is 0.5 wide, so pixel centres 0..3 sit at -0.75, -0.25, 0.25, 0.75 and the outer
    # edges (-0.5 and 3.5) at -1 and 1
    pixels = np.array([-0.5, 0.0, 1.0, 2.0, 3.0, 3.5])
    expected = np.array([-1.0, -0.75, -0.25, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(pixel_to_normalized(pixels, 4), expected)
    np.testing.assert_allclose(normalized_to_pixel(expected, 4), pixels)
    assert torch.allclose(pixel_to_normalized(torch.tensor([0.0]), 4), torch.tensor([-0.75]))


def test_grid_sample_coordinates_agree_with_grid_sample():
    image = torch.arange(5.0).reshape(1, 1, 1, 5)  # value = column
    x = torch.tensor([0.0, 1.25, 4.0])
    grid = torch.stack([pixel_to_normalized(x, 5), torch.zeros(3)], dim=-1).reshape(1, 1, 3, 2)
    sampled = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    assert torch.allclose(sampled.reshape(-1), x)


def test_spacing_is_row_col_and_points_are_x_y():
    np.testing.assert_array_equal(spacing_xy((0.4, 0.2)), [0.2, 0.4])  # (row, col) -> (dx, dy)
    np.testing.assert_array_equal(spacing_xy(None), [1.0, 1.0])
    # x is scaled by the column spacing (0.2), y by the row spacing (0.4)
    np.testing.assert_allclose(pixels_to_mm([[10.0, 10.0], [5.0, -2.0]], (0.4, 0.2)), [[2.0, 4.0], [1.0, -0.8]])
    with pytest.raises(ValueError, match="spacing is unknown"):
        pixels_to_mm([[1.0, 1.0]], None)
    with pytest.raises(ValueError, match=r"spacing_mm: expected \(row, col\)"):
        spacing_xy((0.1, 0.2, 0.3))


def test_sample_affine_reads_the_source_where_the_matrix_points():
    # a ramp image: value = 10 * row + column, 6 x 8
    rows, cols = np.mgrid[:6, :8]
    image = torch.as_tensor(10.0 * rows + cols, dtype=torch.float32)[None]
    # output pixel [u, v] -> source pixel [u + 2, v + 1]: output value = 10 (v + 1) + u + 2
    shift = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    out = sample_affine(image, shift, (3, 4))
    v, u = np.mgrid[:3, :4]
    np.testing.assert_allclose(out[0].numpy(), 10.0 * (v + 1) + u + 2, atol=1e-4)
    assert out.shape == (1, 3, 4)


def test_sample_affine_batches_matrices_over_one_image_or_one_image_each():
    rows, cols = np.mgrid[:6, :8]
    image = torch.as_tensor(10.0 * rows + cols, dtype=torch.float32)[None]
    shifts = np.stack([np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]]) for dx, dy in ((0, 0), (3, 2))])
    out = sample_affine(image[None], shifts, (2, 2))  # one image, two matrices: (K, C, h, w)
    assert out.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(out[0, 0].numpy(), [[0.0, 1.0], [10.0, 11.0]], atol=1e-4)
    np.testing.assert_allclose(out[1, 0].numpy(), [[23.0, 24.0], [33.0, 34.0]], atol=1e-4)  # 10 * 2 + 3 = 23
    pair = sample_affine(torch.stack([image, image + 100.0]), shifts, (2, 2))  # one image per matrix
    np.testing.assert_allclose(pair[1, 0].numpy(), [[123.0, 124.0], [133.0, 134.0]], atol=1e-4)
    with pytest.raises(ValueError, match="3 images and 2 matrices"):
        sample_affine(torch.stack([image] * 3), shifts, (2, 2))

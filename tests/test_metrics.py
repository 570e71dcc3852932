"""Metrics of the paper (AUC, AP, modified FROC) against values computed by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.metrics import (  # noqa: E402
    FROCAccumulator,
    classification_metrics,
    image_scores,
    modified_froc,
    negative_region,
)


def test_auc_ap_hand_computed():
    # positive-negative pairs ranked correctly: (0.9>0.8), (0.9>0.3), (0.7>0.3); wrong: (0.7<0.8) -> 3/4
    # AP: recall steps 0.5 at precision 1 (0.9), 0.5 at precision 2/3 (0.7) -> 0.5 + 1/3
    m = classification_metrics([0.9, 0.8, 0.7, 0.3], [1, 0, 1, 0])
    assert m["auc"] == pytest.approx(0.75)
    assert m["ap"] == pytest.approx(0.5 + 1 / 3)


def test_auc_single_class_is_nan_with_warning():
    with pytest.warns(UserWarning, match="single class"):
        m = classification_metrics([0.1, 0.2], [0, 0])
    assert math.isnan(m["auc"]) and math.isnan(m["ap"])


def test_image_score_is_heatmap_maximum():
    h = np.zeros((2, 1, 4, 6))
    h[0, 0, 1, 2] = 0.7
    h[1, 0, 3, 5] = 0.2
    np.testing.assert_allclose(image_scores(h), [0.7, 0.2])


def test_negative_region_isotropic_and_anisotropic():
    # isotropic 1 mm, radius 1.5 mm around [x=1, y=1]: the 3x3 block of rows 0-2, cols 0-2 is excluded
    neg = negative_region((5, 5), np.array([[1.0, 1.0]]), (1.0, 1.0), 1.5)
    expected = np.ones((5, 5), bool)
    expected[0:3, 0:3] = False
    np.testing.assert_array_equal(neg, expected)
    # rows 2 mm apart, columns 1 mm, radius 2.5 mm around [2, 2]: (dx)^2 + (2 dy)^2 <= 6.25
    neg = negative_region((5, 5), np.array([[2.0, 2.0]]), (2.0, 1.0), 2.5)
    excluded = ~neg
    assert excluded.sum() == 11  # 5 on the point's row, 3 on each adjacent row, none two rows away
    np.testing.assert_array_equal(excluded[2], [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(excluded[1], [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(excluded[0], [0, 0, 0, 0, 0])
    # no points: everything is negative
    assert negative_region((3, 4), np.zeros((0, 2)), (1, 1), 20).all()


def _three_images():
    a = np.zeros((5, 5))
    a[1, 1] = 0.8  # the fracture
    a[0, 0] = 0.95  # inside the excluded band: neither FP nor recall
    a[4, 4] = 0.6  # a false positive (1 of 16 negative pixels)
    b = np.zeros((5, 5))  # no fracture: 25 negative pixels
    b[2, 2] = 0.7
    b[3, 3] = 0.5
    c = np.zeros((5, 5))
    c[2, 3] = 0.4  # fracture at x=3, y=2
    c[0, 0] = 0.3
    points = [np.array([[1.0, 1.0]]), np.zeros((0, 2)), np.array([[3.0, 2.0]])]
    return [a, b, c], points, [(1.0, 1.0)] * 3


def test_modified_froc_hand_computed():
    heatmaps, points, spacings = _three_images()
    curve = modified_froc(heatmaps, points, spacings, radius_mm=1.5)
    # thresholds: inf, then the fracture values 0.8 and 0.4
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.8, 0.4])
    np.testing.assert_allclose(curve.recall, [0.0, 0.5, 1.0])
    # t=0.8: no negative pixel >= 0.8; t=0.4: A 1/16, B 2/25, C 0 (0.3 < 0.4) -> mean over 3 images
    np.testing.assert_allclose(curve.fp_ratio, [0.0, 0.0, (1 / 16 + 2 / 25) / 3])
    assert curve.num_fractures == 2 and curve.num_images == 3
    assert curve.recall_at(0.01) == pytest.approx(0.5)
    assert curve.recall_at(0.04) == pytest.approx(0.5)
    assert curve.recall_at(0.05) == pytest.approx(1.0)
    assert curve.threshold_at(0.05) == pytest.approx(0.4)
    assert curve.threshold_at(0.01) == pytest.approx(0.8)


def test_froc_accumulator_equals_batch_and_counts_outside_points_as_missed():
    heatmaps, points, spacings = _three_images()
    acc = FROCAccumulator(radius_mm=1.5)
    for h, p, s in zip(heatmaps, points, spacings):
        acc.add(h[None], p, s)  # a leading channel is accepted
    # a fourth image whose fracture lies outside the grid: a miss at every threshold
    acc.add(np.zeros((5, 5)), np.array([[7.0, 2.0]]), (1.0, 1.0))
    curve = acc.curve()
    assert curve.num_fractures == 3
    np.testing.assert_allclose(curve.recall, [0.0, 1 / 3, 2 / 3])
    # the fourth image adds 0 FP but one more image to the mean; its band clips part of the grid:
    # pixels within 1.5 mm of (7, 2) on a 5x5 grid -> none (nearest column is 4, 3 px away)
    np.testing.assert_allclose(curve.fp_ratio[-1], (1 / 16 + 2 / 25) / 4)
    assert curve.recall_at(1.0) == pytest.approx(2 / 3)


def test_froc_without_fractures_gives_nan_recall():
    curve = modified_froc([np.ones((3, 3))], [np.zeros((0, 2))], [(1, 1)])
    assert math.isnan(curve.recall_at(0.01))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="labels must be 0/1"):
        classification_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="heatmap must be"):
        FROCAccumulator().add(np.zeros((2, 3, 3)), np.zeros((0, 2)), (1, 1))
    with pytest.raises(ValueError, match="2 heatmaps"):
        modified_froc([np.zeros((2, 2))] * 2, [np.zeros((0, 2))], [(1, 1)])

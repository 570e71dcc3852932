"""Statistical shape model: Procrustes, PCA, and a robust fit that corrects an outlier and keeps the rest."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from landmark_testdata import TEMPLATE_MM, random_pelvis, training_shapes  # noqa: E402

from scripts.landmarks.shape_model import StatisticalShapeModel, procrustes_align, similarity_fit  # noqa: E402


@pytest.fixture(scope="module")
def model() -> StatisticalShapeModel:
    return StatisticalShapeModel.from_shapes(training_shapes(), noise_mm=1.5)


def _similarity(points, scale, angle, shift):
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return scale * points @ rot.T + shift


def test_similarity_fit_recovers_known_transform():
    target = _similarity(TEMPLATE_MM, 1.7, 0.3, [12.0, -4.0])
    scale, rot, shift = similarity_fit(TEMPLATE_MM, target)
    assert scale == pytest.approx(1.7)
    assert math.atan2(rot[1, 0], rot[0, 0]) == pytest.approx(0.3)
    np.testing.assert_allclose(shift, [12.0, -4.0], atol=1e-9)
    # a zero weight ignores a wild point entirely
    wild = target.copy()
    wild[3] += 500
    weights = np.ones(16)
    weights[3] = 0
    assert similarity_fit(TEMPLATE_MM, wild, weights)[0] == pytest.approx(1.7)


def test_procrustes_removes_pose():
    rng = np.random.default_rng(1)
    shapes = np.stack(
        [_similarity(TEMPLATE_MM, rng.uniform(0.5, 2), rng.uniform(-1, 1), rng.normal(size=2) * 50) for _ in range(5)]
    )
    aligned, mean = procrustes_align(shapes)
    np.testing.assert_allclose(aligned, np.broadcast_to(mean, aligned.shape), atol=1e-8)
    np.testing.assert_allclose(mean.mean(0), 0, atol=1e-12)
    assert np.sqrt((mean**2).sum(1).mean()) == pytest.approx(1.0)


def test_model_statistics(model):
    assert 1 <= model.num_modes < 32
    assert np.all(np.diff(model.variances) <= 0)
    modes = model.modes.reshape(model.num_modes, -1)
    np.testing.assert_allclose(modes @ modes.T, np.eye(model.num_modes), atol=1e-9)
    assert model.mean_size_mm == pytest.approx(np.sqrt((TEMPLATE_MM**2).sum(1).mean()), rel=0.1)


def test_correct_configuration_is_left_unchanged(model):
    rng = np.random.default_rng(7)
    for _ in range(5):
        points = random_pelvis(rng, centre=(400, 300), size=1.1)
        fit = model.fit(points)
        assert fit.inliers.all() and not fit.replaced.any()
        np.testing.assert_array_equal(fit.points, points)
        assert np.nanmax(fit.residuals) < 6.0  # mm


@pytest.mark.parametrize("index", range(16))
def test_one_displaced_landmark_is_pulled_back(model, index):
    rng = np.random.default_rng(100 + index)
    truth = random_pelvis(rng, centre=(250, 250))
    points = truth.copy()
    points[index] += [28.0, -21.0]  # 35 mm off
    fit = model.fit(points)
    assert fit.replaced[index] and not fit.inliers[index]
    assert np.linalg.norm(fit.points[index] - truth[index]) < 5.0  # back near its true place (was 35 mm off)
    others = np.arange(16) != index
    np.testing.assert_array_equal(fit.points[others], points[others])  # the others are not followed


def test_two_outliers_and_a_missing_point(model):
    rng = np.random.default_rng(3)
    truth = random_pelvis(rng)
    points = truth.copy()
    points[2] += [40.0, 10.0]
    points[13] += [-15.0, 30.0]
    points[8] = np.nan  # a landmark the detector did not find
    fit = model.fit(points)
    assert set(np.flatnonzero(fit.replaced)) == {2, 8, 13}
    errors = np.linalg.norm(fit.points - truth, axis=1)
    assert errors.max() < 6.0


def test_fit_rejects_too_few_points(model):
    valid = np.zeros(16, bool)
    valid[:3] = True
    with pytest.raises(ValueError, match="only 3 usable landmarks"):
        model.fit(TEMPLATE_MM, valid)
    with pytest.raises(ValueError, match="points must have shape"):
        model.fit(TEMPLATE_MM[:5])


def test_save_and_load_round_trip(model, tmp_path):
    path = model.save(tmp_path / "shape.json")
    loaded = StatisticalShapeModel.load(path, outlier_sigma=5.0)
    np.testing.assert_allclose(loaded.modes, model.modes)
    assert loaded.outlier_sigma == 5.0
    (tmp_path / "bad.json").write_text('{"mean": []}')
    with pytest.raises(ValueError, match="bad.json: shape model lacks"):
        StatisticalShapeModel.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        StatisticalShapeModel.load(tmp_path / "missing.json")

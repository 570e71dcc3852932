"""The landmark detector's pipeline: letterbox -> heatmaps -> sub-pixel peaks -> shape prior -> plausibility.

The network here is a stand-in that returns heatmaps planted by the test (``PlantedHeatmaps``), so that
every step after the network is checked exactly: landmarks back in original pixels, the shape prior's
correction of one wrong peak, confidences, and the rejection of images that are not a pelvis. The
workflow test (``test_landmark_workflow.py``) trains a real network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import UNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from custom_transforms.conventions import LANDMARK_NAMES  # noqa: E402
from custom_transforms.geometry import transform_points  # noqa: E402
from landmark_testdata import random_pelvis, render_pelvis, training_shapes  # noqa: E402
from simulation.nonpelvic import render_nonpelvic  # noqa: E402

from scripts.landmarks.detector import (  # noqa: E402
    DetectLandmarksd,
    LandmarkDetector,
    NotAPelvisError,
    load_network_weights,
)
from scripts.landmarks.heatmap_decoding import gaussian_heatmaps  # noqa: E402
from scripts.landmarks.letterbox import letterbox_matrix  # noqa: E402
from scripts.landmarks.shape_model import StatisticalShapeModel  # noqa: E402

INPUT_SIZE = (96, 96)
IMAGE_SIZE = (300, 400)  # (H, W): letterboxed with padding above and below
SPACING = 1.0  # mm per pixel


class PlantedHeatmaps(torch.nn.Module):
    """Stand-in network returning fixed heatmaps (one batch item), whatever the image."""

    def __init__(self, heatmaps: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("heatmaps", heatmaps.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heatmaps[None].expand(x.shape[0], -1, -1, -1)


@pytest.fixture(scope="module")
def shape_model() -> StatisticalShapeModel:
    return StatisticalShapeModel.from_shapes(training_shapes(), noise_mm=1.5)


@pytest.fixture()
def case():
    """A pelvis radiograph (toy drawing), its true landmarks (pixels) and planted heatmaps at those."""
    rng = np.random.default_rng(5)
    truth_mm = random_pelvis(rng, centre=(200.0, 140.0))
    image = MetaTensor(
        torch.from_numpy(render_pelvis(truth_mm, IMAGE_SIZE, SPACING))[None],
        meta={"spacing_mm": (SPACING, SPACING), "filename_or_obj": "/data/pelvis_001.dcm"},
    )
    truth = truth_mm / SPACING
    matrix, _ = letterbox_matrix(IMAGE_SIZE, INPUT_SIZE)
    return image, truth, matrix


def _heatmaps(points_px: np.ndarray, matrix: np.ndarray, sigma: float = 1.5) -> torch.Tensor:
    return gaussian_heatmaps(
        torch.as_tensor(transform_points(matrix, points_px), dtype=torch.float32), INPUT_SIZE, sigma
    )


def _detector(heatmaps, shape_model, **kwargs) -> LandmarkDetector:
    """Detector whose network returns ``heatmaps`` as regressed Gaussians (activation ``"none"``)."""
    kwargs.setdefault("activation", "none")
    return LandmarkDetector(PlantedHeatmaps(heatmaps), shape_model, input_size=INPUT_SIZE, **kwargs)


def test_landmarks_come_back_in_original_pixels(case, shape_model):
    image, truth, matrix = case
    detection = _detector(_heatmaps(truth, matrix), shape_model)(image)
    assert detection.landmarks.shape == (16, 2) and detection.landmarks.dtype == np.float32
    np.testing.assert_allclose(detection.landmarks, truth, atol=0.02)  # 96 px input, 400 px image: sub-pixel
    assert not detection.corrected.any() and detection.shape_consistent.all()
    # confidence = the peak value (a sampled Gaussian's maximum pixel is a little under 1 off the grid)
    np.testing.assert_allclose(detection.confidence, detection.peaks)
    assert detection.confidence.min() > 0.9
    assert detection.plausibility == pytest.approx(np.median(detection.peaks))


def test_spatial_softmax_logits_give_probability_confidences(case, shape_model):
    image, truth, matrix = case
    sigma = 1.5
    logits = torch.log(_heatmaps(truth, matrix, sigma).clamp_min(1e-30))  # softmax = normalised Gaussian
    detection = _detector(logits, shape_model, activation="spatial_softmax", confidence_radius=3)(image)
    np.testing.assert_allclose(detection.landmarks, truth, atol=0.02)
    # probability within 3 px of a sigma 1.5 px Gaussian (a 7 x 7 window): about 0.95 or more
    assert detection.confidence.min() > 0.9 and detection.plausibility > 0.9
    flat = _detector(torch.zeros(16, *INPUT_SIZE), shape_model, activation="spatial_softmax")
    assert flat.detect(image).confidence.max() < 0.01  # uniform: 49 of 9216 pixels
    with pytest.raises(NotAPelvisError):
        flat(image)


def test_one_wrong_peak_is_corrected_by_the_shape_prior(case, shape_model):
    image, truth, matrix = case
    wrong = truth.copy()
    wrong[9] += [30.0, 25.0]  # left acetabulum centre 39 mm off
    detection = _detector(_heatmaps(wrong, matrix), shape_model)(image)
    assert detection.corrected[9] and detection.corrected.sum() == 1
    assert np.linalg.norm(detection.heatmap_landmarks[9] - wrong[9]) < 0.1
    assert np.linalg.norm(detection.landmarks[9] - truth[9]) < 5.0  # pulled back (mm = px here)
    others = np.arange(16) != 9
    np.testing.assert_allclose(detection.landmarks[others], truth[others], atol=0.02)
    # confidence is the heatmap at the final position: nothing there for the corrected landmark
    assert detection.confidence[9] < 0.1 and detection.confidence[others].min() > 0.9
    assert detection.plausibility > 0.9  # one outlier out of 16 does not make it implausible


def test_weak_peak_is_predicted_by_the_shape_model(case, shape_model):
    image, truth, matrix = case
    heatmaps = _heatmaps(truth, matrix)
    heatmaps[4] *= 0.05  # below min_confidence: not trusted
    detection = _detector(heatmaps, shape_model, min_confidence=0.2)(image)
    assert detection.corrected[4] and detection.corrected.sum() == 1
    assert np.linalg.norm(detection.landmarks[4] - truth[4]) < 5.0


def test_without_shape_model_the_peaks_are_returned(case):
    image, truth, matrix = case
    wrong = truth.copy()
    wrong[2] += [30.0, 0.0]
    detection = _detector(_heatmaps(wrong, matrix), None)(image)
    np.testing.assert_allclose(detection.landmarks, wrong, atol=0.02)


def test_blank_image_is_rejected(case, shape_model):
    _, truth, matrix = case
    blank = MetaTensor(
        torch.full((1, *IMAGE_SIZE), 0.4), meta={"spacing_mm": (1.0, 1.0), "filename_or_obj": "/data/blank.dcm"}
    )
    # even with perfect-looking heatmaps: an image without contrast shows no anatomy
    with pytest.raises(
        NotAPelvisError, match=r"/data/blank.dcm: does not look like an AP pelvic radiograph: the image has no contrast"
    ):
        _detector(_heatmaps(truth, matrix), shape_model)(blank)


def test_chest_radiograph_without_pelvic_landmarks_is_rejected(shape_model):
    chest = MetaTensor(
        torch.from_numpy(render_nonpelvic("chest", IMAGE_SIZE, np.random.default_rng(0))[0])[None],
        meta={"spacing_mm": (1.0, 1.0)},
    )
    # a network that finds no landmark on a chest film: low, flat heatmaps
    flat = torch.full((16, *INPUT_SIZE), 0.05)
    with pytest.raises(
        NotAPelvisError, match=r"chest.dcm: does not look like an AP pelvic radiograph.*plausibility 0.0"
    ):
        _detector(flat, shape_model)(chest, source="chest.dcm")


def test_confident_peaks_in_a_non_pelvic_configuration_are_rejected(shape_model):
    chest = MetaTensor(
        torch.from_numpy(render_nonpelvic("chest", IMAGE_SIZE, np.random.default_rng(0))[0])[None],
        meta={"spacing_mm": (1.0, 1.0)},
    )
    rng = np.random.default_rng(0)
    scattered = rng.uniform([20, 20], [380, 280], size=(16, 2))  # e.g. peaks on ribs and spine
    matrix, _ = letterbox_matrix(IMAGE_SIZE, INPUT_SIZE)
    detector = _detector(_heatmaps(scattered, matrix), shape_model)
    assert detector.detect(chest).plausibility < 0.3
    with pytest.raises(NotAPelvisError, match="landmarks consistent with the pelvic shape model"):
        detector(chest)


def test_pelvis_of_impossible_size_is_rejected(case, shape_model):
    image, truth, matrix = case
    detector = _detector(_heatmaps(truth, matrix), shape_model)
    image.meta["spacing_mm"] = (0.2, 0.2)  # the same picture would be a 6 cm pelvis
    with pytest.raises(NotAPelvisError):
        detector(image)
    image.meta["spacing_mm"] = None  # unknown spacing: estimated from the configuration, accepted
    detection = detector(image)
    assert detection.spacing_estimated and detection.plausibility > 0.9


def test_detect_landmarksd_fills_missing_landmarks_only(case, shape_model):
    image, truth, matrix = case
    transform = DetectLandmarksd("image", detector=_detector(_heatmaps(truth, matrix), shape_model))
    d = transform({"image": image})
    np.testing.assert_allclose(d["landmarks"], truth, atol=0.02)
    assert d["landmarks_detected"] is True and image.meta["landmarks_detected"] is True
    assert d["landmark_confidence"].shape == (16,) and d["landmark_plausibility"] > 0.9
    assert list(d["landmark_detection"]["landmarks"]) == list(LANDMARK_NAMES)
    assert d["landmark_detection"]["landmarks"]["asis_r"]["xy"] == pytest.approx(list(truth[0]), abs=0.02)
    annotated = {"image": image, "landmarks": truth + 1.0}
    out = transform(annotated)
    np.testing.assert_array_equal(out["landmarks"], truth + 1.0)
    assert out["landmarks_detected"] is False and "landmark_confidence" not in out


def test_detect_landmarksd_loads_a_lazy_detector_only_when_needed(case, shape_model):
    image, truth, matrix = case
    calls = []

    def factory():
        calls.append(1)
        return _detector(_heatmaps(truth, matrix), shape_model)

    transform = DetectLandmarksd("image", detector=factory)
    transform({"image": image, "landmarks": truth})
    assert calls == []  # annotated: never loaded
    transform({"image": image})
    transform({"image": image})
    assert calls == [1]  # loaded once, then reused


def test_detect_landmarksd_raises_for_non_pelvis(shape_model):
    flat = torch.zeros(16, *INPUT_SIZE)
    transform = DetectLandmarksd("image", detector=_detector(flat, shape_model))
    with pytest.raises(NotAPelvisError):
        transform({"image": MetaTensor(torch.rand(1, 50, 60), meta={"spacing_mm": (1.0, 1.0)})})


def test_real_network_shapes_and_weight_loading(tmp_path, case, shape_model):
    image, _, _ = case
    torch.manual_seed(0)
    network = UNet(2, 1, 16, channels=(4, 8), strides=(2,), num_res_units=0)
    path = tmp_path / "landmark_model.pt"
    torch.save(network.state_dict(), path)
    loaded = load_network_weights(UNet(2, 1, 16, channels=(4, 8), strides=(2,), num_res_units=0), path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), network.state_dict().values()))
    detector = LandmarkDetector(loaded, shape_model, input_size=(32, 48))
    detection = detector.detect(image)  # spatial softmax
    assert detection.landmarks.shape == (16, 2)
    # an untrained network's softmax is nearly flat (a 7 x 7 window holds about 49 / (32 x 48) of it): no peak reaches
    # the minimum confidence, the shape model has nothing to fit, no landmark is consistent, the plausibility is 0
    assert detection.peaks == pytest.approx(np.full(16, 49 / (32 * 48)), rel=0.5)
    assert detection.peaks.max() < detector.min_confidence
    assert not detection.shape_consistent.any() and detection.plausibility == 0.0
    with pytest.raises(FileNotFoundError, match="landmark_train.json"):
        load_network_weights(network, tmp_path / "missing.pt")

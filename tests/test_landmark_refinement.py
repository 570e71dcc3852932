"""Local refinement stage: patch geometry, training/validation patches, and refinement of coarse positions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from custom_transforms.geometry import transform_points  # noqa: E402
from landmark_testdata import training_shapes  # noqa: E402

from scripts.landmarks.detector import LandmarkDetector  # noqa: E402
from scripts.landmarks.heatmap_decoding import gaussian_heatmaps  # noqa: E402
from scripts.landmarks.letterbox import letterbox_matrix  # noqa: E402
from scripts.landmarks.refinement import (  # noqa: E402
    LOCAL_MATRIX,
    LandmarkPatchesd,
    LandmarkRefiner,
    PatchHeatmapsToMillimetresd,
    RandLandmarkPatchesd,
    ResizeLongSided,
    local_size,
    patch_matrices,
)
from scripts.landmarks.shape_model import StatisticalShapeModel  # noqa: E402


def _blobs(shape, points, sigma=2.0) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for x, y in points:
        img = np.maximum(img, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    return img


def _centroid(img: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * img).sum() / img.sum(), (ys * img).sum() / img.sum()])


def test_patch_matrices_centre_rotation_and_scale():
    m = patch_matrices([[100.0, 50.0]], 64, angles=[math.pi / 2], scales=[2.0])[0]
    np.testing.assert_allclose(transform_points(m, [100.0, 50.0]), [31.5, 31.5])
    # one pixel to the right of the centre: rotated a quarter turn (y down) and doubled
    np.testing.assert_allclose(transform_points(m, [101.0, 50.0]) - 31.5, [0.0, 2.0], atol=1e-12)


def test_resize_long_side_maps_landmarks_with_the_image():
    points = np.array([[300.0, 120.0], [50.0, 380.0]])
    image = MetaTensor(torch.from_numpy(_blobs((400, 500), points, sigma=6.0))[None], meta={"spacing_mm": (0.5, 0.5)})
    d = ResizeLongSided("image", long_side=200)({"image": image, "landmarks": points})
    assert d["image"].shape == (1, 160, 200) and local_size((400, 500), 200) == (160, 200)
    first = d["image"][0].numpy().copy()
    first[:, :60] = 0  # keep the first blob only
    np.testing.assert_allclose(_centroid(first), d["landmarks"][0], atol=0.05)
    np.testing.assert_allclose(d["image"].meta[LOCAL_MATRIX], letterbox_matrix((400, 500), (160, 200))[0])


def test_training_patches_contain_their_landmark_at_the_target_peak():
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(40, 360, size=(16, 2))
    image = torch.from_numpy(_blobs((400, 400), landmarks))[None]
    t = RandLandmarkPatchesd("image", patch_size=32, offset_sigma=4.0, max_offset=8.0, sigma=1.5)
    t.set_random_state(1)
    items = t({"image": image, "landmarks": landmarks})
    assert len(items) == 16
    for i, item in enumerate(items):
        assert item["image"].shape == (1, 32, 32) and item["label"].shape == (16, 32, 32)
        peak = np.unravel_index(int(item["label"][i].argmax()), (32, 32))
        # the image has a blob where the target of its own landmark peaks
        assert item["image"][0, peak[0], peak[1]] > 0.7
        assert item["label"][i].max() > 0.8 and abs(peak[0] - 15.5) <= 9.5 and abs(peak[1] - 15.5) <= 9.5


def test_validation_patches_are_deterministic_and_give_mm():
    landmarks = np.array([[50.0 + 20 * i, 60.0 + 10 * i] for i in range(16)])
    image = MetaTensor(
        torch.from_numpy(_blobs((400, 400), landmarks))[None],
        meta={"spacing_mm": (0.5, 0.25), LOCAL_MATRIX: np.diag([0.5, 0.5, 1.0]), "filename_or_obj": "a.dcm"},
    )
    t = LandmarkPatchesd("image", patch_size=32, seed=3)
    first, second = t({"image": image, "landmarks": landmarks}), t({"image": image, "landmarks": landmarks})
    np.testing.assert_array_equal(first[5]["label"], second[5]["label"])
    item = first[5]
    assert item["image"].meta["patch_landmark"] == 5
    assert item["image"].meta["patch_mm_per_pixel"] == pytest.approx((1.0, 0.5))  # (row, col) of a local pixel
    pred = gaussian_heatmaps(torch.as_tensor(item["label"] + [[1.0, 2.0]]).expand(16, 2), (32, 32), 1.5)
    out = PatchHeatmapsToMillimetresd(activation="none")({"image": item["image"], "pred": pred, "label": item["label"]})
    np.testing.assert_allclose((out["pred"] - out["label"]).numpy(), [[0.5, 2.0]], atol=1e-3)  # 1 col, 2 rows


class OwnImageNet(torch.nn.Module):
    """Stand-in patch network: every channel is the patch itself (a single bright blob = its landmark)."""

    def forward(self, x):
        return x.expand(-1, 16, -1, -1)


def test_refiner_recovers_blob_centres_from_coarse_positions():
    rng = np.random.default_rng(4)
    truth = np.array([[60.0 + 90 * (i % 4), 60.0 + 90 * (i // 4)] for i in range(16)]) + rng.uniform(-5, 5, (16, 2))
    image = torch.from_numpy(_blobs((420, 420), truth, sigma=3.0))[None]
    coarse = truth + rng.uniform(-8, 8, (16, 2))
    refined, peaks, own, to_patch = LandmarkRefiner(OwnImageNet(), long_side=210, patch_size=32, activation="none")(
        image, coarse
    )
    np.testing.assert_allclose(refined, truth, atol=0.15)  # original pixels, found at half resolution
    assert own.shape == (16, 32, 32) and to_patch.shape == (16, 3, 3) and peaks.min() > 0.7


def test_detector_with_refiner_corrects_coarse_errors():
    rng = np.random.default_rng(2)
    shape_model = StatisticalShapeModel.from_shapes(training_shapes(), noise_mm=1.5)
    truth = training_shapes(1, seed=9)[0] * 1.6 + [420, 300]  # pixels of an 800 x 600 image, 0.625 mm
    image = MetaTensor(
        torch.from_numpy(_blobs((600, 800), truth, sigma=3.0))[None], meta={"spacing_mm": (0.625, 0.625)}
    )
    input_size = (96, 128)
    matrix, _ = letterbox_matrix((600, 800), input_size)
    coarse = truth + rng.normal(scale=3.0, size=(16, 2))  # the whole-image stage is a few pixels off
    planted = gaussian_heatmaps(torch.as_tensor(transform_points(matrix, coarse), dtype=torch.float32), input_size, 1.5)

    class Planted(torch.nn.Module):
        def forward(self, x):
            return planted[None]

    coarse_only = LandmarkDetector(Planted(), shape_model, input_size=input_size, activation="none").detect(image)
    refiner = LandmarkRefiner(OwnImageNet(), long_side=400, patch_size=24, activation="none")
    refined = LandmarkDetector(
        Planted(), shape_model, input_size=input_size, refiner=refiner, activation="none"
    ).detect(image)
    assert np.linalg.norm(coarse_only.landmarks - truth, axis=1).mean() > 2.0
    np.testing.assert_allclose(refined.landmarks, truth, atol=0.3)
    assert refined.confidence.min() > 0.7 and not refined.corrected.any()  # blobs blurred by the resizing


def test_only_the_chosen_landmarks_take_the_refined_position():
    from custom_transforms.conventions import LANDMARK_NAMES

    shape_model = StatisticalShapeModel.from_shapes(training_shapes(), noise_mm=1.5)
    truth = training_shapes(1, seed=9)[0] * 1.6 + [420, 300]
    image = MetaTensor(
        torch.from_numpy(_blobs((600, 800), truth, sigma=3.0))[None], meta={"spacing_mm": (0.625, 0.625)}
    )
    input_size = (96, 128)
    matrix, _ = letterbox_matrix((600, 800), input_size)
    coarse = truth + np.random.default_rng(2).normal(scale=3.0, size=(16, 2))
    planted = gaussian_heatmaps(torch.as_tensor(transform_points(matrix, coarse), dtype=torch.float32), input_size, 1.5)

    class Planted(torch.nn.Module):
        def forward(self, x):
            return planted[None]

    chosen = ("symphysis_superior", "symphysis_inferior")
    refiner = LandmarkRefiner(OwnImageNet(), long_side=400, patch_size=24, activation="none", refined_landmarks=chosen)
    detection = LandmarkDetector(
        Planted(), shape_model, input_size=input_size, refiner=refiner, activation="none"
    ).detect(image)
    whole_only = LandmarkDetector(Planted(), shape_model, input_size=input_size, activation="none").detect(image)
    use = np.isin(LANDMARK_NAMES, chosen)
    np.testing.assert_allclose(detection.landmarks[use], truth[use], atol=0.3)
    np.testing.assert_allclose(detection.landmarks[~use], whole_only.landmarks[~use], atol=1e-4)
    with pytest.raises(ValueError, match="unknown landmark names"):
        LandmarkRefiner(OwnImageNet(), refined_landmarks=["asis"]).mask(LANDMARK_NAMES)

"""Letterbox geometry and the landmark augmentation: image and landmarks must move together."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from custom_transforms.conventions import LANDMARK_INDEX, MIRROR_PERMUTATION  # noqa: E402
from custom_transforms.geometry import pixels_to_mm, transform_points  # noqa: E402

from scripts.landmarks.heatmap_decoding import decode_heatmaps  # noqa: E402
from scripts.landmarks.letterbox import Letterbox, Letterboxd, letterbox_matrix  # noqa: E402
from scripts.landmarks.transforms import (  # noqa: E402
    HeatmapsToMillimetresd,
    LandmarkHeatmapd,
    RandLandmarkAffined,
)


def _centroid(img: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * img).sum() / img.sum(), (ys * img).sum() / img.sum()])


def _blob(size, centre, sigma=3.0):
    ys, xs = np.mgrid[: size[0], : size[1]]
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


@pytest.mark.parametrize("image_size", [(300, 500), (500, 300), (256, 256)])
def test_letterbox_keeps_aspect_and_maps_points(image_size):
    matrix, (new_h, new_w) = letterbox_matrix(image_size, (128, 160))
    assert new_h <= 128 and new_w <= 160 and (new_h == 128 or new_w == 160)
    assert abs(new_h / new_w - image_size[0] / image_size[1]) < 0.02  # aspect kept
    centre = (image_size[1] * 0.7, image_size[0] * 0.3)
    img = torch.from_numpy(_blob(image_size, centre, sigma=8.0))[None]
    out = Letterbox((128, 160))(img)
    assert out.shape == (1, 128, 160)
    np.testing.assert_allclose(out.meta["letterbox_matrix"], matrix)
    # the blob's centre of mass lands where the matrix sends its centre
    np.testing.assert_allclose(_centroid(out[0].numpy()), transform_points(matrix, centre), atol=0.05)
    # the image's outer edges map onto whole pixels of the canvas, centred (padding differs by at most 1)
    edges = transform_points(matrix, [[-0.5, -0.5], [image_size[1] - 0.5, image_size[0] - 0.5]]) + 0.5
    np.testing.assert_allclose(edges, np.round(edges), atol=1e-9)
    assert 0 <= (160 - edges[1, 0]) - edges[0, 0] <= 1 and 0 <= (128 - edges[1, 1]) - edges[0, 1] <= 1


def test_letterboxd_moves_landmarks_and_keeps_meta():
    img = MetaTensor(torch.zeros(1, 200, 400), meta={"spacing_mm": (0.5, 0.5), "filename_or_obj": "x.dcm"})
    d = Letterboxd("image", (64, 64))({"image": img, "landmarks": np.array([[0.0, 0.0], [399.0, 199.0]])})
    assert d["image"].meta["spacing_mm"] == (0.5, 0.5)
    # scale 64/400 = 0.16, resized height 32, padded by 16 rows on top
    np.testing.assert_allclose(
        d["landmarks"], [[0.5 * 0.16 - 0.5, 16 + 0.5 * 0.16 - 0.5], [63.5 - 0.08, 47.5 - 0.08]], atol=1e-5
    )


def test_random_affine_moves_image_and_landmarks_together():
    landmarks = np.array([[20.0, 30.0], [45.0, 12.0]] + [[32.0, 32.0]] * 14, dtype=np.float32)
    image = torch.from_numpy(_blob((64, 64), landmarks[0]))[None]
    t = RandLandmarkAffined(
        "image", prob=1.0, flip_prob=0.0, rotate_range=0.3, scale_range=(0.8, 1.2), translate_range=0.1
    )
    for seed in range(3):
        t.set_random_state(seed)
        d = t({"image": image, "landmarks": landmarks})
        np.testing.assert_allclose(_centroid(d["image"][0].numpy()), d["landmarks"][0], atol=0.15)
        assert not np.allclose(d["landmarks"][0], landmarks[0])


def test_random_mirror_swaps_left_and_right():
    landmarks = np.tile(np.array([[10.0, 20.0]], np.float32), (16, 1))
    right = LANDMARK_INDEX["asis_r"]
    landmarks[right] = [5.0, 7.0]
    image = torch.from_numpy(_blob((32, 48), landmarks[right], sigma=2.0))[None]
    t = RandLandmarkAffined("image", prob=0.0, flip_prob=1.0)
    d = t({"image": image, "landmarks": landmarks})
    left = MIRROR_PERMUTATION[right]
    # the marked point is now the patient's left ASIS, at the mirrored column
    np.testing.assert_allclose(d["landmarks"][left], [47 - 5.0, 7.0], atol=1e-5)
    np.testing.assert_allclose(_centroid(d["image"][0].numpy()), d["landmarks"][left], atol=0.05)


def test_heatmap_targets_and_millimetre_decoding_round_trip():
    img = MetaTensor(torch.zeros(1, 100, 200), meta={"spacing_mm": (0.4, 0.2)})
    landmarks = np.random.default_rng(0).uniform([5, 5], [195, 95], size=(16, 2))
    d = Letterboxd("image", (64, 64))({"image": img, "landmarks": landmarks})
    d = LandmarkHeatmapd("landmarks", sigma=1.5)(d)
    assert d["label"].shape == (16, 64, 64)
    coords, _ = decode_heatmaps(d["label"])
    np.testing.assert_allclose(coords.numpy(), d["landmarks"], atol=1e-3)
    out = HeatmapsToMillimetresd(("pred", "label"), activation="none")(
        {"image": d["image"], "pred": d["label"], "label": d["landmarks"]}
    )
    np.testing.assert_allclose(out["label"].numpy(), pixels_to_mm(landmarks, (0.4, 0.2)), atol=1e-3)
    np.testing.assert_allclose(out["pred"].numpy(), out["label"].numpy(), atol=1e-2)

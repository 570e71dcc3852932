"""The bundle's own transforms: landmark jitter (a similarity in mm + noise), radiograph intensity, image score,
batch preparation; and the demo-data glue."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.augmentation import (  # noqa: E402
    RandLandmarkJitter,
    RandLandmarkJitterd,
    RandRadiographIntensity,
    RandRadiographIntensityd,
)
from scripts.fracture.prepare_batch import SiamesePrepareBatch  # noqa: E402
from scripts.fracture.scoring import ImageScored  # noqa: E402


def _pairwise_mm(points, spacing):
    mm = points * np.array([spacing[1], spacing[0]])
    return np.linalg.norm(mm[:, None] - mm[None], axis=-1)


def test_landmark_jitter_is_a_similarity_in_mm_with_anisotropic_pixels():
    rng = np.random.default_rng(0)
    points = rng.uniform(50, 150, (16, 2))
    spacing = (0.2, 0.1)  # rows twice as long as columns
    jitter = RandLandmarkJitter(prob=1.0, rotation_deg=20, scale=0.1, translation_mm=3, point_sigma_mm=0)
    jitter.set_random_state(1)
    for _ in range(5):
        out = jitter(points, spacing)
        ratio = (
            _pairwise_mm(out, spacing)[np.triu_indices(16, 1)] / _pairwise_mm(points, spacing)[np.triu_indices(16, 1)]
        )
        assert np.allclose(ratio, ratio[0], rtol=1e-9)  # one scale factor: shape preserved in mm
        assert 0.9 <= ratio[0] <= 1.1
        assert not np.allclose(out, points)
    # rotating in pixels instead of mm would distort the shape: check the test would notice
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    wrong = (points - points.mean(0)) @ rot.T + points.mean(0)
    wrong_ratio = (
        _pairwise_mm(wrong, spacing)[np.triu_indices(16, 1)] / _pairwise_mm(points, spacing)[np.triu_indices(16, 1)]
    )
    assert not np.allclose(wrong_ratio, wrong_ratio[0], rtol=1e-3)


def test_landmark_jitter_noise_magnitude_identity_and_clipping():
    points = np.tile([[100.0, 80.0]], (16, 1))
    jitter = RandLandmarkJitter(prob=1.0, rotation_deg=0, scale=0, translation_mm=0, point_sigma_mm=2.0)
    jitter.set_random_state(0)
    deltas = np.concatenate([jitter(points, (0.5, 0.5)) - points for _ in range(200)])
    assert np.std(deltas) * 0.5 == pytest.approx(2.0, rel=0.1)  # 2 mm at 0.5 mm/pixel
    assert np.array_equal(RandLandmarkJitter(prob=0.0)(points), points)
    far = RandLandmarkJitter(prob=1.0, rotation_deg=0, scale=0, translation_mm=0, point_sigma_mm=50)
    far.set_random_state(0)
    out = far(points, (1, 1), image_shape=(1, 120, 110))
    assert out[:, 0].min() >= 0 and out[:, 0].max() <= 109 and out[:, 1].min() >= 0 and out[:, 1].max() <= 119


def test_landmark_jitterd_reads_spacing_and_shape_from_the_image():
    image = MetaTensor(torch.zeros(1, 40, 30), meta={"spacing_mm": (1.0, 1.0)})
    data = {"image": image, "landmarks": torch.full((16, 2), 15.0)}
    t = RandLandmarkJitterd(keys="landmarks", prob=1.0, rotation_deg=0, scale=0, translation_mm=100, point_sigma_mm=0)
    t.set_random_state(2)
    out = t(data)["landmarks"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out[:, 0].max() <= 29 and out[:, 1].max() <= 39
    assert torch.allclose(out, out[0].expand_as(out))  # a pure translation moves all points alike


def test_radiograph_intensity_stays_in_unit_range_and_keeps_meta():
    image = MetaTensor(torch.rand(1, 32, 32), meta={"spacing_mm": (0.3, 0.3), "filename_or_obj": "x.dcm"})
    t = RandRadiographIntensityd(keys="image", prob=1.0, gamma=(0.5, 0.6), noise_std=0.05)
    t.set_random_state(0)
    out = t({"image": image})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.dcm"
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float(out.mean()) > float(image.mean())  # gamma < 1 brightens
    assert torch.equal(RandRadiographIntensity(prob=0.0)(image), image)


def test_image_score_is_sigmoid_of_max_logit_by_default_and_mean_for_chexnet():
    logits = torch.tensor([[[-3.0, 1.5], [0.0, -1.0]]])
    out = ImageScored(keys="pred", output_key="score")({"pred": logits})
    assert out["score"].shape == (1,) and float(out["score"]) == pytest.approx(torch.sigmoid(torch.tensor(1.5)).item())
    out = ImageScored(keys="pred", pooling="mean")({"pred": logits})
    assert float(out["score"]) == pytest.approx(torch.sigmoid(torch.tensor(-2.5 / 4)).item())


def test_prepare_batch_takes_siamese_input_and_target():
    batch = {
        "siamese_input": torch.ones(2, 8, 4, 4),
        "target": torch.zeros(2, 2, 4, 4),
        "image": torch.ones(2, 1, 9, 9),
    }
    x, y = SiamesePrepareBatch()(batch, torch.device("cpu"))
    assert x.shape == (2, 8, 4, 4) and y.shape == (2, 2, 4, 4)
    x, y = SiamesePrepareBatch()({"siamese_input": torch.ones(1, 8, 4, 4)}, torch.device("cpu"))
    assert y is None
    with pytest.raises(KeyError, match="siamese_input"):
        SiamesePrepareBatch()({"image": torch.ones(1)}, torch.device("cpu"))


def test_limit_image_size_moves_points_and_spacing_with_the_image():
    from scripts.fracture.downsample import LimitImageSized

    h, w, spot = 300, 200, (120.0, 210.0)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / (2 * 6.0**2))[None]
    image = MetaTensor(blob, meta={"spacing_mm": (0.5, 0.4), "filename_or_obj": "big.dcm"})
    data = {"image": image, "landmarks": np.array([spot]), "fractures": torch.tensor([[10.0, 20.0]])}
    out = LimitImageSized(max_size=100)(data)
    small = out["image"]
    assert small.shape == (1, 100, 67) and out["image"].meta["filename_or_obj"] == "big.dcm"
    fy, fx = 300 / 100, 200 / 67
    assert out["image"].meta["spacing_mm"] == pytest.approx((0.5 * fy, 0.4 * fx))
    x, y = out["landmarks"][0]
    # the same physical position: (x + 0.5) * spacing is invariant (pixel-centre convention)
    assert (x + 0.5) * 0.4 * fx == pytest.approx((spot[0] + 0.5) * 0.4)
    assert (y + 0.5) * 0.5 * fy == pytest.approx((spot[1] + 0.5) * 0.5)
    r, c = np.unravel_index(int(torch.argmax(small[0])), small.shape[1:])
    assert abs(c - x) <= 0.6 and abs(r - y) <= 0.6  # the blob is where its point went
    assert isinstance(out["fractures"], torch.Tensor)
    unchanged = LimitImageSized(max_size=400)(data)
    assert unchanged["image"] is image

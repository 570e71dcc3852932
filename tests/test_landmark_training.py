"""Training pieces of the landmark detector: losses against hand-computed values, negatives, shape-model building."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from landmark_testdata import write_toy_dataset  # noqa: E402
from simulation.nonpelvic import NONPELVIC_KINDS, render_nonpelvic  # noqa: E402

from scripts.datalist import fold_split  # noqa: E402
from scripts.landmarks.nonpelvic_radiographs import NonPelvicDataset  # noqa: E402
from scripts.landmarks.shape_model import StatisticalShapeModel  # noqa: E402
from scripts.landmarks.training import (  # noqa: E402
    SpatialSoftmaxCrossEntropy,
    WeightedHeatmapMSE,
    build_shape_model,
    landmark_configurations_mm,
    landmark_training_dataset,
)


def test_spatial_softmax_cross_entropy_hand_computed():
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 1, 1, 2)  # softmax = [1/4, 3/4]
    loss = SpatialSoftmaxCrossEntropy()
    assert loss(logits, torch.tensor([2.0, 0.0]).reshape(1, 1, 1, 2)).item() == pytest.approx(
        math.log(4)
    )  # target normalised to [1, 0]
    # an all-zero target (no landmark in the image) asks for the uniform map [1/2, 1/2]
    uniform = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert loss(logits, torch.zeros(1, 1, 1, 2)).item() == pytest.approx(uniform)
    both = torch.cat([torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2), torch.zeros(1, 1, 1, 2)], dim=1)
    assert loss(logits.expand(1, 2, 1, 2), both).item() == pytest.approx((math.log(4) + uniform) / 2)
    # refinement patches: a channel without its landmark in the patch is ignored
    ignoring = SpatialSoftmaxCrossEntropy(empty="ignore")
    assert ignoring(logits.expand(1, 2, 1, 2), both).item() == pytest.approx(math.log(4))
    assert ignoring(logits, torch.zeros(1, 1, 1, 2)).item() == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        loss(logits, torch.zeros(1, 2, 1, 2))
    with pytest.raises(ValueError, match="empty must be"):
        SpatialSoftmaxCrossEntropy(empty="zero")


def test_weighted_heatmap_mse_hand_computed():
    pred = torch.tensor([0.5, 0.0]).reshape(1, 1, 1, 2)
    target = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    # pixel 1: (0.5 - 1)^2 * (1 + 10 * 1) = 2.75; pixel 2: 0
    assert WeightedHeatmapMSE(10.0)(pred, target).item() == pytest.approx(2.75 / 2)


@pytest.mark.parametrize("kind", NONPELVIC_KINDS)
def test_nonpelvic_images_are_valid_radiographs(kind):
    image = render_nonpelvic(kind, (40, 56), np.random.default_rng(0))
    assert image.shape == (1, 40, 56) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    with pytest.raises(ValueError, match="unknown non-pelvic kind"):
        render_nonpelvic("knee", (8, 8), np.random.default_rng(0))


def test_negatives_join_the_training_set_with_empty_targets():
    torch.manual_seed(0)
    radiographs = [{"image": torch.rand(1, 24, 24), "label": torch.rand(16, 24, 24)} for _ in range(17)]
    combined = landmark_training_dataset(radiographs, (24, 24), negative_fraction=0.15)
    assert len(combined) == 17 + 3  # 3 / 20 = 15 %
    negative = combined[18]
    assert negative["image"].shape == (1, 24, 24) and negative["label"].abs().sum() == 0
    assert not torch.equal(combined[18]["image"], combined[18]["image"])  # a fresh draw each time
    assert landmark_training_dataset(radiographs, (24, 24), negative_fraction=0.0) is radiographs
    assert len(NonPelvicDataset(5, (8, 8))) == 5


def test_shape_model_is_built_from_annotations_in_mm(tmp_path):
    datalist = write_toy_dataset(tmp_path / "data", count=20, shape=(60, 75), spacing_mm=5.0)
    items = fold_split(datalist, 0, "training")
    shapes = landmark_configurations_mm(items)
    annotation = json.loads(Path(items[0]["annotation"]).read_text())
    np.testing.assert_allclose(shapes[0][0], np.asarray(annotation["landmarks"]["asis_r"]) * 5.0, rtol=1e-6)
    path = build_shape_model(items, tmp_path / "models" / "shape.json", noise_mm=3.0)
    model = StatisticalShapeModel.load(path)
    assert model.noise_mm == 3.0 and model.num_points == 16
    assert model.mean_size_mm == pytest.approx(np.mean([np.sqrt(((s - s.mean(0)) ** 2).sum(1).mean()) for s in shapes]))

"""The training path as the bundle runs it: Ignite SupervisedTrainer + SiameseTrainingInferer + loss_for_variant."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.inferers import DistanceOutput, SiameseTrainingInferer  # noqa: E402
from scripts.losses import loss_for_variant  # noqa: E402
from scripts.networks import build_network  # noqa: E402

TINY = {"init_features": 8, "growth_rate": 4, "block_config": (1, 1, 1, 1), "bn_size": 2}


def batches(n: int = 2):
    torch.manual_seed(0)
    data = []
    for _ in range(n):
        x = torch.rand(2, 8, 32, 64)
        x[:, 6:] = x[:, 6:] * 2 - 1
        target = torch.zeros(2, 2, 32, 64)
        target[0, :, 8:20, 10:30] = 1.0
        data.append({"siamese_input": x, "target": target})
    return data


@pytest.mark.parametrize("variant", ["aasn", "vanilla", "liu", "lse"])
def test_supervised_trainer_runs(variant):
    from monai.engines import SupervisedTrainer

    net = build_network(variant, **TINY)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches(),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=loss_for_variant(variant),
        inferer=SiameseTrainingInferer(),
        prepare_batch=lambda batch, device, non_blocking, **kw: (batch["siamese_input"], batch["target"]),
    )
    trainer.run()
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))
    changed = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith(("encoder", "features")) for k in changed)


def test_inferer_returns_pair_and_accepts_distance_output_wrapper():
    net = build_network("aasn", **TINY).eval()
    x = batches(1)[0]["siamese_input"]
    inferer = SiameseTrainingInferer()
    with torch.no_grad():
        heatmap, distance = inferer(x, net)
        wrapped = inferer(x, DistanceOutput(net))
    assert heatmap.shape == (2, 1, 32, 64) and distance.shape == (2, 1, 2, 4)
    assert torch.equal(wrapped[0], heatmap) and torch.equal(wrapped[1], distance)
    with pytest.raises(TypeError, match="forward_with_distance"):
        inferer(x, torch.nn.Conv2d(8, 1, 1))

"""The training path as the bundle runs it: Ignite SupervisedTrainer + SiameseTrainingInferer + loss_for_variant."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.fracture.inferers import DistanceOutput, SiameseTrainingInferer  # noqa: E402
from scripts.fracture.losses import loss_for_variant  # noqa: E402
from scripts.fracture.networks import build_network  # noqa: E402

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


def train(net, variant: str, loader, max_epochs: int, learning_rate: float):
    """The bundle's training step (Ignite SupervisedTrainer, SiameseTrainingInferer, the variant's loss), run."""
    from monai.engines import SupervisedTrainer

    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), learning_rate),
        loss_function=loss_for_variant(variant),
        inferer=SiameseTrainingInferer(),
        prepare_batch=lambda batch, device, non_blocking, **kw: (batch["siamese_input"], batch["target"]),
    )
    trainer.run()
    return trainer


@pytest.mark.parametrize("variant", ["aasn", "vanilla", "liu", "lse"])
def test_supervised_trainer_runs(variant):
    """One epoch of the bundle's trainer is the hand-written loop (the variant's inferer output into its loss, backward,
    an Adam step, batch by batch): the same last loss and the same weights afterwards."""
    import copy

    torch.manual_seed(1)
    net = build_network(variant, **TINY)
    reference = copy.deepcopy(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = batches()
    trainer = train(net, variant, data, max_epochs=1, learning_rate=1e-3)

    optimiser, loss_function = torch.optim.Adam(reference.parameters(), 1e-3), loss_for_variant(variant)
    reference.train()
    for batch in data:
        optimiser.zero_grad()
        loss = loss_function(SiameseTrainingInferer()(batch["siamese_input"], reference), batch["target"])
        loss.backward()
        optimiser.step()
    assert trainer.state.output[0]["loss"] == pytest.approx(loss.item(), rel=1e-5)
    trained, by_hand = net.state_dict(), reference.state_dict()
    for k in trained:
        torch.testing.assert_close(trained[k], by_hand[k], rtol=1e-5, atol=1e-6, msg=k)
    changed = [k for k, v in trained.items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith(("encoder", "features")) for k in changed)
    # (that the steps learn, not only move: test_training_learns_a_planted_lesion_and_finds_it_in_unseen_images)


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


def planted_asymmetry(n: int, seed: int, h: int = 64, w: int = 128):
    """Siamese inputs whose positives carry a bright spot in the ROI and, flipped, in the mirrored ROI.

    The background is left-right symmetric (a symmetric anatomy), so the mirrored ROI shows the same background
    and the TPS sampling grid between the two is the identity. Targets: ``M`` a disc at the spot, ``M-hat`` = ``M``
    and its
    flipped copy (where the mirrored ROI shows the spot).
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    grid = torch.stack([xx / (w - 1) * 2 - 1, yy / (h - 1) * 2 - 1])
    inputs, targets, labels = [], [], []
    for i in range(n):
        noise = torch.randn(1, h, w, generator=g)
        background = 0.5 + 0.07 * (noise + noise.flip(-1))  # left-right symmetric, so its mirror image is itself
        roi, mirrored = background.expand(3, h, w).clone(), background.flip(-1).expand(3, h, w).clone()
        target = torch.zeros(2, h, w)
        label = i % 2
        if label:
            cy = int(torch.randint(12, h - 12, (1,), generator=g))
            cx = int(torch.randint(12, w - 12, (1,), generator=g))
            spot = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
            roi += 0.6 * spot
            mirrored += 0.6 * spot.flip(-1)
            target[0] = (((yy - cy) ** 2 + (xx - cx) ** 2) <= 8**2).float()
            target[1] = torch.maximum(target[0], target[0].flip(-1))
        inputs.append(torch.cat([roi, mirrored, grid]))
        targets.append(target)
        labels.append(label)
    return torch.stack(inputs), torch.stack(targets), labels


@pytest.mark.parametrize("variant", ["aasn", "vanilla"])
def test_training_learns_a_planted_lesion_and_finds_it_in_unseen_images(variant, one_torch_thread):
    """The whole training path (trainer, inferer, loss, target layout) learns: after a short training on
    synthetic pairs, unseen positives score above unseen negatives and their heatmap peaks on the spot's side.

    With AASN's unnormalised contrastive distance of version 0.2.0 this failed (AUC 0.52 here)."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    x, target, _ = planted_asymmetry(64, seed=1)
    loader = [{"siamese_input": x[i : i + 8], "target": target[i : i + 8]} for i in range(0, 64, 8)]
    net = build_network(variant, **TINY)
    train(net, variant, loader, max_epochs=200, learning_rate=3e-3)

    x_test, target_test, labels = planted_asymmetry(32, seed=2)
    net.eval()
    with torch.no_grad():
        heatmap = torch.sigmoid(net(x_test))[:, 0]
    scores = heatmap.amax(dim=(1, 2))
    assert roc_auc_score(labels, scores.numpy()) > 0.9
    # The logits are 1/32 of the input, upsampled, so the peak is only as precise as a 32-pixel cell; what must hold
    # is that it lies on the spot's side: a left-right mix-up in the Siamese path would put it at the mirror image.
    width = heatmap.shape[-1]
    centre = (width - 1) / 2
    on_its_side = []
    for i in (i for i, label in enumerate(labels) if label):
        spot_col = float(torch.nonzero(target_test[i, 0]).float().mean(0)[1])
        if abs(spot_col - centre) > 16:
            peak_col = int(heatmap[i].argmax()) % width
            on_its_side.append(abs(peak_col - spot_col) < abs(peak_col - (width - 1 - spot_col)))
    assert len(on_its_side) >= 5 and sum(on_its_side) >= 0.8 * len(on_its_side)

"""BatchNorm folded into the convolutions for inference (``scripts.fracture.folding``) and the inference inferer
(``scripts.fracture.inferers.InferenceModeInferer``): the folded copy computes what the eager network computes in
eval mode, within 1e-4, and the inferer runs it under ``torch.inference_mode``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.fracture.folding import fold_batchnorm  # noqa: E402
from scripts.fracture.inferers import InferenceModeInferer  # noqa: E402
from scripts.fracture.networks import build_network  # noqa: E402

TINY = {"init_features": 8, "growth_rate": 4, "block_config": [2, 2, 2, 2], "bn_size": 2, "projection_channels": 8}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_like(variant: str = "aasn", seed: int = 0, channels_last: bool = True) -> nn.Module:
    """A tiny network in eval mode whose BatchNorms are far from the identity (running statistics and affine
    parameters drawn at random), so that a BatchNorm dropped or folded wrongly changes the output."""
    torch.manual_seed(seed)
    network = build_network(variant, channels_last=channels_last, **TINY)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.3, 3.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return network.eval()


def siamese_input(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 8, 64, 128, generator=generator)
    x[:, 6:] = 2 * x[:, 6:] - 1  # the TPS grid in [-1, 1]
    return x


def batchnorms(network: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in network.modules())


@pytest.mark.parametrize("variant", ["aasn", "vanilla"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_folded_network_equals_eager_within_1e_4(variant, channels_last):
    network = trained_like(variant, channels_last=channels_last)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    folded = fold_batchnorm(network)
    x = siamese_input()
    with torch.no_grad():
        eager, folded_out = network(x), folded(x)
    assert (eager - folded_out).abs().max() <= 1e-4
    assert eager.std() > 0.01  # a map that varies, not a constant any network would reproduce
    if variant == "aasn":
        with torch.no_grad():
            _, distance = network.forward_with_distance(x)
            _, folded_distance = folded.forward_with_distance(x)
        assert (distance - folded_distance).abs().max() <= 1e-4  # the projection head's BatchNorm is folded too

    # stem (norm0), each dense layer's norm2, and the projection head's norm are folded; the pre-activation ones stay
    dense_layers = sum(TINY["block_config"])
    folded_count = 1 + dense_layers + (1 if variant == "aasn" else 0)
    assert batchnorms(folded) == batchnorms(network) - folded_count
    assert not folded.training
    conv0 = folded.encoder.conv0
    assert conv0.bias is not None and conv0.weight.is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    # the network itself is untouched
    after = network.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert batchnorms(network) == 2 * dense_layers + len(TINY["block_config"]) + 1 + (1 if variant == "aasn" else 0)


def test_torchscript_networks_are_returned_unchanged():
    scripted = torch.jit.script(trained_like())
    assert fold_batchnorm(scripted) is scripted


def test_inferer_runs_in_inference_mode_and_returns_an_ordinary_tensor():
    network = trained_like()
    x = siamese_input()
    seen = {}

    def spy(inputs):
        seen["inference_mode"] = torch.is_inference_mode_enabled()
        return network(inputs)

    output = InferenceModeInferer()(x, spy)
    assert seen["inference_mode"] and not output.is_inference()
    output.add_(0)  # post-processing may work in place (an inference tensor would raise here)
    with torch.no_grad():
        torch.testing.assert_close(output, network(x), rtol=0, atol=0)


def test_inferer_folds_once_and_again_when_the_weights_change():
    network = trained_like(seed=0)
    inferer = InferenceModeInferer(fold_batchnorm=True)
    x = siamese_input()
    first = inferer(x, network)
    with torch.no_grad():
        assert (first - network(x)).abs().max() <= 1e-4
    copy = inferer.folded(network)
    assert inferer.folded(network) is copy and copy is not network  # made once
    assert batchnorms(copy) < batchnorms(network)

    network.load_state_dict(trained_like(seed=1).state_dict())  # other weights loaded into the same network
    second = inferer(x, network)
    with torch.no_grad():
        reference = network(x)
    assert (second - reference).abs().max() <= 1e-4 and (first - reference).abs().max() > 1e-2
    assert inferer.folded(network) is not copy

    network.train()  # training mode: the network as it is, no folded copy
    seen = {}
    inferer(x, lambda inputs: seen.setdefault("called", True) and network(inputs))
    assert seen == {"called": True}

"""Against genuine torchvision DenseNet-121 (randomly initialised, no download), where torchvision is installed.

The bundle's environment has no torchvision (the shape tests in test_network.py build the reference from the
architecture's definition): the file is skipped there. CI runs it in ``.venv-torchvision`` (``.ci/torchvision_venv.sh``)
with ``AASN_REQUIRE_TORCHVISION=1``, under which a missing torchvision fails instead of skipping.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

if os.environ.get("AASN_REQUIRE_TORCHVISION"):
    import torchvision
else:
    torchvision = pytest.importorskip("torchvision")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.fracture.networks import build_network  # noqa: E402
from scripts.fracture.pretrained import load_torchvision_densenet  # noqa: E402


def torchvision_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    reference = torchvision.models.densenet121(weights=None)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the comparison covers them
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return reference.eval(), reference.state_dict()


def test_vanilla_equals_torchvision_densenet121_features():
    reference, state = torchvision_state_dict()
    net = build_network("vanilla").eval()
    report = load_torchvision_densenet(net, state)
    assert set(report.unmatched) == {"classifier.weight", "classifier.bias"}
    assert report.fused == []
    assert {k.split(".")[0] for k in report.not_initialised} == {"head"}
    x = torch.rand(2, 8, 64, 128)
    with torch.no_grad():
        expected = F.relu(reference.features(x[:, :3]))
        got = F.relu(net.decoder(net.transition(net.encoder(x[:, :3]))))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_aasn_takes_every_torchvision_tensor_but_the_classifier():
    _, state = torchvision_state_dict()
    net = build_network("aasn")
    report = load_torchvision_densenet(net, state)
    assert set(report.unmatched) == {"classifier.weight", "classifier.bias"}
    assert report.fused == ["transition.conv.weight"]
    assert net.transition.conv.weight.shape == (512, 2048, 1, 1)
    assert {k.split(".")[0] for k in report.not_initialised} == {"head", "projection"}

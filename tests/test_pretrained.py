"""ImageNet initialisation from a torchvision-format DenseNet state dict written by the test (random values)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.fracture.networks import build_network  # noqa: E402
from scripts.fracture.pretrained import load_torchvision_densenet, read_state_dict, torchvision_to_monai_key  # noqa: E402

TINY = {"init_features": 8, "growth_rate": 4, "block_config": (1, 2, 1, 1), "bn_size": 2}


def torchvision_state_dict(init=8, growth=4, blocks=(1, 2, 1, 1), bn_size=2, classes=1000, legacy=False):
    """Random state dict with torchvision DenseNet names and shapes (legacy=True: old ``norm.1`` spelling)."""
    torch.manual_seed(1)
    state = {}

    def norm(name, channels):
        state[f"{name}.weight"] = torch.rand(channels) + 0.5
        state[f"{name}.bias"] = torch.randn(channels)
        state[f"{name}.running_mean"] = torch.randn(channels)
        state[f"{name}.running_var"] = torch.rand(channels) + 0.5

    sep = "." if legacy else ""
    state["features.conv0.weight"] = torch.randn(init, 3, 7, 7)
    norm("features.norm0", init)
    channels = init
    for b, layers in enumerate(blocks, start=1):
        for j in range(1, layers + 1):
            p = f"features.denseblock{b}.denselayer{j}"
            norm(f"{p}.norm{sep}1", channels)
            state[f"{p}.conv{sep}1.weight"] = torch.randn(bn_size * growth, channels, 1, 1)
            norm(f"{p}.norm{sep}2", bn_size * growth)
            state[f"{p}.conv{sep}2.weight"] = torch.randn(growth, bn_size * growth, 3, 3)
            channels += growth
        if b < len(blocks):
            norm(f"features.transition{b}.norm", channels)
            state[f"features.transition{b}.conv.weight"] = torch.randn(channels // 2, channels, 1, 1)
            channels //= 2
    norm("features.norm5", channels)
    state["classifier.weight"] = torch.randn(classes, channels)
    state["classifier.bias"] = torch.randn(classes)
    return state


def test_key_mapping():
    assert (
        torchvision_to_monai_key("features.denseblock2.denselayer11.conv2.weight")
        == "features.denseblock2.denselayer11.layers.conv2.weight"
    )
    assert (
        torchvision_to_monai_key("module.features.denseblock1.denselayer1.norm.1.running_var")
        == "features.denseblock1.denselayer1.layers.norm1.running_var"
    )
    assert torchvision_to_monai_key("features.transition3.norm.weight") == "features.transition3.norm.weight"


@pytest.mark.parametrize("legacy", [False, True])
def test_aasn_loads_everything_but_the_classifier(tmp_path, legacy):
    source = torchvision_state_dict(legacy=legacy)
    path = tmp_path / "densenet.pth"
    torch.save(source, path)
    net = build_network("aasn", **TINY)
    report = load_torchvision_densenet(net, path)
    assert set(report.unmatched) == {"classifier.weight", "classifier.bias"}
    assert report.fused == ["transition.conv.weight"]
    assert {k.split(".")[0] for k in report.not_initialised} == {"head", "projection"}
    assert len(report.loaded) == len(source) - 3
    own = net.state_dict()
    sep = "." if legacy else ""
    assert torch.equal(own["encoder.conv0.weight"], source["features.conv0.weight"])
    assert torch.equal(
        own["encoder.denseblock2.denselayer2.layers.conv1.weight"],
        source[f"features.denseblock2.denselayer2.conv{sep}1.weight"],
    )
    assert torch.equal(own["transition.norm.running_var"], source["features.transition3.norm.running_var"])
    assert torch.equal(own["decoder.norm5.bias"], source["features.norm5.bias"])
    pretrained = source["features.transition3.conv.weight"]
    c = pretrained.shape[1]
    assert torch.equal(own["transition.conv.weight"][:, :c], pretrained)
    assert torch.equal(own["transition.conv.weight"][:, c:], torch.zeros_like(pretrained))
    assert "unmatched classifier.weight" in str(report)


def test_average_rule():
    source = torchvision_state_dict()
    net = build_network("ff_fa", **TINY)
    load_torchvision_densenet(net, source, doubled_conv_rule="average")
    w = source["features.transition3.conv.weight"]
    assert torch.allclose(net.transition.conv.weight, torch.cat([w / 2, w / 2], dim=1))


def test_original_rule_starts_every_fusion_variant_at_vanilla():
    """[W, 0]: the fused network computes exactly the pretrained single-stream DenseNet, whatever the mirror shows."""
    source = torchvision_state_dict()
    vanilla = build_network("vanilla", **TINY).eval()
    aasn = build_network("aasn", **TINY).eval()
    load_torchvision_densenet(vanilla, source)
    load_torchvision_densenet(aasn, source)
    aasn.head.load_state_dict(vanilla.head.state_dict())  # the head is not pretrained
    x = torch.rand(2, 8, 32, 64)
    x[:, 6:] = x[:, 6:] * 2 - 1
    with torch.no_grad():
        reference = vanilla(x)
        # random "pretrained" weights give logits in the thousands: compare relative to their scale (float32)
        scale = reference.abs().max()
        assert (aasn(x) - reference).abs().max() <= 1e-5 * scale
        load_torchvision_densenet(aasn, source, doubled_conv_rule="average")
        assert (aasn(x) - reference).abs().max() > 1e-3 * scale


@pytest.mark.parametrize("variant", ["vanilla", "deepsymnet", "liu", "chexnet"])
def test_other_variants(variant):
    source = torchvision_state_dict()
    net = build_network(variant, **TINY)
    report = load_torchvision_densenet(net, source)
    assert report.fused == []
    if variant == "liu":  # encoder only: transition 3 onwards has no counterpart
        assert any(k.startswith("features.denseblock4") for k in report.unmatched)
        assert not any(k.startswith("features.denseblock3") for k in report.unmatched)
    elif variant == "chexnet":  # 1000-class linear vs one-logit 1x1 conv
        assert set(report.unmatched) == {"classifier.weight", "classifier.bias"}
        assert "no counterpart" in report.unmatched["classifier.weight"]
        assert torch.equal(net.state_dict()["features.norm5.weight"], source["features.norm5.weight"])
    else:
        assert set(report.unmatched) == {"classifier.weight", "classifier.bias"}


def test_build_network_with_pretrained_file(tmp_path, caplog):
    path = tmp_path / "densenet.pth"
    torch.save({"state_dict": torchvision_state_dict()}, path)
    with caplog.at_level("INFO", logger="scripts.fracture.networks"):
        net = build_network("aasn", pretrained=str(path), **TINY)
    assert torch.equal(net.encoder.conv0.weight, torchvision_state_dict()["features.conv0.weight"])
    assert "unmatched classifier.weight" in caplog.text


def test_bad_files_are_rejected(tmp_path):
    path = tmp_path / "not_a_state_dict.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="not_a_state_dict.pt: expected a state dict"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="doubled_conv_rule"):
        load_torchvision_densenet(build_network("aasn", **TINY), {}, doubled_conv_rule="copy")

"""AASN network: shared encoder, output shapes of every variant, DenseNet-121 parameter shapes, alignment, gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.fracture.aasn import AASN, warp  # noqa: E402
from scripts.fracture.losses import AASNLoss  # noqa: E402
from scripts.fracture.networks import VARIANTS, build_network  # noqa: E402
from scripts.fracture.pretrained import torchvision_to_monai_key  # noqa: E402

TINY = {"init_features": 8, "growth_rate": 4, "block_config": (1, 1, 1, 1), "bn_size": 2}
H, W = 32, 64


def identity_grid(batch: int, height: int, width: int) -> torch.Tensor:
    """(B, 2, H, W) grid sampling every pixel at its own centre (align_corners=False)."""
    ys = (2 * torch.arange(height, dtype=torch.float32) + 1) / height - 1
    xs = (2 * torch.arange(width, dtype=torch.float32) + 1) / width - 1
    grid = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)])
    return grid[None].repeat(batch, 1, 1, 1)


def siamese_input(batch: int = 2, height: int = H, width: int = W, grid: torch.Tensor | None = None) -> torch.Tensor:
    images = torch.rand(batch, 6, height, width)
    grid = identity_grid(batch, height, width) if grid is None else grid
    return torch.cat([images, grid], dim=1)


def torchvision_densenet121_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of torchvision's DenseNet-121, from the architecture's definition.

    Stem 7x7/2 conv to 64; dense blocks of (6, 12, 24, 16) layers, each BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k),
    k = 32; transitions BN-ReLU-1x1 conv halving the channels; final BN; 1000-way linear classifier.
    """
    growth, bn_size, shapes = 32, 4, {}

    def norm(name: str, channels: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{p}"] = (channels,)

    shapes["features.conv0.weight"] = (64, 3, 7, 7)
    norm("features.norm0", 64)
    channels = 64
    for block, layers in enumerate((6, 12, 24, 16), start=1):
        for layer in range(1, layers + 1):
            prefix = f"features.denseblock{block}.denselayer{layer}"
            norm(f"{prefix}.norm1", channels)
            shapes[f"{prefix}.conv1.weight"] = (bn_size * growth, channels, 1, 1)
            norm(f"{prefix}.norm2", bn_size * growth)
            shapes[f"{prefix}.conv2.weight"] = (growth, bn_size * growth, 3, 3)
            channels += growth
        if block < 4:
            norm(f"features.transition{block}.norm", channels)
            shapes[f"features.transition{block}.conv.weight"] = (channels // 2, channels, 1, 1)
            channels //= 2
    norm("features.norm5", channels)
    shapes["classifier.weight"] = (1000, channels)
    shapes["classifier.bias"] = (1000,)
    return shapes


def test_reference_is_densenet121():
    shapes = torchvision_densenet121_shapes()
    learnable = sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(("running_mean", "running_var")))
    assert learnable == 7_978_856  # DenseNet-121's published parameter count


@pytest.mark.parametrize("variant", ["aasn", "vanilla", "ff_fa_cl_noproj", "deepsymnet"])
def test_parameter_shapes_match_torchvision_densenet121(variant):
    net = build_network(variant)
    own = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    prefixes = net.densenet_prefixes()
    mapped = set()
    for key, shape in torchvision_densenet121_shapes().items():
        if key.startswith("classifier."):
            continue
        monai_key = torchvision_to_monai_key(key)
        prefix = next(p for p in prefixes if monai_key.startswith(p + "."))
        own_key = prefixes[prefix] + monai_key[len(prefix) :]
        mapped.add(own_key)
        if key == "features.transition3.conv.weight" and variant in ("aasn", "ff_fa_cl_noproj"):
            assert own[own_key] == (shape[0], 2 * shape[1], 1, 1) == (512, 2048, 1, 1)
        else:
            assert own[own_key] == shape, key
    extra = {k.split(".")[0] for k in own if k not in mapped}
    assert extra <= {"head", "projection"}
    assert ("projection" in extra) == (variant == "aasn")  # without g (noproj) the distance has no parameters


def test_one_encoder_serves_both_streams():
    net = AASN(alignment="feature", **TINY).eval()
    encoders = [m for m in net.modules() if m is net.encoder]
    assert len(encoders) == 1 and not hasattr(net, "mirrored_encoder")
    x = siamese_input()
    with torch.no_grad():
        features, mirrored = net.siamese_features(x)  # identity grid: aligned = unwarped
        assert torch.allclose(features, net.encoder(x[:, 0:3]), atol=1e-6)
        assert torch.allclose(mirrored, net.encoder(x[:, 3:6]), atol=1e-6)
        same = x.clone()
        same[:, 3:6] = same[:, 0:3]
        f, m = net.siamese_features(same)
        assert torch.allclose(f, m, atol=1e-6)
        # changing one encoder weight changes both streams
        net.encoder.conv0.weight.mul_(-1.0)
        f2, m2 = net.siamese_features(x)
    assert not torch.allclose(f2, features) and not torch.allclose(m2, mirrored)


CONTRASTIVE = {"aasn", "ff_cl", "ff_fa_cl_noproj", "liu"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_output_shapes(variant):
    net = build_network(variant, **TINY)
    x = siamese_input(batch=2)
    heatmap = net(x)
    assert heatmap.shape == (2, 1, H, W)
    pair_heatmap, distance = net.forward_with_distance(x)
    assert pair_heatmap.shape == (2, 1, H, W)
    if variant in CONTRASTIVE:
        assert distance.shape == (2, 1, H // 16, W // 16)  # dense block 3 output
        assert (distance >= 0).all()
    else:
        assert distance.shape == (2, 1, 0, 0) and distance.numel() == 0
    assert net.score_pooling == {"chexnet": "mean", "lse": "lse"}.get(variant, "max")


@pytest.mark.parametrize("variant", ["aasn", "ff", "ff_fa", "ff_cl", "ff_fa_cl_noproj", "cbn"])
def test_fused_transition_conv_has_twice_the_channels(variant):
    net = build_network(variant, **TINY)
    vanilla = build_network("vanilla", **TINY)
    assert net.transition.conv.in_channels == 2 * vanilla.transition.conv.in_channels
    assert net.transition.conv.out_channels == vanilla.transition.conv.out_channels
    assert build_network("deepsymnet", **TINY).transition.conv.in_channels == vanilla.transition.conv.in_channels


def test_split_block_is_configurable():
    net = AASN(split_block=2, **TINY)
    _, distance = net.forward_with_distance(siamese_input())
    assert distance.shape[-2:] == (H // 8, W // 8)
    assert "transition2" not in dict(net.encoder.named_children())
    assert net.densenet_prefixes()["features.transition2"] == "transition"
    with pytest.raises(ValueError, match="split_block"):
        AASN(split_block=4, **TINY)


def test_ff_fa_equals_ff_with_identity_grid():
    torch.manual_seed(0)
    ff_fa = build_network("ff_fa", **TINY).eval()
    ff = build_network("ff", **TINY).eval()
    ff.load_state_dict(ff_fa.state_dict())
    x = siamese_input(batch=2)
    with torch.no_grad():
        assert torch.allclose(ff(x), ff_fa(x), atol=1e-5)
        # the grid is used: a shifted grid changes the output
        shifted = x.clone()
        shifted[:, 6] += 2 * 16 / W
        assert not torch.allclose(ff_fa(shifted), ff_fa(x), atol=1e-4)


@pytest.mark.parametrize("dx, dy", [(1, 0), (-2, 0), (0, 1), (1, -1)])
def test_feature_alignment_with_integer_shift(dx, dy):
    """A grid shifted by whole feature pixels gives the features shifted by those pixels (inside the map)."""
    height, width = 64, 128  # features 4 x 8
    h, w = height // 16, width // 16
    net = AASN(alignment="feature", **TINY).eval()
    grid = identity_grid(2, height, width)
    grid[:, 0] += 2 * dx / w
    grid[:, 1] += 2 * dy / h
    x = siamese_input(2, height, width, grid)
    with torch.no_grad():
        _, aligned = net.siamese_features(x)
        mirrored = net.encoder(x[:, 3:6])
    rows = slice(max(0, -dy), h - max(0, dy))
    cols = slice(max(0, -dx), w - max(0, dx))
    src_rows = slice(rows.start + dy, rows.stop + dy)
    src_cols = slice(cols.start + dx, cols.stop + dx)
    assert torch.allclose(aligned[..., rows, cols], mirrored[..., src_rows, src_cols], atol=1e-5)
    assert not torch.allclose(aligned, mirrored, atol=1e-3)


def test_warp_identity_and_border():
    image = torch.rand(1, 3, 8, 16)
    assert torch.allclose(warp(image, identity_grid(1, 8, 16)), image, atol=1e-6)
    far = identity_grid(1, 8, 16)
    far[:, 0] = 5.0  # far right: border padding repeats the last column
    assert torch.allclose(warp(image, far), image[..., -1:].expand_as(image), atol=1e-6)


def test_image_alignment_warps_the_mirrored_roi():
    net = AASN(alignment="image", **TINY).eval()
    grid = identity_grid(1, H, W)
    grid[:, 0] += 2 * 3 / W  # 3 pixels
    x = siamese_input(1, grid=grid)
    with torch.no_grad():
        _, aligned = net.siamese_features(x)
        expected = net.encoder(warp(x[:, 3:6], grid))
    assert torch.allclose(aligned, expected, atol=1e-6)


def test_contrastive_distance_is_between_unit_embeddings():
    """d = ||g(F) - g(F'_f)||^2 on L2-normalised embeddings: within [0, 4] and unchanged by the scale of g's output."""
    torch.manual_seed(0)
    net = AASN(**TINY).eval()
    x = siamese_input(batch=2)
    with torch.no_grad():
        _, distance = net.forward_with_distance(x)
        features, mirrored = net.siamese_features(x)
        embedded = net.projection(torch.cat([features, mirrored]))
        unit = embedded / embedded.norm(dim=1, keepdim=True).clamp_min(1e-12)
        expected = (unit[:2] - unit[2:]).pow(2).sum(1, keepdim=True)
        net.projection.norm.weight.mul_(10.0)  # a ten times larger g(F): same directions, same d
        net.projection.norm.bias.mul_(10.0)
        _, scaled = net.forward_with_distance(x)
    assert distance.shape == (2, 1, H // 16, W // 16)
    assert float(distance.min()) >= 0.0 and float(distance.max()) <= 4.0 + 1e-6
    assert torch.allclose(distance, expected, atol=1e-6)
    assert torch.allclose(scaled, distance, atol=1e-5)


def test_gradients_reach_encoder_projection_and_decoder():
    torch.manual_seed(0)
    net = AASN(**TINY).train()
    x = siamese_input(batch=2)
    target = torch.zeros(2, 2, H, W)
    target[0, :, 4:20, 8:30] = 1.0
    heatmap, distance = net.forward_with_distance(x)
    AASNLoss()((heatmap, distance), target).backward()
    named = dict(net.named_parameters())
    for key in (
        "encoder.conv0.weight",
        "encoder.denseblock3.denselayer1.layers.conv2.weight",
        "projection.linear.weight",
        "transition.conv.weight",
        "decoder.denseblock4.denselayer1.layers.conv1.weight",
        "decoder.norm5.weight",
        "head.conv.weight",
    ):
        grad = named[key].grad
        assert grad is not None and grad.abs().sum() > 0, key
    channels = net.transition.conv.in_channels // 2
    assert net.transition.conv.weight.grad[:, channels:].abs().sum() > 0  # the mirrored half learns


def test_bad_input_is_rejected():
    net = AASN(**TINY)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        net(torch.rand(1, 6, H, W))
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 8, 40, 64))
    with pytest.raises(ValueError, match="fusion"):
        AASN(fusion="sum")
    with pytest.raises(ValueError, match="contrastive"):
        AASN(fusion="none", contrastive=True)
    with pytest.raises(ValueError, match="unknown network variant"):
        build_network("resnet")
    with pytest.raises(ValueError, match="define the variant"):
        build_network("aasn", fusion="none")
    with pytest.raises(TypeError, match="unknown network arguments \\['growth'\\]"):
        build_network("aasn", growth=4)


def test_shared_network_kwargs_serve_every_variant(caplog):
    """One network_kwargs (as a bundle config has) builds every variant; arguments of other variants are ignored."""
    shared = {**TINY, "projection_channels": 8, "split_block": 3, "margin": 0.5, "lse_r": 5.0}
    with caplog.at_level("INFO", logger="scripts.fracture.networks"):
        for variant in VARIANTS:
            build_network(variant, **shared)
    assert "DenseNetCAM does not use ['margin', 'projection_channels', 'split_block']" in caplog.text
    assert build_network("lse", **shared).lse_r == 5.0
    assert build_network("liu", **shared).margin == 0.5


def test_metatensor_batch_input():
    from monai.data import MetaTensor

    net = AASN(**TINY).eval()
    x = siamese_input()
    with torch.no_grad():
        expected = net(x)
        out = net(MetaTensor(x))
    assert torch.allclose(torch.as_tensor(out), expected, atol=1e-6)


def test_vanilla_computes_monai_densenet_features():
    """Same function as MONAI's DenseNet (transitions pool before their 1x1 conv: an exact reordering)."""
    from monai.networks.nets import DenseNet

    torch.manual_seed(0)
    reference = DenseNet(2, 3, 1, **TINY).train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial running statistics
            reference(torch.rand(4, 3, H, W) * 2)
    reference.eval()
    net = build_network("vanilla", **TINY).eval()
    own, prefixes = net.state_dict(), net.densenet_prefixes()
    for key, value in reference.state_dict().items():
        if key.startswith("features."):
            prefix = next(p for p in prefixes if key.startswith(p + "."))
            own[prefixes[prefix] + key[len(prefix) :]] = value
    net.load_state_dict(own)
    x = siamese_input()
    with torch.no_grad():
        expected = reference.features(x[:, :3])
        assert torch.allclose(net.decoder(net.transition(net.encoder(x[:, :3]))), expected, atol=1e-5)


def test_channels_last_changes_layout_not_values():
    plain = build_network("aasn", channels_last=False, **TINY).eval()
    fast = build_network("aasn", **TINY).eval()
    fast.load_state_dict(plain.state_dict())
    assert fast.encoder.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.encoder.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    x = siamese_input()
    with torch.no_grad():
        out = fast(x)
        assert torch.allclose(out, plain(x), atol=1e-5)
        assert torch.allclose(fast.forward_with_distance(x)[1], plain.forward_with_distance(x)[1], atol=1e-4)

"""TorchScript of every variant, and `python -m monai.bundle ckpt_export` of AASN, equal to the eager model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

from scripts.fracture.networks import VARIANTS, build_network  # noqa: E402

TINY = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1], "bn_size": 2}


def siamese_input(batch: int = 2) -> torch.Tensor:
    torch.manual_seed(3)
    x = torch.rand(batch, 8, 32, 64)
    x[:, 6:] = x[:, 6:] * 2 - 1
    return x


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_torchscript_equals_eager(variant):
    net = build_network(variant, **TINY).eval()
    scripted = torch.jit.script(net)
    x = siamese_input()
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
        ts_heatmap, ts_distance = scripted.forward_with_distance(x)
        heatmap, distance = net.forward_with_distance(x)
    assert torch.allclose(ts_heatmap, heatmap, atol=1e-5)
    assert ts_distance.shape == distance.shape and torch.allclose(ts_distance, distance, atol=1e-5)


def test_ckpt_export_of_aasn(tmp_path):
    config = {
        "imports": ["$import scripts", "$import scripts.fracture.networks"],
        "network_def": {"_target_": "scripts.fracture.networks.build_network", "variant": "aasn", **TINY},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "metadata.json").write_text(json.dumps({"version": "0.0.1", "name": "aasn-export-test"}))
    torch.manual_seed(0)
    net = build_network("aasn", **TINY)
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode export matters
        for _ in range(3):
            net(siamese_input(4) * 1.5)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BUNDLE), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
            "--filepath", str(tmp_path / "model.ts"),
            "--ckpt_file", str(tmp_path / "model.pt"),
            "--meta_file", str(tmp_path / "metadata.json"),
            "--config_file", str(tmp_path / "config.json"),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["name"] == "aasn-export-test"
    net.eval()
    x = siamese_input()
    with torch.no_grad():
        assert (exported(x) - net(x)).abs().max().item() <= 1e-5
        assert exported(x).shape == (2, 1, 32, 64)

"""ONNX export of the AASN with MONAI's ``python -m monai.bundle onnx_export`` (opset 18, torch's exporter), run with
onnxruntime and compared with the eager network (1e-4) on an input the export never saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the test extra: pip install -e .[test] (requirements.txt pins it)")
ort = pytest.importorskip("onnxruntime", reason="the test extra: pip install -e .[test] (requirements.txt pins it)")

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

from scripts.fracture.networks import build_network  # noqa: E402

TINY = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1], "bn_size": 2, "projection_channels": 8}
OPSET = 18


def _siamese_input(seed: int, shape=(1, 8, 64, 128)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator)
    x[:, 6:] = x[:, 6:] * 2.2 - 1.1  # the TPS grid, a little beyond [-1, 1] as at the ROI border
    return x


def test_onnx_export_of_aasn_equals_eager(tmp_path):
    torch.manual_seed(0)
    network = build_network("aasn", **TINY)
    network.train()
    with torch.no_grad():  # non-trivial weights and BatchNorm statistics, so that the comparison compares something
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        for seed in range(3):
            network(_siamese_input(100 + seed, (4, 8, 64, 128)) * 1.5)
    network.eval()
    torch.save(network.state_dict(), tmp_path / "model.pt")
    config = {
        "imports": ["$import scripts", "$import scripts.fracture.networks"],
        "network_def": {"_target_": "scripts.fracture.networks.build_network", "variant": "aasn", **TINY},
    }
    (tmp_path / "inference.json").write_text(json.dumps(config))
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(BUNDLE), os.environ.get("PYTHONPATH", "")]),
    )
    done = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "onnx_export", "network_def",
            "--filepath", str(tmp_path / "model.onnx"), "--ckpt_file", str(tmp_path / "model.pt"),
            "--meta_file", str(BUNDLE / "configs" / "metadata.json"), "--config_file", str(tmp_path / "inference.json"),
            "--input_shape", "[1, 8, 64, 128]",
            "--converter_kwargs", f"{{'opset_version': {OPSET}, 'input_names': ['image'], 'output_names': ['pred']}}",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    model = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] >= 17
    assert "GridSample" in {node.op_type for node in model.graph.node}  # the feature alignment, exported as such
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    for seed in (1, 2):
        x = _siamese_input(seed)
        (onnx_out,) = session.run(["pred"], {"image": x.numpy()})
        with torch.no_grad():
            eager = network(x).numpy()
        assert onnx_out.shape == eager.shape == (1, 1, 64, 128)
        assert eager.std() > 1e-3  # a heatmap that varies, not a constant
        np.testing.assert_allclose(onnx_out, eager, atol=1e-4, rtol=0)

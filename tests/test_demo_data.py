"""The demo data belongs to the demo (``scripts.demo``), not to the workflows: ``train.json`` and the other configs
never simulate, stop with one line saying how to get the demo data when their data is missing, and still pass MONAI's
property checks on a fresh clone, with no data anywhere."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
sys.path.insert(0, str(BUNDLE))

from scripts.datalist import MissingDataError, require_datalist, require_input  # noqa: E402
from scripts.demo import DEMO_DATA_DIR, simulate_demo_data  # noqa: E402
from scripts.run_guard import StopRun  # noqa: E402


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BUNDLE), env.get("PYTHONPATH", "")])
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def fresh_bundle(tmp_path):
    """The bundle as a fresh clone has it: configs and code, no data, no weights, no outputs."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    shutil.copytree(BUNDLE / "scripts", bundle / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    return bundle


def test_demo_data_is_simulated_once_into_the_configs_default_dataset_dir(tmp_path, monkeypatch, caplog):
    calls = []

    def generate_dataset(out_dir, n, anatomy, seed, **kwargs):
        calls.append((out_dir, n, anatomy, seed, kwargs))
        path = Path(out_dir) / "datalist.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[]")
        return str(path)

    monkeypatch.setitem(sys.modules, "simulation", types.SimpleNamespace(generate_dataset=generate_dataset))
    monkeypatch.setitem(sys.modules, "simulation.atlas", types.SimpleNamespace(SUBSET_DIR=Path("/subset")))
    with caplog.at_level(logging.WARNING):
        assert simulate_demo_data(tmp_path / "demo", 7, size=128, seed=3) == tmp_path / "demo" / "datalist.json"
    # the shipped atlas subset, whatever atlas lies beside the repository, with intact twins for training
    assert calls == [
        (
            str(tmp_path / "demo"),
            7,
            "atlas",
            3,
            {"size": 128, "atlas_dir": "/subset", "intact_twins": True, "workers": 2},
        )
    ]
    assert "simulating the demo data: 7 radiographs" in caplog.text
    simulate_demo_data(tmp_path / "demo")  # present now: not simulated again
    assert len(calls) == 1
    # where it goes by default is where train.json and inference.json look by default
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert DEMO_DATA_DIR == BUNDLE / "data" / "demo"
    assert train["dataset_dir"] == "$os.path.join(@bundle_root, 'data', 'demo')"


def test_no_config_simulates_data():
    for config in sorted((BUNDLE / "configs").rglob("*.json")):
        text = config.read_text()
        assert "simulation" not in text and "demo_num_images" not in text, config


def test_missing_datalist_or_input_stops_with_one_line_saying_how_to_get_the_demo_data(tmp_path):
    with pytest.raises(MissingDataError) as raised:
        require_datalist(tmp_path / "datalist.json")
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'datalist.json'}: no datalist")
    assert "make demo-data" in message and "--dataset_dir" in message
    assert raised.value.code == message  # SystemExit: printed without a traceback, exit status 1
    with pytest.raises(MissingDataError, match=r"no such inference input .*make demo-data"):
        require_input(tmp_path / "nothing")
    # a datalist or a folder that is there but holds nothing to use stops in one line too (issue 16)
    (tmp_path / "datalist.json").write_text("[]")
    with pytest.raises(StopRun, match=r"datalist\.json: the datalist has no items\.$"):
        require_datalist(tmp_path / "datalist.json")
    (tmp_path / "images").mkdir()
    with pytest.raises(StopRun, match=r"images: no image files"):
        require_input(tmp_path / "images")
    item = {"image": "a.dcm", "annotation": "a.json", "label": 0, "subject": "s", "fold": 0}
    (tmp_path / "datalist.json").write_text(json.dumps([item]))
    assert require_datalist(tmp_path / "datalist.json") == str(tmp_path / "datalist.json")
    (tmp_path / "images" / "a.png").write_bytes(b"")
    assert require_input(tmp_path / "images") == str(tmp_path / "images")


@pytest.mark.parametrize("config", ["train.json", "inference.json", "landmark_train.json"])
def test_plain_run_without_data_fails_fast_with_one_line(fresh_bundle, config):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            f"configs/{config}",
            "--device",
            "$torch.device('cpu')",
        ],
        cwd=fresh_bundle,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "make demo-data" in last and "data/demo/datalist.json" in last, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (fresh_bundle / "data").exists()  # nothing was simulated


CHECK_SCRIPT = """
from monai.bundle import ConfigWorkflow

for config, kind in (
    ("configs/train.json", "train"), ("configs/inference.json", "infer"), ("configs/landmark_train.json", "train")
):
    workflow = ConfigWorkflow(config_file=config, meta_file="configs/metadata.json", workflow_type=kind)
    workflow.initialize()
    missing = workflow.check_properties()
    assert missing == [], (config, missing)
    workflow.finalize()
    print(config, "ok")
"""


def test_monai_property_checks_pass_as_a_script_on_a_fresh_clone(fresh_bundle):
    script = fresh_bundle / "check_properties.py"  # a plain script: no __main__ guard, as a user writes one
    script.write_text(CHECK_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=fresh_bundle, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-5000:]
    lines = result.stdout.splitlines()
    assert "configs/train.json ok" in lines and "configs/inference.json ok" in lines, result.stdout[-3000:]
    assert not (fresh_bundle / "data").exists()  # nothing was simulated


def test_the_demo_names_test_members_that_a_shipped_model_trained_on(tmp_path):
    from scripts.demo import members_seen_by_shipped_models

    held_out = json.loads((Path(BUNDLE) / "configs" / "metadata.json").read_text())["held_out_atlas_members"]
    inside, outside = f"atlas-{held_out[0]}", "atlas-999"
    items = [
        {"image": f"{s}_{i}.dcm", "annotation": f"{s}_{i}.json", "label": i % 2, "subject": s, "fold": fold}
        for s, fold in ((inside, 0), (outside, 1), ("atlas-998", 2), ("atlas-997", 3), ("atlas-996", 4))
        for i in range(2)
    ]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"data": items}))
    assert members_seen_by_shipped_models(datalist, 0) == []
    assert members_seen_by_shipped_models(datalist, 1) == [outside]

"""metadata.json's figures and formats come from where it says: eval_metrics from the named results file, the
landmark networks' data formats from their config, every format checked by verify_net_in_out elsewhere
(tests/test_bundle_archive.py, tests/test_verify_bundle.py)."""

from __future__ import annotations

import json
from pathlib import Path

from custom_transforms.conventions import LANDMARK_NAMES

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"


def _metadata() -> dict:
    return json.loads((CONFIGS / "metadata.json").read_text())


def test_eval_metrics_are_numbers_from_the_named_results_file():
    metadata = _metadata()
    source = metadata["eval_metrics_source"]
    assert "not the figures of a shipped model" in source["note"].lower()
    results = json.loads((REPO / source["file"]).read_text())
    for part in source["key"].split("."):
        results = results[part]
    assert set(metadata["eval_metrics"]) == {"auc", "ap", "recall_at_fp_1pct", "recall_at_fp_10pct"}
    for name, value in metadata["eval_metrics"].items():
        assert isinstance(value, float) and 0.0 <= value <= 1.0, name
        assert value == round(results[name]["mean"], 4), name


def test_landmark_eval_metrics_are_the_shipped_detectors_held_out_figures():
    metadata = _metadata()
    source = metadata["landmark_eval_metrics_source"]
    assert source["file"] == "benchmarks/results/shipped_models.json"
    results = json.loads((REPO / source["file"]).read_text())
    for part in source["key"].split("."):
        results = results[part]
    expected = {"mre_mm": 2, "sdr_2mm": 1, "sdr_2.5mm": 1, "sdr_3mm": 1, "sdr_4mm": 1}
    assert set(metadata["landmark_eval_metrics"]) == set(expected)
    for name, digits in expected.items():
        assert metadata["landmark_eval_metrics"][name] == round(results[name], digits), name
    held_out = json.loads((REPO / source["file"]).read_text())["held_out_atlas_members"]
    assert held_out == metadata["held_out_atlas_members"]


def test_landmark_data_formats_match_their_config():
    metadata = _metadata()
    config = json.loads((CONFIGS / "landmark_inference.json").read_text())
    assert config["num_landmarks"] == len(LANDMARK_NAMES)
    expected_shape = {
        "landmark_network_data_format": config["input_size"],
        "landmark_refine_network_data_format": [config["refine_patch_size"]] * 2,
    }
    for key, shape in expected_shape.items():
        where = metadata["network_configs"][key]
        assert where["config_file"] == "configs/landmark_inference.json" and where["net_id"] in config
        image, pred = metadata[key]["inputs"]["image"], metadata[key]["outputs"]["pred"]
        assert image["num_channels"] == config[where["net_id"]]["in_channels"] == 1
        assert image["spatial_shape"] == pred["spatial_shape"] == shape
        assert pred["num_channels"] == len(LANDMARK_NAMES)
        assert [pred["channel_def"][str(i)].split(":")[0] for i in range(len(LANDMARK_NAMES))] == list(LANDMARK_NAMES)


def test_the_fracture_network_format_is_the_inference_configs():
    metadata = _metadata()
    inference = json.loads((CONFIGS / "inference.json").read_text())
    assert metadata["network_configs"]["network_data_format"] == {
        "config_file": "configs/inference.json",
        "net_id": "network_def",
        "network": "AASN fracture network",
    }
    fmt = metadata["network_data_format"]
    assert fmt["inputs"]["image"]["spatial_shape"] == fmt["outputs"]["pred"]["spatial_shape"] == inference["roi_size"]
    assert fmt["inputs"]["image"]["num_channels"] == 8 and fmt["outputs"]["pred"]["num_channels"] == 1

"""The landmark detector's bundle workflows really run: training (shape model, checkpoints), evaluation
(MRE/SDR files) and inference on images without annotation, where a report is written for every image
and an image that is not a pelvis (or not readable) is recorded as such while the batch goes on.

Everything is tiny: toy pelvis PNGs (``landmark_testdata``), a 32 x 32 input and a two-level UNet, one epoch.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from custom_transforms.conventions import LANDMARK_NAMES  # noqa: E402
from landmark_testdata import write_toy_dataset  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TINY = {
    "input_size": [32, 32],
    "network_def#channels": [4, 8],
    "network_def#strides": [2],
    "refine_long_side": 64,
    "refine_patch_size": 16,
    "refine_network_def#channels": [4, 8],
    "refine_network_def#strides": [2],
    "batch_size": 4,
    "num_workers": 0,
    "show_progress": False,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from monai.bundle import run

    root = tmp_path_factory.mktemp("landmarks")
    datalist = write_toy_dataset(root / "data", count=20, shape=(60, 75), spacing_mm=5.0)
    bundle_root = root / "bundle"
    run(
        "run",
        config_file=str(CONFIGS / "landmark_train.json"),
        bundle_root=str(bundle_root),
        dataset_dir=str(Path(datalist).parent),
        max_epochs=1,
        val_interval=1,
        **TINY,
    )
    return {"root": root, "bundle_root": bundle_root, "data": Path(datalist).parent}


def test_training_config_passes_monai_property_checks(trained):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "landmark_train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="train",
        init_id="none",
        bundle_root=str(trained["bundle_root"]),
        dataset_dir=str(trained["data"]),
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_training_writes_weights_and_shape_model(trained):
    import torch

    models = trained["bundle_root"] / "models"
    assert (models / "landmark_model.pt").is_file() and (models / "landmark_last.pt").is_file()
    last = torch.load(models / "landmark_last.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler"} <= set(last) and last["trainer"]["epoch"] == 1
    assert (models / "landmark_refine_model.pt").is_file() and (models / "landmark_refine_last.pt").is_file()
    shape = json.loads((models / "landmark_shape_model.json").read_text())
    assert np.asarray(shape["mean"]).shape == (16, 2)
    assert 1 <= len(shape["variances"]) and shape["mean_size_mm"] > 50  # mm, a pelvis-sized configuration


def test_evaluation_writes_mre_and_sdr(trained):
    from monai.bundle import run

    out = trained["root"] / "eval"
    run(
        "run",
        config_file=[str(CONFIGS / "landmark_inference.json"), str(CONFIGS / "landmark_evaluate.json")],
        bundle_root=str(trained["bundle_root"]),
        dataset_dir=str(trained["data"]),
        output_dir=str(out),
        nonpelvic_per_kind=1,
        device="cpu",
        **{k: v for k, v in TINY.items() if k.startswith(("input_size", "network_def", "refine_"))},
    )
    metrics = json.loads((out / "landmark_metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["fold"] == 0  # fold 0 of 20 images: 2 subjects x 2
    assert set(metrics["per_landmark"]) == set(LANDMARK_NAMES)
    assert set(metrics["plausibility_nonpelvic"]) == {"blank", "noise", "chest", "extremity", "lateral"}
    rows = (out / "landmark_errors.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4 and rows[0].split(",") == ["case", "mre_mm", *LANDMARK_NAMES]
    # the summary by hand from the per-image radial errors (mm, 4 decimals in the CSV): MRE = their mean, SDR at r =
    # the percentage within r, per landmark = its column. (A one-epoch detector on 5 mm pixels misses by tens of mm,
    # so every SDR here is 0: the SDR formula's planted values are in test_landmark_metrics.py.)
    errors = np.array([[float(v) for v in row.split(",")[2:]] for row in rows[1:]])
    assert errors.shape == (4, 16)
    assert metrics["overall"]["mre_mm"] == pytest.approx(errors.mean(), abs=1e-3)
    for r in (2, 2.5, 3, 4):
        assert metrics["overall"][f"sdr_{r:g}mm"] == pytest.approx(100 * (errors <= r).mean(), abs=1e-9), r
    for name, column in zip(LANDMARK_NAMES, errors.T):
        assert metrics["per_landmark"][name]["mre_mm"] == pytest.approx(column.mean(), abs=1e-3), name
    for row, values in zip(rows[1:], errors):
        assert float(row.split(",")[1]) == pytest.approx(values.mean(), abs=1e-3)


def test_inference_without_annotations_reports_every_image(trained, tmp_path):
    from monai.bundle import run

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(trained["data"] / "toy001.png", images / "pelvis.png")  # no annotation beside it
    from PIL import Image

    Image.fromarray(np.full((60, 75), 30000, np.uint16)).save(images / "blank.png")
    (images / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"not really")
    out = tmp_path / "out"
    # an untrained network is not trusted to judge plausibility: threshold 0 lets the pelvis through,
    # while the blank image (no contrast) is still refused
    run(
        "run",
        config_file=str(CONFIGS / "landmark_inference.json"),
        bundle_root=str(trained["bundle_root"]),
        input=str(images),
        output_dir=str(out),
        plausibility_threshold=0.0,
        device="cpu",
        **{k: v for k, v in TINY.items() if k.startswith(("input_size", "network_def", "refine_"))},
    )
    summary = {Path(s["image"]).name: s["status"] for s in json.loads((out / "landmarks_summary.json").read_text())}
    assert summary == {"pelvis.png": "ok", "blank.png": "not_a_pelvis", "broken.dcm": "unreadable"}
    report = json.loads((out / "pelvis" / "landmarks.json").read_text())
    assert report["landmarks_detected"] is True and list(report["landmarks"]) == list(LANDMARK_NAMES)
    for entry in report["landmarks"].values():
        assert len(entry["xy"]) == 2 and 0 <= entry["confidence"] <= 1
        assert -0.5 <= entry["xy"][0] <= 74.5 and -0.5 <= entry["xy"][1] <= 59.5
    assert report["spacing_mm"] is None and report["spacing_estimated"] is True  # a PNG says no spacing
    assert (out / "pelvis" / "landmarks.png").is_file()
    refused = json.loads((out / "blank" / "landmarks.json").read_text())
    assert "does not look like an AP pelvic radiograph" in refused["error"] and "blank.png" in refused["error"]

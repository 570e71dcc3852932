"""Training survives its data (issue 22), through ``monai.bundle.run`` of ``train.json``: a training image whose
landmarks fold the exact TPS warp trains with a smoother warp and the log names it; an image that cannot be read
is skipped, counted and named (a validation image is left out); when more than the allowed share of an epoch's
samples fail, training stops with a message naming the share and the first files.

Tiny, as ``test_bundle_workflows.py``: 20 synthetic 256 x 256 radiographs, a 64 x 128 ROI, a one-block DenseNet.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bundle_data import TINY_TRAINING, write_dataset  # noqa: E402
from custom_transforms.errors import GeometryError  # noqa: E402
from custom_transforms.pipeline import aasn_geometry, aasn_loading  # noqa: E402
from custom_transforms.tps import TPSGridd  # noqa: E402

from scripts.datalist import fold_split  # noqa: E402
from scripts.failure_tolerant_dataset import SampleFailureError  # noqa: E402

TINY = {**TINY_TRAINING, "max_epochs": 1, "val_interval": 1}
#: The loggers whose records the tests read (``monai.bundle.run`` applies the bundle's logging.conf to the root).
LOGGERS = ("custom_transforms.tps", "scripts.failure_tolerant_dataset")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def log():
    handler = Records()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield handler
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.fixture
def data(tmp_path):
    datalist = write_dataset(tmp_path / "data", n=20, seed=0)
    return {"dir": datalist.parent, "datalist": datalist, "root": tmp_path}


def train(data: dict, recipe: tuple[str, ...] = (), **overrides) -> Path:
    from monai.bundle import run

    settings = data["root"] / "settings.json"
    settings.write_text(json.dumps({**TINY, **overrides}))
    bundle_root = data["root"] / "run"
    run(
        config_file=[str(CONFIGS / "train.json"), *(str(CONFIGS / f) for f in recipe), str(settings)],
        bundle_root=str(bundle_root),
        dataset_dir=str(data["dir"]),
    )
    return bundle_root


def training_images(data: dict) -> list[str]:
    return [item["image"] for item in fold_split(data["datalist"], 0, "training")]


def break_image(path: str) -> None:
    Path(path).write_bytes(b"not a PNG")


def error_chain(error: BaseException) -> str:
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def test_a_training_image_whose_landmarks_fold_the_warp_trains_and_the_log_names_it(data, log):
    image = training_images(data)[0]
    annotation = Path(image).with_suffix(".json")
    content = json.loads(annotation.read_text())
    landmarks = content["landmarks"]
    # two close landmarks exchanged on one side (14 px apart): the sides no longer mirror each other there
    landmarks["pubic_tubercle_r"], landmarks["obturator_superior_r"] = (
        landmarks["obturator_superior_r"],
        landmarks["pubic_tubercle_r"],
    )
    annotation.write_text(json.dumps(content))
    strict = aasn_loading() + aasn_geometry(roi_size=TINY["roi_size"], margin=[0.1, 0.1])
    strict = [TPSGridd(fallback=False) if isinstance(t, TPSGridd) else t for t in strict]
    item = {"image": image, "annotation": str(annotation), "label": 0}
    with pytest.raises(GeometryError, match="folds"):  # the exact spline folds for these landmarks
        for transform in strict:
            item = transform(item)

    bundle_root = train(data)

    last = torch.load(bundle_root / "models" / "last.pt", weights_only=True)
    assert last["trainer"]["epoch"] == 1
    assert f"{image}: the thin-plate spline warp folds" in log.text
    assert "using the tps_regularised(lambda=" in log.text
    assert "epoch 1: 0 of 12 samples skipped; 1 warps fell back (1 tps_regularised(lambda=" in log.text


@pytest.mark.parametrize("recipe", [(), ("scale_cpu.json",)], ids=["default", "cpu_recipe"])
def test_a_sample_that_cannot_be_made_is_skipped_counted_and_named(data, log, recipe):
    broken_training = training_images(data)[1]
    broken_validation = fold_split(data["datalist"], 0, "validation")[0]["image"]
    break_image(broken_training)
    break_image(broken_validation)

    # the CPU recipe caches the whole geometry and batches with TwinBatchSampler (its windows fit the tiny ROI)
    cpu = {"crop_size": [32, 32], "batch_size": 4} if recipe else {}
    bundle_root = train(data, recipe, max_failed_sample_share=0.5, **cpu)

    assert torch.load(bundle_root / "models" / "last.pt", weights_only=True)["trainer"]["epoch"] == 1
    text = log.text
    assert f"skipped sample {broken_training} (unreadable)" in text
    assert "1 of 2 items left out" in text and broken_validation in text
    assert "training data: " in text and "samples skipped over 1 epochs" in text


def test_training_stops_when_more_than_the_allowed_share_of_samples_fail(data):
    broken = training_images(data)[:3]
    for image in broken:
        break_image(image)

    with pytest.raises(Exception) as raised:
        train(data)

    chain = error_chain(raised.value)
    assert "samples of epoch 1 cannot be made" in chain and "more than the allowed 1 %" in chain
    assert f"first: {broken[0]} (unreadable" in chain
    failure = raised.value
    while failure is not None and not isinstance(failure, SampleFailureError):
        failure = failure.__cause__ or failure.__context__
    assert failure is not None


class ConstantNetwork(torch.nn.Module):
    """Logits of the packed input's first channel: no weights to load, enough for a report."""

    score_pooling = "max"

    def forward(self, x):
        return x[:, 0:1]


def test_the_inference_report_names_the_warp(tmp_path):
    from monai.bundle import ConfigWorkflow

    from _bundle_data import write_case

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    write_case(images, "clean", rng, fractured=False)
    write_case(images, "exchanged", rng, fractured=False)
    annotation = images / "exchanged.json"
    content = json.loads(annotation.read_text())
    landmarks = content["landmarks"]
    landmarks["pubic_tubercle_r"], landmarks["obturator_superior_r"] = (
        landmarks["obturator_superior_r"],
        landmarks["pubic_tubercle_r"],
    )
    annotation.write_text(json.dumps(content))
    out = tmp_path / "out"
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "inference.json")],
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="infer",
        input=str(images),
        output_dir=str(out),
        roi_size=TINY["roi_size"],
        network_def=ConstantNetwork(),
        handlers=[{"_target_": "scripts.reporting.inference_writer.FractureReportWriter", "output_dir": str(out)}],
    )
    workflow.initialize()
    workflow.run()
    clean = json.loads((out / "clean" / "report.json").read_text())
    exchanged = json.loads((out / "exchanged" / "report.json").read_text())
    assert clean["status"] == exchanged["status"] == "ok"
    assert clean["tps_warp"] == "tps"
    assert exchanged["tps_warp"].startswith("tps_regularised(lambda=")
    summary = {Path(e["image"]).stem: e for e in json.loads((out / "inference_summary.json").read_text())}
    assert summary["exchanged"]["tps_warp"] == exchanged["tps_warp"] and summary["clean"]["tps_warp"] == "tps"

"""The bundle's workflows really run: property checks, training through ``monai.bundle.run`` (both run ids),
evaluation writing metrics that match its per-case table, inference putting a planted bright spot where it
is, resume after a killed run, a 2-process gloo DDP run, and TorchScript export.

Everything is tiny: 20 synthetic 256 x 256 radiographs, a 64 x 128 ROI and a one-block-per-stage DenseNet.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
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

from _bundle_data import TINY_TRAINING, write_case, write_dataset  # noqa: E402
from custom_transforms.conventions import radiograph_nifti_affine  # noqa: E402

from scripts.datalist import fold_split  # noqa: E402

TINY = TINY_TRAINING


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BUNDLE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    datalist = write_dataset(root / "data", n=20, seed=0)
    tiny = root / "tiny.json"
    tiny.write_text(json.dumps({**TINY, "max_epochs": 1, "val_interval": 1}))
    return {"root": root, "data": datalist.parent, "datalist": datalist, "tiny": tiny}


@pytest.fixture(scope="module")
def trained(work):
    """One tiny epoch through ``monai.bundle.run`` with the legacy run id ``training``."""
    from monai.bundle import run

    bundle_root = work["root"] / "trained"
    run(
        "training",
        config_file=[str(CONFIGS / "train.json"), str(work["tiny"])],
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(bundle_root),
        dataset_dir=str(work["data"]),
    )
    return bundle_root


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_and_infer_configs_pass_monai_property_checks(work, tmp_path, monkeypatch):
    from monai.bundle import ConfigWorkflow

    # a one-process gloo group for the multi-GPU config's own initialisation
    for k, v in dict(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1"
    ).items():
        monkeypatch.setenv(k, v)
    meta = str(CONFIGS / "metadata.json")
    for files, kind, init_id in (
        ([CONFIGS / "train.json"], "train", "none"),  # "none": no initialisation needed to resolve properties
        ([CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json"], "train", "initialize"),
        ([CONFIGS / "inference.json"], "infer", "none"),
    ):
        workflow = ConfigWorkflow(
            config_file=[str(f) for f in files] + [str(work["tiny"])],
            meta_file=meta,
            workflow_type=kind,
            init_id=init_id,
            bundle_root=str(tmp_path),
            dataset_dir=str(work["data"]),
            input=str(work["data"]),
        )
        workflow.initialize()
        try:
            assert workflow.check_properties() == [], files
            assert workflow.bundle_root == str(tmp_path) and workflow.dataset_dir == str(work["data"])
        finally:
            workflow.finalize()
    assert ConfigWorkflow(config_file=str(CONFIGS / "train.json"), workflow_type="train").parser["learning_rate"] > 0


def test_one_epoch_training_writes_checkpoints_and_logs(trained):
    last = torch.load(trained / "models" / "last.pt", weights_only=True)
    assert last["trainer"]["epoch"] == 1 and last["trainer"]["iteration"] >= 1
    assert {"network", "optimizer", "best_metric"} <= set(last)
    weights = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert weights.keys() == last["network"].keys()
    assert list((trained / "logs").glob("events.out.tfevents.*"))


def test_evaluation_metrics_match_per_case_table_and_pictures_exist(work, trained):
    from monai.bundle import run
    from sklearn.metrics import average_precision_score, roc_auc_score

    run(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json"), str(work["tiny"])],
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(trained),
        dataset_dir=str(work["data"]),
    )
    out = trained / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "per_case.csv") as f:
        rows = list(csv.DictReader(f))
    test_fold = [it for it in json.loads(work["datalist"].read_text())["data"] if it["fold"] == 0]
    assert sorted(r["case"] for r in rows) == sorted(Path(it["image"]).stem for it in test_fold)
    labels = [int(r["label"]) for r in rows]
    scores = [float(r["score"]) for r in rows]
    assert labels == [next(it["label"] for it in test_fold if Path(it["image"]).stem == r["case"]) for r in rows]
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["ap"] == pytest.approx(average_precision_score(labels, scores))
    assert metrics["num_images"] == len(rows) and metrics["num_fractures"] == sum(labels)
    # the fractures of the test fold's annotations, counted by hand; each recall is the per-image recalled fractures
    # of the table summed over them; a larger false-positive budget never recalls fewer
    fractures = {
        Path(it["image"]).stem: len(json.loads((work["data"] / it["annotation"]).read_text())["fractures"])
        for it in test_fold
    }
    assert metrics["num_fractures"] == sum(fractures.values()) > 0
    assert {r["case"]: int(r["num_fractures"]) for r in rows} == fractures
    for key in ("recall_at_fp_1pct", "recall_at_fp_10pct"):
        recalled = [int(r[key.replace("recall", "recalled")]) for r in rows]
        assert all(0 <= n <= fractures[r["case"]] for n, r in zip(recalled, rows))
        assert metrics[key] == pytest.approx(sum(recalled) / sum(fractures.values()))
    assert metrics["recall_at_fp_10pct"] >= metrics["recall_at_fp_1pct"]
    for name in ("roc.png", "pr.png", "froc.png"):
        assert (out / name).stat().st_size > 1000
    assert metrics["pictures"]["cases"] and all(Path(p).is_file() for p in metrics["pictures"]["cases"])


class BrightnessNetwork(torch.nn.Module):
    """Heatmap logits = a steep function of the ROI's first channel: the heatmap peaks where the ROI is brightest."""

    score_pooling = "max"

    def forward(self, x):
        return 40.0 * (x[:, 0:1] - 0.7)


def test_inference_report_peak_lies_on_planted_bright_spot(tmp_path):
    from monai.bundle import ConfigWorkflow

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    spot = (110.0, 171.0)  # between the right obturator landmarks, inside the ROI
    write_case(images, "spotted", rng, fractured=False, spot=spot, spacing_mm=1.25)
    annotation = json.loads((images / "spotted.json").read_text())
    out = tmp_path / "out"
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "inference.json")],
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="infer",
        input=str(images),
        output_dir=str(out),
        roi_size=[64, 128],
        network_def=BrightnessNetwork(),
        handlers=[{"_target_": "scripts.reporting.inference_writer.FractureReportWriter", "output_dir": str(out)}],
    )
    workflow.initialize()
    workflow.run()
    report = json.loads((out / "spotted" / "report.json").read_text())
    assert report["positive"] and report["fracture_probability"] > 0.9
    peak = report["peaks"][0]
    assert np.hypot(peak["x"] - spot[0], peak["y"] - spot[1]) < 1.5  # original pixels
    assert peak["x_mm"] == pytest.approx(peak["x"] * 1.25) and peak["y_mm"] == pytest.approx(peak["y"] * 1.25)
    assert report["landmarks"]["pubic_tubercle_r"] == pytest.approx(annotation["landmarks"]["pubic_tubercle_r"])
    import nibabel as nib

    heatmap = nib.load(out / "spotted" / "heatmap.nii.gz")
    assert heatmap.shape == (256, 256)  # x, y of the original image
    np.testing.assert_allclose(heatmap.affine, radiograph_nifti_affine((1.25, 1.25)))
    data = np.asarray(heatmap.dataobj)
    ix, iy = np.unravel_index(int(np.argmax(data)), data.shape)
    assert np.hypot(ix - spot[0], iy - spot[1]) < 2.0
    assert (out / "spotted" / "overlay.png").stat().st_size > 1000


def test_inference_without_landmarks_is_a_clear_error(tmp_path):
    from scripts.datalist import inference_items

    rng = np.random.default_rng(0)
    write_case(tmp_path, "lonely", rng, fractured=False)
    (tmp_path / "lonely.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lonely\.png: no landmarks.*lonely\.json"):
        inference_items(tmp_path)


_KILLED_RUN = """
import os, signal, sys
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
workflow = ConfigWorkflow(config_file={configs!r}, workflow_type="train", bundle_root={root!r}, dataset_dir={data!r})
workflow.initialize()
# after the epoch-1 checkpoint (this handler is attached after the bundle's): die without any clean-up
workflow.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: os.kill(os.getpid(), signal.SIGKILL))
workflow.run()
"""

_RESUMED_RUN = """
import json, sys, torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
workflow = ConfigWorkflow(config_file={configs!r}, workflow_type="train", bundle_root={root!r}, dataset_dir={data!r})
workflow.initialize()
trainer, optimizer = workflow.trainer, workflow.parser.get_parsed_content("optimizer")
seen = {{}}

@trainer.on(Events.EPOCH_STARTED)
def first_epoch(engine):  # attached after the bundle's resume handler, which acts at STARTED
    if not seen:
        seen["epoch"] = engine.state.epoch
        seen["iteration"] = engine.state.iteration
        torch.save(optimizer.state_dict(), {opt_path!r})

workflow.run()
print("RESUMED " + json.dumps(seen))
"""


def test_killed_training_resumes_at_next_epoch_with_same_optimiser_state(work, tmp_path):
    configs = [str(CONFIGS / "train.json"), str(work["tiny"])]
    override = tmp_path / "two_epochs.json"
    override.write_text(json.dumps({"max_epochs": 2, "val_interval": 1}))
    configs.append(str(override))
    root = str(tmp_path / "run")
    fmt = dict(configs=configs, root=root, data=str(work["data"]), opt_path=str(tmp_path / "opt_at_resume.pt"))
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN.format(**fmt)], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    saved = torch.load(Path(root) / "models" / "last.pt", weights_only=True)
    assert saved["trainer"]["epoch"] == 1
    resumed = subprocess.run(
        [sys.executable, "-c", _RESUMED_RUN.format(**fmt)], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    seen = json.loads(resumed.stdout.split("RESUMED ")[-1])
    assert seen == {"epoch": 2, "iteration": saved["trainer"]["iteration"]}
    at_resume = torch.load(tmp_path / "opt_at_resume.pt", weights_only=True)
    assert at_resume["state"].keys() == saved["optimizer"]["state"].keys() and at_resume["state"]
    for pid, state in saved["optimizer"]["state"].items():
        for k, v in state.items():
            torch.testing.assert_close(at_resume["state"][pid][k], v)
    final = torch.load(Path(root) / "models" / "last.pt", weights_only=True)
    assert final["trainer"]["epoch"] == 2


def test_multi_gpu_config_runs_two_gloo_processes(work, tmp_path):
    root = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json"), str(work["tiny"])]),
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(work["data"]),
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=BUNDLE)
    assert done.returncode == 0, done.stderr[-4000:]
    last = torch.load(root / "models" / "last.pt", weights_only=True)
    assert last["trainer"]["epoch"] == 1
    # each rank trains on its half of the 12-13 training images: fewer iterations than one process would need
    n_train = len(fold_split(work["datalist"], 0, "training"))
    assert last["trainer"]["iteration"] == (n_train + 1) // 2 // TINY["batch_size"]
    assert not any(k.startswith("module.") for k in last["network"])  # saved unwrapped from DDP


def test_ckpt_export_writes_torchscript_equal_to_eager(work, trained, tmp_path):
    ts = tmp_path / "model.ts"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts),
        "--ckpt_file",
        str(trained / "models" / "model.pt"),
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--config_file",
        str([str(CONFIGS / "inference.json"), str(work["tiny"])]),
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=BUNDLE)
    assert done.returncode == 0, done.stderr[-4000:]
    scripted = torch.jit.load(str(ts))
    from scripts.fracture.networks import build_network

    eager = build_network("aasn", **TINY["network_kwargs"])
    eager.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    eager.eval()
    x = torch.rand(1, 8, 64, 128)
    x[:, 6:] = x[:, 6:] * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), atol=1e-5, rtol=1e-5)


def test_lr_schedule_steps_each_epoch_before_last_pt_is_saved(work, tmp_path):
    """A cosine schedule over 2 epochs: lr 1e-3 -> 5e-4 after epoch 1 -> 0 after epoch 2; ``last.pt`` holds both."""
    from monai.bundle import run

    override = tmp_path / "cosine.json"
    override.write_text(
        json.dumps(
            {
                "max_epochs": 2,
                "val_interval": 2,
                "learning_rate": 1e-3,
                "lr_scheduler": "$torch.optim.lr_scheduler.CosineAnnealingLR(@optimizer, T_max=@max_epochs)",
            }
        )
    )
    root = tmp_path / "run"
    run(
        "run",
        config_file=[str(CONFIGS / "train.json"), str(work["tiny"]), str(override)],
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root),
        dataset_dir=str(work["data"]),
    )
    saved = torch.load(root / "models" / "last.pt", weights_only=True)
    assert saved["lr_scheduler"]["last_epoch"] == 2
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert saved["lr_scheduler"]["_last_lr"] == pytest.approx([0.0], abs=1e-12)

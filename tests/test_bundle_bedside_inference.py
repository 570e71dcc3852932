"""The bundle's inference on radiographs that come without landmarks (the bedside path of ``inference.json``).

The landmark detector is the bundle's own (``configs/landmark_inference.json``: letterbox, decoding, shape prior,
plausibility) with a network that knows the test's pelvis (``oracle_detector``), so the detected landmarks are
the true ones and any other image is refused by the detector's real plausibility check. The AASN is a tiny
DenseNet with seeded random weights. Checked: a full report with the detector's provenance, the same result as
with the annotation, per-image error reports while the batch goes on (refused, unreadable), the summary, the
command-line exit status, and that annotated images never load the detector.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(TESTS))

from custom_transforms.conventions import LANDMARK_NAMES  # noqa: E402
from dicom_factory import write_dx  # noqa: E402
from landmark_testdata import random_pelvis, render_pelvis  # noqa: E402
from oracle_detector import save_oracle_detector  # noqa: E402
from simulation.nonpelvic import render_nonpelvic  # noqa: E402
from synthetic_pelvis import write_annotation  # noqa: E402

TINY_AASN = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1], "bn_size": 2, "projection_channels": 8}
IMAGE_SHAPE = (320, 400)  # (H, W)
SPACING_MM = 0.8
NOT_A_PELVIS = "does not look like an AP pelvic radiograph"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pelvic_pixels() -> tuple[np.ndarray, np.ndarray]:
    """A toy 12-bit AP pelvis (H, W) and its 16 landmarks in pixels."""
    landmarks_mm = random_pelvis(np.random.default_rng(7), centre=(160.0, 110.0))
    image = render_pelvis(landmarks_mm, IMAGE_SHAPE, SPACING_MM, rng=np.random.default_rng(8))
    return np.rint(image * 4095).astype(np.uint16), landmarks_mm / SPACING_MM


def make_bundle_root(root: Path) -> Path:
    """A bundle root (``models/``) with a tiny AASN of seeded random weights, no landmark detector weights."""
    from tiny_aasn import save_random_aasn

    (root / "models").mkdir(parents=True)
    save_random_aasn(root / "models" / "model.pt", TINY_AASN)
    return root


def overrides_file(path: Path, landmark_overrides: dict | None = None) -> Path:
    """A config merged on ``inference.json``: the tiny AASN, and the detector config of the real bundle."""
    config = {
        "network_kwargs": TINY_AASN,
        "roi_size": [64, 128],
        "device": "cpu",
        "landmark_config": str(CONFIGS / "landmark_inference.json"),
        "landmark_overrides": {"device": "cpu", **(landmark_overrides or {})},
    }
    path.write_text(json.dumps(config, indent=1))
    return path


def run_inference(bundle_root: Path, overrides: Path, source: Path, output_dir: Path) -> None:
    from monai.bundle import run

    run(
        config_file=[str(CONFIGS / "inference.json"), str(overrides)],
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(bundle_root),
        input=str(source),
        output_dir=str(output_dir),
    )


@pytest.fixture(scope="module")
def bedside(tmp_path_factory):
    """A bundle root with the oracle detector for ``pelvis.dcm``, which lies in ``images/`` without annotation."""
    root = tmp_path_factory.mktemp("bedside")
    bundle_root = make_bundle_root(root / "bundle")
    pixels, landmarks = pelvic_pixels()
    images = root / "images"
    images.mkdir()
    pelvis = write_dx(images / "pelvis.dcm", pixels, spacing_mm=(SPACING_MM, SPACING_MM))
    landmark_overrides = save_oracle_detector(bundle_root / "models", [(pelvis, landmarks)])
    overrides = overrides_file(root / "overrides.json", landmark_overrides)
    return {
        "root": root,
        "bundle_root": bundle_root,
        "images": images,
        "pelvis": Path(pelvis),
        "landmarks": landmarks,
        "overrides": overrides,
    }


def test_image_without_annotation_gets_a_full_report_from_the_detector(bedside, tmp_path):
    out = tmp_path / "detected"
    run_inference(bedside["bundle_root"], bedside["overrides"], bedside["images"], out)
    report = json.loads((out / "pelvis" / "report.json").read_text())

    assert report["status"] == "ok" and 0.0 <= report["fracture_probability"] <= 1.0
    assert report["positive"] == (report["fracture_probability"] >= report["threshold"])
    assert report["max_location"]["probability"] == pytest.approx(report["fracture_probability"], abs=1e-6)
    assert report["spacing_mm"] == pytest.approx([SPACING_MM, SPACING_MM])
    assert (out / "pelvis" / "heatmap.nii.gz").is_file() and (out / "pelvis" / "overlay.png").is_file()
    assert report["landmark_source"] == "detector" and report["landmarks_detected"] is True
    found = np.array([report["landmarks"][n] for n in LANDMARK_NAMES])
    np.testing.assert_allclose(found, bedside["landmarks"], atol=0.25)  # the detector's, on the true landmarks
    assert list(report["landmark_confidence"]) == list(LANDMARK_NAMES)
    assert min(report["landmark_confidence"].values()) > 0.5  # each peak is the oracle's clear Gaussian
    assert not any(report["corrected_by_shape_model"].values())  # a plausible configuration: nothing replaced
    assert report["landmark_plausibility"] >= 0.3  # landmark_inference.json's plausibility_threshold

    # the same image with its annotation: the annotation's landmarks, and (nearly) the same probability
    annotated = tmp_path / "annotated"
    annotated.mkdir()
    os.symlink(bedside["pelvis"], annotated / "pelvis.dcm")
    write_annotation(annotated / "pelvis.json", bedside["landmarks"])
    run_inference(bedside["bundle_root"], bedside["overrides"], annotated, tmp_path / "with_annotation")
    reference = json.loads((tmp_path / "with_annotation" / "pelvis" / "report.json").read_text())
    assert reference["landmark_source"] == "annotation" and reference["landmarks_detected"] is False
    assert reference["landmark_confidence"] is None and reference["landmark_plausibility"] is None
    assert reference["fracture_probability"] == pytest.approx(report["fracture_probability"], abs=2e-3)


EXPECTED_STATUS = {
    "pelvis.dcm": "ok",
    "blank.dcm": "not_a_pelvis",
    "chest.dcm": "not_a_pelvis",
    "corrupt.dcm": "unreadable",
}


def write_batch(folder: Path, pelvis: Path) -> Path:
    """The known pelvis (a link), a blank film, a chest radiograph and a truncated DICOM."""
    folder.mkdir()
    os.symlink(pelvis, folder / "pelvis.dcm")
    write_dx(folder / "blank.dcm", np.full(IMAGE_SHAPE, 2000, np.uint16), spacing_mm=(SPACING_MM, SPACING_MM))
    chest = np.rint(render_nonpelvic("chest", (300, 250), np.random.default_rng(0))[0] * 4095).astype(np.uint16)
    write_dx(folder / "chest.dcm", chest, spacing_mm=(1.6, 1.6), body_part="CHEST", view="PA")
    (folder / "corrupt.dcm").write_bytes(pelvis.read_bytes()[:2000])  # truncated inside the pixel data
    return folder


def test_batch_goes_on_past_refused_and_unreadable_images(bedside, tmp_path):
    """``python -m monai.bundle run --config_file configs/inference.json --input <folder>``: exit 0, a report each."""
    batch = write_batch(tmp_path / "batch", bedside["pelvis"])
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BUNDLE), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "run",
            "--config_file", str([str(CONFIGS / "inference.json"), str(bedside["overrides"])]),
            "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf"),
            "--bundle_root", str(bedside["bundle_root"]), "--input", str(batch), "--output_dir", str(out),
        ],
        cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]

    summary = {Path(e["image"]).name: e for e in json.loads((out / "inference_summary.json").read_text())}
    assert {name: e["status"] for name, e in summary.items()} == EXPECTED_STATUS
    assert summary["pelvis.dcm"]["landmark_source"] == "detector"
    assert json.loads((out / "pelvis" / "report.json").read_text())["fracture_probability"] == pytest.approx(
        summary["pelvis.dcm"]["fracture_probability"]
    )
    for name, why in (("blank", NOT_A_PELVIS), ("chest", NOT_A_PELVIS), ("corrupt", "cannot decode the pixel data")):
        report = json.loads((out / name / "report.json").read_text())
        assert report["status"] == summary[f"{name}.dcm"]["status"] and "fracture_probability" not in report
        assert why in report["error"] and str(batch / f"{name}.dcm") in report["error"], report["error"]
        assert not (out / name / "heatmap.nii.gz").exists()
        assert any("WARNING" in line and f"{name}.dcm" in line for line in log.splitlines()), name
    assert "1 images reported, 3 refused: 2 not_a_pelvis, 1 unreadable" in log


def test_failures_met_in_dataloader_workers_reach_the_summary(bedside, tmp_path):
    batch = write_batch(tmp_path / "batch", bedside["pelvis"])
    workers = tmp_path / "workers.json"
    workers.write_text(json.dumps({"num_workers": 2}))
    from monai.bundle import run

    run(
        config_file=[str(CONFIGS / "inference.json"), str(bedside["overrides"]), str(workers)],
        bundle_root=str(bedside["bundle_root"]),
        input=str(batch),
        output_dir=str(tmp_path / "out"),
    )
    summary = json.loads((tmp_path / "out" / "inference_summary.json").read_text())
    assert {Path(e["image"]).name: e["status"] for e in summary} == EXPECTED_STATUS


def test_detector_in_dataloader_workers_runs_on_their_cpu_whatever_the_device(bedside, tmp_path):
    """On a GPU machine ``@device`` is CUDA, which a forked worker cannot start: the detector falls back to the
    worker's CPU. Here CUDA is absent, so a detector that kept ``cuda:0`` would fail every image."""
    config = json.loads(bedside["overrides"].read_text())
    config["landmark_overrides"]["device"] = "cuda:0"
    config["num_workers"] = 1
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps(config))
    images = tmp_path / "images"
    images.mkdir()
    os.symlink(bedside["pelvis"], images / "pelvis.dcm")
    run_inference(bedside["bundle_root"], overrides, images, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "pelvis" / "report.json").read_text())
    assert report["status"] == "ok" and report["landmark_source"] == "detector"


def test_annotated_images_never_load_the_detector(tmp_path):
    """No detector weights at all: annotated images are analysed; one without annotation gets an error report."""
    bundle_root = make_bundle_root(tmp_path / "bundle")  # models/ holds model.pt only
    pixels, landmarks = pelvic_pixels()
    images = tmp_path / "images"
    images.mkdir()
    write_dx(images / "annotated.dcm", pixels, spacing_mm=(SPACING_MM, SPACING_MM))
    write_annotation(images / "annotated.json", landmarks)
    run_inference(bundle_root, overrides_file(tmp_path / "overrides.json"), images, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "annotated" / "report.json").read_text())
    assert report["status"] == "ok" and report["landmark_source"] == "annotation"
    symphysis = LANDMARK_NAMES.index("symphysis_superior")
    assert report["landmarks"]["symphysis_superior"] == pytest.approx(landmarks[symphysis])

    write_dx(images / "bare.dcm", pixels, spacing_mm=(SPACING_MM, SPACING_MM))
    run_inference(bundle_root, overrides_file(tmp_path / "overrides.json"), images, tmp_path / "out2")
    summary = {Path(e["image"]).name: e for e in json.loads((tmp_path / "out2" / "inference_summary.json").read_text())}
    assert summary["annotated.dcm"]["status"] == "ok"
    assert summary["bare.dcm"]["status"] == "failed"
    error = summary["bare.dcm"]["error"]
    assert "landmark_model.pt do not exist" in error and str(images / "bare.dcm") in error


def test_a_run_whose_only_image_is_refused_completes_with_its_summary(bedside, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_dx(images / "blank.dcm", np.full(IMAGE_SHAPE, 300, np.uint16), spacing_mm=(SPACING_MM, SPACING_MM))
    run_inference(bedside["bundle_root"], bedside["overrides"], images, tmp_path / "out")  # no iteration: still ends
    (entry,) = json.loads((tmp_path / "out" / "inference_summary.json").read_text())
    assert entry["status"] == "not_a_pelvis" and NOT_A_PELVIS in entry["error"]
    assert sorted(p.name for p in (tmp_path / "out" / "blank").iterdir()) == ["report.json"]


def test_inputs_with_the_same_file_name_get_separate_reports(bedside, tmp_path):
    """``a/pelvis.dcm`` and ``b/pelvis.dcm`` in one datalist: neither report overwrites the other."""
    from custom_transforms.files import unique_image_stems

    inputs = []
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        os.symlink(bedside["pelvis"], tmp_path / side / "pelvis.dcm")
        inputs.append(str(tmp_path / side / "pelvis.dcm"))
    names = unique_image_stems(inputs)
    assert len(set(names.values())) == 2 and all(n.startswith("pelvis_") for n in names.values())
    assert unique_image_stems([inputs[0], str(tmp_path / "other.dcm")])[inputs[0]] == "pelvis"  # no clash: plain

    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps([{"image": p} for p in inputs]))
    out = tmp_path / "out"
    run_inference(bedside["bundle_root"], bedside["overrides"], datalist, out)
    summary = json.loads((out / "inference_summary.json").read_text())
    assert [entry["status"] for entry in summary] == ["ok", "ok"]
    reports = {json.loads((out / names[p] / "report.json").read_text())["image"] for p in inputs}
    assert reports == set(inputs)

"""Acceptance of the MONAI Deploy app: a simulated DICOM study in, DICOM SR + SC + JSON out, run as a real process.

The study holds a pelvic DX (the radiograph to analyse), a chest CR and an RT Structure Set (distractors) and
a corrupt file. The app's SR must carry the probability that the bundle's own inference
(``python -m monai.bundle run --config_file configs/inference.json``) gives for the same image.
The bundle is a copy of ``bundle/`` with a tiny network (seeded random weights written by the test).

Runs where the MONAI Deploy App SDK is installed: ``bash deploy/setup.sh`` then
``.venv-deploy/bin/python -m pytest tests/test_deploy*.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import UID

pytest.importorskip("monai.deploy", reason="needs the MONAI Deploy App SDK: bash deploy/setup.sh, then .venv-deploy")


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy"))
sys.path.insert(0, str(REPO / "bundle"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aasn_bundle import BundleInference, find_bundle_root  # noqa: E402

import deploy_dicom_factory as factory  # noqa: E402
from custom_transforms.conventions import LANDMARK_NAMES  # noqa: E402
from landmark_testdata import random_pelvis, render_pelvis  # noqa: E402
from simulation.nonpelvic import render_nonpelvic  # noqa: E402
from synthetic_pelvis import write_annotation  # noqa: E402
from tiny_aasn import save_random_aasn  # noqa: E402

APP = REPO / "deploy" / "app.py"
TINY = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1], "bn_size": 2}
ROI_SIZE = [64, 128]
SPACING_MM = 0.8
IMAGE_SHAPE = (320, 400)  # (H, W) of the pelvic DX
PROBABILITY = "122157"  # DCM Probability
IDENTITY_KEYWORDS = factory.IDENTITY_KEYWORDS  # also imported from here by test_deploy_pacs
APP_TIMEOUT_S = 600


def make_test_bundle(root: Path) -> Path:
    """A copy of the project's bundle with a tiny AASN and seeded random weights in ``models/model.pt``."""
    bundle = root / "bundle"
    shutil.copytree(REPO / "bundle" / "configs", bundle / "configs")
    shutil.copytree(REPO / "bundle" / "scripts", bundle / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (bundle / "models").mkdir()
    config_file = bundle / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    config["network_kwargs"] = TINY
    config["roi_size"] = ROI_SIZE
    config_file.write_text(json.dumps(config, indent=4))
    save_random_aasn(bundle / "models" / "model.pt", TINY)
    return bundle


def pelvic_case() -> tuple[np.ndarray, np.ndarray]:
    """A toy AP pelvis radiograph (12-bit) and its 16 landmarks in pixels."""
    landmarks_mm = random_pelvis(np.random.default_rng(7), centre=(160.0, 110.0))
    image = render_pelvis(landmarks_mm, IMAGE_SHAPE, SPACING_MM, rng=np.random.default_rng(8))
    return np.rint(image * 4095).astype(np.uint16), landmarks_mm / SPACING_MM


def write_study(folder: Path, with_pelvis: bool = True, sidecar: bool = True) -> dict[str, pydicom.Dataset]:
    """A study with a pelvic DX (optional, with its landmarks in a sidecar JSON or not), a chest CR, an RT
    Structure Set and two corrupt files."""
    study = factory.new_study_uid()
    chest = np.rint(render_nonpelvic("chest", (200, 160), np.random.default_rng(0))[0] * 4095).astype(np.uint16)
    instances = {
        "chest": factory.radiograph_dataset(chest, study, modality="CR", body_part="CHEST", view="PA", series_number=2),
        "rt": factory.rt_structure_set_dataset(study),
    }
    if with_pelvis:
        pixels, landmarks = pelvic_case()
        instances["pelvis"] = factory.radiograph_dataset(pixels, study, spacing_mm=(SPACING_MM, SPACING_MM))
    for name, ds in instances.items():
        factory.save(ds, folder / name / f"{name}.dcm")
    if with_pelvis and sidecar:  # landmarks beside the image, as the bundle's inference reads them
        write_annotation(folder / "pelvis" / "pelvis.json", landmarks)
    factory.write_corrupt_files(folder / "corrupt")
    return instances


def run_app(args: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    python = os.environ.get("AASN_DEPLOY_PYTHON", sys.executable)
    start = time.perf_counter()
    result = subprocess.run(
        [python, str(APP), *args], capture_output=True, text=True, timeout=APP_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return result, time.perf_counter() - start


def bundle_inference(bundle: Path, image: Path, output_dir: Path) -> dict:
    """The bundle's own inference on one image, through its documented command; returns its report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bundle), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "run",
            "--config_file", str(bundle / "configs" / "inference.json"),
            "--meta_file", str(bundle / "configs" / "metadata.json"),
            "--bundle_root", str(bundle), "--input", str(image), "--output_dir", str(output_dir),
        ],
        cwd=bundle, env=env, capture_output=True, text=True, timeout=APP_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (report,) = [json.loads(p.read_text()) for p in output_dir.glob("*/report.json")]
    return report


def assert_valid_uids(ds: pydicom.Dataset) -> None:
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert UID(ds.get(keyword)).is_valid, keyword
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert UID(ds.file_meta.TransferSyntaxUID).is_transfer_syntax


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("deploy_bundle"))


def test_app_reports_the_pelvic_radiograph_of_a_study_as_the_bundle_does(bundle, tmp_path):
    inputs, outputs, work = tmp_path / "study", tmp_path / "out", tmp_path / "work"
    study = write_study(inputs)
    pelvis = study["pelvis"]
    result, seconds = run_app(["-i", str(inputs), "-o", str(outputs), "-m", str(bundle), "-w", str(work)])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    print(f"app end-to-end (process start to exit, one study): {seconds:.1f} s")

    for corrupt in ("not_dicom.dcm", "truncated.dcm"):  # skipped with a warning naming the file
        assert any(corrupt in line and "Skipping" in line for line in log.splitlines()), corrupt

    written = sorted(p.name for p in outputs.iterdir())
    uid = pelvis.SOPInstanceUID
    assert written == sorted(["aasn_summary.json", f"sr_{uid}.dcm", f"sc_{uid}.dcm"])
    sr = pydicom.dcmread(outputs / f"sr_{uid}.dcm")
    sc = pydicom.dcmread(outputs / f"sc_{uid}.dcm")
    input_uids = {str(u) for ds in study.values() for u in (ds.SOPInstanceUID, ds.SeriesInstanceUID)}
    for ds, sop_class in ((sr, "1.2.840.10008.5.1.4.1.1.88.33"), (sc, "1.2.840.10008.5.1.4.1.1.7")):
        assert ds.SOPClassUID == sop_class
        assert_valid_uids(ds)
        for keyword in IDENTITY_KEYWORDS:
            assert ds.get(keyword) == pelvis.get(keyword), keyword
        assert {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)}.isdisjoint(input_uids)  # new series
    assert sr.SeriesInstanceUID != sc.SeriesInstanceUID
    # dicom3tools' IOD checker (Debian package dicom3tools): where installed, and always under CI (.ci/run installs it)
    if os.environ.get("CI"):
        assert shutil.which("dciodvfy"), "CI is set but dciodvfy is not installed (apt-get install dicom3tools)"
    if shutil.which("dciodvfy"):
        for name in (f"sr_{uid}.dcm", f"sc_{uid}.dcm"):
            check = subprocess.run(["dciodvfy", str(outputs / name)], capture_output=True, text=True)
            output = (check.stdout + check.stderr).splitlines()
            problems = [line for line in output if line.startswith(("Error", "Warning"))]
            assert problems == [], (name, problems)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert [e.ReferencedSOPInstanceUID for e in evidence] == [uid]
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == uid
    assert (sc.Rows, sc.Columns) == (pelvis.Rows, pelvis.Columns)

    reference = bundle_inference(bundle, inputs / "pelvis" / "pelvis.dcm", tmp_path / "bundle_out")
    sr_probability = float(factory.content_items(sr, "NUM", PROBABILITY)[0].MeasuredValueSequence[0].NumericValue)
    assert sr_probability == pytest.approx(reference["fracture_probability"], abs=1e-4)
    assert len(factory.content_items(sr, "SCOORD")) == len(reference["peaks"])
    # the SC's picture is the bundle's own overlay of its result, not one drawn by the app
    np.testing.assert_array_equal(sc.pixel_array, np.asarray(Image.open(reference["overlay_png"]).convert("RGB")))
    # -w: the bundle's writer wrote its own report of the image the app analysed in memory
    kept = json.loads((work / "pelvis" / "report.json").read_text())
    assert kept["fracture_probability"] == pytest.approx(reference["fracture_probability"], abs=1e-6)
    np.testing.assert_allclose(
        [[p["x"], p["y"]] for p in kept["peaks"]], [[p["x"], p["y"]] for p in reference["peaks"]], atol=1e-6
    )

    summary = json.loads((outputs / "aasn_summary.json").read_text())
    assert summary["status"] == "ok"
    (entry,) = summary["results"]  # the distractors were not analysed
    assert entry["sop_instance_uid"] == uid
    assert entry["fracture_probability"] == pytest.approx(reference["fracture_probability"], abs=1e-6)
    assert sorted(Path(s["file"]).name for s in summary["skipped_files"]) == ["not_dicom.dcm", "truncated.dcm"]
    for distractor in ("chest", "rt"):
        assert str(study[distractor].SOPInstanceUID) not in log.split("Analysing", 1)[-1].split("\n", 1)[0]


def test_app_without_a_pelvic_radiograph_writes_an_empty_summary(bundle, tmp_path):
    inputs, outputs = tmp_path / "study", tmp_path / "out"
    write_study(inputs, with_pelvis=False)
    # the packaged app's way: paths from the HOLOSCAN_* environment variables, no options
    env = {"HOLOSCAN_INPUT_PATH": str(inputs), "HOLOSCAN_OUTPUT_PATH": str(outputs), "HOLOSCAN_MODEL_PATH": str(bundle)}
    result, _ = run_app([], env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "No AP pelvic radiograph" in log
    assert sorted(p.name for p in outputs.iterdir()) == ["aasn_summary.json"]
    summary = json.loads((outputs / "aasn_summary.json").read_text())
    assert summary["status"] == "no_pelvic_radiograph" and summary["results"] == []


def test_torchscript_model_gives_the_checkpoint_probabilities(bundle, tmp_path):
    """``-m bundle/models/model.ts`` (from ``monai.bundle ckpt_export``) runs the same pipeline with that network."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bundle), os.environ.get("PYTHONPATH", "")])}
    ts_file = bundle / "models" / "model.ts"
    export = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
            "--filepath", str(ts_file), "--ckpt_file", str(bundle / "models" / "model.pt"),
            "--meta_file", str(bundle / "configs" / "metadata.json"),
            "--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
        ],
        cwd=bundle, env=env, capture_output=True, text=True, timeout=APP_TIMEOUT_S,
    )  # fmt: skip
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    study = write_study(tmp_path / "study")
    image = tmp_path / "study" / "pelvis" / "pelvis.dcm"
    assert study["pelvis"].Rows == IMAGE_SHAPE[0]
    root, torchscript = find_bundle_root(ts_file)
    assert (root, torchscript) == (bundle.resolve(), ts_file.resolve())
    scripted = BundleInference(root, torchscript=torchscript).run([str(image)])[str(image)]
    checkpoint = BundleInference(bundle).run([str(image)])[str(image)]
    assert scripted.error is None and checkpoint.error is None
    assert scripted.report["fracture_probability"] == pytest.approx(checkpoint.report["fracture_probability"], abs=1e-4)
    np.testing.assert_allclose(scripted.heatmap, checkpoint.heatmap, atol=1e-4)
    assert checkpoint.heatmap.shape == checkpoint.image.shape == IMAGE_SHAPE


def test_model_path_errors_name_the_path_and_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_bundle_root(tmp_path / "missing")
    lonely = tmp_path / "model.ts"
    lonely.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no bundle around it"):
        find_bundle_root(lonely)
    with pytest.raises(FileNotFoundError, match="expected a MONAI bundle"):
        find_bundle_root(tmp_path)


def test_app_yaml_has_what_the_packager_reads():
    """``holoscan package --config deploy/app.yaml`` requires ``application: title`` and ``resources``."""
    import yaml

    config = yaml.safe_load((REPO / "deploy" / "app.yaml").read_text())
    assert config["application"]["title"] and config["application"]["version"]
    assert config["application"]["input-formats"] == ["file"] and config["application"]["output-formats"] == ["file"]
    assert {"cpu", "gpu", "memory"} <= set(config["resources"])
    assert (REPO / "deploy" / "__main__.py").is_file() and (REPO / "deploy" / "requirements.txt").is_file()
    assert "monai-deploy-app-sdk==4.0.0" in (REPO / "deploy" / "requirements.txt").read_text().splitlines()


def test_an_image_the_bundle_cannot_analyse_does_not_stop_the_others(bundle, tmp_path):
    study = write_study(tmp_path / "study")
    good = tmp_path / "study" / "pelvis" / "pelvis.dcm"
    blank = factory.save(  # no landmarks and nothing to detect them on
        factory.radiograph_dataset(np.full(IMAGE_SHAPE, 1000, np.uint16), study["pelvis"].StudyInstanceUID),
        tmp_path / "blank.dcm",
    )
    results = BundleInference(bundle).run([str(blank), str(good)])
    # the good image's result is the one it gets alone: the failure before it changed nothing
    alone = BundleInference(bundle).run([str(good)])[str(good)]
    assert results[str(good)].error is None and alone.error is None
    probability = results[str(good)].report["fracture_probability"]
    assert probability == pytest.approx(alone.report["fracture_probability"], abs=1e-6)
    np.testing.assert_allclose(results[str(good)].heatmap, alone.heatmap, atol=1e-6)
    assert results[str(blank)].error and results[str(blank)].report == {} and results[str(blank)].heatmap is None


def install_oracle_detector(bundle: Path, cases: list[tuple[Path, np.ndarray]]) -> None:
    """Make the bundle's landmark detector find the given landmarks on the given images (and refuse any other).

    The network is ``tests/deploy_oracle_landmarks.OracleHeatmaps`` (stored logits for these images, copied into
    the test bundle's ``scripts/``), written with a synthetic shape model to the bundle's ``models/`` by
    ``oracle_detector.save_oracle_detector``; the ids it needs are overridden in the test bundle's
    ``configs/landmark_inference.json``, which ``inference.json`` loads (``landmark_config``) only for images
    without landmarks. The rest of the detector is the bundle's.
    """
    from oracle_detector import save_oracle_detector

    oracle_module = Path(__file__).resolve().parent / "deploy_oracle_landmarks.py"
    shutil.copyfile(oracle_module, bundle / "scripts" / "oracle_landmarks.py")
    overrides = save_oracle_detector(bundle / "models", cases, module="scripts.oracle_landmarks")
    config_file = bundle / "configs" / "landmark_inference.json"
    config = json.loads(config_file.read_text())
    config.update(overrides)
    config_file.write_text(json.dumps(config, indent=4))


def test_app_detects_the_landmarks_when_the_study_has_none(tmp_path):
    """The bedside case: DICOM only, the bundle's landmark detector runs inside the bundle's inference."""
    bundle = make_test_bundle(tmp_path)
    inputs, outputs = tmp_path / "study", tmp_path / "out"
    study = write_study(inputs, sidecar=False)
    _, landmarks = pelvic_case()
    install_oracle_detector(bundle, [(inputs / "pelvis" / "pelvis.dcm", landmarks)])
    result, _ = run_app(["-i", str(inputs), "-o", str(outputs), "-m", str(bundle)])
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    uid = study["pelvis"].SOPInstanceUID
    summary = json.loads((outputs / "aasn_summary.json").read_text())
    (entry,) = summary["results"]
    assert entry["status"] == "ok", entry
    found = np.array([entry["landmarks"][name] for name in LANDMARK_NAMES], dtype=np.float64).reshape(-1, 2)
    np.testing.assert_allclose(found, landmarks, atol=0.5)  # the detector's landmarks, not an annotation's
    assert entry["landmark_source"] == "detector" and entry["landmarks_detected"] is True
    assert set(entry["landmark_confidence"]) == set(LANDMARK_NAMES) and min(entry["landmark_confidence"].values()) > 0.5
    assert not any(entry["corrected_by_shape_model"].values()) and entry["landmark_plausibility"] >= 0.3
    reference = bundle_inference(bundle, inputs / "pelvis" / "pelvis.dcm", tmp_path / "bundle_out")
    assert reference["landmark_source"] == "detector"
    sr = pydicom.dcmread(outputs / f"sr_{uid}.dcm")
    sr_probability = float(factory.content_items(sr, "NUM", PROBABILITY)[0].MeasuredValueSequence[0].NumericValue)
    assert sr_probability == pytest.approx(reference["fracture_probability"], abs=1e-4)
    parameters = [item.TextValue for item in factory.content_items(sr, "TEXT")]
    assert "landmark_source=detector" in parameters, parameters  # TID 4019 algorithm parameters
    assert any(p.startswith("landmark_plausibility=") for p in parameters)


def test_a_study_whose_only_radiograph_the_detector_refuses_gives_an_empty_output(tmp_path):
    """A DX labelled AP pelvis that is not one (here blank): a clear log line, a summary and no DICOM output."""
    bundle = make_test_bundle(tmp_path)
    inputs, outputs = tmp_path / "study", tmp_path / "out"
    write_study(inputs, with_pelvis=False)
    study_uid = pydicom.dcmread(inputs / "chest" / "chest.dcm").StudyInstanceUID
    spacing = (SPACING_MM, SPACING_MM)
    blank_pixels = np.full(IMAGE_SHAPE, 1000, np.uint16)
    blank = factory.save(
        factory.radiograph_dataset(blank_pixels, study_uid, spacing_mm=spacing), inputs / "pelvis" / "blank.dcm"
    )
    pixels, landmarks = pelvic_case()
    other = factory.save(factory.radiograph_dataset(pixels, study_uid, spacing_mm=spacing), tmp_path / "known.dcm")
    install_oracle_detector(bundle, [(other, landmarks)])  # knows another image; this study's is refused
    result, _ = run_app(["-i", str(inputs), "-o", str(outputs), "-m", str(bundle)])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert any(
        "Could not analyse" in line and "blank.dcm" in line and "does not look like an AP pelvic radiograph" in line
        for line in log.splitlines()
    ), log[-6000:]
    assert sorted(p.name for p in outputs.iterdir()) == ["aasn_summary.json"]
    summary = json.loads((outputs / "aasn_summary.json").read_text())
    assert summary["status"] == "failed" and "1 not_a_pelvis" in summary["message"]
    (entry,) = summary["results"]
    assert entry["status"] == "not_a_pelvis" and "reason" not in entry  # the bundle's status, by the bundle's name
    assert str(blank) in entry["error"] and entry["sop_instance_uid"] == pydicom.dcmread(blank).SOPInstanceUID

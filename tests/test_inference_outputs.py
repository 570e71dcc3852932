"""What the bundle's inference writes per image, and the config ids that switch each output (issue 20).

``report.json`` is always written and holds the image's fracture result unchanged; the heatmap NIfTI (uint8 scaled
by 1/255, gzip or not) and the overlay PNG (bounded size) can each be switched off; DataLoader workers and the
BatchNorm-folded network change none of the reported values.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TINY_AASN = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1], "bn_size": 2, "projection_channels": 8}
#: the heatmap NIfTI's read-back tolerance: half a step of 1/255 (float32 slope)
QUANTUM = 0.5 / 255 + 1e-6
PATH_FIELDS = ("heatmap_nifti", "overlay_png")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ the writer itself
def planted_item(rows: int = 90, cols: int = 120, name: str = "/data/case7.dcm") -> dict:
    from monai.data import MetaTensor

    rng = np.random.default_rng(5)
    image = MetaTensor(torch.from_numpy(rng.random((1, rows, cols), dtype=np.float32)))
    image.meta["filename_or_obj"] = name
    heatmap = np.zeros((1, rows, cols), np.float32)
    heatmap[0, 30:70, 20:100] = rng.random((40, 80), dtype=np.float32)
    result = {
        "fracture_probability": 0.8125,
        "threshold": 0.5,
        "positive": True,
        "peaks": [{"x": 40.0, "y": 50.0, "probability": 0.8125, "x_mm": 20.0, "y_mm": 25.0}],
        "max_location": {"x": 40.0, "y": 50.0, "probability": 0.8125},
        "spacing_mm": [0.5, 0.5],
        "landmark_source": "annotation",
        "tps_warp": "tps",
    }
    return {"image": image, "pred_original": torch.from_numpy(heatmap), "fracture_result": result}


def test_report_holds_the_result_unchanged_and_the_paths_of_what_was_written(tmp_path):
    import nibabel as nib

    from scripts.reporting.inference_writer import FractureReportWriter

    item = planted_item()
    report = FractureReportWriter(tmp_path).write(item)
    folder = tmp_path / "case7"
    assert report == {
        "image": "/data/case7.dcm",
        "status": "ok",
        **item["fracture_result"],
        "heatmap_nifti": str(folder / "heatmap.nii.gz"),
        "overlay_png": str(folder / "overlay.png"),
    }
    assert json.loads((folder / "report.json").read_text()) == report
    heatmap = nib.load(folder / "heatmap.nii.gz").get_fdata().T
    np.testing.assert_allclose(heatmap, item["pred_original"][0].numpy(), rtol=0, atol=QUANTUM)
    assert np.asarray(Image.open(folder / "overlay.png")).shape == (90, 120, 3)  # under the size bound: full size


def test_an_error_writing_the_heatmap_in_its_thread_is_the_writers_error(tmp_path, monkeypatch):
    """The NIfTI is written in a second thread while the overlay is drawn: its failure is raised by ``write`` (the
    handler then records the image as failed), after the overlay, and no report claims the heatmap."""
    from scripts.reporting import inference_writer

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(inference_writer, "write_heatmap_nifti", broken)
    with pytest.raises(OSError, match="disk full"):
        inference_writer.FractureReportWriter(tmp_path).write(planted_item())
    assert not (tmp_path / "case7" / "report.json").exists()


def test_each_output_but_the_report_can_be_switched_off(tmp_path):
    import nibabel as nib

    from scripts.reporting.inference_writer import FractureReportWriter

    item = planted_item()
    folder = tmp_path / "case7"
    folder.mkdir()
    for stale in ("overlay.png", "heatmap.nii.gz"):  # an earlier run's files must not pass for this run's
        (folder / stale).write_text("earlier run")

    report = FractureReportWriter(tmp_path, write_overlay=False, heatmap_compressed=False).write(item)
    assert sorted(p.name for p in folder.iterdir()) == ["heatmap.nii", "report.json"]
    assert report["overlay_png"] is None and report["heatmap_nifti"] == str(folder / "heatmap.nii")
    assert (folder / "heatmap.nii").read_bytes()[:2] != b"\x1f\x8b"  # not gzip
    np.testing.assert_allclose(
        nib.load(folder / "heatmap.nii").get_fdata().T, item["pred_original"][0].numpy(), rtol=0, atol=QUANTUM
    )

    report = FractureReportWriter(tmp_path, write_heatmap=False, write_overlay=False).write(item)
    assert sorted(p.name for p in folder.iterdir()) == ["report.json"]
    assert report["heatmap_nifti"] is None and report["overlay_png"] is None
    assert {k: v for k, v in report.items() if k not in PATH_FIELDS} == {
        "image": "/data/case7.dcm", "status": "ok", **item["fracture_result"]
    }  # fmt: skip

    report = FractureReportWriter(tmp_path, write_heatmap=False, overlay_max_size=50).write(item)
    assert np.asarray(Image.open(report["overlay_png"])).shape == (30, 40, 3)  # 120 / 50: reduced by 3


# ------------------------------------------------------------------------------------- through configs/inference.json
@pytest.fixture(scope="module")
def annotated_folder(tmp_path_factory):
    """A bundle root with a tiny AASN (seeded random weights) and a folder of three annotated DICOM radiographs."""
    from dicom_factory import write_dx
    from synthetic_pelvis import place_landmarks, radiograph_like, write_annotation
    from tiny_aasn import save_random_aasn

    root = tmp_path_factory.mktemp("outputs")
    (root / "bundle" / "models").mkdir(parents=True)
    save_random_aasn(root / "bundle" / "models" / "model.pt", TINY_AASN)
    images = root / "images"
    images.mkdir()
    shape, spacing = (320, 300), (0.9, 0.9)
    for index, angle in enumerate((0.0, 4.0, -6.0)):
        landmarks = place_landmarks(shape, spacing, angle)
        image = write_dx(images / f"case{index}.dcm", radiograph_like(shape, landmarks), spacing_mm=spacing)
        write_annotation(images / f"case{index}.json", landmarks, image=image)
    return root


def run_inference(root: Path, output_dir: Path, images: Path | None = None, **overrides) -> dict[str, dict]:
    """``monai.bundle run`` of inference.json on the folder (``root/images`` by default); returns each image's report
    by folder name."""
    from monai.bundle import run

    config = {"network_kwargs": TINY_AASN, "roi_size": [64, 128], "device": "cpu", **overrides}
    extra = output_dir.parent / f"{output_dir.name}_overrides.json"
    extra.write_text(json.dumps(config))
    run(
        config_file=[str(CONFIGS / "inference.json"), str(extra)],
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root / "bundle"),
        input=str(root / "images" if images is None else images),
        output_dir=str(output_dir),
    )
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(output_dir.glob("*/report.json"))}


def without_paths(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in PATH_FIELDS}


def test_config_ids_switch_the_outputs_and_workers_and_folding_change_no_reported_value(annotated_folder, tmp_path):
    import nibabel as nib

    reference = run_inference(annotated_folder, tmp_path / "default")
    assert sorted(reference) == ["case0", "case1", "case2"]
    for name, report in reference.items():
        assert report["status"] == "ok"
        assert report["heatmap_nifti"] == str(tmp_path / "default" / name / "heatmap.nii.gz")
        assert report["overlay_png"] == str(tmp_path / "default" / name / "overlay.png")

    # DataLoader workers read and preprocess the images: the same reports, field for field
    switched = run_inference(
        annotated_folder, tmp_path / "switched", num_workers=2, write_overlay=False, heatmap_compressed=False
    )
    assert sorted(switched) == sorted(reference)
    for name, report in switched.items():
        assert without_paths(report) == without_paths(reference[name])
        assert report["overlay_png"] is None and not (tmp_path / "switched" / name / "overlay.png").exists()
        assert report["heatmap_nifti"] == str(tmp_path / "switched" / name / "heatmap.nii")
        np.testing.assert_array_equal(
            np.asarray(nib.load(report["heatmap_nifti"]).dataobj.get_unscaled()),
            np.asarray(nib.load(reference[name]["heatmap_nifti"]).dataobj.get_unscaled()),
        )

    # the BatchNorm-folded network: the same decisions and peaks, probabilities within float rounding
    folded = run_inference(annotated_folder, tmp_path / "folded", fold_batchnorm=True, write_heatmap=False)
    for name, report in folded.items():
        assert report["heatmap_nifti"] is None and Path(report["overlay_png"]).is_file()
        assert not list((tmp_path / "folded" / name).glob("heatmap.nii*"))
        assert report["fracture_probability"] == pytest.approx(reference[name]["fracture_probability"], abs=1e-5)
        assert report["positive"] == reference[name]["positive"]
        np.testing.assert_allclose(
            [[p["x"], p["y"]] for p in report["peaks"]], [[p["x"], p["y"]] for p in reference[name]["peaks"]],
            atol=1e-6,
        )  # fmt: skip

    summary = json.loads((tmp_path / "switched" / "inference_summary.json").read_text())
    assert [e["status"] for e in summary] == ["ok"] * 3


def test_a_rerun_with_overwrite_removes_the_earlier_runs_uncompressed_heatmap(annotated_folder, tmp_path):
    """The rerun policy removes every file the writer may have put in an image folder (``RESULT_FILES``), also the
    ``heatmap.nii`` of a run with ``heatmap_compressed`` false, in the folder of an image the rerun does not have."""
    out = tmp_path / "out"
    run_inference(annotated_folder, out, heatmap_compressed=False)
    assert (out / "case0" / "heatmap.nii").is_file()
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for name in ("case1.dcm", "case1.json"):
        shutil.copy(annotated_folder / "images" / name, fewer / name)
    reports = run_inference(annotated_folder, out, images=fewer, overwrite=True, write_heatmap=False)
    assert sorted(reports) == ["case1"] and not (out / "case0").exists()  # nothing of the earlier run is left
    assert sorted(p.name for p in (out / "case1").iterdir()) == ["overlay.png", "report.json"]

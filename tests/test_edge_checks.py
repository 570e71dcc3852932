"""Issue 16, one regression test per fault at the edges of the bundle (the MONAI Label ones are in
``test_monailabel_guard.py`` and ``test_monailabel_app.py``; the mixed-folder run in ``test_bundle_bad_inputs.py``).

Each test plants the answer: the status or error text expected, the files that must (not) exist afterwards.
"""

from __future__ import annotations

import json
import logging
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
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(TESTS))

from _bundle_data import TINY_NETWORK_KWARGS, write_dataset  # noqa: E402
from custom_transforms.annotation import read_annotation  # noqa: E402
from custom_transforms.conventions import MIRROR_PERMUTATION  # noqa: E402
from custom_transforms.errors import AnnotationError, PXRReadError  # noqa: E402
from custom_transforms.loading import LoadPXR  # noqa: E402
from dicom_factory import write_dx  # noqa: E402
from synthetic_pelvis import landmark_dict, place_landmarks, radiograph_like, write_annotation  # noqa: E402

SHAPE = (320, 300)
# The modules issue 16 added (custom_transforms.files.contained_path, custom_transforms.orientation, scripts.run_guard)
# are imported inside the tests that use them: on the code before the fix each test fails on its own.


# --- point 1: names become paths only inside their folder -------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "x\x00y"])
def test_contained_path_refuses_names_that_are_not_one_plain_component(tmp_path, name):
    from custom_transforms.files import UnsafePathError, contained_path

    with pytest.raises(UnsafePathError, match="expected one plain file or folder name") as raised:
        contained_path(tmp_path, name, "case name")
    assert "case name" in str(raised.value) and str(tmp_path) in str(raised.value)


def test_contained_path_keeps_dot_names_inside_and_refuses_a_link_that_leads_out(tmp_path):
    from custom_transforms.files import UnsafePathError, contained_path

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    for name in (".dcm", "..dcm", "...dcm", "1.2.840.10008"):
        assert contained_path(out, name) == out / name
    os.symlink(outside, out / "pelvis")
    with pytest.raises(UnsafePathError, match=r"resolves to .*outside.*a link"):
        contained_path(out, "pelvis")


def test_a_failure_report_never_writes_or_deletes_through_a_link_out_of_output_dir(tmp_path):
    from scripts.reporting.inference_writer import FractureReportWriter

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "overlay.png").write_text("someone else's")
    os.symlink(outside, out / "pelvis")  # out/pelvis leads out of the output folder
    image = str(tmp_path / "images" / "pelvis.dcm")
    writer = FractureReportWriter(out, items=[{"image": image}])

    report = writer.write_failure({"image": image}, PXRReadError(f"{image}: cannot read"))

    assert report["status"] == "failed" and "outside" in report["error"]
    assert sorted(p.name for p in outside.iterdir()) == ["overlay.png"]  # nothing written, nothing deleted
    (entry,) = writer.write_summary()
    assert entry["status"] == "failed" and "no report was written" in entry["error"]


# --- point 2: the rerun policy ------------------------------------------------------------------------------------


def _earlier_run(out: Path) -> None:
    for name in ("a", "b"):
        (out / name).mkdir(parents=True)
        for file in ("report.json", "heatmap.nii.gz", "overlay.png"):
            (out / name / file).write_text("earlier")
    (out / "inference_summary.json").write_text("[]")


def test_a_used_output_dir_is_refused_and_kept_as_it_was(tmp_path):
    from scripts.run_guard import StopRun, prepare_output_dir

    out = tmp_path / "out"
    _earlier_run(out)
    with pytest.raises(StopRun) as raised:
        prepare_output_dir(out)
    assert str(raised.value) == (
        f"{out}: holds the results of an earlier run (inference_summary.json, 2 image folders); a rerun does not "
        "replace them: choose another --output_dir, or pass --overwrite true to replace them."
    )
    assert (out / "a" / "report.json").read_text() == "earlier" and (out / "inference_summary.json").exists()


def test_overwrite_removes_only_the_earlier_results_and_never_follows_a_link(tmp_path):
    from scripts.run_guard import prepare_output_dir

    out, outside = tmp_path / "out", tmp_path / "outside"
    _earlier_run(out)
    (out / "a" / "notes.txt").write_text("mine")
    (out / "landmarks").mkdir()  # a landmark run's folder: not an image folder of this writer
    (out / "landmarks" / "landmarks_summary.json").write_text("[]")
    outside.mkdir()
    (outside / "report.json").write_text("not this run's")
    os.symlink(outside, out / "linked")

    assert prepare_output_dir(out, overwrite=True) == str(out)

    assert sorted(p.name for p in out.iterdir()) == ["a", "landmarks", "linked"]
    assert sorted(p.name for p in (out / "a").iterdir()) == ["notes.txt"]
    assert (outside / "report.json").read_text() == "not this run's"
    assert (out / "landmarks" / "landmarks_summary.json").exists()


def test_an_output_dir_that_cannot_be_written_is_found_before_the_run(tmp_path):
    from scripts.run_guard import StopRun, prepare_output_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StopRun, match=r"the output_dir is a file"):
        prepare_output_dir(blocker)
    with pytest.raises(StopRun, match=r"out: the output_dir cannot be written"):
        prepare_output_dir(blocker / "out")


# --- point 4: pixels are finite or the image is unreadable -------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rescale": (float("nan"), 0.0)}, "RescaleSlope is nan; expected a finite number"),
        ({"rescale": (0.0, 10.0)}, "RescaleSlope is 0, which maps every pixel to the same value"),
        ({"rescale": (1.0, float("inf"))}, "RescaleIntercept is inf; expected a finite number"),
        ({"window": (float("nan"), 400.0)}, "WindowCenter is nan; expected a finite number"),
    ],
)
def test_non_finite_or_zero_rescale_values_make_an_unreadable_image(tmp_path, kwargs, message):
    path = write_dx(tmp_path / "bad.dcm", radiograph_like((40, 40), place_landmarks((40, 40), (1.0, 1.0))), **kwargs)
    with pytest.raises(PXRReadError) as raised:
        LoadPXR()(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


def test_a_nifti_with_nan_pixels_is_unreadable(tmp_path):
    import nibabel as nib

    pixels = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    pixels[3, 4] = np.nan
    nib.save(nib.Nifti1Image(pixels, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(PXRReadError, match=r"nan\.nii\.gz: pixel data contain non-finite values"):
        LoadPXR()(str(tmp_path / "nan.nii.gz"))


# --- point 5: annotated images are checked too -------------------------------------------------------------------


def _annotation(tmp_path, landmarks, **fields) -> str:
    content = {"image": "x.dcm", "landmarks": landmark_dict(landmarks), "fractures": [], **fields}
    path = tmp_path / "x.json"
    path.write_text(json.dumps(content))
    return str(path)


def test_booleans_are_not_coordinates(tmp_path):
    landmarks = place_landmarks(SHAPE, (1.0, 1.0))
    content = {"image": "x.dcm", "landmarks": landmark_dict(landmarks), "fractures": [[True, False]]}
    (tmp_path / "x.json").write_text(json.dumps(content))
    with pytest.raises(AnnotationError, match=r"x\.json: fracture 0 must be \[x, y\] numbers, got \[True, False\]"):
        read_annotation(tmp_path / "x.json")
    content = {"image": "x.dcm", "landmarks": {**landmark_dict(landmarks), "asis_l": [True, 3]}}
    (tmp_path / "x.json").write_text(json.dumps(content))
    with pytest.raises(AnnotationError, match=r"landmark 'asis_l' must be \[x, y\] numbers"):
        read_annotation(tmp_path / "x.json")


def test_an_error_names_the_field_without_copying_the_file_into_it(tmp_path):
    secret = "root:x:0:0:root:/root:/bin/bash " * 20
    content = {"landmarks": {**landmark_dict(place_landmarks(SHAPE, (1.0, 1.0))), "asis_r": secret}}
    (tmp_path / "x.json").write_text(json.dumps(content))
    with pytest.raises(AnnotationError, match="landmark 'asis_r' must be") as raised:
        read_annotation(tmp_path / "x.json")
    assert len(str(raised.value)) < len(str(tmp_path)) + 120 and secret not in str(raised.value)


@pytest.mark.parametrize("spacing", [[1e-9, 1e-9], [0.2, 0.0], [500.0, 500.0]])
def test_an_annotation_spacing_outside_a_radiograph_pixel_size_is_refused(tmp_path, spacing):
    path = _annotation(tmp_path, place_landmarks(SHAPE, (1.0, 1.0)), spacing_mm=spacing)
    with pytest.raises(AnnotationError, match=r"'spacing_mm' must be two \(row, col\) pixel sizes between 0.01 and 20"):
        read_annotation(path)


def test_a_dicom_spacing_outside_a_radiograph_pixel_size_is_ignored_with_a_warning(tmp_path):
    path = write_dx(tmp_path / "x.dcm", np.arange(1600, dtype=np.uint16).reshape(40, 40), spacing_mm=(1e-9, 1e-9))
    with pytest.warns(UserWarning, match="ignoring invalid ImagerPixelSpacing"):
        image = LoadPXR()(path)
    assert "spacing_mm" not in image.meta


@pytest.mark.parametrize(
    "angle, expected", [(0.0, None), (12.0, None), (-30.0, None), (90.0, "+90"), (-60.0, "-60"), (180.0, "180")]
)
def test_orientation_refuses_a_pelvis_turned_beyond_45_degrees(angle, expected):
    from custom_transforms.orientation import CheckPelvisOrientationd, OrientationError, pelvis_orientation

    spacing = (0.8, 0.8)
    landmarks = place_landmarks((600, 600), spacing, angle_deg=angle)
    pose = pelvis_orientation(landmarks, spacing)
    assert pose is not None and not pose.mirrored
    image = type("Image", (), {"meta": {"filename_or_obj": "/d/x.dcm", "spacing_mm": spacing}})()
    check = CheckPelvisOrientationd()
    if expected is None:
        check({"landmarks": landmarks, "image": image})
        return
    with pytest.raises(OrientationError, match=r"/d/x\.dcm: the annotated landmarks put the pelvis at") as raised:
        check({"landmarks": landmarks, "image": image})
    assert f"{expected}" in str(raised.value) and "within 45 degrees of upright" in str(raised.value)


@pytest.mark.parametrize("how", ["swapped names", "upside down", "flipped film"])
def test_orientation_refuses_mirrored_landmarks(how):
    from custom_transforms.orientation import CheckPelvisOrientationd, OrientationError, pelvis_orientation

    landmarks = place_landmarks(SHAPE, (1.0, 1.0), angle_deg=5.0)
    if how == "swapped names":
        landmarks = landmarks[list(MIRROR_PERMUTATION)]
    elif how == "upside down":
        landmarks = np.stack([landmarks[:, 0], SHAPE[0] - 1 - landmarks[:, 1]], 1)
    else:
        landmarks = np.stack([SHAPE[1] - 1 - landmarks[:, 0], landmarks[:, 1]], 1)
    assert pelvis_orientation(landmarks).mirrored
    with pytest.raises(OrientationError, match="form a mirror image of an AP pelvis"):
        CheckPelvisOrientationd()({"landmarks": landmarks, "image": None})


def test_annotated_images_get_the_detectors_image_checks_without_its_weights(tmp_path, caplog):
    from scripts.landmarks.detector import DetectLandmarksd, NotAPelvisError

    def no_weights():
        raise FileNotFoundError("landmark detector weights /m/landmark_model.pt do not exist")

    check = DetectLandmarksd(detector=no_weights, check_annotated=True)
    landmarks = place_landmarks(SHAPE, (1.0, 1.0))
    good = write_dx(tmp_path / "good.dcm", radiograph_like(SHAPE, landmarks), spacing_mm=(1.0, 1.0))
    blank = write_dx(tmp_path / "blank.dcm", np.full(SHAPE, 900, np.uint16), spacing_mm=(1.0, 1.0))
    tiny = write_dx(tmp_path / "tiny.dcm", np.arange(100, dtype=np.uint16).reshape(10, 10), spacing_mm=(1.0, 1.0))
    with caplog.at_level(logging.WARNING, logger="scripts.landmarks.detector"):
        out = check({"image": LoadPXR()(good), "landmarks": landmarks})
    assert out["landmarks_detected"] is False
    assert "checked for size and contrast only" in caplog.text and "landmark_model.pt do not exist" in caplog.text
    with pytest.raises(NotAPelvisError, match=r"blank\.dcm: does not look like an AP pelvic radiograph: the image has"):
        check({"image": LoadPXR()(blank), "landmarks": landmarks})
    with pytest.raises(NotAPelvisError, match=r"tiny\.dcm: .*10 x 10 pixels, smaller than 32 x 32"):
        check({"image": LoadPXR()(tiny), "landmarks": landmarks * 0.03})


def test_a_landmark_weights_file_that_cannot_be_read_is_named(tmp_path):
    from scripts.landmarks.detector import load_network_weights

    weights = tmp_path / "landmark_model.pt"
    torch.save({"w": torch.zeros(1000)}, weights)
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(ValueError, match=rf"{weights}: cannot be read as network weights"):
        load_network_weights(torch.nn.Linear(2, 2), weights)


# --- point 6: datalists -------------------------------------------------------------------------------------------


def _datalist(tmp_path, items) -> Path:
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"data": items}))
    return path


def _item(i: int, subject: str, fold: int, label: int = 0) -> dict:
    return {"image": f"{i}.png", "annotation": f"{i}.json", "label": label, "subject": subject, "fold": fold}


def test_a_subject_in_two_folds_is_refused_and_named(tmp_path):
    from scripts.datalist import load_datalist

    path = _datalist(tmp_path, [_item(0, "P1", 0), _item(1, "P2", 1), _item(2, "P1", 3)])
    with pytest.raises(ValueError) as raised:
        load_datalist(path)
    assert str(raised.value) == (
        f"{path}: subject 'P1' is in 2 folds (fold 0: items 0; fold 3: items 2); all images of a subject must share "
        "one fold, or the subject's anatomy would be both trained on and tested."
    )


def test_an_image_listed_twice_is_refused(tmp_path):
    from scripts.datalist import load_datalist

    path = _datalist(tmp_path, [_item(0, "P1", 0), _item(1, "P2", 1), {**_item(0, "P3", 2)}])
    with pytest.raises(ValueError, match=r"image .*0\.png is listed twice \(items 0 and 2\)"):
        load_datalist(path)


def test_a_label_that_contradicts_its_annotation_is_warned_about_once(tmp_path, caplog):
    from scripts.datalist import load_datalist

    landmarks = place_landmarks(SHAPE, (1.0, 1.0))
    write_annotation(tmp_path / "0.json", landmarks, fractures=[[150.0, 200.0]])
    write_annotation(tmp_path / "1.json", landmarks)
    write_annotation(tmp_path / "2.json", landmarks)
    path = _datalist(tmp_path, [_item(0, "P1", 0, label=0), _item(1, "P2", 1, label=1), _item(2, "P3", 2, label=0)])
    with caplog.at_level(logging.WARNING, logger="scripts.datalist"):
        load_datalist(path)
        load_datalist(path)  # the split reads it again: no second warning
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "item 0 (" in warnings[0] and "has label 0 but its annotation" in warnings[0]
    assert "1 fracture point(s)" in warnings[0]
    assert "item 1 (" in warnings[1] and "has label 1 but its annotation" in warnings[1]
    assert "no fracture" in warnings[1]


def test_training_refuses_a_leaky_datalist_in_one_line_naming_the_subject(tmp_path):
    datalist = write_dataset(tmp_path / "data", n=10)
    content = json.loads(datalist.read_text())
    content["data"][3]["subject"] = content["data"][8]["subject"]  # s008: folds 1 and 4
    datalist.write_text(json.dumps(content))
    tiny = tmp_path / "tiny.json"  # should it train (the code before issue 16 did), one quick epoch
    tiny.write_text(
        json.dumps(
            {
                "roi_size": [64, 128],
                "max_epochs": 1,
                "num_workers": 0,
                "show_progress": False,
                "network_kwargs": TINY_NETWORK_KWARGS,
            }
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BUNDLE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str([str(CONFIGS / "train.json"), str(tiny)]),
         "--dataset_dir", str(datalist.parent), "--bundle_root", str(tmp_path / "run")],
        cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"{datalist}: subject 's008' is in 2 folds (fold 1: items 3; fold 4: items 8); all images of a subject must "
        "share one fold, or the subject's anatomy would be both trained on and tested."
    )
    assert not (tmp_path / "run" / "models").exists()


# --- point 7: weights, checkpoints, validation ---------------------------------------------------------------------


def test_a_truncated_weights_file_is_named(tmp_path):
    from scripts.run_guard import StopRun, require_weights

    weights = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1000)}, weights)
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(StopRun, match=rf"^{weights}: cannot be read as PyTorch weights"):
        require_weights(weights)
    with pytest.raises(StopRun, match=rf"^{tmp_path / 'none.pt'}: no such weights file"):
        require_weights(tmp_path / "none.pt")


def test_a_training_start_removes_what_a_killed_save_left(tmp_path):
    from ignite.engine import Engine

    from scripts.checkpoint import BestModelSaver, ResumableCheckpoint

    models = tmp_path / "models"
    models.mkdir()
    stale = [models / ".last.pt.k1l13d_x.tmp", models / ".model.pt.abcd1234.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 4096)
    (models / ".other.pt.abcd.tmp").write_bytes(b"not ours")
    network = torch.nn.Linear(2, 2)
    BestModelSaver(models / "model.pt", network).attach(Engine(lambda e, b: None))
    engine = Engine(lambda e, b: None)
    ResumableCheckpoint(models / "last.pt", {"network": network}).attach(engine)
    engine.run([0], max_epochs=1)
    assert sorted(p.name for p in models.iterdir()) == [".other.pt.abcd.tmp", "last.pt"]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_max_epochs_below_val_interval_still_validates_and_writes_model_pt(tmp_path):
    from monai.bundle import run

    datalist = write_dataset(tmp_path / "data", n=20, seed=0)
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "roi_size": [64, 128],
                "batch_size": 4,
                "num_workers": 0,
                "show_progress": False,
                "max_epochs": 1,
                "val_interval": 2,
                "network_kwargs": TINY_NETWORK_KWARGS,
            }
        )
    )
    lines, logger = _Lines(), logging.getLogger("scripts.checkpoint")  # the bundle's logging.conf resets the root's
    logger.addHandler(lines)
    try:
        run(
            config_file=[str(CONFIGS / "train.json"), str(settings)],
            bundle_root=str(tmp_path / "run"),
            dataset_dir=str(datalist.parent),
        )
    finally:
        logger.removeHandler(lines)
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    assert any(
        "val_interval (2) is above max_epochs (1): the model is validated once, after the last epoch" in line
        for line in lines.lines
    )

"""The bundle's inference on a folder mixing the bad inputs of issue 16 (points 1, 4, 5 and 7), and its rerun policy.

One command-line run (``python -m monai.bundle run --config_file configs/inference.json``) over a folder holding a
known pelvis and, beside it, files named ``.dcm`` / ``..dcm`` / ``...dcm``, DICOMs with a NaN or a zero
``RescaleSlope``, annotated images that are not AP pelvic radiographs (blank, 10 x 10, a chest film, the pelvis turned
by 90 degrees), annotations with left and right swapped, upside down, a ``[true, false]`` coordinate and a 1e-9 mm
spacing. Planted answers: the status of every image (the detector is the test's oracle, which knows the pelvis and
nothing else), the counts in the summary line, and a snapshot of everything outside ``output_dir``, taken before and
after, with planted ``overlay.png`` / ``report.json`` files where the old code wrote and deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from custom_transforms.conventions import LANDMARK_NAMES, MIRROR_PERMUTATION  # noqa: E402
from dicom_factory import write_dx  # noqa: E402
from oracle_detector import save_oracle_detector  # noqa: E402
from simulation.nonpelvic import render_nonpelvic  # noqa: E402
from synthetic_pelvis import landmark_dict, write_annotation  # noqa: E402
from test_bundle_bedside_inference import (  # noqa: E402
    BUNDLE,
    CONFIGS,
    IMAGE_SHAPE,
    SPACING_MM,
    make_bundle_root,
    overrides_file,
    pelvic_pixels,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: file name -> the status its report must carry
EXPECTED = {
    "pelvis.dcm": "ok",
    ".dcm": "ok",  # a name that is only an extension: its own folder inside output_dir
    "..dcm": "unreadable",  # its failure report must not land in (or delete from) output_dir/..
    "...dcm": "ok",
    "nan_slope.dcm": "unreadable",
    "zero_slope.dcm": "unreadable",
    "blank.dcm": "not_a_pelvis",  # annotated, but no contrast
    "tiny.dcm": "not_a_pelvis",  # annotated 10 x 10 image
    "chest.dcm": "not_a_pelvis",  # annotated chest film: the detector finds no pelvis
    "rotated.dcm": "not_a_pelvis",  # the pelvis film turned by 90 degrees, annotated to match
    "swapped.dcm": "implausible_landmarks",  # _r and _l names swapped
    "upside_down.dcm": "implausible_landmarks",  # landmarks flipped in y
    "bool_coordinate.dcm": "invalid_annotation",  # [true, false] as a point
    "tiny_spacing.dcm": "invalid_annotation",  # spacing_mm 1e-9
}
SUMMARY_LINE = (
    "3 images reported, 11 refused: 2 implausible_landmarks, 2 invalid_annotation, 4 not_a_pelvis, 3 unreadable"
)


def _write_mixed_folder(folder: Path, pixels: np.ndarray, landmarks: np.ndarray) -> None:
    folder.mkdir()
    spacing = (SPACING_MM, SPACING_MM)
    pelvis = write_dx(folder / "pelvis.dcm", pixels, spacing_mm=spacing)
    for name in (".dcm", "...dcm"):
        os.symlink(pelvis, folder / name)
    (folder / "..dcm").write_bytes(Path(pelvis).read_bytes()[:2000])
    write_dx(folder / "nan_slope.dcm", pixels, spacing_mm=spacing, rescale=(float("nan"), 0.0))
    write_dx(folder / "zero_slope.dcm", pixels, spacing_mm=spacing, rescale=(0.0, 0.0))

    write_dx(folder / "blank.dcm", np.full(IMAGE_SHAPE, 2000, np.uint16), spacing_mm=spacing)
    write_annotation(folder / "blank.json", landmarks)
    write_dx(folder / "tiny.dcm", np.arange(100, dtype=np.uint16).reshape(10, 10) * 40, spacing_mm=spacing)
    write_annotation(folder / "tiny.json", landmarks * (9.0 / np.array(IMAGE_SHAPE[::-1])))
    chest = np.rint(render_nonpelvic("chest", IMAGE_SHAPE, np.random.default_rng(0))[0] * 4095).astype(np.uint16)
    write_dx(folder / "chest.dcm", chest, spacing_mm=spacing, body_part="CHEST", view="PA")
    write_annotation(folder / "chest.json", landmarks)
    # a quarter turn clockwise on the screen: pixel (row r, col c) goes to (row c, col H - 1 - r)
    write_dx(folder / "rotated.dcm", np.rot90(pixels, k=-1), spacing_mm=spacing)
    write_annotation(folder / "rotated.json", np.stack([IMAGE_SHAPE[0] - 1 - landmarks[:, 1], landmarks[:, 0]], 1))

    for name in ("swapped", "upside_down", "bool_coordinate", "tiny_spacing"):
        os.symlink(pelvis, folder / f"{name}.dcm")
    write_annotation(folder / "swapped.json", landmarks[list(MIRROR_PERMUTATION)])  # each _r gets its _l's point
    write_annotation(folder / "upside_down.json", np.stack([landmarks[:, 0], IMAGE_SHAPE[0] - 1 - landmarks[:, 1]], 1))
    bad_point = {"image": "bool_coordinate.dcm", "landmarks": landmark_dict(landmarks), "fractures": []}
    bad_point["landmarks"][LANDMARK_NAMES[3]] = [True, False]
    (folder / "bool_coordinate.json").write_text(json.dumps(bad_point))
    write_annotation(folder / "tiny_spacing.json", landmarks, spacing_mm=(1e-9, 1e-9))


def _snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every path under ``root`` except ``skip``'s subtree: folders (their entries are listed too), and (size, mtime)
    of files and links."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in dirs:
            found[str(Path(folder, name))] = ("folder",)
        for name in files:
            info = Path(folder, name).lstat()
            found[str(Path(folder, name))] = ("file", info.st_size, info.st_mtime_ns)
    return found


def _cli(bundle_root: Path, overrides: Path, source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BUNDLE), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    return subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "run",
            "--config_file", str([str(CONFIGS / "inference.json"), str(overrides)]),
            "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf"),
            "--bundle_root", str(bundle_root), "--input", str(source), "--output_dir", str(out), *extra,
        ],
        cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    bundle_root = make_bundle_root(root / "bundle")
    pixels, landmarks = pelvic_pixels()
    images = root / "images"
    _write_mixed_folder(images, pixels, landmarks)
    overrides = overrides_file(
        root / "overrides.json", save_oracle_detector(bundle_root / "models", [(images / "pelvis.dcm", landmarks)])
    )
    # where the old code put the reports of '.dcm' / '...dcm' and deleted files on failure: output_dir/..
    work = root / "work"
    work.mkdir()
    for planted in ("overlay.png", "heatmap.nii.gz", "report.json"):
        (work / planted).write_text("planted: must survive")
    return {"root": root, "bundle_root": bundle_root, "images": images, "overrides": overrides, "work": work}


def test_a_folder_of_every_bad_input_gets_a_report_each_and_nothing_outside_output_dir(mixed):
    out = mixed["work"] / "out"
    before = _snapshot(mixed["root"], skip=out)
    done = _cli(mixed["bundle_root"], mixed["overrides"], mixed["images"], out)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert _snapshot(mixed["root"], skip=out) == before  # nothing written, changed or deleted outside output_dir

    summary = json.loads((out / "inference_summary.json").read_text())
    assert {Path(e["image"]).name: e["status"] for e in summary} == EXPECTED
    assert SUMMARY_LINE in log
    for entry in summary:
        name = Path(entry["image"]).name
        report_file = Path(entry["report"])
        assert report_file.parent.parent == out, report_file  # one folder per image, directly in output_dir
        report = json.loads(report_file.read_text())
        assert report["status"] == EXPECTED[name] and report["image"] == entry["image"]
        if EXPECTED[name] == "ok":
            assert 0.0 <= report["fracture_probability"] <= 1.0
        else:
            assert "fracture_probability" not in report and str(mixed["images"] / name) in report["error"]
    # folders: the file name without '.dcm', except the names that are nothing but dots and 'dcm'
    folders = {".dcm", "..dcm", "...dcm"} | {n[: -len(".dcm")] for n in EXPECTED if n.strip(".") != "dcm"}
    assert {p.name for p in out.iterdir()} == folders | {"inference_summary.json"}

    errors = {Path(e["image"]).name: e["error"] for e in summary if e["status"] != "ok"}
    assert "RescaleSlope is nan" in errors["nan_slope.dcm"] and "RescaleSlope is 0" in errors["zero_slope.dcm"]
    assert "10 x 10 pixels" in errors["tiny.dcm"] and "no contrast" in errors["blank.dcm"]
    assert "landmark plausibility" in errors["chest.dcm"] and "has landmarks" in errors["chest.dcm"]
    assert "mirror image of an AP pelvis" in errors["swapped.dcm"]
    assert "mirror image of an AP pelvis" in errors["upside_down.dcm"]
    assert f"landmark '{LANDMARK_NAMES[3]}' must be [x, y] numbers" in errors["bool_coordinate.dcm"]
    assert "'spacing_mm' must be two (row, col) pixel sizes between" in errors["tiny_spacing.dcm"]


def test_a_rerun_into_a_used_output_dir_is_refused_in_one_line_unless_overwrite(mixed, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    os.symlink(mixed["images"] / "pelvis.dcm", images / "pelvis.dcm")
    out = tmp_path / "out"
    assert _cli(mixed["bundle_root"], mixed["overrides"], images, out).returncode == 0
    good = (out / "pelvis" / "report.json").read_text()
    (out / "notes.txt").write_text("mine")  # a file the bundle did not write

    # the same name, now an unreadable file: the earlier good report must stay
    other = tmp_path / "other"
    other.mkdir()
    (other / "pelvis.dcm").write_bytes(b"not a DICOM")
    refused = _cli(mixed["bundle_root"], mixed["overrides"], other, out)
    assert refused.returncode == 1
    message = refused.stderr.strip().splitlines()
    assert message[-1] == (
        f"{out}: holds the results of an earlier run (inference_summary.json, 1 image folders); a rerun does not "
        "replace them: choose another --output_dir, or pass --overwrite true to replace them."
    )
    assert "Traceback" not in refused.stderr
    assert (out / "pelvis" / "report.json").read_text() == good and (out / "pelvis" / "overlay.png").is_file()

    replaced = _cli(mixed["bundle_root"], mixed["overrides"], other, out, "--overwrite", "true")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    (entry,) = json.loads((out / "inference_summary.json").read_text())
    assert entry["status"] == "unreadable" and entry["image"] == str(other / "pelvis.dcm")
    assert sorted(p.name for p in (out / "pelvis").iterdir()) == ["report.json"]  # no heatmap of the earlier run
    assert (out / "notes.txt").read_text() == "mine"


def test_an_unwritable_output_dir_or_a_truncated_model_stops_before_any_image(mixed, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    os.symlink(mixed["images"] / "pelvis.dcm", images / "pelvis.dcm")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    done = _cli(mixed["bundle_root"], mixed["overrides"], images, blocked / "out")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"{blocked / 'out'}: the output_dir cannot be written")

    broken_root = tmp_path / "broken_bundle"
    (broken_root / "models").mkdir(parents=True)
    model = mixed["bundle_root"] / "models" / "model.pt"
    (broken_root / "models" / "model.pt").write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    done = _cli(broken_root, mixed["overrides"], images, tmp_path / "out")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{broken_root / 'models' / 'model.pt'}: cannot be read as PyTorch weights"), last
    assert not (tmp_path / "out").exists()  # stopped before the output folder was made


def test_a_datalist_with_a_missing_annotation_reports_that_image_and_goes_on(mixed, tmp_path):
    datalist = tmp_path / "datalist.json"
    pelvis = str(mixed["images"] / "pelvis.dcm")
    datalist.write_text(
        json.dumps(
            [
                {"image": pelvis, "annotation": str(tmp_path / "gone.json")},
                {"image": str(mixed["images"] / "...dcm")},
                {"image": str(tmp_path / "missing.dcm")},
            ]
        )
    )
    done = _cli(mixed["bundle_root"], mixed["overrides"], datalist, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "inference_summary.json").read_text())
    assert [e["status"] for e in summary] == ["invalid_annotation", "ok", "unreadable"]
    assert f"{tmp_path / 'gone.json'}: annotation file not found" in summary[0]["error"]

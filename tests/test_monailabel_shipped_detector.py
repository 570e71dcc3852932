"""MONAI Label's first start on the bundle as it ships (issue 15): the shipped landmark detector, no fracture weights.

``bash monailabel_app/setup.sh`` followed by the README's start command (``monailabel_app/start_server.sh``) must
answer a landmark infer request on a fresh clone, with no training. The server is started with that script (as in
``test_monailabel_app.py``, :func:`~test_monailabel_app.running_server`) on a copy of the bundle whose ``models/``
holds exactly the landmark detector's three files and no ``model.pt`` (the fracture AASN does not ship yet), with the
bundle's own configs and no app option but ``--conf bundle``: what a fresh clone has. A copy, not ``bundle/`` itself,
so that weights a developer trained into ``bundle/models`` (a ``model.pt``) do not change what is tested.

No oracle here: the detector is the real one, its files from :func:`_shipped_models.shipped_detector_dir`
(``bundle/models`` when ``bundle/large_files.yml`` ships the detector, or ``$AASN_SHIPPED_MODELS_DIR``, e.g. a freshly
trained detector before it ships). The studies are radiographs of the atlas members the shipped detector never saw
(:func:`_shipped_models.simulate_held_out`, at the size it was trained on), and the landmarks that come back are
compared with the simulation's annotation loosely (:data:`MAX_MRE_MM`): this test checks that the app serves the
shipped detector, the accuracy bar itself is ``test_shipped_models.py``'s.

Checked over HTTP: ``/info/`` offers the landmark task and lists the fracture task under ``unavailable_models`` with a
one-line reason naming ``models/model.pt`` (the start-up log says the same); a landmark infer request answers the 16
named points, their confidences, the plausibility and the label discs, served from the bundle's ``models/``; a
fracture infer request answers 503 with the reason, and the server keeps serving.

Skipped while no detector ships (nothing to serve yet); needs ``.venv-monailabel`` (skipped without it, failed in CI).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

import _shipped_models
from test_monailabel_app import (
    APP,
    FRACTURE_TASK,
    LANDMARKS_TASK,
    REPO,
    _files_in,
    _infer,
    _infer_json,
    _multipart,
    _points,
    _read_label,
    _request,
    require_monailabel,
    running_server,
)

#: Radiographs simulated for the studies folder: a few infer requests, cheap to simulate (about 5 s each).
NUM_PXRS = 2
#: Loose accuracy check of the served landmarks (mean radial error over both images, mm): a detector that serves
#: landmarks of the right anatomy passes (a weakly trained stand-in reaches about 5 mm), one that is not the trained
#: detector's (shuffled weights, a wrong letterbox mapping, another image) does not. The release bar (3 mm on 40
#: images) is ``test_shipped_models.py``'s.
MAX_MRE_MM = 10.0


@pytest.fixture(scope="module")
def first_start(tmp_path_factory):
    """The server started as documented on a copy of the bundle holding only the shipped detector's files."""
    detector = _shipped_models.shipped_detector_dir()  # raises when the bundle lists files it lacks: a failure
    if detector is None:
        pytest.skip(
            "no landmark detector ships yet (bundle/large_files.yml lists none); "
            f"{_shipped_models.MODELS_DIR_VARIABLE}=<models folder> tests one"
        )
    require_monailabel()
    from custom_transforms.annotation import read_annotation

    root = tmp_path_factory.mktemp("monailabel_first_start")
    bundle = root / "bundle"
    shutil.copytree(
        REPO / "bundle",
        bundle,
        ignore=shutil.ignore_patterns("models", "data", "outputs", "logs", "eval", "runs", "__pycache__"),
    )
    models = bundle / "models"
    models.mkdir()
    for name in _shipped_models.DETECTOR_FILES:
        shutil.copy2(detector / name, models / name)

    items = _shipped_models.simulate_held_out(root / "sim", n=NUM_PXRS, workers=1)
    studies = Path(items[0]["image"]).parent
    cases = {}
    for item in items:
        annotation = read_annotation(item["annotation"])
        header = pydicom.dcmread(item["image"], stop_before_pixels=True)
        cases[Path(item["image"]).name.split(".")[0]] = {
            "landmarks": annotation["landmarks"].astype(np.float64),
            "spacing": tuple(float(v) for v in annotation["spacing_mm"]),
            "image_size": [int(header.Rows), int(header.Columns)],
        }
    assert sorted(p.stem for p in studies.iterdir() if p.is_file()) == sorted(cases)

    with running_server(root, studies, {"bundle": bundle}) as running:
        yield {**running, "bundle": bundle, "detector": detector, "studies": studies, "cases": cases}


def test_info_offers_the_landmark_task_and_says_why_the_fracture_task_is_not_offered(first_start):
    status, body = _request("GET", f"{first_start['url']}/info/")
    assert status == 200, body
    info = json.loads(body)
    assert LANDMARKS_TASK in info["models"] and FRACTURE_TASK not in info["models"]
    assert FRACTURE_TASK in info["trainers"]  # retraining needs no served weights: it makes them
    assert set(info["unavailable_models"]) == {FRACTURE_TASK}
    reason = info["unavailable_models"][FRACTURE_TASK]
    missing = str(first_start["bundle"] / "models" / "model.pt")
    assert reason.startswith(f"{missing} (the fracture AASN's weights) is missing") and "\n" not in reason, reason
    assert "detector" not in reason  # the detector's files are all there
    log = Path(first_start["log"]).read_text(errors="replace")
    assert f"{FRACTURE_TASK} is unavailable: {reason}" in log
    assert f"{LANDMARKS_TASK}: serving {first_start['bundle'] / 'models' / 'landmark_model.pt'}" in log


def test_landmark_infer_answers_with_the_shipped_detector(first_start, tmp_path):
    """The answer is the shipped detector's: the points equal those of the detector the bundle's own workflows build
    from the same folder (``load_landmark_detector``, in this process), and they lie on the simulated anatomy."""
    from custom_transforms.conventions import LANDMARK_NAMES
    from custom_transforms.loading import LoadPXR

    from scripts.landmarks.detector import load_landmark_detector
    from scripts.landmarks.metrics import radial_errors_mm

    bundle = first_start["bundle"]
    reference = load_landmark_detector(bundle, ckpt_dir=str(bundle / "models"), device="cpu")
    errors = {}
    for image, case in first_start["cases"].items():
        result = _infer_json(first_start, LANDMARKS_TASK, image)
        points = _points(result["landmarks"])  # the 16 names, in LANDMARK_NAMES order
        assert np.isfinite(points).all()
        (path,) = first_start["studies"].glob(f"{image}.*")
        expected = reference(LoadPXR()(str(path))).landmarks
        np.testing.assert_allclose(points, expected, atol=0.05)  # the server runs pydicom 2.4, this process 3
        assert result["weights"] == str(first_start["bundle"] / "models" / "landmark_model.pt")
        assert result["image_size"] == case["image_size"]
        assert result["spacing_mm"] == pytest.approx(case["spacing"])
        assert list(result["confidence"]) == list(LANDMARK_NAMES)
        assert all(0.0 <= c <= 1.0 for c in result["confidence"].values()), result["confidence"]
        assert math.isfinite(result["plausibility"]) and 0.0 <= result["plausibility"] <= 1.0
        assert set(result["corrected_by_shape_model"]) <= set(LANDMARK_NAMES)
        assert result["label_values"] == {name: i for i, name in enumerate(LANDMARK_NAMES, start=1)}
        assert result["detection"]  # the detector's own report
        errors[image] = radial_errors_mm(points, case["landmarks"], case["spacing"])

        status, content = _infer(first_start, LANDMARKS_TASK, image, output="image")
        assert status == 200, content[:300]
        label = _read_label(content, ".nii.gz", tmp_path)
        assert list(label.shape) == case["image_size"]
        assert set(np.unique(label)) <= set(range(17))
        for value, (x, y) in enumerate(points, start=1):
            assert label[int(round(y)), int(round(x))] == value, LANDMARK_NAMES[value - 1]

    per_image = {image: round(float(e.mean()), 2) for image, e in errors.items()}
    mre = float(np.mean(list(errors.values())))
    assert mre < MAX_MRE_MM, f"MRE {mre:.2f} mm against the simulated annotations (per image {per_image})"


def test_fracture_infer_is_503_naming_models_model_pt_and_the_server_keeps_serving(first_start):
    image = next(iter(first_start["cases"]))
    status, body = _infer(first_start, FRACTURE_TASK, image)
    detail = json.loads(body)["detail"]
    assert status == 503, (status, detail)
    info = json.loads(_request("GET", f"{first_start['url']}/info/")[1])
    assert detail == f"{FRACTURE_TASK} is unavailable: {info['unavailable_models'][FRACTURE_TASK]}"
    assert str(first_start["bundle"] / "models" / "model.pt") in detail and "\n" not in detail
    # the same for a request with an uploaded radiograph, whose temporary copy the server removes
    before = _files_in(first_start["tmp"])
    (path,) = first_start["studies"].glob(f"{image}.*")
    body, headers = _multipart({"params": "{}"}, {"file": (path.name, path.read_bytes())})
    status, answer = _request("POST", f"{first_start['url']}/infer/{FRACTURE_TASK}", body, headers)
    assert status == 503 and json.loads(answer)["detail"] == detail, answer[:300]
    assert _files_in(first_start["tmp"]) == before
    # the landmarks a viewer pre-annotates with are still served
    assert len(_infer_json(first_start, LANDMARKS_TASK, image)["landmarks"]) == 16


def test_a_missing_detector_file_makes_both_tasks_unavailable_until_it_is_back(first_start):
    """No weights at all is a first start too: a detector file missing makes the landmark task unavailable with the
    reason naming it (and the fracture task, whose preprocessing needs the detector, names it besides model.pt); once
    the file is back the landmark task answers again, without a restart."""
    url, models = first_start["url"], first_start["bundle"] / "models"
    image = next(iter(first_start["cases"]))
    refine, aside = models / "landmark_refine_model.pt", first_start["bundle"] / "landmark_refine_model.pt.aside"
    refine.rename(aside)
    try:
        info = json.loads(_request("GET", f"{url}/info/")[1])
        assert LANDMARKS_TASK not in info["models"] and FRACTURE_TASK not in info["models"]
        reason = info["unavailable_models"][LANDMARKS_TASK]
        assert reason.startswith(f"the landmark detector's {refine} is missing") and "\n" not in reason, reason
        assert f"{models / 'model.pt'} (the fracture AASN's weights)" in info["unavailable_models"][FRACTURE_TASK]
        assert f"; {reason}" in info["unavailable_models"][FRACTURE_TASK]
        status, body = _infer(first_start, LANDMARKS_TASK, image)
        assert status == 503 and json.loads(body)["detail"] == f"{LANDMARKS_TASK} is unavailable: {reason}", body
    finally:
        aside.rename(refine)
    info = json.loads(_request("GET", f"{url}/info/")[1])
    assert LANDMARKS_TASK in info["models"] and set(info["unavailable_models"]) == {FRACTURE_TASK}
    assert len(_infer_json(first_start, LANDMARKS_TASK, image)["landmarks"]) == 16


def test_the_documented_start_serves_the_repositorys_bundle(tmp_path):
    """``start_server.sh`` without a ``--conf bundle`` of the caller's gives the server ``bundle/`` of this repository,
    whose ``models/`` holds the shipped detector on a fresh clone (the test above serves a copy of that folder)."""
    stub = tmp_path / "monailabel"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    run = ["bash", str(APP / "start_server.sh"), "--studies", "/data/pxrs"]
    args = subprocess.run(run, env={**os.environ, "MONAILABEL": str(stub)}, capture_output=True, text=True, check=True)
    args = args.stdout.split()
    conf = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--conf"}
    assert conf == {"bundle": str(REPO / "bundle")}

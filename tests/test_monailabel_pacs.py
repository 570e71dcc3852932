"""MONAI Label against a real PACS: ``monailabel start_server --studies http://127.0.0.1:<port>/dicom-web`` on Orthanc.

Radiographs made by the project's simulator (procedural anatomy, DICOM DX, one study and series each) and an RT
Structure Set of the same study as one of them (not an image: never listed) are stored in a real Orthanc with STOW-RS
(``orthanc`` fixture, ``tests/orthanc_server.py``). The app's datastore for a DICOMweb URL
(``monailabel_app/lib/dicomweb_datastore.py``) lists the CR/DX series by QIDO-RS, fetches a series by WADO-RS when an
infer request names its SeriesInstanceUID, and keeps final labels in MONAI Label's DICOMweb cache; a training run
reads them from there.

As in ``test_monailabel_app.py`` the fracture network is a tiny untrained AASN and the landmark network an oracle
(``tests/deploy_oracle_landmarks.py``) that returns heatmaps at the simulated images' annotated landmarks, so the
landmarks that come back are checked against known points; the rest of the detector is the bundle's. The oracle, not
the detector the bundle ships, because these tests need exact known landmarks: the points the task returns for the
pixels fetched from Orthanc are checked to 1 px and the plausibility against a value computed by hand, so that a
wrong image (another series, a mangled transfer) cannot pass within a trained detector's error. The shipped detector
is served on its real weights by ``test_monailabel_shipped_detector.py``.

Needs ``.venv-monailabel`` (``bash monailabel_app/setup.sh``) and Orthanc; skipped without them, failed under CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from _bundle_data import TINY_NETWORK_KWARGS

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "monailabel_app"
MONAILABEL = Path(os.environ.get("MONAILABEL_VENV", REPO / ".venv-monailabel")) / "bin" / "monailabel"

NUM_PXRS = 3
IMAGE_HW = (224, 224)
DETECTOR_INPUT = (64, 64)
TINY_AASN = {
    "roi_size": [32, 64],
    "network_kwargs": TINY_NETWORK_KWARGS,
    "batch_size": 2,
    "num_workers": 0,
    "cache_rate": 0.0,
}
SERVER_START_TIMEOUT_S = 240
TRAIN_TIMEOUT_S = 300
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 directly, never a proxy


@pytest.fixture(scope="module")
def pacs_deployment(orthanc, tmp_path_factory):
    """The bundle copy (tiny AASN, oracle landmark detector), and the simulated studies stored in Orthanc."""
    if not MONAILABEL.is_file():
        message = f"{MONAILABEL} not found: run `bash monailabel_app/setup.sh` first"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sys.path.insert(0, str(REPO / "bundle"))
    import simulation
    from custom_transforms.annotation import read_annotation
    from deploy_dicom_factory import rt_structure_set_dataset, save
    from oracle_detector import save_oracle_detector

    from scripts.datalist import load_datalist
    from scripts.fracture.networks import build_network
    from scripts.landmarks.training import build_shape_model

    root = tmp_path_factory.mktemp("monailabel_pacs")
    bundle = root / "bundle"
    shutil.copytree(
        REPO / "bundle",
        bundle,
        ignore=shutil.ignore_patterns("models", "data", "outputs", "logs", "eval", "__pycache__"),
    )
    models = bundle / "models"
    models.mkdir()
    items = load_datalist(
        simulation.generate_dataset(
            root / "sim", NUM_PXRS, anatomy="procedural", seed=5, size=IMAGE_HW, positive_fraction=0.5, progress=False
        )
    )
    cases = {}
    for item in items:
        ds = pydicom.dcmread(item["image"])
        cases[str(ds.SeriesInstanceUID)] = {
            "file": item["image"],
            "study": str(ds.StudyInstanceUID),
            "sop": str(ds.SOPInstanceUID),
            "landmarks": read_annotation(item["annotation"])["landmarks"].astype(np.float64),
        }
    overrides = save_oracle_detector(models, [(c["file"], c["landmarks"]) for c in cases.values()], DETECTOR_INPUT)
    build_shape_model(items, models / "landmark_shape_model.json")  # the simulated anatomy's own shape prior
    torch.manual_seed(0)
    torch.save(build_network("aasn", **TINY_AASN["network_kwargs"]).state_dict(), models / "model.pt")

    first = next(iter(cases.values()))
    rt = save(rt_structure_set_dataset(first["study"]), root / "rtstruct.dcm")  # same study, not an image
    orthanc.stow([c["file"] for c in cases.values()] + [rt])

    tiny = root / "tiny.json"
    tiny.write_text(json.dumps(TINY_AASN))
    landmark_tiny = root / "landmark_tiny.json"
    landmark_tiny.write_text(json.dumps({**overrides, "landmark_detector#activation": "spatial_softmax"}))
    return {
        "root": root,
        "bundle": bundle,
        "cases": cases,
        "series": sorted(cases),
        "work": root / "work",
        "cache": root / "dicomweb_cache",
        "rt_series": str(pydicom.dcmread(rt).SeriesInstanceUID),
        "conf": {
            "bundle": bundle,
            "config_overrides": tiny,
            "landmark_config_overrides": landmark_tiny,
            "work_dir": root / "work",
        },
    }


@pytest.fixture(scope="module")
def pacs_server(orthanc, pacs_deployment):
    """``monailabel start_server --studies <Orthanc's DICOMweb root>`` on 127.0.0.1; its process group is stopped at
    the end, also when a test fails."""
    d = pacs_deployment
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = d["root"] / "server.log"
    command = [
        str(MONAILABEL),
        "start_server",
        "--app",
        str(APP),
        "--studies",
        orthanc.dicomweb,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    for key, value in d["conf"].items():
        command += ["--conf", key, str(value)]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(
        PATH=f"{MONAILABEL.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(MONAILABEL.parent.parent),
        PYTHONPATH=str(REPO / "tests"),  # the oracle network's module
        NO_PROXY="127.0.0.1,localhost",
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="2",
        MONAI_LABEL_SESSIONS="false",
        MONAI_LABEL_AUTO_UPDATE_SCORING="false",
        MONAI_LABEL_DICOMWEB_CACHE_PATH=str(d["cache"]),
    )
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=d["root"], start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                with OPENER.open(f"{url}/info/", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {SERVER_START_TIMEOUT_S} s:\n{_tail(log_path)}")
            time.sleep(1.0)
        yield {"url": url, "log": log_path, "pacs": orthanc, **d}
    finally:
        _stop(process)


def _free_port() -> int:
    from orthanc_server import free_port

    return free_port()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    try:  # training subprocesses left in the group
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def _request(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 120):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for name, (filename, content) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _infer(server, task: str, series: str, output: str = "json", params: dict | None = None):
    body, headers = _multipart({"params": json.dumps(params or {})}, {})
    return _request("POST", f"{server['url']}/infer/{task}?image={series}&output={output}", body, headers)


def _infer_json(server, task: str, series: str) -> dict:
    status, answer = _infer(server, task, series)
    assert status == 200, f"{task} on {series}: HTTP {status} {answer[:500]!r}\n{_tail(server['log'])}"
    return json.loads(answer)


def _points(named: dict) -> np.ndarray:
    from custom_transforms.conventions import LANDMARK_NAMES

    return np.array([named[n] for n in LANDMARK_NAMES], dtype=np.float64)


def _cache_dir(server) -> Path:
    """MONAI Label's DICOMweb cache of this PACS: ``<cache>/<md5 of the DICOMweb URL>``."""
    return server["cache"] / hashlib.md5(server["pacs"].dicomweb.encode()).hexdigest()


def _put_annotation(server, series: str, landmarks: np.ndarray, fractures: list) -> dict:
    from custom_transforms.conventions import LANDMARK_NAMES

    annotation = {
        "landmarks": {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, landmarks)},
        "fractures": fractures,
    }
    body, headers = _multipart({"params": "{}"}, {"label": ("label.json", json.dumps(annotation).encode())})
    status, answer = _request("PUT", f"{server['url']}/datastore/label?image={series}&tag=final", body, headers)
    assert status == 200, f"PUT label: HTTP {status} {answer[:500]!r}\n{_tail(server['log'])}"
    return json.loads(answer)


# --- the contract ------------------------------------------------------------------------------------------------


def test_the_server_lists_the_pacs_radiograph_series(pacs_server):
    status, body = _request("GET", f"{pacs_server['url']}/info/")
    assert status == 200
    datastore = json.loads(body)["datastore"]
    assert datastore["pacs"] == pacs_server["pacs"].dicomweb and datastore["total"] == NUM_PXRS
    # "next sample": an unlabelled radiograph series of the PACS, never the RT Structure Set of the same study
    status, body = _request(
        "POST", f"{pacs_server['url']}/activelearning/first", b"{}", {"Content-Type": "application/json"}
    )
    assert status == 200, body
    assert json.loads(body)["id"] in pacs_server["series"]


def _bundle_report(server, image: str, tmp_path: Path) -> dict:
    """``report.json`` of the bundle copy's own inference config on ``image`` (the server's weights and landmark
    detector overrides), run in this process."""
    from monai.bundle import ConfigWorkflow

    bundle, out = server["bundle"], tmp_path / "bundle_output"
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps([{"image": str(image)}]))
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / "inference.json"), str(server["conf"]["config_overrides"])],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(bundle),
        input=str(datalist),
        output_dir=str(out),
        landmark_config=[
            str(bundle / "configs" / "landmark_inference.json"),
            str(server["conf"]["landmark_config_overrides"]),
        ],
    )
    workflow.initialize()
    workflow.run()
    (report,) = [json.loads(p.read_text()) for p in out.glob("*/report.json")]
    return report


def test_landmark_and_fracture_infer_on_a_pacs_series(pacs_server, tmp_path):
    series = pacs_server["series"][0]
    case = pacs_server["cases"][series]
    result = _infer_json(pacs_server, "aasn_landmarks", series)
    # the oracle knows the simulated image: these points come from the pixels fetched from Orthanc
    np.testing.assert_allclose(_points(result["landmarks"]), case["landmarks"], atol=1.0)
    from oracle_detector import oracle_plausibility

    expected = oracle_plausibility(case["file"], case["landmarks"], DETECTOR_INPUT)
    assert result["image_size"] == list(IMAGE_HW) and expected > 0.5  # by hand from the oracle's Gaussians
    assert result["plausibility"] == pytest.approx(expected, abs=1e-3)
    cached = _cache_dir(pacs_server) / f"{series}.dcm"  # fetched by WADO-RS, kept as DICOM
    assert pydicom.dcmread(cached).SOPInstanceUID == case["sop"]

    second = pacs_server["series"][1]
    result = _infer_json(pacs_server, "aasn_fracture", second)
    # the bundle's own inference on the file that was stored in Orthanc (same weights, same oracle detector) gives
    # the probability the task served from the pixels it fetched by WADO-RS
    reference = _bundle_report(pacs_server, pacs_server["cases"][second]["file"], tmp_path)
    assert reference["landmark_source"] == "detector"
    assert result["fracture_probability"] == pytest.approx(reference["fracture_probability"], abs=1e-5)
    assert result["positive"] == reference["positive"] == (result["fracture_probability"] >= result["threshold"])
    assert result["landmark_source"] == "detector"
    np.testing.assert_allclose(
        _points(result["landmarks"]), pacs_server["cases"][pacs_server["series"][1]]["landmarks"], atol=1.0
    )


def test_unknown_series_and_non_image_series_get_clear_errors(pacs_server):
    status, body = _infer(pacs_server, "aasn_landmarks", "1.2.3.4.5.6.7")
    assert status == 404 and "1.2.3.4.5.6.7" in json.loads(body)["detail"]
    status, body = _infer(pacs_server, "aasn_landmarks", pacs_server["rt_series"])  # no image instance in it
    assert status == 422 and "holds 0 image instances" in json.loads(body)["detail"]
    # what MONAI Label's OHIF plugin asks for (a NRRD label volume): refused, see monailabel_app/README.md
    status, body = _infer(
        pacs_server, "aasn_landmarks", pacs_server["series"][0], "image", {"result_extension": ".nrrd"}
    )
    assert status == 422 and "'.nrrd' is not supported" in json.loads(body)["detail"]


def test_final_labels_are_kept_in_the_dicomweb_cache_and_training_reads_them(pacs_server):
    series, cases = pacs_server["series"], pacs_server["cases"]
    shifted = cases[series[0]]["landmarks"] + 1.5  # an annotator's correction, to tell it from the detector's
    planted = {series[0]: [[112.0, 150.0]], series[1]: [], series[2]: [[100.0, 160.0]]}
    for uid in series:
        answer = _put_annotation(
            pacs_server, uid, shifted if uid == series[0] else cases[uid]["landmarks"], planted[uid]
        )
        assert answer["image"] == uid
    for uid in series:  # where MONAI Label's DICOMweb datastore keeps its copy; not in the PACS as a SEG
        assert (
            json.loads((_cache_dir(pacs_server) / "labels" / "final" / f"{uid}.json").read_text())["fractures"]
            == planted[uid]
        )
    assert pacs_server["pacs"].qido("/series", Modality="SEG") == []

    result = _infer_json(pacs_server, "aasn_fracture", series[0])
    assert result["landmark_source"] == "final label"
    np.testing.assert_allclose(_points(result["landmarks"]), shifted, atol=1e-3)

    checkpoint_dir = pacs_server["bundle"] / "models" / "monailabel"
    started = time.time()
    params = json.dumps({"max_epochs": 1, "val_split": 0.5, "device": "cpu"}).encode()
    status, body = _request(
        "POST", f"{pacs_server['url']}/train/aasn_fracture", params, {"Content-Type": "application/json"}
    )
    assert status == 200, body
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while True:
        task = json.loads(_request("GET", f"{pacs_server['url']}/train/")[1])
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            break
        assert time.monotonic() < deadline, f"training still running after {TRAIN_TIMEOUT_S} s"
        time.sleep(2.0)
    assert task["status"] == "DONE", "\n".join(task.get("details", [])) + "\n" + _tail(pacs_server["log"])
    datalist = json.loads((pacs_server["work"] / "datalist.json").read_text())["data"]
    # one item per labelled PACS series, named by its SeriesInstanceUID, labelled as planted
    assert sorted((d["subject"], d["label"]) for d in datalist) == sorted(
        (uid, int(bool(planted[uid]))) for uid in series
    )
    assert {Path(d["image"]).name for d in datalist} == {f"{uid}.dcm" for uid in series}
    assert (checkpoint_dir / "model.pt").stat().st_mtime >= started


def test_a_pacs_server_takes_no_uploads_no_paths_and_no_tag_that_leaves_the_cache(pacs_server):
    """Issue 16 on a PACS: its images are the PACS's (``PUT /datastore/`` is 405 and stores nothing), an image id is a
    series UID (the cached file's own path, ``../`` and ``/etc/passwd`` are 404), and a label's tag stays inside the
    cache (422)."""
    series = pacs_server["series"][0]
    assert len(_infer_json(pacs_server, "aasn_landmarks", series)["landmarks"]) == 16  # fetched into the cache
    cached = _cache_dir(pacs_server) / f"{series}.dcm"
    assert cached.is_file()
    before = {str(p) for p in pacs_server["cache"].rglob("*") if p.is_file()}

    body, headers = _multipart({"params": "{}"}, {"file": ("x.dcm", cached.read_bytes())})
    status, answer = _request("PUT", f"{pacs_server['url']}/datastore/?image=uploaded", body, headers)
    assert status == 405 and "come from the PACS" in json.loads(answer)["detail"], answer
    for image in (str(cached), f"../{cached.parent.name}/{cached.name}", "/etc/passwd"):
        status, answer = _infer(pacs_server, "aasn_landmarks", urllib.parse.quote(image, safe=""))
        assert status == 404, (image, status, answer[:300])
    body, headers = _multipart({"params": "{}"}, {"label": ("label.json", b"{}")})
    status, answer = _request(
        "PUT", f"{pacs_server['url']}/datastore/label?image={series}&tag=..%2F..%2Fx", body, headers
    )
    assert status == 422 and "label tag" in json.loads(answer)["detail"], answer
    assert {str(p) for p in pacs_server["cache"].rglob("*") if p.is_file()} == before

"""The MONAI Label app as a real server: ``monailabel start_server`` in its own virtualenv, driven over HTTP.

The server serves a copy of the bundle with tiny weights, on a studies folder of radiographs simulated by the
project's simulator (procedural anatomy, DICOM DX) plus a chest film, a blank image and a DICOM without pixels.
It checks the app's contract, not accuracy:

* the fracture model is a tiny, untrained AASN (random weights) whose heatmap gets three planted peaks added
  (:func:`planted_aasn`; the bundle copy's ``inference.json`` builds it): the test checks the probability, the
  threshold logic, the label image, the retraining, and that the task reports the peaks of the bundle's own
  ``report.json`` for the same image;
* the landmark detector's network is :class:`OracleHeatmaps`, a stand-in that knows the studies: for one of the
  simulated radiographs it returns logits whose spatial softmax (the detector's activation) is a Gaussian at each
  annotated landmark, for any other image flat logits (no landmark found). So everything after the network (letterbox
  inverse, shape prior, plausibility check, label discs, JSON,
  the fracture task's use of the landmarks) is checked against known points, and a chest film is refused by the
  detector's real plausibility check. The server imports the class from this file. Its stored inputs come from
  the project's loader under pydicom 3 (this process); the server loads the same files under pydicom 2.4.

Why the oracle and not the detector the bundle ships (issue 15 asks for the real weights where they fit): these tests
need exact known landmarks. They check the app's geometry to 1 px (the points the task returns, its label discs, the
landmarks the fracture task takes from the detector), a plausibility computed by hand from the known heatmaps
(``oracle_detector.oracle_plausibility``), the fracture peaks against the bundle's ``report.json`` on the same
landmarks, and refusals that must happen every time (a chest film and a blank image: the oracle finds no landmark in
an image it does not know, so the detector's real plausibility check refuses them). A trained detector's errors of a
few mm, different for every release of its weights, would turn each of these into a tolerance. The shipped detector
itself is served and checked, on its real weights, by ``test_monailabel_shipped_detector.py``.

Needs ``.venv-monailabel`` (``bash monailabel_app/setup.sh``); skipped without it, except in CI where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from _bundle_data import TINY_NETWORK_KWARGS

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "monailabel_app"
MONAILABEL = Path(os.environ.get("MONAILABEL_VENV", REPO / ".venv-monailabel")) / "bin" / "monailabel"

NUM_PXRS = 4
IMAGE_HW = (224, 224)  # rows, cols of the simulated radiographs (square: the simulated detector is)
DETECTOR_INPUT = (64, 64)
TINY_AASN = {
    "roi_size": [64, 128],  # ROI pixels of about 2 mm: the planted peaks 4 pixels apart are closer than 10 mm
    "network_kwargs": TINY_NETWORK_KWARGS,
    "batch_size": 2,
    "num_workers": 0,
    "cache_rate": 0.0,
}
LANDMARKS_TASK, FRACTURE_TASK = "aasn_landmarks", "aasn_fracture"  # the fracture trainer has its model's name
SERVER_START_TIMEOUT_S = 240
MAX_UPLOAD_MB = 2  # the server's max_upload_mb: small, so that a refused upload is quick to send
TRAIN_TIMEOUT_S = 300


class OracleHeatmaps(torch.nn.Module):
    """Stand-in landmark network knowing a few radiographs: the stored heatmap logits of the stored input the image
    equals (mean squared difference below ``tolerance``), else flat zero logits (no landmark found).

    Args:
        num_images: stored radiographs.
        num_landmarks: heatmap channels.
        spatial_size: ``(H, W)`` of the detector input.
        tolerance: largest mean squared difference of a match.
    """

    def __init__(
        self, num_images: int = NUM_PXRS, num_landmarks: int = 16, spatial_size=DETECTOR_INPUT, tolerance: float = 1e-5
    ):
        super().__init__()
        self.register_buffer("inputs", torch.zeros(num_images, 1, *spatial_size))
        self.register_buffer("heatmaps", torch.zeros(num_images, num_landmarks, *spatial_size))
        self.tolerance = tolerance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distance = ((x[:, None] - self.inputs[None]) ** 2).mean(dim=(2, 3, 4))  # (B, num_images)
        best = distance.min(dim=1)
        return self.heatmaps[best.indices] * (best.values <= self.tolerance).float()[:, None, None, None]


#: Planted peaks of :func:`planted_aasn`: (column, row) as fractions of the ROI, an offset in ROI pixels, probability.
PLANTED_PEAKS = (((0.25, 0.5), (0, 0), 0.9), ((0.25, 0.5), (4, 0), 0.8), ((0.75, 0.5), (0, 0), 0.7))


def planted_heatmap_logits(height: int, width: int) -> torch.Tensor:
    """(1, 1, h, w) logits of a heatmap of probability 0.02 with :data:`PLANTED_PEAKS` (Gaussians of 1 ROI pixel)."""
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    probability = torch.full((height, width), 0.02)
    for (fx, fy), (dx, dy), peak in PLANTED_PEAKS:
        cx, cy = int(fx * width) + dx, int(fy * height) + dy
        probability = torch.maximum(probability, peak * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 2.0))
    return torch.logit(probability)[None, None]


def planted_aasn(network_kwargs: dict) -> torch.nn.Module:
    """The bundle's AASN (``build_network("aasn", **network_kwargs)``: its weights load and it runs) whose heatmap
    logits are ``1e-3 x`` its own plus :func:`planted_heatmap_logits`, so its peaks are known. The server's bundle
    copy builds it in ``inference.json``; training (``train.json``) keeps the plain AASN."""
    from scripts.fracture.networks import build_network

    network = build_network("aasn", **network_kwargs)
    base = type(network)

    def forward(self, x):
        return 1e-3 * base.forward(self, x) + planted_heatmap_logits(*x.shape[-2:]).to(x.device)

    network.__class__ = type("PlantedAASN", (base,), {"forward": forward})
    return network


# --- the deployment: bundle copy, weights, studies --------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    require_monailabel()
    sys.path.insert(0, str(REPO / "bundle"))
    sys.path.insert(0, str(REPO / "tests"))
    import simulation
    from custom_transforms.annotation import read_annotation
    from custom_transforms.geometry import transform_points
    from custom_transforms.loading import LoadPXR
    from dicom_factory import write_dx, write_non_image
    from simulation.nonpelvic import render_nonpelvic

    from scripts.datalist import load_datalist
    from scripts.fracture.networks import build_network
    from scripts.landmarks.heatmap_decoding import gaussian_heatmaps
    from scripts.landmarks.letterbox import Letterbox
    from scripts.landmarks.training import build_shape_model

    root = tmp_path_factory.mktemp("monailabel")
    bundle = root / "bundle"
    shutil.copytree(
        REPO / "bundle",
        bundle,
        ignore=shutil.ignore_patterns("models", "data", "outputs", "logs", "eval", "__pycache__"),
    )
    models = bundle / "models"
    models.mkdir()
    inference_config = bundle / "configs" / "inference.json"
    config = json.loads(inference_config.read_text())
    config["network_def"] = {"_target_": "test_monailabel_app.planted_aasn", "network_kwargs": "@network_kwargs"}
    inference_config.write_text(json.dumps(config, indent=4))

    datalist = simulation.generate_dataset(
        root / "sim", NUM_PXRS, anatomy="procedural", seed=3, size=IMAGE_HW, positive_fraction=0.5, progress=False
    )
    items = load_datalist(datalist)
    studies = Path(items[0]["image"]).parent
    cases = {}
    oracle = OracleHeatmaps()
    letterbox = Letterbox(DETECTOR_INPUT)
    for i, item in enumerate(items):
        annotation = read_annotation(item["annotation"])
        inside = (annotation["landmarks"] >= -0.5) & (annotation["landmarks"] <= np.array(IMAGE_HW[::-1]) - 0.5)
        assert inside.all(), f"{item['annotation']}: the simulator put landmarks outside the image"
        boxed = letterbox(LoadPXR()(item["image"]))
        oracle.inputs[i] = boxed.as_tensor()
        points = transform_points(boxed.meta["letterbox_matrix"], annotation["landmarks"])
        gaussians = gaussian_heatmaps(torch.as_tensor(points, dtype=torch.float32), DETECTOR_INPUT, 1.5)
        oracle.heatmaps[i] = torch.log(gaussians.clamp_min(1e-30))  # spatial softmax of these = the Gaussians
        spacing = LoadPXR()(item["image"]).meta["spacing_mm"]
        cases[Path(item["image"]).name.split(".")[0]] = {
            "landmarks": annotation["landmarks"].astype(np.float64),
            "fractures": annotation["fractures"].astype(np.float64).reshape(-1, 2),
            "spacing": tuple(float(v) for v in spacing),
        }
    torch.save(oracle.state_dict(), models / "landmark_model.pt")
    build_shape_model(items, models / "landmark_shape_model.json")
    torch.manual_seed(0)
    torch.save(build_network("aasn", **TINY_AASN["network_kwargs"]).state_dict(), models / "model.pt")

    spacing = cases[next(iter(cases))]["spacing"]
    write_dx(
        studies / "chest.dcm",
        (render_nonpelvic("chest", IMAGE_HW, np.random.default_rng(0))[0] * 4095).astype(np.uint16),
        spacing_mm=spacing,
        body_part="CHEST",
        view="PA",
    )
    write_dx(studies / "blank.dcm", np.full(IMAGE_HW, 1800, np.uint16), spacing_mm=spacing)
    write_non_image(studies / "rtplan.dcm")

    tiny = root / "tiny.json"
    tiny.write_text(json.dumps(TINY_AASN))
    landmark_tiny = root / "landmark_tiny.json"
    landmark_tiny.write_text(
        json.dumps(
            {
                "input_size": list(DETECTOR_INPUT),
                "network_def": {"_target_": "test_monailabel_app.OracleHeatmaps"},
                "use_refiner": False,
                "landmark_detector#activation": "spatial_softmax",
            }
        )
    )
    return {
        "root": root,
        "bundle": bundle,
        "studies": studies,
        "cases": cases,
        "ids": sorted(cases),
        "conf": {"bundle": bundle, "config_overrides": tiny, "landmark_config_overrides": landmark_tiny},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_monailabel() -> None:
    """Skip without ``.venv-monailabel`` (``$MONAILABEL_VENV``), except in CI where it fails."""
    if not MONAILABEL.is_file():
        message = f"{MONAILABEL} not found: run `bash monailabel_app/setup.sh` first"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def server(deployment):
    with running_server(
        deployment["root"], deployment["studies"], {**deployment["conf"], "max_upload_mb": MAX_UPLOAD_MB}
    ) as running:
        yield {**running, **deployment}


@contextlib.contextmanager
def running_server(root: Path, studies: Path, conf: dict):
    """The documented start, ``monailabel_app/start_server.sh`` (``monailabel start_server``) without ``--host``, as a
    real process on ``studies`` with the app options ``conf`` (``--conf key value``); stopped (its process group) at
    the end, always. Its log is ``root/server.log``; its temporary files go to a folder of its own (``TMPDIR``,
    ``root/server_tmp``), so that the test sees what it leaves there. Yields ``url``, ``log``, ``port`` and ``tmp``
    once ``/info/`` answers."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    server_tmp = root / "server_tmp"
    server_tmp.mkdir(exist_ok=True)
    command = ["bash", str(APP / "start_server.sh"), "--studies", str(studies), "--port", str(port)]
    for key, value in conf.items():
        command += ["--conf", key, str(value)]
    env = dict(os.environ)
    env.update(
        MONAILABEL=str(MONAILABEL),
        TMPDIR=str(server_tmp),
        PATH=f"{MONAILABEL.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # the `monailabel` script runs `python`
        VIRTUAL_ENV=str(MONAILABEL.parent.parent),
        PYTHONPATH=str(REPO / "tests"),  # PlantedHeatmaps
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="2",
        MONAI_LABEL_SESSIONS="false",
        MONAI_LABEL_AUTO_UPDATE_SCORING="false",
    )
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/info/", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {SERVER_START_TIMEOUT_S} s:\n{_tail(log_path)}")
            time.sleep(1.0)
        yield {"url": url, "log": log_path, "port": port, "tmp": server_tmp}
    finally:
        _stop(process)


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


# --- HTTP helpers ------------------------------------------------------------------------------------------------


def _request(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 120):
    """(status, body bytes) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _infer(server, task: str, image: str, output: str = "json", params: dict | None = None):
    body, headers = _multipart({"params": json.dumps(params or {})}, {})
    return _request("POST", f"{server['url']}/infer/{task}?image={image}&output={output}", body, headers)


def _infer_json(server, task: str, image: str, params: dict | None = None) -> dict:
    status, body = _infer(server, task, image, params=params)
    assert status == 200, f"{task} on {image}: HTTP {status} {body[:500]!r}\n{_tail(server['log'])}"
    return json.loads(body)


def _put_label(server, image: str, filename: str, content: bytes) -> dict:
    body, headers = _multipart({"params": "{}"}, {"label": (filename, content)})
    status, answer = _request("PUT", f"{server['url']}/datastore/label?image={image}&tag=final", body, headers)
    assert status == 200, f"PUT label {filename}: HTTP {status} {answer[:500]!r}"
    return json.loads(answer)


def _read_label(content: bytes, suffix: str, tmp_path: Path) -> np.ndarray:
    sys.path.insert(0, str(APP))
    from lib.datastore_labels import read_label_image

    path = tmp_path / f"label{suffix}"
    path.write_bytes(content)
    return read_label_image(str(path))


def _points(named: dict) -> np.ndarray:
    from custom_transforms.conventions import LANDMARK_NAMES

    assert list(named) == list(LANDMARK_NAMES)
    return np.array([named[n] for n in LANDMARK_NAMES], dtype=np.float64)


# --- the contract ------------------------------------------------------------------------------------------------


def test_info_lists_both_infer_tasks_and_the_trainer(server):
    status, body = _request("GET", f"{server['url']}/info/")
    info = json.loads(body)
    assert status == 200
    assert {LANDMARKS_TASK, FRACTURE_TASK} <= set(info["models"])
    assert info["unavailable_models"] == {}  # every file of both tasks is there
    assert FRACTURE_TASK in info["trainers"]
    assert info["models"][LANDMARKS_TASK]["dimension"] == 2
    assert (
        info["labels"]["asis_r"] == 1
        and info["labels"]["symphysis_inferior"] == 16
        and info["labels"]["fracture"] == 17
    )
    objects = json.loads(_request("GET", f"{server['url']}/datastore/?output=all")[1])["objects"]
    assert set(server["ids"]) | {"chest", "blank", "rtplan"} == set(objects)


@pytest.mark.parametrize("index", [0, 3])
def test_landmark_infer_returns_16_named_points_inside_the_image_and_their_discs(server, tmp_path, index):
    image = server["ids"][index]
    case = server["cases"][image]
    result = _infer_json(server, LANDMARKS_TASK, image)
    points = _points(result["landmarks"])
    h, w = IMAGE_HW
    assert ((points >= -0.5) & (points <= np.array([w - 0.5, h - 0.5]))).all()
    # the oracle's heatmaps sit at the annotated landmarks: the app maps them back to original pixels (exact known
    # landmarks, which only the oracle gives: a trained detector's error would hide a geometry error of a few pixels)
    np.testing.assert_allclose(points, case["landmarks"], atol=1.0)
    assert result["image_size"] == list(IMAGE_HW) and result["spacing_mm"] == pytest.approx(case["spacing"])
    from oracle_detector import oracle_plausibility

    (path,) = server["studies"].glob(f"{image}.*")
    expected = oracle_plausibility(path, case["landmarks"], DETECTOR_INPUT)
    assert result["plausibility"] == pytest.approx(expected, abs=1e-3) and expected > 0.5  # by hand, planted
    assert result["weights"] == str(server["bundle"] / "models" / "landmark_model.pt")

    status, content = _infer(server, LANDMARKS_TASK, image, output="image")
    assert status == 200
    label = _read_label(content, ".nii.gz", tmp_path)
    assert label.shape == IMAGE_HW
    for value, (x, y) in enumerate(points, start=1):
        assert label[int(round(y)), int(round(x))] == value
    status, content = _infer(server, LANDMARKS_TASK, image, output="image", params={"result_extension": ".png"})
    assert status == 200 and content[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(_read_label(content, ".png", tmp_path), label)


def test_fracture_infer_returns_a_probability_and_the_thresholded_heatmap(server, tmp_path):
    image = server["ids"][1]
    result = _infer_json(server, FRACTURE_TASK, image)
    p, t = result["fracture_probability"], result["threshold"]
    # the planted strongest peak (PLANTED_PEAKS), moved by 1e-3 x the tiny network's logits; 0.5: the operating point
    assert p == pytest.approx(0.9, abs=0.005) and t == 0.5
    assert result["positive"] == (p >= t)
    assert result["landmark_source"] == "detector"
    assert result["weights"] == str(server["bundle"] / "models" / "model.pt")
    # the detector's landmarks reach the fracture task unchanged: checked to 1 px against the oracle's known points
    np.testing.assert_allclose(_points(result["landmarks"]), server["cases"][image]["landmarks"], atol=1.0)
    assert all(peak["probability"] >= t for peak in result["peaks"])
    assert result["max_location"]["probability"] == pytest.approx(p, abs=1e-6)
    assert result["max_location"]["x_mm"] == pytest.approx(
        result["max_location"]["x"] * server["cases"][image]["spacing"][1]
    )

    status, content = _infer(server, FRACTURE_TASK, image, output="image")
    assert status == 200
    label = _read_label(content, ".nii.gz", tmp_path)
    assert label.shape == IMAGE_HW and set(np.unique(label)) <= {0, 17}
    if (label == 17).any():  # the label is the heatmap resampled onto the radiograph: never above its maximum
        assert p >= t


def test_fracture_result_lists_the_peaks_of_the_bundles_report_json(server, tmp_path):
    """For one image, the fracture task's result and the bundle's own ``report.json`` (its inference config run on the
    same file, landmarks and weights) list the same peaks: the planted strongest and far peaks, not the one 4 ROI
    pixels (less than 10 mm) from the strongest. The annotated landmarks pass the detector's check of annotated
    images on every run because the oracle knows this image (exact known landmarks, module docstring)."""
    from monai.bundle import ConfigWorkflow

    from custom_transforms.conventions import LANDMARK_NAMES

    image = server["ids"][2]
    landmarks = server["cases"][image]["landmarks"]
    result = _infer_json(server, FRACTURE_TASK, image, params={"landmarks": landmarks.tolist()})
    assert result["landmark_source"] == "request"

    (path,) = server["studies"].glob(f"{image}.*")
    annotation = tmp_path / f"{image}.json"
    named = {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, landmarks)}
    annotation.write_text(json.dumps({"landmarks": named, "fractures": []}))
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps([{"image": str(path), "annotation": str(annotation)}]))
    bundle, out = server["bundle"], tmp_path / "bundle_output"
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / "inference.json"), str(server["conf"]["config_overrides"])],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(bundle),
        input=str(datalist),
        output_dir=str(out),
        ckpt_dir=os.path.dirname(result["weights"]),  # the weights the task served
        # the detector that checks annotated images: the server's (the landmark overrides on its config)
        landmark_config=[
            str(bundle / "configs" / "landmark_inference.json"),
            str(server["conf"]["landmark_config_overrides"]),
        ],
    )
    workflow.initialize()
    workflow.run()
    report = json.loads((out / image / "report.json").read_text())

    assert report["status"] == "ok" and report["landmark_source"] == "annotation"
    assert [p["probability"] for p in report["peaks"]] == pytest.approx([0.9, 0.7], abs=0.01)  # 0.8 is too close
    assert len(result["peaks"]) == len(report["peaks"])
    for served, written in zip(result["peaks"], report["peaks"]):
        assert served.keys() == written.keys()
        assert all(served[k] == pytest.approx(written[k], abs=1e-5) for k in written), (served, written)
    assert result["max_location"] == pytest.approx(report["max_location"], abs=1e-5)
    assert result["fracture_probability"] == pytest.approx(report["fracture_probability"], abs=1e-5)


def _save_label_image(server, image: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """An annotator's final label image for ``image``: corrected landmark discs and fracture discs."""
    sys.path.insert(0, str(APP))
    from lib.label_map import FRACTURE_VALUE, fracture_points_to_label, landmarks_to_label
    from lib.label_writer import write_label

    case = server["cases"][image]
    corrected = case["landmarks"] + np.random.default_rng(3).uniform(-2, 2, case["landmarks"].shape)
    label = landmarks_to_label(corrected, IMAGE_HW, case["spacing"])
    label[fracture_points_to_label(case["fractures"], IMAGE_HW, case["spacing"], 6.0, 4.0) > 0] = FRACTURE_VALUE
    path = write_label(label, case["spacing"], ".nii.gz")
    answer = _put_label(server, image, f"{image}.nii.gz", Path(path).read_bytes())
    os.remove(path)
    return label, corrected, answer


def test_saved_label_image_is_stored_and_gives_the_fracture_task_its_landmarks(server, tmp_path):
    image = server["ids"][0]
    label, corrected, answer = _save_label_image(server, image)
    assert answer["image"] == image
    stored = server["studies"] / "labels" / "final" / f"{image}.nii.gz"
    assert stored.is_file()
    np.testing.assert_array_equal(_read_label(stored.read_bytes(), ".nii.gz", tmp_path), label)

    result = _infer_json(server, FRACTURE_TASK, image)
    assert result["landmark_source"] == "final label"
    np.testing.assert_allclose(_points(result["landmarks"]), corrected, atol=0.5)


def test_training_one_epoch_from_the_final_labels_writes_a_checkpoint(server):
    from custom_transforms.conventions import LANDMARK_NAMES

    ids, cases = server["ids"], server["cases"]
    _save_label_image(server, ids[0])  # one label image, three annotation JSONs
    for name in ids[1:]:
        annotation = {
            "landmarks": {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, cases[name]["landmarks"])},
            "fractures": cases[name]["fractures"].tolist(),
        }
        _put_label(server, name, f"{name}.json", json.dumps(annotation).encode())
    checkpoint_dir = server["bundle"] / "models" / "monailabel"
    started = time.time()
    params = json.dumps({"max_epochs": 1, "val_split": 0.5, "device": "cpu"}).encode()
    status, body = _request(
        "POST", f"{server['url']}/train/{FRACTURE_TASK}", params, {"Content-Type": "application/json"}
    )
    assert status == 200, body
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while True:
        task = json.loads(_request("GET", f"{server['url']}/train/")[1])
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            break
        assert time.monotonic() < deadline, f"training still running after {TRAIN_TIMEOUT_S} s"
        time.sleep(2.0)
    assert task["status"] == "DONE", "\n".join(task.get("details", [])) + "\n" + _tail(server["log"])
    datalist = json.loads((server["studies"] / ".aasn_monailabel" / "datalist.json").read_text())["data"]
    expected = sorted((name, int(len(cases[name]["fractures"]) > 0)) for name in ids)
    assert sorted((d["subject"], d["label"]) for d in datalist) == expected
    assert {label for _, label in expected} == {0, 1}
    for name in ("last.pt", "model.pt"):
        path = checkpoint_dir / name
        assert path.is_file() and path.stat().st_mtime >= started, name
    weights = torch.load(checkpoint_dir / "model.pt", map_location="cpu", weights_only=True)
    served = torch.load(server["bundle"] / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert weights.keys() == served.keys()
    assert any(not torch.equal(weights[k], served[k]) for k in weights)  # trained, not copied
    # the fracture task now serves the new weights
    result = _infer_json(server, FRACTURE_TASK, ids[1])
    assert result["weights"] == str(checkpoint_dir / "model.pt")
    assert result["fracture_probability"] == pytest.approx(0.9, abs=0.005)  # the planted peak, with the new weights


def test_twenty_concurrent_infer_requests_all_succeed(server):
    jobs = [(LANDMARKS_TASK if i % 2 else FRACTURE_TASK, server["ids"][i % NUM_PXRS]) for i in range(20)]
    alone = {job: _infer_json(server, *job) for job in set(jobs)}  # each request by itself first
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda job: _infer(server, *job), jobs))
    for (task, image), (status, body) in zip(jobs, answers):
        assert status == 200, f"{task} on {image}: HTTP {status} {body[:300]!r}"
        result, expected = json.loads(body), alone[(task, image)]
        # concurrency changes nothing: the same landmarks and probability as the request alone
        np.testing.assert_allclose(_points(result["landmarks"]), _points(expected["landmarks"]), atol=1e-4)
        if task == FRACTURE_TASK:
            assert result["fracture_probability"] == pytest.approx(expected["fracture_probability"], abs=1e-6)


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(server):
    status, body = _infer(server, LANDMARKS_TASK, "no_such_image")
    assert status == 404 and "no_such_image" in json.loads(body)["detail"]

    status, body = _infer(server, "no_such_task", server["ids"][0])
    assert status == 404 and "no_such_task" in json.loads(body)["detail"]

    for task in (LANDMARKS_TASK, FRACTURE_TASK):
        # the detector finds no pelvis; a film without contrast shows none (refused every time: the oracle knows no
        # landmark of an image it was not given, so the refusal does not depend on a trained detector's weights)
        for image in ("chest", "blank"):
            status, body = _infer(server, task, image)
            assert status == 422, body
            detail = json.loads(body)["detail"]
            assert f"{image}.dcm: does not look like an AP pelvic radiograph" in detail and "NotAPelvisError" in detail

    status, body = _infer(server, LANDMARKS_TASK, "rtplan")  # DICOM without pixel data
    assert status == 422 and "no Pixel Data" in json.loads(body)["detail"]

    assert len(_infer_json(server, LANDMARKS_TASK, server["ids"][2])["landmarks"]) == 16


# --- issue 16: what the server trusts ------------------------------------------------------------------------------


def _listening_addresses(port: int) -> set[str]:
    """The local IPv4/IPv6 addresses with a socket listening on ``port`` (Linux ``/proc/net/tcp*``)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, local_port = fields[1].split(":")
            if int(local_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


def test_the_documented_start_listens_on_127_0_0_1_only(server):
    assert _listening_addresses(server["port"]) == {"0100007F"}  # 127.0.0.1, little-endian hex; no 0.0.0.0, no ::


def test_the_start_script_binds_127_0_0_1_unless_asked_otherwise(tmp_path):
    stub = tmp_path / "monailabel"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    run = ["bash", str(APP / "start_server.sh"), "--studies", "/data/pxrs"]
    env = {**os.environ, "MONAILABEL": str(stub)}
    default = subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert default[:1] == ["start_server"]
    hosts = [default[i + 1] for i, a in enumerate(default) if a == "--host"]
    assert hosts == ["127.0.0.1"]
    asked = subprocess.run(run + ["--host", "0.0.0.0"], env=env, capture_output=True, text=True, check=True)
    hosts = [a for i, a in enumerate(asked.stdout.split()) if i and asked.stdout.split()[i - 1] == "--host"]
    assert hosts[-1] == "0.0.0.0"  # the caller's, last: MONAI Label's argparse keeps the last value


def _outside_file(server) -> Path:
    """A real DICOM radiograph on the server's disk, outside its datastore (beside the studies folder)."""
    outside = server["root"] / "outside.dcm"
    if not outside.exists():
        shutil.copyfile(server["studies"] / f"{server['ids'][0]}.dcm", outside)
    return outside


def test_an_image_id_outside_the_datastore_is_404_whatever_the_path(server):
    outside = _outside_file(server)
    studies = server["studies"]
    relative_up = os.path.relpath(outside, studies)  # ../outside.dcm from the studies folder
    ids = [
        str(outside),  # absolute, a readable radiograph
        "outside.dcm",  # relative to the server's working folder, where it exists
        relative_up,
        f"{studies.name}/../outside.dcm",
        str(studies / f"{server['ids'][0]}.dcm"),  # the path of a datastore image is not its id either
        "/etc/passwd",
        "/etc/hostname",
        "../../../../../../etc/passwd",
        "/no/such/file.dcm",
    ]
    for task in (LANDMARKS_TASK, FRACTURE_TASK):
        for image in ids:
            status, body = _infer(server, task, urllib.parse.quote(image, safe=""))
            detail = json.loads(body)["detail"]
            assert status == 404, (task, image, status, detail)
            assert detail == f"Image {image!r} is not in the datastore ({studies}).", detail


def test_params_may_not_name_a_server_file_and_nothing_of_one_is_echoed(server):
    secret = server["root"] / "secret.json"
    secret.write_text("TOP-SECRET-CONTENT " * 50)
    image = server["ids"][1]
    for params in (
        {"annotation": str(secret)},
        {"annotation": "/etc/passwd"},
        {"image": str(_outside_file(server))},
        {"label": str(secret)},
        {"image_path": "/etc/passwd"},
    ):
        for task in (LANDMARKS_TASK, FRACTURE_TASK):
            status, body = _infer(server, task, image, params=params)
            detail = json.loads(body)["detail"]
            assert status == 422 and "params may not set" in detail, (params, status, detail)
            assert "TOP-SECRET" not in detail and "root:" not in detail
    # landmarks that are not numbers: the error names the field, not a file
    status, body = _infer(server, FRACTURE_TASK, image, params={"landmarks": str(secret)})
    assert status == 422 and "TOP-SECRET" not in json.loads(body)["detail"]


def test_params_that_are_not_a_json_object_answer_422_with_the_reason(server):
    for raw, expected in (
        ("{not json", "form field 'params' is not valid JSON"),
        ("[1, 2]", "form field 'params' is a JSON list; expected a JSON object"),
    ):
        body, headers = _multipart({"params": raw}, {})
        status, answer = _request(
            "POST", f"{server['url']}/infer/{LANDMARKS_TASK}?image={server['ids'][0]}", body, headers
        )
        assert status == 422 and expected in json.loads(answer)["detail"], answer
    body, headers = _multipart({"params": "{oops"}, {"label": ("x.json", b"{}")})
    status, answer = _request(
        "PUT", f"{server['url']}/datastore/label?image={server['ids'][0]}&tag=final", body, headers
    )
    assert status == 422 and "form field 'params' is not valid JSON" in json.loads(answer)["detail"]


def _files_in(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*") if p.is_file()}


def test_twenty_rejected_uploads_leave_no_file_behind(server):
    """Uploads refused for their content (422), their size (413, also chunked), their params or their label tag: the
    server's temporary folder holds none of them afterwards, and nothing was stored."""
    before_tmp, before_studies = _files_in(server["tmp"]), _files_in(server["studies"])
    not_dicom = os.urandom(200_000)
    chest = (server["studies"] / "chest.dcm").read_bytes()
    big = b"\0" * (MAX_UPLOAD_MB * 1024 * 1024 + 1)
    url, image = server["url"], server["ids"][0]
    requests = []
    for i in range(4):  # infer on an uploaded file that is no DICOM, or no pelvis
        requests.append(("POST", f"/infer/{LANDMARKS_TASK}", {"file": (f"junk{i}.dcm", not_dicom)}, 422))
        requests.append(("POST", f"/infer/{FRACTURE_TASK}", {"file": (f"chest{i}.dcm", chest)}, 422))
    for i in range(4):  # store a file that is no DICOM, under a name that leaves the folder, or too large
        requests.append(("PUT", f"/datastore/?image=junk{i}", {"file": ("junk.png", not_dicom)}, 422))
        requests.append(("PUT", "/datastore/?image=..%2F..%2Fevil", {"file": ("evil.dcm", chest)}, 422))
        requests.append(("PUT", f"/datastore/label?image={image}&tag=..%2F..%2Fx", {"label": ("x.json", b"{}")}, 422))
    for i in range(2):
        requests.append(("PUT", f"/datastore/?image=big{i}", {"file": ("big.dcm", big)}, 413))
        requests.append(("POST", f"/infer/{LANDMARKS_TASK}?image={image}", {"file": ("big.dcm", big)}, 413))
    assert len(requests) == 20 + 4
    answers = []
    for method, path, files, _ in requests:
        body, headers = _multipart({"params": "{}"}, files)
        answers.append(_request(method, url + path, body, headers))
    # a chunked body (no Content-Length) is cut off at the limit too
    body, headers = _multipart({"params": "{}"}, {"file": ("big.dcm", big)})
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    chunked = _request("PUT", f"{url}/datastore/?image=chunked", chunks, {**headers, "Transfer-Encoding": "chunked"})
    time.sleep(1.0)  # any background task of an earlier response has run

    assert _files_in(server["tmp"]) == before_tmp  # no upload of a rejected request is left
    assert _files_in(server["studies"]) == before_studies  # and none was stored
    assert not (server["root"] / "evil.dcm").exists() and not (server["studies"].parent / "x").exists()
    for (method, path, _, expected), (status, answer) in zip(requests, answers):
        assert status == expected, (method, path, status, answer[:300])
        assert json.loads(answer)["detail"]
    assert chunked[0] == 413, chunked[1][:300]


def test_put_datastore_stores_a_dicom_radiograph_as_dcm_and_labels_only_for_its_images(server):
    dicom = (server["studies"] / "blank.dcm").read_bytes()
    body, headers = _multipart({"params": "{}"}, {"file": ("new image.DCM", dicom)})
    status, answer = _request("PUT", f"{server['url']}/datastore/?image=uploaded_blank", body, headers)
    assert status == 200 and json.loads(answer)["image"] == "uploaded_blank", answer
    assert (server["studies"] / "uploaded_blank.dcm").read_bytes() == dicom
    body, headers = _multipart({"params": "{}"}, {"label": ("x.json", b"{}")})
    status, answer = _request("PUT", f"{server['url']}/datastore/label?image=no_such_image&tag=final", body, headers)
    assert status == 404 and "no_such_image" in json.loads(answer)["detail"]
    status, answer = _request(
        "PUT",
        f"{server['url']}/datastore/label?image=uploaded_blank&tag=final",
        *_multipart({"params": "{}"}, {"label": ("x.exe", b"MZ")}),
    )
    assert status == 422 and "must end in one of" in json.loads(answer)["detail"]
    status, _ = _request("DELETE", f"{server['url']}/datastore/?id=uploaded_blank")
    assert status == 200 and not (server["studies"] / "uploaded_blank.dcm").exists()


def test_annotated_requests_get_the_detectors_image_check(server):
    """Landmarks given with the request do not make a chest film a pelvis: 422 from the detector's check."""
    landmarks = server["cases"][server["ids"][0]]["landmarks"].tolist()
    status, body = _infer(server, FRACTURE_TASK, "chest", params={"landmarks": landmarks})
    detail = json.loads(body)["detail"]
    assert status == 422 and "chest.dcm: does not look like an AP pelvic radiograph" in detail, detail
    assert "has landmarks" in detail

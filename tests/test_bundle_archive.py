"""The bundle archive runs on its own: unpacked into a temporary folder outside the repository, with the project's
wheel as the only source of ``custom_transforms``, it passes ``verify_net_in_out`` for its three networks and infers
one DICOM radiograph.

How the source tree is kept out: the archive (``tools/bundle_archive.py``) and the wheel (built from a staged copy)
are unpacked under pytest's temporary folder; the runs are subprocesses with their working directory in the unpacked
bundle (which Python puts first on ``sys.path``, as ``python -m monai.bundle`` does from a bundle folder) and
``PYTHONPATH`` set to the unpacked wheel only. The shared ``.venv`` has the project installed in editable mode, whose
import hook points into the source tree; that hook comes after the ``sys.path`` entries, so the wheel's copy wins,
and each run writes every module it loaded with its file: the test asserts that ``scripts`` came from the unpacked
bundle, ``custom_transforms`` from the unpacked wheel, and that no loaded module's file lies in the repository other
than in the virtualenv's own packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(BUNDLE))  # the source tree's bundle: only the in-process reference run imports it
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle_archive import BUNDLE_NAME, build_archive, build_wheel, bundle_files  # noqa: E402
from dicom_factory import write_dx  # noqa: E402
from synthetic_pelvis import place_landmarks, radiograph_like, write_annotation  # noqa: E402

TINY_KWARGS = {
    "init_features": 8,
    "growth_rate": 4,
    "block_config": [1, 1, 1, 1],
    "bn_size": 2,
    "projection_channels": 8,
}
ROI = [64, 128]

# Runs in the unpacked bundle: ``python runner.py <audit.json> <step> [args]``; writes the modules it loaded.
_RUNNER = r"""
import json, os, runpy, sys
audit, step, args = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path[0] = os.getcwd()  # the bundle folder first, as `python -m monai.bundle` run from it has it
code = 0
try:
    if step == "block":  # the project's package not installed: imports of it fail as for a missing module
        class _Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "custom_transforms":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, _Missing())
        step = "cli"
    if step == "verify":
        import torch
        from monai.bundle import verify_net_in_out
        from scripts.fracture.networks import build_network
        meta = json.load(open("configs/metadata.json"))
        for key, where in meta["network_configs"].items():
            override = {} if key == "network_data_format" else {"_meta_#network_data_format": meta[key]}
            verify_net_in_out(net_id=where["net_id"], meta_file="configs/metadata.json",
                              config_file=where["config_file"], device="cpu", **override)
            print("VERIFIED", key)
        torch.manual_seed(0)  # the one-image inference's network: tiny, seeded, away from the zero-initialised head
        network = build_network("aasn", **json.loads(args[0]))
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        torch.save(network.state_dict(), "models/model.pt")
    elif step == "cli":
        sys.argv = ["monai.bundle", *args]
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
finally:
    files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
    json.dump({"modules": files, "prefixes": [sys.prefix, sys.base_prefix]}, open(audit, "w"))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle_archive").resolve()
    assert not root.is_relative_to(REPO)
    archive = build_archive(BUNDLE, root / "dist")
    wheel = build_wheel(root / "dist")
    with zipfile.ZipFile(archive) as z:
        z.extractall(root / "unpacked")
    site = root / "site"
    with zipfile.ZipFile(wheel) as z:  # a pure-Python wheel installs by unpacking it onto sys.path
        z.extractall(site)
    (root / "runner.py").write_text(_RUNNER)
    bundle = root / "unpacked" / BUNDLE_NAME
    return {"root": root, "archive": archive, "wheel": wheel, "site": site, "bundle": bundle}


def _run(unpacked, step: str, *args: str, name: str) -> tuple[subprocess.CompletedProcess, dict]:
    audit = unpacked["root"] / f"{name}_modules.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONPATH=str(unpacked["site"]), PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, str(unpacked["root"] / "runner.py"), str(audit), step, *args],
        cwd=unpacked["bundle"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done, json.loads(audit.read_text())


def _assert_nothing_from_the_source_tree(unpacked, audit: dict) -> None:
    modules = audit["modules"]
    assert Path(modules["scripts"]).is_relative_to(unpacked["bundle"])
    assert Path(modules["custom_transforms"]).is_relative_to(unpacked["site"])
    prefixes = [Path(p).resolve() for p in audit["prefixes"]]
    from_repo = {
        name: file for name, file in modules.items()
        if file and Path(file).is_absolute() and Path(file).resolve().is_relative_to(REPO)
        and not any(Path(file).resolve().is_relative_to(p) for p in prefixes)
    }  # fmt: skip
    assert from_repo == {}


def test_the_archive_holds_the_bundle_and_nothing_generated(unpacked, tmp_path):
    with zipfile.ZipFile(unpacked["archive"]) as z:
        names = z.namelist()
    assert all(n.startswith(f"{BUNDLE_NAME}/") for n in names)
    inside = {n[len(BUNDLE_NAME) + 1 :] for n in names}
    for required in (
        "LICENSE",
        "large_files.yml",
        "configs/metadata.json",
        "configs/inference.json",
        "configs/landmark_inference.json",
        "scripts/__init__.py",
        "scripts/fracture/networks.py",
        "docs/README.md",
        "docs/data_license.txt",
        "models/",
    ):
        assert required in inside, required
    assert not any("__pycache__" in n or n.endswith(".pyc") or "/outputs/" in n or "/data/" in n for n in names)
    assert inside - {"models/"} == set(bundle_files(unpacked["bundle"]))
    assert (unpacked["bundle"] / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()
    # the same files give the same archive (built again from the unpacked copy: the source tree may change meanwhile)
    again = build_archive(unpacked["bundle"], tmp_path)
    assert again.read_bytes() == unpacked["archive"].read_bytes()


def test_the_unpacked_bundle_verifies_its_networks_and_infers_one_radiograph(unpacked):
    done, audit = _run(unpacked, "verify", json.dumps(TINY_KWARGS), name="verify")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("VERIFIED")] == [
        "VERIFIED network_data_format", "VERIFIED landmark_network_data_format",
        "VERIFIED landmark_refine_network_data_format",
    ]  # fmt: skip
    _assert_nothing_from_the_source_tree(unpacked, audit)

    images = unpacked["root"] / "images"
    images.mkdir()
    spacing = (0.8, 0.8)
    landmarks = place_landmarks((320, 300), spacing, 2.0)
    image = images / "pelvis.dcm"
    write_dx(image, radiograph_like((320, 300), landmarks), spacing_mm=spacing)
    write_annotation(images / "pelvis.json", landmarks, image=image)
    out = unpacked["root"] / "out"
    # the schematic test radiograph is no real pelvis: the shipped detector's plausibility check refuses it, so the
    # check of annotated images is off here (tests/test_edge_checks.py tests that check)
    done, audit = _run(
        unpacked, "cli", "run", "--config_file", "configs/inference.json", "--meta_file", "configs/metadata.json",
        "--input", str(image), "--output_dir", str(out), "--roi_size", str(ROI), "--network_kwargs", str(TINY_KWARGS),
        "--check_annotated_images", "False", name="infer",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_nothing_from_the_source_tree(unpacked, audit)
    report = json.loads((out / "pelvis" / "report.json").read_text())
    assert report["status"] == "ok" and report["landmark_source"] == "annotation"
    assert 0.0 < report["fracture_probability"] < 1.0
    assert (out / "pelvis" / "heatmap.nii.gz").is_file()

    # the same image, weights and configs from the source tree give the same probability
    from monai.bundle import ConfigWorkflow

    reference = unpacked["root"] / "reference"
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"), meta_file=str(BUNDLE / "configs" / "metadata.json"),
        workflow_type="infer", input=str(image), output_dir=str(reference), roi_size=ROI, network_kwargs=TINY_KWARGS,
        ckpt_dir=str(unpacked["bundle"] / "models"), device="$torch.device('cpu')", check_annotated_images=False,
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    expected = json.loads((reference / "pelvis" / "report.json").read_text())
    assert report["fracture_probability"] == pytest.approx(expected["fracture_probability"], abs=1e-6)
    np.testing.assert_allclose(report["landmarks"]["pubic_tubercle_r"], landmarks[5], atol=1e-6)


def test_without_the_project_package_the_error_names_custom_transforms(unpacked, tmp_path):
    image = tmp_path / "any.dcm"
    image.write_bytes(b"")
    done, audit = _run(
        unpacked,
        "block",
        "run",
        "--config_file",
        "configs/inference.json",
        "--input",
        str(image),
        "--output_dir",
        str(tmp_path / "out"),
        name="blocked",
    )
    assert done.returncode != 0
    assert "custom_transforms" not in {k.split(".")[0] for k, v in audit["modules"].items() if v}
    assert "The bundle's code (scripts) needs the project's package `custom_transforms`" in done.stderr
    assert "pip install aasn_pelvic_fracture-<version>-py3-none-any.whl" in done.stderr

"""The model zoo's ``verify_bundle`` checks (``tools/verify_bundle.py``) pass on the bundle as a fresh clone has it,
and each check fails, naming the file and field, when what it checks is broken."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
sys.path.insert(0, str(REPO / "tools"))

from verify_bundle import BundleCheckError, network_checks, verify  # noqa: E402


def _fresh_clone_of_bundle(target: Path) -> Path:
    """The bundle's files a clone has: git-tracked ones, plus the working tree's untracked new ones (not ignored)."""
    done = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "bundle"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    for relative in filter(None, done.stdout.split("\0")):
        if (REPO / relative).is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, target / relative)
    return target / "bundle"


@pytest.fixture
def clone(tmp_path):
    return _fresh_clone_of_bundle(tmp_path)


def _edit_metadata(bundle: Path, **changes) -> None:
    path = bundle / "configs" / "metadata.json"
    metadata = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    path.write_text(json.dumps(metadata))


def test_every_check_passes_on_a_fresh_clone(clone):
    assert not (clone / "models" / "model.pt").exists()  # no weights are shipped
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "verify_bundle.py"), "--bundle", str(clone), "--allow-missing-weights"],
        cwd=clone.parent, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in (
        "directory is verified correctly. (no weights shipped: models/model.pt excused)",
        "properties are verified correctly.",
        "data shape is verified correctly: configs/inference.json#network_def (network_data_format).",
        "data shape is verified correctly: configs/landmark_inference.json#network_def (landmark_network_data_format).",
        "data shape is verified correctly: configs/landmark_inference.json#refine_network_def "
        "(landmark_refine_network_data_format).",
        "export weights into TorchScript module successfully (fake weights (the network's initial state)).",
    ):
        assert line in done.stdout, line


def test_the_networks_checked_are_the_fracture_network_and_both_landmark_networks():
    assert network_checks(BUNDLE) == [
        ("network_data_format", "configs/inference.json", "network_def"),
        ("landmark_network_data_format", "configs/landmark_inference.json", "network_def"),
        ("landmark_refine_network_data_format", "configs/landmark_inference.json", "refine_network_def"),
    ]


def _min(bundle: Path, **kwargs) -> None:
    verify(bundle, mode="min", log=lambda _: None, **kwargs)


def test_a_bundle_without_licence_fails(clone):
    _min(clone, allow_missing_weights=True)
    (clone / "LICENSE").unlink()
    with pytest.raises(BundleCheckError, match=r"necessary file LICENSE is not existing"):
        _min(clone, allow_missing_weights=True)


def test_missing_weights_fail_unless_excused_and_present_weights_pass(clone):
    with pytest.raises(BundleCheckError, match=r"necessary file models/model\.pt is not existing"):
        _min(clone)
    (clone / "models" / "model.pt").write_bytes(b"weights")
    _min(clone)


def test_a_version_missing_from_the_changelog_fails(clone):
    _edit_metadata(clone, version="9.9.9")
    with pytest.raises(BundleCheckError, match=r"version number 9\.9\.9 is missing in 'changelog'"):
        _min(clone, allow_missing_weights=True)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": None}, r"missing mandatory keys \['task'\]"),
        ({"eval_metrics": {"auc": "see docs"}}, r"eval_metrics: expected numbers by name"),
        (
            {"landmark_network_data_format": {"inputs": {"image": {"type": "image"}}, "outputs": {"pred": {}}}},
            r"landmark_network_data_format\.inputs\.image: missing keys \['format', 'num_channels'",
        ),
    ],
)
def test_metadata_without_what_the_specification_requires_fails(clone, changes, message):
    _edit_metadata(clone, **changes)
    with pytest.raises(BundleCheckError, match=message):
        _min(clone, allow_missing_weights=True)


def test_a_large_file_with_a_wrong_hash_fails(clone):
    (clone / "models" / "model.pt").write_bytes(b"weights")
    (clone / "large_files.yml").write_text(
        "large_files:\n  - path: models/model.pt\n    url: https://weights.invalid/model.pt\n"
        f"    hash_val: {'0' * 64}\n    hash_type: sha256\n"
    )
    with pytest.raises(BundleCheckError, match=r"download_large_files: .*large_files\.yml: HashCheckError"):
        _min(clone)

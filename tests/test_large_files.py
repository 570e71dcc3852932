"""``large_files.yml`` works with MONAI's ``download_large_files``: it lists exactly the weight files committed under
``bundle/models`` with their sha256 (the landmark detector's three files), the command exits 0 on what a fresh clone
holds, accepts a planted file with its sha256 and refuses one whose hash differs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
sys.path.insert(0, str(REPO / "tools"))

from large_files import large_file_entry, sha256_of, write_large_files  # noqa: E402


def _download_large_files(bundle: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)],
        cwd=bundle.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _tracked(paths: str) -> list[str]:
    done = subprocess.run(["git", "ls-files", "-z", paths], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    return [p for p in done.stdout.split("\0") if p]


def test_entries_are_the_committed_weight_files_with_their_sha256():
    config = yaml.safe_load((BUNDLE / "large_files.yml").read_text())
    entries = config["large_files"]
    shipped = sorted(p[len("bundle/") :] for p in _tracked("bundle/models") if not p.endswith(".gitkeep"))
    assert sorted(e["path"] for e in entries) == shipped
    for entry in entries:
        assert entry["hash_type"] == "sha256" and entry["url"], entry
        assert entry["hash_val"] == sha256_of(BUNDLE / entry["path"]), entry["path"]


def test_download_large_files_exits_0_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    for relative in _tracked("bundle"):  # what a fresh clone has of the bundle, shipped weights included
        target = clone / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    assert (clone / "bundle" / "large_files.yml").is_file()
    done = _download_large_files(clone / "bundle")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_sha256_is_the_standard_digest(tmp_path):
    planted = tmp_path / "abc.bin"
    planted.write_bytes(b"abc")  # the FIPS 180-2 example
    assert sha256_of(planted) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_of(planted) == hashlib.sha256(b"abc").hexdigest()


def test_a_planted_file_with_its_sha256_passes_and_a_wrong_hash_fails(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "model.pt").write_bytes(os.urandom(4096))
    # the url is never fetched while the file is there; a download would fail (no such host)
    entry = large_file_entry(bundle, "models/model.pt", "https://weights.invalid/aasn/models/model.pt")
    write_large_files(bundle, [entry])
    assert yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"] == [entry]
    done = _download_large_files(bundle)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    wrong = dict(entry, hash_val=hashlib.sha256(b"other weights").hexdigest())
    write_large_files(bundle, [wrong])
    done = _download_large_files(bundle)
    assert done.returncode != 0
    assert "hash check of existing file failed" in done.stdout + done.stderr


def test_an_entry_needs_a_shipped_file_and_a_url(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(FileNotFoundError, match=r"models/model\.ts: no such file in the bundle"):
        large_file_entry(tmp_path, "models/model.ts", "https://weights.invalid/model.ts")
    (tmp_path / "models" / "model.ts").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"models/model\.ts: an empty url"):
        large_file_entry(tmp_path, "models/model.ts", "")

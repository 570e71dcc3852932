"""A training does not silently replace the weights the bundle ships (``scripts.run_guard.protect_shipped_weights``):
with ``ckpt_dir`` the bundle's own ``models/`` folder, a file it would write that is there as ``large_files.yml``
lists it (same sha256) stops the run, unless ``--replace_shipped true``."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

from scripts.run_guard import StopRun, protect_shipped_weights  # noqa: E402


def _planted_bundle(root: Path, content: bytes = b"shipped weights") -> Path:
    """``root/bundle`` with ``models/model.pt`` listed in ``large_files.yml`` with its sha256."""
    bundle = root / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "model.pt").write_bytes(content)
    entry = {
        "path": "models/model.pt",
        "url": "x",
        "hash_val": hashlib.sha256(content).hexdigest(),
        "hash_type": "sha256",
    }
    (bundle / "large_files.yml").write_text(yaml.safe_dump({"large_files": [entry]}))
    return bundle


def test_a_shipped_file_stops_the_training_unless_replacing_is_asked(tmp_path):
    bundle = _planted_bundle(tmp_path)
    shipped = str((bundle / "models" / "model.pt").resolve())
    with pytest.raises(StopRun, match="--replace_shipped true") as stop:
        protect_shipped_weights(bundle / "models", ["model.pt", "last.pt"])
    assert shipped in str(stop.value) and "large_files.yml" in str(stop.value)
    assert protect_shipped_weights(bundle / "models", ["model.pt"], replace_shipped=True) == [shipped]


def test_other_files_folders_and_replaced_weights_train_as_usual(tmp_path):
    bundle = _planted_bundle(tmp_path)
    assert protect_shipped_weights(bundle / "models", ["last.pt"]) == []  # not a shipped name
    assert protect_shipped_weights(tmp_path / "elsewhere" / "models", ["model.pt"]) == []  # no large_files.yml
    (bundle / "models" / "model.pt").write_bytes(b"the user's own training")  # another hash: not the shipped file
    assert protect_shipped_weights(bundle / "models", ["model.pt"]) == []


def _parser(config: str, datalist: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / config))
    parser.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(BUNDLE), "datalist": str(datalist), "show_progress": False})
    return parser


def _datalist(tmp_path: Path) -> Path:
    items = [
        {"image": f"i{k}.dcm", "annotation": f"i{k}.json", "label": k % 2, "subject": f"s{k}", "fold": k % 5}
        for k in range(10)
    ]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"data": items}))
    return path


def test_the_landmark_training_refuses_to_replace_the_shipped_detector(tmp_path):
    before = {p.name: p.read_bytes() for p in (BUNDLE / "models").iterdir() if p.is_file()}
    entries = yaml.safe_load((BUNDLE / "large_files.yml").read_text())["large_files"] or []
    if "models/landmark_model.pt" not in {entry["path"] for entry in entries}:
        pytest.skip("the bundle ships no landmark detector")
    with pytest.raises(StopRun, match="landmark_model.pt"):
        _parser("landmark_train.json", _datalist(tmp_path)).get_parsed_content("prepare")
    assert {p.name: p.read_bytes() for p in (BUNDLE / "models").iterdir() if p.is_file()} == before


def test_the_fracture_training_checks_before_it_trains(tmp_path, monkeypatch):
    import scripts.run_guard as run_guard

    seen = []

    def refuse(ckpt_dir, names, replace_shipped=False):
        seen.append((Path(ckpt_dir), list(names), replace_shipped))
        raise StopRun("refused")

    monkeypatch.setattr(run_guard, "protect_shipped_weights", refuse)
    with pytest.raises(StopRun, match="refused"):
        _parser("train.json", _datalist(tmp_path)).get_parsed_content("run")
    assert seen == [(BUNDLE / "models", ["model.pt", "last.pt"], False)]

"""One version, one source: the bundle's ``configs/metadata.json`` ``version``. Everything else reads it or, where a
file must be static (the Deploy packager's ``app.yaml``), repeats it under this test."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
from pathlib import Path

import pytest
import tomllib
import yaml

from custom_transforms.version import DISTRIBUTION, read_version

REPO = Path(__file__).resolve().parents[1]
METADATA = REPO / "bundle" / "configs" / "metadata.json"


def _metadata_version() -> str:
    return json.loads(METADATA.read_text())["version"]


def test_the_version_is_read_from_the_bundle_metadata(tmp_path):
    assert read_version() == _metadata_version()
    planted = tmp_path / "metadata.json"
    planted.write_text(json.dumps({"version": "9.8.7"}))
    assert read_version(planted) == "9.8.7"
    planted.write_text(json.dumps({"name": "no version"}))
    with pytest.raises(ValueError, match=r"metadata.json: expected a 'version' string"):
        read_version(planted)


def test_without_the_repository_the_installed_distribution_answers(tmp_path):
    assert read_version(tmp_path / "missing.json") == importlib.metadata.version(DISTRIBUTION)


def test_the_version_is_semantic_and_has_a_changelog_entry():
    metadata = json.loads(METADATA.read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"])
    assert metadata["version"] in metadata["changelog"]


def test_pyproject_reads_it_and_the_installed_package_has_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "custom_transforms.version.__version__"}
    # what `pip install -e .` recorded (Makefile: reinstalled whenever pyproject.toml changes)
    assert importlib.metadata.version(DISTRIBUTION) == _metadata_version()


def test_the_deploy_app_reads_it_and_app_yaml_repeats_it():
    app = ast.parse((REPO / "deploy" / "app.py").read_text())
    (cls,) = [n for n in app.body if isinstance(n, ast.ClassDef) and n.name == "AASNFractureApp"]
    (version,) = [n for n in cls.body if isinstance(n, ast.Assign) and n.targets[0].id == "version"]
    assert ast.unparse(version.value) == "_project_version()"  # no literal version in the app
    (reader,) = [n for n in app.body if isinstance(n, ast.FunctionDef) and n.name == "_project_version"]
    assert "read_version(repository_metadata)" in ast.unparse(reader)
    config = yaml.safe_load((REPO / "deploy" / "app.yaml").read_text())
    assert str(config["application"]["version"]) == _metadata_version()


def test_no_other_file_states_a_version_of_its_own():
    literal = re.compile(r"""(?:version\s*[=:]\s*|algorithm_version\s*:\s*str\s*=\s*)["']?\d+\.\d+\.\d+""")
    for path in [
        REPO / "pyproject.toml",
        REPO / "deploy" / "app.py",
        *(REPO / "deploy" / "operators").glob("*.py"),
        *(REPO / "monailabel_app").rglob("*.py"),
    ]:
        assert not literal.search(path.read_text()), path

"""pyproject.toml declares what the project needs, requirements.txt locks it, metadata.json states the same versions,
and the wheel carries the packages, their data and the licences.

The agreement checks are functions of the three files' contents, so that each is also run on planted disagreements.
The fresh-virtualenv install (``pip install .`` then ``import custom_transforms, simulation, monai``) downloads the
whole stack; it runs when ``AASN_FRESH_VENV_TEST=1``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from bundle_archive import build_wheel, stage_sources  # noqa: E402

#: extras whose packages the lock pins (the shared .venv); the deploy extra has its own virtualenv and requirements
LOCKED_EXTRAS = ("test", "lint")
#: metadata.json's own keys for three of the packages (the rest are in required_packages_version)
METADATA_VERSION_KEYS = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}
#: the project's own distribution: required_packages_version names it with the bundle's version
PROJECT = "aasn-pelvic-fracture"


def parse_lock(text: str) -> dict[str, str]:
    """``name -> version`` of a lock file; every requirement must be a plain ``name==version`` line."""
    pins = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or requirement.marker or requirement.extras:
            raise ValueError(f"requirements.txt line {number}: {line!r}: expected an exact pin 'name==version'.")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"requirements.txt line {number}: {requirement.name} is pinned twice.")
        pins[name] = specifiers[0].version
    return pins


def declared(pyproject: dict, extras=LOCKED_EXTRAS) -> dict[str, Requirement]:
    """``name -> requirement`` of pyproject's dependencies and the given extras."""
    project = pyproject["project"]
    lines = list(project.get("dependencies", []))
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in lines}


def lock_problems(pyproject: dict, lock_text: str) -> list[str]:
    """Where requirements.txt and pyproject.toml disagree (empty when they agree)."""
    pins = parse_lock(lock_text)
    wanted = declared(pyproject)
    problems = [
        f"requirements.txt: {name} is not declared in pyproject.toml" for name in sorted(set(pins) - set(wanted))
    ]
    problems += [
        f"requirements.txt: no pin for {name} (pyproject.toml: {wanted[name]})"
        for name in sorted(set(wanted) - set(pins))
    ]
    for name in sorted(set(pins) & set(wanted)):
        if not wanted[name].specifier.contains(pins[name], prereleases=True):
            problems.append(f"requirements.txt: {name}=={pins[name]} is outside pyproject.toml's {wanted[name]}")
    return problems


def metadata_problems(pyproject: dict, lock_text: str, metadata: dict) -> list[str]:
    """Where metadata.json's versions disagree with the lock (the runtime dependencies and the project itself)."""
    pins = parse_lock(lock_text)
    runtime = declared(pyproject, extras=())
    problems = []
    for name, key in METADATA_VERSION_KEYS.items():
        if metadata.get(key) != pins.get(name):
            problems.append(f"metadata.json: {key} is {metadata.get(key)!r}, requirements.txt pins {pins.get(name)!r}")
    stated = {canonicalize_name(k): v for k, v in metadata.get("required_packages_version", {}).items()}
    expected = {name: pins.get(name) for name in runtime if name not in METADATA_VERSION_KEYS}
    expected[PROJECT] = metadata.get("version")
    for name in sorted(set(expected) | set(stated)):
        if stated.get(name) != expected.get(name):
            problems.append(
                f"metadata.json: required_packages_version[{name!r}] is {stated.get(name)!r}, "
                f"expected {expected.get(name)!r}"
            )
    return problems


def _files():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    lock = (REPO / "requirements.txt").read_text()
    metadata = json.loads((REPO / "bundle" / "configs" / "metadata.json").read_text())
    return pyproject, lock, metadata


def test_requirements_lock_pins_exactly_what_pyproject_declares():
    pyproject, lock, _ = _files()
    assert lock_problems(pyproject, lock) == []
    assert "torch" in declared(pyproject, extras=()) and "monai" in declared(pyproject, extras=())


def test_metadata_states_the_locked_versions_and_the_project_itself():
    pyproject, lock, metadata = _files()
    assert metadata_problems(pyproject, lock, metadata) == []
    assert metadata["required_packages_version"][PROJECT] == metadata["version"]
    for name in ("pylibjpeg-libjpeg", "fire", "pyyaml"):
        assert name in metadata["required_packages_version"]


def test_disagreements_are_found():
    pyproject, lock, metadata = _files()
    assert lock_problems(pyproject, lock.replace("monai==1.6.1", "monai==1.5.0")) == [
        "requirements.txt: monai==1.5.0 is outside pyproject.toml's monai<1.7,>=1.6.1"
    ]
    assert lock_problems(pyproject, lock.replace("fire==", "# fire==")) == [
        "requirements.txt: no pin for fire (pyproject.toml: fire>=0.5)"
    ]
    assert lock_problems(pyproject, lock + "requests==2.32.3\n") == [
        "requirements.txt: requests is not declared in pyproject.toml"
    ]
    with pytest.raises(ValueError, match=r"line \d+: 'scipy>=1\.11': expected an exact pin"):
        parse_lock(lock.replace("scipy==1.17.1", "scipy>=1.11"))
    stale = dict(
        metadata,
        required_packages_version={
            k: v for k, v in metadata["required_packages_version"].items() if k != "pylibjpeg-libjpeg"
        },
    )
    assert metadata_problems(pyproject, lock, stale) == [
        "metadata.json: required_packages_version['pylibjpeg-libjpeg'] is None, expected '2.5.0'"
    ]
    assert metadata_problems(pyproject, lock, dict(metadata, pytorch_version="2.12.0")) == [
        "metadata.json: pytorch_version is '2.12.0', requirements.txt pins '2.13.0'"
    ]


def test_deploy_requirements_stay_within_the_lock_and_the_deploy_extra():
    pyproject, lock, metadata = _files()
    pins = parse_lock(lock)
    deploy = {}
    for raw in (REPO / "deploy" / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            deploy[canonicalize_name(requirement.name)] = requirement
    for name, requirement in deploy.items():
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (name, str(requirement))
    for name, requirement in declared(pyproject, extras=("deploy",)).items():
        if name not in declared(pyproject, extras=()):
            assert name in deploy and deploy[name].specifier == requirement.specifier, name
    # the apps the bundle names are the versions their environments install
    assert metadata["supported_apps"]["monai-deploy-app-sdk"] == str(deploy["monai-deploy-app-sdk"].specifier)[2:]
    no_deps = (REPO / "monailabel_app" / "requirements-no-deps.txt").read_text()
    assert f"monailabel=={metadata['supported_apps']['monailabel']}" in no_deps.splitlines()


def test_the_wheel_carries_the_packages_their_data_licences_and_dependencies(tmp_path):
    pyproject, _, _ = _files()
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = z.read(info).decode()
    for required in (
        "custom_transforms/__init__.py",
        "custom_transforms/version.py",
        "simulation/__init__.py",
        "simulation/atlas_landmarks.json",
        "simulation/atlas_subset/pelvis_atlas_subset.npz",
        "simulation/atlas_subset/LICENSE.txt",
        "simulation/atlas_subset/README.md",
    ):
        assert required in names, required
    assert not any(n.startswith(("scripts/", "bundle/", "tests/")) for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0 AND CC-BY-4.0" in meta.splitlines()
    requires = {
        canonicalize_name(Requirement(line.split(": ", 1)[1]).name)
        for line in meta.splitlines()
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    }
    assert requires == set(declared(pyproject, extras=()))


@pytest.mark.skipif(
    os.environ.get("AASN_FRESH_VENV_TEST") != "1",
    reason="downloads the whole stack into a new virtualenv: set AASN_FRESH_VENV_TEST=1",
)
def test_pip_install_into_a_fresh_venv_then_import(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet"]
    torch_pin = parse_lock((REPO / "requirements.txt").read_text())["torch"]
    subprocess.run([*pip, f"torch=={torch_pin}"], check=True, timeout=1800)  # the CPU wheel first
    # `pip install .` of the project's files, staged so that the in-tree build leaves no build/ in the repository
    subprocess.run([*pip, str(stage_sources(tmp_path / "project"))], check=True, timeout=3600)
    done = subprocess.run(
        [python, "-c", "import custom_transforms, simulation, monai, torch, sys; "
         "print(custom_transforms.__file__, simulation.__file__, monai.__version__, torch.__version__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ct_file, sim_file, monai_version, torch_version = done.stdout.split()
    assert Path(ct_file).is_relative_to(venv) and Path(sim_file).is_relative_to(venv)
    assert re.fullmatch(r"1\.6\.\d+", monai_version) and "+cu" not in torch_version

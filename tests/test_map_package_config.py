"""deploy/app.yaml as the MAP packager reads it: the packager's own configuration reader and manifest writers
(holoscan-cli 3.x, in ``.venv-package``: ``bash deploy/setup_packager.sh``) run on it through
``tools/check_package_config.py``. Building the container needs docker and is not tested."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGER_PYTHON = REPO / ".venv-package" / "bin" / "python"


@pytest.fixture(scope="module")
def packager():
    if not PACKAGER_PYTHON.is_file():
        message = f"{PACKAGER_PYTHON} missing: bash deploy/setup_packager.sh (holoscan-cli 3.x, the MAP packager)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    def check(config: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(PACKAGER_PYTHON), str(REPO / "tools" / "check_package_config.py"), "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return check


def test_the_packager_reads_app_yaml_into_its_manifests(packager):
    done = packager(REPO / "deploy" / "app.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    version = json.loads((REPO / "bundle" / "configs" / "metadata.json").read_text())["version"]
    assert result["application_type"] == "PythonModule"  # deploy/__main__.py
    assert result["title"].startswith("AASN pelvic fracture detection")
    app, pkg = result["app"], result["pkg"]
    assert app["input"]["formats"] == ["file"] and app["output"]["formats"] == ["file"]
    assert app["version"] == pkg["version"] == version
    assert pkg["resources"] == {"cpu": 2, "gpu": 0, "memory": "4Gi"}
    assert {"configs", "scripts", "models"} <= set(pkg["models"])  # the bundle's folders become the package's models


def test_app_yaml_states_the_formats_in_the_sdk_examples_spelling_too():
    application = yaml.safe_load((REPO / "deploy" / "app.yaml").read_text())["application"]
    assert application["inputFormats"] == application["input-formats"] == ["file"]
    assert application["outputFormats"] == application["output-formats"] == ["file"]


def test_the_packager_ignores_the_camel_case_spelling_alone(packager, tmp_path):
    config = yaml.safe_load((REPO / "deploy" / "app.yaml").read_text())
    for key in ("input-formats", "output-formats"):
        del config["application"][key]
    planted = tmp_path / "app.yaml"
    planted.write_text(yaml.safe_dump(config))
    done = packager(planted)
    assert done.returncode == 0, done.stderr[-3000:]
    app = json.loads(done.stdout)["app"]
    assert app["input"]["formats"] is None and app["output"]["formats"] is None


def test_the_packager_refuses_a_configuration_without_title(packager, tmp_path):
    config = yaml.safe_load((REPO / "deploy" / "app.yaml").read_text())
    del config["application"]["title"]
    planted = tmp_path / "app.yaml"
    planted.write_text(yaml.safe_dump(config))
    done = packager(planted)
    assert done.returncode == 1
    assert "('application>title') cannot be found or is empty" in done.stderr

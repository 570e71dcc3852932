"""The MAP packager's static checks on ``deploy/app.yaml``, without docker: run with the packager's own environment,

    bash deploy/setup_packager.sh && .venv-package/bin/python tools/check_package_config.py [--config deploy/app.yaml]

It does what ``holoscan package deploy --config deploy/app.yaml --models bundle ...`` (holoscan-cli 3.x) does before
it builds the container: detect the application's type from ``deploy/`` (a Python module: ``__main__.py``), read and
validate the configuration (``ApplicationConfiguration``: ``application``, ``resources``, a non-empty
``application.title``), scan the models folder, and write the application and package manifests (``app.json``,
``pkg.json``). It prints both manifests as one JSON object; the packager's own error and exit code 1 when it refuses
the configuration. The platform step (base images, SDK wheels, docker) needs the Holoscan SDK and docker and is not
run. tests/test_map_package_config.py runs this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from holoscan_cli.common.constants import DefaultValues
from holoscan_cli.common.exceptions import HoloscanSdkError
from holoscan_cli.packager.config_reader import ApplicationConfiguration
from holoscan_cli.packager.models import Models
from holoscan_cli.packager.parameters import PackageBuildParameters

REPO = Path(__file__).resolve().parents[1]


def manifests(config: Path, application: Path, models: Path) -> dict:
    parameters = PackageBuildParameters()
    parameters.application = application
    parameters.app_config_file_path = config
    parameters.timeout = DefaultValues.TIMEOUT
    parameters.models = Models().build(models)
    reader = ApplicationConfiguration()
    reader.read(config)
    return {
        "application_type": parameters.application_type.name,
        "title": reader.title(),
        "app": reader.populate_app_manifest(parameters).data,
        "pkg": reader.populate_package_manifest(parameters).data,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The MAP packager's checks of deploy/app.yaml, without docker.")
    parser.add_argument("--config", type=Path, default=REPO / "deploy" / "app.yaml")
    parser.add_argument("--application", type=Path, default=REPO / "deploy")
    parser.add_argument("--models", type=Path, default=REPO / "bundle")
    args = parser.parse_args(argv)
    try:
        result = manifests(args.config, args.application, args.models)
    except (HoloscanSdkError, FileNotFoundError) as e:
        print(f"packager refused {args.config}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

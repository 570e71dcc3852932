"""The project's version, from its one source: the bundle's ``configs/metadata.json`` ``version``.

``pyproject.toml`` reads it through this module at build time (setuptools ``dynamic`` version, ``attr``: the file is
executed on its own, without the package's other modules), the MONAI Deploy app reads it here, and
``deploy/app.yaml``, which the packager needs static, repeats it under a test. This module imports only the standard
library for that reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["METADATA_FILE", "DISTRIBUTION", "read_version"]

#: The bundle's metadata, beside this package in the repository.
METADATA_FILE = Path(__file__).resolve().parents[1] / "bundle" / "configs" / "metadata.json"
#: The installed distribution, whose metadata carries the same version when the repository is not at hand.
DISTRIBUTION = "aasn-pelvic-fracture"


def read_version(metadata_file: str | os.PathLike = METADATA_FILE) -> str:
    """The ``version`` of a bundle's ``metadata.json``; when that file is absent (an installed copy of the package
    without the repository), the installed distribution's version, which was read from it at build time.

    Args:
        metadata_file: the bundle's ``configs/metadata.json``.

    Raises:
        ValueError: the metadata has no ``version`` string.
        FileNotFoundError: neither the metadata file nor the installed distribution is there.
    """
    path = Path(metadata_file)
    if path.is_file():
        version = json.loads(path.read_text()).get("version")
        if not isinstance(version, str) or not version:
            raise ValueError(f"{path}: expected a 'version' string (e.g. \"0.3.0\"), got {version!r}.")
        return version
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        raise FileNotFoundError(
            f"{path}: no bundle metadata to read the version from, and the {DISTRIBUTION} distribution is not "
            "installed."
        ) from None


def __getattr__(name: str) -> str:
    # ``__version__`` is read when asked for (setuptools asks at build time), so that importing this module never
    # fails where neither the repository nor the installed distribution is at hand (a Deploy package)
    if name == "__version__":
        return read_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

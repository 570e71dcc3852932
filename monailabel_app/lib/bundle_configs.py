"""The bundle's own configuration files, as every task of the app reads them.

Each task parses ``<bundle>/configs/<name>`` followed by the app's override files (``--conf config_overrides``,
merged in order, like ``python -m monai.bundle run --config_file "[a, b]"``), with ``bundle_root`` set to the
bundle. Nothing of the bundle's preprocessing, network or post-processing is restated in the app.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from monai.bundle import ConfigParser

#: Where the app's trainer writes its checkpoints, inside the bundle's ``models`` folder; the infer tasks serve
#: ``model.pt`` from there once it exists (newer than the bundle's own ``models/model.pt``).
MONAILABEL_MODELS = "monailabel"
#: The landmark detector's config, which ``inference.json`` names as its ``landmark_config``.
LANDMARK_CONFIG = "landmark_inference.json"


class BundleConfigs:
    """Reads the bundle's configs with the app's overrides.

    Args:
        bundle_dir: the bundle (with ``configs/metadata.json``).
        override_files: JSON/YAML files merged over every config read (later ones win).
        landmark_override_files: files merged over the landmark detector's configs only, after ``override_files``.
    """

    def __init__(
        self, bundle_dir: str, override_files: Sequence[str] = (), landmark_override_files: Sequence[str] = ()
    ) -> None:
        self.bundle_dir = os.path.realpath(bundle_dir)
        metadata = os.path.join(self.bundle_dir, "configs", "metadata.json")
        if not os.path.isfile(metadata):
            raise FileNotFoundError(
                f"bundle {self.bundle_dir}: no configs/metadata.json; set --conf bundle to the AASN bundle folder."
            )
        self.metadata_file = metadata
        with open(metadata) as f:
            self.metadata: dict[str, Any] = json.load(f)
        self.version = str(self.metadata.get("version", ""))
        self.override_files = [self._checked(p, "config_overrides") for p in override_files]
        self.landmark_override_files = [self._checked(p, "landmark_config_overrides") for p in landmark_override_files]
        # the configs import the bundle's code as `scripts.*`
        if self.bundle_dir not in sys.path:
            sys.path.insert(0, self.bundle_dir)

    @staticmethod
    def _checked(path: str, what: str) -> str:
        path = os.path.realpath(path.strip())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--conf {what}: {path} does not exist.")
        return path

    @property
    def models_dir(self) -> str:
        return os.path.join(self.bundle_dir, "models")

    @property
    def monailabel_models_dir(self) -> str:
        return os.path.join(self.models_dir, MONAILABEL_MODELS)

    def config_path(self, name: str) -> str:
        path = os.path.join(self.bundle_dir, "configs", name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"bundle {self.bundle_dir}: configs/{name} does not exist.")
        return path

    def files(self, name: str, landmark: bool = False) -> list[str]:
        """The config file followed by the override files that apply to it."""
        extra = self.landmark_override_files if landmark else []
        return [self.config_path(name), *self.override_files, *extra]

    def parser(self, name: str, landmark: bool = False, **overrides: Any) -> ConfigParser:
        """A parsed-on-demand :class:`ConfigParser` of ``configs/<name>`` with the overrides and ``bundle_root``.

        Args:
            name: the config file name, e.g. ``inference.json``.
            landmark: also apply the landmark override files.
            overrides: id -> value, applied last (``#``-separated ids).
        """
        parser = ConfigParser()
        parser.read_meta(self.metadata_file)
        parser.read_config(self.files(name, landmark))
        parser["bundle_root"] = self.bundle_dir
        if not landmark and "landmark_config" in parser:
            # the detector inside this config (inference.json's: it checks annotated images and finds missing
            # landmarks) is the one the landmark task serves, with the landmark override files
            parser["landmark_config"] = self.files(LANDMARK_CONFIG, landmark=True)
        for key, value in overrides.items():
            parser[key] = value
        return parser

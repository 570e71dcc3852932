"""Landmark infer task: the bundle's landmark detector (``landmark_inference.json``) as a label image and JSON.

The config's ``preprocessing`` is split into MONAI Label's stages as it stands: its transforms before the
``DetectLandmarksd`` (image loading) are the pre-transforms, the ``DetectLandmarksd`` (heatmap network, sub-pixel
decoding, shape prior, plausibility check) is the inferer. The result is

* a label image of the radiograph's size with a small disc per landmark, value = 1 + the landmark's index in
  ``LANDMARK_NAMES`` (see :mod:`lib.label_map`), for the annotator to see and correct;
* JSON: ``landmarks`` {name: [x, y]} in original pixels (column, row), ``confidence`` {name: value},
  ``plausibility``, ``corrected_by_shape_model`` (names), ``spacing_mm`` and the detector's full report.

An image that does not look like an AP pelvic radiograph makes the detector raise ``NotAPelvisError``, which the
app returns as HTTP 422 with the detector's message.

The detector's files are the config's: ``network_path``, ``shape_model_path`` and, with ``use_refiner``,
``refine_network_path``, all in ``ckpt_dir`` = the bundle's ``models/`` folder, where the bundle ships its trained
detector. So a first start of the app on the bundle serves the shipped detector, with no training and nothing to
configure; the fracture weights (``models/model.pt``) are not needed by this task.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from custom_transforms.conventions import LANDMARK_NAMES
from lib.bundle_configs import LANDMARK_CONFIG, BundleConfigs
from lib.infers.bundle_infer import (
    BundleConfigInfer,
    KeepRequestKeys,
    as_numpy,
    listed_files,
    spacing_of,
    to_builtin,
)
from lib.label_map import LANDMARK_RADIUS_MM, LANDMARK_RADIUS_PX, LANDMARK_VALUES, landmarks_to_label


def detector_files(configs: BundleConfigs, config_name: str = LANDMARK_CONFIG) -> list[str]:
    """Every file the bundle's landmark detector loads, as its config (with the app's landmark overrides) names them:
    heatmap network, shape model and, when the config uses it, the refinement network."""
    parser = configs.parser(config_name, landmark=True)
    files = [parser.get_parsed_content("network_path"), parser.get_parsed_content("shape_model_path")]
    if "use_refiner" in parser and parser.get_parsed_content("use_refiner"):
        files.append(parser.get_parsed_content("refine_network_path"))
    return [str(f) for f in files]


def detector_missing_reason(missing: list[str]) -> str:
    """The one-line reason for missing detector files (the landmark task's and the fracture task's)."""
    return (
        f"the landmark detector's {listed_files(missing)} missing (the models/ folder holds the detector the bundle "
        "ships, listed in large_files.yml, or one trained with configs/landmark_train.json)"
    )


class LandmarkInfer(BundleConfigInfer):
    """The 16 landmarks as discs in a label image, with the points in the JSON.

    Args:
        configs: the bundle's configs (``landmark_inference.json`` is read).
        radius_mm: landmark disc radius in the label image.
        config_name: the bundle's landmark inference config.
    """

    def __init__(
        self,
        configs: BundleConfigs,
        radius_mm: float = LANDMARK_RADIUS_MM,
        config_name: str = "landmark_inference.json",
    ):
        # every file the detector loads: heatmap network, shape model and, when used, the refinement network
        self.required_files = detector_files(configs, config_name)
        self.network_path = self.required_files[0]
        super().__init__(
            configs,
            config_name,
            model_paths=[self.network_path],
            labels=dict(LANDMARK_VALUES),
            description="The 16 pelvic landmarks (AASN bundle detector) as discs, one label value per landmark",
            landmark=True,
        )
        self.radius_mm = float(radius_mm)

    def missing_files(self) -> list[str]:
        return [path for path in self.required_files if not os.path.isfile(path)]

    def unavailable_reason(self) -> str | None:
        missing = self.missing_files()
        return detector_missing_reason(missing) if missing else None

    def build(self, parser: ConfigParser, weights: str, device: torch.device) -> dict[str, Any]:
        from scripts.landmarks.detector import DetectLandmarksd

        parser["network_path"] = weights
        transforms = list(parser.get_parsed_content("preprocessing").transforms)
        detect = [i for i, t in enumerate(transforms) if isinstance(t, DetectLandmarksd)]
        if len(detect) != 1:
            raise ValueError(
                f"{self.config_name}: 'preprocessing' must hold one DetectLandmarksd, found {len(detect)}."
            )
        detector = transforms[detect[0]]
        detector.overwrite = True  # a request's landmarks are not the task's answer: always detect
        return {"preprocessing": _Chain(transforms[: detect[0]]), "detector": _Chain(transforms[detect[0] :])}

    def pre_transforms(self, data=None):
        return [KeepRequestKeys(self.components(data)["preprocessing"])]

    def run_inferer(self, data: dict[str, Any], convert_to_batch=True, device="cpu"):
        return self.components(data)["detector"](data)

    def post_transforms(self, data=None):
        return [_LandmarkResult(self.radius_mm, self.output_label_key, self.output_json_key)]

    def detect(self, image_path: str, device: str) -> dict[str, Any]:
        """Detect the landmarks of one radiograph outside a request (the fracture task's landmarks).

        Returns:
            The data dictionary with ``landmarks`` (16, 2), ``landmark_confidence``, ``landmark_plausibility``.
        """
        data = {"image": image_path, "device": device}
        parts = self.components(data)
        return parts["detector"](parts["preprocessing"](data))


class _Chain:
    """Apply transforms in order (a plain list keeps MONAI's Compose from wrapping the detector's errors)."""

    def __init__(self, transforms) -> None:
        self.transforms = list(transforms)

    def __call__(self, data):
        for t in self.transforms:
            data = t(data)
        return data


class _LandmarkResult:
    """Label image of landmark discs and the result JSON (see the module docstring)."""

    def __init__(self, radius_mm: float, label_key: str, json_key: str) -> None:
        self.radius_mm, self.label_key, self.json_key = radius_mm, label_key, json_key

    def __call__(self, data):
        d = dict(data)
        image = d["image"]
        spacing = spacing_of(image)
        landmarks = as_numpy(d["landmarks"]).astype(np.float64).reshape(-1, 2)
        d[self.label_key] = landmarks_to_label(landmarks, image.shape[-2:], spacing, self.radius_mm, LANDMARK_RADIUS_PX)
        d["label_spacing_mm"] = spacing
        report = to_builtin(d.get("landmark_detection", {}))
        confidence = (
            as_numpy(d.get("landmark_confidence", [np.nan] * len(LANDMARK_NAMES))).astype(np.float64).reshape(-1)
        )
        d[self.json_key] = {
            "landmarks": {n: [float(x), float(y)] for n, (x, y) in zip(LANDMARK_NAMES, landmarks)},
            "confidence": {n: float(c) for n, c in zip(LANDMARK_NAMES, confidence)},
            "plausibility": float(to_builtin(d.get("landmark_plausibility", float("nan")))),
            "corrected_by_shape_model": [
                n for n, entry in report.get("landmarks", {}).items() if entry.get("corrected_by_shape_model")
            ],
            "image_size": [int(s) for s in image.shape[-2:]],
            "spacing_mm": list(spacing) if spacing is not None else None,
            "coordinates": "[x, y] = (column, row) pixels of the radiograph, origin at the centre of the top-left "
            "pixel",
            "detection": report,
        }
        return d

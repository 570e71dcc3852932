"""Fracture infer task: the bundle's inference config on one radiograph, as a label image and a JSON report.

Runs the bundle's ``inference.json`` (preprocessing with its landmark handling, ``network``, ``inferer``,
``postprocessing``: image score, sigmoid, the heatmap back on the radiograph (``pred_original``) and the fracture
result (``fracture_result``, :func:`scripts.reporting.fracture_result.fracture_result`)) and returns

* a label image of the radiograph's size, :data:`~lib.label_map.FRACTURE_VALUE` where the heatmap reaches the
  operating point (the result's ``threshold``) and 0 elsewhere;
* JSON: the bundle's fracture result as its post-processing built it, the one its ``report.json`` holds:
  ``fracture_probability``, ``threshold``, ``positive``, ``peaks`` and ``max_location`` in original pixels and mm,
  the ``landmarks`` used and their provenance (``landmark_source``: ``request``, ``final label`` or ``detector``).

Landmarks come, in this order, from the request (``landmarks`` {name: [x, y]} in the params), from the image's
final label in the datastore (the annotator's corrected landmarks; see ``main.py``), or from the bundle's landmark
detector inside its preprocessing.

The task needs the fracture weights, ``models/model.pt`` of the bundle or ``models/monailabel/model.pt`` of the
app's trainer (the newer one when both exist: MONAI Label serves the last existing path), and the landmark
detector's files (its preprocessing checks every image with the detector). Without them it is unavailable with a
one-line reason naming the missing files (see :mod:`lib.infers.bundle_infer`); the landmark task does not depend on
it, so a bundle that ships only the detector serves landmarks from its first start.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from monai.bundle import ConfigParser

from lib.bundle_configs import BundleConfigs
from lib.infers.bundle_infer import BundleConfigInfer, as_numpy, spacing_of
from lib.infers.landmarks import detector_files, detector_missing_reason
from lib.label_map import FRACTURE_LABEL, FRACTURE_VALUE, heatmap_to_label

logger = logging.getLogger(__name__)

PRED = "pred"
#: What the bundle's post-processing adds: the heatmap on the radiograph's grid and the fracture result.
PRED_ORIGINAL = "pred_original"
RESULT = "fracture_result"


class FractureInfer(BundleConfigInfer):
    """The AASN fracture heatmap as a label image, with the probability and peaks in the JSON.

    Args:
        configs: the bundle's configs (``inference.json`` is read).
        threshold: operating point; default the bundle's ``threshold`` (it sets the config's ``threshold``, so the
            result's decision and peaks follow it).
        config_name: the bundle's inference config.
    """

    def __init__(self, configs: BundleConfigs, threshold: float | None = None, config_name: str = "inference.json"):
        super().__init__(
            configs,
            config_name,
            model_paths=[f"{configs.models_dir}/model.pt", f"{configs.monailabel_models_dir}/model.pt"],
            labels={FRACTURE_LABEL: FRACTURE_VALUE},
            description="AASN anterior pelvic fracture heatmap (thresholded at the operating point), fracture "
            "probability and peak locations",
        )
        self.threshold = threshold
        self.detector_files = detector_files(configs)  # the detector inside inference.json (BundleConfigs.parser)

    def missing_files(self) -> list[str]:
        weights = [] if self.get_path() else [self.path[0]]
        return weights + [path for path in self.detector_files if not os.path.isfile(path)]

    def unavailable_reason(self) -> str | None:
        reasons = []
        if not self.get_path():
            reasons.append(
                f"{self.path[0]} (the fracture AASN's weights) is missing: train it with this app's fracture trainer "
                f"(it writes {self.path[-1]}) or the bundle's configs/train.json"
            )
        detector = [path for path in self.detector_files if not os.path.isfile(path)]
        if detector:
            reasons.append(detector_missing_reason(detector))
        return "; ".join(reasons) or None

    def build(self, parser: ConfigParser, weights: str, device: torch.device) -> dict[str, Any]:
        from scripts.landmarks.detector import load_network_weights

        if self.threshold is not None:
            parser["threshold"] = float(self.threshold)
        network = parser.get_parsed_content("network")
        load_network_weights(network, weights, key="model").to(device)
        return {
            "preprocessing": parser.get_parsed_content("preprocessing"),
            "network": network,
            "inferer": parser.get_parsed_content("inferer"),
            "postprocessing": parser.get_parsed_content("postprocessing"),
        }

    def run_inferer(self, data: dict[str, Any], convert_to_batch=True, device="cpu"):
        parts = self.components(data)
        inputs = torch.as_tensor(data["siamese_input"])[None].to(device)
        with torch.no_grad():
            data[PRED] = parts["inferer"](inputs, parts["network"])[0].cpu()
        return data

    def post_transforms(self, data=None):
        return [self.components(data)["postprocessing"], _FractureLabel(self.output_label_key, self.output_json_key)]


class _FractureLabel:
    """The label image from the post-processed data's ``pred_original`` at the result's threshold; the result JSON is
    the post-processing's ``fracture_result`` as it stands."""

    def __init__(self, label_key: str, json_key: str) -> None:
        self.label_key, self.json_key = label_key, json_key

    def __call__(self, data):
        d = dict(data)
        for key in (PRED_ORIGINAL, RESULT):
            if key not in d:
                raise KeyError(
                    f"the bundle's inference postprocessing made no '{key}' (it has {sorted(map(str, d))}); "
                    "configs/inference.json's postprocessing ends with ROIToOriginald and FractureResultd."
                )
        result = d[RESULT]
        d[self.label_key] = heatmap_to_label(as_numpy(d[PRED_ORIGINAL]), result["threshold"])
        d["label_spacing_mm"] = spacing_of(d["image"])
        d[self.json_key] = result
        return d

"""Fracture infer task: the bundle's inference config on one radiograph, as a label image and a JSON report.

Runs the bundle's ``inference.json`` (preprocessing with its landmark handling, ``network``, ``inferer``,
``postprocessing``: image score, sigmoid), puts the ROI heatmap back on the radiograph with the project's
``ROIToOriginald`` and returns

* a label image of the radiograph's size, :data:`~lib.label_map.FRACTURE_VALUE` where the heatmap reaches the
  operating point (the bundle's ``threshold``) and 0 elsewhere;
* JSON: ``fracture_probability`` (the image score), ``threshold``, ``positive``, ``peaks`` (local maxima at or
  above the threshold, strongest first, in original pixels ``[x, y]`` and mm, found with the bundle's own
  ``find_peaks`` on the ROI heatmap), ``max_location``, the ``landmarks`` used and their ``landmark_source``.

Landmarks come, in this order, from the request (``landmarks`` {name: [x, y]} in the params), from the image's
final label in the datastore (the annotator's corrected landmarks; see ``main.py``), or from the bundle's landmark
detector inside its preprocessing.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import CopyItemsd

from custom_transforms.backprojection import ROIToOriginald
from custom_transforms.conventions import LANDMARK_NAMES
from lib.bundle_configs import BundleConfigs
from lib.infers.bundle_infer import BundleConfigInfer, as_numpy, spacing_of
from lib.label_map import FRACTURE_LABEL, FRACTURE_VALUE, heatmap_to_label

logger = logging.getLogger(__name__)

PRED = "pred"
PRED_ORIGINAL = "pred_original"


class FractureInfer(BundleConfigInfer):
    """The AASN fracture heatmap as a label image, with the probability and peaks in the JSON.

    Args:
        configs: the bundle's configs (``inference.json`` is read).
        threshold: operating point; default the bundle's ``threshold``.
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

    def build(self, parser: ConfigParser, weights: str, device: torch.device) -> dict[str, Any]:
        from custom_transforms import roi_points_to_original

        from scripts.landmarks.detector import load_network_weights
        from scripts.reporting.inference_writer import find_peaks

        network = parser.get_parsed_content("network")
        load_network_weights(network, weights, key="model").to(device)
        threshold = float(self.threshold if self.threshold is not None else parser.get_parsed_content("threshold"))
        return {
            "preprocessing": parser.get_parsed_content("preprocessing"),
            "network": network,
            "inferer": parser.get_parsed_content("inferer"),
            "postprocessing": parser.get_parsed_content("postprocessing"),
            "threshold": threshold,
            "find_peaks": find_peaks,
            "roi_to_original_points": roi_points_to_original,
        }

    def run_inferer(self, data: dict[str, Any], convert_to_batch=True, device="cpu"):
        parts = self.components(data)
        inputs = torch.as_tensor(data["siamese_input"])[None].to(device)
        with torch.no_grad():
            data[PRED] = parts["inferer"](inputs, parts["network"])[0].cpu()
        return data

    def post_transforms(self, data=None):
        parts = self.components(data)
        return [
            parts["postprocessing"],
            _HeatmapOnRadiograph(),
            _FractureResult(parts, self.output_label_key, self.output_json_key),
        ]


class _HeatmapOnRadiograph:
    """``pred_original`` = the ROI heatmap ``pred`` put back on the radiograph's grid (the project's
    ``ROIToOriginald``), unless the bundle's post-processing already made it; ``pred`` is kept for the peaks."""

    def __init__(self) -> None:
        self.copy = CopyItemsd(keys=PRED, names=PRED_ORIGINAL)
        self.to_original = ROIToOriginald(keys=PRED_ORIGINAL)

    def __call__(self, data):
        return data if PRED_ORIGINAL in data else self.to_original(self.copy(data))


class _FractureResult:
    """Label image and result JSON from the post-processed data (see the module docstring)."""

    def __init__(self, parts: dict[str, Any], label_key: str, json_key: str) -> None:
        self.parts, self.label_key, self.json_key = parts, label_key, json_key

    def __call__(self, data):
        d = dict(data)
        threshold = self.parts["threshold"]
        image = d["image"]
        spacing = spacing_of(image)
        roi_heatmap = as_numpy(d[PRED]).astype(np.float64).reshape(d[PRED].shape[-2:])
        matrix = as_numpy(d["roi_to_original"]).astype(np.float64)
        score = float(as_numpy(d["score"]).reshape(-1)[0]) if "score" in d else float(roi_heatmap.max())

        def located(xy_roi: np.ndarray) -> list[dict[str, float]]:
            xy = self.parts["roi_to_original_points"](xy_roi, matrix)
            rows = np.clip(np.rint(xy_roi[:, 1]).astype(int), 0, roi_heatmap.shape[0] - 1)
            cols = np.clip(np.rint(xy_roi[:, 0]).astype(int), 0, roi_heatmap.shape[1] - 1)
            out = []
            for (x, y), p in zip(xy, roi_heatmap[rows, cols]):
                point = {"x": float(x), "y": float(y), "probability": float(p)}
                if spacing is not None:
                    point.update(x_mm=float(x * spacing[1]), y_mm=float(y * spacing[0]))
                out.append(point)
            return out

        peaks = located(self.parts["find_peaks"](roi_heatmap, threshold))
        r, c = np.unravel_index(int(np.argmax(roi_heatmap)), roi_heatmap.shape)
        landmarks = as_numpy(d["landmarks"]).astype(np.float64).reshape(-1, 2)
        d[self.label_key] = heatmap_to_label(as_numpy(d[PRED_ORIGINAL]), threshold)
        d["label_spacing_mm"] = spacing
        d[self.json_key] = {
            "fracture_probability": score,
            "threshold": threshold,
            "positive": bool(score >= threshold),
            "peaks": peaks,
            "max_location": located(np.array([[float(c), float(r)]]))[0],
            "spacing_mm": list(spacing) if spacing is not None else None,
            "coordinates": "[x, y] = (column, row) pixels of the radiograph, origin at the centre of the top-left "
            "pixel; mm = pixels x spacing",
            "landmarks": {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, landmarks)},
            "landmark_source": d.get("landmark_source")
            or ("detector" if d.get("landmarks_detected") else "annotation"),
        }
        return d

"""A landmark detector that knows the test's images: weights and shape model written where the bundle looks.

``save_oracle_detector`` stores, under a bundle's ``models/``, the weights of
``deploy_oracle_landmarks.OracleHeatmaps`` (for each known image, heatmap logits whose spatial softmax is a
Gaussian at each true landmark; flat logits for any other image) as ``landmark_model.pt``, and a shape model of
synthetic pelvis configurations as ``landmark_shape_model.json``. It returns the ids of
``configs/landmark_inference.json`` to override so that the bundle's own detector (letterbox, decoding, shape
prior, plausibility) runs with that network: everything after the network is the bundle's real code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from landmark_testdata import training_shapes

ORACLE_INPUT = (96, 96)


def save_oracle_detector(
    models_dir: str | Path,
    cases: Sequence[tuple[str | Path, np.ndarray]],
    input_size: Sequence[int] = ORACLE_INPUT,
    module: str = "deploy_oracle_landmarks",
) -> dict:
    """Write the oracle's weights and a shape model; return the landmark config overrides.

    Args:
        models_dir: the bundle's ``models`` folder.
        cases: ``(image path, (16, 2) true landmarks [x, y] px)`` of the images it knows.
        input_size: the detector's letterbox size.
        module: import name of ``tests/deploy_oracle_landmarks.py`` where the bundle runs.
    """
    from custom_transforms import LoadPXR
    from custom_transforms.geometry import transform_points
    from deploy_oracle_landmarks import OracleHeatmaps

    from scripts.landmarks.heatmap_decoding import gaussian_heatmaps
    from scripts.landmarks.letterbox import Letterbox
    from scripts.landmarks.shape_model import StatisticalShapeModel

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in input_size)
    num_landmarks = len(cases[0][1])
    oracle = OracleHeatmaps(len(cases), num_landmarks, size)
    for index, (image, landmarks_px) in enumerate(cases):
        boxed = Letterbox(size)(LoadPXR()(str(image)))
        points = transform_points(boxed.meta["letterbox_matrix"], np.asarray(landmarks_px))  # -> detector input pixels
        points = torch.as_tensor(points, dtype=torch.float32)
        oracle.inputs[index] = boxed.as_tensor()
        oracle.heatmaps[index] = torch.log(gaussian_heatmaps(points, size, 1.5).clamp_min(1e-30))
    torch.save(oracle.state_dict(), models_dir / "landmark_model.pt")
    StatisticalShapeModel.from_shapes(training_shapes(), noise_mm=1.5).save(models_dir / "landmark_shape_model.json")
    return {
        "network_def": {
            "_target_": f"{module}.OracleHeatmaps",
            "num_images": len(cases),
            "num_landmarks": num_landmarks,
            "spatial_size": list(size),
        },
        "input_size": list(size),
        "use_refiner": False,
    }


def oracle_plausibility(
    image: str | Path, landmarks_px: np.ndarray, input_size: Sequence[int], sigma: float = 1.5, radius: int = 3
) -> float:
    """By hand, the plausibility the bundle's detector must give an image the oracle knows (spatial softmax activation,
    no refiner): each heatmap's softmax is the normalised Gaussian of ``sigma`` at the true landmark in letterbox
    pixels; a landmark's confidence is that Gaussian's mass in the ``(2 radius + 1)^2`` window around its nearest
    pixel (the decoded peak is the true point); the annotated configuration is consistent with a shape model built
    from the same images, so the plausibility is the median confidence (times a consistent share of 1)."""
    from custom_transforms import LoadPXR
    from custom_transforms.geometry import transform_points

    from scripts.landmarks.letterbox import Letterbox

    height, width = (int(v) for v in input_size)
    boxed = Letterbox((height, width))(LoadPXR()(str(image)))
    points = transform_points(boxed.meta["letterbox_matrix"], np.asarray(landmarks_px, dtype=np.float64))
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    confidences = []
    for x, y in points:
        gaussian = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
        gaussian /= gaussian.sum()
        c, r = int(round(x)), int(round(y))
        confidences.append(gaussian[max(r - radius, 0) : r + radius + 1, max(c - radius, 0) : c + radius + 1].sum())
    return float(np.median(confidences))

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

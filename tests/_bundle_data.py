"""Small synthetic radiographs for the bundle's workflow tests: PNG images, annotation JSON, datalist.

Not anatomy: a smooth background, a symmetric 16-landmark configuration (randomly posed) and, for
fractured images, a bright mark at each fracture point. Enough to drive the real preprocessing and
workflows quickly; the simulator (``simulation``) provides the realistic data for the demo.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from custom_transforms.conventions import LANDMARK_NAMES

# right side (patient right = small x) of a 256 x 256 template; left = mirror about x = 127.5
_RIGHT = {
    "asis": (52.0, 62.0),
    "sciatic_notch": (80.0, 92.0),
    "acetabulum_center": (70.0, 128.0),
    "obturator_superior": (100.0, 150.0),
    "obturator_inferior": (98.0, 186.0),
    "pubic_tubercle": (112.0, 158.0),
    "ischial_tuberosity": (86.0, 200.0),
}
_MIDLINE = {"symphysis_superior": (127.5, 154.0), "symphysis_inferior": (127.5, 182.0)}


def template_landmarks(size: int = 256) -> np.ndarray:
    """(16, 2) ``[x, y]`` in the order of ``LANDMARK_NAMES``, scaled to a ``size`` x ``size`` image."""
    pts = {}
    for name, (x, y) in _RIGHT.items():
        pts[f"{name}_r"] = (x, y)
        pts[f"{name}_l"] = (255.0 - x, y)
    pts.update(_MIDLINE)
    return np.array([pts[n] for n in LANDMARK_NAMES], dtype=np.float64) * (size / 256.0)


def write_case(
    folder: Path,
    name: str,
    rng: np.random.Generator,
    fractured: bool,
    size: int = 256,
    spacing_mm: float = 1.4,
    spot: tuple[float, float] | None = None,
) -> dict:
    """Write ``name.png`` (16-bit) and ``name.json``; returns the datalist item (without fold/subject)."""
    angle = np.deg2rad(rng.uniform(-4, 4))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([size / 2, size / 2])
    lm = (template_landmarks(size) - centre) @ rot.T * rng.uniform(0.95, 1.05) + centre + rng.uniform(-6, 6, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = 0.3 + 0.1 * np.sin(xx / 23.0) * np.cos(yy / 31.0) + rng.normal(0, 0.01, (size, size))
    fractures = []
    if fractured:
        roi = [i for i, n in enumerate(LANDMARK_NAMES) if n.startswith(("obturator", "pubic"))]
        k = rng.integers(len(roi))
        fractures.append((lm[roi[k]] + rng.uniform(-4, 4, 2)).tolist())
    points = list(fractures) + ([list(spot)] if spot is not None else [])
    for x, y in points:
        image += 0.6 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
    image = np.clip(image, 0, 1)
    Image.fromarray((image * 65535).astype(np.uint16)).save(folder / f"{name}.png")
    annotation = {
        "image": f"{name}.png",
        "landmarks": {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, lm)},
        "fractures": fractures,
        "spacing_mm": [spacing_mm, spacing_mm],
    }
    (folder / f"{name}.json").write_text(json.dumps(annotation))
    return {"image": f"{name}.png", "annotation": f"{name}.json", "label": int(fractured)}


def write_dataset(folder: Path, n: int = 20, seed: int = 0, size: int = 256) -> Path:
    """``n`` cases over 5 folds, one subject each, half fractured; returns the datalist path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        item = write_case(folder, f"case{i:03d}", rng, fractured=i % 2 == 0, size=size)
        item.update(subject=f"s{i:03d}", fold=(i // 2) % 5)
        items.append(item)
    path = folder / "datalist.json"
    path.write_text(json.dumps({"data": items}, indent=1))
    return path


#: The tests' AASN network: a one-layer-per-block DenseNet (``network_kwargs`` of the bundle's configs).
TINY_NETWORK_KWARGS = {
    "init_features": 8,
    "growth_rate": 4,
    "block_config": [1, 1, 1, 1],
    "bn_size": 2,
    "projection_channels": 8,
}

#: Settings that make the bundle's training configs tiny (a 64 x 128 ROI and :data:`TINY_NETWORK_KWARGS`), merged
#: over ``train.json`` by the bundle tests.
TINY_TRAINING = {
    "roi_size": [64, 128],
    "network_kwargs": TINY_NETWORK_KWARGS,
    "batch_size": 4,
    "num_workers": 0,
    "show_progress": False,
}

"""Synthetic landmark configurations and images for the landmark detector tests (no data files needed)."""

from __future__ import annotations

import math

import numpy as np

# An AP pelvis in mm, viewer's orientation (patient right = small x), y down; order of LANDMARK_NAMES:
# asis, sciatic_notch, acetabulum_center, obturator_superior, obturator_inferior, pubic_tubercle,
# ischial_tuberosity (right, then left), symphysis_superior, symphysis_inferior.
_RIGHT = np.array([[-115, -70], [-70, -25], [-88, 20], [-45, 42], [-50, 88], [-22, 48], [-62, 108]], float)
TEMPLATE_MM = np.concatenate([_RIGHT, _RIGHT * [-1, 1], [[0, 45], [0, 85]]])


def random_pelvis(rng: np.random.Generator, centre=(0.0, 0.0), size: float = 1.0, noise_mm: float = 1.0) -> np.ndarray:
    """A plausible random configuration (mm): anatomical variation, axial rotation, in-plane pose."""
    s = TEMPLATE_MM.copy()
    s[:, 0] *= rng.uniform(0.9, 1.1)  # pelvic width
    s[:, 1] *= rng.uniform(0.9, 1.1)  # height
    axial = rng.uniform(-0.08, 0.08)  # rotation about the long axis foreshortens one side
    s[:, 0] *= 1 + axial * np.sign(s[:, 0])
    s[:, 0] += rng.normal() * 3 * (s[:, 1] > 60)  # pubic-arch shift
    s += rng.normal(size=s.shape) * noise_mm
    angle = rng.uniform(-0.1, 0.1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return size * rng.uniform(0.92, 1.08) * s @ rot.T + np.asarray(centre, float)


def training_shapes(count: int = 150, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([random_pelvis(rng, centre=rng.uniform(-30, 30, 2)) for _ in range(count)])


def _segment_distance(xs, ys, a, b):
    ab = np.asarray(b, float) - np.asarray(a, float)
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(ab @ ab, 1e-9), 0, 1)
    return np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))


# segments between landmarks of one side (indices into a side's 7): wing, posterior column, rami
_SIDE_SEGMENTS = ((0, 1), (1, 6), (3, 5), (4, 6))


def render_pelvis(
    landmarks_mm: np.ndarray, shape, spacing_mm: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A toy AP pelvis radiograph ``(H, W)`` in [0, 1]: bright cortical lines through the landmarks.

    Landmark ``i`` of ``landmarks_mm`` is at pixel ``landmarks_mm[i] / spacing_mm`` of the result.
    """
    h, w = shape
    ys, xs = np.mgrid[:h, :w] * float(spacing_mm)
    lm = np.asarray(landmarks_mm, float)
    dist = np.full((h, w), np.inf)
    for side in (0, 7):
        p = lm[side : side + 7]
        for a, b in _SIDE_SEGMENTS:
            dist = np.minimum(dist, _segment_distance(xs, ys, p[a], p[b]))
        dist = np.minimum(dist, np.abs(np.hypot(xs - p[2, 0], ys - p[2, 1]) - 20.0))  # acetabular rim
        centre = (p[3] + p[4]) / 2  # obturator foramen outline
        semi = max(np.linalg.norm(p[3] - p[4]) / 2, 1.0)
        dist = np.minimum(dist, np.abs(np.hypot((xs - centre[0]) / 0.7, ys - centre[1]) - semi))
        dist = np.minimum(dist, _segment_distance(xs, ys, p[5], lm[14]))  # ramus to the symphysis
        dist = np.minimum(dist, _segment_distance(xs, ys, p[4], lm[15]))
    dist = np.minimum(dist, _segment_distance(xs, ys, lm[14], lm[15]))
    dist = np.minimum(dist, _segment_distance(xs, ys, lm[0], lm[7]) + 6.0)  # faint iliac-crest band
    img = 0.15 + 0.75 * np.exp(-(dist**2) / (2 * 2.5**2))
    if rng is not None:
        img = img * rng.uniform(0.8, 1.1) + rng.normal(scale=0.03, size=img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def write_toy_dataset(folder, count: int = 20, shape=(120, 150), spacing_mm: float = 2.5, seed: int = 0) -> str:
    """Toy pelvis PNGs with annotation JSONs and a 5-fold, subject-grouped datalist; returns its path."""
    import json
    from pathlib import Path

    from PIL import Image

    from custom_transforms.conventions import LANDMARK_NAMES

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = shape
    items = []
    for i in range(count):
        centre = (w * spacing_mm / 2 + rng.normal() * 8, h * spacing_mm / 2 + rng.normal() * 8 - 15)
        landmarks = random_pelvis(rng, centre=centre)
        image = render_pelvis(landmarks, shape, spacing_mm, rng)
        name = f"toy{i:03d}"
        Image.fromarray((image * 65535).astype(np.uint16)).save(folder / f"{name}.png")
        pixels = landmarks / spacing_mm
        annotation = {
            "image": f"{name}.png",
            "landmarks": {n: [float(v) for v in pixels[k]] for k, n in enumerate(LANDMARK_NAMES)},
            "fractures": [],
            "spacing_mm": [spacing_mm, spacing_mm],
        }
        (folder / f"{name}.json").write_text(json.dumps(annotation))
        subject = f"s{i // 2}"
        items.append(
            {
                "image": f"{name}.png",
                "annotation": f"{name}.json",
                "label": i % 3 == 0,
                "subject": subject,
                "fold": (i // 2) % 5,
            }
        )
    for it in items:
        it["label"] = int(it["label"])
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": items}))
    return str(path)

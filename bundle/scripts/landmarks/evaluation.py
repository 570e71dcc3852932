"""Evaluation of the landmark detector on annotated radiographs (e.g. the test fold = held-out atlas members).

For every item the image and its annotation are loaded (``LoadPXRd``, ``LoadAnnotationd``: the
annotation's spacing wins), the detector runs (:meth:`~.detector.LandmarkDetector.detect`,
no rejection) and radial errors in mm are computed for the final landmarks and, to show what the
shape prior does, for the raw heatmap peaks. Synthetic non-pelvic radiographs of every kind
(:mod:`.nonpelvic_radiographs`) are then given to the detector to measure how many it rejects.

Written to ``output_dir``: ``landmark_metrics.json`` (MRE, SDR at 2/2.5/3/4 mm overall and per
landmark, for the detector and for the heatmap peaks; plausibility of the pelvic and non-pelvic
images; detection time) and ``landmark_errors.csv`` (per image and landmark).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import numpy as np
from monai.data import MetaTensor

from custom_transforms.annotation import LoadAnnotationd
from custom_transforms.loading import LoadPXRd
from simulation.nonpelvic import NONPELVIC_KINDS, render_nonpelvic

from scripts.landmarks.detector import LandmarkDetector
from scripts.landmarks.metrics import landmark_summary, radial_errors_mm, write_landmark_metrics

__all__ = ["evaluate_detector"]

logger = logging.getLogger(__name__)


def _plausibility_stats(values: Sequence[float], threshold: float) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {
        "count": int(values.size),
        "min": float(values.min()) if values.size else float("nan"),
        "median": float(np.median(values)) if values.size else float("nan"),
        "max": float(values.max()) if values.size else float("nan"),
        "rejected_percent": float(100 * (values < threshold).mean()) if values.size else float("nan"),
    }


def evaluate_detector(
    detector: LandmarkDetector,
    items: Sequence[dict],
    output_dir: str | os.PathLike,
    nonpelvic_per_kind: int = 20,
    nonpelvic_size: Sequence[int] = (1024, 1024),
    seed: int = 0,
    extra: dict | None = None,
) -> dict:
    """Evaluate on annotated items and on synthetic non-pelvic images; write and return the summary.

    Args:
        detector: the landmark detector.
        items: datalist items with ``image`` and ``annotation``.
        output_dir: where the metrics files go.
        nonpelvic_per_kind: non-pelvic images of each kind (0: skip that check).
        nonpelvic_size: their ``(H, W)``.
        seed: seed of the non-pelvic images.
        extra: entries added to the JSON (configuration, command, ...).
    """
    if not items:
        raise ValueError("evaluate_detector: no items to evaluate.")
    load = [LoadPXRd("image"), LoadAnnotationd("annotation", image_key="image")]
    final_errors, peak_errors, plausibility, seconds, cases, spacings = [], [], [], [], [], []
    for item in items:
        d = dict(item)
        for t in load:
            d = t(d)
        image = d["image"]
        spacing = image.meta.get("spacing_mm")
        if spacing is None:
            raise ValueError(f"{item['image']}: no pixel spacing (image or annotation); errors in mm need it.")
        spacings.append(spacing)
        start = time.perf_counter()
        detection = detector.detect(image)
        seconds.append(time.perf_counter() - start)
        final_errors.append(radial_errors_mm(detection.landmarks, d["landmarks"], spacing))
        peak_errors.append(radial_errors_mm(detection.heatmap_landmarks, d["landmarks"], spacing))
        plausibility.append(detection.plausibility)
        cases.append(os.path.basename(str(item["image"])))

    # non-pelvic images get the pelvic images' median spacing, as films from the same detector would
    rng = np.random.default_rng(seed)
    spacing = tuple(float(s) for s in np.median(np.asarray(spacings, dtype=np.float64), axis=0))
    nonpelvic = {}
    for kind in NONPELVIC_KINDS if nonpelvic_per_kind > 0 else ():
        scores = []
        for _ in range(nonpelvic_per_kind):
            image = MetaTensor(render_nonpelvic(kind, nonpelvic_size, rng), meta={"spacing_mm": spacing})
            scores.append(detector.detect(image).plausibility)
        nonpelvic[kind] = _plausibility_stats(scores, detector.plausibility_threshold)

    summary_extra = {
        "heatmap_peaks_only": landmark_summary(np.stack(peak_errors)),
        "plausibility_threshold": detector.plausibility_threshold,
        "plausibility_pelvis": _plausibility_stats(plausibility, detector.plausibility_threshold),
        "plausibility_nonpelvic": nonpelvic,
        "seconds_per_image_median": float(np.median(seconds)),
        **(extra or {}),
    }
    summary = write_landmark_metrics(np.stack(final_errors), output_dir, cases, extra=summary_extra)
    overall = summary["overall"]
    logger.info(
        f"landmarks on {len(items)} images: MRE {overall['mre_mm']:.2f} mm, SDR@2mm {overall['sdr_2mm']:.1f} %, "
        f"SDR@4mm {overall['sdr_4mm']:.1f} % (heatmap peaks only: MRE "
        f"{summary['heatmap_peaks_only']['overall']['mre_mm']:.2f} mm); written to {output_dir}"
    )
    return summary

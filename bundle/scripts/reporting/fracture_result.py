"""The fracture result of one image, built once from the network's output.

:func:`fracture_result` turns the post-processed data of one radiograph (the ROI heatmap probabilities ``pred``,
the image ``score``, the ``roi_to_original`` matrix, the loaded ``image`` with its spacing, the ``landmarks`` and
what the landmark detector said about them) into the result every consumer reports:

- ``fracture_probability`` (the image score; the ROI heatmap's maximum when the data carry no score), the operating
  ``threshold`` and the decision ``positive`` (probability >= threshold);
- ``peaks``: local maxima of the ROI heatmap at or above the threshold, at least ``peak_min_distance_mm`` apart,
  strongest first, each ``{"x", "y", "x_mm", "y_mm", "probability"}`` in original pixels (``[x, y]`` = column, row,
  origin at the centre of the top-left pixel) and mm (``None`` when the spacing is unknown); ``max_location``: the
  strongest point, always;
- ``spacing_mm`` (row, col) and ``spacing_source``; the ``landmarks`` by name; their provenance
  (:func:`landmark_provenance`); ``tps_warp`` (:func:`tps_warp_name`).

Peaks are found on the network's ROI-space heatmap (its native resolution) and mapped to original pixels exactly
through ``roi_to_original``; the minimal separation is converted from mm to ROI pixels with the ROI's pixel size.

Its one dictionary transform, :class:`FractureResultd`, ends ``configs/inference.json``'s ``postprocessing``. The
bundle's writer (:class:`~scripts.reporting.inference_writer.FractureReportWriter`), MONAI Label's fracture task
and the Deploy app run that post-processing and report its ``fracture_result`` as they find it, so the three give
the same peaks for the same image.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from custom_transforms.backprojection import roi_points_to_original
from custom_transforms.conventions import LANDMARK_NAMES
from custom_transforms.geometry import pixels_to_mm, spacing_xy

__all__ = [
    "COORDINATES",
    "FractureResultd",
    "MAX_PEAKS",
    "PEAK_MIN_DISTANCE_MM",
    "find_peaks",
    "fracture_result",
    "landmark_provenance",
    "peak_min_distance_px",
    "tps_warp_name",
]

#: Default minimal separation of two reported peaks, in mm.
PEAK_MIN_DISTANCE_MM = 10.0
#: Default largest number of reported peaks.
MAX_PEAKS = 10
#: How the result's points are to be read.
COORDINATES = (
    "[x, y] = (column, row) pixels of the original image from the centre of the top-left pixel; mm = pixels x spacing"
)


def _numpy(value: Any) -> np.ndarray:
    """An array from a tensor, a MetaTensor, a decollated list of 0-d tensors or an array-like."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        return np.asarray([_numpy(v) for v in value])
    return np.asarray(value)


def _first(value: Any) -> Any:
    """The element of a collated one-element list (a string travels through a batch as ``[s]``)."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def find_peaks(heatmap: np.ndarray, threshold: float, min_distance: int = 1, max_peaks: int = MAX_PEAKS) -> np.ndarray:
    """Local maxima ``[x, y]`` (P, 2) of a (h, w) heatmap at or above ``threshold``, strongest first.

    Args:
        heatmap: probabilities (h, w).
        threshold: lowest value a peak may have.
        min_distance: minimal separation of two peaks in the heatmap's pixels (Chebyshev distance, scikit-image's).
        max_peaks: at most this many.
    """
    from skimage.feature import peak_local_max

    heatmap = np.asarray(heatmap, dtype=np.float64)
    rc = peak_local_max(
        heatmap,
        min_distance=max(int(min_distance), 1),
        threshold_abs=threshold,
        exclude_border=False,
        num_peaks=int(max_peaks),
    )
    rc = rc[heatmap[rc[:, 0], rc[:, 1]] >= threshold] if len(rc) else rc
    return rc[:, ::-1].astype(np.float64).reshape(-1, 2)


def peak_min_distance_px(roi_to_original, spacing_mm, distance_mm: float) -> int:
    """``distance_mm`` in pixels of the ROI heatmap (at least 1).

    The ROI pixel's size is the mean length of its two unit steps in original pixels times the original spacing;
    with unknown spacing the distance is taken in original pixels.

    Args:
        roi_to_original: (3, 3) ROI pixel -> original pixel.
        spacing_mm: (row, col) of the original image, or None.
        distance_mm: the separation in mm.
    """
    matrix = np.asarray(roi_to_original, dtype=np.float64).reshape(3, 3)
    dx, dy = spacing_xy(spacing_mm)
    roi_pixel_mm = 0.5 * (np.hypot(*matrix[:2, 0]) * dx + np.hypot(*matrix[:2, 1]) * dy)
    return max(int(round(float(distance_mm) / roi_pixel_mm)), 1)


def _located(xy_roi: np.ndarray, roi_heatmap: np.ndarray, roi_to_original: np.ndarray, spacing) -> list[dict]:
    """ROI heatmap points -> ``{"x", "y", "x_mm", "y_mm", "probability"}`` in original pixels and mm."""
    xy = roi_points_to_original(xy_roi, roi_to_original)
    mm = pixels_to_mm(xy, spacing) if spacing is not None else np.full_like(xy, np.nan)
    rows = np.clip(np.rint(xy_roi[:, 1]).astype(int), 0, roi_heatmap.shape[0] - 1)
    cols = np.clip(np.rint(xy_roi[:, 0]).astype(int), 0, roi_heatmap.shape[1] - 1)
    return [
        {
            "x": float(x),
            "y": float(y),
            "x_mm": None if spacing is None else float(x_mm),
            "y_mm": None if spacing is None else float(y_mm),
            "probability": float(p),
        }
        for (x, y), (x_mm, y_mm), p in zip(xy, mm, roi_heatmap[rows, cols])
    ]


def tps_warp_name(data: Mapping, key: str = "tps_warp") -> str | None:
    """The name of the warp the data's TPS grid was made with (``custom_transforms.tps.TPSGridd``'s ``tps_warp``;
    a collated one-element list unwrapped), or None when the data do not carry it.

    Args:
        data: the post-processed data of one image.
        key: the key of the warp's name.
    """
    warp = _first(data.get(key))
    return None if warp is None else str(warp)


def landmark_provenance(data: Mapping) -> dict[str, Any]:
    """Where an image's landmarks came from.

    ``landmark_source``: the data's own ``landmark_source`` string when present (MONAI Label's ``"request"`` or
    ``"final label"``), else ``"detector"`` when ``landmarks_detected`` (the keys of
    :class:`~scripts.landmarks.detector.DetectLandmarksd`), else ``"annotation"``. For detected landmarks also the
    image's ``landmark_plausibility`` and, by landmark name, ``landmark_confidence`` and
    ``corrected_by_shape_model``; these are ``None`` otherwise.

    Args:
        data: the post-processed data of one image.
    """
    detected = data.get("landmarks_detected")
    detected = bool(_numpy(detected).reshape(-1)[0]) if detected is not None else False
    source = _first(data.get("landmark_source"))
    provenance: dict[str, Any] = {
        "landmark_source": str(source) if source else ("detector" if detected else "annotation"),
        "landmarks_detected": detected,
        "landmark_plausibility": None,
        "landmark_confidence": None,
        "corrected_by_shape_model": None,
    }
    if detected:
        if data.get("landmark_plausibility") is not None:
            provenance["landmark_plausibility"] = float(_numpy(data["landmark_plausibility"]).reshape(-1)[0])
        if data.get("landmark_confidence") is not None:
            confidence = _numpy(data["landmark_confidence"]).reshape(-1)
            provenance["landmark_confidence"] = {n: float(v) for n, v in zip(LANDMARK_NAMES, confidence)}
        if data.get("landmark_corrected") is not None:
            corrected = _numpy(data["landmark_corrected"]).reshape(-1)
            provenance["corrected_by_shape_model"] = {n: bool(v) for n, v in zip(LANDMARK_NAMES, corrected)}
    return provenance


def fracture_result(
    data: Mapping,
    threshold: float = 0.5,
    pred_key: str = "pred",
    score_key: str = "score",
    image_key: str = "image",
    roi_to_original_key: str = "roi_to_original",
    landmarks_key: str = "landmarks",
    peak_min_distance_mm: float = PEAK_MIN_DISTANCE_MM,
    max_peaks: int = MAX_PEAKS,
) -> dict[str, Any]:
    """The fracture result of one image (see the module docstring for its entries).

    Args:
        data: the post-processed data of one image: ``pred_key`` the ROI heatmap probabilities (1, h, w) or (h, w),
            ``score_key`` the image score (optional), ``image_key`` the loaded radiograph (its meta-data give
            ``spacing_mm`` and ``spacing_source``), ``roi_to_original_key`` (3, 3), ``landmarks_key`` (16, 2)
            (optional) and the landmark provenance keys.
        threshold: the operating threshold of the image score and the peaks' minimum probability.
        pred_key: see ``data``.
        score_key: see ``data``.
        image_key: see ``data``.
        roi_to_original_key: see ``data``.
        landmarks_key: see ``data``.
        peak_min_distance_mm: minimal separation of two peaks in mm.
        max_peaks: at most this many peaks.

    Raises:
        KeyError: naming the missing key when ``pred_key`` or ``roi_to_original_key`` is absent.
    """
    for key in (pred_key, roi_to_original_key):
        if key not in data:
            raise KeyError(f"fracture_result: the data lack '{key}' (have {sorted(map(str, data))}).")
    threshold = float(threshold)
    roi_heatmap = _numpy(data[pred_key]).astype(np.float64)
    roi_heatmap = roi_heatmap.reshape(roi_heatmap.shape[-2:])
    matrix = _numpy(data[roi_to_original_key]).astype(np.float64).reshape(3, 3)
    meta = getattr(data.get(image_key), "meta", None) or {}
    spacing = meta.get("spacing_mm")
    spacing = None if spacing is None else tuple(float(s) for s in _numpy(spacing).reshape(-1))
    score = data.get(score_key)
    score = float(_numpy(score).reshape(-1)[0]) if score is not None else float(roi_heatmap.max())

    min_distance = peak_min_distance_px(matrix, spacing, peak_min_distance_mm)
    peaks = _located(find_peaks(roi_heatmap, threshold, min_distance, max_peaks), roi_heatmap, matrix, spacing)
    row, col = np.unravel_index(int(np.argmax(roi_heatmap)), roi_heatmap.shape)
    strongest = _located(np.array([[float(col), float(row)]]), roi_heatmap, matrix, spacing)[0]
    landmarks = data.get(landmarks_key)
    named = None
    if landmarks is not None:
        landmarks = _numpy(landmarks).astype(np.float64).reshape(-1, 2)
        named = {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, landmarks)}
    return {
        "fracture_probability": score,
        "threshold": threshold,
        "positive": bool(score >= threshold),
        "peaks": peaks,
        "max_location": strongest,
        "spacing_mm": None if spacing is None else list(spacing),
        "spacing_source": str(_first(meta.get("spacing_source")) or ""),
        "coordinates": COORDINATES,
        "landmarks": named,
        **landmark_provenance(data),
        "tps_warp": tps_warp_name(data),
    }


class FractureResultd(MapTransform):
    """Dictionary transform of :func:`fracture_result`: the result of the image under ``output_key``.

    Args:
        keys: the ROI heatmap probabilities (default ``"pred"``; one key).
        output_key: where the result goes.
        threshold: operating threshold (and the peaks' minimum probability).
        peak_min_distance_mm: minimal separation of two peaks in mm.
        max_peaks: at most this many peaks.
        score_key: the image score.
        image_key: the loaded radiograph.
        roi_to_original_key: the (3, 3) ROI -> original matrix.
        landmarks_key: the landmarks used.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_key: str = "fracture_result",
        threshold: float = 0.5,
        peak_min_distance_mm: float = PEAK_MIN_DISTANCE_MM,
        max_peaks: int = MAX_PEAKS,
        score_key: str = "score",
        image_key: str = "image",
        roi_to_original_key: str = "roi_to_original",
        landmarks_key: str = "landmarks",
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"FractureResultd: expected one heatmap key, got {self.keys}.")
        self.output_key = output_key
        self.kwargs = {
            "threshold": float(threshold),
            "peak_min_distance_mm": float(peak_min_distance_mm),
            "max_peaks": int(max_peaks),
            "score_key": score_key,
            "image_key": image_key,
            "roi_to_original_key": roi_to_original_key,
            "landmarks_key": landmarks_key,
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        d[self.output_key] = fracture_result(d, pred_key=self.keys[0], **self.kwargs)
        return d

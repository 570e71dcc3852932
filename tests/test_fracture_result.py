"""The fracture result: built once (``scripts.reporting.fracture_result``), by ``inference.json``'s postprocessing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))

from custom_transforms.conventions import LANDMARK_NAMES  # noqa: E402

from scripts.reporting.fracture_result import FractureResultd, fracture_result, landmark_provenance  # noqa: E402

# ROI pixel [u, v] -> original pixel [2 u + 40, 2 v + 10]: one ROI pixel is two original pixels
ROI_TO_ORIGINAL = np.array([[2.0, 0.0, 40.0], [0.0, 2.0, 10.0], [0.0, 0.0, 1.0]])
ROI_HW = (40, 80)


def bump(center_xy, height, sigma=1.0, shape=ROI_HW) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return height * np.exp(-((xx - center_xy[0]) ** 2 + (yy - center_xy[1]) ** 2) / (2 * sigma**2))


def planted_heatmap() -> np.ndarray:
    """Three peaks in ROI pixels: (20, 20) 0.9 and (26, 20) 0.7, six ROI pixels apart; (60, 30) 0.8, far away."""
    return np.maximum.reduce([bump((20, 20), 0.9), bump((26, 20), 0.7), bump((60, 30), 0.8)])


def image(spacing_mm=(0.5, 0.5), shape=(120, 220)) -> MetaTensor:
    meta = {"filename_or_obj": "/data/case.dcm", "spacing_source": "ImagerPixelSpacing"}
    if spacing_mm is not None:
        meta["spacing_mm"] = spacing_mm
    return MetaTensor(torch.zeros((1, *shape)), meta=meta)


def data(spacing_mm=(0.5, 0.5), **extra) -> dict:
    return {
        "pred": torch.as_tensor(planted_heatmap(), dtype=torch.float32)[None],
        "score": torch.tensor([0.93]),
        "image": image(spacing_mm),
        "roi_to_original": ROI_TO_ORIGINAL,
        "landmarks": np.arange(32, dtype=np.float32).reshape(16, 2),
        **extra,
    }


def xy(points) -> list[tuple[float, float]]:
    return [(p["x"], p["y"]) for p in points]


def test_peaks_are_separated_in_mm_mapped_to_original_pixels_and_strongest_first():
    # spacing 0.5 mm and two original pixels per ROI pixel: one ROI pixel is 1 mm, the close pair is 6 mm apart
    result = fracture_result(data(), threshold=0.5, peak_min_distance_mm=10.0)
    assert xy(result["peaks"]) == [(80.0, 50.0), (160.0, 70.0)]  # ROI (20, 20) and (60, 30); (26, 20) is too close
    assert [p["probability"] for p in result["peaks"]] == pytest.approx([0.9, 0.8])
    assert [(p["x_mm"], p["y_mm"]) for p in result["peaks"]] == [(40.0, 25.0), (80.0, 35.0)]
    assert result["max_location"] == result["peaks"][0]
    assert result["fracture_probability"] == pytest.approx(0.93) and result["positive"] and result["threshold"] == 0.5

    closer = fracture_result(data(), threshold=0.5, peak_min_distance_mm=3.0)
    assert xy(closer["peaks"]) == [(80.0, 50.0), (160.0, 70.0), (92.0, 50.0)]
    assert xy(fracture_result(data(), threshold=0.85)["peaks"]) == [(80.0, 50.0)]  # the threshold bounds the peaks


def test_mm_follow_the_row_and_column_spacing_and_are_null_when_the_spacing_is_unknown():
    result = fracture_result(data(spacing_mm=(0.25, 0.5)), peak_min_distance_mm=10.0)
    assert (result["peaks"][0]["x_mm"], result["peaks"][0]["y_mm"]) == (40.0, 12.5)
    assert result["spacing_mm"] == [0.25, 0.5] and result["spacing_source"] == "ImagerPixelSpacing"

    unknown = fracture_result(data(spacing_mm=None), peak_min_distance_mm=10.0)  # 10 original px = 5 ROI px
    assert xy(unknown["peaks"]) == [(80.0, 50.0), (160.0, 70.0), (92.0, 50.0)]
    assert all(p["x_mm"] is None and p["y_mm"] is None for p in unknown["peaks"]) and unknown["spacing_mm"] is None


def test_the_score_defaults_to_the_heatmap_maximum_and_the_decision_follows_the_threshold():
    without_score = {k: v for k, v in data().items() if k != "score"}
    result = fracture_result(without_score, threshold=0.95)
    assert result["fracture_probability"] == pytest.approx(0.9) and not result["positive"] and result["peaks"] == []
    with pytest.raises(KeyError, match="roi_to_original"):
        fracture_result({k: v for k, v in data().items() if k != "roi_to_original"})


def test_landmarks_and_their_provenance():
    annotated = fracture_result(data())
    assert annotated["landmarks"]["asis_r"] == [0.0, 1.0] and list(annotated["landmarks"]) == list(LANDMARK_NAMES)
    assert annotated["landmark_source"] == "annotation" and annotated["landmark_confidence"] is None

    detected = fracture_result(
        data(
            landmarks_detected=torch.tensor(True),
            landmark_confidence=np.linspace(0.1, 0.9, 16),
            landmark_corrected=np.arange(16) == 3,
            landmark_plausibility=np.float32(0.75),
            tps_warp=["tps"],
        )
    )
    assert detected["landmark_source"] == "detector" and detected["landmarks_detected"]
    assert detected["landmark_plausibility"] == pytest.approx(0.75)
    assert detected["landmark_confidence"][LANDMARK_NAMES[15]] == pytest.approx(0.9)
    assert [n for n, c in detected["corrected_by_shape_model"].items() if c] == [LANDMARK_NAMES[3]]
    assert detected["tps_warp"] == "tps"
    assert landmark_provenance({"landmark_source": "final label"})["landmark_source"] == "final label"


def test_inference_config_postprocessing_puts_the_heatmap_on_the_radiograph_and_builds_the_result():
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO / "bundle")
    postprocessing = parser.get_parsed_content("postprocessing")
    logits = torch.logit(torch.as_tensor(planted_heatmap(), dtype=torch.float32).clamp(1e-6, 1 - 1e-6))[None]
    radiograph = image()
    out = postprocessing({**data(), "pred": logits, "score": None, "radiograph": radiograph, "roi_size": ROI_HW})
    original = out["pred_original"]
    assert tuple(original.shape) == (1, 120, 220)
    assert float(original[0, 50, 80]) == pytest.approx(0.9, abs=1e-3)  # ROI (20, 20) on the radiograph
    assert float(original[0, 5, 5]) == 0.0  # outside the ROI's footprint
    expected = fracture_result({**data(), "score": torch.tensor([out["score"]]).reshape(1)}, threshold=0.5)
    assert out["fracture_result"]["peaks"] == expected["peaks"] and len(expected["peaks"]) == 2
    assert out["fracture_result"]["fracture_probability"] == pytest.approx(0.9, abs=1e-4)  # the configured max pooling


def test_the_dictionary_transform_takes_one_heatmap_key():
    with pytest.raises(ValueError, match="one heatmap key"):
        FractureResultd(keys=["pred", "other"])

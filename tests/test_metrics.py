"""Metrics of the paper (AUC, AP, modified FROC) against values computed by hand."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.reporting.metrics import (  # noqa: E402
    FROCAccumulator,
    classification_metrics,
    image_scores,
    modified_froc,
    negative_region,
)


def test_auc_ap_hand_computed():
    # positive-negative pairs ranked correctly: (0.9>0.8), (0.9>0.3), (0.7>0.3); wrong: (0.7<0.8) -> 3/4
    # AP: recall steps 0.5 at precision 1 (0.9), 0.5 at precision 2/3 (0.7) -> 0.5 + 1/3
    m = classification_metrics([0.9, 0.8, 0.7, 0.3], [1, 0, 1, 0])
    assert m["auc"] == pytest.approx(0.75)
    assert m["ap"] == pytest.approx(0.5 + 1 / 3)


def test_auc_single_class_is_nan_with_warning():
    with pytest.warns(UserWarning, match="single class"):
        m = classification_metrics([0.1, 0.2], [0, 0])
    assert math.isnan(m["auc"]) and math.isnan(m["ap"])


def test_image_score_is_heatmap_maximum():
    h = np.zeros((2, 1, 4, 6))
    h[0, 0, 1, 2] = 0.7
    h[1, 0, 3, 5] = 0.2
    np.testing.assert_allclose(image_scores(h), [0.7, 0.2])


def test_negative_region_isotropic_and_anisotropic():
    # isotropic 1 mm, radius 1.5 mm around [x=1, y=1]: the 3x3 block of rows 0-2, cols 0-2 is excluded
    neg = negative_region((5, 5), np.array([[1.0, 1.0]]), (1.0, 1.0), 1.5)
    expected = np.ones((5, 5), bool)
    expected[0:3, 0:3] = False
    np.testing.assert_array_equal(neg, expected)
    # rows 2 mm apart, columns 1 mm, radius 2.5 mm around [2, 2]: (dx)^2 + (2 dy)^2 <= 6.25
    neg = negative_region((5, 5), np.array([[2.0, 2.0]]), (2.0, 1.0), 2.5)
    excluded = ~neg
    assert excluded.sum() == 11  # 5 on the point's row, 3 on each adjacent row, none two rows away
    np.testing.assert_array_equal(excluded[2], [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(excluded[1], [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(excluded[0], [0, 0, 0, 0, 0])
    # no points: everything is negative
    assert negative_region((3, 4), np.zeros((0, 2)), (1, 1), 20).all()


def _three_images():
    a = np.zeros((5, 5))
    a[1, 1] = 0.8  # the fracture
    a[0, 0] = 0.95  # inside the excluded band: neither FP nor recall
    a[4, 4] = 0.6  # a false positive (1 of 16 negative pixels)
    b = np.zeros((5, 5))  # no fracture: 25 negative pixels
    b[2, 2] = 0.7
    b[3, 3] = 0.5
    c = np.zeros((5, 5))
    c[2, 3] = 0.4  # fracture at x=3, y=2
    c[0, 0] = 0.3
    points = [np.array([[1.0, 1.0]]), np.zeros((0, 2)), np.array([[3.0, 2.0]])]
    return [a, b, c], points, [(1.0, 1.0)] * 3


def test_modified_froc_hand_computed():
    heatmaps, points, spacings = _three_images()
    curve = modified_froc(heatmaps, points, spacings, radius_mm=1.5)
    # thresholds: inf, then the fracture values 0.8 and 0.4
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.8, 0.4])
    np.testing.assert_allclose(curve.recall, [0.0, 0.5, 1.0])
    # t=0.8: no negative pixel >= 0.8; t=0.4: A 1/16, B 2/25, C 0 (0.3 < 0.4) -> mean over 3 images
    np.testing.assert_allclose(curve.fp_ratio, [0.0, 0.0, (1 / 16 + 2 / 25) / 3])
    assert curve.num_fractures == 2 and curve.num_images == 3
    assert curve.recall_at(0.01) == pytest.approx(0.5)
    assert curve.recall_at(0.04) == pytest.approx(0.5)
    assert curve.recall_at(0.05) == pytest.approx(1.0)
    assert curve.threshold_at(0.05) == pytest.approx(0.4)
    assert curve.threshold_at(0.01) == pytest.approx(0.8)


def test_froc_accumulator_equals_batch_and_counts_outside_points_as_missed():
    heatmaps, points, spacings = _three_images()
    acc = FROCAccumulator(radius_mm=1.5)
    for h, p, s in zip(heatmaps, points, spacings):
        acc.add(h[None], p, s)  # a leading channel is accepted
    # a fourth image whose fracture lies outside the grid: a miss at every threshold
    acc.add(np.zeros((5, 5)), np.array([[7.0, 2.0]]), (1.0, 1.0))
    curve = acc.curve()
    assert curve.num_fractures == 3
    np.testing.assert_allclose(curve.recall, [0.0, 1 / 3, 2 / 3])
    # the fourth image adds 0 FP but one more image to the mean; its band clips part of the grid:
    # pixels within 1.5 mm of (7, 2) on a 5x5 grid -> none (nearest column is 4, 3 px away)
    np.testing.assert_allclose(curve.fp_ratio[-1], (1 / 16 + 2 / 25) / 4)
    assert curve.recall_at(1.0) == pytest.approx(2 / 3)


def test_froc_without_fractures_gives_nan_recall():
    curve = modified_froc([np.ones((3, 3))], [np.zeros((0, 2))], [(1, 1)])
    assert math.isnan(curve.recall_at(0.01))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="labels must be 0/1"):
        classification_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="heatmap must be"):
        FROCAccumulator().add(np.zeros((2, 3, 3)), np.zeros((0, 2)), (1, 1))
    with pytest.raises(ValueError, match="2 heatmaps"):
        modified_froc([np.zeros((2, 2))] * 2, [np.zeros((0, 2))], [(1, 1)])


# --------------------------------------------------------------------------- recall per fracture kind and site
def _planted_details_images():
    """Two 20 x 20 images (1 mm pixels, radius 1.5 mm: each point excludes its 3 x 3 block, 382 negative pixels).

    A: fractures at [3, 3] = 0.9 (displaced, superior ramus) and [15, 3] = 0.3 (hairline, ischium); 19 negative
    pixels at 0.4. B: [5, 5] = 0.6 (hairline, superior ramus) and [12, 8] = 0.2 (displaced, parasymphyseal);
    100 negative pixels at 0.25. Mean FP ratio: t = 0.9, 0.6 -> 0; t = 0.3 -> 19 / 382 / 2 = 2.5 %;
    t = 0.2 -> (19 + 100) / 382 / 2 = 15.6 %. So at 1 % FP the threshold is 0.6 (0.9 and 0.6 recalled), at 10 %
    it is 0.3 (0.9, 0.3 and 0.6 recalled; 0.2 missed).
    """
    a = np.zeros((20, 20))
    a[3, 3], a[3, 15] = 0.9, 0.3
    a[19, 0:19] = 0.4
    b = np.zeros((20, 20))
    b[5, 5], b[8, 12] = 0.6, 0.2
    b[15:20, :] = 0.25
    points = [np.array([[3.0, 3.0], [15.0, 3.0]]), np.array([[5.0, 5.0], [12.0, 8.0]])]
    details = [
        [
            {"site": "superior_ramus", "side": "r", "kind": "displaced", "displacement_mm": 3.0, "gap_mm": 1.0},
            {"site": "ischium", "side": "r", "kind": "hairline", "displacement_mm": 0.0, "gap_mm": 0.4},
        ],
        [
            {"site": "superior_ramus", "side": "l", "kind": "hairline", "displacement_mm": 0.0, "gap_mm": 0.5},
            {"site": "parasymphyseal", "side": "l", "kind": "displaced", "displacement_mm": 2.0, "gap_mm": 1.5},
        ],
    ]
    return [a, b], points, details


def test_recall_by_group_hand_computed():
    heatmaps, points, details = _planted_details_images()
    curve = modified_froc(heatmaps, points, [(1.0, 1.0)] * 2, radius_mm=1.5)
    np.testing.assert_allclose(curve.fp_ratio, [0, 0, 0, 19 / 382 / 2, 119 / 382 / 2])
    assert curve.threshold_at(0.01) == pytest.approx(0.6) and curve.threshold_at(0.1) == pytest.approx(0.3)
    np.testing.assert_array_equal(curve.recalled_at(0.01), [True, False, True, False])
    np.testing.assert_array_equal(curve.recalled_per_image(0.1), [2, 1])
    kinds = [d["kind"] for image in details for d in image]
    assert curve.recall_by_group(0.01, kinds) == {
        "displaced": {"num_fractures": 2, "recall": 0.5},
        "hairline": {"num_fractures": 2, "recall": 0.5},
    }
    assert curve.recall_by_group(0.1, kinds) == {
        "displaced": {"num_fractures": 2, "recall": 0.5},
        "hairline": {"num_fractures": 2, "recall": 1.0},
    }
    sites = [d["site"] for image in details for d in image]
    assert curve.recall_by_group(0.1, sites) == {
        "ischium": {"num_fractures": 1, "recall": 1.0},
        "parasymphyseal": {"num_fractures": 1, "recall": 0.0},
        "superior_ramus": {"num_fractures": 2, "recall": 1.0},
    }
    # None leaves a point out; the overall recall is the groups' recalled points over all points
    assert curve.recall_by_group(0.01, [None, None, "x", "x"]) == {"x": {"num_fractures": 2, "recall": 0.5}}
    assert curve.recall_at(0.01) == pytest.approx(0.5) and curve.recall_at(0.1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="3 group labels for 4"):
        curve.recall_by_group(0.01, kinds[:3])


def _write_annotations(folder, details, with_details=True):
    paths = []
    for i, d in enumerate(details):
        ann = {"landmarks": {}, "fractures": [[0, 0]] * len(d), **({"fracture_details": d} if with_details else {})}
        path = folder / f"ann{i}.json"
        path.write_text(json.dumps(ann))
        paths.append(str(path))
    return paths


def _evaluate_planted(tmp_path, annotations):
    from scripts.reporting.evaluation_writer import FractureEvaluationWriter

    heatmaps, points, _ = _planted_details_images()
    writer = FractureEvaluationWriter(tmp_path / "eval", radius_mm=1.5, num_case_pictures=0)
    # a third image, without fractures and all zero: one more image in the FP mean, nothing else
    for i, (h, p, ann) in enumerate(
        zip(heatmaps + [np.zeros((20, 20))], points + [np.zeros((0, 2))], annotations + [None])
    ):
        writer.add(
            {
                "pred": h[None],
                "label": int(len(p) > 0),
                "roi_fractures": p,
                "roi_spacing_mm": (1.0, 1.0),
                "annotation": ann,
                "image": f"img{i}.dcm",
            }
        )
    metrics = writer.write()
    with open(tmp_path / "eval" / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return metrics, json.loads((tmp_path / "eval" / "metrics.json").read_text()), rows


def test_evaluation_writer_reports_recall_per_kind_and_site(tmp_path):
    _, _, details = _planted_details_images()
    _, metrics, rows = _evaluate_planted(tmp_path, _write_annotations(tmp_path, details))
    # the third image (no fracture, no FP) only adds an image to the FP mean: 19/382/3 and 119/382/3
    assert metrics["threshold_at_fp_1pct"] == pytest.approx(0.6)
    assert metrics["threshold_at_fp_10pct"] == pytest.approx(0.3)
    assert metrics["recall_by_kind"] == {
        "displaced": {"num_fractures": 2, "recall_at_fp_1pct": 0.5, "recall_at_fp_10pct": 0.5},
        "hairline": {"num_fractures": 2, "recall_at_fp_1pct": 0.5, "recall_at_fp_10pct": 1.0},
    }
    assert metrics["recall_by_site"] == {  # no inferior-ramus fracture: no such group
        "ischium": {"num_fractures": 1, "recall_at_fp_1pct": 0.0, "recall_at_fp_10pct": 1.0},
        "parasymphyseal": {"num_fractures": 1, "recall_at_fp_1pct": 0.0, "recall_at_fp_10pct": 0.0},
        "superior_ramus": {"num_fractures": 2, "recall_at_fp_1pct": 1.0, "recall_at_fp_10pct": 1.0},
    }
    assert [r["fracture_kind"] for r in rows] == ["displaced;hairline", "hairline;displaced", ""]
    assert [r["fracture_site"] for r in rows] == ["superior_ramus;ischium", "superior_ramus;parasymphyseal", ""]
    assert [int(r["recalled_at_fp_1pct"]) for r in rows] == [1, 1, 0]
    assert [int(r["recalled_at_fp_10pct"]) for r in rows] == [2, 1, 0]


def test_evaluation_writer_without_fracture_details(tmp_path):
    """Real annotations have no ``fracture_details``: the same figures, no per-group keys or columns."""
    _, _, details = _planted_details_images()
    _, metrics, rows = _evaluate_planted(tmp_path, _write_annotations(tmp_path, details, with_details=False))
    assert metrics["recall_at_fp_1pct"] == pytest.approx(0.5) and metrics["recall_at_fp_10pct"] == pytest.approx(0.75)
    assert not any(k.startswith("recall_by_") for k in metrics) and "fracture_kind" not in rows[0]
    # details that do not match the points (one entry for two points) are ignored for that image only
    bad = _write_annotations(tmp_path, [details[0][:1], details[1]])
    _, metrics, _ = _evaluate_planted(tmp_path, bad)
    assert metrics["recall_by_kind"] == {
        "displaced": {"num_fractures": 1, "recall_at_fp_1pct": 0.0, "recall_at_fp_10pct": 0.0},
        "hairline": {"num_fractures": 1, "recall_at_fp_1pct": 1.0, "recall_at_fp_10pct": 1.0},
    }

"""Landmark metrics (MRE, SDR) against values computed by hand."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from custom_transforms.conventions import LANDMARK_NAMES  # noqa: E402

from scripts.landmarks.metrics import (  # noqa: E402
    MeanRadialErrorMetric,
    SuccessDetectionRateMetric,
    landmark_summary,
    radial_errors_mm,
    write_landmark_metrics,
)


def test_radial_error_uses_row_and_column_spacing():
    true = np.zeros((2, 2))
    pred = np.array([[3.0, 0.0], [0.0, 4.0]])  # 3 px in x, 4 px in y
    # spacing (row, col) = (0.5, 0.2): x errors scale by 0.2, y errors by 0.5
    np.testing.assert_allclose(radial_errors_mm(pred, true, (0.5, 0.2)), [0.6, 2.0])
    # per-image spacings broadcast over landmarks
    both = radial_errors_mm(np.stack([pred, pred]), np.zeros((2, 2, 2)), [(0.5, 0.2), (1.0, 1.0)])
    np.testing.assert_allclose(both, [[0.6, 2.0], [3.0, 4.0]])
    # no spacing: already mm
    np.testing.assert_allclose(radial_errors_mm([[3.0, 4.0]], [[0.0, 0.0]]), [5.0])
    with pytest.raises(ValueError, match="must both be"):
        radial_errors_mm(np.zeros((3, 2)), np.zeros((2, 2)))


def _errors():
    errors = np.full((2, 16), 1.0)
    errors[0, 0] = 2.5  # within 2.5 and above 2
    errors[1, 0] = 3.5  # within 4 only
    errors[1, 5] = 10.0  # a miss
    return errors


def test_summary_hand_computed():
    s = landmark_summary(_errors())
    n = 32
    assert s["images"] == 2
    assert s["overall"]["mre_mm"] == pytest.approx((29 * 1.0 + 2.5 + 3.5 + 10.0) / n)
    assert s["overall"]["sdr_2mm"] == pytest.approx(100 * 29 / n)
    assert s["overall"]["sdr_2.5mm"] == pytest.approx(100 * 30 / n)
    assert s["overall"]["sdr_3mm"] == pytest.approx(100 * 30 / n)
    assert s["overall"]["sdr_4mm"] == pytest.approx(100 * 31 / n)
    first = s["per_landmark"][LANDMARK_NAMES[0]]
    assert first["mre_mm"] == pytest.approx(3.0) and first["sdr_2.5mm"] == pytest.approx(50.0)
    assert s["per_landmark"][LANDMARK_NAMES[5]]["max_mm"] == pytest.approx(10.0)


def test_write_metrics_files(tmp_path):
    summary = write_landmark_metrics(_errors(), tmp_path, case_ids=["a", "b"], extra={"fold": 0})
    on_disk = json.loads((tmp_path / "landmark_metrics.json").read_text())
    assert on_disk["overall"] == pytest.approx(summary["overall"]) and on_disk["fold"] == 0
    rows = list(csv.reader(open(tmp_path / "landmark_errors.csv")))
    assert rows[0][:3] == ["case", "mre_mm", LANDMARK_NAMES[0]]
    assert rows[2][0] == "b" and float(rows[2][1]) == pytest.approx((14 + 3.5 + 10) / 16, abs=1e-4)


def test_cumulative_metrics_for_evaluators():
    mre, sdr = MeanRadialErrorMetric(), SuccessDetectionRateMetric(radius_mm=4.0)
    true = torch.zeros(1, 16, 2)
    for pred in (torch.zeros(1, 16, 2), torch.full((1, 16, 2), 3.0)):  # errors 0 and 3*sqrt(2)
        mre(pred, true)
        sdr(pred, true)
    assert mre.aggregate().item() == pytest.approx(3 * np.sqrt(2) / 2)
    assert sdr.aggregate().item() == pytest.approx(50.0)

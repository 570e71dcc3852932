"""Simulated fracture labels: all inside the anterior-pelvis ROI, described per fracture; intact twins.

The ROI check goes through the preprocessing itself (``MirroredROI`` on the rendered image and its true landmarks),
not through the rule the simulator places the breaks with.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from custom_transforms.roi import MirroredROI
from custom_transforms.symmetry import SymmetryAxis
from simulation import generate_dataset, render
from simulation.anatomy import atlas_anatomy
from simulation.atlas import default_atlas_dir, list_members
from simulation.render import ROI_LABEL_CLEARANCE_MM

SIZE = (192, 192)
NUM_RENDERS = 200


@pytest.fixture(scope="module")
def anatomies():
    atlas = default_atlas_dir()
    return [atlas_anatomy(str(atlas), member) for member in list_members(atlas)[:6]]


def _roi_clearance_mm(result) -> np.ndarray:
    """Distance (mm) of each label to the nearest edge of the ROI that the preprocessing cuts (paper size)."""
    image = result.pixels[None].astype(np.float32)
    mirror = SymmetryAxis()(result.landmarks)["mirror_matrix"]
    roi = MirroredROI(roi_size=(256, 512))(image, result.landmarks, mirror, result.fractures, result.spacing_mm)
    points = np.asarray(roi["roi_fractures"], dtype=np.float64)
    h, w = roi["roi_size"]
    inside_px = np.minimum(points + 0.5, np.array([w, h]) - 0.5 - points)  # ROI pixel edges at -0.5 and size - 0.5
    roi_mm = np.asarray(roi["roi_spacing_mm"], dtype=np.float64)[::-1]  # (row, col) -> (x, y)
    return (inside_px * roi_mm).min(axis=1)


def test_no_simulated_fracture_label_lies_outside_the_roi(anatomies):
    clearances, kinds, sites = [], set(), set()
    for i in range(NUM_RENDERS):
        result = render(anatomies[i % len(anatomies)], np.random.default_rng([17, i]), SIZE, positive=True)
        clearances.extend(_roi_clearance_mm(result))
        kinds.update(f["kind"] for f in result.info["fractures"])
        sites.update(f["site"] for f in result.info["fractures"])
    clearances = np.asarray(clearances)
    assert len(clearances) >= NUM_RENDERS  # every positive film has at least one break
    share_outside = float(np.mean(clearances < ROI_LABEL_CLEARANCE_MM - 0.5))  # 0.5 mm: the ROI's rounding
    assert share_outside == 0.0, f"{share_outside:.1%} of labels closer than {ROI_LABEL_CLEARANCE_MM} mm to the edge"
    # the placement keeps the mix: both kinds and all four sites still occur
    assert kinds == {"displaced", "hairline"}
    assert sites == {"superior_ramus", "inferior_ramus", "parasymphyseal", "ischium"}


def test_annotation_describes_each_fracture_and_twins_differ_only_at_the_breaks(tmp_path):
    datalist = generate_dataset(
        tmp_path, 6, anatomy="atlas", seed=3, size=SIZE, positive_fraction=0.5, progress=False, intact_twins=True
    )
    content = json.loads(open(datalist).read())
    fractured = [it for it in content["training"] if it["label"] == 1]
    assert len(content["intact_twins"]) == len(fractured) == 3
    assert all("intact_twin_of" not in it for it in content["training"])  # twins never among the split's items
    import pydicom

    for twin in content["intact_twins"]:
        original = json.loads(
            (tmp_path / twin["intact_twin_of"].replace("images/", "annotations/").replace(".dcm", ".json")).read_text()
        )
        details = original["fracture_details"]
        assert len(details) == len(original["fractures"]) >= 1
        for d in details:
            assert d["kind"] in ("displaced", "hairline") and d["gap_mm"] > 0
            assert (d["displacement_mm"] > 0) == (d["kind"] == "displaced")
        twin_annotation = json.loads((tmp_path / twin["annotation"]).read_text())
        assert twin_annotation["fractures"] == [] and twin_annotation["landmarks"] == original["landmarks"]
        a = pydicom.dcmread(tmp_path / twin["intact_twin_of"]).pixel_array.astype(np.float64)
        b = pydicom.dcmread(tmp_path / twin["image"]).pixel_array.astype(np.float64)
        changed = np.argwhere(np.abs(a - b) > 8)  # (row, col)
        assert len(changed) > 0
        labels = np.asarray(original["fractures"])[:, ::-1]  # [x, y] -> (row, col)
        distance_mm = (
            np.min(np.linalg.norm(changed[:, None] - labels[None], axis=2), axis=1) * original["spacing_mm"][0]
        )
        # the change sits at the breaks: a displaced fragment moves over up to 16 mm from the plane, plus its shift
        assert np.percentile(distance_mm, 99) < 35.0
        assert len(changed) < 0.02 * a.size


def test_refused_geometry_is_drawn_again(anatomies, monkeypatch):
    import simulation.dataset as dataset

    refusals = []

    def refuse_first(landmarks, spacing_mm):
        refusals.append(len(refusals))
        return "the thin-plate spline warp folds" if len(refusals) == 1 else None

    monkeypatch.setattr(dataset, "geometry_refusal", refuse_first)
    result = dataset._render_usable(anatomies[0], 5, 7, SIZE, True, False)
    expected = render(anatomies[0], np.random.default_rng([5, 7, 1]), SIZE, positive=True)  # the second pose
    assert len(refusals) == 2 and np.array_equal(result.pixels, expected.pixels)


def test_geometry_refusal_names_a_folding_warp_and_passes_a_pelvis(anatomies):
    from simulation.dataset import geometry_refusal

    result = render(anatomies[1], np.random.default_rng([9, 0]), SIZE, positive=False)
    assert geometry_refusal(result.landmarks, result.spacing_mm) is None
    folded = result.landmarks.copy()
    from custom_transforms.conventions import LANDMARK_INDEX

    # the left obturator's top and bottom exchanged: the mirrored side no longer matches, the warp folds
    a, b = LANDMARK_INDEX["obturator_superior_l"], LANDMARK_INDEX["obturator_inferior_l"]
    folded[[a, b]] = folded[[b, a]]
    assert "thin-plate spline" in geometry_refusal(folded, result.spacing_mm)

"""Warped atlas members (``simulation.atlas_warp``): the id format, the displacement field against a hand
computation, corridors moving with the bone, left/right independence, warps read through the atlas like members
(packed subset), and the simulator's ``--blends`` and ``--warps`` writing each item's parents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulation import AtlasError
from simulation.atlas import SUBSET_DIR, load_member, parent_members, unknown_subjects
from simulation.atlas_blend import parse_blend_id
from simulation.atlas_warp import (
    displacement_field,
    parse_warp_id,
    random_field,
    warp_id,
    warp_ids,
    warp_surfaces,
)
from simulation.mesh import Mesh


def test_warp_ids_round_trip_and_reject_what_is_not_a_warp():
    assert warp_id("10", 412) == "10v0412"
    assert warp_id("10x24w35", 7) == "10x24w35v0007"
    assert parse_warp_id("10x24w35v0007") == ("10x24w35", 7)
    assert parse_warp_id("10") is None and parse_warp_id("10x24w35") is None and parse_warp_id("10v12") is None
    with pytest.raises(ValueError, match="unwarped base id"):
        warp_id("10v0001", 2)  # a warp of a warp is not an id: one field per subject
    with pytest.raises(ValueError, match="seed of 0-9999"):
        warp_id("10", 10000)


def test_warp_ids_are_seeded_distinct_and_order_independent():
    ids = warp_ids(["3", "4", "6"], 12, seed=5)
    assert ids == warp_ids(["6", "3", "4"], 12, seed=5) and ids != warp_ids(["3", "4", "6"], 12, seed=6)
    assert len(set(ids)) == 12 and {parse_warp_id(i)[0] for i in ids} <= {"3", "4", "6"}


def test_displacement_field_is_the_hand_computed_sum_of_bumps():
    centres = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]])
    vectors = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, -3.0]])
    field = displacement_field(centres, vectors, sigma=10.0)
    points = np.array([[0.0, 0.0, 0.0], [0.0, 10.0, 0.0], [100.0, 0.0, 20.0]])
    expected = np.array(
        [
            [1.0, 2.0, -3.0 * np.exp(-(100.0**2) / 200.0)],
            [np.exp(-0.5), 2.0 * np.exp(-0.5), -3.0 * np.exp(-(100.0**2 + 10.0**2) / 200.0)],
            [np.exp(-(100.0**2 + 20.0**2) / 200.0), 2.0 * np.exp(-(100.0**2 + 20.0**2) / 200.0), -3.0 * np.exp(-2.0)],
        ]
    )
    np.testing.assert_allclose(field(points), expected, rtol=1e-12, atol=1e-300)


def _planted_member(vertices):
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    surfaces = {
        bone: (f"planted {bone}", Mesh(vertices[i], faces)) for i, bone in enumerate(("hip_l", "hip_r", "sacrum"))
    }
    corridor = Mesh(vertices[1][:3] + [0.0, 0.0, 0.5], np.array([[0, 1, 2]]))  # beside hip_r's first vertices
    return surfaces, {"r": ("planted ramus_r", corridor)}


def test_warp_moves_bones_and_corridors_by_the_same_field():
    rng = np.random.default_rng(3)
    vertices = rng.normal(size=(3, 8, 3)) * 20.0 + [[[-60.0, 0.0, 0.0]], [[60.0, 0.0, 0.0]], [[0.0, 40.0, 0.0]]]
    base = _planted_member(vertices)
    surfaces, corridors = warp_surfaces(base, 412, "7v0412")
    anchors = np.concatenate([vertices[i] for i in (0, 1, 2)])  # hip_l, hip_r, sacrum: the sorted bone order
    field = random_field(anchors, 412)
    for i, bone in enumerate(("hip_l", "hip_r", "sacrum")):
        np.testing.assert_allclose(surfaces[bone][1].vertices, vertices[i] + field(vertices[i]), atol=1e-12)
        np.testing.assert_array_equal(surfaces[bone][1].faces, base[0][bone][1].faces)
        assert "7v0412" in surfaces[bone][0]
    corridor = base[1]["r"][1].vertices
    np.testing.assert_allclose(corridors["r"][1].vertices, corridor + field(corridor), atol=1e-12)
    assert np.abs(field(anchors)).max() > 0.5  # it moves them at all
    again, _ = warp_surfaces(base, 412, "7v0412")
    other, _ = warp_surfaces(base, 413, "7v0413")
    np.testing.assert_array_equal(again["hip_l"][1].vertices, surfaces["hip_l"][1].vertices)
    assert not np.allclose(other["hip_l"][1].vertices, surfaces["hip_l"][1].vertices)


def test_a_warp_of_a_symmetric_pelvis_is_not_symmetric():
    rng = np.random.default_rng(4)
    right = rng.normal(size=(200, 3)) * 25.0 + [70.0, 0.0, 0.0]
    left = right * [-1.0, 1.0, 1.0]  # the mirror image about the sagittal plane x = 0
    field = random_field(np.concatenate([left, right]), 9)
    moved_left, moved_right = left + field(left), right + field(right)
    # a symmetric field would keep the mirror relation; the warp's halves move independently by millimetres
    asymmetry = np.linalg.norm(moved_left * [-1.0, 1.0, 1.0] - moved_right, axis=1)
    assert np.median(asymmetry) > 1.0


def test_a_warp_loads_like_a_member_and_names_its_members():
    members = ["10", "14", "33"]
    assert unknown_subjects(["10v0001", "10x14w40v0002", "99v0001", "10v0001v0002"], members) == [
        "99v0001",
        "10v0001v0002",
    ]
    assert parent_members("10v0001") == ["10"] and parent_members("10x14w40v0002") == ["10", "14"]
    assert parent_members("10x14w40") == ["10", "14"] and parent_members("10") is None
    base, warped = load_member(SUBSET_DIR, "10"), load_member(SUBSET_DIR, "10v0001")
    anchors = np.concatenate([base.raw_vertices[bone] for bone in sorted(base.raw_vertices)])
    field = random_field(anchors, 1)
    for bone in base.raw_vertices:
        np.testing.assert_allclose(
            warped.raw_vertices[bone], base.raw_vertices[bone] + field(base.raw_vertices[bone]), atol=1e-9
        )
    assert set(warped.ramus_corridors) == set(base.ramus_corridors)
    with pytest.raises(AtlasError, match="unknown subject id '99v0001'"):
        load_member(SUBSET_DIR, "99v0001")


@pytest.mark.parametrize(
    "flag, parents",
    [
        ("--blends", lambda subject: list(parse_blend_id(subject)[:2])),
        ("--warps", lambda subject: [parse_warp_id(subject)[0]]),
    ],
)
def test_simulated_blends_and_warps_name_their_parents_and_their_twins_too(tmp_path, flag, parents):
    from simulation.__main__ import main as cli

    argv = ["generate", "--anatomy", "atlas", "--atlas-dir", str(SUBSET_DIR), "--subjects", "10,14,33"]
    argv += [flag, "2", "--n", "2", "--size", "96", "--positive-fraction", "1", "--intact-twins"]
    assert cli([*argv, "--seed", "4", "--no-progress", "--out", str(tmp_path)]) == 0
    content = json.loads((tmp_path / "datalist.json").read_text())
    assert len(content["training"]) == 2 and len(content["intact_twins"]) == 2
    for item in content["training"] + content["intact_twins"]:
        members = parents(item["subject"].removeprefix("atlas-"))
        assert item["parents"] == [f"atlas-{m}" for m in members] and set(members) <= {"10", "14", "33"}
    assert cli(["generate", "--anatomy", "procedural", flag, "2", "--n", "2", "--out", str(tmp_path / "p")]) == 2

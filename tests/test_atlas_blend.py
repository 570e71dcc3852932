"""Blended atlas members (``simulation.atlas_blend``): the id format, the rigid alignment, the blend's vertices
and corridors against hand computations, and blends read through the atlas like members (packed subset). The
simulator's ``--blends`` is tested with ``--warps`` in ``test_atlas_warp.py``."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import AtlasError
from simulation.atlas import SUBSET_DIR, load_member, unknown_subjects
from simulation.atlas_blend import blend_id, blend_ids, blend_surfaces, parse_blend_id, rigid_fit
from simulation.mesh import Mesh


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def test_blend_ids_round_trip_and_reject_what_is_not_a_blend():
    assert blend_id("10", "24", 0.35) == "10x24w35"
    assert parse_blend_id("10x24w35") == ("10", "24", 0.35)
    assert parse_blend_id("24") is None
    assert parse_blend_id("10x10w35") is None  # a member with itself is no new shape
    assert parse_blend_id("10x24w00") is None
    with pytest.raises(ValueError, match="two different members"):
        blend_id("10", "10", 0.5)
    with pytest.raises(ValueError, match="share of 0.01-0.99"):
        blend_id("10", "24", 1.0)


def test_blend_ids_are_seeded_distinct_pairs_of_the_given_members():
    members = ["3", "4", "6", "8"]
    ids = blend_ids(members, 10, seed=5)
    assert ids == blend_ids(members[::-1], 10, seed=5) and ids != blend_ids(members, 10, seed=6)
    assert len(set(ids)) == 10
    for subject in ids:
        a, b, share = parse_blend_id(subject)
        assert a in members and b in members and a != b and 0.25 <= share <= 0.75
    with pytest.raises(ValueError, match="at least two members"):
        blend_ids(["3"], 1, seed=0)


def test_rigid_fit_recovers_a_planted_rotation_and_translation():
    rng = np.random.default_rng(0)
    fixed = rng.normal(size=(50, 3)) * [30.0, 20.0, 10.0]
    rotation, translation = _rotation([1, 2, 3], 25.0), np.array([5.0, -40.0, 12.0])
    moving = (fixed - translation) @ rotation  # fixed = moving @ R.T + t
    r, t = rigid_fit(moving, fixed)
    np.testing.assert_allclose(r, rotation, atol=1e-9)
    np.testing.assert_allclose(t, translation, atol=1e-9)


def _planted_member(vertices: np.ndarray) -> tuple[dict, dict]:
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    surfaces = {
        bone: (f"planted {bone}", Mesh(vertices[i], faces)) for i, bone in enumerate(("hip_l", "hip_r", "sacrum"))
    }
    corridor = Mesh(vertices[1][:3].copy(), np.array([[0, 1, 2]]))  # on hip_r's first three vertices
    return surfaces, {"r": ("planted ramus_r", corridor)}


def test_blend_of_a_member_with_its_scaled_copy_is_the_hand_computed_scaling():
    rng = np.random.default_rng(1)
    vertices = rng.normal(size=(3, 4, 3)) * 20.0 + [[[0.0, 0.0, 0.0]], [[60.0, 0.0, 0.0]], [[30.0, 40.0, 10.0]]]
    centre = vertices.reshape(-1, 3).mean(0)
    # b: a scaled by 1.2 about its centre, then moved rigidly; the alignment undoes the move, not the scaling
    scaled = centre + 1.2 * (vertices - centre)
    moved = scaled @ _rotation([0, 0, 1], 40.0).T + [100.0, -20.0, 3.0]
    surfaces, corridors = blend_surfaces(_planted_member(vertices), _planted_member(moved), 0.25, "7x9w25")
    expected = centre + 1.05 * (vertices - centre)  # (1 - 0.25) * 1 + 0.25 * 1.2
    for i, bone in enumerate(("hip_l", "hip_r", "sacrum")):
        np.testing.assert_allclose(surfaces[bone][1].vertices, expected[i], atol=1e-9)
        assert "7x9w25" in surfaces[bone][0]
    # each corridor vertex moves as its nearest hip vertex (here: sits on it)
    np.testing.assert_allclose(corridors["r"][1].vertices, expected[1][:3], atol=1e-9)


def test_blend_of_members_out_of_correspondence_is_refused():
    rng = np.random.default_rng(2)
    a = _planted_member(rng.normal(size=(3, 4, 3)))
    b = _planted_member(rng.normal(size=(3, 4, 3)))
    b[0]["sacrum"] = (
        "other sacrum",
        Mesh(b[0]["sacrum"][1].vertices, np.array([[0, 2, 1], [0, 3, 2], [0, 1, 3], [1, 2, 3]])),
    )
    with pytest.raises(ValueError, match="other sacrum: not in vertex correspondence"):
        blend_surfaces(a, b, 0.5, "1x2w50")


def test_a_blend_loads_like_a_member_and_lies_between_its_parents():
    members = ["10", "14", "33"]
    assert unknown_subjects(["10x14w40", "10", "10x99w40", "77"], members) == ["10x99w40", "77"]
    a, b = load_member(SUBSET_DIR, "10"), load_member(SUBSET_DIR, "14")
    blend = load_member(SUBSET_DIR, "10x14w40")
    assert blend.subject == "10x14w40" and set(blend.bones) == set(a.bones)
    for bone in a.bones:  # the enclosed volume lies between the parents' (the shapes are blended, not scaled)
        lo, hi = sorted((a.bones[bone].signed_volume(), b.bones[bone].signed_volume()))
        assert lo < blend.bones[bone].signed_volume() < hi

    # b is aligned onto a over all three bones, so the blend keeps a's centroid of all vertices
    def centroid(member):
        return np.concatenate([member.raw_vertices[bone] for bone in sorted(member.raw_vertices)]).mean(0)

    np.testing.assert_allclose(centroid(blend), centroid(a), atol=1e-3)
    assert np.abs(blend.raw_vertices["hip_r"] - a.raw_vertices["hip_r"]).max() > 1.0  # and is not a itself
    assert set(blend.ramus_corridors) == set(a.ramus_corridors)
    with pytest.raises(AtlasError, match="unknown subject id '10x99w40'"):
        load_member(SUBSET_DIR, "10x99w40")

"""Radiograph simulator on the pelvis atlas: input errors (synthetic folders) and, when the atlas is
present, its landmark definition and geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from custom_transforms.conventions import LANDMARK_NAMES
from simulation import AtlasError, default_atlas_dir, generate_dataset, render
from simulation.__main__ import main as cli
from simulation.atlas import list_members, load_member

from test_simulation import assert_landmarks_on_bone

ATLAS = default_atlas_dir()
needs_atlas = pytest.mark.skipif(ATLAS is None, reason="pelvis atlas (../shared/data/pelvis_atlas) not present")

TETRA = """# vtk DataFile Version 4.0
vtk output
ASCII
DATASET POLYDATA
POINTS 4 float
0 0 0 10 0 0 0 10 0 0 0 10
POLYGONS 4 16
3 0 2 1
3 0 1 3
3 0 3 2
3 1 2 3
"""


def _member(root: Path, subject: str, bones=("left", "right", "sacrum"), text: str = TETRA) -> None:
    names = {"left": "LeftHip", "right": "RightHip", "sacrum": "Sacrum"}
    for b in bones:
        p = root / "surface" / b / f"{names[b]}{subject}_cpd.vtk"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_missing_atlas_directory_is_named(tmp_path):
    with pytest.raises(AtlasError, match=str(tmp_path / "nope")):
        generate_dataset(tmp_path / "out", 1, anatomy="atlas", atlas_dir=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match="surface"):
        list_members(tmp_path / "empty")


def test_member_without_all_three_bones_names_the_missing_file(tmp_path):
    _member(tmp_path, "7", bones=("left", "sacrum"))
    with pytest.raises(AtlasError, match=r"RightHip7_cpd\.vtk: missing"):
        list_members(tmp_path)


def test_malformed_mesh_names_the_file(tmp_path):
    _member(tmp_path, "7")
    bad = tmp_path / "surface" / "left" / "LeftHip7_cpd.vtk"
    bad.write_text("# vtk DataFile Version 4.0\nvtk output\nASCII\nDATASET POLYDATA\nPOINTS 5000 float\n1 2 3\n")
    with pytest.raises(AtlasError, match=r"LeftHip7_cpd\.vtk: POINTS declares 5000 points"):
        load_member(tmp_path, "7")
    bad.write_bytes(b"\x00\xff\x10 binary")
    with pytest.raises(AtlasError, match=r"LeftHip7_cpd\.vtk"):
        load_member(tmp_path, "7")


def test_mesh_without_atlas_correspondence_is_rejected(tmp_path):
    _member(tmp_path, "7")
    with pytest.raises(AtlasError, match=r"LeftHip7_cpd\.vtk: has 4 vertices, expected 5000"):
        load_member(tmp_path, "7")


def test_unknown_subject_id_lists_the_available_ones(tmp_path, capsys):
    _member(tmp_path, "7")
    with pytest.raises(AtlasError, match=r"unknown subject id\(s\) \['99'\]; available: 7"):
        generate_dataset(tmp_path / "out", 1, anatomy="atlas", atlas_dir=tmp_path, subjects=["99"])
    code = cli(["generate", "--anatomy", "atlas", "--atlas-dir", str(tmp_path), "--subjects", "99", "--n", "1", "--out", str(tmp_path / "o")])
    assert code == 2 and "unknown subject" in capsys.readouterr().err


@needs_atlas
def test_landmark_vertices_are_what_the_documented_rules_give():
    from simulation.landmark_rules import derive_landmark_definitions
    from simulation.landmarks import landmark_definitions

    derived = derive_landmark_definitions(ATLAS)["landmarks"]
    stored = landmark_definitions()
    for name, d in stored.items():
        if "vertex" in d:
            assert derived[name]["vertex"] == d["vertex"], name
        else:
            assert derived[name]["sphere_fit_vertices"] == d["sphere_fit_vertices"], name


@needs_atlas
def test_atlas_landmarks_are_anatomically_ordered_in_every_member():
    """Vertex ids hold across members: in each member's LPS frame the landmarks keep their anatomy."""
    from simulation.landmarks import acetabulum_radius, atlas_landmarks

    ix = {n: i for i, n in enumerate(LANDMARK_NAMES)}
    for subject in list_members(ATLAS):
        m = load_member(ATLAS, subject)
        L = atlas_landmarks(m.raw_vertices)
        for pair in ("asis", "acetabulum_center", "obturator_superior", "pubic_tubercle", "ischial_tuberosity"):
            assert L[ix[f"{pair}_r"], 0] < L[ix[f"{pair}_l"], 0], (subject, pair)  # right at -x
        for side in "rl":
            assert L[ix[f"asis_{side}"], 2] > L[ix[f"acetabulum_center_{side}"], 2] > L[ix[f"ischial_tuberosity_{side}"], 2]
            assert L[ix[f"obturator_superior_{side}"], 2] > L[ix[f"obturator_inferior_{side}"], 2]
            assert 20.0 < acetabulum_radius(m.raw_vertices, side) < 32.0, (subject, side)
        assert L[ix["symphysis_superior"], 2] > L[ix["symphysis_inferior"], 2]


@needs_atlas
def test_atlas_radiograph_landmarks_and_fractures_on_bone():
    from simulation import atlas_anatomy

    anatomy = atlas_anatomy(ATLAS, "10")
    res = render(anatomy, np.random.default_rng(2), (192, 192), positive=True)
    assert len(res.fractures) >= 1
    assert_landmarks_on_bone(res)
    for x, y in res.fractures:
        assert res.bone_path_mm[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2].max() > 1.0


@needs_atlas
def test_atlas_dataset_carries_attribution_and_subject_folds(tmp_path):
    path = Path(generate_dataset(tmp_path, 3, anatomy="atlas", seed=0, size=(96, 96), subjects=["2", "3", "4"], progress=False))
    dl = json.loads(path.read_text())
    assert "CC BY 4.0" in dl["attribution"]
    assert {it["subject"] for it in dl["training"]} == {"atlas-2", "atlas-3", "atlas-4"}
    import pydicom

    ds = pydicom.dcmread(path.parent / dl["training"][0]["image"])
    assert "CC BY 4.0" in ds.ImageComments

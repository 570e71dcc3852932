"""Radiograph simulator: geometry, labels, files, reproducibility, errors (small images, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from custom_transforms import LoadAnnotationd, LoadPXRd
from custom_transforms.conventions import LANDMARK_INDEX, LANDMARK_NAMES
from simulation import generate_dataset, procedural_anatomy, render
from simulation.__main__ import main as cli
from simulation.camera import ConeBeamCamera, Pose, apply
from simulation.fracture import Fracture, fracture_patch_projection, sample_fracture
from simulation.mesh import Mesh
from simulation.rasterize import rasterize_chords
from simulation.sdf import grid, mesh_level, sphere

SIZE = (160, 160)


def _sphere_mesh(radius=20.3, centre=(0.0, 0.0, 0.0)) -> Mesh:
    p, origin = grid((-30, -30, -30), (30, 30, 30), 1.0)
    return mesh_level(sphere(p, centre, radius), origin, 1.0)


@pytest.mark.parametrize("offset", [0.0, 0.371])
def test_rasterised_chords_equal_the_sphere_s_analytic_chords(offset):
    """Parallel rays through a sphere: exact chord 2*sqrt(r^2 - d^2); integer offsets exercise the tie rule."""
    r = 20.3
    mesh = _sphere_mesh(r)
    uv = np.stack([mesh.vertices[:, 0] * 2 + 64 + offset, -mesh.vertices[:, 2] * 2 + 64 + offset], 1)
    chord, crossings = rasterize_chords(uv, mesh.vertices[:, 1] + 1000.0, mesh.faces, (128, 128))
    assert np.all(crossings == 0)  # every ray enters as often as it leaves
    yy, xx = np.mgrid[0:128, 0:128]
    d2 = ((xx - 64 - offset) / 2) ** 2 + ((yy - 64 - offset) / 2) ** 2
    analytic = 2 * np.sqrt(np.clip(r**2 - d2, 0, None))
    inner = d2 < (r - 1.5) ** 2
    assert np.abs(chord - analytic)[inner].max() < 0.15  # marching-cubes facets only
    assert np.all(chord[d2 > (r + 1) ** 2] == 0)


def test_camera_orientation_and_magnification():
    cam = ConeBeamCamera(sdd_mm=1000.0, sod_mm=800.0, shape=(101, 201), pixel_mm=(1.0, 1.0))
    # Isocentre -> detector centre; 10 mm to the patient's left (+x) -> 12.5 px to the right.
    np.testing.assert_allclose(cam.project([0.0, 0.0, 0.0]), [100.0, 50.0])
    np.testing.assert_allclose(cam.project([10.0, 0.0, 0.0]), [112.5, 50.0])
    # Superior (+z) is up (smaller row); patient right (-x) on the viewer's left (smaller column).
    assert cam.project([0.0, 0.0, 10.0])[1] < 50.0
    assert cam.project([-10.0, 0.0, 0.0])[0] < 100.0
    # Nearer the source magnifies more.
    assert cam.project([10.0, -100.0, 0.0])[0] > cam.project([10.0, 100.0, 0.0])[0]


@pytest.fixture(scope="module")
def subject():
    return procedural_anatomy("P001", seed=0)


def assert_landmarks_on_bone(res) -> None:
    """Paired landmarks (surface vertices, possibly on a silhouette) within 1.5 mm of projected bone;
    the midline symphysis points in the joint: pubic bone within 10 mm on both sides of the same row."""
    pixel = res.spacing_mm[1] / res.info["magnification"]  # mm at the pelvis
    for name, xy in zip(LANDMARK_NAMES, res.landmarks):
        if name.startswith("symphysis"):
            x, y = int(round(xy[0])), int(round(xy[1]))
            reach = int(np.ceil(10.0 / pixel))
            rows = res.bone_path_mm[max(y - 1, 0) : y + 2]
            assert rows[:, max(x - reach, 0) : x + 1].max() > 0.5 and rows[:, x : x + reach + 1].max() > 0.5, (
                f"{name} not between the pubic bones"
            )
        else:
            assert _near(res.bone_path_mm, xy, int(np.ceil(1.5 / pixel))) > 0.5, f"{name} not on bone"


def _near(img: np.ndarray, xy, radius: int = 1) -> float:
    x, y = int(round(xy[0])), int(round(xy[1]))
    return float(img[max(y - radius, 0) : y + radius + 1, max(x - radius, 0) : x + radius + 1].max())


def test_landmarks_project_inside_the_image_and_on_bone(subject):
    for seed in range(3):
        res = render(subject, np.random.default_rng(seed), SIZE, positive=False)
        h, w = SIZE
        assert np.all((res.landmarks >= -0.5) & (res.landmarks <= np.array([w, h]) - 0.5))
        assert_landmarks_on_bone(res)
        # Patient right on the viewer's left, superior up.
        li = LANDMARK_INDEX
        assert res.landmarks[li["asis_r"], 0] < res.landmarks[li["asis_l"], 0]
        assert res.landmarks[li["symphysis_superior"], 1] < res.landmarks[li["symphysis_inferior"], 1]
        assert res.landmarks[li["asis_r"], 1] < res.landmarks[li["ischial_tuberosity_r"], 1]


def test_landmarks_follow_the_pose_exactly(subject):
    """Labels are the anatomy's 3D points through the same cone-beam camera: a lateral shift of the
    patient moves each landmark by its own magnification (deeper points move less)."""
    pose = Pose()
    base = render(subject, np.random.default_rng(0), SIZE, positive=False, pose=pose)
    moved = render(subject, np.random.default_rng(0), SIZE, positive=False, pose=Pose(shift_x_mm=10.0))
    depth = apply(pose.matrix(subject.centre), subject.landmarks)[:, 1] + (pose.sdd_mm - pose.oid_mm)
    expected = 10.0 * pose.sdd_mm / depth / (430.0 / SIZE[1])
    np.testing.assert_allclose(moved.landmarks[:, 0] - base.landmarks[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(moved.landmarks[:, 1], base.landmarks[:, 1], atol=1e-6)
    # And the bones moved with them: the image's bone mass centre shifts by about the mean shift.
    com = [np.average(np.nonzero(r.bone_path_mm)[1], weights=r.bone_path_mm[r.bone_path_mm > 0]) for r in (base, moved)]
    assert abs((com[1] - com[0]) - expected.mean()) < 0.3


def test_fracture_labels_on_bone_and_the_break_is_at_the_label(subject):
    rng = np.random.default_rng(5)
    pose = Pose()
    cam = pose.camera((256, 256), (430 / 256, 430 / 256))
    matrix = pose.matrix(subject.centre)
    res = render(subject, np.random.default_rng(0), (256, 256), positive=False, pose=pose, artefacts=False)
    for site in ("superior_ramus", "inferior_ramus", "parasymphyseal", "ischium"):
        frac = sample_fracture(subject, site, "r", rng)
        assert frac is not None, site
        d_cort, d_canc, label3d = fracture_patch_projection(subject, frac, matrix, cam)
        label = cam.project(apply(matrix, label3d))
        assert _near(res.bone_path_mm, label) > 1.0, f"{site} label not on bone"
        change = np.abs(d_cort) + np.abs(d_canc)
        assert change.max() > 0.2, f"{site}: the cut removed nothing visible"
        ys, xs = np.nonzero(change > 0.1 * change.max())
        centre = np.array([xs.mean(), ys.mean()])
        # The changed pixels gather around the label (within the bone's projected radius).
        assert np.linalg.norm(centre - label) < 25.0 / (430 / 256), site
        # Bone is only removed or moved: the cut's net change is a loss of bone.
        assert (d_cort + d_canc).sum() < 0


def test_hairline_gap_is_submillimetre_and_removes_a_thin_slab(subject):
    pose = Pose()
    cam = pose.camera((512, 512), (430 / 512, 430 / 512))
    matrix = pose.matrix(subject.centre)
    frac = sample_fracture(subject, "superior_ramus", "r", np.random.default_rng(1))
    thin = Fracture(
        **{
            **frac.__dict__,
            "kind": "hairline",
            "gap_mm": 0.4,
            "shift_mm": np.zeros(3),
            "rotation_deg": 0.0,
            "falloff_mm": 0.0,
        }
    )
    wide = Fracture(**{**thin.__dict__, "gap_mm": 0.8})
    loss_thin = -sum(m.sum() for m in fracture_patch_projection(subject, thin, matrix, cam)[:2])
    loss_wide = -sum(m.sum() for m in fracture_patch_projection(subject, wide, matrix, cam)[:2])
    # Removed bone volume is proportional to the gap (partial-volume cut at 0.2 mm voxels).
    assert 1.7 < loss_wide / loss_thin < 2.3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    path = generate_dataset(out, 6, anatomy="procedural", seed=3, size=SIZE, progress=False, positive_fraction=0.5)
    return Path(path)


def test_same_seed_gives_identical_files(dataset, tmp_path):
    Path(generate_dataset(tmp_path, 6, anatomy="procedural", seed=3, size=SIZE, progress=False, positive_fraction=0.5))
    files = sorted(p.relative_to(dataset.parent) for p in dataset.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset.parent / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    other = Path(generate_dataset(tmp_path / "other", 2, anatomy="procedural", seed=4, size=SIZE, progress=False))
    first_other = json.loads(other.read_text())["training"][0]["image"]
    first = json.loads(dataset.read_text())["training"][0]["image"]
    assert (other.parent / first_other).read_bytes() != (dataset.parent / first).read_bytes()


def test_every_file_loads_through_the_project_transforms(dataset):
    import pydicom

    datalist = json.loads(dataset.read_text())
    items = datalist["training"]
    assert len(items) == 6 and sum(i["label"] for i in items) == 3
    load = LoadPXRd(keys="image")
    ann = LoadAnnotationd(keys="annotation")
    photometric = set()
    for item in items:
        d = {"image": str(dataset.parent / item["image"]), "annotation": str(dataset.parent / item["annotation"])}
        d = ann(load(d))
        assert tuple(d["image"].shape) == (1, *SIZE)
        assert 0.0 <= float(d["image"].min()) and float(d["image"].max()) <= 1.0
        assert d["landmarks"].shape == (16, 2)
        assert item["label"] == int(len(d["fractures"]) > 0)
        raw = json.loads((dataset.parent / item["annotation"]).read_text())
        np.testing.assert_allclose(d["image"].meta["spacing_mm"], raw["spacing_mm"])
        assert raw["image"] == item["image"]  # relative to the dataset folder
        ds = pydicom.dcmread(dataset.parent / item["image"])
        assert (ds.Modality, ds.BodyPartExamined, ds.ViewPosition, ds.BitsStored) == ("DX", "PELVIS", "AP", 12)
        assert int(ds.pixel_array.max()) <= 4095
        assert str(ds.PatientName).startswith("Simulated")
        photometric.add(ds.PhotometricInterpretation)
        # Bone is bright after loading whatever the photometric interpretation: the symphysis region
        # (bone) is brighter than the image's darkest tenth.
        x, y = d["landmarks"][LANDMARK_INDEX["symphysis_superior"]]
        img = d["image"][0].numpy()
        assert img[int(round(y)), int(round(x))] > np.percentile(img, 10)
    assert photometric <= {"MONOCHROME1", "MONOCHROME2"}


def test_uids_are_unique(dataset):
    import pydicom

    items = json.loads(dataset.read_text())["training"]
    uids = [pydicom.dcmread(dataset.parent / i["image"]).SOPInstanceUID for i in items]
    assert len(set(uids)) == len(uids)


def test_folds_are_subject_disjoint(tmp_path):
    path = generate_dataset(
        tmp_path,
        12,
        anatomy="procedural",
        seed=1,
        size=(96, 96),
        progress=False,
        subjects=[f"P{i:03d}" for i in range(10)],
    )
    items = json.loads(Path(path).read_text())["training"]
    fold_of: dict[str, set] = {}
    for it in items:
        fold_of.setdefault(it["subject"], set()).add(it["fold"])
        assert it["fold"] in range(5)
    assert all(len(f) == 1 for f in fold_of.values())
    assert {f for fs in fold_of.values() for f in fs} == set(range(5))


def test_dataset_folder_can_be_moved(dataset, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(dataset.parent, moved)
    item = json.loads((moved / "datalist.json").read_text())["training"][0]
    d = LoadAnnotationd(keys="annotation")(
        LoadPXRd(keys="image")({"image": str(moved / item["image"]), "annotation": str(moved / item["annotation"])})
    )
    assert d["landmarks"].shape == (16, 2)


def test_cli_generate_and_preview(tmp_path):
    out = tmp_path / "cli"
    assert (
        cli(
            [
                "generate",
                "--anatomy",
                "procedural",
                "--n",
                "2",
                "--out",
                str(out),
                "--seed",
                "0",
                "--size",
                "96",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out / "datalist.json").is_file()
    assert cli(["preview", str(out), "--out", str(tmp_path / "sheet.png"), "--tile", "96"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "sheet.png").size[0] == 6 * 96


def test_bad_arguments_error_clearly(tmp_path, capsys):
    with pytest.raises(ValueError, match="anatomy must be"):
        generate_dataset(tmp_path, 1, anatomy="cadaver")
    with pytest.raises(ValueError, match="unknown procedural subject id 'X1'"):
        generate_dataset(tmp_path, 1, anatomy="procedural", subjects=["X1"])
    with pytest.raises(ValueError, match="n must be"):
        generate_dataset(tmp_path, 0)
    assert cli(["preview", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")]) == 2
    assert "datalist.json" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_workers_write_the_same_files(tmp_path):
    """Reproducibility does not depend on scheduling: 2 worker processes == 1 process."""
    one = Path(
        generate_dataset(
            tmp_path / "one", 4, anatomy="procedural", seed=11, size=(64, 64), progress=False, subjects=["P000", "P001"]
        )
    )
    two = Path(
        generate_dataset(
            tmp_path / "two",
            4,
            anatomy="procedural",
            seed=11,
            size=(64, 64),
            progress=False,
            subjects=["P000", "P001"],
            workers=2,
        )
    )
    files = sorted(p.relative_to(one.parent) for p in one.parent.rglob("*") if p.is_file())
    assert len(files) == 9
    for rel in files:
        assert (one.parent / rel).read_bytes() == (two.parent / rel).read_bytes(), rel


def test_distractor_films_load_and_say_what_they_are(tmp_path):
    import pydicom

    from simulation.distractor import write_distractor

    chest = write_distractor(tmp_path / "chest.dcm", "chest", 128, seed=1)
    blank = write_distractor(tmp_path / "blank.dcm", "blank", 96, seed=1, monochrome1=True)
    ds = pydicom.dcmread(chest)
    assert (ds.Modality, ds.BodyPartExamined, ds.ViewPosition) == ("CR", "CHEST", "PA")
    for path, shape in ((chest, (1, 128, 128)), (blank, (1, 96, 96))):
        img = LoadPXRd(keys="image")({"image": str(path)})["image"]
        assert tuple(img.shape) == shape
    # The chest film has lungs (dark) and bone (bright) side by side; the blank one is flat.
    chest_img = LoadPXRd(keys="image")({"image": str(chest)})["image"][0].numpy()
    assert np.percentile(chest_img, 95) - np.percentile(chest_img, 20) > 0.3
    assert write_distractor(tmp_path / "again.dcm", "chest", 128, seed=1).read_bytes() == chest.read_bytes()
    # the chest is the project's one drawn chest film (simulation.nonpelvic), drawn from the seed's generator
    from simulation.nonpelvic import render_nonpelvic

    drawn = render_nonpelvic("chest", (128, 128), np.random.default_rng([1, 2718]))[0]
    np.testing.assert_array_equal(ds.pixel_array, np.rint(drawn * 4095).astype(np.uint16))
    with pytest.raises(ValueError, match="kind must be one of"):
        write_distractor(tmp_path / "x.dcm", "knee")

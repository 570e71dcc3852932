"""LoadAnnotationd: landmark order, fractures, spacing override, data-supplied landmarks, errors naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from custom_transforms import LANDMARK_NAMES, AnnotationError, LoadAnnotationd
from synthetic_pelvis import landmark_dict, place_landmarks

SHAPE = (320, 300)
LANDMARKS = place_landmarks(SHAPE, (1.0, 1.0))


def image(shape=SHAPE, name="img.dcm"):
    return MetaTensor(
        torch.zeros(1, *shape),
        meta={"filename_or_obj": name, "spacing_mm": (0.5, 0.5), "spacing_source": "ImagerPixelSpacing"},
    )


def write(tmp_path, content, name="ann.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def run(path, img=None, **extra):
    return LoadAnnotationd()({"image": image() if img is None else img, "annotation": path, **extra})


def test_reads_landmarks_in_canonical_order_fractures_and_spacing(tmp_path):
    shuffled = dict(reversed(list(landmark_dict(LANDMARKS).items())))
    path = write(
        tmp_path, {"image": "img.dcm", "landmarks": shuffled, "fractures": [[100.0, 200.5]], "spacing_mm": [0.2, 0.3]}
    )
    img = image()
    out = run(path, img)
    assert out["landmarks"].shape == (16, 2) and out["landmarks"].dtype == np.float32
    np.testing.assert_allclose(out["landmarks"], LANDMARKS, atol=1e-4)
    np.testing.assert_allclose(out["fractures"], [[100.0, 200.5]])
    assert img.meta["spacing_mm"] == (0.2, 0.3) and img.meta["spacing_source"] == "annotation"
    assert float(img.affine[0, 0]) == pytest.approx(0.2) and float(img.affine[1, 1]) == pytest.approx(0.3)


def test_empty_or_absent_fractures(tmp_path):
    out = run(write(tmp_path, {"landmarks": landmark_dict(LANDMARKS)}))
    assert out["fractures"].shape == (0, 2)
    assert out["image"].meta["spacing_source"] == "ImagerPixelSpacing"  # no override without spacing_mm


def test_landmarks_from_the_data_when_no_annotation():
    for given in (LANDMARKS, landmark_dict(LANDMARKS)):
        out = LoadAnnotationd()({"image": image(), "landmarks": given})
        np.testing.assert_allclose(out["landmarks"], LANDMARKS, atol=1e-4)
        assert out["fractures"].shape == (0, 2)


def test_annotation_wins_over_data_landmarks(tmp_path):
    path = write(tmp_path, {"landmarks": landmark_dict(LANDMARKS)})
    out = run(path, landmarks=LANDMARKS + 5)
    np.testing.assert_allclose(out["landmarks"], LANDMARKS, atol=1e-4)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda a: a["landmarks"].pop("pubic_tubercle_l"), r"ann\.json.*missing landmark.*pubic_tubercle_l"),
        (lambda a: a["landmarks"].update({"asis_R": [1, 1]}), r"ann\.json.*unknown landmark.*asis_R"),
        (lambda a: a["landmarks"].update({"asis_l": [float("nan"), 3]}), r"ann\.json.*landmark 'asis_l' is not finite"),
        (lambda a: a["landmarks"].update({"asis_l": [1, 2, 3]}), r"ann\.json.*landmark 'asis_l' must be \[x, y\]"),
        (
            lambda a: a["landmarks"].update({"ischial_tuberosity_r": [-3.0, 100]}),
            r"ann\.json.*landmark 'ischial_tuberosity_r'.*outside",
        ),
        (
            lambda a: a["landmarks"].update({"symphysis_inferior": [10, 319.6]}),
            r"ann\.json.*landmark 'symphysis_inferior'.*outside",
        ),
        (lambda a: a.update({"fractures": [[10, 10], [300, 10]]}), r"ann\.json.*fracture 1.*outside"),
        (lambda a: a.update({"fractures": [["a", 10]]}), r"ann\.json.*fracture 0"),
        (lambda a: a.update({"spacing_mm": [0.2, -1]}), r"ann\.json.*spacing_mm"),
        (lambda a: a.pop("landmarks"), r"ann\.json.*'landmarks' is missing"),
    ],
)
def test_bad_annotations_name_file_and_field(tmp_path, mutate, pattern):
    ann = {"image": "img.dcm", "landmarks": landmark_dict(LANDMARKS), "fractures": []}
    mutate(ann)
    with pytest.raises(AnnotationError, match=pattern):
        run(write(tmp_path, ann))


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match=r"ann\.json.*not valid JSON"):
        run(write(tmp_path, "{not json"))
    with pytest.raises(AnnotationError, match=r"absent\.json.*not found"):
        run(str(tmp_path / "absent.json"))


def test_bad_data_landmarks_and_no_landmarks_at_all():
    with pytest.raises(AnnotationError, match=r"img\.dcm.*shape \(16, 2\)"):
        LoadAnnotationd()({"image": image(), "landmarks": np.zeros((15, 2))})
    with pytest.raises(AnnotationError, match=r"img\.dcm.*landmark 'asis_r'.*outside"):
        LoadAnnotationd()({"image": image(), "landmarks": LANDMARKS - 1000})
    with pytest.raises(AnnotationError, match=r"img\.dcm.*no annotation.*landmarks are required"):
        LoadAnnotationd()({"image": image()})
    # allowed to be missing (e.g. a landmark detector runs later)
    out = LoadAnnotationd(allow_missing_keys=True)({"image": image()})
    assert "landmarks" not in out


def test_landmark_names_cover_the_convention():
    assert len(LANDMARK_NAMES) == 16 and len(set(LANDMARK_NAMES)) == 16

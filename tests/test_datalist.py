"""Datalist validation and the subject-grouped 70/10/20 fold split."""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.datalist import fold_split, load_datalist, split_fold  # noqa: E402


def _items(n_subjects=80, seed=0):
    rng = random.Random(seed)
    items = []
    for s in range(n_subjects):
        for j in range(rng.randint(1, 3)):
            items.append(
                {
                    "image": f"img/{s}_{j}.dcm",
                    "annotation": f"ann/{s}_{j}.json",
                    "label": int(rng.random() < 0.35),
                    "subject": f"subj{s:03d}",
                    "fold": s % 5,
                }
            )
    return items


@pytest.mark.parametrize("fold", range(5))
def test_split_is_fold_test_and_subject_grouped_eighth(fold):
    items = _items()
    parts = split_fold(items, fold)
    assert [it for it in items if it["fold"] == fold] == parts["test"]
    rest = [it for it in items if it["fold"] != fold]
    assert len(parts["training"]) + len(parts["validation"]) == len(rest)
    subjects = {k: {it["subject"] for it in v} for k, v in parts.items()}
    assert not subjects["training"] & subjects["validation"]
    assert not (subjects["training"] | subjects["validation"]) & subjects["test"]
    # 1/8 of the rest, to within one subject (at most 3 images) per label group
    assert abs(len(parts["validation"]) - len(rest) / 8) <= 6
    assert {it["label"] for it in parts["validation"]} == {0, 1}


def test_split_is_deterministic_and_independent_of_order():
    items = _items()
    a = split_fold(items, 2)
    shuffled = items[:]
    random.Random(5).shuffle(shuffled)
    b = split_fold(shuffled, 2)
    key = lambda it: it["image"]  # noqa: E731
    for part in a:
        assert sorted(a[part], key=key) == sorted(b[part], key=key)


def test_load_resolves_relative_paths_and_fold_split(tmp_path):
    path = tmp_path / "sub" / "datalist.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"training": _items(20)}))
    items = load_datalist(path)
    assert items[0]["image"] == str((path.parent / "img/0_0.dcm").resolve())
    test = fold_split(path, 1, "test")
    assert {it["fold"] for it in test} == {1}
    assert len(fold_split(path, 1, "all")) == len(items)


@pytest.mark.parametrize(
    "item, message",
    [
        ({"image": "a", "annotation": "b", "label": 1, "subject": "s"}, "item 0 has no field 'fold'"),
        ({"image": "a", "annotation": "b", "label": 2, "subject": "s", "fold": 0}, "field 'label' is 2"),
        ({"image": "a", "annotation": "b", "label": 0, "subject": "s", "fold": 7}, "field 'fold' is 7"),
    ],
)
def test_bad_datalist_names_file_item_and_field(tmp_path, item, message):
    path = tmp_path / "dl.json"
    path.write_text(json.dumps([item]))
    with pytest.raises(ValueError, match=message) as e:
        load_datalist(path)
    assert str(path) in str(e.value)


def test_missing_and_malformed_datalist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_datalist(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_datalist(bad)
    bad.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_datalist(bad)


def test_intact_twins_only_of_training_subjects_and_paired_with_their_sibling(tmp_path):
    from scripts.datalist import intact_twins, training_items

    items, twins = [], []
    for s in range(40):
        fold = s % 5
        for k in range(2):
            stem = f"s{s}_{k}"
            label = int(k == 0)
            (tmp_path / f"{stem}.json").write_text(json.dumps({"fractures": [[10.0 + s, 20.0]] if label else []}))
            items.append(
                {"image": f"{stem}.dcm", "annotation": f"{stem}.json", "label": label, "subject": f"S{s}", "fold": fold}
            )
            if label:
                twins.append(
                    {
                        "image": f"{stem}_intact.dcm",
                        "annotation": f"{stem}_intact.json",
                        "label": 0,
                        "subject": f"S{s}",
                        "fold": fold,
                        "intact_twin_of": f"{stem}.dcm",
                    }
                )
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": items, "intact_twins": twins}))
    parts = split_fold(load_datalist(path), 0)
    training_subjects = {it["subject"] for it in parts["training"]}
    got = intact_twins(path, 0)
    # every training subject's twin, and no twin of a validation or test subject
    assert {t["subject"] for t in got} == training_subjects
    for t in got:
        s = int(t["subject"][1:])
        assert t["fractures_removed"] == [[10.0 + s, 20.0]]  # the sibling's fracture points
        assert t["intact_twin_of"] == str(tmp_path / f"s{s}_0.dcm")
    both = training_items(path, 0)
    assert len(both) == len(parts["training"]) + len(got)
    pairs = {}
    for it in both:
        if it["pair_id"] is not None:
            pairs.setdefault(it["pair_id"], []).append(it["image"])
    assert len(pairs) == len(got) and all(len(v) == 2 and v[1].endswith("_intact.dcm") for v in pairs.values())
    assert all(it["pair_id"] is None for it in both if it["label"] == 0 and "intact_twin_of" not in it)
    # a datalist without twins (real data) gives none
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"training": items}))
    assert intact_twins(plain, 0) == [] and len(training_items(plain, 0)) == len(parts["training"])


def test_blends_train_a_fold_only_when_all_their_parents_train_it(tmp_path, caplog):
    from scripts.datalist import blend_items, training_items

    items = []
    for s in range(20):
        for k in range(2):
            stem = f"s{s}_{k}"
            (tmp_path / f"{stem}.json").write_text(json.dumps({"fractures": []}))
            items.append(
                {"image": f"{stem}.dcm", "annotation": f"{stem}.json", "label": k, "subject": f"S{s}", "fold": s % 5}
            )
    parts = split_fold(load_datalist(_write(tmp_path, items)), 0)
    train = sorted({it["subject"] for it in parts["training"]})
    val = sorted({it["subject"] for it in parts["validation"]})
    test = sorted({it["subject"] for it in parts["test"]})
    (tmp_path / "b_fx.json").write_text(json.dumps({"fractures": [[30.0, 40.0]]}))
    blends = [
        {"image": "b_ok.dcm", "annotation": "b_ok.json", "label": 0, "subject": "B1", "parents": train[:2]},
        {"image": "b_fx.dcm", "annotation": "b_fx.json", "label": 1, "subject": "B2", "parents": train[1:3]},
        {"image": "b_val.dcm", "annotation": "b_val.json", "label": 0, "subject": "B3", "parents": [train[0], val[0]]},
        {"image": "b_test.dcm", "annotation": "b_t.json", "label": 1, "subject": "B4", "parents": [test[0], train[0]]},
        # a warp (simulation.atlas_warp) has one parent
        {"image": "w_ok.dcm", "annotation": "b_ok.json", "label": 0, "subject": "W1", "parents": train[3:4]},
        {"image": "w_val.dcm", "annotation": "b_ok.json", "label": 0, "subject": "W2", "parents": val[:1]},
    ]
    twin = {"image": "b_fx_intact.dcm", "annotation": "b_fx.json", "label": 0, "subject": "B2", "fold": 1}
    path = _write(tmp_path, items, blends=blends, intact_twins=[dict(twin, intact_twin_of="b_fx.dcm")])
    with caplog.at_level(logging.WARNING, logger="scripts.datalist"):
        got = blend_items(path, 0)
    assert "not a subject" not in caplog.text  # validation and test parents are left out without a warning
    assert [b["image"] for b in got] == [str(tmp_path / n) for n in ("b_ok.dcm", "b_fx.dcm", "w_ok.dcm")]
    # the split is the same with and without blends, and they join training only, with their twins
    assert split_fold(load_datalist(path), 0) == parts
    both = training_items(path, 0)
    assert [it["image"] for it in both[len(parts["training"]) :]] == [
        str(tmp_path / "b_ok.dcm"),
        str(tmp_path / "b_fx.dcm"),
        str(tmp_path / "w_ok.dcm"),
        str(tmp_path / "b_fx_intact.dcm"),
    ]
    assert both[-1]["pair_id"] == both[-3]["pair_id"] == str(tmp_path / "b_fx.dcm")
    assert both[-1]["fractures_removed"] == [[30.0, 40.0]]
    stranger = _write(tmp_path, items, blends=[dict(blends[0], parents=[train[0], "S99"])])
    with caplog.at_level(logging.WARNING, logger="scripts.datalist"):
        assert blend_items(stranger, 0) == []
    assert "blends[0] field 'parents' names ['S99'], not a subject of the datalist" in caplog.text
    bad = _write(tmp_path, items, blends=[{"image": "b.dcm", "annotation": "b.json", "label": 0, "subject": "B"}])
    with pytest.raises(ValueError, match=r"blends\[0\] must be an object with the fields .*'parents'"):
        blend_items(bad, 0)
    bad = _write(tmp_path, items, blends=[dict(blends[0], parents="S1")])
    with pytest.raises(ValueError, match=r"blends\[0\] field 'parents' is 'S1', expected a list"):
        blend_items(bad, 0)


def _write(folder, items, **lists):
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": items, **lists}))
    return path


def test_both_trainings_take_the_blends_of_their_fold(tmp_path):
    """The AASN (``train.json``: ``training_items``) and the landmark detector (``landmark_train.json``) train on
    a fold's blends; neither validates on them."""
    from monai.bundle import ConfigParser

    items = [
        {"image": f"s{s}_{k}.dcm", "annotation": f"s{s}_{k}.json", "label": k, "subject": f"S{s}", "fold": s % 5}
        for s in range(20)
        for k in range(2)
    ]
    train = sorted({it["subject"] for it in split_fold(load_datalist(_write(tmp_path, items)), 0)["training"]})
    blend = {"image": "b.dcm", "annotation": "b.json", "label": 0, "subject": "B1", "parents": train[:2]}
    data = _write(tmp_path, items, blends=[blend]).parent
    configs = Path(__file__).resolve().parents[1] / "bundle" / "configs"
    for config, key, validation in (
        ("train.json", "train#dataset#data", "validate#dataset#data"),
        ("landmark_train.json", "train#items", "validate#items"),
    ):
        parser = ConfigParser()
        parser.read_config(str(configs / config))
        parser.update({"bundle_root": str(tmp_path / "run"), "dataset_dir": str(data), "fold": 0})
        images = [it["image"] for it in parser.get_parsed_content(key, instantiate=True)]
        assert str(data / "b.dcm") in images, config
        assert str(data / "b.dcm") not in [it["image"] for it in parser.get_parsed_content(validation)], config

"""``tools/shipped_models_data.py``: how the shipped models' three simulated parts merge into one datalist, and
which members a blend may mix (planted datalists, no simulation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from shipped_models_data import fold_training_members, merge_datalists  # noqa: E402


def _part(folder: Path, items: list[dict], twins: list[dict]) -> Path:
    folder.mkdir(parents=True)
    path = folder / "datalist.json"
    path.write_text(json.dumps({"description": folder.name, "training": items, "intact_twins": twins}))
    return path


def _item(stem: str, subject: str, fold: int, label: int = 0, **extra) -> dict:
    return {"image": f"images/{stem}.dcm", "annotation": f"annotations/{stem}.json", "label": label,
            "subject": subject, "fold": fold, **extra}  # fmt: skip


def test_merge_puts_held_out_in_fold_0_training_in_1_to_4_and_blends_apart(tmp_path):
    training = [_item(f"t{i}", f"atlas-{i}", i % 5, label=i % 2) for i in range(10)]
    training_twins = [_item("t1_intact", "atlas-1", 1, intact_twin_of="images/t1.dcm")]
    held = [_item("h0", "atlas-2", 3, label=1), _item("h1", "atlas-5", 0)]
    blends = [_item("b0", "atlas-3x4w30", 2, label=1, parents=["atlas-3", "atlas-4"])]
    blend_twins = [
        _item("b0_intact", "atlas-3x4w30", 2, intact_twin_of="images/b0.dcm", parents=["atlas-3", "atlas-4"])
    ]
    warps = [_item("w0", "atlas-3v0042", 1, parents=["atlas-3"])]
    merged = merge_datalists(
        _part(tmp_path / "training_members", training, training_twins),
        _part(tmp_path / "held_out_members", held, []),
        tmp_path,
        [_part(tmp_path / "training_blends", blends, blend_twins), _part(tmp_path / "training_warps", warps, [])],
    )
    content = json.loads(merged.read_text())
    assert [(it["image"], it["fold"]) for it in content["training"]] == [
        *[(f"training_members/images/t{i}.dcm", max(1, i % 5)) for i in range(10)],
        ("held_out_members/images/h0.dcm", 0),
        ("held_out_members/images/h1.dcm", 0),
    ]
    assert content["description"].endswith(
        "; blends: training_blends (training only); blends: training_warps (training only)"
    )
    assert [b["image"] for b in content["blends"]] == ["training_blends/images/b0.dcm", "training_warps/images/w0.dcm"]
    assert [b["parents"] for b in content["blends"]] == [["atlas-3", "atlas-4"], ["atlas-3"]]
    assert [(t["image"], t["intact_twin_of"]) for t in content["intact_twins"]] == [
        ("training_members/images/t1_intact.dcm", "training_members/images/t1.dcm"),
        ("training_blends/images/b0_intact.dcm", "training_blends/images/b0.dcm"),
    ]
    # without blends the list is empty, and the rest is the same
    again = json.loads(merge_datalists(tmp_path / "training_members/datalist.json",
                                       tmp_path / "held_out_members/datalist.json", tmp_path).read_text())  # fmt: skip
    assert again["blends"] == [] and again["training"] == content["training"] and "blends" not in again["description"]


def test_blends_mix_only_the_members_that_train_fold_0(tmp_path):
    items = []
    for member in range(2, 42):
        for k in range(3):
            items.append(_item(f"m{member}_{k}", f"atlas-{member}", 0 if member < 6 else 1 + member % 4, label=k == 0))
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": items}))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
    from scripts.datalist import fold_split

    validation = {int(it["subject"][6:]) for it in fold_split(path, 0, "validation")}
    got = fold_training_members(path)
    assert got == sorted(set(range(6, 42)) - validation) and validation and got

"""``python -m scripts.screen_datalist``: the images the preprocessing refuses, with their reasons, the images whose
warp fell back, and the datalist without the refused images (and their intact twins)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bundle_data import write_dataset  # noqa: E402

from scripts.screen_datalist import main, usable_datalist  # noqa: E402


def edit_landmarks(annotation: Path, edit) -> None:
    content = json.loads(annotation.read_text())
    edit(content["landmarks"])
    annotation.write_text(json.dumps(content))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Six synthetic cases: case001 unreadable, case002 with two close landmarks exchanged (the exact warp folds,
    a smoother one does not), case003 with coincident symphysis points (no warp is defined)."""
    folder = tmp_path_factory.mktemp("screen")
    datalist = write_dataset(folder, n=6, seed=1)
    (folder / "case001.png").write_bytes(b"not a PNG")

    def exchange(lm):
        lm["pubic_tubercle_r"], lm["obturator_superior_r"] = lm["obturator_superior_r"], lm["pubic_tubercle_r"]

    def coincide(lm):
        lm["symphysis_inferior"] = lm["symphysis_superior"]

    edit_landmarks(folder / "case002.json", exchange)
    edit_landmarks(folder / "case003.json", coincide)
    return datalist


def test_refused_images_are_listed_with_their_reasons_and_fallbacks_apart(planted, tmp_path, capsys):
    report, usable = tmp_path / "screening.json", tmp_path / "usable.json"
    argv = ["--datalist", str(planted), "--roi_size", "64", "128", "--output", str(report), "--usable", str(usable)]
    assert main(argv) == 0
    folder = planted.parent
    screening = json.loads(report.read_text())
    assert screening["num_items"] == 6
    assert [(r["image"], r["status"]) for r in screening["refused"]] == [
        (str(folder / "case001.png"), "unreadable"),
        (str(folder / "case003.png"), "invalid_geometry"),
    ]
    assert "'symphysis_superior' and 'symphysis_inferior' coincide" in screening["refused"][1]["error"]
    assert [f["image"] for f in screening["warp_fallbacks"]] == [str(folder / "case002.png")]
    assert screening["warp_fallbacks"][0]["warp"].startswith("tps_regularised(lambda=")
    printed = capsys.readouterr().out
    assert f"refused {folder / 'case001.png'} (unreadable)" in printed
    assert "2 of 6 images refused by the preprocessing; 1 trained with a smoother TPS warp" in printed
    kept = [item["image"] for item in json.loads(usable.read_text())["data"]]
    assert kept == [str(folder / f"case00{i}.png") for i in (0, 2, 4, 5)]
    assert main([*argv, "--strict"]) == 1


def test_usable_datalist_drops_the_twins_of_refused_images_and_makes_paths_absolute(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(
        json.dumps(
            {
                "training": [{"image": "a.dcm", "annotation": "a.json"}, {"image": "b.dcm", "annotation": "b.json"}],
                "intact_twins": [
                    {"image": "a_twin.dcm", "annotation": "a.json", "intact_twin_of": "a.dcm"},
                    {"image": "b_twin.dcm", "annotation": "b.json", "intact_twin_of": "b.dcm"},
                ],
                "blends": [{"image": "c.dcm", "annotation": "c.json"}, {"image": "d.dcm", "annotation": "d.json"}],
                "seed": 5,
            }
        )
    )
    content = usable_datalist(datalist, [str(tmp_path / "b.dcm"), str(tmp_path / "d.dcm")])
    assert content["blends"] == [{"image": str(tmp_path / "c.dcm"), "annotation": str(tmp_path / "c.json")}]
    assert content["training"] == [{"image": str(tmp_path / "a.dcm"), "annotation": str(tmp_path / "a.json")}]
    assert [t["image"] for t in content["intact_twins"]] == [str(tmp_path / "a_twin.dcm")]
    assert content["intact_twins"][0]["intact_twin_of"] == str(tmp_path / "a.dcm") and content["seed"] == 5

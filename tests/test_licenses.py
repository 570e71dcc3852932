"""The licences are where the model zoo and packagers look: the Apache-2.0 text at the repository root and in the
bundle, the data licence of the CC BY 4.0 atlas with its attribution, and the model card's section."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import tomllib

from simulation import ATLAS_ATTRIBUTION
from simulation.atlas import PACK_FILE, SUBSET_DIR

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
#: sha256 of the Apache License 2.0 as the Apache Software Foundation publishes it (LICENSE-2.0.txt)
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_the_apache_licence_is_at_the_root_and_in_the_bundle_unchanged():
    root = (REPO / "LICENSE").read_bytes()
    assert (BUNDLE / "LICENSE").read_bytes() == root
    assert hashlib.sha256(root).hexdigest() == APACHE_2_0_SHA256
    text = root.decode()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert text.count("END OF TERMS AND CONDITIONS") == 1


def test_pyproject_states_both_licences_and_ships_their_texts():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0 AND CC-BY-4.0"
    assert all((REPO / f).is_file() for f in project["license-files"])
    assert "simulation/atlas_subset/LICENSE.txt" in project["license-files"]


def test_the_data_licence_names_the_atlas_its_attribution_and_the_shipped_members():
    text = (BUNDLE / "docs" / "data_license.txt").read_text()
    flat = " ".join(text.split())
    for needed in (
        "Creative Commons Attribution 4.0 International (CC BY 4.0)",
        "https://creativecommons.org/licenses/by/4.0/",
        "Open Source Atlas of Pelvis Segmentations and Surgical Trajectories",
        "I-STAR Lab, Johns Hopkins University",
        "doi:10.1088/1361-6560/ab1456",
        "doi:10.7937/K9/TCIA.2015.AQIIDCNM",
        "Simulated radiographs derived from the atlas",
        "Apache License 2.0",
    ):
        assert needed in flat, needed
    # the DOIs of the attribution the simulator writes into every image are the ones named here
    dois = set(re.findall(r"doi:\S+?(?=[);,]|$)", ATLAS_ATTRIBUTION))
    assert len(dois) == 2 and dois <= set(re.findall(r"doi:[^\s);,]+", flat))
    with np.load(SUBSET_DIR / PACK_FILE, allow_pickle=False) as pack:
        members = [str(m) for m in pack["members"]]
    stated = re.search(r"ships 12 of the atlas's members \(ids ([\d, ]+)\)", flat)
    assert stated and [m.strip() for m in stated.group(1).split(",")] == members


def test_the_model_card_has_a_licence_section_and_the_metadata_names_the_data():
    card = (BUNDLE / "docs" / "README.md").read_text()
    section = card.split("\n## Licences\n", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    for needed in (
        "Apache License 2.0",
        "CC BY 4.0",
        "doi:10.1088/1361-6560/ab1456",
        "Simulated radiographs",
        "docs/data_license.txt",
    ):
        assert needed in flat, needed
    metadata = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert "CC BY 4.0" in metadata["data_source"] and "docs/data_license.txt" in metadata["data_source"]

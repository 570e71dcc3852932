"""Twin batches: a fractured image and its twin always in one batch, the fractured one first, same window."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from custom_transforms.siamese_crop import RandSiameseCropd  # noqa: E402

from scripts.fracture.twin_batches import TwinBatchSampler  # noqa: E402


def _items(n_pairs=7, n_singles=11):
    items = [{"image": f"f{i}", "pair_id": f"f{i}"} for i in range(n_pairs)]
    items += [{"image": f"n{i}", "pair_id": None} for i in range(n_singles)]
    items += [{"image": f"f{i}_intact", "pair_id": f"f{i}"} for i in range(n_pairs)]
    return items


def test_pairs_are_never_split_and_the_fractured_image_comes_first():
    items = _items()
    sampler = TwinBatchSampler(items, batch_size=4, seed=3)
    for _ in range(5):  # several epochs, each a new shuffle
        batches = list(sampler)
        assert len(batches) == len(sampler) and all(len(b) == 4 for b in batches)
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen))
        for b in batches:
            for k, i in enumerate(b):
                if items[i]["pair_id"] is not None and not items[i]["image"].endswith("_intact"):
                    assert items[b[k + 1]]["image"] == items[i]["image"] + "_intact"
        assert sum(len(b) for b in batches) >= len(items) - 2 * 4


def test_an_unmatched_pair_id_is_refused():
    with pytest.raises(ValueError, match="pair_id 'x' has 1 items"):
        TwinBatchSampler([{"pair_id": "x"}, {"pair_id": None}], batch_size=2)


def test_the_twin_gets_its_sibling_s_window():
    g = torch.Generator().manual_seed(0)
    fractured, twin = torch.rand(8, 64, 128, generator=g), torch.rand(8, 64, 128, generator=g)
    crop = RandSiameseCropd(size=(32, 32), positive_fraction=1.0)
    crop.set_random_state(1)

    def origin(big, window):
        found = [(r, c) for r in range(33) for c in range(97) if torch.equal(window[0], big[0, r : r + 32, c : c + 32])]
        return found[0]

    for k in range(6):
        a = crop({"siamese_input": fractured, "crop_points": np.array([[20.0 + 10 * k, 30.0]]), "pair_id": "p"})
        b = crop({"siamese_input": twin, "crop_points": np.zeros((0, 2)), "pair_id": "p"})
        c = crop({"siamese_input": twin, "crop_points": np.zeros((0, 2)), "pair_id": None})
        assert "pair_id" not in a and "pair_id" not in b
        assert origin(fractured, a["siamese_input"]) == origin(twin, b["siamese_input"])
        assert origin(twin, c["siamese_input"]) != origin(twin, b["siamese_input"]) or k == 0

"""The shipped landmark detector is accurate on radiographs it never saw, and the check can tell a broken one.

Issue 15 asks that what ships is measured where it cannot have been tuned: about 40 new simulations (seed 2027) of
the atlas members ``metadata.json`` holds out from every shipped model's training (``tests/_shipped_models.py``).
The detector in ``bundle/models`` must reach a mean radial error of at most 3 mm and accept every image. While
``bundle/large_files.yml`` ships no detector the two slow tests skip; once it does, a missing file fails them.
``AASN_SHIPPED_MODELS_DIR=<models folder>`` tests another folder instead (a detector before it ships).

The same bar must reject a detector whose global network has its weights shuffled (every tensor permuted: same
shapes, same values, nothing learnt in place), so a pass means the weights, not a bar nothing can miss. The fast
tests pin the bar, the shuffling and the skip-or-fail rule on planted inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _shipped_models import (
    DETECTOR_FILES,
    GLOBAL_WEIGHTS,
    MAX_MRE_MM,
    MODELS_DIR_VARIABLE,
    N_IMAGES,
    REFINE_WEIGHTS,
    SHAPE_MODEL,
    detector_meets_bar,
    held_out_members,
    listed_detector_files,
    planted_bundle,
    run_detector,
    shipped_detector_dir,
    shuffled_copy,
)


@pytest.fixture(scope="session")
def shipped_models():
    """The models folder under test; skips while the detector is not shipped, fails when shipped files are missing.

    Session-scoped, and requested before ``held_out_items`` (``conftest.py``), so that a skip costs no simulation.
    """
    try:
        models = shipped_detector_dir()
    except (FileNotFoundError, ValueError) as error:
        pytest.fail(f"the shipped landmark detector is incomplete: {error}")
    if models is None:
        pytest.skip(
            "the landmark detector is not shipped: bundle/large_files.yml lists none of "
            f"{', '.join(DETECTOR_FILES)} (set {MODELS_DIR_VARIABLE} to test a models folder)"
        )
    return models


@pytest.mark.slow
def test_shipped_detector_meets_the_bar_on_held_out_members(shipped_models, held_out_items):
    result = run_detector(shipped_models, held_out_items)
    passed, message = detector_meets_bar(result.errors_mm, result.refused, images=result.images)
    print(message)
    # the images are what the bar is about: new radiographs of the held-out members only, every one measured
    assert {item["subject"] for item in held_out_items} == {f"atlas-{m}" for m in held_out_members()}
    assert len(held_out_items) == N_IMAGES and result.errors_mm.shape == (N_IMAGES, 16)
    assert passed, message


@pytest.mark.slow
def test_the_bar_rejects_the_shipped_detector_with_shuffled_weights(shipped_models, held_out_items, tmp_path):
    shuffled = shuffled_copy(shipped_models, tmp_path / "models")
    result = run_detector(shuffled, held_out_items)
    passed, message = detector_meets_bar(result.errors_mm, result.refused, images=result.images)
    print(message)
    assert not passed, f"a detector with shuffled weights cleared the bar: {message}"


# ---- the bar, the shuffled copy and the skip-or-fail rule on planted inputs (fast) ----


def test_the_bar_is_mre_at_most_3_mm_with_nothing_refused():
    errors = np.full((4, 16), 2.0)
    errors[0] = 6.0  # hand-checked MRE: (6 + 3 x 2) / 4 = 3.0 mm, on the bar
    assert detector_meets_bar(errors, [])[0]
    assert MAX_MRE_MM == 3.0
    errors[0, 0] += 16 * 4 * 0.01  # MRE 3.01 mm
    passed, message = detector_meets_bar(errors, [])
    assert not passed and "MRE 3.01 mm > 3.00 mm" in message
    passed, message = detector_meets_bar(np.full((4, 16), 1.0), ["img00003_atlas_5.dcm"])
    assert not passed and "1 of 4 images refused" in message and "img00003_atlas_5.dcm" in message
    errors = np.full((4, 16), 1.0)
    errors[2, 5] = np.nan  # the summary would leave it out and report 1.0 mm
    passed, message = detector_meets_bar(errors, [])
    assert not passed and "1 non-finite errors" in message
    passed, message = detector_meets_bar(np.zeros((0, 16)), [])
    assert not passed and "no images" in message


def test_shuffled_copy_permutes_every_global_tensor_and_copies_the_rest(tmp_path):
    source = tmp_path / "models"
    source.mkdir()
    generator = torch.Generator().manual_seed(1)
    state = {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=generator),
        "conv.bias": torch.arange(4.0),
        "norm.num_batches_tracked": torch.tensor(7),  # 0-d: unchanged by any permutation
    }
    torch.save(state, source / GLOBAL_WEIGHTS)
    (source / REFINE_WEIGHTS).write_bytes(b"refine weights")
    (source / SHAPE_MODEL).write_text('{"planted": true}')

    out = shuffled_copy(source, tmp_path / "shuffled")

    shuffled = torch.load(out / GLOBAL_WEIGHTS, weights_only=True)
    assert list(shuffled) == list(state)
    for key, tensor in state.items():
        assert shuffled[key].shape == tensor.shape and shuffled[key].dtype == tensor.dtype, key
        assert torch.equal(shuffled[key].reshape(-1).sort().values, tensor.reshape(-1).sort().values), key
    assert not torch.equal(shuffled["conv.weight"], state["conv.weight"])
    assert not torch.equal(shuffled["conv.bias"], state["conv.bias"])
    assert int(shuffled["norm.num_batches_tracked"]) == 7
    for name in (REFINE_WEIGHTS, SHAPE_MODEL):
        assert (out / name).read_bytes() == (source / name).read_bytes(), name


def test_shuffled_copy_keeps_a_checkpoint_dict_around_the_state_dict(tmp_path):
    source = tmp_path / "models"
    source.mkdir()
    torch.save({"network": {"w": torch.arange(10.0)}, "epoch": 3}, source / GLOBAL_WEIGHTS)
    (source / REFINE_WEIGHTS).write_bytes(b"")
    (source / SHAPE_MODEL).write_text("{}")
    shuffled = torch.load(shuffled_copy(source, tmp_path / "out") / GLOBAL_WEIGHTS, weights_only=True)
    assert shuffled["epoch"] == 3
    assert sorted(shuffled["network"]["w"].tolist()) == list(range(10))
    assert shuffled["network"]["w"].tolist() != list(range(10))


def test_no_detector_listed_means_nothing_to_test(tmp_path):
    bundle = planted_bundle(tmp_path, ["model.pt"], ["model.pt"])  # the fracture model alone
    assert listed_detector_files(bundle / "large_files.yml") == []
    assert shipped_detector_dir({}, bundle) is None


def test_a_listed_detector_must_be_complete_and_present(tmp_path):
    bundle = planted_bundle(tmp_path, list(DETECTOR_FILES), list(DETECTOR_FILES))
    assert shipped_detector_dir({}, bundle) == bundle / "models"
    (bundle / "models" / REFINE_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=REFINE_WEIGHTS):
        shipped_detector_dir({}, bundle)
    partly = planted_bundle(tmp_path / "partly", [GLOBAL_WEIGHTS], list(DETECTOR_FILES))
    with pytest.raises(ValueError, match=SHAPE_MODEL):
        shipped_detector_dir({}, partly)


def test_the_variable_names_the_models_folder_whatever_large_files_yml_says(tmp_path):
    bundle = planted_bundle(tmp_path, [], [])
    other = planted_bundle(tmp_path / "other", [], list(DETECTOR_FILES)) / "models"
    assert shipped_detector_dir({MODELS_DIR_VARIABLE: str(other)}, bundle) == other
    with pytest.raises(FileNotFoundError, match=GLOBAL_WEIGHTS):
        shipped_detector_dir({MODELS_DIR_VARIABLE: str(bundle / "models")}, bundle)

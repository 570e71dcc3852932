"""``FailureTolerantCacheDataset`` and ``TrainingFailureGuard``: a training sample that cannot be made is skipped
and replaced, the batch says which, the guard warns, counts and stops a run in which too many fail; validation
leaves such items out once."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader
from monai.transforms import Compose, MapTransform, RandomizableTransform

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from custom_transforms.errors import AnnotationError, GeometryError  # noqa: E402

from scripts.failure_tolerant_dataset import (  # noqa: E402
    SKIPPED_KEY,
    FailureTolerantCacheDataset,
    SampleFailureError,
    TrainingFailureGuard,
)
from scripts.fracture.twin_batches import TwinBatchSampler  # noqa: E402


class LoadNumber(MapTransform):
    """The cached part: fails for the numbers in ``bad`` (an annotation error naming the file)."""

    def __init__(self, bad=()) -> None:
        super().__init__("n")
        self.bad = set(bad)

    def __call__(self, data):
        if data["n"] in self.bad:
            raise AnnotationError(f"{data['image']}: landmark 'asis_r' is missing")
        return {**data, "x": torch.full((1, 2), float(data["n"]))}


class RandFold(RandomizableTransform, MapTransform):
    """The random part: fails for the numbers in ``bad`` (degenerate geometry naming the file)."""

    def __init__(self, bad=()) -> None:
        RandomizableTransform.__init__(self, 1.0)
        MapTransform.__init__(self, "n")
        self.bad = set(bad)

    def __call__(self, data):
        if data["n"] in self.bad:
            raise GeometryError(f"{data['image']}: the landmarks are collinear")
        return {"x": data["x"], "n": data["n"]}


def items(n: int) -> list[dict]:
    return [{"n": i, "image": f"/data/img{i}.dcm"} for i in range(n)]


def dataset(n=8, bad_cached=(), bad_random=(), **kwargs) -> FailureTolerantCacheDataset:
    transform = Compose([LoadNumber(bad_cached), RandFold(bad_random)])
    return FailureTolerantCacheDataset(items(n), transform, num_workers=1, progress=False, **kwargs)


def skipped(sample) -> list[dict]:
    return json.loads(sample[SKIPPED_KEY]) if sample[SKIPPED_KEY] else []


def test_a_sample_that_cannot_be_made_is_replaced_by_the_next_item_and_named():
    data = dataset(bad_cached=[3], bad_random=[5, 7])
    assert data[2]["n"] == 2 and skipped(data[2]) == []
    assert data[3]["n"] == 4  # img3's annotation fails when cached: img4 takes its place
    assert skipped(data[3]) == [
        {
            "image": "/data/img3.dcm",
            "status": "invalid_annotation",
            "error": "/data/img3.dcm: landmark 'asis_r' is missing",
        }
    ]
    assert data[5]["n"] == 6 and skipped(data[5])[0]["status"] == "invalid_geometry"  # a random transform failed
    assert data[7]["n"] == 0 and skipped(data[7])[0]["image"] == "/data/img7.dcm"  # the list wraps around
    assert data[3]["n"] == 4 and len(skipped(data[3])) == 1  # a cached failure fails again at every draw


def test_only_the_scheduled_sample_is_reported_and_too_many_failures_in_a_row_stop_the_draw():
    data = dataset(bad_random=[1, 2])
    # img2 fails as img1's stand-in too, but it is reported (and counted) only when it is scheduled itself
    assert data[1]["n"] == 3 and [f["image"] for f in skipped(data[1])] == ["/data/img1.dcm"]
    assert data[2]["n"] == 3 and [f["image"] for f in skipped(data[2])] == ["/data/img2.dcm"]
    with pytest.raises(SampleFailureError, match="3 samples in a row cannot be made, from item 0 on"):
        dataset(n=4, bad_random=[0, 1, 2, 3], max_consecutive_failures=3)[0]


def test_errors_outside_catch_stop_the_run():
    class Broken(MapTransform):
        def __call__(self, data):
            raise TypeError("a bug, not a bad image")

    with pytest.raises(RuntimeError, match="applying transform") as raised:
        FailureTolerantCacheDataset(items(2), Compose([Broken("n")]), catch=(ValueError,), progress=False)
    assert isinstance(raised.value.__cause__, TypeError)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_keep_their_size_and_pairs_and_carry_the_skipped_samples(num_workers):
    pairs = items(8)
    for item in pairs[:4]:  # img0/img1 and img2/img3 are pairs, the fractured image first
        item["pair_id"] = f"pair{item['n'] // 2}"
    data = FailureTolerantCacheDataset(pairs, Compose([LoadNumber(), RandFold(bad=[2])]), num_workers=1, progress=False)
    sampler = TwinBatchSampler(data.data, batch_size=4, drop_last=False, seed=0)
    batches = list(DataLoader(data, batch_sampler=sampler, num_workers=num_workers))
    assert [len(b["n"]) for b in batches] == [4, 4]
    drawn = sorted(int(n) for b in batches for n in b["n"])
    assert drawn == [0, 1, 3, 3, 4, 5, 6, 7]  # img2 failed: img3 stands in for it, next to its own draw
    texts = [t for b in batches for t in b[SKIPPED_KEY]]
    assert [json.loads(t)[0]["image"] for t in texts if t] == ["/data/img2.dcm"]
    for batch in batches:  # a pair stays in one batch: a twin never loses its slot beside its sibling
        ns = [int(n) for n in batch["n"]]
        assert (0 in ns) == (1 in ns)


def test_validation_leaves_out_items_that_cannot_be_made(caplog):
    with caplog.at_level(logging.WARNING, logger="scripts.failure_tolerant_dataset"):
        data = dataset(n=10, bad_cached=[4], substitute=False, max_failure_share=0.1)
    assert [data[i]["n"] for i in range(len(data))] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert [f.image for f in data.left_out] == ["/data/img4.dcm"]
    assert "1 of 10 items left out" in caplog.text and "/data/img4.dcm: landmark 'asis_r' is missing" in caplog.text
    with pytest.raises(SampleFailureError, match=r"2 of 10 items cannot be made \(20 %\), more than the allowed 10 %"):
        dataset(n=10, bad_cached=[4, 7], substitute=False, max_failure_share=0.1)


def run_guard(batches, max_share):
    """Run an engine over planted batches with the guard attached; returns the guard."""
    guard = TrainingFailureGuard(max_failure_share=max_share)
    engine = Engine(lambda engine, batch: None)
    guard.attach(engine)
    engine.run(batches, max_epochs=1)
    return guard


def batch(skipped_images=(), warps=("tps",) * 4) -> dict:
    texts = [
        json.dumps([{"image": i, "status": "invalid_geometry", "error": f"{i}: collinear"}]) for i in skipped_images
    ]
    return {"x": torch.zeros(4, 1), SKIPPED_KEY: texts + [""] * (4 - len(texts)), "tps_warp": list(warps)}


def test_guard_warns_and_counts_skipped_samples_and_warp_fallbacks(caplog):
    batches = [
        batch(["/data/a.dcm"], warps=("tps", "tps_regularised(lambda=0.01)", "tps", "tps")),
        batch(),
        batch(["/data/b.dcm"], warps=("affine", "tps", "tps", "tps_regularised(lambda=0.01)")),
    ]
    with caplog.at_level(logging.WARNING, logger="scripts.failure_tolerant_dataset"):
        guard = run_guard(batches, max_share=0.2)  # 2 of 12 samples = 16.7 % < 20 %
    assert guard.history == [
        {
            "epoch": 1,
            "samples": 12,
            "skipped": 2,
            "skipped_images": ["/data/a.dcm", "/data/b.dcm"],
            "warp_fallbacks": {"tps_regularised(lambda=0.01)": 2, "affine": 1},
        }
    ]
    assert "skipped sample /data/a.dcm (invalid_geometry): /data/a.dcm: collinear" in caplog.text
    assert "2 of 12 samples skipped" in caplog.text and "3 warps fell back" in caplog.text


def test_guard_stops_as_soon_as_the_epoch_share_is_certain_to_be_exceeded():
    batches = [batch(), batch(["/data/a.dcm", "/data/b.dcm"]), batch(), batch()]
    guard = TrainingFailureGuard(max_failure_share=0.1)
    engine = Engine(lambda engine, batch: None)
    guard.attach(engine)
    # after batch 2: 2 failures of the epoch's 4 x 4 = 16 samples (12.5 %) > 10 %: stop before batches 3 and 4
    with pytest.raises(SampleFailureError) as raised:
        engine.run(batches, max_epochs=1)
    assert engine.state.iteration == 2
    message = str(raised.value)
    assert message.startswith("2 of 16 samples of epoch 1 cannot be made (12.5 %), more than the allowed 10 %")
    assert "first: /data/a.dcm (invalid_geometry: /data/a.dcm: collinear); /data/b.dcm" in message


def test_guard_passes_at_exactly_the_share():
    guard = run_guard([batch(["/data/a.dcm"]), batch(), batch(), batch(), batch()], max_share=1 / 20)
    assert guard.history[0]["samples"] == 20 and guard.history[0]["skipped"] == 1

"""``FailureTolerantDataset``: failing items go to ``on_failure`` (also from DataLoader workers), the rest are
yielded, and an Ignite engine runs to the end of what is left, even when nothing is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ignite.engine import Engine, Events
from monai.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.failure_tolerant_dataset import FailureTolerantDataset  # noqa: E402


def odd_fails(item: dict) -> dict:
    if item["n"] % 2:
        raise ValueError(f"item {item['n']} is odd")
    return {"n": item["n"], "square": item["n"] ** 2}


class RecordToFile:
    """An ``on_failure`` that writes what it records (it may run in a worker process)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, item, error) -> None:
        (self.folder / f"{item['n']}.json").write_text(json.dumps({"error": str(error)}))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_good_items_are_yielded_and_failures_recorded(tmp_path, num_workers):
    items = [{"n": n} for n in range(7)]
    dataset = FailureTolerantDataset(items, odd_fails, on_failure=RecordToFile(tmp_path))
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
    seen = sorted(int(batch["n"][0]) for batch in loader)
    assert seen == [0, 2, 4, 6]
    assert sorted(int(p.stem) for p in tmp_path.glob("*.json")) == [1, 3, 5]
    assert json.loads((tmp_path / "3.json").read_text())["error"] == "item 3 is odd"


def test_errors_outside_catch_stop_the_iteration():
    def broken(item):
        raise TypeError("a bug, not a bad image")

    dataset = FailureTolerantDataset([{"n": 0}], broken, catch=(ValueError,))
    with pytest.raises(RuntimeError, match="applying transform") as raised:  # as MONAI's Dataset raises it
        list(dataset)
    assert isinstance(raised.value.__cause__, TypeError)


def test_engine_completes_when_every_item_failed():
    failures = []
    dataset = FailureTolerantDataset(
        [{"n": 1}, {"n": 3}], odd_fails, on_failure=lambda item, error: failures.append(item["n"])
    )
    engine = Engine(lambda e, batch: batch)
    completed = []
    engine.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    engine.run(DataLoader(dataset, batch_size=1), max_epochs=1)  # epoch_length left to the loader's exhaustion
    assert failures == [1, 3] and completed == [0]

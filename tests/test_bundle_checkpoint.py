"""Atomic checkpoints and resuming an interrupted Ignite training at the next epoch (unit level)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from _tiny_trainer import tiny_trainer  # noqa: E402

from scripts.checkpoint import BestModelSaver, ResumableCheckpoint, atomic_torch_save  # noqa: E402


class _Crash(RuntimeError):
    pass


_trainer = tiny_trainer


def test_interrupted_training_resumes_at_next_epoch_with_same_optimiser_state(tmp_path):
    path = tmp_path / "last.pt"
    trainer, net, opt = _trainer(3)
    ResumableCheckpoint(path, {"network": net, "optimizer": opt}).attach(trainer)

    @trainer.on(Events.EPOCH_COMPLETED(once=2))
    def crash(engine):  # after the epoch-2 checkpoint (attached later than the saver)
        raise _Crash

    with pytest.raises(_Crash):
        trainer.run()
    saved = torch.load(path, weights_only=True)
    assert saved["trainer"] == {"epoch": 2, "iteration": 8}
    assert not list(tmp_path.glob(".last.pt.*"))  # no temporary file left behind

    trainer2, net2, opt2 = _trainer(3)  # a fresh process: new, differently-trained objects
    resumer = ResumableCheckpoint(path, {"network": net2, "optimizer": opt2})
    resumer.attach(trainer2)
    epochs, state_at_start = [], {}

    @trainer2.on(Events.EPOCH_STARTED)
    def record(engine):
        epochs.append(engine.state.epoch)
        if not state_at_start:
            state_at_start["net"] = {k: v.clone() for k, v in net2.state_dict().items()}
            state_at_start["opt"] = {
                pid: {k: v.clone() for k, v in st.items()} for pid, st in opt2.state_dict()["state"].items()
            }

    trainer2.run()
    assert resumer.resumed_from_epoch == 2
    assert epochs == [3]
    assert trainer2.state.iteration == 12
    for k, v in saved["network"].items():
        torch.testing.assert_close(state_at_start["net"][k], v)
    for pid, st in saved["optimizer"]["state"].items():
        for k in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(state_at_start["opt"][pid][k], st[k])


def test_atomic_save_leaves_old_file_when_write_fails(tmp_path):
    path = tmp_path / "model.pt"
    atomic_torch_save({"a": torch.ones(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": Unpicklable()}, path)
    torch.testing.assert_close(torch.load(path, weights_only=True)["a"], torch.ones(1))
    assert os.listdir(tmp_path) == ["model.pt"]


def test_best_model_saver_writes_only_on_improvement(tmp_path):
    from ignite.metrics import Metric
    from monai.engines import SupervisedEvaluator

    net = torch.nn.Linear(1, 1)
    values = iter([0.5, 0.3, 0.9])

    class Scripted(Metric):  # returns the next of the scripted validation scores
        def reset(self):
            pass

        def update(self, output):
            pass

        def compute(self):
            return next(values)

    data = [{"image": torch.zeros(1, 1), "label": torch.zeros(1, 1)}]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=data,
        network=net,
        key_val_metric={"m": Scripted(output_transform=lambda out: (out["pred"], out["label"]))},
        decollate=False,
    )
    path = tmp_path / "model.pt"
    BestModelSaver(path, net).attach(evaluator)
    saved_at = []
    for epoch in (1, 2, 3):
        with torch.no_grad():
            net.weight.fill_(epoch)
        evaluator.run(epoch)
        saved_at.append(float(torch.load(path, weights_only=True)["weight"]))
    assert saved_at == [1.0, 1.0, 3.0]

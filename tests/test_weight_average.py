"""The moving average of the weights (scripts.weight_average): its arithmetic, its off switch, resuming it, and
train.json's wiring (the evaluator and model.pt see the average)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

from _tiny_trainer import tiny_trainer  # noqa: E402

from scripts.checkpoint import ResumableCheckpoint  # noqa: E402
from scripts.weight_average import WeightAverage, WeightAverageUpdates  # noqa: E402


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))


def _set(net: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for tensor in [*net.parameters(), net[1].running_mean, net[1].running_var]:
            tensor.fill_(value)


def test_average_is_the_hand_computed_exponential_average_of_weights_and_buffers():
    net = _net()
    average = WeightAverage(net, decay=0.75)
    for value in (4.0, 8.0, 0.0):  # the first update copies; then avg = 0.75 * avg + 0.25 * new
        _set(net, value)
        average.update()
    expected = 0.75 * (0.75 * 4.0 + 0.25 * 8.0) + 0.25 * 0.0  # 3.75
    averaged = average.averaged
    assert average.updates == 3
    assert type(averaged) is type(net) and averaged is not net
    assert set(averaged.state_dict()) == set(net.state_dict())  # model.pt keeps the network's keys
    for tensor in [*averaged.parameters(), averaged[1].running_mean, averaged[1].running_var]:
        torch.testing.assert_close(tensor, torch.full_like(tensor, expected))
    assert not averaged.training  # never trained itself: evaluated as is


def test_off_means_the_network_itself_and_nothing_kept():
    net = _net()
    for decay in (None, 0, 0.0):
        average = WeightAverage(net, decay)
        assert average.averaged is net and average.updates == 0 and average.state_dict() == {}
        average.load_state_dict({})  # a checkpoint written with the average off
    on = WeightAverage(net, 0.5)
    on.update()
    with pytest.raises(ValueError, match="weight_average_decay is off"):
        WeightAverage(net, None).load_state_dict(on.state_dict())
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="weight_average_decay"):
            WeightAverage(net, bad)


def _trainer(max_epochs: int, decay: float | None, optional=("weight_average",), with_average_in_ckpt=True):
    trainer, net, opt = tiny_trainer(max_epochs)
    average = WeightAverage(net, decay)
    average.attach(trainer)
    save_dict = {"network": net, "optimizer": opt}
    if with_average_in_ckpt:
        save_dict["weight_average"] = average
    return trainer, net, average, save_dict, (optional if with_average_in_ckpt else ())


def test_resumed_training_continues_the_saved_average(tmp_path):
    path = tmp_path / "last.pt"
    trainer, _, average, save_dict, optional = _trainer(2, decay=0.9)
    ResumableCheckpoint(path, save_dict, optional=optional).attach(trainer)
    trainer.run()
    saved = {k: v.clone() for k, v in average.averaged.state_dict().items()}
    assert average.updates == 8

    trainer2, _, average2, save_dict2, optional2 = _trainer(3, decay=0.9)
    ResumableCheckpoint(path, save_dict2, optional=optional2).attach(trainer2)
    at_start = {}

    @trainer2.on(Events.EPOCH_STARTED(once=3))
    def record(engine):
        at_start.update(
            updates=average2.updates, state={k: v.clone() for k, v in average2.averaged.state_dict().items()}
        )

    trainer2.run()
    assert at_start["updates"] == 8
    for key, value in saved.items():
        torch.testing.assert_close(at_start["state"][key], value)
    assert average2.updates == 12


def test_checkpoint_without_an_average_resumes_and_the_average_starts_from_the_resumed_weights(tmp_path, caplog):
    path = tmp_path / "last.pt"
    trainer, _, _, save_dict, _ = _trainer(2, decay=None, with_average_in_ckpt=False)  # an older configuration
    ResumableCheckpoint(path, save_dict).attach(trainer)
    trainer.run()
    old = tmp_path / "old.pt"
    old.write_bytes(path.read_bytes())

    trainer2, net2, average2, save_dict2, optional2 = _trainer(3, decay=0.5)
    ResumableCheckpoint(path, save_dict2, optional=optional2).attach(trainer2)
    first = {}

    @trainer2.on(Events.ITERATION_COMPLETED(once=9))
    def record(engine):  # the first update after resuming copies the network
        first["match"] = all(
            torch.equal(a, b) for a, b in zip(average2.averaged.parameters(), net2.parameters(), strict=True)
        )

    with caplog.at_level(logging.WARNING):
        trainer2.run()
    assert first["match"]
    assert "holds no 'weight_average'" in caplog.text
    # only keys named optional may be missing, and they must be keys of save_dict
    trainer3, _, _, save_dict3, _ = _trainer(3, decay=0.5)
    ResumableCheckpoint(old, save_dict3).attach(trainer3)
    with pytest.raises(KeyError, match="weight_average"):
        trainer3.run()
    with pytest.raises(ValueError, match="not in save_dict"):
        ResumableCheckpoint(old, {"network": net2}, optional=["weight_average"])


@pytest.mark.parametrize("decay", [None, 0.99])
def test_train_json_validates_and_saves_the_average(decay, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update(
        {
            "bundle_root": str(tmp_path),  # the handlers' logs and checkpoints go there
            "device": "$torch.device('cpu')",
            "network_kwargs": {
                "init_features": 4,
                "growth_rate": 4,
                "block_config": [1, 1, 1, 1],
                "bn_size": 2,
                "projection_channels": 4,
            },
        }
    )
    if decay is not None:
        parser["weight_average_decay"] = decay
    parser.parse(True)
    network = parser.get_parsed_content("network")
    average = parser.get_parsed_content("weight_average")
    evaluator = parser.get_parsed_content("validate#evaluator")
    saver = next(h for h in parser.get_parsed_content("validate#handlers") if type(h).__name__ == "BestModelSaver")
    trainer_handlers = parser.get_parsed_content("train#handlers")
    checkpoint = next(h for h in trainer_handlers if isinstance(h, ResumableCheckpoint))
    updates = [h for h in trainer_handlers if type(h).__name__ == "WeightAverageUpdates"]
    assert len(updates) == 1 and updates[0].average is average and checkpoint.save_dict["weight_average"] is average
    if decay is None:
        assert evaluator.network is network and saver.network is network
    else:
        assert average.decay == decay
        assert evaluator.network is average.averaged and saver.network is average.averaged
        assert evaluator.network is not network


def test_evaluate_json_scores_the_loaded_weights_even_with_an_average_configured(tmp_path):
    """evaluate.json loads model.pt (already the averaged weights) into the network: the evaluator must run that
    network, not a training-time average of its initial weights."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "evaluate.json")])
    parser.update({"bundle_root": str(tmp_path), "device": "$torch.device('cpu')", "weight_average_decay": 0.99})
    parser.parse(True)
    assert parser.get_parsed_content("validate#evaluator").network is parser.get_parsed_content("network")


def test_the_updates_handler_updates_the_average_every_iteration():
    trainer, net, _ = tiny_trainer(2)
    average = WeightAverage(net, 0.5)
    WeightAverageUpdates(average).attach(trainer)
    trainer.run()
    assert average.updates == 8  # 2 epochs of 4 iterations
    # decay 0.5 after 8 updates: the average lags the trained weights (it is not a copy of them)
    assert not torch.equal(average.averaged.weight, net.weight)

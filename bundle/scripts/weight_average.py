"""An exponential moving average of the network's weights, kept beside training and validated instead of it.

The image score is the heatmap's maximum, so one false peak in a negative image moves it; from one validation to
the next (a few hundred steps apart) the raw weights' validation AUC swung by 0.1-0.2 on the CPU recipe
(``benchmarks/results/fracture_learning_probes.md``, probe 15). The average of the recent weights is a smoother
model than any single step's.

After every training iteration :class:`WeightAverage` updates ``averaged = decay * averaged + (1 - decay) *
weights`` for every parameter and buffer (BatchNorm's running statistics are averaged alike, so the averaged model
needs no extra pass over the data). The first update copies the weights, so an average created before a checkpoint
is loaded starts from the loaded weights. ``averaged`` is a network of the same class with the same state-dict keys:
the training's evaluator and ``BestModelSaver`` use it as they would the network, so ``model.pt`` holds the averaged
weights, which ``evaluate.json`` and ``inference.json`` load into their network like any other.

``configs/train.json`` always builds one (``weight_average``; ``weight_average_decay`` ``null``: off, and
``averaged`` is the network itself), updated by a :class:`WeightAverageUpdates` among the train handlers.
"""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from scripts.checkpoint import unwrap_model

__all__ = ["WeightAverage", "WeightAverageUpdates"]


class WeightAverage:
    """Exponential moving average of ``network``'s parameters and buffers, updated after each training iteration.

    Attach to the trainer. Its ``state_dict`` (the averaged weights and the number of updates) goes into the
    resumable checkpoint beside the network's.

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper is looked through).
        decay: the weight of the old average at each update, in (0, 1); about ``1 / (1 - decay)`` steps are averaged.
            ``None`` or 0: no average; ``averaged`` is then ``network`` itself and nothing is kept.
    """

    def __init__(self, network: torch.nn.Module, decay: float | None) -> None:
        self.network = network
        self.decay = float(decay or 0.0)
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"weight_average_decay must lie in [0, 1) (0 or null: off), got {decay}.")
        self.average = None
        if self.decay:
            self.average = AveragedModel(
                unwrap_model(network), multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True
            )
            self.average.eval()

    @property
    def averaged(self) -> torch.nn.Module:
        """The averaged network (same class and state-dict keys as ``network``); ``network`` itself when off."""
        return unwrap_model(self.network) if self.average is None else self.average.module

    @property
    def updates(self) -> int:
        """How many training iterations the average has seen (0 when off)."""
        return 0 if self.average is None else int(self.average.n_averaged)

    def attach(self, engine: Engine) -> None:
        if self.average is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def update(self, engine: Engine | None = None) -> None:
        if self.average is not None:
            self.average.update_parameters(unwrap_model(self.network))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.average is None else self.average.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.average is None:
            if state:
                raise ValueError(
                    "the checkpoint holds a weight average, but weight_average_decay is off: set it (as in the "
                    "run that wrote the checkpoint) or train from scratch."
                )
            return
        if not state:
            return  # written with the average off: it starts from the next update
        self.average.load_state_dict(state)


class WeightAverageUpdates:
    """The train handler that updates a :class:`WeightAverage` defined elsewhere in the config.

    A config's handler list holds dicts, and other configs (MONAI Label's trainer) insert handlers into it, so the
    average itself lives at the top level (``weight_average``) and this entry only attaches its updates.

    Args:
        average: the :class:`WeightAverage`.
    """

    def __init__(self, average: WeightAverage) -> None:
        self.average = average

    def attach(self, engine: Engine) -> None:
        self.average.attach(engine)

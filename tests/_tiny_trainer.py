"""A seeded four-batch SupervisedTrainer of a Linear(3, 1) on CPU, for the checkpoint and weight-average tests."""

from __future__ import annotations

import torch
from monai.engines import SupervisedTrainer


def tiny_trainer(max_epochs: int, handlers=()) -> tuple[SupervisedTrainer, torch.nn.Module, torch.optim.Optimizer]:
    """``(trainer, network, optimiser)``: 4 iterations an epoch; the same weights and data at every call."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    data = [{"image": torch.randn(2, 3), "label": torch.randn(2, 1)} for _ in range(4)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=data,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        train_handlers=list(handlers),
        prepare_batch=lambda batch, device, non_blocking, **kw: (batch["image"], batch["label"]),
    )
    return trainer, net, opt

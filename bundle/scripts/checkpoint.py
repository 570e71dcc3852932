"""Checkpoints written atomically, and resuming an interrupted training at the next epoch.

Two files, both written to a temporary file in the same folder and moved into place with
``os.replace`` (atomic on POSIX), so a run killed mid-write never leaves a truncated checkpoint:

- ``last`` (default ``models/last.pt``), after every ``save_interval`` training epochs: the state
  dicts of the network, optimiser (and any other object given), the trainer's epoch and iteration,
  and the validator's best metric so far. :class:`ResumableCheckpoint` reloads it when training
  starts, so a killed run continues at the next epoch with the same optimiser state.
- ``best`` (default ``models/model.pt``), the network weights alone (the model-zoo layout that
  ``ckpt_export`` and the inference config read) whenever the validator's key metric improves.

Loading uses ``torch.load(..., weights_only=True)``. Only global rank 0 writes.

A run killed inside a save (SIGKILL, power loss) leaves its temporary file (``.last.pt.<random>.tmp``) behind; the
next training removes those of the files it writes when it starts (:func:`remove_stale_temporaries`).
:class:`EpochValidationHandler` validates every ``interval`` epochs and after the last epoch, so that a run shorter
than ``val_interval`` still validates once and can write ``model.pt``.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

__all__ = [
    "atomic_torch_save",
    "unwrap_model",
    "remove_stale_temporaries",
    "ResumableCheckpoint",
    "BestModelSaver",
    "EpochValidationHandler",
]

logger = logging.getLogger(__name__)


def _is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel`` (so weights load without them)."""
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return model.module
    return model


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files that interrupted :func:`atomic_torch_save` calls for ``path`` left beside it (a
    killed process cannot remove its own); returns what was removed. Call it when no save of ``path`` can be running
    (a training's start)."""
    path = Path(path)
    if not path.parent.is_dir() or not _is_rank0():
        return []
    removed = []
    for stale in path.parent.glob(f"{glob.escape(_temporary_prefix(path))}*.tmp"):
        if stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)
            removed.append(str(stale))
    if removed:
        logger.warning(f"removed {len(removed)} temporary file(s) an interrupted save of {path} left: {removed}")
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _state_dict(obj: Any) -> Any:
    return unwrap_model(obj).state_dict() if isinstance(obj, torch.nn.Module) else obj.state_dict()


class ResumableCheckpoint:
    """Saves everything needed to resume after each ``save_interval`` epochs, and resumes from it at start.

    Attach to the trainer (it is a train handler). At ``STARTED`` it loads ``path`` when the file exists
    (and ``resume`` is true): every object of ``save_dict`` gets its state back, the trainer's epoch and
    iteration are set so that Ignite continues with the next epoch (the configured ``max_epochs`` is
    kept, so a run may be extended), and the validator's best metric is restored so that ``model.pt`` is
    only replaced by a better model.

    Args:
        path: the checkpoint file, e.g. ``models/last.pt``.
        save_dict: objects with ``state_dict``/``load_state_dict`` (``network``, ``optimizer``,
            ``lr_scheduler``, ...); a wrapped (DDP) network is saved unwrapped.
        validator: the validation evaluator whose ``best_metric``/``best_metric_epoch`` to keep.
        optional: keys of ``save_dict`` that a checkpoint may lack (written by a configuration without them, e.g.
            ``weight_average``); their objects then keep their fresh state, and a warning says so. Any other
            missing key is an error.
        save_interval: save after every this many epochs (and always after the last one).
        resume: whether to load an existing checkpoint at start.
        map_location: where to load tensors.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        save_dict: Mapping[str, Any],
        validator: Engine | None = None,
        optional: Sequence[str] = (),
        save_interval: int = 1,
        resume: bool = True,
        map_location: str | torch.device | None = "cpu",
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}.")
        for name in ("trainer", "best_metric", "best_metric_epoch"):
            if name in save_dict:
                raise ValueError(f"save_dict key '{name}' is reserved by ResumableCheckpoint.")
        self.path = Path(path)
        self.save_dict = dict(save_dict)
        self.validator = validator
        unknown = sorted(set(optional) - set(self.save_dict))
        if unknown:
            raise ValueError(f"optional keys {unknown} are not in save_dict {sorted(self.save_dict)}.")
        self.optional = frozenset(optional)
        self.save_interval = int(save_interval)
        self.resume = bool(resume)
        self.map_location = map_location
        self.resumed_from_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: remove_stale_temporaries(self.path))
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def checkpoint(self, engine: Engine) -> dict[str, Any]:
        ckpt: dict[str, Any] = {k: _state_dict(v) for k, v in self.save_dict.items()}
        ckpt["trainer"] = {"epoch": int(engine.state.epoch), "iteration": int(engine.state.iteration)}
        if self.validator is not None:
            ckpt["best_metric"] = float(self.validator.state.best_metric)
            ckpt["best_metric_epoch"] = int(self.validator.state.best_metric_epoch)
        return ckpt

    def save(self, engine: Engine) -> None:
        last_epoch = engine.state.epoch >= (engine.state.max_epochs or 0)
        if (engine.state.epoch % self.save_interval and not last_epoch) or not _is_rank0():
            return
        atomic_torch_save(self.checkpoint(engine), self.path)
        logger.info(f"saved resumable checkpoint of epoch {engine.state.epoch} to {self.path}")

    def load(self, engine: Engine) -> None:
        if not (self.resume and self.path.is_file()):
            return
        ckpt = torch.load(self.path, map_location=self.map_location, weights_only=True)
        missing = [k for k in (*self.save_dict, "trainer") if k not in ckpt and k not in self.optional]
        if missing:
            raise KeyError(f"{self.path}: checkpoint lacks {missing}; delete it to train from scratch.")
        for name, obj in self.save_dict.items():
            if name not in ckpt:
                logger.warning(f"{self.path} holds no '{name}': it starts afresh from the resumed training.")
                continue
            target = unwrap_model(obj) if isinstance(obj, torch.nn.Module) else obj
            target.load_state_dict(ckpt[name])
        engine.state.epoch = int(ckpt["trainer"]["epoch"])
        engine.state.iteration = int(ckpt["trainer"]["iteration"])
        if self.validator is not None and "best_metric" in ckpt:
            self.validator.state.best_metric = ckpt["best_metric"]
            self.validator.state.best_metric_epoch = ckpt["best_metric_epoch"]
        self.resumed_from_epoch = engine.state.epoch
        logger.warning(
            f"resuming from {self.path}: epoch {engine.state.epoch} was completed, continuing with epoch "
            f"{engine.state.epoch + 1} of {engine.state.max_epochs}."
        )


class BestModelSaver:
    """Writes the network weights to ``path`` whenever the evaluator's key metric reaches a new best.

    Attach to the validation evaluator (a val handler); it relies on MONAI's evaluator bookkeeping of
    ``state.best_metric_epoch``.

    Args:
        path: e.g. ``models/model.pt``.
        network: the network (unwrapped from DDP before saving).
    """

    def __init__(self, path: str | os.PathLike, network: torch.nn.Module) -> None:
        self.path = Path(path)
        self.network = network

    def attach(self, engine: Engine) -> None:
        remove_stale_temporaries(self.path)  # built before the training starts: no save of it is running
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch != engine.state.epoch or not _is_rank0():
            return
        atomic_torch_save(unwrap_model(self.network).state_dict(), self.path)
        logger.info(
            f"new best key metric {engine.state.best_metric:.4f} at epoch {engine.state.epoch}: saved {self.path}"
        )


class EpochValidationHandler(ValidationHandler):
    """MONAI's epoch-level ``ValidationHandler`` that also validates after the last epoch when ``interval`` does not
    divide it: with ``max_epochs`` below ``val_interval`` MONAI's would never validate, so no ``model.pt`` would be
    written, without a word. A warning at the start says when that is the only validation.

    Args:
        interval: validate every this many epochs.
        validator: the validation evaluator.
        exec_at_start: also validate before the first epoch.
    """

    def __init__(self, interval: int, validator=None, exec_at_start: bool = False) -> None:
        if int(interval) < 1:
            raise ValueError(f"val_interval must be >= 1, got {interval}.")
        super().__init__(int(interval), validator, epoch_level=True, exec_at_start=exec_at_start)

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._last_unvalidated_epoch), self)
        engine.add_event_handler(Events.STARTED, self._warn_if_late)

    def _last_unvalidated_epoch(self, engine: Engine, epoch: int) -> bool:
        return epoch == engine.state.max_epochs and epoch % self.interval != 0

    def _warn_if_late(self, engine: Engine) -> None:
        if (engine.state.max_epochs or 0) < self.interval:
            logger.warning(
                f"val_interval ({self.interval}) is above max_epochs ({engine.state.max_epochs}): the model is "
                "validated once, after the last epoch (model.pt is written then, if validation can rank it)."
            )

"""A dataset for batch inference in which one bad image does not stop the others.

MONAI's ``Dataset`` raises the first transform error inside the ``DataLoader``, which stops the engine and
with it every later image. :class:`FailureTolerantDataset` applies the transform item by item, hands an item
whose transform raises to ``on_failure`` (which writes that image's error report) and yields only the items
that were transformed. It is iterable, so the number of good items need not be known in advance: an Ignite
engine with ``epoch_length=None`` (MONAI's default for a loader without a length) runs to its exhaustion,
also when no item is left (then no iteration runs and the engine still completes).

With ``DataLoader`` workers every worker transforms every ``num_workers``-th item (as MONAI's
``IterableDataset``), and ``on_failure`` runs in the worker that met the error: it should write what it
records (a file), not keep it in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from monai.data import IterableDataset
from monai.transforms import apply_transform
from torch.utils.data import get_worker_info

from custom_transforms.errors import root_cause

__all__ = ["FailureTolerantDataset"]

logger = logging.getLogger(__name__)


class FailureTolerantDataset(IterableDataset):
    """Transform each item; pass an item whose transform fails to ``on_failure`` and go on with the next.

    Args:
        data: the items (e.g. ``{"image": path, "annotation": path or None}``).
        transform: the preprocessing applied to each item.
        on_failure: called as ``on_failure(item, error)`` for an item whose transform raised ``error`` (one of
            ``catch``; MONAI's ``"applying transform"`` wrappers removed); ``None`` only logs a warning.
        catch: the error classes that are recorded per item; others propagate and stop the run.
    """

    def __init__(
        self,
        data: Sequence[Any],
        transform: Callable | None = None,
        on_failure: Callable[[Any, BaseException], Any] | None = None,
        catch: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        super().__init__(data=data, transform=transform)
        self.on_failure = on_failure
        self.catch = tuple(catch)

    def __iter__(self):
        info = get_worker_info()
        num_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        for index, item in enumerate(self.data):
            if index % num_workers != worker:
                continue
            try:
                result = item if self.transform is None else apply_transform(self.transform, item)
            except Exception as raised:
                error = root_cause(raised, prefer=self.catch)  # the transform's own error, not MONAI's wrapper
                if not isinstance(error, self.catch):
                    raise
                if self.on_failure is None:
                    logger.warning(f"item {index} skipped: {error}")
                else:
                    self.on_failure(item, error)
                continue
            yield result


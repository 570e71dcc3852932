"""Datasets in which one sample that cannot be made does not stop the run: batch inference, training, validation.

MONAI's ``Dataset`` raises the first transform error inside the ``DataLoader``, which stops the engine and
with it every later image. :class:`FailureTolerantDataset` applies the transform item by item, hands an item
whose transform raises to ``on_failure`` (which writes that image's error report) and yields only the items
that were transformed. It is iterable, so the number of good items need not be known in advance: an Ignite
engine with ``epoch_length=None`` (MONAI's default for a loader without a length) runs to its exhaustion,
also when no item is left (then no iteration runs and the engine still completes).

With ``DataLoader`` workers every worker transforms every ``num_workers``-th item (as MONAI's
``IterableDataset``), and ``on_failure`` runs in the worker that met the error: it should write what it
records (a file), not keep it in memory.

Training and validation read a cached, map-style dataset (the sampler chooses the indices, the cache is filled
once): :class:`FailureTolerantCacheDataset` skips a training sample that cannot be made and lets the next item
take its slot, so batches keep their size and the sampler its indices; validation leaves such items out once,
at construction. :class:`TrainingFailureGuard` (an Ignite handler on the trainer) reads what was skipped from the
batches, warns about each sample, counts the skipped samples and the TPS warps that fell back per epoch, and
stops the run when more than a set share of an epoch's samples fail (``max_failed_sample_share`` in
``configs/train.json``, default 1 %): a few bad images are noise, many mean that the data or the preprocessing
is wrong, which ``python -m scripts.screen_datalist`` shows before training.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from monai.data import CacheDataset, IterableDataset
from monai.transforms import apply_transform
from torch.utils.data import get_worker_info

from custom_transforms.errors import root_cause

from scripts.reporting.inference_failures import Failure, describe_failure

__all__ = [
    "DEFAULT_MAX_FAILURE_SHARE",
    "FailureTolerantCacheDataset",
    "FailureTolerantDataset",
    "SKIPPED_KEY",
    "SampleFailureError",
    "TrainingFailureGuard",
]

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


# Training and validation: a cached dataset that skips a sample its transforms cannot make, and the epoch's guard.

#: Key under which each training sample carries the failures it stands in for (JSON text, ``""`` for none).
SKIPPED_KEY = "skipped_samples"
#: Default largest share of an epoch's sample draws that may fail before training stops.
DEFAULT_MAX_FAILURE_SHARE = 0.01


class _CachedFailure:
    """What the cache holds for an item whose deterministic transforms failed."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure


class _SampleFailed(Exception):
    """Internal: one draw of a sample failed (carries its :class:`Failure`)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


def _failure_of(item: Any, error: BaseException, image_key: str) -> Failure:
    image = item.get(image_key, "") if isinstance(item, Mapping) else ""
    return describe_failure(str(image), error)


class FailureTolerantCacheDataset(CacheDataset):
    """MONAI's ``CacheDataset``, in which one sample that its transforms cannot make does not end the run.

    A sample fails when its transforms raise one of ``catch``: the cached, deterministic part at construction or
    the random part at each draw (MONAI's wrappers removed; the status is
    :func:`~scripts.reporting.inference_failures.describe_failure`'s). Two behaviours:

    - ``substitute=True`` (training): the failed sample is skipped and the next item of the list (the one after
      that, ... up to ``max_consecutive_failures`` tries) takes its place, so a batch keeps its size and no
      sampler's indices change (``TwinBatchSampler`` still sees its pairs; a twin whose sibling failed draws its
      own window). Every sample carries under :data:`SKIPPED_KEY` the scheduled sample it stands in for, as JSON
      text of ``[{"image", "status", "error"}]`` (``""`` when it is the scheduled one; text collates into a list
      whatever it holds), which :class:`TrainingFailureGuard` reads from the batches in the main process: it warns,
      counts and stops the run when too many fail. A stand-in that fails too is passed over without a report (it
      counts when it is scheduled itself), so the count is of the epoch's scheduled samples. An item whose cached
      part failed fails again at every draw, so it counts in every epoch.
    - ``substitute=False`` (validation, deterministic transforms only): items whose cached part fails are left
      out of the dataset with a warning naming the file and the reason; when more than ``max_failure_share`` of
      them fail, construction raises :class:`SampleFailureError`. A failure of a later, random transform raises.

    Args:
        data: the items (``{"image": path, ...}``).
        transform: a ``Compose``; the part before the first random transform is cached.
        substitute: see above.
        max_failure_share: with ``substitute=False``, the largest share of items that may fail at construction.
        max_consecutive_failures: with ``substitute=True``, how many items in a row may fail before the draw raises
            :class:`SampleFailureError` (a dataset in which nothing can be made).
        catch: the error classes that make a sample fail; others propagate and stop the run.
        image_key: the item's image path, for messages.
        cache_kwargs: ``CacheDataset``'s other arguments (``cache_rate``, ``num_workers``, ...; not
            ``hash_as_key``).
    """

    def __init__(
        self,
        data: Sequence[Any],
        transform: Callable | None = None,
        substitute: bool = True,
        max_failure_share: float = DEFAULT_MAX_FAILURE_SHARE,
        max_consecutive_failures: int = 10,
        catch: tuple[type[BaseException], ...] = (Exception,),
        image_key: str = "image",
        **cache_kwargs: Any,
    ) -> None:
        if cache_kwargs.get("hash_as_key"):
            raise ValueError("FailureTolerantCacheDataset: hash_as_key is not supported (a failure is kept per index)")
        if not 0.0 <= max_failure_share <= 1.0:
            raise ValueError(f"max_failure_share must be in [0, 1], got {max_failure_share}")
        if max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures must be at least 1, got {max_consecutive_failures}")
        self.substitute = bool(substitute)
        self.max_failure_share = float(max_failure_share)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.catch = tuple(catch)
        self.image_key = image_key
        #: The items left out at construction (``substitute=False``), as :class:`Failure`.
        self.left_out: list[Failure] = []
        super().__init__(data=data, transform=transform, **cache_kwargs)

    def _load_cache_item(self, idx: int):
        try:
            return super()._load_cache_item(idx)
        except Exception as raised:
            failure = self._caught(self.data[idx], raised)
            logger.warning(f"cannot make sample {failure.image} ({failure.status}): {_first_line(failure.error)}")
            return _CachedFailure(failure)

    def _caught(self, item: Any, raised: Exception) -> Failure:
        """The failure of ``item``, or ``raised`` again when it is not one of ``catch``."""
        if not isinstance(root_cause(raised, prefer=self.catch), self.catch):
            raise raised
        return _failure_of(item, raised, self.image_key)

    def set_data(self, data: Sequence) -> None:
        super().set_data(data)
        if self.substitute or self._cache is None or not len(self.data):
            return
        failed = [i for i, cached in enumerate(self._cache) if isinstance(cached, _CachedFailure)]
        if not failed:
            return
        self.left_out = [self._cache[i].failure for i in failed]
        share = len(failed) / len(self.data)
        if share > self.max_failure_share:
            raise SampleFailureError(_share_message(self.left_out, len(self.data), self.max_failure_share, "items"))
        keep = sorted(set(range(len(self.data))) - set(failed))
        self.data = [self.data[i] for i in keep]
        # the cached items are the first cache_num of the list, so the kept ones stay a prefix of the new list
        self._cache = [self._cache[i] for i in keep if i < self.cache_num]
        self.cache_num = len(self._cache)
        logger.warning(
            f"{len(failed)} of {len(failed) + len(keep)} items left out (their samples cannot be made): "
            + "; ".join(_first_line(f.error) for f in self.left_out)
        )

    def _draw(self, index: int):
        """One draw of item ``index``'s sample; raises :class:`_SampleFailed` when it cannot be made."""
        cached = self._cache[index] if self._cache is not None and 0 <= index < self.cache_num else None
        if isinstance(cached, _CachedFailure):
            raise _SampleFailed(cached.failure)
        try:
            return super()._transform(index)
        except Exception as raised:
            raise _SampleFailed(self._caught(self.data[index], raised)) from raised

    def _transform(self, index: int):
        index = int(index) % len(self.data)
        if not self.substitute:
            try:
                return self._draw(index)
            except _SampleFailed as failed:
                raise SampleFailureError(f"cannot make sample {failed.failure.error}") from failed
        failures: list[Failure] = []
        for attempt in range(self.max_consecutive_failures):
            try:
                sample = self._draw((index + attempt) % len(self.data))
            except _SampleFailed as failed:
                failures.append(failed.failure)
                continue
            # only the scheduled sample's failure is reported: a failing stand-in counts when it is scheduled
            # itself, so the guard's share is the share of the epoch's samples that failed
            return _with_skipped(sample, failures[:1])
        raise SampleFailureError(
            f"{len(failures)} samples in a row cannot be made, from item {index} on: "
            + "; ".join(_first_line(f.error) for f in failures[:3])
        )


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _with_skipped(sample, failures: list[Failure]):
    """``sample`` (a dict, or a list of dicts) with :data:`SKIPPED_KEY` set on it (on the first of a list)."""
    text = json.dumps([asdict(f) for f in failures]) if failures else ""
    if isinstance(sample, Mapping):
        return {**sample, SKIPPED_KEY: text}
    if isinstance(sample, list) and sample and all(isinstance(s, Mapping) for s in sample):
        return [{**s, SKIPPED_KEY: text if i == 0 else ""} for i, s in enumerate(sample)]
    if failures:
        raise TypeError(f"FailureTolerantCacheDataset: cannot attach the skipped samples to a {type(sample).__name__}")
    return sample


class SampleFailureError(RuntimeError):
    """Too many samples cannot be made: the run stops (the message gives the share and the first files)."""


def _share_message(failures: Sequence[Failure], total: int, max_share: float, what: str, where: str = "") -> str:
    first = "; ".join(f"{f.image} ({f.status}: {_first_line(f.error)})" for f in failures[:5])
    more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
    return (
        f"{len(failures)} of {total} {what}{where} cannot be made ({100 * len(failures) / max(total, 1):.3g} %), "
        f"more than the allowed {100 * max_share:.3g} % (max_failed_sample_share); first: {first}{more}. "
        "Screen the datalist first: python -m scripts.screen_datalist --datalist <datalist.json>"
    )


class TrainingFailureGuard:
    """Ignite handler: warns about each sample the training skipped, counts the skipped samples and the warps that
    fell back per epoch, and stops the run when more than ``max_failure_share`` of an epoch's samples failed.

    It reads the batches (at ``ITERATION_STARTED``, before MONAI's engine decollates them): :data:`SKIPPED_KEY`
    from :class:`FailureTolerantCacheDataset`, and ``warp_key`` (``custom_transforms.tps.TPSGridd``'s ``tps_warp``,
    when the training keeps it) for the warps that fell back. An epoch's samples are its batch slots (a failed
    sample's slot went to a stand-in); as soon as the failures exceed the share of the whole epoch
    (``epoch_length`` batches of the first batch's size), the run stops with :class:`SampleFailureError` naming the
    share and the first files. The counts are logged at the end of each epoch and of the run, and kept
    in ``self.history`` (one dict per epoch).

    Args:
        max_failure_share: the largest share of an epoch's samples that may fail (default 1 %).
        skipped_key: the batch key of the skipped samples.
        warp_key: the batch key naming each sample's warp (absent: fallbacks are not counted).
        exact_warp: the warp name that is no fallback.
    """

    def __init__(
        self,
        max_failure_share: float = DEFAULT_MAX_FAILURE_SHARE,
        skipped_key: str = SKIPPED_KEY,
        warp_key: str = "tps_warp",
        exact_warp: str = "tps",
    ) -> None:
        if not 0.0 <= max_failure_share <= 1.0:
            raise ValueError(f"max_failure_share must be in [0, 1], got {max_failure_share}")
        self.max_failure_share = float(max_failure_share)
        self.skipped_key, self.warp_key, self.exact_warp = skipped_key, warp_key, exact_warp
        self.history: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self.failures: list[Failure] = []
        self.slots = 0
        self.batch_size: int | None = None
        self.fallbacks: Counter = Counter()

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._reset())
        engine.add_event_handler(Events.ITERATION_STARTED, self.count_batch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.end_epoch)
        engine.add_event_handler(Events.COMPLETED, self.end_run)

    def count_batch(self, engine) -> None:
        batch = engine.state.batch
        if not isinstance(batch, Mapping):
            return
        size = _batch_size(batch)
        self.slots += size
        if self.batch_size is None:
            self.batch_size = size
        for text in _as_list(batch.get(self.skipped_key)):
            for record in json.loads(text) if text else []:
                failure = Failure(**record)
                self.failures.append(failure)
                logger.warning(
                    f"epoch {engine.state.epoch}: skipped sample {failure.image} ({failure.status}): "
                    f"{_first_line(failure.error)}"
                )
        self.fallbacks.update(w for w in map(str, _as_list(batch.get(self.warp_key))) if w != self.exact_warp)
        planned = max(int(engine.state.epoch_length or 0) * (self.batch_size or 0), self.slots)
        if len(self.failures) > self.max_failure_share * planned:  # the epoch's count can only grow from here
            raise SampleFailureError(self._too_many(engine, planned))

    def _too_many(self, engine, samples: int) -> str:
        return _share_message(
            self.failures, samples, self.max_failure_share, "samples", f" of epoch {engine.state.epoch}"
        )

    def end_epoch(self, engine) -> None:
        record = {
            "epoch": int(engine.state.epoch),
            "samples": self.slots,
            "skipped": len(self.failures),
            "skipped_images": sorted({f.image for f in self.failures}),
            "warp_fallbacks": dict(self.fallbacks),
        }
        self.history.append(record)
        if len(self.failures) > self.max_failure_share * self.slots:  # an epoch shorter than planned
            raise SampleFailureError(self._too_many(engine, self.slots))
        if self.failures or self.fallbacks:
            logger.warning(
                f"epoch {engine.state.epoch}: {len(self.failures)} of {self.slots} samples skipped"
                + (f" ({', '.join(record['skipped_images'])})" if self.failures else "")
                + f"; {sum(self.fallbacks.values())} warps fell back"
                + (f" ({_counts(self.fallbacks)})" if self.fallbacks else "")
            )

    def end_run(self, engine) -> None:
        skipped = sum(r["skipped"] for r in self.history)
        samples = sum(r["samples"] for r in self.history)
        fallbacks = sum((Counter(r["warp_fallbacks"]) for r in self.history), Counter())
        logger.info(
            f"training data: {skipped} of {samples} samples skipped over {len(self.history)} epochs, "
            f"{sum(fallbacks.values())} warps fell back" + (f" ({_counts(fallbacks)})" if fallbacks else "")
        )


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(counter.items()))


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _batch_size(batch: Mapping) -> int:
    """The number of samples in a collated batch (the first dimension of its first tensor, else a list's length)."""
    for value in batch.values():
        if hasattr(value, "shape") and len(value.shape):
            return int(value.shape[0])
    for value in batch.values():
        if isinstance(value, (list, tuple)):
            return len(value)
    return 1

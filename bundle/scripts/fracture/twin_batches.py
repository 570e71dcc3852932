"""Batches in which a fractured image and its intact twin travel together.

A simulated intact twin is the fractured image rendered again without its breaks (``docs/simulation.md``). Seen in
the same batch, at the same window (``custom_transforms.siamese_crop.RandSiameseCropd``'s ``pair_key``), the two
differ only by the fracture, and the gradient of the pair is the fracture's alone. On fold 0's validation pairs a
from-scratch DenseNet separated fractured from intact windows with AUC 0.78 after 300 steps with the pairs
together, 0.65 with the same samples shuffled apart (``benchmarks/results/fracture_learning_probes.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["TwinBatchSampler"]


class TwinBatchSampler(Sampler[list[int]]):
    """Shuffled batches of dataset indices that never split a pair, the fractured image first.

    Args:
        items: the dataset's items (``scripts.datalist.training_items``); items sharing a ``pair_id`` that is not
            None form a pair, in their list order (the fractured image precedes its twin there).
        batch_size: items per batch; a pair that would not fit goes to the next batch.
        drop_last: drop the last, smaller batch.
        seed: shuffling seed; each epoch (each iteration over the sampler) shuffles anew.
    """

    def __init__(self, items: Sequence[dict], batch_size: int, drop_last: bool = True, seed: int = 0) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 to hold a pair, got {batch_size}")
        units: dict[object, list[int]] = {}
        singles: list[list[int]] = []
        for index, item in enumerate(items):
            pair = item.get("pair_id")
            if pair is None:
                singles.append([index])
            else:
                units.setdefault(pair, []).append(index)
        for pair, members in units.items():
            if len(members) != 2:
                raise ValueError(
                    f"pair_id {pair!r} has {len(members)} items; a pair has a fractured image and its twin"
                )
        self.units = list(units.values()) + singles
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.rng = np.random.default_rng(seed)

    def _batches(self) -> list[list[int]]:
        pairs = [self.units[int(i)] for i in self.rng.permutation(len(self.units)) if len(self.units[int(i)]) == 2]
        singles = [self.units[int(i)] for i in self.rng.permutation(len(self.units)) if len(self.units[int(i)]) == 1]
        batches: list[list[int]] = []
        while True:
            batch: list[int] = []
            while len(batch) < self.batch_size:
                room = self.batch_size - len(batch)
                share = 2 * len(pairs) / max(2 * len(pairs) + len(singles), 1)
                if pairs and room >= 2 and (not singles or self.rng.uniform() < share):
                    batch.extend(pairs.pop())
                elif singles:
                    batch.extend(singles.pop())
                else:
                    break
            if len(batch) < self.batch_size:
                if batch and not self.drop_last:
                    batches.append(batch)
                return batches
            batches.append(batch)

    def __iter__(self) -> Iterator[list[int]]:
        # a fixed count per epoch (the engine's epoch length): the last batches of a shuffle may not fill exactly
        yield from self._batches()[: len(self)]

    def __len__(self) -> int:
        n = sum(len(u) for u in self.units)
        return max(n // self.batch_size - 1, 1) if self.drop_last else -(-n // self.batch_size)

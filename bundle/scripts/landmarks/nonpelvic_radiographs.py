"""Non-pelvic negatives for the landmark detector's training: drawn films with all-zero target heatmaps.

Training also on images whose targets are all zero teaches the heatmap network to answer "nothing here", which the
detector's plausibility score relies on. The films themselves are :func:`simulation.nonpelvic.render_nonpelvic`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from simulation.nonpelvic import NONPELVIC_KINDS, render_nonpelvic

__all__ = ["NonPelvicDataset"]


class NonPelvicDataset(Dataset):
    """Negatives for detector training: ``{"image": (1, H, W), "label": zeros (N, H, W)}`` items.

    Each access draws a fresh random image (seeded from torch's generator, so different every epoch
    and reproducible under ``monai.utils.set_determinism``), of the kinds in turn by index.

    Args:
        length: number of items per epoch.
        spatial_size: ``(H, W)`` = the detector's input size.
        num_landmarks: channels of the all-zero target.
        kinds: which kinds to draw.
        seed: base seed.
    """

    def __init__(
        self,
        length: int,
        spatial_size: Sequence[int],
        num_landmarks: int = 16,
        kinds: Sequence[str] = NONPELVIC_KINDS,
        seed: int = 0,
    ) -> None:
        unknown = set(kinds) - set(NONPELVIC_KINDS)
        if unknown:
            raise ValueError(f"unknown non-pelvic kinds {sorted(unknown)}; expected some of {NONPELVIC_KINDS}.")
        self.length = int(length)
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self.num_landmarks = int(num_landmarks)
        self.kinds = tuple(kinds)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        draw = int(torch.randint(0, 2**31 - 1, (1,)).item())
        rng = np.random.default_rng((self.seed, int(index), draw))
        kind = self.kinds[int(index) % len(self.kinds)]
        image = torch.from_numpy(render_nonpelvic(kind, self.spatial_size, rng))
        label = torch.zeros((self.num_landmarks, *self.spatial_size), dtype=torch.float32)
        return {"image": image, "label": label}

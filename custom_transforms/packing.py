"""Packing the two ROIs and the warp into the single network input (and the two masks into the target).

``siamese_input`` (8, h, w) float32 = ``[roi (3), roi_mirrored (3), tps_grid (2)]``: channels 0-2 the
pseudo-coloured ROI ``I``, 3-5 the pseudo-coloured mirrored ROI ``I_f``, 6-7 the ``grid_sample`` grid (x, y) that
warps ``I_f`` (or its features) onto ``I``. One tensor lets TorchScript, MONAI inferers, MONAI Label and MONAI
Deploy drive the network. ``target`` (2, h, w) = ``[M, M-hat]`` (fracture mask, contrastive mask).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["PackSiameseInputd", "SIAMESE_CHANNELS"]

#: Channel layout of ``siamese_input``.
SIAMESE_CHANNELS = ("roi_0", "roi_1", "roi_2", "roi_mirrored_0", "roi_mirrored_1", "roi_mirrored_2", "grid_x", "grid_y")


def _numpy(x) -> np.ndarray:
    t = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
    return t.detach().cpu().numpy().astype(np.float32, copy=False)


def _concatenate(parts) -> torch.Tensor:
    # numpy, not torch.cat: a memory copy gains nothing from torch's thread pool, which stalls on a busy machine
    return torch.from_numpy(np.concatenate([_numpy(p) for p in parts]))


class PackSiameseInputd(MapTransform):
    """Stack ``roi``, ``roi_mirrored`` (3 channels each) and ``tps_grid`` into ``siamese_input`` (8, h, w).

    Also stacks ``fracture_mask`` and ``contrastive_mask`` into ``target`` (2, h, w) when both exist.

    Args:
        keys: the ROI key (default ``"roi"``); its meta-data are kept on ``siamese_input``.
        mirrored_key, grid_key: the other inputs.
        mask_key, contrastive_key: the masks.
        output_key, target_key: outputs.
        allow_missing_keys: skip silently when the ROI is absent.
    """

    def __init__(
        self,
        keys="roi",
        mirrored_key: str = "roi_mirrored",
        grid_key: str = "tps_grid",
        mask_key: str = "fracture_mask",
        contrastive_key: str = "contrastive_mask",
        output_key: str = "siamese_input",
        target_key: str = "target",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mirrored_key = mirrored_key
        self.grid_key = grid_key
        self.mask_key = mask_key
        self.contrastive_key = contrastive_key
        self.output_key = output_key
        self.target_key = target_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            parts = {"roi": d[key], "roi_mirrored": d[self.mirrored_key], "tps_grid": d[self.grid_key]}
            expected = {"roi": 3, "roi_mirrored": 3, "tps_grid": 2}
            size = tuple(parts["roi"].shape[-2:])
            for name, value in parts.items():
                if value.shape[0] != expected[name] or tuple(value.shape[-2:]) != size:
                    raise ValueError(
                        f"PackSiameseInputd: '{name}' must have shape ({expected[name]}, {size[0]}, {size[1]}), got "
                        f"{tuple(value.shape)} (pseudo-colour the ROIs; compute tps_grid at the ROI size)"
                    )
            packed = _concatenate([parts["roi"], parts["roi_mirrored"], parts["tps_grid"]])
            meta = {k: v for k, v in (getattr(d[key], "meta", None) or {}).items() if v is not None}
            d[self.output_key] = MetaTensor(packed, meta=meta)
            if self.mask_key in d and self.contrastive_key in d:
                d[self.target_key] = _concatenate([d[self.mask_key], d[self.contrastive_key]])
        return d

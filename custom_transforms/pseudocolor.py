"""Three-channel "pseudo-colour" stacking of the ROIs (paper §4: "stacked to a 3-channel pseudo-color image").

The ImageNet-initialised DenseNet expects three input channels. Modes:

* ``"replicate"`` (default, the paper's stacking): the grey ROI in all three channels, so each RGB filter of the
  pretrained first convolution sees the radiograph as a grey photograph would appear;
* ``"enhanced"``: channel 0 = the ROI; channel 1 = the ROI after contrast-limited adaptive histogram
  equalisation (skimage ``equalize_adapthist``, clip 0.01, 8 x 8 tiles), which brings out cortical lines in dense
  or under-exposed regions; channel 2 = a high-pass detail image, 0.5 + (ROI - Gaussian(ROI, sigma=4 px)),
  clipped to [0, 1], which emphasises thin cortical breaks. Each channel lies in [0, 1];
* ``"highpass"`` (the CPU recipe, ``configs/scale_cpu.json``): channel 0 = the ROI; channel 1 =
  ``HIGHPASS_GAINS[0] * (ROI - Gaussian(ROI, HIGHPASS_SIGMAS_PX[0]))``; channel 2 the same at the second scale.
  Zero-mean detail bands amplified to about the ROI's own range. A network trained from scratch must otherwise find
  a cortical break of a few percent of contrast under the ROI's whole intensity range before it can learn anything
  (ImageNet-initialised first layers already are such filters): on paired fractured / intact windows a
  from-scratch DenseNet reached 0.69-0.79 pair AUC in 400 steps with these bands and stayed at 0.51-0.52 with
  ``"replicate"`` (``benchmarks/results/fracture_learning_probes.md``). The sigmas are in ROI pixels.

Both ROIs of a sample must use the same mode (the dictionary transform applies one instance to both keys).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = ["PseudoColor", "PseudoColord", "PSEUDO_COLOR_MODES"]

PSEUDO_COLOR_MODES = ("replicate", "enhanced", "highpass")
#: Gaussian sigmas (ROI pixels) and gains of the two detail bands of the ``"highpass"`` mode.
HIGHPASS_SIGMAS_PX = (3.0, 8.0)
HIGHPASS_GAINS = (5.0, 2.5)


class PseudoColor(Transform):
    """(1, h, w) grey ROI -> (3, h, w) float32 (see the module docstring).

    Args:
        mode: ``"replicate"``, ``"enhanced"`` or ``"highpass"``.
    """

    def __init__(self, mode: str = "replicate") -> None:
        if mode not in PSEUDO_COLOR_MODES:
            raise ValueError(f"mode must be one of {PSEUDO_COLOR_MODES}, got {mode!r}")
        self.mode = mode

    def __call__(self, roi):
        if roi.shape[0] == 3:
            return roi  # already pseudo-coloured
        if roi.shape[0] != 1:
            raise ValueError(f"PseudoColor expects a (1, h, w) grey ROI, got shape {tuple(roi.shape)}")
        t = roi.as_tensor() if isinstance(roi, MetaTensor) else torch.as_tensor(roi)
        t = t.detach().cpu().float()
        if self.mode == "replicate":
            out = torch.from_numpy(np.repeat(t.numpy(), 3, axis=0))  # numpy copy: no torch thread-pool overhead
        elif self.mode == "highpass":
            from scipy.ndimage import gaussian_filter

            grey = t[0].numpy().astype(np.float64)
            bands = [
                gain * (grey - gaussian_filter(grey, sigma=sigma))
                for sigma, gain in zip(HIGHPASS_SIGMAS_PX, HIGHPASS_GAINS)
            ]
            out = torch.from_numpy(np.stack([grey, *bands]).astype(np.float32))
        else:
            from scipy.ndimage import gaussian_filter
            from skimage.exposure import equalize_adapthist

            grey = np.clip(t[0].numpy(), 0.0, 1.0).astype(np.float64)
            h, w = grey.shape
            clahe = equalize_adapthist(grey, kernel_size=(max(h // 8, 1), max(w // 8, 1)), clip_limit=0.01)
            detail = np.clip(0.5 + grey - gaussian_filter(grey, sigma=4.0), 0.0, 1.0)
            out = torch.from_numpy(np.stack([grey, clahe, detail]).astype(np.float32))
        if isinstance(roi, MetaTensor):
            return MetaTensor(out, meta=dict(roi.meta))
        return out


class PseudoColord(MapTransform):
    """Make the ROIs three-channel.

    Args:
        keys: the ROI keys (default ``("roi", "roi_mirrored")``).
        mode: ``"replicate"`` (paper), ``"enhanced"`` or ``"highpass"``.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self, keys: KeysCollection = ("roi", "roi_mirrored"), mode: str = "replicate", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.colorize = PseudoColor(mode)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.colorize(d[key])
        return d

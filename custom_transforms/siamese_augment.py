"""Augmentation of a Siamese training window: flip, rotation and scale, exposure; the TPS grid kept consistent.

Why: the CPU recipe (``bundle/configs/scale_cpu.json``) caches each training image's whole geometry (ROI, mirrored
ROI, TPS grid, masks) once and trains on windows cut from it (:class:`~custom_transforms.siamese_crop.
RandSiameseCropd`). Without augmentation every window of an anatomy is a crop of one fixed picture, and the network
memorised the 21 training anatomies (issue 14: training AUC 0.96, validation 0.74); an in-memory experiment that
augmented the windows as here reached a validation AUC of 0.81 at the same number of steps. The window is
augmented, not the radiograph: the cache stays valid, and nothing is recomputed (no TPS solve per sample).

A window ``(8, h, w)`` = ``[roi (3), roi_mirrored (3), grid (2)]`` (``siamese_crop``'s packed window; the grid's
channel 6 = x, 7 = y, normalised to the *mirrored window* with ``align_corners=False``) and its ``target`` ``(2, h,
w)`` are changed so that the correspondence the grid encodes still holds; with ``warp(m, g)`` the network's
``grid_sample`` (``scripts.fracture.aasn.warp``):

* **horizontal flip**: every channel and the target reversed along W, and the grid's x negated (channel 6): ROI
  column ``j`` moves to ``w - 1 - j`` and the mirrored window is reversed too, so a normalised mirrored position
  ``x`` becomes ``-x``; then ``warp(mirrored', grid')`` is the flip of ``warp(mirrored, grid)``;
* **rotation and isotropic scale** about the window centre ``c = ((w - 1) / 2, (h - 1) / 2)``, a similarity ``A``
  in pixels (``[x, y]``): ``roi'(p) = roi(c + A (p - c))`` (target alike), ``mirrored'(q) = mirrored(c + A (q -
  c))``, and the grid re-expressed in pixels of the mirrored window: ``grid'(p) = c + A^-1 (grid(c + A (p - c)) -
  c)``. Then ``warp(mirrored', grid')(p) = warp(mirrored, grid)(c + A (p - c))`` wherever the positions stay in the
  windows (tested). Bilinear, one ``sample_affine`` each, without supersampling (the scale stays near 1);
* **exposure**: a gain on the six image channels and an offset on the grey ones only (``offset_channels``): with
  the ``"highpass"`` pseudo-colour channels 1-2 and 4-5 are zero-mean detail bands, linear in the grey, so they
  scale with it but take no offset (:data:`GREY_CHANNELS` per mode).

A fractured image and its intact twin (the same ``pair_id``, one after the other,
``scripts.fracture.twin_batches.TwinBatchSampler``) get the same parameters, as they get the same window, so that
the pair still differs only by the fracture.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from .geometry import normalized_to_pixel, pixel_to_normalized
from .resampling import sample_affine

__all__ = ["GREY_CHANNELS", "SiameseWindowAugment", "RandSiameseWindowAugmentd", "flip_packed"]

#: The channels of the packed input (0-2 ROI, 3-5 mirrored ROI) that are the grey image itself, per pseudo-colour
#: mode (``custom_transforms.pseudocolor``): they take the exposure offset; the others are detail bands (offset-free).
#: ``"enhanced"``'s CLAHE and clipped detail channels are not linear in the grey: the gain is only approximate there.
GREY_CHANNELS = {"replicate": (0, 1, 2, 3, 4, 5), "highpass": (0, 3), "enhanced": (0, 3)}

_PADDING_MODES = ("reflection", "border", "zeros")


def flip_packed(x: torch.Tensor) -> torch.Tensor:
    """The horizontal flip of packed Siamese input ``(..., 8, h, w)`` (a window or a whole ROI, batched or not):
    every channel reversed along W and the grid's x (channel 6) negated, so that ``warp(mirrored', grid')`` is the
    flip of ``warp(mirrored, grid)``. Its own inverse."""
    if x.shape[-3] != 8:
        raise ValueError(f"packed Siamese input must have 8 channels at dim -3, got {tuple(x.shape)}")
    x = x.flip(-1)
    return torch.cat([x[..., 0:6, :, :], -x[..., 6:7, :, :], x[..., 7:8, :, :]], dim=-3)


def _as_tensor(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class SiameseWindowAugment(Transform):
    """Flip, rotate and scale, and re-expose a packed Siamese window with given parameters (module docstring).

    Args:
        offset_channels: the image channels (of 0-5) that take the exposure offset, the grey ones; default all six
            (the ``"replicate"`` pseudo-colour); ``GREY_CHANNELS["highpass"]`` = ``(0, 3)`` for the CPU recipe.
        padding_mode: how the image channels and the grid are continued outside the window when rotated or
            shrunk: ``"reflection"`` (default) or ``"border"`` (``grid_sample``'s); the target is always zero there.
    """

    def __init__(
        self, offset_channels: Sequence[int] = GREY_CHANNELS["replicate"], padding_mode: str = "reflection"
    ) -> None:
        channels = tuple(int(c) for c in offset_channels)
        if any(c < 0 or c > 5 for c in channels):
            raise ValueError(f"offset_channels must be image channels 0-5, got {offset_channels!r}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.offset_channels = channels
        self.padding_mode = padding_mode

    @staticmethod
    def similarity(rotation_deg: float, scale: float) -> np.ndarray:
        """The (2, 2) matrix ``A = scale * R(rotation_deg)`` on ``[x, y]`` pixels (y down: on a square window, +90
        degrees is ``torch.rot90(window, 1, (-2, -1))``, the picture turned counter-clockwise as displayed)."""
        t = math.radians(float(rotation_deg))
        return float(scale) * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])

    def __call__(
        self,
        window,
        target=None,
        flip: bool = False,
        rotation_deg: float = 0.0,
        scale: float = 1.0,
        gain: float = 1.0,
        offset: float = 0.0,
    ):
        """The augmented ``(window, target)``.

        Args:
            window: the packed window (8, h, w).
            target: (C, h, w) masks on the ROI's pixels (``[M, M-hat]``), or None.
            flip: reverse along W (first).
            rotation_deg: rotation of the similarity ``A`` (then).
            scale: its factor: ``roi'(p) = roi(c + A (p - c))``, so ``scale > 1`` shows more of the anatomy, smaller.
            gain: multiplies the six image channels (last).
            offset: added to ``offset_channels`` after the gain.

        Returns:
            ``(window (8, h, w), target (C, h, w) or None)``; new tensors (the inputs, e.g. views of a cache, are not
            written), the inputs themselves when every parameter is the identity.
        """
        x = _as_tensor(window)
        if x.dim() != 3 or x.shape[0] != 8:
            raise ValueError(f"window must be (8, h, w), got {tuple(x.shape)}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        t = None if target is None else _as_tensor(target)
        h, w = int(x.shape[1]), int(x.shape[2])
        if flip:
            x = flip_packed(x)
            t = None if t is None else t.flip(-1)
        if rotation_deg != 0.0 or scale != 1.0:
            a = self.similarity(rotation_deg, scale)
            c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
            out_to_src = np.eye(3)
            out_to_src[:2, :2], out_to_src[:2, 2] = a, c - a @ c
            sample = dict(out_size=(h, w), antialias=False)
            images = sample_affine(x[0:6], out_to_src, padding_mode=self.padding_mode, **sample)
            grid = sample_affine(x[6:8], out_to_src, padding_mode=self.padding_mode, **sample).double()
            # grid(c + A (p - c)) in mirrored-window pixels -> c + A^-1 (. - c) -> normalised again
            pixels = torch.stack([normalized_to_pixel(grid[0], w), normalized_to_pixel(grid[1], h)])
            inverse = torch.as_tensor(np.linalg.inv(a))
            centre = torch.as_tensor(c)[:, None, None]
            pixels = torch.einsum("ij,jhw->ihw", inverse, pixels - centre) + centre
            grid = torch.stack([pixel_to_normalized(pixels[0], w), pixel_to_normalized(pixels[1], h)])
            x = torch.cat([images, grid.float()]).to(x.dtype)
            if t is not None:
                t = sample_affine(t, out_to_src, padding_mode="zeros", **sample).to(t.dtype)
        if gain != 1.0 or offset != 0.0:
            images = x[0:6] * gain
            if offset != 0.0 and self.offset_channels:
                shift = torch.zeros(6, 1, 1, dtype=images.dtype)
                shift[list(self.offset_channels)] = offset
                images = images + shift
            x = torch.cat([images, x[6:8]])
        return x, t


class RandSiameseWindowAugmentd(Randomizable, MapTransform):
    """Random :class:`SiameseWindowAugment` of ``siamese_input`` and ``target``; a twin gets its sibling's draw.

    Per item: a flip with ``flip_prob``; with ``affine_prob`` a rotation uniform in ``[-rotation_deg,
    rotation_deg]`` and a scale ``exp(U(-log_scale, log_scale))``; with ``intensity_prob`` a gain uniform in
    ``gain`` and an offset uniform in ``offset``. Every call draws the same count of numbers, so a seed gives one
    stream whatever the probabilities.

    Args:
        keys: the packed window key (run after :class:`~custom_transforms.siamese_crop.RandSiameseCropd`).
        target_key: the ``target`` (C, h, w), transformed as the ROI (absent: left alone).
        pair_key: items with the same value here, processed one after the other (a fractured image, then its intact
            twin), get the same parameters; removed from the output (the crop must keep it:
            ``RandSiameseCropd(keep_pair_key=True)``). Absent or None: every item draws its own.
        flip_prob: probability of the horizontal flip.
        affine_prob: probability of the rotation and scale.
        rotation_deg: largest rotation, degrees.
        log_scale: largest ``|log(scale)|``.
        intensity_prob: probability of the gain and offset.
        gain: ``(low, high)`` of the gain on the six image channels.
        offset: ``(low, high)`` of the offset on ``offset_channels``.
        offset_channels: the grey channels (:data:`GREY_CHANNELS` of the pseudo-colour mode); default all six.
        padding_mode: ``"reflection"`` or ``"border"``, for the image channels and the grid (see
            :class:`SiameseWindowAugment`).
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "siamese_input",
        target_key: str = "target",
        pair_key: str = "pair_id",
        flip_prob: float = 0.5,
        affine_prob: float = 1.0,
        rotation_deg: float = 10.0,
        log_scale: float = 0.2,
        intensity_prob: float = 1.0,
        gain: Sequence[float] = (0.75, 1.33),
        offset: Sequence[float] = (-0.1, 0.1),
        offset_channels: Sequence[int] = GREY_CHANNELS["replicate"],
        padding_mode: str = "reflection",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        for name, p in (("flip_prob", flip_prob), ("affine_prob", affine_prob), ("intensity_prob", intensity_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if rotation_deg < 0 or log_scale < 0:
            raise ValueError(f"rotation_deg and log_scale must be >= 0, got {rotation_deg}, {log_scale}")
        self.gain = (float(gain[0]), float(gain[1]))
        self.offset = (float(offset[0]), float(offset[1]))
        if self.gain[0] > self.gain[1] or self.gain[0] <= 0 or self.offset[0] > self.offset[1]:
            raise ValueError(f"gain must be 0 < low <= high and offset low <= high, got {gain}, {offset}")
        self.flip_prob, self.affine_prob = float(flip_prob), float(affine_prob)
        self.intensity_prob = float(intensity_prob)
        self.rotation_deg, self.log_scale = float(rotation_deg), float(log_scale)
        self.augment = SiameseWindowAugment(offset_channels, padding_mode)
        self.target_key, self.pair_key = target_key, pair_key
        self._last_pair: tuple[object, dict] | None = None

    def randomize(self, data=None) -> dict:
        """Draw the parameters of one item: ``flip``, ``rotation_deg``, ``scale``, ``gain``, ``offset``."""
        u_flip, u_affine, u_intensity = self.R.uniform(size=3)
        angle = self.R.uniform(-self.rotation_deg, self.rotation_deg)
        log_s = self.R.uniform(-self.log_scale, self.log_scale)
        gain, offset = self.R.uniform(*self.gain), self.R.uniform(*self.offset)
        affine, intensity = u_affine < self.affine_prob, u_intensity < self.intensity_prob
        return {
            "flip": bool(u_flip < self.flip_prob),
            "rotation_deg": float(angle) if affine else 0.0,
            "scale": float(math.exp(log_s)) if affine else 1.0,
            "gain": float(gain) if intensity else 1.0,
            "offset": float(offset) if intensity else 0.0,
        }

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        pair = d.pop(self.pair_key, None)
        if pair is not None and self._last_pair is not None and self._last_pair[0] == pair:
            params = self._last_pair[1]  # the twin of the item just augmented: the same draw
            self._last_pair = None
        else:
            params = self.randomize()
            self._last_pair = (pair, params) if pair is not None else None
        target = d.get(self.target_key)
        for key in self.key_iterator(d):
            d[key], target = self.augment(d[key], target, **params)
            if target is not None:
                d[self.target_key] = target
                target = None  # transformed once, with the first key
        return d

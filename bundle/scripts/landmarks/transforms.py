"""Training and validation transforms of the landmark detector (dictionary transforms on the letterboxed image).

* :class:`RandLandmarkAffined`: a random similarity (rotation, scale, translation) and left-right
  mirroring, applied to the image by one resampling and to the landmarks exactly; mirroring renames
  ``_r`` <-> ``_l`` (``MIRROR_PERMUTATION``), so that a mirrored pelvis is still labelled in the
  convention's orientation.
* :class:`LandmarkHeatmapd`: Gaussian target heatmaps ``(N, H, W)`` from ``(N, 2)`` landmarks.
* :class:`HeatmapsToMillimetresd`: post-processing for validation: decode heatmaps (sub-pixel), map them
  and the true landmarks back to the original image and to mm, so that metrics are radial errors in mm.

Points are ``[x, y]`` pixels with the origin at the centre of the top-left pixel; images ``(C, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform

from custom_transforms.conventions import MIRROR_PERMUTATION
from custom_transforms.geometry import pixels_to_mm, transform_points
from custom_transforms.resampling import sample_affine

from scripts.landmarks.heatmap_decoding import activate_heatmaps, decode_heatmaps, gaussian_heatmaps
from scripts.landmarks.letterbox import LETTERBOX_MATRIX

__all__ = ["RandLandmarkAffined", "LandmarkHeatmapd", "HeatmapsToMillimetresd"]


class RandLandmarkAffined(RandomizableTransform, MapTransform):
    """Random similarity + mirroring of images and landmarks, about the image centre.

    Args:
        keys: image keys (all resampled with the same transform, bilinear, zero padding).
        landmark_keys: ``(N, 2)`` landmark arrays transformed exactly (mirroring permutes them too).
        prob: probability of applying a random similarity.
        rotate_range: maximum absolute rotation (radians).
        scale_range: ``(min, max)`` isotropic scale.
        translate_range: maximum absolute translation as a fraction of each image side.
        flip_prob: probability of left-right mirroring (independent of ``prob``).
        mirror_permutation: landmark index each landmark becomes after mirroring.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        landmark_keys: KeysCollection = ("landmarks",),
        prob: float = 0.8,
        rotate_range: float = math.radians(10),
        scale_range: Sequence[float] = (0.9, 1.1),
        translate_range: float = 0.05,
        flip_prob: float = 0.5,
        mirror_permutation: Sequence[int] = MIRROR_PERMUTATION,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.landmark_keys = (landmark_keys,) if isinstance(landmark_keys, str) else tuple(landmark_keys)
        self.rotate_range = float(rotate_range)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.translate_range = float(translate_range)
        self.flip_prob = float(flip_prob)
        self.mirror_permutation = np.asarray(mirror_permutation, dtype=np.int64)
        self._angle, self._scale, self._shift, self._flip = 0.0, 1.0, (0.0, 0.0), False

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._angle = self.R.uniform(-self.rotate_range, self.rotate_range)
        self._scale = self.R.uniform(*self.scale_range)
        self._shift = tuple(self.R.uniform(-self.translate_range, self.translate_range, size=2))
        self._flip = self.R.uniform() < self.flip_prob

    def matrix(self, spatial_size: Sequence[int]) -> np.ndarray:
        """The ``(3, 3)`` input -> output pixel matrix of the last randomisation for an ``(H, W)`` image."""
        h, w = spatial_size
        centre = np.array([(w - 1) / 2, (h - 1) / 2])
        linear = np.eye(2)
        if self._do_transform:
            c, s = math.cos(self._angle), math.sin(self._angle)
            linear = self._scale * np.array([[c, -s], [s, c]])
        if self._flip:
            linear = linear @ np.diag([-1.0, 1.0])
        shift = np.array([self._shift[0] * w, self._shift[1] * h]) if self._do_transform else np.zeros(2)
        out = np.eye(3)
        out[:2, :2] = linear
        out[:2, 2] = centre - linear @ centre + shift
        return out

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform and not self._flip:
            return d
        matrix = None
        for key in self.key_iterator(d):
            img = d[key]
            h, w = img.shape[-2:]
            matrix = self.matrix((h, w)) if matrix is None else matrix
            d[key] = self._warp(img, matrix)
        if matrix is None:
            return d
        for key in self.landmark_keys:
            if key not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"RandLandmarkAffined: landmark key '{key}' is missing from the data.")
            points = transform_points(matrix, d[key])
            if self._flip:
                # a landmark's new position is where its mirror partner went
                points = points[self.mirror_permutation]
            d[key] = points.astype(np.float32)
        return d

    @staticmethod
    def _warp(img: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
        data = (
            torch.as_tensor(img).as_subclass(torch.Tensor).float()
            if isinstance(img, MetaTensor)
            else torch.as_tensor(img).float()
        )
        # the matrix moves input pixels to output pixels; resampling asks where each output pixel comes from
        out = sample_affine(data, np.linalg.inv(matrix), data.shape[-2:], antialias=False)
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=dict(img.meta))
        return out


class LandmarkHeatmapd(MapTransform):
    """Gaussian heatmap targets from landmarks.

    Args:
        keys: ``(N, 2)`` landmark keys.
        reference_key: image whose spatial size the heatmaps take.
        output_keys: where to write the ``(N, H, W)`` heatmaps (default: ``"label"`` for one key).
        sigma: Gaussian standard deviation in pixels.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "landmarks",
        reference_key: str = "image",
        output_keys: KeysCollection = ("label",),
        sigma: float = 2.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.output_keys = (output_keys,) if isinstance(output_keys, str) else tuple(output_keys)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"{len(self.keys)} landmark keys but {len(self.output_keys)} output keys.")
        self.sigma = float(sigma)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        size = d[self.reference_key].shape[-2:]
        for key, out in self.key_iterator(d, self.output_keys):
            d[out] = gaussian_heatmaps(torch.as_tensor(np.asarray(d[key]), dtype=torch.float32), size, self.sigma)
        return d


class HeatmapsToMillimetresd(MapTransform):
    """Decode predicted heatmaps and express them, and the true landmarks, in mm of the original image.

    The letterbox matrix and the spacing are read from the image's meta-data.

    Args:
        keys: ``(pred_key, label_key)``: heatmaps ``(N, H, W)`` and true letterbox landmarks ``(N, 2)``.
        image_key: the letterboxed image whose meta holds ``letterbox_matrix`` and ``spacing_mm``.
        smooth_sigma: passed to :func:`decode_heatmaps`.
        activation: the network's output activation (see :mod:`.heatmap_decoding`).
        default_spacing_mm: used when the image has no spacing (then errors are in pixels).
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = ("pred", "label"),
        image_key: str = "image",
        smooth_sigma: float = 0.0,
        activation: str = "spatial_softmax",
        default_spacing_mm: Sequence[float] = (1.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.activation = activation
        self.smooth_sigma = float(smooth_sigma)
        self.default_spacing_mm = tuple(float(s) for s in default_spacing_mm)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        meta = d[self.image_key].meta
        inverse = np.linalg.inv(np.asarray(meta[LETTERBOX_MATRIX], dtype=np.float64))
        spacing = meta.get("spacing_mm")
        spacing = self.default_spacing_mm if spacing is None else np.asarray(spacing, dtype=np.float64).reshape(-1)
        for key in self.key_iterator(d):
            value = torch.as_tensor(d[key]).detach().cpu()
            if value.ndim == 3:
                points = decode_heatmaps(activate_heatmaps(value, self.activation), self.smooth_sigma)[0].numpy()
            else:
                points = value.numpy()
            d[key] = torch.as_tensor(pixels_to_mm(transform_points(inverse, points), spacing), dtype=torch.float32)
        return d

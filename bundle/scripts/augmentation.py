"""Training augmentation applied after the cache and before the ROI is cut: landmarks and exposure.

Everything geometric downstream (symmetry axis, mirror, ROI affine, TPS warp, fracture discs) is
derived from the landmarks, and the ROI is resampled from the untouched original pixels. Jittering
the landmarks therefore jitters the ROI affine (and the warp) while image, mirrored image, fracture
points and masks stay consistent by construction: it is the one place geometry needs changing.

Two parts, both in mm so anisotropic pixels are handled:

- a random similarity of the whole configuration about its centroid (rotation, isotropic scale,
  translation): the ROI window moves, turns and zooms over the anatomy;
- independent Gaussian noise per landmark: the imprecision of a landmark detector, which bends the
  symmetry axis and the TPS warp slightly.

Landmarks are clipped to the image so that validation downstream still holds.

Exposure (:class:`RandRadiographIntensityd`) acts on the whole radiograph in [0, 1], before the ROIs
are cut, so the ROI and its mirror see the same exposure and mirrored copies of the same noise, as
in a real detector: a gamma change and Gaussian quantum-like noise, clipped back to [0, 1].
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform

from custom_transforms.geometry import spacing_xy

__all__ = ["RandLandmarkJitter", "RandLandmarkJitterd", "RandRadiographIntensity", "RandRadiographIntensityd"]


class RandLandmarkJitter(RandomizableTransform):
    """Randomly perturb a ``(N, 2)`` ``[x, y]`` landmark array (see the module docstring).

    Args:
        prob: probability of applying the jitter.
        rotation_deg: the rotation is uniform in ``[-rotation_deg, rotation_deg]`` degrees.
        scale: the scale factor is uniform in ``[1 - scale, 1 + scale]``.
        translation_mm: each translation component is uniform in ``[-translation_mm, translation_mm]`` mm.
        point_sigma_mm: standard deviation of the independent per-landmark noise, mm.
    """

    def __init__(
        self,
        prob: float = 1.0,
        rotation_deg: float = 3.0,
        scale: float = 0.05,
        translation_mm: float = 4.0,
        point_sigma_mm: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if min(rotation_deg, scale, translation_mm, point_sigma_mm) < 0 or scale >= 1:
            raise ValueError("RandLandmarkJitter: ranges must be >= 0 and scale < 1.")
        self.rotation_deg, self.scale = float(rotation_deg), float(scale)
        self.translation_mm, self.point_sigma_mm = float(translation_mm), float(point_sigma_mm)

    def randomize(self, num_points: int) -> None:  # type: ignore[override]
        super().randomize(None)
        self._angle = np.deg2rad(self.R.uniform(-self.rotation_deg, self.rotation_deg))
        self._factor = self.R.uniform(1 - self.scale, 1 + self.scale)
        self._shift = self.R.uniform(-self.translation_mm, self.translation_mm, size=2)
        self._noise = self.R.normal(0.0, self.point_sigma_mm, size=(num_points, 2)) if self.point_sigma_mm else 0.0

    def __call__(
        self,
        landmarks: np.ndarray | torch.Tensor,
        spacing_mm: Sequence[float] = (1.0, 1.0),
        image_shape: Sequence[int] | None = None,
        randomize: bool = True,
    ) -> np.ndarray | torch.Tensor:
        """
        Args:
            landmarks: ``(N, 2)`` ``[x, y]`` pixels.
            spacing_mm: ``(row, col)`` pixel spacing.
            image_shape: ``(H, W)``; when given, results are clipped to the image.
            randomize: draw new random parameters.
        """
        points = landmarks.detach().cpu().numpy() if isinstance(landmarks, torch.Tensor) else np.asarray(landmarks)
        points = points.astype(np.float64).reshape(-1, 2)
        if randomize:
            self.randomize(points.shape[0])
        if not self._do_transform:
            return landmarks
        to_mm = spacing_xy(spacing_mm)
        mm = points * to_mm
        centre = mm.mean(axis=0)
        c, s = np.cos(self._angle), np.sin(self._angle)
        rotation = np.array([[c, -s], [s, c]])
        mm = (mm - centre) @ (self._factor * rotation).T + centre + self._shift + self._noise
        out = mm / to_mm
        if image_shape is not None:
            out[:, 0] = np.clip(out[:, 0], 0, image_shape[-1] - 1)
            out[:, 1] = np.clip(out[:, 1], 0, image_shape[-2] - 1)
        if isinstance(landmarks, torch.Tensor):
            return torch.as_tensor(out, dtype=landmarks.dtype, device=landmarks.device)
        return out.astype(np.asarray(landmarks).dtype)


class RandLandmarkJitterd(Randomizable, MapTransform):
    """Dictionary wrapper of :class:`RandLandmarkJitter`; spacing and shape come from ``image_key``'s
    MetaTensor (meta ``spacing_mm``, ``(row, col)``; shape ``(C, H, W)``).

    Args:
        keys: landmark arrays to jitter (all with the same random parameters).
        image_key: the original image.
        allow_missing_keys: don't raise when a key is missing.
        kwargs: see :class:`RandLandmarkJitter`.
    """

    def __init__(
        self, keys: KeysCollection = "landmarks", image_key: str = "image", allow_missing_keys: bool = False, **kwargs
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.image_key = image_key
        self.jitter = RandLandmarkJitter(**kwargs)

    def set_random_state(self, seed=None, state=None):
        self.jitter.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        self.jitter.randomize(data)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = d[self.image_key]
        meta = getattr(image, "meta", {}) or {}
        spacing = meta.get("spacing_mm", (1.0, 1.0))
        spacing = spacing.tolist() if hasattr(spacing, "tolist") else spacing
        first = True
        for key in self.key_iterator(d):  # all keys share the first key's random draw (same number of points)
            d[key] = self.jitter(d[key], spacing, tuple(image.shape[-2:]), randomize=first)
            first = False
        return d


class RandRadiographIntensity(RandomizableTransform):
    """Random gamma and additive Gaussian noise on an image in [0, 1], clipped back to [0, 1].

    Args:
        prob: probability of applying anything.
        gamma: the gamma is uniform in this range (``x ** gamma``).
        noise_std: the noise's standard deviation is uniform in ``[0, noise_std]``.
    """

    def __init__(self, prob: float = 0.8, gamma: Sequence[float] = (0.75, 1.35), noise_std: float = 0.01) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 0 < gamma[0] <= gamma[1] or noise_std < 0:
            raise ValueError(
                f"RandRadiographIntensity: need 0 < gamma[0] <= gamma[1] and noise_std >= 0, got {gamma}, {noise_std}."
            )
        self.gamma, self.noise_std = (float(gamma[0]), float(gamma[1])), float(noise_std)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._gamma = self.R.uniform(*self.gamma)
        self._std = self.R.uniform(0, self.noise_std)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, image: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return image
        # plain-tensor arithmetic: MetaTensor's per-operation meta-data handling costs more than the maths here
        meta_source = image if isinstance(image, MetaTensor) else None
        out = image.as_tensor() if meta_source is not None else torch.as_tensor(image)
        out = out.clamp(0, 1) ** self._gamma
        if self._std > 0:
            generator = torch.Generator(device="cpu").manual_seed(self._seed)
            out = out + self._std * torch.randn(out.shape, generator=generator, dtype=out.dtype).to(out.device)
        out = out.clamp(0, 1)
        if meta_source is not None:
            out = MetaTensor(out, meta=meta_source.meta)  # the meta-data carry the affine
        return out


class RandRadiographIntensityd(Randomizable, MapTransform):
    """Dictionary wrapper of :class:`RandRadiographIntensity` (meta-data of a MetaTensor are kept).

    Args:
        keys: images to change (each key gets its own draw).
        allow_missing_keys: don't raise when a key is missing.
        kwargs: see :class:`RandRadiographIntensity`.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False, **kwargs) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.intensity = RandRadiographIntensity(**kwargs)

    def set_random_state(self, seed=None, state=None):
        self.intensity.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        self.intensity.randomize()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.intensity(d[key])
        return d

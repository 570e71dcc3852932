"""Second, local stage of the landmark detector: a patch network refines each landmark at a finer resolution.

The whole-image network sees the radiograph letterboxed to a few hundred pixels (about 2 mm per pixel
for a 43 cm detector). To place landmarks to about a millimetre without a large, slow whole-image
network, each coarse landmark is refined in a small patch cut at a finer *local resolution*:

* the radiograph is resized (antialiased, aspect kept) so that its longer side has ``long_side`` pixels
  (:class:`ResizeLongSided`; 640 px -> about 0.7 mm per pixel for a 43 cm detector), giving the *local
  image*; its ``(3, 3)`` matrix (original ``[x, y, 1]`` -> local) is kept as ``local_matrix`` meta;
* a ``patch_size`` square centred on the landmark's coarse position is sampled from it (bilinear);
* a patch network (a small MONAI UNet, one output channel per landmark, trained on every landmark in
  the patch) gives heatmaps; landmark ``i`` is read from channel ``i`` of its own patch (sub-pixel
  decoding) and mapped back to original pixels.

Training patches (:class:`RandLandmarkPatchesd`) are centred on each true landmark plus a random offset
(the coarse stage's error), with a random rotation and scale about the centre; validation patches
(:class:`LandmarkPatchesd`) use offsets fixed by a seed. :class:`PatchHeatmapsToMillimetresd` turns a
validation patch's prediction and truth into mm for the metrics.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from custom_transforms.geometry import pixels_to_mm, transform_points
from custom_transforms.resampling import sample_affine

from scripts.landmarks.heatmap_decoding import activate_heatmaps, decode_heatmaps, gaussian_heatmaps, heatmap_confidence
from scripts.landmarks.letterbox import Letterbox, letterbox_matrix

__all__ = [
    "LOCAL_MATRIX",
    "local_size",
    "patch_matrices",
    "ResizeLongSided",
    "RandLandmarkPatchesd",
    "LandmarkPatchesd",
    "PatchHeatmapsToMillimetresd",
    "LandmarkRefiner",
    "network_device",
]

#: meta-data key of the original -> local image matrix.
LOCAL_MATRIX = "local_matrix"


def network_device(network: torch.nn.Module, device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else where ``network``'s parameters are (CPU for a network without parameters)."""
    if device is None:
        param = next(network.parameters(), None)
        device = param.device if param is not None else "cpu"
    return torch.device(device)


def local_size(image_size: Sequence[int], long_side: int) -> tuple[int, int]:
    """``(h, w)`` of the local image: aspect kept, longer side ``long_side`` pixels."""
    h, w = (int(v) for v in image_size)
    scale = long_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def patch_matrices(centres, patch_size: int, angles=None, scales=None) -> np.ndarray:
    """``(K, 3, 3)`` local -> patch matrices: ``centres`` (local px) go to the patch centre, rotated/scaled about it.

    Args:
        centres: ``(K, 2)`` local ``[x, y]``.
        patch_size: patch side in pixels (the centre is ``(patch_size - 1) / 2``).
        angles: ``(K,)`` rotations in radians (default 0).
        scales: ``(K,)`` zooms (default 1; > 1 enlarges the anatomy).
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    k = len(centres)
    angles = np.zeros(k) if angles is None else np.asarray(angles, dtype=np.float64)
    scales = np.ones(k) if scales is None else np.asarray(scales, dtype=np.float64)
    half = (patch_size - 1) / 2
    out = np.zeros((k, 3, 3))
    cos, sin = np.cos(angles) * scales, np.sin(angles) * scales
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = cos, -sin, sin, cos
    out[:, :2, 2] = half - np.einsum("kij,kj->ki", out[:, :2, :2], centres)
    out[:, 2, 2] = 1.0
    return out


class ResizeLongSided(MapTransform):
    """Resize images (antialiased, aspect kept) so that the longer side has ``long_side`` pixels.

    The ``(3, 3)`` original -> local matrix is stored as ``local_matrix`` on the image's meta and applied
    to the landmark arrays.

    Args:
        keys: image keys.
        long_side: pixels of the longer side.
        landmark_keys: ``(N, 2)`` ``[x, y]`` arrays mapped with the first image's matrix.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        long_side: int = 640,
        landmark_keys: KeysCollection = ("landmarks",),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.long_side = int(long_side)
        self.landmark_keys = (landmark_keys,) if isinstance(landmark_keys, str) else tuple(landmark_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        matrix = None
        for key in self.key_iterator(d):
            image = d[key]
            size = local_size(image.shape[-2:], self.long_side)
            out = Letterbox(size)(image)
            out.meta[LOCAL_MATRIX] = out.meta.pop("letterbox_matrix")
            d[key] = out
            matrix = out.meta[LOCAL_MATRIX] if matrix is None else matrix
        if matrix is not None:
            for key in self.landmark_keys:
                if key in d:
                    d[key] = transform_points(matrix, d[key]).astype(np.float32)
                elif not self.allow_missing_keys:
                    raise KeyError(f"ResizeLongSided: landmark key '{key}' is missing from the data.")
        return d


def _patch_items(
    image: torch.Tensor, landmarks: np.ndarray, matrices: np.ndarray, patch_size: int, sigma: float
) -> list[dict]:
    data = torch.as_tensor(image).as_subclass(torch.Tensor).float()[None]
    patches = sample_affine(data, np.linalg.inv(matrices), (patch_size, patch_size), antialias=False)
    items = []
    for i, m in enumerate(matrices):
        points = transform_points(m, landmarks)
        label = gaussian_heatmaps(torch.as_tensor(points, dtype=torch.float32), (patch_size, patch_size), sigma)
        items.append(
            {"image": patches[i], "label": label, "patch_landmark": i, "patch_points": points.astype(np.float32)}
        )
    return items


class RandLandmarkPatchesd(Randomizable, MapTransform):
    """One training patch per landmark (a list of ``N`` items), around the true position plus a random offset.

    Each item: ``image`` ``(1, P, P)``, ``label`` ``(N, P, P)`` Gaussian heatmaps of every landmark (those
    outside the patch are all zero), ``patch_landmark`` (its landmark index).

    Args:
        keys: the local image key (one).
        landmarks_key: ``(N, 2)`` landmarks in local pixels.
        patch_size: patch side in pixels.
        offset_sigma: standard deviation (local px) of the centre's offset from the landmark.
        max_offset: the offset is clipped to this (local px), so the landmark stays inside the patch.
        rotate_range: maximum absolute rotation (radians).
        scale_range: ``(min, max)`` zoom.
        sigma: Gaussian target sigma (patch px).
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        landmarks_key: str = "landmarks",
        patch_size: int = 64,
        offset_sigma: float = 8.0,
        max_offset: float = 24.0,
        rotate_range: float = math.radians(10),
        scale_range: Sequence[float] = (0.9, 1.1),
        sigma: float = 2.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.landmarks_key = landmarks_key
        self.patch_size = int(patch_size)
        self.offset_sigma, self.max_offset = float(offset_sigma), float(max_offset)
        self.rotate_range, self.scale_range = float(rotate_range), (float(scale_range[0]), float(scale_range[1]))
        self.sigma = float(sigma)

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict]:
        d = dict(data)
        key = self.first_key(d)
        landmarks = np.asarray(d[self.landmarks_key], dtype=np.float64)
        n = len(landmarks)
        offsets = np.clip(self.R.normal(scale=self.offset_sigma, size=(n, 2)), -self.max_offset, self.max_offset)
        matrices = patch_matrices(
            landmarks + offsets,
            self.patch_size,
            self.R.uniform(-self.rotate_range, self.rotate_range, n),
            self.R.uniform(*self.scale_range, n),
        )
        items = _patch_items(d[key], landmarks, matrices, self.patch_size, self.sigma)
        return [{"image": it["image"], "label": it["label"]} for it in items]


class LandmarkPatchesd(MapTransform):
    """Validation patches: one per landmark, centred on the truth plus an offset fixed by ``seed`` and the image.

    Each item: ``image`` ``(1, P, P)`` MetaTensor with meta ``patch_landmark`` and ``patch_mm_per_pixel``
    (``(row, col)`` mm of a patch pixel), and ``label`` ``(1, 2)``: the landmark in patch pixels.

    Args:
        keys: the local image key (one); its meta needs ``local_matrix`` and ``spacing_mm``.
        landmarks_key: ``(N, 2)`` landmarks in local pixels.
        patch_size: patch side in pixels.
        offset_sigma: standard deviation (local px) of the offsets.
        max_offset: clip of the offsets (local px).
        seed: offsets seed (combined with the image's file name).
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        landmarks_key: str = "landmarks",
        patch_size: int = 64,
        offset_sigma: float = 8.0,
        max_offset: float = 24.0,
        seed: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.landmarks_key = landmarks_key
        self.patch_size = int(patch_size)
        self.offset_sigma, self.max_offset = float(offset_sigma), float(max_offset)
        self.seed = int(seed)

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict]:
        d = dict(data)
        key = self.first_key(d)
        image = d[key]
        landmarks = np.asarray(d[self.landmarks_key], dtype=np.float64)
        name = str(image.meta.get("filename_or_obj", ""))
        rng = np.random.default_rng([self.seed, *name.encode()])
        offsets = np.clip(rng.normal(scale=self.offset_sigma, size=landmarks.shape), -self.max_offset, self.max_offset)
        matrices = patch_matrices(landmarks + offsets, self.patch_size)
        local = np.asarray(image.meta[LOCAL_MATRIX], dtype=np.float64)
        spacing = np.asarray(image.meta.get("spacing_mm") or (1.0, 1.0), dtype=np.float64)
        mm_per_pixel = (spacing[0] / local[1, 1], spacing[1] / local[0, 0])
        out = []
        for item in _patch_items(image, landmarks, matrices, self.patch_size, 1.0):
            i = item["patch_landmark"]
            meta = {"patch_landmark": i, "patch_mm_per_pixel": mm_per_pixel}
            out.append({"image": MetaTensor(item["image"], meta=meta), "label": item["patch_points"][i : i + 1]})
        return out


class PatchHeatmapsToMillimetresd(MapTransform):
    """Decode channel ``patch_landmark`` of a patch's heatmaps; express prediction and truth in mm.

    Args:
        keys: ``(pred_key, label_key)``: ``(N, P, P)`` heatmaps and the ``(1, 2)`` true patch point.
        image_key: the patch image carrying ``patch_landmark`` and ``patch_mm_per_pixel`` meta.
        activation: the network's output activation (see :mod:`.heatmap_decoding`).
        expectation_radius: decode with the local mean within this many pixels (0: the refined peak), as
            :class:`LandmarkRefiner` does, so that validation scores the decoding used at inference.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = ("pred", "label"),
        image_key: str = "image",
        activation: str = "spatial_softmax",
        expectation_radius: int = 0,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.activation = activation
        self.expectation_radius = int(expectation_radius)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        meta = d[self.image_key].meta
        index = int(torch.as_tensor(meta["patch_landmark"]).reshape(-1)[0])
        mm = np.asarray([float(torch.as_tensor(v).reshape(-1)[0]) for v in meta["patch_mm_per_pixel"]])
        for key in self.key_iterator(d):
            value = torch.as_tensor(d[key]).detach().cpu()
            if value.ndim == 3:
                maps = activate_heatmaps(value[index : index + 1], self.activation)
                points = decode_heatmaps(maps, expectation_radius=self.expectation_radius)[0].numpy()
            else:
                points = value.numpy().reshape(-1, 2)
            d[key] = torch.as_tensor(pixels_to_mm(points, mm), dtype=torch.float32)
        return d


class LandmarkRefiner:
    """Refine landmark positions with the patch network (see the module docstring).

    Args:
        network: patch network ``(K, 1, P, P) -> (K, N, P, P)``.
        long_side: local resolution (pixels of the longer image side) it was trained at.
        patch_size: patch side in pixels.
        device: where the network runs (default: where its parameters are).
        activation: the network's output, ``"spatial_softmax"`` or ``"none"`` (see :mod:`.heatmap_decoding`).
        confidence_radius: patch pixels for the ``"spatial_softmax"`` confidence.
        refined_landmarks: names of the landmarks whose refined position is used (default: all). Some
            landmarks need more context than a patch holds (the acetabulum centre is the centre of a
            femoral head larger than the patch); for them the whole-image estimate can be the better one,
            which the validation set decides.
        expectation_radius: patch pixels of the local-mean decoding (0: the refined peak); see
            :func:`~.heatmap_decoding.decode_heatmaps`.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        long_side: int = 640,
        patch_size: int = 64,
        device=None,
        activation: str = "spatial_softmax",
        confidence_radius: int = 3,
        refined_landmarks: Sequence[str] | None = None,
        expectation_radius: int = 0,
    ) -> None:
        self.network = network.eval()
        self.expectation_radius = int(expectation_radius)
        self.activation = activation
        self.confidence_radius = int(confidence_radius)
        self.refined_landmarks = None if refined_landmarks is None else tuple(refined_landmarks)
        self.long_side = int(long_side)
        self.patch_size = int(patch_size)
        self.device = network_device(network, device)

    @torch.no_grad()
    def __call__(
        self, image: torch.Tensor, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor, np.ndarray]:
        """Refine coarse positions.

        Args:
            image: ``(1, H, W)`` radiograph in ``[0, 1]``.
            points: ``(N, 2)`` coarse positions in original pixels.

        Returns:
            ``refined`` ``(N, 2)`` original ``[x, y]``; ``peaks`` ``(N,)`` the confidence of each landmark's
            peak in its own patch; ``heatmaps`` ``(N, P, P)`` channel ``i`` of patch ``i``; ``to_patch`` ``(N, 3, 3)``
            original -> patch matrices.
        """
        size = local_size(image.shape[-2:], self.long_side)
        local = Letterbox(size)(image)
        to_local, _ = letterbox_matrix(image.shape[-2:], size)
        matrices = patch_matrices(transform_points(to_local, points), self.patch_size)
        patches = sample_affine(
            local.as_tensor()[None], np.linalg.inv(matrices), (self.patch_size, self.patch_size), antialias=False
        )
        outputs = self.network(patches.to(self.device)).float().cpu()
        n = len(points)
        own = activate_heatmaps(outputs[torch.arange(n), torch.arange(n)], self.activation)  # channel i of patch i
        coords, _ = decode_heatmaps(own[:, None], expectation_radius=self.expectation_radius)
        peaks = self.confidence(own, coords.reshape(n, 2))
        to_patch = matrices @ to_local
        refined = np.stack([transform_points(np.linalg.inv(m), c.reshape(2)) for c, m in zip(coords.numpy(), to_patch)])
        return refined, peaks.numpy().reshape(n), own, to_patch

    def mask(self, names: Sequence[str]) -> np.ndarray:
        """``(N,)`` bool: which of the landmarks ``names`` take the refined position."""
        if self.refined_landmarks is None:
            return np.ones(len(names), dtype=bool)
        unknown = sorted(set(self.refined_landmarks) - set(names))
        if unknown:
            raise ValueError(f"refined_landmarks: unknown landmark names {unknown}; expected names from {list(names)}.")
        return np.array([n in self.refined_landmarks for n in names])

    def confidence(self, heatmaps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Confidence of landmark ``i`` at patch point ``i`` of its own activated heatmap ``(N, P, P)``."""
        return heatmap_confidence(heatmaps, points, self.activation, self.confidence_radius)

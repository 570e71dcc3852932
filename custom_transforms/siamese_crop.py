"""A window of the packed Siamese input, with the mirrored ROI cut where the TPS grid points and the grid re-based.

Training on windows of the ROI rather than the whole ROI lets a sampler put fractures in half the windows: a
fracture covers a few percent of a positive ROI's pixels, so whole-ROI batches spend nearly all their gradient on
bone that is not broken. The network is fully convolutional, so weights trained on windows run on the whole ROI.

A window of ``siamese_input`` (8, H, W) = ``[roi (3), roi_mirrored (3), tps_grid (2)]`` cannot be cut at the same
pixels in all channels: the grid (``grid_sample`` form, ``align_corners=False``, normalised to the mirrored ROI's
edges) says where, in the *mirrored* ROI, each ROI pixel's counterpart lies. So:

* the ROI, the grid and the ``target`` are cut at ``(row, col)``;
* the mirrored ROI is cut by a window of the same size centred on the box of the positions the grid points to
  inside the ROI window (clipped to the mirrored ROI); the TPS is close to a translation over a window, so nearly every
  position falls inside it; positions outside take the border value, as the network's ``warp`` does at the ROI's
  edges;
* the grid is re-based: each position, in mirrored-ROI pixels, is expressed in the window's own normalised
  coordinates.

Then ``warp(window of roi_mirrored, re-based grid)`` equals the window of ``warp(roi_mirrored, grid)`` wherever the
grid points inside the mirrored window (tested).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable, Transform

from .geometry import as_points, normalized_to_pixel, pixel_to_normalized, transform_points

__all__ = ["SiameseCrop", "RandSiameseCropd", "CropPointsd"]


def _as_tensor(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class SiameseCrop(Transform):
    """Cut an ``(h, w)`` window at ``(row, col)`` from a packed ``siamese_input`` (8, H, W).

    Args:
        size: ``(h, w)`` of the window; each a multiple of the network's stride (32) to feed a network.
    """

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"size must be positive (h, w), got {size!r}")

    def mirrored_origin(self, grid: torch.Tensor, full_hw: Sequence[int]) -> tuple[int, int]:
        """Top-left (row, col) of the mirrored window for a cut grid (2, h, w) of a mirrored ROI of ``full_hw``."""
        big_h, big_w = int(full_hw[0]), int(full_hw[1])
        h, w = self.size
        px = normalized_to_pixel(grid[0], big_w)
        py = normalized_to_pixel(grid[1], big_h)
        col = 0.5 * float(px.min() + px.max())
        row = 0.5 * float(py.min() + py.max())
        top = int(np.clip(round(row - (h - 1) / 2.0), 0, big_h - h))
        left = int(np.clip(round(col - (w - 1) / 2.0), 0, big_w - w))
        return top, left

    def __call__(self, siamese_input, row: int, col: int, target=None):
        """The window at ``(row, col)`` (top-left, ROI pixels) of ``siamese_input`` and of ``target`` (if given).

        Returns:
            ``(window (8, h, w), target window (C, h, w) or None)``.
        """
        x = _as_tensor(siamese_input)
        if x.dim() != 3 or x.shape[0] != 8:
            raise ValueError(f"siamese_input must be (8, H, W), got {tuple(x.shape)}")
        big_h, big_w = int(x.shape[1]), int(x.shape[2])
        h, w = self.size
        if h > big_h or w > big_w:
            raise ValueError(f"window {self.size} is larger than the ROI ({big_h}, {big_w})")
        if not (0 <= row <= big_h - h and 0 <= col <= big_w - w):
            raise ValueError(f"window at ({row}, {col}) of size {self.size} leaves the ROI ({big_h}, {big_w})")
        grid = x[6:8, row : row + h, col : col + w]
        top, left = self.mirrored_origin(grid, (big_h, big_w))
        # mirrored-ROI pixel position -> the window's normalised coordinates (align_corners=False)
        px = normalized_to_pixel(grid[0], big_w) - left
        py = normalized_to_pixel(grid[1], big_h) - top
        rebased = torch.stack([pixel_to_normalized(px, w), pixel_to_normalized(py, h)])
        window = torch.cat(
            [x[0:3, row : row + h, col : col + w], x[3:6, top : top + h, left : left + w], rebased.to(x.dtype)]
        )
        cut_target = None
        if target is not None:
            cut_target = _as_tensor(target)[:, row : row + h, col : col + w]
        return window, cut_target


class CropPointsd(MapTransform):
    """``crop_points``: where fracture-centred windows go, in ROI pixels ``[x, y]`` (K, 2).

    The image's own fractures (``roi_fractures``) and, for a simulated intact twin, the breaks its fractured sibling
    has (``fractures_removed``, original pixels ``[x, y]``, mapped through the ROI box): the twin's windows then
    show the same bone intact, so that the pair differs only by the fracture.

    Args:
        keys: the ROI fracture points key.
        removed_key: original-pixel points of removed breaks (absent for real data).
        box_key: the ROI -> original pixel affine (3, 3).
        output_key: where the points go.
    """

    def __init__(
        self,
        keys="roi_fractures",
        removed_key: str = "fractures_removed",
        box_key: str = "roi_to_original",
        output_key: str = "crop_points",
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.removed_key, self.box_key, self.output_key = removed_key, box_key, output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        parts = [as_points(d[key], key) for key in self.key_iterator(d) if d[key] is not None]
        removed = d.get(self.removed_key)
        if removed is not None and len(removed):
            box = np.asarray(_as_tensor(d[self.box_key]), dtype=np.float64)
            parts.append(transform_points(np.linalg.inv(box), as_points(removed, self.removed_key)))
        d[self.output_key] = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 2), np.float32)
        return d


class RandSiameseCropd(Randomizable, MapTransform):
    """A random window of ``siamese_input`` and ``target``, centred on a fracture with ``positive_fraction``.

    For an image with fracture points (``points_key``, see :class:`CropPointsd`; else the pixels of the fracture
    mask, ``target`` channel 0), a window is, with probability ``positive_fraction``, placed so that a random point
    lies within the central half of the window (moved inside the ROI where needed); otherwise, and for every image
    without points, it is placed uniformly. With ``size`` equal to the ROI size the data pass through unchanged.

    Args:
        keys: the packed input key.
        size: ``(h, w)`` of the window.
        positive_fraction: share of fracture-centred windows for images with fracture points.
        target_key: the ``target`` (2, H, W) = [M, M-hat]; cut at the ROI's window.
        points_key: (K, 2) ``[x, y]`` ROI pixels to centre windows on; removed from the output.
        pair_key: items with the same value here, processed one after the other (a fractured image, then its
            intact twin: ``scripts.fracture.twin_batches.TwinBatchSampler``), get the same window, so that the pair
            differs only by the fracture. Absent: every item draws its own window.
        keep_pair_key: leave ``pair_key`` in the output (default: removed) for a later transform that keeps pairs
            together too (:class:`custom_transforms.siamese_augment.RandSiameseWindowAugmentd`, which removes it).
    """

    def __init__(
        self,
        keys="siamese_input",
        size: Sequence[int] = (128, 128),
        positive_fraction: float = 0.5,
        target_key: str = "target",
        points_key: str = "crop_points",
        pair_key: str = "pair_id",
        keep_pair_key: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys)
        self.points_key = points_key
        self.pair_key = pair_key
        self.keep_pair_key = bool(keep_pair_key)
        self._last_pair: tuple[object, tuple[int, int]] | None = None
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.cropper = SiameseCrop(size)
        self.positive_fraction = float(positive_fraction)
        self.target_key = target_key

    def randomize(self, points: np.ndarray, big_hw: Sequence[int]) -> tuple[int, int]:
        h, w = self.cropper.size
        big_h, big_w = int(big_hw[0]), int(big_hw[1])
        if len(points) and self.R.uniform() < self.positive_fraction:
            x, y = points[int(self.R.randint(len(points)))]
            # the point anywhere in the window's central half, so that the network does not learn "centre = break"
            row = y + self.R.uniform(-h / 4, h / 4)
            col = x + self.R.uniform(-w / 4, w / 4)
            top = int(np.clip(round(row - (h - 1) / 2), 0, big_h - h))
            left = int(np.clip(round(col - (w - 1) / 2), 0, big_w - w))
            return top, left
        return int(self.R.randint(big_h - h + 1)), int(self.R.randint(big_w - w + 1))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = _as_tensor(d[key])
            target = d.get(self.target_key)
            points = d.pop(self.points_key, None)
            if points is not None:
                points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            elif target is not None:
                rows, cols = torch.nonzero(_as_tensor(target)[0] >= 0.5, as_tuple=True)
                points = np.stack([cols.numpy(), rows.numpy()], axis=1).astype(np.float64)
            else:
                points = np.zeros((0, 2))
            pair = d.get(self.pair_key) if self.keep_pair_key else d.pop(self.pair_key, None)
            if pair is not None and self._last_pair is not None and self._last_pair[0] == pair:
                top, left = self._last_pair[1]  # the twin of the image just cut: the same window
                self._last_pair = None
            else:
                top, left = self.randomize(points, x.shape[-2:])
                self._last_pair = (pair, (top, left)) if pair is not None else None
            window, cut = self.cropper(x, top, left, target)
            d[key] = window
            if cut is not None:
                d[self.target_key] = cut
        return d

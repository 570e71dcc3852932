"""The anatomy-grounded warp between the mirrored ROI and the ROI as a ``grid_sample`` sampling grid (paper §3.2).

The paper's warp ``T`` maps mirrored-ROI coordinates onto original-ROI coordinates so that corresponding pixels
show corresponding (mirror-symmetric) anatomy; it is a thin-plate spline (Bookstein 1989) through the
corresponding landmarks of the two ROIs. Warping an image (or feature map) ``F_f`` of the mirrored ROI by ``T``
means ``F_f'(x) = F_f(T^-1(x))``, so what the network needs is ``T^-1`` evaluated at every pixel of the
original ROI. That is the ``tps_grid``: a thin-plate spline fitted from the original-ROI landmarks to the
same-named mirrored-ROI landmarks, evaluated at the pixel centres of an ``output_size`` grid spanning the ROI,
written in ``torch.nn.functional.grid_sample`` form: shape (2, h, w), channel 0 = x, channel 1 = y, normalised to
``[-1, 1]`` with ``align_corners=False`` (``-1`` and ``1`` are the outer edges of the mirrored ROI). Because the
normalisation refers to the ROI's edges, not to a pixel count, the same grid resized with bilinear interpolation
(``align_corners=False``) serves any feature resolution.

The spline is fitted with :class:`skimage.transform.ThinPlateSplineTransform` on coordinates normalised to the
ROI's size (its solver works in float32; a thin-plate spline commutes with similarity transforms, so the
normalisation changes nothing but the rounding). A warp whose Jacobian determinant is not positive somewhere in
the ROI folds the anatomy onto itself and raises a :class:`~custom_transforms.errors.GeometryError`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy.interpolate import RectBivariateSpline
from skimage.transform import ThinPlateSplineTransform

from .conventions import LANDMARK_NAMES, ROI_LANDMARK_INDICES
from .errors import GeometryError
from .geometry import as_points

__all__ = ["fit_tps", "tps_sampling_grid", "TPSGrid", "TPSGridd"]

#: Control points closer than this (ROI pixels) are "coincident".
MIN_LANDMARK_DISTANCE_PX = 0.5
#: A fitted spline must reproduce its control points to within this many ROI pixels.
MAX_FIT_RESIDUAL_PX = 1e-2
#: The dense grid (interpolated from a lattice) must reproduce the landmarks to within this many ROI pixels.
GRID_TOLERANCE_PX = 0.02
#: Lattice strides (ROI pixels) tried before evaluating the spline at every pixel.
LATTICE_STRIDES = (4, 2)


class _NormalizedTPS:
    """A thin-plate spline in ROI pixels, solved on coordinates scaled to about [-1, 1]."""

    def __init__(self, src: np.ndarray, dst: np.ndarray, roi_size) -> None:
        h, w = roi_size
        self.centre = np.array([w / 2.0, h / 2.0])
        self.scale = float(max(h, w)) / 2.0
        fitted = ThinPlateSplineTransform.from_estimate(self._norm(src), self._norm(dst))
        if not fitted:
            raise GeometryError(f"thin-plate spline estimation failed: {fitted}")
        self.tps = fitted

    def _norm(self, pts: np.ndarray) -> np.ndarray:
        return (pts - self.centre) / self.scale

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return self.tps(self._norm(pts)) * self.scale + self.centre


def _check_control_points(pts: np.ndarray, names, which: str, source: str) -> None:
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
    if dist[i, j] < MIN_LANDMARK_DISTANCE_PX:
        raise GeometryError(
            f"{source}: landmarks '{names[i]}' and '{names[j]}' coincide in the {which} ({dist[i, j]:.3g} px apart); "
            "the warp is undefined"
        )
    centred = pts - pts.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    if s[1] < 1e-3 * s[0]:
        raise GeometryError(f"{source}: the landmarks of the {which} are collinear; the warp is undefined")


def fit_tps(src, dst, roi_size, names=None, source: str = "TPS"):
    """Fit the thin-plate spline mapping ``src`` points onto ``dst`` (both (N, 2) ROI pixels).

    Args:
        src: control points in the domain (original ROI).
        dst: their images (mirrored ROI).
        roi_size: (h, w) of the ROI, for normalisation.
        names: names of the points for error messages.
        source: a name for error messages.

    Returns:
        A callable mapping (M, 2) ROI pixel points to (M, 2) points.

    Raises:
        GeometryError: coincident or collinear control points, or a spline that does not interpolate them.
    """
    src, dst = as_points(src, "src"), as_points(dst, "dst")
    names = list(names) if names is not None else [str(i) for i in range(len(src))]
    _check_control_points(src, names, "original ROI", source)
    _check_control_points(dst, names, "mirrored ROI", source)
    tps = _NormalizedTPS(src, dst, roi_size)
    residual = float(np.max(np.linalg.norm(tps(src) - dst, axis=1)))
    if residual > MAX_FIT_RESIDUAL_PX:
        raise GeometryError(f"{source}: the thin-plate spline is ill-conditioned (misses a landmark by {residual:.3g} px)")
    return tps


def _pixel_centres(roi_size, output_size) -> tuple[np.ndarray, np.ndarray]:
    """ROI-pixel coordinates of the centres of an ``output_size`` grid covering the ROI's extent."""
    h, w = roi_size
    oh, ow = output_size
    x = (np.arange(ow) + 0.5) * (w / ow) - 0.5
    y = (np.arange(oh) + 0.5) * (h / oh) - 0.5
    return x, y


def _evaluate_dense(tps, src: np.ndarray, dst: np.ndarray, roi_size, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The spline at every (x[j], y[i]), as (len(y), len(x), 2).

    Evaluating the spline costs O(pixels x landmarks); instead it is evaluated on a lattice of stride 4 (then 2)
    spanning the ROI's edges and interpolated with bicubic splines, accepted only if the result reproduces the
    landmarks inside the ROI to within GRID_TOLERANCE_PX (interpolation error peaks at the landmarks, where the
    kernel's curvature is largest); otherwise the spline is evaluated exactly at every pixel.
    """
    h, w = roi_size
    inside = (src[:, 0] >= -0.5) & (src[:, 0] <= w - 0.5) & (src[:, 1] >= -0.5) & (src[:, 1] <= h - 0.5)
    for stride in LATTICE_STRIDES:
        nx, ny = int(np.ceil(w / stride)) + 1, int(np.ceil(h / stride)) + 1
        if nx * ny * 4 >= len(x) * len(y) or min(nx, ny) < 4:
            break  # the lattice would not be much cheaper than the exact evaluation
        lx, ly = np.linspace(-0.5, w - 0.5, nx), np.linspace(-0.5, h - 0.5, ny)
        lxx, lyy = np.meshgrid(lx, ly)
        values = tps(np.stack([lxx.ravel(), lyy.ravel()], axis=1)).reshape(ny, nx, 2)
        splines = [RectBivariateSpline(ly, lx, values[..., k], kx=3, ky=3, s=0) for k in range(2)]
        error = np.stack([sp.ev(src[inside, 1], src[inside, 0]) for sp in splines], axis=1) - dst[inside]
        if not inside.any() or float(np.abs(error).max()) <= GRID_TOLERANCE_PX:
            return np.stack([sp(y, x) for sp in splines], axis=-1)
    xx, yy = np.meshgrid(x, y)
    return tps(np.stack([xx.ravel(), yy.ravel()], axis=1)).reshape(len(y), len(x), 2)


def tps_sampling_grid(src, dst, roi_size, output_size=None, names=None, check_folding: bool = True, source: str = "TPS") -> torch.Tensor:
    """The (2, h', w') ``grid_sample`` grid of the spline ``src`` -> ``dst`` over the ROI (see the module docstring).

    Args:
        src: (N, 2) control points in the ROI whose pixels the grid enumerates (original ROI).
        dst: (N, 2) corresponding points in the sampled ROI (mirrored ROI), same names.
        roi_size: (h, w) of both ROIs, in pixels.
        output_size: (h', w') of the grid; None = ``roi_size``.
        names: control point names for error messages.
        check_folding: raise if the Jacobian determinant is not positive everywhere on the grid.
        source: a name for error messages.
    """
    h, w = (int(s) for s in roi_size)
    oh, ow = (h, w) if output_size is None else (int(output_size[0]), int(output_size[1]))
    src, dst = as_points(src, "src"), as_points(dst, "dst")
    tps = fit_tps(src, dst, (h, w), names, source)
    x, y = _pixel_centres((h, w), (oh, ow))
    mapped = _evaluate_dense(tps, src, dst, (h, w), x, y)
    if check_folding and oh > 1 and ow > 1:
        _check_folding(mapped, x, y, source)
    grid = np.empty((2, oh, ow), dtype=np.float32)
    grid[0] = (2.0 * mapped[..., 0] + 1.0) / w - 1.0
    grid[1] = (2.0 * mapped[..., 1] + 1.0) / h - 1.0
    return torch.from_numpy(grid)


def _check_folding(mapped: np.ndarray, x: np.ndarray, y: np.ndarray, source: str) -> None:
    dx_du = np.gradient(mapped[..., 0], x, axis=1)
    dx_dv = np.gradient(mapped[..., 0], y, axis=0)
    dy_du = np.gradient(mapped[..., 1], x, axis=1)
    dy_dv = np.gradient(mapped[..., 1], y, axis=0)
    det = dx_du * dy_dv - dx_dv * dy_du
    if det.min() <= 0:
        r, c = np.unravel_index(int(np.argmin(det)), det.shape)
        raise GeometryError(
            f"{source}: the thin-plate spline warp folds (Jacobian determinant {det[r, c]:.3g} at ROI pixel "
            f"[x, y] = [{x[c]:.1f}, {y[r]:.1f}]); the landmarks of the ROI and mirrored ROI are inconsistent"
        )


class TPSGrid(Transform):
    """Array transform: ROI landmarks and mirrored-ROI landmarks -> the (2, h, w) ``tps_grid``.

    Args:
        output_size: (h, w) of the grid; None = the ROI size.
        landmarks: which landmarks control the spline: ``"all"`` (the 16, default; those outside the ROI still
            constrain it) or ``"roi"`` (the pubis and ischium landmarks only).
    """

    def __init__(self, output_size=None, landmarks: str = "all") -> None:
        if landmarks not in ("all", "roi"):
            raise ValueError(f"landmarks must be 'all' or 'roi', got {landmarks!r}")
        self.output_size = output_size
        self.indices = list(range(len(LANDMARK_NAMES))) if landmarks == "all" else list(ROI_LANDMARK_INDICES)

    def __call__(self, roi_landmarks, roi_landmarks_mirrored, roi_size, source: str = "TPS") -> torch.Tensor:
        src = as_points(roi_landmarks, "roi_landmarks")[self.indices]
        dst = as_points(roi_landmarks_mirrored, "roi_landmarks_mirrored")[self.indices]
        names = [LANDMARK_NAMES[i] for i in self.indices]
        return tps_sampling_grid(src, dst, roi_size, self.output_size, names, True, source)


class TPSGridd(MapTransform):
    """Compute ``tps_grid`` (2, h, w) from ``roi_landmarks`` and ``roi_landmarks_mirrored``.

    For every pixel of the original ROI the grid gives where to sample the mirrored ROI (``T^-1``), normalised
    to ``[-1, 1]``, channel 0 = x, channel 1 = y, for ``grid_sample(..., align_corners=False)`` after
    ``grid.permute(1, 2, 0)[None]``.

    Args:
        keys: key of the original-ROI landmarks (default ``"roi_landmarks"``).
        output_size: (h, w) of the grid; None = the ROI size.
        landmarks: ``"all"`` or ``"roi"``, the control points (see :class:`TPSGrid`).
        mirrored_key: key of the mirrored-ROI landmarks.
        roi_key: key of the ROI image, for its size when ``roi_size`` is absent.
        roi_size_key: key of the ROI size (h, w).
        grid_key: output key.
        allow_missing_keys: skip silently when the landmarks are absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "roi_landmarks",
        output_size=None,
        landmarks: str = "all",
        mirrored_key: str = "roi_landmarks_mirrored",
        roi_key: str = "roi",
        roi_size_key: str = "roi_size",
        grid_key: str = "tps_grid",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.grid = TPSGrid(output_size, landmarks)
        self.mirrored_key = mirrored_key
        self.roi_key = roi_key
        self.roi_size_key = roi_size_key
        self.grid_key = grid_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            roi_size = d.get(self.roi_size_key)
            if roi_size is None:
                roi_size = tuple(d[self.roi_key].shape[-2:])
            meta = getattr(d.get(self.roi_key), "meta", None) or {}
            source = str(meta.get("filename_or_obj", key))
            d[self.grid_key] = self.grid(d[key], d[self.mirrored_key], roi_size, source)
        return d

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

The spline (:class:`~custom_transforms.thin_plate_spline.ThinPlateSpline`) is fitted on coordinates normalised to
the ROI's size (``(p - centre) / (max(h, w) / 2)``; a thin-plate spline commutes with similarity transforms, so
the normalisation changes nothing for the exact spline and makes the smoothing weight independent of the ROI's
pixel count).

**A warp that does not fold.** A warp whose Jacobian determinant is not positive somewhere folds the mirrored
anatomy onto itself. The exact spline does so for some plausible landmark sets: two landmarks a few pixels apart
whose partners lie in a different order (close landmarks of real anatomy, annotation or augmentation noise: about
one atlas image in 300 at 192 x 384, and one draw in 200 of the training's landmark jitter). The grid is therefore
the first of these warps whose Jacobian determinant is at least :data:`MIN_JACOBIAN` on every grid pixel:

1. ``"tps"``: the exact spline through the landmarks (the paper's warp). Every landmark set that does not fold
   gets it, unchanged, so clean data keep their exact alignment at the landmarks.
2. ``"tps_regularised(lambda=...)"``: smoothing splines with weights :data:`SMOOTHING_SCHEDULE`, the smallest
   first: they trade exactness at the landmarks for less bending, and tend to the affine fit.
3. ``"affine"``: the least-squares affine map of the landmarks (the spline's limit of infinite smoothing).

The choice is logged as a warning naming the file and how far the chosen warp misses the landmarks, and
:class:`TPSGridd` writes it under ``tps_warp``. Geometry is refused (:class:`~custom_transforms.errors.GeometryError`)
when the landmarks cannot define a warp at all (coincident or collinear control points) or when even the affine
fit turns the mirrored ROI inside out or squeezes it below the margin: then the landmarks of the two ROIs do not
correspond (mirror-reversed or misnamed), and no smoothing makes them. ``fallback=False`` keeps the exact spline
only and refuses a fold (a determinant <= 0), as before the fallback existed (the simulator screens its poses
with it, so that its datasets stay as they were).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy.interpolate import RectBivariateSpline

from .conventions import LANDMARK_NAMES, ROI_LANDMARK_INDICES
from .errors import GeometryError
from .geometry import as_points, image_contains, pixel_to_normalized
from .thin_plate_spline import ThinPlateSpline

__all__ = [
    "MIN_JACOBIAN",
    "SMOOTHING_SCHEDULE",
    "TPSGrid",
    "TPSGridd",
    "WarpChoice",
    "fit_tps",
    "jacobian_determinant",
    "tps_sampling_grid",
    "warp_sampling_grid",
]

logger = logging.getLogger(__name__)

#: Control points closer than this (ROI pixels) are "coincident".
MIN_LANDMARK_DISTANCE_PX = 0.5
#: The exact spline must reproduce its control points to within this many ROI pixels (else it is ill-conditioned).
MAX_FIT_RESIDUAL_PX = 1e-2
#: The dense grid (interpolated from a lattice) must reproduce the spline at the landmarks to within this many
#: ROI pixels.
GRID_TOLERANCE_PX = 0.02
#: Lattice strides (ROI pixels) tried before evaluating the spline at every pixel.
LATTICE_STRIDES = (4, 2)
#: Smallest Jacobian determinant an accepted warp may have on the grid. The determinant is sampled by finite
#: differences at the grid's pixels (and the grid is resized to the feature resolution): the margin keeps a warp
#: that only just avoids folding at the samples from folding between them. It is no quality threshold: a region
#: squeezed 20-fold is still a one-to-one map.
MIN_JACOBIAN = 0.05
#: Smoothing weights (lambda, on ROI coordinates normalised to about [-1, 1]) tried in order when the exact spline
#: folds: half-decades, so the first that does not fold is at most sqrt(10) times the least that would, and misses
#: the landmarks by at most about twice as much. On atlas landmarks at 192 x 384 the folds needed lambda 1e-4 to
#: 0.1 (the chosen warp missing its landmarks by 1-24 ROI pixels, mostly at the pair that caused the fold); 100
#: is nearly the affine fit, which comes last.
SMOOTHING_SCHEDULE = tuple(float(f"{10.0 ** (k / 2):.3g}") for k in range(-8, 5))


@dataclass(frozen=True)
class WarpChoice:
    """Which warp a TPS grid was made with.

    Attributes:
        name: ``"tps"``, ``"tps_regularised(lambda=<value>)"`` or ``"affine"`` (see the module docstring).
        smoothing: the spline's smoothing weight: 0, the lambda, or ``inf`` for the affine fit.
        min_jacobian: the smallest Jacobian determinant on the grid (nan when the grid is one pixel wide or high).
        landmark_error_px: how far the warp misses the landmarks that lie inside the ROI at most, in ROI pixels
            (about 0 for ``"tps"``).
        exact_fault: why the exact spline was not used (None when it was).
    """

    name: str
    smoothing: float
    min_jacobian: float
    landmark_error_px: float
    exact_fault: str | None = None


class _NormalizedTPS:
    """A thin-plate spline in ROI pixels, solved on coordinates scaled to about [-1, 1].

    Args:
        src: (N, 2) control points, ROI pixels.
        dst: (N, 2) their images, ROI pixels.
        roi_size: (h, w) of the ROI.
        smoothing: see :class:`~custom_transforms.thin_plate_spline.ThinPlateSpline` (on the normalised coordinates).
    """

    def __init__(self, src: np.ndarray, dst: np.ndarray, roi_size, smoothing: float = 0.0) -> None:
        h, w = roi_size
        self.centre = np.array([w / 2.0, h / 2.0])
        self.scale = float(max(h, w)) / 2.0
        self.spline = ThinPlateSpline(self._norm(src), self._norm(dst), smoothing)

    def _norm(self, pts: np.ndarray) -> np.ndarray:
        return (pts - self.centre) / self.scale

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return self.spline(self._norm(pts)) * self.scale + self.centre

    @property
    def linear_part(self) -> np.ndarray:
        """The (2, 2) matrix of the affine part (the same in pixels as normalised: the scaling cancels)."""
        return self.spline.linear_part


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


def _solve(src: np.ndarray, dst: np.ndarray, roi_size, smoothing: float, source: str) -> _NormalizedTPS:
    try:
        return _NormalizedTPS(src, dst, roi_size, smoothing)
    except ValueError as error:
        raise GeometryError(f"{source}: thin-plate spline estimation failed ({error})") from error


def _max_miss(tps, src: np.ndarray, dst: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(tps(src) - dst, axis=1))) if len(src) else 0.0


def fit_tps(src, dst, roi_size, names=None, source: str = "TPS", smoothing: float = 0.0):
    """Fit the thin-plate spline mapping ``src`` points onto ``dst`` (both (N, 2) ROI pixels).

    Args:
        src: control points in the domain (original ROI).
        dst: their images (mirrored ROI).
        roi_size: (h, w) of the ROI, for normalisation.
        names: names of the points for error messages.
        source: a name for error messages.
        smoothing: the smoothing weight on normalised coordinates: 0 (default) interpolates, ``math.inf`` is the
            least-squares affine fit.

    Returns:
        A callable mapping (M, 2) ROI pixel points to (M, 2) points.

    Raises:
        GeometryError: coincident or collinear control points, or an exact spline (``smoothing=0``) that does not
            interpolate them.
    """
    src, dst = as_points(src, "src"), as_points(dst, "dst")
    names = list(names) if names is not None else [str(i) for i in range(len(src))]
    _check_control_points(src, names, "original ROI", source)
    _check_control_points(dst, names, "mirrored ROI", source)
    tps = _solve(src, dst, roi_size, smoothing, source)
    if smoothing == 0:
        residual = _max_miss(tps, src, dst)
        if not residual <= MAX_FIT_RESIDUAL_PX:
            raise GeometryError(
                f"{source}: the thin-plate spline is ill-conditioned (misses a landmark by {residual:.3g} px)"
            )
    return tps


def _pixel_centres(roi_size, output_size) -> tuple[np.ndarray, np.ndarray]:
    """ROI-pixel coordinates of the centres of an ``output_size`` grid covering the ROI's extent."""
    h, w = roi_size
    oh, ow = output_size
    x = (np.arange(ow) + 0.5) * (w / ow) - 0.5
    y = (np.arange(oh) + 0.5) * (h / oh) - 0.5
    return x, y


def _evaluate_dense(tps, src: np.ndarray, roi_size, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The spline at every (x[j], y[i]), as (len(y), len(x), 2).

    Evaluating the spline costs O(pixels x landmarks); instead it is evaluated on a lattice of stride 4 (then 2)
    spanning the ROI's edges and interpolated with bicubic splines, accepted only if the result reproduces the
    spline at the landmarks inside the ROI to within GRID_TOLERANCE_PX (interpolation error peaks at the landmarks,
    where the kernel's curvature is largest); otherwise the spline is evaluated exactly at every pixel.
    """
    h, w = roi_size
    inside = src[image_contains(src, (h, w))]
    at_landmarks = tps(inside) if len(inside) else None
    for stride in LATTICE_STRIDES:
        nx, ny = int(np.ceil(w / stride)) + 1, int(np.ceil(h / stride)) + 1
        if nx * ny * 4 >= len(x) * len(y) or min(nx, ny) < 4:
            break  # the lattice would not be much cheaper than the exact evaluation
        lx, ly = np.linspace(-0.5, w - 0.5, nx), np.linspace(-0.5, h - 0.5, ny)
        lxx, lyy = np.meshgrid(lx, ly)
        values = tps(np.stack([lxx.ravel(), lyy.ravel()], axis=1)).reshape(ny, nx, 2)
        splines = [RectBivariateSpline(ly, lx, values[..., k], kx=3, ky=3, s=0) for k in range(2)]
        if at_landmarks is None:
            return np.stack([sp(y, x) for sp in splines], axis=-1)
        error = np.stack([sp.ev(inside[:, 1], inside[:, 0]) for sp in splines], axis=1) - at_landmarks
        if float(np.abs(error).max()) <= GRID_TOLERANCE_PX:
            return np.stack([sp(y, x) for sp in splines], axis=-1)
    xx, yy = np.meshgrid(x, y)
    return tps(np.stack([xx.ravel(), yy.ravel()], axis=1)).reshape(len(y), len(x), 2)


def jacobian_determinant(mapped: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Jacobian determinant of a sampled map, by central differences (one-sided at the edges).

    Args:
        mapped: (len(y), len(x), 2) the map's ``[x, y]`` values at the grid points.
        x: the grid's x coordinates (at least 2).
        y: the grid's y coordinates (at least 2).
    """
    dx_du = np.gradient(mapped[..., 0], x, axis=1)
    dx_dv = np.gradient(mapped[..., 0], y, axis=0)
    dy_du = np.gradient(mapped[..., 1], x, axis=1)
    dy_dv = np.gradient(mapped[..., 1], y, axis=0)
    return dx_du * dy_dv - dx_dv * dy_du


def _fold_description(det: np.ndarray, x: np.ndarray, y: np.ndarray) -> str:
    r, c = np.unravel_index(int(np.argmin(det)), det.shape)
    return f"Jacobian determinant {det[r, c]:.3g} at ROI pixel [x, y] = [{x[c]:.1f}, {y[r]:.1f}]"


def _as_grid(mapped: np.ndarray, roi_size) -> torch.Tensor:
    """(oh, ow, 2) mapped ROI pixels -> the (2, oh, ow) float32 ``grid_sample`` grid (``align_corners=False``)."""
    h, w = roi_size
    grid = np.stack([pixel_to_normalized(mapped[..., 0], w), pixel_to_normalized(mapped[..., 1], h)])
    return torch.from_numpy(grid.astype(np.float32))


def _candidates(fallback: bool) -> list[tuple[str, float]]:
    """(name, smoothing) of the warps tried in order."""
    chain = [("tps", 0.0)]
    if fallback:
        chain += [(f"tps_regularised(lambda={lam:g})", lam) for lam in SMOOTHING_SCHEDULE] + [("affine", math.inf)]
    return chain


def warp_sampling_grid(
    src, dst, roi_size, output_size=None, names=None, source: str = "TPS", fallback: bool = True
) -> tuple[torch.Tensor, WarpChoice]:
    """The (2, h', w') ``grid_sample`` grid of a warp ``src`` -> ``dst`` that does not fold, and which warp it is.

    The exact thin-plate spline when its Jacobian determinant is at least :data:`MIN_JACOBIAN` everywhere on the
    grid, else the first smoothing spline of :data:`SMOOTHING_SCHEDULE` that is, else the affine fit (see the
    module docstring).

    Args:
        src: (N, 2) control points in the ROI whose pixels the grid enumerates (original ROI).
        dst: (N, 2) corresponding points in the sampled ROI (mirrored ROI), same names.
        roi_size: (h, w) of both ROIs, in pixels.
        output_size: (h', w') of the grid; None = ``roi_size``.
        names: control point names for error messages.
        source: a name (the image's file) for messages.
        fallback: try the smoothed and affine warps when the exact spline folds or is ill-conditioned; False:
            the exact spline only, refused when its determinant is <= 0 somewhere.

    Raises:
        GeometryError: coincident or collinear control points; with ``fallback``, landmarks whose affine fit
            already folds (or squeezes the ROI below :data:`MIN_JACOBIAN`); without it, an exact spline that folds
            or is ill-conditioned. The message names ``source`` and where the determinant is lowest.
    """
    h, w = (int(s) for s in roi_size)
    oh, ow = (h, w) if output_size is None else (int(output_size[0]), int(output_size[1]))
    src, dst = as_points(src, "src"), as_points(dst, "dst")
    names = list(names) if names is not None else [str(i) for i in range(len(src))]
    _check_control_points(src, names, "original ROI", source)
    _check_control_points(dst, names, "mirrored ROI", source)
    x, y = _pixel_centres((h, w), (oh, ow))
    checkable = oh > 1 and ow > 1
    inside = image_contains(src, (h, w))
    exact_fault = None
    for name, smoothing in _candidates(fallback):
        tps = _solve(src, dst, (h, w), smoothing, source)
        if smoothing == 0:
            residual = _max_miss(tps, src, dst)
            if not residual <= MAX_FIT_RESIDUAL_PX:
                exact_fault = f"the thin-plate spline is ill-conditioned (misses a landmark by {residual:.3g} px)"
                if not fallback:
                    raise GeometryError(f"{source}: {exact_fault}")
                continue
        mapped = _evaluate_dense(tps, src, (h, w), x, y)
        det = jacobian_determinant(mapped, x, y) if checkable else None
        lowest = float(det.min()) if det is not None else math.nan
        # the strict exact spline keeps its old rule (refused only when it folds); every fallback needs the margin
        if det is not None and not (lowest >= MIN_JACOBIAN or (not fallback and lowest > 0)):
            if smoothing == 0:
                where = _fold_description(det, x, y)
                exact_fault = (
                    f"the thin-plate spline warp folds ({where})"
                    if lowest <= 0
                    else f"the thin-plate spline warp nearly folds ({where}, below the margin {MIN_JACOBIAN:g})"
                )
                if not fallback:
                    raise GeometryError(
                        f"{source}: {exact_fault}; the landmarks of the ROI and mirrored ROI are inconsistent"
                    )
            continue
        choice = WarpChoice(name, smoothing, lowest, _max_miss(tps, src[inside], dst[inside]), exact_fault)
        if exact_fault is not None:
            logger.warning(
                f"{source}: {exact_fault}; using the {name} warp instead (smallest Jacobian determinant "
                f"{lowest:.3g}; misses the landmarks inside the ROI by up to {choice.landmark_error_px:.3g} ROI px)"
            )
        return _as_grid(mapped, (h, w)), choice
    affine_det = float(np.linalg.det(_solve(src, dst, (h, w), math.inf, source).linear_part))
    raise GeometryError(
        f"{source}: {exact_fault}, and every smoother warp folds too, down to the affine fit of the landmarks "
        f"(determinant {affine_det:.3g}, at least {MIN_JACOBIAN:g} needed): the landmarks of the ROI and mirrored ROI "
        "do not correspond (mirror-reversed or misnamed)"
    )


def tps_sampling_grid(
    src,
    dst,
    roi_size,
    output_size=None,
    names=None,
    check_folding: bool = True,
    source: str = "TPS",
    fallback: bool = True,
) -> torch.Tensor:
    """The (2, h', w') ``grid_sample`` grid of :func:`warp_sampling_grid` (see the module docstring).

    Args:
        src: (N, 2) control points in the ROI whose pixels the grid enumerates (original ROI).
        dst: (N, 2) corresponding points in the sampled ROI (mirrored ROI), same names.
        roi_size: (h, w) of both ROIs, in pixels.
        output_size: (h', w') of the grid; None = ``roi_size``.
        names: control point names for error messages.
        check_folding: False: the exact spline, whatever its Jacobian (no fallback, no check).
        source: a name for error messages.
        fallback: see :func:`warp_sampling_grid`.
    """
    if check_folding:
        return warp_sampling_grid(src, dst, roi_size, output_size, names, source, fallback)[0]
    h, w = (int(s) for s in roi_size)
    oh, ow = (h, w) if output_size is None else (int(output_size[0]), int(output_size[1]))
    src = as_points(src, "src")
    tps = fit_tps(src, dst, (h, w), names, source)
    x, y = _pixel_centres((h, w), (oh, ow))
    mapped = _evaluate_dense(tps, src, (h, w), x, y)
    return _as_grid(mapped, (h, w))


class TPSGrid(Transform):
    """Array transform: ROI landmarks and mirrored-ROI landmarks -> the (2, h, w) ``tps_grid``.

    Args:
        output_size: (h, w) of the grid; None = the ROI size.
        landmarks: which landmarks control the spline: ``"all"`` (the 16, default; those outside the ROI still
            constrain it) or ``"roi"`` (the pubis and ischium landmarks only).
        fallback: when the exact spline folds, use a smoothed spline or the affine fit (default); False refuses
            the fold (see :func:`warp_sampling_grid`).
    """

    def __init__(self, output_size=None, landmarks: str = "all", fallback: bool = True) -> None:
        if landmarks not in ("all", "roi"):
            raise ValueError(f"landmarks must be 'all' or 'roi', got {landmarks!r}")
        self.output_size = output_size
        self.indices = list(range(len(LANDMARK_NAMES))) if landmarks == "all" else list(ROI_LANDMARK_INDICES)
        self.fallback = bool(fallback)

    def __call__(self, roi_landmarks, roi_landmarks_mirrored, roi_size, source: str = "TPS") -> torch.Tensor:
        return self.grid_and_warp(roi_landmarks, roi_landmarks_mirrored, roi_size, source)[0]

    def grid_and_warp(
        self, roi_landmarks, roi_landmarks_mirrored, roi_size, source: str = "TPS"
    ) -> tuple[torch.Tensor, WarpChoice]:
        """The grid and the :class:`WarpChoice` that says which warp it is (arguments as ``__call__``)."""
        src = as_points(roi_landmarks, "roi_landmarks")[self.indices]
        dst = as_points(roi_landmarks_mirrored, "roi_landmarks_mirrored")[self.indices]
        names = [LANDMARK_NAMES[i] for i in self.indices]
        return warp_sampling_grid(src, dst, roi_size, self.output_size, names, source, self.fallback)


class TPSGridd(MapTransform):
    """Compute ``tps_grid`` (2, h, w) from ``roi_landmarks`` and ``roi_landmarks_mirrored``, and name the warp.

    For every pixel of the original ROI the grid gives where to sample the mirrored ROI (``T^-1``), normalised
    to ``[-1, 1]``, channel 0 = x, channel 1 = y, for ``grid_sample(..., align_corners=False)`` after
    ``grid.permute(1, 2, 0)[None]``. ``warp_key`` gets the warp's name (``"tps"``, ``"tps_regularised(lambda=...)"``
    or ``"affine"``, see the module docstring).

    Args:
        keys: key of the original-ROI landmarks (default ``"roi_landmarks"``).
        output_size: (h, w) of the grid; None = the ROI size.
        landmarks: ``"all"`` or ``"roi"``, the control points (see :class:`TPSGrid`).
        mirrored_key: key of the mirrored-ROI landmarks.
        roi_key: key of the ROI image, for its size when ``roi_size`` is absent and its file name for messages.
        roi_size_key: key of the ROI size (h, w).
        grid_key: output key.
        warp_key: output key of the warp's name.
        fallback: see :class:`TPSGrid`.
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
        warp_key: str = "tps_warp",
        fallback: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.grid = TPSGrid(output_size, landmarks, fallback)
        self.mirrored_key = mirrored_key
        self.roi_key = roi_key
        self.roi_size_key = roi_size_key
        self.grid_key = grid_key
        self.warp_key = warp_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            roi_size = d.get(self.roi_size_key)
            if roi_size is None:
                roi_size = tuple(d[self.roi_key].shape[-2:])
            meta = getattr(d.get(self.roi_key), "meta", None) or {}
            source = str(meta.get("filename_or_obj", key))
            d[self.grid_key], choice = self.grid.grid_and_warp(d[key], d[self.mirrored_key], roi_size, source)
            d[self.warp_key] = choice.name
        return d

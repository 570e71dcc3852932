"""Statistical shape model of the 16-landmark configuration, and its robust fit to detected points.

Model (point distribution model, Cootes et al. 1995)
    Training configurations, in millimetres, are aligned by generalised Procrustes analysis
    (translation, rotation and isotropic scale removed; each shape scaled to unit RMS distance of its
    points from their centroid). PCA of the aligned shapes gives a mean ``m`` and modes ``P`` with
    variances ``lambda``; a configuration is ``y_i = s R (m_i + (P b)_i) + t`` for a similarity
    ``(s, R, t)`` and mode weights ``b``. The modes kept explain ``explained_variance`` of the variance.
    Each landmark's RMS residual of the training shapes after projection on the kept modes is stored
    too: it is the part of a real pelvis that the model cannot express.

Fit
    The similarity and ``b`` are estimated alternately by weighted least squares with a Gaussian prior
    on ``b`` (a ridge of ``noise_std^2 / lambda``), and ``b`` is kept within ``max_mahalanobis``.
    A landmark is an *outlier* when its distance to the fitted model exceeds
    ``outlier_sigma * sqrt(residual_i^2 + noise^2)`` (in mm at the fitted scale). Outliers are removed
    one at a time, always the one with the largest *leave-one-out* residual (its distance to the model
    fitted without it, so that a gross error cannot hide by pulling the model towards itself), up to
    ``max_outliers``. Inliers keep their detected positions; outliers and missing points get the
    position the model fitted on the inliers predicts. A correct configuration is therefore returned
    unchanged, and one displaced point is corrected, not followed.

Coordinates are ``[x, y]`` (``custom_transforms.conventions``); callers convert pixels to mm with
the image spacing (``x * col_spacing, y * row_spacing``) so that the model is physical.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["StatisticalShapeModel", "ShapeFit", "procrustes_align", "similarity_fit", "shapes_to_mm"]


def _centre_and_scale(shape: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    centroid = shape.mean(axis=0)
    centred = shape - centroid
    rms = float(np.sqrt((centred**2).sum(axis=1).mean()))
    if rms <= 0:
        raise ValueError("a configuration whose points all coincide has no shape.")
    return centred / rms, centroid, rms


def similarity_fit(
    source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity (Umeyama 1991, no reflection) mapping ``source`` onto ``target``.

    Args:
        source: ``(N, 2)`` points.
        target: ``(N, 2)`` points.
        weights: ``(N,)`` non-negative weights (all ones when ``None``).

    Returns:
        ``(scale, rotation (2, 2), translation (2,))`` such that ``target ~ scale * source @ R.T + t``.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError("similarity_fit needs positive total weight.")
    w = w / w.sum()
    mu_s = w @ source
    mu_t = w @ target
    src = source - mu_s
    tgt = target - mu_t
    cov = (tgt * w[:, None]).T @ src  # sum_i w_i t_i s_i^T
    u, sing, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    correction = np.diag([1.0, d])
    rotation = u @ correction @ vt
    var_s = float((w * (src**2).sum(axis=1)).sum())
    if var_s <= 0:
        raise ValueError("similarity_fit: the weighted source points all coincide.")
    scale = float((sing * np.diag(correction)).sum() / var_s)
    translation = mu_t - scale * rotation @ mu_s
    return scale, rotation, translation


def procrustes_align(shapes: np.ndarray, iterations: int = 50, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes analysis.

    Args:
        shapes: ``(S, N, 2)`` configurations.
        iterations: maximum number of align-to-mean rounds.
        tol: stop when the mean moves less than this (unit-RMS shape units).

    Returns:
        ``aligned`` ``(S, N, 2)`` (each centred, unit RMS radius, rotated onto the mean) and the mean
        ``(N, 2)`` (centred, unit RMS radius).
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[-1] != 2:
        raise ValueError(f"shapes must be (S, N, 2), got {shapes.shape}.")
    normalised = np.stack([_centre_and_scale(s)[0] for s in shapes])
    mean = normalised[0]
    aligned = normalised
    for _ in range(iterations):
        aligned = np.empty_like(normalised)
        for i, shape in enumerate(normalised):
            _, rotation, _ = similarity_fit(shape, mean)
            aligned[i] = shape @ rotation.T
        new_mean = _centre_and_scale(aligned.mean(axis=0))[0]
        _, rotation, _ = similarity_fit(new_mean, mean)  # keep the mean's orientation fixed
        new_mean = new_mean @ rotation.T
        moved = float(np.abs(new_mean - mean).max())
        mean = new_mean
        if moved < tol:
            break
    return aligned, mean


@dataclass
class ShapeFit:
    """Result of :meth:`StatisticalShapeModel.fit`.

    Attributes:
        points: ``(N, 2)`` corrected configuration: inliers as given, the others as the model predicts.
        model_points: ``(N, 2)`` the model's configuration fitted on the inliers.
        inliers: ``(N,)`` bool, points within tolerance of the model (outliers and missing points are not).
        replaced: ``(N,)`` bool, points whose position in ``points`` is the model's (removed outliers,
            missing or unusable points).
        residuals: ``(N,)`` distance of each given point to ``model_points`` (leave-one-out for the
            removed outliers), in the units of the input.
        tolerance: ``(N,)`` the outlier threshold of each point, same units.
        coefficients: ``(K,)`` mode weights ``b``.
        mahalanobis: ``sqrt(sum b^2 / lambda)`` before clamping to ``max_mahalanobis``.
        scale: fitted scale (input units per unit-RMS shape unit).
    """

    points: np.ndarray
    model_points: np.ndarray
    inliers: np.ndarray
    replaced: np.ndarray
    residuals: np.ndarray
    tolerance: np.ndarray
    coefficients: np.ndarray
    mahalanobis: float
    scale: float

    @property
    def inlier_fraction(self) -> float:
        return float(self.inliers.mean())


class StatisticalShapeModel:
    """Procrustes + PCA model of landmark configurations with a robust, outlier-correcting fit.

    Args:
        mean: ``(N, 2)`` mean shape (centred, unit RMS radius).
        modes: ``(K, N, 2)`` orthonormal modes of variation.
        variances: ``(K,)`` variance of each mode (unit-RMS shape units squared).
        residual_std: ``(N,)`` RMS training residual of each landmark after projection on the modes.
        mean_size_mm: mean RMS radius of the training configurations in mm (used to express
            ``noise_mm`` in shape units).
        noise_mm: assumed detection noise (mm) added to the tolerance and used as the prior's ridge.
        outlier_sigma: tolerance multiplier.
        max_outliers: at most this many points are removed as outliers.
        max_mahalanobis: the mode weights are scaled back onto this Mahalanobis radius when beyond it.
        min_inliers: fewer usable points than this cannot be fitted (the fit raises ``ValueError``).
    """

    def __init__(
        self,
        mean: np.ndarray,
        modes: np.ndarray,
        variances: np.ndarray,
        residual_std: np.ndarray,
        mean_size_mm: float,
        noise_mm: float = 2.0,
        outlier_sigma: float = 4.0,
        max_outliers: int = 4,
        max_mahalanobis: float = 4.0,
        min_inliers: int = 6,
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.modes = np.asarray(modes, dtype=np.float64).reshape(-1, *self.mean.shape)
        self.variances = np.asarray(variances, dtype=np.float64)
        self.residual_std = np.asarray(residual_std, dtype=np.float64)
        self.mean_size_mm = float(mean_size_mm)
        self.noise_mm = float(noise_mm)
        self.outlier_sigma = float(outlier_sigma)
        self.max_outliers = int(max_outliers)
        self.max_mahalanobis = float(max_mahalanobis)
        self.min_inliers = int(min_inliers)
        if len(self.modes) != len(self.variances):
            raise ValueError(f"{len(self.modes)} modes but {len(self.variances)} variances.")
        if self.residual_std.shape != (len(self.mean),):
            raise ValueError(f"residual_std must be ({len(self.mean)},), got {self.residual_std.shape}.")

    @property
    def num_points(self) -> int:
        return len(self.mean)

    @property
    def num_modes(self) -> int:
        return len(self.variances)

    # ------------------------------------------------------------------ building and storing

    @classmethod
    def from_shapes(
        cls, shapes: np.ndarray, explained_variance: float = 0.98, max_modes: int | None = None, **fit_options
    ) -> StatisticalShapeModel:
        """Build the model from training configurations.

        Args:
            shapes: ``(S, N, 2)`` configurations in mm.
            explained_variance: keep the fewest modes explaining at least this share of the variance.
            max_modes: optional cap on the number of modes.
            fit_options: the fit's settings (``noise_mm``, ``outlier_sigma``, ...; see the class).
        """
        shapes = np.asarray(shapes, dtype=np.float64)
        if shapes.ndim != 3 or shapes.shape[0] < 3:
            raise ValueError(f"need at least 3 training configurations of shape (N, 2), got array {shapes.shape}.")
        if not np.isfinite(shapes).all():
            raise ValueError("training configurations contain non-finite coordinates.")
        aligned, mean = procrustes_align(shapes)
        num, npts = shapes.shape[:2]
        deviations = (aligned - mean).reshape(num, -1)
        _, sing, vt = np.linalg.svd(deviations, full_matrices=False)
        variances = sing**2 / max(num - 1, 1)
        total = variances.sum()
        if total > 0:
            keep = int(np.searchsorted(np.cumsum(variances) / total, explained_variance) + 1)
        else:
            keep = 0
        keep = min(keep, len(variances), num - 1)
        if max_modes is not None:
            keep = min(keep, int(max_modes))
        modes = vt[:keep]
        variances = variances[:keep]
        residual = deviations - (deviations @ modes.T) @ modes
        residual_std = np.sqrt((residual.reshape(num, npts, 2) ** 2).sum(-1).mean(0))
        sizes = [_centre_and_scale(s)[2] for s in shapes]
        return cls(mean, modes, variances, residual_std, float(np.mean(sizes)), **fit_options)

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "modes": self.modes.tolist(),
            "variances": self.variances.tolist(),
            "residual_std": self.residual_std.tolist(),
            "mean_size_mm": self.mean_size_mm,
            "noise_mm": self.noise_mm,
            "outlier_sigma": self.outlier_sigma,
            "max_outliers": self.max_outliers,
            "max_mahalanobis": self.max_mahalanobis,
            "min_inliers": self.min_inliers,
        }

    def save(self, path: str | os.PathLike) -> str:
        """Write the model as JSON (atomically) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, path)
        return str(path)

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides) -> StatisticalShapeModel:
        """Read a model written by :meth:`save`; ``overrides`` replace stored fit settings."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"shape model {path} does not exist (it is written by the landmark training).")
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}).") from e
        missing = [k for k in ("mean", "modes", "variances", "residual_std", "mean_size_mm") if k not in content]
        if missing:
            raise ValueError(f"{path}: shape model lacks the fields {missing}.")
        content.update(overrides)
        return cls(**content)

    # ------------------------------------------------------------------ fitting

    def _fit_inliers(self, points: np.ndarray, use: np.ndarray, iterations: int = 30):
        """Similarity + modes fitted on the points where ``use``; returns (model points, b, mahalanobis, scale)."""
        w = use.astype(np.float64)
        b = np.zeros(self.num_modes)
        noise = self.noise_mm / self.mean_size_mm  # shape units
        ridge = noise**2 / np.maximum(self.variances, 1e-12)
        modes_flat = self.modes.reshape(self.num_modes, -1)  # (K, 2N)
        w2 = np.repeat(w, 2)
        shape = self.mean
        mahalanobis = 0.0
        scale, rotation, translation = similarity_fit(shape, points, w)
        for _ in range(iterations):
            scale, rotation, translation = similarity_fit(shape, points, w)
            if scale <= 1e-9:
                raise ValueError("the configuration has collapsed to a point (no size); it cannot be fitted.")
            local = ((points - translation) @ rotation) / scale  # into the model frame
            deviation = (local - self.mean).reshape(-1)
            lhs = (modes_flat * w2) @ modes_flat.T + np.diag(ridge)
            b_new = np.linalg.solve(lhs, (modes_flat * w2) @ deviation) if self.num_modes else b
            mahalanobis = float(np.sqrt((b_new**2 / np.maximum(self.variances, 1e-12)).sum()))
            if mahalanobis > self.max_mahalanobis:
                b_new = b_new * (self.max_mahalanobis / mahalanobis)
            converged = np.abs(b_new - b).max(initial=0.0) < 1e-9
            b = b_new
            shape = self.mean + (b @ modes_flat).reshape(self.mean.shape)
            if converged:
                break
        scale, rotation, translation = similarity_fit(shape, points, w)
        model_points = scale * shape @ rotation.T + translation
        return model_points, b, mahalanobis, scale

    def _tolerance(self, scale: float) -> np.ndarray:
        return self.outlier_sigma * np.sqrt((scale * self.residual_std) ** 2 + self.noise_mm**2)

    def fit(self, points: np.ndarray, valid: np.ndarray | None = None) -> ShapeFit:
        """Fit the model robustly to a configuration and correct its outliers.

        Args:
            points: ``(N, 2)`` configuration in mm.
            valid: ``(N,)`` bool, points that may be used (e.g. confident detections); the others are
                predicted by the model. All when ``None``.

        Raises:
            ValueError: wrong shape, fewer than ``min_inliers`` usable (finite, valid) points, or usable
                points that all coincide.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.shape != self.mean.shape:
            raise ValueError(f"points must have shape {self.mean.shape}, got {points.shape}.")
        use = np.ones(self.num_points, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).copy()
        use &= np.isfinite(points).all(axis=1)
        if use.sum() < self.min_inliers:
            raise ValueError(f"only {int(use.sum())} usable landmarks; the shape model needs {self.min_inliers}.")
        given = use.copy()
        filled = np.where(use[:, None], points, 0.0)

        removed = 0
        while True:
            model_points, b, mahalanobis, scale = self._fit_inliers(filled, use)
            residuals = np.linalg.norm(filled - model_points, axis=1)
            tolerance = self._tolerance(scale)
            suspects = np.flatnonzero(use & (residuals > tolerance))
            if len(suspects) == 0 or removed >= self.max_outliers or int(use.sum()) - 1 < self.min_inliers:
                break
            # the suspect farthest from the model fitted without it (leave-one-out) is removed
            worst, worst_ratio = -1, 1.0
            for i in suspects:
                trial = use.copy()
                trial[i] = False
                loo_points, _, _, loo_scale = self._fit_inliers(filled, trial)
                ratio = np.linalg.norm(filled[i] - loo_points[i]) / self._tolerance(loo_scale)[i]
                if ratio > worst_ratio:
                    worst, worst_ratio = i, ratio
            if worst < 0:
                break
            use[worst] = False
            removed += 1

        inliers = use & (residuals <= tolerance)
        residuals = np.where(given, residuals, np.nan)
        corrected = np.where(use[:, None], points, model_points)
        return ShapeFit(
            points=corrected,
            model_points=model_points,
            inliers=inliers,
            replaced=~use,
            residuals=residuals,
            tolerance=tolerance,
            coefficients=b,
            mahalanobis=mahalanobis,
            scale=scale,
        )

    def sample(self, rng: np.random.Generator, scale: float = 1.0, sd: float = 1.0) -> np.ndarray:
        """A random configuration of the model (mean + Gaussian mode weights), centred, RMS radius ``scale``.

        Args:
            rng: numpy random generator.
            scale: RMS radius of the result.
            sd: standard deviations of the mode weights, in units of each mode's own.
        """
        b = rng.normal(size=self.num_modes) * sd * np.sqrt(self.variances)
        return scale * (self.mean + (b @ self.modes.reshape(self.num_modes, -1)).reshape(self.mean.shape))


def shapes_to_mm(landmarks: Sequence[np.ndarray], spacings_mm: Sequence[Sequence[float]]) -> np.ndarray:
    """``(S, N, 2)`` configurations in mm from pixel ``[x, y]`` landmarks and ``(row, col)`` spacings."""
    return np.stack(
        [np.asarray(lm, np.float64) * np.array([sp[1], sp[0]], np.float64) for lm, sp in zip(landmarks, spacings_mm)]
    )

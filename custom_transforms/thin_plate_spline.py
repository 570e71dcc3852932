"""Thin-plate splines in the plane, interpolating or smoothed (Bookstein 1989; smoothing as in Wahba 1990).

A thin-plate spline through control points ``c_i`` with values ``v_i`` (both ``(N, 2)``) is

    f(p) = a_0 + a_1 p_x + a_2 p_y + sum_i w_i U(|p - c_i|),    U(r) = r^2 log r^2  (U(0) = 0),

with ``sum_i w_i = 0`` and ``sum_i w_i c_i = 0``, so that the kernel part adds no affine component. The weights
and the affine part solve the linear system

    [ K + lambda I   P ] [ w ]   [ v ]
    [ P^T            0 ] [ a ] = [ 0 ],     K_ij = U(|c_i - c_j|),  P = [1, c_x, c_y].

``lambda = 0`` interpolates the values exactly. ``lambda > 0`` gives the smoothing spline: the spline with the
least squared miss at the control points plus ``lambda`` times its bending energy (up to the kernel's constant
factor). The miss at the control points is ``lambda w``; as ``lambda`` grows the weights vanish like
``1 / lambda`` and the spline tends to the least-squares affine fit of the values, which
``smoothing=math.inf`` gives directly. ``lambda`` is in the squared units of the coordinates, so splines
compare across scales only on normalised coordinates (see :mod:`custom_transforms.tps`).

The solve is in float64 (``skimage.transform.ThinPlateSplineTransform``, the same kernel, solves in float32 and
has no smoothing).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import cdist

from .geometry import as_points

__all__ = ["ThinPlateSpline", "tps_kernel"]


def tps_kernel(squared_distance: np.ndarray) -> np.ndarray:
    """``U = r^2 log r^2`` of squared distances ``r^2`` (0 where ``r = 0``, the kernel's limit)."""
    r2 = np.asarray(squared_distance, dtype=np.float64)
    return r2 * np.log(np.where(r2 > 0, r2, 1.0))  # log 1 = 0 where r = 0


class ThinPlateSpline:
    """A thin-plate spline ``R^2 -> R^2`` fitted to control points (see the module docstring).

    Args:
        centres: ``(N, 2)`` control points, ``N >= 3``, not all on one line.
        values: ``(N, 2)`` the values the spline should take at them.
        smoothing: ``lambda >= 0`` added to the kernel's diagonal: 0 interpolates, ``math.inf`` gives the
            least-squares affine fit (no kernel part).

    Raises:
        ValueError: mismatched shapes, fewer than 3 points, a negative smoothing, or a singular system
            (coincident control points without smoothing, all control points on one line).
    """

    def __init__(self, centres, values, smoothing: float = 0.0) -> None:
        centres, values = as_points(centres, "centres"), as_points(values, "values")
        if centres.shape != values.shape or len(centres) < 3:
            raise ValueError(
                "ThinPlateSpline: expected at least 3 centres and as many values, got "
                f"{centres.shape} and {values.shape}"
            )
        smoothing = float(smoothing)
        if not smoothing >= 0:
            raise ValueError(f"ThinPlateSpline: smoothing must be >= 0 (or inf), got {smoothing}")
        n = len(centres)
        basis = np.hstack([np.ones((n, 1)), centres])
        self.centres, self.smoothing = centres, smoothing
        if math.isinf(smoothing):
            affine, _, rank, _ = np.linalg.lstsq(basis, values, rcond=None)
            if rank < 3:
                raise ValueError("ThinPlateSpline: the control points lie on one line; no affine fit is defined")
            self.weights, self.affine = np.zeros((n, 2)), affine
            return
        system = np.zeros((n + 3, n + 3))
        system[:n, :n] = tps_kernel(_squared_distances(centres, centres)) + smoothing * np.eye(n)
        system[:n, n:] = basis
        system[n:, :n] = basis.T
        try:
            solution = np.linalg.solve(system, np.vstack([values, np.zeros((3, 2))]))
        except np.linalg.LinAlgError as error:
            raise ValueError(f"ThinPlateSpline: the spline's linear system is singular ({error})") from error
        if not np.all(np.isfinite(solution)):
            raise ValueError("ThinPlateSpline: the spline's linear system is singular (non-finite solution)")
        #: (N, 2) kernel weights ``w``.
        self.weights = solution[:n]
        #: (3, 2) affine part: row 0 the offset ``a_0``, rows 1-2 the matrix acting on ``[x, y]``.
        self.affine = solution[n:]

    def __call__(self, points) -> np.ndarray:
        """The spline at ``(M, 2)`` points, as ``(M, 2)``."""
        pts = as_points(points, "points")
        out = self.affine[0] + pts @ self.affine[1:]
        if not math.isinf(self.smoothing):
            out = out + tps_kernel(_squared_distances(pts, self.centres)) @ self.weights
        return out

    @property
    def linear_part(self) -> np.ndarray:
        """The affine part's ``(2, 2)`` matrix ``A`` in ``f(p) = A p + ...`` (rows: output x, y)."""
        return self.affine[1:].T


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cdist(a, b, "sqeuclidean")

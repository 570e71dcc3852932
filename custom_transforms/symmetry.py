"""The line of bilateral symmetry and the reflection about it (paper §3.2, Fig. 2).

The axis is the total-least-squares line (first principal direction) through the midpoints of the seven
bilateral landmark pairs and the two pubic symphysis points. It is fitted, and the reflection is defined, in
physical space (mm) when the pixel spacing is known, so that anisotropic pixels do not bend the geometry; the
results are expressed in pixel coordinates ``[x, y]`` (x = column, y = row):

* ``symmetry_axis = {"point": (2,), "direction": (2,)}``: a point on the axis (the centroid of the nine fitted
  points) and a unit direction, oriented downwards in the image (``direction[1] > 0``, cranial to caudal on a
  standard AP display);
* ``mirror_matrix``: the 3x3 homogeneous matrix ``M`` acting on ``[x, y, 1]`` that reflects a pixel position
  about the axis. ``M @ M = I``. The mirrored image is ``I_f(p) = I(M p)``; a landmark at ``p`` in ``I``
  appears at ``M p`` in ``I_f`` and, being seen in a mirror, takes its partner's name (``_r`` <-> ``_l``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from .conventions import LANDMARK_INDEX, LANDMARK_PAIRS, MIDLINE_LANDMARKS, MIRROR_PERMUTATION, NUM_LANDMARKS
from .errors import GeometryError
from .geometry import spacing_xy, transform_points

__all__ = ["fit_symmetry_axis", "reflection_matrix", "mirror_landmarks", "SymmetryAxis", "SymmetryAxisd"]

#: Largest accepted ratio of the scatter across the axis to the scatter along it (RMS) of the fitted points.
MAX_ACROSS_ALONG_RATIO = 0.5
#: Largest accepted median distance between mirrored landmarks and their partners, as a fraction of the
#: pelvis width (largest distance between partners). Real pelves are a few percent; this only catches garbage.
MAX_MIRROR_MISMATCH = 0.25


def reflection_matrix(point, direction) -> np.ndarray:
    """Homogeneous 3x3 reflection about the line through ``point`` with ``direction`` (same, isotropic units)."""
    p = np.asarray(point, dtype=np.float64)
    u = np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(u)
    if not np.isfinite(norm) or norm == 0:
        raise GeometryError(f"reflection_matrix: direction {u.tolist()} is not a valid direction")
    u = u / norm
    r = 2.0 * np.outer(u, u) - np.eye(2)
    m = np.eye(3)
    m[:2, :2] = r
    m[:2, 2] = p - r @ p
    return m


def mirror_landmarks(landmarks, mirror_matrix) -> np.ndarray:
    """Landmarks of the mirrored image, in LANDMARK_NAMES order: entry ``i`` is ``M @ landmarks[partner(i)]``."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return transform_points(mirror_matrix, lm[list(MIRROR_PERMUTATION)])


def fit_symmetry_axis(landmarks, spacing_mm=None, image_shape=None, source: str = "landmarks") -> dict:
    """Fit the symmetry axis and its reflection.

    Args:
        landmarks: (16, 2) ``[x, y]`` pixels in LANDMARK_NAMES order.
        spacing_mm: pixel spacing ``(row, col)`` in mm, or None for square pixels.
        image_shape: ``(H, W)``; when given, an axis that does not cross the image raises.
        source: a name for the error messages (e.g. the image file).

    Returns:
        ``{"point": (2,), "direction": (2,), "mirror_matrix": (3, 3)}`` in pixel coordinates.

    Raises:
        GeometryError: coincident points, no dominant direction, landmarks that are not mirror images of
            each other about the fitted line (e.g. all collinear), or an axis missing the image.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (NUM_LANDMARKS, 2) or not np.all(np.isfinite(lm)):
        raise GeometryError(f"{source}: expected finite landmarks of shape ({NUM_LANDMARKS}, 2), got {lm.shape}")
    pix = spacing_xy(spacing_mm)  # mm per pixel along x and y
    mm = lm * pix
    pairs = np.array(LANDMARK_PAIRS)
    midline = [LANDMARK_INDEX[n] for n in MIDLINE_LANDMARKS]
    fit_points = np.concatenate([(mm[pairs[:, 0]] + mm[pairs[:, 1]]) / 2.0, mm[midline]])

    extent = float(np.max(np.linalg.norm(mm[:, None] - mm[None], axis=-1)))
    if extent <= 1e-9:
        raise GeometryError(f"{source}: all landmarks coincide; no symmetry axis can be fitted")
    centroid = fit_points.mean(axis=0)
    _, singular, vt = np.linalg.svd(fit_points - centroid)
    along, across = singular / np.sqrt(len(fit_points))
    if along <= 1e-6 * extent:
        raise GeometryError(
            f"{source}: the pair midpoints and symphysis points coincide (spread {along:.3g}); the symmetry axis "
            "is undefined"
        )
    if across > MAX_ACROSS_ALONG_RATIO * along:
        raise GeometryError(
            f"{source}: the pair midpoints and symphysis points do not lie along a line (RMS spread across "
            f"{across:.3g} vs along {along:.3g}); check the landmark names and positions"
        )
    direction_mm = vt[0]
    reflect_mm = reflection_matrix(centroid, direction_mm)

    # Express everything in pixels: M_px = S^-1 M_mm S with S = diag(dx, dy, 1).
    s = np.diag([pix[0], pix[1], 1.0])
    mirror = np.linalg.inv(s) @ reflect_mm @ s
    point = centroid / pix
    direction = direction_mm / pix
    direction /= np.linalg.norm(direction)
    if direction[1] < 0 or (direction[1] == 0 and direction[0] < 0):
        direction = -direction

    mismatch = np.linalg.norm((mirror_landmarks(lm, mirror) - lm) * pix, axis=1)
    width = float(np.max(np.linalg.norm(mm[pairs[:, 0]] - mm[pairs[:, 1]], axis=1)))
    if width <= 1e-9 or np.median(mismatch) > MAX_MIRROR_MISMATCH * width:
        raise GeometryError(
            f"{source}: the landmarks are not mirror images of each other about the fitted axis (median "
            f"mismatch {np.median(mismatch):.3g} vs pelvis width {width:.3g}); are they collinear or misnamed?"
        )

    if image_shape is not None:
        _check_axis_crosses_image(point, direction, image_shape, source)
    return {"point": point, "direction": direction, "mirror_matrix": mirror}


def _check_axis_crosses_image(point, direction, image_shape, source: str) -> None:
    h, w = (int(v) for v in image_shape)
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    normal = np.array([-direction[1], direction[0]])
    side = (corners - point) @ normal
    if np.all(side > 0) or np.all(side < 0):
        raise GeometryError(
            f"{source}: the symmetry axis (through {np.round(point, 2).tolist()}, direction "
            f"{np.round(direction, 4).tolist()}) does not cross the {h} x {w} image"
        )


class SymmetryAxis(Transform):
    """Array transform: landmarks -> ``{"point", "direction", "mirror_matrix"}`` (see :func:`fit_symmetry_axis`)."""

    def __call__(self, landmarks, spacing_mm=None, image_shape=None, source: str = "landmarks") -> dict:
        return fit_symmetry_axis(landmarks, spacing_mm, image_shape, source)


class SymmetryAxisd(MapTransform):
    """Fit the bilateral symmetry axis from ``landmarks``; store ``symmetry_axis`` and ``mirror_matrix``.

    Args:
        keys: the landmarks key (default ``"landmarks"``).
        image_key: the image, for its spacing (meta ``spacing_mm``) and size; may be absent.
        axis_key: output key of ``{"point": (2,), "direction": (2,)}`` (float64, pixel coordinates).
        mirror_key: output key of the (3, 3) homogeneous reflection in pixel coordinates.
        allow_missing_keys: skip silently when the landmarks are absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "landmarks",
        image_key: str = "image",
        axis_key: str = "symmetry_axis",
        mirror_key: str = "mirror_matrix",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.axis_key = axis_key
        self.mirror_key = mirror_key
        self.fitter = SymmetryAxis()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = d.get(self.image_key)
        meta = getattr(image, "meta", None) or {}
        shape = tuple(image.shape[-2:]) if image is not None else None
        for key in self.key_iterator(d):
            fit = self.fitter(d[key], meta.get("spacing_mm"), shape, str(meta.get("filename_or_obj", key)))
            d[self.axis_key] = {"point": fit["point"], "direction": fit["direction"]}
            d[self.mirror_key] = fit["mirror_matrix"]
        return d

"""Cone-beam camera of an AP pelvic radiograph and the random patient pose.

Frames
    Anatomy is given in the patient's LPS frame (mm): +x patient left, +y posterior, +z superior.
    The posed anatomy lives in the *camera frame*: same axes, origin at the isocentre (the point the
    central ray passes through, in the patient). The X-ray source is anterior at ``(0, -sod, 0)``; the
    detector plane is posterior at ``y = sdd - sod``; the beam runs along +y (antero-posterior).

Detector pixels
    ``[x, y]`` = (column, row) with the origin at the centre of the top-left pixel. Columns grow
    with +x (patient left), so the patient's right is on the viewer's left; rows grow with -z
    (superior at the top), as an AP radiograph is displayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConeBeamCamera:
    """A point source and a flat detector perpendicular to the central ray.

    Args:
        sdd_mm: source-to-detector distance.
        sod_mm: source-to-isocentre distance (< ``sdd_mm``); the magnification at the isocentre is
            ``sdd_mm / sod_mm``.
        shape: detector ``(H, W)`` in pixels.
        pixel_mm: detector pixel size ``(row, col)`` in mm (this is the DICOM ImagerPixelSpacing).
    """

    sdd_mm: float
    sod_mm: float
    shape: tuple[int, int]
    pixel_mm: tuple[float, float]

    def __post_init__(self):
        if not 0 < self.sod_mm < self.sdd_mm:
            raise ValueError(f"need 0 < sod_mm < sdd_mm, got sod_mm={self.sod_mm}, sdd_mm={self.sdd_mm}")

    @property
    def centre(self) -> tuple[float, float]:
        """Pixel ``[x, y]`` hit by the central ray (the detector centre)."""
        h, w = self.shape
        return (w - 1) / 2.0, (h - 1) / 2.0

    @property
    def magnification(self) -> float:
        return self.sdd_mm / self.sod_mm

    def depth(self, points: np.ndarray) -> np.ndarray:
        """Distance from the source along the central-ray direction."""
        return np.asarray(points)[..., 1] + self.sod_mm

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project camera-frame points ``(..., 3)`` to detector pixels ``(..., 2)`` as ``[x, y]``."""
        p = np.asarray(points, dtype=np.float64)
        scale = self.sdd_mm / self.depth(p)
        cx, cy = self.centre
        col = cx + scale * p[..., 0] / self.pixel_mm[1]
        row = cy - scale * p[..., 2] / self.pixel_mm[0]
        return np.stack([col, row], axis=-1)

    def secant(self) -> np.ndarray:
        """Per-pixel ``1/cos`` of the ray's angle to the central ray: chord along the ray = depth chord x secant."""
        h, w = self.shape
        cx, cy = self.centre
        xd = (np.arange(w) - cx) * self.pixel_mm[1]
        zd = (np.arange(h) - cy) * self.pixel_mm[0]
        return np.sqrt(1.0 + (xd[None, :] ** 2 + zd[:, None] ** 2) / self.sdd_mm**2)

    def ray_directions(self, pixels: np.ndarray) -> np.ndarray:
        """Unit directions (camera frame) of the rays from the source through pixels ``(..., 2)``."""
        px = np.asarray(pixels, dtype=np.float64)
        cx, cy = self.centre
        xd = (px[..., 0] - cx) * self.pixel_mm[1]
        zd = -(px[..., 1] - cy) * self.pixel_mm[0]
        d = np.stack([xd, np.full_like(xd, self.sdd_mm), zd], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    @property
    def source(self) -> np.ndarray:
        return np.array([0.0, -self.sod_mm, 0.0])


def rotation_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rotation_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def homogeneous(rotation: np.ndarray | None = None, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    if rotation is not None:
        m[:3, :3] = rotation
    m[:3, 3] = translation
    return m


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous transform to points ``(..., 3)``."""
    p = np.asarray(points, dtype=np.float64)
    return p @ matrix[:3, :3].T + matrix[:3, 3]


#: Clinical ranges of the random pose, uniform within +-value unless stated (degrees / mm).
POSE_RANGES: dict[str, tuple[float, float]] = {
    # Pelvic tilt about the left-right axis: lordosis / supine position; beyond ~10 deg the view
    # turns into an inlet or outlet view.
    "tilt_deg": (-10.0, 10.0),
    # Rotation about the long (cranio-caudal) axis: the classic cause of non-pathological asymmetry
    # of the obturator foramina and iliac wings on trauma films.
    "long_axis_rotation_deg": (-8.0, 8.0),
    # In-plane rotation (patient not aligned with the detector edges).
    "in_plane_rotation_deg": (-5.0, 5.0),
    # Centring error of the patient relative to the central ray.
    "shift_x_mm": (-25.0, 25.0),
    "shift_z_mm": (-30.0, 30.0),
    # Source-to-detector distance (typical bucky set-ups 100-115 cm).
    "sdd_mm": (1000.0, 1150.0),
    # Isocentre-to-detector distance (half the patient's AP depth + table gap): magnification 1.13-1.30.
    "oid_mm": (130.0, 230.0),
}


@dataclass(frozen=True)
class Pose:
    """Patient pose for one radiograph (angles in degrees, lengths in mm)."""

    tilt_deg: float = 0.0
    long_axis_rotation_deg: float = 0.0
    in_plane_rotation_deg: float = 0.0
    shift_x_mm: float = 0.0
    shift_z_mm: float = 0.0
    sdd_mm: float = 1100.0
    oid_mm: float = 180.0

    @staticmethod
    def sample(rng: np.random.Generator) -> Pose:
        return Pose(**{k: float(rng.uniform(lo, hi)) for k, (lo, hi) in POSE_RANGES.items()})

    def rotation(self) -> np.ndarray:
        # Tilt first (about x), then rotation about the long axis (z), then in-plane (about the beam, y).
        in_plane, long_axis = rotation_y(self.in_plane_rotation_deg), rotation_z(self.long_axis_rotation_deg)
        return in_plane @ long_axis @ rotation_x(self.tilt_deg)

    def matrix(self, centre: np.ndarray) -> np.ndarray:
        """4x4 transform from the anatomy's LPS frame to the camera frame, rotating about ``centre``."""
        to_origin = homogeneous(translation=-np.asarray(centre, dtype=np.float64))
        rot = homogeneous(self.rotation())
        shift = homogeneous(translation=(self.shift_x_mm, 0.0, self.shift_z_mm))
        return shift @ rot @ to_origin

    def camera(self, shape: tuple[int, int], pixel_mm: tuple[float, float]) -> ConeBeamCamera:
        return ConeBeamCamera(self.sdd_mm, self.sdd_mm - self.oid_mm, shape, pixel_mm)

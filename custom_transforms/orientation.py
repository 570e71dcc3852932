"""Which way the pelvis lies on the film, read from its 16 landmarks, and a check that it lies as on an AP view.

On an AP pelvic radiograph in the standard display (:mod:`custom_transforms.conventions`) the patient's right is on
the viewer's left, so the ``_r`` landmarks have smaller x than their ``_l`` partners, and the anterior superior iliac
spines lie above (smaller y than) the pubic symphysis. Two vectors of the landmarks describe the pose, in mm:

* ``lateral``: from the mean of the ``_r`` landmarks to the mean of the ``_l`` landmarks (``+x`` when upright);
* ``cranial``: from the mean of the two symphysis points to the mean of the two ASIS (``-y`` when upright).

``rotation_deg`` is the angle of ``lateral`` from ``+x`` (positive = counter-clockwise on the screen), and
the configuration is ``mirrored`` when ``cranial`` lies on the wrong side of ``lateral`` (a reflection of an AP
pelvis: ``_r`` and ``_l`` names swapped, landmarks upside down, a horizontally flipped film or a PA view). Either
way the network would compare the wrong sides, or anatomy it was not trained on, and still give a probability;
:class:`CheckPelvisOrientationd` refuses such landmarks with an :class:`OrientationError` that says which.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .conventions import LANDMARK_INDEX, LANDMARK_PAIRS
from .errors import GeometryError
from .geometry import spacing_xy

__all__ = ["MAX_ROTATION_DEG", "CheckPelvisOrientationd", "OrientationError", "PelvisOrientation", "pelvis_orientation"]

#: Largest in-plane rotation from upright accepted by default: beyond it the film is closer to a quarter turn than
#: to an AP view (the simulator's and the paper's films are within about 15 degrees).
MAX_ROTATION_DEG = 45.0


class OrientationError(GeometryError):
    """The landmarks do not lie as on an AP pelvic radiograph: mirrored, upside down or rotated too far."""


@dataclass(frozen=True)
class PelvisOrientation:
    """The pose of a landmark configuration (see the module docstring).

    Attributes:
        rotation_deg: angle of the right-to-left vector from ``+x``, in ``(-180, 180]`` (counter-clockwise on the
            screen).
        mirrored: the configuration is a reflection of an AP pelvis.
    """

    rotation_deg: float
    mirrored: bool


def pelvis_orientation(landmarks: np.ndarray, spacing_mm=None) -> PelvisOrientation | None:
    """The pose of ``landmarks`` ``(16, 2)`` ``[x, y]`` pixels; None when the points are too degenerate to say.

    Args:
        landmarks: the 16 landmarks in ``LANDMARK_NAMES`` order.
        spacing_mm: ``(row, col)`` pixel spacing (None: square pixels).
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if spacing_mm is not None:
        points = points * spacing_xy(spacing_mm)
    right = points[[r for r, _ in LANDMARK_PAIRS]].mean(axis=0)
    left = points[[left for _, left in LANDMARK_PAIRS]].mean(axis=0)
    asis = points[[LANDMARK_INDEX["asis_r"], LANDMARK_INDEX["asis_l"]]].mean(axis=0)
    symphysis = points[[LANDMARK_INDEX["symphysis_superior"], LANDMARK_INDEX["symphysis_inferior"]]].mean(axis=0)
    lateral, cranial = left - right, asis - symphysis
    if np.hypot(*lateral) < 1e-9 or np.hypot(*cranial) < 1e-9:
        return None
    cross = lateral[0] * cranial[1] - lateral[1] * cranial[0]  # upright: (1, 0) x (0, -1) = -1
    rotation = float(np.degrees(np.arctan2(-lateral[1], lateral[0])))  # y points down: minus is up on the screen
    return PelvisOrientation(rotation_deg=rotation, mirrored=bool(cross > 0))


class CheckPelvisOrientationd(MapTransform):
    """Refuse landmarks that do not lie as on an AP pelvic radiograph (mirrored, upside down, rotated too far).

    Args:
        keys: the landmarks key (``(16, 2)`` ``[x, y]`` pixels).
        image_key: the loaded image, whose ``spacing_mm`` and file name the check uses.
        max_rotation_deg: largest accepted rotation from upright.
        allow_missing_keys: do nothing when the landmarks are absent.

    Raises:
        OrientationError: naming the image, what is wrong and what was expected.
    """

    def __init__(
        self,
        keys: KeysCollection = "landmarks",
        image_key: str = "image",
        max_rotation_deg: float = MAX_ROTATION_DEG,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.max_rotation_deg = float(max_rotation_deg)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        meta = getattr(d.get(self.image_key), "meta", None) or {}
        name = str(meta.get("filename_or_obj", "<image>"))
        spacing = meta.get("spacing_mm")
        for key in self.key_iterator(d):
            landmarks = d[key]
            landmarks = landmarks.detach().cpu().numpy() if hasattr(landmarks, "detach") else np.asarray(landmarks)
            pose = pelvis_orientation(landmarks, None if spacing is None else np.asarray(spacing, dtype=np.float64))
            if pose is None:  # coincident points: the symmetry axis says so, with its own message
                continue
            source = "detected" if d.get("landmarks_detected") else "annotated"
            if pose.mirrored:
                raise OrientationError(
                    f"{name}: the {source} landmarks form a mirror image of an AP pelvis: the patient-right ('_r') "
                    "landmarks lie on the patient's left or the pelvis is upside down ('_r' and '_l' names swapped, "
                    "y flipped, a horizontally flipped film or a PA view); expected '_r' landmarks on the viewer's "
                    "left and the ASIS above the symphysis"
                )
            if abs(pose.rotation_deg) > self.max_rotation_deg:
                raise OrientationError(
                    f"{name}: the {source} landmarks put the pelvis at {pose.rotation_deg:+.0f} degrees from upright "
                    f"(180 = upside down); expected an AP view within {self.max_rotation_deg:g} degrees of upright"
                )
        return d

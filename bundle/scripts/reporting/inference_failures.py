"""Why an image got no fracture report: the error behind a failed item, as a status and a message.

Inside a MONAI ``Compose`` a transform's error arrives wrapped in ``RuntimeError("applying transform ...")``
(its ``__cause__``, possibly several levels deep); the project's own errors are ``ValueError`` subclasses
whose messages already name the file and say what was expected. :func:`describe_failure` finds that error
and gives the report's ``status``:

========================= ===========================================================================
``not_a_pelvis``          the landmark detector refused the image (:class:`~scripts.landmarks.detector.NotAPelvisError`:
                          chest, extremity, lateral view, blank or saturated film, a few pixels), also when it came
                          with landmarks
``unreadable``            the file cannot be read as a radiograph (``PXRReadError``: corrupt or truncated DICOM,
                          not an image, no pixel data, missing file, NaN or infinite pixels, a rescale slope of 0)
``invalid_annotation``    the image's annotation file is malformed or missing (``AnnotationError``)
``implausible_landmarks`` the landmarks do not lie as on an AP view: mirrored (``_r``/``_l`` swapped, upside down,
                          a flipped film) or rotated too far (``custom_transforms.orientation.OrientationError``)
``invalid_geometry``      the landmarks give no usable symmetry axis, ROI or warp (``GeometryError``)
``failed``                anything else (e.g. the detector's weights are missing); the message says what
========================= ===========================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from custom_transforms.errors import AnnotationError, GeometryError, PXRReadError, root_cause
from custom_transforms.orientation import OrientationError

from scripts.landmarks.detector import NotAPelvisError

__all__ = ["FAILURE_STATUSES", "Failure", "describe_failure"]

#: Error class -> status, the first match wins (order matters: all are ValueErrors).
_STATUS_OF: tuple[tuple[type[BaseException], str], ...] = (
    (NotAPelvisError, "not_a_pelvis"),
    (PXRReadError, "unreadable"),
    (AnnotationError, "invalid_annotation"),
    (OrientationError, "implausible_landmarks"),
    (GeometryError, "invalid_geometry"),
)
FAILURE_STATUSES: tuple[str, ...] = tuple(status for _, status in _STATUS_OF) + ("failed",)


@dataclass(frozen=True)
class Failure:
    """One image that could not be analysed.

    Attributes:
        image: the input's path.
        status: one of :data:`FAILURE_STATUSES`.
        error: a message naming the file and saying what went wrong.
    """

    image: str
    status: str
    error: str


def describe_failure(image: str | os.PathLike, error: BaseException) -> Failure:
    """Status and message for the error that stopped ``image``'s inference.

    Args:
        image: the input's path (named in the message when the error does not name it already).
        error: the raised error, as caught around the transform chain.
    """
    image = os.fspath(image)
    cause = root_cause(error, prefer=tuple(kind for kind, _ in _STATUS_OF))
    status = next((name for kind, name in _STATUS_OF if isinstance(cause, kind)), "failed")
    message = str(cause) or type(cause).__name__
    if status == "failed":
        message = f"{type(cause).__name__}: {message}"
    if image not in message and os.path.basename(image) not in message:
        message = f"{image}: {message}"
    return Failure(image=image, status=status, error=message)

"""Exceptions raised by the preprocessing, and finding them again under the wrappers MONAI puts around them.

All derive from ``ValueError`` so that generic callers can catch them; their messages name the file and the field.
"""

from __future__ import annotations


class PXRReadError(ValueError):
    """A radiograph file cannot be read as an image (not DICOM, no pixel data, undecodable, ...)."""


class AnnotationError(ValueError):
    """An annotation (landmarks, fractures, spacing) is missing, malformed or outside the image."""


class GeometryError(ValueError):
    """The landmark geometry is degenerate: no symmetry axis, a zero-area ROI, a folding warp, ..."""


#: What MONAI's ``Compose`` / ``apply_transform`` says when it re-raises a transform's error as its cause.
_MONAI_WRAPPER_MESSAGE = "applying transform"


def _is_monai_wrapper(error: BaseException) -> bool:
    return type(error) is RuntimeError and str(error).startswith(_MONAI_WRAPPER_MESSAGE) and error.__cause__ is not None


def root_cause(error: BaseException, prefer: tuple[type[BaseException], ...] = (ValueError,)) -> BaseException:
    """The error that explains ``error``, for a message or a status.

    MONAI re-raises a transform's error as ``RuntimeError("applying transform ...")`` (once per nested ``Compose``),
    and a bundle config's evaluation wraps errors too; the error that happened is further down the chain of causes.
    This follows that chain (``raise ... from``; also an implicit ``__context__`` where no cause was given and it was
    not suppressed, as when a framework re-raises its own error inside an ``except`` block) and returns the outermost
    error that is one of ``prefer`` and not MONAI's wrapper: the project's own errors (``ValueError`` subclasses)
    name the file and what was expected, while what they were raised from is a library's detail. When none is, the
    innermost error along the explicit causes (an error handled on the way is not the explanation).

    Args:
        error: the error as caught.
        prefer: the error classes whose message explains best (default: ``ValueError``, the base of
            :class:`PXRReadError`, :class:`AnnotationError`, :class:`GeometryError` and the detector's refusal).
    """
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        if isinstance(current, prefer) and not _is_monai_wrapper(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    innermost, seen = error, {id(error)}
    while innermost.__cause__ is not None and id(innermost.__cause__) not in seen:
        innermost = innermost.__cause__
        seen.add(id(innermost))
    return innermost

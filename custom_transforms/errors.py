"""Exceptions raised by the preprocessing. All derive from ``ValueError`` so that generic callers can catch them."""

from __future__ import annotations


class PXRReadError(ValueError):
    """A radiograph file cannot be read as an image (not DICOM, no pixel data, undecodable, ...)."""


class AnnotationError(ValueError):
    """An annotation (landmarks, fractures, spacing) is missing, malformed or outside the image."""


class GeometryError(ValueError):
    """The landmark geometry is degenerate: no symmetry axis, a zero-area ROI, a folding warp, ..."""

"""File-name conventions of radiographs: which names are images, an image's name without its extension, and the
per-image output folders of batch runs.

* :data:`IMAGE_SUFFIXES`: the extensions of the formats :class:`~custom_transforms.loading.LoadPXR` reads
  (DICOM may also come without an extension); ``.nii.gz`` counts as one extension.
* :func:`image_stem`: the file name without that extension. It names an image's annotation (``<stem>.json``
  beside it), its evaluation case and its output folder, so it never returns a name that is not a folder of its
  own (``''``, ``'.'``, ``'..'``): when stripping the extension would leave only dots (``.dcm``, ``..dcm``,
  ``...dcm``) the whole file name is the stem. A name without a known extension is kept whole (DICOM files
  named by their UID, ``1.2.840.10008.1``, have dots that are not extensions).
* :func:`unique_image_stems`: one output folder name per input of a run; inputs whose stems clash
  (``a/pelvis.dcm``, ``b/pelvis.dcm``) get a short hash of their absolute path appended, so that no image's
  outputs overwrite another's.
* :func:`contained_path`: where a name becomes a path. ``root / name`` only when ``name`` is one plain path
  component and the result, links resolved, lies inside ``root``; otherwise :class:`UnsafePathError`. Every writer
  that names a file or folder after an input (a case, an image id) goes through it, so nothing is written or
  deleted outside its output folder, whatever the input was called and whatever links the folder holds.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePath

__all__ = ["IMAGE_SUFFIXES", "UnsafePathError", "contained_path", "image_stem", "unique_image_stems"]

#: Extensions of readable radiographs, lower case (matched case-insensitively; ``.nii.gz`` before ``.nii``).
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def image_stem(path: str | os.PathLike) -> str:
    """The image's file name without its image extension (see the module docstring for the rule).

    Args:
        path: the image's path (only its last component is used).

    Raises:
        ValueError: ``path`` ends in no file name (``''``, ``'.'``, ``'..'``, a trailing ``/``).
    """
    raw = os.fspath(path)
    name = PurePath(raw).name
    if raw.endswith(("/", os.sep)) or name in ("", ".", ".."):
        raise ValueError(f"{raw!r}: expected the path of an image file, but it ends in no file name.")
    lower = name.lower()
    suffix = next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), "")
    stem = name[: len(name) - len(suffix)]
    return name if stem.strip(".") == "" else stem


def unique_image_stems(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """One output folder name per image: its :func:`image_stem`, plus ``_`` and 8 hex digits of the SHA-1 of its
    absolute path when another input of the run has the same stem.

    Args:
        paths: the run's image paths.

    Returns:
        absolute path (``os.path.abspath``, links not resolved) -> folder name.
    """
    stems = {os.path.abspath(os.fspath(p)): image_stem(p) for p in paths}
    clashes = Counter(stems.values())
    return {
        p: stem if clashes[stem] == 1 else f"{stem}_{hashlib.sha1(p.encode()).hexdigest()[:8]}"
        for p, stem in stems.items()
    }


class UnsafePathError(ValueError):
    """A name that would put a file outside the folder it belongs in (a separator, ``..``, a link leading out)."""


def contained_path(root: str | os.PathLike, name: str, what: str = "name") -> Path:
    """``root / name``, checked to stay inside ``root``.

    Args:
        root: the folder that must contain the result (an output folder, a datastore).
        name: one path component (a case name, an image id, a file name).
        what: what ``name`` is, for the message (``"case name"``, ``"image id"``, ...).

    Raises:
        UnsafePathError: ``name`` is empty, ``.`` or ``..``, holds a path separator or a NUL, or ``root / name``
            resolves (following links already on disk) to a place outside ``root``.
    """
    raw = str(name)
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if raw in ("", ".", "..") or "\x00" in raw or any(sep in raw for sep in separators):
        raise UnsafePathError(
            f"{what} {raw!r}: expected one plain file or folder name (no path separator, not '.' or '..') "
            f"inside {os.fspath(root)}."
        )
    path = Path(root) / raw
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real == real_root or os.path.commonpath([real_root, real]) != real_root:
        raise UnsafePathError(
            f"{what} {raw!r}: {path} resolves to {real}, outside {real_root} (a link?); refused to write there."
        )
    return path

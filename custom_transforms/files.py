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
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import PurePath

__all__ = ["IMAGE_SUFFIXES", "image_stem", "unique_image_stems"]

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

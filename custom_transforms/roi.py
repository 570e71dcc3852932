"""The anterior-pelvis ROI of the image and of its mirror image, each resampled once from the original pixels.

Paper §3.2: the ROI is the bounding box of the landmarks on the pubis and ischium
(:data:`~custom_transforms.conventions.ROI_LANDMARK_NAMES`), taken from the image ``I`` and from the image
mirrored about the symmetry axis ``I_f``, and resized to the network size (default 256 x 512, H x W).

Geometry (all maps are 3x3 homogeneous on ``[x, y, 1]``, pixel-centre coordinates):

* the box: the ROI landmarks' bounding box, widened by ``margin`` (a fraction of its width and height on each
  side) and, with ``keep_aspect``, grown about its centre to the aspect ratio of ``roi_size`` in millimetres so
  that ROI pixels are square in physical space; box edges map to ROI pixel edges;
* ``roi_to_original = B``: ROI pixel -> original pixel (scale + translation);
* the mirrored ROI's box ``B_f`` is computed the same way on the mirrored landmarks (``M L`` renamed ``_r`` <->
  ``_l``) in the mirrored image, and since ``I_f(p) = I(M p)`` its pixels are sampled from the original image
  through ``roi_mirrored_to_original = M @ B_f``: reflection, crop and resize composed into one affine.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from .conventions import DEFAULT_ROI_SIZE, ROI_LANDMARK_INDICES, ROI_LANDMARK_NAMES
from .errors import GeometryError
from .geometry import as_points, scale_translate, spacing_xy, transform_points
from .resampling import sample_affine
from .symmetry import mirror_landmarks

__all__ = ["roi_box_matrix", "roi_edge_clearance_mm", "MirroredROI", "MirroredROId", "DEFAULT_MARGIN"]

#: Default margin around the ROI landmarks' bounding box, as a fraction of its (height, width) on each side.
DEFAULT_MARGIN = (0.1, 0.1)
#: Smallest accepted extent (pixels) of the ROI landmarks' bounding box along x and y.
MIN_BOX_EXTENT_PX = 2.0


def _margin_pair(margin) -> tuple[float, float]:
    pair = (float(margin), float(margin)) if np.isscalar(margin) else tuple(float(m) for m in margin)
    if len(pair) != 2 or min(pair) < 0 or not all(np.isfinite(pair)):
        raise ValueError(f"margin: expected a non-negative fraction or (row, col) pair of fractions, got {margin!r}")
    return pair  # type: ignore[return-value]


def roi_box_matrix(
    points, roi_size, margin=DEFAULT_MARGIN, spacing_mm=None, keep_aspect: bool = True, source: str = "ROI"
) -> np.ndarray:
    """ROI pixel -> source pixel affine of the box around ``points``.

    Args:
        points: (N, 2) ``[x, y]`` points the box must contain (the ROI landmarks).
        roi_size: (h, w) of the ROI in pixels.
        margin: fraction of the box's (height, width) added on each side; a scalar applies to both.
        spacing_mm: source pixel spacing (row, col) for the aspect ratio; None = square pixels.
        keep_aspect: grow the box so that its aspect ratio in mm equals ``h / w``.
        source: a name for error messages.

    Raises:
        GeometryError: the points span (almost) zero width or height.
    """
    pts = as_points(points)
    h, w = (int(s) for s in roi_size)
    if h < 1 or w < 1:
        raise ValueError(f"roi_size must be positive (h, w), got {roi_size!r}")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = hi - lo
    if np.any(extent < MIN_BOX_EXTENT_PX):
        raise GeometryError(
            f"{source}: the ROI landmarks {list(ROI_LANDMARK_NAMES)} span a zero-area box (width {extent[0]:.3g} px, "
            f"height {extent[1]:.3g} px); they must not be collinear along x or y"
        )
    my, mx = _margin_pair(margin)
    lo = lo - extent * (mx, my)
    hi = hi + extent * (mx, my)
    if keep_aspect:
        pix = spacing_xy(spacing_mm)
        size_mm = (hi - lo) * pix
        target = size_mm.copy()
        if size_mm[1] * w < size_mm[0] * h:  # too flat: grow the height
            target[1] = size_mm[0] * h / w
        else:  # too tall: grow the width
            target[0] = size_mm[1] * w / h
        centre = (lo + hi) / 2.0
        half = target / pix / 2.0
        lo, hi = centre - half, centre + half
    scale = (hi - lo) / (w, h)
    # ROI pixel u has centre u and spans [u - 0.5, u + 0.5]; its left edge u = -0.5 sits on the box edge lo.
    return scale_translate(scale, lo + 0.5 * scale)


def roi_edge_clearance_mm(
    points, landmarks, spacing_mm=None, roi_size=DEFAULT_ROI_SIZE, margin=DEFAULT_MARGIN
) -> np.ndarray:
    """How far (mm) each point lies inside the edge of the anterior-pelvis ROI cut from ``landmarks``.

    The ROI is the box of :class:`MirroredROI` (ROI landmarks, ``margin``, grown to the aspect ratio of
    ``roi_size``); the clearance is the distance to its nearest edge, negative outside. The simulator uses it to
    keep every fracture label inside the ROI of the default aspect ratio (1:2, shared by every ROI size here).

    Args:
        points: (K, 2) ``[x, y]`` pixels.
        landmarks: (16, 2) ``[x, y]`` pixels of the same image.
        spacing_mm: pixel spacing (row, col); None = 1 mm square pixels.
        roi_size: (h, w), for the aspect ratio.
        margin: as in :class:`MirroredROI`.
    """
    box = roi_box_matrix(as_points(landmarks, "landmarks")[list(ROI_LANDMARK_INDICES)], roi_size, margin, spacing_mm)
    h, w = (int(s) for s in roi_size)
    lo = transform_points(box, np.array([[-0.5, -0.5]]))[0]
    hi = transform_points(box, np.array([[w - 0.5, h - 0.5]]))[0]
    pts = as_points(points, "points")
    inside_px = np.minimum(pts - lo, hi - pts)  # (K, 2): clearance along x and y in pixels
    return (inside_px * spacing_xy(spacing_mm)).min(axis=1)


def _roi_spacing(box: np.ndarray, spacing_mm):
    if spacing_mm is None:
        return None
    return (float(spacing_mm[0]) * float(box[1, 1]), float(spacing_mm[1]) * float(box[0, 0]))


class MirroredROI(Transform):
    """Array transform computing the ROI and mirrored ROI of an image.

    Args:
        roi_size: (h, w) of both ROIs (the paper's 256 x 512 by default).
        margin: fraction of the landmark box's (height, width) added on each side.
        keep_aspect: make ROI pixels square in mm by growing the box to the aspect ratio of ``roi_size``.
        antialias: box-filter (supersample) when shrinking, see :func:`~custom_transforms.resampling.sample_affine`.
    """

    def __init__(
        self, roi_size=DEFAULT_ROI_SIZE, margin=DEFAULT_MARGIN, keep_aspect: bool = True, antialias: bool = True
    ) -> None:
        self.roi_size = (int(roi_size[0]), int(roi_size[1]))
        self.margin = _margin_pair(margin)
        self.keep_aspect = keep_aspect
        self.antialias = antialias

    def __call__(self, image, landmarks, mirror_matrix, fractures=None, spacing_mm=None, source: str = "image") -> dict:
        """Return the ROI outputs (keys as in :class:`MirroredROId`) for ``image`` (C, H, W).

        Args:
            image: the original image, channel-first.
            landmarks: (16, 2) ``[x, y]`` pixels of the original image.
            mirror_matrix: (3, 3) reflection about the symmetry axis (pixel coordinates).
            fractures: (K, 2) fracture points of the original image, or None.
            spacing_mm: the original pixel spacing (row, col), or None.
            source: a name for error messages.
        """
        lm = as_points(landmarks, "landmarks")
        mirror = np.asarray(mirror_matrix, dtype=np.float64)
        fr = as_points(fractures if fractures is not None else np.zeros((0, 2)), "fractures")
        lm_mirrored = mirror_landmarks(lm, mirror)
        roi_idx = list(ROI_LANDMARK_INDICES)
        box = roi_box_matrix(lm[roi_idx], self.roi_size, self.margin, spacing_mm, self.keep_aspect, source)
        box_f = roi_box_matrix(lm_mirrored[roi_idx], self.roi_size, self.margin, spacing_mm, self.keep_aspect, source)
        mirrored_to_original = mirror @ box_f
        box_inv, box_f_inv = np.linalg.inv(box), np.linalg.inv(box_f)
        return {
            "roi": sample_affine(image, box, self.roi_size, self.antialias),
            "roi_mirrored": sample_affine(image, mirrored_to_original, self.roi_size, self.antialias),
            "roi_to_original": box,
            "roi_mirrored_to_original": mirrored_to_original,
            "roi_size": self.roi_size,
            "roi_landmarks": transform_points(box_inv, lm).astype(np.float32),
            "roi_landmarks_mirrored": transform_points(box_f_inv, lm_mirrored).astype(np.float32),
            "roi_fractures": transform_points(box_inv, fr).astype(np.float32),
            "roi_fractures_mirrored": transform_points(box_f_inv, transform_points(mirror, fr)).astype(np.float32),
            "roi_spacing_mm": _roi_spacing(box, spacing_mm),
            "roi_mirrored_spacing_mm": _roi_spacing(box_f, spacing_mm),
        }


class MirroredROId(MapTransform):
    """Crop the anterior-pelvis ROI from the image and from its mirror image (see the module docstring).

    Reads ``landmarks``, ``mirror_matrix`` (from :class:`~custom_transforms.symmetry.SymmetryAxisd`) and optionally
    ``fractures``; writes

    * ``roi``, ``roi_mirrored``: (C, h, w) MetaTensors (meta ``spacing_mm`` = their pixel size, the source file);
    * ``roi_to_original``, ``roi_mirrored_to_original``: (3, 3) ROI pixel -> original pixel;
    * ``roi_size``: (h, w);
    * ``roi_landmarks``: (16, 2) landmarks in ROI pixels; ``roi_landmarks_mirrored``: (16, 2) landmarks of the
      mirrored ROI, renamed so that index ``i`` is ``LANDMARK_NAMES[i]`` as seen in the mirrored image;
    * ``roi_fractures``, ``roi_fractures_mirrored``: (K, 2) fracture points in ROI / mirrored-ROI pixels;
    * ``roi_spacing_mm``, ``roi_mirrored_spacing_mm``: ROI pixel size (row, col) in mm, or None.

    Args:
        keys: the image key (default ``"image"``).
        roi_size: (h, w) of the ROIs.
        margin: fraction of the landmark box's (height, width) added on each side.
        keep_aspect: make ROI pixels square in mm.
        antialias: box-filter when shrinking.
        landmarks_key, fractures_key, mirror_key: input keys.
        allow_missing_keys: skip silently when the image is absent.
        image_key: alias of ``keys`` (the name used in ``docs/architecture.md``).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        roi_size=DEFAULT_ROI_SIZE,
        margin=DEFAULT_MARGIN,
        keep_aspect: bool = True,
        antialias: bool = True,
        landmarks_key: str = "landmarks",
        fractures_key: str = "fractures",
        mirror_key: str = "mirror_matrix",
        allow_missing_keys: bool = False,
        image_key: str | None = None,
    ) -> None:
        super().__init__(keys if image_key is None else image_key, allow_missing_keys)
        self.cropper = MirroredROI(roi_size, margin, keep_aspect, antialias)
        self.landmarks_key = landmarks_key
        self.fractures_key = fractures_key
        self.mirror_key = mirror_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            meta = dict(getattr(image, "meta", None) or {})
            source = str(meta.get("filename_or_obj", key))
            for needed in (self.landmarks_key, self.mirror_key):
                if needed not in d:
                    raise GeometryError(
                        f"{source}: MirroredROId needs '{needed}' (run LoadAnnotationd and SymmetryAxisd first)"
                    )
            out = self.cropper(
                image,
                d[self.landmarks_key],
                d[self.mirror_key],
                d.get(self.fractures_key),
                meta.get("spacing_mm"),
                source,
            )
            for roi_key, spacing_key, map_key in (
                ("roi", "roi_spacing_mm", "roi_to_original"),
                ("roi_mirrored", "roi_mirrored_spacing_mm", "roi_mirrored_to_original"),
            ):
                roi_meta = {
                    "filename_or_obj": meta.get("filename_or_obj"),
                    "spacing_mm": out[spacing_key],
                    "roi_to_original": out[map_key],
                }
                # None values would break batch collation of the meta-data
                out[roi_key] = MetaTensor(out[roi_key], meta={k: v for k, v in roi_meta.items() if v is not None})
            d.update(out)
        return d

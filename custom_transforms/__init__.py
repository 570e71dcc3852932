"""MONAI transforms for anatomy-grounded preprocessing of pelvic radiographs (AASN, ECCV 2020).

The rule of the tree: **pixel geometry and file conventions live here; ``bundle/scripts`` holds models, losses and
workflows.** Whatever maps points between frames, converts pixels to ``grid_sample`` coordinates or millimetres,
resamples an image through an affine, names an image or its outputs by its file, or reads a radiograph or an
annotation has one owner in this package, and the bundle, the MONAI Label and Deploy apps and the benchmarks call
it instead of restating it:

* :mod:`~custom_transforms.conventions`: landmark names, ``[x, y]`` pixel coordinates, spacing ``(row, col)`` mm,
  the annotation and datalist formats, the radiograph NIfTI affine;
* :mod:`~custom_transforms.geometry`: points under ``(3, 3)`` homogeneous matrices, pixel <-> ``grid_sample``
  coordinates, spacing and millimetres;
* :mod:`~custom_transforms.resampling`: one image (or a batch) resampled through affine maps;
* :mod:`~custom_transforms.files`: image extensions, :func:`~custom_transforms.files.image_stem` and per-image
  output folder names;
* :mod:`~custom_transforms.errors`: the preprocessing's errors and
  :func:`~custom_transforms.errors.root_cause`, which finds them under MONAI's wrappers.

The data-flow contract is in ``docs/architecture.md``.
"""

from .annotation import LoadAnnotationd, landmarks_to_array, read_annotation
from .backprojection import (
    ROIToOriginal,
    ROIToOriginald,
    map_to_original_matrix,
    original_points_to_roi,
    roi_points_to_original,
)
from .conventions import (
    DEFAULT_FRACTURE_RADIUS_MM,
    DEFAULT_ROI_SIZE,
    LANDMARK_INDEX,
    LANDMARK_NAMES,
    LANDMARK_PAIRS,
    MIRROR_PERMUTATION,
    NUM_LANDMARKS,
    ROI_LANDMARK_INDICES,
    ROI_LANDMARK_NAMES,
    mirror_name,
)
from .errors import AnnotationError, GeometryError, PXRReadError, root_cause
from .files import IMAGE_SUFFIXES, image_stem, unique_image_stems
from .geometry import normalized_to_pixel, pixel_to_normalized, pixels_to_mm, spacing_xy, transform_points
from .loading import LoadPXR, LoadPXRd
from .masks import FractureMask, FractureMaskd, disc_mask
from .packing import SIAMESE_CHANNELS, PackSiameseInputd
from .pipeline import NETWORK_KEYS, aasn_geometry, aasn_loading, aasn_preprocessing
from .pseudocolor import PseudoColor, PseudoColord
from .roi import MirroredROI, MirroredROId, roi_box_matrix
from .symmetry import SymmetryAxis, SymmetryAxisd, fit_symmetry_axis, mirror_landmarks, reflection_matrix
from .tps import TPSGrid, TPSGridd, WarpChoice, fit_tps, tps_sampling_grid, warp_sampling_grid

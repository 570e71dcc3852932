"""MONAI transforms for anatomy-grounded preprocessing of pelvic radiographs (AASN, ECCV 2020).

Conventions (landmark names, ``[x, y]`` pixel coordinates, spacing ``(row, col)`` mm, file formats) are owned by
:mod:`custom_transforms.conventions`; the data-flow contract is in ``docs/architecture.md``.
"""

from .annotation import LoadAnnotationd, landmarks_to_array, read_annotation
from .backprojection import ROIToOriginal, ROIToOriginald, map_to_original_matrix, original_points_to_roi, roi_points_to_original
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
from .errors import AnnotationError, GeometryError, PXRReadError
from .loading import LoadPXR, LoadPXRd
from .masks import FractureMask, FractureMaskd, disc_mask
from .packing import SIAMESE_CHANNELS, PackSiameseInputd
from .pipeline import NETWORK_KEYS, aasn_geometry, aasn_loading, aasn_preprocessing
from .pseudocolor import PseudoColor, PseudoColord
from .roi import MirroredROI, MirroredROId, roi_box_matrix
from .symmetry import SymmetryAxis, SymmetryAxisd, fit_symmetry_axis, mirror_landmarks, reflection_matrix
from .tps import TPSGrid, TPSGridd, fit_tps, tps_sampling_grid

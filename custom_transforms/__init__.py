"""MONAI dictionary transforms for anatomy-grounded preprocessing of pelvic radiographs (AASN)."""

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

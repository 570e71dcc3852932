"""Default keys of the data dictionary produced by the preprocessing (see ``docs/architecture.md``).

Every dictionary transform takes its keys as arguments; these are the defaults, named once here.
"""

from __future__ import annotations

IMAGE = "image"
ANNOTATION = "annotation"
LANDMARKS = "landmarks"
FRACTURES = "fractures"
SYMMETRY_AXIS = "symmetry_axis"
MIRROR_MATRIX = "mirror_matrix"
ROI = "roi"
ROI_MIRRORED = "roi_mirrored"
ROI_TO_ORIGINAL = "roi_to_original"
ROI_MIRRORED_TO_ORIGINAL = "roi_mirrored_to_original"
ROI_SIZE = "roi_size"
ROI_LANDMARKS = "roi_landmarks"
ROI_LANDMARKS_MIRRORED = "roi_landmarks_mirrored"
ROI_FRACTURES = "roi_fractures"
ROI_FRACTURES_MIRRORED = "roi_fractures_mirrored"
ROI_SPACING_MM = "roi_spacing_mm"
ROI_MIRRORED_SPACING_MM = "roi_mirrored_spacing_mm"
TPS_GRID = "tps_grid"
FRACTURE_MASK = "fracture_mask"
CONTRASTIVE_MASK = "contrastive_mask"
SIAMESE_INPUT = "siamese_input"
TARGET = "target"
PRED = "pred"

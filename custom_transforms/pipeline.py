"""The default preprocessing chain, defined once for the bundle configs, MONAI Label and MONAI Deploy.

``aasn_preprocessing`` = ``aasn_loading`` (file -> image, landmarks, fractures) followed by ``aasn_geometry``
(symmetry axis -> mirrored ROIs -> TPS grid -> masks -> pseudo-colour -> packed input). The split lets a
training pipeline cache the loading and apply random jitter to image and landmarks before the geometry.
"""

from __future__ import annotations

from monai.transforms import Compose

from .annotation import LoadAnnotationd
from .conventions import DEFAULT_FRACTURE_RADIUS_MM, DEFAULT_ROI_SIZE
from .loading import SPACING_TAGS, LoadPXRd
from .masks import FractureMaskd
from .packing import PackSiameseInputd
from .pseudocolor import PseudoColord
from .roi import DEFAULT_MARGIN, MirroredROId
from .symmetry import SymmetryAxisd
from .tps import TPSGridd

__all__ = ["aasn_loading", "aasn_geometry", "aasn_preprocessing", "NETWORK_KEYS"]

#: Keys a training batch needs from the preprocessed dictionary (select them before collating).
NETWORK_KEYS = ("siamese_input", "target")


def aasn_loading(
    image_key: str = "image",
    annotation_key: str = "annotation",
    spacing_priority=SPACING_TAGS,
    allow_missing_annotation: bool = False,
) -> list:
    """Transforms loading the image and its annotation (or data-supplied landmarks).

    Args:
        image_key: key of the image path.
        annotation_key: key of the annotation JSON path.
        spacing_priority: DICOM spacing tags in order of preference.
        allow_missing_annotation: do not fail when neither annotation nor landmarks exist (a later detector adds them).
    """
    return [
        LoadPXRd(keys=image_key, spacing_priority=spacing_priority),
        LoadAnnotationd(keys=annotation_key, image_key=image_key, allow_missing_keys=allow_missing_annotation),
    ]


def aasn_geometry(
    roi_size=DEFAULT_ROI_SIZE,
    margin=DEFAULT_MARGIN,
    with_masks: bool = True,
    radius_mm: float = DEFAULT_FRACTURE_RADIUS_MM,
    fallback_spacing_mm=None,
    pseudo_color: str = "replicate",
    tps_landmarks: str = "all",
    pack: bool = True,
    image_key: str = "image",
) -> list:
    """Transforms from loaded image + landmarks to ``siamese_input`` (and ``target`` with masks).

    Args:
        roi_size: (h, w) of the ROIs (paper 256 x 512).
        margin: fraction of the ROI landmark box's (height, width) added on each side.
        with_masks: draw the fracture and contrastive masks (training / evaluation).
        radius_mm: fracture disc radius in mm (paper 20).
        fallback_spacing_mm: ROI pixel size for the masks when the image has no spacing; None raises.
        pseudo_color: ``"replicate"`` (paper) or ``"enhanced"``, see :mod:`custom_transforms.pseudocolor`.
        tps_landmarks: ``"all"`` or ``"roi"``, the TPS control points.
        pack: add :class:`PackSiameseInputd`.
        image_key: key of the loaded image.
    """
    chain = [
        SymmetryAxisd(keys="landmarks", image_key=image_key),
        MirroredROId(keys=image_key, roi_size=roi_size, margin=margin),
        TPSGridd(landmarks=tps_landmarks),
    ]
    if with_masks:
        chain.append(FractureMaskd(radius_mm=radius_mm, fallback_spacing_mm=fallback_spacing_mm))
    chain.append(PseudoColord(keys=("roi", "roi_mirrored"), mode=pseudo_color))
    if pack:
        chain.append(PackSiameseInputd())
    return chain


def aasn_preprocessing(
    roi_size=DEFAULT_ROI_SIZE,
    margin=DEFAULT_MARGIN,
    with_masks: bool = True,
    radius_mm: float = DEFAULT_FRACTURE_RADIUS_MM,
    fallback_spacing_mm=None,
    pseudo_color: str = "replicate",
    tps_landmarks: str = "all",
    pack: bool = True,
    image_key: str = "image",
    annotation_key: str = "annotation",
    spacing_priority=SPACING_TAGS,
    load: bool = True,
) -> Compose:
    """The whole default chain as a :class:`monai.transforms.Compose` (arguments as in the two parts).

    Args:
        load: include the loading transforms (False when the image and landmarks are already in the data).
    """
    chain = aasn_loading(image_key, annotation_key, spacing_priority) if load else []
    chain += aasn_geometry(
        roi_size, margin, with_masks, radius_mm, fallback_spacing_mm, pseudo_color, tps_landmarks, pack, image_key
    )
    return Compose(chain)

"""One simulated AP pelvic radiograph: pose, bones, femora, fractures, soft tissue, artefacts, image.

Everything geometric (bones, femora, fracture patches, landmarks, fracture labels) is projected
with one :class:`~simulation.camera.ConeBeamCamera` and one pose matrix, so labels and pixels agree
exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from custom_transforms.conventions import LANDMARK_INDEX
from custom_transforms.roi import roi_edge_clearance_mm

from .anatomy import Anatomy
from .camera import ConeBeamCamera, Pose, apply
from .femur import LegPose, femur_meshes
from .foreign_bodies import foreign_bodies
from .fracture import Fracture, fracture_patch_projection, sample_fractures
from .projector import path_length
from .radiograph import (
    MU_CANCELLOUS_EXCESS,
    MU_CORTICAL_EXCESS,
    MU_FAT,
    MU_SOFT,
    Exposure,
    expected_counts,
    process_counts,
    trabecular_texture,
)
from .soft_tissue import Habitus, body_path_lengths, bowel_gas

#: Detector width (mm) imaged by the output's columns; pixel size = DETECTOR_WIDTH_MM / W, square pixels.
DETECTOR_WIDTH_MM = 430.0
#: Share of images with at least one anterior-ring fracture (paper: 759 / 2,359).
POSITIVE_FRACTION = 759 / 2359
#: Every fracture label lies at least this far (mm) inside the anterior-pelvis ROI cut from the true landmarks
#: (``custom_transforms.roi.roi_edge_clearance_mm``): the paper's task is fractures inside that region, and the
#: clearance survives the training's landmark jitter (4 mm, 5 %).
ROI_LABEL_CLEARANCE_MM = 10.0


@dataclass
class SimulatedRadiograph:
    """A rendered radiograph with its exact labels.

    Args:
        pixels: ``(H, W)`` uint16 in 0..4095, high = bright (MONOCHROME2 sense).
        landmarks: ``(16, 2)`` ``[x, y]`` pixels.
        fractures: ``(K, 2)`` ``[x, y]`` pixels, projected centres of the cortical breaks.
        spacing_mm: detector pixel size ``(row, col)`` (ImagerPixelSpacing).
        bone_path_mm: ``(H, W)`` total bone path length per ray (for checks, not written).
        info: pose, exposure, habitus, fracture and foreign-body descriptions.
        intact_pixels: the same radiograph without its fractures (``render(..., intact_twin=True)``), else None.
    """

    pixels: np.ndarray
    landmarks: np.ndarray
    fractures: np.ndarray
    spacing_mm: tuple[float, float]
    bone_path_mm: np.ndarray
    info: dict = field(default_factory=dict)
    intact_pixels: np.ndarray | None = None


def _region(camera: ConeBeamCamera, landmarks_px: np.ndarray) -> dict:
    li = LANDMARK_INDEX
    sym = 0.5 * (landmarks_px[li["symphysis_superior"]] + landmarks_px[li["symphysis_inferior"]])
    asis = landmarks_px[[li["asis_r"], li["asis_l"]]]
    acet = landmarks_px[[li["acetabulum_center_r"], li["acetabulum_center_l"]]]
    mm = camera.magnification / camera.pixel_mm[1]
    return {
        "midline_x": float(sym[0]),
        "symphysis_y": float(landmarks_px[li["symphysis_superior"], 1]),
        "crest_y": float(asis[:, 1].mean() - 40 * mm),
        "half_width_px": float(0.5 * abs(asis[1, 0] - asis[0, 0])),
        "trochanter_y": float(acet[:, 1].mean() + 30 * mm),
    }


def render(
    anatomy: Anatomy,
    rng: np.random.Generator,
    size: tuple[int, int] = (1024, 1024),
    positive: bool | None = None,
    pose: Pose | None = None,
    artefacts: bool = True,
    intact_twin: bool = False,
) -> SimulatedRadiograph:
    """Render one radiograph of ``anatomy``.

    Args:
        anatomy: the subject.
        rng: random generator; the same generator state gives the same image.
        size: detector ``(H, W)`` in pixels; pixel size is ``DETECTOR_WIDTH_MM / W``.
        positive: force fractures (True) or none (False); ``None`` draws with :data:`POSITIVE_FRACTION`.
        pose: fixed pose instead of a random one.
        artefacts: bowel gas and foreign bodies (off for clean geometry checks).
        intact_twin: for an image with fractures, also render ``intact_pixels``: the same radiograph without the
            breaks (training data in which only the fracture differs).
    """
    h, w = int(size[0]), int(size[1])
    pixel = DETECTOR_WIDTH_MM / w
    if pose is None:
        # A radiographer frames the whole pelvis: redraw poses that would cut landmarks off.
        for _ in range(50):
            pose = Pose.sample(rng)
            uv = pose.camera((h, w), (pixel, pixel)).project(apply(pose.matrix(anatomy.centre), anatomy.landmarks))
            margin = 0.03 * np.array([w, h])
            if np.all((uv >= margin) & (uv <= np.array([w, h]) - 1 - margin)):
                break
        else:
            raise ValueError(
                f"a {h} x {w} detector of {DETECTOR_WIDTH_MM:.0f} mm width cannot frame subject {anatomy.subject}'s "
                f"landmarks"
            )
    camera = pose.camera((h, w), (pixel, pixel))
    matrix = pose.matrix(anatomy.centre)
    secant = camera.secant()

    if positive is None:
        positive = bool(rng.uniform() < POSITIVE_FRACTION)
    landmarks_px = camera.project(apply(matrix, anatomy.landmarks))
    spacing = (pixel, pixel)

    def in_roi(points_px: np.ndarray) -> bool:
        return bool(np.all(roi_edge_clearance_mm(points_px, landmarks_px, spacing) >= ROI_LABEL_CLEARANCE_MM))

    def centre_in_roi(centre_lps: np.ndarray) -> bool:
        # The label (centroid of the removed cortex) lies within a few mm of the cross-section's centre; the
        # label itself is checked again after the cut.
        return in_roi(camera.project(apply(matrix, centre_lps[None])))

    fractures: list[Fracture] = sample_fractures(anatomy, rng, centre_in_roi) if positive else []

    cortical = np.zeros((h, w))
    cancellous = np.zeros((h, w))
    for bone in anatomy.bones.values():
        outer = path_length(bone.outer, matrix, camera, secant)
        inner = path_length(bone.inner, matrix, camera, secant) if bone.inner is not None else 0.0
        cortical += outer - inner
        cancellous += inner
    legs = {}
    for side in ("r", "l"):
        legs[side] = LegPose.sample(rng)
        outer_m, inner_m = femur_meshes(
            anatomy.acetabulum_centre(side), anatomy.acetabulum_radius[side], side, legs[side]
        )
        outer = path_length(outer_m, matrix, camera, secant)
        inner = path_length(inner_m, matrix, camera, secant)
        cortical += outer - inner
        cancellous += inner
    labels = []
    kept: list[Fracture] = []
    fracture_cortical = np.zeros((h, w))
    fracture_cancellous = np.zeros((h, w))
    for _attempt in range(5):
        for frac in fractures:
            change = fracture_patch_projection(anatomy, frac, matrix, camera)
            if change is None:
                continue
            d_cort, d_canc, label3d = change
            if not in_roi(camera.project(apply(matrix, label3d[None]))):
                continue
            kept.append(frac)
            fracture_cortical += d_cort
            fracture_cancellous += d_canc
            labels.append(camera.project(apply(matrix, label3d)))
        if kept or not positive:
            break
        fractures = sample_fractures(anatomy, rng, centre_in_roi)  # every cut missed: a positive film needs one
    intact_cortical, intact_cancellous = cortical, cancellous
    cortical = np.maximum(cortical + fracture_cortical, 0.0)
    cancellous = np.maximum(cancellous + fracture_cancellous, 0.0)

    region = _region(camera, landmarks_px)
    exposure = Exposure.sample(rng)
    habitus = Habitus.sample(rng)

    # Object-plane coordinates of every pixel in the frame of the posed pelvis (for the body outline).
    cx, cy = camera.centre
    obj = pixel / camera.magnification
    xs = (np.arange(w) - cx) * obj - pose.shift_x_mm
    zs = -(np.arange(h) - cy) * obj - pose.shift_z_mm
    rot = pose.rotation()
    a = np.arctan2(rot[0, 2], rot[0, 0])  # in-plane angle of the pelvis' left-right axis
    xb = np.cos(a) * xs[None, :] - np.sin(a) * zs[:, None]
    zb = np.sin(a) * xs[None, :] + np.cos(a) * zs[:, None]
    li = LANDMARK_INDEX
    hip_x = 0.5 * abs(anatomy.acetabulum_centre("l")[0] - anatomy.acetabulum_centre("r")[0])
    crotch_z = (
        0.5 * (anatomy.landmarks[li["ischial_tuberosity_r"], 2] + anatomy.landmarks[li["ischial_tuberosity_l"], 2])
        - anatomy.centre[2]
    )
    fat, lean = body_path_lengths((xb, zb), habitus, hip_x, crotch_z - 10.0)
    body_mask = (fat + lean) > 1.0

    texture = trabecular_texture((h, w), pixel, rng)

    def bone_attenuation(cortical_mm: np.ndarray, cancellous_mm: np.ndarray) -> np.ndarray:
        return MU_CORTICAL_EXCESS * cortical_mm + MU_CANCELLOUS_EXCESS * cancellous_mm * (
            1.0 + exposure.trabecular_contrast * texture
        )

    attenuation = MU_FAT * fat + MU_SOFT * lean
    kinds: list[str] = []
    if artefacts:
        gas = bowel_gas((h, w), obj, region, rng)
        attenuation -= MU_SOFT * np.minimum(gas, lean)
        fb, kinds = foreign_bodies((h, w), pixel, region, rng)
        attenuation += fb
    soft_tissue = attenuation
    attenuation = soft_tissue + bone_attenuation(cortical, cancellous)
    mean, n0 = expected_counts(attenuation, body_mask, pixel, exposure)
    counts = rng.poisson(mean).astype(np.float64)
    pixels = process_counts(counts, n0, body_mask, (cortical + cancellous) > 2.0, pixel, exposure)
    intact_pixels = None
    if intact_twin and kept:
        # Same patient, pose, exposure, artefacts and quantum-noise draw, without the breaks: the twin's counts are
        # the fractured image's, moved by the difference of the means, so the two differ only at the breaks.
        twin_mean, twin_n0 = expected_counts(
            soft_tissue + bone_attenuation(intact_cortical, intact_cancellous), body_mask, pixel, exposure
        )
        intact_pixels = process_counts(
            counts + (twin_mean - mean),
            twin_n0,
            body_mask,
            (intact_cortical + intact_cancellous) > 2.0,
            pixel,
            exposure,
        )

    info = {
        "subject": anatomy.subject,
        "anatomy": anatomy.source,
        "pose": asdict(pose),
        "legs": {s: asdict(p) for s, p in legs.items()},
        "habitus": asdict(habitus),
        "exposure": asdict(exposure),
        "fractures": [f.describe() for f in kept],
        "foreign_bodies": kinds,
        "magnification": camera.magnification,
    }
    return SimulatedRadiograph(
        pixels=pixels,
        landmarks=landmarks_px,
        fractures=np.asarray(labels, dtype=np.float64).reshape(-1, 2),
        spacing_mm=(pixel, pixel),
        bone_path_mm=cortical + cancellous,
        info=info,
        intact_pixels=intact_pixels,
    )

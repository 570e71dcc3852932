"""Training support for the landmark detector: the shape model from training annotations, the loss, the data.

* :func:`landmark_configurations_mm` / :func:`build_shape_model`: the training set's landmark
  configurations in mm (annotation spacing if given, else the image's DICOM spacing) and the
  statistical shape model fitted on them, saved as JSON beside the weights.
* :class:`SpatialSoftmaxCrossEntropy` (default): each landmark's logits, softmaxed over the pixels, are
  a probability map; the loss is its cross-entropy with the Gaussian target normalised to sum 1 (an
  all-zero target, as for the non-pelvic negatives, asks for the uniform map: "the landmark is not
  here"; for refinement patches, which need only find their own landmark, such channels are ignored). Like a
  40,000-way classification it gives every image a strong gradient at the right place
  from the first iteration, where a regression of mostly-zero heatmaps first learns to predict zeros.
* :class:`WeightedHeatmapMSE`: mean squared error on the Gaussian target heatmaps with pixels weighted
  ``1 + foreground_weight * target``: almost every target pixel is 0, and without the weight a network
  first learns to predict 0 everywhere and only slowly grows the peaks.
* :func:`landmark_training_dataset`: the (cached) annotated radiographs plus the synthetic non-pelvic
  negatives (:mod:`.nonpelvic_radiographs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from custom_transforms.annotation import read_annotation
from custom_transforms.geometry import pixels_to_mm
from custom_transforms.loading import LoadPXR, dicom_spacing, is_dicom_file
from simulation.nonpelvic import NONPELVIC_KINDS

from scripts.landmarks.nonpelvic_radiographs import NonPelvicDataset
from scripts.landmarks.shape_model import StatisticalShapeModel

__all__ = [
    "image_spacing_mm",
    "landmark_configurations_mm",
    "build_shape_model",
    "SpatialSoftmaxCrossEntropy",
    "WeightedHeatmapMSE",
    "landmark_training_dataset",
]

logger = logging.getLogger(__name__)


def image_spacing_mm(image_path: str, annotation: dict) -> tuple[float, float] | None:
    """Spacing ``(row, col)`` mm of an annotated image: the annotation's, else the image file's (or ``None``)."""
    if annotation.get("spacing_mm") is not None:
        return tuple(annotation["spacing_mm"])
    if is_dicom_file(image_path):
        import pydicom

        ds = pydicom.dcmread(image_path, stop_before_pixels=True)
        spacing, _ = dicom_spacing(ds, source=image_path)
        return spacing
    return LoadPXR()(image_path).meta.get("spacing_mm")


def landmark_configurations_mm(items: Sequence[dict]) -> np.ndarray:
    """``(S, 16, 2)`` landmark configurations in mm of datalist items (``image`` and ``annotation`` paths)."""
    shapes = []
    for item in items:
        annotation = read_annotation(item["annotation"])
        spacing = image_spacing_mm(item["image"], annotation)
        if spacing is None:
            raise ValueError(
                f"{item['annotation']}: no spacing_mm and the image {item['image']} gives none; the shape model "
                "needs landmark positions in mm."
            )
        shapes.append(pixels_to_mm(annotation["landmarks"], spacing))
    return np.stack(shapes)


def build_shape_model(
    items: Sequence[dict], path: str | os.PathLike, explained_variance: float = 0.98, **fit_options
) -> str:
    """Fit the statistical shape model on the training items' landmarks and save it as JSON.

    Args:
        items: training datalist items.
        path: output JSON (e.g. ``models/landmark_shape_model.json``).
        explained_variance: share of the shape variance the kept modes explain.
        fit_options: the model's fit settings (``noise_mm``, ``outlier_sigma``, ...).
    """
    shapes = landmark_configurations_mm(items)
    model = StatisticalShapeModel.from_shapes(shapes, explained_variance=explained_variance, **fit_options)
    logger.info(
        f"shape model from {len(shapes)} training configurations: {model.num_modes} modes, "
        f"mean RMS size {model.mean_size_mm:.1f} mm; saved {path}"
    )
    return model.save(path)


class SpatialSoftmaxCrossEntropy(torch.nn.Module):
    """Cross-entropy between each channel's spatial softmax and its target normalised to sum 1.

    Args:
        empty: what a channel whose target is all zero asks for: ``"uniform"`` (the landmark is not in the
            image: the whole-image stage's negatives) or ``"ignore"`` (no loss: a patch that does not contain
            that landmark, whose own landmark is another channel).
    """

    def __init__(self, empty: str = "uniform") -> None:
        super().__init__()
        if empty not in ("uniform", "ignore"):
            raise ValueError(f"empty must be 'uniform' or 'ignore', got {empty!r}.")
        self.empty = empty

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} heatmaps differ in shape.")
        b, n = logits.shape[:2]
        log_p = torch.log_softmax(logits.float().reshape(b, n, -1), dim=-1)
        t = target.float().reshape(b, n, -1)
        mass = t.sum(-1, keepdim=True)
        present = mass > 0
        if self.empty == "ignore":
            losses = -(t / mass.clamp_min(1e-12) * log_p).sum(-1)
            return losses[present[..., 0]].mean() if present.any() else logits.sum() * 0.0
        uniform = torch.full_like(t, 1.0 / t.shape[-1])
        t = torch.where(present, t / mass.clamp_min(1e-12), uniform)
        return -(t * log_p).sum(-1).mean()


class WeightedHeatmapMSE(torch.nn.Module):
    """``mean((pred - target)^2 * (1 + foreground_weight * target))``.

    Args:
        foreground_weight: extra weight of pixels in proportion to their target value.
    """

    def __init__(self, foreground_weight: float = 10.0) -> None:
        super().__init__()
        self.foreground_weight = float(foreground_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} heatmaps differ in shape."
            )
        return ((pred.float() - target) ** 2 * (1 + self.foreground_weight * target)).mean()


def landmark_training_dataset(
    radiographs: Dataset,
    input_size: Sequence[int],
    negative_fraction: float = 0.15,
    num_landmarks: int = 16,
    kinds: Sequence[str] = NONPELVIC_KINDS,
    seed: int = 0,
) -> Dataset:
    """The training radiographs plus ``negative_fraction`` (of the total) synthetic non-pelvic images.

    Args:
        radiographs: dataset of ``{"image", "label"}`` items (letterboxed image, target heatmaps).
        input_size: ``(H, W)`` of the detector's input.
        negative_fraction: share of negatives in the combined dataset (0 disables them).
        num_landmarks: channels of the targets.
        kinds: kinds of negatives.
        seed: seed of the negatives.
    """
    if not 0 <= negative_fraction < 1:
        raise ValueError(f"negative_fraction must be in [0, 1), got {negative_fraction}.")
    count = int(round(len(radiographs) * negative_fraction / (1 - negative_fraction)))
    if count == 0:
        return radiographs
    return ConcatDataset([radiographs, NonPelvicDataset(count, input_size, num_landmarks, kinds, seed)])

"""The 16-landmark detector: image in, landmarks in original pixels out, with confidences and plausibility.

Pipeline (the paper detects its 16 landmarks before anything else, §3.2; it uses a graph-based detector,
here a heatmap network with a statistical shape prior plays that role):

1. the whole radiograph is letterboxed (aspect kept, padded) to ``input_size`` (:mod:`.letterbox`);
2. a heatmap network (a MONAI UNet from the config) gives one heatmap per landmark;
3. each heatmap is decoded to a sub-pixel peak (:mod:`.heatmap_decoding`) and mapped back to
   original pixels;
4. the peaks are converted to mm and the statistical shape model is fitted robustly
   (:mod:`.shape_model`): landmarks whose peak is below ``min_confidence`` and those the model
   finds to be outliers are replaced by the model's prediction; the rest are kept as detected;
5. ``plausibility`` of the image = median peak confidence x share of landmarks consistent with the shape
   model (none is when the fitted configuration's size in mm is far from the model's). Below
   ``plausibility_threshold`` the image is not taken to be an AP pelvic radiograph and
   :class:`NotAPelvisError` is raised (a chest film, an extremity, a lateral view, a blank image).
   An image without contrast (intensity standard deviation below ``min_contrast``: blank or saturated)
   has plausibility 0 and is refused whatever the threshold;
6. optionally (``refiner``), each landmark is refined in a patch at a finer resolution
   (:mod:`.refinement`) and the shape prior is applied again to the refined positions;
7. ``confidence`` of each landmark, read from the last stage's heatmap at its final position: for a
   network trained with a spatial softmax (the default) the probability that the landmark lies within
   ``confidence_radius`` pixels; for regressed Gaussian heatmaps the heatmap maximum within one pixel
   (a target peaks at 1). About 1 for a clear detection, about 0 where the network saw nothing (e.g.
   where the shape model had to supply the position). The peak confidences play the same role in the
   plausibility.

When the image has no spacing, an isotropic spacing is estimated from the size of the detected
configuration relative to the shape model's mean size (only for the shape fit's tolerances).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from custom_transforms.conventions import LANDMARK_NAMES
from custom_transforms.errors import root_cause
from custom_transforms.geometry import spacing_xy, transform_points

from scripts.landmarks.heatmap_decoding import activate_heatmaps, decode_heatmaps, heatmap_confidence
from scripts.landmarks.letterbox import Letterbox
from scripts.landmarks.refinement import LandmarkRefiner, network_device
from scripts.landmarks.shape_model import StatisticalShapeModel

__all__ = [
    "MIN_CONTRAST",
    "MIN_IMAGE_SIZE",
    "NotAPelvisError",
    "image_problem",
    "LandmarkDetection",
    "LandmarkDetector",
    "DetectLandmarksd",
    "load_network_weights",
    "load_landmark_detector",
]

logger = logging.getLogger(__name__)


class NotAPelvisError(ValueError):
    """The image does not look like an AP pelvic radiograph (landmark plausibility below the threshold)."""


#: Smallest side (pixels) of an image taken for a radiograph: below it there is no anatomy to find.
MIN_IMAGE_SIZE = 32
#: Lowest intensity standard deviation (``[0, 1]`` units) of an image with anything on it.
MIN_CONTRAST = 0.01


def image_problem(
    image: torch.Tensor, min_image_size: int = MIN_IMAGE_SIZE, min_contrast: float = MIN_CONTRAST
) -> str | None:
    """Why ``image`` (``(1, H, W)`` in ``[0, 1]``) cannot be a pelvic radiograph, from its pixels alone (no network);
    None when nothing is wrong. The detector refuses such images, and :class:`DetectLandmarksd` refuses them when they
    come with landmarks too.

    Args:
        image: the loaded radiograph.
        min_image_size: smallest side in pixels.
        min_contrast: lowest intensity standard deviation.
    """
    h, w = (int(v) for v in image.shape[-2:])
    if min(h, w) < min_image_size:
        return f"the image is {h} x {w} pixels, smaller than {min_image_size} x {min_image_size}"
    contrast = float(torch.as_tensor(image).float().std())
    if not contrast >= min_contrast:  # also NaN
        return (
            f"the image has no contrast (intensity standard deviation {contrast:.4f} < {min_contrast}); blank or "
            "saturated"
        )
    return None


@dataclass
class LandmarkDetection:
    """What the detector found in one image.

    Attributes:
        landmarks: ``(N, 2)`` float32 ``[x, y]`` in original pixels (after the shape prior).
        confidence: ``(N,)`` heatmap value at each final landmark (maximum within one input pixel), in ``[0, 1]``.
        plausibility: image-level score in ``[0, 1]``.
        peaks: ``(N,)`` confidence of each whole-image heatmap peak (before the shape prior).
        heatmap_landmarks: ``(N, 2)`` the last stage's decoded peaks in original pixels (before the shape prior).
        corrected: ``(N,)`` bool, landmarks replaced by the shape model (outliers or weak peaks).
        shape_consistent: ``(N,)`` bool, detections within tolerance of the fitted shape model.
        names: the landmark names.
        spacing_estimated: whether the spacing used for the shape fit was estimated.
        contrast: standard deviation of the image intensities (``[0, 1]`` units).
    """

    landmarks: np.ndarray
    confidence: np.ndarray
    plausibility: float
    peaks: np.ndarray
    heatmap_landmarks: np.ndarray
    corrected: np.ndarray
    shape_consistent: np.ndarray
    names: tuple[str, ...] = field(default=LANDMARK_NAMES)
    spacing_estimated: bool = False
    contrast: float = float("nan")

    def to_dict(self) -> dict:
        """JSON-ready summary, landmarks by name."""
        return {
            "plausibility": float(self.plausibility),
            "spacing_estimated": bool(self.spacing_estimated),
            "landmarks": {
                n: {
                    "xy": [float(v) for v in self.landmarks[i]],
                    "confidence": float(self.confidence[i]),
                    "corrected_by_shape_model": bool(self.corrected[i]),
                }
                for i, n in enumerate(self.names)
            },
        }


def load_network_weights(
    network: torch.nn.Module, checkpoint: str | os.PathLike, key: str | None = "network"
) -> torch.nn.Module:
    """Load a state dict (``weights_only``) into ``network`` and return it in eval mode.

    Args:
        network: the heatmap network.
        checkpoint: a ``.pt`` file holding a state dict, or a dict with the state dict under ``key``.
        key: entry of the checkpoint dict holding the network weights (``None``: the file is the state dict).
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"landmark detector weights {checkpoint} do not exist; train them with configs/landmark_train.json."
        )
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated (Errno 22, EOF), not a checkpoint, or a pickle that is not only weights
        raise ValueError(
            f"{checkpoint}: cannot be read as network weights ({type(error).__name__}: {str(error)[:200]}); expected "
            "a PyTorch state dict saved by the bundle's training (a truncated or corrupt file?)"
        ) from error
    if key is not None and isinstance(state, dict) and key in state:
        state = state[key]
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(f"{checkpoint}: its weights do not fit the configured network ({str(error)[:300]})") from error
    return network.eval()


class LandmarkDetector(Transform):
    """Detect the 16 landmarks in a radiograph (see the module docstring for the steps).

    Args:
        network: heatmap network ``(B, 1, H_in, W_in) -> (B, N, H_in, W_in)``.
        shape_model: statistical shape model; ``None`` disables the shape prior (the peaks are returned).
        input_size: ``(H_in, W_in)`` letterbox size the network was trained at.
        min_confidence: peaks below this are not used by the shape fit and are predicted by the model.
        plausibility_threshold: below it :meth:`__call__` raises :class:`NotAPelvisError`.
        size_range: allowed ratio of the fitted configuration's size (mm) to the shape model's mean size;
            outside it no landmark counts as consistent (a pelvis is not 3 cm or 60 cm wide).
        min_contrast: an image whose intensity standard deviation (in ``[0, 1]`` units) is below this
            has plausibility 0 and is always refused.
        smooth_sigma: Gaussian smoothing (pixels) before the sub-pixel refinement.
        device: where the network runs (default: where its parameters are).
        names: landmark names, in the network's channel order.
        refiner: optional second stage refining each landmark in a patch at a finer resolution
            (:class:`~.refinement.LandmarkRefiner`), followed by the shape prior again.
        activation: the network's output: ``"spatial_softmax"`` (logits, trained by cross-entropy) or
            ``"none"`` (regressed Gaussian heatmaps); see :mod:`.heatmap_decoding`.
        confidence_radius: for ``"spatial_softmax"``, the confidence of a landmark is the probability
            within this many input pixels of it.
        expectation_radius: input pixels of the local-mean decoding of the whole-image heatmaps (0: the
            refined peak); see :func:`~.heatmap_decoding.decode_heatmaps`.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        shape_model: StatisticalShapeModel | None = None,
        input_size: Sequence[int] = (256, 256),
        min_confidence: float = 0.2,
        plausibility_threshold: float = 0.3,
        size_range: Sequence[float] = (0.6, 1.6),
        min_contrast: float = 0.01,
        smooth_sigma: float = 0.0,
        device: str | torch.device | None = None,
        names: Sequence[str] = LANDMARK_NAMES,
        refiner: LandmarkRefiner | None = None,
        activation: str = "spatial_softmax",
        confidence_radius: int = 3,
        expectation_radius: int = 0,
        min_image_size: int = MIN_IMAGE_SIZE,
    ) -> None:
        self.min_image_size = int(min_image_size)
        self.network = network.eval()
        self.expectation_radius = int(expectation_radius)
        self.activation = activation
        self.confidence_radius = int(confidence_radius)
        activate_heatmaps(torch.zeros(1, 3, 3), activation)  # validates the name
        self.shape_model = shape_model
        self.refiner = refiner
        self.letterbox = Letterbox(input_size)
        self.min_confidence = float(min_confidence)
        self.plausibility_threshold = float(plausibility_threshold)
        self.size_range = (float(size_range[0]), float(size_range[1]))
        self.min_contrast = float(min_contrast)
        self.smooth_sigma = float(smooth_sigma)
        self.device = network_device(network, device)
        self.names = tuple(names)
        if shape_model is not None and shape_model.num_points != len(self.names):
            raise ValueError(
                f"the shape model has {shape_model.num_points} points, the detector {len(self.names)} names."
            )

    @torch.no_grad()
    def heatmaps(self, image: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """Activated heatmaps ``(N, H_in, W_in)`` of the letterboxed image and its original -> input matrix."""
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"the detector expects a (1, H, W) radiograph, got shape {tuple(image.shape)}.")
        boxed = self.letterbox(image)
        matrix = boxed.meta["letterbox_matrix"]
        x = boxed.as_tensor()[None].to(self.device)
        maps = activate_heatmaps(self.network(x)[0].float().cpu(), self.activation)
        if maps.shape[0] != len(self.names):
            raise ValueError(f"the network gave {maps.shape[0]} heatmaps, expected {len(self.names)}.")
        return maps, matrix

    def detect(self, image: torch.Tensor, spacing_mm: Sequence[float] | None = None) -> LandmarkDetection:
        """Detect without judging plausibility (never raises :class:`NotAPelvisError`).

        Args:
            image: ``(1, H, W)`` radiograph in ``[0, 1]`` (bone bright), as ``LoadPXR`` gives.
            spacing_mm: ``(row, col)``; default: the image's ``spacing_mm`` meta, else estimated.
        """
        if spacing_mm is None and isinstance(image, MetaTensor):
            spacing_mm = image.meta.get("spacing_mm")
        maps, matrix = self.heatmaps(image)
        coords_in, _ = decode_heatmaps(maps, self.smooth_sigma, self.expectation_radius)
        peak_points = transform_points(np.linalg.inv(matrix), coords_in.numpy())
        peaks_np = self._confidence(maps, coords_in).numpy().astype(np.float64)
        valid = peaks_np >= self.min_confidence
        spacing_estimated = False
        if spacing_mm is None and self.shape_model is not None:
            spacing_mm, spacing_estimated = self._estimate_spacing(peak_points, valid), True
        to_mm = None if spacing_mm is None else spacing_xy(spacing_mm)

        # stage 1: whole-image peaks, shape prior, plausibility
        landmarks, corrected, consistent, fitted = self._shape_prior(peak_points, valid, to_mm)
        raw_points = peak_points
        confidence = self._confidence(maps, torch.as_tensor(transform_points(matrix, landmarks), dtype=torch.float32))
        plausibility = float(np.median(np.clip(peaks_np, 0, 1)) * consistent.mean())

        # stage 2: local refinement of the (corrected) coarse positions, then the shape prior again
        if self.refiner is not None and fitted:
            refined, refined_peaks, own_maps, to_patch = self.refiner(image, landmarks)
            use = self.refiner.mask(self.names)  # the others keep their whole-image estimate
            points = np.where(use[:, None], refined, landmarks)
            valid = np.where(
                use, refined_peaks >= self.min_confidence, ~corrected & (confidence.numpy() >= self.min_confidence)
            )
            raw_points = points
            landmarks, corrected, _, _ = self._shape_prior(points, valid, to_mm)
            patch_points = np.stack([transform_points(m, p) for p, m in zip(landmarks, to_patch)])
            refined_confidence = self.refiner.confidence(own_maps, torch.as_tensor(patch_points, dtype=torch.float32))
            whole_confidence = self._confidence(
                maps, torch.as_tensor(transform_points(matrix, landmarks), dtype=torch.float32)
            )
            confidence = torch.where(torch.as_tensor(use), refined_confidence, whole_confidence)

        # a position the shape model extrapolated may fall outside the film: keep it on the image
        h, w = image.shape[-2:]
        landmarks = np.clip(landmarks, -0.5, [w - 0.5, h - 0.5])
        contrast = float(torch.as_tensor(image).float().std())
        if contrast < self.min_contrast:
            plausibility = 0.0
        return LandmarkDetection(
            landmarks=landmarks.astype(np.float32),
            confidence=confidence.clamp(0, 1).numpy().astype(np.float32),
            plausibility=plausibility,
            peaks=peaks_np.astype(np.float32),
            heatmap_landmarks=raw_points.astype(np.float32),
            corrected=corrected,
            shape_consistent=consistent,
            names=self.names,
            spacing_estimated=spacing_estimated,
            contrast=contrast,
        )

    def _confidence(self, maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return heatmap_confidence(maps, points, self.activation, self.confidence_radius)

    def _shape_prior(self, points: np.ndarray, valid: np.ndarray, to_mm: np.ndarray | None):
        """(landmarks, corrected, shape-consistent, whether the model could be fitted) for pixel ``points``."""
        n = len(points)
        if self.shape_model is None:
            return points.copy(), np.zeros(n, dtype=bool), np.ones(n, dtype=bool), True
        try:
            fit = self.shape_model.fit(points * to_mm, valid)
        except ValueError:  # too few confident peaks, or all at one spot: nothing is consistent
            return points.copy(), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), False
        landmarks = np.where(fit.replaced[:, None], fit.points / to_mm, points)
        size_ratio = fit.scale / self.shape_model.mean_size_mm
        size_ok = self.size_range[0] <= size_ratio <= self.size_range[1]
        consistent = fit.inliers if size_ok else np.zeros(n, dtype=bool)
        return landmarks, fit.replaced.copy(), consistent, True

    def _estimate_spacing(self, points: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
        use = points[valid] if valid.sum() >= 3 else points
        rms = float(np.sqrt(((use - use.mean(0)) ** 2).sum(1).mean()))
        mm = self.shape_model.mean_size_mm / rms if rms > 1.0 else 1.0  # under a pixel: no size to match
        return (mm, mm)

    def __call__(
        self, image: torch.Tensor, spacing_mm: Sequence[float] | None = None, source: str | None = None
    ) -> LandmarkDetection:
        """Detect, and raise :class:`NotAPelvisError` for an implausible image.

        Args:
            image: ``(1, H, W)`` radiograph in ``[0, 1]``.
            spacing_mm: ``(row, col)``; default from the image meta.
            source: name used in the error (default: the image's ``filename_or_obj`` meta).
        """
        if source is None and isinstance(image, MetaTensor):
            source = image.meta.get("filename_or_obj")
        h, w = (int(v) for v in image.shape[-2:])
        if min(h, w) < self.min_image_size:
            raise NotAPelvisError(
                f"{source or 'image'}: does not look like an AP pelvic radiograph: the image is {h} x {w} pixels, "
                f"smaller than {self.min_image_size} x {self.min_image_size}."
            )
        detection = self.detect(image, spacing_mm)
        if not detection.contrast >= self.min_contrast:
            raise NotAPelvisError(
                f"{source or 'image'}: does not look like an AP pelvic radiograph: the image has no contrast "
                f"(intensity standard deviation {detection.contrast:.4f} < {self.min_contrast}); blank or saturated."
            )
        if not detection.plausibility >= self.plausibility_threshold:  # NaN refused too
            consistent = int(detection.shape_consistent.sum())
            raise NotAPelvisError(
                f"{source or 'image'}: does not look like an AP pelvic radiograph: landmark plausibility "
                f"{detection.plausibility:.2f} is below {self.plausibility_threshold:.2f} (median landmark "
                f"heatmap peak {np.median(detection.peaks):.2f}; {consistent}/{len(self.names)} landmarks "
                "consistent with the pelvic shape model)."
            )
        return detection


class DetectLandmarksd(MapTransform):
    """Fill ``landmarks`` from the detector when the data has none (e.g. no annotation file).

    Writes ``landmarks`` ``(N, 2)`` float32 original ``[x, y]`` pixels, ``landmark_confidence`` ``(N,)``,
    ``landmark_corrected`` ``(N,)`` bool (replaced by the shape model), ``landmark_plausibility`` and
    ``landmarks_detected`` (bool) to the data, the same three last ones to
    the image's meta-data, and the full detection (JSON-ready) under ``landmark_detection``. When
    ``landmarks`` is already present (annotated image) and ``overwrite`` is false nothing is detected
    and ``landmarks_detected`` is ``False``.

    With ``check_annotated``, an annotated image is still checked as the detector checks every image (an annotation
    beside a chest film does not make it a pelvis): its size and contrast (:func:`image_problem`, no network), then,
    when the detector's weights exist, its plausibility (the detector runs; its landmarks are not used). Without the
    weights only the first check runs, and one warning says so. Refused images raise :class:`NotAPelvisError`.

    Args:
        keys: the image key (one).
        detector: a :class:`LandmarkDetector`, or a function of no arguments returning one, called the
            first time a detection is needed (so that a workflow whose images are all annotated never
            loads the detector's weights), e.g. ``functools.partial(load_landmark_detector, bundle_root)``.
        landmarks_key: where the landmarks are read / written.
        overwrite: detect even when landmarks are present.
        allow_missing_keys: do not raise if the image key is absent.
        check_annotated: check annotated images too (see above).
        min_image_size: smallest image side for annotated images when the detector is not loaded (else its own).
        min_contrast: lowest contrast for annotated images when the detector is not loaded (else its own).

    Raises:
        NotAPelvisError: the image does not look like an AP pelvic radiograph.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        detector: LandmarkDetector | Callable[[], LandmarkDetector] | None = None,
        landmarks_key: str = "landmarks",
        overwrite: bool = False,
        allow_missing_keys: bool = False,
        check_annotated: bool = False,
        min_image_size: int = MIN_IMAGE_SIZE,
        min_contrast: float = MIN_CONTRAST,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check_annotated = bool(check_annotated)
        self.min_image_size, self.min_contrast = int(min_image_size), float(min_contrast)
        self._unavailable: str | None = None  # why the detector cannot check annotated images
        if detector is None:
            raise ValueError("DetectLandmarksd needs a LandmarkDetector (see configs/landmark_inference.json).")
        if len(self.keys) != 1:
            raise ValueError(f"DetectLandmarksd takes one image key, got {self.keys}.")
        self._detector = detector
        self.landmarks_key = landmarks_key
        self.overwrite = bool(overwrite)

    @property
    def detector(self) -> LandmarkDetector:
        if not isinstance(self._detector, LandmarkDetector):
            self._detector = self._detector()
        return self._detector

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            has_landmarks = d.get(self.landmarks_key) is not None
            if has_landmarks and not self.overwrite:
                d["landmarks_detected"] = False
                if isinstance(image, MetaTensor):
                    image.meta["landmarks_detected"] = False
                if self.check_annotated:
                    self._check_annotated(image)
                continue
            detection = self.detector(image)
            d[self.landmarks_key] = detection.landmarks
            d["landmark_confidence"] = detection.confidence
            d["landmark_corrected"] = np.asarray(detection.corrected, dtype=bool)
            d["landmark_plausibility"] = detection.plausibility
            d["landmarks_detected"] = True
            d["landmark_detection"] = detection.to_dict()
            if isinstance(image, MetaTensor):
                image.meta["landmarks_detected"] = True
                image.meta["landmark_confidence"] = detection.confidence
                image.meta["landmark_plausibility"] = detection.plausibility
        return d

    def _check_annotated(self, image) -> None:
        """Refuse an annotated image that the detector would refuse (see the class docstring)."""
        detector = self._loaded_detector()
        meta = getattr(image, "meta", None) or {}
        name = str(meta.get("filename_or_obj") or "image")
        if detector is None:
            problem = image_problem(image, self.min_image_size, self.min_contrast)
            if problem is not None:
                raise NotAPelvisError(f"{name}: does not look like an AP pelvic radiograph: {problem}.")
            return
        try:
            detector(image, source=name)
        except NotAPelvisError as error:
            raise NotAPelvisError(
                f"{error} (checked although the image has landmarks: they are not used for it)"
            ) from None

    def _loaded_detector(self) -> LandmarkDetector | None:
        """The detector, or None when its weights are not there (warned once)."""
        if self._unavailable is not None:
            return None
        try:
            return self.detector
        except Exception as error:  # the config's instantiation wraps the missing file in its own errors
            cause = root_cause(error, prefer=(FileNotFoundError,))
            if not isinstance(cause, FileNotFoundError):
                raise
            self._unavailable = str(cause)
            logger.warning(
                f"annotated images are checked for size and contrast only, not by the landmark detector: {cause}"
            )
            return None


def load_landmark_detector(
    bundle_root: str | os.PathLike = ".", config_file: str | os.PathLike | None = None, **overrides
) -> LandmarkDetector:
    """The trained detector as ``configs/landmark_inference.json`` defines it (``@landmark_detector``).

    For other workflows (the AASN ``inference.json``, MONAI Label, MONAI Deploy) that need detection
    without merging the detector's config ids into theirs. Called inside a DataLoader worker (the lazy
    detector of ``inference.json`` with ``num_workers`` > 0), it runs the detector on the CPU whatever device
    was asked for: CUDA cannot be initialised in a forked worker.

    Args:
        bundle_root: the bundle folder (holding ``configs/`` and ``models/``).
        config_file: the detector config (default ``<bundle_root>/configs/landmark_inference.json``).
        overrides: config ids to override, e.g. ``device="cpu"`` or ``plausibility_threshold=0.4``.
    """
    from monai.bundle import ConfigParser

    config_file = config_file or os.path.join(bundle_root, "configs", "landmark_inference.json")
    parser = ConfigParser()
    parser.read_config(config_file)
    parser["bundle_root"] = str(bundle_root)
    for key, value in overrides.items():
        parser[key] = value
    if torch.utils.data.get_worker_info() is not None:
        # A DataLoader worker is a forked process, where CUDA cannot be initialised; each worker would also hold
        # its own copy of the weights on the GPU. The detector is small: it runs on the worker's CPU.
        device = torch.device(parser.get_parsed_content("device"))
        if device.type != "cpu":
            logger.warning(
                "The landmark detector runs on the CPU inside DataLoader workers (%s was asked for); "
                "set num_workers to 0 to detect on %s.",
                device,
                device,
            )
            parser["device"] = "cpu"
    return parser.get_parsed_content("landmark_detector")

"""Image formation: attenuation -> detected quanta -> processed 12-bit radiograph.

Linear attenuation coefficients (1/mm) at an effective energy of about 60 keV (pelvis, 75-85 kVp):
soft tissue (muscle/viscera) 0.021, fat 0.018; bone is given as its *excess* over the soft tissue it
displaces: cortical bone 0.036, cancellous bone 0.007 (trabecular texture modulates it). The primary
fluence ``exp(-A)`` gets scatter (a broad blur of the primary, scatter-to-primary ratio with an
anti-scatter grid), detector blur, Poisson quantum noise at a random exposure, the logarithm, a
frequency processing (dynamic-range compression + unsharp masking, as every DR/CR console applies),
and a window into 12 bits (0..4095, bone bright) that puts the soft tissue and dense bone at random
display levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MU_SOFT = 0.021
MU_FAT = 0.018
MU_CORTICAL_EXCESS = 0.036
MU_CANCELLOUS_EXCESS = 0.007
MAX_VALUE = 4095  # 12 bits stored

#: Ranges of the acquisition and processing parameters (uniform).
EXPOSURE_RANGES = {
    # Detected quanta per mm^2 behind the soft tissue of the pelvis (sets the noise level).
    "quanta_per_mm2": (1500.0, 15000.0),
    "scatter_to_primary": (0.2, 0.7),
    "detector_blur_mm": (0.15, 0.45),
    "trabecular_contrast": (0.08, 0.2),
    "range_compression": (0.3, 0.7),
    "unsharp_amount": (0.3, 1.0),
    "gamma": (0.85, 1.2),
    # Display level of the soft tissue and of dense bone (0 = black, 1 = white).
    "soft_tissue_level": (0.22, 0.42),
    "bone_level": (0.82, 0.95),
}


@dataclass(frozen=True)
class Exposure:
    quanta_per_mm2: float = 5000.0
    scatter_to_primary: float = 0.4
    detector_blur_mm: float = 0.3
    trabecular_contrast: float = 0.25
    range_compression: float = 0.5
    unsharp_amount: float = 0.6
    gamma: float = 1.0
    soft_tissue_level: float = 0.32
    bone_level: float = 0.9

    @staticmethod
    def sample(rng: np.random.Generator) -> Exposure:
        vals = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in EXPOSURE_RANGES.items()}
        vals["quanta_per_mm2"] = float(np.exp(rng.uniform(*np.log(EXPOSURE_RANGES["quanta_per_mm2"]))))
        return Exposure(**vals)


def trabecular_texture(shape: tuple[int, int], pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance band-pass noise with structures of about 1-3 mm."""
    white = rng.standard_normal(shape)
    s1 = max(0.8 / pixel_mm, 0.5)
    s2 = max(3.0 / pixel_mm, 1.0)
    band = ndimage.gaussian_filter(white, s1) - ndimage.gaussian_filter(white, s2)
    return band / max(band.std(), 1e-9)


def _lowpass(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Large Gaussian blur computed on a reduced grid (exact enough for sigmas of many pixels)."""
    f = int(max(1, min(8, sigma_px // 4)))
    small = img[: img.shape[0] // f * f, : img.shape[1] // f * f]
    small = small.reshape(small.shape[0] // f, f, small.shape[1] // f, f).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma_px / f, mode="nearest")
    out = ndimage.zoom(small, f, order=1, mode="nearest")
    pad_h, pad_w = img.shape[0] - out.shape[0], img.shape[1] - out.shape[1]
    return np.pad(out, ((0, pad_h), (0, pad_w)), mode="edge")


def expected_counts(
    attenuation: np.ndarray, body_mask: np.ndarray, pixel_mm: float, exposure: Exposure
) -> tuple[np.ndarray, float]:
    """Mean detected quanta per pixel (primary + scatter, detector blur) and the unattenuated quanta ``n0``."""
    primary = np.exp(-attenuation)
    scatter_sigma = 40.0 / pixel_mm
    scatter = exposure.scatter_to_primary * _lowpass(primary, scatter_sigma) * (body_mask.mean() > 0)
    # Scatter comes from the patient: none where the beam misses the body entirely.
    scatter *= _lowpass(body_mask.astype(np.float64), scatter_sigma)
    signal = ndimage.gaussian_filter(primary + scatter, exposure.detector_blur_mm / pixel_mm)
    body_level = np.median(primary[body_mask]) if body_mask.any() else 1.0
    # Quanta per pixel at unattenuated beam such that the body receives quanta_per_mm2.
    n0 = exposure.quanta_per_mm2 * pixel_mm**2 / max(body_level, 1e-6)
    return np.maximum(signal * n0, 0.0), float(n0)


def process_counts(
    counts: np.ndarray, n0: float, body_mask: np.ndarray, bone_mask: np.ndarray, pixel_mm: float, exposure: Exposure
) -> np.ndarray:
    """A console's processing of detected quanta into the displayed radiograph, uint16 in 0..4095."""
    # Light correlation of the noise, as a scintillator's spread gives.
    counts = ndimage.gaussian_filter(np.asarray(counts, dtype=np.float64), 0.5)
    log = -np.log(np.maximum(counts, 0.5) / n0)
    # Frequency processing: compress the large-scale range (soft-tissue thickness), sharpen edges.
    low = _lowpass(log, 30.0 / pixel_mm)
    ref = np.median(log[body_mask]) if body_mask.any() else 0.0
    processed = log - exposure.range_compression * (low - ref) * body_mask_soft(body_mask, pixel_mm)
    processed = processed + exposure.unsharp_amount * (processed - ndimage.gaussian_filter(processed, 3.0 / pixel_mm))
    soft = body_mask & ~bone_mask
    soft_vals = processed[soft] if soft.any() else processed.ravel()
    bone_vals = processed[bone_mask] if bone_mask.any() else processed.ravel()
    v_soft = np.median(soft_vals)
    v_bone = max(np.percentile(bone_vals, 95), v_soft + 1e-3)
    unit = exposure.soft_tissue_level + (processed - v_soft) / (v_bone - v_soft) * (
        exposure.bone_level - exposure.soft_tissue_level
    )
    unit = np.clip(unit, 0.0, 1.0) ** exposure.gamma
    return np.round(unit * MAX_VALUE).astype(np.uint16)


def form_image(
    attenuation: np.ndarray,
    body_mask: np.ndarray,
    bone_mask: np.ndarray,
    pixel_mm: float,
    exposure: Exposure,
    rng: np.random.Generator,
) -> np.ndarray:
    """Processed radiograph, uint16 in 0..4095 (high = more attenuation = displayed bright).

    Args:
        attenuation: line integral of mu per pixel (dimensionless), everything included.
        body_mask: pixels whose ray passes through the patient.
        bone_mask: pixels whose ray passes through bone (the window maps soft tissue and bone to
            the exposure's display levels, as a console's automatic windowing does).
        pixel_mm: detector pixel size (mm).
        exposure: acquisition and processing parameters.
        rng: random generator (quantum noise).
    """
    mean, n0 = expected_counts(attenuation, body_mask, pixel_mm, exposure)
    counts = rng.poisson(mean).astype(np.float64)
    return process_counts(counts, n0, body_mask, bone_mask, pixel_mm, exposure)


def body_mask_soft(body_mask: np.ndarray, pixel_mm: float) -> np.ndarray:
    """The body mask smoothed over ~5 mm so that range compression does not draw a line at the skin."""
    return np.clip(ndimage.gaussian_filter(body_mask.astype(np.float64), 5.0 / pixel_mm), 0.0, 1.0)

"""Pictures written by evaluation and inference: ROC, PR and modified-FROC curves, a Fig. 6-like case
picture (ROI, heatmap, feature distance map), the fracture heatmap overlay on the original radiograph and the
detected landmarks on it.

Images are ``(H, W)`` arrays (row, column); points are ``[x, y]`` = (column, row) pixels, drawn with
matplotlib's ``imshow`` convention where pixel centres sit at integer coordinates, which is the
project's convention too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scripts.reporting.metrics import FROCCurve  # noqa: E402

__all__ = ["plot_roc", "plot_pr", "plot_froc", "plot_case", "save_heatmap_overlay", "save_landmark_overlay"]


def _save(fig, path: str | os.PathLike) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def plot_roc(labels: Sequence[int], scores: Sequence[float], path: str | os.PathLike, auc: float) -> str:
    """Image-level ROC curve (scikit-learn's ``roc_curve``)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"AASN (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC (image level)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(labels: Sequence[int], scores: Sequence[float], path: str | os.PathLike, ap: float) -> str:
    """Image-level precision-recall curve (scikit-learn's ``precision_recall_curve``)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.step(recall, precision, where="post", lw=2, label=f"AASN (AP {ap:.4f})")
    ax.set(xlabel="recall", ylabel="precision", title="PR (image level)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_froc(curve: FROCCurve, path: str | os.PathLike, marks: Sequence[float] = (0.01, 0.1)) -> str:
    """Modified FROC: fracture recall against the mean false-positive area ratio (log scale)."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    fp = np.clip(curve.fp_ratio, 1e-5, 1.0)
    ax.step(fp, curve.recall, where="post", lw=2, label="AASN")
    lines = []
    for m in marks:
        r = curve.recall_at(m)
        ax.axvline(m, ls=":", c="grey", lw=1)
        ax.plot([m], [r], "o", c="C3")
        lines.append(f"recall {100 * r:.1f} % at {100 * m:g} % FP")
    ax.text(
        0.03,
        0.97,
        "\n".join(lines),
        transform=ax.transAxes,
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
    )
    ax.set_xscale("log")
    ax.set(
        xlabel="false-positive area ratio (mean per image)",
        ylabel="fracture recall",
        title="modified FROC",
        xlim=(1e-5, 1.0),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    return _save(fig, path)


def _gray(image: np.ndarray) -> np.ndarray:
    """A displayable single-channel (H, W) image from (C, H, W) or (H, W), scaled to [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[0]
    lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
    return np.clip((image - lo) / max(hi - lo, 1e-8), 0, 1)


def plot_case(
    roi: np.ndarray,
    heatmap: np.ndarray,
    distance: np.ndarray | None,
    fractures: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
    roi_mirrored: np.ndarray | None = None,
) -> str:
    """A picture like the paper's Fig. 6: ROI with the fracture points, heatmap, feature distance map.

    Args:
        roi: the ROI, (C, h, w) or (h, w).
        heatmap: probabilities (h, w).
        distance: the feature distance map d(x) at any resolution (shown stretched to the ROI), or None.
        fractures: (K, 2) fracture points ``[x, y]`` in ROI pixels.
        path: the PNG to write.
        title: the figure title (case name, label, score).
        roi_mirrored: the (aligned) mirrored ROI, shown beside the ROI when given.
    """
    panels = [("ROI", _gray(roi), "gray", None)]
    if roi_mirrored is not None:
        panels.append(("mirrored ROI", _gray(roi_mirrored), "gray", None))
    panels.append(("fracture heatmap", np.asarray(heatmap, dtype=np.float32), "jet", (0.0, 1.0)))
    if distance is not None and np.asarray(distance).size:
        panels.append(("feature distance d(x)", np.asarray(distance, dtype=np.float32), "magma", None))
    h, w = panels[0][1].shape
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6 * h / w + 0.6))
    fractures = np.asarray(fractures, dtype=np.float64).reshape(-1, 2)
    for ax, (name, img, cmap, vrange) in zip(np.atleast_1d(axes), panels):
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # every panel on the ROI's pixel grid
        kw = {"vmin": vrange[0], "vmax": vrange[1]} if vrange else {}
        im = ax.imshow(img, cmap=cmap, extent=extent, interpolation="nearest" if img.shape != (h, w) else None, **kw)
        if fractures.size:
            ax.scatter(fractures[:, 0], fractures[:, 1], s=60, facecolors="none", edgecolors="lime", linewidths=1.5)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
        if cmap != "gray":
            fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def save_heatmap_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    path: str | os.PathLike,
    peaks: np.ndarray | None = None,
    title: str = "",
    threshold: float | None = None,
) -> str:
    """The radiograph with the heatmap on top (transparent where low) and the peaks marked.

    Args:
        image: the original image, (1, H, W) or (H, W).
        heatmap: probabilities on the same grid, (H, W).
        path: the PNG to write.
        peaks: (P, 2) ``[x, y]`` original pixels to mark.
        title: caption (probability and decision).
        threshold: heatmap values below half of it are fully transparent.
    """
    gray = _gray(image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    h, w = gray.shape
    # The figure is ~660 px wide: box-average larger images first (matplotlib's per-pixel alpha resampling of a
    # 5-megapixel radiograph costs seconds); extent keeps the axes in original pixels for the peaks.
    f = max(1, -(-max(h, w) // 800))
    if f > 1:
        hc, wc = h // f * f, w // f * f
        gray = gray[:hc, :wc].reshape(hc // f, f, wc // f, f).mean(axis=(1, 3))
        heatmap = heatmap[:hc, :wc].reshape(hc // f, f, wc // f, f).mean(axis=(1, 3))
    extent = (-0.5, (gray.shape[1] * f) - 0.5, (gray.shape[0] * f) - 0.5, -0.5)
    fig, ax = plt.subplots(figsize=(6, 6 * h / w + 0.4))
    ax.imshow(gray, cmap="gray", extent=extent)
    floor = 0.5 * threshold if threshold is not None else 0.1
    alpha = np.clip((heatmap - floor) / max(1.0 - floor, 1e-6), 0, 1) * 0.6
    ax.imshow(heatmap, cmap="jet", vmin=0, vmax=1, alpha=alpha, extent=extent)
    if peaks is not None and len(peaks):
        peaks = np.asarray(peaks).reshape(-1, 2)
        ax.scatter(peaks[:, 0], peaks[:, 1], marker="+", s=120, c="white", linewidths=1.5)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return _save(fig, path)


def save_landmark_overlay(image: np.ndarray, detection, path: str | os.PathLike) -> str:
    """The radiograph with the detected landmarks (red: corrected by the shape model) and their names.

    Args:
        image: the original image, (1, H, W) or (H, W), in [0, 1].
        detection: a :class:`~scripts.landmarks.detector.LandmarkDetection` (``landmarks``, ``names``,
            ``corrected``, ``plausibility``).
        path: the PNG to write.
    """
    gray = _gray(image)
    h, w = gray.shape
    fig = plt.figure(figsize=(6, 6 * h / w), dpi=120)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
    colours = np.where(detection.corrected, "red", "lime")
    ax.scatter(
        detection.landmarks[:, 0], detection.landmarks[:, 1], s=14, c=list(colours), edgecolors="black", linewidths=0.5
    )
    for (x, y), name in zip(detection.landmarks, detection.names):
        ax.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=5, color="yellow")
    ax.set_axis_off()
    ax.text(4, 4, f"plausibility {detection.plausibility:.2f}", color="cyan", fontsize=7, va="top")
    fig.savefig(path)
    plt.close(fig)
    return str(path)

"""Pictures written by evaluation and inference: ROC, PR and modified-FROC curves, a Fig. 6-like case
picture (ROI, heatmap, feature distance map), the fracture overlay on the original radiograph (one picture for the
bundle's ``overlay.png`` and the Deploy app's Secondary Capture) and the detected landmarks on it.

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

__all__ = [
    "NOT_FOR_DIAGNOSIS", "banner_height", "fracture_caption", "fracture_overlay", "plot_case", "plot_froc", "plot_pr",
    "plot_roc", "render_heatmap_overlay", "save_fracture_overlay", "save_landmark_overlay",
]


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


#: The warning burned into every fracture overlay (the bundle's ``overlay.png``, the Deploy app's Secondary Capture).
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
#: Banner colours (RGB): yellow text on black.
BANNER_BACKGROUND = (0, 0, 0)
BANNER_FOREGROUND = (255, 255, 0)


def banner_height(rows: int) -> int:
    """Height in pixels of the caption banner drawn over the top rows of an overlay with ``rows`` rows."""
    return max(24, rows // 12)


def _font_fitting(draw, text: str, width: int, height: int):
    """The largest default font, at most ``height`` pixels tall, in which ``text`` fits ``width`` pixels."""
    from PIL import ImageFont

    size = max(6, int(height * 0.8))
    font = ImageFont.load_default(size=size)
    length = draw.textlength(text, font=font)
    if length > width:
        size = max(6, int(size * width / length))
        font = ImageFont.load_default(size=size)
    return font


def render_heatmap_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    peaks_xy=(),
    caption_lines: Sequence[str] = (),
    max_alpha: float = 0.6,
) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` picture of the radiograph on its own pixel grid with the heatmap, numbered peaks and a
    caption banner over the top rows.

    ``rgb = (1 - a) * grey + a * jet(heatmap)`` with ``a = max_alpha * heatmap``: pixels where the heatmap is 0 keep
    the radiograph's grey value exactly. Peaks are circled and numbered in their order (strongest first).

    Args:
        image: the radiograph in ``[0, 1]``, bone bright, ``(H, W)`` or ``(1, H, W)``.
        heatmap: probabilities in ``[0, 1]`` on the same grid, ``(H, W)`` or ``(1, H, W)``.
        peaks_xy: ``(P, 2)`` peaks ``[x, y]`` (origin at the top-left pixel's centre).
        caption_lines: the banner's lines (no banner when empty).
        max_alpha: opacity of the colour where the heatmap is 1.
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    image = np.asarray(image, dtype=np.float32)
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    image = image[0] if image.ndim == 3 and image.shape[0] == 1 else image
    heatmap = heatmap[0] if heatmap.ndim == 3 and heatmap.shape[0] == 1 else heatmap
    if image.ndim != 2 or heatmap.shape != image.shape:
        raise ValueError(
            f"render_heatmap_overlay: expected a (H, W) image and a heatmap of the same shape, got {image.shape} and "
            f"{heatmap.shape}."
        )
    grey = np.clip(image, 0.0, 1.0)
    rgb = np.repeat(np.rint(grey * 255.0).astype(np.uint8)[..., None], 3, axis=-1)
    rows_on, cols_on = np.nonzero(heatmap.any(axis=1))[0], np.nonzero(heatmap.any(axis=0))[0]
    if len(rows_on):  # the blend only where the heatmap is not 0 (the ROI's footprint): the rest stays grey
        box = np.s_[rows_on[0] : rows_on[-1] + 1, cols_on[0] : cols_on[-1] + 1]
        alpha = (max_alpha * heatmap[box])[..., None]
        colour = colormaps["jet"](heatmap[box])[..., :3].astype(np.float32)
        rgb[box] = np.rint(((1.0 - alpha) * grey[box][..., None] + alpha * colour) * 255.0).astype(np.uint8)
    picture = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(picture)
    rows, cols = image.shape
    radius = max(4, min(rows, cols) // 40)
    font_peak = ImageFont.load_default(size=max(10, 2 * radius))
    for index, (x, y) in enumerate(np.asarray(peaks_xy, dtype=np.float64).reshape(-1, 2), start=1):
        box = (x - radius, y - radius, x + radius, y + radius)
        draw.ellipse(box, outline=(255, 255, 255), width=max(1, radius // 4))
        draw.text((x + radius + 2, y - radius), str(index), fill=(255, 255, 255), font=font_peak)
    lines = [line for line in caption_lines if line]
    if lines:
        height = banner_height(rows)
        draw.rectangle((0, 0, cols - 1, height - 1), fill=BANNER_BACKGROUND)
        margin = max(2, height // 8)
        for index, line in enumerate(lines):
            font = _font_fitting(draw, line, cols - 2 * margin, (height - 2 * margin) // len(lines))
            centre_y = margin + (index + 0.5) * (height - 2 * margin) / len(lines)
            draw.text((margin, centre_y), line, fill=BANNER_FOREGROUND, font=font, anchor="lm")
    return np.asarray(picture)


def fracture_caption(result: dict) -> str:
    """The overlay's caption of a fracture result: probability and decision at the operating threshold."""
    positive = "POSITIVE" if result["positive"] else "negative"
    return (
        f"AASN fracture probability {float(result['fracture_probability']):.3f} "
        f"({positive} at {float(result['threshold']):g})"
    )


def fracture_overlay(image: np.ndarray, heatmap: np.ndarray, result: dict) -> np.ndarray:
    """The overlay of one image's fracture result: its heatmap on the radiograph, its peaks, and a banner with
    :data:`NOT_FOR_DIAGNOSIS` and :func:`fracture_caption` (the bundle's ``overlay.png`` and the Deploy app's
    Secondary Capture are this picture).

    Args:
        image: the radiograph in ``[0, 1]``, ``(H, W)`` or ``(1, H, W)``.
        heatmap: the fracture heatmap on the same grid.
        result: the image's :func:`~scripts.reporting.fracture_result.fracture_result`.
    """
    peaks = np.array([[p["x"], p["y"]] for p in result.get("peaks", [])], dtype=np.float64).reshape(-1, 2)
    return render_heatmap_overlay(image, heatmap, peaks, [NOT_FOR_DIAGNOSIS, fracture_caption(result)])


def save_fracture_overlay(image: np.ndarray, heatmap: np.ndarray, result: dict, path: str | os.PathLike) -> str:
    """Write :func:`fracture_overlay` as a PNG (fast compression: the picture has the radiograph's size)."""
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(fracture_overlay(image, heatmap, result), mode="RGB").save(path, compress_level=1)
    return str(path)


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

"""Pictures written by evaluation and inference: ROC, PR and modified-FROC curves, a Fig. 6-like case
picture (ROI, heatmap, feature distance map), the fracture overlay on the original radiograph (one picture for the
bundle's ``overlay.png`` and the Deploy app's Secondary Capture) and the detected landmarks on it.

Images are ``(H, W)`` arrays (row, column); points are ``[x, y]`` = (column, row) pixels, drawn with
matplotlib's ``imshow`` convention where pixel centres sit at integer coordinates, which is the
project's convention too.

The fracture overlay is drawn with numpy and PIL only (matplotlib's ``jet`` as a 256-entry table,
:data:`JET_LUT`): inference builds no figure, and this module imports pyplot only where evaluation draws its curves,
case pictures and the landmark picture.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scripts.reporting.metrics import FROCCurve

__all__ = [
    "JET_LUT",
    "NOT_FOR_DIAGNOSIS",
    "banner_height",
    "fracture_caption",
    "fracture_overlay",
    "heatmap_footprint",
    "jet_colours",
    "overlay_reduction",
    "plot_case",
    "plot_froc",
    "plot_pr",
    "plot_roc",
    "render_heatmap_overlay",
    "save_fracture_overlay",
    "save_landmark_overlay",
    "write_png",
]


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only, never a window), imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> str:
    plt = _pyplot()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def plot_roc(labels: Sequence[int], scores: Sequence[float], path: str | os.PathLike, auc: float) -> str:
    """Image-level ROC curve (scikit-learn's ``roc_curve``)."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
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

    plt = _pyplot()
    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.step(recall, precision, where="post", lw=2, label=f"AASN (AP {ap:.4f})")
    ax.set(xlabel="recall", ylabel="precision", title="PR (image level)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_froc(curve: FROCCurve, path: str | os.PathLike, marks: Sequence[float] = (0.01, 0.1)) -> str:
    """Modified FROC: fracture recall against the mean false-positive area ratio (log scale)."""
    plt = _pyplot()
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
    plt = _pyplot()
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

#: matplotlib's ``jet`` segment data (``matplotlib._cm._jet_data``): position, value per colour channel.
_JET_SEGMENTS = (
    ((0.00, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.00, 0.5)),  # red
    ((0.000, 0.0), (0.125, 0.0), (0.375, 1.0), (0.640, 1.0), (0.910, 0.0), (1.000, 0.0)),  # green
    ((0.00, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.00, 0.0)),  # blue
)


def _jet_lut(levels: int = 256) -> np.ndarray:
    x = np.linspace(0.0, 1.0, levels)
    channels = [np.interp(x, [p for p, _ in seg], [v for _, v in seg]) for seg in _JET_SEGMENTS]
    return np.stack(channels, axis=1).astype(np.float32)


#: ``jet`` as matplotlib draws it: 256 RGB colours in [0, 1], float32 (tested equal to ``colormaps["jet"]``).
JET_LUT = _jet_lut()


def jet_colours(values: np.ndarray) -> np.ndarray:
    """RGB float32 ``(..., 3)`` of values in ``[0, 1]`` by :data:`JET_LUT`, indexed as matplotlib's colormaps index
    (``int(v * 256)``, 1.0 in the last entry)."""
    scaled = np.asarray(values, dtype=np.float32) * np.float32(len(JET_LUT))
    index = np.clip(scaled, 0, len(JET_LUT) - 1).astype(np.intp)
    return JET_LUT[index]


def banner_height(rows: int) -> int:
    """Height in pixels of the caption banner drawn over the top rows of an overlay with ``rows`` rows."""
    return max(24, rows // 12)


def overlay_reduction(shape: Sequence[int], max_size: int | None) -> int:
    """The integer factor ``f`` by which an overlay of ``shape`` ``(H, W)`` is reduced so that its longer side is at
    most ``max_size`` pixels (1: drawn at full size; ``max_size`` None or 0: never reduced).

    The reduced picture has ``ceil(H / f) x ceil(W / f)`` pixels, each the mean of an ``f x f`` block (the last row
    and column of blocks may be partial), so a point ``[x, y]`` of the radiograph lies at
    ``[(x + 0.5) / f - 0.5, (y + 0.5) / f - 0.5]`` in the picture (pixel centres at integer coordinates).
    """
    if not max_size:
        return 1
    if max_size < 1:
        raise ValueError(f"overlay max_size must be a positive number of pixels or None, got {max_size}")
    return max(1, math.ceil(max(int(s) for s in shape) / int(max_size)))


def heatmap_footprint(heatmap: np.ndarray) -> tuple[slice, slice] | None:
    """The smallest ``(rows, cols)`` box holding every non-zero value of a ``(H, W)`` heatmap (None when all zero):
    the ROI's footprint on the radiograph, outside which the overlay is the grey radiograph and the NIfTI holds 0."""
    rows_on = np.flatnonzero(heatmap.any(axis=1))
    if not len(rows_on):
        return None
    rows = slice(int(rows_on[0]), int(rows_on[-1]) + 1)
    cols_on = np.flatnonzero(heatmap[rows].any(axis=0))  # the columns searched in the non-zero rows only
    return rows, slice(int(cols_on[0]), int(cols_on[-1]) + 1)


def _block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """``(h, w)`` float32 -> ``(ceil(h / f), ceil(w / f))``: the mean of each ``f x f`` block (partial blocks at the
    end: the mean of their pixels). Float32 sums, rows then columns, over views of the array (no copy of it, no
    float64); the array itself when ``f`` is 1."""
    array = np.asarray(array, dtype=np.float32)
    if factor == 1:
        return array
    rows, cols = array.shape
    out_rows, out_cols = -(-rows // factor), -(-cols // factor)
    full_rows, full_cols = rows // factor, cols // factor  # whole blocks
    row_sums = np.empty((out_rows, cols), dtype=np.float32)
    array[: full_rows * factor].reshape(full_rows, factor, cols).sum(axis=1, out=row_sums[:full_rows])
    if out_rows > full_rows:
        array[full_rows * factor :].sum(axis=0, out=row_sums[full_rows])
    sums = np.empty((out_rows, out_cols), dtype=np.float32)
    np.copyto(sums[:, :full_cols], row_sums[:, 0 : full_cols * factor : factor])
    for offset in range(1, factor):
        sums[:, :full_cols] += row_sums[:, offset : full_cols * factor : factor]
    if out_cols > full_cols:
        row_sums[:, full_cols * factor :].sum(axis=1, out=sums[:, full_cols])
    last_rows, last_cols = rows - (out_rows - 1) * factor, cols - (out_cols - 1) * factor  # the last blocks' sizes
    sums[:-1, :-1] /= np.float32(factor * factor)  # each block's sum over its pixel count
    sums[:-1, -1] /= np.float32(factor * last_cols)
    sums[-1, :-1] /= np.float32(last_rows * factor)
    sums[-1, -1] /= np.float32(last_rows * last_cols)
    return sums


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
    max_size: int | None = None,
    footprint: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """RGB uint8 picture of the radiograph with the heatmap, numbered peaks and a caption banner over the top rows,
    on the radiograph's pixel grid (``(H, W, 3)``), or reduced by the integer factor of :func:`overlay_reduction` when
    ``max_size`` bounds its longer side.

    ``rgb = (1 - a) * grey + a * jet(heatmap)`` with ``a = max_alpha * heatmap``: pixels where the heatmap is 0 keep
    the radiograph's grey value exactly. Peaks are circled and numbered in their order (strongest first). A reduced
    picture is drawn from the block means of the radiograph and of the heatmap, its peaks moved to
    ``(x + 0.5) / f - 0.5`` and its circles, numbers and banner sized for the reduced picture. Only numpy and PIL
    draw it (the colours: :data:`JET_LUT`).

    Args:
        image: the radiograph in ``[0, 1]``, bone bright, ``(H, W)`` or ``(1, H, W)``.
        heatmap: probabilities in ``[0, 1]`` on the same grid, ``(H, W)`` or ``(1, H, W)``.
        peaks_xy: ``(P, 2)`` peaks ``[x, y]`` (origin at the top-left pixel's centre).
        caption_lines: the banner's lines (no banner when empty).
        max_alpha: opacity of the colour where the heatmap is 1.
        max_size: the longest side of the picture in pixels (None: the radiograph's size).
        footprint: the heatmap's non-zero box if already known (:func:`heatmap_footprint`; found here when None).
    """
    from PIL import Image, ImageDraw, ImageFont

    image = np.asarray(image, dtype=np.float32)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    image = image[0] if image.ndim == 3 and image.shape[0] == 1 else image
    heatmap = heatmap[0] if heatmap.ndim == 3 and heatmap.shape[0] == 1 else heatmap
    if image.ndim != 2 or heatmap.shape != image.shape:
        raise ValueError(
            f"render_heatmap_overlay: expected a (H, W) image and a heatmap of the same shape, got {image.shape} and "
            f"{heatmap.shape}."
        )
    factor = overlay_reduction(image.shape, max_size)
    grey = _block_mean(image, factor)
    grey = np.clip(grey, 0.0, 1.0, out=grey if grey is not image else None)  # a reduced copy is clipped in place
    levels = np.multiply(grey, np.float32(255.0))
    picture = Image.fromarray(np.rint(levels, out=levels).astype(np.uint8), mode="L").convert("RGB")
    footprint = heatmap_footprint(heatmap) if footprint is None else footprint
    if footprint is not None:  # the blend only over the heatmap's footprint (the ROI's): the rest stays grey
        rows, cols = footprint
        # the footprint grown to whole blocks, so that its block means are those of the whole picture's blocks
        r0, c0 = rows.start // factor, cols.start // factor
        r1, c1 = -(-rows.stop // factor), -(-cols.stop // factor)
        block = np.clip(heatmap[r0 * factor : r1 * factor, c0 * factor : c1 * factor], 0.0, 1.0)
        values = _block_mean(block, factor)
        alpha = (max_alpha * values)[..., None]
        blend = np.rint(((1.0 - alpha) * grey[r0:r1, c0:c1][..., None] + alpha * jet_colours(values)) * 255.0)
        picture.paste(Image.fromarray(blend.astype(np.uint8), mode="RGB"), (c0, r0))
    draw = ImageDraw.Draw(picture)
    rows, cols = grey.shape
    radius = max(4, min(rows, cols) // 40)
    font_peak = ImageFont.load_default(size=max(10, 2 * radius))
    peaks = (np.asarray(peaks_xy, dtype=np.float64).reshape(-1, 2) + 0.5) / factor - 0.5
    for index, (x, y) in enumerate(peaks, start=1):
        circle = (x - radius, y - radius, x + radius, y + radius)
        draw.ellipse(circle, outline=(255, 255, 255), width=max(1, radius // 4))
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


def fracture_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    result: dict,
    max_size: int | None = None,
    footprint: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """The overlay of one image's fracture result: its heatmap on the radiograph, its peaks, and a banner with
    :data:`NOT_FOR_DIAGNOSIS` and :func:`fracture_caption` (the bundle's ``overlay.png`` and the Deploy app's
    Secondary Capture are this picture; the bundle's writer bounds its size, the Secondary Capture keeps the
    radiograph's).

    Args:
        image: the radiograph in ``[0, 1]``, ``(H, W)`` or ``(1, H, W)``.
        heatmap: the fracture heatmap on the same grid.
        result: the image's :func:`~scripts.reporting.fracture_result.fracture_result`.
        max_size: the longest side of the picture in pixels (None: the radiograph's size); see
            :func:`overlay_reduction`.
        footprint: the heatmap's non-zero box if already known (:func:`heatmap_footprint`).
    """
    peaks = np.array([[p["x"], p["y"]] for p in result.get("peaks", [])], dtype=np.float64).reshape(-1, 2)
    return render_heatmap_overlay(
        image, heatmap, peaks, [NOT_FOR_DIAGNOSIS, fracture_caption(result)], max_size=max_size, footprint=footprint
    )


def write_png(picture: np.ndarray, path: str | os.PathLike, compress_level: int = 1) -> str:
    """Write a ``(H, W, 3)`` uint8 RGB picture as a PNG (8-bit truecolour, not interlaced; IHDR, one IDAT, IEND, as
    PIL writes it), every row with PNG's *Sub* filter (each byte minus the one a pixel to its left, computed by numpy)
    and one zlib stream at ``compress_level``.

    PIL's encoder tries all five filters on every row and compresses in small pieces, which at level 1 costs as
    much as the compression itself; the pixels read back are the same and the file about as large.

    Args:
        picture: ``(H, W, 3)`` uint8.
        path: the PNG file.
        compress_level: zlib level (0-9; 1, fast: the file is larger, the pixels the same).
    """
    import struct
    import zlib

    picture = np.asarray(picture)
    if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[2] != 3 or not picture.size:
        raise ValueError(
            f"write_png: expected a non-empty (H, W, 3) uint8 picture, got {picture.dtype} {picture.shape}."
        )
    rows, cols = picture.shape[:2]
    flat = np.ascontiguousarray(picture).reshape(rows, 3 * cols)
    filtered = np.empty((rows, 1 + 3 * cols), dtype=np.uint8)
    filtered[:, 0] = 1  # filter type 1, Sub
    filtered[:, 1:4] = flat[:, :3]
    np.subtract(flat[:, 3:], flat[:, :-3], out=filtered[:, 4:])  # modulo 256, as PNG's filters are
    data = zlib.compress(filtered, int(compress_level))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        # 8 bits per sample, RGB, deflate, adaptive filtering (the method; each row names its filter), no interlace
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", data))
        f.write(chunk(b"IEND", b""))
    return str(path)


def save_fracture_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    result: dict,
    path: str | os.PathLike,
    max_size: int | None = None,
    compress_level: int = 1,
    footprint: tuple[slice, slice] | None = None,
) -> str:
    """Write :func:`fracture_overlay` as a PNG (:func:`write_png`).

    Args:
        image, heatmap, result, max_size, footprint: as :func:`fracture_overlay`.
        path: the PNG file.
        compress_level: zlib level of the PNG (0-9; 1, fast: the file is larger, the pixels the same).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    picture = fracture_overlay(image, heatmap, result, max_size=max_size, footprint=footprint)
    return write_png(picture, path, compress_level)


def save_landmark_overlay(image: np.ndarray, detection, path: str | os.PathLike) -> str:
    """The radiograph with the detected landmarks (red: corrected by the shape model) and their names.

    Args:
        image: the original image, (1, H, W) or (H, W), in [0, 1].
        detection: a :class:`~scripts.landmarks.detector.LandmarkDetection` (``landmarks``, ``names``,
            ``corrected``, ``plausibility``).
        path: the PNG to write.
    """
    plt = _pyplot()
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

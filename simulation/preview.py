"""Contact sheet of a simulated dataset: thumbnails with landmarks and fracture points drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw

from custom_transforms.conventions import LANDMARK_NAMES

#: Landmark colours: patient right red, left green, midline yellow; fractures drawn as cyan rings.
COLOURS = {"r": (255, 70, 70), "l": (70, 255, 70), "m": (255, 230, 0)}


def _read_display(path: Path) -> np.ndarray:
    """Pixels as displayed (bone bright), scaled to 0..1."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float64)
    top = float(2 ** int(ds.get("BitsStored", 16)) - 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = top - arr
    return np.clip(arr / top, 0.0, 1.0)


def draw_annotated(image: np.ndarray, annotation: dict, tile: int, label: str = "") -> Image.Image:
    """A thumbnail (longest side ``tile``) with the annotation's landmarks and fractures drawn."""
    h, w = image.shape
    scale = tile / max(h, w)
    thumb = Image.fromarray((image * 255).astype(np.uint8)).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    im = thumb.convert("RGB")
    d = ImageDraw.Draw(im)
    r = max(2, tile // 120)
    for name in LANDMARK_NAMES:
        x, y = annotation["landmarks"][name]
        # Pixel-centre convention: pixel centre c maps to (c + 0.5) * scale - 0.5 in the thumbnail.
        tx, ty = (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5
        col = COLOURS[name[-1]] if name[-2:] in ("_r", "_l") else COLOURS["m"]
        d.ellipse([tx - r, ty - r, tx + r, ty + r], fill=col)
    for x, y in annotation.get("fractures", []):
        tx, ty = (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5
        rr = 4 * r
        d.ellipse([tx - rr, ty - rr, tx + rr, ty + rr], outline=(0, 220, 255), width=max(1, r // 2 + 1))
    if label:
        d.text((4, 2), label, fill=(255, 255, 0))
    return im


def contact_sheet(dataset_dir: str | Path, out: str | Path, columns: int = 6, tile: int = 320, limit: int | None = 36) -> Path:
    """Write a contact sheet PNG of the first ``limit`` images of a dataset folder.

    Raises:
        FileNotFoundError: the folder has no ``datalist.json``.
    """
    dataset_dir = Path(dataset_dir)
    dl_path = dataset_dir / "datalist.json"
    if not dl_path.is_file():
        raise FileNotFoundError(f"{dl_path}: not found; run 'python -m simulation generate' first")
    datalist = json.loads(dl_path.read_text())
    items = datalist["training"][: limit or None]
    rows = (len(items) + columns - 1) // columns
    footer = 28 if datalist.get("attribution") else 0
    sheet = Image.new("RGB", (columns * tile, rows * tile + footer), (0, 0, 0))
    for k, item in enumerate(items):
        ann = json.loads((dataset_dir / item["annotation"]).read_text())
        img = _read_display(dataset_dir / item["image"])
        kinds = ",".join(f"{f['kind'][0]}:{f['site']}" for f in ann.get("simulation", {}).get("fractures", []))
        label = f"{item['subject']} f{item['fold']} {'FX ' + kinds if item['label'] else 'neg'}"
        sheet.paste(draw_annotated(img, ann, tile, label), ((k % columns) * tile, (k // columns) * tile))
    if footer:
        d = ImageDraw.Draw(sheet)
        d.text((4, rows * tile + 2), "Simulated from: " + datalist["attribution"][:230], fill=(200, 200, 200))
        d.text((4, rows * tile + 14), datalist["attribution"][230:460], fill=(200, 200, 200))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out

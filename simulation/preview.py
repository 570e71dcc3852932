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
    thumb = Image.fromarray((image * 255).astype(np.uint8)).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS
    )
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


def contact_sheet(
    dataset_dir: str | Path, out: str | Path, columns: int = 6, tile: int = 320, limit: int | None = 36
) -> Path:
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


def landmark_sheet(anatomies, out: str | Path, size: int = 560, columns: int = 3) -> Path:
    """Clean bone-only AP projections (neutral pose, no soft tissue or noise) with the 16 landmarks labelled.

    Args:
        anatomies: :class:`~simulation.anatomy.Anatomy` objects to draw.
        out: PNG file.
        size: tile size in pixels.
        columns: tiles per row.
    """
    from .camera import Pose, apply
    from .femur import LegPose, femur_meshes
    from .projector import path_length

    tiles = []
    pose = Pose()
    for anatomy in anatomies:
        cam = pose.camera((size, size), (370.0 / size, 370.0 / size))
        m = pose.matrix(anatomy.centre + np.array([0.0, 0.0, -15.0]))
        sec = cam.secant()
        img = np.zeros((size, size))
        for bone in anatomy.bones.values():
            img += 1.6 * path_length(bone.outer, m, cam, sec) - 1.2 * path_length(bone.inner, m, cam, sec)
        for side in ("r", "l"):
            o, i = femur_meshes(anatomy.acetabulum_centre(side), anatomy.acetabulum_radius[side], side, LegPose())
            img += 0.6 * (1.6 * path_length(o, m, cam, sec) - 1.2 * path_length(i, m, cam, sec))
        img = np.clip(img / np.percentile(img, 99.7), 0, 1) ** 0.8
        im = Image.fromarray((img * 255).astype(np.uint8)).convert("RGB")
        d = ImageDraw.Draw(im)
        uv = cam.project(apply(m, anatomy.landmarks))
        for name, (x, y) in zip(LANDMARK_NAMES, uv):
            col = COLOURS[name[-1]] if name[-2:] in ("_r", "_l") else COLOURS["m"]
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=col)
            short = (
                name.replace("obturator_", "obt_").replace("symphysis_", "sym_").replace("acetabulum_center", "acetab")
            )
            short = (
                short.replace("ischial_tuberosity", "isch_tub")
                .replace("pubic_tubercle", "pub_tub")
                .replace("sciatic_notch", "sciatic")
            )
            tx = x - 6 - 6 * len(short) if name.endswith("_r") else x + 6
            d.text((tx, y - 6), short, fill=col)
        d.text((4, 4), f"{anatomy.source} {anatomy.subject}", fill=(255, 255, 255))
        tiles.append(im)
    rows = (len(tiles) + columns - 1) // columns
    attribution = next((a.attribution for a in anatomies if a.attribution), None)
    footer = 16 if attribution else 0
    sheet = Image.new("RGB", (columns * size, rows * size + footer))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % columns) * size, (k // columns) * size))
    if attribution:
        ImageDraw.Draw(sheet).text((4, rows * size + 2), attribution[:260], fill=(200, 200, 200))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out

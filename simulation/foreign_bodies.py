"""Foreign bodies on trauma films: buttons, ECG electrodes and leads, pelvic binder edges, catheters.

They lie on or outside the patient, so they are drawn directly on the detector as extra attenuation
(line integral of mu, dimensionless), antialiased by drawing at twice the resolution. Each kind
appears at random with its own probability; they make the image asymmetric without any fracture,
which is what the Siamese comparison must learn to ignore.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

#: Probability that an image shows each kind of foreign body.
FOREIGN_BODY_PROBABILITY = {"buttons": 0.25, "ecg": 0.25, "binder": 0.12, "catheter": 0.2}


class _Canvas:
    def __init__(self, shape: tuple[int, int], factor: int = 2):
        self.h, self.w = shape
        self.f = factor
        self.total = np.zeros(shape, dtype=np.float64)

    def layer(self):
        img = Image.new("L", (self.w * self.f, self.h * self.f), 0)
        return img, ImageDraw.Draw(img)

    def add(self, img: Image.Image, attenuation: float):
        a = np.asarray(img, dtype=np.float64) / 255.0
        a = a.reshape(self.h, self.f, self.w, self.f).mean(axis=(1, 3))
        self.total += attenuation * a

    def s(self, *xy):
        return [v * self.f for v in xy]


def _curve(rng, start, end, n=40, wiggle=0.15):
    """A smooth random curve from start to end (pixels)."""
    t = np.linspace(0, 1, n)
    start, end = np.asarray(start, float), np.asarray(end, float)
    length = np.linalg.norm(end - start)
    normal = np.array([-(end - start)[1], (end - start)[0]]) / max(length, 1e-6)
    bend = sum(rng.normal(0, wiggle) * np.sin((k + 1) * np.pi * t) for k in range(3))
    return start[None] + t[:, None] * (end - start)[None] + (bend * length)[:, None] * normal[None]


def foreign_bodies(
    shape: tuple[int, int], pixel_mm: float, region: dict, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Attenuation map (line integral of mu) of random foreign bodies, and the kinds drawn.

    Args:
        shape: detector (H, W).
        pixel_mm: detector pixel size (mm).
        region: pixel positions ``"midline_x"``, ``"symphysis_y"``, ``"crest_y"``, ``"half_width_px"``,
            ``"trochanter_y"``.
        rng: random generator.
    """
    canvas = _Canvas(shape)
    h, w = shape
    mm = 1.0 / pixel_mm
    mx, sy, cy, hw = region["midline_x"], region["symphysis_y"], region["crest_y"], region["half_width_px"]
    kinds: list[str] = []
    if rng.uniform() < FOREIGN_BODY_PROBABILITY["buttons"]:
        kinds.append("buttons")
        img, d = canvas.layer()
        for _ in range(rng.integers(1, 5)):
            x = mx + rng.uniform(-1.0, 1.0) * hw
            y = rng.uniform(cy, sy + 0.3 * (sy - cy))
            r = rng.uniform(4, 9) * mm
            d.ellipse(canvas.s(x - r, y - r, x + r, y + r), fill=255)
            for k in range(rng.choice([0, 2, 4])):  # sewing holes
                a = k * np.pi / 2 + 0.6
                hx, hy, hr = x + 0.35 * r * np.cos(a), y + 0.35 * r * np.sin(a), 0.15 * r
                d.ellipse(canvas.s(hx - hr, hy - hr, hx + hr, hy + hr), fill=0)
        canvas.add(img, rng.uniform(0.3, 1.2))
    if rng.uniform() < FOREIGN_BODY_PROBABILITY["ecg"]:
        kinds.append("ecg")
        img_pad, dp = canvas.layer()
        img_snap, ds = canvas.layer()
        img_wire, dw = canvas.layer()
        for _ in range(rng.integers(1, 3)):
            x = rng.uniform(0.05, 0.95) * w
            y = rng.uniform(0.0, 0.45) * h
            rp, rs = rng.uniform(12, 18) * mm, rng.uniform(2.5, 4) * mm
            dp.ellipse(canvas.s(x - rp, y - rp, x + rp, y + rp), fill=255)
            ds.ellipse(canvas.s(x - rs, y - rs, x + rs, y + rs), fill=255)
            end = (rng.choice([-0.05, 1.05]) * w, rng.uniform(-0.1, 0.6) * h)
            pts = _curve(rng, (x, y), end)
            dw.line([tuple(p) for p in (pts * canvas.f)], fill=255, width=max(1, int(round(1.2 * mm * canvas.f))))
        canvas.add(img_pad, 0.04)
        canvas.add(img_snap, rng.uniform(0.8, 2.0))
        canvas.add(img_wire, rng.uniform(0.25, 0.6))
    if rng.uniform() < FOREIGN_BODY_PROBABILITY["binder"]:
        kinds.append("binder")
        img, d = canvas.layer()
        ty = region.get("trochanter_y", sy)
        top = ty - rng.uniform(60, 110) * mm
        bottom = ty + rng.uniform(30, 80) * mm
        tilt = rng.uniform(-0.04, 0.04) * w
        d.polygon(canvas.s(0, top - tilt, w, top + tilt, w, bottom + tilt, 0, bottom - tilt), fill=255)
        canvas.add(img, rng.uniform(0.05, 0.12))
        img2, d2 = canvas.layer()
        bx = mx + rng.uniform(-0.4, 0.4) * hw
        bw, bh = rng.uniform(12, 25) * mm, rng.uniform(15, 30) * mm
        by = 0.5 * (top + bottom) + rng.uniform(-0.2, 0.2) * (bottom - top)
        d2.rectangle(canvas.s(bx - bw, by - bh, bx + bw, by + bh), outline=255, width=max(1, int(2.5 * mm * canvas.f)))
        canvas.add(img2, rng.uniform(0.15, 0.5))
    if rng.uniform() < FOREIGN_BODY_PROBABILITY["catheter"]:
        kinds.append("catheter")
        img, d = canvas.layer()
        if rng.uniform() < 0.6:  # urinary catheter up the midline to the bladder
            start = (mx + rng.uniform(-0.1, 0.1) * hw, h * 1.05)
            end = (mx + rng.uniform(-0.15, 0.15) * hw, sy - rng.uniform(20, 60) * mm)
        else:  # a line along a thigh
            side = rng.choice([-1, 1])
            start = (mx + side * rng.uniform(0.3, 0.8) * hw, h * 1.05)
            end = (mx + side * rng.uniform(0.1, 0.6) * hw, sy + rng.uniform(-80, 10) * mm)
        pts = _curve(rng, start, end, wiggle=0.08) * canvas.f
        width = rng.uniform(4, 7) * mm * canvas.f
        d.line([tuple(p) for p in pts], fill=255, width=max(2, int(width)))
        canvas.add(img, rng.uniform(0.05, 0.12))
        img2, d2 = canvas.layer()  # radio-opaque stripe
        d2.line([tuple(p) for p in pts], fill=255, width=max(1, int(width / 4)))
        canvas.add(img2, rng.uniform(0.2, 0.5))
    return canvas.total, kinds

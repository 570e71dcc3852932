"""Landmark batch inference (``scripts.landmarks.inference.run_landmark_inference``) runs its images as the
fracture inference does: per image a folder named by ``unique_image_stems`` (two inputs with one file name get
separate reports), failures recorded per image through the failure-tolerant dataset with the fracture inference's
statuses, and a summary in the inputs' order. The detector is a stand-in whose answer is planted."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from custom_transforms.conventions import LANDMARK_NAMES  # noqa: E402

from scripts.landmarks.detector import LandmarkDetection, NotAPelvisError  # noqa: E402
from scripts.landmarks.inference import run_landmark_inference  # noqa: E402

N = len(LANDMARK_NAMES)


class PlantedDetector:
    """Landmark i at [i, 2 i + x0], where x0 is the image's top-left pixel value in 1/1000 (so each image's report
    shows that it came from that image); refuses images whose top-left value is 0."""

    def __call__(self, image, source=None):
        marker = float(image[0, 0, 0]) * 1000.0
        if marker < 0.5:
            raise NotAPelvisError(f"{source}: does not look like an AP pelvic radiograph (planted refusal)")
        landmarks = np.stack([np.arange(N), 2 * np.arange(N) + round(marker)], axis=1).astype(np.float32)
        return LandmarkDetection(
            landmarks=landmarks,
            confidence=np.full(N, 0.9),
            plausibility=0.8,
            peaks=np.full(N, 0.9),
            heatmap_landmarks=landmarks,
            corrected=np.zeros(N, bool),
            shape_consistent=np.ones(N, bool),
        )


def _png(path: Path, marker: int) -> str:
    """A 16-bit PNG whose top-left pixel reads back as marker / 1000 (LoadPXR scales 16-bit PNGs to [0, 1] by the
    image's range: the other pixels span 0..1000 x 65.535)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((20, 30), np.uint16)
    pixels[-1, -1] = 65535
    pixels[0, 0] = round(marker * 65.535)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_same_file_name_in_two_folders_gets_two_reports_and_failures_get_statuses(tmp_path):
    first = _png(tmp_path / "a" / "pelvis.png", 3)
    second = _png(tmp_path / "b" / "pelvis.png", 7)
    refused = _png(tmp_path / "blank.png", 0)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"not really")
    out = tmp_path / "out"

    summary = run_landmark_inference(
        PlantedDetector(), [{"image": p} for p in (first, refused, second, str(broken))], out, overlay=False
    )

    assert [(Path(s["image"]).name, s["status"]) for s in summary] == [
        ("pelvis.png", "ok"),
        ("blank.png", "not_a_pelvis"),
        ("pelvis.png", "ok"),
        ("broken.dcm", "unreadable"),
    ]
    assert json.loads((out / "landmarks_summary.json").read_text()) == summary
    for path, marker in ((first, 3), (second, 7)):
        folder = out / ("pelvis_" + hashlib.sha1(path.encode()).hexdigest()[:8])  # the fracture inference's naming
        report = json.loads((folder / "landmarks.json").read_text())
        assert report["image"] == path and report["status"] == "ok"
        assert report["landmarks"]["asis_r"]["xy"] == [0.0, float(marker)]  # landmark 0 at [0, x0]
        assert report["landmarks"][LANDMARK_NAMES[5]]["xy"] == [5.0, 10.0 + marker]
        assert report["spacing_mm"] is None and "xy_mm" not in report["landmarks"]["asis_r"]  # a PNG has no spacing
    blank = json.loads((out / "blank" / "landmarks.json").read_text())
    assert blank["status"] == "not_a_pelvis" and "planted refusal" in blank["error"] and refused in blank["error"]
    unreadable = json.loads((out / "broken" / "landmarks.json").read_text())
    assert unreadable["status"] == "unreadable" and str(broken) in unreadable["error"]


def test_reports_carry_millimetres_when_the_spacing_is_known(tmp_path):
    from dicom_factory import write_dx

    image = tmp_path / "dx.dcm"
    pixels = np.zeros((20, 30), np.uint16)
    pixels[0, 0], pixels[-1, -1] = 4, 4000  # top-left reads 4 / 4000 of the range: marker 1
    write_dx(image, pixels, spacing_mm=(0.5, 0.25))
    (entry,) = run_landmark_inference(PlantedDetector(), [{"image": str(image)}], tmp_path / "out", overlay=True)
    report = json.loads(Path(entry["report"]).read_text())
    # landmark 5 at [5, 11] px: x by the column spacing 0.25, y by the row spacing 0.5
    assert report["landmarks"][LANDMARK_NAMES[5]]["xy_mm"] == [1.25, 5.5]
    assert (tmp_path / "out" / "dx" / "landmarks.png").is_file()

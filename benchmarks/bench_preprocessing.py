"""Speed of the AASN preprocessing chain on a 2000 x 2500 DICOM radiograph, stage by stage.

    .venv/bin/python benchmarks/bench_preprocessing.py [--runs 15] [--threads 1 2] [--roi 256 512] [--json out.json]

Writes a synthetic 12-bit MONOCHROME1 DX image (2000 rows x 2500 columns, ImagerPixelSpacing 0.15 mm, a VOI
window) with an asymmetric landmark configuration and one fracture to a temporary folder, then runs the chain
load -> annotation -> symmetry -> mirrored ROIs -> TPS grid -> masks (-> pseudo-colour -> packing) ``--runs``
times for each torch thread count and prints the median time of every stage and of the chain. One thread is
what a ``torch.utils.data.DataLoader`` worker uses. The first run of each setting is a discarded warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import results_metadata  # noqa: E402

from custom_transforms import aasn_preprocessing  # noqa: E402
from dicom_factory import write_dx  # noqa: E402
from synthetic_pelvis import place_landmarks, radiograph_like, write_annotation  # noqa: E402

ROWS, COLS, SPACING = 2000, 2500, (0.15, 0.15)
CORE_STAGES = ("LoadPXRd", "LoadAnnotationd", "SymmetryAxisd", "MirroredROId", "TPSGridd", "FractureMaskd")


def make_case(folder: str) -> dict:
    rng = np.random.default_rng(0)
    lm = place_landmarks((ROWS, COLS), SPACING, angle_deg=4.0) + rng.normal(0.0, 1.5 / SPACING[0], size=(16, 2))
    pixels = radiograph_like((ROWS, COLS), lm)
    image = write_dx(
        os.path.join(folder, "pxr.dcm"),
        4095 - pixels,
        photometric="MONOCHROME1",
        spacing_mm=SPACING,
        window=(2048, 3000),
    )
    annotation = write_annotation(os.path.join(folder, "pxr.json"), lm, [lm[3] + [40.0, 20.0]], image=image)
    return {"image": image, "annotation": annotation}


def run_once(chain, case: dict) -> dict[str, float]:
    data = dict(case)
    times = {}
    for transform in chain.transforms:
        start = time.perf_counter()
        data = transform(data)
        times[type(transform).__name__] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    parser.add_argument("--roi", type=int, nargs=2, default=[256, 512])
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    meta = results_metadata.start(results_metadata.command_line(__file__))

    chain = aasn_preprocessing(roi_size=tuple(args.roi))
    results = {
        "image": f"{ROWS} x {COLS} DICOM (rows x cols), 12-bit MONOCHROME1, VOI window",
        "roi_size": args.roi,
        "runs": args.runs,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "settings": {},
    }
    print(
        f"{results['image']}; ROI {args.roi[0]} x {args.roi[1]}; {args.runs} runs; {results['machine']}; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as folder:
        case = make_case(folder)
        for threads in dict.fromkeys(args.threads):
            torch.set_num_threads(threads)
            run_once(chain, case)  # warm-up
            runs = [run_once(chain, case) for _ in range(args.runs)]
            stages = {name: float(np.median([r[name] for r in runs])) for name in runs[0]}
            core = float(np.median([sum(r[s] for s in CORE_STAGES) for r in runs]))
            full = float(np.median([sum(r.values()) for r in runs]))
            results["settings"][f"threads={threads}"] = {
                "stages_s": stages,
                "core_chain_median_s": core,
                "full_chain_median_s": full,
            }
            print(f"\ntorch threads = {threads}")
            for name, seconds in stages.items():
                print(f"  {name:<20s} {seconds * 1000:8.1f} ms  ({seconds / full:5.1%})")
            print(
                f"  {'core chain':<20s} {core * 1000:8.1f} ms  (load -> annotation -> symmetry -> ROIs -> TPS -> "
                f"masks; goal < 300 ms)"
            )
            print(f"  {'full chain':<20s} {full * 1000:8.1f} ms  (+ pseudo-colour + packing)")
    results["provenance"] = results_metadata.finish(meta)
    print("\n".join(results_metadata.markdown_lines(results["provenance"])))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

"""How asymmetric are the atlas members, and how much do warps (``simulation.atlas_warp``) add?

For each subject, the left hip bone is mirrored about the sagittal plane (LPS x -> -x) and fitted rigidly onto
the right one by iterated closest points (the two sides' vertices do not correspond, so the nearest right vertex
stands in for the partner); the distances of the mirrored left vertices to the nearest right vertex after the fit
are the asymmetry. It is a lower bound of the true left/right difference (sliding along the surface is free). One
JSON line per subject set, with provenance::

    python benchmarks/probe_warp_asymmetry.py --subjects 3,4,6 --warps-per-member 1 \
        --out benchmarks/results/probe_warp_asymmetry.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import results_metadata  # noqa: E402

from simulation.atlas import default_atlas_dir, load_member  # noqa: E402
from simulation.atlas_blend import rigid_fit  # noqa: E402
from simulation.atlas_warp import warp_id  # noqa: E402

ICP_ITERATIONS = 30


def hip_asymmetry(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Distances (mm) of the mirrored, rigidly fitted left hip vertices to the nearest right hip vertex."""
    moved = left * [-1.0, 1.0, 1.0]
    moved = moved - moved.mean(0) + right.mean(0)
    tree = cKDTree(right)
    for _ in range(ICP_ITERATIONS):
        nearest = tree.query(moved)[1]
        rotation, translation = rigid_fit(moved, right[nearest])
        moved = moved @ rotation.T + translation
    return tree.query(moved)[0]


def summary(atlas_dir: Path, subjects: list[str]) -> dict:
    per_subject = {}
    for subject in subjects:
        member = load_member(atlas_dir, subject)
        distances = hip_asymmetry(member.raw_vertices["hip_l"], member.raw_vertices["hip_r"])
        per_subject[subject] = {"median_mm": round(float(np.median(distances)), 3),
                                "p95_mm": round(float(np.percentile(distances, 95)), 3)}  # fmt: skip
    medians = [v["median_mm"] for v in per_subject.values()]
    p95 = [v["p95_mm"] for v in per_subject.values()]
    return {
        "subjects": len(subjects),
        "median_mm": {"min": min(medians), "mean": round(float(np.mean(medians)), 3), "max": max(medians)},
        "p95_mm": {"min": min(p95), "mean": round(float(np.mean(p95)), 3), "max": max(p95)},
        "per_subject": per_subject,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas-dir", type=Path, default=None)
    parser.add_argument("--subjects", required=True, help="comma-separated atlas member ids")
    parser.add_argument("--warps-per-member", type=int, default=1, help="warps of each member, seeds 0, 1, ...")
    parser.add_argument("--out", type=Path, help="append the rows (JSON lines, with provenance) here")
    args = parser.parse_args(argv)
    meta = results_metadata.start(results_metadata.command_line("probe_warp_asymmetry.py", sys.argv[1:]))
    atlas_dir = args.atlas_dir or default_atlas_dir()
    members = [s.strip() for s in args.subjects.split(",") if s.strip()]
    warps = [warp_id(m, seed) for m in members for seed in range(args.warps_per_member)]
    rows = [{"kind": "members", **summary(atlas_dir, members)}]
    if warps:
        rows.append({"kind": "warps", **summary(atlas_dir, warps)})
    for row in rows:
        row["provenance"] = results_metadata.finish(dict(meta))
        print(json.dumps({k: v for k, v in row.items() if k not in ("per_subject", "provenance")}))
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m simulation generate ...`` and ``python -m simulation preview ...``."""

from __future__ import annotations

import argparse
import sys

from .atlas import AtlasError
from .mesh import MeshError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulation", description="Simulated AP pelvic radiographs with exact labels."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="simulate a dataset (DICOM DX + annotation JSON + datalist.json)")
    g.add_argument("--anatomy", choices=["atlas", "procedural"], default="procedural")
    g.add_argument(
        "--atlas-dir",
        default=None,
        help="atlas folder, full or packed (default ../shared/data/pelvis_atlas, else simulation/atlas_subset)",
    )
    g.add_argument("--n", type=int, required=True, help="number of images")
    g.add_argument("--out", required=True, help="dataset folder")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--subjects", default=None, help="comma-separated subject ids (atlas member ids or P###)")
    g.add_argument(
        "--blends",
        type=int,
        default=0,
        help="atlas only: render N blends of random pairs of the --subjects members instead (simulation.atlas_blend)",
    )
    g.add_argument(
        "--warps",
        type=int,
        default=0,
        help="atlas only: render N smooth random warps of the --subjects members (or of the --blends) instead "
        "(simulation.atlas_warp)",
    )
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--size", type=int, nargs="+", default=[1024, 1024], help="detector H W in pixels (or one value)")
    g.add_argument("--positive-fraction", type=float, default=None)
    g.add_argument("--no-progress", action="store_true")
    g.add_argument(
        "--intact-twins",
        action="store_true",
        help="also write each fractured image without its breaks (training pairs; datalist 'intact_twins')",
    )
    p = sub.add_parser("preview", help="contact sheet with landmarks and fracture points")
    p.add_argument("dataset", help="dataset folder (with datalist.json)")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--columns", type=int, default=6)
    p.add_argument("--tile", type=int, default=320)
    p.add_argument("--limit", type=int, default=36)
    lm = sub.add_parser("landmarks", help="picture of the 16 landmarks on clean bone projections")
    lm.add_argument("--anatomy", choices=["atlas", "procedural"], default="atlas")
    lm.add_argument("--atlas-dir", default=None, help="as for generate")
    lm.add_argument("--subjects", default=None, help="comma-separated subject ids")
    lm.add_argument("--out", required=True, help="PNG file")
    lm.add_argument("--size", type=int, default=560)
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            from .dataset import generate_dataset
            from .render import POSITIVE_FRACTION

            size = args.size[0] if len(args.size) == 1 else tuple(args.size)
            subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
            if args.blends:
                from .atlas_blend import blend_ids

                if args.anatomy != "atlas" or not subjects:
                    raise ValueError("--blends needs --anatomy atlas and the --subjects members to blend")
                subjects = blend_ids(subjects, args.blends, args.seed)
            if args.warps:
                from .atlas_warp import warp_ids

                if args.anatomy != "atlas" or not subjects:
                    raise ValueError("--warps needs --anatomy atlas and the --subjects members to warp")
                subjects = warp_ids(subjects, args.warps, args.seed)
            path = generate_dataset(
                args.out,
                args.n,
                anatomy=args.anatomy,
                seed=args.seed,
                atlas_dir=args.atlas_dir,
                size=size,
                workers=args.workers,
                subjects=subjects,
                positive_fraction=POSITIVE_FRACTION if args.positive_fraction is None else args.positive_fraction,
                progress=not args.no_progress,
                intact_twins=args.intact_twins,
            )
            print(path)
        elif args.command == "preview":
            from .preview import contact_sheet

            print(contact_sheet(args.dataset, args.out, args.columns, args.tile, args.limit))
        else:
            from .dataset import _anatomy, resolve_subjects
            from .preview import landmark_sheet

            wanted = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
            ids, atlas_dir = resolve_subjects(args.anatomy, args.atlas_dir, wanted, 6)
            ids = ids if wanted else ids[:6]
            anatomies = [_anatomy(args.anatomy, s, str(atlas_dir) if atlas_dir else None, 0) for s in ids]
            print(landmark_sheet(anatomies, args.out, args.size))
    except (AtlasError, MeshError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

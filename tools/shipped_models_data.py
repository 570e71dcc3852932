"""The data the shipped models are trained and held-out-tested on: simulated atlas radiographs, one datalist.

The atlas members named in ``bundle/configs/metadata.json`` (``held_out_atlas_members``) never train a shipped
model: they are the held-out set. They include the demo's test members, so the demo's test fold stays unseen by the
shipped weights. This script simulates

- ``training_members/``: radiographs of every other member of the full atlas (``../shared/data/pelvis_atlas`` or
  ``--atlas-dir``), with the intact twins of the fractured ones (the CPU recipe trains on them);
- ``held_out_members/``: radiographs of the held-out members (no twins: they only test);
- ``training_blends/``: radiographs (with twins) of pelves blended from two members that train fold 0 (its
  validation members left out; ``simulation.atlas_blend``), extra training anatomy;
- ``training_warps/``: radiographs (with twins) of those members under smooth random warps that differ left and
  right (``simulation.atlas_warp``), extra training asymmetry;

and writes ``datalist.json`` over them: the held-out images are fold 0, the training members keep their simulated
fold (1-4; a member the simulator put in fold 0 moves to fold 1), the blends and warps are listed under
``"blends"`` (they train a fold only when all their parents do: ``scripts.datalist.blend_items``). So ``fold 0``
of the bundle's configs trains on the training members, their blends and warps (its validation members chosen by
``scripts.datalist.split_fold``) and tests on the held-out ones::

    python tools/shipped_models_data.py --out /data/shipped
    cd bundle && python -m monai.bundle run --config_file "['configs/train.json','configs/scale_cpu.json']" \
        --dataset_dir /data/shipped --bundle_root /runs/shipped ...

The commands, run times and held-out figures of the shipped weights are in the model card (``bundle/docs/README.md``)
and ``benchmarks/results/shipped_models.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METADATA = ROOT / "bundle" / "configs" / "metadata.json"
#: The simulation of each part: (folder, images, seed). Size 640 px (the detector's patch stage works at 640 px).
TRAINING_PART = ("training_members", 1200, 15)
HELD_OUT_PART = ("held_out_members", 200, 16)
#: Blends of two training members (``simulation.atlas_blend``): (folder, images, seed, blends). Extra training
#: anatomy, listed under the datalist's ``"blends"`` (``scripts.datalist.blend_items``).
BLEND_PART = ("training_blends", 900, 21, 225)
#: Warps of the same members (``simulation.atlas_warp``): (folder, images, seed, warps). One image per warp: what
#: the network has to learn is the variety of asymmetry, not more poses of one.
WARP_PART = ("training_warps", 900, 22, 900)
IMAGE_SIZE = 640


def held_out_members(metadata: str | Path = METADATA) -> list[int]:
    """The atlas member ids that no shipped model trains on (``metadata.json``: ``held_out_atlas_members``)."""
    members = json.loads(Path(metadata).read_text()).get("held_out_atlas_members")
    if not members or not all(isinstance(m, int) for m in members):
        raise ValueError(f"{metadata}: field 'held_out_atlas_members' must be a non-empty list of atlas member ids.")
    return list(members)


def atlas_members(atlas_dir: str | Path) -> list[int]:
    """The member ids of an atlas folder (its ``surface/left/LeftHip<ID>_cpd.vtk`` files)."""
    names = sorted(Path(atlas_dir, "surface", "left").glob("LeftHip*_cpd.vtk"))
    if not names:
        raise FileNotFoundError(f"{atlas_dir}: no surface/left/LeftHip<ID>_cpd.vtk files; expected the full atlas.")
    return sorted(int(p.name[len("LeftHip") : -len("_cpd.vtk")]) for p in names)


def _simulate(
    out: Path,
    n: int,
    seed: int,
    members: list[int],
    atlas_dir: Path,
    twins: bool,
    workers: int,
    blends: int = 0,
    warps: int = 0,
) -> Path:
    datalist = out / "datalist.json"
    if datalist.is_file():
        return datalist
    command = [
        sys.executable, "-m", "simulation", "generate", "--anatomy", "atlas", "--atlas-dir", str(atlas_dir),
        "--n", str(n), "--seed", str(seed), "--subjects", ",".join(map(str, members)), "--workers", str(workers),
        "--size", str(IMAGE_SIZE), "--no-progress", "--out", str(out),
    ]  # fmt: skip
    if twins:
        command.append("--intact-twins")
    if blends:
        command += ["--blends", str(blends)]
    if warps:
        command += ["--warps", str(warps)]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return datalist


def merge_datalists(training: Path, held_out: Path, out: Path, derived: Sequence[Path] = ()) -> Path:
    """Write ``out/datalist.json``: the held-out items in fold 0, the training members' items in folds 1-4, and
    the items of the ``derived`` parts (blends, warps: anatomy made from training members) under ``"blends"``,
    their twins with the training members' twins."""
    train_list = json.loads(training.read_text())
    held_list = json.loads(held_out.read_text())
    derived_lists = [(path, json.loads(path.read_text())) for path in derived]

    def relocated(items: list[dict], source: Path, fold: int | None) -> list[dict]:
        moved = []
        for item in items:
            item = dict(item)
            for key in ("image", "annotation", "intact_twin_of"):
                if key in item:
                    item[key] = str((source.parent / item[key]).relative_to(out))
            item["fold"] = fold if fold is not None else max(1, item["fold"])
            moved.append(item)
        return moved

    merged = {
        "description": (
            f"Shipped-model data: {train_list['description']} (training members, folds 1-4) and "
            f"{held_list['description']} (held-out members, fold 0)"
            + "".join(f"; blends: {content['description']} (training only)" for _, content in derived_lists)
        ),
        "anatomy": "atlas",
        "size": train_list.get("size"),
        "attribution": train_list.get("attribution"),
        "training": relocated(train_list["training"], training, None) + relocated(held_list["training"], held_out, 0),
        "intact_twins": relocated(train_list.get("intact_twins", []), training, None)
        + [twin for path, content in derived_lists for twin in relocated(content.get("intact_twins", []), path, None)],
        "blends": [item for path, content in derived_lists for item in relocated(content["training"], path, None)],
    }
    target = out / "datalist.json"
    target.write_text(json.dumps(merged, indent=1))
    return target


def fold_training_members(datalist: Path, fold: int = 0) -> list[int]:
    """The atlas member ids that train ``fold`` of a merged datalist (its validation members left out): the only
    members a blend may mix, so that no validation or held-out anatomy reaches training."""
    sys.path.insert(0, str(ROOT / "bundle"))
    from scripts.datalist import fold_split

    subjects = {item["subject"] for item in fold_split(datalist, fold, "training")}
    return sorted(int(s.removeprefix("atlas-")) for s in subjects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulate the shipped models' training and held-out data.")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder")
    parser.add_argument("--atlas-dir", type=Path, default=ROOT.parent / "shared" / "data" / "pelvis_atlas")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    held = held_out_members()
    training_members = [m for m in atlas_members(args.atlas_dir) if m not in held]
    name, n, seed = TRAINING_PART
    train_list = _simulate(out / name, n, seed, training_members, args.atlas_dir, True, args.workers)
    name, n, seed = HELD_OUT_PART
    held_list = _simulate(out / name, n, seed, held, args.atlas_dir, False, args.workers)
    blend_members = fold_training_members(merge_datalists(train_list, held_list, out))
    name, n, seed, blends = BLEND_PART
    blend_list = _simulate(out / name, n, seed, blend_members, args.atlas_dir, True, args.workers, blends=blends)
    name, n, seed, warps = WARP_PART
    warp_list = _simulate(out / name, n, seed, blend_members, args.atlas_dir, True, args.workers, warps=warps)
    print(merge_datalists(train_list, held_list, out, [blend_list, warp_list]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

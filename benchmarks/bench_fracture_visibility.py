"""Are the simulated fractures visible? A patch classifier against the contralateral anatomy, on held-out members.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fracture_visibility.py [--roi 192 384] [--epochs 120]

A diagnostic for the accuracy benchmark, where every method sits at chance at the reduced scale: it separates
"the fractures cannot be seen in these images" from "the networks do not learn to see them".

For every fracture of a positive image the bundle's own preprocessing (``aasn_loading`` + ``aasn_geometry`` at
``--roi``) gives the ROI, the mirrored ROI (reflected about the symmetry axis and boxed, no warp) and the
``tps_grid``. The positive patch is the ROI around the fracture. The negative patch is the contralateral anatomy
at the corresponding point: by default (``--contralateral tps``) the mirrored ROI sampled through the
``tps_grid`` (``grid_sample``, bilinear, the warp AASN applies to the mirrored features), i.e. TPS-aligned; with
``--contralateral mirrored`` the mirrored ROI at the same pixel, mirrored-only (what the script's first version,
and the legacy ``fracture_visibility`` results, used).

A small CNN (six 3 x 3 convolutions, no stride before the first pooling, global max pooling) is trained on the
patches of the fold's training members with flips and 90-degree rotations. Its epoch is chosen on the fold's
validation members (best validation AUC, evaluated every ``--every`` epochs); the held-out test members' patches
are scored once, with the chosen epoch's weights, after training. Two controls score the same test patches by
their mean and by their standard deviation: a patch statistic that separates them would mean the task is easier
than seeing a break. Every computation of test figures is appended to ``<work>/test_reads.jsonl``, and the
results list them all (benchmarks/README.md, "Test-fold policy").

Results: ``<results>/fracture_visibility.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_accuracy as accuracy  # noqa: E402  (puts bundle/ on sys.path too)
import results_metadata  # noqa: E402

#: how the negative patch is taken from the contralateral side (see the module docstring)
CONTRALATERAL = {
    "tps": "the mirrored ROI sampled through the tps_grid (TPS-aligned contralateral anatomy)",
    "mirrored": "the mirrored ROI at the same pixel (mirrored-only: reflection and box, no TPS warp)",
}


def tps_aligned(roi_mirrored, tps_grid):
    """The mirrored ROI (C, h, w) sampled through the (2, h, w) ``tps_grid`` (bilinear, ``align_corners=False``,
    border padding): the contralateral anatomy brought onto the ROI's pixels, as AASN aligns its features."""
    import torch
    import torch.nn.functional as F

    image = torch.as_tensor(np.asarray(roi_mirrored), dtype=torch.float32)[None]
    grid = torch.as_tensor(np.asarray(tps_grid), dtype=torch.float32).permute(1, 2, 0)[None]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)[0].numpy()


def fracture_patches(
    items: Sequence[dict], roi_size: Sequence[int], half: int, contralateral: str = "tps"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict], int]:
    """Patches of the positive items: standardised ``(2K, 1, 2 half, 2 half)``, labels (1: fracture, 0:
    contralateral, taken as ``contralateral`` says: ``"tps"`` or ``"mirrored"``, see :data:`CONTRALATERAL`), the
    raw patches' ``(2K, 2)`` mean and standard deviation (the controls), the refused images and the number of
    fractures outside the ROI.

    Fractures outside the ROI are skipped and counted (last return value); images the preprocessing refuses are
    listed.
    """
    from monai.transforms import Compose

    from custom_transforms.pipeline import aasn_geometry, aasn_loading

    if contralateral not in CONTRALATERAL:
        raise ValueError(f"contralateral must be one of {sorted(CONTRALATERAL)}, got {contralateral!r}")
    chain = Compose(aasn_loading() + aasn_geometry(roi_size=roi_size, with_masks=False))
    patches, labels, stats, skipped = [], [], [], []
    outside = 0
    for item in items:
        if item["label"] != 1:
            continue
        try:
            d = chain({"image": item["image"], "annotation": item["annotation"]})
        except Exception as e:  # noqa: BLE001 - a diagnostic: list the image and go on
            skipped.append({"image": Path(item["image"]).name, "reason": str(e).splitlines()[0][:200]})
            continue
        h, w = np.asarray(d["roi"]).shape[1:]
        # padded so that a fracture near the ROI's border keeps a whole patch (edge values beyond it)
        other = tps_aligned(d["roi_mirrored"], d["tps_grid"]) if contralateral == "tps" else d["roi_mirrored"]
        roi, mirrored = (np.pad(np.asarray(image)[0], half, mode="edge") for image in (d["roi"], other))
        for x, y in np.asarray(d["roi_fractures"]).reshape(-1, 2):
            c, r = int(round(float(x))), int(round(float(y)))
            if not (0 <= r < h and 0 <= c < w):
                outside += 1
                continue
            for image, label in ((roi, 1), (mirrored, 0)):
                patch = image[r : r + 2 * half, c : c + 2 * half]
                patches.append((patch - patch.mean()) / (patch.std() + 1e-6))
                labels.append(label)
                stats.append((patch.mean(), patch.std()))
    if not patches:
        raise ValueError("no fracture patch inside the ROI: is the dataset's positive share zero?")
    return np.asarray(patches, dtype=np.float32)[:, None], np.asarray(labels), np.asarray(stats), skipped, outside


def patch_classifier():
    """Three blocks of two 3 x 3 conv-BN-ReLU and a 2 x 2 max pooling (16, 32, 64 channels), global max, one logit."""
    import torch

    layers: list = []
    for c_in, c_out in ((1, 16), (16, 32), (32, 64)):
        layers += [
            torch.nn.Conv2d(c_in, c_out, 3, padding=1),
            torch.nn.BatchNorm2d(c_out),
            torch.nn.ReLU(),
            torch.nn.Conv2d(c_out, c_out, 3, padding=1),
            torch.nn.BatchNorm2d(c_out),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        ]
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 1))


def train_and_select(
    x_train, y_train, x_val, y_val, epochs: int, seed: int, every: int = 10
) -> tuple[object, list[dict], dict]:
    """Train the patch classifier on the training members; validation AUC every ``every`` epochs (and at the
    last); returns the network with the weights of the best validation AUC (the earliest on a tie), the curve
    (epoch, training loss, validation AUC) and the chosen entry. The test members are not seen here."""
    import copy

    import torch
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = patch_classifier()
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train.astype(np.float32))
    curve: list[dict] = []
    best: dict | None = None
    best_state = None
    for epoch in range(1, epochs + 1):
        net.train()
        for batch in torch.randperm(len(x)).split(32):
            xb = x[batch]
            if rng.random() < 0.5:
                xb = xb.flip(3)
            if rng.random() < 0.5:
                xb = xb.flip(2)
            xb = torch.rot90(xb, int(rng.integers(4)), (2, 3))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xb).squeeze(1), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if epoch % every == 0 or epoch == epochs:
            entry = {
                "epoch": epoch,
                "train_loss": float(loss.detach()),
                "val_auc": float(roc_auc_score(y_val, scores_of(net, x_val))),
            }
            curve.append(entry)
            if best is None or entry["val_auc"] > best["val_auc"]:
                best, best_state = entry, copy.deepcopy(net.state_dict())
            print(f"[visibility] epoch {epoch}: validation AUC {entry['val_auc']:.3f}", flush=True)
    net.load_state_dict(best_state)
    return net, curve, best


def scores_of(net, x: np.ndarray) -> np.ndarray:
    """The classifier's logits of patches ``x`` (evaluation mode)."""
    import torch

    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x)).squeeze(1).numpy()


def log_test_read(work: Path, command: str, fold: int, what: str) -> None:
    """Append one computation of test figures to ``<work>/test_reads.jsonl``."""
    work.mkdir(parents=True, exist_ok=True)
    entry = {"time": results_metadata.now(), "fold": fold, "what": what, "command": command}
    with open(work / "test_reads.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def logged_test_reads(work: Path) -> list[dict]:
    log = work / "test_reads.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(ROOT / "benchmarks" / "outputs" / "accuracy" / "data"),
        help="the accuracy benchmark's dataset folder (datalist.json)",
    )
    parser.add_argument("--fold", type=int, default=0, help="test fold (its members are held out)")
    parser.add_argument("--roi", type=int, nargs=2, default=[192, 384], help="ROI H W (192 x 384: about 0.7 mm pixels)")
    parser.add_argument("--half-size", type=int, default=24, help="half the patch side in ROI pixels")
    parser.add_argument(
        "--contralateral",
        choices=sorted(CONTRALATERAL),
        default="tps",
        help="negative patch: TPS-aligned (default) or mirrored-only contralateral anatomy",
    )
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--every", type=int, default=10, help="validation every this many epochs (and the last)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--work",
        default=str(ROOT / "benchmarks" / "outputs" / "fracture_visibility"),
        help="where the log of test-fold reads is kept (test_reads.jsonl; not committed)",
    )
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    command = results_metadata.command_line(__file__, argv)
    meta = results_metadata.start(command)

    import torch
    from sklearn.metrics import roc_auc_score

    from scripts.datalist import fold_split

    torch.set_num_threads(args.threads)
    start = time.time()
    datalist = Path(args.data) / "datalist.json"
    work = Path(args.work)
    sets = {}
    for section in ("training", "validation", "test"):
        sets[section] = fracture_patches(
            fold_split(datalist, args.fold, section), args.roi, args.half_size, args.contralateral
        )
    (x_train, y_train, _, _, _), (x_val, y_val, _, _, _) = sets["training"], sets["validation"]
    x_test, y_test, stats_test, _, _ = sets["test"]
    elapsed = time.time() - start
    print(
        f"[visibility] {len(x_train)} training, {len(x_val)} validation and {len(x_test)} test patches "
        f"({elapsed:.0f} s)",
        flush=True,
    )
    net, curve, chosen = train_and_select(x_train, y_train, x_val, y_val, args.epochs, args.seed, args.every)
    # the test members, once: the chosen epoch's network and the two controls
    log_test_read(work, command, args.fold, f"patch CNN (epoch {chosen['epoch']}) and controls")
    test_auc = float(roc_auc_score(y_test, scores_of(net, x_test)))
    controls = {
        name: float(roc_auc_score(y_test, stats_test[:, column]))
        for name, column in (("patch mean", 0), ("patch standard deviation", 1))
    }
    counts = {section: len(value[0]) for section, value in sets.items()}
    outside = {section: value[4] for section, value in sets.items()}
    skipped = {section: value[3] for section, value in sets.items()}
    record = {
        "command": command,
        "data": str(Path(args.data).resolve()),
        "fold": args.fold,
        "roi_size": args.roi,
        "patch_size": 2 * args.half_size,
        "contralateral": args.contralateral,
        "contralateral_description": CONTRALATERAL[args.contralateral],
        "epochs": args.epochs,
        "seed": args.seed,
        "patches": counts,
        "skipped": skipped,
        "fractures_outside_roi": outside,
        "selection": "best validation AUC (fold's validation members), evaluated every "
        f"{args.every} epochs and at the last",
        "curve": curve,
        "chosen_epoch": chosen["epoch"],
        "val_auc": chosen["val_auc"],
        "test_auc": test_auc,
        "control_auc": controls,
        "test_reads": logged_test_reads(work),
        "environment": accuracy.environment(),
        "wall_minutes": (time.time() - start) / 60,
    }
    record["provenance"] = results_metadata.finish(meta)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "fracture_visibility.json").write_text(json.dumps(record, indent=2))
    negative = "TPS-aligned" if args.contralateral == "tps" else "mirrored-only (no TPS warp)"
    reads = record["test_reads"]
    lines = [
        f"# Fracture visibility: fracture patch against the {negative} contralateral anatomy (held-out members)",
        "",
        *results_metadata.markdown_lines(record["provenance"]),
        "",
        f"Data: {args.data} (test fold {args.fold}); ROI {args.roi[0]} x {args.roi[1]} through the bundle's "
        f"preprocessing; patches {2 * args.half_size} px; negative patch: {CONTRALATERAL[args.contralateral]}; "
        f"{counts['training'] // 2} training, {counts['validation'] // 2} validation and {counts['test'] // 2} test "
        f"fractures (each with its contralateral patch); {sum(outside.values())} further fractures lie outside the "
        f"ROI ({outside['training']} training, {outside['validation']} validation, {outside['test']} test) and cannot "
        f"be seen by any ROI method; {sum(len(v) for v in skipped.values())} positive images refused by the "
        "preprocessing.",
        "",
        f"Epoch chosen on the validation members: {chosen['epoch']} of {args.epochs} (validation AUC "
        f"{100 * chosen['val_auc']:.1f} %); the test members were scored once, with that epoch's weights.",
        "",
        "| scorer | test AUC |",
        "| --- | --- |",
        f"| patch CNN, epoch {chosen['epoch']} of {args.epochs} | {100 * test_auc:.1f} % |",
    ]
    lines += [f"| control: {name} | {100 * auc:.1f} % |" for name, auc in controls.items()]
    lines += [
        "",
        "Validation AUC during training: "
        + ", ".join(f"epoch {c['epoch']} {100 * c['val_auc']:.1f} %" for c in curve)
        + ".",
        "",
        f"Test-fold reads logged in `{work / 'test_reads.jsonl'}` ({len(reads)}, this run's included): "
        + "; ".join(f"{r['time']} fold {r['fold']}: {r['what']} (`{r['command']}`)" for r in reads)
        + ".",
        "",
        f"Wall time {record['wall_minutes']:.1f} min.",
    ]
    (results / "fracture_visibility.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return record


if __name__ == "__main__":
    main()

"""Are the simulated fractures visible? A patch classifier against the contralateral anatomy, on held-out members.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fracture_visibility.py [--roi 192 384] [--epochs 120]

A diagnostic for the accuracy benchmark, where every method sits at chance at the reduced scale: it separates
"the fractures cannot be seen in these images" from "the networks do not learn to see them".

For every fracture of a positive image the bundle's own preprocessing (``aasn_loading`` + ``aasn_geometry`` at
``--roi``) gives the ROI and the mirrored, TPS-aligned ROI. The positive patch is the ROI around the fracture;
the negative patch is the mirrored ROI at the same place, i.e. the same image's contralateral anatomy at the
corresponding point, the comparison AASN is built on. A small CNN (six 3 x 3 convolutions, no stride before
the first pooling, global max pooling) is trained on the patches of the fold's training and validation members
with flips and 90-degree rotations, and scored by its AUC on the held-out test members' patches. Two controls
score the same test patches by their mean and by their standard deviation: a patch statistic that separates
them would mean the task is easier than seeing a break.

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


def fracture_patches(
    items: Sequence[dict], roi_size: Sequence[int], half: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict], int]:
    """Patches of the positive items: standardised ``(2K, 1, 2 half, 2 half)``, labels (1: fracture, 0:
    contralateral), the raw patches' ``(2K, 2)`` mean and standard deviation (the controls), the refused images and
    the number of fractures outside the ROI.

    Fractures outside the ROI are skipped and counted (last return value); images the preprocessing refuses are
    listed.
    """
    from monai.transforms import Compose

    from custom_transforms.pipeline import aasn_geometry, aasn_loading

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
        roi, mirrored = (np.pad(np.asarray(d[k])[0], half, mode="edge") for k in ("roi", "roi_mirrored"))
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
        layers += [torch.nn.Conv2d(c_in, c_out, 3, padding=1), torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(),
                   torch.nn.Conv2d(c_out, c_out, 3, padding=1), torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(),
                   torch.nn.MaxPool2d(2)]
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 1))


def train_and_score(x_train, y_train, x_test, y_test, epochs: int, seed: int, every: int = 10) -> list[dict]:
    """Train the patch classifier; test AUC every ``every`` epochs (the last one is the result)."""
    import torch
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = patch_classifier()
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train.astype(np.float32))
    x_te = torch.from_numpy(x_test)
    curve = []
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
            net.eval()
            with torch.no_grad():
                scores = net(x_te).squeeze(1).numpy()
            curve.append({"epoch": epoch, "train_loss": float(loss), "test_auc": float(roc_auc_score(y_test, scores))})
            print(f"[visibility] epoch {epoch}: test AUC {curve[-1]['test_auc']:.3f}", flush=True)
    return curve


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "outputs" / "accuracy" / "data"),
                        help="the accuracy benchmark's dataset folder (datalist.json)")
    parser.add_argument("--fold", type=int, default=0, help="test fold (its members are held out)")
    parser.add_argument("--roi", type=int, nargs=2, default=[192, 384], help="ROI H W (192 x 384: about 0.7 mm pixels)")
    parser.add_argument("--half-size", type=int, default=24, help="half the patch side in ROI pixels")
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    import torch
    from sklearn.metrics import roc_auc_score

    from scripts.datalist import fold_split

    torch.set_num_threads(args.threads)
    start = time.time()
    datalist = Path(args.data) / "datalist.json"
    train_items = fold_split(datalist, args.fold, "training") + fold_split(datalist, args.fold, "validation")
    test_items = fold_split(datalist, args.fold, "test")
    x_train, y_train, _, skipped_train, outside_train = fracture_patches(train_items, args.roi, args.half_size)
    x_test, y_test, stats_test, skipped_test, outside_test = fracture_patches(test_items, args.roi, args.half_size)
    elapsed = time.time() - start
    print(f"[visibility] {len(x_train)} training and {len(x_test)} test patches ({elapsed:.0f} s)", flush=True)
    controls = {
        name: float(roc_auc_score(y_test, stats_test[:, column]))
        for name, column in (("patch mean", 0), ("patch standard deviation", 1))
    }
    curve = train_and_score(x_train, y_train, x_test, y_test, args.epochs, args.seed)
    record = {
        "command": "python benchmarks/bench_fracture_visibility.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": str(Path(args.data).resolve()),
        "fold": args.fold,
        "roi_size": args.roi,
        "patch_size": 2 * args.half_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "train_patches": len(x_train),
        "test_patches": len(x_test),
        "skipped": {"training": skipped_train, "test": skipped_test},
        "fractures_outside_roi": {"training": outside_train, "test": outside_test},
        "control_auc": controls,
        "curve": curve,
        "test_auc": curve[-1]["test_auc"],
        "environment": accuracy.environment(),
        "wall_minutes": (time.time() - start) / 60,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "fracture_visibility.json").write_text(json.dumps(record, indent=2))
    lines = [
        "# Fracture visibility: fracture patch against the contralateral anatomy (held-out members)",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Data: {args.data} (test fold {args.fold}); ROI {args.roi[0]} x {args.roi[1]} through the bundle's "
        f"preprocessing; "
        f"patches {2 * args.half_size} px; {len(x_train) // 2} training and {len(x_test) // 2} test fractures "
        f"(each with its contralateral patch); {outside_train + outside_test} further fractures lie outside the ROI "
        f"({outside_train} training, {outside_test} test) and cannot be seen by any ROI method; "
        f"{len(skipped_train) + len(skipped_test)} positive images refused by the preprocessing.",
        "",
        "| scorer | test AUC |",
        "| --- | --- |",
        f"| patch CNN, {args.epochs} epochs | {100 * record['test_auc']:.1f} % |",
    ]
    lines += [f"| control: {name} | {100 * auc:.1f} % |" for name, auc in controls.items()]
    lines += [
        "",
        "Test AUC during training: "
        + ", ".join(f"epoch {c['epoch']} {100 * c['test_auc']:.1f} %" for c in curve)
        + ".",
        "",
        f"Wall time {record['wall_minutes']:.1f} min; finished {record['finished']}.",
    ]
    (results / "fracture_visibility.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return record


if __name__ == "__main__":
    main()

"""Why the detector did not learn: short training probes on fold 0's training and validation members (never its test).

Each probe trains a network of the bundle (``scripts.fracture.networks.build_network``, the CPU recipe's DenseNet sizes)
with the bundle's loss (``scripts.fracture.losses``) in a plain loop on preprocessed ROIs held in memory, so that a
probe takes a minute or two:

* ``whole-roi``: the whole 192 x 384 ROI, ``--n`` training images (0 = all); training AUC (first 200 images) with
  BatchNorm's running statistics and with batch statistics, and validation AUC, every other epoch. With ``--n 64``
  it asks whether the path can fit at all (a bug would stop it); with all images, whether it generalises.
* ``pairs``: windows of fractured images and of their intact twins (the same render without the breaks) at the
  same place: the only difference is the fracture. Validation AUC of "fractured vs intact" on the validation
  members' pairs. ``--pseudo-color`` compares the input representations.

Run from the repository root (data: ``bench_accuracy.py --scale cpu``'s screened datalist)::

    python benchmarks/probe_fracture_learning.py cache
    python benchmarks/probe_fracture_learning.py whole-roi --n 64 --epochs 20
    python benchmarks/probe_fracture_learning.py pairs --pseudo-color replicate
    python benchmarks/probe_fracture_learning.py pairs --pseudo-color highpass
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_metadata  # noqa: E402  (the provenance printed with every probe's figures)

DATALIST = ROOT / "benchmarks" / "outputs" / "accuracy_cpu" / "datalist_usable_192x384.json"
CACHE = ROOT / "benchmarks" / "outputs" / "probes"
ROI = (192, 384)
NETWORK = {
    "init_features": 32,
    "growth_rate": 16,
    "block_config": [3, 6, 12, 8],
    "bn_size": 4,
    "projection_channels": 32,
}


def _prepare(item: dict):
    from monai.transforms import Compose

    from custom_transforms.pipeline import aasn_geometry, aasn_loading
    from custom_transforms.siamese_crop import CropPointsd

    out = Compose(aasn_loading() + aasn_geometry(roi_size=ROI) + [CropPointsd()])(dict(item))
    return (
        np.asarray(out["siamese_input"], dtype=np.float16),
        np.asarray(out["target"]) > 0.5,
        np.asarray(out["crop_points"], dtype=np.float32),
    )


def _run_all(items: list[dict]) -> dict:
    with ProcessPoolExecutor(2) as pool:
        done = list(pool.map(_prepare, items, chunksize=8))
    return {
        "x": torch.from_numpy(np.stack([d[0] for d in done])),
        "t": torch.from_numpy(np.stack([d[1] for d in done])),
        "points": [torch.from_numpy(d[2]) for d in done],
        "y": torch.tensor([int(it["label"]) for it in items]),
    }


def cache(args) -> None:
    """Preprocess fold 0's training and validation images (replicate pseudo-colour) and their twins' pairs."""
    from scripts.datalist import load_datalist, split_fold

    content = json.loads(DATALIST.read_text())
    parts = split_fold(load_datalist(DATALIST), 0)
    twins = {t["intact_twin_of"]: t for t in content.get("intact_twins", [])}
    CACHE.mkdir(parents=True, exist_ok=True)
    for section in ("training", "validation"):
        torch.save(_run_all(parts[section]), CACHE / f"whole_{section}.pt")
        pairs = []
        for item in parts[section]:
            if item["label"] and item["image"] in twins:
                twin = dict(
                    twins[item["image"]],
                    fractures_removed=json.loads(Path(item["annotation"]).read_text())["fractures"],
                )
                pairs += [item, twin]
        torch.save(_run_all(pairs), CACHE / f"pairs_{section}.pt")
        print(f"{section}: {len(parts[section])} images, {len(pairs) // 2} pairs", flush=True)


def _recolour(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Replace channels 0-2 and 3-5 (replicate pseudo-colour in the cache) by ``mode``'s pseudo-colour."""
    if mode == "replicate":
        return x
    from custom_transforms.pseudocolor import PseudoColor

    colour = PseudoColor(mode)
    out = x.clone()
    for i in range(len(x)):
        for c in (0, 3):
            out[i, c : c + 3] = colour(x[i, c : c + 1].float()).to(x.dtype)
    return out


def _network(variant: str):
    from scripts.fracture.losses import loss_for_variant
    from scripts.fracture.networks import build_network

    return build_network(variant, **NETWORK), loss_for_variant(variant)


def _scores(net, x: torch.Tensor, batch_stats: bool = False) -> np.ndarray:
    net.train(batch_stats)
    with torch.no_grad():
        out = torch.cat([net(x[i : i + 16].float()).flatten(1).amax(1) for i in range(0, len(x), 16)])
    net.train()
    return out.numpy()


def whole_roi(args) -> None:
    from sklearn.metrics import roc_auc_score

    train = torch.load(CACHE / "whole_training.pt", weights_only=True)
    val = torch.load(CACHE / "whole_validation.pt", weights_only=True)
    x, t, y = _recolour(train["x"], args.pseudo_color), train["t"], train["y"]
    xv = _recolour(val["x"], args.pseudo_color)
    if args.n:
        keep = torch.randperm(len(y))[: args.n]
        x, t, y = x[keep], t[keep], y[keep]
    net, loss_fn = _network(args.variant)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    start = time.time()
    for epoch in range(args.epochs):
        order, total = torch.randperm(len(y)), 0.0
        steps = len(y) // args.batch_size
        for s in range(steps):
            b = order[s * args.batch_size : (s + 1) * args.batch_size]
            loss = loss_fn(net.forward_with_distance(x[b].float()), t[b].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        line = f"epoch {epoch + 1} loss {total / steps:.4f}"
        if epoch % 2 == 1 or epoch == args.epochs - 1:
            yt = y[:200].numpy()
            line += (
                f" train AUC {roc_auc_score(yt, _scores(net, x[:200])):.3f}"
                f" (batch statistics {roc_auc_score(yt, _scores(net, x[:200], True)):.3f})"
                f" validation AUC {roc_auc_score(val['y'].numpy(), _scores(net, xv)):.3f}"
            )
        print(f"{line} ({time.time() - start:.0f} s)", flush=True)


def pairs(args) -> None:
    from sklearn.metrics import roc_auc_score

    from custom_transforms.siamese_crop import SiameseCrop

    rng = np.random.default_rng(args.seed)
    train = torch.load(CACHE / "pairs_training.pt", weights_only=True)
    val = torch.load(CACHE / "pairs_validation.pt", weights_only=True)
    train["x"], val["x"] = _recolour(train["x"], args.pseudo_color), _recolour(val["x"], args.pseudo_color)
    size = args.window
    crop = SiameseCrop((size, size))

    def windows(data, pair_ids, jitter: bool):
        xs, ts = [], []
        for k in pair_ids:  # 2k the fractured image, 2k + 1 its twin: one window for both
            points = data["points"][2 * k]
            x, y = (float(v) for v in (points[rng.integers(len(points))] if jitter else points[0]))
            shift = rng.uniform(-size / 4, size / 4, 2) if jitter else np.zeros(2)
            top = int(np.clip(round(y + shift[1] - (size - 1) / 2), 0, ROI[0] - size))
            left = int(np.clip(round(x + shift[0] - (size - 1) / 2), 0, ROI[1] - size))
            for j in (2 * k, 2 * k + 1):
                w, tw = crop(data["x"][j].float(), top, left, data["t"][j].float())
                xs.append(w)
                ts.append(tw)
        return torch.stack(xs), torch.stack(ts)

    torch.manual_seed(args.seed)
    net, loss_fn = _network(args.variant)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    xv, _ = windows(val, range(len(val["points"]) // 2), jitter=False)
    yv = np.tile([1, 0], len(xv) // 2)
    n_pairs = len(train["points"]) // 2
    start = time.time()
    for epoch in range(args.epochs):
        total = 0.0
        for _ in range(args.steps):
            xb, tb = windows(train, rng.integers(n_pairs, size=args.batch_size // 2), jitter=True)
            loss = loss_fn(net.forward_with_distance(xb), tb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        print(
            f"epoch {epoch + 1} ({args.steps} steps) loss {total / args.steps:.4f} validation pair AUC "
            f"{roc_auc_score(yv, _scores(net, xv)):.3f} ({time.time() - start:.0f} s)",
            flush=True,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    sub.add_parser("cache", help="preprocess fold 0's training and validation images")
    for name in ("whole-roi", "pairs"):
        p = sub.add_parser(name)
        p.add_argument("--variant", default="vanilla")
        p.add_argument("--pseudo-color", default="replicate", choices=["replicate", "enhanced", "highpass"])
        p.add_argument("--epochs", type=int, default=8)
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--seed", type=int, default=0)
        if name == "whole-roi":
            p.add_argument("--n", type=int, default=0, help="training images (0: all)")
            p.add_argument("--batch-size", type=int, default=16)
        else:
            p.add_argument("--window", type=int, default=64)
            p.add_argument("--steps", type=int, default=50, help="steps per epoch")
            p.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    meta = results_metadata.start(results_metadata.command_line(__file__, argv))
    torch.set_num_threads(2)
    torch.manual_seed(args.seed if hasattr(args, "seed") else 0)
    print(f"probe {args.probe}: {vars(args)}", flush=True)
    {"cache": cache, "whole-roi": whole_roi, "pairs": pairs}[args.probe](args)
    # the block a results file quoting these printed figures copies (results/fracture_learning_probes.md)
    print("\n".join(results_metadata.markdown_lines(results_metadata.finish(meta))), flush=True)


if __name__ == "__main__":
    main()

"""Window training probes for issue 14: what makes the detector learn fractures (fold 0; the test fold is never read).

``train`` trains a network of the bundle (``scripts.fracture.networks.build_network``, by default at the CPU
recipe's DenseNet sizes, ``--net``) with the bundle's loss (``scripts.fracture.losses``) in a plain loop on fold 0's
preprocessed ROIs held in memory: ``probe_fracture_learning.py cache``'s outputs in ``benchmarks/outputs/probes/``
(``whole_training.pt``, ``pairs_training.pt``, ``whole_validation.pt``, ``pairs_validation.pt``). Only fold 0's
training and validation members are in those caches; no image of the test fold is read by either subcommand.

Each step's batch holds ``--batch`` windows of ``--window`` px:

* ``--pairs`` fractured images and their intact twins (the same render without the breaks), one window per pair at
  the same place: centred on one of the fractured image's crop points, shifted by up to a quarter window. The two
  windows differ only by the fracture.
* the rest: uniform windows of any training image. With ``--hardneg F`` each is, with probability F, a hard negative
  instead: every 250 steps from step 500 on, the 4 highest heatmap maxima (15 px non-maximum suppression, outside
  any fracture disc of the target) of 96 random training images, a window centred there, shifted in the same way.

Augmentations, one draw per window; a twin takes its fractured sibling's draw, so that the pair still differs only
by the fracture:

* ``--flip``: horizontal flip with probability 0.5 of all 8 channels and the target, the grid's x negated;
* ``--intensity``: gain U(0.75, 1.33) on the image channels 0-5, offset U(-0.1, 0.1) on the grey channels 0 and 3;
* ``--affine A``: rotation U(-0.17, 0.17) rad and scale exp(U(-A, A)) about the window centre, applied to channels
  0-2 (reflection padding) and the target (zero padding) only: all the Vanilla network reads. The mirrored ROI
  (channels 3-5) and the TPS grid (6-7) are left as cut, so an AASN variant would see them unwarped.

The input is the high-pass pseudo-colour: the caches hold the ``replicate`` one (grey x 3), and channels 1-2 and
4-5 are recomputed from the grey channels 0 and 3 in torch, ``HIGHPASS_GAINS[i] * (grey - Gaussian(grey,
HIGHPASS_SIGMAS_PX[i]))`` with a kernel of radius ``int(3 sigma + 0.5)`` and torch's ``reflect`` padding (the edge
pixel not repeated). That is close to, but not byte-identical with,
``custom_transforms.pseudocolor.PseudoColor('highpass')``, which uses scipy's ``gaussian_filter`` (its ``reflect``
mode repeats the edge pixel, its kernel reaches 4 sigma); the probes' figures are for the torch version.

Every ``--eval`` steps one line (BatchNorm running statistics; an image's score is its heatmap maximum)::

    step N loss L pairAUC P trainAUC T valAUC V [val2AUC V2] (S s)

``loss`` the mean training loss since the previous line; ``pairAUC`` fractured vs intact on the validation members'
pairs (one window per pair, centred on the fracture's first crop point); ``trainAUC`` the first 200 training images
and ``valAUC`` fold 0's validation images, whole ROI; ``val2AUC`` (``--supp``) the validation images together with
the supplement's images of the validation members.

``--supp`` adds a supplementary simulated dataset of fold 0's members only, split by subject: the images of fold 0's
validation members atlas-31, atlas-37, atlas-46 and atlas-5 join the validation images for ``val2AUC``; the others
(fold 0's 21 training members) join the training images and, with their twins, the training pairs (the split is
checked against fold 0 of ``probe_fracture_learning.DATALIST``: its listing, no image). It was simulated
with (the lead wrote it to /work/supp/data; the default place is below)::

    python -m simulation generate --anatomy atlas --n 1000 --seed 11 \\
        --subjects 10,11,15,17,2,22,24,33,34,38,4,40,41,43,47,49,52,55,6,63,8,31,37,46,5 --workers 2 --size 640 \\
        --positive-fraction 0.5 --intact-twins --out benchmarks/outputs/probes/supplement/data

and preprocessed by ``cache-supplement DATASET_DIR`` (the ROI pipeline of ``probe_fracture_learning.py cache``):
``supp_whole.pt`` (every image) and ``supp_pairs.pt`` (each fractured image and its twin) in ``--out``. ``train
--supp`` reads them from ``--supp-cache`` and the subjects from ``--supp-datalist``: it must be the datalist the
cache was built from (same order).

Run from the repository root (the figures in ``benchmarks/results/fracture_learning_probes.md``)::

    python benchmarks/probe_fracture_learning.py cache
    python benchmarks/probe_window_training.py cache-supplement benchmarks/outputs/probes/supplement/data
    python benchmarks/probe_window_training.py train --steps 4000 --eval 500
    python benchmarks/probe_window_training.py train --steps 3000 --eval 500 --flip --intensity --affine 0.2
    python benchmarks/probe_window_training.py train --steps 4000 --eval 500 --flip --intensity --affine 0.2 --supp
    python benchmarks/probe_window_training.py train --steps 4000 --eval 500 --flip --intensity --affine 0.2 \\
        --supp --hardneg 0.5 --save benchmarks/outputs/probes/hn.pt

The logic, the order of the random draws (one numpy generator and torch's, both seeded with ``--seed``) and the
printed lines are those of the prototype these figures were first run with: the same options reproduce its logs,
between this script's first line (its options) and the provenance block it prints at the end. ``--save`` is a path
from the working directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bundle"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import probe_fracture_learning as pf  # noqa: E402  (the fold-0 caches, their preprocessing, the scores)
import results_metadata  # noqa: E402  (the provenance printed with every probe's figures)

SUPPLEMENT = pf.CACHE / "supplement"
#: fold 0's validation members: their supplement images are validation (``val2AUC``), never training
VALIDATION_MEMBERS = {"atlas-31", "atlas-37", "atlas-46", "atlas-5"}
#: the CPU recipe's DenseNet sizes, as the JSON the prototype took (``--net``)
NETWORK_JSON = json.dumps(pf.NETWORK, separators=(",", ":"))
#: hard negatives: refreshed every HARD_EVERY steps from step HARD_FROM on (the network first has to find something)
HARD_FROM, HARD_EVERY = 500, 250
#: hard negatives: the HARD_PEAKS highest heatmap maxima of HARD_IMAGES random training images
HARD_IMAGES, HARD_PEAKS = 96, 4


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W): kernel radius ``int(3 sigma + 0.5)``, torch's reflect padding."""
    radius = int(3 * sigma + 0.5)
    kernel = torch.exp(-(torch.arange(-radius, radius + 1).float() ** 2) / (2 * sigma * sigma))
    kernel /= kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def _highpass(x: torch.Tensor) -> torch.Tensor:
    """The cached (N, 8, H, W) inputs (replicate pseudo-colour, float16) with channels 1-2 and 4-5 replaced by the
    high-pass bands of the grey channels 0 and 3 (see the module docstring); 64 images at a time to bound memory."""
    from custom_transforms.pseudocolor import HIGHPASS_GAINS, HIGHPASS_SIGMAS_PX

    out = x.clone()
    for i in range(0, len(x), 64):
        for c in (0, 3):
            grey = x[i : i + 64, c : c + 1].float()
            out[i : i + 64, c + 1 : c + 2] = (HIGHPASS_GAINS[0] * (grey - _blur(grey, HIGHPASS_SIGMAS_PX[0]))).half()
            out[i : i + 64, c + 2 : c + 3] = (HIGHPASS_GAINS[1] * (grey - _blur(grey, HIGHPASS_SIGMAS_PX[1]))).half()
    return out


def _load(path: Path) -> dict:
    """A cache of ``probe_fracture_learning._run_all`` (``x``, ``t``, ``y``, ``points``) in high-pass pseudo-colour."""
    data = torch.load(path, weights_only=True)
    data["x"] = _highpass(data["x"])
    return data


def _check_validation_members() -> None:
    """VALIDATION_MEMBERS must be fold 0's validation members of the datalist the caches were built from (its
    listing only: no image is read)."""
    from scripts.datalist import load_datalist, split_fold

    members = {it["subject"] for it in split_fold(load_datalist(pf.DATALIST), 0)["validation"]}
    if members != VALIDATION_MEMBERS:
        raise ValueError(f"fold 0's validation members are {sorted(members)}, not {sorted(VALIDATION_MEMBERS)}")


def _add_supplement(whole: dict, pairs: dict, val: dict, datalist: Path, cache: Path) -> tuple[dict, dict, dict]:
    """``(training images, training pairs, val2)`` with the supplement split by subject (VALIDATION_MEMBERS)."""
    from scripts.datalist import load_datalist

    _check_validation_members()
    items = load_datalist(datalist)
    subjects = [it["subject"] for it in items]
    # supp_pairs.pt holds each fractured image then its twin (cache-supplement): two entries per positive item
    pair_subjects = [subject for it, subject in zip(items, subjects) if it["label"] for _ in (0, 1)]
    sup_whole, sup_pairs = _load(cache / "supp_whole.pt"), _load(cache / "supp_pairs.pt")
    if len(pair_subjects) != len(sup_pairs["points"]):
        raise ValueError(
            f"{datalist} has {len(pair_subjects) // 2} fractured images, {cache / 'supp_pairs.pt'} "
            f"{len(sup_pairs['points']) // 2} pairs: not the datalist the cache was built from, or a twin missing"
        )
    train = torch.tensor([subject not in VALIDATION_MEMBERS for subject in subjects])
    train_pairs = torch.tensor([subject not in VALIDATION_MEMBERS for subject in pair_subjects])
    whole = {
        "x": torch.cat([whole["x"], sup_whole["x"][train]]),
        "t": torch.cat([whole["t"], sup_whole["t"][train]]),
        "y": torch.cat([whole["y"], sup_whole["y"][train]]),
        "points": whole["points"] + [p for p, keep in zip(sup_whole["points"], train) if keep],
    }
    pairs = {
        "x": torch.cat([pairs["x"], sup_pairs["x"][train_pairs]]),
        "t": torch.cat([pairs["t"], sup_pairs["t"][train_pairs]]),
        "y": torch.cat([pairs["y"], sup_pairs["y"][train_pairs]]),
        "points": pairs["points"] + [p for p, keep in zip(sup_pairs["points"], train_pairs) if keep],
    }
    val2 = {"x": torch.cat([val["x"], sup_whole["x"][~train]]), "y": torch.cat([val["y"], sup_whole["y"][~train]])}
    return whole, pairs, val2


def _share_with_twin(draws: torch.Tensor, n_pairs: int) -> None:
    """In place: each twin (odd index below ``2 n_pairs``) takes its fractured sibling's draw (the index before)."""
    draws[1 : 2 * n_pairs : 2] = draws[0 : 2 * n_pairs : 2]


class WindowBatches:
    """The training batches: pair windows, uniform (or hard negative) windows, augmentations; ``rng`` draws all.

    The draws' order is part of the probe's figures: a change here changes every figure after it.
    """

    def __init__(self, whole: dict, pairs: dict, crop, args, rng: np.random.Generator) -> None:
        self.whole, self.pairs, self.args, self.rng = whole, pairs, args, rng
        self.height, self.width = whole["x"].shape[-2:]
        self.size = args.window
        self.crop = crop  # SiameseCrop((window, window))
        self.n_pairs = len(pairs["points"]) // 2  # 2k the fractured image, 2k + 1 its twin
        self.hard: list[tuple[int, int, int]] = []  # (image, top, left) of the hard negatives

    def origin(self, y, x) -> tuple[int, int]:
        """``(top, left)`` of the window centred on ``(y, x)`` (ROI pixels), clipped to the ROI."""
        s = self.size
        top = int(np.clip(round(y - (s - 1) / 2), 0, self.height - s))
        left = int(np.clip(round(x - (s - 1) / 2), 0, self.width - s))
        return top, left

    def cut(self, data: dict, j, top, left) -> tuple[torch.Tensor, torch.Tensor]:
        """The window of image ``j`` of ``data`` and of its target (float32)."""
        return self.crop(data["x"][j].float(), top, left, data["t"][j].float())

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch ``(windows (B, 8, s, s), targets (B, C, s, s))``: the pairs first, each fractured then twin."""
        a, rng, s = self.args, self.rng, self.size
        xs, ts = [], []
        for k in rng.integers(self.n_pairs, size=a.pairs):
            points = self.pairs["points"][2 * k]
            x, y = (float(v) for v in points[rng.integers(len(points))])
            shift = rng.uniform(-s / 4, s / 4, 2)
            top, left = self.origin(y + shift[1], x + shift[0])
            for j in (2 * k, 2 * k + 1):  # one window at the same place for both
                w, tw = self.cut(self.pairs, j, top, left)
                xs.append(w)
                ts.append(tw)
        for _ in range(a.batch - 2 * a.pairs):
            # no draw for the hard-negative choice while there are none (before step HARD_FROM, or --hardneg 0)
            if self.hard and rng.random() < a.hardneg:
                j, top, left = self.hard[rng.integers(len(self.hard))]
            else:
                j = rng.integers(len(self.whole["y"]))
                top = rng.integers(self.height - s + 1)
                left = rng.integers(self.width - s + 1)
            w, tw = self.cut(self.whole, j, top, left)
            xs.append(w)
            ts.append(tw)
        xb, tb = torch.stack(xs), torch.stack(ts)
        if a.flip:
            xb, tb = self._flip(xb, tb)
        if a.intensity:
            xb = self._intensity(xb)
        if a.affine:
            xb, tb = self._affine(xb, tb)
        if a.recipe_augment:
            xb, tb = self._recipe_augment(xb, tb)
        return xb, tb

    def _recipe_augment(self, xb: torch.Tensor, tb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CPU recipe's window augmentation (``SiameseWindowAugment`` with ``configs/scale_cpu.json``'s ranges),
        one draw per window and the twin's equal to its sibling's: unlike ``--affine`` it also moves the mirrored
        window and re-expresses the TPS grid, so that AASN sees a consistent pair."""
        from custom_transforms.siamese_augment import GREY_CHANNELS, SiameseWindowAugment

        augment = SiameseWindowAugment(offset_channels=GREY_CHANNELS["highpass"])
        rng, draws = self.rng, None
        for i in range(len(xb)):
            if not (i < 2 * self.args.pairs and i % 2 == 1):  # a twin (odd index among the pairs) reuses its sibling's
                draws = dict(
                    flip=bool(rng.random() < 0.5),
                    rotation_deg=float(rng.uniform(-10.0, 10.0)),
                    scale=float(np.exp(rng.uniform(-0.2, 0.2))),
                    gain=float(rng.uniform(0.75, 1.33)),
                    offset=float(rng.uniform(-0.1, 0.1)),
                )
            xb[i], tb[i] = augment(xb[i], tb[i], **draws)
        return xb, tb

    def _flip(self, xb: torch.Tensor, tb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Horizontal flip of half the windows: every channel and the target; the grid's x (channel 6) negated."""
        flip = torch.from_numpy(self.rng.random(len(xb)) < 0.5)
        _share_with_twin(flip, self.args.pairs)
        xb[flip] = xb[flip].flip(-1)
        tb[flip] = tb[flip].flip(-1)
        xb[flip, 6] = -xb[flip, 6]
        return xb, tb

    def _intensity(self, xb: torch.Tensor) -> torch.Tensor:
        """A gain on the image channels 0-5, an offset on the grey channels 0 and 3."""
        gain = torch.from_numpy(self.rng.uniform(0.75, 1.33, (len(xb), 1, 1, 1))).float()
        _share_with_twin(gain, self.args.pairs)
        offset = torch.from_numpy(self.rng.uniform(-0.1, 0.1, (len(xb), 1, 1))).float()
        _share_with_twin(offset, self.args.pairs)
        xb[:, :6] = xb[:, :6] * gain
        xb[:, 0] += offset
        xb[:, 3] += offset
        return xb

    def _affine(self, xb: torch.Tensor, tb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation and scale about the window centre of channels 0-2 and the target (see the module docstring)."""
        a, n = self.args, len(xb)
        scale = torch.exp(torch.from_numpy(self.rng.uniform(-a.affine, a.affine, n))).float()
        theta = torch.from_numpy(self.rng.uniform(-0.17, 0.17, n)).float()
        _share_with_twin(scale, a.pairs)
        _share_with_twin(theta, a.pairs)
        matrix = torch.stack(
            [
                torch.stack([scale * torch.cos(theta), -scale * torch.sin(theta), torch.zeros(n)], 1),
                torch.stack([scale * torch.sin(theta), scale * torch.cos(theta), torch.zeros(n)], 1),
            ],
            1,
        )
        grid = F.affine_grid(matrix, list(xb[:, :3].shape), align_corners=False)
        xb[:, :3] = F.grid_sample(xb[:, :3], grid, padding_mode="reflection", align_corners=False)
        tb = F.grid_sample(tb, grid, padding_mode="zeros", align_corners=False)
        return xb, tb

    def refresh_hard(self, net: torch.nn.Module, n: int = HARD_IMAGES, k: int = HARD_PEAKS) -> None:
        """Top-k heatmap maxima (away from any fracture disc) of n random training images: windows centred there."""
        s, rng = self.size, self.rng
        self.hard.clear()
        js = rng.choice(len(self.whole["y"]), n, replace=False)
        net.eval()
        with torch.no_grad():
            for i in range(0, n, 16):
                b = js[i : i + 16]
                heatmap = net(self.whole["x"][b].float())[:, 0]
                heatmap = heatmap * (self.whole["t"][b, 0] < 0.5)  # not inside a fracture disc
                pooled = F.max_pool2d(heatmap[:, None], 15, 1, 7)[:, 0]
                for r, j in enumerate(b):
                    peaks = ((heatmap[r] == pooled[r]) & (heatmap[r] > 0)).nonzero()
                    values = heatmap[r][peaks[:, 0], peaks[:, 1]]
                    for q in values.argsort(descending=True)[:k]:
                        y, x = peaks[q].tolist()
                        shift = rng.uniform(-s / 4, s / 4, 2)
                        self.hard.append((int(j), *self.origin(y + shift[1], x + shift[0])))
        net.train()


def _pair_auc(net: torch.nn.Module, batches: WindowBatches, val_pairs: dict) -> float:
    """Fractured vs intact on the validation pairs: one window per pair, centred on the fracture's first point."""
    from sklearn.metrics import roc_auc_score

    xs = []
    for k in range(len(val_pairs["points"]) // 2):
        x, y = (float(v) for v in val_pairs["points"][2 * k][0])
        top, left = batches.origin(y, x)
        for j in (2 * k, 2 * k + 1):
            xs.append(batches.cut(val_pairs, j, top, left)[0])
    windows = torch.stack(xs)
    labels = np.tile([1, 0], len(windows) // 2)
    return roc_auc_score(labels, pf._scores(net, windows))


def train(args) -> None:
    """The window training probe (module docstring); one line every ``--eval`` steps."""
    # imported before seeding, as the prototype did at its top (no import draws, but the order is kept)
    from sklearn.metrics import roc_auc_score

    from custom_transforms.siamese_crop import SiameseCrop

    from scripts.fracture.losses import loss_for_variant
    from scripts.fracture.networks import build_network

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(2)
    loading = time.time()
    whole, pairs = _load(pf.CACHE / "whole_training.pt"), _load(pf.CACHE / "pairs_training.pt")
    val, val_pairs = _load(pf.CACHE / "whole_validation.pt"), _load(pf.CACHE / "pairs_validation.pt")
    val2 = None
    if args.supp:
        whole, pairs, val2 = _add_supplement(whole, pairs, val, args.supp_datalist, args.supp_cache)
        n_train, n_pairs, n_val2 = len(whole["y"]), len(pairs["points"]) // 2, len(val2["y"])
        print("train", n_train, "pairs", n_pairs, "val2", n_val2, int(val2["y"].sum()), flush=True)
    print("loaded", round(time.time() - loading), "s", flush=True)
    batches = WindowBatches(whole, pairs, SiameseCrop((args.window, args.window)), args, rng)
    net = build_network(args.variant, **json.loads(args.net))
    loss_fn = loss_for_variant(args.variant)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps) if args.cosine else None
    start, total = time.time(), 0.0
    for step in range(1, args.steps + 1):
        if args.hardneg and step >= HARD_FROM and step % HARD_EVERY == 0:
            batches.refresh_hard(net)
        xb, tb = batches()
        loss = loss_fn(net.forward_with_distance(xb), tb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss)  # as the prototype (torch warns once about requires_grad; the value is the same)
        if sched:
            sched.step()
        if step % args.eval == 0:
            val_scores = pf._scores(net, val["x"])
            train_scores = pf._scores(net, whole["x"][:200])
            line = (
                f"step {step} loss {total / args.eval:.4f} pairAUC {_pair_auc(net, batches, val_pairs):.3f} "
                f"trainAUC {roc_auc_score(whole['y'][:200].numpy(), train_scores):.3f} "
                f"valAUC {roc_auc_score(val['y'].numpy(), val_scores):.3f}"
            )
            if val2 is not None:
                line += f" val2AUC {roc_auc_score(val2['y'].numpy(), pf._scores(net, val2['x'])):.3f}"
            print(f"{line} ({time.time() - start:.0f} s)", flush=True)
            total = 0.0
    if args.save:
        torch.save(net.state_dict(), args.save)


def cache_supplement(args) -> None:
    """Preprocess a simulated dataset with twins (``--intact-twins``): ``supp_pairs.pt`` (each fractured image that
    has a twin, then its twin) and ``supp_whole.pt`` (every image, the datalist's order) in ``--out``."""
    from scripts.datalist import load_datalist

    dataset, out = Path(args.dataset_dir), Path(args.out)
    content = json.loads((dataset / "datalist.json").read_text())
    items = load_datalist(dataset / "datalist.json")

    def absolute(twin: dict) -> dict:
        # load_datalist makes the items' paths absolute; the twins' list it does not read, so here the same way
        twin = dict(twin)
        for key in ("image", "annotation", "intact_twin_of"):
            if key in twin and not Path(twin[key]).is_absolute():
                twin[key] = str((dataset / twin[key]).resolve())
        return twin

    twins = {t["intact_twin_of"]: t for t in map(absolute, content.get("intact_twins", []))}
    print(len(items), "items", len(twins), "twins", flush=True)
    pairs = []
    for item in items:
        if item["label"] and item["image"] in twins:
            twin = dict(
                twins[item["image"]],
                fractures_removed=json.loads(Path(item["annotation"]).read_text())["fractures"],
            )
            pairs += [item, twin]
    out.mkdir(parents=True, exist_ok=True)
    torch.save(pf._run_all(pairs), out / "supp_pairs.pt")
    torch.save(pf._run_all(items), out / "supp_whole.pt")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("train", help="the window training probe on fold 0's cached ROIs")
    p.add_argument("--variant", default="vanilla")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval", type=int, default=500, help="steps between evaluation lines")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--pairs", type=int, default=8, help="pairs per batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--net", default=NETWORK_JSON, help="build_network's keyword arguments (JSON)")
    p.add_argument(
        "--hardneg", type=float, default=0.0, help="share of uniform crops drawn from top-scoring negative windows"
    )
    p.add_argument("--cosine", action="store_true", help="cosine learning-rate schedule over --steps")
    p.add_argument("--supp", action="store_true", help="add the supplementary simulated dataset")
    p.add_argument("--save", default="", help="write the trained state_dict here")
    p.add_argument("--affine", type=float, default=0.0, help="rotation +-0.17 rad and log-scale +-AFFINE")
    p.add_argument("--flip", action="store_true", help="horizontal flip with probability 0.5")
    p.add_argument("--intensity", action="store_true", help="gain and grey offset")
    p.add_argument("--recipe-augment", action="store_true", help="the CPU recipe's RandSiameseWindowAugmentd draws")
    p.add_argument("--supp-cache", type=Path, default=SUPPLEMENT, help="cache-supplement's output folder")
    p.add_argument(
        "--supp-datalist",
        type=Path,
        default=SUPPLEMENT / "data" / "datalist.json",
        help="the supplement's datalist (the one its cache was built from)",
    )
    c = sub.add_parser("cache-supplement", help="preprocess the supplementary simulated dataset")
    c.add_argument("dataset_dir", metavar="DATASET_DIR", help="the simulator's output folder (datalist.json)")
    c.add_argument("--out", type=Path, default=SUPPLEMENT, help="where supp_whole.pt and supp_pairs.pt go")
    args = parser.parse_args(argv)
    meta = results_metadata.start(results_metadata.command_line(__file__, argv))
    torch.set_num_threads(2)
    print(f"probe {args.probe}: {vars(args)}", flush=True)
    {"train": train, "cache-supplement": cache_supplement}[args.probe](args)
    # the block a results file quoting these printed figures copies (results/fracture_learning_probes.md)
    print("\n".join(results_metadata.markdown_lines(results_metadata.finish(meta))), flush=True)


if __name__ == "__main__":
    main()

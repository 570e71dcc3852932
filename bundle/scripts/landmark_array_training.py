"""Detector training from a letterboxed array file, for a machine without the images or the DICOM stack.

``landmark_train.json`` trains from the radiographs through the bundle's loaders; on a 2-core CPU that is
slow. This module does the same training from arrays: the deterministic part of the training config's
preprocessing (``load_transforms``: LoadPXRd -> LoadAnnotationd -> Letterboxd) is run once where the
data lives and saved (:func:`export_letterboxed`); :func:`train_from_arrays` then trains the config's
``network_def`` with the same augmentation (``RandLandmarkAffined``'s draws, gamma and noise), the same
Gaussian targets, loss and synthetic negatives, batched on the GPU, validating MRE in mm each epoch and
keeping the best weights. The weights it writes load like ``landmark_train.json``'s.

Command line (``python -m scripts.landmark_array_training``, from the bundle folder)::

    export --datalist D --fold K --input_size H W --out arrays.npz [--sections training validation]
    train --arrays arrays.npz --out models/landmark_model.pt --seconds 420 [--batch_size 32 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from .heatmap_decoding import decode_heatmaps, gaussian_heatmaps
from .landmark_training import WeightedHeatmapMSE
from .landmark_transforms import RandLandmarkAffined, warp_affine
from .letterbox import LETTERBOX_MATRIX, apply_matrix
from .nonpelvic_radiographs import NONPELVIC_KINDS, render_nonpelvic

__all__ = ["export_letterboxed", "train_from_arrays"]

logger = logging.getLogger(__name__)


def export_letterboxed(items: Sequence[dict], load_transforms, path: str | os.PathLike, prefix: str) -> dict:
    """Run the deterministic loading chain on ``items`` and return arrays keyed ``<prefix>_*``.

    Images are stored as uint8 (the network sees them as ``value / 255``); landmarks in letterbox pixels,
    the letterbox matrices and the spacings let errors be measured in mm of the original images.
    """
    images, landmarks, matrices, spacings, names = [], [], [], [], []
    for item in items:
        d = dict(item)
        for t in load_transforms:
            d = t(d)
        image = d["image"]
        images.append(np.clip(np.rint(image.numpy()[0] * 255), 0, 255).astype(np.uint8))
        landmarks.append(np.asarray(d["landmarks"], np.float32))
        matrices.append(np.asarray(image.meta[LETTERBOX_MATRIX], np.float64))
        spacing = image.meta.get("spacing_mm")
        if spacing is None:
            raise ValueError(f"{item['image']}: no pixel spacing; errors in mm need it.")
        spacings.append(np.asarray(spacing, np.float64))
        names.append(os.path.basename(str(item["image"])))
    return {
        f"{prefix}_images": np.stack(images),
        f"{prefix}_landmarks": np.stack(landmarks),
        f"{prefix}_matrices": np.stack(matrices),
        f"{prefix}_spacings": np.stack(spacings),
        f"{prefix}_names": np.asarray(names),
    }


def _errors_mm(pred_in: np.ndarray, true_in: np.ndarray, matrices: np.ndarray, spacings: np.ndarray) -> np.ndarray:
    errors = []
    for p, t, m, s in zip(pred_in, true_in, matrices, spacings):
        inverse = np.linalg.inv(m)
        diff = apply_matrix(p, inverse) - apply_matrix(t, inverse)
        errors.append(np.linalg.norm(diff * np.array([s[1], s[0]]), axis=1))
    return np.stack(errors)


@torch.no_grad()
def _validate(network, images, landmarks, matrices, spacings, device, batch_size=64) -> np.ndarray:
    network.eval()
    preds = []
    for i in range(0, len(images), batch_size):
        x = torch.as_tensor(images[i : i + batch_size], device=device).float()[:, None] / 255
        preds.append(decode_heatmaps(network(x).float())[0].cpu().numpy())
    network.train()
    return _errors_mm(np.concatenate(preds), landmarks, matrices, spacings)


def train_from_arrays(
    arrays: dict,
    network: torch.nn.Module,
    out_path: str | os.PathLike,
    seconds: float = 420.0,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    heatmap_sigma: float = 2.0,
    foreground_weight: float = 10.0,
    negative_fraction: float = 0.15,
    negatives_pool: int = 400,
    augmentation: dict | None = None,
    gamma: Sequence[float] = (0.7, 1.4),
    noise_std: float = 0.02,
    validate_every: float = 30.0,
    device: str | torch.device = "cuda",
    seed: int = 0,
) -> dict:
    """Train ``network`` on ``arrays`` (from :func:`export_letterboxed`) for ``seconds`` of wall time.

    Adam with a cosine learning-rate decay over the time budget; validation (MRE in mm, network peaks
    only) every ``validate_every`` seconds; the best weights are saved to ``out_path`` (a state dict).

    Returns:
        ``{"history": [...], "best_mre_mm", "iterations", "samples", "seconds"}``.
    """
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    train_images = torch.as_tensor(arrays["training_images"], device=device)
    train_landmarks = np.asarray(arrays["training_landmarks"], np.float64)
    n, h, w = train_images.shape
    num_landmarks = train_landmarks.shape[1]
    negatives = torch.as_tensor(
        np.stack([render_nonpelvic(NONPELVIC_KINDS[i % len(NONPELVIC_KINDS)], (h, w), rng)[0] for i in range(negatives_pool)]),
        device=device,
    )
    augment = RandLandmarkAffined("image", **(augmentation or {}))
    augment.set_random_state(seed)
    loss_fn = WeightedHeatmapMSE(foreground_weight)
    network = network.to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    use_amp = device.type == "cuda"
    history, best, iterations, samples = [], math.inf, 0, 0
    start = last_val = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * min(elapsed / seconds, 1.0)))
        num_neg = int(rng.binomial(batch_size, negative_fraction))
        index = rng.integers(0, n, batch_size - num_neg)
        mats, points = [], []
        for i in index:
            augment.randomize()
            m = augment.matrix((h, w))
            p = apply_matrix(train_landmarks[i], m)
            if augment._flip:
                p = p[augment.mirror_permutation]
            mats.append(m)
            points.append(p)
        for _ in range(num_neg):
            augment.randomize()
            mats.append(augment.matrix((h, w)))
        x = torch.cat([train_images[torch.as_tensor(index, device=device)].float() / 255, negatives[torch.as_tensor(rng.integers(0, len(negatives), num_neg), device=device)]])
        x = warp_affine(x[:, None], torch.as_tensor(np.stack(mats)))
        g = torch.as_tensor(rng.uniform(*gamma, size=(batch_size, 1, 1, 1)), device=device, dtype=torch.float32)
        noise = torch.as_tensor(rng.uniform(0, noise_std, size=(batch_size, 1, 1, 1)), device=device, dtype=torch.float32)
        x = (x.clamp(0, 1) ** g + noise * torch.randn_like(x)).clamp(0, 1)
        target = torch.zeros(batch_size, num_landmarks, h, w, device=device)
        if points:
            target[: len(points)] = gaussian_heatmaps(torch.as_tensor(np.stack(points), dtype=torch.float32, device=device), (h, w), heatmap_sigma)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(network(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        iterations += 1
        samples += batch_size
        now = time.perf_counter()
        if now - last_val >= validate_every or now - start >= seconds:
            last_val = now
            errors = _validate(network, arrays["validation_images"], arrays["validation_landmarks"], arrays["validation_matrices"], arrays["validation_spacings"], device)
            mre, sdr4 = float(errors.mean()), float(100 * (errors <= 4).mean())
            history.append({"seconds": round(now - start, 1), "iterations": iterations, "loss": loss.item(), "val_mre_mm": mre, "val_sdr_4mm": sdr4})
            logger.info(f"{now - start:6.0f} s, iteration {iterations}: loss {loss.item():.5f}, val MRE {mre:.2f} mm, SDR@4mm {sdr4:.1f} %")
            if mre < best:
                best = mre
                state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
                tmp = f"{out_path}.tmp"
                torch.save(state, tmp)
                os.replace(tmp, out_path)
    return {"history": history, "best_mre_mm": best, "iterations": iterations, "samples": samples, "seconds": time.perf_counter() - start}


def _parse(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.landmark_array_training", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="letterbox the split's images into an .npz")
    ex.add_argument("--datalist", required=True)
    ex.add_argument("--fold", type=int, default=0)
    ex.add_argument("--input_size", type=int, nargs=2, default=(256, 256))
    ex.add_argument("--sections", nargs="+", default=("training", "validation"))
    ex.add_argument("--out", required=True)
    tr = sub.add_parser("train", help="train the config's network_def from an .npz")
    tr.add_argument("--arrays", required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "landmark_train.json"))
    tr.add_argument("--seconds", type=float, default=420.0)
    tr.add_argument("--batch_size", type=int, default=32)
    tr.add_argument("--learning_rate", type=float, default=1e-3)
    tr.add_argument("--heatmap_sigma", type=float, default=2.0)
    tr.add_argument("--negative_fraction", type=float, default=0.15)
    tr.add_argument("--validate_every", type=float, default=30.0)
    tr.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--history", default=None, help="write the training history JSON here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = _parse(argv)
    from monai.bundle import ConfigParser

    if args.command == "export":
        from .datalist import fold_split

        config = ConfigParser()
        config.read_config(os.path.join(os.path.dirname(__file__), "..", "configs", "landmark_train.json"))
        config["input_size"] = list(args.input_size)
        load = config.get_parsed_content("load_transforms")
        arrays = {}
        for section in args.sections:
            arrays.update(export_letterboxed(fold_split(args.datalist, args.fold, section), load, args.out, section))
            logger.info(f"{section}: {len(arrays[section + '_images'])} images letterboxed to {tuple(args.input_size)}")
        np.savez_compressed(args.out, **arrays)
        return
    config = ConfigParser()
    config.read_config(args.config)
    arrays = dict(np.load(args.arrays))
    config["input_size"] = list(arrays["training_images"].shape[1:])
    network = config.get_parsed_content("network_def")
    result = train_from_arrays(
        arrays,
        network,
        args.out,
        seconds=args.seconds,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        heatmap_sigma=args.heatmap_sigma,
        negative_fraction=args.negative_fraction,
        validate_every=args.validate_every,
        device=args.device,
        seed=args.seed,
    )
    result["device"] = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    result["arguments"] = vars(args)
    logger.info(f"best validation MRE {result['best_mre_mm']:.2f} mm after {result['iterations']} iterations ({result['samples']} samples) in {result['seconds']:.0f} s")
    if args.history:
        with open(args.history, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""Probe: where the AASN's image score comes from on the validation fold (validation only; no test fold is read).

The image score is the heatmap's maximum. For each weights file given, on the validation split of ``--fold`` (or
the first ``--training-images`` of its training split, to see how far the training images are fitted):

* ``image_auc``: the score's AUC (what the bundle's evaluator reports);
* ``auc_at_fracture``: the AUC of the maximum inside the fracture discs of each positive image (the target mask)
  against the maximum of each negative: would the score separate the classes if positives peaked at their breaks?
* ``positives_peaking_at_fracture``: the share of positive images whose maximum lies inside their fracture disc;
* ``image_auc_interior`` (``--interiors``): the AUC of the maximum over the ROI less that many pixels at each edge;
* ``negative_peaks_at_border``: the share of negative images whose maximum lies within ``--border`` pixels of the
  ROI's edge, and ``negative_peak_grid``: a 3 x 3 count of where in the ROI their maxima lie (rows: top to bottom;
  columns: image left to right).

::

    python benchmarks/probe_heatmap_peaks.py --bundle-root RUN --dataset-dir DATA --weights RUN/models/model.pt ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import results_metadata  # noqa: E402
from bundle_validation import DEFAULT_CONFIGS, training_parser  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402


@torch.no_grad()
def heatmap_peaks(
    network, loader, prepare_batch, device, border: int, inferer=None, interiors=(), smooth_sigma: float = 0.0
) -> dict:
    """``smooth_sigma`` > 0: the logits are blurred by a Gaussian of that standard deviation (ROI pixels) first, so
    that the maximum is over fracture-sized neighbourhoods rather than single pixels."""
    network.eval()
    blur = None
    if smooth_sigma > 0:
        from monai.networks.layers import GaussianFilter

        blur = GaussianFilter(spatial_dims=2, sigma=smooth_sigma)
    positive_at_fracture, negative_max, positive_max, peaking, border_peaks, grid = [], [], [], [], [], np.zeros((3, 3))
    interior_max = {m: [] for m in interiors}  # the maximum over the ROI less m pixels at each edge
    image_labels = []
    for batch in loader:
        inputs, target = prepare_batch(batch, device)
        logits = network(inputs) if inferer is None else inferer(inputs, network)
        logits = (logits if blur is None else blur(logits))[:, 0]
        labels = torch.as_tensor(batch["image_label"]).reshape(-1)
        for logit, mask, label in zip(logits, target[:, 0], labels, strict=True):
            h, w = logit.shape
            flat = int(torch.argmax(logit))
            row, col = divmod(flat, w)
            peak = float(logit.max())
            image_labels.append(int(label))
            for m in interiors:
                interior_max[m].append(float(logit[m : h - m, m : w - m].max()))
            if int(label):
                positive_max.append(peak)
                inside = mask > 0.5
                positive_at_fracture.append(float(logit[inside].max()) if inside.any() else float("-inf"))
                peaking.append(bool(inside[row, col]))
            else:
                negative_max.append(peak)
                border_peaks.append(min(row, col, h - 1 - row, w - 1 - col) < border)
                grid[min(3 * row // h, 2), min(3 * col // w, 2)] += 1
    labels = [1] * len(positive_max) + [0] * len(negative_max)
    return {
        "images": len(labels),
        "positives": len(positive_max),
        "image_auc": round(float(roc_auc_score(labels, positive_max + negative_max)), 4),
        "auc_at_fracture": round(float(roc_auc_score(labels, positive_at_fracture + negative_max)), 4),
        "positives_peaking_at_fracture": round(float(np.mean(peaking)), 3),
        "negative_peaks_at_border": round(float(np.mean(border_peaks)), 3),
        "negative_peak_grid": grid.astype(int).tolist(),
        "image_auc_interior": {
            str(m): round(float(roc_auc_score(image_labels, scores)), 4) for m, scores in interior_max.items()
        },
        "median_logit_max": {
            "positives": round(float(np.median(positive_max)), 3),
            "negatives": round(float(np.median(negative_max)), 3),
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle-root", type=Path, required=True)
    p.add_argument("--dataset-dir", type=Path, required=True)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="relative to bundle/")
    p.add_argument("--weights", type=Path, nargs="+", required=True)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--border", type=int, default=8, help="pixels of the ROI's edge")
    p.add_argument("--out", type=Path, help="append the rows (JSON lines, with provenance) here")
    p.add_argument("--window", type=int, nargs=2, help="score by windows of this size (SiameseWindowInferer)")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument(
        "--interiors", type=int, nargs="*", default=[], help="also the AUC away from these edge margins (px)"
    )
    p.add_argument(
        "--training-images", type=int, default=0, help="score this many training images instead (overfitting check)"
    )
    p.add_argument("--smooth-sigma", type=float, default=0.0, help="blur the logits first (ROI pixels; 0: no)")
    p.add_argument(
        "--flip", action="store_true", help="also score the flipped input and average (FlipAveragingInferer)"
    )
    args = p.parse_args(argv)
    meta = results_metadata.start(results_metadata.command_line("probe_heatmap_peaks.py", sys.argv[1:]))
    overrides = {}
    if args.training_images:
        split = f"$scripts.datalist.fold_split(@datalist, @fold, 'training')[:{args.training_images}]"
        overrides["validate#dataset#data"] = split
    parser = training_parser(args.configs, args.bundle_root, args.dataset_dir, args.fold, **overrides)
    network = parser.get_parsed_content("network")
    loader = parser.get_parsed_content("validate#dataloader")
    prepare_batch = parser.get_parsed_content("prepare_batch")
    device = parser.get_parsed_content("device")
    from scripts.fracture.inferers import FlipAveragingInferer, SiameseWindowInferer

    inferer = SiameseWindowInferer(args.window, overlap=args.overlap)
    if args.flip:
        inferer = FlipAveragingInferer(inferer)
    for weights in args.weights:
        network.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
        row = {"weights": str(weights), "split": "training" if args.training_images else "validation"}
        row |= {"window": args.window, "overlap": args.overlap if args.window else None, "flip": args.flip}
        row["smooth_sigma"] = args.smooth_sigma
        row |= heatmap_peaks(
            network, loader, prepare_batch, device, args.border, inferer, args.interiors, args.smooth_sigma
        )
        row["provenance"] = results_metadata.finish(dict(meta))
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

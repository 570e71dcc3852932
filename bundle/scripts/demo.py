"""The built-in demo: simulate radiographs, train, evaluate on the test fold, infer, print the results.

Run from the bundle folder (``make demo`` does)::

    python -m scripts.demo --out outputs/demo

Everything goes under ``--out``: ``data/`` (simulated DICOMs, annotations, datalist), ``models/``
(``last.pt``, ``model.pt``), ``logs/`` (TensorBoard), ``eval/`` (metrics, curves, case pictures) and
``inference/`` (per-image heatmap, overlay and report). The same three ``monai.bundle run`` calls
a user would type are made in-process, with ``configs/demo.json`` on top of the real configs (small
ROI, tiny DenseNet, few epochs) so that it finishes in minutes on a CPU. A rerun resumes or reuses
what is already there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE / "configs"


def _run(config_files: list[Path], **overrides) -> None:
    from monai.bundle import run

    run(
        config_file=[str(f) for f in config_files],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        **overrides,
    )


def _inference_list(datalist: Path, fold: int, out: Path, count: int) -> Path:
    """A datalist of a few test-fold images (fractured first) for the inference step."""
    from scripts.datalist import fold_split

    test = sorted(fold_split(datalist, fold, "test"), key=lambda it: (-it["label"], it["image"]))
    chosen = test[: max(count - 1, 1)] + [it for it in test if it["label"] == 0][:1]
    path = out / "inference_input.json"
    path.write_text(json.dumps([{"image": it["image"], "annotation": it["annotation"]} for it in chosen], indent=1))
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(BUNDLE / "outputs" / "demo"), help="output folder")
    parser.add_argument("--fold", type=int, default=0, help="test fold (0-4)")
    parser.add_argument("--num-images", type=int, default=None, help="simulated radiographs (demo.json's default)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (demo.json's default)")
    parser.add_argument("--variant", default="aasn", help="network variant (configs/variants)")
    parser.add_argument("--num-infer", type=int, default=3, help="test images to run inference on")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    datalist = data / "datalist.json"
    configs = [CONFIGS / "train.json"]
    demo = [CONFIGS / "demo.json"]
    common = {"bundle_root": str(out), "dataset_dir": str(data), "fold": args.fold, "variant": args.variant,
              "generate_demo_data": True}
    if args.num_images:
        common["demo_num_images"] = args.num_images
    start = time.time()

    print(f"[demo] 1/3 training on simulated data in {data} (generated first if absent)", flush=True)
    _run(configs + demo, **common, **({"max_epochs": args.epochs} if args.epochs else {}))
    t_train = time.time() - start

    print("[demo] 2/3 evaluating on the test fold", flush=True)
    _run(configs + [CONFIGS / "evaluate.json"] + demo, **common)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())

    print("[demo] 3/3 inference on a few test images", flush=True)
    infer_overrides = {k: v for k, v in common.items() if k in ("bundle_root", "dataset_dir", "variant")}
    _run(
        [CONFIGS / "inference.json"] + demo,
        **infer_overrides,
        input=str(_inference_list(datalist, args.fold, out, args.num_infer)),
        output_dir=str(out / "inference"),
    )
    reports = sorted((out / "inference").glob("*/report.json"))

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    lines = [
        "",
        f"AASN demo ({args.variant}), test fold {args.fold}: {metrics['num_images']} images, "
        f"{metrics['num_positive']} fractured, {metrics['num_fractures']} fracture sites",
        f"  AUC                  {pct(metrics['auc'])}",
        f"  AP                   {pct(metrics['ap'])}",
        f"  recall at 1 % FP     {pct(metrics['recall_at_fp_1pct'])}",
        f"  recall at 10 % FP    {pct(metrics['recall_at_fp_10pct'])}",
        f"metrics:           {out / 'eval' / 'metrics.json'} (per case: {out / 'eval' / 'per_case.csv'})",
        f"curves:            {out / 'eval'}/roc.png, pr.png, froc.png",
        f"case pictures:     {out / 'eval' / 'cases'} (ROI, mirrored ROI, heatmap, feature distance)",
        f"inference:         {out / 'inference'} ({len(reports)} images: report.json, overlay.png, heatmap.nii.gz)",
        f"TensorBoard:       tensorboard --logdir {out / 'logs'}",
        f"time: {time.time() - start:.0f} s (training {t_train:.0f} s)",
    ]
    print("\n".join(lines), flush=True)
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(0 if main() else 1)

"""The paper's Tables 1 and 2 on simulated radiographs: every method, subject-grouped 5-fold cross-validation.

    .venv/bin/python benchmarks/bench_accuracy.py                       # reduced scale (CPU, ~100 min on 2 cores)
    .venv/bin/python benchmarks/bench_accuracy.py --scale paper         # 256 x 512, DenseNet-121, 60 epochs (GPU)
    .venv/bin/python benchmarks/bench_accuracy.py --methods vanilla aasn --folds 0 1 --epochs 4

Steps, each resumable (a rerun skips what is finished):

1. ``simulation.generate_dataset``: ``--num-images`` atlas radiographs (all 32 atlas members, ``--seed``); the
   simulator assigns folds per subject, so no subject is ever in two folds.
2. For every test fold and method: the bundle's own ``configs/train.json`` (+ ``variants/<method>.json``) and
   then ``configs/evaluate.json``, run with ``monai.bundle.run`` and the scale's overrides. Model selection uses
   only the validation split of the training folds (``BestModelSaver`` on ``val_auc``); the test fold is seen
   once, by the evaluation, whose ``metrics.json`` and ``per_case.csv`` are the raw results.
3. Tables 1 and 2: mean and standard deviation over folds of AUC, AP and fracture recall at 1 % / 10 % FP area
   ratio (the paper's modified FROC, ``scripts.metrics``); a 95 % bootstrap interval of the AUC of the pooled
   out-of-fold scores, resampling subjects (images of one subject are not independent); ROC and PR curves of
   all methods (pooled out-of-fold scores) on one figure.

The reduced scale differs from the paper (see ``SCALES``): ROI 96 x 192 on 640 x 640 px simulated images, a tiny
DenseNet (4 blocks of 2 layers) from scratch, few epochs, and no random augmentation, so that the preprocessing
runs once per image into a ``PersistentDataset`` cache shared by every method and fold.

Results: ``<results>/accuracy_<scale>.md`` and ``.json`` (command, configuration, seed, data, package versions,
machine, per-fold figures) and ``accuracy_<scale>_curves.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
CONFIGS = BUNDLE / "configs"
sys.path.insert(0, str(BUNDLE))

#: Table 1 of the paper: state-of-the-art methods (image-level-label methods first) and AASN.
TABLE1 = ("chexnet", "lse", "liu", "deepsymnet", "cbn", "aasn")
#: Table 2 of the paper: the ablation from Vanilla DenseNet to AASN.
TABLE2 = ("vanilla", "ff", "ff_fa", "ff_cl", "ff_fa_cl_noproj", "aasn")
METHODS = ("vanilla", "ff", "ff_fa", "ff_cl", "ff_fa_cl_noproj", "aasn", "cbn", "deepsymnet", "liu", "chexnet", "lse")
#: Trained with image-level labels: the paper reports no localisation figures for them.
IMAGE_LEVEL = ("chexnet", "lse")
METRICS = ("auc", "ap", "recall_at_fp_1pct", "recall_at_fp_10pct")
METRIC_NAMES = {"auc": "AUC", "ap": "AP", "recall_at_fp_1pct": "Recall FP=1%", "recall_at_fp_10pct": "Recall FP=10%"}
NAMES = {
    "vanilla": "Vanilla DenseNet", "ff": "FF", "ff_fa": "FF-FA", "ff_cl": "FF-CL",
    "ff_fa_cl_noproj": "FF-FA-CL (no proj.)", "aasn": "AASN", "cbn": "CBN", "deepsymnet": "DeepSymNet",
    "liu": "Liu et al.", "chexnet": "CheXNet*", "lse": "LSE (Wang et al.)*",
}
#: The paper's figures (Tables 1 and 2, percent), for the comparison column.
PAPER = {
    "chexnet": {"auc": 93.42, "ap": 86.33},
    "lse": {"auc": 95.43, "ap": 93.31},
    "liu": {"auc": 96.84, "ap": 94.29, "recall_at_fp_1pct": 2.78, "recall_at_fp_10pct": 24.19},
    "deepsymnet": {"auc": 96.29, "ap": 94.45, "recall_at_fp_1pct": 69.66, "recall_at_fp_10pct": 90.07},
    "cbn": {"auc": 97.00, "ap": 94.92, "recall_at_fp_1pct": 73.93, "recall_at_fp_10pct": 90.90},
    "vanilla": {"auc": 96.52, "ap": 94.52, "recall_at_fp_1pct": 70.79, "recall_at_fp_10pct": 89.46},
    "ff": {"auc": 96.93, "ap": 94.77, "recall_at_fp_1pct": 73.22, "recall_at_fp_10pct": 89.93},
    "ff_fa": {"auc": 97.20, "ap": 95.68, "recall_at_fp_1pct": 76.68, "recall_at_fp_10pct": 91.51},
    "ff_cl": {"auc": 97.46, "ap": 95.36, "recall_at_fp_1pct": 76.27, "recall_at_fp_10pct": 91.09},
    "ff_fa_cl_noproj": {"auc": 97.31, "ap": 96.15, "recall_at_fp_1pct": 77.26, "recall_at_fp_10pct": 92.70},
    "aasn": {"auc": 97.71, "ap": 96.50, "recall_at_fp_1pct": 77.87, "recall_at_fp_10pct": 92.71},
}

TINY_DENSENET = {"init_features": 16, "growth_rate": 8, "block_config": [2, 2, 2, 2], "bn_size": 2, "projection_channels": 16}
SCALES: dict[str, dict[str, Any]] = {
    "reduced": {
        "description": "2-core CPU scale: ROI 96 x 192 from 640 x 640 px images (0.67 mm pixels), tiny DenseNet "
        "from scratch, no random augmentation (preprocessing cached once for all runs)",
        "num_images": 1200,
        "image_size": [640, 640],
        "roi_size": [96, 192],
        "network_kwargs": TINY_DENSENET,
        "max_epochs": 10,
        "val_interval": 2,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "pretrained": None,
        "augmentation": False,
    },
    "paper": {
        "description": "the paper's setting: ROI 256 x 512, DenseNet-121, the bundle's training schedule and "
        "augmentation (GPU; pass --pretrained with ImageNet DenseNet-121 weights and --lr 1e-5 for the paper's init)",
        "num_images": 2359,
        "image_size": [2500, 2000],
        "roi_size": [256, 512],
        "network_kwargs": {},
        "max_epochs": 60,
        "val_interval": 2,
        "batch_size": 8,
        "learning_rate": 1e-4,
        "pretrained": None,
        "augmentation": True,
    },
}


# ----------------------------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the finite values; ``nan`` if none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def bootstrap_auc_ci(
    labels: Sequence[int],
    scores: Sequence[float],
    groups: Sequence[Any] | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC.

    Args:
        labels: 0/1 image labels.
        scores: image scores.
        groups: resampling units (e.g. subjects): whole groups are drawn with replacement, so that correlated
            images of one subject do not narrow the interval; ``None`` resamples images.
        n_boot: resamples; those with a single class are skipped.
        alpha: 1 - coverage.
        seed: random seed of the resampling.
    """
    from scripts.metrics import classification_metrics

    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"bootstrap_auc_ci: {labels.size} labels but {scores.size} scores")
    groups = np.arange(labels.size) if groups is None else np.asarray(groups).ravel()
    units, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == u) for u in range(units.size)]
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        idx = np.concatenate([members[u] for u in rng.integers(0, units.size, units.size)])
        if np.unique(labels[idx]).size == 2:
            aucs.append(classification_metrics(scores[idx], labels[idx])["auc"])
    if not aucs:
        return float("nan"), float("nan")
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# ----------------------------------------------------------------------------------------------- the runs
def run_overrides(scale: dict, method: str, fold: int, run_dir: Path, datalist: Path, cache_dir: Path | None,
                  seed: int) -> dict[str, Any]:
    """``monai.bundle.run`` overrides of ``train.json`` for one method and test fold."""
    overrides = {
        "bundle_root": str(run_dir),
        "dataset_dir": str(datalist.parent),
        "datalist": str(datalist),
        "generate_demo_data": False,
        "fold": fold,
        "seed": seed,
        "variant": method,
        "roi_size": list(scale["roi_size"]),
        "network_kwargs": dict(scale["network_kwargs"]),
        "pretrained": scale["pretrained"],
        "max_epochs": scale["max_epochs"],
        "val_interval": min(scale["val_interval"], scale["max_epochs"]),
        "batch_size": scale["batch_size"],
        "learning_rate": scale["learning_rate"],
        "show_progress": False,
        "resume": True,
    }
    if not scale["augmentation"]:
        # Deterministic training chain: everything up to the network input is cached on disk once and shared by
        # every method and fold (a PersistentDataset's key is the datalist item alone, so one cache per scale).
        overrides["train#random_transforms"] = "$@geometry_transforms + [@to_float, @train#select]"
        overrides["num_workers"] = 0
        for section in ("training", "validation"):
            part = "train" if section == "training" else "validate"
            overrides[f"{part}#dataset"] = {
                "_target_": "PersistentDataset",
                "data": f"$scripts.datalist.fold_split(@datalist, @fold, '{section}')",
                "transform": f"@{part}#preprocessing",
                "cache_dir": str(cache_dir),
            }
    return overrides


def _bundle_run(config_files: Sequence[Path], overrides: dict) -> None:
    from monai.bundle import run

    run(config_file=[str(f) for f in config_files], meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"), **overrides)


def train_and_evaluate(scale: dict, method: str, fold: int, work: Path, datalist: Path, seed: int) -> dict:
    """Train one method on one fold with the bundle's configs and evaluate it on the test fold (skipped if done)."""
    run_dir = work / "runs" / method / f"fold{fold}"
    metrics_path = run_dir / "eval" / "metrics.json"
    if metrics_path.is_file():
        return json.loads(metrics_path.read_text())
    cache_dir = work / "cache" / "x".join(str(s) for s in scale["roi_size"])
    overrides = run_overrides(scale, method, fold, run_dir, datalist, cache_dir, seed)
    variant = CONFIGS / "variants" / f"{method}.json"
    start = time.time()
    _bundle_run([CONFIGS / "train.json", variant], overrides)
    trained = time.time()
    best = run_dir / "models" / "model.pt"
    selected = "best validation AUC"
    if not best.is_file():  # no validation AUC was ever defined (tiny runs): keep the last epoch's weights
        import torch

        last = torch.load(run_dir / "models" / "last.pt", map_location="cpu", weights_only=True)
        torch.save(last["network"], best)
        selected = "last epoch (validation AUC undefined)"
    evaluation = {k: v for k, v in overrides.items() if "#" not in k}
    evaluation.update(output_dir=str(run_dir / "eval"), num_case_pictures=0)
    if not scale["augmentation"]:  # evaluate.json's chain keeps more keys: its own cache
        evaluation["validate#dataset"] = {
            "_target_": "PersistentDataset",
            "data": "$scripts.datalist.fold_split(@datalist, @fold, 'test')",
            "transform": "@validate#preprocessing",
            "cache_dir": str(cache_dir) + "_evaluation",
        }
    _bundle_run([CONFIGS / "train.json", CONFIGS / "evaluate.json", variant], evaluation)
    metrics = json.loads(metrics_path.read_text())
    metrics["train_seconds"], metrics["eval_seconds"] = trained - start, time.time() - trained
    metrics["weights"] = selected
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return metrics


def read_cases(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{**r, "label": int(r["label"]), "score": float(r["score"])} for r in csv.DictReader(f)]


# ----------------------------------------------------------------------------------------------- the report
def summarise(work: Path, methods: Sequence[str], folds: Sequence[int], n_boot: int, seed: int) -> dict:
    """Per method: per-fold metrics, mean/std over folds, pooled out-of-fold AUC with its bootstrap interval."""
    from scripts.metrics import classification_metrics

    summary = {}
    for method in methods:
        per_fold, cases = {}, []
        for fold in folds:
            run = work / "runs" / method / f"fold{fold}" / "eval"
            if (run / "metrics.json").is_file():
                per_fold[fold] = json.loads((run / "metrics.json").read_text())
                cases += [{**c, "fold": fold} for c in read_cases(run / "per_case.csv")]
        if not per_fold:
            continue
        row: dict[str, Any] = {"folds": sorted(per_fold), "per_fold": per_fold}
        for m in METRICS:
            row[m] = dict(zip(("mean", "std"), mean_std([per_fold[f].get(m) for f in sorted(per_fold)])))
        labels = [c["label"] for c in cases]
        scores = [c["score"] for c in cases]
        row["pooled"] = classification_metrics(scores, labels)
        row["pooled"]["auc_ci95"] = bootstrap_auc_ci(labels, scores, [c["subject"] for c in cases], n_boot, seed=seed)
        row["pooled"]["num_images"] = len(cases)
        row["train_minutes"] = sum(per_fold[f].get("train_seconds", 0.0) for f in per_fold) / 60
        summary[method] = row
    return summary


def _pct(stat: dict) -> str:
    if not np.isfinite(stat["mean"]):
        return "-"
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def markdown_table(summary: dict, methods: Sequence[str], localisation_for_image_level: bool = False) -> str:
    head = "| method | folds | " + " | ".join(METRIC_NAMES[m] for m in METRICS) + " | pooled AUC [95 % CI] | paper AUC / R@1% |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for method in methods:
        if method not in summary:
            lines.append(f"| {NAMES[method]} | 0 | " + " | ".join("not run" for _ in METRICS) + " | - | - |")
            continue
        row = summary[method]
        cells = []
        for m in METRICS:
            hide = m.startswith("recall") and method in IMAGE_LEVEL and not localisation_for_image_level
            cells.append("-" if hide else _pct(row[m]))
        low, high = row["pooled"]["auc_ci95"]
        paper = PAPER.get(method, {})
        paper_cell = f"{paper.get('auc', float('nan')):.2f} / " + (
            f"{paper['recall_at_fp_1pct']:.2f}" if "recall_at_fp_1pct" in paper else "-")
        lines.append(f"| {NAMES[method]} | {len(row['folds'])} | " + " | ".join(cells)
                     + f" | {100 * row['pooled']['auc']:.2f} [{100 * low:.2f}, {100 * high:.2f}] | {paper_cell} |")
    return "\n".join(lines)


def plot_curves(work: Path, summary: dict, path: Path) -> str:
    """ROC and PR curves of every method (pooled out-of-fold scores) on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(12, 5.5))
    for method, row in summary.items():
        cases = [c for f in row["folds"] for c in read_cases(work / "runs" / method / f"fold{f}" / "eval" / "per_case.csv")]
        labels, scores = [c["label"] for c in cases], [c["score"] for c in cases]
        if len(set(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        precision, recall, _ = precision_recall_curve(labels, scores)
        style = "-" if method in ("aasn", "vanilla") else "--"
        roc_ax.plot(fpr, tpr, style, label=f"{NAMES[method]} ({100 * row['pooled']['auc']:.1f})")
        pr_ax.plot(recall, precision, style, label=f"{NAMES[method]} ({100 * row['pooled']['ap']:.1f})")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (pooled out-of-fold, AUC %)")
    pr_ax.set(xlabel="recall", ylabel="precision", title="PR (pooled out-of-fold, AP %)")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def environment() -> dict:
    import monai
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__}
    for name in ("numpy", "pydicom", "skimage", "sklearn", "ignite"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported, not fatal
            versions[name] = "absent"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "versions": versions,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average": load},
    }


def write_results(results_dir: Path, scale_name: str, record: dict, summary: dict, curves: str | None) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / f"accuracy_{scale_name}"
    stem.with_suffix(".json").write_text(json.dumps({**record, "summary": summary}, indent=1, default=float))
    data, scale = record["data"], record["scale"]
    done = {m: len(summary[m]["folds"]) for m in summary}
    lines = [
        f"# Accuracy benchmark ({scale_name} scale)",
        "",
        f"Command: `{record['command']}`  ",
        f"Finished: {record['finished']}; wall time {record['wall_minutes']:.1f} min; machine: "
        f"{record['environment']['machine']['processor']}, {record['environment']['machine']['cpu_count']} cores, "
        f"torch threads {record['environment']['machine']['torch_threads']}.  ",
        f"Data: {data['num_images']} simulated {data['anatomy']} radiographs ({data['num_positive']} with fractures, "
        f"{data['num_subjects']} subjects, seed {data['seed']}, {data['image_size'][0]} x {data['image_size'][1]} px), "
        "folds assigned per subject by the simulator; test = fold k, validation = a subject-grouped 1/8 of the rest.  ",
        f"Scale: {scale['description']}; ROI {scale['roi_size'][0]} x {scale['roi_size'][1]}, network_kwargs "
        f"`{json.dumps(scale['network_kwargs'])}`, {scale['max_epochs']} epochs (validation every {scale['val_interval']}, "
        f"best validation AUC kept), batch {scale['batch_size']}, Adam lr {scale['learning_rate']}, seed {record['seed']}.  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in record['environment']['versions'].items())}.",
        "",
        "Figures: mean ± standard deviation over test folds (percent); pooled AUC = all out-of-fold test scores "
        f"together, 95 % bootstrap interval over subjects ({record['n_boot']} resamples). Recall at FP = the paper's "
        "modified FROC (recall of fracture points against the false-positive share of pixels more than 20 mm from every "
        "fracture), in ROI space. * image-level labels (no localisation figures, as in the paper). "
        "The last column is the paper's figure.",
        "",
        "## Table 1: comparison with other methods",
        "",
        markdown_table(summary, TABLE1),
        "",
        "## Table 2: ablation (Vanilla DenseNet -> AASN)",
        "",
        markdown_table(summary, TABLE2),
        "",
    ]
    if curves:
        lines += [f"ROC and PR curves of all methods: `{Path(curves).name}`", ""]
    incomplete = {m: n for m, n in done.items() if n < len(record["folds"])}
    missing = [m for m in record["methods"] if m not in summary]
    if incomplete or missing:
        lines += ["**Incomplete**: " + ", ".join([f"{NAMES[m]} {n}/{len(record['folds'])} folds" for m, n in incomplete.items()]
                                              + [f"{NAMES[m]} not run" for m in missing]), ""]
    if record.get("notes"):
        lines += ["## Notes", "", record["notes"], ""]
    path = stem.with_suffix(".md")
    path.write_text("\n".join(lines))
    return path


# ----------------------------------------------------------------------------------------------- main
def ensure_dataset(data_dir: Path, num_images: int, image_size: Sequence[int], seed: int, workers: int) -> Path:
    from simulation.dataset import generate_dataset

    datalist = data_dir / "datalist.json"
    if not datalist.is_file():
        generate_dataset(data_dir, num_images, anatomy="atlas", seed=seed, size=tuple(image_size), workers=workers,
                         progress=False)
    return datalist


def screen_dataset(datalist: Path, roi_size: Sequence[int], out: Path) -> tuple[Path, list[dict]]:
    """Drop the images the preprocessing refuses (``GeometryError``: e.g. a folding TPS warp; ``AnnotationError``:
    e.g. a landmark outside the simulated detector), as the bundle would stop on them; returns the usable datalist (written once to ``out``) and the refused images with the reason."""
    refused_path = out.with_name(out.stem + "_refused.json")
    if out.is_file() and refused_path.is_file():
        return out, json.loads(refused_path.read_text())
    from monai.transforms import Compose

    from custom_transforms.errors import AnnotationError, GeometryError
    from custom_transforms.pipeline import aasn_geometry, aasn_loading
    from scripts.datalist import load_datalist

    chain = Compose(aasn_loading() + aasn_geometry(roi_size=roi_size))
    content = json.loads(datalist.read_text())
    absolute = load_datalist(datalist)
    usable, refused = [], []
    for item, resolved in zip(content["training"], absolute):
        try:
            chain(dict(resolved))
            usable.append(item)
        except RuntimeError as error:  # MONAI wraps the transform's error
            cause = error.__cause__
            if not isinstance(cause, (AnnotationError, GeometryError)):
                raise
            refused.append({"image": item["image"], "reason": str(cause).split(": ", 1)[-1]})
    base = datalist.parent
    for item in usable:  # the screened datalist lives elsewhere: absolute paths
        item["image"], item["annotation"] = str(base / item["image"]), str(base / item["annotation"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**content, "training": usable}, indent=1))
    refused_path.write_text(json.dumps(refused, indent=1))
    return out, refused


def describe_data(datalist: Path) -> dict:
    """What the simulator's datalist says about the dataset (its own seed, size and anatomy)."""
    content = json.loads(datalist.read_text())
    items = content["training"]
    return {
        "datalist": str(datalist), "description": content.get("description"), "anatomy": content.get("anatomy"),
        "seed": content.get("seed"), "image_size": content.get("size"), "num_images": len(items),
        "num_positive": sum(int(i["label"]) for i in items), "num_subjects": len({i["subject"] for i in items}),
        "images_per_fold": {str(k): sum(1 for i in items if int(i["fold"]) == k) for k in range(5)},
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="reduced")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--num-images", type=int, help="simulated radiographs (scale default)")
    parser.add_argument("--image-size", type=int, nargs=2, help="simulated detector H W (scale default)")
    parser.add_argument("--epochs", type=int, help="training epochs (scale default)")
    parser.add_argument("--roi", type=int, nargs=2, help="ROI H W (scale default)")
    parser.add_argument("--lr", type=float, help="learning rate (scale default)")
    parser.add_argument("--pretrained", help="torchvision DenseNet-121 state dict for initialisation")
    parser.add_argument("--seed", type=int, default=0, help="simulation, training and bootstrap seed")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "outputs" / "accuracy"),
                        help="data, caches, runs (not committed)")
    parser.add_argument("--data", help="dataset folder (default <work>/data)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="where the results go")
    parser.add_argument("--workers", type=int, default=1, help="simulator processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--notes", default="", help="text for the results' Notes section")
    parser.add_argument("--report-only", action="store_true", help="only summarise the runs already finished")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    scale = dict(SCALES[args.scale])
    for key, value in (("num_images", args.num_images), ("image_size", args.image_size), ("max_epochs", args.epochs),
                       ("roi_size", args.roi), ("learning_rate", args.lr), ("pretrained", args.pretrained)):
        if value is not None:
            scale[key] = value
    work = Path(args.work).resolve()
    data_dir = Path(args.data).resolve() if args.data else work / "data"
    given = list(sys.argv[1:] if argv is None else argv)
    # the notes are the results' own section: the command shows that they were given, not their text
    command = "python benchmarks/bench_accuracy.py " + " ".join(
        '"..."' if i > 0 and given[i - 1] == "--notes" else a for i, a in enumerate(given))
    start = time.time()
    simulated = ensure_dataset(data_dir, scale["num_images"], scale["image_size"], args.seed, args.workers)
    roi_tag = "x".join(str(v) for v in scale["roi_size"])
    datalist, refused = screen_dataset(simulated, scale["roi_size"], work / f"datalist_usable_{roi_tag}.json")
    print(f"[accuracy] {len(refused)} images refused by the preprocessing: {refused}", flush=True)
    if not args.report_only:
        # fold-major order: a run stopped early leaves whole folds of every method
        for fold in args.folds:
            for method in args.methods:
                print(f"[accuracy] fold {fold} {method} ({(time.time() - start) / 60:.1f} min)", flush=True)
                train_and_evaluate(scale, method, fold, work, datalist, args.seed)
    summary = summarise(work, args.methods, args.folds, args.n_boot, args.seed)
    curves = plot_curves(work, summary, Path(args.results) / f"accuracy_{args.scale}_curves.png") if summary else None
    record = {
        "command": command, "scale_name": args.scale, "scale": scale, "seed": args.seed, "methods": list(args.methods),
        "folds": list(args.folds), "n_boot": args.n_boot, "data": {**describe_data(datalist), "simulated": describe_data(simulated), "refused": refused},
        "environment": environment(), "wall_minutes": (time.time() - start) / 60,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "notes": args.notes,
    }
    previous = Path(args.results) / f"accuracy_{args.scale}.json"
    if args.report_only and previous.is_file():  # keep the run's own command and time; say how it was re-reported
        earlier = json.loads(previous.read_text())
        record.update(command=earlier["command"], wall_minutes=earlier["wall_minutes"], finished=earlier["finished"],
                      report_command=command)
    path = write_results(Path(args.results), args.scale, record, summary, curves)
    print(path.read_text(), flush=True)
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()

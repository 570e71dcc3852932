"""The paper's Tables 1 and 2 on simulated radiographs: every method, subject-grouped 5-fold cross-validation.

    .venv/bin/python benchmarks/bench_accuracy.py                       # reduced scale (CPU, ~100 min on 2 cores)
    .venv/bin/python benchmarks/bench_accuracy.py --scale paper         # 256 x 512, DenseNet-121, 60 epochs (GPU)
    .venv/bin/python benchmarks/bench_accuracy.py --scale cpu           # train.json + configs/scale_cpu.json
    .venv/bin/python benchmarks/bench_accuracy.py --methods vanilla aasn --folds 0 1 --epochs 4

Steps, each resumable (a rerun skips what is finished; a killed training resumes from its ``last.pt``, a run
killed after its training only evaluates):

1. ``simulation.generate_dataset``: ``--num-images`` atlas radiographs (all 32 atlas members, ``--seed``); the
   simulator assigns folds per subject, so no subject is ever in two folds.
2. For every test fold and method: the bundle's own ``configs/train.json`` (+ ``variants/<method>.json``) and
   then ``configs/evaluate.json``, run with ``monai.bundle.run`` and the scale's overrides. Model selection uses
   only the validation split of the training folds (``BestModelSaver`` on ``val_auc``); the test fold is seen
   once, by the evaluation, whose ``metrics.json`` and ``per_case.csv`` are the raw results; every evaluation
   started and finished is logged in ``<work>/test_reads.jsonl`` and the results list them. Table 2's rows run
   first (all folds), then Table 1's other methods.
3. Tables 1 and 2: mean and standard deviation over folds of AUC, AP and fracture recall at 1 % / 10 % FP area
   ratio (the paper's modified FROC, ``scripts.reporting.metrics``); a 95 % bootstrap interval of the AUC of the pooled
   out-of-fold scores, resampling subjects (images of one subject are not independent); ROC and PR curves of
   all methods (pooled out-of-fold scores) on one figure. When the data's annotations carry
   ``fracture_details`` (the simulator's), recall at 1 % / 10 % FP per fracture kind and site pooled over folds;
   paired subject-bootstrap intervals of AASN minus Vanilla and AASN minus FF (pooled AUC and recall at 10 % FP).

The reduced scale differs from the paper (see ``SCALES``): ROI 96 x 192 on 640 x 640 px simulated images, a tiny
DenseNet (4 blocks of 2 layers) from scratch, few epochs, and no random augmentation, so that the preprocessing
runs once per image into a ``PersistentDataset`` cache shared by every method and fold. The ``cpu`` scale takes
every training setting from the bundle's ``configs/scale_cpu.json`` (merged after ``train.json``, before the variant);
the script sets only the data, the fold and the output folders.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
CONFIGS = BUNDLE / "configs"
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_metadata  # noqa: E402  (the provenance block of every results file)

#: Table 1 of the paper: state-of-the-art methods (image-level-label methods first) and AASN.
TABLE1 = ("chexnet", "lse", "liu", "deepsymnet", "cbn", "aasn")
#: Table 2 of the paper: the ablation from Vanilla DenseNet to AASN.
TABLE2 = ("vanilla", "ff", "ff_fa", "ff_cl", "ff_fa_cl_noproj", "aasn")
METHODS = ("vanilla", "ff", "ff_fa", "ff_cl", "ff_fa_cl_noproj", "aasn", "cbn", "deepsymnet", "liu", "chexnet", "lse")
#: Run order: Table 2's rows first (every fold), then Table 1's other methods.
RUN_ORDER = ("vanilla", "ff", "ff_fa", "ff_cl", "ff_fa_cl_noproj", "aasn", "liu", "deepsymnet", "cbn", "chexnet", "lse")
#: Paired comparisons (method, baseline) with a subject bootstrap of the difference.
PAIRED = (("aasn", "vanilla"), ("aasn", "ff"))
#: ``fracture_details`` fields by which recall is reported (``recall_by_<field>`` of the evaluation's metrics).
GROUP_FIELDS = ("kind", "site")
RECALL_KEYS = ("recall_at_fp_1pct", "recall_at_fp_10pct")
#: Trained with image-level labels: the paper reports no localisation figures for them.
IMAGE_LEVEL = ("chexnet", "lse")
METRICS = ("auc", "ap", "recall_at_fp_1pct", "recall_at_fp_10pct")
METRIC_NAMES = {"auc": "AUC", "ap": "AP", "recall_at_fp_1pct": "Recall FP=1%", "recall_at_fp_10pct": "Recall FP=10%"}
NAMES = {
    "vanilla": "Vanilla DenseNet",
    "ff": "FF",
    "ff_fa": "FF-FA",
    "ff_cl": "FF-CL",
    "ff_fa_cl_noproj": "FF-FA-CL (no proj.)",
    "aasn": "AASN",
    "cbn": "CBN",
    "deepsymnet": "DeepSymNet",
    "liu": "Liu et al.",
    "chexnet": "CheXNet*",
    "lse": "LSE (Wang et al.)*",
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

TINY_DENSENET = {
    "init_features": 16,
    "growth_rate": 8,
    "block_config": [2, 2, 2, 2],
    "bn_size": 2,
    "projection_channels": 16,
}
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
    "cpu": {
        "description": "CPU scale: every training setting from the bundle's configs/scale_cpu.json merged after "
        "train.json (the script sets only the data, the fold and the output folders)",
        "num_images": 1200,
        "image_size": [640, 640],
        "config": "scale_cpu.json",
        "work": "accuracy_cpu",
        # each fractured training image's twin without the breaks (simulated training data only; docs/simulation.md)
        "intact_twins": True,
    },
}
#: Ids read from a config-defined scale's merged configs for the screening and the record (not passed to the runs).
CONFIG_IDS = (
    "roi_size",
    "roi_margin",
    "network_kwargs",
    "pretrained",
    "max_epochs",
    "val_interval",
    "batch_size",
    "learning_rate",
    "seed",
    "num_workers",
)


# ----------------------------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the finite values; ``nan`` if none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def subject_bootstrap(
    statistic: Callable[[np.ndarray], Sequence[float]],
    groups: Sequence[Any],
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap intervals of one or more statistics, resampling whole groups with replacement.

    Args:
        statistic: the statistics of a resample, given the indices of its items (with repeats); a ``nan``
            (e.g. an AUC of a single-class resample) leaves that resample out of that statistic's interval.
        groups: one resampling unit per item (e.g. the subject of each image).
        n_boot: resamples.
        alpha: 1 - coverage.
        seed: random seed of the resampling.

    Returns:
        ``(low, high)``, one value per statistic (``nan`` where no resample gave a finite value).
    """
    if n_boot < 1:
        raise ValueError(f"subject_bootstrap: n_boot must be >= 1, got {n_boot}")
    groups = np.asarray(groups).ravel()
    units, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == u) for u in range(units.size)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([members[u] for u in rng.integers(0, units.size, units.size)])
        values.append(np.atleast_1d(np.asarray(statistic(idx), dtype=np.float64)))
    values = np.array(values).reshape(n_boot, -1)
    low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    for k in range(values.shape[1]):
        finite = values[np.isfinite(values[:, k]), k]
        if finite.size:
            low[k], high[k] = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return low, high


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
    from scripts.reporting.metrics import classification_metrics

    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"bootstrap_auc_ci: {labels.size} labels but {scores.size} scores")
    groups = np.arange(labels.size) if groups is None else np.asarray(groups).ravel()

    def auc(idx: np.ndarray) -> float:
        if np.unique(labels[idx]).size < 2:
            return float("nan")
        return classification_metrics(scores[idx], labels[idx])["auc"]

    low, high = subject_bootstrap(auc, groups, n_boot, alpha, seed)
    return float(low[0]), float(high[0])


def paired_difference(
    cases: Sequence[dict],
    baseline_cases: Sequence[dict],
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    recall_key: str = "recalled_at_fp_10pct",
) -> dict:
    """A method minus a baseline on the same test images: pooled AUC and pooled fracture recall, with paired
    subject-bootstrap intervals (the same resampled subjects for both methods).

    Args:
        cases, baseline_cases: per-case rows (``per_case.csv`` with ``fold``): ``fold``, ``case``, ``subject``,
            ``label``, ``score``; for the recall also ``num_fractures`` and ``recall_key`` (the fracture points
            recalled at that fold's own threshold for the FP ratio). Images are matched by (fold, case).
        n_boot, alpha, seed: as in :func:`subject_bootstrap`.
        recall_key: per-case column of recalled fractures; the recall is not compared when a row lacks it.

    Returns:
        ``{"num_images", "num_subjects", "auc": {"method", "baseline", "difference", "ci95"}, "recall": {...} or None,
        "recall_key"}``; the recall is the sum of recalled fractures over the sum of fractures (each fold's threshold
        held fixed: the bootstrap resamples subjects, not the choice of threshold).
    """
    from sklearn.metrics import roc_auc_score

    base = {(int(c["fold"]), c["case"]): c for c in baseline_cases}
    pairs = [(c, base[(int(c["fold"]), c["case"])]) for c in cases if (int(c["fold"]), c["case"]) in base]
    if not pairs:
        raise ValueError("paired_difference: no image in common.")
    if any(int(a["label"]) != int(b["label"]) for a, b in pairs):
        raise ValueError("paired_difference: the two methods' rows disagree on an image's label.")
    labels = np.array([int(a["label"]) for a, _ in pairs])
    score_a = np.array([float(a["score"]) for a, _ in pairs])
    score_b = np.array([float(b["score"]) for _, b in pairs])
    subjects = [a["subject"] for a, _ in pairs]
    with_recall = all(
        recall_key in a and recall_key in b and a[recall_key] not in ("", None) and b[recall_key] not in ("", None)
        for a, b in pairs
    )
    if with_recall:
        fractures = np.array([int(a["num_fractures"]) for a, _ in pairs])
        hit_a = np.array([int(a[recall_key]) for a, _ in pairs])
        hit_b = np.array([int(b[recall_key]) for _, b in pairs])
        with_recall = fractures.sum() > 0

    def statistics_of(idx: np.ndarray) -> tuple[float, float, float, float, float, float]:
        nan = float("nan")
        auc_a = auc_b = rec_a = rec_b = nan
        if np.unique(labels[idx]).size == 2:
            auc_a, auc_b = roc_auc_score(labels[idx], score_a[idx]), roc_auc_score(labels[idx], score_b[idx])
        if with_recall and fractures[idx].sum() > 0:
            rec_a, rec_b = hit_a[idx].sum() / fractures[idx].sum(), hit_b[idx].sum() / fractures[idx].sum()
        return auc_a, auc_b, auc_a - auc_b, rec_a, rec_b, rec_a - rec_b

    point = statistics_of(np.arange(labels.size))
    low, high = subject_bootstrap(lambda idx: statistics_of(idx)[2::3], subjects, n_boot, alpha, seed)
    out = {
        "num_images": int(labels.size),
        "num_subjects": len(set(subjects)),
        "recall_key": recall_key,
        "auc": {"method": point[0], "baseline": point[1], "difference": point[2], "ci95": [low[0], high[0]]},
        "recall": None,
    }
    if with_recall:
        out["recall"] = {"method": point[3], "baseline": point[4], "difference": point[5], "ci95": [low[1], high[1]]}
    return out


def pool_group_recall(per_fold: Sequence[dict], field: str) -> dict:
    """Recall per group of fractures pooled over folds: each fold's recall at its own FP thresholds
    (``recall_by_<field>`` of its ``metrics.json``), the fractures of all folds counted together.

    Returns:
        ``{label: {"num_fractures": n, "recall_at_fp_1pct": r, ...}}`` (sorted labels; none for empty groups).
    """
    pooled: dict[str, dict[str, int]] = {}
    for metrics in per_fold:
        for label, group in (metrics.get(f"recall_by_{field}") or {}).items():
            n = int(group["num_fractures"])
            entry = pooled.setdefault(label, {"num_fractures": 0, **{k: 0 for k in RECALL_KEYS}})
            entry["num_fractures"] += n
            for k in RECALL_KEYS:
                entry[k] += int(round(group[k] * n)) if group.get(k) is not None else 0
    return {
        label: {"num_fractures": e["num_fractures"], **{k: e[k] / e["num_fractures"] for k in RECALL_KEYS}}
        for label, e in sorted(pooled.items())
        if e["num_fractures"] > 0
    }


def run_order(methods: Sequence[str], folds: Sequence[int]) -> list[tuple[str, int]]:
    """(method, fold) in run order: Table 2's rows for every fold first, then the other methods; fold-major in each
    part, so that a run stopped early leaves whole folds of every method of that part."""
    first = [m for m in RUN_ORDER if m in methods and m in TABLE2]
    then = [m for m in RUN_ORDER if m in methods and m not in TABLE2]
    return [(m, f) for part in (first, then) for f in folds for m in part]


# ----------------------------------------------------------------------------------------------- the runs
def config_path(scale: dict) -> Path | None:
    """The scale's own config file (merged after ``train.json``), or None for the scales defined in ``SCALES``."""
    return CONFIGS / scale["config"] if scale.get("config") else None  # an absolute path stays as it is


def config_files(scale: dict, method: str, evaluation: bool = False) -> list[Path]:
    """``train.json``, the scale's config (if any), ``evaluate.json`` (for the evaluation), the method's variant."""
    extra = [config_path(scale)] if scale.get("config") else []
    return (
        [CONFIGS / "train.json", *extra]
        + ([CONFIGS / "evaluate.json"] if evaluation else [])
        + [CONFIGS / "variants" / f"{method}.json"]
    )


def resolve_config_scale(scale: dict) -> dict:
    """A config-defined scale with the values its merged configs give (``CONFIG_IDS``), for the preprocessing
    screen and the record; the runs get the files themselves, not these values."""
    from monai.bundle import ConfigParser

    path = config_path(scale)
    if not path.is_file():
        raise FileNotFoundError(f"the scale's config {path} does not exist")
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(path)])
    resolved: dict[str, Any] = {}
    for key in CONFIG_IDS:
        if key not in parser:
            continue
        try:
            resolved[key] = parser.get_parsed_content(key)
        except Exception:  # noqa: BLE001 - an id that needs the whole workflow: its text is recorded instead
            resolved[key] = parser[key]
    import hashlib

    text = path.read_text()
    return {
        **scale,
        **resolved,
        "config_path": str(path),
        "config_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "config_content": json.loads(text),
    }


def run_overrides(
    scale: dict, method: str, fold: int, run_dir: Path, datalist: Path, cache_dir: Path | None, seed: int
) -> dict[str, Any]:
    """``monai.bundle.run`` overrides of ``train.json`` for one method and test fold.

    A config-defined scale (``cpu``) gets only what the benchmark must set: the data, the fold, the bundle's own
    folder (the working directory is the repository's), where checkpoints and logs go, and resuming.
    """
    if scale.get("config"):
        return {
            "bundle_root": str(BUNDLE),
            "dataset_dir": str(datalist.parent),
            "datalist": str(datalist),
            "fold": fold,
            "ckpt_dir": str(run_dir / "models"),
            "log_dir": str(run_dir / "logs"),
            "resume": True,
        }
    overrides = {
        "bundle_root": str(run_dir),
        "dataset_dir": str(datalist.parent),
        "datalist": str(datalist),
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

    run(
        config_file=[str(f) for f in config_files],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        **overrides,
    )


def run_finished(run_dir: Path) -> bool:
    """A run is finished when its evaluation's ``metrics.json`` carries the benchmark's own fields (written last)."""
    path = run_dir / "eval" / "metrics.json"
    return path.is_file() and "weights" in json.loads(path.read_text())


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def log_test_read(work: Path, method: str, fold: int, event: str, command: str | None) -> None:
    """Append a test-fold evaluation event (``started`` / ``finished``) to ``<work>/test_reads.jsonl``."""
    work.mkdir(parents=True, exist_ok=True)
    entry = {"method": method, "fold": fold, "event": event, "time": _now(), "command": command}
    with open(work / "test_reads.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def logged_test_reads(work: Path, methods: Sequence[str], folds: Sequence[int]) -> list[dict]:
    """Per (method, fold): whether the run is finished, the test-fold evaluations logged for it and, for a finished
    run, the command and commit that trained it."""
    log = work / "test_reads.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    out = []
    for method, fold in run_order(methods, folds):
        run_dir = work / "runs" / method / f"fold{fold}"
        mine = [e for e in entries if e["method"] == method and int(e["fold"]) == fold]
        entry = {
            "method": method,
            "fold": fold,
            "finished": run_finished(run_dir),
            "reads": sum(e["event"] == "started" for e in mine),
            "completed": sum(e["event"] == "finished" for e in mine),
            "started_at": [e["time"] for e in mine if e["event"] == "started"],
        }
        if entry["finished"]:
            metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
            training = metrics.get("provenance", {}).get("training") or {}
            entry.update(command=training.get("command"), git_commit=training.get("git_commit"))
        out.append(entry)
    return out


def train_and_evaluate(
    scale: dict, method: str, fold: int, work: Path, datalist: Path, seed: int, command: str | None = None
) -> dict:
    """Train one method on one fold with the bundle's configs and evaluate it on the test fold.

    Resumable: a finished run is read back; a run whose training finished (``trained.json``) is only evaluated;
    an interrupted training resumes from its ``models/last.pt`` (the bundle's ``resume``). Each evaluation, the
    only read of the test fold, is logged (:func:`log_test_read`).
    """
    run_dir = work / "runs" / method / f"fold{fold}"
    metrics_path = run_dir / "eval" / "metrics.json"
    if run_finished(run_dir):
        return json.loads(metrics_path.read_text())
    cache_dir = None if scale.get("config") else work / "cache" / "x".join(str(s) for s in scale["roi_size"])
    overrides = run_overrides(scale, method, fold, run_dir, datalist, cache_dir, seed)
    trained_path = run_dir / "trained.json"
    if trained_path.is_file():
        trained = json.loads(trained_path.read_text())
    else:
        resumed = (run_dir / "models" / "last.pt").is_file()
        provenance = {
            "command": command,
            "started": _now(),
            "load_average_start": _load_average(),
            "resumed_from_last_checkpoint": resumed,
            "config_sha256": scale.get("config_sha256"),
            **machine_state(),
        }
        start = time.time()
        _bundle_run(config_files(scale, method), overrides)
        best = run_dir / "models" / "model.pt"
        selected = "best validation AUC"
        if not best.is_file():  # no validation AUC was ever defined (tiny runs): keep the last epoch's weights
            import torch

            last = torch.load(run_dir / "models" / "last.pt", map_location="cpu", weights_only=True)
            torch.save(last["network"], best)
            selected = "last epoch (validation AUC undefined)"
        provenance.update(finished=_now(), load_average_end=_load_average())
        trained = {"train_seconds": time.time() - start, "weights": selected, "training": provenance}
        trained_path.write_text(json.dumps(trained, indent=2))
    evaluation = {k: v for k, v in overrides.items() if "#" not in k}
    evaluation.update(output_dir=str(run_dir / "eval"), num_case_pictures=0)
    if not scale.get("config") and not scale["augmentation"]:  # evaluate.json's chain keeps more keys: own cache
        evaluation["validate#dataset"] = {
            "_target_": "PersistentDataset",
            "data": "$scripts.datalist.fold_split(@datalist, @fold, 'test')",
            "transform": "@validate#preprocessing",
            "cache_dir": str(cache_dir) + "_evaluation",
        }
    if metrics_path.is_file():  # an evaluation killed after its metrics, before the benchmark's fields
        metrics_path.unlink()
    log_test_read(work, method, fold, "started", command)
    evaluated = {"command": command, "started": _now(), "load_average_start": _load_average()}
    start = time.time()
    _bundle_run(config_files(scale, method, evaluation=True), evaluation)
    metrics = json.loads(metrics_path.read_text())
    evaluated.update(finished=_now(), load_average_end=_load_average())
    metrics.update(
        train_seconds=trained["train_seconds"],
        eval_seconds=time.time() - start,
        weights=trained["weights"],
        provenance={"training": trained["training"], "evaluation": evaluated},
    )
    metrics_path.write_text(json.dumps(metrics, indent=2))
    log_test_read(work, method, fold, "finished", command)
    return metrics


def read_cases(path: Path) -> list[dict]:
    """``per_case.csv`` rows with numbers as numbers (label, score, fracture counts)."""
    counts = ("num_fractures", "fractures_recalled", "positive")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            **r,
            "label": int(r["label"]),
            "score": float(r["score"]),
            **{k: int(v) for k, v in r.items() if (k in counts or k.startswith("recalled_at_fp_")) and v != ""},
        }
        for r in rows
    ]


def method_cases(work: Path, method: str, folds: Sequence[int]) -> list[dict]:
    """The per-case rows of a method's finished runs, with their fold."""
    return [
        {**c, "fold": fold}
        for fold in folds
        if run_finished(work / "runs" / method / f"fold{fold}")
        for c in read_cases(work / "runs" / method / f"fold{fold}" / "eval" / "per_case.csv")
    ]


# ----------------------------------------------------------------------------------------------- the report
def summarise(work: Path, methods: Sequence[str], folds: Sequence[int], n_boot: int, seed: int) -> dict:
    """Per method: per-fold metrics, mean/std over folds, pooled out-of-fold AUC with its bootstrap interval; for
    methods with localisation, the recall per fracture kind and site pooled over folds (when the annotations give
    them) and the pooled recall at 10 % FP (each fold's threshold; when ``per_case.csv`` has its counts)."""
    from scripts.reporting.metrics import classification_metrics

    summary = {}
    for method in methods:
        per_fold = {
            fold: json.loads((work / "runs" / method / f"fold{fold}" / "eval" / "metrics.json").read_text())
            for fold in folds
            if run_finished(work / "runs" / method / f"fold{fold}")
        }
        cases = method_cases(work, method, folds)
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
        if method not in IMAGE_LEVEL:
            if cases and all("recalled_at_fp_10pct" in c for c in cases) and sum(c["num_fractures"] for c in cases):
                row["pooled"]["recall_at_fp_10pct"] = sum(c["recalled_at_fp_10pct"] for c in cases) / sum(
                    c["num_fractures"] for c in cases
                )
            for field in GROUP_FIELDS:
                pooled = pool_group_recall([per_fold[f] for f in sorted(per_fold)], field)
                if pooled:
                    row[f"recall_by_{field}"] = pooled
        row["train_minutes"] = sum(per_fold[f].get("train_seconds", 0.0) for f in per_fold) / 60
        summary[method] = row
    return summary


def paired_differences(work: Path, summary: dict, folds: Sequence[int], n_boot: int, seed: int) -> list[dict]:
    """``PAIRED`` comparisons (AASN minus Vanilla, AASN minus FF) on the test images both methods scored."""
    out = []
    for method, baseline in PAIRED:
        if method not in summary or baseline not in summary:
            continue
        common = [f for f in folds if f in summary[method]["folds"] and f in summary[baseline]["folds"]]
        if not common:
            continue
        result = paired_difference(
            method_cases(work, method, common), method_cases(work, baseline, common), n_boot=n_boot, seed=seed
        )
        out.append({"method": method, "baseline": baseline, "folds": common, **result})
    return out


def _pct(stat: dict) -> str:
    if not np.isfinite(stat["mean"]):
        return "-"
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def markdown_table(summary: dict, methods: Sequence[str], localisation_for_image_level: bool = False) -> str:
    head = (
        "| method | folds | "
        + " | ".join(METRIC_NAMES[m] for m in METRICS)
        + " | pooled AUC [95 % CI] | paper AUC / R@1% |"
    )
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
            f"{paper['recall_at_fp_1pct']:.2f}" if "recall_at_fp_1pct" in paper else "-"
        )
        lines.append(
            f"| {NAMES[method]} | {len(row['folds'])} | "
            + " | ".join(cells)
            + f" | {100 * row['pooled']['auc']:.2f} [{100 * low:.2f}, {100 * high:.2f}] | {paper_cell} |"
        )
    return "\n".join(lines)


def plot_curves(work: Path, summary: dict, path: Path) -> str:
    """ROC and PR curves of every method (pooled out-of-fold scores) on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(12, 5.5))
    for method, row in summary.items():
        cases = [
            c for f in row["folds"] for c in read_cases(work / "runs" / method / f"fold{f}" / "eval" / "per_case.csv")
        ]
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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, :func:`results_metadata.cpu_model`), else what ``platform`` says."""
    model = results_metadata.cpu_model()
    return model if model != results_metadata.UNKNOWN else platform.processor() or platform.machine()


def git_state() -> dict:
    """The repository's commit, its modified tracked files and its untracked ones (the runs use the working tree);
    :func:`results_metadata.git_state` under the per-run keys."""
    state = results_metadata.git_state(ROOT)
    if state["commit"] == results_metadata.UNKNOWN:
        return {"git_commit": None, "git_modified": None, "git_untracked": None}
    return {"git_commit": state["commit"], "git_modified": state["modified"], "git_untracked": state["untracked"]}


def machine_state() -> dict:
    """Commit, CPU model and thread settings: recorded with every run and every results file."""
    import torch

    return {
        **git_state(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


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
    state = machine_state()
    return {
        "versions": versions,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": load,
            "cpu_model": state["cpu_model"],
            "omp_num_threads": state["omp_num_threads"],
        },
        "git": {"commit": state["git_commit"], "modified": state["git_modified"]},
    }


def _scale_line(record: dict) -> str:
    scale = record["scale"]
    roi = scale.get("roi_size") or ["?", "?"]
    settings = (
        f"ROI {roi[0]} x {roi[1]}, network_kwargs `{json.dumps(scale.get('network_kwargs'))}`, "
        f"{scale.get('max_epochs')} epochs (validation every {scale.get('val_interval')}, best validation AUC "
        f"kept), batch {scale.get('batch_size')}, lr {scale.get('learning_rate')}"
    )
    if scale.get("config"):
        return (
            f"Scale: {scale['description']}; config `{Path(scale['config_path']).name}` (sha256 "
            f"{scale['config_sha256'][:12]}, content in the JSON), which gives: {settings}, training seed "
            f"{scale.get('seed')}; data seed {record['seed']}.  "
        )
    return f"Scale: {scale['description']}; {settings}, seed {record['seed']}.  "


def group_recall_tables(summary: dict) -> list[str]:
    """Markdown: recall at 1 % / 10 % FP per fracture kind and per site, pooled over folds (methods with
    localisation); empty when no run reports them."""
    lines: list[str] = []
    methods = [m for m in RUN_ORDER if m in summary and m not in IMAGE_LEVEL]
    for field in GROUP_FIELDS:
        labels = sorted({label for m in methods for label in summary[m].get(f"recall_by_{field}", {})})
        if not labels:
            continue
        lines += [
            f"### per fracture {field}",
            "",
            "| method | folds | " + " | ".join(labels) + " |",
            "|" + " --- |" * (len(labels) + 2),
        ]
        for m in methods:
            groups = summary[m].get(f"recall_by_{field}", {})
            cells = [
                f"{100 * groups[g]['recall_at_fp_1pct']:.1f} / {100 * groups[g]['recall_at_fp_10pct']:.1f} "
                f"({groups[g]['num_fractures']})"
                if g in groups
                else "-"
                for g in labels
            ]
            lines.append(f"| {NAMES[m]} | {len(summary[m]['folds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    if lines:
        lines = [
            "## Recall per fracture kind and site (pooled over folds)",
            "",
            "Recall at 1 % / 10 % FP area (percent; fractures in brackets): each fold's recall at its own "
            "thresholds (those of the overall FROC), the fractures of all folds counted together.",
            "",
        ] + lines
    return lines


def paired_table(paired: Sequence[dict], n_boot: int) -> list[str]:
    """Markdown: the paired differences (method minus baseline) with their subject-bootstrap intervals."""
    if not paired:
        return []
    lines = [
        "## Paired differences",
        "",
        "Same test images, method minus baseline (percentage points), 95 % paired bootstrap interval over "
        f"subjects ({n_boot} resamples, both methods on the same resampled subjects). Recall at 10 % FP pooled: "
        "each fold's own threshold, recalled fractures of all folds over all fractures (the thresholds held "
        "fixed in the bootstrap).",
        "",
        "| comparison | folds | images (subjects) | pooled AUC | difference [95 % CI] | pooled R@10%FP | "
        "difference [95 % CI] |",
        "|" + " --- |" * 7,
    ]
    for p in paired:
        auc, rec = p["auc"], p["recall"]

        def diff(stat: dict) -> str:
            low, high = stat["ci95"]
            return f"{100 * stat['difference']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"

        rec_cells = (
            f"{100 * rec['method']:.2f} vs {100 * rec['baseline']:.2f} | {diff(rec)}"
            if rec
            else "- | not available (per_case.csv without recalled counts)"
        )
        lines.append(
            f"| {NAMES[p['method']]} - {NAMES[p['baseline']]} | {len(p['folds'])} | {p['num_images']} "
            f"({p['num_subjects']}) | {100 * auc['method']:.2f} vs {100 * auc['baseline']:.2f} | "
            f"{diff(auc)} | {rec_cells} |"
        )
    return lines + [""]


def runs_section(record: dict) -> list[str]:
    """Markdown: the missing (method, fold) runs and the test-fold reads."""
    reads = record.get("test_fold_reads", [])
    done = [r for r in reads if r["finished"]]
    missing = record.get("missing_runs", [])
    lines = [
        "## Runs and test-fold reads",
        "",
        f"Finished runs: {len(done)} of {len(reads)} (method, fold)."
        + (" Missing: " + ", ".join(f"{NAMES[m]} fold {f}" for m, f in missing) + "." if missing else ""),
        "",
    ]
    total = sum(r["reads"] for r in reads)
    lines.append(
        f"Test-fold reads (evaluations started, logged in `<work>/test_reads.jsonl`): {total} for "
        f"{len(done)} finished runs; the evaluation of a run is its only read of its test fold."
    )
    for r in reads:
        notes = []
        if r["finished"] and not r["reads"]:
            notes.append("finished before reads were logged")
        if r["reads"] > r["completed"]:
            notes.append(f"{r['reads'] - r['completed']} evaluation(s) interrupted")
        if r["completed"] > 1:
            notes.append(f"evaluated {r['completed']} times")
        if notes:
            lines.append(
                f"- {NAMES[r['method']]} fold {r['fold']}: {'; '.join(notes)} (reads started "
                f"{', '.join(r['started_at']) or '-'})"
            )
    by_command: dict[tuple, list[str]] = {}
    for r in done:
        key = (r.get("command"), (r.get("git_commit") or "")[:12])
        by_command.setdefault(key, []).append(f"{NAMES[r['method']]} {r['fold']}")
    if by_command:
        lines += ["", "Runs by the command that trained them (git commit):"]
        lines += [f"- `{cmd}` ({commit or '?'}): {', '.join(runs)}" for (cmd, commit), runs in by_command.items()]
    return lines + [""]


def write_results(results_dir: Path, scale_name: str, record: dict, summary: dict, curves: str | None) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / f"accuracy_{scale_name}"
    stem.with_suffix(".json").write_text(json.dumps({**record, "summary": summary}, indent=1, default=float))
    data = record["data"]
    done = {m: len(summary[m]["folds"]) for m in summary}
    lines = [
        f"# Accuracy benchmark ({scale_name} scale)",
        "",
        *results_metadata.markdown_lines(record["provenance"]),
        *(
            [
                f"Report written by: `{record['report_command']}` at commit "
                f"{record['report_provenance']['commit']} (dirty: {record['report_provenance']['dirty']}), "
                f"{record['report_provenance']['finished']}  "
            ]
            if record.get("report_command")
            else []
        ),
        f"Finished: {record['finished']}; wall time {record['wall_minutes']:.1f} min.  ",
        f"Data: {data['num_images']} simulated {data['anatomy']} radiographs ({data['num_positive']} with fractures, "
        f"{data['num_subjects']} subjects, seed {data['seed']}, {data['image_size'][0]} x {data['image_size'][1]} px), "
        "folds assigned per subject by the simulator; test = fold k, validation = a subject-grouped 1/8 of the rest.  ",
        _scale_line(record),
        f"Versions: {', '.join(f'{k} {v}' for k, v in record['environment']['versions'].items())}.",
        "",
        "Figures: mean ± standard deviation over test folds (percent); pooled AUC = all out-of-fold test scores "
        f"together, 95 % bootstrap interval over subjects ({record['n_boot']} resamples). Recall at FP = the paper's "
        "modified FROC (recall of fracture points against the false-positive share of pixels more than 20 mm from "
        "every "
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
    lines += group_recall_tables(summary) + paired_table(record.get("paired_differences", []), record["n_boot"])
    if "test_fold_reads" in record:
        lines += runs_section(record)
    incomplete = {m: n for m, n in done.items() if n < len(record["folds"])}
    missing = [m for m in record["methods"] if m not in summary]
    if incomplete or missing:
        lines += [
            "**Incomplete**: "
            + ", ".join(
                [f"{NAMES[m]} {n}/{len(record['folds'])} folds" for m, n in incomplete.items()]
                + [f"{NAMES[m]} not run" for m in missing]
            ),
            "",
        ]
    if record.get("notes"):
        lines += ["## Notes", "", record["notes"], ""]
    path = stem.with_suffix(".md")
    path.write_text("\n".join(lines))
    return path


# ----------------------------------------------------------------------------------------------- main
def ensure_dataset(
    data_dir: Path, num_images: int, image_size: Sequence[int], seed: int, workers: int, intact_twins: bool = False
) -> Path:
    from simulation.dataset import generate_dataset

    datalist = data_dir / "datalist.json"
    if not datalist.is_file():
        generate_dataset(
            data_dir,
            num_images,
            anatomy="atlas",
            seed=seed,
            size=tuple(image_size),
            workers=workers,
            progress=False,
            intact_twins=intact_twins,
        )
    return datalist


def screen_dataset(
    datalist: Path, roi_size: Sequence[int], out: Path, margin: Sequence[float] | None = None
) -> tuple[Path, list[dict]]:
    """Leave out the images the bundle's preprocessing refuses (``scripts.screen_datalist``: the training's cached
    preprocessing, e.g. an ``AnnotationError`` for a landmark outside the simulated detector) and the intact twins of
    those; returns the usable datalist (written once to ``out``, absolute paths) and the refused images (as in the
    datalist) with status and reason."""
    refused_path = out.with_name(out.stem + "_refused.json")
    if out.is_file() and refused_path.is_file():
        return out, json.loads(refused_path.read_text())
    from scripts.datalist import load_datalist
    from scripts.screen_datalist import screen_items, screening_preprocessing, usable_datalist

    items = load_datalist(datalist)
    result = screen_items(items, screening_preprocessing(roi_size=roi_size, margin=margin))
    as_listed = {item["image"]: raw["image"] for item, raw in zip(items, json.loads(datalist.read_text())["training"])}
    refused = [
        {"image": as_listed[f.image], "status": f.status, "reason": f.error.splitlines()[0].split(": ", 1)[-1]}
        for f in result.refused
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(usable_datalist(datalist, [f.image for f in result.refused]), indent=1))
    refused_path.write_text(json.dumps(refused, indent=1))
    return out, refused


def describe_data(datalist: Path) -> dict:
    """What the simulator's datalist says about the dataset (its own seed, size and anatomy)."""
    content = json.loads(datalist.read_text())
    items = content["training"]
    with_details = num_fractures = 0
    for item in items:
        if int(item["label"]):
            annotation = json.loads((datalist.parent / item["annotation"]).read_text())
            num_fractures += len(annotation.get("fractures") or [])
            with_details += bool(annotation.get("fracture_details"))
    return {
        "datalist": str(datalist),
        "description": content.get("description"),
        "anatomy": content.get("anatomy"),
        "seed": content.get("seed"),
        "image_size": content.get("size"),
        "num_images": len(items),
        "num_positive": sum(int(i["label"]) for i in items),
        "num_subjects": len({i["subject"] for i in items}),
        "images_per_fold": {str(k): sum(1 for i in items if int(i["fold"]) == k) for k in range(5)},
        "num_fractures": num_fractures,
        "positives_with_fracture_details": with_details,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="reduced")
    parser.add_argument("--scale-config", help="a config-defined scale's file (cpu: bundle/configs/scale_cpu.json)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--num-images", type=int, help="simulated radiographs (scale default)")
    parser.add_argument("--image-size", type=int, nargs=2, help="simulated detector H W (scale default)")
    parser.add_argument("--epochs", type=int, help="training epochs (scale default; not for the cpu scale)")
    parser.add_argument("--roi", type=int, nargs=2, help="ROI H W (scale default; not for the cpu scale)")
    parser.add_argument("--lr", type=float, help="learning rate (scale default; not for the cpu scale)")
    parser.add_argument("--pretrained", help="torchvision DenseNet-121 state dict for initialisation (not for cpu)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="simulation and bootstrap seed; the training seed too, except for the cpu scale (its config's)",
    )
    parser.add_argument(
        "--work",
        help="data, caches, runs (not committed; default benchmarks/outputs/accuracy, accuracy_cpu for the cpu scale)",
    )
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
    training_options = {"--epochs": args.epochs, "--roi": args.roi, "--lr": args.lr, "--pretrained": args.pretrained}
    if scale.get("config"):
        given_options = [k for k, v in training_options.items() if v is not None]
        if given_options:
            parser.error(f"--scale {args.scale} takes its training settings from its config, not {given_options}")
        if args.scale_config:
            scale["config"] = str(Path(args.scale_config).resolve())
    elif args.scale_config:
        parser.error(f"--scale-config is for a config-defined scale, not {args.scale}")
    for key, value in (
        ("num_images", args.num_images),
        ("image_size", args.image_size),
        ("max_epochs", args.epochs),
        ("roi_size", args.roi),
        ("learning_rate", args.lr),
        ("pretrained", args.pretrained),
    ):
        if value is not None:
            scale[key] = value
    if scale.get("config"):
        scale = resolve_config_scale(scale)
    work = Path(args.work or ROOT / "benchmarks" / "outputs" / scale.get("work", "accuracy")).resolve()
    data_dir = Path(args.data).resolve() if args.data else work / "data"
    given = list(sys.argv[1:] if argv is None else argv)
    # the notes are the results' own section: the command shows that they were given, not their text
    command = "python benchmarks/bench_accuracy.py " + " ".join(
        '"..."' if i > 0 and given[i - 1] == "--notes" else a for i, a in enumerate(given)
    )
    meta = results_metadata.start(command)
    start, started, load_start = time.time(), _now(), _load_average()
    simulated = ensure_dataset(
        data_dir, scale["num_images"], scale["image_size"], args.seed, args.workers, scale.get("intact_twins", False)
    )
    roi_tag = "x".join(str(v) for v in scale["roi_size"])
    datalist, refused = screen_dataset(
        simulated,
        scale["roi_size"],
        work / f"datalist_usable_{roi_tag}.json",
        scale.get("roi_margin") if scale.get("config") else None,
    )
    print(f"[accuracy] {len(refused)} images refused by the preprocessing: {refused}", flush=True)
    if not args.report_only:
        # Table 2's rows first, then Table 1's; fold-major within each: a run stopped early leaves whole folds
        for method, fold in run_order(args.methods, args.folds):
            print(f"[accuracy] fold {fold} {method} ({(time.time() - start) / 60:.1f} min)", flush=True)
            train_and_evaluate(scale, method, fold, work, datalist, args.seed, command)
    summary = summarise(work, args.methods, args.folds, args.n_boot, args.seed)
    curves = plot_curves(work, summary, Path(args.results) / f"accuracy_{args.scale}_curves.png") if summary else None
    reads = logged_test_reads(work, args.methods, args.folds)
    data = {**describe_data(datalist), "simulated": describe_data(simulated), "refused": refused}
    if not data["positives_with_fracture_details"]:
        print("[accuracy] the annotations carry no fracture_details: no recall per fracture kind and site", flush=True)
    record = {
        "command": command,
        "scale_name": args.scale,
        "scale": scale,
        "seed": args.seed,
        "methods": list(args.methods),
        "folds": list(args.folds),
        "n_boot": args.n_boot,
        "data": data,
        "environment": environment(),
        "wall_minutes": (time.time() - start) / 60,
        "started": started,
        "load_average_start": load_start,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "notes": args.notes,
        "work": str(work),
        "missing_runs": [[r["method"], r["fold"]] for r in reads if not r["finished"]],
        "test_fold_reads": reads,
        "paired_differences": paired_differences(work, summary, args.folds, args.n_boot, args.seed),
        "provenance": results_metadata.finish(meta),
    }
    previous = Path(args.results) / f"accuracy_{args.scale}.json"
    if args.report_only and previous.is_file():  # keep the run's own command and time; say how it was re-reported
        earlier = json.loads(previous.read_text())
        record.update(
            command=earlier["command"],
            wall_minutes=earlier["wall_minutes"],
            finished=earlier["finished"],
            report_command=command,
            report_environment=record["environment"],
            report_provenance=record["provenance"],
            # the run's own block; a results file written before the block existed has none: nothing is guessed
            provenance=earlier.get("provenance")
            or {
                "command": earlier["command"],
                "commit": results_metadata.UNKNOWN,
                "dirty": results_metadata.UNKNOWN,
                "legacy": True,
                "note": "the run's results file predates the provenance block; see the runs' commits below",
                "finished": earlier["finished"],
            },
        )
        record.update({k: earlier[k] for k in ("started", "load_average_start", "environment") if k in earlier})
    path = write_results(Path(args.results), args.scale, record, summary, curves)
    print(path.read_text(), flush=True)
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()

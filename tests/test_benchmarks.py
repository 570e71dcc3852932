"""The benchmarks' machinery: statistics against hand-computed values, the tables, and tiny runs of both scripts."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "bundle"))

import bench_accuracy  # noqa: E402


def test_mean_std_skips_missing_values():
    mean, std = bench_accuracy.mean_std([0.5, 0.7, float("nan"), None])
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(math.sqrt(0.02))  # sample std of (0.5, 0.7)
    assert bench_accuracy.mean_std([0.3]) == (0.3, 0.0)
    assert all(math.isnan(v) for v in bench_accuracy.mean_std([float("nan")]))


def test_bootstrap_auc_interval():
    labels, scores = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]  # AUC = 3/4 (pairs: 0.4>0.1, 0.9>0.1, 0.9>0.6; 0.4<0.6)
    # one resampling unit: every resample is the whole set, so the interval is the point AUC
    assert bench_accuracy.bootstrap_auc_ci(labels, scores, groups=["a"] * 4, n_boot=50) == pytest.approx((0.75, 0.75))
    assert bench_accuracy.bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_boot=200) == (1.0, 1.0)
    assert bench_accuracy.bootstrap_auc_ci([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], n_boot=200) == (0.0, 0.0)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = labels + rng.normal(0, 1.0, 200)
    from scripts.reporting.metrics import classification_metrics

    auc = classification_metrics(scores, labels)["auc"]
    low, high = bench_accuracy.bootstrap_auc_ci(labels, scores, n_boot=300, seed=3)
    assert low < auc < high and high - low < 0.25
    # subjects of 20 identical-score images: resampling subjects gives a wider interval than resampling images
    groups = np.repeat(np.arange(10), 20)
    labels_g, scores_g = np.repeat(labels[:10], 20), np.repeat(scores[:10], 20)
    wide = bench_accuracy.bootstrap_auc_ci(labels_g, scores_g, groups=groups, n_boot=300)
    narrow = bench_accuracy.bootstrap_auc_ci(labels_g, scores_g, n_boot=300)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        bench_accuracy.bootstrap_auc_ci([0, 1, 1], [0.1, 0.2])


def test_run_overrides_cache_only_without_augmentation(tmp_path):
    reduced = bench_accuracy.run_overrides(
        bench_accuracy.SCALES["reduced"],
        "aasn",
        2,
        tmp_path / "run",
        tmp_path / "data" / "datalist.json",
        tmp_path / "cache",
        seed=0,
    )
    assert reduced["variant"] == "aasn" and reduced["fold"] == 2
    assert reduced["train#dataset"]["_target_"] == "PersistentDataset"
    assert "'validation'" in reduced["validate#dataset"]["data"]
    assert "landmark_jitter" not in reduced["train#random_transforms"]
    paper = bench_accuracy.run_overrides(
        bench_accuracy.SCALES["paper"],
        "vanilla",
        0,
        tmp_path / "run",
        tmp_path / "data" / "datalist.json",
        None,
        seed=0,
    )
    assert not any("#" in k for k in paper)  # the bundle's own augmentation and CacheDataset
    assert paper["roi_size"] == [256, 512] and paper["network_kwargs"] == {}


def test_run_order_puts_table_2_first_then_table_1():
    order = bench_accuracy.run_order(["lse", "liu", "aasn", "vanilla", "cbn", "ff"], [3, 1])
    assert order == [
        ("vanilla", 3),
        ("ff", 3),
        ("aasn", 3),
        ("vanilla", 1),
        ("ff", 1),
        ("aasn", 1),
        ("liu", 3),
        ("cbn", 3),
        ("lse", 3),
        ("liu", 1),
        ("cbn", 1),
        ("lse", 1),
    ]
    everything = bench_accuracy.run_order(bench_accuracy.METHODS, [0])
    assert [m for m, _ in everything] == [
        "vanilla",
        "ff",
        "ff_fa",
        "ff_cl",
        "ff_fa_cl_noproj",
        "aasn",
        "liu",
        "deepsymnet",
        "cbn",
        "chexnet",
        "lse",
    ]


def test_cpu_scale_overrides_only_data_fold_and_folders(tmp_path):
    scale = bench_accuracy.SCALES["cpu"]
    overrides = bench_accuracy.run_overrides(scale, "aasn", 2, tmp_path / "run", tmp_path / "w" / "list.json", None, 0)
    assert set(overrides) == {"bundle_root", "dataset_dir", "datalist", "fold", "ckpt_dir", "log_dir", "resume"}
    assert overrides["fold"] == 2 and overrides["ckpt_dir"] == str(tmp_path / "run" / "models")
    configs = bench_accuracy.CONFIGS
    assert bench_accuracy.config_files(scale, "aasn") == [
        configs / "train.json",
        configs / "scale_cpu.json",
        configs / "variants" / "aasn.json",
    ]
    assert bench_accuracy.config_files(scale, "ff", evaluation=True) == [
        configs / "train.json",
        configs / "scale_cpu.json",
        configs / "evaluate.json",
        configs / "variants" / "ff.json",
    ]
    assert bench_accuracy.config_files(bench_accuracy.SCALES["reduced"], "ff") == [
        configs / "train.json",
        configs / "variants" / "ff.json",
    ]


def test_pool_group_recall_over_folds_by_hand():
    fold0 = {
        "recall_by_kind": {
            "displaced": {"num_fractures": 4, "recall_at_fp_1pct": 0.25, "recall_at_fp_10pct": 0.75},
            "hairline": {"num_fractures": 2, "recall_at_fp_1pct": 0.0, "recall_at_fp_10pct": 0.5},
        }
    }
    fold1 = {"recall_by_kind": {"displaced": {"num_fractures": 6, "recall_at_fp_1pct": 0.5, "recall_at_fp_10pct": 1.0}}}
    no_details = {"auc": 0.5}  # a fold whose annotations have no fracture_details adds nothing
    pooled = bench_accuracy.pool_group_recall([fold0, fold1, no_details], "kind")
    # displaced: (1 + 3) / 10 at 1 %, (3 + 6) / 10 at 10 %; hairline: 0 / 2 and 1 / 2
    assert pooled == {
        "displaced": {"num_fractures": 10, "recall_at_fp_1pct": 0.4, "recall_at_fp_10pct": 0.9},
        "hairline": {"num_fractures": 2, "recall_at_fp_1pct": 0.0, "recall_at_fp_10pct": 0.5},
    }
    assert bench_accuracy.pool_group_recall([fold0, fold1], "site") == {}


def _paired_cases(shift_baseline=0.0):
    """Four subjects of two images each (one fractured with 2 fractures, one not), in two folds."""
    cases = []
    for k in range(4):
        for label in (1, 0):
            cases.append(
                {
                    "fold": k % 2,
                    "case": f"s{k}_{label}",
                    "subject": f"s{k}",
                    "label": label,
                    "score": 0.5 + (0.1 * k + 0.2 if label else -0.1 * k - 0.2),
                    "num_fractures": 2 * label,
                    "recalled_at_fp_10pct": 2 * label,
                }
            )
    return cases


def test_paired_difference_planted():
    method = _paired_cases()  # AUC 1, every fracture recalled
    baseline = [{**c, "score": 1 - c["score"], "recalled_at_fp_10pct": c["num_fractures"] // 2} for c in method]
    # the baseline ranks every negative above every positive (AUC 0) and recalls one fracture of two, in every
    # resample of subjects: the paired differences are +1 and +0.5 exactly, interval included
    result = bench_accuracy.paired_difference(method, baseline, n_boot=200, seed=1)
    assert result["num_images"] == 8 and result["num_subjects"] == 4
    assert result["auc"]["method"] == 1.0 and result["auc"]["baseline"] == 0.0 and result["auc"]["difference"] == 1.0
    assert result["auc"]["ci95"] == pytest.approx([1.0, 1.0])
    assert result["recall"]["difference"] == pytest.approx(0.5)
    assert result["recall"]["ci95"] == pytest.approx([0.5, 0.5])
    # a method against itself: 0 in every resample (an unpaired resampling would give a wide interval)
    same = bench_accuracy.paired_difference(method, [dict(c) for c in method], n_boot=200, seed=1)
    assert same["auc"]["ci95"] == [0.0, 0.0] and same["recall"]["ci95"] == [0.0, 0.0]
    # mixed: the baseline swaps subject s0's scores (its positive below its negative) -> AUC 15/16
    mixed = [dict(c) for c in method]
    mixed[0]["score"], mixed[1]["score"] = mixed[1]["score"], mixed[0]["score"]
    mixed[2]["recalled_at_fp_10pct"] = 0  # s1's fractures missed: recall 6 / 8
    result = bench_accuracy.paired_difference(method, mixed, n_boot=300, seed=0)
    assert result["auc"]["difference"] == pytest.approx(1 / 16) and result["recall"]["difference"] == pytest.approx(
        0.25
    )
    low, high = result["auc"]["ci95"]
    assert 0.0 <= low <= 1 / 16 <= high  # a resample without s0 has difference 0; never negative
    # images are matched by (fold, case); rows only one method has are left out; no recall without its counts
    partial = bench_accuracy.paired_difference(
        method[:6], [{k: v for k, v in c.items() if k != "recalled_at_fp_10pct"} for c in baseline], n_boot=20
    )
    assert partial["num_images"] == 6 and partial["recall"] is None
    with pytest.raises(ValueError, match="disagree"):
        bench_accuracy.paired_difference(method, [{**c, "label": 1 - c["label"]} for c in method], n_boot=5)


def _summary_row(auc, recall, folds=(0, 1)):
    return {
        "folds": list(folds),
        **{m: {"mean": v, "std": 0.01} for m, v in zip(bench_accuracy.METRICS, (auc, 0.8, recall, recall))},
        "pooled": {"auc": auc, "ap": 0.8, "auc_ci95": (auc - 0.05, auc + 0.05)},
    }


def test_markdown_table_hides_localisation_of_image_level_methods():
    summary = {"chexnet": _summary_row(0.9, 0.4), "aasn": _summary_row(0.95, 0.7)}
    table = bench_accuracy.markdown_table(summary, ("chexnet", "liu", "aasn"))
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "40.00" not in rows["CheXNet*"] and "90.00 ± 1.00" in rows["CheXNet*"]
    assert (
        "70.00 ± 1.00" in rows["AASN"] and "95.00 [90.00, 100.00]" in rows["AASN"] and "97.71 / 77.87" in rows["AASN"]
    )
    assert "not run" in rows["Liu et al."]


def _tiny_dataset(folder: Path, n: int) -> Path:
    from simulation.dataset import generate_dataset

    return Path(generate_dataset(folder, n, anatomy="procedural", seed=3, size=160, progress=False))


def test_accuracy_benchmark_tiny_run(tmp_path):
    data = tmp_path / "data"
    _tiny_dataset(data, 15)
    results = tmp_path / "results"
    argv = [
        "--data",
        str(data),
        "--work",
        str(tmp_path / "work"),
        "--results",
        str(results),
        "--methods",
        "vanilla",
        "--folds",
        "1",
        "--epochs",
        "1",
        "--roi",
        "32",
        "64",
        "--n-boot",
        "20",
        "--notes",
        "tiny run, notes text",
    ]
    summary = bench_accuracy.main(argv)
    record = json.loads((results / "accuracy_reduced.json").read_text())
    assert record["command"].endswith('--notes "..."') and record["notes"] == "tiny run, notes text"
    cases = bench_accuracy.read_cases(tmp_path / "work" / "runs" / "vanilla" / "fold1" / "eval" / "per_case.csv")
    test_items = [i for i in json.loads((data / "datalist.json").read_text())["training"] if i["fold"] == 1]
    assert len(cases) == len(test_items) - len(record["data"]["refused"])  # the test fold, evaluated once
    assert summary["vanilla"]["folds"] == [1] and summary["vanilla"]["pooled"]["num_images"] == len(cases)
    assert record["scale"]["roi_size"] == [32, 64] and record["scale"]["max_epochs"] == 1
    assert record["data"]["simulated"]["num_images"] == 15 and record["environment"]["versions"]["monai"]
    text = (results / "accuracy_reduced.md").read_text()
    assert "## Table 1" in text and "## Table 2" in text and "| Vanilla DenseNet | 1 |" in text
    assert (results / "accuracy_reduced_curves.png").stat().st_size > 0
    # a rerun resumes: the finished run is read back, not retrained
    stamp = (tmp_path / "work" / "runs" / "vanilla" / "fold1" / "eval" / "metrics.json").stat().st_mtime
    bench_accuracy.main(argv + ["--report-only"])
    assert (tmp_path / "work" / "runs" / "vanilla" / "fold1" / "eval" / "metrics.json").stat().st_mtime == stamp


def test_accuracy_benchmark_cpu_scale_tiny_run(tmp_path):
    """The config-defined scale: its file's settings, resumable runs, logged test-fold reads, a partial report."""
    data = tmp_path / "data"
    _tiny_dataset(data, 15)
    items = json.loads((data / "datalist.json").read_text())["training"]
    fold = next(f for f in range(5) if sum(i["fold"] == f and i["label"] == 1 for i in items) >= 2)
    config = tmp_path / "scale_tiny.json"
    config.write_text(
        json.dumps(
            {
                "roi_size": [32, 64],
                "network_kwargs": bench_accuracy.TINY_DENSENET,
                "max_epochs": 1,
                "batch_size": 4,
                "num_workers": 0,
                "show_progress": False,
            }
        )
    )
    results, work = tmp_path / "results", tmp_path / "work"
    base = [
        "--scale",
        "cpu",
        "--scale-config",
        str(config),
        "--data",
        str(data),
        "--work",
        str(work),
        "--results",
        str(results),
        "--n-boot",
        "20",
        "--folds",
        str(fold),
    ]
    with pytest.raises(SystemExit):  # the training settings are the config's
        bench_accuracy.main(base + ["--epochs", "3"])
    summary = bench_accuracy.main(base + ["--methods", "aasn", "vanilla"])
    record = json.loads((results / "accuracy_cpu.json").read_text())
    assert record["scale"]["config_path"] == str(config) and record["scale"]["roi_size"] == [32, 64]
    assert record["scale"]["max_epochs"] == 1 and record["scale"]["config_content"]["batch_size"] == 4
    machine = record["environment"]["machine"]
    assert machine["cpu_model"] and machine["load_average"] and record["load_average_start"] and record["started"]
    assert len(record["environment"]["git"]["commit"]) == 40 and record["command"].startswith("python benchmarks/")
    assert [(r["method"], r["reads"], r["completed"], r["finished"]) for r in record["test_fold_reads"]] == [
        ("vanilla", 1, 1, True),
        ("aasn", 1, 1, True),
    ]
    run = work / "runs" / "vanilla" / f"fold{fold}"
    provenance = json.loads((run / "eval" / "metrics.json").read_text())["provenance"]
    assert provenance["training"]["config_sha256"] == record["scale"]["config_sha256"]
    assert provenance["training"]["git_commit"] == record["environment"]["git"]["commit"]
    # the simulator's fracture_details reach the evaluation: recall per kind and site, pooled over folds
    assert record["data"]["positives_with_fracture_details"] == sum(i["label"] for i in items)
    by_kind = summary["aasn"]["recall_by_kind"]
    test_fractures = sum(
        len(json.loads((data / i["annotation"]).read_text())["fractures"])
        for i in items
        if i["fold"] == fold and i["image"] not in {r["image"] for r in record["data"]["refused"]}
    )
    assert sum(g["num_fractures"] for g in by_kind.values()) == test_fractures
    assert sum(g["num_fractures"] for g in summary["aasn"]["recall_by_site"].values()) == test_fractures
    (paired,) = record["paired_differences"]  # AASN - FF needs FF
    assert (paired["method"], paired["baseline"]) == ("aasn", "vanilla") and paired["recall"] is not None
    assert paired["auc"]["difference"] == pytest.approx(
        summary["aasn"]["pooled"]["auc"] - summary["vanilla"]["pooled"]["auc"]
    )
    text = (results / "accuracy_cpu.md").read_text()
    assert "## Recall per fracture kind and site" in text and "| AASN - Vanilla DenseNet | 1 |" in text

    # a run killed during its evaluation is evaluated again, not retrained; the second read is recorded
    last, trained = (run / "models" / "last.pt").stat().st_mtime, (run / "trained.json").read_text()
    (run / "eval" / "metrics.json").unlink()
    bench_accuracy.main(base + ["--methods", "vanilla"])
    assert (run / "models" / "last.pt").stat().st_mtime == last and (run / "trained.json").read_text() == trained
    assert bench_accuracy.run_finished(run)
    rerun = json.loads((run / "eval" / "metrics.json").read_text())["provenance"]
    assert rerun["training"] == provenance["training"]
    # the report of a partial set: FF never ran
    bench_accuracy.main(base + ["--methods", "vanilla", "ff", "aasn", "--report-only"])
    record = json.loads((results / "accuracy_cpu.json").read_text())
    assert record["missing_runs"] == [["ff", fold]]
    assert [(r["method"], r["reads"]) for r in record["test_fold_reads"]] == [("vanilla", 2), ("ff", 0), ("aasn", 1)]
    text = (results / "accuracy_cpu.md").read_text()
    assert f"Missing: FF fold {fold}." in text and "evaluated 2 times" in text


class PlantedLogits(torch.nn.Module):
    """Heatmap logits -4 everywhere but 1.5 at ROI pixel (row 10, column 20): the image score must be sigmoid(1.5)."""

    def forward(self, x):
        logits = torch.full((x.shape[0], 1, *x.shape[-2:]), -4.0)
        logits[:, :, 10, 20] = 1.5
        return logits


def test_end_to_end_benchmark_tiny_run(tmp_path, monkeypatch):
    import bench_end_to_end

    from scripts.datalist import fold_split

    # the timed network is replaced by planted logits; the network part still times both real networks
    monkeypatch.setattr(bench_end_to_end, "build_aasn", lambda parser, device: (PlantedLogits(), False))
    datalist = _tiny_dataset(tmp_path / "case", 1)
    item = json.loads(datalist.read_text())["training"][0]
    image = tmp_path / "case" / item["image"]
    (image.with_suffix(".json")).write_text((tmp_path / "case" / item["annotation"]).read_text())
    results = tmp_path / "results"
    argv = ["--case", str(image), "--runs", "1", "--threads", "1", "--roi", "32", "64", "--repeats", "1",
            "--matmul-size", "64", "--train-images", "10", "--work", str(tmp_path / "work"), "--results", str(results),
            "--parts", "latency", "network", "training"]  # fmt: skip
    record = bench_end_to_end.main(argv)
    assert sorted(record["configurations"]) == ["cpu", "paper"]  # both inference configurations in one run
    gemm = record["gemm"]["gflops"]
    assert gemm == pytest.approx(np.median(record["gemm"]["samples"]))
    for name, parts in record["configurations"].items():
        latency = parts["latency"]
        # one run: the total is the sum of its stages, and the derived figures follow from the medians
        (run,) = latency["all_runs"]
        assert latency["median_s"] == run["wall"] and latency["median_cpu_s"] == run["cpu"]
        stages = sum(run["wall"][s] for s in bench_end_to_end.STAGES)
        assert latency["median_s"]["total"] == pytest.approx(stages, rel=1e-12)
        assert latency["images_per_s"] == pytest.approx(1 / latency["median_s"]["total"])
        dominant = max(bench_end_to_end.STAGES, key=lambda s: run["wall"][s])
        assert latency["dominant_stage"] == dominant
        assert latency["dominant_share"] == pytest.approx(run["wall"][dominant] / run["wall"]["total"])
        assert latency["writing_share"] == pytest.approx(run["wall"]["writing"] / run["wall"]["total"])
        assert latency["gemm_gflops"] == gemm
        share = latency["network_gflops_per_image"] / run["wall"]["network"] / gemm
        assert latency["network_gemm_share"] == pytest.approx(share)
        assert latency["roi_size"] == [32, 64]
        # the configuration's own files: scale_cpu.json merged over inference.json for the CPU recipe
        files = [Path(f).name for f in latency["configuration"]["files"]]
        assert files == (["inference.json", "scale_cpu.json"] if name == "cpu" else ["inference.json"])
        # the report's probability is the planted logit through the max pooling and the sigmoid, by hand
        report = json.loads(next((tmp_path / "work" / name / "reports").glob("*/report.json")).read_text())
        assert report["fracture_probability"] == pytest.approx(1 / (1 + math.exp(-1.5)), abs=1e-6)
        assert report["positive"] is True and latency["report"] == report["fracture_probability"]
        assert latency["written_bytes"]["overlay_png"] == Path(report["overlay_png"]).stat().st_size
        # network part, one round: the ratio and the GEMM shares are these quotients of the recorded figures
        net = parts["network"]
        assert net["formats"] == ["channels_last", "folded"] and set(net["per_format"]) == set(net["formats"])
        for row in net["per_format"].values():
            assert row["ratio"] == pytest.approx(row["aasn_s"] / row["vanilla_s"])
            for model in ("vanilla", "aasn"):
                share = net["gflops_per_image"][model] / row[f"{model}_s"] / row["matmul_gflops"]
                assert row[f"{model}_matmul_fraction"] == pytest.approx(share)
        assert net["ratio"] == net["per_format"]["channels_last"]["ratio"]
        assert net["gflops_per_image"]["aasn"] > net["gflops_per_image"]["vanilla"]  # AASN runs the encoder twice
    # the CPU recipe's network is the small DenseNet of scale_cpu.json, the paper's DenseNet-121
    scale_cpu = json.loads((ROOT / "bundle" / "configs" / "scale_cpu.json").read_text())
    assert record["configurations"]["cpu"]["network"]["network_kwargs"] == scale_cpu["network_kwargs"]
    assert record["configurations"]["paper"]["network"]["network_kwargs"] == {}
    # training: every sample of fold 0's training split (7 of the 10 copies, fewer than a batch of 8) per epoch
    training = fold_split(tmp_path / "work" / "train_data" / "datalist.json", 0, "training")
    assert set(record["training"]["settings"]) == set(bench_end_to_end.TRAIN_SETTINGS)
    for row in record["training"]["settings"].values():
        assert row["samples_per_epoch"] == len(training) == 7
        assert row["samples_per_s"] == pytest.approx(row["samples_per_epoch"] / row["epoch_s"])
    provenance = record["provenance"]
    assert provenance["command"] == "python benchmarks/bench_end_to_end.py " + " ".join(argv)
    assert len(provenance["commit"]) == 40 and provenance["torch_threads"] == 1
    assert provenance["gemm_gflops"] == round(gemm, 1)
    text = (results / "end_to_end.md").read_text()
    assert "| network |" in text and "| AASN / Vanilla |" in text and "| full cache |" in text
    assert "## Configuration `cpu`" in text and "## Configuration `paper`" in text and "| folded |" in text
    assert f"Commit: {provenance['commit']}" in text and "load average (1, 5, 15 min) before" in text
    assert f"fp32 GEMM {provenance['gemm_gflops']} GFLOP/s" in text


def test_end_to_end_benchmark_throughput_tiny_run(tmp_path):
    """The folder part: the configuration's own inference workflow in a fresh process per worker count."""
    import bench_end_to_end

    datalist = _tiny_dataset(tmp_path / "case", 1)
    item = json.loads(datalist.read_text())["training"][0]
    image = tmp_path / "case" / item["image"]
    (image.with_suffix(".json")).write_text((tmp_path / "case" / item["annotation"]).read_text())
    tiny = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1], "bn_size": 2, "projection_channels": 8}
    argv = ["--case", str(image), "--parts", "throughput", "--configs", "cpu", "--throughput-images", "3",
            "--workers", "0", "1", "--threads", "1", "--roi", "32", "64", "--matmul-size", "64",
            "--set", f"network_kwargs={json.dumps(tiny)}", "--set", "check_annotated_images=false",
            "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")]  # fmt: skip
    record = bench_end_to_end.main(argv)
    throughput = record["configurations"]["cpu"]["throughput"]
    assert [run["num_workers"] for run in throughput["runs"]] == [0, 1]
    for run in throughput["runs"]:
        assert run["images"] == run["reported"] == 3
        assert run["images_per_s"] > 0 and run["images_per_s_whole_run"] == pytest.approx(3 / run["wall_s"])
        assert 0 < run["peak_pss_mb"] <= run["peak_rss_mb"] + 1
        out = tmp_path / "work" / "throughput" / "cpu" / f"w{run['num_workers']}"
        summary = json.loads((out / "inference_summary.json").read_text())
        assert [e["status"] for e in summary] == ["ok"] * 3
    text = (tmp_path / "results" / "end_to_end.md").read_text()
    assert "### Folder throughput: 3 copies" in text


def test_detected_landmarks_paired_comparison_against_hand_computed_values():
    import bench_detected_landmarks

    # two subjects, two images each; detected scores = true + a known shift on one image
    true = [
        {"case": "a1", "subject": "a", "label": 1, "score": 0.9},
        {"case": "a2", "subject": "a", "label": 0, "score": 0.2},
        {"case": "b1", "subject": "b", "label": 1, "score": 0.6},
        {"case": "b2", "subject": "b", "label": 0, "score": 0.4},
    ]
    same = bench_detected_landmarks.paired_comparison(true, [dict(c) for c in true], {c["case"] for c in true}, seed=0)
    assert same["difference_ci95"] == [0.0, 0.0]
    assert same["score_mean_abs_difference"] == 0.0 and same["score_pearson_r"] == pytest.approx(1.0)

    shifted = [dict(c) for c in true]
    shifted[3]["score"] = 0.95  # b2 (negative) now outranks every positive: AUC 1.0 -> 0.5
    result = bench_detected_landmarks.paired_comparison(true, shifted, {c["case"] for c in true}, seed=0)
    assert result["score_mean_abs_difference"] == pytest.approx(0.55 / 4)
    assert result["score_std_true"] == pytest.approx(float(np.std([0.9, 0.2, 0.6, 0.4])))
    low, high = result["difference_ci95"]
    assert low < 0 and high <= 0  # never better with the shifted scores
    assert bench_detected_landmarks.auc_on(shifted, {"a1", "a2", "b1", "b2"}) == pytest.approx(0.5)
    assert bench_detected_landmarks.auc_on(true, {"a1", "a2", "b1", "b2"}) == pytest.approx(1.0)


def test_fracture_visibility_pairs_each_fracture_with_its_contralateral_patch(tmp_path):
    import bench_fracture_visibility as visibility
    from monai.transforms import Compose

    from custom_transforms.pipeline import aasn_geometry, aasn_loading

    datalist = _tiny_dataset(tmp_path / "data", 30)
    items = json.loads(datalist.read_text())["training"]
    for item in items:
        for key in ("image", "annotation"):
            item[key] = str(datalist.parent / item[key])
    positives = [i for i in items if i["label"] == 1]
    assert positives
    x, y, stats, refused, outside = visibility.fracture_patches(positives, (32, 64), half=4)
    assert x.shape[1:] == (1, 8, 8) and y.tolist() == [1, 0] * (len(y) // 2)
    fractures = sum(len(json.loads(Path(i["annotation"]).read_text())["fractures"]) for i in positives)
    assert len(y) // 2 + outside == fractures and not refused
    x_m, _, stats_m, _, _ = visibility.fracture_patches(positives, (32, 64), half=4, contralateral="mirrored")

    # the first pair, by hand: the ROI, and the mirrored ROI sampled through the TPS grid (the default) or not
    chain = Compose(aasn_loading() + aasn_geometry(roi_size=(32, 64), with_masks=False))
    for item in positives:
        d = chain({"image": item["image"], "annotation": item["annotation"]})
        inside = [
            (c, r)
            for c, r in np.asarray(d["roi_fractures"]).reshape(-1, 2).round().astype(int)
            if 0 <= r < 32 and 0 <= c < 64
        ]
        if inside:
            break
    c, r = inside[0]
    # the grid's x and y (normalised) at pixel (r, c) -> mirrored-ROI pixel, sampled bilinearly by hand
    grid = np.asarray(d["tps_grid"], dtype=np.float64)
    mirrored = np.asarray(d["roi_mirrored"], dtype=np.float64)[0]
    gx, gy = ((grid[0] + 1) * 64 - 1) / 2, ((grid[1] + 1) * 32 - 1) / 2
    gx, gy = np.clip(gx, 0, 63), np.clip(gy, 0, 31)  # border padding
    x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
    x1, y1 = np.minimum(x0 + 1, 63), np.minimum(y0 + 1, 31)
    fx, fy = gx - x0, gy - y0
    aligned = (
        mirrored[y0, x0] * (1 - fx) * (1 - fy)
        + mirrored[y0, x1] * fx * (1 - fy)
        + mirrored[y1, x0] * (1 - fx) * fy
        + mirrored[y1, x1] * fx * fy
    )
    assert not np.allclose(aligned, mirrored, atol=1e-3)  # the warp moves the contralateral anatomy
    np.testing.assert_allclose(visibility.tps_aligned(d["roi_mirrored"], d["tps_grid"])[0], aligned, atol=1e-4)
    roi = np.asarray(d["roi"])[0]
    for k, (negative, xs, ss) in enumerate(((aligned, x, stats), (mirrored, x_m, stats_m))):
        for j, image in enumerate((roi, negative)):
            patch = np.pad(image, 4, mode="edge")[r : r + 8, c : c + 8]
            assert ss[j] == pytest.approx((patch.mean(), patch.std()), abs=1e-4), (k, j)
            assert xs[j, 0] == pytest.approx((patch - patch.mean()) / (patch.std() + 1e-6), abs=1e-3), (k, j)
    with pytest.raises(ValueError, match="contralateral"):
        visibility.fracture_patches(positives, (32, 64), half=4, contralateral="warped")


def test_fracture_visibility_selects_the_epoch_on_validation_only(monkeypatch):
    """Planted validation scores: AUC 0.5, then 1.0, then 0.75 at epochs 2, 4, 6. Epoch 4 must be chosen, and the
    network returned must hold the weights it had at epoch 4 (not the last epoch's)."""
    import copy

    import bench_fracture_visibility as visibility
    import torch

    y_val = np.array([1, 1, 0, 0])
    planted = [np.array([0.1, 0.9, 0.1, 0.9]), np.array([0.9, 0.8, 0.2, 0.1]), np.array([0.9, 0.2, 0.5, 0.1])]
    seen: list[dict] = []

    def planted_scores(net, x):
        assert x is x_val  # only the validation patches are scored during training
        seen.append(copy.deepcopy(net.state_dict()))
        return planted[len(seen) - 1]

    monkeypatch.setattr(visibility, "scores_of", planted_scores)
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 16)
    x = (rng.normal(0, 0.1, (32, 1, 8, 8)) + np.where(y == 1, 1.0, -1.0)[:, None, None, None]).astype(np.float32)
    x_val = x[:4].copy()
    net, curve, chosen = visibility.train_and_select(x, y, x_val, y_val, epochs=6, seed=0, every=2)
    assert [(c["epoch"], c["val_auc"]) for c in curve] == [(2, 0.5), (4, 1.0), (6, 0.75)]
    assert chosen == curve[1]
    state = net.state_dict()
    assert all(torch.equal(state[k], seen[1][k]) for k in state)
    assert not all(torch.equal(seen[1][k], seen[2][k]) for k in state)  # the weights did change after epoch 4


def test_fracture_visibility_tiny_run(tmp_path, capsys):
    import bench_fracture_visibility as visibility

    datalist = _tiny_dataset(tmp_path / "data", 40)
    items = json.loads(datalist.read_text())["training"]
    from scripts.datalist import split_fold

    def positives(fold, section):
        return sum(i["label"] == 1 for i in split_fold(items, fold)[section])

    fold = next(f for f in range(5) if all(positives(f, s) for s in ("training", "validation", "test")))
    results, work = tmp_path / "results", tmp_path / "work"
    argv = [
        "--data",
        str(datalist.parent),
        "--fold",
        str(fold),
        "--roi",
        "32",
        "64",
        "--half-size",
        "4",
        "--epochs",
        "3",
        "--every",
        "2",
        "--work",
        str(work),
        "--results",
        str(results),
    ]
    record = visibility.main(argv)
    printed = capsys.readouterr().out
    assert [c["epoch"] for c in record["curve"]] == [2, 3]
    assert record["chosen_epoch"] == max(record["curve"], key=lambda c: (c["val_auc"], -c["epoch"]))["epoch"]
    # no test figure while training: the log holds one read, made after the epoch was chosen
    assert "test AUC" not in printed.split("Epoch chosen")[0]
    (read,) = record["test_reads"]
    assert read["fold"] == fold and read["command"] == record["command"] == record["provenance"]["command"]
    assert record["contralateral"] == "tps" and set(record["control_auc"]) == {"patch mean", "patch standard deviation"}
    assert len(record["provenance"]["commit"]) == 40 and record["provenance"]["load_average_after"]
    text = (results / "fracture_visibility.md").read_text()
    assert "TPS-aligned contralateral anatomy" in text and f"| patch CNN, epoch {record['chosen_epoch']} of 3 |" in text
    assert f"Commit: {record['provenance']['commit']}" in text
    # a second run appends its read: the results list both
    record = visibility.main(argv + ["--contralateral", "mirrored"])
    assert len(record["test_reads"]) == 2 and "mirrored-only" in (results / "fracture_visibility.md").read_text()


def _git(folder: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_results_metadata_records_commit_tree_state_machine_and_load(tmp_path, monkeypatch):
    import results_metadata

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("ignored/\n")
    _git(repo, "add", "a.py", ".gitignore")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert results_metadata.git_state(repo) == {"commit": head, "dirty": False, "modified": [], "untracked": []}
    (repo / "ignored").mkdir()
    (repo / "ignored" / "out.json").write_text("{}")  # ignored files do not make the tree dirty
    assert results_metadata.git_state(repo)["dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    (repo / "b.py").write_text("")
    assert results_metadata.git_state(repo) == {
        "commit": head,
        "dirty": True,
        "modified": ["a.py"],
        "untracked": ["b.py"],
    }
    assert results_metadata.git_state(tmp_path / "not_a_repo")["commit"] == "unknown"

    # the free-text option's value is elided from the recorded command
    assert results_metadata.command_line("/x/benchmarks/bench_y.py", ["--runs", "3", "--notes", "long text"]) == (
        'python benchmarks/bench_y.py --runs 3 --notes "..."'
    )
    loads = iter([(1.0, 2.0, 3.0), (4.444, 5.0, 6.0)])
    monkeypatch.setattr(results_metadata.os, "getloadavg", lambda: next(loads))
    monkeypatch.setattr(results_metadata, "ROOT", repo)
    monkeypatch.setattr(results_metadata, "cpu_model", lambda: "Planted CPU 9000")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(1)
    block = results_metadata.finish(results_metadata.start("python benchmarks/bench_y.py"))
    assert block["commit"] == head and block["dirty"] is True and block["cpu_model"] == "Planted CPU 9000"
    assert block["load_average_before"] == [1.0, 2.0, 3.0] and block["load_average_after"] == [4.44, 5.0, 6.0]
    assert block["torch_threads"] == 1 and block["omp_num_threads"] == "3" and block["cpu_count"] == os.cpu_count()
    assert block["started"].endswith("UTC") and block["finished"] >= block["started"]
    text = "\n".join(results_metadata.markdown_lines(block))
    assert "Command: `python benchmarks/bench_y.py`" in text
    assert f"Commit: {head} (dirty tree: 1 modified tracked, 1 untracked files" in text
    assert "CPU Planted CPU 9000, " in text and "torch threads 1, OMP_NUM_THREADS 3" in text
    assert "before 1.00, 2.00, 3.00, after 4.44, 5.00, 6.00" in text


def test_results_metadata_reads_the_cpu_model_from_cpuinfo(tmp_path, monkeypatch):
    import results_metadata

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: Planted\nmodel name\t: Planted CPU @ 2.0GHz\n")
    real_path = results_metadata.Path
    monkeypatch.setattr(results_metadata, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert results_metadata.cpu_model() == "Planted CPU @ 2.0GHz"
    cpuinfo.write_text("processor\t: 0\n")
    assert results_metadata.cpu_model() == "unknown"


def test_every_benchmark_script_writes_the_provenance_block():
    """Each benchmark script builds the block with results_metadata (start, then finish when it writes)."""
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py")) + [ROOT / "benchmarks" / "probe_fracture_learning.py"]
    assert len(scripts) >= 8
    for script in scripts:
        text = script.read_text()
        assert "results_metadata.start(" in text and "results_metadata.finish(" in text, script.name


def test_every_results_file_records_its_provenance():
    """The committed results: each JSON has the block (legacy ones mark what is unknown, never a guess), and each
    markdown beside it shows the commit line."""
    required = {
        "command",
        "commit",
        "dirty",
        "cpu_model",
        "cpu_count",
        "torch_threads",
        "load_average_before",
        "load_average_after",
        "finished",
    }
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert files
    for path in files:
        record = json.loads(path.read_text())
        block = record["provenance"]
        assert required <= set(block), (path.name, required - set(block))
        assert block["command"] == record["command"], path.name
        if block.get("legacy"):
            assert block["commit"] == "unknown" and block["committed_versions"], path.name
            # each listed commit touched this file
            for version in block["committed_versions"]:
                changed = _git(ROOT, "show", "--name-only", "--format=", version["commit"]).splitlines()
                assert f"benchmarks/results/{path.name}" in changed, (path.name, version["commit"])
        else:
            assert len(block["commit"]) == 40 and isinstance(block["dirty"], bool), path.name
        assert "Commit: " in path.with_suffix(".md").read_text(), path.name

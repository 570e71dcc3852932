"""End-to-end speed: one 2,000 x 2,500 DICOM radiograph to the written report, stage by stage; network ratio and
FLOP utilisation; training throughput with and without the preprocessing cache.

    .venv/bin/python benchmarks/bench_end_to_end.py                      # all three parts, CPU
    .venv/bin/python benchmarks/bench_end_to_end.py --parts latency --runs 9 --threads 2

Parts:

``latency``
    A simulated atlas radiograph (2,000 rows x 2,500 columns, 0.172 mm pixels, DICOM DX) goes through the stages
    of the bundle's inference with the landmark detector in front (``configs/landmark_inference.json`` then
    ``configs/inference.json``'s chain), each timed on its own:

    ========== =========================================================================================
    read       ``LoadPXRd`` (DICOM decoding, VOI window, spacing)
    landmarks  ``LandmarkDetector`` as ``landmark_inference.json`` builds it (letterbox, UNet, decoding, shape
               prior, refinement patches)
    preprocess ``aasn_geometry``: symmetry axis, mirrored ROIs, TPS grid, pseudo-colour, packing
    network    AASN ``forward`` (DenseNet-121 at 256 x 512, eval, no grad)
    backproj   image score, sigmoid, ``ROIToOriginald`` onto the 2,000 x 2,500 grid, ``FractureResultd`` (peaks)
    writing    ``FractureReportWriter.write``: heatmap NIfTI, overlay PNG, ``report.json``
    ========== =========================================================================================

    Medians over ``--runs`` (after one warm-up), images/s = 1 / median total, and the process's peak resident
    memory after each stage. Trained weights are used when ``bundle/models`` has them; otherwise networks of the
    real sizes with random weights (seeded) and a shape model from jittered copies of the case's own landmarks:
    the time does not depend on the weight values, but an untrained detector's landmarks are meaningless, so the
    stages after it then use the annotated landmarks (said in the results).

``network``
    AASN / Vanilla forward time ratio and each one's FLOP rate as a share of a measured fp32 GEMM rate, at batch 1,
    by ``bench_network.py``'s own functions (interleaved rounds, medians).

``training``
    Samples per second of the bundle's ``train.json`` trainer (``SupervisedTrainer``, one epoch timed after a
    warm-up epoch, no validation) on copies of the case, in three data settings: ``no cache`` (every epoch reads
    the DICOMs and runs all preprocessing), ``loading cache`` (the bundle's default: decoded, size-limited images
    cached; jitter, intensity and geometry per sample) and ``full cache`` (no random augmentation, the whole chain
    cached, as the accuracy benchmark's reduced scale trains).

Results: ``benchmarks/results/end_to_end.md`` and ``.json``: configuration, versions and the provenance block of
``results_metadata`` (command, git commit and whether the tree was dirty, CPU model and cores, torch threads, load
average before and after, dates).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
CONFIGS = BUNDLE / "configs"
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import results_metadata  # noqa: E402

STAGES = ("read", "landmarks", "preprocess", "network", "backproj", "writing")
ROWS, COLS = 2000, 2500


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def simulate_case(folder: Path, seed: int = 0) -> dict:
    """One simulated atlas radiograph of ROWS x COLS pixels (DICOM DX) and its annotation JSON."""
    from simulation.dataset import generate_dataset

    datalist = Path(generate_dataset(folder, 1, anatomy="atlas", seed=seed, size=(ROWS, COLS), progress=False))
    item = json.loads(datalist.read_text())["training"][0]
    return {
        "image": str(folder / item["image"]),
        "annotation": str(folder / item["annotation"]),
        "label": item["label"],
        "subject": item["subject"],
    }


# ----------------------------------------------------------------------------------------------- latency
def jittered_shape_model(landmarks_px: np.ndarray, spacing_mm: Sequence[float], copies: int = 32, seed: int = 0):
    """A shape model from random similarity transforms and 2 mm noise of one configuration (stand-in when untrained)."""
    from scripts.landmarks.shape_model import StatisticalShapeModel

    rng = np.random.default_rng(seed)
    mm = landmarks_px * np.asarray([spacing_mm[1], spacing_mm[0]])
    shapes = []
    for _ in range(copies):
        angle, scale = rng.normal(0, 0.05), 1 + rng.normal(0, 0.05)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shapes.append(mm @ rot.T + rng.normal(0, 2.0, mm.shape))
    return StatisticalShapeModel.from_shapes(np.stack(shapes))


def build_detector(case_landmarks: np.ndarray, spacing_mm, device: torch.device):
    """The detector of ``landmark_inference.json``: trained if its files exist, else the same networks untrained."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "landmark_inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = f"$torch.device('{device}')"
    files = [parser.get_parsed_content(k) for k in ("network_path", "shape_model_path", "refine_network_path")]
    trained = all(os.path.isfile(f) for f in files)
    if not trained:
        torch.manual_seed(0)
        parser["network"] = "$@network_def.to(@device).eval()"
        parser["refiner"] = (
            "$scripts.landmarks.refinement.LandmarkRefiner(@refine_network_def.to(@device).eval(), "
            "@refine_long_side, @refine_patch_size, @device) if @use_refiner else None"
        )
        parser["shape_model"] = jittered_shape_model(case_landmarks, spacing_mm)
    return parser.get_parsed_content("landmark_detector"), trained


def build_aasn(device: torch.device, roi_size: Sequence[int]):
    """AASN as ``inference.json`` builds it; ``models/model.pt`` loaded (weights only) if present."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = f"$torch.device('{device}')"
    torch.manual_seed(0)
    network = parser.get_parsed_content("network")
    checkpoint = BUNDLE / "models" / "model.pt"
    trained = checkpoint.is_file()
    if trained:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        network.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    return network.eval(), parser.get_parsed_content("score_pooling"), trained


def latency(case: dict, runs: int, device: torch.device, roi_size: Sequence[int], out: Path) -> dict:
    from monai.transforms import Compose, EnsureTyped

    from custom_transforms.annotation import LoadAnnotationd
    from custom_transforms.backprojection import ROIToOriginald
    from custom_transforms.loading import LoadPXRd
    from custom_transforms.pipeline import aasn_geometry

    from scripts.fracture.scoring import ImageScored
    from scripts.reporting.fracture_result import FractureResultd
    from scripts.reporting.inference_writer import FractureReportWriter

    rss = {"start": peak_rss_mb()}
    reader = LoadPXRd(keys="image")
    truth = LoadAnnotationd(keys="annotation", image_key="image")(
        reader({"image": case["image"], "annotation": case["annotation"]})
    )
    spacing = [float(s) for s in truth["image"].meta["spacing_mm"]]
    detector, detector_trained = build_detector(np.asarray(truth["landmarks"]), spacing, device)
    network, pooling, network_trained = build_aasn(device, roi_size)
    geometry = Compose(
        aasn_geometry(roi_size=roi_size, with_masks=False)
        + [EnsureTyped(keys="siamese_input", dtype=torch.float32, track_meta=False)]
    )
    scoring = Compose([ImageScored(keys="pred", output_key="score", pooling=pooling)])
    backproject = ROIToOriginald(keys="pred")
    result = FractureResultd(keys="pred", threshold=0.5)
    writer = FractureReportWriter(out / "reports")
    landmark_source = "detector" if detector_trained else "annotation (detector untrained)"
    rss["models_built"] = peak_rss_mb()

    def once() -> tuple[dict, dict]:
        times, cpu, memory = {}, {}, {}
        t, c = time.perf_counter(), time.process_time()
        d = reader({"image": case["image"]})
        times["read"], cpu["read"] = time.perf_counter() - t, time.process_time() - c
        memory["read"] = peak_rss_mb()

        t, c = time.perf_counter(), time.process_time()
        detection = detector.detect(d["image"])
        times["landmarks"], cpu["landmarks"] = time.perf_counter() - t, time.process_time() - c
        memory["landmarks"] = peak_rss_mb()
        d["landmarks"] = detection.landmarks if detector_trained else truth["landmarks"]
        d["landmark_source"] = landmark_source  # what the report says (the writer reads it from the data)

        t, c = time.perf_counter(), time.process_time()
        d = geometry(d)
        times["preprocess"], cpu["preprocess"] = time.perf_counter() - t, time.process_time() - c
        memory["preprocess"] = peak_rss_mb()

        t, c = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            logits = network(d["siamese_input"][None].to(device))[0].cpu()
        times["network"], cpu["network"] = time.perf_counter() - t, time.process_time() - c
        memory["network"] = peak_rss_mb()

        t, c = time.perf_counter(), time.process_time()
        d["pred"] = logits
        d = scoring(d)
        d["pred"] = torch.sigmoid(d["pred"])
        d["pred_original"] = backproject({**d, "pred": d["pred"]})["pred"]
        d = result(d)
        times["backproj"], cpu["backproj"] = time.perf_counter() - t, time.process_time() - c
        memory["backproj"] = peak_rss_mb()

        t, c = time.perf_counter(), time.process_time()
        writer.write(d)
        times["writing"], cpu["writing"] = time.perf_counter() - t, time.process_time() - c
        memory["writing"] = peak_rss_mb()
        times["total"] = sum(times[s] for s in STAGES)
        cpu["total"] = sum(cpu[s] for s in STAGES)
        return {"wall": times, "cpu": cpu}, memory

    once()  # warm-up: first-call allocations, oneDNN kernel selection
    samples = [once() for _ in range(runs)]
    medians = {k: statistics.median(s[0]["wall"][k] for s in samples) for k in (*STAGES, "total")}
    cpu_medians = {k: statistics.median(s[0]["cpu"][k] for s in samples) for k in (*STAGES, "total")}
    dominant = max(STAGES, key=lambda s: medians[s])
    return {
        "runs": runs,
        "median_s": medians,
        "median_cpu_s": cpu_medians,
        "min_total_s": min(s[0]["wall"]["total"] for s in samples),
        "images_per_s": 1.0 / medians["total"],
        "dominant_stage": dominant,
        "dominant_share": medians[dominant] / medians["total"],
        "peak_rss_mb": {**rss, **samples[-1][1]},
        "detector_trained": detector_trained,
        "network_trained": network_trained,
        "image": {"rows": int(truth["image"].shape[-2]), "cols": int(truth["image"].shape[-1]), "spacing_mm": spacing},
        "roi_size": list(roi_size),
        "report": writer.reports[-1]["fracture_probability"] if writer.reports else None,
        "all_runs": [s[0] for s in samples],
    }


# ----------------------------------------------------------------------------------------------- network
def network_ratio(device: torch.device, roi_size: Sequence[int], repeats: int, matmul_size: int) -> dict:
    """AASN / Vanilla forward ratio and FLOP utilisation, with bench_network.py's functions."""
    from contextlib import nullcontext

    import bench_network

    reference = bench_network.ReferenceGemm(device, matmul_size, torch.float32)
    models = {name: bench_network.prepare(name, "channels_last", device) for name in bench_network.MODELS}
    x = bench_network.siamese_input(1, roi_size[0], roi_size[1], device)
    flops = {name: bench_network.count_flops(net, x) for name, net in models.items()}
    rounds = bench_network.interleaved_rounds(models, x, reference, device, 1, repeats, nullcontext)
    row = bench_network.summarise(rounds, flops, 1)
    return {
        "gflops_per_image": {k: v / 1e9 for k, v in flops.items()},
        "matmul_size": matmul_size,
        "repeats": repeats,
        **row,
    }


# ----------------------------------------------------------------------------------------------- training
TRAIN_SETTINGS = ("no_cache", "loading_cache", "full_cache")


def training_overrides(setting: str, run_dir: Path, datalist: Path, scale: dict) -> dict:
    overrides = {
        "bundle_root": str(run_dir),
        "dataset_dir": str(datalist.parent),
        "datalist": str(datalist),
        "fold": 0,
        "resume": False,
        "show_progress": False,
        "max_epochs": 2,
        "val_interval": 1000,
        "num_workers": 0,
        "cache_rate": 1.0,
        **scale,
    }
    if setting == "no_cache":
        overrides["cache_rate"] = 0.0
    elif setting == "full_cache":
        overrides["train#random_transforms"] = "$@geometry_transforms + [@to_float, @train#select]"
    return overrides


def training_throughput(case: dict, work: Path, images: int, scale: dict, settings: Sequence[str]) -> dict:
    """Samples/s of train.json's trainer on ``images`` copies of the case (one timed epoch after a warm-up epoch)."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    data = work / "train_data"
    data.mkdir(parents=True, exist_ok=True)
    annotation = json.loads(Path(case["annotation"]).read_text())
    items = []
    for i in range(images):  # copies of one radiograph, one subject each, spread over the 5 folds
        image = data / f"copy{i:03d}.dcm"
        shutil.copyfile(case["image"], image)
        (data / f"copy{i:03d}.json").write_text(json.dumps({**annotation, "image": image.name}))
        items.append(
            {
                "image": image.name,
                "annotation": f"copy{i:03d}.json",
                "label": int(case["label"]),
                "subject": f"S{i:03d}",
                "fold": i % 5,
            }
        )
    datalist = data / "datalist.json"
    datalist.write_text(json.dumps({"training": items}))
    results = {}
    for setting in settings:
        run_dir = work / f"train_{setting}"
        workflow = ConfigWorkflow(
            config_file=str(CONFIGS / "train.json"),
            meta_file=str(CONFIGS / "metadata.json"),
            logging_file=str(CONFIGS / "logging.conf"),
            workflow_type="train",
            **training_overrides(setting, run_dir, datalist, scale),
        )
        workflow.initialize()
        trainer = workflow.parser.get_parsed_content("train#trainer")
        epoch_times: list[float] = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e, times=epoch_times: times.append(time.perf_counter()))
        trainer.add_event_handler(
            Events.EPOCH_COMPLETED, lambda e, times=epoch_times: times.append(time.perf_counter())
        )
        workflow.run()
        workflow.finalize()
        # full batches (train.json drops the last partial one when the set is larger than a batch), else the set
        samples = min(len(trainer.data_loader) * trainer.data_loader.batch_size, len(trainer.data_loader.dataset))
        timed = epoch_times[-1] - epoch_times[-2]
        results[setting] = {"samples_per_epoch": samples, "epoch_s": timed, "samples_per_s": samples / timed}
        print(f"[training] {setting}: {samples / timed:.2f} samples/s", flush=True)
    return {"images": images, "scale": scale, "settings": results}


# ----------------------------------------------------------------------------------------------- report
def environment(threads: int) -> dict:
    import monai

    return {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "monai": monai.__version__,
            "numpy": np.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": threads,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
    }


def markdown(record: dict) -> str:
    env = record["environment"]
    provenance = record.get("provenance") or {
        "command": record["command"],
        "commit": results_metadata.UNKNOWN,
        "legacy": True,
        "note": "written before the provenance block existed",
    }
    lines = [
        "# End-to-end speed benchmark",
        "",
        *results_metadata.markdown_lines(provenance),
        f"Versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}; finished {record['finished']}.",
        "",
    ]
    lat = record.get("latency")
    if lat:
        weights = (
            ("trained" if lat["network_trained"] else "untrained (random, real sizes)")
            + " AASN; "
            + (
                "trained detector"
                if lat["detector_trained"]
                else "untrained detector (random weights, real sizes; the later stages used the annotated landmarks)"
            )
        )
        lines += [
            f"## Latency: one {lat['image']['rows']} x {lat['image']['cols']} DICOM to the written report",
            "",
            f"ROI {lat['roi_size'][0]} x {lat['roi_size'][1]}, {weights}; medians of {lat['runs']} runs after a "
            f"warm-up.",
            "",
            "| stage | median wall (ms) | share | median CPU (ms, all threads) | peak RSS after (MiB) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for stage in STAGES:
            lines.append(
                f"| {stage} | {1000 * lat['median_s'][stage]:.0f} | "
                f"{100 * lat['median_s'][stage] / lat['median_s']['total']:.0f} % | "
                f"{1000 * lat['median_cpu_s'][stage]:.0f} | {lat['peak_rss_mb'][stage]:.0f} |"
            )
        lines += [
            f"| **total** | **{1000 * lat['median_s']['total']:.0f}** | | {1000 * lat['median_cpu_s']['total']:.0f} | "
            f"|",
            "",
            f"{lat['images_per_s']:.2f} images/s; fastest run {1000 * lat['min_total_s']:.0f} ms; dominant stage: "
            f"**{lat['dominant_stage']}** ({100 * lat['dominant_share']:.0f} %). Goal: median under 1,000 ms "
            f"({'met' if lat['median_s']['total'] < 1.0 else 'not met'}).",
            "",
            f"CPU time per image {1000 * lat['median_cpu_s']['total']:.0f} ms (largest: "
            f"{max(STAGES, key=lambda s: lat['median_cpu_s'][s])}); wall / CPU = "
            f"{lat['median_s']['total'] / max(lat['median_cpu_s']['total'], 1e-9):.1f}. With one thread the CPU time "
            f"is "
            "the work itself, and the wall time beyond it is waiting for a core on the shared machine; with more "
            "threads the CPU time also counts OpenMP threads spinning at barriers.",
            "",
        ]
    net = record.get("network")
    if net:
        lines += [
            "## Network: AASN / Vanilla, FLOP utilisation (batch 1)",
            "",
            f"GFLOP per image: Vanilla {net['gflops_per_image']['vanilla']:.2f}, AASN "
            f"{net['gflops_per_image']['aasn']:.2f}. "
            f"Reference GEMM ({net['matmul_size']}^3, best of BLAS mm and oneDNN 1x1 conv): "
            f"{net['matmul_gflops']:.1f} GFLOP/s.",
            "",
            "| | Vanilla | AASN |",
            "| --- | --- | --- |",
            f"| forward (ms, median) | {1000 * net['vanilla_s']:.0f} | {1000 * net['aasn_s']:.0f} |",
            f"| share of GEMM rate | {100 * net['vanilla_matmul_fraction']:.0f} % | "
            f"{100 * net['aasn_matmul_fraction']:.0f} % |",
            "",
            f"AASN / Vanilla forward ratio {net['ratio']:.2f} (median of {net['repeats']} interleaved rounds; "
            f"best-of ratio {net['best']['ratio']:.2f}).",
            "",
        ]
    train = record.get("training")
    if train:
        scale = train["scale"]
        lines += [
            "## Training throughput (bundle train.json trainer, one process, no DataLoader workers)",
            "",
            f"{train['images']} copies of the case; ROI {scale['roi_size'][0]} x {scale['roi_size'][1]}, "
            f"network_kwargs `{json.dumps(scale['network_kwargs'])}`, batch {scale['batch_size']}.",
            "",
            "| data setting | samples/s | epoch (s) |",
            "| --- | --- | --- |",
        ]
        for setting, row in train["settings"].items():
            lines.append(f"| {setting.replace('_', ' ')} | {row['samples_per_s']:.2f} | {row['epoch_s']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", choices=("latency", "network", "training"), default=["latency", "network", "training"]
    )
    parser.add_argument("--runs", type=int, default=7, help="timed latency runs (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--roi", type=int, nargs=2, default=[256, 512], help="ROI H W of inference")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved network rounds")
    parser.add_argument("--matmul-size", type=int, default=2048, help="reference GEMM size")
    parser.add_argument("--train-images", type=int, default=48, help="copies of the case for the training part")
    parser.add_argument(
        "--train-scale",
        choices=("reduced", "paper"),
        default="reduced",
        help="reduced: 64 x 128 ROI, tiny DenseNet, batch 8; paper: 256 x 512, DenseNet-121, batch 8",
    )
    parser.add_argument("--case", help="an existing DICOM (its annotation beside it as <name>.json)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", default="end_to_end", help="results file stem")
    parser.add_argument("--rewrite", action="store_true", help="only rewrite <name>.md from <name>.json")
    args = parser.parse_args(argv)
    if args.rewrite:
        record = json.loads((Path(args.results) / f"{args.name}.json").read_text())
        (Path(args.results) / f"{args.name}.md").write_text(markdown(record))
        return record
    command = results_metadata.command_line(__file__, argv)
    meta = results_metadata.start(command)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="aasn_e2e_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.case:
        case = {
            "image": args.case,
            "annotation": str(Path(args.case).with_suffix(".json")),
            "label": 1,
            "subject": "case",
        }
    else:
        case = simulate_case(work / "case")
    record: dict[str, Any] = {
        "command": command,
        "case": case,
    }
    if "latency" in args.parts:
        record["latency"] = latency(case, args.runs, device, args.roi, work)
        print(json.dumps(record["latency"]["median_s"], indent=1), flush=True)
    if "network" in args.parts:
        record["network"] = network_ratio(device, args.roi, args.repeats, args.matmul_size)
    if "training" in args.parts:
        if args.train_scale == "reduced":
            scale = {
                "roi_size": [64, 128],
                "batch_size": 8,
                "network_kwargs": {
                    "init_features": 16,
                    "growth_rate": 8,
                    "block_config": [2, 2, 2, 2],
                    "bn_size": 2,
                    "projection_channels": 16,
                },
            }
        else:
            scale = {"roi_size": [256, 512], "batch_size": 8, "network_kwargs": {}}
        record["training"] = training_throughput(case, work, args.train_images, scale, TRAIN_SETTINGS)
    record["environment"] = environment(args.threads)
    record["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    record["provenance"] = results_metadata.finish(meta)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(record, indent=1, default=float))
    text = markdown(record)
    (results / f"{args.name}.md").write_text(text)
    print(text, flush=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return record


if __name__ == "__main__":
    main()

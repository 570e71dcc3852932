"""End-to-end speed: one 2,000 x 2,500 DICOM radiograph to the written report, stage by stage; a folder's
throughput with DataLoader workers; network ratio and FLOP utilisation; training throughput with and without the
preprocessing cache. Inference is measured for two configurations of the bundle in one run.

    .venv/bin/python benchmarks/bench_end_to_end.py                      # all parts, both configurations, CPU
    .venv/bin/python benchmarks/bench_end_to_end.py --parts latency network throughput --runs 9 --threads 2

Configurations (``--configs``; each is the bundle's own config files merged as ``monai.bundle run --config_file
"[...]"`` merges them, later files over earlier ones):

``cpu``
    the CPU recipe that the demo trains and the bundle ships: ``configs/inference.json`` with
    ``configs/scale_cpu.json`` merged over it (ROI 192 x 384, the small DenseNet, high-pass pseudo-colour).
``paper``
    the paper's scale: ``configs/inference.json`` with ROI 256 x 512, DenseNet-121, replicated grey.

``--set KEY=JSON`` overrides a config id in every configuration (e.g. ``--set fold_batchnorm=true``,
``--set overlay_max_size=null``): run twice to compare a setting.

Parts:

``latency``
    A simulated atlas radiograph (2,000 rows x 2,500 columns, 0.172 mm pixels, DICOM DX) goes through the stages
    of the configuration's own inference chain, each timed on its own:

    ========== =========================================================================================
    read       the config's ``preprocessing`` before ``DetectLandmarksd`` (``LoadPXRd``: DICOM decoding, VOI
               window, spacing; ``LoadAnnotationd``)
    landmarks  ``LandmarkDetector`` as ``landmark_inference.json`` builds it (letterbox, UNet, decoding, shape
               prior, refinement patches)
    preprocess the config's ``preprocessing`` after ``DetectLandmarksd``: orientation check, ``aasn_geometry``
               (symmetry axis, mirrored ROIs, TPS grid, pseudo-colour, packing), copies, selection
    network    the config's ``inferer`` on its ``network`` (eval, as the evaluator calls it; batch 1)
    backproj   the config's ``postprocessing``: image score, sigmoid, ``ROIToOriginald`` onto the 2,000 x 2,500
               grid, ``FractureResultd`` (peaks)
    writing    the config's ``report_writer.write``: heatmap NIfTI, overlay PNG, ``report.json`` (as its
               ``write_*`` ids say)
    ========== =========================================================================================

    Medians over ``--runs`` (after one warm-up), images/s = 1 / median total, the network stage's FLOP rate as a
    share of the fp32 GEMM rate measured in the same run (``bench_network.ReferenceGemm``, median of 3 before the
    runs), and the process's peak resident memory after each stage. Trained weights are used when
    ``bundle/models`` has weights that fit the configuration's network; otherwise networks of the real sizes with
    random weights (seeded) and a shape model from jittered copies of the case's own landmarks: the time does not
    depend on the weight values, but an untrained detector's landmarks are meaningless, so the stages after it
    then use the annotated landmarks (said in the results).

``throughput``
    Images/s of ``monai.bundle``'s inference workflow (the configuration's ``evaluator``: DataLoader, network,
    post-processing, writer) on a folder of ``--throughput-images`` copies of the case, once per ``--workers``
    value (the config id ``num_workers``: worker processes reading and preprocessing the next images while the
    network runs), each in a fresh process. Recorded: the steady rate (images after the first over the time from
    the first report to the last), the rate over the whole run (worker start and model loading included), and the
    peak memory of the process and its workers together (resident set and proportional set size, sampled every
    50 ms). With an untrained detector the copies carry their annotation and the detector does not run (said in
    the results).

``network``
    AASN / Vanilla forward time ratio and each one's FLOP rate as a share of a measured fp32 GEMM rate, at batch 1,
    by ``bench_network.py``'s own functions (interleaved rounds, medians), for each ``--network-formats``
    (``channels_last``: what ``build_network`` returns; ``folded``: its BatchNorms folded into the convolutions,
    ``scripts.fracture.folding``; ``nchw``; ``frozen``).

``training``
    Samples per second of the bundle's ``train.json`` trainer (``SupervisedTrainer``, one epoch timed after a
    warm-up epoch, no validation) on copies of the case, in three data settings: ``no cache`` (every epoch reads
    the DICOMs and runs all preprocessing), ``loading cache`` (the bundle's default: decoded, size-limited images
    cached; jitter, intensity and geometry per sample) and ``full cache`` (no random augmentation, the whole chain
    cached, as the accuracy benchmark's reduced scale trains).

Results: ``benchmarks/results/end_to_end.md`` and ``.json``: configuration, versions and the provenance block of
``results_metadata`` (command, git commit and whether the tree was dirty, CPU model and cores, torch threads, load
average before and after, the fp32 GEMM rate, dates).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
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

#: The inference configurations measured: config files (merged in order) and config ids set over them.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "cpu": {
        "files": ["inference.json", "scale_cpu.json"],
        "overrides": {},
        "description": "the CPU recipe the bundle ships: inference.json + scale_cpu.json",
    },
    "paper": {
        "files": ["inference.json"],
        "overrides": {"roi_size": [256, 512], "network_kwargs": {}, "pseudo_color": "replicate"},
        "description": "the paper's scale: inference.json, ROI 256 x 512, DenseNet-121",
    },
}
#: The issue's goals (issue 20), each said met or not in the results.
GOALS = {"median_ms": 450.0, "writing_share": 0.10, "gemm_share": 0.75, "ratio": 1.95, "peak_memory_mb": 1536.0}


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


def configuration(name: str, settings: dict | None = None, roi: Sequence[int] | None = None) -> dict:
    """The files and overrides of configuration ``name``, with ``settings`` (``--set``) and ``roi`` over them."""
    base = CONFIGURATIONS[name]
    overrides = {**base["overrides"], **(settings or {})}
    if roi is not None:
        overrides["roi_size"] = [int(r) for r in roi]
    return {"name": name, "files": [str(CONFIGS / f) for f in base["files"]], "overrides": overrides,
            "description": base["description"]}  # fmt: skip


def config_parser(config: dict, device: torch.device, **extra: Any):
    """A ``ConfigParser`` of the configuration's files merged in order (as ``monai.bundle run`` merges them), with
    ``bundle_root`` the bundle, the device, its overrides and ``extra`` set."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    with warnings.catch_warnings():  # scale_cpu.json's "+train" has nothing to merge into in inference.json
        warnings.simplefilter("ignore")
        parser.read_config(config["files"])
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = f"$torch.device('{device}')"
    for key, value in {**config["overrides"], **extra}.items():
        parser[key] = value
    return parser


def gemm_rate(device: torch.device, size: int, repeats: int = 3) -> dict:
    """The fp32 GEMM rate (GFLOP/s, median of ``repeats``; the faster of BLAS mm and a oneDNN 1x1 conv each time)."""
    import bench_network

    reference = bench_network.ReferenceGemm(device, size, torch.float32)
    reference.rate()  # warm-up
    rates = [reference.rate()["best"] / 1e9 for _ in range(repeats)]
    return {"gflops": statistics.median(rates), "samples": rates, "size": size, "threads": torch.get_num_threads()}


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


def detector_files() -> list[str]:
    """The trained detector's files as ``landmark_inference.json`` names them (global, shape model, refinement)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "landmark_inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    return [parser.get_parsed_content(k) for k in ("network_path", "shape_model_path", "refine_network_path")]


def detector_trained() -> bool:
    return all(os.path.isfile(f) for f in detector_files())


def build_detector(case_landmarks: np.ndarray, spacing_mm, device: torch.device):
    """The detector of ``landmark_inference.json``: trained if its files exist, else the same networks untrained."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "landmark_inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = f"$torch.device('{device}')"
    trained = detector_trained()
    if not trained:
        torch.manual_seed(0)
        parser["network"] = "$@network_def.to(@device).eval()"
        parser["refiner"] = (
            "$scripts.landmarks.refinement.LandmarkRefiner(@refine_network_def.to(@device).eval(), "
            "@refine_long_side, @refine_patch_size, @device) if @use_refiner else None"
        )
        parser["shape_model"] = jittered_shape_model(case_landmarks, spacing_mm)
    return parser.get_parsed_content("landmark_detector"), trained


def build_aasn(parser, device: torch.device) -> tuple[torch.nn.Module, bool]:
    """The configuration's network (its ``network`` id, seeded) in eval mode; ``bundle/models/model.pt`` loaded
    (weights only) when it fits this network, else random weights of the real sizes. Returns (network, trained)."""
    from scripts.landmarks.detector import load_network_weights

    torch.manual_seed(0)
    network = parser.get_parsed_content("network")
    checkpoint = BUNDLE / "models" / "model.pt"
    if checkpoint.is_file():
        try:
            load_network_weights(network, str(checkpoint), key="model")
            return network.to(device).eval(), True
        except (RuntimeError, KeyError, ValueError) as error:  # another configuration's weights
            print(f"[latency] {checkpoint} does not fit this network ({str(error).splitlines()[0][:120]}); "
                  "random weights", flush=True)  # fmt: skip
    return network.to(device).eval(), False


def split_preprocessing(parser) -> tuple[Any, Any]:
    """The config's ``preprocessing`` cut around its ``DetectLandmarksd``: (read, after the detector)."""
    from monai.transforms import Compose

    from scripts.landmarks.detector import DetectLandmarksd

    transforms = list(parser.get_parsed_content("preprocessing").transforms)
    cut = next(i for i, t in enumerate(transforms) if isinstance(t, DetectLandmarksd))
    return Compose(transforms[:cut]), Compose(transforms[cut + 1 :])


def count_network_flops(network: torch.nn.Module, x: torch.Tensor) -> int:
    import bench_network

    return bench_network.count_flops(network, x)


def latency(case: dict, config: dict, runs: int, device: torch.device, out: Path, gemm: dict) -> dict:
    from custom_transforms.annotation import LoadAnnotationd
    from custom_transforms.loading import LoadPXRd

    rss = {"start": peak_rss_mb()}
    truth = LoadAnnotationd(keys="annotation", image_key="image")(
        LoadPXRd(keys="image")({"image": case["image"], "annotation": case["annotation"]})
    )
    spacing = [float(s) for s in truth["image"].meta["spacing_mm"]]
    detector, trained_detector = build_detector(np.asarray(truth["landmarks"]), spacing, device)
    parser = config_parser(config, device, input=case["image"], output_dir=str(out / "reports"), items=[])
    network, network_trained = build_aasn(parser, device)
    read, preprocess = split_preprocessing(parser)
    inferer = parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")
    writer = parser.get_parsed_content("report_writer")
    roi_size = [int(r) for r in parser.get_parsed_content("roi_size")]
    landmark_source = "detector" if trained_detector else "annotation (detector untrained)"
    rss["models_built"] = peak_rss_mb()

    def once() -> tuple[dict, dict]:
        times, cpu, memory = {}, {}, {}
        t, c = time.perf_counter(), time.process_time()
        d = read({"image": case["image"]})
        times["read"], cpu["read"] = time.perf_counter() - t, time.process_time() - c
        memory["read"] = peak_rss_mb()

        t, c = time.perf_counter(), time.process_time()
        detection = detector.detect(d["image"])
        times["landmarks"], cpu["landmarks"] = time.perf_counter() - t, time.process_time() - c
        memory["landmarks"] = peak_rss_mb()
        if trained_detector:
            d.update(landmarks=detection.landmarks, landmark_confidence=detection.confidence,
                     landmark_corrected=np.asarray(detection.corrected, dtype=bool),
                     landmark_plausibility=detection.plausibility, landmarks_detected=True)  # fmt: skip
        else:
            d["landmarks"] = truth["landmarks"]
        d["landmark_source"] = landmark_source  # what the report says (the writer reads it from the data)

        t, c = time.perf_counter(), time.process_time()
        d = preprocess(d)
        times["preprocess"], cpu["preprocess"] = time.perf_counter() - t, time.process_time() - c
        memory["preprocess"] = peak_rss_mb()

        t, c = time.perf_counter(), time.process_time()
        with torch.no_grad():  # as the evaluator's eval mode; the inferer adds its own inference mode
            logits = inferer(d["siamese_input"][None].to(device), network)
        times["network"], cpu["network"] = time.perf_counter() - t, time.process_time() - c
        memory["network"] = peak_rss_mb()

        t, c = time.perf_counter(), time.process_time()
        d = postprocessing({**d, "pred": logits[0]})
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
    probe = torch.zeros(1, 8, *roi_size, device=device)
    probe[:, 6:] = 0.5
    flops = count_network_flops(network, probe)
    report = writer.reports[-1] if writer.reports else {}
    return {
        "configuration": {k: config[k] for k in ("files", "overrides", "description")},
        "runs": runs,
        "median_s": medians,
        "median_cpu_s": cpu_medians,
        "min_total_s": min(s[0]["wall"]["total"] for s in samples),
        "images_per_s": 1.0 / medians["total"],
        "dominant_stage": dominant,
        "dominant_share": medians[dominant] / medians["total"],
        "writing_share": medians["writing"] / medians["total"],
        "network_gflops_per_image": flops / 1e9,
        "gemm_gflops": gemm["gflops"],
        "network_gemm_share": flops / medians["network"] / (gemm["gflops"] * 1e9),
        "peak_rss_mb": {**rss, **samples[-1][1]},
        "detector_trained": trained_detector,
        "network_trained": network_trained,
        "image": {"rows": int(truth["image"].shape[-2]), "cols": int(truth["image"].shape[-1]), "spacing_mm": spacing},
        "roi_size": roi_size,
        "outputs": {
            k: parser.get_parsed_content(k)
            for k in ("write_heatmap", "heatmap_compressed", "write_overlay", "overlay_max_size", "fold_batchnorm")
        },
        "report": report.get("fracture_probability"),
        "written_bytes": {
            k: (os.path.getsize(report[k]) if report.get(k) else None) for k in ("heatmap_nifti", "overlay_png")
        },
        "all_runs": [s[0] for s in samples],
    }


# ----------------------------------------------------------------------------------------------- throughput
class MemorySampler:
    """Peak memory of this process and its children (DataLoader workers) together, sampled every ``interval`` s:
    resident set size (shared pages counted in each process) and proportional set size (shared pages split)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_rss_kb, self.peak_pss_kb = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _field(path: str, name: str) -> int:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(name):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids, todo = [], [pid]
        while todo:
            current = todo.pop()
            pids.append(current)
            for task in Path(f"/proc/{current}/task").glob("*"):
                try:
                    todo += [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    pass
        return pids

    def sample(self) -> None:
        pids = self._tree(os.getpid())
        rss = sum(self._field(f"/proc/{p}/status", "VmRSS:") for p in pids)
        pss = sum(self._field(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
        self.peak_rss_kb, self.peak_pss_kb = max(self.peak_rss_kb, rss), max(self.peak_pss_kb, pss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def throughput_child(spec: dict) -> dict:
    """In a fresh process: the configuration's inference workflow on the folder, timed (``--throughput-child``)."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    torch.set_num_threads(int(spec["threads"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workflow = ConfigWorkflow(
            config_file=spec["files"],
            meta_file=str(CONFIGS / "metadata.json"),
            logging_file=str(CONFIGS / "logging.conf"),
            workflow_type="infer",
            **spec["overrides"],
        )
        workflow.initialize()
    evaluator = workflow.parser.get_parsed_content("evaluator")
    stamps: list[float] = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda _: stamps.append(time.perf_counter()))
    with MemorySampler() as memory:
        start = time.perf_counter()
        workflow.run()
        wall = time.perf_counter() - start
    workflow.finalize()
    summary = json.loads((Path(spec["overrides"]["output_dir"]) / "inference_summary.json").read_text())
    images = len(stamps)
    return {
        "num_workers": spec["overrides"]["num_workers"],
        "images": images,
        "reported": sum(e["status"] == "ok" for e in summary),
        "wall_s": wall,
        "images_per_s": (images - 1) / (stamps[-1] - stamps[0]) if images > 1 else None,
        "images_per_s_whole_run": images / wall,
        "first_report_s": stamps[0] - start if stamps else None,
        "peak_rss_mb": memory.peak_rss_kb / 1024,
        "peak_pss_mb": memory.peak_pss_kb / 1024,
        "peak_rss_main_mb": peak_rss_mb(),
    }


def throughput(case: dict, config: dict, images: int, workers: Sequence[int], threads: int, work: Path,
               device: torch.device) -> dict:  # fmt: skip
    """Images/s of the configuration's inference workflow on ``images`` copies of the case, per worker count."""
    folder = work / "folder"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i in range(images):
            shutil.copyfile(case["image"], folder / f"copy{i:02d}.dcm")
    trained_detector = detector_trained()
    for i in range(images):  # without a trained detector the landmarks come from the annotations
        sidecar = folder / f"copy{i:02d}.json"
        if trained_detector:
            sidecar.unlink(missing_ok=True)
        else:
            shutil.copyfile(case["annotation"], sidecar)
    parser = config_parser(config, device)
    network, trained = build_aasn(parser, device)
    ckpt_dir = BUNDLE / "models"
    if not trained:  # the random weights of the latency part, where the workflow's CheckpointLoader finds them
        ckpt_dir = work / config["name"] / "models"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"model": network.state_dict()}, ckpt_dir / "model.pt")
    del network
    runs = []
    for count in workers:
        overrides = {
            **config["overrides"],
            "input": str(folder),
            "output_dir": str(work / config["name"] / f"w{count}"),
            "overwrite": True,
            "bundle_root": str(BUNDLE),
            "ckpt_dir": str(ckpt_dir),
            "num_workers": int(count),
            "device": str(device),
        }
        spec = {"files": config["files"], "overrides": overrides, "threads": threads}
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--throughput-child", json.dumps(spec)],
            cwd=str(BUNDLE), capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"throughput run ({config['name']}, {count} workers) failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(row)
        print(f"[throughput] {config['name']}, {count} workers: {row['images_per_s'] or 0:.2f} images/s, "
              f"peak RSS {row['peak_rss_mb']:.0f} MiB", flush=True)  # fmt: skip
    return {
        "images": images,
        "threads": threads,
        "landmarks": "detector" if trained_detector else "annotation (detector untrained: not run)",
        "network_trained": trained,
        "runs": runs,
    }


# ----------------------------------------------------------------------------------------------- network
def network_ratio(device: torch.device, config: dict, repeats: int, matmul_size: int,
                  formats: Sequence[str]) -> dict:  # fmt: skip
    """AASN / Vanilla forward ratio and FLOP utilisation per execution format, with bench_network.py's functions."""
    from contextlib import nullcontext

    import bench_network

    parser = config_parser(config, device)
    roi_size = [int(r) for r in parser.get_parsed_content("roi_size")]
    network_kwargs = dict(parser.get_parsed_content("network_kwargs"))
    reference = bench_network.ReferenceGemm(device, matmul_size, torch.float32)
    models = {
        f"{name}@{fmt}": bench_network.prepare(name, fmt, device, **network_kwargs)
        for fmt in formats
        for name in bench_network.MODELS
    }
    x = bench_network.siamese_input(1, roi_size[0], roi_size[1], device)
    flops = {name: bench_network.count_flops(bench_network.prepare(name, "channels_last", device, **network_kwargs), x)
             for name in bench_network.MODELS}  # fmt: skip
    rounds = bench_network.interleaved_rounds(models, x, reference, device, 1, repeats, nullcontext)
    per_format = {}
    for fmt in formats:
        renamed = [{"reference": r["reference"], **{n: r[f"{n}@{fmt}"] for n in bench_network.MODELS}} for r in rounds]
        per_format[fmt] = bench_network.summarise(renamed, flops, 1)
    primary = per_format[formats[0]]
    return {
        "roi_size": roi_size,
        "network_kwargs": network_kwargs,
        "gflops_per_image": {k: v / 1e9 for k, v in flops.items()},
        "matmul_size": matmul_size,
        "repeats": repeats,
        "formats": list(formats),
        **primary,
        "per_format": per_format,
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


def _met(value: float | None, goal: float, at_most: bool = True) -> str:
    if value is None:
        return "not measured"
    return "met" if (value <= goal if at_most else value >= goal) else "**not met**"


def configurations_of(record: dict) -> dict[str, dict]:
    """The record's per-configuration results; a record of one inference configuration (written before issue 20:
    ``latency`` and ``network`` at the top level) is shown as the paper scale it measured."""
    if "configurations" in record:
        return record["configurations"]
    legacy = {k: record[k] for k in ("latency", "network") if record.get(k)}
    return {"paper": legacy} if legacy else {}


def latency_lines(lat: dict) -> list[str]:
    weights = (
        ("trained" if lat["network_trained"] else "untrained (random, real sizes)")
        + " AASN; "
        + (
            "trained detector"
            if lat["detector_trained"]
            else "untrained detector (random weights, real sizes; the later stages used the annotated landmarks)"
        )
    )
    lines = [
        f"### Latency: one {lat['image']['rows']} x {lat['image']['cols']} DICOM to the written report",
        "",
        f"ROI {lat['roi_size'][0]} x {lat['roi_size'][1]}, {weights}; medians of {lat['runs']} runs after a warm-up.",
    ]
    if lat.get("outputs"):
        outputs = lat["outputs"]
        heatmap = "gzip" if outputs["heatmap_compressed"] else "uncompressed"
        overlay = f"long side at most {outputs['overlay_max_size']} px" if outputs["overlay_max_size"] else "full size"
        lines.append(
            f"Outputs: heatmap NIfTI {heatmap if outputs['write_heatmap'] else 'off'}, overlay "
            f"{overlay if outputs['write_overlay'] else 'off'}; "
            f"fold_batchnorm {str(outputs['fold_batchnorm']).lower()}."
        )
    lines += [
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
    total_ms = 1000 * lat["median_s"]["total"]
    lines += [
        f"| **total** | **{total_ms:.0f}** | | {1000 * lat['median_cpu_s']['total']:.0f} | |",
        "",
        f"{lat['images_per_s']:.2f} images/s; fastest run {1000 * lat['min_total_s']:.0f} ms; dominant stage: "
        f"**{lat['dominant_stage']}** ({100 * lat['dominant_share']:.0f} %).",
    ]
    if "network_gemm_share" in lat:
        lines += [
            "",
            f"Network stage: {lat['network_gflops_per_image']:.2f} GFLOP in {1000 * lat['median_s']['network']:.0f} ms "
            f"= {100 * lat['network_gemm_share']:.0f} % of the fp32 GEMM rate measured in this run "
            f"({lat['gemm_gflops']:.1f} GFLOP/s). Writing: {100 * lat['writing_share']:.0f} % of the total.",
        ]
    lines += [
        "",
        f"CPU time per image {1000 * lat['median_cpu_s']['total']:.0f} ms (largest: "
        f"{max(STAGES, key=lambda s: lat['median_cpu_s'][s])}); wall / CPU = "
        f"{lat['median_s']['total'] / max(lat['median_cpu_s']['total'], 1e-9):.1f}. With one thread the CPU time is "
        "the work itself, and the wall time beyond it is waiting for a core on the shared machine; with more "
        "threads the CPU time also counts OpenMP threads spinning at barriers.",
        "",
    ]
    return lines


def throughput_lines(tp: dict) -> list[str]:
    lines = [
        f"### Folder throughput: {tp['images']} copies of the case through the inference workflow",
        "",
        f"Landmarks: {tp['landmarks']}; AASN {'trained' if tp['network_trained'] else 'random weights'}; "
        f"{tp['threads']} torch threads in the main process (workers: 1 each). Each row a fresh process.",
        "",
        "| DataLoader workers | images/s (steady) | images/s (whole run) | first report (s) | peak RSS, all processes "
        "(MiB) | peak PSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in tp["runs"]:
        steady = "n/a" if run["images_per_s"] is None else f"{run['images_per_s']:.2f}"
        lines.append(
            f"| {run['num_workers']} | {steady} | {run['images_per_s_whole_run']:.2f} | {run['first_report_s']:.1f} "
            f"| {run['peak_rss_mb']:.0f} | {run['peak_pss_mb']:.0f} |"
        )
    lines += [
        "",
        "Steady: the images after the first over the time from the first report to the last. RSS counts pages "
        "shared by the workers with the main process in each of them; PSS splits them.",
        "",
    ]
    return lines


def network_lines(net: dict) -> list[str]:
    lines = [
        "### Network: AASN / Vanilla, FLOP utilisation (batch 1)",
        "",
        f"GFLOP per image: Vanilla {net['gflops_per_image']['vanilla']:.2f}, AASN "
        f"{net['gflops_per_image']['aasn']:.2f}. "
        f"Reference GEMM ({net['matmul_size']}^3, best of BLAS mm and oneDNN 1x1 conv): "
        f"{net['matmul_gflops']:.1f} GFLOP/s.",
        "",
    ]
    per_format = net.get("per_format") or {net.get("formats", ["channels_last"])[0]: net}
    lines += [
        "| format | Vanilla forward (ms) | AASN forward (ms) | Vanilla share of GEMM | AASN share of GEMM | "
        "AASN / Vanilla |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fmt, row in per_format.items():
        lines.append(
            f"| {fmt} | {1000 * row['vanilla_s']:.0f} | {1000 * row['aasn_s']:.0f} | "
            f"{100 * row['vanilla_matmul_fraction']:.0f} % | {100 * row['aasn_matmul_fraction']:.0f} % | "
            f"{row['ratio']:.2f} |"
        )
    lines += [
        "",
        f"Medians of {net['repeats']} interleaved rounds; best-of AASN / Vanilla ratio ({list(per_format)[0]}) "
        f"{net['best']['ratio']:.2f}.",
        "",
    ]
    return lines


def goal_lines(configurations: dict[str, dict]) -> list[str]:
    paper = configurations.get("paper") or {}
    lat, net, tp = paper.get("latency"), paper.get("network"), paper.get("throughput")
    if not (lat or net or tp):
        return []
    roi = (lat or net or {}).get("roi_size")
    if roi is not None and list(roi) != [256, 512]:
        return [f"(The goals of issue 20 are for the paper's ROI 256 x 512; this run used {roi[0]} x {roi[1]}.)", ""]
    peak = max((r["peak_rss_mb"] for r in tp["runs"]), default=None) if tp else None
    lines = ["## Goals of issue 20 (paper scale, this run)", "", "| goal | measured | |", "| --- | --- | --- |"]
    if lat:
        lines += [
            f"| median at most {GOALS['median_ms']:.0f} ms | {1000 * lat['median_s']['total']:.0f} ms | "
            f"{_met(1000 * lat['median_s']['total'], GOALS['median_ms'])} |",
            f"| writing at most {100 * GOALS['writing_share']:.0f} % | "
            f"{100 * lat['median_s']['writing'] / lat['median_s']['total']:.0f} % | "
            f"{_met(lat['median_s']['writing'] / lat['median_s']['total'], GOALS['writing_share'])} |",
        ]
        if "network_gemm_share" in lat:
            share = lat["network_gemm_share"]
            lines.append(
                f"| network stage at least {100 * GOALS['gemm_share']:.0f} % of GEMM | {100 * share:.0f} % | "
                f"{_met(share, GOALS['gemm_share'], at_most=False)} |"
            )
    if net:
        lines.append(
            f"| AASN / Vanilla at most {GOALS['ratio']} | {net['ratio']:.2f} | {_met(net['ratio'], GOALS['ratio'])} |"
        )
    if peak is not None:
        lines.append(
            f"| peak memory under {GOALS['peak_memory_mb']:.0f} MiB (RSS, all processes) | {peak:.0f} MiB | "
            f"{_met(peak, GOALS['peak_memory_mb'])} |"
        )
    return [*lines, ""]


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
    configurations = configurations_of(record)
    lines += goal_lines(configurations)
    for name, parts in configurations.items():
        described = (parts.get("latency") or {}).get("configuration", {}).get("description") or CONFIGURATIONS.get(
            name, {}
        ).get("description", name)
        lines += [f"## Configuration `{name}`: {described}", ""]
        if parts.get("latency"):
            lines += latency_lines(parts["latency"])
        if parts.get("throughput"):
            lines += throughput_lines(parts["throughput"])
        if parts.get("network"):
            lines += network_lines(parts["network"])
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


def parse_settings(values: Sequence[str]) -> dict[str, Any]:
    """``KEY=JSON`` pairs (``--set``) as config overrides (a value that is not JSON is taken as a string)."""
    settings = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE (a JSON value), got {value!r}")
        try:
            settings[key] = json.loads(text)
        except json.JSONDecodeError:
            settings[key] = text
    return settings


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", choices=("latency", "throughput", "network", "training"),
        default=["latency", "throughput", "network", "training"],
    )  # fmt: skip
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGURATIONS), default=list(CONFIGURATIONS),
                        help="inference configurations to measure (latency, throughput, network)")  # fmt: skip
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=JSON",
                        help="a config id set in every configuration, e.g. fold_batchnorm=true")  # fmt: skip
    parser.add_argument("--runs", type=int, default=7, help="timed latency runs (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="limit numpy's BLAS threads (threadpoolctl) in this process; default: as is")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--roi", type=int, nargs=2, default=None, help="ROI H W for every configuration")
    parser.add_argument("--throughput-images", type=int, default=20, help="copies of the case in the folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader workers to measure")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved network rounds")
    parser.add_argument("--network-formats", nargs="+", default=["channels_last", "folded"],
                        choices=("channels_last", "folded", "nchw", "frozen"))  # fmt: skip
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
    parser.add_argument("--throughput-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.throughput_child:
        print(json.dumps(throughput_child(json.loads(args.throughput_child))), flush=True)
        return {}
    if args.rewrite:
        record = json.loads((Path(args.results) / f"{args.name}.json").read_text())
        (Path(args.results) / f"{args.name}.md").write_text(markdown(record))
        return record
    command = results_metadata.command_line(__file__, argv)
    meta = results_metadata.start(command)

    torch.set_num_threads(args.threads)
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")
    device = torch.device(args.device)
    settings = parse_settings(args.settings)
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
        "settings": settings,
        "blas_threads": args.blas_threads,
    }
    gemm = gemm_rate(device, args.matmul_size)
    record["gemm"] = gemm
    print(f"[gemm] {gemm['gflops']:.1f} GFLOP/s", flush=True)
    record["configurations"] = {}
    for name in args.configs:
        config = configuration(name, settings, args.roi)
        parts: dict[str, Any] = {}
        if "latency" in args.parts:
            parts["latency"] = latency(case, config, args.runs, device, work / name, gemm)
            print(f"[latency] {name}:", json.dumps(parts["latency"]["median_s"], indent=1), flush=True)
        if "throughput" in args.parts:
            parts["throughput"] = throughput(case, config, args.throughput_images, args.workers, args.threads,
                                             work / "throughput", device)  # fmt: skip
        if "network" in args.parts:
            parts["network"] = network_ratio(device, config, args.repeats, args.matmul_size, args.network_formats)
        record["configurations"][name] = parts
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
    record["provenance"] = results_metadata.finish(meta, gemm_gflops=round(gemm["gflops"], 1))
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

"""End-to-end effect of the landmark detector: AASN with detected landmarks against the same model with true ones.

    .venv/bin/python benchmarks/bench_detected_landmarks.py --landmark-models /path/to/models
    .venv/bin/python benchmarks/bench_detected_landmarks.py --fold 0 --method aasn --landmark-models bundle/models

Same data, same test fold, same weights; only the landmarks differ:

1. the AASN model of ``--method`` on test fold ``--fold`` is trained (or reused) exactly as
   ``bench_accuracy.py`` does (the bundle's ``train.json`` + variant, the scale's overrides), and evaluated with
   ``evaluate.json`` on the test fold with the annotated landmarks;
2. the landmark detector (``configs/landmark_inference.json`` with ``--landmark-models`` as ``ckpt_dir``; it
   must have been trained on the training split of the same fold, so that the test fold's atlas members are
   unseen by both networks) detects the 16 landmarks of every test image. Radial errors against the annotation
   are written like the bundle's other landmark metrics (MRE, SDR at 2/2.5/3/4 mm, overall and per landmark);
3. annotation files with the detected landmarks (fractures, spacing and everything else unchanged) are written,
   and the same weights are evaluated again with ``evaluate.json`` on them;
4. AUC, AP and recall at 1 % / 10 % FP of both evaluations and their differences go to
   ``<results>/detected_landmarks_<scale>.md`` and ``.json``.

Both evaluations read the test fold: each is appended to ``<work>/detected_landmarks/test_reads.jsonl`` (besides
the accuracy benchmark's own log of the model's first evaluation), and the results list every read logged there
(benchmarks/README.md, "Test-fold policy").

An image the detector refuses, or whose detected landmarks the preprocessing refuses (e.g. a folding TPS warp),
cannot be scored with detected landmarks: it is listed, and both AUCs are also given on the images scored both
ways.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_accuracy as accuracy  # noqa: E402  (puts bundle/ on sys.path too)
import results_metadata  # noqa: E402

CONFIGS = accuracy.CONFIGS


def detect_test_fold(
    items: Sequence[dict], models: Path, out: Path, roi_size: Sequence[int]
) -> tuple[list[dict], list[dict], dict]:
    """Detect the landmarks of ``items``; write annotations with them; return (new items, refused, metrics).

    An image is refused when the detector refuses it, or when the AASN preprocessing at ``roi_size`` refuses its
    detected landmarks (the same screening as ``bench_accuracy.screen_dataset`` applies to the annotated ones).
    """
    from monai.transforms import Compose

    from custom_transforms.annotation import LoadAnnotationd
    from custom_transforms.conventions import LANDMARK_NAMES
    from custom_transforms.loading import LoadPXRd
    from custom_transforms.pipeline import aasn_geometry

    from scripts.landmarks.detector import NotAPelvisError, load_landmark_detector
    from scripts.landmarks.metrics import radial_errors_mm, write_landmark_metrics

    detector = load_landmark_detector(ROOT / "bundle", ckpt_dir=str(models), device="cpu")
    load = Compose([LoadPXRd("image"), LoadAnnotationd("annotation", image_key="image")])
    annotations = out / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    detected_items, refused, errors, cases, seconds = [], [], [], [], []
    for item in items:
        data = load(dict(item))
        image, spacing = data["image"], data["image"].meta["spacing_mm"]
        start = time.perf_counter()
        try:
            detection = detector(image, source=item["image"])
        except NotAPelvisError as error:
            refused.append({"image": item["image"], "reason": str(error)})
            continue
        seconds.append(time.perf_counter() - start)
        errors.append(radial_errors_mm(detection.landmarks, data["landmarks"], spacing))
        cases.append(Path(item["image"]).name)
        annotation = json.loads(Path(item["annotation"]).read_text())
        annotation["image"] = item["image"]
        annotation["landmarks"] = {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, detection.landmarks)}
        annotation["landmark_source"] = "detector"
        path = annotations / Path(item["annotation"]).name
        path.write_text(json.dumps(annotation, indent=1))
        detected_items.append({**item, "annotation": str(path)})
    metrics = write_landmark_metrics(
        np.stack(errors),
        out / "landmark_metrics",
        cases,
        extra={"refused": refused, "seconds_per_image_median": float(np.median(seconds))},
    )

    # the AASN preprocessing must accept the detected geometry (as it must the annotated one)
    from custom_transforms.errors import AnnotationError, GeometryError, root_cause

    chain = Compose(
        [
            LoadPXRd("image"),
            LoadAnnotationd("annotation", image_key="image"),
            *aasn_geometry(roi_size=roi_size, with_masks=False),
        ]
    )
    usable = []
    for item in detected_items:
        try:
            chain(dict(item))
            usable.append(item)
        except RuntimeError as error:
            cause = root_cause(error, prefer=(AnnotationError, GeometryError))
            if not isinstance(cause, (AnnotationError, GeometryError)):
                raise
            refused.append({"image": item["image"], "reason": f"preprocessing: {cause}"})
    return usable, refused, metrics


def log_test_read(log: Path, method: str, fold: int, landmarks: str, command: str | None) -> None:
    """Append one evaluation on the test fold (``landmarks``: ``"true"`` or ``"detected"``) to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    entry = {"time": results_metadata.now(), "method": method, "fold": fold, "landmarks": landmarks, "command": command}
    with open(log, "a") as f:
        f.write(json.dumps(entry) + "\n")


def logged_test_reads(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


def evaluate(run_dir: Path, datalist: Path, method: str, fold: int, scale: dict, seed: int, output: Path) -> dict:
    """``evaluate.json`` with the trained weights of ``run_dir`` on ``datalist``'s test fold (no cache, always rerun:
    the detected landmarks change with the detector)."""
    metrics_path = output / "metrics.json"
    overrides = {
        k: v
        for k, v in accuracy.run_overrides(scale, method, fold, run_dir, datalist, None, seed).items()
        if "#" not in k
    }
    overrides.update(output_dir=str(output), num_case_pictures=0)
    accuracy._bundle_run(
        [CONFIGS / "train.json", CONFIGS / "evaluate.json", CONFIGS / "variants" / f"{method}.json"], overrides
    )
    return json.loads(metrics_path.read_text())


def auc_on(cases: list[dict], keep: set[str]) -> float:
    from sklearn.metrics import roc_auc_score

    subset = [c for c in cases if c["case"] in keep]
    labels = [c["label"] for c in subset]
    return float(roc_auc_score(labels, [c["score"] for c in subset])) if len(set(labels)) == 2 else float("nan")


def paired_comparison(
    true_cases: list[dict], detected_cases: list[dict], keep: set[str], seed: int, n_boot: int = 2000
) -> dict:
    """How far the detected-landmark scores are from the true-landmark ones, image by image, and a 95 % interval
    of the AUC difference from a paired bootstrap over subjects (images of one subject resampled together)."""
    from sklearn.metrics import roc_auc_score

    true = {c["case"]: c for c in true_cases if c["case"] in keep}
    detected = {c["case"]: c for c in detected_cases if c["case"] in keep}
    names = sorted(true)
    t = np.array([true[n]["score"] for n in names])
    d = np.array([detected[n]["score"] for n in names])
    labels = np.array([true[n]["label"] for n in names])
    subjects = np.array([true[n]["subject"] for n in names])
    unique = np.unique(subjects)
    members = {s: np.flatnonzero(subjects == s) for s in unique}
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(n_boot):
        index = np.concatenate([members[s] for s in rng.choice(unique, size=len(unique), replace=True)])
        if len(set(labels[index])) == 2:
            differences.append(roc_auc_score(labels[index], d[index]) - roc_auc_score(labels[index], t[index]))
    low, high = np.percentile(differences, [2.5, 97.5]) if differences else (float("nan"), float("nan"))
    return {
        "difference_ci95": [100 * float(low), 100 * float(high)],
        "score_mean_abs_difference": float(np.mean(np.abs(d - t))),
        "score_std_true": float(np.std(t)),
        "score_pearson_r": float(np.corrcoef(t, d)[0, 1]) if len(t) > 1 else float("nan"),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landmark-models", required=True, help="folder with the detector's weights and shape model")
    # the scales the script defines (a config-defined scale such as cpu has its own configs and work folder)
    parser.add_argument(
        "--scale", choices=sorted(k for k, v in accuracy.SCALES.items() if "config" not in v), default="reduced"
    )
    parser.add_argument("--method", choices=accuracy.METHODS, default="aasn")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="training epochs (scale default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "outputs" / "accuracy"))
    parser.add_argument("--data", help="dataset folder (default <work>/data)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--notes", default="")
    args = parser.parse_args(argv)
    command = results_metadata.command_line(__file__, argv)
    meta = results_metadata.start(command)

    import torch

    torch.set_num_threads(args.threads)
    scale = dict(accuracy.SCALES[args.scale])
    if args.epochs is not None:
        scale["max_epochs"] = args.epochs
    work = Path(args.work).resolve()
    data_dir = Path(args.data).resolve() if args.data else work / "data"
    start = time.time()
    simulated = accuracy.ensure_dataset(data_dir, scale["num_images"], scale["image_size"], args.seed, 1)
    roi_tag = "x".join(str(v) for v in scale["roi_size"])
    datalist, _ = accuracy.screen_dataset(simulated, scale["roi_size"], work / f"datalist_usable_{roi_tag}.json")

    print(f"[detected] training / reusing {args.method} fold {args.fold}", flush=True)
    # trains (or reuses) the weights; its own evaluation runs on a cache that names cases differently, so the
    # true-landmark metrics below come from the same code path as the detected ones
    accuracy.train_and_evaluate(scale, args.method, args.fold, work, datalist, args.seed, command)
    run_dir = work / "runs" / args.method / f"fold{args.fold}"

    from scripts.datalist import fold_split

    test = fold_split(datalist, args.fold, "test")
    out = work / "detected_landmarks" / f"fold{args.fold}"
    reads_log = work / "detected_landmarks" / "test_reads.jsonl"
    print(f"[detected] detecting the landmarks of {len(test)} test images", flush=True)
    usable, refused, landmark_metrics = detect_test_fold(
        test, Path(args.landmark_models).resolve(), out, scale["roi_size"]
    )
    content = json.loads(Path(datalist).read_text())
    by_image = {it["image"]: it for it in usable}
    detected_list = out / "datalist_detected.json"
    detected_list.write_text(
        json.dumps(
            {
                **content,
                "training": [
                    {**it, "annotation": by_image[it["image"]]["annotation"]} if it["image"] in by_image else it
                    for it in content["training"]
                    if it["fold"] != args.fold or it["image"] in by_image
                ],
            },
            indent=1,
        )
    )
    print(f"[detected] evaluating with detected landmarks ({len(refused)} test images refused)", flush=True)
    log_test_read(reads_log, args.method, args.fold, "detected", command)
    detected_metrics = evaluate(run_dir, detected_list, args.method, args.fold, scale, args.seed, out / "eval")

    # the true-landmark side through the same code path (no cache), so that both name their cases alike
    log_test_read(reads_log, args.method, args.fold, "true", command)
    true_metrics = evaluate(run_dir, Path(datalist), args.method, args.fold, scale, args.seed, out / "eval_true")
    true_cases = accuracy.read_cases(out / "eval_true" / "per_case.csv")
    detected_cases = accuracy.read_cases(out / "eval" / "per_case.csv")
    both = {c["case"] for c in detected_cases} & {c["case"] for c in true_cases}
    rows = {}
    for key in accuracy.METRICS:
        rows[key] = {
            "true": 100 * true_metrics[key],
            "detected": 100 * detected_metrics[key],
            "difference": 100 * (detected_metrics[key] - true_metrics[key]),
        }
    common = {"true": 100 * auc_on(true_cases, both), "detected": 100 * auc_on(detected_cases, both)}
    common["difference"] = common["detected"] - common["true"]
    common.update(paired_comparison(true_cases, detected_cases, both, args.seed))
    overall = landmark_metrics["overall"]
    record = {
        "command": command,
        "method": args.method,
        "fold": args.fold,
        "scale_name": args.scale,
        "scale": scale,
        "landmark_models": str(Path(args.landmark_models).resolve()),
        "test_images": len(test),
        "scored_with_detected": len(usable),
        "refused": refused,
        "landmarks": {"overall": overall, "per_landmark": landmark_metrics["per_landmark"]},
        "aasn": rows,
        "auc_on_images_scored_both_ways": common,
        "environment": accuracy.environment(),
        "wall_minutes": (time.time() - start) / 60,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "notes": args.notes,
        "test_reads": logged_test_reads(reads_log),
        "provenance": results_metadata.finish(meta),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"detected_landmarks_{args.scale}.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"# {accuracy.NAMES[args.method]} with detected against true landmarks ({args.scale} scale, test fold "
        f"{args.fold})",
        "",
        *results_metadata.markdown_lines(record["provenance"]),
        "",
        f"Test images: {len(test)}; scored with detected landmarks: {len(usable)}; refused: {len(refused)}.",
        "",
        "## Landmarks on the test fold (atlas members unseen by the detector)",
        "",
        "| | MRE (mm) | median (mm) | SDR 2 mm | SDR 2.5 mm | SDR 3 mm | SDR 4 mm |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| all 16 | {overall['mre_mm']:.2f} | {overall['median_mm']:.2f} | {overall['sdr_2mm']:.1f} % | "
        f"{overall['sdr_2.5mm']:.1f} % | {overall['sdr_3mm']:.1f} % | {overall['sdr_4mm']:.1f} % |",
    ]
    for name, stats in landmark_metrics["per_landmark"].items():
        lines.append(
            f"| {name} | {stats['mre_mm']:.2f} | {stats['median_mm']:.2f} | {stats['sdr_2mm']:.1f} % | "
            f"{stats['sdr_2.5mm']:.1f} % | {stats['sdr_3mm']:.1f} % | {stats['sdr_4mm']:.1f} % |"
        )
    lines += [
        "",
        f"## {accuracy.NAMES[args.method]}, same weights",
        "",
        "| | true landmarks | detected landmarks | difference |",
        "| --- | --- | --- | --- |",
    ]
    for key, row in rows.items():
        lines.append(
            f"| {accuracy.METRIC_NAMES[key]} | {row['true']:.2f} | {row['detected']:.2f} | {row['difference']:+.2f} |"
        )
    lines.append(
        f"| AUC on the images scored both ways | {common['true']:.2f} | {common['detected']:.2f} | "
        f"{common['difference']:+.2f} (paired subject bootstrap 95 %: {common['difference_ci95'][0]:+.2f} "
        f"to {common['difference_ci95'][1]:+.2f}) |"
    )
    lines += [
        "",
        f"Image scores, detected against true landmarks: mean absolute difference "
        f"{common['score_mean_abs_difference']:.4f} (spread of the true-landmark scores: standard deviation "
        f"{common['score_std_true']:.4f}); Pearson r {common['score_pearson_r']:.3f}.",
    ]
    if refused:
        lines += ["", "## Refused", ""] + [f"- {Path(r['image']).name}: {r['reason']}" for r in refused]
    reads = record["test_reads"]
    lines += [
        "",
        "## Test-fold reads",
        "",
        f"Evaluations on the test fold logged in `{reads_log}` ({len(reads)}, this run's two included):",
        "",
        *[
            f"- {r['time']}: {r['method']} fold {r['fold']}, {r['landmarks']} landmarks (`{r['command']}`)"
            for r in reads
        ],
    ]
    if args.notes:
        lines += ["", "## Notes", "", args.notes]
    lines += ["", f"Wall time {record['wall_minutes']:.1f} min; finished {record['finished']}."]
    (results / f"detected_landmarks_{args.scale}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return record


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()

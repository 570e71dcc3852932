"""The built-in demo: simulate radiographs; the fracture AASN that ships in ``bundle/models`` (or, when none ships
or with ``--train-aasn``, one trained here on the demo data), evaluated on the test fold, inference, the results
printed; then the bedside path: the landmark detector that ships in ``bundle/models`` (or, when none ships or with
``--train-landmark-detector``, one trained briefly on the demo data), evaluated on the test fold, and inference on the
same test images without their annotations.

Run from the bundle folder (``make demo`` does)::

    python -m scripts.demo --out outputs/demo
    python -m scripts.demo --data-only          # only simulate the demo data (``make demo-data``)

This module owns the demo data: :func:`simulate_demo_data` writes it to ``--data`` (default ``bundle/data/demo``,
the configs' default ``dataset_dir``, so that ``train.json`` and ``inference.json`` find it without arguments); the
configs themselves never simulate. Everything else goes under ``--out``: ``models/`` (``last.pt``, ``model.pt``,
``landmark_*``), ``logs/`` (TensorBoard), ``eval/`` (metrics, curves, case pictures; ``eval/landmarks/`` the
detector's MRE/SDR), ``inference/`` (per-image heatmap, overlay and report, annotated landmarks) and
``inference_bedside/`` (the same images given without annotation: the detector's landmarks). The ``monai.bundle
run`` calls a user would type are made in-process: ``configs/scale_cpu.json`` (the CPU recipe) and
``configs/demo.json`` (epochs) on top of the real AASN configs, and, when the detector is trained here,
``configs/landmark_train.json``'s run ids ``run_global`` and ``run_refine`` with fewer epochs (``--landmark-epochs``,
``--landmark-refine-epochs``), so that it finishes in minutes on a CPU. The shipped AASN and detector never saw the
demo's test members (``metadata.json``: ``held_out_atlas_members``); with them the AASN steps run with ``ckpt_dir``
= ``bundle/models`` and nothing is trained. A rerun reuses the data and resumes or reuses what
is already there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE / "configs"
#: Where the demo data goes by default: the configs' default ``dataset_dir``.
DEMO_DATA_DIR = BUNDLE / "data" / "demo"
#: The demo's data: simulated radiographs (each fractured one with its intact twin), their size and the seed.
DEMO_NUM_IMAGES, DEMO_IMAGE_SIZE, DEMO_SEED = 480, 512, 0
#: The weights that ship with the bundle (``large_files.yml``).
SHIPPED_MODELS = BUNDLE / "models"
#: The fracture AASN's weights, as ``configs/evaluate.json`` and ``configs/inference.json`` load them (``ckpt_dir``).
AASN_WEIGHTS = "model.pt"
#: The landmark detector's files, as ``configs/landmark_inference.json`` names them.
LANDMARK_DETECTOR_FILES = ("landmark_model.pt", "landmark_refine_model.pt", "landmark_shape_model.json")

logger = logging.getLogger(__name__)


def simulate_demo_data(
    data_dir: str | Path = DEMO_DATA_DIR,
    num_images: int = DEMO_NUM_IMAGES,
    size: int | None = DEMO_IMAGE_SIZE,
    seed: int = DEMO_SEED,
    workers: int = 2,
    anatomy: str = "atlas",
    **kwargs,
) -> Path:
    """Return ``data_dir/datalist.json``, simulating the demo data first when it is missing.

    The radiographs are simulated from the real anatomy of the atlas subset that ships with the simulator
    (``simulation/atlas_subset``, 12 members, CC BY 4.0), whether or not a full atlas lies beside the repository, so
    that every clone gets the same demo; ``anatomy="procedural"`` gives the schematic built-in pelvis instead.
    Fractured images come with their intact twins (used for training only).

    Args:
        data_dir: where the images, annotations and ``datalist.json`` go.
        num_images: how many radiographs to simulate.
        size: image size (the simulator's default when ``None``).
        seed: simulator seed.
        workers: simulator processes.
        anatomy: ``"atlas"`` (the shipped subset) or ``"procedural"``.
        kwargs: further arguments of ``simulation.generate_dataset``.
    """
    data_dir = Path(data_dir)
    datalist = data_dir / "datalist.json"
    if datalist.is_file():
        return datalist
    import simulation

    logger.warning(f"simulating the demo data: {num_images} radiographs ({anatomy} anatomy, seed {seed}) in {data_dir}")
    if size is not None:
        kwargs["size"] = size
    if anatomy == "atlas":
        from simulation.atlas import SUBSET_DIR

        kwargs.setdefault("atlas_dir", str(SUBSET_DIR))
    written = Path(
        simulation.generate_dataset(
            str(data_dir), num_images, anatomy=anatomy, seed=seed, intact_twins=True, workers=workers, **kwargs
        )
    )
    if written.resolve() != datalist.resolve():
        raise FileNotFoundError(f"the simulator wrote {written}, but the demo data's datalist is {datalist}.")
    return datalist


def shipped_aasn(models: Path = SHIPPED_MODELS) -> bool:
    """Whether the bundle ships the fracture AASN (trained with the CPU recipe, ``configs/scale_cpu.json``)."""
    return (models / AASN_WEIGHTS).is_file()


def shipped_landmark_detector(models: Path = SHIPPED_MODELS) -> bool:
    """Whether the bundle ships the landmark detector (all three of its files in ``models``)."""
    return all((models / name).is_file() for name in LANDMARK_DETECTOR_FILES)


def _run(config_files: list[Path], **overrides) -> None:
    from monai.bundle import run

    run(
        config_file=[str(f) for f in config_files],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        **overrides,
    )


def members_seen_by_shipped_models(datalist: Path, fold: int) -> list[str]:
    """The test fold's subjects that are not among ``metadata.json``'s ``held_out_atlas_members``: a shipped model
    trained on them, so its test figures there would be inflated (empty for the demo's default fold)."""
    from scripts.datalist import fold_split

    held_out = json.loads((CONFIGS / "metadata.json").read_text())["held_out_atlas_members"]
    allowed = {f"atlas-{member}" for member in held_out}
    return sorted({item["subject"] for item in fold_split(datalist, fold, "test")} - allowed)


def _inference_list(datalist: Path, fold: int, out: Path, count: int) -> Path:
    """A datalist of a few test-fold images (fractured first) for the inference step."""
    from scripts.datalist import fold_split

    test = sorted(fold_split(datalist, fold, "test"), key=lambda it: (-it["label"], it["image"]))
    chosen = test[: max(count - 1, 1)] + [it for it in test if it["label"] == 0][:1]
    path = out / "inference_input.json"
    path.write_text(json.dumps([{"image": it["image"], "annotation": it["annotation"]} for it in chosen], indent=1))
    return path


def _bedside_input(inference_list: Path, folder: Path) -> Path:
    """A folder of links to the images of ``inference_list`` only: their annotations stay behind."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for item in json.loads(inference_list.read_text()):
        image = Path(item["image"])
        try:
            (folder / image.name).symlink_to(image)
        except OSError:  # no symbolic links here: a copy hides the annotation as well
            shutil.copyfile(image, folder / image.name)
    return folder


def _compare_landmark_sources(annotated: Path, detected: Path) -> list[str]:
    """One line per image: probability with annotated vs detected landmarks, and how far the landmarks moved."""
    import numpy as np

    lines = []
    for report_file in sorted(annotated.glob("*/report.json")):
        reference = json.loads(report_file.read_text())
        bedside_file = detected / report_file.parent.name / "report.json"
        if not bedside_file.is_file():
            lines.append(f"  {report_file.parent.name}: no bedside report")
            continue
        bedside = json.loads(bedside_file.read_text())
        if bedside.get("status", "ok") != "ok":
            lines.append(
                f"  {report_file.parent.name}: p = {reference['fracture_probability']:.3f} annotated; "
                f"bedside {bedside['status']}: {bedside['error']}"
            )
            continue
        names = list(reference["landmarks"])
        truth = np.array([reference["landmarks"][n] for n in names])
        found = np.array([bedside["landmarks"][n] for n in names])
        spacing = np.asarray(bedside.get("spacing_mm") or [1.0, 1.0])[::-1]  # (col, row) for [x, y]
        error_mm = np.linalg.norm((found - truth) * spacing, axis=1)
        lines.append(
            f"  {report_file.parent.name}: p = {reference['fracture_probability']:.3f} annotated, "
            f"{bedside['fracture_probability']:.3f} detected (plausibility {bedside['landmark_plausibility']:.2f}; "
            f"landmarks {error_mm.mean():.1f} mm from the annotation on average, max {error_mm.max():.1f} mm)"
        )
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(BUNDLE / "outputs" / "demo"), help="output folder")
    parser.add_argument("--fold", type=int, default=0, help="test fold (0-4)")
    parser.add_argument("--data", default=str(DEMO_DATA_DIR), help="the demo data's folder (simulated when absent)")
    parser.add_argument("--data-only", action="store_true", help="only simulate the demo data, then stop")
    parser.add_argument("--num-images", type=int, default=DEMO_NUM_IMAGES, help="simulated radiographs")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (demo.json's default)")
    parser.add_argument("--variant", default="aasn", help="network variant (configs/variants)")
    parser.add_argument("--num-infer", type=int, default=3, help="test images to run inference on")
    parser.add_argument(
        "--train-aasn",
        action="store_true",
        help="train the AASN on the demo data (--epochs) even when one ships in bundle/models",
    )
    parser.add_argument(
        "--train-landmark-detector",
        action="store_true",
        help="train the landmark detector on the demo data even when one ships in bundle/models",
    )
    parser.add_argument("--landmark-epochs", type=int, default=10, help="epochs of the detector's whole-image stage")
    parser.add_argument(
        "--landmark-refine-epochs",
        type=int,
        default=10,
        help="epochs of the detector's patch stage (0: not trained, the detector runs on the whole-image peaks)",
    )
    args = parser.parse_args(argv)

    data = Path(args.data).resolve()
    if args.data_only:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(f"[demo] demo data: {simulate_demo_data(data, args.num_images)}", flush=True)
        return {"datalist": str(data / "datalist.json")}
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    configs = [CONFIGS / "train.json"]
    # the CPU recipe (configs/scale_cpu.json), with the demo's epochs on top
    demo = [CONFIGS / "scale_cpu.json", CONFIGS / "demo.json"]
    common = {"bundle_root": str(out), "dataset_dir": str(data), "fold": args.fold, "variant": args.variant}
    start = time.time()

    # the AASN that ships in bundle/models (trained on other atlas members than the demo's test members), or one
    # trained here from scratch on the demo's training fold
    aasn_shipped = not args.train_aasn and args.variant == "aasn" and shipped_aasn()
    if aasn_shipped:
        print(
            f"[demo] 1/6 the fracture AASN that ships with the bundle ({SHIPPED_MODELS / AASN_WEIGHTS}), no "
            f"training; simulated data in {data} (simulated first if absent)",
            flush=True,
        )
        datalist = simulate_demo_data(data, args.num_images)
        common["ckpt_dir"] = str(SHIPPED_MODELS)
        seen = members_seen_by_shipped_models(datalist, args.fold)
        if seen:
            logger.warning(
                f"test fold {args.fold} holds {', '.join(seen)}, on which the shipped models trained: its figures "
                "are not held-out figures (fold 0 holds only held-out members; or pass --train-aasn)"
            )
    else:
        print(f"[demo] 1/6 training on simulated data in {data} (simulated first if absent)", flush=True)
        datalist = simulate_demo_data(data, args.num_images)
        _run(configs + demo, **common, **({"max_epochs": args.epochs} if args.epochs else {}))
    t_train = time.time() - start

    print("[demo] 2/6 evaluating on the test fold", flush=True)
    _run(configs + [CONFIGS / "evaluate.json"] + demo, **common)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())

    print("[demo] 3/6 inference on a few test images (with their annotations)", flush=True)
    infer_overrides = {k: v for k, v in common.items() if k in ("bundle_root", "dataset_dir", "variant", "ckpt_dir")}
    inference_list = _inference_list(datalist, args.fold, out, args.num_infer)
    _run(
        [CONFIGS / "inference.json"] + demo,
        **infer_overrides,
        input=str(inference_list),
        output_dir=str(out / "inference"),
        overwrite=True,  # a rerun of the demo replaces its own earlier results
        # bundle_root (the output folder) has no configs; the detector is not trained yet, so its missing weights
        # (not a missing config) are what the warning about checking annotated images names
        landmark_config=str(CONFIGS / "landmark_inference.json"),
    )
    reports = sorted((out / "inference").glob("*/report.json"))

    # the bedside path: the landmark detector that ships in bundle/models (trained on other atlas members than the
    # demo's test members), or one trained briefly here on the demo's own training fold
    t_landmarks = time.time()
    landmark_common = {"bundle_root": str(out), "dataset_dir": str(data), "fold": args.fold, "show_progress": False}
    shipped = not args.train_landmark_detector and shipped_landmark_detector()
    refine = shipped or args.landmark_refine_epochs > 0
    if shipped:
        landmark_common["ckpt_dir"] = str(SHIPPED_MODELS)
        print(f"[demo] 4/6 the landmark detector that ships with the bundle ({SHIPPED_MODELS})", flush=True)
    else:
        stages = f", {args.landmark_refine_epochs} of the patch stage" if refine else "; patch stage not trained"
        reason = "" if args.train_landmark_detector else f" (none ships in {SHIPPED_MODELS})"
        print(
            f"[demo] 4/6 training the landmark detector{reason}: {args.landmark_epochs} epochs of the whole-image "
            f"stage{stages}",
            flush=True,
        )
        _run([CONFIGS / "landmark_train.json"], run_id="run_global", **landmark_common, max_epochs=args.landmark_epochs)
        if refine:
            _run(
                [CONFIGS / "landmark_train.json"],
                run_id="run_refine",
                **landmark_common,
                refine_max_epochs=args.landmark_refine_epochs,
            )

    print("[demo] 5/6 evaluating the landmark detector on the test fold", flush=True)
    _run(
        [CONFIGS / "landmark_inference.json", CONFIGS / "landmark_evaluate.json"],
        **landmark_common,
        use_refiner=refine,
        nonpelvic_per_kind=4,
    )
    landmark_metrics = json.loads((out / "eval" / "landmarks" / "landmark_metrics.json").read_text())

    print("[demo] 6/6 bedside inference: the same test images without their annotations", flush=True)
    _run(
        [CONFIGS / "inference.json"] + demo,
        **infer_overrides,
        input=str(_bedside_input(inference_list, out / "bedside_input")),
        output_dir=str(out / "inference_bedside"),
        overwrite=True,
        landmark_config=str(CONFIGS / "landmark_inference.json"),  # bundle_root (the output folder) has no configs
        landmark_overrides={"use_refiner": refine, **({"ckpt_dir": str(SHIPPED_MODELS)} if shipped else {})},
    )
    t_landmarks = time.time() - t_landmarks

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    lines = [
        "",
        f"AASN demo ({args.variant}, {'shipped weights' if aasn_shipped else 'trained here'}), "
        f"test fold {args.fold}: {metrics['num_images']} images, "
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
        "",
        *_landmark_lines(landmark_metrics, out, args.fold),
        f"bedside inference: {out / 'inference_bedside'} (inputs {out / 'bedside_input'}: the images without "
        "annotations; summary inference_summary.json)",
        *_compare_landmark_sources(out / "inference", out / "inference_bedside"),
        f"time: {time.time() - start:.0f} s ({'data' if aasn_shipped else 'data and training'} {t_train:.0f} s; "
        "landmark detector and bedside inference "
        f"{t_landmarks:.0f} s)",
    ]
    print("\n".join(lines), flush=True)
    return metrics


def _landmark_lines(metrics: dict, out: Path, fold: int) -> list[str]:
    overall = metrics["overall"]
    nonpelvic = metrics.get("plausibility_nonpelvic", {})
    refused = sum(round(v["count"] * v["rejected_percent"] / 100) for v in nonpelvic.values())
    pelvis = metrics.get("plausibility_pelvis", {})
    return [
        f"Landmark detector, test fold {fold}: {metrics['images']} images, MRE {overall['mre_mm']:.2f} mm "
        f"(median {overall['median_mm']:.2f}), SDR 2 / 2.5 / 3 / 4 mm {overall['sdr_2mm']:.1f} / "
        f"{overall['sdr_2.5mm']:.1f} / {overall['sdr_3mm']:.1f} / {overall['sdr_4mm']:.1f} %",
        f"  plausibility: pelvic images refused {pelvis.get('rejected_percent', float('nan')):.0f} %, synthetic "
        f"non-pelvic images refused {refused}/{sum(v['count'] for v in nonpelvic.values())}",
        f"  metrics:         {out / 'eval' / 'landmarks'}/landmark_metrics.json, landmark_errors.csv",
    ]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(0 if main() else 1)

"""Train the shipped models and measure them on the held-out atlas members, with provenance.

Each step runs the bundle's own configs (the commands a user would type, printed before they run) on the data of
``tools/shipped_models_data.py`` (fold 0 = the held-out members) and appends what ran, how long it took and on
which machine to ``benchmarks/results/shipped_models_training.jsonl`` (one JSON line a run)::

    python tools/shipped_models.py aasn       --data /data/shipped --out /runs/shipped   # the fracture AASN
    python tools/shipped_models.py landmarks  --data /data/shipped --out /runs/shipped   # the landmark detector
    python tools/shipped_models.py evaluate   --data /data/shipped --out /runs/shipped   # held-out figures

``evaluate`` reads the held-out fold (once per shipped configuration: log it) and writes
``benchmarks/results/shipped_models.{md,json}``. Copy the weights into ``bundle/models`` and update
``bundle/large_files.yml`` with ``tools/large_files.py`` afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
sys.path.insert(0, str(ROOT / "benchmarks"))
import results_metadata  # noqa: E402

from shipped_models_data import held_out_members  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TRAINING_LOG = RESULTS / "shipped_models_training.jsonl"
#: The fracture AASN: the CPU recipe over train.json, with the longer cosine schedule of train_shipped.json.
AASN_CONFIGS = ["configs/train.json", "configs/scale_cpu.json", "configs/train_shipped.json"]
#: The landmark detector's epochs (whole-image stage, patch stage).
LANDMARK_EPOCHS = (30, 20)
#: Both landmark stages first fit and write the same shape model: the second starts once the first has written it.
PARALLEL_STAGGER_S = 60


def _bundle_command(configs: list[str], **overrides) -> list[str]:
    command = [sys.executable, "-m", "monai.bundle", "run"]
    for key, value in overrides.items():
        if key == "run_id":
            command.append(str(value))
            continue
        command += [f"--{key}", str(value)]
    config = configs[0] if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    command += ["--config_file", config, "--meta_file", "configs/metadata.json"]
    return command


def _shown(command: list[str]) -> str:
    """The command as a user would type it (a config list in double quotes, as the model card writes it)."""
    return " ".join(f'"{c}"' if c.startswith("[") else shlex.quote(c) for c in ["python", *command[1:]])


def _run_logged(step: str, commands: list[tuple[list[str], dict]], parallel: bool = False) -> None:
    """Run ``commands`` (each with its extra environment) in ``bundle/``; append their provenance to the log."""
    meta = results_metadata.start(" && ".join(_shown(c) for c, _ in commands))
    started = time.time()
    processes = []
    for command, env in commands:
        print(f"[{step}] cd bundle && {_shown(command)}", flush=True)
        if processes and parallel:
            time.sleep(PARALLEL_STAGGER_S)
        process = subprocess.Popen(command, cwd=BUNDLE, env={**os.environ, **env})
        if not parallel:
            if process.wait() != 0:
                raise SystemExit(f"[{step}] failed: {_shown(command)}")
        processes.append(process)
    for process, (command, _) in zip(processes, commands, strict=True):
        if process.wait() != 0:
            raise SystemExit(f"[{step}] failed: {_shown(command)}")
    record = {
        "step": step,
        "wall_s": round(time.time() - started, 1),
        "threads_per_process": [env.get("OMP_NUM_THREADS", "default") for _, env in commands],
        "parallel": parallel,
        "provenance": results_metadata.finish(meta),
    }
    with TRAINING_LOG.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"[{step}] done in {record['wall_s'] / 60:.1f} min; logged in {TRAINING_LOG}", flush=True)


def training_runs() -> list[dict]:
    """The logged training runs, oldest first."""
    if not TRAINING_LOG.is_file():
        return []
    return [json.loads(line) for line in TRAINING_LOG.read_text().splitlines() if line.strip()]


def train_aasn(data: Path, out: Path) -> None:
    command = _bundle_command(AASN_CONFIGS, bundle_root=out / "aasn", dataset_dir=data, fold=0, show_progress=False)
    _run_logged("aasn", [(command, {"OMP_NUM_THREADS": "2"})])


def train_landmarks(data: Path, out: Path) -> None:
    common = {"bundle_root": out / "landmarks", "dataset_dir": data, "fold": 0, "show_progress": False}
    global_epochs, refine_epochs = LANDMARK_EPOCHS
    commands = [
        (_bundle_command(["configs/landmark_train.json"], run_id="run_global", max_epochs=global_epochs, **common), {}),
        (
            _bundle_command(
                ["configs/landmark_train.json"], run_id="run_refine", refine_max_epochs=refine_epochs, **common
            ),
            {},
        ),
    ]
    # the two stages are independent: one thread each, side by side, keeps both cores busy
    _run_logged("landmarks", [(c, {"OMP_NUM_THREADS": "1"}) for c, _ in commands], parallel=True)


def _evaluation_commands(
    data: Path, out: Path, name: str, score_flip: bool = False
) -> list[tuple[str, list[str], Path]]:
    """(model, command, metrics file) of each model's evaluation on ``data``'s fold 0, under ``out/eval_<name>``."""
    flip = {"score_flip": True} if score_flip else {}
    aasn = out / "aasn"
    landmarks = out / "landmarks"
    return [
        (
            "aasn",
            _bundle_command(
                AASN_CONFIGS[:1] + ["configs/evaluate.json"] + AASN_CONFIGS[1:],
                bundle_root=aasn, dataset_dir=data, fold=0, output_dir=out / f"eval_{name}" / "aasn", **flip,
            ),
            out / f"eval_{name}" / "aasn" / "metrics.json",
        ),
        (
            "landmarks",
            _bundle_command(
                ["configs/landmark_inference.json", "configs/landmark_evaluate.json"],
                bundle_root=landmarks, dataset_dir=data, fold=0, output_dir=out / f"eval_{name}" / "landmarks",
            ),
            out / f"eval_{name}" / "landmarks" / "landmark_metrics.json",
        ),
    ]  # fmt: skip


def _aasn_row(metrics: dict) -> dict:
    keys = ("num_images", "num_positive", "num_fractures", "auc", "ap", "recall_at_fp_1pct", "recall_at_fp_10pct")
    return {k: metrics[k] for k in keys} | {k: metrics.get(k) for k in ("recall_by_kind", "recall_by_site")}


def _landmark_row(metrics: dict) -> dict:
    overall = metrics["overall"]
    return {
        "images": metrics["images"],
        **{k: overall[k] for k in ("mre_mm", "median_mm", "sdr_2mm", "sdr_2.5mm", "sdr_3mm", "sdr_4mm")},
        "pelvic_images_refused_percent": metrics["plausibility_pelvis"]["rejected_percent"],
        "per_landmark_mre_mm": {k: v["mre_mm"] for k, v in metrics.get("per_landmark", {}).items()},
    }


def evaluate(
    data: Path,
    out: Path,
    demo_data: Path | None,
    notes: str,
    results_name: str = "shipped_models",
    models: tuple[str, ...] = ("aasn", "landmarks"),
    score_flip: bool = False,
) -> None:
    """Held-out figures of ``models``: ``data``'s fold 0 and, when given, the demo data's test fold, written to
    ``benchmarks/results/<results_name>.{md,json}`` (a candidate that may not ship gets a name of its own);
    ``score_flip``: the AASN scored with the flip average (``FlipAveragingInferer``)."""
    shown = ['"..."' if sys.argv[i - 1] == "--notes" else a for i, a in enumerate(sys.argv[1:], start=1)]
    meta = results_metadata.start(" ".join(["python", "tools/shipped_models.py", *shown]))
    sets = {"held_out": data} | ({"demo_test_fold": demo_data} if demo_data else {})
    record = {"held_out_atlas_members": held_out_members(), "data": {}, "aasn": {}, "landmarks": {}, "commands": []}
    for name, folder in sets.items():
        record["data"][name] = json.loads((folder / "datalist.json").read_text()).get("description")
        for model, command, metrics_file in _evaluation_commands(folder, out, name, score_flip):
            if model not in models:
                continue
            print(f"[evaluate] cd bundle && {_shown(command)}", flush=True)
            record["commands"].append(f"cd bundle && {_shown(command)}")
            subprocess.run(command, cwd=BUNDLE, check=True)
            metrics = json.loads(metrics_file.read_text())
            record[model][name] = _aasn_row(metrics) if model == "aasn" else _landmark_row(metrics)
    record["training"] = training_runs()
    record["notes"] = notes
    if results_name != "shipped_models":
        record["title"] = "Candidate models (not shipped unless the notes say so) on held-out atlas members"
    record["provenance"] = results_metadata.finish(meta)
    record = {"command": record["provenance"]["command"], **record}
    (RESULTS / f"{results_name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"{results_name}.md").write_text("\n".join(_markdown(record)) + "\n")
    print(f"[evaluate] {RESULTS / f'{results_name}.md'}", flush=True)


def _markdown(record: dict) -> list[str]:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    lines = [
        f"# {record.get('title', 'The shipped models on held-out atlas members')}",
        "",
        *results_metadata.markdown_lines(record["provenance"]),
        "",
        f"Held-out atlas members (no shipped model trained on them): {record['held_out_atlas_members']}.",
        "",
        "## Data",
        "",
        *[f"- `{name}`: {description}" for name, description in record["data"].items()],
        "",
    ]
    if record["aasn"]:
        lines += [
            "## Fracture AASN (image level)",
            "",
            "| data | images | fractured | AUC | AP | recall at 1 % FP | recall at 10 % FP |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
    for name, row in record["aasn"].items():
        lines.append(
            f"| {name} | {row['num_images']} | {row['num_positive']} | {pct(row['auc'])} | {pct(row['ap'])} | "
            f"{pct(row['recall_at_fp_1pct'])} | {pct(row['recall_at_fp_10pct'])} |"
        )
    for name, row in record["aasn"].items():
        for group in ("recall_by_kind", "recall_by_site"):
            if row.get(group):
                lines += ["", f"Recall per fracture {group.split('_')[-1]}, {name}:", ""]
                lines += [
                    f"- {key}: {value['num_fractures']} fractures, at 1 % FP {pct(value['recall_at_fp_1pct'])}, "
                    f"at 10 % FP {pct(value['recall_at_fp_10pct'])}"
                    for key, value in row[group].items()
                ]
    if record["landmarks"]:
        lines += [
            "",
            "## Landmark detector",
            "",
            "| data | images | MRE (mm) | median (mm) | SDR 2 mm | SDR 2.5 mm | SDR 3 mm | SDR 4 mm | pelvic refused |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
    for name, row in record["landmarks"].items():
        lines.append(
            f"| {name} | {row['images']} | {row['mre_mm']:.2f} | {row['median_mm']:.2f} | {row['sdr_2mm']:.1f} % | "
            f"{row['sdr_2.5mm']:.1f} % | {row['sdr_3mm']:.1f} % | {row['sdr_4mm']:.1f} % | "
            f"{row['pelvic_images_refused_percent']:.1f} % |"
        )
    lines += ["", "## Training", ""]
    for run in record["training"]:
        prov = run["provenance"]
        lines.append(
            f"- {run['step']}: {run['wall_s'] / 60:.1f} min wall, threads per process {run['threads_per_process']}"
            f"{' (side by side)' if run['parallel'] else ''}, commit {prov['commit'][:10]}, load before "
            f"{prov['load_average_before']}, after {prov['load_average_after']}, finished {prov['finished']}: "
            f"`{prov['command']}`"
        )
    lines += ["", "## Commands", "", *[f"- `{c}`" for c in record["commands"]], "", "## Notes", "", record["notes"]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train or evaluate the shipped models.")
    parser.add_argument("step", choices=["aasn", "landmarks", "evaluate"])
    parser.add_argument("--data", type=Path, required=True, help="tools/shipped_models_data.py's folder")
    parser.add_argument("--out", type=Path, required=True, help="where the runs write (models, logs)")
    parser.add_argument("--demo-data", type=Path, help="evaluate: also the demo's test fold")
    parser.add_argument("--notes", default="", help="evaluate: prose for the results file")
    parser.add_argument(
        "--results-name", default="shipped_models", help="evaluate: benchmarks/results/<name>.{md,json}"
    )
    parser.add_argument(
        "--models", nargs="+", choices=["aasn", "landmarks"], default=["aasn", "landmarks"], help="evaluate: which"
    )
    parser.add_argument("--score-flip", action="store_true", help="evaluate: the AASN scored with the flip average")
    args = parser.parse_args(argv)
    data, out = args.data.resolve(), args.out.resolve()
    if not (data / "datalist.json").is_file():
        parser.error(f"{data}: no datalist.json; run tools/shipped_models_data.py --out {data} first")
    if args.step == "evaluate":
        demo_data = args.demo_data.resolve() if args.demo_data else None
        evaluate(data, out, demo_data, args.notes, args.results_name, tuple(args.models), args.score_flip)
    else:
        {"aasn": train_aasn, "landmarks": train_landmarks}[args.step](data, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the shipped models and measure them on the held-out atlas members, with provenance.

Each step runs the bundle's own configs (the commands a user would type, printed before they run) on the data of
``tools/shipped_models_data.py`` (fold 0 = the held-out members) and appends what ran, how long it took and on
which machine to ``benchmarks/results/shipped_models_training.json``::

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

RESULTS = ROOT / "benchmarks" / "results"
TRAINING_LOG = RESULTS / "shipped_models_training.json"
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
    return " ".join(shlex.quote(c) for c in ["python", *command[1:]])


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
    log = json.loads(TRAINING_LOG.read_text()) if TRAINING_LOG.is_file() else {"runs": []}
    log["runs"].append(record)
    TRAINING_LOG.write_text(json.dumps(log, indent=2) + "\n")
    print(f"[{step}] done in {record['wall_s'] / 60:.1f} min; logged in {TRAINING_LOG}", flush=True)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train or evaluate the shipped models.")
    parser.add_argument("step", choices=["aasn", "landmarks"])
    parser.add_argument("--data", type=Path, required=True, help="tools/shipped_models_data.py's folder")
    parser.add_argument("--out", type=Path, required=True, help="where the runs write (models, logs)")
    args = parser.parse_args(argv)
    data, out = args.data.resolve(), args.out.resolve()
    if not (data / "datalist.json").is_file():
        parser.error(f"{data}: no datalist.json; run tools/shipped_models_data.py --out {data} first")
    {"aasn": train_aasn, "landmarks": train_landmarks}[args.step](data, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Probe: does an exponential moving average of the weights steady the AASN's validation AUC? (validation only)

Runs the bundle's own training (the configs given, as ``monai.bundle run`` would) and, beside it, keeps one
:class:`scripts.weight_average.WeightAverage` per decay. Every ``val_interval`` epochs (and after the last) it
scores the validation fold with the raw weights and with each average, writes one JSON line per evaluation to
``--out``, and keeps each model's best weights as ``<ckpt_dir>/best_<name>.pt``. The bundle's own evaluator and
checkpoints run unchanged (the raw network), so the raw figures here must match its ``val_auc``; a run resumes from
``<ckpt_dir>/last.pt`` as the bundle does (the averages then start from the resumed weights)::

    python benchmarks/probe_weight_average.py --bundle-root RUN --dataset-dir DATA --decays 0.99 0.998 \\
        --out benchmarks/results/probe_weight_average.jsonl

No test fold is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
sys.path.insert(0, str(BUNDLE))
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_metadata  # noqa: E402
from bundle_validation import DEFAULT_CONFIGS, training_parser, validation_auc  # noqa: E402
from ignite.engine import Events  # noqa: E402

from scripts.checkpoint import atomic_torch_save  # noqa: E402
from scripts.weight_average import WeightAverage  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle-root", type=Path, required=True, help="the run folder (models/, logs/)")
    p.add_argument("--dataset-dir", type=Path, required=True)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="relative to bundle/")
    p.add_argument("--decays", nargs="*", type=float, default=[0.99, 0.998], help="none: the raw weights only")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    p.add_argument("--every", type=int, help="score every this many epochs (default: the config's val_interval)")
    p.add_argument(
        "--initial-weights",
        type=Path,
        help="a state dict (e.g. an earlier run's model.pt) to start from when the run has no last.pt to resume",
    )
    p.add_argument(
        "--override",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "JSON"),
        help="a config override, as monai.bundle run's --KEY VALUE (the value parsed as JSON when it parses)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    overrides = {}
    for key, value in args.override:
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    parser = training_parser(args.configs, args.bundle_root, args.dataset_dir, args.fold, **overrides)
    for expression in ("initialize",):
        parser.get_parsed_content(expression)
    trainer = parser.get_parsed_content("train#trainer")
    network = parser.get_parsed_content("network")
    loader = parser.get_parsed_content("validate#dataloader")
    prepare_batch = parser.get_parsed_content("prepare_batch")
    pooling = parser.get_parsed_content("validate#score_pooling")
    device = parser.get_parsed_content("device")
    interval = args.every or int(parser.get_parsed_content("val_interval"))
    ckpt_dir = Path(parser.get_parsed_content("ckpt_dir"))
    inferer = parser.get_parsed_content("validate#inferer")
    if args.initial_weights is not None and not (ckpt_dir / "last.pt").exists():
        network.load_state_dict(torch.load(args.initial_weights, map_location=device, weights_only=True))
        logging.info("started from %s", args.initial_weights)

    averages = {f"ema{d:g}": WeightAverage(network, d) for d in args.decays}
    for average in averages.values():
        average.attach(trainer)
    best = {}
    meta = results_metadata.start(results_metadata.command_line("probe_weight_average.py", sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def evaluate(engine) -> None:
        epoch = engine.state.epoch
        if epoch % interval and epoch < engine.state.max_epochs:
            return
        started = time.time()
        row = {"epoch": epoch, "iteration": engine.state.iteration}
        for name, model in [("raw", network)] + [(n, a.averaged) for n, a in averages.items()]:
            auc = validation_auc(model, loader, prepare_batch, device, pooling, inferer)
            row[name] = round(auc, 4)
            if auc > best.get(name, (-1.0, 0))[0]:
                best[name] = (auc, epoch)
                atomic_torch_save(model.state_dict(), ckpt_dir / f"best_{name}.pt")
        row["updates"] = {n: a.updates for n, a in averages.items()}
        row["eval_s"] = round(time.time() - started, 1)
        row["best"] = {n: {"auc": round(v[0], 4), "epoch": v[1]} for n, v in best.items()}
        if epoch >= engine.state.max_epochs:
            row["provenance"] = results_metadata.finish(meta)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print("probe_weight_average:", json.dumps({k: row[k] for k in row if k != "provenance"}), flush=True)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, evaluate)
    trainer.run()


if __name__ == "__main__":
    main()

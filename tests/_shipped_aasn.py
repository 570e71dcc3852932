"""Helpers of ``test_shipped_aasn.py``: the shipped fracture AASN scored on the held-out radiographs, and the bar it
must clear.

The radiographs are ``_shipped_models.py``'s (new simulations of the atlas members no shipped model trained on). The
AASN scores them as the bundle's validation scores its fold: the configs it was trained with
(``tools/shipped_models.py``'s ``AASN_CONFIGS``), parsed and scored by ``benchmarks/bundle_validation.py``'s
:func:`training_parser` and :func:`validation_scores` (the recipe's window inferer, then the network's heatmap
pooling), so the test checks the shipped configuration, not a copy of it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _shipped_models import BUNDLE, MODELS_DIR_VARIABLE, REPO, listed_models  # puts bundle/ and tools/ on the path

if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

from bundle_validation import training_parser, validation_scores  # noqa: E402

from shipped_models import AASN_CONFIGS  # noqa: E402

#: The AASN's weights in a models folder: the name ``configs/inference.json`` loads from ``ckpt_dir``.
AASN_WEIGHTS = "model.pt"
#: The bar (issue 15): image-level ROC AUC on the held-out radiographs.
MIN_AUC = 0.80


def shipped_aasn_dir(environ=os.environ, bundle: str | os.PathLike = BUNDLE) -> Path | None:
    """The models folder of the AASN to test: ``$AASN_SHIPPED_MODELS_DIR`` when set, else ``<bundle>/models`` when
    ``<bundle>/large_files.yml`` ships ``models/model.pt``; None when it does not (nothing to test yet).

    Raises:
        FileNotFoundError: the folder lacks :data:`AASN_WEIGHTS`: a release without its weights must fail, not skip.
    """
    override = environ.get(MODELS_DIR_VARIABLE)
    if override:
        models = Path(override)
    elif AASN_WEIGHTS in listed_models(Path(bundle) / "large_files.yml"):
        models = Path(bundle) / "models"
    else:
        return None
    if not (models / AASN_WEIGHTS).is_file():
        raise FileNotFoundError(f"{models}: the fracture AASN's {AASN_WEIGHTS} is missing.")
    return models


def run_aasn(models_dir: str | os.PathLike, items: Sequence[dict]) -> tuple[list[int], list[float], list[str]]:
    """Score annotated ``items`` with the AASN whose weights are ``models_dir/model.pt``, as the bundle's validation
    scores them; returns the image labels, the scores and the images' file names, in one order.

    The configuration is parsed in a temporary ``bundle_root`` (parsing the training config may create ``logs/``
    there), with the items as the validation data. An item the preprocessing cannot make is left out, as validation
    leaves it out, so the names (and their number) are those of the images scored.
    """
    with tempfile.TemporaryDirectory(prefix="shipped_aasn_") as root:
        parser = training_parser(
            AASN_CONFIGS, Path(root), Path(root), 0, num_workers=0, **{"validate#dataset#data": list(items)}
        )
        device = parser.get_parsed_content("device")
        network = parser.get_parsed_content("network")
        network.load_state_dict(torch.load(Path(models_dir) / AASN_WEIGHTS, map_location=device, weights_only=True))
        loader = parser.get_parsed_content("validate#dataloader")
        labels, scores = validation_scores(
            network,
            loader,
            parser.get_parsed_content("prepare_batch"),
            device,
            parser.get_parsed_content("validate#score_pooling"),
            parser.get_parsed_content("validate#inferer"),
        )
    names = [Path(item["image"]).name for item in loader.dataset.data]  # in the loader's order (no shuffling)
    return labels, scores, names


def aasn_meets_bar(
    labels: Sequence[int], scores: Sequence[float], min_auc: float = MIN_AUC, names: Sequence[str] | None = None
) -> tuple[bool, str]:
    """Whether the AASN's held-out scores clear the bar: image-level AUC at least ``min_auc``.

    One function for the shipped AASN's test and for the test that shows the bar can fail, so both judge by the same
    rule. Without positives or negatives there is no AUC, and a non-finite score cannot be ranked: both fail.

    Args:
        labels: the images' labels (1: fractured).
        scores: their scores.
        min_auc: the bar.
        names: the images' names, to name the worst-ranked ones in the message (else their rows).

    Returns:
        ``(passed, message)``; the message gives the AUC, the counts, the highest-scored negative and the
        lowest-scored positive.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    names = list(names) if names is not None else [f"row {row}" for row in range(len(scores))]
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    problems = []
    if not positives:
        problems.append("no positives")
    if not negatives:
        problems.append("no negatives")
    if not np.isfinite(scores).all():
        problems.append(f"{int((~np.isfinite(scores)).sum())} non-finite scores of {scores.size}")
    auc = float("nan")
    if not problems:
        auc = float(roc_auc_score(labels, scores))
        if not auc >= min_auc:
            problems.append(f"AUC {auc:.3f} < {min_auc:.3f}")

    def extreme(label: int, pick) -> str:
        rows = np.flatnonzero((labels == label) & np.isfinite(scores))
        if not rows.size:
            return "none"
        row = int(rows[pick(scores[rows])])
        return f"{names[row]} ({scores[row]:.3f})"

    message = (
        f"held-out AUC {auc:.3f} (bar {min_auc:.3f}), {positives} fractured and {negatives} not; highest-scored "
        f"negative {extreme(0, np.argmax)}, lowest-scored positive {extreme(1, np.argmin)}"
    )
    return not problems, message + ("; FAILS: " + "; ".join(problems) if problems else "")

"""The bundle's fracture validation outside its trainer: the training configuration parsed as ``monai.bundle run``
parses it (with overrides), and a network's image scores on the validation loader as the bundle's evaluator makes
them (its inferer, then the heatmap pooling). Used by the probes and by the test of the shipped AASN."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))

from monai.bundle import ConfigParser  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from scripts.fracture.scoring import ImageScore  # noqa: E402

#: The CPU recipe with the shipped models' schedule (``tools/shipped_models.py``'s ``AASN_CONFIGS``).
DEFAULT_CONFIGS = ["configs/train.json", "configs/scale_cpu.json", "configs/train_shipped.json"]


def training_parser(
    configs: list[str], bundle_root: Path, dataset_dir: Path, fold: int, **more_overrides
) -> ConfigParser:
    """The bundle's training configuration, parsed as ``monai.bundle run`` would with these overrides."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / c) for c in configs])
    parser.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    overrides = {"bundle_root": str(bundle_root), "dataset_dir": str(dataset_dir), "fold": fold}
    parser.update({**overrides, "show_progress": False, **more_overrides})
    parser.parse(True)
    return parser


@torch.no_grad()
def validation_scores(
    network: torch.nn.Module, loader, prepare_batch, device, pooling: str, inferer=None
) -> tuple[list[int], list[float]]:
    """Image labels and scores of ``network`` on ``loader`` (in its order), scored as the bundle's evaluator scores:
    its inferer (e.g. the recipe's windows; ``None``: the whole ROI at once), then heatmap pooling."""
    was_training = network.training
    network.eval()
    scorer = ImageScore(pooling)
    scores, labels = [], []
    for batch in loader:
        inputs, _ = prepare_batch(batch, device)
        logits = network(inputs) if inferer is None else inferer(inputs, network)
        scores += [float(scorer(logit)) for logit in logits]
        labels += [int(v) for v in torch.as_tensor(batch["image_label"]).reshape(-1)]
    network.train(was_training)
    return labels, scores


def validation_auc(network: torch.nn.Module, loader, prepare_batch, device, pooling: str, inferer=None) -> float:
    """Image-level AUC of :func:`validation_scores`."""
    return float(roc_auc_score(*validation_scores(network, loader, prepare_batch, device, pooling, inferer)))

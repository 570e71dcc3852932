"""Writes the test-fold evaluation: ``metrics.json``, a per-case CSV, ROC/PR/FROC PNGs and Fig. 6-like pictures.

An Ignite handler for the evaluator of ``evaluate.json``. It reads the decollated engine output, one
dictionary per image, after the postprocessing (``pred`` = heatmap probabilities in ROI space,
``score`` = image score), computes the paper's metrics (:mod:`scripts.reporting.metrics`) in ROI space with
the ROI's pixel spacing, and writes everything at the end of the run.

When the annotations carry ``fracture_details`` (the simulator's: one ``{"site", "side", "kind", ...}`` per point
of ``fractures``, same order), ``metrics.json`` also gives the recall at each FP ratio per fracture ``kind`` and
per ``site`` (``recall_by_kind``, ``recall_by_site``), read at the overall curve's thresholds. Annotations
without it (real ones) give no such keys.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from custom_transforms.files import contained_path, image_stem

from scripts.reporting.metrics import (
    FROCAccumulator,
    classification_metrics,
    image_scores,
    negative_region,
    point_values,
)
from scripts.reporting.plots import plot_case, plot_froc, plot_pr, plot_roc

__all__ = ["FractureEvaluationWriter", "case_name", "engine_items", "fracture_details", "to_numpy"]

logger = logging.getLogger(__name__)


def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _strict_json(value: Any) -> Any:
    """NaN and infinities (undefined AUC, unreachable FP ratio) become ``null``: strict JSON for any reader."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def engine_items(engine: Engine) -> list[dict]:
    """One dictionary per image from a MONAI engine with ``decollate=True``: the output's keys (``pred``,
    ``score``, ...) updated with the batch's, so that ``image`` is the original radiograph and ``label`` the
    image-level label rather than the engine's network input and target stored under those names."""
    output, batch = engine.state.output, engine.state.batch
    outputs = output if isinstance(output, (list, tuple)) else [output]
    batches = batch if isinstance(batch, (list, tuple)) else [batch]
    if len(outputs) != len(batches):
        raise RuntimeError("engine_items: batch and output differ in length; use decollate=True.")
    return [{**o, **b} for o, b in zip(outputs, batches)]


def fracture_details(annotation: Any, num_points: int) -> list[dict | None]:
    """Each fracture point's entry of the annotation's optional ``fracture_details`` (same order as ``fractures``).

    Args:
        annotation: the annotation JSON's path (the datalist item's ``annotation``) or its parsed content.
        num_points: how many fracture points the image has.

    Returns:
        ``num_points`` dictionaries, or ``None`` for every point when there are no details (real annotations,
        no annotation) or they cannot be matched to the points (a warning says so).
    """
    missing: list[dict | None] = [None] * int(num_points)
    if num_points == 0 or annotation is None:
        return missing
    raw = annotation
    if isinstance(annotation, (str, os.PathLike)):
        try:
            raw = json.loads(Path(annotation).read_text())
        except (OSError, ValueError) as error:
            logger.warning(f"fracture details: cannot read {annotation} ({error}); no per-kind/site recall for it.")
            return missing
    details = raw.get("fracture_details") if isinstance(raw, dict) else None
    if details is None:
        return missing
    if not isinstance(details, list) or len(details) != num_points or not all(isinstance(d, dict) for d in details):
        logger.warning(f"fracture details of {annotation} do not match its {num_points} fracture point(s); ignored.")
        return missing
    return list(details)


def case_name(item: dict, image_key: str = "image", fallback: str = "case") -> str:
    """A case's name: the :func:`~custom_transforms.files.image_stem` of its image's path, else ``fallback``."""
    path = None
    image = item.get(image_key)
    meta = getattr(image, "meta", None)
    if isinstance(meta, dict):
        path = meta.get("filename_or_obj")
    if path is None and isinstance(item.get(f"{image_key}_path"), str):
        path = item[f"{image_key}_path"]
    if path is None and isinstance(image, str):
        path = image
    if not path:
        return fallback
    try:
        return image_stem(str(path))
    except ValueError:  # a path that ends in no file name names no case
        return fallback


class FractureEvaluationWriter:
    """Collects per-image results from an evaluator and writes the evaluation report at ``COMPLETED``.

    Args:
        output_dir: where ``metrics.json``, ``per_case.csv``, ``roc.png``, ``pr.png``, ``froc.png`` and
            ``cases/*.png`` go.
        pred_key: heatmap probabilities (1, h, w) in ROI space.
        score_key: image score; computed as the heatmap maximum when the item lacks it.
        label_key: image-level label 0/1.
        fractures_key: fracture points ``[x, y]`` in ROI pixels, (K, 2).
        spacing_key: ROI pixel spacing in mm, ``(row, col)``.
        input_key: the network input, used for the case pictures.
        radius_mm: the FROC's excluded band (paper: 20 mm).
        fp_ratios: FP area ratios at which recall is reported (paper: 1 % and 10 %).
        threshold: operating threshold for the per-case decision columns.
        network: when given (with ``forward_with_distance``), the case pictures include the feature distance map.
        num_case_pictures: how many Fig. 6-like pictures (the highest-scoring positives and negatives, half each).
        extra: fields copied into ``metrics.json`` (fold, configuration, ...).
        annotation_key: the annotation path, whose optional ``fracture_details`` give each point's groups.
        group_by: fields of ``fracture_details`` by which recall is also reported (``recall_by_<field>``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred",
        score_key: str = "score",
        label_key: str = "label",
        fractures_key: str = "roi_fractures",
        spacing_key: str = "roi_spacing_mm",
        input_key: str = "siamese_input",
        image_key: str = "image",
        radius_mm: float = 20.0,
        fp_ratios: Sequence[float] = (0.01, 0.1),
        threshold: float = 0.5,
        network: torch.nn.Module | None = None,
        num_case_pictures: int = 6,
        extra: dict | None = None,
        annotation_key: str = "annotation",
        group_by: Sequence[str] = ("kind", "site"),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.pred_key, self.score_key, self.label_key = pred_key, score_key, label_key
        self.fractures_key, self.spacing_key, self.input_key, self.image_key = (
            fractures_key,
            spacing_key,
            input_key,
            image_key,
        )
        self.radius_mm = float(radius_mm)
        self.fp_ratios = tuple(float(r) for r in fp_ratios)
        self.threshold = float(threshold)
        self.network = network
        self.num_case_pictures = int(num_case_pictures)
        self.extra = dict(extra or {})
        self.annotation_key = annotation_key
        self.group_by = tuple(group_by)
        self.metrics: dict[str, Any] = {}
        self._reset()

    def _reset(self, engine: Engine | None = None) -> None:
        self.froc = FROCAccumulator(self.radius_mm)
        self.rows: list[dict[str, Any]] = []
        self._candidates: list[dict[str, Any]] = []
        self._details: list[dict | None] = []  # one per fracture point, in the FROC's order

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _collect(self, engine: Engine) -> None:
        for item in engine_items(engine):
            self.add(item)

    def add(self, item: dict) -> None:
        """Add one image's decollated result."""
        for key in (self.pred_key, self.label_key, self.fractures_key, self.spacing_key):
            if key not in item:
                raise KeyError(f"FractureEvaluationWriter: the evaluator output lacks '{key}' (has {sorted(item)}).")
        heatmap = to_numpy(item[self.pred_key]).astype(np.float64)
        heatmap = heatmap[0] if heatmap.ndim == 3 else heatmap
        score = (
            float(to_numpy(item[self.score_key]).ravel()[0])
            if self.score_key in item
            else float(image_scores(heatmap[None])[0])
        )
        points = to_numpy(item[self.fractures_key]).astype(np.float64).reshape(-1, 2)
        spacing = to_numpy(item[self.spacing_key]).astype(np.float64).ravel()
        self.froc.add(heatmap, points, spacing)
        self._details += fracture_details(item.get(self.annotation_key), points.shape[0])
        hit = point_values(heatmap, points) >= self.threshold
        negative = negative_region(heatmap.shape, points, spacing, self.radius_mm)
        fp_ratio = float((heatmap[negative] >= self.threshold).mean()) if negative.any() else 0.0
        name = case_name(item, self.image_key, fallback=f"case{len(self.rows):04d}")
        label = int(to_numpy(item[self.label_key]).ravel()[0])
        self.rows.append(
            {
                "case": name,
                "subject": item.get("subject", ""),
                "label": label,
                "score": score,
                "positive": int(score >= self.threshold),
                "num_fractures": int(points.shape[0]),
                "fractures_recalled": int(hit.sum()),
                "fp_area_ratio": fp_ratio,
            }
        )
        self._keep_for_picture(item, name, label, score, heatmap, points)

    def _keep_for_picture(self, item, name, label, score, heatmap, points) -> None:
        if self.num_case_pictures <= 0 or self.input_key not in item:
            return
        per_class = max(self.num_case_pictures // 2, 1)
        same = [c for c in self._candidates if c["label"] == label]
        if len(same) >= per_class and score <= min(c["score"] for c in same):
            return
        x = to_numpy(item[self.input_key]).astype(np.float32)
        self._candidates.append(
            {"name": name, "label": label, "score": score, "heatmap": heatmap, "points": points, "input": x}
        )
        same = sorted((c for c in self._candidates if c["label"] == label), key=lambda c: -c["score"])
        for drop in same[per_class:]:
            self._candidates.remove(drop)

    def _distance(self, x: np.ndarray) -> np.ndarray | None:
        forward = getattr(self.network, "forward_with_distance", None)
        if forward is None:
            return None
        param = next(self.network.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        training = self.network.training
        self.network.eval()
        with torch.no_grad():
            _, distance = forward(torch.as_tensor(x)[None].to(device))
        self.network.train(training)
        distance = to_numpy(distance)
        return distance[0, 0] if distance.size else None

    def compute(self) -> dict[str, Any]:
        labels = [r["label"] for r in self.rows]
        scores = [r["score"] for r in self.rows]
        curve = self.froc.curve()
        m: dict[str, Any] = dict(self.extra)
        m.update(classification_metrics(scores, labels))
        for r in self.fp_ratios:
            m[f"recall_at_fp_{100 * r:g}pct"] = curve.recall_at(r)
            m[f"threshold_at_fp_{100 * r:g}pct"] = curve.threshold_at(r)
            for row, n in zip(self.rows, curve.recalled_per_image(r)):
                row[f"recalled_at_fp_{100 * r:g}pct"] = int(n)
        m.update(self.recall_by_group(curve))
        positives = [r for r in self.rows if r["label"] == 1]
        negatives = [r for r in self.rows if r["label"] == 0]
        m.update(
            num_images=len(self.rows),
            num_positive=len(positives),
            num_fractures=curve.num_fractures,
            froc_radius_mm=self.radius_mm,
            operating_threshold=self.threshold,
            sensitivity_at_threshold=float(np.mean([r["positive"] for r in positives])) if positives else float("nan"),
            specificity_at_threshold=float(np.mean([1 - r["positive"] for r in negatives]))
            if negatives
            else float("nan"),
        )
        self.curve = curve
        return m

    def recall_by_group(self, curve) -> dict[str, dict]:
        """``{"recall_by_<field>": {value: {"num_fractures": n, "recall_at_fp_<r>pct": ...}}}`` for each field of
        ``group_by`` that some fracture point's details give; groups without fractures are absent. Adds the
        ``fracture_<field>`` column to the per-case rows (each fracture's value, ``;``-separated)."""
        out: dict[str, dict] = {}
        for key in self.group_by:
            labels = [d.get(key) if d is not None else None for d in self._details]
            if all(label is None for label in labels):
                continue
            for i, row in enumerate(self.rows):  # per case: each fracture's value, in annotation order
                row[f"fracture_{key}"] = ";".join(
                    "" if labels[j] is None else str(labels[j]) for j in np.flatnonzero(curve.image_index == i)
                )
            table: dict[str, dict] = {}
            for r in self.fp_ratios:
                for label, g in curve.recall_by_group(r, labels).items():
                    entry = table.setdefault(str(label), {"num_fractures": g["num_fractures"]})
                    entry[f"recall_at_fp_{100 * r:g}pct"] = g["recall"]
            out[f"recall_by_{key}"] = table
        return out

    def write(self, engine: Engine | None = None) -> dict[str, Any]:
        if not self.rows:
            raise RuntimeError("FractureEvaluationWriter: no image was evaluated.")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = m = self.compute()
        with open(self.output_dir / "per_case.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        pictures = {"froc": plot_froc(self.curve, self.output_dir / "froc.png", self.fp_ratios)}
        labels = [r["label"] for r in self.rows]
        if len(set(labels)) == 2:
            scores = [r["score"] for r in self.rows]
            pictures["roc"] = plot_roc(labels, scores, self.output_dir / "roc.png", m["auc"])
            pictures["pr"] = plot_pr(labels, scores, self.output_dir / "pr.png", m["ap"])
        cases = []
        for c in sorted(self._candidates, key=lambda c: (-c["label"], -c["score"])):
            x = c["input"]
            title = f"{c['name']}  label {c['label']}  score {c['score']:.3f}"
            cases.append(
                plot_case(
                    x[0:3],
                    c["heatmap"],
                    self._distance(x),
                    c["points"],
                    contained_path(contained_path(self.output_dir, "cases"), f"{c['name']}.png", "case picture"),
                    title,
                    roi_mirrored=x[3:6],
                )
            )
        m["pictures"] = {**pictures, "cases": cases}
        with open(self.output_dir / "metrics.json", "w") as f:
            json.dump(_strict_json(m), f, indent=2)
        summary = ", ".join(f"{k} {m[k]:.4f}" for k in m if k == "auc" or k == "ap" or k.startswith("recall_at"))
        logger.info(f"test metrics: {summary}; written to {self.output_dir}")
        return m

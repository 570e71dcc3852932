"""Common base of the app's infer tasks: a thin MONAI Label ``BasicInferTask`` over one of the bundle's configs.

The bundle config supplies the preprocessing, the network (``network_def``) and its post-processing; the task only
adds what MONAI Label needs: the label image a viewer can show and the result JSON. Parsed components and network
weights are cached per device and reloaded when the weights file changes (e.g. after the app's trainer ran).

A task whose files are missing (:meth:`BundleConfigInfer.missing_files`) is unavailable: MONAI Label leaves it out of
``/info/``'s ``models`` (``is_valid``), the app lists it under ``unavailable_models`` with
:meth:`~BundleConfigInfer.unavailable_reason`, a one-line reason naming the missing files, and answers its infer
requests with HTTP 503 and that reason. Availability is looked up on every request, so a task becomes available as
soon as its files exist (e.g. the fracture weights the app's trainer writes), without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.bundle_configs import BundleConfigs
from lib.label_writer import DEFAULT_LABEL_EXTENSION, write_label

logger = logging.getLogger(__name__)


def to_builtin(value: Any) -> Any:
    """JSON-ready copy of ``value`` (numpy / torch scalars and arrays become Python numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def as_numpy(value: Any) -> np.ndarray:
    """An array (tensor, MetaTensor or array-like) as numpy, without a detour through Python lists."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def spacing_of(image) -> tuple[float, float] | None:
    """The ``(row, col)`` mm spacing on a loaded image's meta-data (None when unknown)."""
    spacing = getattr(image, "meta", {}).get("spacing_mm")
    if spacing is None:
        return None
    values = as_numpy(spacing).astype(np.float64).reshape(-1)
    return (float(values[0]), float(values[1]))


class TaskUnavailableError(RuntimeError):
    """An infer task that cannot run because files it needs are missing; the message is the one-line reason
    (:meth:`BundleConfigInfer.unavailable_reason`). ``main.py`` answers it with HTTP 503."""


class KeepRequestKeys:
    """Run a bundle transform chain and keep the request's own keys (device, result_extension, ...) that the
    chain's final ``SelectItemsd`` drops.

    Args:
        transform: the bundle's preprocessing.
    """

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, data):
        out = self.transform(dict(data))
        return {**{k: v for k, v in data.items() if k not in out}, **out}


class BundleConfigInfer(BasicInferTask):
    """A MONAI Label infer task driven by one bundle config.

    Args:
        configs: the bundle's configs.
        config_name: e.g. ``inference.json``.
        model_paths: candidate weight files, the last existing one is served (MONAI Label's convention).
        labels: label name -> value of the label image.
        description: shown by viewers.
        landmark: whether the landmark override files apply to this config.
        config: extra user-visible options (``result_extension`` etc.).
    """

    def __init__(
        self,
        configs: BundleConfigs,
        config_name: str,
        model_paths: Sequence[str],
        labels: dict[str, int],
        description: str,
        landmark: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            path=list(model_paths),
            network=None,
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=2,
            description=description,
            config={"result_extension": DEFAULT_LABEL_EXTENSION, **(config or {})},
        )
        self.configs = configs
        self.config_name = config_name
        self.landmark = landmark
        self._components: dict[str, tuple[tuple[str, float], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # --- availability ---------------------------------------------------------------------------------------

    def missing_files(self) -> list[str]:
        """The files the task needs that do not exist (empty when it can run); by default its weights."""
        return [] if self.get_path() else [self.path[0]]

    def unavailable_reason(self) -> str | None:
        """One line naming the missing files and how to get them; None when the task can run."""
        missing = self.missing_files()
        return f"{listed_files(missing)} missing" if missing else None

    def is_valid(self) -> bool:
        """MONAI Label lists the task in ``/info/`` only when this holds."""
        return not self.missing_files()

    # --- the bundle's components -----------------------------------------------------------------------------

    def parser(self, device: torch.device) -> ConfigParser:
        """The bundle config for ``device`` (subclasses may add overrides)."""
        return self.configs.parser(self.config_name, landmark=self.landmark, device=device)

    def build(self, parser: ConfigParser, weights: str, device: torch.device) -> dict[str, Any]:
        """Instantiate what the task runs from ``parser``, with ``weights`` loaded (subclasses)."""
        raise NotImplementedError

    def components(self, data: dict[str, Any]) -> dict[str, Any]:
        """The cached components for the request's device, rebuilt when the served weights changed."""
        reason = self.unavailable_reason()
        if reason:
            raise TaskUnavailableError(reason)
        weights = self.get_path()
        device = torch.device(data.get("device") or "cpu")
        stamp = (weights, os.stat(weights).st_mtime)
        with self._lock:
            cached = self._components.get(str(device))
            if cached is None or cached[0] != stamp:
                logger.info(f"{self.config_name}: loading {weights} on {device}")
                self._components[str(device)] = (stamp, self.build(self.parser(device), weights, device))
            return self._components[str(device)][1]

    def clear_cache(self):
        with self._lock:
            self._components.clear()
        super().clear_cache()

    # --- MONAI Label's stages --------------------------------------------------------------------------------

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return [KeepRequestKeys(self.components(data)["preprocessing"])]

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[str, dict[str, Any]]:
        """Write ``data[output_label_key]`` (the label image) and return it with the result JSON."""
        extension = extension or data.get("result_extension") or DEFAULT_LABEL_EXTENSION
        label = np.asarray(data[self.output_label_key])
        path = write_label(label, data.get("label_spacing_mm"), extension)
        result = to_builtin(data.get(self.output_json_key, {}))
        result["label_values"] = dict(self.labels)
        result["weights"] = self.get_path()
        return path, result


def listed_files(paths: Sequence[str]) -> str:
    """``a is`` / ``a, b are``: the subject of a sentence naming files."""
    return f"{', '.join(paths)} {'is' if len(paths) == 1 else 'are'}"

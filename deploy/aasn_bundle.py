"""The bundle as the app's model: locate it, and run its own inference config in memory on the loaded radiographs.

The app re-implements no step of the pipeline. :class:`BundleInference` parses the bundle's
``configs/inference.json`` as ``python -m monai.bundle run --config_file configs/inference.json --bundle_root
<bundle>`` does (the network replaced when the model path is a TorchScript file) and runs its ``preprocessing``,
``network`` (through its ``inferer``) and ``postprocessing`` on each radiograph, in this process:

* the input is the pydicom dataset that the SDK's DICOM loader already read (the bundle's ``LoadPXRd`` takes a
  dataset as well as a path), with the image's annotation sidecar when it has one; the file is not read again and
  nothing goes through the disk;
* the output is what the bundle's post-processing made: ``fracture_result``
  (``scripts.reporting.fracture_result``: probability, decision, peaks in pixels and mm, landmark provenance),
  the heatmap on the radiograph (``pred_original``, by ``ROIToOriginald``) and the overlay picture
  (``scripts.reporting.plots.fracture_overlay``, the bundle's ``overlay.png``), so the app's probabilities, peaks
  and pictures are the bundle's;
* an image the bundle cannot analyse gets the bundle's status and message
  (``scripts.reporting.inference_failures.describe_failure``: ``not_a_pelvis``, ``unreadable``, ...).

The config's evaluator, data loader and writer are not used: they read files named in a datalist and write per-image
folders, which the app would have to read back. With a work folder (``-w``) the bundle's own writer
(``FractureReportWriter``) also writes its per-image ``report.json``, ``heatmap.nii.gz`` and ``overlay.png`` there.

Model path (``-m`` / ``HOLOSCAN_MODEL_PATH``):

* a bundle folder (``configs/inference.json`` inside), or a folder holding exactly one such bundle
  (the layout the Holoscan packager gives to ``--models <bundle>``): the bundle's weights are used;
* a TorchScript file exported by ``python -m monai.bundle ckpt_export`` inside a bundle's ``models/``
  folder: that network replaces the bundle's ``network`` and its checkpoint; the rest of the bundle (landmark
  detector, preprocessing, post-processing) still comes from the bundle folder around it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BundleInference", "ImageResult", "annotation_sidecar", "find_bundle_root"]

logger = logging.getLogger(__name__)

INFERENCE_CONFIG = Path("configs") / "inference.json"
METADATA = Path("configs") / "metadata.json"


def _is_bundle(folder: Path) -> bool:
    return (folder / INFERENCE_CONFIG).is_file()


def annotation_sidecar(path: str | os.PathLike) -> Path | None:
    """The annotation JSON the bundle would use for an image: ``<name>.json`` beside ``<name>[.dcm]``, if any."""
    from custom_transforms.files import (
        image_stem,  # the bundle's datalist names annotations by the same rule
    )

    path = Path(path)
    sidecar = path.with_name(f"{image_stem(path)}.json")
    return sidecar if sidecar.is_file() else None


def find_bundle_root(model_path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(bundle root, TorchScript file or None)`` for a model path given to the app.

    Args:
        model_path: a bundle folder, a folder containing one bundle folder, or a ``.ts`` file in a bundle.

    Raises:
        FileNotFoundError: when no bundle can be found there, naming the path and what was expected.
    """
    path = Path(model_path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"Model path {path} does not exist (option -m or HOLOSCAN_MODEL_PATH).")
    if path.is_file():
        for candidate in (path.parent, path.parent.parent):
            if _is_bundle(candidate):
                return candidate, path
        raise FileNotFoundError(
            f"Model file {path}: no bundle around it (looked for {INFERENCE_CONFIG} in {path.parent} and "
            f"{path.parent.parent}). A TorchScript file alone has no landmark detector nor preprocessing: give "
            "the bundle folder, or the model.ts inside the bundle's models/ folder."
        )
    if _is_bundle(path):
        return path, None
    inner = sorted(p for p in path.iterdir() if p.is_dir() and _is_bundle(p))
    if len(inner) == 1:
        return inner[0], None
    raise FileNotFoundError(
        f"Model folder {path}: expected a MONAI bundle ({INFERENCE_CONFIG} inside) or a folder holding exactly one; "
        f"found {len(inner)}."
    )


@dataclass
class ImageResult:
    """What the bundle produced for one radiograph (``error`` set when it produced nothing).

    ``report`` is the bundle's fracture result with ``image`` (the input's path) and ``status``; ``status`` is
    ``"ok"`` or the bundle's reason for no result, e.g. ``"not_a_pelvis"`` (refused by the landmark detector),
    ``"unreadable"``, or ``"failed"`` (anything else, e.g. missing weights). ``heatmap`` and ``image`` are ``(H, W)``
    on the radiograph's grid, ``overlay`` the bundle's ``(H, W, 3)`` uint8 overlay picture.
    """

    report: dict[str, Any] = field(default_factory=dict)
    heatmap: np.ndarray | None = None
    image: np.ndarray | None = None
    overlay: np.ndarray | None = None
    error: str | None = None
    status: str = "ok"


class BundleInference:
    """Runs the bundle's inference config in memory on radiographs and returns its results (see the module docstring).

    Args:
        bundle_root: the bundle folder.
        workdir: where the bundle's writer also writes its per-image outputs and summary; ``None``: nothing is
            written.
        torchscript: a TorchScript network replacing the bundle's checkpointed one (optional).
        overrides: further config overrides (id -> value), as on the ``monai.bundle run`` command line.
    """

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        workdir: str | os.PathLike | None = None,
        torchscript: str | os.PathLike | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.bundle_root = Path(bundle_root).resolve()
        if not _is_bundle(self.bundle_root):
            raise FileNotFoundError(f"{self.bundle_root}: not a MONAI bundle (no {INFERENCE_CONFIG}).")
        self.workdir = Path(workdir).resolve() if workdir else None
        self.torchscript = Path(torchscript).resolve() if torchscript else None
        self.overrides = dict(overrides or {})
        metadata_file = self.bundle_root / METADATA
        self.metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        # The bundle's configs import its code as ``scripts.*`` relative to the bundle root.
        if str(self.bundle_root) not in sys.path:
            sys.path.insert(0, str(self.bundle_root))
        self._parts: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_model_path(
        cls, model_path: str | os.PathLike, workdir: str | os.PathLike | None = None, **kwargs
    ) -> BundleInference:
        """Build from the app's model path (see :func:`find_bundle_root`)."""
        bundle_root, torchscript = find_bundle_root(model_path)
        return cls(bundle_root, workdir, torchscript=torchscript, **kwargs)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "AASN pelvic fracture detection"))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))

    @property
    def model_description(self) -> str:
        return f"TorchScript {self.torchscript}" if self.torchscript else "the bundle's checkpoint (models/)"

    def components(self) -> dict[str, Any]:
        """The config's preprocessing, network (weights loaded), inferer and postprocessing; built once."""
        with self._lock:
            if self._parts is None:
                self._parts = self._build()
            return self._parts

    def _build(self) -> dict[str, Any]:
        import torch
        from monai.bundle import ConfigParser

        from scripts.landmarks.detector import load_network_weights

        parser = ConfigParser()
        parser.read_meta(str(self.bundle_root / METADATA))
        parser.read_config(str(self.bundle_root / INFERENCE_CONFIG))
        parser["bundle_root"] = str(self.bundle_root)
        for key, value in self.overrides.items():
            parser[key] = value
        device = torch.device(parser.get_parsed_content("device"))
        if self.torchscript is not None:
            network = torch.jit.load(str(self.torchscript), map_location=device).eval()
        else:
            network = parser.get_parsed_content("network")
            path, key = self._checkpoint(parser)
            load_network_weights(network, path, key=key).to(device)
        return {
            "preprocessing": parser.get_parsed_content("preprocessing"),
            "network": network,
            "inferer": parser.get_parsed_content("inferer"),
            "postprocessing": parser.get_parsed_content("postprocessing"),
            "device": device,
            "amp": bool(parser.get_parsed_content("amp")) and device.type == "cuda",
        }

    @staticmethod
    def _checkpoint(parser) -> tuple[str, str | None]:
        """The weights file and state-dict key of the config's ``CheckpointLoader`` handler."""
        for index, handler in enumerate(parser.get("handlers", [])):
            if isinstance(handler, dict) and str(handler.get("_target_", "")).endswith("CheckpointLoader"):
                keys = list(handler.get("load_dict", {}))
                return str(parser.get_parsed_content(f"handlers#{index}#load_path")), (keys[0] if keys else None)
        raise ValueError(f"{INFERENCE_CONFIG}: no CheckpointLoader among its handlers, so no weights to load.")

    def analyse(self, dataset, path: str, writer=None) -> ImageResult:
        """The bundle's result for one radiograph.

        Args:
            dataset: the pydicom dataset the SDK loaded (or ``None``: the bundle reads ``path``).
            path: the file it came from (names the image in messages; its annotation sidecar is looked up beside it).
            writer: the bundle's ``FractureReportWriter`` to write the bundle's own outputs too (optional).
        """
        import torch

        from scripts.reporting.inference_failures import describe_failure
        from scripts.reporting.plots import fracture_overlay

        sidecar = annotation_sidecar(path)
        if sidecar is not None:
            logger.info("Using the landmarks of %s for %s", sidecar, path)
        item = {"image": path if dataset is None else dataset, "annotation": None if sidecar is None else str(sidecar)}
        try:
            parts = self.components()
            data = parts["preprocessing"](item)
            inputs = torch.as_tensor(data["siamese_input"])[None].to(parts["device"])
            with torch.no_grad(), torch.autocast(parts["device"].type, enabled=parts["amp"]):
                data["pred"] = parts["inferer"](inputs, parts["network"])[0]
            data = parts["postprocessing"](data)
        except Exception as error:  # the bundle's status and message, as its own inference reports them
            failure = describe_failure(path, error)
            if writer is not None:
                writer.write_failure({"image": path}, error)
            return ImageResult(error=failure.error, status=failure.status)
        if writer is not None:
            writer.write(data)
        result = data["fracture_result"]
        heatmap = data["pred_original"].detach().cpu().numpy().astype(np.float32)[0]
        image = data["radiograph"].detach().cpu().numpy().astype(np.float32)[0]
        return ImageResult(
            report={"image": path, "status": "ok", **result},
            heatmap=heatmap,
            image=image,
            overlay=fracture_overlay(image, heatmap, result),
        )

    def run(self, instances: Sequence[str | tuple[Any, str]]) -> dict[str, ImageResult]:
        """Analyse every radiograph; returns a result per path (with ``error`` for those the bundle did not report).

        Args:
            instances: ``(pydicom dataset, file path)`` pairs as the SDK loaded them, or file paths.
        """
        writer = None
        if self.workdir is not None:
            from scripts.reporting.inference_writer import FractureReportWriter

            writer = FractureReportWriter(self.workdir)
        results = {}
        for instance in instances:
            dataset, path = (None, instance) if isinstance(instance, (str, os.PathLike)) else instance
            results[str(path)] = self.analyse(dataset, str(path), writer)
        if writer is not None:
            writer.write_summary()
        return results

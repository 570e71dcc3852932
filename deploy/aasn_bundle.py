"""The bundle as the app's model: locate it, and run its own ``inference.json`` on a list of DICOM files.

The app does not re-implement any step of the pipeline. :class:`BundleInference` drives MONAI's
``ConfigWorkflow`` on the bundle's ``configs/inference.json`` exactly as
``python -m monai.bundle run --config_file configs/inference.json --bundle_root <bundle>`` does, overriding
only ``input`` (a datalist of the selected files), ``output_dir`` (the app's work folder) and, when the model
path is a TorchScript file, the network. It then reads back what the bundle wrote per image
(``report.json`` and ``heatmap.nii.gz``, see ``bundle/scripts/reporting/inference_writer.py``), so the app's
probabilities, peaks and heatmaps are the bundle's.

Model path (``-m`` / ``HOLOSCAN_MODEL_PATH``):

* a bundle folder (``configs/inference.json`` inside), or a folder holding exactly one such bundle
  (the layout the Holoscan packager gives to ``--models <bundle>``): the bundle's weights are used;
* a TorchScript file exported by ``python -m monai.bundle ckpt_export`` inside a bundle's ``models/``
  folder: that network replaces the bundle's ``network`` and its ``CheckpointLoader``; the rest of the
  bundle (landmark detector, preprocessing, writer) still comes from the bundle folder around it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BundleInference", "ImageResult", "annotation_sidecar", "find_bundle_root"]

logger = logging.getLogger(__name__)

INFERENCE_CONFIG = Path("configs") / "inference.json"
METADATA = Path("configs") / "metadata.json"
#: Report entries naming files in the app's scratch folder (the app writes its own SR, SC and JSON instead).
SCRATCH_KEYS = ("heatmap_nifti", "overlay_png")


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


def _link_or_copy(source: Path, link: Path) -> None:
    try:
        link.symlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, link)


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
    """What the bundle produced for one input file (``error`` set when it produced nothing).

    ``status`` is the bundle's (``report.json`` / ``inference_summary.json``): ``"ok"``, or why the image got no
    result, e.g. ``"not_a_pelvis"`` (refused by the landmark detector) or ``"unreadable"``; ``"failed"`` when
    the bundle's run itself stopped.
    """

    report: dict[str, Any] = field(default_factory=dict)
    heatmap: np.ndarray | None = None
    image: np.ndarray | None = None
    error: str | None = None
    status: str = "ok"


class _RecordErrors(logging.Handler):
    """Keeps the bundle's warning/error log lines, to tell the user why an image got no report."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class BundleInference:
    """Runs the bundle's inference config on files and returns its reports, heatmaps and images.

    Args:
        bundle_root: the bundle folder.
        workdir: scratch folder for the datalist, input links and the bundle's outputs (kept); ``None``: a
            temporary folder per run, removed afterwards.
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

    def _workflow(self, datalist: Path, output_dir: Path):
        from monai.bundle import ConfigWorkflow

        # The bundle's configs import its code as ``scripts.*`` relative to the bundle root.
        if str(self.bundle_root) not in sys.path:
            sys.path.insert(0, str(self.bundle_root))
        workflow = ConfigWorkflow(
            config_file=str(self.bundle_root / INFERENCE_CONFIG),
            meta_file=str(self.bundle_root / METADATA),
            logging_file=False,  # the app owns logging; the bundle's file config would silence its loggers
            workflow_type="infer",
            bundle_root=str(self.bundle_root),
            input=str(datalist),
            output_dir=str(output_dir),
            **self.overrides,
        )
        if self.torchscript is not None:
            parser = workflow.parser
            parser["network"] = f"$torch.jit.load({str(self.torchscript)!r}, map_location=@device).eval()"
            parser["handlers"] = [
                handler
                for handler in parser.get("handlers", [])
                if not (isinstance(handler, dict) and str(handler.get("_target_", "")).endswith("CheckpointLoader"))
            ]
        return workflow

    def _link_inputs(self, paths: list[str], folder: Path) -> dict[str, str]:
        """Give each input a unique name (``image_NNNN.dcm``) so that the bundle's per-image folders never clash.

        An annotation sidecar of an input (``<name>.json`` beside ``<name>.dcm``, the bundle's own rule) is
        linked beside it under the new name, so the bundle uses its landmarks exactly as when run on the folder.
        """
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        links = {}
        for index, path in enumerate(paths):
            link = folder / f"image_{index:04d}.dcm"
            _link_or_copy(Path(path), link)
            sidecar = annotation_sidecar(path)
            if sidecar is not None:
                logger.info("Using the landmarks of %s for %s", sidecar, path)
                _link_or_copy(sidecar, link.with_suffix(".json"))
            links[path] = str(link)
        return links

    def run(self, paths: list[str]) -> dict[str, ImageResult]:
        """Infer every file; returns a result per path (with ``error`` for files the bundle did not report).

        Args:
            paths: DICOM files of radiographs.
        """
        if self.workdir is not None:
            return self._run_in(paths, self.workdir)
        with tempfile.TemporaryDirectory(prefix="aasn_deploy_") as scratch:
            return self._run_in(paths, Path(scratch))

    def _run_in(self, paths: list[str], workdir: Path) -> dict[str, ImageResult]:
        links = self._link_inputs(paths, workdir / "inputs")
        results, failure = self._run_batch(links, workdir / "batch")
        if failure is not None and len(links) > 1:
            # The bundle stopped on one image: run each alone, so that the others are still analysed.
            logger.warning("The bundle's run on %d images failed (%s); running them one by one.", len(links), failure)
            results = {}
            for index, (path, link) in enumerate(links.items()):
                results.update(self._run_batch({path: link}, workdir / f"single_{index:04d}")[0])
        return results

    def _run_batch(self, links: dict[str, str], workdir: Path) -> tuple[dict[str, ImageResult], str | None]:
        """One run of the bundle on ``{input path: link}``; returns the results and the bundle's error, if any."""
        from custom_transforms import LoadPXR
        from custom_transforms.errors import root_cause

        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        datalist = workdir / "datalist.json"
        datalist.write_text(json.dumps([{"image": link} for link in links.values()], indent=2))
        output_dir = workdir / "bundle_output"
        errors = _RecordErrors()
        logging.getLogger().addHandler(errors)
        failure = None
        try:
            workflow = self._workflow(datalist, output_dir)
            workflow.initialize()
            workflow.run()
            workflow.finalize()
        except Exception as err:  # the bundle stopped: reported for every image that got no report
            root = root_cause(err)  # config evaluation wraps the real error
            failure = f"the bundle's inference failed: {type(root).__name__}: {root}"
            logger.exception("The bundle's inference failed")
        finally:
            logging.getLogger().removeHandler(errors)

        reports = {}
        for report_file in sorted(output_dir.glob("*/report.json")):
            report = json.loads(report_file.read_text())
            reports[os.path.abspath(report.get("image", ""))] = (report, report_file.parent)
        results = {}
        for path, link in links.items():
            # the bundle names the image by the path it loaded: the link, or its target if it resolved it
            found = reports.get(os.path.abspath(link)) or reports.get(str(Path(path).resolve()))
            if found is None:
                mentions = [m for m in errors.messages if Path(link).name in m or Path(link).stem in m]
                reason = failure or (mentions[-1] if mentions else "the bundle wrote no report for it (see the log)")
                results[path] = ImageResult(error=reason.replace(link, path), status="failed")
                continue
            report, folder = found
            if report.get("status", "ok") != "ok":  # the bundle's error report: refused or unreadable
                message = str(report.get("error") or report["status"]).replace(link, path)
                results[path] = ImageResult(error=message, status=str(report["status"]))
                continue
            # The report as the bundle wrote it, but naming the app's input and without the scratch files.
            report = {k: v for k, v in report.items() if k not in SCRATCH_KEYS}
            report["image"] = path
            results[path] = ImageResult(
                report=report,
                heatmap=self._read_heatmap(folder / "heatmap.nii.gz"),
                image=np.asarray(LoadPXR()(link))[0],
            )
        return results, failure

    @staticmethod
    def _read_heatmap(path: Path) -> np.ndarray:
        """The bundle's heatmap NIfTI as an ``(H, W)`` array (rows, columns) of the radiograph.

        The file is on the radiograph's grid in the project's NIfTI convention
        (``custom_transforms.conventions.radiograph_nifti_affine``: axis 0 = column, axis 1 = row); any axis
        flips in its affine (a viewer's re-save) are undone by reorienting to that convention's orientation.
        """
        import nibabel as nib
        from nibabel import orientations

        from custom_transforms.conventions import radiograph_nifti_affine

        image = nib.load(str(path))
        wanted = orientations.io_orientation(radiograph_nifti_affine(None))[: len(image.shape)]
        current = orientations.io_orientation(image.affine)[: len(image.shape)]
        transform = orientations.ornt_transform(current, wanted)
        data = np.asarray(orientations.apply_orientation(np.asanyarray(image.dataobj), transform), dtype=np.float32)
        return data.reshape(data.shape[:2]).T.copy()  # (x, y[, 1]) -> (rows, cols)

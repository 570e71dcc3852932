"""Writes the inference results of each image to ``output_dir/<image name>/``, and a summary of the run.

``<image name>`` is the file name without its extension; when two inputs of a run share it (``a/pelvis.dcm``,
``b/pelvis.dcm``) a short hash of the full path is appended (:func:`custom_transforms.files.unique_image_stems`).

- ``heatmap.nii.gz`` (``heatmap.nii`` when not compressed): fracture probabilities on the original image grid.
  NIfTI axis 0 is x (column), axis 1 is y (row), with the radiograph affine of
  ``custom_transforms.conventions.radiograph_nifti_affine`` (``diag(-col_mm, -row_mm, 1, 1)``, ITK's placement of a
  radiograph): ITK-based viewers overlay it on the radiograph, and ITK or nibabel (after reorienting to LPS) read it
  back on the image's pixels. The voxels are uint8 ``round(255 p)`` with ``scl_slope`` 1/255 and ``scl_inter`` 0:
  readers that apply the scaling (nibabel's ``get_fdata``, ITK, 3D Slicer) get the probabilities back within
  0.5/255; gzip level 1 (fast; the file is a quarter of float32's and writes several times faster).
- ``overlay.png``: the radiograph with the heatmap, the peaks and a caption banner
  (:func:`~scripts.reporting.plots.fracture_overlay`, the picture of the Deploy app's Secondary Capture too), its
  longer side reduced to at most ``overlay_max_size`` pixels (1024; by an integer factor, see
  :func:`~scripts.reporting.plots.overlay_reduction`), PNG compression level 1
  (:func:`~scripts.reporting.plots.write_png`).
- ``report.json``: ``image``, ``status`` ``"ok"``, the image's fracture result as the post-processing built it
  (:func:`~scripts.reporting.fracture_result.fracture_result`: ``fracture_probability``, ``threshold``,
  ``positive``, ``peaks`` in original pixels and mm, ``max_location``, spacing, ``landmarks`` and their
  provenance, ``tps_warp``) and the paths of the two files above (``heatmap_nifti``, ``overlay_png``; null when
  that output is switched off).

``report.json`` is always written; the heatmap and the overlay can each be switched off (``write_heatmap``,
``write_overlay``: ids of ``configs/inference.json`` for runs that draw their own pictures).
The heatmap NIfTI is written in a second thread while the overlay is drawn (numpy and zlib release the GIL).

The writer only writes: the result (``fracture_result``) and the heatmap on the original grid (``pred_original``)
are made by ``configs/inference.json``'s ``postprocessing`` (``FractureResultd``, ``ROIToOriginald``), which
MONAI Label and the Deploy app run too.

An image whose preprocessing failed (:meth:`FractureReportWriter.write_failure`, called by
:class:`~scripts.failure_tolerant_dataset.FailureTolerantDataset`) gets a ``report.json`` with its ``status``
(``not_a_pelvis``, ``unreadable``, ... see :mod:`.inference_failures`) and the ``error`` naming the file, and
no probability. At the end of the run ``output_dir/inference_summary.json`` lists every image with its status,
and one log line counts them.

Every image folder is made with :func:`custom_transforms.files.contained_path`: whatever an input is called, and
whatever links ``output_dir`` holds, nothing is written or deleted outside ``output_dir`` (an image whose folder would
lie outside gets status ``failed`` in the summary, with the reason). ``configs/inference.json`` applies the rerun
policy of :mod:`scripts.run_guard` before the run: an ``output_dir`` holding an earlier run's results is refused
unless ``--overwrite true``, which removes them first, so the summary and the folders are this run's only.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from custom_transforms.conventions import radiograph_nifti_affine
from custom_transforms.files import UnsafePathError, contained_path, unique_image_stems

from scripts.reporting.evaluation_writer import case_name, engine_items, to_numpy
from scripts.reporting.inference_failures import describe_failure
from scripts.reporting.plots import heatmap_footprint, save_fracture_overlay

__all__ = [
    "FractureReportWriter",
    "HEATMAP_SLOPE",
    "RESULT_FILES",
    "SUMMARY_FILE",
    "heatmap_file",
    "quantize_heatmap",
    "write_heatmap_nifti",
]

#: The run's summary, in ``output_dir``.
SUMMARY_FILE = "inference_summary.json"
#: The overlay picture, in each image folder.
OVERLAY_FILE = "overlay.png"
#: Files of a successful report besides ``report.json``: removed when the image fails in a later run into the same
#: folder, and by the rerun policy (``scripts.run_guard.prepare_output_dir``, given this list by ``inference.json``).
RESULT_FILES = ("heatmap.nii.gz", "heatmap.nii", OVERLAY_FILE)
#: ``scl_slope`` of the heatmap NIfTI: uint8 voxel ``q`` is the probability ``q / 255``.
HEATMAP_SLOPE = 1.0 / 255.0

logger = logging.getLogger(__name__)


def heatmap_file(compressed: bool = True) -> str:
    """The heatmap's file name: ``heatmap.nii.gz`` (gzip) or ``heatmap.nii``."""
    return "heatmap.nii.gz" if compressed else "heatmap.nii"


def quantize_heatmap(heatmap: np.ndarray, footprint: tuple[slice, slice] | None = None) -> np.ndarray:
    """``(H, W)`` probabilities -> uint8 ``round(255 * clip(p, 0, 1))``, computed inside ``footprint`` only (the box
    of :func:`~scripts.reporting.plots.heatmap_footprint`: 0 outside it; found here when not given)."""
    heatmap = np.asarray(heatmap)
    quantized = np.zeros(heatmap.shape, dtype=np.uint8)
    footprint = heatmap_footprint(heatmap) if footprint is None else footprint
    if footprint is not None:
        values = np.clip(heatmap[footprint], 0.0, 1.0, dtype=np.float32) * np.float32(255.0)
        quantized[footprint] = np.rint(values, out=values)
    return quantized


def write_heatmap_nifti(
    heatmap: np.ndarray,
    spacing_mm: np.ndarray | None,
    path: str | os.PathLike,
    compress_level: int = 1,
    footprint: tuple[slice, slice] | None = None,
) -> str:
    """Write a (H, W) heatmap of probabilities as NIfTI: axis 0 = x (column), axis 1 = y (row), the radiograph's
    affine; uint8 voxels with ``scl_slope`` :data:`HEATMAP_SLOPE` and ``scl_inter`` 0, so that readers applying the
    scaling get the probabilities back within 0.5/255.

    nibabel makes the header (the bytes its own writer puts before the voxels); the voxels follow as one block and a
    ``.nii.gz`` is compressed in one call (nibabel writes a 2D image row by row, each row a gzip write): the file's
    content is what ``nibabel.save`` writes.

    Args:
        heatmap: ``(H, W)`` probabilities in ``[0, 1]`` on the radiograph's grid.
        spacing_mm: ``(row, col)`` pixel spacing (None: 1 mm).
        path: the file: ``.nii.gz`` (gzip at ``compress_level``) or ``.nii`` (uncompressed).
        compress_level: gzip level of a ``.nii.gz`` (1: fast).
        footprint: the heatmap's non-zero box if already known (:func:`~scripts.reporting.plots.heatmap_footprint`).
    """
    import io
    import zlib

    import nibabel as nib

    quantized = quantize_heatmap(heatmap, footprint)
    # the (W, H) view of the (H, W) array is Fortran-ordered, NIfTI's voxel order: its bytes are the array's
    img = nib.Nifti1Image(quantized.T, radiograph_nifti_affine(spacing_mm))
    img.header.set_slope_inter(HEATMAP_SLOPE, 0.0)
    img.header.set_xyzt_units("mm")
    img.update_header()  # as nibabel's to_file_map does before writing the header
    header = io.BytesIO()
    img.header.write_to(header)  # the header, the no-extension flag, and vox_offset set
    offset = int(img.header.get_data_offset())
    if header.tell() > offset:
        raise RuntimeError(f"NIfTI header of {header.tell()} bytes beyond its vox_offset {offset}")
    header.write(b"\x00" * (offset - header.tell()))
    path = str(path)
    with open(path, "wb") as f:
        if path.endswith(".gz"):  # one gzip member, as gzip.compress(..., mtime=0) makes it, without joining copies
            # memLevel 4 (zlib's default 8): a smaller hash table, cheaper over the megabytes of zeros outside the
            # footprint (a quarter less time at level 1, the file as large)
            stream = zlib.compressobj(int(compress_level), zlib.DEFLATED, 31, 4)
            f.write(stream.compress(header.getvalue()) + stream.compress(quantized) + stream.flush())
        else:
            f.write(header.getvalue())
            f.write(quantized)
    return path


class FractureReportWriter:
    """Ignite handler writing ``report.json`` and (unless switched off) the heatmap NIfTI and the overlay PNG per
    inferred image, error reports for images that failed before the network, and the run's
    ``inference_summary.json``.

    Args:
        output_dir: root folder; each image gets ``output_dir/<image name>/``.
        result_key: the image's fracture result (made by ``scripts.reporting.fracture_result.FractureResultd``).
        original_pred_key: the heatmap on the original grid (1, H, W) (made by ``custom_transforms.ROIToOriginald``).
        image_key: the original image (1, H, W) whose meta-data carry ``spacing_mm`` and the file name.
        items: the run's input items (dicts with ``image``); when given, the summary lists each of them with the
            status of its ``report.json``, also for failures recorded in ``DataLoader`` workers. Otherwise it
            lists what this process wrote.
        write_heatmap: write the heatmap NIfTI (``report.json``'s ``heatmap_nifti`` is null otherwise).
        heatmap_compressed: ``heatmap.nii.gz`` (gzip at ``heatmap_compress_level``) or ``heatmap.nii``.
        heatmap_compress_level: gzip level of ``heatmap.nii.gz`` (1: fast).
        write_overlay: write ``overlay.png`` (``report.json``'s ``overlay_png`` is null otherwise).
        overlay_max_size: the overlay's longer side at most this many pixels (None: the radiograph's size).
        overlay_compress_level: PNG (zlib) level of the overlay (1: fast).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        result_key: str = "fracture_result",
        original_pred_key: str = "pred_original",
        image_key: str = "image",
        items: Sequence[dict] | None = None,
        write_heatmap: bool = True,
        heatmap_compressed: bool = True,
        heatmap_compress_level: int = 1,
        write_overlay: bool = True,
        overlay_max_size: int | None = 1024,
        overlay_compress_level: int = 1,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.result_key, self.original_pred_key, self.image_key = result_key, original_pred_key, image_key
        self.write_heatmap, self.write_overlay = bool(write_heatmap), bool(write_overlay)
        self.heatmap_name = heatmap_file(bool(heatmap_compressed))
        self.heatmap_compress_level = int(heatmap_compress_level)
        self.overlay_max_size = None if not overlay_max_size else int(overlay_max_size)
        self.overlay_compress_level = int(overlay_compress_level)
        self.items = None if items is None else list(items)
        self._folder_names = (
            {} if self.items is None else unique_image_stems([str(item.get(image_key, "")) for item in self.items])
        )
        self.reports: list[dict[str, Any]] = []
        self._report_files: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_batch)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.write_summary())

    def _write_batch(self, engine: Engine) -> None:
        for item in engine_items(engine):
            try:
                self.write(item)
            except Exception as error:  # one image's report failing must not stop the others
                meta = getattr(item.get(self.image_key), "meta", None) or {}
                self.write_failure({self.image_key: str(meta.get("filename_or_obj", ""))}, error)

    def _folder(self, item: dict) -> Path:
        image = item.get(self.image_key)
        path = (getattr(image, "meta", None) or {}).get("filename_or_obj", image)
        name = self._folder_names.get(os.path.abspath(str(path))) if isinstance(path, (str, os.PathLike)) else None
        name = name or case_name(item, self.image_key, fallback=f"image{len(self.reports):04d}")
        return contained_path(self.output_dir, name, "image folder")  # never a place outside output_dir

    def write(self, item: dict) -> dict[str, Any]:
        """Write one image's outputs; returns its report.

        Args:
            item: the post-processed data of one image (``result_key``, ``original_pred_key``, ``image_key``).
        """
        for key in (self.result_key, self.original_pred_key, self.image_key):
            if key not in item:
                raise KeyError(
                    f"FractureReportWriter: the inference output lacks '{key}' (has {sorted(map(str, item))}); "
                    "the inference config's postprocessing makes it."
                )
        result = item[self.result_key]
        image = item[self.image_key]
        meta = getattr(image, "meta", {}) or {}
        out = self._folder(item)
        out.mkdir(parents=True, exist_ok=True)
        heatmap_path = overlay_path = None
        if self.write_heatmap or self.write_overlay:
            heatmap = np.asarray(to_numpy(item[self.original_pred_key]), dtype=np.float32)  # no copy when float32
            heatmap = heatmap[0] if heatmap.ndim == 3 else heatmap
            footprint = heatmap_footprint(heatmap)  # found once, for both files
            # the two files at once: the NIfTI in a second thread (numpy and zlib release the GIL) while this one
            # draws the overlay; leaving the block waits for both, and an error of either is raised here
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="heatmap-nifti") as pool:
                # unknown spacing (e.g. a PNG without annotation): the NIfTI is at 1 mm
                nifti = pool.submit(
                    write_heatmap_nifti, heatmap, result.get("spacing_mm"), out / self.heatmap_name,
                    self.heatmap_compress_level, footprint,
                ) if self.write_heatmap else None  # fmt: skip
                if self.write_overlay:
                    overlay_path = save_fracture_overlay(
                        to_numpy(image), heatmap, result, out / OVERLAY_FILE, self.overlay_max_size,
                        self.overlay_compress_level, footprint,
                    )  # fmt: skip
                heatmap_path = nifti.result() if nifti is not None else None
        for stale in RESULT_FILES:  # an earlier run's file that this run does not write must not sit beside it
            if str(out / stale) not in (heatmap_path, overlay_path):
                (out / stale).unlink(missing_ok=True)
        report = {
            "image": str(meta.get("filename_or_obj", "")),
            "status": "ok",
            **result,
            "heatmap_nifti": heatmap_path,
            "overlay_png": overlay_path,
        }
        self._save(report, out / "report.json")
        logger.info(f"{out.name}: fracture probability {result['fracture_probability']:.4f} -> {out / 'report.json'}")
        return report

    def write_failure(self, item: dict, error: BaseException) -> dict[str, Any]:
        """Write the error report of an image that could not be analysed (no probability), and log a warning.

        Args:
            item: the input item (``image`` = its path).
            error: what its preprocessing raised (see :func:`~.inference_failures.describe_failure`).
        """
        failure = describe_failure(str(item.get(self.image_key, "")), error)
        try:
            out = self._folder(item)
        except UnsafePathError as unsafe:  # nowhere to write inside output_dir: the summary says so
            logger.error(f"{failure.image}: no report written ({failure.status}: {failure.error}): {unsafe}")
            return {"image": failure.image, "status": "failed", "error": str(unsafe)}
        out.mkdir(parents=True, exist_ok=True)
        for stale in RESULT_FILES:  # a result of an earlier run must not sit beside this error
            (out / stale).unlink(missing_ok=True)
        report = {"image": failure.image, "status": failure.status, "error": failure.error}
        self._save(report, out / "report.json")
        logger.warning(
            f"no fracture report ({failure.status}): {failure.error}",  # the error names the file
            exc_info=error if failure.status == "failed" else None,  # unexpected: keep the traceback
        )
        return report

    def _save(self, report: dict[str, Any], path: Path) -> None:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        self.reports.append(report)
        self._report_files.append(str(path))

    def write_summary(self) -> list[dict[str, Any]]:
        """Write ``inference_summary.json`` (one entry per image) and log the counts; returns the entries."""
        if self.items is not None:
            reports = [self._read_report(item) for item in self.items]
        else:
            reports = [{**report, "_file": file} for report, file in zip(self.reports, self._report_files)]
        entries = []
        for report in reports:
            entry = {"image": report.get("image"), "status": report.get("status", "ok"), "report": report.get("_file")}
            if entry["status"] == "ok":
                summarised = ("fracture_probability", "positive", "landmark_source", "tps_warp")
                entry.update({k: report.get(k) for k in summarised})
            else:
                entry["error"] = report.get("error")
            entries.append(entry)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / SUMMARY_FILE
        with open(path, "w") as f:
            json.dump(entries, f, indent=2)
        counts = Counter(e["status"] for e in entries if e["status"] != "ok")
        reported = sum(e["status"] == "ok" for e in entries)
        line = f"{reported} images reported, {sum(counts.values())} refused"
        if counts:
            line += ": " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        (logger.warning if counts else logger.info)(f"{line} (summary: {path})")
        return entries

    def _read_report(self, item: dict) -> dict[str, Any]:
        """The ``report.json`` this run wrote for ``item`` (status ``missing`` when there is none)."""
        image = str(item.get(self.image_key, ""))
        try:
            file = self._folder({self.image_key: image}) / "report.json"
        except UnsafePathError as unsafe:
            return {"image": image, "status": "failed", "error": f"{image}: no report was written: {unsafe}"}
        try:
            report = json.loads(file.read_text())
        except (OSError, ValueError):
            return {"image": image, "status": "missing", "error": f"{image}: no report was written ({file})."}
        if os.path.realpath(str(report.get("image", ""))) != os.path.realpath(image):
            return {
                "image": image,
                "status": "missing",
                "error": f"{image}: {file} is the report of {report.get('image')} (same file name); rename one.",
            }
        return {**report, "_file": str(file)}

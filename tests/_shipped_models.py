"""Helpers of ``test_shipped_models.py``: the held-out radiographs, the shipped landmark detector run over them, the
accuracy bar it must clear, and a copy of its weights that must not clear it.

The bar is checked on radiographs the detector never saw: new simulations (seed :data:`SEED`, taken by no training or
evaluation data) of the atlas members ``bundle/configs/metadata.json`` holds out (``held_out_atlas_members``), all of
them in the 12-member subset that ships with the simulator, so a fresh clone and CI can make them. The fracture
AASN's test (``test_shipped_aasn.py``, helpers in ``_shipped_aasn.py``) scores the same radiographs (the
``held_out_items`` fixture of ``conftest.py``) and shuffles its weights with :func:`shuffled_copy`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))

from custom_transforms.annotation import LoadAnnotationd  # noqa: E402
from custom_transforms.loading import LoadPXRd  # noqa: E402
from shipped_models_data import IMAGE_SIZE, held_out_members  # noqa: E402
from simulation import generate_dataset  # noqa: E402
from simulation.atlas import SUBSET_DIR  # noqa: E402

from scripts.datalist import load_datalist  # noqa: E402
from scripts.demo import LANDMARK_DETECTOR_FILES  # noqa: E402
from scripts.landmarks.detector import NotAPelvisError, load_landmark_detector  # noqa: E402
from scripts.landmarks.metrics import landmark_summary, radial_errors_mm  # noqa: E402

#: The detector's three files in a models folder, as the demo names them (``scripts.demo``, after
#: ``configs/landmark_inference.json``'s ``network_path``, ``refine_network_path``, ``shape_model_path``).
DETECTOR_FILES = LANDMARK_DETECTOR_FILES
GLOBAL_WEIGHTS, REFINE_WEIGHTS, SHAPE_MODEL = DETECTOR_FILES

#: Simulation seed of the held-out test images: seeds 0 (demo), 15 and 16 (the shipped models' training and held-out
#: evaluation data, ``tools/shipped_models_data.py``) are taken, so these images are new to every figure reported.
SEED = 2027
#: Images simulated (about eight per held-out member): enough for a stable MRE, few enough for CI. Their size is the
#: shipped detector's training data's (``shipped_models_data.IMAGE_SIZE``, 640 px: its patch stage works at 640 px).
N_IMAGES = 40
#: The bar (issue 15): mean radial error over every landmark of every image, in mm.
MAX_MRE_MM = 3.0

#: Points the tests at another models folder (holding :data:`DETECTOR_FILES`, or the AASN's ``model.pt``) than
#: ``bundle/models``, e.g. freshly trained models before they are shipped:
#: ``AASN_SHIPPED_MODELS_DIR=/runs/shipped/models pytest tests/test_shipped_models.py tests/test_shipped_aasn.py``.
#: With it set, ``bundle/large_files.yml`` is not consulted.
MODELS_DIR_VARIABLE = "AASN_SHIPPED_MODELS_DIR"


def listed_models(large_files_yml: str | os.PathLike = BUNDLE / "large_files.yml") -> set[str]:
    """The files (names in ``models/``) that the bundle's ``large_files.yml`` ships."""
    entries = yaml.safe_load(Path(large_files_yml).read_text()).get("large_files") or []
    paths = [Path(entry["path"]) for entry in entries]
    return {path.name for path in paths if path.parent.as_posix() == "models"}


def listed_detector_files(large_files_yml: str | os.PathLike = BUNDLE / "large_files.yml") -> list[str]:
    """The detector's files (names in ``models/``) that the bundle's ``large_files.yml`` ships."""
    listed = listed_models(large_files_yml)
    return [name for name in DETECTOR_FILES if name in listed]


def shipped_detector_dir(environ=os.environ, bundle: str | os.PathLike = BUNDLE) -> Path | None:
    """The models folder of the detector to test: ``$AASN_SHIPPED_MODELS_DIR`` when set, else ``<bundle>/models``
    when ``<bundle>/large_files.yml`` ships the detector; None when it does not (nothing to test yet).

    Raises:
        ValueError: ``large_files.yml`` ships some of the detector's files but not all: the detector cannot run.
        FileNotFoundError: a file the bundle ships (or the folder given) lacks is missing: a release without its
            weights must fail, not skip.
    """
    override = environ.get(MODELS_DIR_VARIABLE)
    if override:
        models = Path(override)
    else:
        listed = listed_detector_files(Path(bundle) / "large_files.yml")
        if not listed:
            return None
        unlisted = [name for name in DETECTOR_FILES if name not in listed]
        if unlisted:
            raise ValueError(
                f"{bundle}/large_files.yml ships {listed} but not {unlisted}; the detector needs all three."
            )
        models = Path(bundle) / "models"
    missing = [name for name in DETECTOR_FILES if not (models / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{models}: the landmark detector's {missing} are missing.")
    return models


def planted_bundle(root: str | os.PathLike, listed: Sequence[str], present: Sequence[str]) -> Path:
    """A planted ``<root>/bundle`` for the skip-or-fail tests: its ``large_files.yml`` lists ``models/<name>`` for each
    of ``listed``, and ``models/`` holds a placeholder file for each of ``present``."""
    bundle = Path(root) / "bundle"
    (bundle / "models").mkdir(parents=True)
    entries = [{"path": f"models/{name}", "url": f"https://weights.invalid/{name}"} for name in listed]
    (bundle / "large_files.yml").write_text(yaml.safe_dump({"large_files": entries}))
    for name in present:
        (bundle / "models" / name).write_bytes(b"x")
    return bundle


def simulate_held_out(out_dir: str | os.PathLike, n: int = N_IMAGES, workers: int = 2) -> list[dict]:
    """Simulate ``n`` radiographs of the held-out atlas members only; return their datalist items (absolute paths).

    The packed subset is named explicitly: a developer's full atlas next to the repository would otherwise be taken
    and the images would differ from CI's.
    """
    subjects = [str(member) for member in held_out_members()]
    datalist = generate_dataset(
        out_dir,
        n,
        anatomy="atlas",
        atlas_dir=SUBSET_DIR,
        subjects=subjects,
        size=IMAGE_SIZE,
        seed=SEED,
        workers=workers,
        progress=False,
    )
    return load_datalist(datalist)


@dataclass
class HeldOutResult:
    """What the detector did on the held-out images.

    Attributes:
        errors_mm: ``(images, 16)`` radial error of every landmark, refused images included (their landmarks from
            :meth:`~scripts.landmarks.detector.LandmarkDetector.detect`, which never refuses).
        refused: the file names of the images the detector refused as implausible (``NotAPelvisError``).
        images: the file names, in the order of ``errors_mm``'s rows.
    """

    errors_mm: np.ndarray
    refused: list[str]
    images: list[str]


def run_detector(models_dir: str | os.PathLike, items: Sequence[dict]) -> HeldOutResult:
    """Run the detector that ``bundle/configs/landmark_inference.json`` defines, with its weights from
    ``models_dir``, over annotated ``items``; radial errors against the annotations.

    The detector is built as the bundle's other workflows build it (``load_landmark_detector`` with ``ckpt_dir``),
    so the test checks the shipped configuration, not a copy of it. Images are loaded as the detector's evaluation
    loads them: the annotation's spacing (the detector pixel, ``ImagerPixelSpacing``) converts pixels to mm.
    """
    detector = load_landmark_detector(BUNDLE, ckpt_dir=str(models_dir))
    load = [LoadPXRd("image"), LoadAnnotationd("annotation", image_key="image")]
    errors, refused, images = [], [], []
    for item in items:
        data = dict(item)
        for transform in load:
            data = transform(data)
        image = data["image"]
        name = Path(item["image"]).name
        try:
            detection = detector(image, source=name)
        except NotAPelvisError:
            refused.append(name)
            detection = detector.detect(image)
        errors.append(radial_errors_mm(detection.landmarks, data["landmarks"], image.meta["spacing_mm"]))
        images.append(name)
    return HeldOutResult(np.stack(errors), refused, images)


def detector_meets_bar(
    errors_mm, refused: Sequence[str], max_mre_mm: float = MAX_MRE_MM, images: Sequence[str] | None = None
) -> tuple[bool, str]:
    """Whether a detector's held-out result clears the bar: MRE at most ``max_mre_mm`` and no image refused.

    One function for the shipped detector's test and for the test that shows the bar can fail, so both judge by the
    same rule. A non-finite error fails too (``landmark_summary`` would leave it out of the MRE).

    Args:
        errors_mm: ``(images, 16)`` radial errors in mm.
        refused: the images the detector refused.
        max_mre_mm: the bar.
        images: the images' names, to name the worst one in the message (else its row).

    Returns:
        ``(passed, message)``; the message gives the MRE, SDR at 4 mm, the worst image and the refused images.
    """
    errors = np.asarray(errors_mm, dtype=np.float64)
    summary = landmark_summary(errors)["overall"]
    per_image = errors.mean(axis=1)
    problems = []
    if errors.size == 0:
        problems.append("no images")
    elif not np.isfinite(errors).all():
        problems.append(f"{int((~np.isfinite(errors)).sum())} non-finite errors of {errors.size}")
    elif not summary["mre_mm"] <= max_mre_mm:
        problems.append(f"MRE {summary['mre_mm']:.2f} mm > {max_mre_mm:.2f} mm")
    if refused:
        shown = ", ".join(refused[:5]) + (", ..." if len(refused) > 5 else "")
        problems.append(f"{len(refused)} of {len(errors)} images refused as implausible: {shown}")
    worst = "none"
    if np.isfinite(per_image).any():
        row = int(np.nanargmax(per_image))
        worst = f"{images[row] if images is not None else f'row {row}'} (MRE {per_image[row]:.2f} mm)"
    message = (
        f"held-out MRE {summary['mre_mm']:.2f} mm (bar {max_mre_mm:.2f} mm), SDR@4mm {summary['sdr_4mm']:.1f} %, "
        f"{len(refused)}/{len(errors)} refused; worst {worst}"
    )
    return not problems, message + ("; FAILS: " + "; ".join(problems) if problems else "")


def shuffled_copy(
    models_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    shuffled: Sequence[str] = (GLOBAL_WEIGHTS,),
    copied: Sequence[str] = (REFINE_WEIGHTS, SHAPE_MODEL),
) -> Path:
    """Copy model files from ``models_dir`` to ``out_dir``: those named in ``shuffled`` with every tensor of their
    state dict permuted in place (shapes, dtypes, strides and the file's layout unchanged), those in ``copied`` as
    they are.

    By default the detector's files: its global network shuffled, the patch network and the shape model as they are
    (the AASN's test shuffles its ``model.pt`` alone). The copy loads into the configured network like the original,
    so a model built from it fails only by what its weights compute: the model the accuracy test must reject.
    """
    source, out = Path(models_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in copied:
        shutil.copy2(source / name, out / name)
    generator = torch.Generator().manual_seed(seed)
    for name in shuffled:
        checkpoint = torch.load(source / name, map_location="cpu", weights_only=True)
        state = checkpoint.get("network", checkpoint)  # the layouts load_network_weights reads
        for tensor in state.values():
            flat = tensor.reshape(-1)  # a copy where the tensor is not contiguous (channels-last convolution weights)
            tensor.copy_(flat[torch.randperm(flat.numel(), generator=generator)].view(tensor.shape))
        torch.save(checkpoint, out / name)
    return out

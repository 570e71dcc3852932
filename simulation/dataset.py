"""Writing a simulated dataset: DICOM DX images, one annotation JSON per image, and ``datalist.json``.

Layout of a dataset folder (every path inside ``datalist.json`` and the annotation files is
relative to the dataset folder, so the folder can be moved or copied as a whole)::

    <out>/datalist.json
    <out>/images/<id>.dcm
    <out>/annotations/<id>.json      {"image": "images/<id>.dcm", "landmarks": {...}, "fractures": [...],
                                      "fracture_details": [{"site", "side", "kind", "displacement_mm",
                                      "gap_mm"}, ...], "spacing_mm": [row, col], "simulation": {...}}

Reproducibility: image ``i`` is rendered from ``numpy.random.default_rng([seed, i])`` and its
subject, fracture status and photometric interpretation are fixed by the seed before any rendering,
so the output does not depend on the number of worker processes. Subjects are spread over the images
in turn; folds (0-4) are assigned per subject (a subject is never in two folds).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from custom_transforms.conventions import LANDMARK_NAMES

from .anatomy import Anatomy, atlas_anatomy
from .atlas import AtlasError, default_atlas_dir, list_members, load_member, parent_members, unknown_subjects
from .dicom_writer import write_dx
from .procedural import procedural_anatomy, subject_ids
from .render import POSITIVE_FRACTION, render

logger = logging.getLogger(__name__)

NUM_FOLDS = 5
#: Share of images written as MONOCHROME1 (inverted storage), as some CR/DR consoles do.
MONOCHROME1_FRACTION = 0.3
DATALIST_NAME = "datalist.json"


@dataclass(frozen=True)
class _Job:
    index: int
    subject: str
    positive: bool
    monochrome1: bool


def _normalise_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or (H, W), got {size!r}") from None
    if h < 64 or w < 64:
        raise ValueError(f"size must be at least 64 x 64 pixels, got {(h, w)}")
    return h, w


def resolve_subjects(
    anatomy: str, atlas_dir: str | Path | None, subjects: Sequence[str] | None, n: int
) -> tuple[list[str], Path | None]:
    """The subject ids to use and the atlas directory (atlas anatomy only).

    Raises:
        AtlasError: atlas directory missing or unusable, or an unknown subject id.
        ValueError: unknown anatomy kind or bad procedural subject id.
    """
    if anatomy == "atlas":
        if atlas_dir is None:
            atlas_dir = default_atlas_dir()
            if atlas_dir is None:
                raise AtlasError(
                    "no atlas directory given, and neither ../shared/data/pelvis_atlas nor the packed subset "
                    "simulation/atlas_subset exists; pass atlas_dir"
                )
        atlas_dir = Path(atlas_dir)
        members = list_members(atlas_dir)
        if subjects:
            unknown = unknown_subjects(subjects, members)
            if unknown:
                raise AtlasError(f"{atlas_dir}: unknown subject id(s) {unknown}; available: {', '.join(members)}")
            return [str(s) for s in subjects], atlas_dir
        return members, atlas_dir
    if anatomy == "procedural":
        if subjects:
            for s in subjects:
                if not (str(s).startswith("P") and str(s)[1:].isdigit()):
                    raise ValueError(f"unknown procedural subject id '{s}'; expected 'P' + digits, e.g. 'P007'")
            return [str(s) for s in subjects], None
        # About three images per built-in subject, at least ten subjects (two per fold).
        return subject_ids(max(10, int(np.ceil(n / 3)))), None
    raise ValueError(f"anatomy must be 'atlas' or 'procedural', got {anatomy!r}")


def plan_jobs(n: int, subjects: Sequence[str], seed: int, positive_fraction: float = POSITIVE_FRACTION) -> list[_Job]:
    """Subjects, fracture status and storage of every image, fixed by the seed."""
    rng = np.random.default_rng([seed, 104729])
    order = list(rng.permutation(len(subjects)))
    n_pos = int(round(positive_fraction * n))
    positive = np.zeros(n, dtype=bool)
    positive[rng.permutation(n)[:n_pos]] = True
    mono1 = rng.uniform(size=n) < MONOCHROME1_FRACTION
    return [_Job(i, subjects[order[i % len(subjects)]], bool(positive[i]), bool(mono1[i])) for i in range(n)]


def assign_folds(subjects: Sequence[str], seed: int) -> dict[str, int]:
    """Subject -> fold 0-4: a seeded shuffle of the subjects dealt out in turn."""
    rng = np.random.default_rng([seed, 15485863])
    ordered = sorted(set(subjects), key=lambda s: (len(s), s))
    perm = rng.permutation(len(ordered))
    return {ordered[j]: k % NUM_FOLDS for k, j in enumerate(perm)}


def _anatomy(kind: str, subject: str, atlas_dir: str | None, seed: int) -> Anatomy:
    if kind == "atlas":
        return atlas_anatomy(atlas_dir, subject)
    return procedural_anatomy(subject, seed)


def write_example(
    out: Path,
    stem: str,
    result,
    subject: str,
    kind: str,
    uid_seed: tuple,
    monochrome1: bool,
    attribution: str | None,
    extra: dict,
) -> tuple[str, str]:
    """Write one rendered radiograph as ``images/<stem>.dcm`` + ``annotations/<stem>.json``; return both
    paths relative to ``out``."""
    image_rel = f"images/{stem}.dcm"
    ann_rel = f"annotations/{stem}.json"
    index = int(extra.get("index", 0))
    pose = result.info["pose"]
    write_dx(
        out / image_rel,
        result.pixels,
        result.spacing_mm,
        subject=subject,
        uid_seed=uid_seed,
        monochrome1=monochrome1,
        sdd_mm=pose["sdd_mm"],
        sod_mm=pose["sdd_mm"] - pose["oid_mm"],
        comments=f"Simulated AP pelvis, not a patient. {attribution or ''}".strip(),
        study_date=f"2020{1 + index % 12:02d}{1 + index % 28:02d}",
    )
    annotation = {
        "image": image_rel,
        "landmarks": {
            name: [round(float(x), 4), round(float(y), 4)] for name, (x, y) in zip(LANDMARK_NAMES, result.landmarks)
        },
        "fractures": [[round(float(x), 4), round(float(y), 4)] for x, y in result.fractures],
        # One entry per point of "fractures", in the same order: what the evaluation reports recall by.
        "fracture_details": [
            {key: f[key] for key in ("site", "side", "kind", "displacement_mm", "gap_mm")}
            for f in result.info.get("fractures", [])
        ],
        "spacing_mm": [float(result.spacing_mm[0]), float(result.spacing_mm[1])],
        "simulation": dict(result.info, monochrome1=monochrome1, **extra),
    }
    (out / ann_rel).parent.mkdir(parents=True, exist_ok=True)
    (out / ann_rel).write_text(json.dumps(annotation, indent=1))
    return image_rel, ann_rel


#: ROI sizes (h, w) whose geometry a simulated image must pass (the CPU recipe's and the paper's).
CHECKED_ROI_SIZES = ((192, 384), (256, 512))
#: Renders tried per image before its geometry is accepted as refused.
GEOMETRY_TRIES = 5


def geometry_refusal(landmarks: np.ndarray, spacing_mm) -> str | None:
    """Why the preprocessing would refuse these landmarks (a folding or ill-conditioned TPS warp, a degenerate
    axis or box), or None. The same transforms as the bundle's, on the landmarks alone (no image is resampled).

    The warp is the exact spline without the bundle's fallback (``TPSGrid(fallback=False)``): the bundle would
    smooth a folding warp, but simulated truth should not need that, and the datasets of a seed stay as they were
    before the fallback existed."""
    from custom_transforms.conventions import ROI_LANDMARK_INDICES
    from custom_transforms.errors import GeometryError
    from custom_transforms.geometry import transform_points
    from custom_transforms.roi import DEFAULT_MARGIN, roi_box_matrix
    from custom_transforms.symmetry import SymmetryAxis, mirror_landmarks
    from custom_transforms.tps import TPSGrid

    roi = list(ROI_LANDMARK_INDICES)
    try:
        mirror = SymmetryAxis()(landmarks, spacing_mm)["mirror_matrix"]
        mirrored = mirror_landmarks(landmarks, mirror)
        for size in CHECKED_ROI_SIZES:
            box = roi_box_matrix(landmarks[roi], size, DEFAULT_MARGIN, spacing_mm)
            box_f = roi_box_matrix(mirrored[roi], size, DEFAULT_MARGIN, spacing_mm)
            TPSGrid(fallback=False)(
                transform_points(np.linalg.inv(box), landmarks), transform_points(np.linalg.inv(box_f), mirrored), size
            )
    except GeometryError as error:
        return str(error)
    return None


def _render_usable(anatomy, seed: int, index: int, size, positive: bool, intact_twin: bool):
    """Render image ``index``; a pose whose true landmarks the preprocessing would refuse (a folding TPS in about one
    image of 600) is drawn again from the next generator (``[seed, index, try]``), so every written image is usable."""
    for attempt in range(GEOMETRY_TRIES):
        rng = np.random.default_rng([seed, index] if attempt == 0 else [seed, index, attempt])
        result = render(anatomy, rng, size, positive=positive, intact_twin=intact_twin)
        refusal = geometry_refusal(result.landmarks, result.spacing_mm)
        if refusal is None:
            break
        logger.info(f"image {index}: pose {attempt} refused by the preprocessing ({refusal}); drawing another")
    return result


def _render_jobs(
    kind: str, atlas_dir: str | None, jobs: list[_Job], out_dir: str, size, seed: int, intact_twins: bool = False
) -> list[dict]:
    """Render and write the images of one subject (runs in a worker process).

    With ``intact_twins``, each fractured image is followed by its twin without the breaks (``<stem>_intact``),
    as an item carrying ``intact_twin_of`` (the fractured image's path).
    """
    out = Path(out_dir)
    items = []
    for job in jobs:
        anatomy = _anatomy(kind, job.subject, atlas_dir, seed)
        result = _render_usable(anatomy, seed, job.index, size, job.positive, intact_twins)
        stem = f"img{job.index:05d}_{kind}_{job.subject}"
        subject = f"{kind}-{job.subject}"
        extra = {"seed": seed, "index": job.index}
        uid = (seed, kind, job.index)
        image_rel, ann_rel = write_example(
            out, stem, result, subject, kind, uid, job.monochrome1, anatomy.attribution, extra
        )
        label = int(len(result.fractures) > 0)
        item = {"image": image_rel, "annotation": ann_rel, "label": label, "subject": subject, "index": job.index}
        parents = parent_members(job.subject) if kind == "atlas" else None
        if parents is not None:  # the members it was made from: a fold trains on it only if they train
            item["parents"] = [f"{kind}-{member}" for member in parents]
        items.append(item)
        if result.intact_pixels is not None:
            twin = replace(
                result,
                pixels=result.intact_pixels,
                fractures=np.zeros((0, 2)),
                intact_pixels=None,
                info=dict(result.info, fractures=[]),
            )
            twin_image, twin_ann = write_example(
                out,
                f"{stem}_intact",
                twin,
                subject,
                kind,
                (*uid, "intact"),
                job.monochrome1,
                anatomy.attribution,
                dict(extra, intact_twin_of=image_rel),
            )
            items.append(
                {
                    "image": twin_image,
                    "annotation": twin_ann,
                    "label": 0,
                    "subject": subject,
                    "index": job.index,
                    "intact_twin_of": image_rel,
                    **({"parents": item["parents"]} if "parents" in item else {}),
                }
            )
    return items


def generate_dataset(
    out_dir: str | os.PathLike,
    n: int,
    anatomy: str = "procedural",
    seed: int = 0,
    atlas_dir: str | os.PathLike | None = None,
    size: int | Sequence[int] = (1024, 1024),
    workers: int = 1,
    subjects: Sequence[str] | None = None,
    positive_fraction: float = POSITIVE_FRACTION,
    progress: bool = True,
    intact_twins: bool = False,
) -> str:
    """Simulate ``n`` AP pelvic radiographs into ``out_dir``; return the path of ``datalist.json``.

    Args:
        out_dir: dataset folder (created; existing files of the same names are overwritten).
        n: number of images.
        anatomy: ``"procedural"`` (built in, no data needed) or ``"atlas"``.
        seed: the same seed gives byte-identical files.
        atlas_dir: atlas folder, full or packed (default ``../shared/data/pelvis_atlas`` next to the repository,
            else the packed subset ``simulation/atlas_subset``).
        size: detector size ``(H, W)`` in pixels (or one int for a square); the detector is 430 mm wide.
        workers: processes rendering in parallel (one subject per task).
        subjects: restrict to these subject ids (atlas member ids, or ``P###`` for procedural).
        positive_fraction: share of images with fractures (default 759/2359, as in the paper).
        progress: show a progress bar.
        intact_twins: also write every fractured image's twin without the breaks (same patient, pose, exposure
            and noise draw), listed under ``"intact_twins"`` in the datalist, never among its ``"training"``
            items: training data in which only the fracture differs (``scripts.datalist.intact_twins``).

    Raises:
        AtlasError: bad atlas directory, member files or subject id (the message names the file).
        ValueError: bad arguments.
    """
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of images, got {n}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    size = _normalise_size(size)
    subject_list, atlas_path = resolve_subjects(anatomy, atlas_dir, subjects, int(n))
    jobs = plan_jobs(int(n), subject_list, int(seed), positive_fraction)
    folds = assign_folds(subject_list, int(seed))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_subject: dict[str, list[_Job]] = defaultdict(list)
    for job in jobs:
        by_subject[job.subject].append(job)
    atlas_str = str(atlas_path) if atlas_path is not None else None
    if atlas_path is not None:
        # Fail early, naming the file, if a member used here is malformed.
        for s in by_subject:
            load_member(atlas_path, s)
    items: list[dict] = []
    bar = _progress(len(jobs), progress)
    if workers <= 1:
        for sjobs in by_subject.values():
            items += _render_jobs(anatomy, atlas_str, sjobs, str(out), size, int(seed), intact_twins)
            bar.update(len(sjobs))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn")) as pool:
            futures = {
                pool.submit(_render_jobs, anatomy, atlas_str, sjobs, str(out), size, int(seed), intact_twins): len(
                    sjobs
                )
                for sjobs in by_subject.values()
            }
            for fut in as_completed(futures):
                items += fut.result()
                bar.update(futures[fut])
    bar.close()
    items.sort(key=lambda it: (it.pop("index"), "intact_twin_of" in it))
    for it in items:
        it["fold"] = folds[it["subject"].split("-", 1)[1]]
    twins = [it for it in items if "intact_twin_of" in it]
    items = [it for it in items if "intact_twin_of" not in it]
    datalist = {
        "description": f"Simulated AP pelvic radiographs ({anatomy} anatomy), {len(items)} images, seed {seed}",
        "anatomy": anatomy,
        "seed": int(seed),
        "size": list(size),
        "num_positive": int(sum(it["label"] for it in items)),
        "paths": "relative to the folder of this file",
        "attribution": _attribution(anatomy),
        "training": items,
    }
    if intact_twins:
        datalist["intact_twins"] = twins
    path = out / DATALIST_NAME
    path.write_text(json.dumps(datalist, indent=1))
    return str(path)


def _attribution(anatomy: str) -> str | None:
    if anatomy == "atlas":
        from .atlas import ATLAS_ATTRIBUTION

        return ATLAS_ATTRIBUTION
    return None


class _NoBar:
    def update(self, k):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="simulating radiographs", unit="img")

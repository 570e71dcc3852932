"""Datalist reading, validation and the cross-validation split (paper §4: five folds, 70/10/20).

A datalist is a JSON list of items, or a JSON object holding that list under ``"data"``,
``"training"`` or ``"items"``; each item carries ``image``, ``annotation``, ``label`` (0/1),
``subject`` and ``fold`` (0-4). Relative paths are relative to the datalist's folder.

For fold ``k``: test = the items with ``fold == k``; of the rest, a deterministic subject-grouped
1/8 is validation (so 10 % of all data) and the remainder training (70 %). Subjects are taken in the
order of a hash of ``(k, subject)`` separately among subjects with and without a fractured image, so
that both kinds reach validation (its AUC stays defined) and no subject is in two sets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from custom_transforms.files import IMAGE_SUFFIXES, image_stem

from scripts.run_guard import StopRun

__all__ = [
    "DATALIST_KEYS",
    "MissingDataError",
    "load_datalist",
    "split_fold",
    "fold_split",
    "intact_twins",
    "blend_items",
    "training_items",
    "require_datalist",
    "require_input",
    "inference_items",
    "check_folds",
    "warn_label_contradictions",
]

logger = logging.getLogger(__name__)

DATALIST_KEYS = ("image", "annotation", "label", "subject", "fold")
_LIST_KEYS = ("data", "training", "items")
NUM_FOLDS = 5


def _items_of(path: Path, content: Any) -> list:
    if isinstance(content, list):
        return content
    if isinstance(content, dict):
        for key in _LIST_KEYS:
            if isinstance(content.get(key), list):
                return content[key]
    raise ValueError(f"{path}: expected a JSON list of items or an object with a list under one of {_LIST_KEYS}.")


def load_datalist(path: str | os.PathLike, require: Sequence[str] = DATALIST_KEYS) -> list[dict]:
    """Read and validate a datalist; relative ``image``/``annotation`` paths become absolute.

    Args:
        path: the datalist JSON.
        require: fields every item must have (inference lists may need only ``image``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist {path} does not exist.")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from e
    base = path.parent
    items = []
    for i, raw in enumerate(_items_of(path, content)):
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: item {i} is a {type(raw).__name__}, expected an object.")
        for key in require:
            if key not in raw:
                raise ValueError(f"{path}: item {i} has no field '{key}' (required: {list(require)}).")
        item = dict(raw)
        for key in ("image", "annotation"):
            if key in item and item[key] is not None:
                p = Path(item[key])
                item[key] = str(p if p.is_absolute() else (base / p).resolve())
        if "label" in item and item["label"] not in (0, 1, True, False):
            raise ValueError(f"{path}: item {i} field 'label' is {item['label']!r}, expected 0 or 1.")
        if "label" in item:
            item["label"] = int(item["label"])
        if "fold" in item:
            fold = item["fold"]
            if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < NUM_FOLDS:
                raise ValueError(f"{path}: item {i} field 'fold' is {fold!r}, expected an integer 0-{NUM_FOLDS - 1}.")
        if "subject" in item:
            item["subject"] = str(item["subject"])
        items.append(item)
    if not items:
        raise ValueError(f"{path}: the datalist has no items.")
    if "fold" in require and "subject" in require:  # a datalist to train or evaluate on
        check_folds(items, path)
        if "label" in require and "annotation" in require:
            warn_label_contradictions(items, path)
    return items


def check_folds(items: Sequence[dict], source: str | os.PathLike) -> None:
    """Refuse a datalist whose test fold would leak into training: a subject in two folds, or one image listed twice.

    Args:
        items: validated items (with ``image``, ``subject`` and ``fold``).
        source: the datalist, for the message.

    Raises:
        ValueError: naming the subject (or image), its folds and the items.
    """
    folds: dict[str, dict[int, list[int]]] = {}
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        folds.setdefault(item["subject"], {}).setdefault(item["fold"], []).append(i)
        image = os.path.normpath(str(item["image"]))
        if image in seen:
            raise ValueError(
                f"{source}: image {item['image']} is listed twice (items {seen[image]} and {i}); each image must be "
                "listed once, or one fold's test images would also train (or count twice)."
            )
        seen[image] = i
    for subject, by_fold in folds.items():
        if len(by_fold) > 1:
            where = "; ".join(f"fold {f}: items {', '.join(map(str, ix))}" for f, ix in sorted(by_fold.items()))
            raise ValueError(
                f"{source}: subject {subject!r} is in {len(by_fold)} folds ({where}); all images of a subject must "
                "share one fold, or the subject's anatomy would be both trained on and tested."
            )


_WARNED: set[tuple[str, int]] = set()


def warn_label_contradictions(items: Sequence[dict], source: str | os.PathLike) -> list[str]:
    """Warn (once per version of the datalist) about items whose ``label`` contradicts their annotation's fractures:
    ``label`` 0 with fracture points, or ``label`` 1 without any. Training goes on (the label drives the image score,
    the points the masks); the warnings name each item. Annotations that cannot be read are left to the
    preprocessing's own errors.

    Returns:
        the warnings (also when they were already logged).
    """
    messages = []
    for i, item in enumerate(items):
        annotation = item.get("annotation")
        if not annotation:
            continue
        try:
            fractures = json.loads(Path(annotation).read_text()).get("fractures") or []
        except (OSError, ValueError, AttributeError):
            continue
        if item.get("label") == 0 and len(fractures) > 0:
            messages.append(
                f"{source}: item {i} ({item['image']}) has label 0 but its annotation {annotation} has "
                f"{len(fractures)} fracture point(s)"
            )
        elif item.get("label") == 1 and len(fractures) == 0:
            messages.append(
                f"{source}: item {i} ({item['image']}) has label 1 but its annotation {annotation} has no "
                "fracture point"
            )
    try:
        key = (str(Path(source).resolve()), Path(source).stat().st_mtime_ns)
    except OSError:
        key = (str(source), 0)
    if key not in _WARNED:
        _WARNED.add(key)
        for message in messages:
            logger.warning(
                f"{message}; check which is right (training uses both: the label for the image score, "
                "the points for the masks)."
            )
    return messages


def _subject_rank(fold: int, subject: str) -> str:
    return hashlib.sha1(f"{fold}:{subject}".encode()).hexdigest()


def split_fold(items: Sequence[dict], fold: int, val_fraction: float = 1 / 8) -> dict[str, list[dict]]:
    """Split items into ``training``, ``validation`` and ``test`` for fold ``fold`` (see module docstring).

    Args:
        items: validated datalist items (with ``label``, ``subject``, ``fold``).
        fold: the test fold, 0-4.
        val_fraction: share of the non-test items (grouped by subject) used for validation.
    """
    if not 0 <= int(fold) < NUM_FOLDS:
        raise ValueError(f"fold must be 0-{NUM_FOLDS - 1}, got {fold}.")
    test = [it for it in items if it["fold"] == fold]
    rest = [it for it in items if it["fold"] != fold]
    by_subject: dict[str, list[dict]] = {}
    for it in rest:
        by_subject.setdefault(it["subject"], []).append(it)
    val_subjects: set[str] = set()
    for positive in (True, False):
        group = sorted(
            (s for s, its in by_subject.items() if any(it["label"] for it in its) == positive),
            key=lambda s: _subject_rank(fold, s),
        )
        target = val_fraction * sum(len(by_subject[s]) for s in group)
        count = 0
        for s in group:
            if count >= target or len(group) - len(val_subjects & set(group)) <= 1:
                break  # never take a group's last subject: training keeps both kinds too
            val_subjects.add(s)
            count += len(by_subject[s])
    validation = [it for it in rest if it["subject"] in val_subjects]
    training = [it for it in rest if it["subject"] not in val_subjects]
    return {"training": training, "validation": validation, "test": test}


def fold_split(datalist: str | os.PathLike, fold: int, section: str, val_fraction: float = 1 / 8) -> list[dict]:
    """One section (``training``, ``validation``, ``test`` or ``all``) of a datalist's split for ``fold``.

    Args:
        datalist: path of the datalist JSON.
        fold: the test fold, 0-4.
        section: which part to return.
        val_fraction: see :func:`split_fold`.
    """
    items = load_datalist(datalist)
    if section == "all":
        return items
    parts = split_fold(items, fold, val_fraction)
    if section not in parts:
        raise ValueError(f"section must be one of {sorted(parts) + ['all']}, got {section!r}.")
    if not parts[section]:
        raise ValueError(f"{datalist}: fold {fold} leaves the '{section}' set empty.")
    return parts[section]


def intact_twins(
    datalist: str | os.PathLike, fold: int, val_fraction: float = 1 / 8, training: list[dict] | None = None
) -> list[dict]:
    """The intact twins (simulated data: a fractured image rendered again without its breaks) of ``fold``'s
    training items, from the datalist's ``"intact_twins"`` list; ``[]`` when it has none.

    A twin shares its patient with the fractured image, so only twins of training subjects and of the fold's
    blends (:func:`blend_items`) are returned: the validation and test sets never see them, nor their anatomy.
    Each twin carries ``fractures_removed``, its sibling's fracture points (original pixels ``[x, y]``), for
    :class:`custom_transforms.siamese_crop.CropPointsd`.

    Args:
        datalist: path of the datalist JSON (a simulator's, ``python -m simulation generate --intact-twins``).
        fold: the test fold, 0-4.
        val_fraction: see :func:`split_fold`.
        training: the fold's training items and blends when the caller has them already (:func:`training_items`),
            so that the blends are read, and their warnings logged, once.
    """
    path = Path(datalist)
    content = json.loads(path.read_text())
    if not isinstance(content, dict) or not content.get("intact_twins"):
        return []
    if training is None:
        training = split_fold(load_datalist(path), fold, val_fraction)["training"]
        training = training + blend_items(path, fold, val_fraction)
    subjects = {it["subject"] for it in training}
    fractured = {it["image"] for it in training}
    base = path.parent
    twins = []
    for raw in content["intact_twins"]:
        item = dict(raw)
        for key in ("image", "annotation", "intact_twin_of"):
            p = Path(item[key])
            item[key] = str(p if p.is_absolute() else (base / p).resolve())
        if item["subject"] in subjects and item["intact_twin_of"] in fractured:
            twins.append(item)
    annotations = {it["image"]: it["annotation"] for it in training}
    for item in twins:
        # where the sibling's breaks are (original pixels): the twin's training windows go there
        sibling = json.loads(Path(annotations[item["intact_twin_of"]]).read_text())
        item["fractures_removed"] = sibling.get("fractures", [])
    return twins


#: The fields every item of a datalist's ``"blends"`` list must have (:func:`blend_items`).
BLEND_KEYS = ("image", "annotation", "label", "subject", "parents")


def blend_items(datalist: str | os.PathLike, fold: int, val_fraction: float = 1 / 8) -> list[dict]:
    """The items of the datalist's ``"blends"`` list whose ``parents`` are all training subjects of ``fold``.

    A blend (simulated data: a radiograph of a pelvis made from atlas members: two blended,
    ``simulation.atlas_blend``, or one warped, ``simulation.atlas_warp``) is extra training anatomy. It carries the
    subjects it was made from in ``parents``, and it trains a fold only when each of them trains that fold: a blend
    with a validation or test parent would show the network that subject's anatomy. Blends never enter validation
    or test, and they do not move the subject-grouped split. A blend with a parent that is no subject of the
    datalist at all is left out with a warning (it may be a typo; it cannot be told from held-out anatomy).

    Args:
        datalist: path of the datalist JSON.
        fold: the test fold, 0-4.
        val_fraction: see :func:`split_fold`.

    Raises:
        ValueError: a blend item is not an object or lacks a field of :data:`BLEND_KEYS` (the message names the
            file and the item).
    """
    path = Path(datalist)
    content = json.loads(path.read_text())
    if not isinstance(content, dict) or not content.get("blends"):
        return []
    items = load_datalist(path)
    known = {it["subject"] for it in items}
    subjects = {it["subject"] for it in split_fold(items, fold, val_fraction)["training"]}
    base = path.parent
    blends = []
    for i, raw in enumerate(content["blends"]):
        if not isinstance(raw, dict) or any(key not in raw for key in BLEND_KEYS):
            raise ValueError(f"{path}: blends[{i}] must be an object with the fields {list(BLEND_KEYS)}.")
        parents = raw["parents"]
        if not isinstance(parents, list) or not parents:
            raise ValueError(f"{path}: blends[{i}] field 'parents' is {parents!r}, expected a list of subject ids.")
        strangers = [str(parent) for parent in parents if str(parent) not in known]
        if strangers:
            logger.warning(
                "%s: blends[%d] field 'parents' names %s, not a subject of the datalist's training list; left out.",
                path,
                i,
                strangers,
            )
        if all(str(parent) in subjects for parent in parents):
            item = dict(raw, label=int(raw["label"]), subject=str(raw["subject"]))
            for key in ("image", "annotation"):
                p = Path(item[key])
                item[key] = str(p if p.is_absolute() else (base / p).resolve())
            blends.append(item)
    return blends


def training_items(datalist: str | os.PathLike, fold: int, val_fraction: float = 1 / 8) -> list[dict]:
    """``fold``'s training items, then its blends (:func:`blend_items`), then the intact twins of both
    (:func:`intact_twins`); each fractured image that has a twin and the twin share a ``pair_id`` (the fractured
    image's path), every other item has ``pair_id`` None.

    Args:
        datalist: path of the datalist JSON.
        fold: the test fold, 0-4.
        val_fraction: see :func:`split_fold`.
    """
    training = [dict(it) for it in fold_split(datalist, fold, "training", val_fraction)]
    training += blend_items(datalist, fold, val_fraction)
    twins = intact_twins(datalist, fold, val_fraction, training)
    paired = {t["intact_twin_of"] for t in twins}
    for item in training:
        item["pair_id"] = item["image"] if item["image"] in paired else None
    for twin in twins:
        twin["pair_id"] = twin["intact_twin_of"]
    return training + twins


#: How to get the built-in demo data, for the messages of :func:`require_datalist` and :func:`require_input`.
DEMO_DATA_HINT = (
    "for the built-in demo data run `make demo-data` in the repository (it simulates bundle/data/demo, the default "
    "dataset_dir) or `make demo`; for your own data pass --dataset_dir DIR (holding datalist.json) or --datalist FILE"
)


class MissingDataError(StopRun):
    """A workflow's data is not there. The run stops with this one-line message and exit status 1, without a
    traceback, as a command-line tool stops on a usage error: the message is all the user needs."""


def require_datalist(datalist: str | os.PathLike) -> str:
    """Return ``datalist`` if the file exists and is a valid datalist (:func:`load_datalist`: fields, labels, folds,
    no subject in two folds, no image twice); else stop the run with one line saying what is wrong.

    The training and evaluation configs call it first in their ``run`` (``landmark_train.json`` in its ``prepare``,
    the start of each run id): a missing or invalid datalist stops the run before anything is built, while MONAI's
    property checks, which build the datasets without running, still pass on a fresh clone (the datasets are then
    empty).

    Args:
        datalist: the datalist the configuration expects.

    Raises:
        MissingDataError: the file does not exist.
        StopRun: the datalist is invalid (the message names the file, the item or subject, and what was expected).
    """
    if not Path(datalist).is_file():
        raise MissingDataError(f"{datalist}: no datalist; {DEMO_DATA_HINT}.")
    try:
        load_datalist(datalist)
    except ValueError as error:
        raise StopRun(str(error)) from None
    return str(datalist)


def require_input(source: str | os.PathLike) -> str:
    """Return the inference ``source`` (a datalist, a folder or an image) if it exists; else stop the run with one
    line saying what is missing and how to get the demo data.

    Raises:
        MissingDataError: nothing exists at ``source``.
    """
    if not Path(source).exists():
        raise MissingDataError(
            f"{source}: no such inference input (--input: a datalist, a folder or an image); {DEMO_DATA_HINT}."
        )
    try:
        inference_items(source, require_landmarks=False)
    except (ValueError, FileNotFoundError) as error:
        raise StopRun(str(error)) from None
    return str(source)


def _is_image(path: Path) -> bool:
    if path.name.lower().endswith(IMAGE_SUFFIXES):
        return True
    if path.suffix == "" and path.is_file():
        from custom_transforms.loading import is_dicom_file

        return is_dicom_file(path)
    return False


def inference_items(
    source: str | os.PathLike,
    annotation_dir: str | os.PathLike | None = None,
    require_landmarks: bool = True,
) -> list[dict]:
    """The images to infer, each with its annotation (landmarks) when one exists.

    Args:
        source: a datalist JSON (items need ``image``; ``annotation`` optional), a folder of images
            (DICOM with or without extension, PNG/JPEG/TIFF, NIfTI), or one image file.
        annotation_dir: where ``<image name>.json`` annotations are looked for when an item names none
            (default: beside each image).
        require_landmarks: raise when an image has no annotation; otherwise such an item gets
            ``annotation = None`` and the landmark detector provides its landmarks.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".json":
        items = load_datalist(source, require=("image",))
    elif source.is_dir():
        images = sorted(p for p in source.iterdir() if p.is_file() and _is_image(p))
        if not images:
            raise FileNotFoundError(f"{source}: no image files (DICOM, PNG, JPEG, TIFF, NIfTI) in this folder.")
        # absolute, not resolved: a link keeps its own name (and its own folder for the annotation look-up)
        items = [{"image": os.path.abspath(p)} for p in images]
    elif source.is_file():
        items = [{"image": os.path.abspath(source)}]
    else:
        raise FileNotFoundError(f"inference input {source} does not exist.")
    for item in items:
        if item.get("annotation"):  # a missing one is that image's error (its report says so), not the run's
            continue
        image = Path(item["image"])
        candidate = Path(annotation_dir or image.parent) / f"{image_stem(image)}.json"
        if candidate.is_file():
            item["annotation"] = str(candidate)
        elif require_landmarks:
            raise FileNotFoundError(
                f"{image}: no landmarks. This use needs the 16 landmarks of the annotation format "
                f"(looked for {candidate}); give an annotation JSON per image (see README, 'Annotation format')."
            )
        else:
            item["annotation"] = None
    return items

"""Which images of a datalist the bundle's preprocessing refuses, and why: a check to run before training.

From ``bundle/``::

    python -m scripts.screen_datalist --datalist /data/pxr/datalist.json --roi_size 192 384 \\
        [--config_file configs/train.json ...] [--margin 0.1 0.1] [--output screening.json] \\
        [--usable usable_datalist.json] [--strict]

Every item goes through the training's cached preprocessing without augmentation: the bundle config's
``load_transforms`` and ``geometry_transforms`` (loading, the cache's image-size limit, symmetry axis, mirrored
ROIs, TPS warp, fracture masks, pseudo-colour, packing), built from ``configs/train.json`` (plus the given
``--config_file`` files merged over it, e.g. ``configs/scale_cpu.json``; ``--roi_size`` and ``--margin`` override
``roi_size`` and ``roi_margin``). An image is *refused* when that raises; its ``status`` and ``error`` are an
inference report's (:func:`~scripts.reporting.inference_failures.describe_failure`: ``unreadable``,
``invalid_annotation``, ``invalid_geometry``, ``failed``). Training skips such an image in every epoch
(:class:`~scripts.failure_tolerant_dataset.FailureTolerantCacheDataset`) and stops when more than
``max_failed_sample_share`` of an epoch's samples fail; screening first names them all at once. Images whose
TPS warp fell back to a smoother warp (``tps_warp`` other than ``"tps"``, see :mod:`custom_transforms.tps`) are
listed apart: they train.

Prints one line per refused image and a summary; ``--output`` writes ``{"datalist", "num_items", "refused":
[{"image", "status", "error"}], "warp_fallbacks": [{"image", "warp"}]}``; ``--usable`` writes the datalist
without the refused images (and without the intact twins of refused images, which share their landmarks), with
absolute paths. The exit status is 0 unless ``--strict`` is given and an image is refused (then 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monai.transforms import Compose

from scripts.datalist import load_datalist
from scripts.reporting.inference_failures import Failure, describe_failure

__all__ = ["ScreeningResult", "main", "screen_items", "screening_preprocessing", "usable_datalist"]

logger = logging.getLogger(__name__)

#: The bundle's training config, whose preprocessing ids the screening builds.
TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train.json"


@dataclass
class ScreeningResult:
    """What the preprocessing made of a list of items.

    Attributes:
        num_items: how many items were screened.
        refused: the images whose preprocessing raised, in the list's order.
        warp_fallbacks: ``{"image", "warp"}`` of the images whose TPS warp fell back (they are not refused).
    """

    num_items: int = 0
    refused: list[Failure] = field(default_factory=list)
    warp_fallbacks: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_items": self.num_items,
            "refused": [asdict(f) for f in self.refused],
            "warp_fallbacks": list(self.warp_fallbacks),
        }


def screening_preprocessing(
    config_files: Sequence[str | os.PathLike] = (),
    roi_size: Sequence[int] | None = None,
    margin: Sequence[float] | None = None,
) -> Compose:
    """The training's cached preprocessing (``load_transforms`` + ``geometry_transforms``) of the bundle config.

    Args:
        config_files: files merged over ``configs/train.json`` (e.g. ``configs/scale_cpu.json``).
        roi_size: overrides the config's ``roi_size`` (h, w).
        margin: overrides the config's ``roi_margin``.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(TRAIN_CONFIG), *(str(f) for f in config_files)])
    if roi_size is not None:
        parser["roi_size"] = [int(v) for v in roi_size]
    if margin is not None:
        parser["roi_margin"] = [float(v) for v in margin]
    parser.get_parsed_content("imports")  # the modules the expressions name
    return Compose(parser.get_parsed_content("load_transforms") + parser.get_parsed_content("geometry_transforms"))


def screen_items(
    items: Iterable[dict],
    preprocessing: Callable,
    image_key: str = "image",
    warp_key: str = "tps_warp",
    exact_warp: str = "tps",
) -> ScreeningResult:
    """Run ``preprocessing`` on each item and collect the refusals (any ``Exception``) and the warp fallbacks.

    Args:
        items: datalist items (absolute paths, as :func:`scripts.datalist.load_datalist` returns them).
        preprocessing: e.g. :func:`screening_preprocessing`'s.
        image_key: the item's image path.
        warp_key: the output key naming the TPS warp.
        exact_warp: the warp name that is no fallback.
    """
    result = ScreeningResult()
    for item in items:
        result.num_items += 1
        image = str(item.get(image_key, ""))
        try:
            out = preprocessing(dict(item))
        except Exception as error:  # what the training would skip: every error of the transforms
            result.refused.append(describe_failure(image, error))
            continue
        warp = out.get(warp_key) if isinstance(out, dict) else None
        if warp is not None and str(warp) != exact_warp:
            result.warp_fallbacks.append({"image": image, "warp": str(warp)})
    return result


def usable_datalist(datalist: str | os.PathLike, refused_images: Iterable[str]) -> dict[str, Any]:
    """The datalist's content without the refused images and the intact twins of refused images, every path
    absolute (the usable list may be written elsewhere).

    Args:
        datalist: the datalist JSON (a list, or an object with the list under ``data``/``training``/``items``;
            a simulator's ``intact_twins`` and ``blends`` lists are filtered too).
        refused_images: image paths as :func:`scripts.datalist.load_datalist` resolves them (absolute).
    """
    path = Path(datalist)
    content = json.loads(path.read_text())
    refused = {os.path.realpath(p) for p in refused_images}
    base = path.parent

    def absolute(item: dict) -> dict:
        item = dict(item)
        for key in ("image", "annotation", "intact_twin_of"):
            if item.get(key) is not None and not Path(item[key]).is_absolute():
                item[key] = str((base / item[key]).resolve())
        return item

    def kept(items: list) -> list:
        out = [absolute(i) for i in items]
        return [i for i in out if os.path.realpath(i["image"]) not in refused]

    if isinstance(content, list):
        return {"data": kept(content)}
    content = dict(content)
    for key in ("data", "training", "items"):
        if isinstance(content.get(key), list):
            content[key] = kept(content[key])
            break
    if isinstance(content.get("blends"), list):  # extra training anatomy (scripts.datalist.blend_items)
        content["blends"] = kept(content["blends"])
    if isinstance(content.get("intact_twins"), list):
        # a twin shares its sibling's landmarks: it stands or falls with it
        twins = [absolute(t) for t in content["intact_twins"]]
        content["intact_twins"] = [
            t
            for t in twins
            if os.path.realpath(t["image"]) not in refused
            and os.path.realpath(t.get("intact_twin_of", "")) not in refused
        ]
    return content


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datalist", required=True, help="the datalist JSON")
    parser.add_argument(
        "--config_file",
        nargs="*",
        default=[],
        help="bundle config files merged over configs/train.json (e.g. configs/scale_cpu.json)",
    )
    parser.add_argument("--roi_size", type=int, nargs=2, metavar=("H", "W"), help="ROI size (config's roi_size)")
    parser.add_argument("--margin", type=float, nargs=2, metavar=("ROWS", "COLS"), help="ROI margin (roi_margin)")
    parser.add_argument("--output", help="write the screening as JSON here")
    parser.add_argument("--usable", help="write the datalist without the refused images here")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when an image is refused")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    items = load_datalist(args.datalist)
    preprocessing = screening_preprocessing(args.config_file, args.roi_size, args.margin)
    result = screen_items(items, preprocessing)
    for failure in result.refused:
        print(f"refused {failure.image} ({failure.status}): {failure.error.splitlines()[0]}")
    print(
        f"{len(result.refused)} of {result.num_items} images refused by the preprocessing; "
        f"{len(result.warp_fallbacks)} trained with a smoother TPS warp"
    )
    if args.output:
        Path(args.output).write_text(
            json.dumps({"datalist": str(Path(args.datalist).resolve()), **result.as_dict()}, indent=1)
        )
    if args.usable:
        content = usable_datalist(args.datalist, [f.image for f in result.refused])
        Path(args.usable).write_text(json.dumps(content, indent=1))
    return 1 if args.strict and result.refused else 0


if __name__ == "__main__":
    sys.exit(main())

"""Train task: the bundle's ``train.json`` on the datastore's images and final labels.

A thin subclass of MONAI Label's ``BundleTrainTask``: MONAI Label runs the bundle's own training workflow
(``monai.bundle.run``, or ``torchrun`` with ``multi_gpu_train.json``); this class only

* turns the datastore's final labels into the bundle's datalist (``image``, ``annotation``, image-level ``label``
  = any fracture point, ``subject`` = image id, a stable ``fold``), written to ``<work_dir>/datalist.json``;
* splits it into training and validation by ``val_split``, per class so that both reach validation when they can
  (``val_split`` -1: the bundle's own subject-grouped validation share, ``scripts.datalist.split_fold``);
* points the run at its own checkpoint folder ``<bundle>/models/monailabel/`` (``last.pt`` every epoch,
  ``model.pt`` at each new best validation AUC), starts from the weights the app serves (``pretrained``) instead of
  resuming, validates every ``val_interval`` epochs, and reads the app's config override files.

When validation gave no best model (too few labels, or labels of one class only: the AUC is undefined) the last
epoch's weights are published as ``model.pt`` so that the infer tasks serve what was trained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import torch
from monai.bundle import ConfigParser
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleConstants, BundleTrainTask
from monailabel.utils.others.generic import device_list

from lib.bundle_configs import BundleConfigs
from lib.datastore_labels import annotation_from_label

logger = logging.getLogger(__name__)

NUM_FOLDS = 5


class _Constants(BundleConstants):
    def __init__(self, config_name: str) -> None:
        self.config_name = config_name

    def configs(self):
        return [self.config_name]


#: Suffixes of the datastore's image files; an image id may hold dots (a DICOMweb datastore's SeriesInstanceUID).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def image_id_of(path: str) -> str:
    """The datastore id of an image file: its name without the image suffix (``1.2.3.dcm`` -> ``1.2.3``)."""
    name = os.path.basename(path)
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def stable_fold(image_id: str) -> int:
    """A fold 0-4 that depends only on the image id (reproducible datalists)."""
    return int(hashlib.sha1(image_id.encode()).hexdigest(), 16) % NUM_FOLDS


class AASNTrain(BundleTrainTask):
    """Retrain the AASN fracture model from the datastore (see the module docstring).

    Args:
        configs: the bundle's configs.
        work_dir: where the datalist, converted annotations and training logs are written.
        config_name: the bundle's training config.
        description: shown by viewers.
    """

    def __init__(
        self,
        configs: BundleConfigs,
        work_dir: str,
        config_name: str = "train.json",
        description: str = "Train the AASN fracture model (bundle train.json) on the final labels",
    ) -> None:
        self.configs = configs
        self.config_name = config_name
        self.work_dir = work_dir
        self.ckpt_dir = configs.monailabel_models_dir
        self._request: dict[str, Any] = {}
        self._labelled = 0
        super().__init__(configs.bundle_dir, conf={}, const=_Constants(config_name), load_strict=True)
        self.description = description

    # --- configuration --------------------------------------------------------------------------------------

    def _load_bundle_config(self, path, config):
        parser = ConfigParser()
        parser.read_config(self.configs.files(self.config_name))
        parser.config.update({self.const.key_bundle_root(): path})  # type: ignore[union-attr]
        return parser

    def config(self):
        return {
            "device": device_list(),
            "pretrained": True,  # start from the weights the infer task serves
            "max_epochs": 20,
            "val_split": 0.2,  # -1: the bundle's own fold split of the written datalist
            "val_interval": 1,
            "multi_gpu": True,
            "gpus": "all",
        }

    def served_weights(self) -> str | None:
        """The weights the fracture infer task serves: the app's own, else the bundle's (as in ``FractureInfer``)."""
        for path in (os.path.join(self.ckpt_dir, "model.pt"), os.path.join(self.configs.models_dir, "model.pt")):
            if os.path.isfile(path):
                return path
        return None

    # --- data -----------------------------------------------------------------------------------------------

    def _fetch_datalist(self, request, datastore: Datastore):
        items = []
        for entry in datastore.datalist():
            image, label = entry["image"], entry["label"]
            image_id = image_id_of(image)
            try:
                annotation, content = annotation_from_label(label, image, self.work_dir)
            except (ValueError, OSError) as e:
                logger.warning(f"Skipping the final label of {image_id}: {e}")
                continue
            items.append(
                {
                    "image": image,
                    "annotation": annotation,
                    "label": int(len(content["fractures"]) > 0),
                    "subject": image_id,
                    "fold": stable_fold(image_id),
                }
            )
        if not items:
            raise ValueError(
                f"No usable final label in the datastore ({len(datastore.datalist())} labelled images): save landmark "
                "(and fracture) labels with PUT /datastore/label?tag=final first."
            )
        os.makedirs(self.work_dir, exist_ok=True)
        self.datalist_path = os.path.join(self.work_dir, "datalist.json")
        with open(self.datalist_path, "w") as f:
            json.dump({"data": items}, f, indent=1)
        self._labelled = len(items)
        logger.info(f"{len(items)} labelled images -> {self.datalist_path}")
        return items

    def _partition_datalist(self, datalist, request, shuffle=False):
        val_split = float(request.get("val_split", 0.2))
        if val_split < 0:  # the bundle's own subject-grouped validation share; no test fold is held out here
            from scripts.datalist import split_fold

            parts = split_fold(datalist, int(self.bundle_config.get_parsed_content("fold")))
            logger.info(
                f"Bundle split: training on {len(parts['training']) + len(parts['test'])}, validating on "
                f"{len(parts['validation'])}"
            )
            return parts["training"] + parts["test"], parts["validation"]
        train, val = [], []
        for cls in (1, 0):
            group = sorted(
                (d for d in datalist if d["label"] == cls),
                key=lambda d: hashlib.sha1(d["subject"].encode()).hexdigest(),
            )
            n_val = min(round(val_split * len(group)), len(group) - 1) if val_split > 0 else 0
            if val_split > 0 and n_val == 0 and len(group) >= 2:
                n_val = 1
            val += group[:n_val]
            train += group[n_val:]
        if not val and val_split > 0:
            logger.warning(f"Only {len(datalist)} labelled images: validating on the training images.")
            val = list(train)
        logger.info(f"Training on {len(train)} images, validating on {len(val)}")
        return train, val

    # --- the run --------------------------------------------------------------------------------------------

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers):
        """Replaced by the initial-weights handler of :meth:`_update_overrides` (the bundle's handlers are an
        expression, and retraining starts from the served weights, not from ``model_filename``)."""

    def _update_overrides(self, overrides):
        overrides.update(
            {
                "datalist": self.datalist_path,
                "ckpt_dir": self.ckpt_dir,
                "log_dir": os.path.join(self.work_dir, "train_logs"),
                "resume": False,
                "val_interval": int(self._request.get("val_interval", 1)),
                "show_progress": False,
            }
        )
        weights = self.served_weights() if self._request.get("pretrained", True) else None
        if weights:
            logger.info(f"Initialising from {weights}")
            overrides["monailabel_initial_weights"] = {
                "_target_": "CheckpointLoader",
                "load_path": weights,
                "load_dict": {"model": "@network"},
                "map_location": "cpu",
                "strict": True,
            }
            handlers = self.bundle_config.get(self.const.key_train_handlers(), [])
            if isinstance(handlers, str) and handlers.startswith("$"):
                overrides[self.const.key_train_handlers()] = f"$[@monailabel_initial_weights] + ({handlers[1:]})"
            else:
                overrides[self.const.key_train_handlers()] = ["@monailabel_initial_weights", *handlers]
        return overrides

    def run_single_gpu(self, request, overrides):
        import monai.bundle

        monai.bundle.run(
            run_id=request.get("run_id", "run"),
            meta_file=self.bundle_metadata_path,
            config_file=self.configs.files(self.config_name),
            **overrides,
        )

    def __call__(self, request, datastore: Datastore):
        self._request = dict(request)
        started = time.time()
        result = super().__call__(request, datastore)
        self._publish_last_if_no_best(started)
        return {**(result or {}), "labelled_images": self._labelled, "checkpoint_dir": self.ckpt_dir}

    def _publish_last_if_no_best(self, started: float) -> None:
        from scripts.checkpoint import atomic_torch_save

        best, last = os.path.join(self.ckpt_dir, "model.pt"), os.path.join(self.ckpt_dir, "last.pt")
        if os.path.isfile(best) and os.stat(best).st_mtime >= started:
            return
        if not (os.path.isfile(last) and os.stat(last).st_mtime >= started):
            raise RuntimeError(f"Training wrote no checkpoint to {self.ckpt_dir}; see the training log above.")
        state = torch.load(last, map_location="cpu", weights_only=True)["network"]
        atomic_torch_save(state, best)
        logger.warning(
            f"Validation gave no best model (too few labels or one class only: AUC undefined); published the last "
            f"epoch's weights as {best}."
        )

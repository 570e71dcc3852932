"""MONAI Label app serving the AASN pelvic-fracture bundle: landmark and fracture infer tasks and a trainer.

Start it on a folder of pelvic radiographs (see README.md)::

    .venv-monailabel/bin/monailabel start_server --app monailabel_app --studies /path/to/pxrs \
        --conf bundle bundle --host 127.0.0.1 --port 8000

App configuration (``--conf key value``; all optional):

* ``bundle``: the bundle directory (default: ``bundle/`` beside this app);
* ``config_overrides``: comma-separated JSON/YAML files merged over every bundle config the app reads (a variant, a
  smaller test configuration, ...);
* ``landmark_config_overrides``: the same for the landmark detector's configs only;
* ``fracture_threshold``: the fracture operating point (default: the bundle's ``threshold``);
* ``landmark_radius_mm``: radius of the landmark discs in the label image (default 3 mm);
* ``use_final_landmarks``: the fracture task uses the landmarks of the image's final label when there is one
  (default true; otherwise the bundle's detector finds them);
* ``work_dir``: where converted annotations, the training datalist and logs go (default
  ``<studies>/.aasn_monailabel``);
* ``max_upload_mb``: the largest request body and the largest image or label file the server accepts (default 64).

The infer tasks read their weights from the bundle's ``models/`` folder: the landmark detector the bundle ships
(``landmark_model.pt``, ``landmark_refine_model.pt``, ``landmark_shape_model.json``) and the fracture AASN
(``model.pt``, or the app's retrained ``models/monailabel/model.pt``). A task whose files are missing is unavailable:
the start-up log and ``/info/``'s ``unavailable_models`` give the one-line reason naming the files, and its infer
requests are answered 503 with it; the other task is served as usual.

What the server trusts and what it does not (image ids, uploads, the ``annotation`` parameter, the bind address):
``docs/security.md``. ``monailabel_app/start_server.sh`` starts it on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import numpy as np
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import name_to_device

from custom_transforms.errors import root_cause
from lib.bundle_configs import BundleConfigs
from lib.datastore_labels import annotation_from_label
from lib.infers.bundle_infer import TaskUnavailableError
from lib.infers.fracture import FractureInfer
from lib.infers.landmarks import LandmarkInfer
from lib.label_map import LABELS
from lib.request_guard import DEFAULT_MAX_UPLOAD_MB, install_request_guards, uploaded_file_expected
from lib.trainers.aasn import AASNTrain
from lib.upload_checks import RadiographLocalDatastore

logger = logging.getLogger(__name__)

#: Radiograph files the datastore lists (DICOM first: PACS exports; then the project's other readable formats).
IMAGE_EXTENSIONS = ("*.dcm", "*.DCM", "*.dicom", "*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.nii.gz", "*.nii")

LANDMARKS_TASK = "aasn_landmarks"
#: The fracture infer task, and its trainer: MONAI Label names a trainer after the model it trains.
FRACTURE_TASK = "aasn_fracture"


class AASNPelvisApp(MONAILabelApp):
    """Anterior pelvic fracture detection (AASN, ECCV 2020) with model-assisted landmark and fracture annotation."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        default_bundle = os.path.join(os.path.dirname(os.path.realpath(app_dir)), "bundle")
        self.bundle_dir = os.path.realpath(conf.get("bundle", default_bundle))
        self.bundle_configs = BundleConfigs(
            self.bundle_dir, _file_list(conf.get("config_overrides")), _file_list(conf.get("landmark_config_overrides"))
        )
        local = not studies.startswith(("http://", "https://"))
        default_work = os.path.join(studies, ".aasn_monailabel") if local else os.path.join(app_dir, "model", "work")
        self.work_dir = os.path.realpath(conf.get("work_dir", default_work))
        self.use_final_landmarks = conf.get("use_final_landmarks", "true").lower() in ("1", "true", "yes")
        self.max_upload_bytes = int(float(conf.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB)) * 1024 * 1024)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="AASN pelvic fracture",
            description="Model-assisted annotation of the 16 pelvic landmarks and anterior pelvic fracture sites on "
            "AP pelvic radiographs, and retraining of the AASN bundle from the final labels.",
            version=self.bundle_configs.version,
            labels=LABELS,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):  # a DICOMweb PACS: MONAI Label's datastore, for 2D
            from lib.dicomweb_datastore import dicomweb_datastore

            return dicomweb_datastore(self.studies, self.max_upload_bytes)
        return RadiographLocalDatastore(
            self.studies,
            self.max_upload_bytes,
            extensions=IMAGE_EXTENSIONS,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        threshold = self.conf.get("fracture_threshold")
        radius = float(self.conf.get("landmark_radius_mm", "3.0"))
        return {
            LANDMARKS_TASK: LandmarkInfer(self.bundle_configs, radius_mm=radius),
            FRACTURE_TASK: FractureInfer(self.bundle_configs, threshold=float(threshold) if threshold else None),
        }

    def unavailable_infers(self) -> dict[str, str]:
        """Infer task -> the one-line reason it cannot run (its missing files), for the tasks that cannot."""
        reasons = {name: task.unavailable_reason() for name, task in self._infers.items()}
        return {name: reason for name, reason in reasons.items() if reason}

    def info(self):
        """MONAI Label's ``/info/`` (which lists only the infer tasks that can run under ``models``), plus
        ``unavailable_models``: each other infer task with the reason, so a client sees why it is not offered."""
        meta = super().info()
        meta["unavailable_models"] = self.unavailable_infers()
        return meta

    def init_trainers(self) -> dict[str, TrainTask]:
        return {FRACTURE_TASK: AASNTrain(self.bundle_configs, self.work_dir)}

    def init_strategies(self) -> dict[str, Strategy]:
        """How a viewer's "next sample" picks an unlabelled radiograph."""
        return {"random": Random(), "first": First()}

    def on_init_complete(self):
        """When the server starts: the request guards on its routes (:mod:`lib.request_guard`), and a warning when it
        listens on every network interface."""
        super().on_init_complete()
        from monailabel.app import app as server

        install_request_guards(server, self.max_upload_bytes)
        unavailable = self.unavailable_infers()
        for name, task in self._infers.items():
            if name in unavailable:
                logger.warning(f"{name} is unavailable: {unavailable[name]}")
            else:
                logger.info(f"{name}: serving {task.get_path()} (bundle {self.bundle_dir})")
        host = bind_host(sys.argv)
        if host in ("0.0.0.0", "::", ""):
            logger.warning(
                f"The server listens on all network interfaces (--host {host or '0.0.0.0'}, MONAI Label's default): "
                "anyone who can reach this machine can read the images, replace labels and weights, and train. "
                "Bind 127.0.0.1 (monailabel_app/start_server.sh does) unless a network must reach it; see "
                "docs/security.md."
            )

    def infer_wsi(self, request, datastore=None):
        raise HTTPException(404, "This app serves 2D radiographs; it has no whole-slide (WSI) infer task.")

    def infer(self, request, datastore=None):
        """Run an infer task, turning bad requests into HTTP errors that say what is wrong.

        The image is an id of the datastore, or the file uploaded with the request; never a path on the server
        (404 for any other ``image``, whether or not such a file exists). 404: unknown task or image id; 422: the
        request names a file (``annotation``, ...), or the image cannot be used (unreadable, or not an AP pelvic
        radiograph); 503: the task's files are missing (the reason names them); 500: anything else, with its message.
        The server keeps serving after each.
        """
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(404, f"Unknown infer task {model!r}; this app serves {sorted(self._infers)}.")
        reason = self._infers[model].unavailable_reason()
        if reason:
            raise HTTPException(503, f"{model} is unavailable: {reason}")
        store = datastore if datastore else self.datastore()
        named = sorted(k for k in ("annotation", "image_path") if k in request)
        if named:
            raise HTTPException(
                422,
                f"The request may not set {named}: the server never reads a file a client names; "
                'send landmarks as {"landmarks": {name: [x, y]}}.',
            )
        image_id, path = self._resolve_image(request, store)
        image = image_id or os.path.basename(path)  # for the log: never the server path of an upload
        request = {**request, "image": path}
        try:
            if model == FRACTURE_TASK:
                request = self._with_landmarks(request, store, image_id, path)
            return super().infer(request, datastore)
        except HTTPException:
            raise
        except Exception as e:
            cause = root_cause(e)  # under MONAI's and MONAI Label's wrappers
            if isinstance(cause, TaskUnavailableError):  # a file went missing after the check above
                raise HTTPException(503, f"{model} is unavailable: {cause}") from e
            if isinstance(
                cause, ValueError
            ):  # the project's errors (PXRReadError, AnnotationError, NotAPelvisError, ...)
                logger.warning(f"Infer {model} on {image}: {cause}")
                raise HTTPException(422, f"{type(cause).__name__}: {cause}") from e
            if isinstance(e, MONAILabelException):
                raise HTTPException(500, f"{e.error.value}: {e.msg}") from e
            logger.exception(f"Infer {model} on {image} failed")
            raise HTTPException(500, f"{type(e).__name__}: {e}") from e

    def _resolve_image(self, request: dict, store: Datastore) -> tuple[str | None, str]:
        """(datastore id or None, file) of the request's image: the upload MONAI Label saved for this request, a
        session's image, or an id of the datastore; 404 for anything else (a path on the server included)."""
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise HTTPException(422, "The request needs an image id (?image=<id>) or an uploaded file.")
        if uploaded_file_expected():  # MONAI Label's temporary copy of this request's upload (params cannot set it)
            if os.path.isfile(image) and os.path.dirname(os.path.realpath(image)) == os.path.realpath(
                tempfile.gettempdir()
            ):
                return None, image
            raise HTTPException(422, "The uploaded file was not received.")
        session = request.get("session")
        sessions = self.sessions()
        if session and sessions is not None:  # MONAI Label looked the session id up and put its image here
            root = os.path.realpath(sessions.store_path)
            if os.path.commonpath([root, os.path.realpath(image)]) == root:
                return None, image
        try:
            path = store.get_image_uri(image)
        except ValueError as e:  # a PACS series the app cannot read as one radiograph
            raise HTTPException(422, str(e)) from e
        if not path or not os.path.isfile(path):
            raise HTTPException(404, f"Image {image!r} is not in the datastore ({self.studies}).")
        return image, path

    def _with_landmarks(self, request: dict, store: Datastore, image_id: str | None, path: str) -> dict:
        """Tell the fracture task where its landmarks come from: the request, the final label, or the detector."""
        request = dict(request)
        if request.get("landmarks") is not None:
            request["landmark_source"] = "request"
            return request
        label = store.get_label_uri(image_id, DefaultLabelTag.FINAL) if image_id else ""
        if label and self.use_final_landmarks:
            annotation, _ = annotation_from_label(label, path, self.work_dir)
            request["annotation"] = annotation
            request["landmark_source"] = "final label"
        else:  # the same detection the landmark task shows the annotator
            detected = self._infers[LANDMARKS_TASK].detect(path, name_to_device(request.get("device")))
            request["landmarks"] = np.asarray(detected["landmarks"], dtype=np.float64).tolist()
            request["landmark_source"] = "detector"
        return request


def _file_list(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def bind_host(argv: list[str]) -> str:
    """The address ``monailabel start_server`` binds, from its command line (MONAI Label's default: 0.0.0.0)."""
    host = "0.0.0.0"
    for i, arg in enumerate(argv):
        if arg in ("--host", "-i") and i + 1 < len(argv):
            host = argv[i + 1]
        elif arg.startswith("--host="):
            host = arg.split("=", 1)[1]
    return host

"""MONAI Deploy application: a DICOM study in, AASN pelvic fracture findings out as DICOM SR + SC + JSON.

Graph (Holoscan operators, each in ``operators/``)::

    CheckedDICOMDataLoaderOperator --dicom_study_list--> DICOMSeriesSelectorOperator (series_selection_rules.json)
        |                                                    |
        | skipped_files                                      v study_selected_series_list
        |                                           AASNInferenceOperator (the bundle's inference config)
        |                                     findings |          |            |
        |                           FractureSRWriterOperator  HeatmapSCWriterOperator
        |                                   sr_files |          | sc_files     |
        +------------------------------------> JSONSummaryWriterOperator <-----+

Run::

    python deploy/app.py -i <dicom folder> -o <output folder> -m <bundle folder or bundle/models/model.ts>

or with ``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` set instead of the
options (the options win when both are given). See ``deploy/README.md``.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from pathlib import Path

# Holoscan asks for a 32 MiB stack; raise the soft limit (within the hard one) before it is imported.
_STACK_BYTES = 32 * 1024 * 1024
_soft, _hard = resource.getrlimit(resource.RLIMIT_STACK)
if _soft != resource.RLIM_INFINITY and _soft < _STACK_BYTES:
    resource.setrlimit(
        resource.RLIMIT_STACK, (_STACK_BYTES if _hard == resource.RLIM_INFINITY else min(_STACK_BYTES, _hard), _hard)
    )

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from aasn_bundle import BundleInference, find_bundle_root  # noqa: E402
from holoscan.conditions import CountCondition  # noqa: E402
from monai.deploy.core import AppContext, Application  # noqa: E402
from monai.deploy.operators import DICOMSeriesSelectorOperator  # noqa: E402
from operators.aasn_inference_operator import AASNInferenceOperator  # noqa: E402
from operators.dicom_loader_operator import CheckedDICOMDataLoaderOperator  # noqa: E402
from operators.json_summary_operator import JSONSummaryWriterOperator  # noqa: E402
from operators.sc_writer_operator import HeatmapSCWriterOperator  # noqa: E402
from operators.sr_writer_operator import FractureSRWriterOperator  # noqa: E402

from custom_transforms.version import read_version  # noqa: E402

__all__ = ["AASNFractureApp", "SELECTION_RULES_FILE", "main"]

#: Series selection rules, in the SDK's DICOMSeriesSelectorOperator format.
SELECTION_RULES_FILE = APP_DIR / "series_selection_rules.json"

logger = logging.getLogger(__name__)


def _project_version() -> str:
    """The project's one version: the bundle's ``configs/metadata.json``, the repository's bundle beside ``deploy/``
    or, in a package, the bundle given as the model (``HOLOSCAN_MODEL_PATH``)."""
    repository_metadata = APP_DIR.parent / "bundle" / "configs" / "metadata.json"
    if repository_metadata.is_file():
        return read_version(repository_metadata)
    bundle_root, _ = find_bundle_root(os.environ.get("HOLOSCAN_MODEL_PATH", "/opt/holoscan/models"))
    return read_version(bundle_root / "configs" / "metadata.json")


class AASNFractureApp(Application):
    """Selects the AP pelvic radiographs of a DICOM study and reports the AASN fracture findings."""

    name = "aasn_pelvic_fracture"
    description = "AASN anterior pelvic fracture detection: DICOM CR/DX in, DICOM SR + Secondary Capture + JSON out"
    version = _project_version()

    def compose(self):
        app_context: AppContext = Application.init_app_context(self.argv)
        input_folder = Path(app_context.input_path)
        output_folder = Path(app_context.output_path)
        if not input_folder.is_dir():
            raise FileNotFoundError(f"Input folder {input_folder} does not exist (option -i or HOLOSCAN_INPUT_PATH).")
        workdir = Path(app_context.workdir) if app_context.workdir else None  # None: a temporary folder
        inference = BundleInference.from_model_path(app_context.model_path, workdir=workdir)
        logger.info(
            "Input %s, output %s, bundle %s (version %s), model %s",
            input_folder,
            output_folder,
            inference.bundle_root,
            inference.version,
            inference.model_description,
        )
        algorithm = {"name": inference.name, "version": inference.version}

        loader = CheckedDICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=input_folder, name="dicom_loader"
        )
        selector = DICOMSeriesSelectorOperator(
            self, rules=SELECTION_RULES_FILE.read_text(), all_matched=True, name="series_selector"
        )
        aasn = AASNInferenceOperator(self, inference=inference, name="aasn_inference")
        sr_writer = FractureSRWriterOperator(
            self, output_folder=output_folder, algorithm_version=inference.version, name="sr_writer"
        )
        sc_writer = HeatmapSCWriterOperator(self, output_folder=output_folder, name="sc_writer")
        summary = JSONSummaryWriterOperator(self, output_folder=output_folder, algorithm=algorithm, name="summary")

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, aasn, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(aasn, sr_writer, {("findings", "findings")})
        self.add_flow(aasn, sc_writer, {("findings", "findings")})
        self.add_flow(aasn, summary, {("findings", "findings")})
        self.add_flow(sr_writer, summary, {("sr_files", "sr_files")})
        self.add_flow(sc_writer, summary, {("sc_files", "sc_files")})
        self.add_flow(loader, summary, {("skipped_files", "skipped_files")})


def main() -> None:
    """Run the app on the command line arguments (``sys.argv``), see the module docstring."""
    AASNFractureApp().run()


if __name__ == "__main__":
    main()

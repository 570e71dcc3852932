"""End-to-end time of the MONAI Deploy app on one study: process start to exit, and the bundle part alone.

    .venv-deploy/bin/python deploy/benchmark.py --study <dicom folder> --model <bundle> [--repeats 3]

Prints the median (and all runs) of

* ``app``: ``python deploy/app.py -i <study> -o <tmp> -m <model>`` as a process (imports, Holoscan graph,
  DICOM loading and selection, the bundle's inference, SR + SC + JSON writing);
* ``bundle``: ``BundleInference.run`` in this process on the study's selected radiographs as the SDK loaded them
  (the bundle's inference config in memory: landmarks, preprocessing, network, back-projection, result, overlay),
  warm (after one run).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(APP_DIR))


def _selected_instances(study: Path) -> list:
    import json

    from holoscan.core import Fragment
    from monai.deploy.operators import DICOMSeriesSelectorOperator
    from operators.aasn_inference_operator import selected_instances
    from operators.dicom_loader_operator import CheckedDICOMDataLoaderOperator

    fragment = Fragment()
    studies = CheckedDICOMDataLoaderOperator(fragment, input_folder=study, name="loader").load_data_to_studies(study)
    rules = json.loads((APP_DIR / "series_selection_rules.json").read_text())
    selector = DICOMSeriesSelectorOperator(fragment, rules=json.dumps(rules), all_matched=True, name="selector")
    return selected_instances(selector.filter(rules, studies, all_matched=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, type=Path, help="folder of DICOM files")
    parser.add_argument("--model", required=True, type=Path, help="bundle folder or model.ts (as the app's -m)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    app_times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, str(APP_DIR / "app.py"), "-i", str(args.study), "-o", out, "-m", str(args.model)],
                capture_output=True, text=True,
            )  # fmt: skip
            app_times.append(time.perf_counter() - start)
            if result.returncode != 0:
                sys.exit(f"the app failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    from aasn_bundle import BundleInference

    instances = _selected_instances(args.study)
    inference = BundleInference.from_model_path(args.model)
    inference.run(instances)  # warm-up
    bundle_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = inference.run(instances)
        bundle_times.append(time.perf_counter() - start)
    failed = [path for path, r in results.items() if r.error]
    print(f"study {args.study}: {len(instances)} selected radiograph(s), failed: {failed or 'none'}")
    print(
        f"app (process, end to end): median {statistics.median(app_times):.2f} s  runs "
        f"{[round(t, 2) for t in app_times]}"
    )
    print(
        f"bundle inference (in process, warm): median {statistics.median(bundle_times):.2f} s  "
        f"runs {[round(t, 2) for t in bundle_times]}"
    )
    print(f"ratio app / bundle: {statistics.median(app_times) / statistics.median(bundle_times):.1f}")


if __name__ == "__main__":
    main()

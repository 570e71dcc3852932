"""The Deploy app in a PACS' flow: a study pulled from a real Orthanc, its findings (SR + SC) sent back and queried.

A study with a pelvic DX (no landmark sidecar: the PACS has only DICOM), a chest CR and an RT Structure Set, and a
second, unrelated study, are stored in Orthanc (``orthanc`` fixture, ``tests/orthanc_server.py``) by STOW-RS.
``deploy/pacs.py`` pulls the first study by WADO-RS, runs the app as a process on it and stores the SR and SC back by
STOW-RS. The test then asks Orthanc (QIDO-RS) what the study holds, retrieves the new instances (WADO-RS) and checks
that they belong to the analysed study, reference the analysed radiograph, and that the SR's probability is the one
in the bundle's ``report.json`` of that run. The C-STORE path (pynetdicom) is checked against a second Orthanc.

The bundle is the acceptance test's (``test_deploy_app.py``): a tiny AASN with seeded random weights, and the
landmark detector's network replaced by an oracle that knows the pelvic image (``install_oracle_detector``).

Runs with ``.venv-deploy`` (``bash deploy/setup.sh``) and Orthanc (``apt-get install orthanc orthanc-dicomweb``).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("monai.deploy", reason="needs the MONAI Deploy App SDK: bash deploy/setup.sh, then .venv-deploy")

from test_deploy_app import (  # noqa: E402
    IDENTITY_KEYWORDS,
    PROBABILITY,
    SPACING_MM,
    factory,
    install_oracle_detector,
    make_test_bundle,
    pelvic_case,
)

REPO = Path(__file__).resolve().parents[1]
PACS_WRAPPER = REPO / "deploy" / "pacs.py"
SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"
TIMEOUT_S = 600


def _env() -> dict:
    """The environment of the wrapper: no proxy, so that it reaches 127.0.0.1 directly."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run the wrapper in its own process group, and end the group (the wrapper and the app it started) whatever
    happens."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _tag(obj: dict, tag: str):
    return obj.get(tag, {}).get("Value", [None])[0]


@pytest.fixture(scope="module")
def analysed(orthanc, tmp_path_factory):
    """Orthanc with the studies; the wrapper run once on the pelvic study (STOW-RS back)."""
    root = tmp_path_factory.mktemp("deploy_pacs")
    bundle = make_test_bundle(root)
    pixels, landmarks = pelvic_case()
    study = factory.new_study_uid()
    pelvis = factory.radiograph_dataset(pixels, study, spacing_mm=(SPACING_MM, SPACING_MM))
    chest_pixels = np.random.default_rng(1).integers(500, 3500, (96, 80)).astype(np.uint16)  # excluded by its tags
    chest = factory.radiograph_dataset(
        chest_pixels, study, modality="CR", body_part="CHEST", view="PA", series_number=2
    )
    rt = factory.rt_structure_set_dataset(study)
    other = factory.radiograph_dataset(pixels, factory.new_study_uid(), spacing_mm=(SPACING_MM, SPACING_MM))
    files = {
        name: factory.save(ds, root / "pacs_upload" / f"{name}.dcm")
        for name, ds in (("pelvis", pelvis), ("chest", chest), ("rt", rt), ("other", other))
    }
    install_oracle_detector(bundle, [(files["pelvis"], landmarks)])
    orthanc.stow(list(files.values()))

    output, work = root / "out", root / "work"
    command = [
        sys.executable,
        str(PACS_WRAPPER),
        "--pacs",
        orthanc.dicomweb,
        "--study",
        study,
        "-m",
        str(bundle),
        "-o",
        str(output),
        "-w",
        str(work),
    ]
    result = _run(command, TIMEOUT_S)
    return {
        "result": result,
        "log": result.stdout + result.stderr,
        "study": study,
        "pelvis": pelvis,
        "other": other,
        "chest": chest,
        "rt": rt,
        "output": output,
        "work": work,
        "landmarks": landmarks,
        "pacs": orthanc,
    }


def _new_instances(orthanc, study: str, before: set[str]) -> dict[str, dict]:
    """QIDO-RS: the study's instances that were not uploaded by the test, by SOP Class UID."""
    found = {}
    for instance in orthanc.qido(f"/studies/{study}/instances"):
        if _tag(instance, "00080018") not in before:
            found.setdefault(_tag(instance, "00080016"), []).append(instance)
    return found


def test_the_findings_of_a_pacs_study_are_stored_in_the_same_study(analysed):
    result, log = analysed["result"], analysed["log"]
    assert result.returncode == 0, log[-6000:]
    orthanc, study, pelvis = analysed["pacs"], analysed["study"], analysed["pelvis"]
    uploaded = {str(analysed[k].SOPInstanceUID) for k in ("pelvis", "chest", "rt")}
    new = _new_instances(orthanc, study, uploaded)
    assert sorted(new) == sorted([SR_CLASS, SC_CLASS]) and all(len(v) == 1 for v in new.values()), new
    (sr_series,) = orthanc.qido(f"/studies/{study}/series", Modality="SR")
    assert _tag(sr_series, "0020000E") == _tag(new[SR_CLASS][0], "0020000E")
    # nothing went to the other study
    assert {_tag(i, "00080018") for i in orthanc.qido(f"/studies/{analysed['other'].StudyInstanceUID}/instances")} == {
        str(analysed["other"].SOPInstanceUID)
    }

    def retrieve(instance):
        path = f"/studies/{study}/series/{_tag(instance, '0020000E')}/instances/{_tag(instance, '00080018')}"
        (data,) = orthanc.wado(path)
        return pydicom.dcmread(io.BytesIO(data))

    sr, sc = retrieve(new[SR_CLASS][0]), retrieve(new[SC_CLASS][0])
    for ds in (sr, sc):
        for keyword in IDENTITY_KEYWORDS:  # Patient and Study modules of the analysed radiograph
            assert ds.get(keyword) == pelvis.get(keyword), keyword
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == study
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == pelvis.SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence] == [
        pelvis.SOPInstanceUID
    ]
    for point in factory.content_items(sr, "SCOORD"):  # every peak is a point on the analysed radiograph
        assert point.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pelvis.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == pelvis.SOPInstanceUID
    assert (sc.Rows, sc.Columns) == (pelvis.Rows, pelvis.Columns)

    (report_file,) = analysed["work"].rglob("report.json")  # the bundle's report of this run (-w keeps it)
    report = json.loads(report_file.read_text())
    assert report["landmark_source"] == "detector"  # no sidecar in a PACS: the (oracle) detector found them
    np.testing.assert_allclose(
        np.array([report["landmarks"][k] for k in report["landmarks"]]), analysed["landmarks"], atol=0.5
    )
    probability = float(factory.content_items(sr, "NUM", PROBABILITY)[0].MeasuredValueSequence[0].NumericValue)
    assert probability == pytest.approx(report["fracture_probability"], abs=1e-4)
    assert len(factory.content_items(sr, "SCOORD")) == len(report["peaks"])

    sent = json.loads((analysed["output"] / "pacs_sent.json").read_text())
    assert sent["method"] == "stow" and sent["pulled_instances"] == 3
    assert {s["sop_instance_uid"] for s in sent["sent"]} == {str(sr.SOPInstanceUID), str(sc.SOPInstanceUID)}


def test_the_findings_go_to_a_pacs_by_c_store(analysed, tmp_path):
    """The same SR and SC by DICOM C-STORE (pynetdicom) into a fresh Orthanc; refused from an unknown AE title."""
    from orthanc_server import CLIENT_AET, OrthancServer

    sys.path.insert(0, str(REPO / "deploy"))
    from pacs import PACSError, store_cstore

    assert analysed["result"].returncode == 0, analysed["log"][-3000:]
    findings = sorted(analysed["output"].glob("s[rc]_*.dcm"))
    assert len(findings) == 2
    with OrthancServer(tmp_path / "pacs2") as second:
        with pytest.raises(PACSError, match="C-STORE"):  # Orthanc stores only from the registered modality
            store_cstore(findings, "127.0.0.1", second.dicom_port, second.aet, "STRANGER")
        stored = store_cstore(findings, "127.0.0.1", second.dicom_port, second.aet, CLIENT_AET)
        assert sorted(stored) == sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in findings)
        found = {
            _tag(i, "00080018"): _tag(i, "00080016") for i in second.qido(f"/studies/{analysed['study']}/instances")
        }
        assert sorted(found.values()) == sorted([SR_CLASS, SC_CLASS]) and set(found) == set(stored)


def test_a_study_the_pacs_does_not_have_is_an_error_naming_it(orthanc, tmp_path):
    command = [
        sys.executable,
        str(PACS_WRAPPER),
        "--pacs",
        orthanc.dicomweb,
        "--study",
        "1.2.3.4.5.999",
        "-m",
        str(tmp_path),
        "-o",
        str(tmp_path / "out"),
    ]
    result = _run(command, 120)
    assert result.returncode == 1
    assert "WADO-RS" in result.stderr and "1.2.3.4.5.999" in result.stderr and "HTTP 404" in result.stderr

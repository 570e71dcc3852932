"""The test PACS itself (``tests/orthanc_server.py``): a real Orthanc with DICOMweb on 127.0.0.1 only, that takes a
study by STOW-RS and gives it back by QIDO-RS and WADO-RS, and is stopped afterwards, also when the code using it
fails. Skipped where Orthanc is not installed (``apt-get install orthanc orthanc-dicomweb``), failed under CI."""

from __future__ import annotations

import io
import os
import socket

import numpy as np
import pydicom
import pytest

import deploy_dicom_factory as factory
from orthanc_server import LOOPBACK, OrthancServer, OrthancUnavailable, listening_addresses


def _study(folder, rows=48, cols=40):
    study = factory.new_study_uid()
    pixels = (np.arange(rows * cols).reshape(rows, cols) % 4000).astype(np.uint16)
    dx = factory.radiograph_dataset(pixels, study)
    rt = factory.rt_structure_set_dataset(study)
    return study, dx, rt, [factory.save(dx, folder / "dx.dcm"), factory.save(rt, folder / "rt.dcm")]


def test_orthanc_listens_on_loopback_only_and_serves_dicomweb(orthanc, tmp_path):
    assert orthanc.system["Version"].startswith("1.") and orthanc.system["DicomAet"] == orthanc.aet
    assert orthanc.url == f"http://127.0.0.1:{orthanc.http_port}"
    for port in (orthanc.http_port, orthanc.dicom_port):
        assert listening_addresses(port) == {LOOPBACK}, port  # not 0.0.0.0: the bind shim works

    study, dx, rt, files = _study(tmp_path)
    stored = orthanc.stow(files)
    assert len(stored["00081199"]["Value"]) == 2  # Referenced SOP Sequence: both accepted
    (found,) = orthanc.qido("/studies", StudyInstanceUID=study)
    assert found["00100020"]["Value"] == [factory.IDENTITY["PatientID"]]
    series = orthanc.qido(f"/studies/{study}/series", Modality="DX")
    assert [s["0020000E"]["Value"][0] for s in series] == [dx.SeriesInstanceUID]
    (back,) = [pydicom.dcmread(io.BytesIO(b)) for b in orthanc.wado(f"/studies/{study}/series/{dx.SeriesInstanceUID}")]
    assert back.SOPInstanceUID == dx.SOPInstanceUID
    np.testing.assert_array_equal(back.pixel_array, dx.pixel_array)


def test_orthanc_is_stopped_when_the_code_using_it_fails(tmp_path):
    try:
        server = OrthancServer(tmp_path / "pacs")
    except OrthancUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    with pytest.raises(RuntimeError, match="a failing test"):
        with server:
            pid, port = server.process.pid, server.http_port
            assert server.running
            raise RuntimeError("a failing test")
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the process group is gone
    with socket.socket() as s:
        assert s.connect_ex((LOOPBACK, port)) != 0  # nothing listens any more


def test_a_missing_orthanc_is_reported_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("ORTHANC_BINARY", str(tmp_path / "no_orthanc"))
    with pytest.raises(OrthancUnavailable, match="apt-get install orthanc orthanc-dicomweb"):
        OrthancServer(tmp_path / "pacs")

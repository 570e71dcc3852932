"""MONAI Deploy app: DICOM SR / Secondary Capture / JSON writers and the checked DICOM loader.

Runs where the MONAI Deploy App SDK is installed (``bash deploy/setup.sh`` makes ``.venv-deploy``):
``.venv-deploy/bin/python -m pytest tests/test_deploy*.py``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("monai.deploy", reason="needs the MONAI Deploy App SDK: bash deploy/setup.sh, then .venv-deploy")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from operators.dicom_loader_operator import CheckedDICOMDataLoaderOperator, dicom_file_problem  # noqa: E402
from operators.finding import AASNFinding  # noqa: E402
from operators.json_summary_operator import build_summary  # noqa: E402
from operators.sc_writer_operator import build_heatmap_sc  # noqa: E402
from operators.sr_writer_operator import build_fracture_sr, to_dicom_scoord  # noqa: E402

import deploy_dicom_factory as factory  # noqa: E402

PROBABILITY = "122157"  # DCM Probability
PRESENT, ABSENT = "52101004", "272519000"  # SCT
FRACTURE = "125605004"  # SCT Fracture of bone


@pytest.fixture
def source(tmp_path) -> pydicom.Dataset:
    yy, xx = np.mgrid[:120, :160]
    pixels = (xx * 20 + yy * 5).astype(np.uint16)
    path = factory.save(factory.radiograph_dataset(pixels, factory.new_study_uid()), tmp_path / "dx.dcm")
    return pydicom.dcmread(path)


def report(probability: float, positive: bool, peaks=()) -> dict:
    return {
        "fracture_probability": probability,
        "threshold": 0.5,
        "positive": positive,
        "peaks": [{"x": x, "y": y, "probability": p} for x, y, p in peaks],
    }


def test_scoord_moves_the_origin_from_pixel_centre_to_pixel_corner():
    # the centre of the top-left pixel is [0, 0] in the project and (0.5, 0.5) in DICOM SCOORD
    np.testing.assert_allclose(to_dicom_scoord([[0.0, 0.0], [10.0, 20.25]]), [[0.5, 0.5], [10.5, 20.75]])


def test_sr_is_a_comprehensive_sr_in_the_source_study_with_probability_decision_and_peaks(source, tmp_path):
    sr = build_fracture_sr(source, report(0.8123456, True, [(30.0, 40.0, 0.81), (100.5, 60.25, 0.6)]))
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    ds = pydicom.dcmread(path)

    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR Storage
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "SR"
    for keyword in factory.IDENTITY_KEYWORDS:
        assert ds.get(keyword) == source.get(keyword), keyword
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID  # a new series
    assert ds.SOPInstanceUID not in (source.SOPInstanceUID, ds.SeriesInstanceUID)
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == source.SeriesInstanceUID
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPClassUID == source.SOPClassUID

    probabilities = [
        float(i.MeasuredValueSequence[0].NumericValue) for i in factory.content_items(ds, "NUM", PROBABILITY)
    ]
    assert probabilities[0] == pytest.approx(0.8123456, abs=1e-7)  # the image-level one comes first
    assert probabilities[1:] == pytest.approx([0.81, 0.6])
    decision = factory.content_items(ds, "CODE", FRACTURE)
    assert [d.ConceptCodeSequence[0].CodeValue for d in decision] == [PRESENT]

    points = factory.content_items(ds, "SCOORD")
    assert [p.GraphicType for p in points] == ["POINT", "POINT"]
    np.testing.assert_allclose([list(map(float, p.GraphicData)) for p in points], [[30.5, 40.5], [101.0, 60.75]])
    for point in points:
        assert point.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_sr_of_a_negative_image_says_absent_and_has_no_peak_groups(source):
    ds = build_fracture_sr(source, report(0.12, False))
    assert [d.ConceptCodeSequence[0].CodeValue for d in factory.content_items(ds, "CODE", FRACTURE)] == [ABSENT]
    assert factory.content_items(ds, "SCOORD") == []


def test_sr_rejects_an_incomplete_report(source):
    with pytest.raises(KeyError, match="positive"):
        build_fracture_sr(source, {"fracture_probability": 0.3, "threshold": 0.5, "peaks": []})


def test_secondary_capture_keeps_identity_grid_and_references_the_source(source, tmp_path):
    picture = np.random.default_rng(0).integers(0, 256, (source.Rows, source.Columns, 3), dtype=np.uint8)
    path = tmp_path / "sc.dcm"
    build_heatmap_sc(source, picture).save_as(path, enforce_file_format=True)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    for keyword in factory.IDENTITY_KEYWORDS:
        assert ds.get(keyword) == source.get(keyword), keyword
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.PhotometricInterpretation == "RGB" and ds.BurnedInAnnotation == "YES" and ds.ConversionType == "WSD"
    assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription and "NOT FOR DIAGNOSTIC USE" in ds.ImageComments
    assert list(ds.PatientOrientation) == list(source.PatientOrientation)
    assert ds.BodyPartExamined == source.BodyPartExamined == "PELVIS"
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    np.testing.assert_array_equal(ds.pixel_array, picture)


def test_secondary_capture_refuses_a_picture_of_another_size(source):
    with pytest.raises(ValueError, match=source.SOPInstanceUID):
        build_heatmap_sc(source, np.zeros((10, 10, 3), np.uint8))


def test_summary_status_tells_no_radiograph_from_success_and_failure(source):
    empty = build_summary([], [], [], [{"file": "x.dcm", "reason": "not a DICOM file"}])
    assert empty["status"] == "no_pelvic_radiograph" and empty["results"] == []
    assert empty["skipped_files"] == [{"file": "x.dcm", "reason": "not a DICOM file"}]
    json.dumps(empty)

    good = AASNFinding(source=source, source_file="dx.dcm", report=report(0.7, True, [(1.0, 2.0, 0.7)]))
    bad = AASNFinding(source=source, source_file="other.dcm", error="does not look like an AP pelvic radiograph")
    uid = str(source.SOPInstanceUID)
    summary = build_summary([good, bad], [{"sop_instance_uid": uid, "file": "sr.dcm"}], [], [])
    assert summary["status"] == "partial"
    first, second = summary["results"]
    assert first["status"] == "ok" and first["fracture_probability"] == 0.7 and first["positive"] is True
    assert first["outputs"] == {"sr": "sr.dcm", "secondary_capture": None}
    assert first["sop_instance_uid"] == uid and first["study_instance_uid"] == source.StudyInstanceUID
    assert second["status"] == "failed" and "AP pelvic" in second["error"]
    json.dumps(summary)


def test_loader_skips_corrupt_files_naming_them_and_loads_the_rest(tmp_path, caplog):
    study_uid = factory.new_study_uid()
    good = factory.save(
        factory.radiograph_dataset(np.zeros((32, 40), np.uint16), study_uid), tmp_path / "in" / "dx.dcm"
    )
    bad = factory.write_corrupt_files(tmp_path / "in" / "sub")
    assert dicom_file_problem(good) is None
    assert "not a DICOM file" in dicom_file_problem(bad[0])
    assert "truncated pixel data" in dicom_file_problem(bad[1])

    from holoscan.core import Fragment

    loader = CheckedDICOMDataLoaderOperator(Fragment(), input_folder=tmp_path / "in", name="loader")
    with caplog.at_level(logging.WARNING):
        studies = loader.load_data_to_studies(tmp_path / "in")
    assert [s.StudyInstanceUID for s in studies] == [study_uid]
    assert sorted(Path(s["file"]).name for s in loader.skipped_files) == ["not_dicom.dcm", "truncated.dcm"]
    for path in bad:
        assert any(str(path) in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)


def test_selection_rules_pick_the_ap_pelvis_and_nothing_else(tmp_path):
    from holoscan.core import Fragment
    from monai.deploy.operators import DICOMSeriesSelectorOperator

    study_uid = factory.new_study_uid()
    pixels = np.zeros((32, 40), np.uint16)
    series = {
        "pelvis_dx_ap": factory.radiograph_dataset(pixels, study_uid, series_number=1),
        "pelvis_cr_ap": factory.radiograph_dataset(pixels, study_uid, modality="CR", series_number=2),
        "chest_cr": factory.radiograph_dataset(
            pixels, study_uid, modality="CR", body_part="CHEST", view="PA", series_number=3
        ),
        "pelvis_lateral": factory.radiograph_dataset(pixels, study_uid, view="LL", series_number=4),
        "rtstruct": factory.rt_structure_set_dataset(study_uid),
    }
    for name, ds in series.items():
        factory.save(ds, tmp_path / f"{name}.dcm")
    fragment = Fragment()
    studies = CheckedDICOMDataLoaderOperator(fragment, input_folder=tmp_path, name="l").load_data_to_studies(tmp_path)
    rules = json.loads((Path(__file__).resolve().parents[1] / "deploy" / "series_selection_rules.json").read_text())
    selector = DICOMSeriesSelectorOperator(fragment, rules=json.dumps(rules), all_matched=True, name="s")
    selected = selector.filter(rules, studies, all_matched=True)
    chosen = {s.series.SeriesInstanceUID for study in selected for s in study.selected_series}
    assert chosen == {series["pelvis_dx_ap"].SeriesInstanceUID, series["pelvis_cr_ap"].SeriesInstanceUID}


def test_non_ascii_patient_names_keep_their_character_set(tmp_path):
    ds = factory.radiograph_dataset(np.zeros((20, 30), np.uint16), factory.new_study_uid())
    ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 192", "Müller^Jörg"
    source = pydicom.dcmread(factory.save(ds, tmp_path / "utf8.dcm"))
    sr = build_fracture_sr(source, report(0.3, False))
    sc = build_heatmap_sc(source, np.zeros((20, 30, 3), np.uint8))
    for name, obj in (("sr", sr), ("sc", sc)):
        obj.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        written = pydicom.dcmread(tmp_path / f"{name}.dcm")
        assert written.SpecificCharacterSet == "ISO_IR 192" and str(written.PatientName) == "Müller^Jörg"

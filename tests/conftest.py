"""Shared pytest fixtures (generic: synthetic radiographs written to a temporary directory)."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_factory import write_dx
from synthetic_pelvis import place_landmarks, radiograph_like, write_annotation


@pytest.fixture
def pxr_case(tmp_path):
    """Factory writing a synthetic DICOM radiograph + annotation JSON; returns a dict with paths and geometry.

    Arguments (all optional): ``shape`` (H, W), ``spacing`` (row, col) mm, ``angle_deg``, ``fractures`` (K, 2)
    pixels, ``landmarks`` (16, 2) pixels (default: the symmetric template), ``name``, and any ``write_dx`` keyword.
    """

    def make(
        shape=(320, 300), spacing=(1.0, 1.0), angle_deg=0.0, fractures=(), landmarks=None, name="case", **dicom_kwargs
    ):
        lm = (
            place_landmarks(shape, spacing, angle_deg) if landmarks is None else np.asarray(landmarks, dtype=np.float64)
        )
        image = tmp_path / f"{name}.dcm"
        write_dx(image, radiograph_like(shape, lm), spacing_mm=spacing, **dicom_kwargs)
        annotation = write_annotation(tmp_path / f"{name}.json", lm, fractures, image=image)
        return {
            "image": str(image),
            "annotation": annotation,
            "landmarks": lm,
            "fractures": np.asarray(fractures, dtype=np.float64).reshape(-1, 2),
            "spacing": spacing,
            "shape": shape,
        }

    return make


@pytest.fixture(scope="session")
def held_out_items(tmp_path_factory):
    """The held-out atlas members' new radiographs (``tests/_shipped_models.py``: 40 images, seed 2027), on which the
    shipped landmark detector and fracture AASN are tested; simulated once per session (the slow part)."""
    from _shipped_models import simulate_held_out

    return simulate_held_out(tmp_path_factory.mktemp("held_out_members"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny workloads on a shared machine: several OpenMP threads only wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A real Orthanc PACS with its DICOMweb plugin (``tests/orthanc_server.py``): 127.0.0.1, free HTTP and DICOM
    ports, a temporary storage folder, a generated configuration; stopped at the end of the module, also when a test
    fails. Skipped where Orthanc is not installed (``apt-get install orthanc orthanc-dicomweb``), failed under CI."""
    import os

    from orthanc_server import OrthancServer, OrthancUnavailable

    try:
        server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    except OrthancUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    with server:
        yield server

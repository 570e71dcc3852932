"""One NIfTI geometry for everything written on a radiograph's grid (``conventions.radiograph_nifti_affine``).

A peak planted at (row, col) of a heatmap written by the bundle must come back at (row, col) when read by
nibabel, by ITK (as 3D Slicer reads it, with the radiograph's spacing and ITK's placement of a DX), and after a
viewer re-saved it with an axis flipped; MONAI Label's label files use the same affine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))

from custom_transforms.conventions import radiograph_nifti_affine  # noqa: E402

from scripts.reporting.inference_writer import write_heatmap_nifti  # noqa: E402

SHAPE = (20, 50)  # (rows, cols): not square, so a transposition shows
SPACING = (0.5, 0.8)  # (row, col) mm: anisotropic, so swapped spacings show
PEAK = (7, 30)  # (row, col): off every symmetry axis, so a flip shows
#: the heatmap is stored as uint8 round(255 p) with scl_slope 1/255: read back within half a step (float32 slope)
QUANTUM = 0.5 / 255 + 1e-6


def planted() -> np.ndarray:
    heatmap = np.zeros(SHAPE, np.float32)
    heatmap[PEAK] = 1.0
    heatmap[PEAK[0], PEAK[1] + 1] = 0.5  # a second value: the x direction is visible too
    return heatmap


def test_affine_is_itks_placement_of_a_radiograph():
    np.testing.assert_allclose(radiograph_nifti_affine(SPACING), np.diag([-0.8, -0.5, 1.0, 1.0]))
    np.testing.assert_allclose(radiograph_nifti_affine(None), np.diag([-1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="positive"):
        radiograph_nifti_affine((0.0, 1.0))


def test_bundle_heatmap_read_by_nibabel_lands_on_the_planted_pixels(tmp_path):
    import nibabel as nib
    from nibabel import orientations

    path = write_heatmap_nifti(planted(), SPACING, tmp_path / "heatmap.nii.gz")
    image = nib.load(path)
    np.testing.assert_allclose(image.affine, radiograph_nifti_affine(SPACING))
    assert "".join(orientations.aff2axcodes(image.affine)) == "LPS"  # DICOM patient axes, as ITK has them
    data = np.asarray(image.dataobj)  # nibabel applies scl_slope / scl_inter
    assert data.shape == SHAPE[::-1]  # axis 0 = column (x), axis 1 = row (y)
    np.testing.assert_allclose(data.T, planted(), rtol=0, atol=QUANTUM)
    # the world position of the peak's voxel: -(col mm, row mm) in RAS = +(col mm, row mm) in LPS
    np.testing.assert_allclose(image.affine @ [PEAK[1], PEAK[0], 0, 1], [-PEAK[1] * 0.8, -PEAK[0] * 0.5, 0, 1])


def test_bundle_heatmap_read_by_itk_lands_on_the_planted_pixels(tmp_path):
    itk = pytest.importorskip("itk")

    path = write_heatmap_nifti(planted(), SPACING, tmp_path / "heatmap.nii.gz")
    image = itk.imread(str(path))
    array = itk.array_from_image(image)  # ITK's array is indexed [row, col]
    assert array.shape == SHAPE
    assert np.unravel_index(int(np.argmax(array)), array.shape) == PEAK
    np.testing.assert_allclose(array, planted(), rtol=0, atol=QUANTUM)  # ITK applies the scaling too
    np.testing.assert_allclose(np.asarray(image.GetSpacing()), [0.8, 0.5])  # (col, row) mm
    np.testing.assert_allclose(np.asarray(image.GetOrigin()), [0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(itk.array_from_matrix(image.GetDirection()), np.eye(2), atol=1e-9)


def read_on_radiograph_grid(path) -> np.ndarray:
    """A 2-D NIfTI as ``(rows, cols)`` of the radiograph, any axis flips of its affine undone (reoriented to the
    convention's orientation)."""
    import nibabel as nib
    from nibabel import orientations

    image = nib.load(str(path))
    wanted = orientations.io_orientation(radiograph_nifti_affine(None))[: len(image.shape)]
    current = orientations.io_orientation(image.affine)[: len(image.shape)]
    data = orientations.apply_orientation(np.asanyarray(image.dataobj), orientations.ornt_transform(current, wanted))
    return np.asarray(data).T


def test_heatmap_reoriented_after_a_viewer_flip_and_monailabel_labels_share_the_geometry(tmp_path):
    import nibabel as nib

    sys.path.insert(0, str(REPO / "monailabel_app"))
    from lib.label_writer import write_label

    path = write_heatmap_nifti(planted(), SPACING, tmp_path / "heatmap.nii.gz")
    np.testing.assert_allclose(read_on_radiograph_grid(path), planted(), rtol=0, atol=QUANTUM)
    # the same heatmap re-saved by a viewer with the x axis flipped (RAS +x, data reversed along x)
    image = nib.load(path)
    flipped_affine = image.affine.copy()
    flipped_affine[0, 0], flipped_affine[0, 3] = 0.8, -0.8 * (SHAPE[1] - 1)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[::-1].copy(), flipped_affine), tmp_path / "flipped.nii.gz")
    np.testing.assert_allclose(read_on_radiograph_grid(tmp_path / "flipped.nii.gz"), planted(), rtol=0, atol=QUANTUM)

    label = write_label((planted() > 0).astype(np.uint8), SPACING)
    try:
        np.testing.assert_allclose(nib.load(label).affine, radiograph_nifti_affine(SPACING))
    finally:
        Path(label).unlink()


def probabilities(shape=(300, 420), seed=0) -> np.ndarray:
    """Probabilities over a footprint (zero around it, as a back-projected ROI), with 0, 1 and half steps in it."""
    rng = np.random.default_rng(seed)
    heatmap = np.zeros(shape, np.float32)
    heatmap[40:260, 90:380] = rng.random((220, 290), dtype=np.float32)
    heatmap[50, 100:106] = [0.0, 1.0, 0.5 / 255, 1.5 / 255, 254.5 / 255, 0.5]
    return heatmap


@pytest.mark.parametrize("name", ["heatmap.nii.gz", "heatmap.nii"])
def test_heatmap_nifti_is_uint8_scaled_by_1_over_255_and_reads_back_the_probabilities(tmp_path, name):
    """Read with nibabel's get_fdata (which applies scl_slope and scl_inter), every voxel is within half a step of
    1/255 of the probability written: the file stores round(255 p) as uint8 with slope 1/255 and intercept 0."""
    import gzip

    import nibabel as nib

    from scripts.reporting.inference_writer import HEATMAP_SLOPE, quantize_heatmap

    heatmap = probabilities()
    path = write_heatmap_nifti(heatmap, SPACING, tmp_path / name)
    image = nib.load(path)
    assert image.get_data_dtype() == np.uint8
    assert image.dataobj.slope == pytest.approx(1 / 255, rel=1e-7) and image.dataobj.inter == 0.0
    assert HEATMAP_SLOPE == 1 / 255
    read = image.get_fdata().T
    assert read.shape == heatmap.shape
    np.testing.assert_allclose(read, heatmap, rtol=0, atol=QUANTUM)
    np.testing.assert_array_equal(np.asarray(image.dataobj.get_unscaled()).T, quantize_heatmap(heatmap))
    assert (read[heatmap == 0] == 0).all() and read.max() == pytest.approx(1.0, abs=1e-6)
    compressed = Path(path).read_bytes()[:2] == b"\x1f\x8b"
    assert compressed == name.endswith(".gz")
    if compressed:  # smaller than the raw voxels
        assert Path(path).stat().st_size < heatmap.size
        with gzip.open(path) as stream:
            assert len(stream.read()) == 352 + heatmap.size  # NIfTI-1 header + one byte per voxel


def test_heatmap_quantisation_rounds_and_clips():
    from scripts.reporting.inference_writer import quantize_heatmap

    values = np.array([[0.0, 0.49 / 255, 0.51 / 255, 0.5, 1.0, 1.2, -0.1, 254.6 / 255]], np.float32)
    np.testing.assert_array_equal(quantize_heatmap(values), [[0, 0, 1, 128, 255, 255, 0, 255]])


@pytest.mark.parametrize("name", ["heatmap.nii.gz", "heatmap.nii"])
def test_heatmap_nifti_holds_the_bytes_nibabel_writes(tmp_path, name):
    """The writer takes nibabel's header and writes the voxels in one block (one gzip call): the file's content is
    byte for byte what ``nibabel.save`` writes for the same uint8 voxels, affine, slope and units."""
    import gzip

    import nibabel as nib

    from scripts.reporting.inference_writer import HEATMAP_SLOPE, quantize_heatmap

    heatmap = probabilities()
    path = write_heatmap_nifti(heatmap, SPACING, tmp_path / name)
    reference = nib.Nifti1Image(quantize_heatmap(heatmap).T, radiograph_nifti_affine(SPACING))
    reference.header.set_slope_inter(HEATMAP_SLOPE, 0.0)
    reference.header.set_xyzt_units("mm")
    nib.save(reference, tmp_path / "nibabel.nii")
    content = Path(path).read_bytes()
    if name.endswith(".gz"):
        content = gzip.decompress(content)
    assert content == (tmp_path / "nibabel.nii").read_bytes()

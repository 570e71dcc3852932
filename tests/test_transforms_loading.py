"""LoadPXR: DICOM pixels (BitsStored, rescale, VOI, MONOCHROME1), spacing tags, compression, other formats, errors."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from custom_transforms import LoadPXR, LoadPXRd, PXRReadError
from custom_transforms.loading import _mask_bits_stored, window_to_unit
from dicom_factory import write_dx, write_non_image

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 4096, size=(24, 32)).astype(np.uint16)
PIXELS[0, 0], PIXELS[1, 1] = 0, 4095  # full 12-bit range


def load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadPXR(**kwargs)(path)


def test_output_format_and_minmax_normalisation(tmp_path):
    img = load(write_dx(tmp_path / "a.dcm", PIXELS))
    assert img.shape == (1, 24, 32) and img.dtype.is_floating_point
    np.testing.assert_allclose(img[0].numpy(), PIXELS / 4095.0, atol=1e-6)
    assert img.meta["filename_or_obj"].endswith("a.dcm")
    assert img.meta["spatial_shape"] == (24, 32)


def test_monochrome1_and_monochrome2_of_the_same_image_load_identically(tmp_path):
    m2 = load(write_dx(tmp_path / "m2.dcm", PIXELS, photometric="MONOCHROME2"))
    m1 = load(write_dx(tmp_path / "m1.dcm", 4095 - PIXELS, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1.numpy(), m2.numpy(), atol=1e-6)
    # the same stored values read as the two interpretations are each other's negatives
    m1_same = load(write_dx(tmp_path / "m1s.dcm", PIXELS, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1_same.numpy(), 1.0 - m2.numpy(), atol=1e-6)


def test_monochrome1_with_voi_window_matches_monochrome2(tmp_path):
    m2 = load(write_dx(tmp_path / "m2.dcm", PIXELS, window=(1500, 1000)))
    m1 = load(write_dx(tmp_path / "m1.dcm", 4095 - PIXELS, photometric="MONOCHROME1", window=(4095 - 1500 + 1, 1000)))
    np.testing.assert_allclose(m1.numpy(), m2.numpy(), atol=2e-3)  # one grey level of the 1000-wide window


def test_presentation_lut_shape(tmp_path):
    m2 = load(write_dx(tmp_path / "m2.dcm", PIXELS))
    inverse = load(write_dx(tmp_path / "inv.dcm", 4095 - PIXELS, extra={"PresentationLUTShape": "INVERSE"}))
    np.testing.assert_allclose(inverse.numpy(), m2.numpy(), atol=1e-6)
    # DX pairs MONOCHROME1 with INVERSE: one inversion, not two
    m1 = load(
        write_dx(
            tmp_path / "m1.dcm", 4095 - PIXELS, photometric="MONOCHROME1", extra={"PresentationLUTShape": "INVERSE"}
        )
    )
    np.testing.assert_allclose(m1.numpy(), m2.numpy(), atol=1e-6)


def test_modality_lut_sequence(tmp_path):
    item = Dataset()
    table = np.round(np.sqrt(np.arange(4096)) * 64).astype(np.uint16)  # a non-linear modality LUT
    item.add_new(0x00283002, "US", [4096 % 65536, 0, 16])  # LUTDescriptor
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", [int(v) for v in table])  # LUTData
    img = load(write_dx(tmp_path / "mlut.dcm", PIXELS, extra={"ModalityLUTSequence": DicomSequence([item])}))
    expected = table[PIXELS].astype(np.float64)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-5)


def test_voi_can_be_ignored(tmp_path):
    path = write_dx(tmp_path / "w.dcm", PIXELS, window=(1500, 1000))
    np.testing.assert_allclose(load(path, apply_voi=False)[0].numpy(), PIXELS / 4095.0, atol=1e-6)
    assert not np.allclose(load(path)[0].numpy(), PIXELS / 4095.0, atol=1e-2)


def test_linear_window_follows_the_standard():
    # PS3.3 C.11.2.1.2.1 with c = 100, w = 11: output 0 at x <= 94.5, 1 above 104.5, linear in between
    x = np.array([90, 94.5, 95, 99.5, 104, 104.5, 105, 200], dtype=np.float32)
    expected = np.clip((x - 99.5) / 10.0 + 0.5, 0, 1)
    np.testing.assert_allclose(window_to_unit(x.copy(), 100, 11), expected, atol=1e-6)
    np.testing.assert_allclose(window_to_unit(np.array([100.0], np.float32), 100, 10, "LINEAR_EXACT"), [0.5])
    np.testing.assert_allclose(
        window_to_unit(np.array([100.0, 1e4], np.float32), 100, 10, "SIGMOID"), [0.5, 1.0], atol=1e-6
    )


def test_rescale_then_window(tmp_path):
    # modality value = 2 * stored - 100; window centred at 3000 (modality units), width 2001
    img = load(write_dx(tmp_path / "r.dcm", PIXELS, rescale=(2.0, -100.0), window=(3000, 2001)))
    modality = 2.0 * PIXELS - 100.0
    expected = np.clip((modality - 2999.5) / 2000.0 + 0.5, 0, 1)
    np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-5)


def test_voi_lut_sequence(tmp_path):
    lut = (np.arange(4096) // 16).astype(np.uint16)  # 12-bit input -> 8-bit output in 16-bit entries
    img = load(write_dx(tmp_path / "lut.dcm", PIXELS, voi_lut=lut, voi_lut_bits=8))
    np.testing.assert_allclose(img[0].numpy(), (PIXELS // 16) / 255.0, atol=1e-6)


def test_bits_stored_masks_high_bits_and_sign_extends():
    ds = Dataset()
    ds.BitsStored, ds.PixelRepresentation = 12, 0
    dirty = PIXELS | np.uint16(0xF000)
    np.testing.assert_array_equal(_mask_bits_stored(dirty, ds), PIXELS)
    ds.PixelRepresentation = 1
    signed = np.array([0x0FFF, 0x0800, 0x07FF, 0xF001], dtype=np.uint16).view(np.int16)
    np.testing.assert_array_equal(_mask_bits_stored(signed, ds), [-1, -2048, 2047, 1])


def test_high_bits_outside_bits_stored_are_ignored(tmp_path):
    clean = load(write_dx(tmp_path / "c.dcm", PIXELS))
    dirty = load(write_dx(tmp_path / "d.dcm", PIXELS | np.uint16(0xF000)))
    np.testing.assert_allclose(dirty.numpy(), clean.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("tags", "priority", "expected", "source"),
    [
        ({"spacing_tag": "ImagerPixelSpacing", "spacing_mm": (0.15, 0.2)}, None, (0.15, 0.2), "ImagerPixelSpacing"),
        ({"spacing_tag": "PixelSpacing", "spacing_mm": (0.13, 0.14)}, None, (0.13, 0.14), "PixelSpacing"),
        (
            {"spacing_tag": "ImagerPixelSpacing", "spacing_mm": (0.15, 0.15), "pixel_spacing_mm": (0.12, 0.12)},
            None,
            (0.12, 0.12),
            "PixelSpacing",
        ),
        (
            {"spacing_tag": "ImagerPixelSpacing", "spacing_mm": (0.15, 0.15), "pixel_spacing_mm": (0.12, 0.12)},
            ("ImagerPixelSpacing", "PixelSpacing"),
            (0.15, 0.15),
            "ImagerPixelSpacing",
        ),
    ],
)
def test_spacing_tag_choice(tmp_path, tags, priority, expected, source):
    kwargs = {} if priority is None else {"spacing_priority": priority}
    img = load(write_dx(tmp_path / "s.dcm", PIXELS, **tags), **kwargs)
    assert img.meta.get("spacing_mm") == pytest.approx(expected)
    assert img.meta["spacing_source"] == source
    assert float(img.affine[0, 0]) == pytest.approx(expected[0]) and float(img.affine[1, 1]) == pytest.approx(
        expected[1]
    )


def test_missing_spacing_warns(tmp_path):
    path = write_dx(tmp_path / "n.dcm", PIXELS, spacing_tag=None)
    with pytest.warns(UserWarning, match="n.dcm.*neither PixelSpacing nor ImagerPixelSpacing"):
        img = LoadPXR()(path)
    assert img.meta.get("spacing_mm") is None and img.meta["spacing_source"] == "none"


def test_jpeg2000_dicom_loads_losslessly(tmp_path):
    pixels = np.tile(PIXELS, (3, 2))  # OpenJPEG's 6 wavelet levels need at least 64 pixels a side
    raw = load(write_dx(tmp_path / "raw.dcm", pixels))
    j2k_path = write_dx(tmp_path / "j2k.dcm", pixels, compression="jpeg2000")
    import pydicom

    assert pydicom.dcmread(j2k_path).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    np.testing.assert_array_equal(load(j2k_path).numpy(), raw.numpy())


def test_rle_dicom_loads(tmp_path):
    pytest.importorskip("pydicom.pixels", reason="RLE encoding in the factory needs pydicom >= 3")
    raw = load(write_dx(tmp_path / "raw.dcm", PIXELS))
    np.testing.assert_array_equal(load(write_dx(tmp_path / "rle.dcm", PIXELS, compression="rle")).numpy(), raw.numpy())


def test_pydicom_dataset_input(tmp_path):
    import pydicom

    path = write_dx(tmp_path / "a.dcm", PIXELS)
    np.testing.assert_array_equal(load(pydicom.dcmread(path)).numpy(), load(path).numpy())


def test_dictionary_wrapper(tmp_path):
    path = write_dx(tmp_path / "a.dcm", PIXELS)
    out = LoadPXRd(keys="image")({"image": path, "other": 1})
    assert out["image"].shape == (1, 24, 32) and out["other"] == 1


def test_png_tiff_orientation_and_range(tmp_path):
    grid = np.zeros((20, 30), dtype=np.uint16)
    grid[2, 5] = 4000  # row 2, column 5
    grid[19, 29] = 1000
    Image.fromarray((grid // 16).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(grid).save(tmp_path / "b.png")
    Image.fromarray(grid).save(tmp_path / "c.tif")
    for name in ("a.png", "b.png", "c.tif"):
        img = load(tmp_path / name)
        assert img.shape == (1, 20, 30), name
        assert img[0, 2, 5] == pytest.approx(1.0) and img[0, 0, 0] == 0.0, name
        assert img.meta.get("spacing_mm") is None and img.meta["spacing_source"] == "none"


def test_rgb_png_becomes_grey(tmp_path):
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[3, 4] = (200, 200, 200)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img = load(tmp_path / "rgb.png")
    assert img.shape == (1, 10, 12) and img[0, 3, 4] == pytest.approx(1.0)


def test_nifti_orientation_and_spacing(tmp_path):
    data = np.zeros((20, 30), dtype=np.float32)
    data[2, 5] = 7.0
    nii = nib.Nifti1Image(data, np.diag([0.3, 0.2, 1.0, 1.0]))
    nii.header.set_xyzt_units("mm")
    nib.save(nii, tmp_path / "a.nii.gz")
    img = load(tmp_path / "a.nii.gz")
    assert img.shape == (1, 20, 30) and img[0, 2, 5] == pytest.approx(1.0)
    assert img.meta.get("spacing_mm") == pytest.approx((0.3, 0.2)) and img.meta["spacing_source"] == "nifti_header"


def test_not_a_dicom_file_names_the_file(tmp_path):
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(b"this is not an image" * 20)
    with pytest.raises(PXRReadError, match="garbage.dcm"):
        load(bad)


def test_dicom_without_pixel_data_names_the_file(tmp_path):
    path = write_non_image(tmp_path / "plan.dcm")
    with pytest.raises(PXRReadError, match=r"plan\.dcm.*no Pixel Data"):
        load(path)


def test_truncated_pixel_data_names_the_file(tmp_path):
    path = tmp_path / "trunc.dcm"
    write_dx(path, PIXELS)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(PXRReadError, match="trunc.dcm"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(PXRReadError, match="nothere.dcm.*not found"):
        load(tmp_path / "nothere.dcm")


def test_multiframe_rejected(tmp_path):
    path = write_dx(tmp_path / "mf.dcm", np.concatenate([PIXELS, PIXELS]), extra={"NumberOfFrames": 2, "Rows": 24})
    with pytest.raises(PXRReadError, match="mf.dcm.*single-frame"):
        load(path)


def test_unsupported_photometric(tmp_path):
    path = write_dx(tmp_path / "p.dcm", PIXELS, photometric="PALETTE COLOR")
    with pytest.raises(PXRReadError, match="p.dcm.*PhotometricInterpretation"):
        load(path)

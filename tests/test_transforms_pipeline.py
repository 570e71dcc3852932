"""The default chain on a synthetic DICOM: keys, shapes, packing, inference without annotation, batching, configs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, list_data_collate
from monai.transforms import Compose, SelectItemsd

from custom_transforms import NETWORK_KEYS, AnnotationError, PackSiameseInputd, PseudoColor, aasn_preprocessing

ROI_SIZE = (32, 64)


def test_full_chain_produces_the_contract(pxr_case):
    case = pxr_case(angle_deg=4.0, fractures=[[110.0, 190.0]])
    d = aasn_preprocessing(roi_size=ROI_SIZE)({"image": case["image"], "annotation": case["annotation"]})
    assert d["image"].shape == (1, 320, 300) and d["image"].meta["spacing_source"] == "ImagerPixelSpacing"
    assert d["landmarks"].shape == (16, 2) and d["fractures"].shape == (1, 2)
    assert d["mirror_matrix"].shape == (3, 3)
    assert d["roi"].shape == (3, *ROI_SIZE) and d["roi_mirrored"].shape == (3, *ROI_SIZE)
    assert d["tps_grid"].shape == (2, *ROI_SIZE)
    assert d["siamese_input"].shape == (8, *ROI_SIZE) and d["siamese_input"].dtype == torch.float32
    torch.testing.assert_close(d["siamese_input"][:3].as_tensor(), d["roi"].as_tensor())
    torch.testing.assert_close(d["siamese_input"][3:6].as_tensor(), d["roi_mirrored"].as_tensor())
    torch.testing.assert_close(d["siamese_input"][6:].as_tensor(), d["tps_grid"])
    assert d["target"].shape == (2, *ROI_SIZE)
    torch.testing.assert_close(d["target"][0], d["fracture_mask"][0])
    assert d["target"][0].sum() > 0 and torch.all(d["target"][1] >= d["target"][0])


def test_inference_chain_with_data_landmarks_and_no_annotation(pxr_case):
    case = pxr_case()
    chain = aasn_preprocessing(roi_size=ROI_SIZE, with_masks=False)
    d = chain({"image": case["image"], "landmarks": case["landmarks"]})
    assert d["siamese_input"].shape == (8, *ROI_SIZE) and "target" not in d


def test_missing_spacing_image_loads_but_masks_need_spacing(pxr_case):
    case = pxr_case(spacing_tag=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = aasn_preprocessing(roi_size=ROI_SIZE, with_masks=False)(
            {"image": case["image"], "annotation": case["annotation"]}
        )
        assert d["roi_spacing_mm"] is None and d["siamese_input"].shape == (8, *ROI_SIZE)
        # an image of unknown spacing still collates (batch of one, as inference loaders do)
        batch = list_data_collate([{"image": d["image"], "siamese_input": d["siamese_input"]}])
        assert batch["image"].shape == (1, 1, 320, 300) and batch["image"].meta.get("spacing_mm") is None
        with pytest.raises(RuntimeError) as error:  # MONAI's Compose wraps the transform's own error
            aasn_preprocessing(roi_size=ROI_SIZE)({"image": case["image"], "annotation": case["annotation"]})
        assert isinstance(error.value.__cause__, AnnotationError)
        assert "case.dcm: pixel spacing unknown" in str(error.value.__cause__)


def test_batches_collate(pxr_case):
    cases = [pxr_case(name=f"c{i}", angle_deg=2.0 * i, fractures=[[120.0, 200.0]] if i else []) for i in range(3)]
    items = [{"image": c["image"], "annotation": c["annotation"], "label": int(i > 0)} for i, c in enumerate(cases)]
    transform = Compose(
        [*aasn_preprocessing(roi_size=ROI_SIZE).transforms, SelectItemsd(keys=(*NETWORK_KEYS, "label"))]
    )
    batch = next(iter(DataLoader(Dataset(items, transform), batch_size=3, num_workers=0)))
    assert batch["siamese_input"].shape == (3, 8, *ROI_SIZE) and batch["target"].shape == (3, 2, *ROI_SIZE)
    assert batch["target"][0].sum() == 0 and batch["target"][1, 0].sum() > 0


def test_chain_from_a_bundle_config():
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "preprocessing": {
                "_target_": "custom_transforms.aasn_preprocessing",
                "roi_size": [32, 64],
                "with_masks": False,
            }
        }
    )
    chain = parser.get_parsed_content("preprocessing")
    assert isinstance(chain, Compose) and len(chain.transforms) == 7


def test_pseudo_color_modes():
    roi = torch.rand(1, 16, 32)
    rep = PseudoColor("replicate")(roi)
    assert rep.shape == (3, 16, 32) and torch.equal(rep[0], rep[2]) and torch.equal(rep[0], roi[0])
    enh = PseudoColor("enhanced")(roi)
    assert enh.shape == (3, 16, 32) and torch.allclose(enh[0], roi[0]) and not torch.allclose(enh[1], roi[0])
    assert float(enh.min()) >= 0.0 and float(enh.max()) <= 1.0
    with pytest.raises(ValueError, match="mode"):
        PseudoColor("rainbow")


def test_highpass_pseudo_color_keeps_only_detail_in_its_bands():
    from custom_transforms.pseudocolor import HIGHPASS_GAINS

    # a smooth ramp (large-scale intensity) plus one dark vertical line 2 px wide (a break)
    ramp = torch.linspace(0.2, 0.8, 160)[None, :].repeat(48, 1)
    roi = ramp.clone()
    roi[:, 80:82] -= 0.05
    out = PseudoColor("highpass")(roi[None])
    assert out.shape == (3, 48, 160) and torch.equal(out[0], roi)
    flat = PseudoColor("highpass")(ramp[None])
    interior = (slice(None), slice(40, 120))  # 3 sigma away from the left and right borders' reflection
    # a linear ramp has no detail: its bands vanish inside (a Gaussian keeps a linear function)
    assert float(flat[1][interior].abs().max()) < 1e-4 and float(flat[2][interior].abs().max()) < 1e-4
    # the line: a dip of about gain x contrast in the fine band, centred on the line
    fine = out[1][24]
    assert int(torch.argmin(fine)) in (80, 81)
    # 2-px line minus its blur at sigma 3: 1 - 0.259 of the contrast (hand computation with scipy's kernel)
    assert float(fine.min()) == pytest.approx(-0.05 * HIGHPASS_GAINS[0] * 0.741, rel=0.02)


def test_pack_rejects_wrong_shapes():
    d = {"roi": torch.zeros(1, 16, 32), "roi_mirrored": torch.zeros(3, 16, 32), "tps_grid": torch.zeros(2, 16, 32)}
    with pytest.raises(ValueError, match="'roi' must have shape \\(3, 16, 32\\)"):
        PackSiameseInputd()(d)
    d["roi"] = torch.zeros(3, 16, 32)
    d["tps_grid"] = torch.zeros(2, 8, 16)
    with pytest.raises(ValueError, match="tps_grid"):
        PackSiameseInputd()(d)
    np.testing.assert_array_equal(
        PackSiameseInputd()({**d, "tps_grid": torch.ones(2, 16, 32)})["siamese_input"][6:].numpy(), 1.0
    )

"""Mirrored ROIs: box from the ROI landmarks, one composed resampling, exact maps back to the original image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from custom_transforms import (
    ROI_LANDMARK_INDICES,
    GeometryError,
    MirroredROI,
    MirroredROId,
    ROIToOriginal,
    ROIToOriginald,
    fit_symmetry_axis,
    original_points_to_roi,
    roi_points_to_original,
)
from custom_transforms.geometry import transform_points
from custom_transforms.resampling import sample_affine
from synthetic_pelvis import place_landmarks

ROI_SIZE = (64, 128)


def ramp_image(shape):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return torch.from_numpy(xx + 1000.0 * yy)[None]  # value encodes the position, linear


def crop(shape=(320, 300), spacing=(1.0, 1.0), angle=0.0, image=None, fractures=None, landmarks=None, **kwargs):
    lm = place_landmarks(shape, spacing, angle) if landmarks is None else landmarks
    fit = fit_symmetry_axis(lm, spacing, shape)
    img = ramp_image(shape) if image is None else image
    out = MirroredROI(ROI_SIZE, **kwargs)(img, lm, fit["mirror_matrix"], fractures, spacing)
    return out, lm, fit


def test_roi_box_contains_the_roi_landmarks_with_margin():
    out, lm, _ = crop(margin=0.1, keep_aspect=False)
    roi_lm = out["roi_landmarks"][list(ROI_LANDMARK_INDICES)]
    h, w = ROI_SIZE
    # with margin 0.1 and no aspect change the landmarks' extremes sit at 1/1.2 of the box, centred
    assert roi_lm[:, 0].min() == pytest.approx(-0.5 + w * 0.1 / 1.2, abs=1e-3)
    assert roi_lm[:, 0].max() == pytest.approx(w - 0.5 - w * 0.1 / 1.2, abs=1e-3)
    assert roi_lm[:, 1].min() == pytest.approx(-0.5 + h * 0.1 / 1.2, abs=1e-3)
    np.testing.assert_allclose(
        out["roi_landmarks"], transform_points(np.linalg.inv(out["roi_to_original"]), lm), atol=1e-4
    )


def test_keep_aspect_gives_square_mm_pixels_with_anisotropic_spacing():
    out, _, _ = crop(shape=(700, 400), spacing=(0.5, 0.8))
    dy, dx = out["roi_spacing_mm"]
    assert dy == pytest.approx(dx)
    dy_f, dx_f = out["roi_mirrored_spacing_mm"]
    assert dy_f == pytest.approx(dx_f)


def test_roi_pixels_are_the_original_pixels_at_the_mapped_positions():
    out, _, _ = crop(angle=8.0)
    h, w = ROI_SIZE
    v, u = np.mgrid[0:h, 0:w]
    for key, map_key in (("roi", "roi_to_original"), ("roi_mirrored", "roi_mirrored_to_original")):
        xy = transform_points(out[map_key], np.stack([u.ravel(), v.ravel()], axis=1))
        expected = (xy[:, 0] + 1000.0 * xy[:, 1]).reshape(h, w)
        inside = ((xy[:, 0] > 1) & (xy[:, 0] < 298) & (xy[:, 1] > 1) & (xy[:, 1] < 318)).reshape(h, w)
        np.testing.assert_allclose(out[key][0].numpy()[inside], expected[inside], rtol=1e-5, atol=0.05)


def test_mirrored_roi_is_the_roi_of_the_truly_reflected_image():
    # On a square image whose symmetry axis is the main diagonal the reflection is the transpose: the mirrored
    # ROI (sampled once from the original) must equal the plain ROI crop of the transposed image.
    n = 420
    lm = place_landmarks((n, n), (1.0, 1.0), angle_deg=45.0)  # axis = the main diagonal
    fit = fit_symmetry_axis(lm)
    np.testing.assert_allclose(np.abs(fit["direction"]), [np.sqrt(0.5)] * 2, atol=1e-9)
    img = torch.from_numpy(np.random.default_rng(0).random((1, n, n)).astype(np.float32))
    out = MirroredROI(ROI_SIZE)(img, lm, fit["mirror_matrix"])
    box_f = np.linalg.inv(fit["mirror_matrix"]) @ out["roi_mirrored_to_original"]
    expected = sample_affine(img.transpose(1, 2), box_f, ROI_SIZE)
    np.testing.assert_allclose(out["roi_mirrored"].numpy(), expected.numpy(), atol=1e-5)
    assert not np.allclose(out["roi_mirrored"].numpy(), out["roi"].numpy(), atol=1e-2)  # not just the same crop


def test_symmetric_configuration_mirrored_landmarks_equal_roi_landmarks():
    out, _, _ = crop(angle=12.0)
    np.testing.assert_allclose(out["roi_landmarks_mirrored"], out["roi_landmarks"], atol=1e-3)


def test_planted_dots_appear_where_the_fracture_coordinates_say():
    shape = (320, 300)
    lm = place_landmarks(shape, (1.0, 1.0), 6.0)
    fracture = lm[3] + [8.0, 4.0]  # near obturator_superior_r
    img = torch.zeros(1, *shape)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img[0] = torch.from_numpy(
        np.exp(-((xx - fracture[0]) ** 2 + (yy - fracture[1]) ** 2) / (2 * 3.0**2)).astype(np.float32)
    )
    out, _, _ = crop(shape, angle=6.0, image=img, fractures=[fracture], landmarks=lm)
    for key, pts_key in (("roi", "roi_fractures"), ("roi_mirrored", "roi_fractures_mirrored")):
        m = out[key][0].numpy()
        v, u = np.mgrid[0 : m.shape[0], 0 : m.shape[1]]
        centroid = np.array([(m * u).sum(), (m * v).sum()]) / m.sum()
        np.testing.assert_allclose(centroid, out[pts_key][0], atol=0.25)
    # in the mirrored ROI the right-side fracture shows on the viewer's right (the left side of the mirror image)
    assert out["roi_fractures_mirrored"][0, 0] > ROI_SIZE[1] / 2 > out["roi_fractures"][0, 0]


@pytest.mark.parametrize("map_size", [ROI_SIZE, (16, 32)])
def test_roi_to_original_to_roi_round_trip(map_size):
    out, _, _ = crop(shape=(320, 300), angle=9.0)
    mh, mw = map_size
    peak = np.array([0.3 * mw + 0.37, 0.6 * mh - 0.21])  # sub-pixel position in the map
    v, u = np.mgrid[0:mh, 0:mw]
    sigma = 2.0 * mw / ROI_SIZE[1]
    heat = torch.from_numpy(np.exp(-((u - peak[0]) ** 2 + (v - peak[1]) ** 2) / (2 * sigma**2)).astype(np.float32))[
        None
    ]
    back = ROIToOriginal()(heat, out["roi_to_original"], (320, 300), roi_size=ROI_SIZE)[0].numpy()
    assert back.shape == (320, 300)
    yy, xx = np.mgrid[0:320, 0:300]
    centroid = np.array([(back * xx).sum(), (back * yy).sum()]) / back.sum()
    expected = roi_points_to_original(peak[None], out["roi_to_original"], ROI_SIZE, map_size)[0]
    np.testing.assert_allclose(centroid, expected, atol=0.5)
    again = original_points_to_roi(centroid[None], out["roi_to_original"], ROI_SIZE, map_size)[0]
    np.testing.assert_allclose(again, peak, atol=0.5)
    # outside the ROI footprint the back-projection is exactly zero
    corners = roi_points_to_original([[-0.5, -0.5], [mw - 0.5, mh - 0.5]], out["roi_to_original"], ROI_SIZE, map_size)
    assert back[: int(corners[0, 1]) - 1].max() == 0.0 and back[:, int(np.ceil(corners[1, 0])) + 1 :].max() == 0.0


def test_roi_to_original_d_keeps_the_image_meta():
    image = MetaTensor(
        torch.zeros(1, 320, 300),
        affine=torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=torch.float64)),
        meta={"filename_or_obj": "x.dcm"},
    )
    out, _, _ = crop()
    d = ROIToOriginald()(
        {
            "pred": torch.ones(1, *ROI_SIZE),
            "image": image,
            "roi_to_original": out["roi_to_original"],
            "roi_size": ROI_SIZE,
        }
    )
    assert d["pred"].shape == (1, 320, 300) and d["pred"].meta["filename_or_obj"] == "x.dcm"
    assert float(d["pred"].affine[0, 0]) == 0.5
    x0, y0 = roi_points_to_original([[0, 0]], out["roi_to_original"])[0]
    assert d["pred"][0, int(np.ceil(y0)) + 1, int(np.ceil(x0)) + 1] == pytest.approx(1.0)


def test_dictionary_transform_outputs():
    shape = (320, 300)
    lm = place_landmarks(shape, (1.0, 1.0))
    image = MetaTensor(ramp_image(shape), meta={"filename_or_obj": "x.dcm", "spacing_mm": (1.0, 1.0)})
    fit = fit_symmetry_axis(lm)
    d = MirroredROId(image_key="image", roi_size=ROI_SIZE)(
        {"image": image, "landmarks": lm, "mirror_matrix": fit["mirror_matrix"], "fractures": np.zeros((0, 2))}
    )
    assert d["roi"].shape == (1, *ROI_SIZE) and d["roi_mirrored"].shape == (1, *ROI_SIZE)
    assert d["roi"].meta["filename_or_obj"] == "x.dcm" and d["roi_size"] == ROI_SIZE
    assert d["roi_fractures"].shape == (0, 2) and d["roi_landmarks_mirrored"].shape == (16, 2)
    with pytest.raises(GeometryError, match="mirror_matrix"):
        MirroredROId(roi_size=ROI_SIZE)({"image": image, "landmarks": lm})


def test_zero_area_roi_raises():
    lm = place_landmarks((320, 300), (1.0, 1.0))
    flat = lm.copy()
    flat[list(ROI_LANDMARK_INDICES), 1] = 200.0  # pubis and ischium landmarks all on one row
    with pytest.raises(GeometryError, match="zero-area"):
        MirroredROI(ROI_SIZE)(
            ramp_image((320, 300)), flat, np.diag([-1.0, 1.0, 1.0]) + [[0, 0, 299], [0, 0, 0], [0, 0, 0]]
        )

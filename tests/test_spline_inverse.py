"""The grid-free inverse of a spline-order ``Spacingd`` (``AxisAlignedSplineResample``): the residual U-Net and
cascade bundles resample with a third-order spline, and inverting their class scores to a thin-slice CT's grid is
where their inference peaked in memory. It must give MONAI's own inverse's answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Affine, Compose, Invertd, Orientationd, Spacingd
from scipy import ndimage

from monai_effseg.transforms import SafeSpacingd
from monai_effseg.transforms.ct import RAS_LABELS
from monai_effseg.transforms.spatial import AxisAlignedSplineResample
from monai_effseg.transforms.spline import cubic_resample


def _round_trip(spacing_cls, mode, affine: np.ndarray, shape=(37, 31, 23), classes: int = 3, diagonal: bool = False):
    torch.manual_seed(0)
    image = MetaTensor(torch.randn(1, *shape), affine=torch.as_tensor(affine))
    spacing = spacing_cls("image", pixdim=[1.1, 0.9, 2.0], mode=mode, dtype=np.float32, diagonal=diagonal)
    pre = Compose([Orientationd("image", axcodes="RAS", labels=RAS_LABELS), spacing])
    data = pre({"image": image})
    scores = torch.softmax(torch.randn(classes, *data["image"].shape[1:]) * 3, 0)
    data["pred"] = MetaTensor(scores, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
    return Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]


C, S = np.cos(0.3), np.sin(0.3)
AFFINES = {
    "ras": np.diag([0.8, 0.7, 3.0, 1.0]),
    "lps, shifted": np.array([[-0.8, 0, 0, 120.0], [0, -0.7, 0, 90.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]]),
    # Spacing keeps the rotation, so on the voxel grids the inverse still only scales each axis
    "rotated": np.array([[0.8 * C, -0.7 * S, 0, 0], [0.8 * S, 0.7 * C, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", list(AFFINES))
def test_spline_inverse_matches_monai_s_own(name):
    ours = _round_trip(SafeSpacingd, 3, AFFINES[name])
    stock = _round_trip(Spacingd, 3, AFFINES[name])
    assert ours.shape == stock.shape == (3, 37, 31, 23)
    assert ours.dtype == stock.dtype == torch.float32
    np.testing.assert_allclose(ours.affine.numpy(), stock.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.numpy(), stock.numpy(), atol=2e-5)
    assert not ours.applied_operations and not stock.applied_operations


def test_bilinear_and_grid_rotating_resampling_stay_monai_s():
    """Bilinear, and a spline resampling that rotates the voxel grid (``diagonal=True`` drops the scan's rotation),
    run MONAI's own code: the same answer to the bit."""
    np.testing.assert_array_equal(_round_trip(SafeSpacingd, "bilinear", AFFINES["ras"]).numpy(),
                                  _round_trip(Spacingd, "bilinear", AFFINES["ras"]).numpy())  # fmt: skip
    np.testing.assert_array_equal(_round_trip(SafeSpacingd, 3, AFFINES["rotated"], diagonal=True).numpy(),
                                  _round_trip(Spacingd, 3, AFFINES["rotated"], diagonal=True).numpy())  # fmt: skip


def test_safe_spacingd_inverts_spline_modes_without_a_sampling_grid(monkeypatch):
    transform = SafeSpacingd("image", pixdim=[1.0, 1.0, 2.0], mode=3, dtype=np.float32)
    assert isinstance(transform.spacing_transform.sp_resample, AxisAlignedSplineResample)
    calls = []
    grid_resample = Affine.__call__

    def counted(*args, **kwargs):
        calls.append(args)
        return grid_resample(*args, **kwargs)

    monkeypatch.setattr(Affine, "__call__", counted)
    _round_trip(Spacingd, 3, AFFINES["ras"])
    assert len(calls) == 2  # MONAI: the forward resampling and the inverse, each through a sampling grid
    calls.clear()
    _round_trip(SafeSpacingd, 3, AFFINES["ras"])
    assert len(calls) == 1  # the forward only


@pytest.mark.parametrize(
    "scales, offsets, shape",
    [
        ((1.0, 1.0, 0.27), (0.0, 0.0, -0.36), (20, 17, 33)),  # only the slices: a thin-slice CT's inverse
        ((0.8, 1.2, 0.5), (0.3, -0.2, -0.25), (25, 14, 18)),  # every axis, up and down
        ((-1.0, 0.9, 2.0), (19.0, 0.5, -1.0), (20, 18, 5)),  # a flipped axis; coordinates a voxel past the edge
    ],
)
def test_axis_by_axis_cubic_spline_is_scipy_s(scales, offsets, shape):
    values = np.random.default_rng(0).standard_normal((20, 17, 9)).astype(np.float32)
    expected = ndimage.affine_transform(values, np.array(scales), np.array(offsets), output_shape=shape, order=3,
                                        mode="nearest", output=np.float32)  # fmt: skip
    got = cubic_resample(values, scales, offsets, shape)
    assert got.shape == tuple(shape) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_axis_by_axis_cubic_spline_refuses_coordinates_beyond_its_padding():
    values = np.zeros((8, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="beyond the spline padding"):
        cubic_resample(values, (1.0, 1.0, 1.0), (0.0, 0.0, -20.0), (8, 8, 8))

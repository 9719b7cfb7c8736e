"""Spatial dictionary transforms that behave the same on monai 1.5 and 1.6 whatever else the data dict carries."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Optional

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Spacingd, SpatialResample
from monai.transforms.utils import resolves_modes
from monai.utils import TraceKeys, TransformBackends, convert_to_numpy
from monai.utils.type_conversion import get_equivalent_dtype, get_torch_dtype_from_string
from scipy import ndimage

from monai_effseg.transforms.spline import cubic_resample

__all__ = ["AxisAlignedSplineResample", "SafeSpacingd"]


class SafeSpacingd(Spacingd):
    """``monai.transforms.Spacingd`` that leaves entries named ``"<key>_*"`` alone unless they are meta dicts.

    For NIfTI inputs, monai 1.6's ``Spacingd`` copies the resampled meta data into *every* entry whose name starts
    with ``"<key>_"``, assuming each is a ``<key>_meta_dict``. MONAI Label's inference tasks put the input's path
    under ``"image_path"`` (a ``str``), so a plain ``Spacingd(keys="image")`` fails there with ``AttributeError:
    'str' object has no attribute 'update'`` (monai 1.5 had no such loop). This subclass sets the non-mapping
    ``"<key>_*"`` entries aside for the call and puts them back unchanged; everything else is ``Spacingd``'s own,
    except that a spline mode's inverse runs :class:`AxisAlignedSplineResample`'s grid-free path.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stock = self.spacing_transform.sp_resample
        self.spacing_transform.sp_resample = AxisAlignedSplineResample(
            mode=stock.mode, padding_mode=stock.padding_mode, align_corners=stock.align_corners, dtype=stock.dtype,
            lazy=stock.lazy,
        )  # fmt: skip

    def __call__(self, data: Mapping[Hashable, Any], lazy: Optional[bool] = None) -> dict[Hashable, Any]:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys if isinstance(key, str))
        aside = {
            k: v
            for k, v in d.items()
            if isinstance(k, str) and prefixes and k.startswith(prefixes) and not isinstance(v, Mapping)
        }
        for k in aside:
            del d[k]
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out


class AxisAlignedSplineResample(SpatialResample):
    """``SpatialResample`` whose inverse, for a spline order (an integer ``mode``) and a resampling that only scales,
    flips and shifts each axis of the voxel grid (what ``Spacing`` after ``Orientation`` records), resamples one
    channel at a time without MONAI's sampling grid: the third-order spline with ``"border"`` padding (the bundles')
    axis by axis (:func:`~monai_effseg.transforms.spline.cubic_resample`), other orders and paddings with
    ``scipy.ndimage.affine_transform`` and a diagonal matrix. Same spline, prefilter and boundary as MONAI's
    (coordinates in float64 instead of the grid's float32; ``tests/test_spline_inverse.py``).

    Missing upstream: for integer modes MONAI builds a homogeneous float32 grid of every output voxel, transforms and
    copies it, then evaluates 64 spline coefficients per voxel in ``map_coordinates``. Inverting a residual U-Net's
    three class scores to a 512 x 512 x 600 CT (``python benchmarks/bench_postprocess_memory.py --bundle
    kits_residual_unet``, 2026-12-07) peaked at 8.69 GB that way (114.7 s, the CPU shared), 3.40 GB this way (8.6 s).
    Anything else (bilinear, a resampling that rotates the voxel grid, the forward pass) is MONAI's own code.
    """

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        if not isinstance(data, MetaTensor) or data.has_pending_operations or data.device.type != "cpu":
            return super().inverse(data)  # MONAI's own (cupy on a GPU)
        transform = self.get_most_recent_transform(data)
        info = transform[TraceKeys.EXTRA_INFO]
        original = np.asarray(convert_to_numpy(info["src_affine"]), dtype=np.float64)
        current = np.asarray(convert_to_numpy(data.affine), dtype=np.float64)
        xform = np.linalg.solve(current, original)  # an index of the original grid -> where it lies on this one
        rank = xform.shape[0] - 1
        linear = xform[:rank, :rank]
        mode = info["mode"]
        if not isinstance(mode, int) or not np.allclose(linear, np.diag(np.diag(linear)), atol=1e-6):
            return super().inverse(data)
        self.pop_transform(data)
        _, order, boundary, _ = resolves_modes(mode, info["padding_mode"], backend=TransformBackends.NUMPY)
        shape = tuple(int(s) for s in transform[TraceKeys.ORIG_SIZE])
        dtype = get_equivalent_dtype(get_torch_dtype_from_string(info["dtype"]), np.ndarray)
        scales, offsets = np.diag(linear), xform[:rank, rank]
        out = np.empty((data.shape[0], *shape), dtype=dtype)
        for channel, values in zip(out, data.as_tensor()):
            values = values.numpy().astype(dtype, copy=False)
            if order == 3 and boundary == "nearest" and dtype == np.float32:  # the bundles' case: axis by axis
                try:
                    channel[...] = cubic_resample(values, scales, offsets, shape)
                    continue
                except ValueError:  # a coordinate beyond the spline's padding: scipy handles it
                    pass
            ndimage.affine_transform(values, scales, offsets, output_shape=shape, output=channel, order=order,
                                     mode=boundary)  # fmt: skip
        result = MetaTensor(torch.from_numpy(out), meta=data.meta, applied_operations=data.applied_operations)
        result.affine = torch.as_tensor(original, dtype=torch.float64)
        return result

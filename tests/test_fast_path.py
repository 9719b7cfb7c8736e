"""The coarse-to-fine CPU path (issue 28): kidney boxes from a low-resolution localizer, the full-resolution
network on the boxes only, the full pass when nothing is found; the bundles' localizer and fast-inference configs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import BUNDLES, configs, demo_value, read_json
from monai.data import MetaTensor
from torch import nn

from monai_effseg.inferers import CoarseToFineInferer, SlidingWindowMirrorInferer, kidney_boxes, load_localizer
from monai_effseg.nets import PlainUNet

FAST_BUNDLES = [b for b in BUNDLES if (b / "configs" / "inference_fast.json").is_file()]
LOCALIZER_KEYS = ("localizer_zoom", "localizer_features")


def test_kidney_boxes_keep_the_pair_grow_by_the_margin_and_merge():
    mask = np.zeros((40, 30, 20), bool)
    mask[5:10, 5:10, 5:10] = True  # right kidney (125 voxels)
    mask[25:31, 5:10, 5:10] = True  # left kidney (150 voxels)
    mask[20, 25, 15] = True  # a stray voxel: below 10% of the largest, dropped
    assert kidney_boxes(mask, [2, 2, 1]) == [((23, 33), (3, 12), (4, 11)), ((3, 12), (3, 12), (4, 11))]
    # a margin that makes the boxes overlap merges them; boxes are clipped to the volume
    assert kidney_boxes(mask, [9, 0, 6]) == [((0, 40), (5, 10), (0, 16))]
    assert kidney_boxes(np.zeros((4, 4, 4), bool), [1, 1, 1]) == []


class ThresholdLocalizer(nn.Module):
    """A stand-in localizer: 'kidney' where the (downsampled) image is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = self.scale * (x - 0.5)
        return torch.cat([torch.zeros_like(fg), fg], 1)


def _ct(shape=(96, 96, 32), spacing=(1.0, 1.0, 2.0)) -> MetaTensor:
    image = torch.zeros((1, *shape))
    image[0, 10:30, 40:60, 8:20] = 1.0
    image[0, 66:86, 40:60, 8:20] = 1.0
    return MetaTensor(image, affine=torch.diag(torch.tensor([*spacing, 1.0])))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return PlainUNet(3, 1, 2, features=[4, 8, 16], deep_supervision=False).eval()


def test_full_grid_gives_the_full_pass_inside_the_boxes_from_fewer_windows():
    image, net = _ct(shape=(160, 96, 32)), _net()
    image[0, 66:86] = 0.0  # one kidney: most windows of the full grid do not reach its box
    inferer = CoarseToFineInferer(
        ThresholdLocalizer(), margin_mm=4, roi_size=[32, 32, 16], overlap=0.5, sw_batch_size=2, max_grow=0
    )  # fmt: skip (growing: the next test)
    with torch.no_grad():
        out = inferer(image[None], net)
        full = SlidingWindowMirrorInferer([32, 32, 16], sw_batch_size=2, overlap=0.5)(image[None].as_tensor(), net)
    (box,) = inferer.last_boxes[0]
    inside = tuple(slice(lo, hi) for lo, hi in box)
    torch.testing.assert_close(out[0][(slice(None), *inside)], full[0][(slice(None), *inside)])
    covered = torch.zeros(160, 96, 32, dtype=torch.bool)
    covered[inside] = True
    assert torch.all(out[0, 0][~covered] == 20.0) and torch.all(out[0, 1][~covered] == 0.0)
    total = 9 * 5 * 3  # the full grid: (160 - 32) / 16 + 1 by (96 - 32) / 16 + 1 by (32 - 16) / 8 + 1
    assert 0 < inferer.last_windows[0] < total / 3
    # a volume smaller than the window is padded by the full pass: the boxes follow the padding
    small, net = _ct(shape=(96, 96, 12), spacing=(1.0, 1.0, 2.0)), _net()
    small[0, 66:86] = 0.0
    with torch.no_grad():
        out = inferer(small[None], net)
        full = SlidingWindowMirrorInferer([32, 32, 16], sw_batch_size=2, overlap=0.5)(small[None].as_tensor(), net)
    (box,) = inferer.last_boxes[0]
    inside = (slice(None), *(slice(lo, hi) for lo, hi in box))
    torch.testing.assert_close(out[0][inside], full[0][inside])


class ThresholdNet(nn.Module):
    """A stand-in network whose answer does not depend on the window: foreground where the image is above 0.25."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = 10.0 * (x - 0.25)
        return torch.cat([torch.zeros_like(fg), fg], 1)


def test_full_grid_grows_a_box_until_the_networks_kidney_fits():
    image = _ct(shape=(160, 96, 32))
    image[0, 66:86] = 0.0
    image[0, 30:70, 45:55, 10:18] = 0.4  # kidney the network sees beyond what the localizer (> 0.5) sees
    inferer = CoarseToFineInferer(ThresholdLocalizer(), margin_mm=4, roi_size=[32, 32, 16], overlap=0.5)
    with torch.no_grad():
        out = inferer(image[None], ThresholdNet())
        full = SlidingWindowMirrorInferer([32, 32, 16], overlap=0.5)(image[None].as_tensor(), ThresholdNet())
    (box,) = inferer.last_boxes[0]
    assert box[0][1] > 70  # grown along x, a window step at a time, past the kidney's end
    assert torch.equal(out.argmax(1), full.argmax(1))
    assert inferer.last_windows[0] < 9 * 5 * 3  # still not the whole grid, and no window twice
    inferer.max_grow = 0
    with torch.no_grad():
        out = inferer(image[None], ThresholdNet())
    assert not torch.equal(out.argmax(1), full.argmax(1))  # without growing, the kidney is cut at the box


def test_windows_need_the_training_patch_except_box_windows():
    with pytest.raises(ValueError, match="roi_size"):
        CoarseToFineInferer(ThresholdLocalizer())
    with pytest.raises(ValueError, match="expected one of"):
        CoarseToFineInferer(ThresholdLocalizer(), roi_size=[32, 32, 16], windows="grid")


def test_fast_path_segments_each_box_as_the_network_does_and_background_elsewhere():
    image, net = _ct(), _net()
    inferer = CoarseToFineInferer(ThresholdLocalizer(), zoom=(0.25, 0.25, 1.0),
                                  margin_mm=4, divisible=4, overlap=0.25, windows="box")  # fmt: skip
    with torch.no_grad():
        out = inferer(image[None], net)
    boxes = inferer.last_boxes[0]
    assert len(boxes) == 2 and out.shape == (1, 2, 96, 96, 32)
    covered = torch.zeros(96, 96, 32, dtype=torch.bool)
    for box in boxes:
        (x0, x1), (y0, y1), (z0, z1) = box
        assert x0 <= 10 - 4 and x1 >= 30 + 4 or x0 <= 66 - 4 and x1 >= 86 + 4  # the kidney and its 4 mm margin
        assert y0 <= 40 - 4 and y1 >= 60 + 4 and z0 <= 8 - 2 and z1 >= 20 + 2  # 2 voxels of 2 mm in z
        # the network ran on the box grown with real CT around it to the window's size, then cut back to the box
        (cx0, cx1), (cy0, cy1), (cz0, cz1) = context = inferer.context_box(box, image.shape[1:])
        assert all(c_lo <= lo and hi <= c_hi for (lo, hi), (c_lo, c_hi) in zip(box, context))
        assert [c_hi - c_lo for c_lo, c_hi in context] == [
            min(w, n) for w, n in zip(inferer.window_for(box), (96, 96, 32))
        ]
        crop = image[0:1, cx0:cx1, cy0:cy1, cz0:cz1][None]
        window = SlidingWindowMirrorInferer(inferer.window_for(box), overlap=0.25)
        with torch.no_grad():
            expected = window(crop.as_tensor(), net)[0][
                :, x0 - cx0 : x1 - cx0, y0 - cy0 : y1 - cy0, z0 - cz0 : z1 - cz0
            ]
        torch.testing.assert_close(out[0][:, x0:x1, y0:y1, z0:z1], expected)
        covered[x0:x1, y0:y1, z0:z1] = True
    outside = out[0][:, ~covered]
    assert torch.all(outside[0] == 20.0) and torch.all(outside[1] == 0.0)
    assert covered.float().mean() < 0.6  # the point: most of the volume never reaches the network


def test_fast_path_runs_the_whole_volume_when_the_localizer_finds_nothing(caplog):
    image, net = _ct(), _net()
    image[:] = 0.0
    inferer = CoarseToFineInferer(ThresholdLocalizer(), divisible=4,
                                  max_window=[64, 64, 32], overlap=0.25, windows="box")  # fmt: skip
    with torch.no_grad():
        out = inferer(image[None], net)
        full = SlidingWindowMirrorInferer([64, 64, 32], overlap=0.25)(image[None].as_tensor(), net)
    assert inferer.last_boxes == [[]] and "found no kidney" in caplog.text
    torch.testing.assert_close(out, full)


def test_missing_localizer_checkpoint_says_how_to_train_it(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_localizer(_net(), tmp_path / "localizer" / "model.pt")
    message = str(e.value)
    assert str(tmp_path / "localizer" / "model.pt") in message and "configs/localizer.json" in message
    torch.save({"model": {"wrong": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="other.pt does not fit the localizer"):
        load_localizer(_net(), tmp_path / "other.pt")


def test_every_kits_bundle_but_the_cascade_has_the_fast_path():
    assert sorted(b.name for b in FAST_BUNDLES) == sorted(
        b.name for b in BUNDLES if b.name.startswith("kits_") and b.name != "kits_unet_cascade"
    )
    for bundle in FAST_BUNDLES:  # the full pass's windows, blending and flips: the same answer inside the boxes
        full, fast = (read_json(bundle / "configs" / f)["inferer"] for f in ("inference.json", "inference_fast.json"))
        assert fast["windows"] == "@fast_windows" and read_json(bundle / "configs" / "inference_fast.json")[
            "fast_windows"] == "full_grid"  # fmt: skip
        assert {k: fast[k] for k in ("roi_size", "sw_batch_size", "overlap", "mode", "mirror_axes", "amp")} == {
            k: full[k] for k in ("roi_size", "sw_batch_size", "overlap", "mode", "mirror_axes", "amp")}  # fmt: skip


@pytest.mark.parametrize("bundle", FAST_BUNDLES, ids=[b.name for b in FAST_BUNDLES])
def test_localizer_training_and_fast_inference_agree_on_the_localizer(bundle):
    train, fast = (
        read_json(bundle / "configs" / "localizer.json"),
        read_json(bundle / "configs" / "inference_fast.json"),
    )
    for key in LOCALIZER_KEYS:
        assert train[key] == fast[key], f"{bundle.name}: {key} differs between localizer.json and inference_fast.json"
    assert train["network_def"] == fast["localizer_def"]


@pytest.mark.parametrize("bundle", FAST_BUNDLES, ids=[b.name for b in FAST_BUNDLES])
def test_train_the_localizer_then_run_fast_inference(bundle, tmp_path):
    from monai.bundle import ConfigParser

    from monai_effseg.data import synthetic_dataset
    from monai_effseg.workflows import run_bundle

    data = synthetic_dataset("kits", num_cases=3, seed=7, shape=(48, 48, 24), root=tmp_path / "data")
    models, tiny = tmp_path / "models", {"localizer_patch": [32, 32, 16]}
    run_bundle(bundle, ["localizer.json"], "train", dataset_dir=str(data), model_dir=str(models),
               model_eval_dir=str(tmp_path / "eval"), max_epochs=1, iterations_per_epoch=1, val_interval=1,
               batch_size=1, **tiny)  # fmt: skip
    # the localizer sits beside the model it serves and shares its fingerprint and split
    assert (models / "localizer" / "model.pt").is_file() and (models / "fingerprint.json").is_file()
    assert (tmp_path / "eval" / "split.json").is_file()

    overrides = demo_value(bundle, "demo_inference_overrides")
    parser = ConfigParser()
    parser.read_config(configs(bundle, "inference.json"))
    parser.update({"bundle_root": str(bundle), **overrides})
    torch.save(parser.get_parsed_content("network_def").state_dict(), models / "model.pt")
    scans, out = tmp_path / "scans", tmp_path / "segs"
    scans.mkdir()
    (scans / "case.nii.gz").write_bytes((data / "case_00000" / "imaging.nii.gz").read_bytes())
    overrides.update(ckpt_path=str(models / "model.pt"), fingerprint_path=str(models / "fingerprint.json"))
    run_bundle(bundle, ["inference.json", "inference_fast.json"], "inference", input_dir=str(scans),
               output_dir=str(out), **overrides)  # fmt: skip
    seg, src = nib.load(out / "case.nii.gz"), nib.load(scans / "case.nii.gz")
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)


def test_with_the_training_patch_each_box_is_covered_by_patch_windows_with_real_context():
    image, net = _ct(), _net()
    inferer = CoarseToFineInferer(ThresholdLocalizer(), margin_mm=4, roi_size=[32, 32, 16], overlap=0.5,
                                  windows="box_patches")  # fmt: skip
    with torch.no_grad():
        out = inferer(image[None], net)
    for box in inferer.last_boxes[0]:
        assert inferer.window_for(box) == [32, 32, 16]
        context = inferer.context_box(box, image.shape[1:])
        assert all(c_hi - c_lo >= min(w, hi - lo) for (lo, hi), (c_lo, c_hi), w in zip(box, context, [32, 32, 16]))
    # the localizer finding nothing gives exactly the full pass: the same windows over the whole volume
    image[:] = 0.0
    with torch.no_grad():
        out = inferer(image[None], net)
        full = SlidingWindowMirrorInferer([32, 32, 16], overlap=0.5)(image[None].as_tensor(), net)
    torch.testing.assert_close(out, full)

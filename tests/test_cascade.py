"""Hao's cascade: fixed-size box crops, the two-stage inferer, the one-checkpoint UNetCascade, and the bundle's
stage-2 training (1 iteration + resume) and stage-2 TorchScript export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export
from monai.data import MetaTensor
from torch import nn

from monai_effseg.inferers import CascadeInferer, Stage1Predictiond
from monai_effseg.nets import LiteUNet, LiverTumourUNet, ResidualUNet, UNetCascade, load_stage_weights, prepare_stage
from monai_effseg.training import stage_dir
from monai_effseg.transforms import FixedBoxCropd, RandFixedBoxCropd, stage2_box_mm
from monai_effseg.transforms.cascade import KITS19_SHIPPED_FOREGROUND_BOX_MM, box_start, crop_box, mm_to_voxels

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "kits_unet_cascade"
SPACING = (2.0, 2.0, 3.0)


def ras_volume(array: np.ndarray, spacing=SPACING) -> MetaTensor:
    return MetaTensor(
        torch.as_tensor(array, dtype=torch.float32)[None], affine=torch.diag(torch.tensor([*spacing, 1.0]))
    )


def test_box_geometry():
    assert mm_to_voxels([20, None, 9.0], SPACING, (50, 40, 30)) == [10, 40, 3]
    assert box_start([25, 5, 29], [10, 10, 10], [50, 40, 30]) == [20, 0, 20]  # moved inside the volume
    assert box_start([25, 5, 29], [60, 10, 10], [50, 40, 30])[0] == -5  # larger than the volume: centred, padded
    img = ras_volume(np.arange(6 * 5 * 4).reshape(6, 5, 4))
    out = crop_box(img, [-2, 1, 2], [4, 3, 4], pad_value=-7.0)
    assert out.shape == (1, 4, 3, 4)
    assert (out[0, :2] == -7).all() and (out[0, :, :, 2:] == -7).all()  # padding before x, after z
    assert (out[0, 2:, :, :2] == img[0, :2, 1:4, 2:4]).all() and int((out == -7).sum()) == 4 * 3 * 4 - 2 * 3 * 2
    # the affine follows the box: voxel (0, 0, 0) of the crop is voxel (-2, 1, 2) of the image
    torch.testing.assert_close(out.affine[:3, 3], torch.tensor([-4.0, 2.0, 6.0], dtype=out.affine.dtype))


def test_label_centred_box_and_jitter():
    label = np.zeros((60, 50, 30), dtype=np.float32)
    label[30:40, 10:20, 5:15] = 1  # foreground centre (34.5, 14.5, 9.5)
    data = {"image": ras_volume(np.random.rand(60, 50, 30)), "label": ras_volume(label)}
    out = FixedBoxCropd(["image", "label"], box_mm=[40, 40, 30])(data)
    assert out["image"].shape == out["label"].shape == (1, 20, 20, 10)
    fg = torch.nonzero(out["label"][0]).float()
    centre = (fg.min(0).values + fg.max(0).values) / 2
    torch.testing.assert_close(centre, torch.tensor([9.5, 9.5, 4.5]), atol=0.5, rtol=0)
    assert int(out["label"].sum()) == 1000  # the whole foreground is inside
    jitter = RandFixedBoxCropd(["image", "label"], box_mm=[40, 40, 30], jitter_mm=6.0)
    jitter.set_random_state(0)
    shifts = []
    for _ in range(20):
        fg = torch.nonzero(jitter(data)["label"][0]).float()
        shifts.append(((fg.min(0).values + fg.max(0).values) / 2 - torch.tensor([9.5, 9.5, 4.5])).abs())
    shifts = torch.stack(shifts)
    assert shifts.max() <= 6.0 / 2.0 + 0.5 and shifts[:, 0].max() >= 1  # <= 3 voxels at 2 mm, and it moves
    grown = FixedBoxCropd(["image", "label"], box_mm=[40, 40, 30], min_size=[24, 10, 16])(data)
    assert grown["image"].shape == (1, 24, 20, 16)


def test_stage2_box_from_the_fingerprint():
    assert stage2_box_mm({"foreground_bbox_max_mm": [100.0, 50.0, 80.0]}, margin_mm=5) == [110.0, 60.0, 90.0]
    assert stage2_box_mm({"foreground_bbox_max_mm": None}, margin_mm=0) == list(KITS19_SHIPPED_FOREGROUND_BOX_MM)


class Threshold(nn.Module):
    """Stage 1 stand-in: logits of the classes 'background', 'kidney' (image > 1), 'tumour' (image > 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :1]
        return self.scale * torch.cat([torch.zeros_like(x), x - 1, 2 * (x - 3)], 1)


class CopyPrior(nn.Module):
    """Stage 2 stand-in: returns its second input channel (stage 1's label) as one-hot logits."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = x[:, 1].round().long().clamp(0, 2)
        return self.scale * nn.functional.one_hot(prior, 3).permute(0, 4, 1, 2, 3).float()


def kidney_phantom() -> tuple[MetaTensor, np.ndarray]:
    image = np.zeros((64, 48, 24), dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    image[10:54, 5:43, 2:22] = 0.5  # body
    label[14:24, 20:30, 8:16] = 1  # "kidneys"
    label[40:50, 20:30, 8:16] = 1
    label[40:44, 20:24, 8:12] = 2  # tumour in the second one
    image[label == 1], image[label == 2] = 2.0, 4.0
    image[2:6, 42:46, 18:20] = 2.0  # a false positive outside the body
    return ras_volume(image), label


def test_cascade_inferer_runs_both_stages_at_the_input_grid():
    image, label = kidney_phantom()
    cascade = UNetCascade(Threshold(), CopyPrior())
    inferer = CascadeInferer([16, 16, 16], [16, 16, 16], stage2_box_mm=[80, 40, 36], stage1_roi_mm=[100, 80, None],
                             stage1_zoom=[0.5, 0.5, 1.0], sw_batch_size=4)  # fmt: skip
    probs = inferer(image[None], cascade)
    assert isinstance(probs, MetaTensor) and probs.shape == (1, 3, 64, 48, 24)
    torch.testing.assert_close(probs.affine, image.affine)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 64, 48, 24))
    pred = probs.argmax(1)[0].numpy()
    dice = 2 * ((pred > 0) & (label > 0)).sum() / ((pred > 0).sum() + (label > 0).sum())
    assert dice > 0.85  # stage 1 works at half the in-plane resolution; stage 2 copies its label back
    assert (pred[2:6, 42:46, 18:20] == 0).all()  # outside the stage-2 box
    stage1 = CascadeInferer([16, 16, 16], [16, 16, 16], [80, 40, 36], run_stage2=False)(image[None], cascade)
    assert (stage1.argmax(1)[0, 2:6, 42:46, 18:20] > 0).all()  # stage 1 alone (whole volume) keeps it
    empty = inferer(ras_volume(np.zeros((32, 32, 16)))[None], cascade)
    assert (empty.argmax(1) == 0).all()  # nothing found by stage 1: background, no stage 2


def test_stage1_prediction_transform_matches_the_inferer():
    image, _ = kidney_phantom()
    cascade = UNetCascade(Threshold(), CopyPrior()).train()
    inferer = CascadeInferer([16, 16, 16], [16, 16, 16], stage2_box_mm=[80, 40, 36])
    out = Stage1Predictiond("image", cascade, inferer)({"image": image})
    expected = inferer.stage1_label(inferer.stage1_probabilities(image, cascade.stage1))
    torch.testing.assert_close(out["stage1"].as_tensor(), expected)
    torch.testing.assert_close(out["stage1"].affine, image.affine)
    assert cascade.stage1.training  # the mode is restored


def small_cascade(stage: int = 1) -> UNetCascade:
    return UNetCascade(ResidualUNet(3, 1, 3, (4, 8, 16)), ResidualUNet(3, 2, 3, (4, 8, 16)), stage=stage)


def test_one_checkpoint_holds_both_stages(tmp_path):
    net = small_cascade().eval()
    assert {k.split(".")[0] for k in net.state_dict()} == {"stage1", "stage2"}
    scripted = torch.jit.script(net)
    with torch.no_grad():
        x1, x2 = torch.randn(1, 1, 16, 16, 16), torch.randn(1, 2, 16, 16, 16)
        torch.testing.assert_close(scripted(x1), net.stage1(x1))
        scripted.stage = 2
        torch.testing.assert_close(scripted(x2), net.stage2(x2))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    fresh = small_cascade()
    prepare_stage(fresh, 2, tmp_path / "model.pt")
    torch.testing.assert_close(fresh.stage1.state_dict(), net.stage1.state_dict())
    assert not any(p.requires_grad for p in fresh.stage1.parameters())
    assert all(p.requires_grad for p in fresh.stage2.parameters()) and fresh.stage == 2
    with pytest.raises(FileNotFoundError, match="Train stage 1 first"):
        load_stage_weights(fresh, tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="Train stage 1 first"):
        prepare_stage(small_cascade(), 2, tmp_path / "missing.pt")  # stage 2 trains on stage 1's predictions


def test_one_staged_protocol_for_both_two_stage_models(tmp_path, caplog):
    """The cascade and the liver-then-tumour nets: stages numbered 1..2, each paper's names as ``stage_names`` (the
    attributes and the folders of later stages), one loader and one set-up."""
    lits = LiverTumourUNet(
        LiteUNet("mobilenetv2-2d-top", out_channels=2), LiteUNet("mobilenetv2-2d-top", out_channels=2)
    )
    cascade = small_cascade()
    for net, names in ((cascade, ("stage1", "stage2")), (lits, ("liver", "tumour"))):
        assert net.stage_names == names and net.stage == 1
        assert net.stage_network(1) is getattr(net, names[0]) and net.stage_network(2) is getattr(net, names[1])
        assert net.active() is net.stage_network(1)
        assert stage_dir("ckpt", 1, names) == "ckpt" and stage_dir("ckpt", 2, names) == f"ckpt/{names[1]}"
        with pytest.raises(ValueError, match="stage number"):
            net.stage_network("tumour")
    torch.save(lits.state_dict(), tmp_path / "lits.pt")
    fresh = LiverTumourUNet(
        LiteUNet("mobilenetv2-2d-top", out_channels=2), LiteUNet("mobilenetv2-2d-top", out_channels=2)
    )
    tumour_before = {k: v.clone() for k, v in fresh.tumour.state_dict().items()}
    prepare_stage(fresh, 2, tmp_path / "lits.pt")
    assert fresh.active() is fresh.tumour and fresh.stage == 2
    torch.testing.assert_close(fresh.liver.state_dict(), lits.liver.state_dict())  # stage 1 loaded
    torch.testing.assert_close(fresh.tumour.state_dict(), tumour_before)  # the trained stage starts fresh
    assert not any(p.requires_grad for p in fresh.liver.parameters())
    assert all(p.requires_grad for p in fresh.tumour.parameters())
    # the tumour stage trains on the ground-truth liver: without a liver checkpoint it only warns
    prepare_stage(lits, 2, tmp_path / "missing.pt")
    assert "starts untrained" in caplog.text


def _train(data_dir: Path, work: Path, stage: int, max_epochs: int) -> None:
    from monai_effseg.workflows import run_bundle

    run_bundle(BUNDLE, ["train.json", "demo.json"], "train", dataset_dir=str(data_dir), ckpt_dir=str(work / "models"),
               output_dir=str(work / "eval"), stage=stage, max_epochs=max_epochs, iterations_per_epoch=1,
               val_interval=1, batch_size=1, features=[4, 8, 16, 32], run=["$@train#trainer.run()"])  # fmt: skip


def test_stage2_trains_on_stage1_and_resumes(tmp_path_factory):
    from monai_effseg.data import synthetic_dataset

    data = synthetic_dataset("kits", num_cases=3, seed=7, shape=(48, 48, 24), root=tmp_path_factory.mktemp("synthetic"))
    work = tmp_path_factory.mktemp("cascade")
    _train(data, work, stage=1, max_epochs=1)
    stage1_state = torch.load(work / "models" / "model.pt", weights_only=True)
    _train(data, work, stage=2, max_epochs=1)
    models = work / "models"
    assert (models / "stage2" / "checkpoint_epoch=1.pt").is_file() and (models / "checkpoint_epoch=1.pt").is_file()
    cascade_state = torch.load(models / "model.pt", weights_only=True)
    for key, value in cascade_state.items():
        if key.startswith("stage1."):
            torch.testing.assert_close(value, stage1_state[key])  # stage 1 is frozen while stage 2 trains
    assert any(not torch.equal(v, stage1_state[k]) for k, v in cascade_state.items() if k.startswith("stage2."))
    assert list((work / "eval" / "runs" / "stage2").glob("events.out.tfevents.*"))
    _train(data, work, stage=2, max_epochs=2)  # resumes from the stage-2 checkpoint, not stage 1's
    resumed = torch.load(models / "stage2" / "checkpoint_epoch=2.pt", weights_only=True)
    assert resumed["trainer"]["iteration"] == 2


def test_stage2_exports_to_torchscript(tmp_path):
    overrides = {"features": [4, 8, 16, 32], "kernel_sizes": 3, "strides": [1, 2, 2, 2], "network_def#stage": 2}
    parser = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "inference.json"), workflow_type=None,
                            bundle_root=str(BUNDLE), **overrides).parser  # fmt: skip
    net = parser.get_parsed_content("network_def").eval()
    assert net.stage == 2
    torch.save(net.state_dict(), tmp_path / "model.pt")
    ckpt_export(net_id="network_def", filepath=str(tmp_path / "stage2.ts"), ckpt_file=str(tmp_path / "model.pt"),
                meta_file=str(BUNDLE / "configs" / "metadata.json"), config_file=str(BUNDLE / "configs" / "inference.json"),
                bundle_root=str(BUNDLE), **overrides)  # fmt: skip
    scripted = torch.jit.load(str(tmp_path / "stage2.ts"))
    x = torch.randn(1, 2, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))

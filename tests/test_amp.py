"""Mixed precision and the GPU data pipeline (issue 9), on the CPU.

- bf16 autocast of the baseline network + the bundle's deep-supervision loss gives the fp32 loss (relative error
  below ``LOSS_RTOL``) and the fp32 gradient direction (cosine above ``GRAD_COSINE``) on a fixed seeded batch;
- :func:`amp_dtype` picks bf16 / fp16 as the GPU supports; the trainer keeps a GradScaler only for fp16;
- every bundle's ``train.json`` resolves ``amp``, ``amp_kwargs``, the cache settings and the data loaders, and its
  ``inference.json`` the autocast sliding-window settings;
- the pipeline helpers: persistent cache (hit on the second run, miss after a preprocessing change), ``ToDeviced``
  placement, the loader choice, worker count.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from bundle_utils import BUNDLE_IDS, BUNDLES, REPO, configs, synthetic_kind
from ignite.engine import Events
from monai import transforms as mt
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, ThreadDataLoader
from monai.inferers import SlidingWindowInfererAdapt
from monai.losses import DiceCELoss

from monai_effseg.data import augment_on_device, cached_dataset, dataloader, default_num_workers, transform_hash
from monai_effseg.deploy import native_bf16
from monai_effseg.inferers import SliceStackInferer, SlidingWindowMirrorInferer
from monai_effseg.training import (
    AmpSupervisedTrainer,
    amp_dtype,
    amp_kwargs,
    autocast,
    default_amp,
    evaluator_amp,
    grad_scaler,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")

LOSS_RTOL = 5e-3
"""bf16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 0.2% per op). Measured here: relative loss error 5e-5 (the
loss itself, the softmax and the Dice / CE reductions run in fp32 under autocast), gradient cosine 0.9988; the bounds
leave room for other CPUs' kernels."""
GRAD_COSINE = 0.99

BASELINE = REPO / "bundles" / "kits_nnunet_baseline"
CPU_BF16_TRAINING = {"kits_nnunet_baseline"}
"""The bundles that train in bf16 on CPUs with native bf16 by default: measured faster (benchmarks/bench_cpu_amp.py) and
as accurate per minute (benchmarks/bench_real_anatomy.py --amp on/off)."""


def _baseline_net_and_loss(features=(8, 16, 32)):
    parser = ConfigParser()
    parser.read_config(configs(BASELINE, "train.json"))
    parser.update({"bundle_root": str(BASELINE), "features": list(features), "device": "$torch.device('cpu')"})
    return parser.get_parsed_content("network_def"), parser.get_parsed_content("loss")


def _loss_and_grad(net, loss_fn, x, y, amp: bool):
    net.zero_grad(set_to_none=True)
    with autocast("cpu", enabled=amp):
        out = net(x)
        loss = loss_fn(out, y)
    loss.backward()
    grad = torch.cat([p.grad.flatten().float() for p in net.parameters() if p.grad is not None])
    return loss.detach().float(), grad


def test_bf16_autocast_loss_and_gradient_match_fp32():
    torch.manual_seed(0)
    net, loss_fn = _baseline_net_and_loss()
    net.train()
    x = torch.randn(2, 1, 32, 32, 32)
    # blocky labels (4 classes), so Dice and CE both see structure at every deep-supervision level
    y = torch.randint(0, 4, (2, 1, 4, 4, 4)).float()
    y = torch.nn.functional.interpolate(y, size=(32, 32, 32), mode="nearest")

    with torch.no_grad():
        outs = net(x)
    assert isinstance(outs, (list, tuple)) and len(outs) == 2, "deep supervision: full resolution + one level"

    loss32, grad32 = _loss_and_grad(net, loss_fn, x, y, amp=False)
    with autocast("cpu", enabled=True):
        assert net(x)[0].dtype == torch.bfloat16, "autocast did not run the convolutions in bf16"
    loss16, grad16 = _loss_and_grad(net, loss_fn, x, y, amp=True)

    assert loss16.dtype == torch.float32
    assert torch.isfinite(loss16)
    rel = abs(loss16 - loss32) / abs(loss32)
    assert rel < LOSS_RTOL, f"bf16 loss {loss16:.6f} vs fp32 {loss32:.6f}: relative error {rel:.2e}"
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine > GRAD_COSINE, f"gradient cosine {cosine:.4f}"


@pytest.mark.parametrize("bf16", [True, False])
def test_amp_dtype_follows_the_gpu(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    expected = torch.bfloat16 if bf16 else torch.float16
    assert amp_dtype("cuda") == expected
    assert amp_dtype(torch.device("cuda:1")) == expected
    assert amp_kwargs("cuda") == {"dtype": expected}
    assert amp_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert amp_dtype() == expected  # no device: CUDA when there is one


def test_amp_dtype_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert amp_dtype() == torch.bfloat16 and amp_kwargs() == {"dtype": torch.bfloat16}


def test_grad_scaler_only_for_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert grad_scaler(torch.float16, "cuda").is_enabled()
    assert not grad_scaler(torch.bfloat16, "cuda").is_enabled()
    assert not grad_scaler(torch.float16, "cpu").is_enabled()


def _tiny_trainer(dtype, amp: bool = True):
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    data = [{"image": torch.randn(1, 8, 8, 8), "label": torch.randint(0, 2, (1, 8, 8, 8)).float()} for _ in range(2)]
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    return AmpSupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(data, batch_size=2),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=dice_ce,
        amp=amp,
        amp_kwargs={"dtype": dtype},
    ), net


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_trainer_keeps_the_scaler_only_for_fp16(monkeypatch, dtype):
    trainer, _ = _tiny_trainer(dtype)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trainer.state.device = torch.device("cuda")  # what Trainer.run does on a GPU machine:
    trainer.scaler = torch.amp.GradScaler("cuda")
    assert trainer.scaler.is_enabled() == (dtype == torch.float16)


def test_amp_trainer_autocasts_on_cpu():
    """MONAI's iteration autocasts "cuda" only (a no-op here): with amp on, the trainer runs the network's forward in
    bf16 on the CPU itself, and the loss, the gradients and the weights stay float32."""
    trainer, net = _tiny_trainer(torch.bfloat16)
    assert trainer.autocast_dtype == torch.bfloat16 and not trainer.amp  # MONAI's own amp path is off
    forward_dtypes = []
    net.register_forward_hook(lambda module, args, out: forward_dtypes.append(out.dtype))
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]["loss"]))
    before = net.weight.detach().clone()
    trainer.run()
    assert forward_dtypes == [torch.bfloat16]
    assert trainer.state.output[0]["pred"].dtype == torch.float32  # what the loss saw
    assert net.weight.dtype == torch.float32 and not torch.equal(before, net.weight)
    assert trainer.scaler is None and len(losses) == 1


def test_trainer_without_amp_runs_float32():
    trainer, net = _tiny_trainer(torch.bfloat16, amp=False)
    forward_dtypes = []
    net.register_forward_hook(lambda module, args, out: forward_dtypes.append(out.dtype))
    trainer.run()
    assert trainer.autocast_dtype is None and forward_dtypes == [torch.float32]


def test_default_amp(monkeypatch):
    import monai_effseg.deploy.optimize as optimize

    monkeypatch.setattr(optimize, "native_bf16", lambda: None)
    assert not default_amp("cpu")  # emulated bf16 is slower than float32
    monkeypatch.setattr(optimize, "native_bf16", lambda: "AVX-512 BF16")
    assert default_amp("cpu") and not default_amp("cpu", cpu_bf16=False)
    assert default_amp("cuda") and default_amp("cuda", cpu_bf16=False)
    assert evaluator_amp(True, "cuda") and not evaluator_amp(True, "cpu") and not evaluator_amp(False, "cuda")


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_cpu_bf16_training_default_follows_the_cpu(bundle, monkeypatch):
    """Where a bundle opts in (``bf16_training_where_native``), its training autocasts to bf16 on a CPU with native bf16
    and stays float32 on one without; the other bundles train float32 on any CPU."""
    import monai_effseg.deploy.optimize as optimize

    for native, expected in ((None, False), ("AMX", bundle.name in CPU_BF16_TRAINING)):
        monkeypatch.setattr(optimize, "native_bf16", lambda native=native: native)
        parser = ConfigParser()
        parser.read_config(configs(bundle, "train.json"))
        parser.update({"bundle_root": str(bundle), "device": "$torch.device('cpu')"})
        assert parser.get_parsed_content("amp") is expected, native


def test_inferers_autocast_to_float32_outputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv3d(4, 3, 1))
    x = torch.randn(1, 1, 24, 20, 16)
    ref = SlidingWindowMirrorInferer(roi_size=(16, 16, 16), mirror_axes=(0, 1))(x, net)
    inferer = SlidingWindowMirrorInferer(roi_size=(16, 16, 16), mirror_axes=(0, 1), amp=True, sw_device="cpu")
    assert isinstance(inferer, SlidingWindowInfererAdapt)
    out = inferer(x, net)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=5e-2, rtol=5e-2)

    net2d = torch.nn.Conv2d(9, 2, 3, padding=1)
    vol = torch.randn(1, 1, 16, 16, 5)
    ref = SliceStackInferer(spatial_dims=2)(vol, net2d)
    out = SliceStackInferer(spatial_dims=2, amp=True)(vol, net2d)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=5e-2, rtol=5e-2)


# --- the bundles' configs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    from monai_effseg.data import synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return lambda kind: synthetic_dataset(kind, num_cases=3, seed=7, shape=(48, 48, 24), root=root)


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_train_config_resolves_amp_cache_and_loaders(bundle, tiny_synthetic, tmp_path):
    parser = ConfigParser()
    parser.read_config(configs(bundle, "train.json"))
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(tiny_synthetic(synthetic_kind(bundle))),
                   "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")})  # fmt: skip
    device = parser.get_parsed_content("device")
    bf16_on_cpu = bundle.name in CPU_BF16_TRAINING
    assert parser.get_parsed_content("bf16_training_where_native") is bf16_on_cpu
    assert parser.get_parsed_content("amp") == (torch.cuda.is_available() or (bf16_on_cpu and bool(native_bf16())))
    assert parser.get_parsed_content("amp_kwargs") == {"dtype": amp_dtype(device)}
    default = parser["amp"]
    for typed, expected in ((False, False), ("false", False), ("True", True)):  # as fire hands --amp over
        parser["amp"] = typed
        assert parser.get_parsed_content("train#trainer#amp", lazy=False) is expected, typed
        # MONAI's evaluator autocasts "cuda" only; the inferer autocasts on any device
        assert parser.get_parsed_content("validate#evaluator#amp", lazy=False) is (expected and device.type == "cuda")
        assert parser.get_parsed_content("validate#inferer#amp", lazy=False) is expected, typed
        for engine in ("train#trainer", "validate#evaluator"):
            assert parser[f"{engine}#amp_kwargs"] == "@amp_kwargs", engine
    parser["amp"] = default
    assert parser["train#trainer#_target_"] == "monai_effseg.training.AmpSupervisedTrainer"
    assert "$setattr(torch.backends.cudnn, 'benchmark', True)" in parser["initialize"]

    cache_dir = Path(parser.get_parsed_content("cache_dir"))
    assert cache_dir.is_relative_to(tmp_path / "eval"), "the cache belongs under the run's output folder"
    assert 0.0 <= parser.get_parsed_content("cache_rate") <= 1.0
    assert parser.get_parsed_content("gpu_augment") is False
    assert isinstance(parser.get_parsed_content("num_workers"), int)

    parser["num_workers"] = 0
    parser["cache_rate"] = 0.5
    train_loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(train_loader, DataLoader) and not isinstance(train_loader, ThreadDataLoader)
    dataset = parser.get_parsed_content("train#dataset")
    assert isinstance(dataset, CacheDataset)
    item = dataset[len(dataset) - 1]  # beyond the memory cache: read from disk, then augmented
    assert item is not None
    assert list(cache_dir.glob("*.pt")), "the deterministic preprocessing was not written to the cache"
    val_loader = parser.get_parsed_content("validate#dataloader")
    assert isinstance(val_loader, DataLoader)


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_inference_config_autocasts(bundle):
    parser = ConfigParser()
    parser.read_config(configs(bundle, "inference.json"))
    parser.update({"bundle_root": str(bundle)})
    device = parser.get_parsed_content("device")
    assert parser.get_parsed_content("amp_kwargs") == {"dtype": amp_dtype(device)}
    assert parser["evaluator#amp_kwargs"] == "@amp_kwargs"
    inferer = parser.get_parsed_content("inferer")
    windows = [w for w in (inferer, getattr(inferer, "stage1_window", None), getattr(inferer, "stage2_window", None))
               if isinstance(w, SlidingWindowMirrorInferer)]  # fmt: skip
    for w in windows:
        assert w.amp == parser.get_parsed_content("amp") and w.sw_device == device and w.device is None
    slices = getattr(inferer, "slices", inferer)
    if isinstance(slices, SliceStackInferer):
        assert slices.amp == parser.get_parsed_content("amp")
    assert windows or isinstance(slices, SliceStackInferer), type(inferer)


# --- pipeline helpers -----------------------------------------------------------------------------------------------


class _Counting(mt.MapTransform):
    calls = 0

    def __init__(self, keys, offset: float = 1.0):
        super().__init__(keys)
        self.offset = offset

    def __call__(self, data):
        type(self).calls += 1
        return {**data, "x": torch.as_tensor(data["x"], dtype=torch.float32) + self.offset}


def test_persistent_cache_hits_and_misses(tmp_path):
    data = [{"x": float(i)} for i in range(4)]
    random_part = mt.RandLambdad("x", lambda v: v * 1.0)

    def build(offset, rate):
        return cached_dataset(data, mt.Compose([_Counting("x", offset), random_part]), cache_rate=rate,
                              cache_dir=tmp_path / "cache", num_workers=1, progress=False)  # fmt: skip

    _Counting.calls = 0
    first = build(1.0, 0.5)
    assert [float(first[i]["x"]) for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert _Counting.calls == 4 and len(list((tmp_path / "cache").glob("*.pt"))) == 4
    again = build(1.0, 0.0)  # a restarted run: every case from disk
    assert [float(again[i]["x"]) for i in range(4)] == [1.0, 2.0, 3.0, 4.0] and _Counting.calls == 4
    changed = build(2.0, 0.0)  # other preprocessing parameters: a new cache, never the stale one
    assert [float(changed[i]["x"]) for i in range(4)] == [2.0, 3.0, 4.0, 5.0] and _Counting.calls == 8

    memory_only = cached_dataset(data, mt.Compose([_Counting("x"), random_part]), cache_rate=1.0, progress=False)
    assert type(memory_only) is CacheDataset


def test_transform_hash_ignores_run_state(tiny_synthetic):
    from monai_effseg.data import build_datalist, load_fingerprint
    from monai_effseg.transforms import ct_preprocessing

    fingerprint = load_fingerprint(None, "kits19")
    pre = ct_preprocessing(fingerprint)
    before = transform_hash(list(pre.transforms))
    pre(build_datalist(tiny_synthetic("kits"))[0])  # the reader remembers its file names, tracing flags appear
    assert transform_hash(list(pre.transforms)) == before
    other = ct_preprocessing({**fingerprint, "spacing": [1.0, 1.0, 1.0]})
    assert transform_hash(list(other.transforms)) != before


def test_augment_on_device_places_todevice_before_the_spatial_augmentation():
    from monai_effseg.transforms import ForegroundOversampledCropd, nnunet_augmentation

    xforms = nnunet_augmentation([32, 32, 32])
    assert augment_on_device(xforms, "cpu", enabled=True) == xforms
    assert augment_on_device(xforms, "cuda", enabled=False) == xforms
    moved = augment_on_device(xforms, "cuda:0", enabled=True)
    i = next(k for k, t in enumerate(moved) if isinstance(t, mt.ToDeviced))
    assert isinstance(moved[i - 1], ForegroundOversampledCropd) and isinstance(moved[i + 1], mt.RandAffined)
    assert set(moved[i].keys) >= {"image", "label"} and moved[i].converter.device == torch.device("cuda:0")
    assert len(moved) == len(xforms) + 1


def test_dataloader_choice():
    data = [{"x": torch.zeros(1)}] * 4
    assert isinstance(dataloader(data, 2, gpu_augment=True, device="cuda"), ThreadDataLoader)
    plain = dataloader(data, 2, num_workers=2, gpu_augment=True, device="cpu")
    assert type(plain) is DataLoader and plain.num_workers == 2 and plain.persistent_workers
    assert type(dataloader(data, 2)) is DataLoader


def test_default_num_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == 8 and default_num_workers(max_workers=32) == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_num_workers() == 0

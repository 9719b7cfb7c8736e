"""GPU throughput of every bundle, as its train.json / inference.json configure it: training iterations/s at the
paper patch size and batch, the data-loading share of a training step, and the sliding-window inference time of a
512 x 512 x 100 CT (0.78 x 0.78 x 3 mm), each with AMP on and off; MONAI's DynUNet in the nnU-Net configuration
next to the nnU-Net baseline (ratio reported).

    python benchmarks/gpu_throughput.py                                   # every bundle, AMP on and off
    python benchmarks/gpu_throughput.py --bundles kits_nnunet_baseline --iters 30
    python benchmarks/gpu_throughput.py --amp on --gpu-augment both --json gpu.json
    python benchmarks/gpu_throughput.py --device cpu --smoke --amp off   # tiny sizes: checks the script anywhere
                                                                          # (bf16 backward is very slow on most CPUs)

Columns:
  train it/s   optimiser steps per second on one batch held on the GPU (network + loss + backward + step; the
               bundle's own network, loss, optimiser and batch shape; AMP through the bundle's amp_dtype, GradScaler
               only for fp16);
  e2e it/s     steps per second fed by the bundle's own training data loader (cached preprocessing of synthetic CTs
               of --data-shape, random augmentation after the cache, workers from default_num_workers());
  data %       share of the end-to-end step time spent waiting for the loader (and copying the batch), with the
               augmentation on the CPU workers and, with --gpu-augment both/on, on the GPU (gpu_augment=true);
  infer s      one 512 x 512 x 100 CT (0.78 x 0.78 x 3 mm) through the bundle's inference preprocessing (not
               timed) and its inferer (sliding window with the bundle's mirror TTA, cascade or slice stack);
  peak GiB     peak GPU memory of training / inference.
Random weights: the inference time of the cascade and the LiTS pipelines depends on what stage 1 finds.

On a machine without CUDA (and without --device) it says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO / "bundles"
BASELINE = "kits_nnunet_baseline"
CT_SHAPE = (512, 512, 100)
CT_SPACING = (0.78, 0.78, 3.0)


# --- helpers ----------------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def bundle_kind(bundle: Path) -> str:
    protocol = json.loads((bundle / "configs" / "train.json").read_text(encoding="utf-8")).get("eval_protocol", "")
    return "lits" if str(protocol).startswith("lits") else "kits"


def parser_for(bundle: Path, files: list[str], overrides: dict[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f) for f in files])
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser


def device_expr(device: torch.device) -> str:
    return f"$torch.device('{device}')"


class Trainer:
    """One optimiser step of a bundle's network / loss / optimiser, with the bundle's AMP policy."""

    def __init__(self, network, loss_fn, optimizer, device: torch.device, amp: bool) -> None:
        from monai_effseg.training import amp_dtype, grad_scaler

        self.network, self.loss_fn, self.optimizer, self.device, self.amp = network, loss_fn, optimizer, device, amp
        self.dtype = amp_dtype(device)
        self.scaler = grad_scaler(self.dtype if amp else torch.float32, device)
        self.network.train()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        from monai_effseg.training import autocast

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp, self.dtype):
            out = self.network(x)
            if isinstance(out, torch.Tensor) and out.dim() == x.dim() + 1:  # DynUNet: heads stacked on dim 1
                out = list(torch.unbind(out, dim=1))
            loss = self.loss_fn(out, y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def time_steps(trainer: Trainer, x, y, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        trainer.step(x, y)
    sync(trainer.device)
    start = time.perf_counter()
    for _ in range(iters):
        trainer.step(x, y)
    sync(trainer.device)
    return iters / (time.perf_counter() - start)


def time_loader(trainer: Trainer, loader, warmup: int, iters: int) -> tuple[float, float]:
    """(end-to-end it/s, data-loading share) over ``iters`` steps fed by ``loader`` (after ``warmup``)."""
    from monai.engines.utils import default_prepare_batch

    waited = total = 0.0
    done = 0
    it = iter(loader)
    while done < warmup + iters:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        x, y = default_prepare_batch(batch, trainer.device, non_blocking=True)[:2]
        t1 = time.perf_counter()
        trainer.step(x, y)
        sync(trainer.device)
        t2 = time.perf_counter()
        if done >= warmup:
            waited += t1 - t0
            total += t2 - t0
        done += 1
    del it
    return iters / total, waited / total


def first_batch(loader, device: torch.device):
    from monai.engines.utils import default_prepare_batch

    it = iter(loader)
    batch = next(it)
    del it
    x, y = default_prepare_batch(batch, device)[:2]
    return x.as_tensor() if hasattr(x, "as_tensor") else x, y.as_tensor() if hasattr(y, "as_tensor") else y


def write_ct(path: Path, shape, spacing, seed: int = 0) -> Path:
    """A CT-like volume: a soft-tissue ellipse body with a few bright blobs in air, int16 HU, RAS affine."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    vol = np.full(shape, -1000, dtype=np.int16)
    vol[body] = 40
    vol = vol + rng.normal(0, 20, shape).astype(np.int16)
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(path))
    return path


def mirror_passes(inferer) -> int:
    axes = getattr(inferer, "mirror_axes", None)
    if axes is None:
        axes = getattr(getattr(inferer, "stage1_window", None), "mirror_axes", ())
    return 2 ** len(axes or ())


# --- measurements --------------------------------------------------------------------------------------------------


def measure_training(bundle: Path, args, device: torch.device, amp: bool, data_dir: Path, work: Path,
                     gpu_augment: bool, want_loader: bool) -> dict[str, Any]:  # fmt: skip
    files = ["train.json"] + (["demo.json"] if args.smoke else [])
    overrides = {
        "device": device_expr(device),
        "amp": amp,
        "dataset_dir": str(data_dir),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "gpu_augment": gpu_augment,
        "cache_rate": 1.0,
    }
    if args.num_workers is not None:
        overrides["num_workers"] = args.num_workers
    parser = parser_for(bundle, files, overrides)
    network = parser.get_parsed_content("train#trainer#network")
    trainer = Trainer(network, parser.get_parsed_content("train#trainer#loss_function"),
                      parser.get_parsed_content("train#trainer#optimizer"), device, amp)  # fmt: skip
    loader = parser.get_parsed_content("train#dataloader")
    x, y = first_batch(loader, device)
    dtype = str(trainer.dtype).replace("torch.", "") if amp else "fp32"
    row: dict[str, Any] = {"batch": list(x.shape), "amp_dtype": dtype,
                           "num_workers": parser.get_parsed_content("num_workers")}  # fmt: skip
    if not gpu_augment:
        reset_peak(device)
        its = time_steps(trainer, x, y, args.warmup, args.iters)
        row.update(train_its=its, train_peak_gib=peak_gib(device))
    if want_loader:
        e2e, share = time_loader(trainer, loader, args.warmup, args.loader_iters)
        row.update(e2e_its=e2e, data_share=share)
    row["_batch"] = (x, y)
    row["_loss"] = trainer.loss_fn
    del loader, trainer, network
    gc.collect()
    return row


def measure_inference(bundle: Path, args, device: torch.device, amp: bool, ct_path: Path,
                      network=None, preprocessed=None) -> dict[str, Any]:  # fmt: skip
    from monai_effseg.training import amp_dtype

    files = ["inference.json"]
    overrides: dict[str, Any] = {"device": device_expr(device), "amp": amp}
    if args.smoke:
        overrides.update({k: v for k, v in smoke_inference_overrides(bundle).items()})
    parser = parser_for(bundle, files, overrides)
    net = network if network is not None else parser.get_parsed_content("network")
    net = net.to(device).eval()
    inferer = parser.get_parsed_content("inferer")
    if preprocessed is None:
        preprocessing = parser.get_parsed_content("preprocessing")
        preprocessed = preprocessing({"image": str(ct_path)})["image"]
    image = preprocessed[None].to(device)
    reset_peak(device)
    times = []

    def ctx():  # what SupervisedEvaluator does with amp (the inferer autocasts its network calls too)
        if amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=amp_dtype(device))
        return contextlib.nullcontext()

    for _ in range(1 + args.infer_reps):  # the first run warms cuDNN's autotuner up
        sync(device)
        start = time.perf_counter()
        with torch.no_grad(), ctx():
            out = inferer(image, net)
        sync(device)
        times.append(time.perf_counter() - start)
        del out
    return {"infer_s": min(times[1:]) if len(times) > 1 else times[0], "infer_peak_gib": peak_gib(device),
            "infer_shape": list(image.shape[2:]), "tta": mirror_passes(inferer), "_pre": preprocessed}  # fmt: skip


def smoke_inference_overrides(bundle: Path) -> dict[str, Any]:
    """The demo's inference sizes (``demo_inference_overrides`` of train.json + demo.json), without its paths."""
    parser = parser_for(bundle, ["train.json", "demo.json"], {})
    if "demo_inference_overrides" not in parser:
        return {}
    overrides = dict(parser.get_parsed_content("demo_inference_overrides"))
    return {k: v for k, v in overrides.items() if k not in ("ckpt_path", "fingerprint_path")}


def dynunet_nnunet(features, num_classes: int, in_channels: int = 1):
    """MONAI's DynUNet as nnU-Net's 3d_fullres plain U-Net: 3^3 kernels, stride 1 then 2, instance norm (affine),
    leaky ReLU 0.01, transposed-conv upsampling, deep supervision on all but the two lowest levels."""
    from monai.networks.nets import DynUNet

    n = len(features)
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=num_classes,
        kernel_size=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        upsample_kernel_size=[[2, 2, 2]] * (n - 1),
        filters=list(features),
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=True,
        deep_supr_num=n - 2,
        res_block=False,
    )


def measure_dynunet(args, device, amp, base_row, base_inf, ct_path) -> dict[str, Any]:
    bundle = BUNDLES_DIR / BASELINE
    files = ["train.json"] + (["demo.json"] if args.smoke else [])
    parser = parser_for(bundle, files, {"device": device_expr(device)})
    features = parser.get_parsed_content("features")
    num_classes = parser.get_parsed_content("num_classes")
    net = dynunet_nnunet(features, num_classes).to(device)
    loss = parser.get_parsed_content("loss")  # the baseline's deep-supervision loss (one weight per head)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    row: dict[str, Any] = {}
    if base_row and "_batch" in base_row:
        x, y = base_row["_batch"]
        trainer = Trainer(net, loss, opt, device, amp)
        reset_peak(device)
        row.update(batch=list(x.shape), train_its=time_steps(trainer, x, y, args.warmup, args.iters),
                   train_peak_gib=peak_gib(device), amp_dtype=base_row.get("amp_dtype"))  # fmt: skip
    if not args.no_inference:
        row.update(measure_inference(bundle, args, device, amp, ct_path, network=net,
                                     preprocessed=(base_inf or {}).get("_pre")))  # fmt: skip
    return row


# --- table -----------------------------------------------------------------------------------------------------------


def fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["bundle", "AMP", "batch", "train it/s", "e2e it/s", "data % cpu-aug", "data % gpu-aug", "infer s",
            "TTA", "peak GiB train/infer", "vs baseline"]  # fmt: skip
    lines = []
    for r in rows:
        if r.get("error"):
            lines.append([r["bundle"], r["amp"], "-", "error: " + r["error"]] + [""] * (len(head) - 4))
            continue
        lines.append([
            r["bundle"],
            r["amp"],
            "x".join(str(s) for s in r.get("batch", [])) or "-",
            fmt(r.get("train_its"), ".2f"),
            fmt(r.get("e2e_its"), ".2f"),
            fmt(100 * r["data_share"], ".0f") if r.get("data_share") is not None else "-",
            fmt(100 * r["data_share_gpu_aug"], ".0f") if r.get("data_share_gpu_aug") is not None else "-",
            fmt(r.get("infer_s"), ".2f"),
            f"x{r['tta']}" if r.get("tta") else "-",
            f"{fmt(r.get('train_peak_gib'), '.1f')}/{fmt(r.get('infer_peak_gib'), '.1f')}",
            r.get("ratio", ""),
        ])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))


# --- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--bundles", nargs="*", help="bundle names (default: every bundle under bundles/)")
    parser.add_argument("--device", help="e.g. cuda:1; default: cuda:0, or exit 0 without CUDA")
    parser.add_argument("--amp", choices=["on", "off", "both"], default="both")
    parser.add_argument(
        "--gpu-augment",
        choices=["off", "on", "both"],
        default="both",
        help="data share with the augmentation on the CPU workers (off), on the GPU (on), or both",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20, help="timed steps on a resident batch")
    parser.add_argument("--loader-iters", type=int, default=20, help="timed steps fed by the data loader")
    parser.add_argument("--infer-reps", type=int, default=1, help="timed inference runs after one warm-up run")
    parser.add_argument("--num-workers", type=int, help="override the bundles' num_workers")
    parser.add_argument(
        "--data-shape", type=int, nargs=3, default=list(CT_SHAPE), help="synthetic training CT matrix (x y slices)"
    )
    parser.add_argument("--data-cases", type=int, default=5)
    parser.add_argument("--no-loader", action="store_true", help="skip the data-loader measurements")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument("--no-dynunet", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="demo sizes and a tiny CT: checks the script quickly")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--workdir", type=Path, help="synthetic data and caches (default: a temporary folder)")
    return parser.parse_args(argv)


def pick_device(args: argparse.Namespace) -> Optional[torch.device]:
    """``--device``, default ``cuda:0``; ``None`` (and a message) without CUDA."""
    if args.device is None:
        if not torch.cuda.is_available():
            print("gpu_throughput: no CUDA device on this machine: nothing to measure. Run it on a workstation with an "
                  "NVIDIA GPU (or pass --device cpu --smoke to check the script).")  # fmt: skip
            return None
        args.device = "cuda:0"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
              f"bf16 {'native' if torch.cuda.is_bf16_supported() else 'no'}", flush=True)  # fmt: skip
    return device


def bundle_row(bundle: Path, args, device: torch.device, amp: bool, augs: list[bool], data_dir: Path, work: Path,
               ct_path: Path) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """One bundle's row at one AMP setting (training, data loader, inference); and whether it failed."""
    from monai.utils import set_determinism

    row: dict[str, Any] = {"bundle": bundle.name, "amp": "on" if amp else "off"}
    print(f"{bundle.name} amp={row['amp']}...", flush=True)
    try:
        set_determinism(0)
        for aug in augs:
            r = measure_training(bundle, args, device, amp, data_dir, work / bundle.name, aug,
                                 want_loader=not args.no_loader)  # fmt: skip
            if aug:
                row["data_share_gpu_aug"] = r.get("data_share")
                row["e2e_its_gpu_aug"] = r.get("e2e_its")
            else:
                row.update(r)
        if not args.no_inference:
            row.update(measure_inference(bundle, args, device, amp, ct_path))
    except torch.OutOfMemoryError:
        row["error"] = "out of GPU memory"
    except Exception as exc:  # noqa: BLE001 - report and go on with the next bundle
        traceback.print_exc()
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
        return row, True
    return row, False


def dynunet_row(args, device: torch.device, amp: bool, row: dict[str, Any], ct_path: Path) -> tuple[dict, bool]:
    """MONAI's DynUNet in the nnU-Net configuration next to the baseline's ``row``; and whether it failed."""
    dyn = {"bundle": "  DynUNet (MONAI, nnU-Net config)", "amp": row["amp"]}
    try:
        dyn.update(measure_dynunet(args, device, amp, row, row, ct_path))
        ratios = []  # time ratios: > 1 means DynUNet is slower than the baseline
        if dyn.get("train_its") and row.get("train_its"):
            ratios.append(f"step x{row['train_its'] / dyn['train_its']:.2f}")
        if dyn.get("infer_s") and row.get("infer_s"):
            ratios.append(f"infer x{dyn['infer_s'] / row['infer_s']:.2f}")
        dyn["ratio"] = ", ".join(ratios)
    except torch.OutOfMemoryError:
        dyn["error"] = "out of GPU memory"
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        dyn["error"] = f"{type(exc).__name__}: {exc}"[:200]
        return dyn, True
    return dyn, False


def measure_bundles(args, device: torch.device, names: list[str], work: Path, ct_path: Path) -> tuple[list, bool]:
    """Every bundle's rows (and DynUNet's next to the baseline's); and whether any failed."""
    from monai_effseg.data import synthetic_dataset

    amps = {"on": [True], "off": [False], "both": [True, False]}[args.amp]
    augs = {"off": [False], "on": [True], "both": [False, True]}[args.gpu_augment]
    if device.type != "cuda" or args.no_loader:
        augs = [False]
    data, rows, failed = {}, [], False
    for name in names:
        bundle = BUNDLES_DIR / name
        kind = bundle_kind(bundle)
        if kind not in data:
            print(f"generating {args.data_cases} synthetic {kind} cases of {args.data_shape}...", flush=True)
            data[kind] = synthetic_dataset(kind, num_cases=args.data_cases, seed=0, shape=args.data_shape,
                                           root=work / "synthetic")  # fmt: skip
        for amp in amps:
            row, bad = bundle_row(bundle, args, device, amp, augs, data[kind], work, ct_path)
            rows.append(row)
            failed |= bad
            if name == BASELINE and not args.no_dynunet and not row.get("error"):
                dyn, bad = dynunet_row(args, device, amp, row, ct_path)
                rows.append(dyn)
                failed |= bad
            for r in rows[-2:]:
                for k in [k for k in r if k.startswith("_")]:
                    r.pop(k)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows, failed


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    device = pick_device(args)
    if device is None:
        return 0
    if args.smoke:
        args.data_shape, args.data_cases = [48, 48, 24], 3
        args.warmup, args.iters, args.loader_iters = 1, 2, 2
    ct_shape = (96, 96, 20) if args.smoke else CT_SHAPE
    names = args.bundles or sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs" / "train.json").is_file())
    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(f"synthetic data and caches under {work}", flush=True)
    ct_path = write_ct(work / "ct_512x512x100.nii.gz", ct_shape, CT_SPACING)
    try:
        rows, failed = measure_bundles(args, device, names, work, ct_path)
    finally:
        if tmp:
            tmp.cleanup()

    print()
    print(
        f"Training: the bundle's batch at its paper patch size; inference: one {'x'.join(map(str, ct_shape))} CT "
        f"({' x '.join(map(str, CT_SPACING))} mm). 'vs baseline': DynUNet's time / {BASELINE}'s (training step, "
        "inference); > 1: DynUNet is slower."
    )
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

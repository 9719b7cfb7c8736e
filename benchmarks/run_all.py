"""Regenerate ``docs/benchmarks.md``, ``docs/benchmarks.json`` and ``docs/figures/*.png`` from measurements on this
machine (issue 8, part 3).

    python benchmarks/run_all.py                          # every section (< 60 min on a 2-core CPU)
    python benchmarks/run_all.py --sections demos scatter # re-measure some sections, keep the others' saved results
    python benchmarks/run_all.py --report-only            # re-render the report and figures from benchmarks.json
    python benchmarks/run_all.py --quick                  # smoke run (tiny sizes, 1 bundle; a few minutes),
                                                          # written to /tmp/effseg_bench_quick, never to docs/

Sections (``--sections``; the report lists them in this order):

- ``profile``: params and FLOPs (2 x MAC) of every registered architecture next to the papers' tables (seed 000
  Table 1, seed 001 Tables 4.2 / 4.3, the nnU-Net reference 31,196,384 / 0.955T; ``bench_efficientnet_profile``).
- ``speed``: CPU forward time of the KiTS networks at 1x1x128^3 side by side (interleaved rounds), as a ratio to the
  nnU-Net baseline, next to the FLOP ratio (``bench_efficientnet_speed.measure``).
- ``lite_speed``: CPU time per output slice of every seed-001 preset at 256x256 (2.5D: 9 slices in, 1 out; 3D: 8 in,
  4 out), next to the thesis' Tables 4.4 / 4.5.
- ``inference``: whole-CT inference (``inference.json`` through ``monai_effseg.workflows.run_bundle``) of every
  bundle on a 512x512x100 CT at 0.78x0.78x3 mm (the shared abdominal CT resampled) with the demo model (network
  and fingerprint of the demo, fresh weights); ``--inference-net paper`` times the paper-size networks instead.
- ``demos``: every bundle's CPU demo (``train.json`` + ``demo.json``, as ``effseg demo`` runs it) under a time cap,
  validating every epoch: training time until the validation Dice reaches the threshold (KiTS kidney 0.85; LiTS
  liver 0.9, tumour 0.5), and the final hold-out Dice.
- ``sauron``: the compression curve (FLOPs, params and validation Dice per epoch) of the ``kits_sauron_nnunet`` demo
  (from this run's ``demos`` section when it ran, else its own demo run).
- ``scatter``: hold-out Dice against GFLOPs of each bundle's demo network (like seed 000's Fig. 9), from the saved
  ``demos`` results.
- ``gpu``: ``benchmarks/gpu_throughput.py`` when CUDA is available and the script exists, else "no GPU".

Time: the demos run after every other measuring section; each demo gets at most
``--demo-budget-s`` (300 s) of training + validation, less where needed so that the whole run fits
``--time-budget-min`` (56 min); nothing starts after ``--hard-limit-min`` (60 min): what is left is recorded as
skipped. The total elapsed time is printed and written into the report.

Every section is stored with when, where (CPU model, cores, threads, torch / monai versions, load) and how long it
was measured; a failing section stores its error and the run goes on. Results are merged into the saved JSON, so the
report can be regenerated (``--report-only``) or partly re-measured without re-running everything. The bundle runs'
own output goes to log files in the scratch folder (``--verbose`` shows it, ``--work-dir`` keeps it).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the other benchmark scripts, importable as modules
from bench_lite import SEED001_TABLES, time_presets  # noqa: E402  (seed 001 Tables 4.2-4.5 and timing)
from report_figures import (  # noqa: E402
    KIDNEY_THRESHOLD, LIVER_THRESHOLD, TUMOUR_THRESHOLD, plot_bars, plot_demo_curves, plot_lite, plot_sauron,
    plot_scatter, plot_speed,
)  # fmt: skip
from report_format import (  # noqa: E402
    Console, bundle_kind, cell, clean, cpu_seconds, error_message, fflops, fm, fnum, log_tail, machine_info,
    machine_line, md_table, now_iso, pct, redirect_output, slug, write_atomic,
)  # fmt: skip

SCHEMA = 1
# Measured and reported in this order; the demos come late so that their time caps can be sized to what is left.
SECTIONS = ("profile", "speed", "lite_speed", "inference", "demos", "sauron", "scatter", "gpu")
RUN_ORDER = SECTIONS
TITLES = {
    "profile": "Parameters and FLOPs next to the papers",
    "speed": "CPU forward time relative to the nnU-Net baseline",
    "lite_speed": "Seed-001 presets: CPU time per slice",
    "inference": "Full-volume inference per bundle",
    "demos": "Demo time-to-Dice per bundle",
    "sauron": "Sauron compression curve",
    "scatter": "Dice against FLOPs",
    "gpu": "GPU throughput",
}
BUNDLES = (
    "kits_nnunet_baseline", "kits_efficientunet", "kits_residual_unet", "kits_unet_cascade", "kits_mss_unet",
    "kits_sauron_nnunet", "lits_mobilenet_unet", "lits_shufflenet_unet", "lits_dsts_unet",
)  # fmt: skip
QUICK_BUNDLES = ("kits_sauron_nnunet",)
SPEED_NETS = (
    "nnunet", "efficientunet-b0", "efficientunetv2-s", "fullyefficientunet-b0", "fullyefficientunetv2-s",
    "residual_unet_kits19", "mss_unet", "sauron_nnunet",
)  # fmt: skip
QUICK_PROFILE = ("nnunet", "efficientunet-b0", "mobilenetv2-2d-top", "dsts-3d-top", "mss_unet")
QUICK_LITE = ("mobilenetv2-2d-top", "dsts-3d-top")
OTHER_NETS = ("mss_unet", "residual_unet_kits19", "unet_cascade_kits19", "sauron_nnunet")

# Reference figures of the other architectures (reference/architectures.md, reference/methods.md, the seeds).
OTHER_REFERENCES = {
    "nnunet": "31,196,384 params, 0.955T (2xMAC) at 1x128^3 (reference/architectures.md section 1; Table 1: 0.958T)",
    "mss_unet": "seed 003 reports no parameter or FLOP count",
    "residual_unet_kits19": "seed 002 reports no parameter or FLOP count",
    "unet_cascade_kits19": "seed 002 reports no parameter or FLOP count (two ResidualUNets; FLOPs: stage 1 only)",
    "sauron_nnunet": "seed 004 gives no size of the unpruned net; it reports the pruning result only: \"reduced the "
    "FLOPs of nnUNet inference by over 90% without sacrificing the segmentation quality\" (abstract; the results "
    "tables could not be read, reference/methods.md section 1.5)",
}
SAURON_CLAIM = (
    "Seed 004 / Valverde et al. (abstract and Neurocomputing highlights): Sauron \"reduced the FLOPs of nnUNet "
    "inference by over 90% without sacrificing the segmentation quality\", and was \"the only method that achieved a "
    "reduction in model size of over 90% without deteriorating substantially the performance\". The per-dataset "
    "tables are not available (reference/methods.md section 1.5), so these are the only reference numbers."
)
CT_SOURCE = REPO.parent / "shared" / "data" / "abdomen_ct_3mm" / "ct.nii.gz"


# ------------------------------------------------------------------------------------------------------------ settings
@dataclass
class Settings:
    quick: bool = False
    threads: int = 2
    device: str = "cpu"
    bundles: tuple[str, ...] = BUNDLES
    profile_names: Optional[tuple[str, ...]] = None  # None: every registered network
    flops_downscale: int = 2
    speed_nets: tuple[str, ...] = SPEED_NETS
    speed_size: int = 128
    speed_rounds: int = 2
    speed_modes: tuple[str, ...] = ("eager",)
    lite_presets: Optional[tuple[str, ...]] = None  # None: all 21
    lite_size: int = 256
    lite_repeats: int = 3
    ct_shape: tuple[int, int, int] = (512, 512, 100)
    ct_spacing: tuple[float, float, float] = (0.78125, 0.78125, 3.0)
    inference_net: str = "demo"
    demo_budget_s: float = 300.0
    time_budget_s: float = 56 * 60.0
    hard_limit_s: float = 60 * 60.0  # nothing new starts after this (sections, bundles): recorded as skipped
    val_interval: int = 1
    demo_overrides: dict = field(default_factory=dict)
    verbose: bool = False
    gpu_script: Path = HERE / "gpu_throughput.py"


@dataclass
class Context:
    settings: Settings
    log: Callable[[str], None]
    work: Path
    started: float
    results: dict  # the merged results (saved + this run)
    ran: list = field(default_factory=list)  # sections measured in this invocation
    live: dict = field(default_factory=dict)  # objects shared between this invocation's sections

    def deadline_left(self) -> float:
        return self.settings.time_budget_s - (time.perf_counter() - self.started)

    def past_hard_limit(self, margin_s: float = 0.0) -> bool:
        return time.perf_counter() - self.started + margin_s > self.settings.hard_limit_s

    def log_file(self, name: str) -> Optional[Path]:
        return None if self.settings.verbose else self.work / "logs" / f"{name}.log"


def bundle_root(bundle: str) -> Path:
    return REPO / "bundles" / bundle


# ------------------------------------------------------------------------------------------------- section: profile
def registered_networks() -> list[str]:
    import monai_effseg.pruning  # noqa: F401  (registers "sauron_nnunet")
    from monai_effseg.encoders.lite import PRESETS
    from monai_effseg.nets import NETS
    from monai_effseg.nets.thesis_table1 import THESIS_TABLE1

    names = [n for n in THESIS_TABLE1 if n in NETS] + [n for n in PRESETS if n in NETS]
    names += [n for n in OTHER_NETS if n in NETS and n not in names]
    return names + [n for n in NETS.names() if n not in names]


def measure_profile(ctx: Context) -> dict:
    import bench_efficientnet_profile as bench

    import monai_effseg.pruning  # noqa: F401  (registers "sauron_nnunet")
    from monai_effseg.encoders.lite import PRESETS
    from monai_effseg.nets.thesis_table1 import THESIS_TABLE1

    s = ctx.settings
    names = list(s.profile_names or registered_networks())
    result = bench.measure(names, s.flops_downscale, keep_going=True, log=ctx.log)
    lite = {}
    for p in result["profiles"]:
        if p["name"] in PRESETS:
            preset = PRESETS[p["name"]]
            lite[p["name"]] = {"table": preset.table, "caption": preset.caption}
    return {
        "flops_downscale": s.flops_downscale,
        "profiles": result["profiles"],
        "table1": [r for r in result["table1"] if r["name"] in THESIS_TABLE1],
        "lite": lite,
        "errors": result["errors"],
    }


def render_profile(data: dict, figures: Path) -> str:
    profiles = {p["name"]: p for p in data["profiles"]}
    out = [
        "FLOPs = 2 x multiply-accumulates of the convolutions (dense, depthwise, transposed) and linear layers, counted "
        "by fvcore in eval mode (deep supervision heads off) at each network's paper input; 3D inputs are counted at "
        f"1/{data['flops_downscale']} size per axis and scaled where every level keeps integer sizes (exact for conv "
        "MACs). \"Used params\" is what the module has; seed 000's Table 1 also counted the ImageNet head its "
        "EfficientNet encoders carried but never ran, so the \"with head\" column is the one to compare with it.",
        "",
        "**Seed 000 (thesis) Table 1**: EfficientUNet family and the nnU-Net baseline, 1x1x128^3, 4 classes.",
        "",
    ]
    rows = []
    for r in data["table1"]:
        rows.append([
            r["name"], f"{r['used_params']:,}", fnum(r["reference_used_params_m"], 3, "M"), f"{r['params_m']:.3f}M",
            fnum(r["table1_params_m"], 3, "M"),
            pct((r["params_m"] / r["table1_params_m"] - 1) * 100, 2) if r["table1_params_m"] else "-",
            f"{fnum(r['enc_params_m'], 3, 'M')} / {fnum(r['dec_params_m'], 3, 'M')}",
            f"{fnum(r['table1_enc_params_m'], 3, 'M')} / {fnum(r['table1_dec_params_m'], 3, 'M')}",
            f"{r['flops_t']:.3f}T", fnum(r["table1_flops_t"], 3, "T"), pct(r["flops_diff_pct"]),
            fnum(r["reference_2xmac_t"], 3, "T"), pct(r["reference_diff_pct"], 2),
        ])  # fmt: skip
    out.append(md_table(
        ["network", "used params", "reference used", "params with head", "Table 1", "diff", "enc / dec params",
         "Table 1 enc / dec", "FLOPs", "Table 1 FLOPs", "diff", "reference 2xMAC", "diff"], rows))  # fmt: skip
    lite_rows = []
    for name, meta in data.get("lite", {}).items():
        p = profiles[name]
        ref_flops, ref_params = SEED001_TABLES.get(name, (None, None))
        macs = p["flops"]["network"] / 2
        lite_rows.append([
            name, meta["table"], "x".join(map(str, p["input"][1:])), f"{p['params']['network'] / 1e6:.3f}M",
            fm(ref_params, 2), pct((p["params"]["network"] / ref_params - 1) * 100) if ref_params else "-",
            fflops(p["flops"]["network"]), fflops(macs), fflops(ref_flops),
            f"{macs / ref_flops:.1f}x" if ref_flops else "-",
        ])  # fmt: skip
    if lite_rows:
        out += [
            "",
            "**Seed 001 Tables 4.2 (2D, 9x256x256) and 4.3 (3D, 1x8x256x256)**: LiteUNet presets (one stage, 2 "
            "classes). The thesis counted with sovrasov/flops-counter.pytorch, which reports multiply-accumulates, so "
            "our MACs (= FLOPs / 2) are the column to compare. `benchmarks/bench_lite.py` assigns each gap over 10% "
            "its causes, and docs/deviations.md (Seed 001 fidelity) explains them: the thesis' counter missed most "
            "encoder convolutions, our decoder is a reading of an unspecified block, and Table 4.2 swaps its top and "
            "default rows.",
            "",
            md_table(["preset", "stage table", "input", "params", "thesis", "diff", "FLOPs (2xMAC)", "MACs",
                      "thesis \"FLOPs\"", "MACs / thesis"], lite_rows),
        ]  # fmt: skip
    other_rows = []
    for name in ("nnunet",) + OTHER_NETS:
        if name in profiles:
            p = profiles[name]
            other_rows.append([name, "x".join(map(str, p["input"][1:])), f"{p['params']['network']:,}",
                               fflops(p["flops"]["network"]), OTHER_REFERENCES.get(name, "-")])  # fmt: skip
    if other_rows:
        out += ["", "**Other architectures** (at each paper's training patch):", "",
                md_table(["network", "input", "params", "FLOPs (2xMAC)", "paper / reference"], other_rows)]
    rest = [n for n in profiles if n not in {r["name"] for r in data["table1"]} and n not in data.get("lite", {})
            and n not in ("nnunet",) + OTHER_NETS]  # fmt: skip
    if rest:
        out += ["", md_table(["network", "input", "params", "FLOPs (2xMAC)"],
                             [[n, "x".join(map(str, profiles[n]["input"][1:])), f"{profiles[n]['params']['network']:,}",
                               fflops(profiles[n]["flops"]["network"])] for n in rest])]  # fmt: skip
    if data.get("errors"):
        out += ["", "Networks that failed: " + "; ".join(f"`{k}`: {v}" for k, v in data["errors"].items())]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------- section: speed
def measure_speed(ctx: Context) -> dict:
    import bench_efficientnet_speed as bench

    import monai_effseg.pruning  # noqa: F401  (registers "sauron_nnunet")
    s = ctx.settings
    return bench.measure(s.speed_nets, s.speed_modes, s.speed_size, s.threads, s.speed_rounds, log=ctx.log)


def render_speed(data: dict, figures: Path) -> str:
    size = data["input"][2]
    rows = [[r["name"], r["mode"], fnum(r["wall_min_s"], 2), fnum(r["wall_median_s"], 2), fnum(r["cpu_min_s"], 2),
             fnum(r["ratio_wall_min"]), fnum(r["ratio_wall_median"]), fnum(r["ratio_cpu_min"]), fflops(r["flops"]),
             fnum(r["flop_ratio"])] for r in data["rows"]]  # fmt: skip
    out = [
        f"Batch 1, 1x1x{size}^3, eval mode, `torch.no_grad()`, {data['threads']} threads, deep supervision off, "
        f"allocator {data['allocator']}; {data.get('warmup', 1)} untimed warm-up round(s), then {data['rounds']} "
        "interleaved rounds (every network once per round, so load from other processes hits all alike). Ratios are "
        "to the nnU-Net baseline "
        f"(`{data['baseline']}`) in the same mode. Load average {[round(v, 2) for v in data['load_before']]} before, "
        f"{[round(v, 2) for v in data['load_after']]} after (other processes' load stretches wall times; CPU time "
        "less so).",
        "",
        md_table(["network", "mode", "wall min (s)", "wall median (s)", "CPU min (s)", "time ratio (wall min)",
                  "time ratio (wall median)", "time ratio (CPU)", "FLOPs", "FLOP ratio"], rows),
    ]  # fmt: skip
    fig = plot_speed(data, figures / "speed_ratio.png")
    if fig:
        out += ["", f"![CPU time ratio and FLOP ratio to nnU-Net](figures/{fig.name})"]
    out += ["", "Reference (reference/architectures.md section 5, 2 threads, shared 2-core VM): PlainConvUNet 7.94 s "
                "(1.00), EffUNet-b0 sketch 0.748, EffUNetV2-S sketch 0.802, MONAI FlexibleUNet-b0 0.275."]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- section: lite_speed
def measure_lite_speed(ctx: Context) -> dict:
    from monai_effseg.encoders.lite import PRESETS

    s = ctx.settings
    rows = time_presets(s.lite_presets or tuple(PRESETS), s.lite_size, s.threads, s.lite_repeats, log=ctx.log)
    return {"size": s.lite_size, "threads": s.threads, "repeats": s.lite_repeats, "rows": rows,
            "load_after": list(os.getloadavg())}  # fmt: skip


def render_lite_speed(data: dict, figures: Path) -> str:
    size = data["size"]
    rows = []
    for r in data["rows"]:
        if "error" in r:
            rows.append([r["name"], "failed", r["error"], "", "", "", ""])
            continue
        thesis = r["thesis_per_slice_s"]
        rows.append([r["name"], "2.5D" if r["dims"] == 2 else "3D", "x".join(map(str, r["input"][1:])),
                     fnum(r["forward_median_s"] * 1e3, 1), fnum(r["per_slice_s"] * 1e3, 1),
                     fnum(thesis * 1e3, 0) if thesis else "NA",
                     f"{r['per_slice_s'] / thesis:.2f}" if thesis else "-"])  # fmt: skip
    out = [
        f"One LiteUNet stage (the bundles run two: liver, then tumour), batch 1, eval, `torch.no_grad()`, "
        f"{data['threads']} threads, median of {data['repeats']} after a warm-up. 2.5D: 9x{size}x{size} in, the middle "
        f"slice out; 3D: 8x{size}x{size} in, 4 slices out, so per slice = forward / 4 (the thesis' t / (b z)). The "
        "thesis times (Tables 4.4 / 4.5, prediction, mean per slice) were taken on its own hardware (section 4: "
        "GTX 1080 Ti workstation; a Core i7-6700K for the CPU tests), so only the ordering is comparable.",
        "",
        md_table(["preset", "kind", "input", "forward (ms)", "per slice (ms)", "thesis per slice (ms)",
                  "ours / thesis"], rows),
    ]  # fmt: skip
    fig = plot_lite(data, figures / "lite_per_slice.png")
    if fig:
        out += ["", f"![per-slice CPU time of the seed-001 presets](figures/{fig.name})"]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- section: inference
def make_ct(path: Path, shape: Sequence[int], spacing: Sequence[float]) -> dict:
    """A CT of ``shape`` (x, y, z) at ``spacing`` mm, RAS, int16 HU: the shared 3 mm abdominal CT resampled (linear)
    and centre-cropped / padded with air, or, where that file is missing, a synthetic body ellipse with kidneys."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    shape, spacing = tuple(int(v) for v in shape), tuple(float(v) for v in spacing)
    if CT_SOURCE.is_file():
        src = nib.as_closest_canonical(nib.load(str(CT_SOURCE)))
        data = np.asanyarray(src.dataobj).astype(np.float32)
        zoom = [z / s for z, s in zip(src.header.get_zooms()[:3], spacing)]
        data = ndimage.zoom(data, zoom, order=1)
        out = np.full(shape, -1024.0, dtype=np.float32)
        src_sl, dst_sl = [], []
        for n_src, n_dst in zip(data.shape, shape):
            if n_src >= n_dst:
                start = (n_src - n_dst) // 2
                src_sl.append(slice(start, start + n_dst))
                dst_sl.append(slice(0, n_dst))
            else:
                start = (n_dst - n_src) // 2
                src_sl.append(slice(0, n_src))
                dst_sl.append(slice(start, start + n_src))
        out[tuple(dst_sl)] = data[tuple(src_sl)]
        source = f"{CT_SOURCE} (3 mm, resampled)"
    else:
        rng = np.random.default_rng(0)
        x, y = np.ogrid[: shape[0], : shape[1]]
        body = ((x - shape[0] / 2) / (0.45 * shape[0])) ** 2 + ((y - shape[1] / 2) / (0.38 * shape[1])) ** 2 <= 1
        out = np.broadcast_to(np.where(body, 40.0, -1000.0)[..., None], shape).astype(np.float32).copy()
        for cx in (0.32, 0.68):
            kidney = ((x - cx * shape[0]) / (0.06 * shape[0])) ** 2 + ((y - 0.62 * shape[1]) / (0.08 * shape[1])) ** 2
            out[kidney[..., None].repeat(shape[2], 2) <= 1] = 180.0
        out += rng.normal(0, 15, size=shape).astype(np.float32)
        source = "synthetic body ellipse with two kidneys"
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    image = nib.Nifti1Image(np.clip(out, -1024, 3071).astype(np.int16), affine)
    image.set_data_dtype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return {"source": source, "shape": list(shape), "spacing": list(spacing), "file": str(path)}


class WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 20:
            self.messages.append(f"{record.name}: {record.getMessage()}"[:300])


def device_overrides(settings: Settings) -> dict:
    """Bundle ids that pin a workflow to ``settings.device`` (``auto``: the bundle's own choice)."""
    if settings.device == "auto":
        return {}
    return {"device": f"$torch.device('{settings.device}')", "amp": settings.device.startswith("cuda")}


def inference_overrides(bundle: str, net: str, ckpt_dir: Path) -> dict:
    """``inference.json`` overrides for the ``demo`` network (the demo overlay's ``demo_inference_overrides``, with
    its checkpoint and fingerprint in ``ckpt_dir``) or the ``paper`` network; mirror TTA off."""
    from monai.bundle import ConfigParser

    root = bundle_root(bundle)
    overrides: dict = {}
    if net == "demo":
        demo = ConfigParser()
        demo.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "demo.json")])
        demo.update({"bundle_root": str(root), "ckpt_dir": str(ckpt_dir)})
        overrides = dict(demo.get_parsed_content("demo_inference_overrides"))
    if "mirror_axes" in json.loads((root / "configs" / "inference.json").read_text()):
        overrides["mirror_axes"] = []
    return overrides


def demo_fingerprint(bundle: str, work: Path) -> None:
    """Write ``work/fingerprint.json`` as the bundle's demo training does (from its synthetic training split)."""
    from monai.bundle import ConfigParser

    root = bundle_root(bundle)
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "demo.json")])
    parser.update({"bundle_root": str(root), "ckpt_dir": str(work), "output_dir": str(work)})
    parser.get_parsed_content("data_fingerprint" if "data_fingerprint" in parser else "fingerprint")


def run_inference(bundle: str, scans: Path, ctx: Context) -> dict:
    import nibabel as nib
    import numpy as np
    import torch
    from monai.bundle import ConfigParser

    from monai_effseg.workflows import run_bundle

    s = ctx.settings
    root = bundle_root(bundle)
    work = ctx.work / "inference" / bundle
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    overrides = inference_overrides(bundle, s.inference_net, work)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root), **overrides})
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), work / "model.pt")
    del parser
    overrides["ckpt_path"] = str(work / "model.pt")
    uses_fingerprint = "fingerprint_path" in json.loads((root / "configs" / "inference.json").read_text())
    if s.inference_net == "demo" and uses_fingerprint:
        demo_fingerprint(bundle, work)  # what the demo's training writes next to its checkpoint
        overrides["fingerprint_path"] = str(work / "fingerprint.json")
    elif uses_fingerprint:
        overrides["fingerprint_path"] = str(work / "no_fingerprint.json")  # the published default
    overrides.update(device_overrides(s))
    warnings = WarningCollector()
    logging.getLogger("monai_effseg").addHandler(warnings)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), cpu_seconds()
    try:
        with redirect_output(ctx.log_file(f"inference_{bundle}")):
            workflow = run_bundle(root, ["inference.json"], "inference", input_dir=str(scans),
                                  output_dir=str(work / "segs"), **overrides)  # fmt: skip
    finally:
        logging.getLogger("monai_effseg").removeHandler(warnings)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    try:
        params = sum(p.numel() for p in workflow.parser.get_parsed_content("network").parameters())
    except Exception:  # noqa: BLE001
        params = None
    spacing = None
    if uses_fingerprint:
        with contextlib.suppress(Exception):
            spacing = workflow.parser.get_parsed_content("fingerprint").get("spacing")
    scan = sorted(scans.glob("*.nii.gz"))[0]
    outputs = sorted((work / "segs").rglob("*.nii*"))
    row = {"bundle": bundle, "network": s.inference_net, "params": params, "spacing": spacing,
           "wall_s": wall, "cpu_s": cpu,
           "load_before": load_before, "load_after": os.getloadavg()[0], "warnings": warnings.messages,
           "outputs": len(outputs)}  # fmt: skip
    if outputs:
        src, seg = nib.load(str(scan)), nib.load(str(outputs[0]))
        labels = np.unique(np.asanyarray(seg.dataobj))
        row.update(shape_equal=seg.shape == src.shape, affine_equal=bool(np.allclose(seg.affine, src.affine)),
                   labels=[int(v) for v in labels[:10]])  # fmt: skip
    shutil.rmtree(work / "segs", ignore_errors=True)
    return row


def measure_inference(ctx: Context) -> dict:
    s = ctx.settings
    scans = ctx.work / "inference" / "scans"
    ct = make_ct(scans / "ct_512x512x100.nii.gz" if not s.quick else scans / "ct_quick.nii.gz", s.ct_shape,
                 s.ct_spacing)  # fmt: skip
    ctx.log(f"inference input: {ct['shape']} at {ct['spacing']} mm from {ct['source']}")
    rows = []
    for bundle in s.bundles:
        if ctx.past_hard_limit(margin_s=60.0):
            rows.append({"bundle": bundle, "error": "skipped: the run reached its time limit "
                         f"({s.hard_limit_s / 60:g} min)"})  # fmt: skip
            ctx.log(f"inference {bundle}: skipped (time limit)")
            continue
        try:
            rows.append(run_inference(bundle, scans, ctx))
            ctx.log(f"inference {bundle}: {rows[-1]['wall_s']:.1f} s")
        except Exception as exc:  # noqa: BLE001
            rows.append({"bundle": bundle, "error": error_message(exc), "traceback": traceback.format_exc()[-3000:],
                         "log_tail": log_tail(ctx.log_file(f"inference_{bundle}"))})  # fmt: skip
            ctx.log(f"inference {bundle} failed: {exc}")
    return {"ct": ct, "network": s.inference_net, "threads": s.threads, "device": s.device, "rows": rows}


def render_inference(data: dict, figures: Path) -> str:
    ct = data["ct"]
    rows = []
    for r in data["rows"]:
        if "error" in r:
            rows.append([r["bundle"], ("" if r["error"].startswith("skipped") else "failed: ") + r["error"]] + [""] * 6)
            continue
        note = "; ".join(r.get("warnings", [])[:2])
        spacing = " x ".join(f"{v:.2f}" for v in r["spacing"]) if r.get("spacing") else "-"
        rows.append([r["bundle"], f"{r['params']:,}" if r.get("params") else "-", spacing, fnum(r["wall_s"], 1),
                     fnum(r["cpu_s"], 1), f"{r.get('shape_equal')} / {r.get('affine_equal')}", r.get("labels"),
                     note or "-"])  # fmt: skip
    if data["network"] == "demo":
        which = (
            "the demo model: the demo overlay's network and preprocessing (`demo_inference_overrides` and the "
            "fingerprint the demo computes from its synthetic training set, so KiTS bundles resample the CT to the "
            "demo's grid; LiTS bundles resize slices to the demo's image size), fresh seeded weights"
        )
    else:
        which = "the paper's full-size network with the published default fingerprint, fresh seeded weights"
    out = [
        f"One CT of {'x'.join(map(str, ct['shape']))} voxels at {' x '.join(f'{v:g}' for v in ct['spacing'])} mm "
        f"({ct['source']}), run through each bundle's `configs/inference.json` with `monai_effseg.workflows.run_bundle`: "
        "load, preprocessing, sliding window, inversion to the input grid, post-processing, NIfTI writing, "
        f"{data['threads']} threads on `{data['device']}`, mirror TTA off (it multiplies the sliding-window time by "
        f"up to 8). Network: {which}. The time does not depend on the weights, except that two-stage pipelines "
        "(cascade, liver then tumour) run stage 2 only where stage 1 found something: see the labels and notes. "
        "`--inference-net paper` times the paper-size networks instead (far beyond the 60-minute budget on 2 "
        "cores).",
        "",
        md_table(["bundle", "params", "network grid (mm)", "wall (s)", "CPU (s)", "output shape / affine = input",
                  "labels", "notes"], rows),
    ]  # fmt: skip
    fig = plot_bars([(r["bundle"], r["wall_s"]) for r in data["rows"] if "wall_s" in r], "seconds",
                    "Full-volume CPU inference", figures / "inference_time.png")  # fmt: skip
    if fig:
        out += ["", f"![inference time per bundle](figures/{fig.name})"]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------- section: demos
class DemoMonitor:
    """Times one demo run (``workflow.run()`` of ``train.json`` + ``demo.json``), whatever its number of stages.

    While active it wraps ``ignite.engine.Engine.run``: a MONAI ``Trainer`` run is a *stage* (it gets a share of the
    time left until ``deadline`` and is stopped after the epoch that would overrun it, or mid-epoch past 1.5 x its
    share); an ``Evaluator`` run inside a stage is a *validation* (timed, its metrics recorded with the training time
    so far, validation excluded); any other engine run (the hold-out inference) is timed as *other*. It also wraps
    ``monai_effseg.workflows.bundle_workflow`` so that the workflows a demo starts itself (stage 2 of a cascade or of
    a liver-then-tumour bundle) get ``train_overrides`` / ``infer_overrides`` too.
    """

    def __init__(self, deadline: float, n_stages: int, train_overrides: dict, infer_overrides: dict) -> None:
        self.t0 = time.perf_counter()
        self.deadline = deadline
        self.n_stages = n_stages
        self.train_overrides = train_overrides
        self.infer_overrides = infer_overrides
        self.stages: list[dict] = []
        self.validations: list[dict] = []
        self.others: list[dict] = []
        self._trainer = None
        self._stage: Optional[dict] = None
        self._train_done = 0.0

    def __enter__(self) -> DemoMonitor:
        from ignite.engine import Engine

        import monai_effseg.workflows as workflows

        self._engine_run, self._bundle_workflow = Engine.run, workflows.bundle_workflow
        monitor = self

        def run(engine, *args, **kwargs):
            return monitor._run(engine, *args, **kwargs)

        def bundle_workflow(root, configs, workflow_type="train", **overrides):
            extra = monitor.train_overrides if workflow_type == "train" else monitor.infer_overrides
            return monitor._bundle_workflow(root, configs, workflow_type, **{**overrides, **extra})

        Engine.run = run
        workflows.bundle_workflow = bundle_workflow
        return self

    def __exit__(self, *exc) -> None:
        from ignite.engine import Engine

        import monai_effseg.workflows as workflows

        Engine.run = self._engine_run
        workflows.bundle_workflow = self._bundle_workflow

    def _run(self, engine, *args, **kwargs):
        from monai.engines import Evaluator, Trainer

        if isinstance(engine, Trainer) and self._trainer is None:
            return self._run_stage(engine, args, kwargs)
        if isinstance(engine, Evaluator) and self._trainer is not None:
            return self._run_validation(engine, args, kwargs)
        start = time.perf_counter()
        try:
            return self._engine_run(engine, *args, **kwargs)
        finally:
            self.others.append({"engine": type(engine).__name__, "seconds": time.perf_counter() - start})

    def _run_stage(self, engine, args, kwargs):
        from ignite.engine import Events

        now = time.perf_counter()
        remaining = max(1, self.n_stages - len(self.stages))
        stage = {"index": len(self.stages), "budget_s": max(0.0, (self.deadline - now) / remaining), "start": now,
                 "validation_s": 0.0, "epochs": 0, "terminated": None, "last_end": now}  # fmt: skip
        self.stages.append(stage)
        self._trainer, self._stage = engine, stage

        def started(e) -> None:
            stage["start"] = stage["last_end"] = time.perf_counter()
            stage["max_epochs"] = e.state.max_epochs

        def epoch_completed(e) -> None:
            t = time.perf_counter()
            stage["epochs"] = e.state.epoch
            epoch_s, stage["last_end"] = t - stage["last_end"], t
            if e.state.epoch < e.state.max_epochs and not e.should_terminate:
                if t - stage["start"] + epoch_s > stage["budget_s"]:
                    stage["terminated"] = f"time cap: stopped after epoch {e.state.epoch} of {e.state.max_epochs}"
                    e.terminate()

        def iteration_completed(e) -> None:  # the first epoch always completes: its checkpoint is the fallback
            if stage["terminated"] is None and stage["epochs"] >= 1 and (
                time.perf_counter() - stage["start"] > 1.5 * stage["budget_s"] + 10
            ):
                stage["terminated"] = f"hard time cap: stopped in epoch {e.state.epoch} (iteration {e.state.iteration})"
                e.terminate()

        handlers = [(Events.STARTED, started), (Events.EPOCH_COMPLETED, epoch_completed),
                    (Events.ITERATION_COMPLETED, iteration_completed)]  # fmt: skip
        for event, fn in handlers:
            engine.add_event_handler(event, fn)
        try:
            return self._engine_run(engine, *args, **kwargs)
        finally:
            for event, fn in handlers:
                if engine.has_event_handler(fn, event):
                    engine.remove_event_handler(fn, event)
            stage["end_s"] = time.perf_counter() - self.t0
            stage["wall_s"] = time.perf_counter() - stage["start"]
            stage["train_s"] = stage["wall_s"] - stage["validation_s"]
            self._train_done += stage["train_s"]
            stage.pop("last_end", None)
            stage.pop("start", None)
            self._trainer, self._stage = None, None

    def _run_validation(self, engine, args, kwargs):
        start = time.perf_counter()
        try:
            return self._engine_run(engine, *args, **kwargs)
        finally:
            end = time.perf_counter()
            stage = self._stage
            stage["validation_s"] += end - start
            stage_train = end - stage["start"] - stage["validation_s"]
            metrics = {}
            for key, value in engine.state.metrics.items():
                with contextlib.suppress(TypeError, ValueError):
                    metrics[key] = float(value)
            self.validations.append({
                "stage": stage["index"], "epoch": int(self._trainer.state.epoch), "stage_train_s": stage_train,
                "train_s": self._train_done + stage_train, "wall_s": end - self.t0, "validation_s": end - start,
                "metrics": metrics,
            })  # fmt: skip


def count_stages(bundle: str) -> int:
    """Training stages in the demo's run list: the trainer itself plus every stage it starts."""
    run = json.loads((bundle_root(bundle) / "configs" / "demo.json").read_text()).get("run", [])
    pattern = re.compile(r"trainer\.run\(|train_stage\(|train_cascade_stage\(")
    n = sum(1 for item in run if isinstance(item, str) and pattern.search(item))
    return max(1, n)


def stage_names(bundle: str, n: int) -> list[str]:
    if bundle_kind(bundle) == "lits" and n == 2:
        return ["liver", "tumour"]
    return ["training"] if n == 1 else [f"stage {i + 1}" for i in range(n)]


def dice_targets(bundle: str, n_stages: int) -> list[dict]:
    """What time-to-Dice measures: KiTS kidney 0.85 on the last stage; LiTS liver 0.9 (stage 1), tumour 0.5 (2)."""
    if bundle_kind(bundle) == "lits":
        return [{"name": "liver", "stage": 0, "threshold": LIVER_THRESHOLD},
                {"name": "tumour", "stage": min(1, n_stages - 1), "threshold": TUMOUR_THRESHOLD}]  # fmt: skip
    return [{"name": "kidney", "stage": n_stages - 1, "threshold": KIDNEY_THRESHOLD}]


def validation_dice(metrics: dict, kind: str) -> Optional[float]:
    """The validation Dice a target is judged on: KiTS "kidney and masses" (KiTS21) or "kidney" (KiTS19, label > 0);
    LiTS: the stage's foreground Dice (``val_dice``: liver in stage 1, tumour in stage 2)."""
    suffixes = ("_kidney_and_mass_dice", "_kidney_dice") if kind == "kits" else ("val_dice",)
    for suffix in suffixes:
        for key, value in metrics.items():
            if key.endswith(suffix) and value is not None and math.isfinite(value):
                return value
    return None


def holdout_primary(holdout: dict, kind: str) -> dict:
    if kind == "lits":
        return {"liver": holdout.get("liver_dice"), "tumour": holdout.get("tumor_dice")}
    return {"kidney": holdout.get("kidney_and_mass_dice", holdout.get("kidney_dice")),
            "tumour": holdout.get("tumor_dice")}  # fmt: skip


def leaf_flops(module, shape: Sequence[int]) -> int:
    from monai_effseg.profile import count_flops
    from monai_effseg.pruning import conv_flops

    try:
        return conv_flops(module, shape)  # shapes only (meta device): free at any size
    except Exception:  # noqa: BLE001 - fall back to fvcore with a real forward pass
        return count_flops(module, shape)["network"]


def bundle_network_flops(bundle: str, configs: Sequence[str], overrides: Optional[dict] = None) -> dict:
    """Params and FLOPs (2 x MAC) of one forward pass of a bundle's ``network_def`` at its patch: both stages of a
    cascade (stage 2 with its 2 input channels) or of a liver-then-tumour network (one 2.5D / 3D slab)."""
    from monai.bundle import ConfigParser

    root = bundle_root(bundle)
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / c) for c in configs])
    parser.update({"bundle_root": str(root), **(overrides or {})})
    net = parser.get_parsed_content("network_def")
    if hasattr(net, "stage1") and hasattr(net, "stage2"):
        parts = [("stage1", net.stage1, (1, 1, *parser.get_parsed_content("stage1_patch"))),
                 ("stage2", net.stage2, (1, 2, *parser.get_parsed_content("stage2_patch")))]  # fmt: skip
    elif hasattr(net, "liver") and hasattr(net, "tumour"):
        size = parser.get_parsed_content("image_size")
        shape = (1, 9, size, size) if net.liver.spatial_dims == 2 else (1, 1, net.liver.in_slices, size, size)
        parts = [("liver", net.liver, shape), ("tumour", net.tumour, shape)]
    else:
        parts = [("network", net, (1, 1, *parser.get_parsed_content("patch_size")))]
    out = {name: {"input": list(shape), "flops": leaf_flops(module, shape)} for name, module, shape in parts}
    return {"params": sum(p.numel() for p in net.parameters()), "flops": sum(p["flops"] for p in out.values()),
            "parts": out}  # fmt: skip


def evaluate_renamed(predictions: Path, holdout_dir: Path, out_dir: Path, protocol: Optional[str]) -> dict:
    """``evaluate_datalist`` of the hold-out set against copies of ``predictions`` named ``pred_<case number>``."""
    from monai_effseg.data import build_datalist
    from monai_effseg.metrics.report import evaluate_datalist

    renamed = out_dir / "predictions"
    renamed.mkdir(parents=True, exist_ok=True)
    for path in predictions.iterdir():
        digits = re.findall(r"\d+", path.name.split(".")[0])
        if digits and path.name.endswith((".nii", ".nii.gz")):
            shutil.copy(path, renamed / f"pred_{int(digits[-1])}{''.join(path.suffixes)}")
    return evaluate_datalist(build_datalist(holdout_dir, "auto"), renamed, out_dir, protocol=protocol or "kits21")


def quick_demo_overrides(bundle: str) -> dict:
    demo = json.loads((bundle_root(bundle) / "configs" / "demo.json").read_text())
    out: dict = {"max_epochs": 2, "iterations_per_epoch": 3}
    for key, cases in (("dataset_dir", 8), ("holdout_dir", 2)):
        if isinstance(demo.get(key), str):
            out[key] = re.sub(r"num_cases=\d+", f"num_cases={cases}", demo[key])
    return out


def run_demo(bundle: str, ctx: Context, budget_s: float) -> dict:
    """One bundle's demo under ``budget_s`` (training + validation; the hold-out evaluation comes on top)."""
    import torch

    from monai_effseg.workflows import bundle_workflow

    s = ctx.settings
    torch.set_num_threads(s.threads)
    root = bundle_root(bundle)
    work = ctx.work / "demos" / bundle
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    kind, n_stages = bundle_kind(bundle), count_stages(bundle)
    quick = quick_demo_overrides(bundle) if s.quick else {}
    train_overrides = {"val_interval": s.val_interval, **device_overrides(s),
                       **{k: v for k, v in quick.items() if k not in ("dataset_dir", "holdout_dir")},
                       **s.demo_overrides}  # fmt: skip
    overrides = {"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"), **quick, **train_overrides}
    log_file = ctx.log_file(f"demo_{bundle}")
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), cpu_seconds()
    monitor = DemoMonitor(t0 + budget_s, n_stages, train_overrides, device_overrides(s))
    run_error, holdout_dir, protocol = None, None, None
    with redirect_output(log_file), monitor:
        workflow = bundle_workflow(root, ["train.json", "demo.json"], "train", **overrides)
        workflow.initialize()
        try:
            workflow.run()
        except Exception as exc:  # noqa: BLE001 - keep what the training stages measured
            run_error = error_message(exc) + "\n" + traceback.format_exc()[-2500:]
            if not monitor.stages:
                raise
        finally:
            with contextlib.suppress(Exception):
                holdout_dir = workflow.parser.get_parsed_content("holdout_dir")
                protocol = workflow.parser.get_parsed_content("eval_protocol")
            workflow.finalize()
            del workflow
            gc.collect()  # progress bars and loggers flush here, into the log, not onto the terminal later
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    summary_file = work / "eval" / "holdout" / "metrics_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    holdout_note = None
    predictions = work / "eval" / "holdout" / "predictions"
    if not summary and run_error and holdout_dir and predictions.is_dir() and any(predictions.iterdir()):
        # The demo's own hold-out evaluation failed after its inference wrote the predictions (seen with the LiTS
        # bundles: predictions named volume-N.nii.gz, which metrics.report.find_cases skips as images). Evaluate the
        # same files with the same function under neutral names, and say so in the report.
        try:
            summary = evaluate_renamed(predictions, Path(holdout_dir), work / "eval" / "holdout_renamed", protocol)
            holdout_note = ("the demo's own hold-out evaluation failed (" + run_error.split("\n")[0][:300] + "); "
                            "run_all evaluated its predictions with metrics.report.evaluate_datalist under neutral "
                            "file names")  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            holdout_note = "hold-out evaluation failed: " + error_message(exc)
    holdout = {k: v.get("mean") for k, v in summary.get("metrics", {}).items()
               if "dice" in k and isinstance(v, dict) and v.get("mean") is not None}  # fmt: skip
    names = stage_names(bundle, n_stages)
    history = [{**v, "stage_name": names[v["stage"]] if v["stage"] < len(names) else str(v["stage"]),
                "dice": validation_dice(v["metrics"], kind)} for v in monitor.validations]  # fmt: skip
    targets = []
    for target in dice_targets(bundle, n_stages):
        mine = [h for h in history if h["stage"] == target["stage"] and h["dice"] is not None]
        hit = next((h for h in mine if h["dice"] >= target["threshold"]), None)
        targets.append({**target, "stage_name": names[target["stage"]], "reached": hit is not None,
                        "time_to_dice_s": hit["train_s"] if hit else None, "epoch": hit["epoch"] if hit else None,
                        "best_val_dice": max((h["dice"] for h in mine), default=None),
                        "final_val_dice": mine[-1]["dice"] if mine else None})  # fmt: skip
    sauron_file = work / "eval" / "sauron_history.json"
    result = {
        "bundle": bundle, "kind": kind, "budget_s": budget_s, "n_stages": n_stages,
        "stages": [{**st, "name": names[st["index"]] if st["index"] < len(names) else str(st["index"])}
                   for st in monitor.stages],
        "history": history, "targets": targets, "holdout": holdout, "holdout_primary": holdout_primary(holdout, kind),
        "holdout_s": sum(o["seconds"] for o in monitor.others), "wall_s": wall, "cpu_s": cpu,
        "training_s": sum(st.get("train_s", 0.0) for st in monitor.stages),
        "validation_s": sum(st.get("validation_s", 0.0) for st in monitor.stages),
        "load_before": load_before, "load_after": os.getloadavg()[0], "overrides": clean(overrides),
        "sauron_history": json.loads(sauron_file.read_text()) if sauron_file.is_file() else None,
        "run_error": run_error, "holdout_note": holdout_note,
    }  # fmt: skip
    for key, configs in (("demo_network", ["train.json", "demo.json"]), ("paper_network", ["train.json"])):
        try:
            result[key] = bundle_network_flops(bundle, configs)
        except Exception as exc:  # noqa: BLE001
            result[key] = {"error": f"{type(exc).__name__}: {exc}"}
    if result["sauron_history"]:
        last = result["sauron_history"][-1]
        result["demo_network"]["pruned_flops"] = last.get("flops")
        result["demo_network"]["pruned_params"] = last.get("params")
    return result


def measure_demos(ctx: Context) -> dict:
    s = ctx.settings
    bundles, results = list(s.bundles), {}
    planned = ctx.live.get("planned", ())
    # time kept for the sections after this one: scatter, and the Sauron demo if this section does not run it
    reserve = 30.0 if "scatter" in planned else 0.0
    if "sauron" in planned and SAURON_BUNDLE not in bundles:
        reserve += s.demo_budget_s + 60.0
    overhead = []  # seconds outside the capped training per bundle (hold-out evaluation, setup)
    for i, bundle in enumerate(bundles):
        if ctx.past_hard_limit(margin_s=120.0):
            results[bundle] = {"bundle": bundle, "budget_s": 0.0, "error": "skipped: the run reached its time limit "
                               f"({s.hard_limit_s / 60:g} min)"}  # fmt: skip
            ctx.log(f"demo {bundle}: skipped (time limit)")
            continue
        left = len(bundles) - i
        expected_overhead = statistics.mean(overhead) if overhead else (20.0 if s.quick else 60.0)
        share = (ctx.deadline_left() - reserve) / left - expected_overhead
        budget = max(30.0 if not s.quick else 5.0, min(s.demo_budget_s, share))
        ctx.log(f"demo {bundle}: time cap {budget:.0f} s for training + validation "
                f"({ctx.deadline_left() / 60:.1f} min left of the run's budget)")  # fmt: skip
        try:
            r = run_demo(bundle, ctx, budget)
            capped_end = max((st.get("end_s", 0.0) for st in r["stages"]), default=0.0)
            overhead.append(max(0.0, r["wall_s"] - capped_end))  # after the capped part: hold-out evaluation
            results[bundle] = r
            reached = ", ".join(f"{t['name']} {'%.0f s' % t['time_to_dice_s'] if t['reached'] else 'not reached'}"
                                for t in r["targets"])  # fmt: skip
            ctx.log(f"demo {bundle}: {r['wall_s']:.0f} s wall; {reached}; hold-out {r['holdout_primary']}")
        except Exception as exc:  # noqa: BLE001
            results[bundle] = {"bundle": bundle, "budget_s": budget, "error": error_message(exc),
                               "traceback": traceback.format_exc()[-3000:],
                               "log_tail": log_tail(ctx.log_file(f"demo_{bundle}"))}  # fmt: skip
            ctx.log(f"demo {bundle} failed: {exc}")
    ctx.live["demos"] = results
    return {"val_interval": s.val_interval, "threads": s.threads, "device": s.device,
            "demo_budget_s": s.demo_budget_s, "bundles": results}  # fmt: skip


def render_demos(data: dict, figures: Path) -> str:
    rows, notes = [], []
    for bundle, r in data["bundles"].items():
        if "error" in r:
            rows.append([bundle, ("" if r["error"].startswith("skipped") else "failed: ") + r["error"]] + [""] * 7)
            continue
        ttd = "; ".join(
            f"{t['name']} >= {t['threshold']}: " + (f"**{t['time_to_dice_s']:.0f} s** (epoch {t['epoch']})"
                                                    if t["reached"] else f"not reached (best {fnum(t['best_val_dice'])})")
            for t in r["targets"])  # fmt: skip
        epochs = " + ".join(f"{st.get('epochs', 0)}/{st.get('max_epochs', '?')}" for st in r["stages"])
        capped = any(st.get("terminated") for st in r["stages"])
        hp = r["holdout_primary"]
        dice = " / ".join(f"{k} {fnum(v)}" for k, v in hp.items())
        if r.get("holdout_note") or (r.get("run_error") and not r.get("holdout")):
            notes.append(f"{bundle}: " + (r.get("holdout_note") or "the demo run failed after training: "
                                          + r["run_error"].split(chr(10))[0]))  # fmt: skip
            dice += f" [{len(notes)}]"
        rows.append([bundle, ttd, epochs + (" (capped)" if capped else ""), fnum(r["training_s"], 0),
                     fnum(r["validation_s"], 0), fnum(r["holdout_s"], 0), f"{fnum(r['wall_s'], 0)} / {r['budget_s']:.0f}",
                     dice, fflops(r.get("demo_network", {}).get("flops"))])  # fmt: skip
    out = [
        "Each bundle's CPU demo as `effseg demo <bundle>` runs it (`train.json` + `demo.json`: the synthetic phantoms, "
        "the demo's patch, widths and epoch budget, then the hold-out evaluation of `inference.json` on unseen "
        f"phantoms), with validation every {data['val_interval']} epoch(s) so that the threshold is caught, "
        f"{data['threads']} threads on `{data['device']}`. Each run has a time cap (at most "
        f"{data['demo_budget_s']:.0f} s, less where the run's total budget requires) on training + validation: a "
        "stage stops after the epoch that would overrun its share; the checkpoint the hold-out evaluation uses is the "
        "demo's own (best validation or final). *Time to Dice* is training time only (validation excluded), summed "
        "over the stages before it (a cascade's stage 1, a LiTS bundle's liver stage). Thresholds: KiTS kidney "
        f"(KiTS21 \"kidney and masses\" / KiTS19 label > 0) {KIDNEY_THRESHOLD}; LiTS liver {LIVER_THRESHOLD} (liver "
        f"stage), tumour {TUMOUR_THRESHOLD} (tumour stage). Hold-out Dice: means over the demo's hold-out phantoms.",
        "",
        md_table(["bundle", "time to validation Dice (training s)", "epochs run", "training (s)", "validation (s)",
                  "hold-out eval (s)", "wall incl. hold-out / cap (s)", "hold-out Dice", "demo net FLOPs"], rows),
    ]  # fmt: skip
    if notes:
        out += [""] + [f"[{i}] {note}" + "  " for i, note in enumerate(notes, 1)]
    fig = plot_demo_curves(data, figures / "demo_dice_vs_time.png")
    if fig:
        out += ["", f"![validation Dice against training time](figures/{fig.name})"]
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------- section: sauron
SAURON_BUNDLE = "kits_sauron_nnunet"


def measure_sauron(ctx: Context) -> dict:
    demo = ctx.live.get("demos", {}).get(SAURON_BUNDLE)
    source = "the demos section of this run"
    if not demo or "error" in demo or not demo.get("sauron_history"):
        budget = ctx.settings.demo_budget_s if ctx.settings.quick else min(ctx.settings.demo_budget_s,
                                                                          max(60.0, ctx.deadline_left() - 150))
        ctx.log(f"sauron: running the {SAURON_BUNDLE} demo (time cap {budget:.0f} s)")
        demo = run_demo(SAURON_BUNDLE, ctx, budget)
        source = "its own demo run"
    history = demo.get("sauron_history")
    if not history:
        raise RuntimeError(f"the {SAURON_BUNDLE} demo wrote no sauron_history.json")
    base = history[0]
    curve = [{"epoch": h["epoch"], "loss": h.get("loss"), "params": h["params"], "flops": h.get("flops"),
              "params_pct": 100.0 * h["params"] / base["params"],
              "flops_pct": 100.0 * h["flops"] / base["flops"] if base.get("flops") else None,
              "channels": sum(h.get("widths", []))} for h in history]  # fmt: skip
    validation = [{"epoch": v["epoch"], "dice": v["dice"], "train_s": v["train_s"]} for v in demo["history"]]
    return {"source": source, "budget_s": demo["budget_s"], "stages": demo["stages"], "curve": curve,
            "validation": validation, "holdout": demo["holdout_primary"], "targets": demo["targets"],
            "patch": demo.get("demo_network", {}).get("parts", {}).get("network", {}).get("input"),
            "reference": SAURON_CLAIM}  # fmt: skip


def render_sauron(data: dict, figures: Path) -> str:
    val = {v["epoch"]: v["dice"] for v in data["validation"]}
    rows = [[c["epoch"], fnum(c["loss"], 3), f"{c['params']:,}", fnum(c["params_pct"], 1, "%"), fflops(c["flops"]),
             fnum(c["flops_pct"], 1, "%"), c["channels"], fnum(val.get(c["epoch"]))] for c in data["curve"]]  # fmt: skip
    last = data["curve"][-1]
    patch = "x".join(map(str, data["patch"][2:])) if data.get("patch") else "the demo patch"
    out = [
        f"The `{SAURON_BUNDLE}` demo (from {data['source']}): after every epoch the pruner drops the channels closer "
        "than the layer's threshold to a reference channel; the history is the handler's `sauron_history.json` "
        f"(FLOPs at one {patch} patch, 2 x MAC). After {last['epoch']} epochs the network keeps "
        f"{fnum(last['params_pct'], 1)}% of its parameters and {fnum(last['flops_pct'], 1)}% of its FLOPs; hold-out "
        + ", ".join(f"{k} Dice {fnum(v)}" for k, v in data["holdout"].items()) + ".",
        "",
        md_table(["epoch", "train loss", "params", "% params", "FLOPs", "% FLOPs", "channels", "val kidney Dice"],
                 rows),
        "",
        "Paper: " + data["reference"] + " The demo trains for minutes on synthetic phantoms with a shortened "
        "threshold schedule (`sauron_steps`, `sauron_patience`, `sauron_require_plateau` in demo.json) and a "
        "z-score regulariser (`sauron_normalisation`), so its compression is not the paper's; the full 24-epoch "
        "demo and its unpruned control are in the bundle README's Performance section.",
    ]  # fmt: skip
    fig = plot_sauron(data, figures / "sauron_compression.png")
    if fig:
        out += ["", f"![Sauron compression curve](figures/{fig.name})"]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- section: scatter
def measure_scatter(ctx: Context) -> dict:
    record = ctx.results["sections"].get("demos")
    if not record or record.get("status") != "ok":
        raise RuntimeError("no demo results to plot: run `--sections demos` first")
    points = []
    for bundle, r in record["data"]["bundles"].items():
        if "error" in r or "flops" not in r.get("demo_network", {}):
            continue
        net = r["demo_network"]
        points.append({"bundle": bundle, "kind": r["kind"], "gflops": (net.get("pruned_flops") or net["flops"]) / 1e9,
                       "gflops_unpruned": net["flops"] / 1e9 if net.get("pruned_flops") else None,
                       "params": net.get("pruned_params") or net["params"],
                       "paper_gflops": r.get("paper_network", {}).get("flops", 0) / 1e9 or None,
                       "inputs": {k: v["input"] for k, v in net.get("parts", {}).items()},
                       "dice": r["holdout_primary"]})  # fmt: skip
    if not points:
        raise RuntimeError("the saved demos section has no successful bundle")
    return {"demos_measured_at": record.get("measured_at"), "demos_quick": record.get("quick"), "points": points}


def render_scatter(data: dict, figures: Path) -> str:
    rows = []
    for p in data["points"]:
        inputs = "; ".join(f"{k} {'x'.join(map(str, v[1:]))}" for k, v in p["inputs"].items())
        gflops = f"{p['gflops']:.2f}" + (f" (unpruned {p['gflops_unpruned']:.2f})" if p.get("gflops_unpruned") else "")
        rows.append([p["bundle"], inputs, gflops, f"{p['params']:,}", fnum(p["paper_gflops"], 1),
                     " / ".join(f"{k} {fnum(v)}" for k, v in p["dice"].items())])  # fmt: skip
    out = [
        "Like seed 000's Fig. 9 (DSC against FLOPs), for the networks the demos trained: x = GFLOPs (2 x MAC) of one "
        "forward pass of the bundle's demo network at its demo input (both stages of a cascade or of a "
        "liver-then-tumour network; the Sauron net as pruned at the end of its demo), y = hold-out Dice of the "
        f"demos section (measured {data['demos_measured_at']}). KiTS and LiTS are separate panels: different tasks "
        "and inputs. The paper-size network's GFLOPs (at the paper's patch) are listed for reference; the demos train "
        "narrower networks on phantoms, so these are not the papers' Dice values.",
        "",
        md_table(["bundle", "demo input(s)", "demo GFLOPs", "params", "paper net GFLOPs", "hold-out Dice"], rows),
    ]  # fmt: skip
    fig = plot_scatter(data, figures / "dice_vs_flops.png")
    if fig:
        out += ["", f"![hold-out Dice against GFLOPs](figures/{fig.name})"]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------- section: gpu
def measure_gpu(ctx: Context) -> dict:
    import torch

    script = ctx.settings.gpu_script
    if not torch.cuda.is_available():
        return {"available": False, "note": "no GPU (torch.cuda.is_available() is False)"}
    gpu = torch.cuda.get_device_name(0)
    if not script.is_file():
        return {"available": True, "gpu": gpu, "note": f"no GPU benchmark: {script.name} does not exist"}
    import inspect

    source = script.read_text()
    names = [n for n in ("measure", "run_benchmark", "benchmark") if re.search(rf"^def {n}\(", source, re.M)]
    module = None
    if names:  # import only a script that offers a function (importing runs its top level)
        spec = importlib.util.spec_from_file_location("gpu_throughput", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    for name in names:
        fn = getattr(module, name, None)
        if not callable(fn):
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        required = [p for p in params.values() if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                                                       p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
        if required:
            continue  # a function this script cannot know how to call: use the command line instead
        kwargs = {"quick": ctx.settings.quick} if "quick" in params else {}
        result = fn(**kwargs)
        if isinstance(result, dict):
            how = f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
            return {"available": True, "gpu": gpu, "script": script.name, "how": how, "result": result}
    helptext = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                              cwd=REPO).stdout  # fmt: skip
    cmd = [sys.executable, str(script)]
    if ctx.settings.quick:
        cmd += [flag for flag in ("--quick", "--smoke") if flag in helptext][:1]
    if "--bundles" in helptext and tuple(ctx.settings.bundles) != BUNDLES:
        cmd += ["--bundles", *ctx.settings.bundles]
    json_out = ctx.work / "gpu_throughput.json"
    for flag in ("--json", "--out"):
        if flag in helptext:
            cmd += [flag, str(json_out)]
            break
    ctx.log("gpu: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    result = None
    if json_out.is_file():
        with contextlib.suppress(ValueError):
            result = json.loads(json_out.read_text())
    how = " ".join(Path(c).name if c == str(script) else "<json>" if c == str(json_out) else c for c in cmd[1:])
    return {"available": True, "gpu": gpu, "script": script.name, "how": how,
            "stdout": proc.stdout[-8000:], "result": result}  # fmt: skip


def render_gpu(data: dict, figures: Path) -> str:
    if not data.get("available"):
        return f"**{data['note']}** on the machine this section ran on; the GPU benchmark was not run."
    out = [f"GPU: {data['gpu']}."]
    if "note" in data:
        return out[0] + " " + data["note"] + "."
    out.append(f"`{data['script']}` ({data['how']}):")
    if data.get("stdout"):
        out += ["", "```", data["stdout"].strip(), "```"]
        if data.get("result") is not None:
            out += ["", "Its JSON output is stored in `benchmarks.json` (section `gpu`, `data.result`)."]
    elif data.get("result") is not None:
        out += ["", "```json", json.dumps(data["result"], indent=1)[:8000], "```"]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------------------- runner
MEASURE = {"profile": measure_profile, "speed": measure_speed, "lite_speed": measure_lite_speed,
           "inference": measure_inference, "demos": measure_demos, "sauron": measure_sauron,
           "scatter": measure_scatter, "gpu": measure_gpu}  # fmt: skip
RENDER = {"profile": render_profile, "speed": render_speed, "lite_speed": render_lite_speed,
          "inference": render_inference, "demos": render_demos, "sauron": render_sauron,
          "scatter": render_scatter, "gpu": render_gpu}  # fmt: skip
SECTION_SETTINGS = {
    "profile": ("profile_names", "flops_downscale"),
    "speed": ("speed_nets", "speed_size", "speed_rounds", "speed_modes", "threads"),
    "lite_speed": ("lite_presets", "lite_size", "lite_repeats", "threads"),
    "inference": ("bundles", "ct_shape", "ct_spacing", "inference_net", "threads", "device"),
    "demos": ("bundles", "demo_budget_s", "time_budget_s", "val_interval", "demo_overrides", "threads", "device"),
    "sauron": ("demo_budget_s", "val_interval", "threads", "device"),
    "scatter": (),
    "gpu": ("gpu_script",),
}


def load_results(path: Path) -> dict:
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("sections"), dict):
                data.setdefault("runs", [])
                return data
        except ValueError as exc:
            print(f"warning: {path} is not valid JSON ({exc}); starting afresh", file=sys.stderr)
    return {"schema": SCHEMA, "generator": "benchmarks/run_all.py", "sections": {}, "runs": []}


def save_results(results: dict, path: Path) -> None:
    write_atomic(path, json.dumps(clean(results), indent=1) + "\n")


def run_section(name: str, ctx: Context, results_path: Path) -> dict:
    settings = {k: getattr(ctx.settings, k) for k in SECTION_SETTINGS[name]}
    record = {"section": name, "status": "running", "measured_at": now_iso(), "machine": machine_info(),
              "quick": ctx.settings.quick, "settings": clean(settings)}  # fmt: skip
    ctx.log(f"\n=== {name}: {TITLES[name]} ({record['measured_at']}) ===")
    start = time.perf_counter()
    try:
        record["data"] = clean(MEASURE[name](ctx))
        record["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing section is recorded; the run goes on
        record.update(status="error", error=error_message(exc), traceback=traceback.format_exc()[-4000:])
        ctx.log(f"section {name} FAILED: {record['error']}")
    record["elapsed_s"] = time.perf_counter() - start
    record["finished_at"] = now_iso()
    record["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    ctx.results["sections"][name] = record
    ctx.ran.append(name)
    save_results(ctx.results, results_path)
    return record


def section_markdown(name: str, record: Optional[dict], figures: Path) -> str:
    if record is None:
        return f"_Not measured yet: `python benchmarks/run_all.py --sections {name}`._"
    m = record.get("machine", {})
    meta = (f"_Measured {record.get('measured_at')} (took {record.get('elapsed_s', 0):.0f} s) on {machine_line(m)}._")
    if record.get("quick"):
        meta += "\n\n**QUICK MODE (smoke test): tiny sizes and budgets, the numbers are not representative.**"
    if record.get("status") != "ok":
        return (f"{meta}\n\n**This section failed:** `{record.get('error')}`\n\n<details><summary>traceback</summary>"
                f"\n\n```\n{record.get('traceback', '').strip()}\n```\n</details>")  # fmt: skip
    try:
        body = RENDER[name](record["data"], figures)
    except Exception as exc:  # noqa: BLE001
        body = f"**Rendering failed:** `{type(exc).__name__}: {exc}`\n\n```\n{traceback.format_exc()[-2000:]}\n```"
    errors = [r for r in list(record["data"].get("rows", [])) + list(record["data"].get("bundles", {}).values())
              if isinstance(r, dict) and "error" in r and (r.get("traceback") or r.get("log_tail"))]  # fmt: skip
    for r in errors:
        body += (f"\n\n<details><summary>{r.get('bundle', '?')}: {cell(r.get('error'))}</summary>\n\n```\n"
                 f"{(r.get('traceback') or '').strip()}\n{(r.get('log_tail') or '').strip()}\n```\n</details>")  # fmt: skip
    return f"{meta}\n\n{body}"


def render_report(results: dict, out_dir: Path) -> str:
    figures = out_dir / "figures"
    sections = results["sections"]
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/run_all.py` from `benchmarks.json` (next to this file); do not edit by hand. "
        "Re-measure one part with `--sections NAME ...` (the others keep their saved results), re-render with "
        "`--report-only`. Each section says when, on what machine and in how long it was measured.",
        "",
        "## Machines and run times",
        "",
    ]
    rows = []
    for name in SECTIONS:
        rec = sections.get(name)
        if rec is None:
            rows.append([name, "not measured", "-", "-", "-"])
            continue
        m = rec.get("machine", {})
        rows.append([f"[{name}](#{slug(f'{SECTIONS.index(name) + 1}. {TITLES[name]}')})",
                     rec.get("status") + (" (quick)" if rec.get("quick") else ""), rec.get("measured_at"),
                     f"{rec.get('elapsed_s', 0) / 60:.1f}",
                     f"{m.get('cpu')}, {m.get('threads')} threads of {m.get('logical_cpus')} CPUs, torch "
                     f"{m.get('torch')}, monai {m.get('monai')}" + (f", GPU {m['gpu']}" if m.get("gpu") else "")])  # fmt: skip
    parts.append(md_table(["section", "status", "measured (UTC)", "minutes", "machine"], rows))
    runs = results.get("runs", [])
    if runs:
        last = runs[-1]
        parts += ["", f"Last run: {last['started']} to {last['finished']}, sections {', '.join(last['sections'])}"
                      f"{' (quick)' if last.get('quick') else ''}: **total {last['elapsed_s'] / 60:.1f} min**."]  # fmt: skip
        if last.get("skipped"):
            parts[-1] += f" Not started (time limit): {', '.join(last['skipped'])}."
        full = [r for r in runs if set(r["sections"]) >= set(SECTIONS) and not r.get("quick")]
        if full and full[-1] is not last:
            parts.append(f"Last run of every section: {full[-1]['started']}, "
                         f"total {full[-1]['elapsed_s'] / 60:.1f} min.")
    for i, name in enumerate(SECTIONS, 1):
        parts += ["", f"## {i}. {TITLES[name]}", "", section_markdown(name, sections.get(name), figures)]
    return "\n".join(parts).rstrip() + "\n"


def build_settings(args: argparse.Namespace) -> Settings:
    s = Settings(quick=args.quick, threads=args.threads, device=args.device, verbose=args.verbose,
                 inference_net=args.inference_net, val_interval=args.val_interval)  # fmt: skip
    if args.quick:
        s.bundles = QUICK_BUNDLES
        s.profile_names = QUICK_PROFILE
        s.speed_nets, s.speed_size, s.speed_rounds = ("nnunet", "efficientunet-b0"), 64, 1
        s.lite_presets, s.lite_size, s.lite_repeats = QUICK_LITE, 64, 1
        s.ct_shape = (128, 128, 24)
        s.demo_budget_s = 15.0
        s.time_budget_s = 15 * 60.0
    if args.bundles:
        s.bundles = tuple(args.bundles)
    if args.demo_budget_s is not None:
        s.demo_budget_s = args.demo_budget_s
    if args.time_budget_min is not None:
        s.time_budget_s = args.time_budget_min * 60.0
    if args.hard_limit_min is not None:
        s.hard_limit_s = args.hard_limit_min * 60.0
    if args.speed_rounds is not None:
        s.speed_rounds = args.speed_rounds
    if args.speed_modes:
        s.speed_modes = tuple(args.speed_modes)
    if args.gpu_script:
        s.gpu_script = Path(args.gpu_script).resolve()
    for item in args.demo_override or []:
        key, _, value = item.partition("=")
        try:
            s.demo_overrides[key] = json.loads(value)
        except ValueError:
            s.demo_overrides[key] = value
    return s


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=None, help="default: all")
    parser.add_argument("--report-only", action="store_true", help="measure nothing; re-render from the saved JSON")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 1 bundle, short budgets")
    parser.add_argument("--out", default=None, help="folder for benchmarks.md, benchmarks.json and figures/ "
                        "(default: docs/, or /tmp/effseg_bench_quick with --quick)")
    parser.add_argument("--force", action="store_true", help="allow --quick results in docs/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="device for the bundle runs (cpu, cuda, auto = the bundle's)")
    parser.add_argument("--bundles", nargs="+", choices=BUNDLES, default=None, help="bundles for inference / demos")
    parser.add_argument("--demo-budget-s", type=float, default=None,
                        help="time cap per bundle demo, training + validation (default 300; quick 15)")
    parser.add_argument("--time-budget-min", type=float, default=None,
                        help="the whole run's budget; the demo caps shrink to fit it (default 56; quick 15)")
    parser.add_argument("--hard-limit-min", type=float, default=None,
                        help="no section or bundle starts after this many minutes (default 60); they are recorded "
                        "as skipped and saved results are kept")
    parser.add_argument("--val-interval", type=int, default=1, help="validate every N epochs in the demos")
    parser.add_argument("--demo-override", action="append", metavar="ID=JSON",
                        help="extra bundle override for every demo training workflow, e.g. max_epochs=4")
    parser.add_argument("--inference-net", choices=("demo", "paper"), default="demo",
                        help="network of the inference section: the demo overlay's (default) or the paper's")
    parser.add_argument("--speed-rounds", type=int, default=None)
    parser.add_argument("--speed-modes", nargs="+", choices=("eager", "optimized"), default=None)
    parser.add_argument("--gpu-script", default=None, help="default benchmarks/gpu_throughput.py")
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--verbose", action="store_true", help="show the bundle runs' own output")
    args = parser.parse_args(argv)

    out_dir = Path(args.out or ("/tmp/effseg_bench_quick" if args.quick else REPO / "docs")).resolve()
    docs = (REPO / "docs").resolve()
    if args.quick and not args.report_only and (out_dir == docs or docs in out_dir.parents) and not args.force:
        parser.error(f"--quick would write smoke-test numbers into {out_dir}; pass another --out (or --force)")
    results_path, report_path = out_dir / "benchmarks.json", out_dir / "benchmarks.md"
    results = load_results(results_path)
    log = Console()
    started_iso, started = now_iso(), time.perf_counter()

    if not args.report_only:
        import torch

        settings = build_settings(args)
        torch.set_num_threads(settings.threads)
        sections = [s for s in RUN_ORDER if s in (args.sections or SECTIONS)]
        own_work = args.work_dir is None
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="effseg_bench_")).resolve()
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(settings, log, work, started, results, live={"planned": sections})
        skipped: list[str] = []
        log(f"run_all: sections {', '.join(sections)}{' (quick)' if settings.quick else ''}; results in {out_dir}; "
            f"scratch {work}; {machine_line(machine_info())}")  # fmt: skip
        try:
            for name in sections:
                if ctx.past_hard_limit():
                    log(f"--- {name}: not started, the run passed its {settings.hard_limit_s / 60:g}-minute limit "
                        "(its saved result, if any, is kept)")  # fmt: skip
                    skipped.append(name)
                    continue
                record = run_section(name, ctx, results_path)
                log(f"--- {name}: {record['status']} in {record['elapsed_s']:.0f} s "
                    f"(run so far {(time.perf_counter() - started) / 60:.1f} min)")  # fmt: skip
                log(section_markdown(name, record, out_dir / "figures"))
        finally:
            elapsed = time.perf_counter() - started
            results.setdefault("runs", []).append({
                "started": started_iso, "finished": now_iso(), "elapsed_s": elapsed, "sections": ctx.ran,
                "quick": settings.quick, "machine": machine_line(machine_info()),
                "status": {n: results["sections"][n]["status"] for n in ctx.ran}, "skipped": skipped,
            })  # fmt: skip
            results["runs"] = results["runs"][-30:]
            save_results(results, results_path)
            if own_work:
                shutil.rmtree(work, ignore_errors=True)
            else:
                log(f"scratch kept: {work}")
    write_atomic(report_path, render_report(results, out_dir))
    elapsed = time.perf_counter() - started
    log(f"\nreport: {report_path}\nresults: {results_path}\nfigures: {out_dir / 'figures'}")
    log(f"total elapsed: {elapsed / 60:.1f} min ({elapsed:.0f} s)")
    failed = [n for n, r in results["sections"].items() if r.get("status") != "ok"]
    if failed:
        log(f"sections with errors: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

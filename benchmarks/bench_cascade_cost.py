"""Bar 3 of issue 6: full-volume inference time on 2 CPU threads for a 512x512x100 CT at 0.78x0.78x3 mm (KiTS19's
median spacing, so no resampling): the two-stage cascade vs the single-stage ResidualUNet vs the nnU-Net baseline,
measured in one run, interleaved.

Each network and inferer is the one its bundle's ``inference.json`` builds (patch sizes, overlap 0.5, Gaussian
blending, no mirror TTA), on a preprocessed (normalised) volume, so the figure is the networks' sliding-window cost.
The cascade runs stage 1 on the fixed 320 mm ROI downsampled by 2 in-plane, then stage 2 on the fixed box (the
shipped KiTS19 foreground box + 10 mm margins) centred on stage 1's label. Freshly initialised weights predict no
meaningful kidney, so stage 2 is centred on a kidney-pair mask at the anatomical position: the cost is the same as
with trained weights. ``--width-divisor k`` divides every stage width by k (about 1/k^2 of the FLOPs) for a quick
run; patch counts and sizes are unchanged.

    python benchmarks/bench_cascade_cost.py [--width-divisor 1] [--threads 2] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from monai_effseg.inferers import CascadeInferer
from monai_effseg.nets.cascade import cascade_stages

REPO = Path(__file__).resolve().parents[1]
SHAPE, SPACING = (512, 512, 100), (0.78125, 0.78125, 3.0)
PIPELINES = {"cascade": "kits_unet_cascade", "residual_unet": "kits_residual_unet", "nnunet": "kits_nnunet_baseline"}


def bundle_parts(bundle: str, width_divisor: int) -> tuple[torch.nn.Module, object]:
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    features = parser.get_parsed_content("features")
    parser.update({"bundle_root": str(REPO / "bundles" / bundle), "mirror_axes": [],
                   "features": [max(2, f // width_divisor) for f in features]})  # fmt: skip
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def").eval(), parser.get_parsed_content("inferer")


def phantom() -> tuple[MetaTensor, torch.Tensor]:
    """A normalised CT-like volume (body ellipse, noise) with its affine, and a kidney-pair mask."""
    x = torch.linspace(-1, 1, SHAPE[0])[:, None, None]
    y = torch.linspace(-1, 1, SHAPE[1])[None, :, None]
    body = ((x / 0.8) ** 2 + (y / 0.65) ** 2 <= 1).expand(SHAPE)
    image = torch.where(body, 0.0, -3.0) + 0.3 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    z = torch.linspace(-1, 1, SHAPE[2])[None, None, :]
    kidneys = sum(((x - cx) / 0.1) ** 2 + ((y - 0.3) / 0.12) ** 2 + (z / 0.35) ** 2 <= 1 for cx in (-0.35, 0.35))
    affine = torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64))
    return MetaTensor(image[None], affine=affine), (kidneys > 0).float()[None]


def time_cascade(network: torch.nn.Module, inferer: CascadeInferer, image: MetaTensor, prior: torch.Tensor) -> dict:
    stage1, stage2 = cascade_stages(network)
    start = time.perf_counter()
    inferer.stage1_label(inferer.stage1_probabilities(image, stage1))
    middle = time.perf_counter()
    inferer.stage2_probabilities(image, prior, stage2)
    end = time.perf_counter()
    return {"stage1_s": middle - start, "stage2_s": end - middle, "total_s": end - start}


def time_single(network: torch.nn.Module, inferer, image: MetaTensor) -> dict:
    start = time.perf_counter()
    inferer(image[None], network)
    return {"total_s": time.perf_counter() - start}


def windows(volume: tuple[int, ...], patch: list[int], overlap: float = 0.5) -> int:
    return math.prod(max(1, math.ceil((max(v, p) - p) / (p * (1 - overlap))) + 1) for v, p in zip(volume, patch))


def run(width_divisor: int = 1, threads: int = 2, rounds: int = 1) -> dict:
    torch.set_num_threads(threads)
    image, prior = phantom()
    parts = {name: bundle_parts(bundle, width_divisor) for name, bundle in PIPELINES.items()}
    cascade_inferer = parts["cascade"][1]
    stage2_box = [round(mm / s) for mm, s in zip(cascade_inferer.stage2_box_mm, SPACING)]
    times: dict[str, list[dict]] = {name: [] for name in PIPELINES}
    with torch.inference_mode():
        for _ in range(rounds):  # interleaved, so a load change hits every pipeline alike
            for name, (network, inferer) in parts.items():
                if isinstance(inferer, CascadeInferer):
                    times[name].append(time_cascade(network, inferer, image, prior))
                else:
                    times[name].append(time_single(network, inferer, image))
    median = {name: {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in rows[0]} for name, rows in times.items()}
    return {"shape": SHAPE, "spacing": SPACING, "threads": threads, "width_divisor": width_divisor, "rounds": rounds,
            "stage2_box_voxels": stage2_box, "median": median}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width-divisor", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.width_divisor, args.threads, args.rounds)
    med = result["median"]
    base = med["residual_unet"]["total_s"]
    print(f"512x512x100 CT at {SPACING} mm, {args.threads} threads, widths / {args.width_divisor}, "
          f"stage-2 box {result['stage2_box_voxels']} voxels, median of {args.rounds}")  # fmt: skip
    print("| pipeline | stage 1 (s) | stage 2 (s) | total (s) | vs single-stage ResidualUNet |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        print(
            f"| {name} | {m.get('stage1_s', float('nan')):.1f} | {m.get('stage2_s', float('nan')):.1f} "
            f"| {m['total_s']:.1f} | {m['total_s'] / base:.2f} |"
        )
    cascade = med["cascade"]["total_s"]
    print(
        f"cascade / full-resolution single pass: {cascade / base:.2f} "
        f"({'cheaper' if cascade < base else 'NOT cheaper'})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""CPU forward time of EfficientUNet-b0 and EfficientUNetV2-S next to PlainUNet (seed 000's speed question).

Protocol (reference/architectures.md section 5, extended): batch 1, 1x1x128^3, eval mode, ``torch.no_grad()``,
``torch.set_num_threads(2)``, deep supervision off (inference), glibc told to keep freed memory
(``keep_freed_memory()``, process-wide, so it applies to every network alike; ``--return-freed-memory`` to compare). Every network runs eager and after
``monai_effseg.nets.inference.optimize_for_inference`` (the same generic optimisations for all of them). One warm-up
pass each, then ``--rounds`` rounds in which every (network, mode) runs once, interleaved, so that load from other
processes hits all of them alike. Wall time and process CPU time are both recorded; the table gives min and median.

    python benchmarks/bench_efficientnet_speed.py [--rounds 5] [--size 128] [--threads 2] [--nets ...]

The bar (issue 4): time ratio to PlainUNet <= FLOP ratio (b0 0.633, V2-S 0.707), same mode. The "vs best plain"
column compares with PlainUNet's faster mode, so no speed-up of ours can hide behind a slower baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from monai_effseg.nets import build_net
from monai_effseg.nets.inference import keep_freed_memory, optimize_for_inference
from monai_effseg.profile import count_flops

BASELINE = "nnunet"


def run_once(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=[BASELINE, "efficientunet-b0", "efficientunetv2-s"])
    parser.add_argument("--modes", nargs="+", default=["eager", "optimized"], choices=["eager", "optimized"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="leave glibc's default (return large freed blocks to the OS) instead of keep_freed_memory()")
    args = parser.parse_args()
    allocator = "glibc default" if args.return_freed_memory else f"keep_freed_memory()={keep_freed_memory()}"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 1, *[args.size] * 3)

    models, flops = {}, {}
    for name in args.nets:
        net = build_net(name, deep_supervision=False).eval()
        flops[name] = count_flops(net, (1, 1, *[args.size] * 3), downscale=2)["network"]
        for mode in args.modes:
            models[name, mode] = net if mode == "eager" else optimize_for_inference(net)
    print(f"load average before: {os.getloadavg()}; threads {torch.get_num_threads()}; input 1x1x{args.size}^3; "
          f"allocator: {allocator}")
    for model in models.values():  # warm-up (oneDNN primitive creation, page faults)
        run_once(model, x)
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in models}
    for r in range(args.rounds):
        for key, model in models.items():
            samples[key].append(run_once(model, x))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k[0]}/{k[1]} {v[-1][0]:.2f}s" for k, v in samples.items()))
    print(f"load average after: {os.getloadavg()}")

    def stat(key, index, fn):
        return fn([s[index] for s in samples[key]])

    print(
        "\n| network | mode | wall min (s) | wall median (s) | CPU min (s) | CPU median (s) | ratio (wall min) "
        "| ratio (wall median) | ratio (CPU min) | vs best plain (wall min) | FLOPs (2xMAC) | FLOP ratio |"
    )
    print("|" + "---|" * 12)
    best_plain = min(stat((BASELINE, m), 0, min) for m in args.modes) if BASELINE in args.nets else None
    for (name, mode) in models:
        base = (BASELINE, mode)
        ratios = ["-"] * 4
        if base in samples:
            ratios = [
                f"{stat((name, mode), 0, min) / stat(base, 0, min):.3f}",
                f"{stat((name, mode), 0, statistics.median) / stat(base, 0, statistics.median):.3f}",
                f"{stat((name, mode), 1, min) / stat(base, 1, min):.3f}",
                f"{stat((name, mode), 0, min) / best_plain:.3f}",
            ]
        flop_ratio = flops[name] / flops[BASELINE] if BASELINE in flops else float("nan")
        print(
            f"| {name} | {mode} | {stat((name, mode), 0, min):.2f} | {stat((name, mode), 0, statistics.median):.2f} "
            f"| {stat((name, mode), 1, min):.2f} | {stat((name, mode), 1, statistics.median):.2f} | "
            + " | ".join(ratios)
            + f" | {flops[name] / 1e12:.3f}T | {flop_ratio:.3f} |"
        )


if __name__ == "__main__":
    main()

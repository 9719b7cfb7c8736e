"""CPU forward time of EfficientUNet-b0 and EfficientUNetV2-S next to PlainUNet (Martinho's speed question).

Protocol (tests/data/reference/architectures.md section 5, extended): batch 1, 1x1x128^3, eval mode,
``torch.no_grad()``, ``torch.set_num_threads(2)``, deep supervision off (inference), glibc told to keep freed memory
(``keep_freed_memory()``, process-wide, so it applies to every network alike; ``--return-freed-memory`` to
compare). Every network runs in each of ``--modes``: ``eager`` and ``optimized``
(``monai_effseg.deploy.optimize.optimize_for_inference``, the same generic optimisations for all of them) by
default; ``bf16`` (the same in bfloat16, what the fast CPU overlays run on CPUs with native bf16 instructions, AMX
or AVX-512 BF16); ``channels_last``, ``jit`` and ``compile`` are the alternatives that were tried (see
:func:`prepare`).
``--warmup`` untimed rounds come first (2: the first pass of each network in a shared process still maps fresh heap
pages for the next one; from the second on the passes run without page faults, so the samples measure compute),
then ``--rounds`` rounds in which every (network, mode) runs once, interleaved, so that load from other processes
hits all of them alike. Wall time and process CPU time are both recorded; the table gives min and median.

    python benchmarks/bench_efficientnet_speed.py [--rounds 5] [--size 128] [--threads 2] [--nets ...]

The bar (issue 4): time ratio to PlainUNet <= FLOP ratio (b0 0.633, V2-S 0.707), same mode. The "vs best plain"
column compares with PlainUNet's faster mode, so no speed-up of ours can hide behind a slower baseline.
:func:`measure` returns the samples and the table as a dict (``benchmarks/run_all.py`` uses it).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from monai_effseg.deploy.optimize import keep_freed_memory, optimize_for_inference
from monai_effseg.nets import build_net
from monai_effseg.profile import count_flops

BASELINE = "nnunet"
MODES = ("eager", "optimized", "bf16", "unfolded", "channels_last", "jit", "compile")


def run_once(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - wall, time.process_time() - cpu


class ChannelsLast(torch.nn.Module):
    """Only the memory format: channels-last weights and input, PyTorch's own conv dispatch (ablation)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).to(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last_3d))


def prepare(net: torch.nn.Module, mode: str, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network in one execution mode. ``eager``, ``optimized`` and ``bf16`` are the shipped ones; the others are
    the alternatives tried for the speed work (docs/efficientnet.md, "CPU speed"): ``unfolded`` (``optimized`` without
    folding the upsampling into the next conv), ``channels_last`` (memory format only), ``jit`` (TorchScript trace +
    ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference``, which folds BN and converts convs to MKL-DNN),
    ``compile`` (``torch.compile``, inductor's C++ backend; needs a C++ compiler)."""
    if mode == "eager":
        return net
    if mode == "optimized":
        return optimize_for_inference(net)
    if mode == "bf16":  # the fast overlays' precision on CPUs with native bf16 (not exact: docs/fast_cpu_inference.md)
        return optimize_for_inference(net, bf16=True)
    if mode == "unfolded":  # A/B of optimize_for_inference's step 7 (transposed conv folded into the next conv)
        return optimize_for_inference(net, fold_upsampling=False)
    if mode == "channels_last":
        return ChannelsLast(net).eval()
    if mode == "jit":
        with torch.no_grad():
            return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x)))
    if mode == "compile":
        compiled = torch.compile(copy.deepcopy(net))
        with torch.no_grad():
            compiled(x)  # compilation happens here, outside the timed rounds
        return compiled
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def ratio_rows(samples: dict, flops: dict, modes: Sequence[str]) -> list[dict]:
    """One row per (network, mode) of ``samples`` (wall, CPU seconds per round): min / median, and the ratios to the
    baseline in the same mode (``None`` where the baseline was not measured)."""

    def stat(key, index, fn):
        return fn([s[index] for s in samples[key]])

    best_plain = min(stat((BASELINE, m), 0, min) for m in modes) if BASELINE in flops else None
    rows = []
    for name, mode in samples:
        base = (BASELINE, mode)
        row = {"name": name, "mode": mode,
               "wall_min_s": stat((name, mode), 0, min), "wall_median_s": stat((name, mode), 0, statistics.median),
               "cpu_min_s": stat((name, mode), 1, min), "cpu_median_s": stat((name, mode), 1, statistics.median),
               "ratio_wall_min": None, "ratio_wall_median": None, "ratio_cpu_min": None, "vs_best_plain_wall_min": None,
               "flops": flops[name], "flop_ratio": flops[name] / flops[BASELINE] if BASELINE in flops else None}  # fmt: skip
        if base in samples:
            row.update(
                ratio_wall_min=row["wall_min_s"] / stat(base, 0, min),
                ratio_wall_median=row["wall_median_s"] / stat(base, 0, statistics.median),
                ratio_cpu_min=row["cpu_min_s"] / stat(base, 1, min),
                vs_best_plain_wall_min=row["wall_min_s"] / best_plain,
            )
        rows.append(row)
    return rows


def measure(
    nets: Sequence[str] = (BASELINE, "efficientunet-b0", "efficientunetv2-s"),
    modes: Sequence[str] = ("eager", "optimized"),
    size: int = 128,
    threads: int = 2,
    rounds: int = 5,
    warmup: int = 2,
    return_freed_memory: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Time every (network, mode) side by side (see the module docstring). Returns the settings, the load average,
    the FLOPs, every sample (wall, CPU) and one row per (network, mode) with min / median and the ratios to the
    baseline (``None`` where the baseline is not among ``nets``)."""
    allocator = "glibc default" if return_freed_memory else f"keep_freed_memory()={keep_freed_memory()}"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(1, 1, *[size] * 3)

    models, flops = {}, {}
    for name in nets:
        net = build_net(name, deep_supervision=False).eval()
        flops[name] = count_flops(net, (1, 1, *[size] * 3))["network"]
        for mode in modes:
            models[name, mode] = prepare(net, mode, x)
    load_before = os.getloadavg()
    log(
        f"load average before: {load_before}; threads {torch.get_num_threads()}; input 1x1x{size}^3; "
        f"allocator: {allocator}"
    )
    for _ in range(warmup):  # oneDNN primitive creation, and the heap growing to every network's peak
        for model in models.values():
            run_once(model, x)
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in models}
    for r in range(rounds):
        for key, model in models.items():
            samples[key].append(run_once(model, x))
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k[0]}/{k[1]} {v[-1][0]:.2f}s" for k, v in samples.items()))
    load_after = os.getloadavg()
    log(f"load average after: {load_after}")

    rows = ratio_rows(samples, flops, modes)
    return {"baseline": BASELINE, "input": [1, 1, size, size, size], "threads": threads, "rounds": rounds,
            "warmup": warmup,
            "modes": list(modes), "allocator": allocator, "load_before": list(load_before),
            "load_after": list(load_after), "flops": flops,
            "samples": {f"{k[0]}/{k[1]}": [list(s) for s in v] for k, v in samples.items()}, "rows": rows}  # fmt: skip


def measure_section(ctx: Any) -> dict:
    """run_all.py's ``speed`` section (``ctx``: its ``Context``): :func:`measure` with its settings."""
    import monai_effseg.pruning  # noqa: F401  (registers "sauron_nnunet")

    s = ctx.settings
    return measure(s.speed_nets, s.speed_modes, s.speed_size, s.threads, s.speed_rounds, log=ctx.log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=[BASELINE, "efficientunet-b0", "efficientunetv2-s"])
    parser.add_argument("--modes", nargs="+", default=["eager", "optimized"], choices=list(MODES))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before the timed ones")
    parser.add_argument(
        "--return-freed-memory",
        action="store_true",
        help="leave glibc's default (return large freed blocks to the OS) instead of keep_freed_memory()",
    )
    args = parser.parse_args()
    result = measure(args.nets, args.modes, args.size, args.threads, args.rounds, args.warmup, args.return_freed_memory)

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    print(
        "\n| network | mode | wall min (s) | wall median (s) | CPU min (s) | CPU median (s) | ratio (wall min) "
        "| ratio (wall median) | ratio (CPU min) | vs best plain (wall min) | FLOPs (2xMAC) | FLOP ratio |"
    )
    print("|" + "---|" * 12)
    for r in result["rows"]:
        ratios = [fmt(r[k]) for k in ("ratio_wall_min", "ratio_wall_median", "ratio_cpu_min", "vs_best_plain_wall_min")]
        flop_ratio = r["flop_ratio"] if r["flop_ratio"] is not None else float("nan")
        print(
            f"| {r['name']} | {r['mode']} | {r['wall_min_s']:.2f} | {r['wall_median_s']:.2f} "
            f"| {r['cpu_min_s']:.2f} | {r['cpu_median_s']:.2f} | "
            + " | ".join(ratios)
            + f" | {r['flops'] / 1e12:.3f}T | {flop_ratio:.3f} |"
        )


if __name__ == "__main__":
    main()

"""Parameters, FLOPs and CPU time per network, encoder and decoder.

FLOPs follow the convention of seed 000's Table 1: 2 x multiply-accumulates of the convolutions (dense, depthwise,
transposed) and linear layers, counted by fvcore. Normalisation and elementwise ops are not counted (fvcore would
count InstanceNorm at 1 FLOP per element and ignore activations, so mixing them in would make the figure depend on
the counter rather than on the architecture).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def part_names(model: nn.Module) -> list[str]:
    """The parts reported besides the whole network: ``encoder`` and ``decoder`` where the model has them."""
    return [name for name in ("encoder", "decoder") if isinstance(getattr(model, name, None), nn.Module)]


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """2 x conv/linear MACs of one eval-mode forward pass, for the network and each part."""
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import addmm_flop_jit, bmm_flop_jit, conv_flop_jit, linear_flop_jit, matmul_flop_jit

    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(*input_shape)
        analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        # Only multiply-accumulates: fvcore's defaults also count norms, upsampling and pooling.
        analysis.clear_op_handles().set_op_handle(
            **{
                "aten::_convolution": conv_flop_jit,
                "aten::addmm": addmm_flop_jit,
                "aten::bmm": bmm_flop_jit,
                "aten::linear": linear_flop_jit,
                "aten::matmul": matmul_flop_jit,
                "aten::mm": matmul_flop_jit,
            }
        )
        by_module = analysis.by_module()
    finally:
        model.train(was_training)
    flops = {"network": 2 * by_module[""]}
    flops.update({name: 2 * by_module.get(name, 0) for name in part_names(model)})
    return flops


@torch.no_grad()
def time_forward(
    model: nn.Module, input_shape: Sequence[int], threads: int = 2, warmup: int = 1, repeats: int = 3
) -> float:
    """Median wall time (s) of an eval-mode forward pass on the CPU with ``threads`` intra-op threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    x = torch.randn(*input_shape)
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


@dataclass
class Profile:
    name: str
    input_shape: tuple[int, ...]
    params: dict[str, int]
    flops: dict[str, int]
    extra: dict[str, object] = field(default_factory=dict)


def profile_model(name: str, model: nn.Module, input_shape: Sequence[int]) -> Profile:
    params = {"network": count_params(model)}
    params.update({part: count_params(getattr(model, part)) for part in part_names(model)})
    return Profile(name, tuple(input_shape), params, count_flops(model, input_shape))


def format_profiles(profiles: Sequence[Profile]) -> str:
    """A Markdown table: params (M) and FLOPs (2 x MAC) for network, encoder and decoder."""
    head = "| network | input | params | enc params | dec params | FLOPs | enc FLOPs | dec FLOPs |"
    rows = [head, "|" + "---|" * 8]
    for p in profiles:
        params = [_millions(p.params.get(k)) for k in ("network", "encoder", "decoder")]
        flops = [_flops(p.flops.get(k)) for k in ("network", "encoder", "decoder")]
        shape = "x".join(map(str, p.input_shape))
        rows.append(f"| {p.name} | {shape} | " + " | ".join(params + flops) + " |")
    return "\n".join(rows)


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n:,} ({n / 1e6:.3f}M)"


def _flops(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e12:.3f}T" if n >= 1e11 else f"{n / 1e9:.2f}G"

"""Parameters, FLOPs and CPU time per network, encoder and decoder, in the format of Table 1 of Martinho,
"Efficient Algorithms for Medical Image Segmentation" (MSc thesis).

FLOPs follow the convention of Martinho's Table 1: 2 x multiply-accumulates of the convolutions (dense, depthwise,
transposed) and linear layers, counted by ``torch.utils.flop_counter``. Normalisation and elementwise ops are not
counted (counters disagree on them, so mixing them in would make the figure depend on the counter rather than on the
architecture).

Table 1 conventions (tests/data/reference/architectures.md sections 1 and 4), reproduced by :func:`format_profiles`:

- "Dec." covers the decoder's conv stages only (``decoder.stages``); the transposed convs and the segmentation heads
  are in the network total only.
- "Enc." and "Network" parameters include the ImageNet head (1x1 conv, BN, FC) that the thesis' EfficientNet encoders
  carried but never ran. Our encoders do not build it (no dead weights); they report its size as
  ``encoder.imagenet_head_params``, and the table prints both the used and the thesis figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def part_names(model: nn.Module) -> list[str]:
    """The parts reported besides the whole network: ``encoder``, ``decoder`` and ``decoder.stages`` where present."""
    names = [name for name in ("encoder", "decoder") if isinstance(getattr(model, name, None), nn.Module)]
    if "decoder" in names and isinstance(getattr(model.decoder, "stages", None), nn.Module):
        names.append("decoder.stages")
    return names


def _part(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def count_flops(model: nn.Module, input_shape: Sequence[int], parts: Sequence[str] | None = None) -> dict[str, int]:
    """2 x conv/linear MACs of one eval-mode forward pass, for the network and each of ``parts`` (submodule names;
    default :func:`part_names`).

    Counted by ``torch.utils.flop_counter`` on the ``meta`` device: only shapes are computed, so a count at 128^3 or
    at Sauron's 160 x 160 x 80 patch costs no forward pass. The counter sees matrix products and convolutions
    (dense, grouped/depthwise, transposed) only, which is the Table 1 convention.
    """
    tensors = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
    modes = {m: m.training for m in model.modules()}
    model.eval()  # eval mode also keeps training-only hooks (Sauron's regulariser) silent
    try:
        with FlopCounterMode(display=False) as counter:
            functional_call(model, tensors, (torch.empty(*input_shape, device="meta"),))
    finally:
        for m, mode in modes.items():
            m.training = mode
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__

    def part(name: str) -> int:
        if f"{root}.{name}" in by_module:
            return int(by_module[f"{root}.{name}"])
        # a container that is never called itself (a ModuleList): the sum over its direct children
        prefix = f"{root}.{name}."
        return int(sum(v for k, v in by_module.items() if k.startswith(prefix) and "." not in k[len(prefix) :]))

    flops = {"network": int(counter.get_total_flops())}
    flops.update({name: part(name) for name in (part_names(model) if parts is None else parts)})
    return flops


@torch.no_grad()
def time_forward(
    model: nn.Module, input_shape: Sequence[int], threads: int = 2, warmup: int = 1, repeats: int = 3
) -> float:
    """Median wall time (s) of an eval-mode forward pass without gradients (as inference runs) on the CPU with
    ``threads`` intra-op threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    x = torch.randn(*input_shape)
    times = []
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model(x)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


@dataclass
class Profile:
    """``params`` and ``flops`` map ``"network"`` and each of :func:`part_names` to counts of the built module;
    ``head_params`` is the unused ImageNet head that Martinho's thesis counted (0 where there is none)."""

    name: str
    input_shape: tuple[int, ...]
    params: dict[str, int]
    flops: dict[str, int]
    extra: dict[str, object] = field(default_factory=dict)
    head_params: int = 0

    @property
    def thesis_params(self) -> int:
        """The Table 1 figure: used parameters plus the unused ImageNet head."""
        return self.params["network"] + self.head_params

    def table1_part(self, kind: str, part: str) -> int | None:
        """Table 1's network / encoder / decoder figure (see the module docstring for its conventions)."""
        counts = self.params if kind == "params" else self.flops
        key = {"network": "network", "encoder": "encoder", "decoder": "decoder.stages"}[part]
        value = counts.get(key, counts.get("decoder") if part == "decoder" else None)
        if value is not None and kind == "params" and part in ("network", "encoder"):
            value += self.head_params
        return value


def profile_model(name: str, model: nn.Module, input_shape: Sequence[int]) -> Profile:
    params = {"network": count_params(model)}
    params.update({part: count_params(_part(model, part)) for part in part_names(model)})
    head = int(getattr(getattr(model, "encoder", None), "imagenet_head_params", 0))
    flops = count_flops(model, input_shape)
    return Profile(name, tuple(input_shape), params, flops, head_params=head)


def format_profiles(profiles: Sequence[Profile]) -> str:
    """A Markdown table in the format of Martinho's Table 1 (FLOPs = 2 x MAC; "dec" = decoder conv stages; network and
    encoder parameters with the unused ImageNet head, as the thesis counted), plus the parameters the module really
    has ("used") and the head that makes the difference."""
    head = (
        "| network | input | FLOPs | enc FLOPs | dec FLOPs | params | enc params | dec params "
        "| used params | unused ImageNet head |"
    )
    rows = [head, "|" + "---|" * 10]
    for p in profiles:
        flops = [_flops(p.table1_part("flops", part)) for part in ("network", "encoder", "decoder")]
        params = [_millions(p.table1_part("params", part)) for part in ("network", "encoder", "decoder")]
        shape = "x".join(map(str, p.input_shape))
        used = f"{p.params['network']:,}"
        rows.append(f"| {p.name} | {shape} | " + " | ".join(flops + params + [used, f"{p.head_params:,}"]) + " |")
    return "\n".join(rows)


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.3f}M"


def _flops(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e12:.3f}T" if n >= 1e11 else f"{n / 1e9:.3f}G"

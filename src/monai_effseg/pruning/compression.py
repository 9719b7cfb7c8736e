"""Size of a (pruned) network, and its compression curve over training.

FLOPs are :func:`monai_effseg.profile.count_flops` (2 x multiply-accumulates of convs and linear layers, the
convention of the papers' tables), counted from shapes only, so logging them every epoch at the full 160 x 160 x 80
patch costs no forward pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from monai_effseg.profile import count_flops

__all__ = ["conv_flops", "plot_compression", "write_history"]


def conv_flops(network: nn.Module, input_shape: Sequence[int]) -> int:
    """2 x conv/linear MACs of one eval-mode forward pass of ``input_shape`` (batch included), without computing it."""
    return count_flops(network, input_shape)["network"]


def write_history(history: Sequence[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(list(history), indent=1))
    tmp.replace(path)


def plot_compression(history: Sequence[dict], path: str | Path, title: str = "Sauron compression") -> Path:
    """Params and FLOPs (% of the unpruned network) against the epoch, as a PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("params", "parameters"), ("flops", "FLOPs")):
        base = history[0][key]
        if not base:
            continue
        ax.plot(epochs, [100.0 * h[key] / base for h in history], marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("% of the unpruned network")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend()
    last = history[-1]
    ax.set_title(
        f"{title}: {last['params'] / 1e6:.2f}M params, {last['flops'] / 1e9:.1f} GFLOPs (epoch {last['epoch']})",
        fontsize=9,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path

"""The fair Sauron benchmark's bars (issue 27; ``benchmarks/bench_sauron.py --fair``): bar 2 (the compression keeps
falling once the thresholds sit at tau_max) and bar 1 (FLOPs cut and the Dice gap to the same seed's control), from
histories shaped like the pruner's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_sauron  # noqa: E402

N_LAYERS = 4


def history(flops: list[float], at_max: list[int], finetune: int = 0) -> list[dict]:
    """Epoch 0 (the start) then one row per epoch; the last ``finetune`` epochs are the fine-tune phase."""
    rows = []
    for epoch, (f, n) in enumerate(zip(flops, at_max)):
        phase = None if epoch == 0 else ("finetune" if epoch > len(flops) - 1 - finetune else "prune")
        rows.append({"epoch": epoch, "flops": f, "params": 0, "tau_max": 0.3, "taus_at_max": n, "phase": phase})
    return rows


def test_falling_counts_from_half_the_layers_at_tau_max_not_every_layer():
    # two of four layers reach tau_max at epoch 2; the other two keep losing channels, so (d) holds them below it
    h = history([100, 90, 80, 70, 60, 50, 40], [0, 1, 2, 2, 3, 3, 3])
    out = bench_sauron.keeps_falling(h, N_LAYERS)
    assert out["epoch_tau_max"] == 2 and out["epoch_every_layer_at_max"] is None
    assert (out["epoch_middle"], out["flops_pct_middle"], out["flops_pct_end"]) == (4, 60.0, 40.0)
    assert out["falling"] is True


def test_a_curve_that_drops_then_lies_flat_does_not_keep_falling():
    # the 72-epoch epoch-average run: a drop right after tau stops rising, then flat for the rest of the window
    h = history([100, 90, 80, 60, 55, 55, 55, 55, 55], [0, 1, 2, 2, 4, 4, 4, 4, 4])
    out = bench_sauron.keeps_falling(h, N_LAYERS)
    assert out["epoch_tau_max"] == 2 and out["epoch_every_layer_at_max"] == 4
    assert out["flops_pct_at_tau_max"] == 80.0 and out["falling"] is False


def test_the_fine_tune_phase_is_not_part_of_the_window():
    # pruning stops after epoch 4; flat FLOPs in the fine-tune phase must not count against the curve
    h = history([100, 90, 80, 70, 60, 60, 60, 60], [0, 2, 2, 2, 2, 2, 2, 2], finetune=3)
    out = bench_sauron.keeps_falling(h, N_LAYERS)
    assert out["epoch_end"] == 4 and out["falling"] is True


def test_no_verdict_when_tau_never_reaches_its_maximum_or_too_late():
    never = bench_sauron.keeps_falling(history([100, 90, 80, 70], [0, 0, 1, 1]), N_LAYERS)
    assert never["epoch_tau_max"] is None and never["falling"] is None
    late = bench_sauron.keeps_falling(history([100, 90, 80, 70], [0, 0, 1, 2]), N_LAYERS)
    assert late["epoch_tau_max"] == 3 and late["falling"] is None


def entry(arm: str, seed: int, reduction: float, dice: float, falling: bool = True) -> dict:
    end = 100 * (1 - reduction)
    flops = [100, 100, 90, end + 20, end + 10, end] if falling else [100, 100, 90, end, end, end]
    widths = dict.fromkeys(["encoder.stages.0.0", "encoder.stages.1.0", "decoder.ups.0", "decoder.stages.0.0"], 2)
    return {"arm": arm, "seed": seed, "flops_reduction": reduction, "kidney_dice": dice, "wall_s": 1.0,
            "history": history(flops, [0, 0, 2, 2, 2, 2]), "widths": widths,
            "initial_widths": dict.fromkeys(widths, 8), "validation": [{"epoch": 5, "kidney_dice": dice}]}  # fmt: skip


@pytest.mark.parametrize(
    "pruned, bar1",
    [
        ([(0.92, 0.80), (0.95, 0.78), (0.91, 0.79)], True),  # >= 90%, gaps within 2 x the control's sd (0.1)
        ([(0.92, 0.60), (0.95, 0.58), (0.91, 0.59)], False),  # the Dice gap (-0.2) is past the tolerance
        ([(0.85, 0.80), (0.88, 0.78), (0.89, 0.79)], False),  # Dice kept, but the FLOPs cut is below 90%
    ],
)
def test_bar1_needs_the_flops_cut_and_the_dice_gap_together(pruned, bar1):
    control = [entry("unpruned", s, 0.0, d, falling=False) for s, d in enumerate((0.75, 0.80, 0.85))]
    arms = [entry("sauron_last", s, r, d) for s, (r, d) in enumerate(pruned)]
    summary = bench_sauron.fair_summary(control + arms, {})
    assert summary["dice_tolerance"] == pytest.approx(0.1)
    assert summary["arms"]["sauron_last"]["bar1"] is bar1
    assert summary["arms"]["sauron_last"]["bar2"] is True


def test_resummarize_rewrites_the_saved_bars_and_keeps_the_entries(tmp_path):
    control = [entry("unpruned", s, 0.0, 0.8, falling=False) for s in range(2)]
    flat = [entry("sauron_last", s, 0.9, 0.8, falling=False) for s in range(2)]
    fair = {"settings": {"features": [16, 32], "patch": [8, 8, 8], "epochs": 5, "iterations": 1, "warmup": 1,
                         "finetune": 0, "val_interval": 1, "seeds": [0, 1], "holdout": 2},
            "entries": control + flat, "summary": {"stale": True}}  # fmt: skip
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": 1, "sections": {"sauron": {"data": {"fair": fair, "curve": [1]}}}}))
    bench_sauron.fair_resummarize(path)
    saved = json.loads(path.read_text())["sections"]["sauron"]["data"]
    assert saved["curve"] == [1] and saved["fair"]["entries"] == json.loads(json.dumps(control + flat))
    assert "stale" not in saved["fair"]["summary"]
    assert saved["fair"]["summary"]["arms"]["sauron_last"]["bar2"] is False

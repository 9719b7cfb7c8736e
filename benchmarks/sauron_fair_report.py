"""Markdown of the fair Sauron benchmark (``bench_sauron.py --fair``; issue 27), from its results entry
(``docs/benchmarks.json``, ``sections.sauron.data.fair``). Torch-free, so a report-only render can import it."""

from __future__ import annotations

from report_format import md_table

__all__ = ["at_tau_max", "render_fair"]


def at_tau_max(row: dict, n_layers: int) -> bool:
    """Bar 2's "at tau_max" for one history row: at least half of the layers' thresholds at their maximum
    (``bench_sauron.keeps_falling`` says why not all)."""
    return 2 * row["taus_at_max"] >= n_layers


def _ms(stat: dict, scale: float = 1.0, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{scale * stat['mean']:.{digits}f} +- {scale * stat['sd']:.{digits}f} (n={stat['n']})"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return md_table(header, rows).splitlines()


def _curves(fair: dict) -> list[str]:
    out = ["", "Validation kidney Dice of the unpruned control (levelled off: last two validations within 0.02 of the "
           "two before):", ""]  # fmt: skip
    rows = [[e["seed"], " ".join(f"{v['epoch']}:{v['kidney_dice']}" for v in e["validation"])]
            for e in fair["entries"] if e["arm"] == "unpruned"]  # fmt: skip
    out += _table(["seed", "epoch:Dice"], rows)
    out += ["", f"Levelled off per seed: {fair['summary'].get('control_levelled')}", "",
            "Compression curves (FLOPs % of the start per epoch; `*` = at least half of the layers' tau at its maximum):",
            ""]  # fmt: skip
    rows = []
    for e in fair["entries"]:
        if e["arm"] == "unpruned":
            continue
        n = len(e["widths"])
        base = e["history"][0]["flops"]
        rows.append(
            [
                e["arm"],
                e["seed"],
                " ".join(
                    f"{h['epoch']}:{100 * h['flops'] / base:.1f}{'*' if at_tau_max(h, n) else ''}"
                    for h in e["history"][1:]
                ),
            ]
        )
    return out + _table(["arm", "seed", "epoch:FLOPs%"], rows)


def _widths(fair: dict) -> list[str]:
    rows = []
    for e in fair["entries"]:
        if e["arm"] == "unpruned":
            continue
        levels: dict[str, list[str]] = {}
        for name, w in e["widths"].items():
            index = int(name.split(".")[2])
            top = 1 + max(int(n.split(".")[2]) for n in e["widths"] if n.startswith("encoder.stages."))
            level = index if name.startswith("encoder.") else top - 2 - index
            levels.setdefault(level, []).append(f"{w}/{e['initial_widths'][name]}")
        rows.append([e["arm"], e["seed"]] + [" ".join(levels[k]) for k in sorted(levels)])
    n_levels = max((len(r) - 2 for r in rows), default=0)
    return ["", "Final widths per level (kept/initial, encoder layers then decoder layers of the level; level 0 = full "
            "resolution):", ""] + _table(["arm", "seed"] + [f"level {i}" for i in range(n_levels)], rows)  # fmt: skip


def render_fair(fair: dict) -> str:
    """The fair benchmark's tables and its four measured bars."""
    s, summary = fair["settings"], fair["summary"]
    out = [
        ("**SMOKE RUN: tiny sizes, not representative.** " if fair.get("smoke") else "")
        + f"Fair Sauron benchmark (`python benchmarks/bench_sauron.py --fair`, {fair.get('measured_at')}, "
        f"{fair.get('threads')} threads, {fair.get('elapsed_s', 0) / 60:.0f} min): the `kits_sauron_nnunet` demo "
        f"overlay at features {s['features']}, patch {s['patch']}, {s['epochs']} epochs x {s['iterations']} "
        f"iterations (warm-up {s['warmup']}, fine-tune the last {s['finetune']}), validation every "
        f"{s['val_interval']} epochs, seeds {s['seeds']}, {s['holdout']} hold-out phantoms; every arm trains the same "
        "epochs. Dice gap = arm - the same seed's unpruned control (hold-out kidney Dice).",
        "",
    ]
    rows = [[e["arm"], e["seed"], f"{100 * e['flops_reduction']:.1f}%", e["kidney_dice"], e["wall_s"]]
            for e in fair["entries"]]  # fmt: skip
    out += _table(["arm", "seed", "FLOPs reduction", "hold-out kidney Dice", "wall s"], rows) + [""]
    rows = [[arm, _ms(a["flops_reduction"], 100, 1), _ms(a["kidney_dice"]), _ms(a["dice_gap"]), a.get("bar1", "-"),
             a.get("bar2", "-")] for arm, a in summary["arms"].items()]  # fmt: skip
    out += _table(["arm", "FLOPs reduction % (mean +- sd)", "hold-out kidney Dice", "Dice gap vs control",
                   "bar 1 (>= 90% FLOPs, gap >= -tol)", "bar 2 (keeps falling at tau_max)"], rows)  # fmt: skip
    out += ["", f"Dice tolerance max(0.02, 2 x control sd) = {summary['dice_tolerance']}."]
    out += _curves(fair) + _widths(fair)
    speed = fair.get("speed")
    if speed:
        p, paper = speed["pair"], speed["paper_network"]
        out += ["", f"Bar 3 (widths of {speed['widths_from']}; input {p['input']}, {fair.get('threads')} threads, "
                f"interleaved): unpruned {p['time']['unpruned']['median_s']:.3f} s, pruned "
                f"{p['time']['pruned']['median_s']:.3f} s; time ratio {p['time_ratio']:.3f}, FLOP ratio "
                f"{p['flop_ratio']:.3f}, quotient {p['quotient']:.2f} (within [0.5, 2]: {p['within_factor_2']}).",
                "", f"The same per-layer kept fractions on the paper's network (features {paper['features']}, input "
                f"{paper['input']}): {paper['flops_unpruned'] / 1e9:.1f} -> {paper['flops_pruned'] / 1e9:.1f} GFLOPs "
                f"({100 * paper['flops_reduction']:.1f}% fewer)."]  # fmt: skip
    return "\n".join(out)

"""The report's matplotlib figures (PNG, Agg backend), one function per section; each returns the path it wrote, or
``None`` when there is nothing to plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

KIDNEY_THRESHOLD = 0.85
LIVER_THRESHOLD = 0.9
TUMOUR_THRESHOLD = 0.5


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)
    tmp.replace(path)
    return path


def plot_bars(items: Sequence[tuple[str, float]], ylabel: str, title: str, path: Path) -> Optional[Path]:
    if not items:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(items) + 2), 3.8))
    ax.bar(range(len(items)), [v for _, v in items], color="tab:blue")
    ax.set_xticks(range(len(items)), [k for k, _ in items], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def speed_mode(data: dict) -> str:
    """The mode the speed figure and summary show: ``optimized`` (what the bundles run) when measured."""
    return "optimized" if "optimized" in data["modes"] else data["modes"][0]


def plot_speed(data: dict, path: Path) -> Optional[Path]:
    rows = [r for r in data["rows"] if r["ratio_wall_min"] is not None and r["mode"] == speed_mode(data)]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 2), 3.8))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["ratio_wall_min"] for r in rows], 0.4, label="CPU time ratio (wall min)")
    ax.bar([x + 0.2 for x in xs], [r["flop_ratio"] for r in rows], 0.4, label="FLOP ratio")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(list(xs), [r["name"] for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("relative to nnU-Net")
    ax.set_title(f"{speed_mode(data)} forward, 1x1x{data['input'][2]}^3, {data['threads']} threads", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_lite(data: dict, path: Path) -> Optional[Path]:
    rows = [r for r in data["rows"] if "per_slice_s" in r]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(rows) + 2), 3.8))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["per_slice_s"] * 1e3 for r in rows], 0.4, label="ours, CPU")
    thesis = [(r["thesis_per_slice_s"] or 0) * 1e3 for r in rows]
    ax.bar([x + 0.2 for x in xs], thesis, 0.4, label="thesis Tables 4.4/4.5")
    ax.set_xticks(list(xs), [r["name"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("ms per output slice")
    ax.set_title(f"one LiteUNet stage at {data['size']}x{data['size']}, {data['threads']} threads", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_demo_curves(data: dict, path: Path) -> Optional[Path]:
    bundles = {b: r for b, r in data["bundles"].items() if r.get("history")}
    if not bundles:
        return None
    plt = _pyplot()
    kinds = sorted({r["kind"] for r in bundles.values()})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.2 * len(kinds), 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind in zip(axes[0], kinds):
        for i, (bundle, r) in enumerate(b for b in bundles.items() if b[1]["kind"] == kind):
            for target in r["targets"]:
                pts = [(h["train_s"], h["dice"]) for h in r["history"]
                       if h["stage"] == target["stage"] and h["dice"] is not None]  # fmt: skip
                if pts:
                    label = bundle if target["name"] != "tumour" else None
                    ax.plot(*zip(*pts), marker=".", label=label, color=colours[i % len(colours)],
                            ls="-" if target["name"] != "tumour" else "--")  # fmt: skip
        ax.set_xlim(left=0)
        for threshold in (KIDNEY_THRESHOLD,) if kind == "kits" else (LIVER_THRESHOLD, TUMOUR_THRESHOLD):
            ax.axhline(threshold, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("training time (s, validation excluded)")
        ax.set_ylabel("validation kidney Dice" if kind == "kits" else "validation Dice (liver: -, tumour: --)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title("KiTS bundles" if kind == "kits" else "LiTS bundles", fontsize=10)
    return _save(fig, path)


def plot_sauron(data: dict, path: Path) -> Optional[Path]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    epochs = [c["epoch"] for c in data["curve"]]
    ax.plot(epochs, [c["params_pct"] for c in data["curve"]], marker=".", label="parameters")
    if all(c["flops_pct"] is not None for c in data["curve"]):
        ax.plot(epochs, [c["flops_pct"] for c in data["curve"]], marker=".", label="FLOPs")
    ax.set_xlabel("epoch")
    ax.set_ylabel("% of the unpruned network")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    val = [(v["epoch"], v["dice"]) for v in data["validation"] if v["dice"] is not None]
    handles, labels = ax.get_legend_handles_labels()
    if val:
        ax2 = ax.twinx()
        h = ax2.plot(*zip(*val), color="tab:green", marker="s", ms=3, label="validation kidney Dice")
        ax2.set_ylabel("Dice")
        ax2.set_ylim(0, 1.05)
        handles += h
        labels += ["validation kidney Dice"]
    ax.legend(handles, labels, fontsize=8, loc="lower left")
    ax.set_title("kits_sauron_nnunet demo: compression and Dice per epoch", fontsize=10)
    return _save(fig, path)


def plot_scatter(data: dict, path: Path) -> Optional[Path]:
    points = data["points"]
    if not points:
        return None
    plt = _pyplot()
    kinds = sorted({p["kind"] for p in points})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.2 * len(kinds), 4.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind in zip(axes[0], kinds):
        main, second = ("kidney", "tumour") if kind == "kits" else ("liver", "tumour")
        for i, p in enumerate(q for q in points if q["kind"] == kind):
            c = colours[i % len(colours)]
            if p["dice"].get(main) is not None:
                ax.scatter(p["gflops"], p["dice"][main], color=c, s=45, label=p["bundle"])
            if p["dice"].get(second) is not None:
                ax.scatter(p["gflops"], p["dice"][second], facecolors="none", edgecolors=c, s=45)
            if p.get("gflops_unpruned") and p["dice"].get(main) is not None:
                ax.annotate("", xy=(p["gflops"], p["dice"][main]), xytext=(p["gflops_unpruned"], p["dice"][main]),
                            arrowprops={"arrowstyle": "->", "color": c, "alpha": 0.6})  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("GFLOPs per forward pass of the demo network (2 x MAC, log)")
        ax.set_ylabel(f"hold-out Dice ({main}: filled, {second}: open)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title("KiTS demos" if kind == "kits" else "LiTS demos", fontsize=10)
    return _save(fig, path)


def demo_losses(r: dict) -> list[tuple[float, float]]:
    """(training s, mean training loss of the epoch) of one demo: the history's ``loss`` (run_all records it since
    issue 25), else the Sauron handler's per-epoch loss (single stage) placed at its epoch's validation."""
    points = [(h["train_s"], h["loss"]) for h in r["history"] if h.get("loss") is not None]
    if not points and r.get("sauron_history"):
        at = {h["epoch"]: h["train_s"] for h in r["history"] if h["stage"] == 0}
        points = [(at[s["epoch"]], s["loss"]) for s in r["sauron_history"] if s.get("loss") and s["epoch"] in at]
    return points


def plot_bundle_demo(r: dict, path: Path) -> Optional[Path]:
    """One bundle's demo: validation Dice of each stage and the training loss against training time."""
    if not r.get("history"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for stage in sorted({h["stage"] for h in r["history"]}):
        pts = [(h["train_s"], h["dice"]) for h in r["history"] if h["stage"] == stage and h["dice"] is not None]
        name = next(h["stage_name"] for h in r["history"] if h["stage"] == stage)
        if pts:
            ax.plot(*zip(*pts), marker=".", label=f"validation Dice ({name})")
    for t in r["targets"]:
        ax.axhline(t["threshold"], color="grey", lw=0.8, ls=":")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training time (s, validation excluded)")
    ax.set_ylabel("validation Dice")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    losses = demo_losses(r)
    if losses:
        ax2 = ax.twinx()
        handles += ax2.plot(*zip(*losses), color="tab:red", ls="--", marker="x", ms=4)
        labels.append("training loss")
        ax2.set_ylabel("training loss (epoch mean)")
    ax.legend(handles, labels, fontsize=7, loc="best")
    ax.set_title(
        f"{r['bundle']}: capped run_all demo" + ("" if losses else " (training loss not recorded)"), fontsize=10
    )
    return _save(fig, path)

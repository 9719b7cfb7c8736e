"""Each bundle's CPU demo, exactly as ``effseg demo <bundle>`` runs it (``train.json`` + ``demo.json``: training,
then the hold-out evaluation of ``inference.json`` on 6 unseen synthetic phantoms), timed, with the issue bars:

* KiTS19 family (issue 6, bar 4): kidney Dice >= 0.85 within 10 minutes of 2-core CPU; the cascade must beat the
  single-stage ResidualUNet's tumour Dice on the same budget.
* LiTS family (issue 5, bar 3): liver Dice >= 0.9 and tumour Dice >= 0.5 within 10 minutes.

Prints, per run: wall time, process CPU time (user + sys; on a shared machine wall time stretches with the load, CPU
time much less), the load average before and after, and the hold-out metrics of the bundle's protocol. With
``--repeats N`` the bundles are interleaved (a, b, c, a, b, c, ...) so that load changes hit every bundle alike, and
min / median are reported.

    python benchmarks/bench_demo.py [--bundles kits_residual_unet kits_unet_cascade kits_mss_unet]
                                    [--repeats 1] [--threads 2] [--out results.json]
    python benchmarks/bench_demo.py --bundles lits_mobilenet_unet lits_shufflenet_unet lits_dsts_unet

run_all.py's ``demos``, ``sauron`` and ``scatter`` sections are measured here too (:func:`measure_demos` and below):
the same demos under a time cap per training stage (``training_clock.CappedStages``, ignite handlers on each
stage's trainer), with the validation Dice, training loss and training time of every epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from demo_stages import run_demo_list
from report_figures import KIDNEY_THRESHOLD, LIVER_THRESHOLD, TUMOUR_THRESHOLD
from report_format import bundle_kind, clean, cpu_seconds, error_message, log_tail, redirect_output
from report_sections import SAURON_BUNDLE, SAURON_CLAIM
from training_clock import CappedStages

from monai_effseg.workflows import run_bundle

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("kits_residual_unet", "kits_unet_cascade", "kits_mss_unet")
TIME_LIMIT_S = 600.0
# Hold-out metrics reported per evaluation protocol, and the Dice bars of the issues (metric -> minimum).
KEYS = {
    "kits19": ("kidney_dice", "tumor_dice", "kidney_sd", "tumor_sd", "composite"),
    "kits21": ("kidney_and_mass_dice", "mass_dice", "tumor_dice", "kidney_and_mass_sd", "composite"),
    "lits": ("liver_dice", "tumor_dice", "lesion_recall_iou50", "lesion_precision_iou50", "liver_assd"),
}
BARS = {"kits19": {"kidney_dice": 0.85}, "kits21": {"kidney_and_mass_dice": 0.85},
        "lits": {"liver_dice": 0.9, "tumor_dice": 0.5}}  # fmt: skip


def run_demo(bundle: str, work: Path) -> dict:
    """One demo run in a scratch folder; returns timings and the hold-out summary."""
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), cpu_seconds()
    run_bundle(REPO / "bundles" / bundle, ["train.json", "demo.json"], "train",
               literals={"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval")})  # fmt: skip
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    summary = json.loads((work / "eval" / "holdout" / "metrics_summary.json").read_text(encoding="utf-8"))
    protocol = summary["protocol"]
    holdout = {k: round(summary["metrics"][k]["mean"], 4) for k in KEYS[protocol] if k in summary["metrics"]}
    return {"bundle": bundle, "protocol": protocol, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), "holdout": holdout,
            "overlays": summary.get("files", {}).get("overlays", [])}  # fmt: skip


def verdict(protocol: str, wall_s: float, scores: dict) -> str:
    misses = [f"{k} {scores[k]:.4f} < {bar}" for k, bar in BARS[protocol].items() if not scores[k] >= bar]
    if wall_s > TIME_LIMIT_S:
        misses.append(f"{wall_s:.0f} s > {TIME_LIMIT_S:.0f} s")
    return "met" if not misses else "missed: " + "; ".join(misses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", default=list(BUNDLES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write all runs as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    for repeat in range(args.repeats):
        for bundle in args.bundles:
            with tempfile.TemporaryDirectory(prefix=f"demo_{bundle}_") as work:
                result = run_demo(bundle, Path(work))
            result["repeat"] = repeat
            runs.append(result)
            print(json.dumps(result), flush=True)
    for protocol in KEYS:
        mine = [r for r in runs if r["protocol"] == protocol]
        if not mine:
            continue
        keys = KEYS[protocol]
        print("\n| bundle | runs | wall min / median (s) | CPU min / median (s) | load | "
              + " | ".join(keys) + " | bar |")  # fmt: skip
        print("|" + "---|" * (len(keys) + 6))
        for bundle in dict.fromkeys(r["bundle"] for r in mine):
            rows = [r for r in mine if r["bundle"] == bundle]
            walls, cpus = [r["wall_s"] for r in rows], [r["cpu_s"] for r in rows]
            scores = {k: statistics.median(r["holdout"].get(k, float("nan")) for r in rows) for k in keys}
            loads = f"{min(r['load_before'] for r in rows):.1f}-{max(r['load_after'] for r in rows):.1f}"
            print(f"| {bundle} | {len(rows)} | {min(walls)} / {statistics.median(walls)} | {min(cpus)} / "
                  f"{statistics.median(cpus)} | {loads} | " + " | ".join(f"{scores[k]:.4f}" for k in keys)
                  + f" | {verdict(protocol, statistics.median(walls), scores)} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=2))


# ---------------------------------------------------------------------------- run_all's sections: demos, sauron, scatter
# ``ctx`` below is run_all's ``Context``: settings, log, scratch folder, the run's deadlines and this run's results.


def device_overrides(device: str) -> dict:
    """Bundle ids that pin a workflow to ``device`` (``auto``: the bundle's own choice), as config text."""
    if device == "auto":
        return {}
    return {"device": f"$torch.device('{device}')", "amp": device.startswith("cuda")}


def device_literals(device: str) -> dict:
    """:func:`device_overrides` as Python values, for workflows that take literals (the hold-out evaluation)."""
    import torch

    return {} if device == "auto" else {"device": torch.device(device), "amp": device.startswith("cuda")}


def demo_overrides(bundle: str, s: Any, work: Path) -> tuple[dict, dict, dict]:
    """(training overrides of every stage, config overrides of the demo workflow, its literals: the output folders)."""
    quick = quick_demo_overrides(bundle) if s.quick else {}
    train = {"val_interval": s.val_interval, **device_overrides(s.device),
             **{k: v for k, v in quick.items() if k not in ("demo_cases", "demo_holdout_cases")}, **s.demo_overrides}  # fmt: skip
    literals = {"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval")}
    return train, {**quick, **train}, literals


def run_capped_demo(bundle: str, ctx: Any, budget_s: float) -> dict:
    """One bundle's demo under ``budget_s`` (training + validation; the hold-out evaluation comes on top)."""
    import torch

    from monai_effseg.workflows import bundle_workflow

    s = ctx.settings
    torch.set_num_threads(s.threads)
    work = ctx.work / "demos" / bundle
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    train_overrides, overrides, literals = demo_overrides(bundle, s, work)
    run = {"bundle": bundle, "budget_s": budget_s, "n_stages": count_stages(bundle), "load_before": os.getloadavg()[0],
           "holdout_s": 0.0, "run_error": None, "holdout_dir": None, "protocol": None, "overrides": {**literals, **overrides}}  # fmt: skip
    t0, c0 = time.perf_counter(), cpu_seconds()
    stages = CappedStages(t0 + budget_s, run["n_stages"])
    with redirect_output(ctx.log_file(f"demo_{bundle}")):
        workflow = bundle_workflow(REPO / "bundles" / bundle, ["train.json", "demo.json"], "train", literals=literals,
                                   **overrides)  # fmt: skip
        workflow.initialize()
        try:
            run_demo_list(workflow, stages, train_overrides, device_literals(s.device), run)
        except Exception as exc:  # noqa: BLE001 - keep what the training stages measured
            run["run_error"] = error_message(exc) + "\n" + traceback.format_exc()[-2500:]
            if not stages.stages:
                raise
        finally:
            with contextlib.suppress(Exception):
                run["holdout_dir"] = workflow.parser.get_parsed_content("holdout_dir")
                run["protocol"] = workflow.parser.get_parsed_content("eval_protocol")
            workflow.finalize()
            del workflow
            gc.collect()  # progress bars and loggers flush here, into the log, not onto the terminal later
    run["wall_s"], run["cpu_s"] = time.perf_counter() - t0, cpu_seconds() - c0
    return demo_result(run, stages, work)


def holdout_summary(run: dict, work: Path) -> tuple[dict, Optional[str]]:
    """The demo's hold-out metrics summary, and a note where run_all had to evaluate its predictions itself."""
    summary_file = work / "eval" / "holdout" / "metrics_summary.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    predictions = work / "eval" / "holdout" / "predictions"
    if summary or not (run["run_error"] and run["holdout_dir"] and predictions.is_dir() and any(predictions.iterdir())):
        return summary, None
    # The demo's own hold-out evaluation failed after its inference wrote the predictions (seen with the LiTS
    # bundles: predictions named volume-N.nii.gz, which metrics.report.find_cases skips as images). Evaluate the
    # same files with the same function under neutral names, and say so in the report.
    try:
        summary = evaluate_renamed(predictions, Path(run["holdout_dir"]), work / "eval" / "holdout_renamed",
                                   run["protocol"])  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        return summary, "hold-out evaluation failed: " + error_message(exc)
    return summary, (
        "the demo's own hold-out evaluation failed (" + run["run_error"].split("\n")[0][:300] + "); "
        "run_all evaluated its predictions with metrics.report.evaluate_datalist under neutral file names"
    )


def demo_targets(bundle: str, n_stages: int, history: list[dict], names: list[str]) -> list[dict]:
    """Per Dice target: whether and when (training seconds, epoch) its stage's validation Dice reached it."""
    targets = []
    for target in dice_targets(bundle, n_stages):
        mine = [h for h in history if h["stage"] == target["stage"] and h["dice"] is not None]
        hit = next((h for h in mine if h["dice"] >= target["threshold"]), None)
        targets.append({**target, "stage_name": names[target["stage"]], "reached": hit is not None,
                        "time_to_dice_s": hit["train_s"] if hit else None, "epoch": hit["epoch"] if hit else None,
                        "best_val_dice": max((h["dice"] for h in mine), default=None),
                        "final_val_dice": mine[-1]["dice"] if mine else None})  # fmt: skip
    return targets


def demo_result(run: dict, stages: CappedStages, work: Path) -> dict:
    """The demos section's record of one bundle (the ``benchmarks.json`` schema)."""
    bundle, n_stages, kind = run["bundle"], run["n_stages"], bundle_kind(run["bundle"])
    summary, holdout_note = holdout_summary(run, work)
    holdout = {k: v.get("mean") for k, v in summary.get("metrics", {}).items()
               if "dice" in k and isinstance(v, dict) and v.get("mean") is not None}  # fmt: skip
    names = stage_names(bundle, n_stages)
    history = [{**v, "stage_name": names[v["stage"]] if v["stage"] < len(names) else str(v["stage"]),
                "dice": validation_dice(v["metrics"], kind)} for v in stages.validations]  # fmt: skip
    sauron_file = work / "eval" / "sauron_history.json"
    result = {
        "bundle": bundle, "kind": kind, "budget_s": run["budget_s"], "n_stages": n_stages,
        "stages": [{**st, "name": names[st["index"]] if st["index"] < len(names) else str(st["index"])}
                   for st in stages.stages],
        "history": history, "targets": demo_targets(bundle, n_stages, history, names), "holdout": holdout,
        "holdout_primary": holdout_primary(holdout, kind), "holdout_s": run["holdout_s"], "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"], "training_s": sum(st.get("train_s", 0.0) for st in stages.stages),
        "validation_s": sum(st.get("validation_s", 0.0) for st in stages.stages),
        "load_before": run["load_before"], "load_after": os.getloadavg()[0], "overrides": clean(run["overrides"]),
        "sauron_history": json.loads(sauron_file.read_text(encoding="utf-8")) if sauron_file.is_file() else None,
        "run_error": run["run_error"], "holdout_note": holdout_note,
    }  # fmt: skip
    for key, configs in (("demo_network", ["train.json", "demo.json"]), ("paper_network", ["train.json"])):
        try:
            result[key] = bundle_network_flops(bundle, configs)
        except Exception as exc:  # noqa: BLE001
            result[key] = {"error": f"{type(exc).__name__}: {exc}"}
    if result["sauron_history"]:
        result["demo_network"]["pruned_flops"] = result["sauron_history"][-1].get("flops")
        result["demo_network"]["pruned_params"] = result["sauron_history"][-1].get("params")
    return result


def count_stages(bundle: str) -> int:
    """Training stages in the demo's run list: the trainer itself plus every stage it starts."""
    run = json.loads((REPO / "bundles" / bundle / "configs" / "demo.json").read_text(encoding="utf-8")).get("run", [])
    pattern = re.compile(r"trainer\.run\(|train_stage\(")
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

    return count_flops(module, shape)["network"]


def bundle_network_flops(bundle: str, configs: Sequence[str], overrides: Optional[dict] = None) -> dict:
    """Params and FLOPs (2 x MAC) of one forward pass of a bundle's ``network_def`` at its patch: both stages of a
    cascade (stage 2 with its 2 input channels) or of a liver-then-tumour network (one 2.5D / 3D slab)."""
    from monai.bundle import ConfigParser

    root = REPO / "bundles" / bundle
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
    # demo.json's synthetic_dataset(...) calls read their sizes from these plain keys
    return {"max_epochs": 2, "iterations_per_epoch": 3, "demo_cases": 8, "demo_holdout_cases": 2}


def measure_demos(ctx: Any) -> dict:
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
            r = run_capped_demo(bundle, ctx, budget)
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


def measure_sauron(ctx: Any) -> dict:
    demo = ctx.live.get("demos", {}).get(SAURON_BUNDLE)
    source = "the demos section of this run"
    if not demo or "error" in demo or not demo.get("sauron_history"):
        budget = (
            ctx.settings.demo_budget_s
            if ctx.settings.quick
            else min(ctx.settings.demo_budget_s, max(60.0, ctx.deadline_left() - 150))
        )
        ctx.log(f"sauron: running the {SAURON_BUNDLE} demo (time cap {budget:.0f} s)")
        demo = run_capped_demo(SAURON_BUNDLE, ctx, budget)
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
            "reference": SAURON_CLAIM, **_fair_results(ctx)}  # fmt: skip


def _fair_results(ctx: Any) -> dict:
    """The fair benchmark's results (``bench_sauron.py --fair``, 90 minutes, not part of run_all) stay in the
    section when run_all re-measures the capped demo."""
    previous = ctx.results["sections"].get("sauron", {}).get("data") or {}
    return {"fair": previous["fair"]} if previous.get("fair") else {}


def measure_scatter(ctx: Any) -> dict:
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


if __name__ == "__main__":
    main()

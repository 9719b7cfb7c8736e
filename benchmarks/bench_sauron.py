"""Sauron pruning on the CPU (issue 7): compression with quality, and whether the pruned network's speed is real.

**Compression with quality.** The ``kits_sauron_nnunet`` demo (``train.json`` + ``demo.json``: synthetic KiTS-like
phantoms, its patch, widths and budget) trains with Sauron pruning after every epoch. Two unpruned references get the
*same* budget (epochs x iterations per epoch, batch, patch):

- ``unpruned``: the same bundle, net, data, optimizer and seed with pruning switched off (``sauron_lambda = 0`` and
  every threshold 0: ``delta_prune >= 0`` always holds, so no channel is ever dropped) -- the like-for-like control;
- ``nnunet_baseline``: the ``kits_nnunet_baseline`` demo (PlainUNet 16-128, KiTS21 labels with cysts, SGD), as the
  issue names it; its kidney figure is KiTS21 "kidney and masses", the Sauron bundle's is KiTS19 "kidney" (label > 0),
  both the kidney including its masses.

Validation runs after every epoch (the demos validate every few epochs); the record per epoch is the FLOPs of the
network as it is at that moment (2 x conv MACs at the demo patch, batch 1, counted on the ``meta`` device by
:func:`monai_effseg.pruning.conv_flops`; for the pruned run this is after that epoch's surgery, which runs before
validation) and the validation kidney Dice. At the end each final network (``model_final.pt``: for the pruned run the
most compressed one, so all runs use their final weights) is evaluated on the demo's 6 hold-out phantoms
(:func:`monai_effseg.workflows.evaluate_holdout`). Printed: the per-epoch table, FLOPs reduction (%), the Dice gap
pruned - unpruned; ``--plot PNG`` draws validation Dice against FLOPs.

**The speed is real.** Forward time on ``--threads`` CPU threads at ``1x1x160x160x80`` (the paper's patch), eval mode
under ``torch.inference_mode``, warm-up then the median of ``--rounds`` rounds, the pruned and unpruned nets
*interleaved* in each round so that machine load hits both alike. Two pairs:

- ``full``: the bundle's full-size nnU-Net (``train.json`` features, 24-384) and the same net with each prunable
  layer kept at the demo's kept fraction of that layer (``round(full_width * demo_kept / demo_width)``, at least 2);
  the layer names are the same at both sizes (5 levels each).
- ``demo``: the demo's own unpruned and pruned nets (features of ``demo.json``).

For each: time ratio (pruned / unpruned), FLOP ratio and their quotient, which the issue wants within [0.5, 2].
Both in eager PyTorch (NCDHW) and, with ``--optimized``, after :func:`monai_effseg.deploy.optimize.optimize_for_inference`
(channels-last oneDNN convs), the form a CPU deployment would run.

The pruned widths come from this run's Sauron training or, with ``--widths-from model.pt``, from a saved checkpoint
(its ``sauron_widths`` buffer; ``--widths-features`` = the features that net was built with, default the demo's).
``--skip-training`` with ``--widths-from`` times only. Run it when the CPU is otherwise idle; other processes
stretch every time (the time *ratios* are interleaved and suffer less).

    python benchmarks/bench_sauron.py [--max-epochs N] [--runs sauron unpruned nnunet_baseline] [--plot curve.png]
        [--json out.json] [--widths-from model.pt --skip-training] [--optimized]

**Fair benchmark (issue 27), ``--fair``.** Seeds x arms (:data:`FAIR_ARMS`: the unpruned control, the authors'
last-forward sampling, the epoch average; ``--arms sauron_plateau`` adds the paper's plateau-gated raises), each on
the demo overlay with the same epochs, iterations, validation cadence and LR schedule, at :data:`FAIR_DEFAULTS`
(features 16-32-64-96-128, patch 48x48x32, 60 epochs x 12 iterations, warm-up 6, fine-tune the last 18, validation
every 5 epochs, 20 hold-out phantoms, seeds 0-2). Reports mean +- sd of the FLOPs reduction and of the hold-out
kidney Dice gap to the same seed's control (bar 1), the control's validation curve, the compression curves and
whether they keep falling once half of the layers' thresholds are at tau_max (bar 2; :func:`keeps_falling` says why
not all), the forward time of the pruned vs unpruned net at 1x1x160x160x80 in one interleaved run (bar 3), the
per-level widths and the same kept fractions' FLOPs on the paper's 24..384 network. The results merge into
``--results`` (default ``docs/benchmarks.json``, ``sections.sauron.data.fair``; atomic) and render with
``sauron_fair_report.render_fair`` (bar 4). At most 90 minutes on 2 cores (the results file records the run's
``elapsed_s``); ``--smoke`` runs it tiny in a few minutes and writes to ``/tmp/sauron_fair_smoke.json``;
``--resummarize`` recomputes the bars of the runs saved in ``--results`` without training:

    python benchmarks/bench_sauron.py --fair [--smoke | --resummarize] [--results PATH] [--fair-seeds 0 1 2]
        [--fair-epochs N] ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from ignite.engine import Events
from torch import nn
from training_clock import TrainingClock

from monai_effseg.pruning import ChannelGraph, SauronUNet, conv_flops, resize_channels, stored_widths
from monai_effseg.workflows import bundle_workflow, evaluate_holdout

REPO = Path(__file__).resolve().parents[1]
SAURON = "kits_sauron_nnunet"
BASELINE = "kits_nnunet_baseline"
SPEED_INPUT = (1, 1, 160, 160, 80)
# pruning off: no penalty, and every threshold 0 (delta_prune >= 0 always, so select_channels keeps every channel)
NO_PRUNING = {"sauron_lambda": 0.0, "sauron_tau_min": 0.0, "sauron_tau_max": 0.0}
RUNS = {"sauron": (SAURON, {}), "unpruned": (SAURON, NO_PRUNING), "nnunet_baseline": (BASELINE, {})}
KIDNEY_KEY = {"kits19": "kidney_dice", "kits21": "kidney_and_mass_dice"}


def _config(bundle: str, key: str, configs: Sequence[str] = ("train.json", "demo.json")):
    workflow = bundle_workflow(REPO / "bundles" / bundle, list(configs), "train")
    return workflow.parser.get_parsed_content(key)


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def train_run(
    label: str,
    work: Path,
    threads: int = 2,
    max_epochs: Optional[int] = None,
    iterations: Optional[int] = None,
    sauron_overrides: Optional[dict] = None,
) -> dict:
    """Train one run of :data:`RUNS` (demo overlay, validation every epoch), then evaluate its final network on the
    hold-out phantoms. Returns the per-epoch history (FLOPs at the demo patch, val kidney Dice), the hold-out Dice,
    the final widths (Sauron nets) and the timings."""
    torch.set_num_threads(threads)
    bundle, extra = RUNS[label]
    root = REPO / "bundles" / bundle
    overrides = {"val_interval": 1, **(sauron_overrides or {} if bundle == SAURON else {}), **extra}
    # the same recipe for the pruned run and its unpruned control
    if max_epochs:
        overrides["max_epochs"] = max_epochs
    if iterations:
        overrides["iterations_per_epoch"] = iterations
    paths = {"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval")}
    workflow = bundle_workflow(root, ["train.json", "demo.json"], "train", literals=paths, **overrides)
    workflow.initialize()
    parser = workflow.parser
    trainer = parser.get_parsed_content("train#trainer")
    network: nn.Module = parser.get_parsed_content("network_def")
    history = _record_history(label, parser, trainer, network)
    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    protocol = parser.get_parsed_content("eval_protocol")
    holdout = evaluate_holdout(
        root, parser.get_parsed_content("holdout_dir"), work / "holdout", protocol=protocol,
        overrides={**parser.get_parsed_content("demo_inference_overrides"),
                   "ckpt_path": str(work / "models" / "model_final.pt"),
                   "fingerprint_path": str(work / "models" / "fingerprint.json")},
    )  # fmt: skip
    result = {
        "label": label,
        "bundle": bundle,
        "overrides": overrides,
        "network": type(network).__name__,
        "features": list(parser.get_parsed_content("features")),
        "patch": list(parser.get_parsed_content("patch_size")),
        "epochs": trainer.state.epoch,
        "iterations_per_epoch": trainer.state.epoch_length,
        "protocol": protocol,
        "widths": ChannelGraph.trace(network).widths(network) if bundle == SAURON else None,
        "wall_s": round(wall, 1),
        **_summary(history, holdout.get("metrics", {}), protocol),
    }
    workflow.finalize()
    return result


def _record_history(label: str, parser, trainer, network: nn.Module) -> list[dict]:
    """A list that gets one entry (FLOPs at one patch, parameters, validation kidney Dice, training time) at the
    start and after every validation of ``trainer``."""
    flops_shape = [1, 1] + list(parser.get_parsed_content("patch_size"))
    dice_key = f"val_kits_dice_{KIDNEY_KEY[parser.get_parsed_content('eval_protocol')]}"
    history: list[dict] = [{"epoch": 0, "flops": conv_flops(network, flops_shape), "params": _params(network),
                            "kidney_dice": None, "train_s": 0.0}]  # fmt: skip
    clock = TrainingClock(trainer, parser.get_parsed_content("validate#evaluator"))

    @clock.on_validation
    def _record(engine, train_s: float) -> None:
        entry = {
            "epoch": trainer.state.epoch,
            "flops": conv_flops(network, flops_shape),
            "params": _params(network),
            "kidney_dice": round(float(engine.state.metrics.get(dice_key, float("nan"))), 4),
            "train_s": round(train_s, 1),
        }
        history.append(entry)
        print(f"[{label}] epoch {entry['epoch']}: {entry['flops'] / 1e9:.3f} GFLOPs ({entry['params']:,} params), "
              f"val kidney Dice {entry['kidney_dice']}, training {entry['train_s']} s", flush=True)  # fmt: skip

    return history


def _summary(history: list[dict], metrics: dict, protocol: str) -> dict:
    dices = [h["kidney_dice"] for h in history[1:] if h["kidney_dice"] is not None]
    return {
        "history": history,
        "initial_flops": history[0]["flops"],
        "final_flops": history[-1]["flops"],
        "initial_params": history[0]["params"],
        "final_params": history[-1]["params"],
        "final_val_kidney_dice": history[-1]["kidney_dice"],
        "best_val_kidney_dice": max(dices, default=None),
        "holdout_kidney_dice": _mean(metrics.get(KIDNEY_KEY[protocol])),
        "holdout": {k: _mean(v) for k, v in metrics.items() if "dice" in k},
        "training_s": history[-1]["train_s"],
    }


def _mean(entry) -> Optional[float]:
    if not entry or entry.get("mean") is None:
        return None
    return round(float(entry["mean"]), 4)


def compare(runs: dict[str, dict]) -> dict:
    """FLOPs reduction of the pruned run and its Dice gaps to each unpruned reference (pruned - reference)."""
    pruned = runs.get("sauron")
    if pruned is None:
        return {}
    out = {
        "flops_reduction_pct": round(100 * (1 - pruned["final_flops"] / pruned["initial_flops"]), 2),
        "params_reduction_pct": round(100 * (1 - pruned["final_params"] / pruned["initial_params"]), 2),
        "flops_goal_met": pruned["final_flops"] <= 0.1 * pruned["initial_flops"],
    }
    for ref in ("unpruned", "nnunet_baseline"):
        if ref not in runs:
            continue
        for kind in ("holdout_kidney_dice", "final_val_kidney_dice"):
            a, b = pruned.get(kind), runs[ref].get(kind)
            gap = None if a is None or b is None else round(a - b, 4)
            out[f"{kind}_gap_vs_{ref}"] = gap
            if kind == "holdout_kidney_dice":
                out[f"dice_goal_met_vs_{ref}"] = gap is not None and gap >= -0.02
        out[f"flops_ratio_vs_{ref}"] = round(pruned["final_flops"] / runs[ref]["final_flops"], 4)
    return out


# --- speed ---------------------------------------------------------------------------------------------------------


def scaled_widths(demo_initial: dict[str, int], demo_pruned: dict[str, int], full_initial: dict[str, int],
                  min_channels: int = 2) -> dict[str, int]:  # fmt: skip
    """Each layer of the full-size net at the demo's kept fraction of that layer."""
    if set(demo_initial) != set(full_initial):
        raise ValueError("the demo and full-size nets have different prunable layers")
    return {
        name: max(min(min_channels, full), min(full, round(full * demo_pruned[name] / demo_initial[name])))
        for name, full in full_initial.items()
    }


def pruned_net(features: Sequence[int], widths: dict[str, int], num_classes: int = 3) -> SauronUNet:
    """A SauronUNet built at ``features`` and resized to ``widths`` (what loading a pruned checkpoint does)."""
    net = SauronUNet(spatial_dims=3, in_channels=1, out_channels=num_classes, features=list(features))
    resize_channels(net, ChannelGraph.trace(net), widths)
    return net


def time_interleaved(nets: dict[str, nn.Module], input_shape: Sequence[int], threads: int = 2, warmup: int = 1,
                     rounds: int = 5) -> dict[str, dict]:  # fmt: skip
    """Median forward time of each net, the nets interleaved within every round (eval, inference mode)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(*input_shape)
    times: dict[str, list[float]] = {name: [] for name in nets}
    with torch.inference_mode():
        for net in nets.values():
            net.eval()
            for _ in range(warmup):
                net(x)
        for _ in range(rounds):
            for name, net in nets.items():
                start = time.perf_counter()
                net(x)
                times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "times_s": [round(v, 4) for v in t]}
            for name, t in times.items()}  # fmt: skip


def speed_pair(label: str, unpruned: nn.Module, pruned: nn.Module, input_shape: Sequence[int], threads: int,
               warmup: int, rounds: int, optimized: bool = False) -> dict:  # fmt: skip
    """Time ratio, FLOP ratio and their quotient for one (unpruned, pruned) pair."""
    flops = {"unpruned": conv_flops(unpruned, input_shape), "pruned": conv_flops(pruned, input_shape)}
    params = {"unpruned": _params(unpruned), "pruned": _params(pruned)}
    nets = {"unpruned": unpruned, "pruned": pruned}
    if optimized:
        from monai_effseg.deploy.optimize import optimize_for_inference

        nets = {k: optimize_for_inference(v) for k, v in nets.items()}
    timing = time_interleaved(nets, input_shape, threads, warmup, rounds)
    time_ratio = timing["pruned"]["median_s"] / timing["unpruned"]["median_s"]
    flop_ratio = flops["pruned"] / flops["unpruned"]
    quotient = time_ratio / flop_ratio
    return {
        "pair": label,
        "mode": "optimized (channels-last oneDNN, BN folded)" if optimized else "eager NCDHW",
        "input": list(input_shape),
        "flops": flops,
        "params": params,
        "time": timing,
        "time_ratio": round(time_ratio, 4),
        "flop_ratio": round(flop_ratio, 4),
        "quotient": round(quotient, 3),
        "within_factor_2": 0.5 <= quotient <= 2.0,
    }


def speed(demo_features: Sequence[int], demo_widths: dict[str, int], full_features: Sequence[int],
          input_shape: Sequence[int] = SPEED_INPUT, threads: int = 2, warmup: int = 1, rounds: int = 5,
          pairs: Sequence[str] = ("full", "demo"), optimized: bool = False) -> dict:  # fmt: skip
    """Both speed pairs (see the module docstring) from the demo's pruned widths."""
    demo_full = SauronUNet(spatial_dims=3, features=list(demo_features))
    demo_initial = ChannelGraph.trace(demo_full).widths(demo_full)
    big = SauronUNet(spatial_dims=3, features=list(full_features))
    full_initial = ChannelGraph.trace(big).widths(big)
    full_widths = scaled_widths(demo_initial, demo_widths, full_initial)
    out = {
        "kept_fraction_per_layer": {n: round(demo_widths[n] / demo_initial[n], 4) for n in demo_initial},
        "full_pruned_widths": full_widths,
        "pairs": [],
    }
    modes = [False, True] if optimized else [False]
    for pair in pairs:
        for opt in modes:
            torch.manual_seed(0)
            if pair == "full":
                un, pr = (
                    SauronUNet(spatial_dims=3, features=list(full_features)),
                    pruned_net(full_features, full_widths),
                )
            else:
                un, pr = (
                    SauronUNet(spatial_dims=3, features=list(demo_features)),
                    pruned_net(demo_features, demo_widths),
                )
            result = speed_pair(pair, un, pr, input_shape, threads, warmup, rounds, opt)
            out["pairs"].append(result)
            print(
                f"[speed] {pair} ({result['mode']}): unpruned {result['time']['unpruned']['median_s']:.3f} s, "
                f"pruned {result['time']['pruned']['median_s']:.3f} s; time ratio {result['time_ratio']:.4f}, "
                f"FLOP ratio {result['flop_ratio']:.4f}, quotient {result['quotient']:.2f}",
                flush=True,
            )
            del un, pr
    return out


def widths_from_checkpoint(path: str, features: Sequence[int]) -> dict[str, int]:
    """Per-layer widths stored in a Sauron checkpoint, named by the layers of a SauronUNet at ``features``."""
    stored = stored_widths(path)
    if stored is None:
        raise ValueError(f"{path} has no sauron_widths buffer")
    net = SauronUNet(spatial_dims=3, features=list(features))
    names = list(ChannelGraph.trace(net).layers)
    if len(names) != len(stored):
        raise ValueError(f"{path} has {len(stored)} widths, a SauronUNet with features {features} {len(names)} layers")
    return dict(zip(names, stored))


# --- fair benchmark (issue 27) -------------------------------------------------------------------------------------
# Three arms on the kits_sauron_nnunet demo (train.json + demo.json: the synthetic phantoms and its fast threshold
# schedule), each seed with the same data, epochs, iterations, validation cadence and LR schedule; only pruning differs.
FAIR_ARMS = {
    "unpruned": NO_PRUNING,  # the converged control: lambda 0 and every threshold 0
    "sauron_last": {"sauron_sampling": "last"},  # the authors' criterion (the bundle's default)
    "sauron_average": {"sauron_sampling": "epoch_average"},  # the opt-in epoch average, A/B
    # the paper's plateau-gated raises (a layer moves up only when the training loss has levelled off over its
    # patience) instead of the demo's raise every epoch; not in the default arms (--arms sauron_plateau)
    "sauron_plateau": {
        "sauron_sampling": "last",
        "sauron_require_plateau": True,
        "sauron_patience": 2,
        "sauron_plateau_min_epochs": 6,
    },  # fmt: skip
}
DEFAULT_FAIR_ARMS = ["unpruned", "sauron_last", "sauron_average"]
FAIR_DEFAULTS = {  # sized for <= 90 min on 2 cores (the EPYC of docs/benchmarks.json: see its elapsed_s)
    "seeds": [0, 1, 2], "epochs": 60, "iterations": 12, "val_interval": 5, "holdout": 20,
    "features": [16, 32, 64, 96, 128], "patch": [48, 48, 32], "warmup": 6, "finetune": 18,
    "speed_rounds": 3, "speed_input": list(SPEED_INPUT[2:]),
}  # fmt: skip
FAIR_SMOKE = {"seeds": [0], "epochs": 3, "iterations": 2, "val_interval": 2, "holdout": 2, "patch": [48, 48, 16],
              "warmup": 1, "finetune": 1, "speed_rounds": 1, "speed_input": [64, 64, 32]}  # fmt: skip


def fair_overrides(arm: str, seed: int, settings: dict, work: Path) -> dict:
    """Bundle overrides of one (arm, seed) run of the fair benchmark."""
    epochs = settings["epochs"]
    return {
        "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"),
        "demo_holdout_cases": settings["holdout"],
        "features": list(settings["features"]), "patch_size": list(settings["patch"]),
        "max_epochs": epochs, "iterations_per_epoch": settings["iterations"], "val_interval": settings["val_interval"],
        "sauron_warmup_epochs": settings["warmup"], "sauron_prune_epochs": epochs - settings["finetune"],
        "sauron#pruner#seed": seed,
        "initialize": [f"$monai.utils.set_determinism(seed={seed})"],
        **FAIR_ARMS[arm],
    }  # fmt: skip


def fair_run(arm: str, seed: int, settings: dict, work: Path, threads: int = 2) -> dict:
    """Train one arm with one seed, then evaluate its final network on the hold-out phantoms."""
    torch.set_num_threads(threads)
    root = REPO / "bundles" / SAURON
    workflow = bundle_workflow(root, ["train.json", "demo.json"], "train", **fair_overrides(arm, seed, settings, work))
    workflow.initialize()
    parser = workflow.parser
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    network: nn.Module = parser.get_parsed_content("network_def")
    pruner = parser.get_parsed_content("sauron#pruner")
    dice_key = f"val_kits_dice_{KIDNEY_KEY[parser.get_parsed_content('eval_protocol')]}"
    validation: list[dict] = []
    evaluator.add_event_handler(
        Events.COMPLETED,
        lambda e: validation.append(
            {"epoch": trainer.state.epoch, "kidney_dice": round(float(e.state.metrics.get(dice_key, float("nan"))), 4)}
        ),
    )
    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    holdout = evaluate_holdout(
        root, parser.get_parsed_content("holdout_dir"), work / "holdout", protocol=parser.get_parsed_content("eval_protocol"),
        overrides={**parser.get_parsed_content("demo_inference_overrides"), "ckpt_path": str(work / "models" / "model_final.pt"),
                   "fingerprint_path": str(work / "models" / "fingerprint.json")},
    )  # fmt: skip
    workflow.finalize()
    history = [{"epoch": h["epoch"], "flops": h["flops"], "params": h["params"], "tau_max": max(h["taus"]),
                "taus_at_max": sum(t >= pruner.schedule.grid[-1] - 1e-12 for t in h["taus"]),
                "phase": h.get("phase")} for h in pruner.history]  # fmt: skip
    widths = ChannelGraph.trace(network).widths(network)
    kidney = _mean(holdout.get("metrics", {}).get("kidney_dice"))
    print(
        f"[fair] {arm} seed {seed}: FLOPs {100 * history[-1]['flops'] / history[0]['flops']:.1f}% of start, "
        f"hold-out kidney Dice {kidney}, {wall:.0f} s",
        flush=True,
    )
    return {"arm": arm, "seed": seed, "flops_reduction": round(1 - history[-1]["flops"] / history[0]["flops"], 4),
            "kidney_dice": kidney, "validation": validation, "history": history, "widths": widths,
            "initial_widths": dict(zip(widths, pruner.history[0]["widths"])), "wall_s": round(wall, 1)}  # fmt: skip


def _mean_sd(values: Sequence[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "sd": round(sd, 4), "n": len(values)}


def keeps_falling(history: Sequence[dict], n_layers: int) -> dict:
    """Bar 2: does the compression go on once the thresholds have reached tau_max?

    "At tau_max" is the first epoch at which at least half of the layers sit at tau_max (the median layer's threshold
    is at its maximum). Every layer is too strict a test: criterion (d) holds a layer's threshold while that layer
    keeps losing 2% of its channels per prune, so a layer that is still being pruned never reaches tau_max, and a
    run that prunes on would never count as "at tau_max". The window from that epoch to the end of the pruning
    phases (warm-up and prune; the fine-tune phase prunes nothing) is cut in two halves, and the curve keeps falling
    if the second half still removes at least 1% of the FLOPs: a curve that drops for a few epochs after tau stops
    rising and then lies flat, as the epoch average did in a 72-epoch run, does not pass. The epoch at which every
    layer is at tau_max, if any, is reported beside it."""
    from sauron_fair_report import at_tau_max

    at_max = next((h for h in history if at_tau_max(h, n_layers)), None)
    every = next((h["epoch"] for h in history if h["taus_at_max"] >= n_layers), None)
    pruned = [h for h in history if h.get("phase") in ("warmup", "prune")]
    end = pruned[-1] if pruned else history[-1]
    out = {"epoch_tau_max": None if at_max is None else at_max["epoch"], "epoch_every_layer_at_max": every,
           "epoch_end": end["epoch"], "falling": None}  # fmt: skip
    if at_max is None or end["epoch"] - at_max["epoch"] < 2:
        return out
    middle = next(h for h in history if h["epoch"] >= (at_max["epoch"] + end["epoch"]) / 2)
    base = history[0]["flops"]
    return {**out, **{f"flops_pct_{key}": round(100 * h["flops"] / base, 2)
                      for key, h in (("at_tau_max", at_max), ("middle", middle), ("end", end))},
            "epoch_middle": middle["epoch"], "layers_at_max_end": end["taus_at_max"],
            "falling": end["flops"] < 0.99 * middle["flops"]}  # fmt: skip


def fair_summary(entries: list[dict], settings: dict) -> dict:
    """Mean +- sd per arm, the Dice gap to the same seed's control, and the four bars."""
    by = {(e["arm"], e["seed"]): e for e in entries}
    control = [e["kidney_dice"] for e in entries if e["arm"] == "unpruned"]
    tolerance = max(0.02, 2 * (_mean_sd(control)["sd"] or 0.0))
    out: dict = {"control_kidney_dice": _mean_sd(control), "dice_tolerance": round(tolerance, 4), "arms": {}}
    for arm in FAIR_ARMS:
        rows = [e for e in entries if e["arm"] == arm]
        if not rows:
            continue
        gaps = [e["kidney_dice"] - by[("unpruned", e["seed"])]["kidney_dice"] for e in rows
                if ("unpruned", e["seed"]) in by and e["kidney_dice"] is not None
                and by[("unpruned", e["seed"])]["kidney_dice"] is not None]  # fmt: skip
        n_layers = len(rows[0]["widths"])
        falling = [keeps_falling(e["history"], n_layers) for e in rows]
        arm_out = {"flops_reduction": _mean_sd([e["flops_reduction"] for e in rows]),
                   "kidney_dice": _mean_sd([e["kidney_dice"] for e in rows]), "dice_gap": _mean_sd(gaps),
                   "keeps_falling": falling}  # fmt: skip
        if arm != "unpruned":
            gap = arm_out["dice_gap"]["mean"]
            arm_out["bar1"] = bool(arm_out["flops_reduction"]["mean"] is not None
                                   and arm_out["flops_reduction"]["mean"] >= 0.9
                                   and gap is not None and gap >= -tolerance)  # fmt: skip
            arm_out["bar2"] = bool(falling) and all(f["falling"] for f in falling)
        out["arms"][arm] = arm_out
    curves = [[v["kidney_dice"] for v in e["validation"]] for e in entries if e["arm"] == "unpruned"]
    out["control_levelled"] = [len(c) >= 4 and abs(statistics.fmean(c[-2:]) - statistics.fmean(c[-4:-2])) < 0.02
                               for c in curves]  # fmt: skip
    return out


def fair_speed(entries: list[dict], settings: dict, threads: int) -> dict:
    """Bar 3: forward time of the benchmark net, unpruned vs pruned (seed-0 authors' sampling) at the speed input,
    interleaved in one run; and the pruned widths' FLOPs on the paper's network (24..384) at 1x1x160x160x80."""
    pruned = next((e for e in entries if e["arm"] == "sauron_last"), None) or next(
        e for e in entries if e["arm"] != "unpruned"
    )
    features = list(settings["features"])
    shape = (1, 1, *settings["speed_input"])
    torch.manual_seed(0)
    pair = speed_pair("benchmark net", SauronUNet(spatial_dims=3, features=features),
                      pruned_net(features, pruned["widths"]), shape, threads, 1, settings["speed_rounds"])  # fmt: skip
    full_features = list(_config(SAURON, "features", ["train.json"]))
    big = SauronUNet(spatial_dims=3, features=full_features)
    full = scaled_widths(pruned["initial_widths"], pruned["widths"], ChannelGraph.trace(big).widths(big))
    paper = {"features": full_features, "input": list(SPEED_INPUT), "widths": full,
             "flops_unpruned": conv_flops(big, SPEED_INPUT), "flops_pruned": conv_flops(pruned_net(full_features, full), SPEED_INPUT)}  # fmt: skip
    paper["flops_reduction"] = round(1 - paper["flops_pruned"] / paper["flops_unpruned"], 4)
    return {"pair": pair, "widths_from": f"{pruned['arm']} seed {pruned['seed']}", "paper_network": paper,
            "bar3": pair["within_factor_2"]}  # fmt: skip


def write_fair_results(fair: dict, path: Path) -> None:
    """Merge ``fair`` into ``path`` as ``sections.sauron.data.fair`` (every other key kept), atomically."""
    path = Path(path)
    results = (
        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"schema": 1, "sections": {}, "runs": []}
    )
    record = results.setdefault("sections", {}).setdefault("sauron", {"section": "sauron", "status": "ok", "data": {}})
    record.setdefault("data", {})["fair"] = fair
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
    tmp.replace(path)


def fair_resummarize(path: Path) -> dict:
    """Recompute the summary (the bars) of the fair entries saved in ``path`` with today's rules, write it back and
    print the report: how a changed bar definition reaches a saved run without training again."""
    from sauron_fair_report import render_fair

    fair = json.loads(Path(path).read_text(encoding="utf-8"))["sections"]["sauron"]["data"]["fair"]
    fair["summary"] = fair_summary(fair["entries"], fair["settings"])
    write_fair_results(fair, path)
    print(render_fair(fair))
    print(f"\nresults: {path} (sections.sauron.data.fair): summary recomputed from its {len(fair['entries'])} entries")
    return fair


def fair_main(args: argparse.Namespace) -> dict:
    """The fair benchmark: every arm x seed, the summary, bar 3's timing, the results file and the report."""
    from sauron_fair_report import render_fair

    if args.resummarize:
        return fair_resummarize(Path(args.results or REPO / "docs" / "benchmarks.json"))
    settings = {**FAIR_DEFAULTS, **(FAIR_SMOKE if args.smoke else {})}
    for key in ("seeds", "epochs", "iterations", "val_interval", "holdout", "features", "patch", "warmup", "finetune"):
        if getattr(args, f"fair_{key}", None) is not None:
            settings[key] = getattr(args, f"fair_{key}")
    fair: dict = {"settings": settings, "smoke": bool(args.smoke), "threads": args.threads, "argv": sys.argv[1:],
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_before": os.getloadavg(), "entries": []}  # fmt: skip
    start = time.perf_counter()
    for seed in settings["seeds"]:
        for arm in args.arms:
            with tempfile.TemporaryDirectory(prefix=f"sauron_fair_{arm}_{seed}_") as work:
                fair["entries"].append(fair_run(arm, seed, settings, Path(work), args.threads))
    fair["summary"] = fair_summary(fair["entries"], settings)
    if not args.skip_speed and any(e["arm"] != "unpruned" for e in fair["entries"]):
        fair["speed"] = fair_speed(fair["entries"], settings, args.threads)
    fair["elapsed_s"] = round(time.perf_counter() - start, 1)
    fair["load_after"] = os.getloadavg()
    results = Path(args.results or ("/tmp/sauron_fair_smoke.json" if args.smoke else REPO / "docs" / "benchmarks.json"))
    write_fair_results(fair, results)
    print("\n" + render_fair(fair))
    print(f"\nresults: {results} (sections.sauron.data.fair); {fair['elapsed_s']:.0f} s in all")
    return fair


# --- report --------------------------------------------------------------------------------------------------------


def print_training(runs: dict[str, dict], summary: dict) -> None:
    for r in runs.values():
        print(f"\n### {r['label']} ({r['bundle']}, {r['network']} {r['features']}, {r['epochs']} epochs x "
              f"{r['iterations_per_epoch']} iterations, patch {r['patch']}, {r['protocol']} kidney Dice)")  # fmt: skip
        print("| epoch | GFLOPs (1x1x" + "x".join(map(str, r["patch"])) + ") | % of start | params | val kidney Dice "
              "| training s |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for h in r["history"]:
            pct = 100 * h["flops"] / r["initial_flops"]
            print(f"| {h['epoch']} | {h['flops'] / 1e9:.4f} | {pct:.1f} | {h['params']:,} | {h['kidney_dice']} "
                  f"| {h['train_s']} |")  # fmt: skip
    print("\n| run | final GFLOPs | FLOPs vs start | final params | final val kidney Dice | best val | hold-out kidney "
          "Dice | training s | wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs.values():
        print(f"| {r['label']} | {r['final_flops'] / 1e9:.4f} | {100 * r['final_flops'] / r['initial_flops']:.1f}% "
              f"| {r['final_params']:,} | {r['final_val_kidney_dice']} | {r['best_val_kidney_dice']} "
              f"| {r['holdout_kidney_dice']} | {r['training_s']} | {r['wall_s']} |")  # fmt: skip
    if summary:
        print("\n" + "\n".join(f"- {k}: {v}" for k, v in summary.items()))


def print_speed(result: dict) -> None:
    print("\n| pair | mode | unpruned s | pruned s | time ratio | unpruned GFLOPs | pruned GFLOPs | FLOP ratio "
          "| quotient | within [0.5, 2] |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in result["pairs"]:
        print(f"| {p['pair']} | {p['mode']} | {p['time']['unpruned']['median_s']:.3f} | "
              f"{p['time']['pruned']['median_s']:.3f} | {p['time_ratio']:.4f} | {p['flops']['unpruned'] / 1e9:.2f} | "
              f"{p['flops']['pruned'] / 1e9:.2f} | {p['flop_ratio']:.4f} | {p['quotient']:.2f} | "
              f"{p['within_factor_2']} |")  # fmt: skip


def plot_curve(runs: dict[str, dict], path: str) -> None:
    """Validation kidney Dice against FLOPs (% of each run's start), one line per run, epochs annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    base = runs["unpruned"]["initial_flops"] if "unpruned" in runs else None
    for r in runs.values():
        ref = base if (base and r["bundle"] == SAURON) else r["initial_flops"]
        pts = [
            (100 * h["flops"] / ref, h["kidney_dice"], h["epoch"]) for h in r["history"] if h["kidney_dice"] is not None
        ]
        if not pts:
            continue
        xs, ys, es = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3, label=f"{r['label']} (hold-out {r['holdout_kidney_dice']})")
        ax.annotate(f"ep {es[-1]}", (xs[-1], ys[-1]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs, % of the unpruned network (log)")
    ax.set_ylabel("validation kidney Dice")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Sauron demo: Dice vs FLOPs (per epoch)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=JSON",
        help="config overrides for both kits_sauron_nnunet runs, e.g. sauron_steps=15",
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs of every run (default: the Sauron demo's)")
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="iterations per epoch of every run (default: the Sauron demo's, for an equal budget)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per net (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--speed-input", type=int, nargs=3, default=list(SPEED_INPUT[2:]), metavar=("H", "W", "D"))
    parser.add_argument("--pairs", nargs="+", default=["full", "demo"], choices=["full", "demo"])
    parser.add_argument("--optimized", action="store_true", help="also time after optimize_for_inference")
    parser.add_argument("--widths-from", default=None, help="take the pruned widths from this Sauron checkpoint")
    parser.add_argument(
        "--widths-features",
        type=int,
        nargs="+",
        default=None,
        help="features of the --widths-from net (default: demo.json's)",
    )
    parser.add_argument("--skip-training", action="store_true", help="speed only (needs --widths-from)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--plot", default=None, help="Dice-vs-FLOPs PNG")
    parser.add_argument("--json", default=None, help="write all results as JSON here")
    fair = parser.add_argument_group("fair benchmark (issue 27): --fair [--smoke]")
    fair.add_argument("--fair", action="store_true", help="the fair benchmark: arms x seeds, bars 1-4")
    fair.add_argument("--smoke", action="store_true", help="with --fair: a few minutes, results to /tmp")
    fair.add_argument("--resummarize", action="store_true",
                      help="with --fair: recompute the bars of the runs saved in --results, no training")  # fmt: skip
    fair.add_argument("--arms", nargs="+", default=DEFAULT_FAIR_ARMS, choices=list(FAIR_ARMS))
    fair.add_argument(
        "--results",
        default=None,
        help="results JSON (merged, section sauron; default docs/benchmarks.json, smoke /tmp)",
    )
    for key, kind in (("seeds", int), ("features", int), ("patch", int)):
        fair.add_argument(f"--fair-{key}", dest=f"fair_{key}", type=kind, nargs="+", default=None)
    for key in ("epochs", "iterations", "val_interval", "holdout", "warmup", "finetune"):
        fair.add_argument(f"--fair-{key.replace('_', '-')}", dest=f"fair_{key}", type=int, default=None)
    args = parser.parse_args(argv)
    if args.skip_training and not args.skip_speed and not args.widths_from:
        parser.error("speed needs the 'sauron' run or --widths-from")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.fair:
        return fair_main(args)
    sauron_overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    epochs = args.max_epochs or int(_config(SAURON, "max_epochs"))
    iterations = args.iterations or int(_config(SAURON, "iterations_per_epoch"))
    results: dict = {"threads": args.threads, "overrides": sauron_overrides, "load_before": os.getloadavg(),
                     "argv": sys.argv[1:] if argv is None else list(argv)}  # fmt: skip
    print(
        f"load average before: {results['load_before']}; {epochs} epochs x {iterations} iterations per run", flush=True
    )
    runs: dict[str, dict] = {}
    if not args.skip_training:
        runs = _train_all(args, results, epochs, iterations, sauron_overrides)
    if not args.skip_speed:
        results["speed"] = _speed_of_pruned_widths(args, runs)
    results["load_after"] = os.getloadavg()
    print(f"\nload average after: {results['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return results


def _train_all(args: argparse.Namespace, results: dict, epochs: int, iterations: int, overrides: dict) -> dict:
    runs: dict[str, dict] = {}
    for label in args.runs:
        with tempfile.TemporaryDirectory(prefix=f"sauron_{label}_") as work:
            runs[label] = train_run(label, Path(work), args.threads, epochs, iterations, overrides)
        if args.json:  # partial results survive a crash of a later run
            Path(args.json).write_text(json.dumps({**results, "runs": runs}, indent=1))
    results["runs"] = runs
    results["summary"] = compare(runs)
    print_training(runs, results["summary"])
    if args.plot and runs:
        plot_curve(runs, args.plot)
        print(f"\nDice-vs-FLOPs curve: {args.plot}")
    return runs


def _speed_of_pruned_widths(args: argparse.Namespace, runs: dict) -> dict:
    demo_features = list(_config(SAURON, "features"))
    if args.widths_from:
        features = args.widths_features or demo_features
        widths = widths_from_checkpoint(args.widths_from, features)
        source = f"{args.widths_from} (features {features})"
    elif "sauron" in runs:
        features, widths, source = demo_features, runs["sauron"]["widths"], "this run's Sauron demo"
    else:
        raise SystemExit("bench_sauron: speed needs the 'sauron' run or --widths-from")
    print(
        f"\nSpeed at 1x1x{'x'.join(map(str, args.speed_input))}, {args.threads} threads, widths from {source}",
        flush=True,
    )
    result = speed(features, widths, list(_config(SAURON, "features", ["train.json"])), (1, 1, *args.speed_input),
                   args.threads, args.warmup, args.rounds, args.pairs, args.optimized)  # fmt: skip
    result["widths_source"] = source
    print_speed(result)
    return result


if __name__ == "__main__":
    main()

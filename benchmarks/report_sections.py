"""The report's section renderers: ``render_<section>(data, figures)`` turns one section's saved ``data`` (the
``benchmarks.json`` schema) into Markdown and writes its figure into ``figures`` (``report_figures``)."""

from __future__ import annotations

import json
from pathlib import Path

from bench_lite import TUSTUMI_TABLES
from report_figures import (
    KIDNEY_THRESHOLD,
    LIVER_THRESHOLD,
    TUMOUR_THRESHOLD,
    plot_bars,
    plot_demo_curves,
    plot_lite,
    plot_sauron,
    plot_scatter,
    plot_speed,
    speed_mode,
)  # fmt: skip
from report_format import fflops, fm, fnum, md_table, pct
from sauron_fair_report import render_fair

OTHER_NETS = ("mss_unet", "residual_unet_kits19", "unet_cascade_kits19", "sauron_nnunet")


OTHER_REFERENCES = {
    "nnunet": "31,196,384 params, 0.955T (2xMAC) at 1x128^3 (tests/data/reference/architectures.md section 1; "
    "Table 1: 0.958T)",
    "mss_unet": "the MSS U-Net paper reports no parameter or FLOP count",
    "residual_unet_kits19": "Hao's thesis reports no parameter or FLOP count",
    "unet_cascade_kits19": "Hao's thesis reports no parameter or FLOP count (two ResidualUNets; FLOPs: stage 1 only)",
    "sauron_nnunet": 'the Sauron paper gives no size of the unpruned net; it reports the pruning result only: "reduced the '
    'FLOPs of nnUNet inference by over 90% without sacrificing the segmentation quality" (abstract; the results '
    "tables could not be read, tests/data/reference/methods.md section 1.5)",
}


SAURON_CLAIM = (
    'Valverde et al. (abstract and Neurocomputing highlights): Sauron "reduced the FLOPs of nnUNet '
    'inference by over 90% without sacrificing the segmentation quality", and was "the only method that achieved a '
    'reduction in model size of over 90% without deteriorating substantially the performance". The per-dataset '
    "tables are not available (tests/data/reference/methods.md section 1.5), so these are the only reference "
    "numbers."
)


SAURON_BUNDLE = "kits_sauron_nnunet"


def render_profile(data: dict, figures: Path) -> str:
    profiles = {p["name"]: p for p in data["profiles"]}
    out = [
        profile_table1(data),
        profile_lite(data.get("lite", {}), profiles),
        profile_others(profiles),
        profile_rest(profiles, {r["name"] for r in data["table1"]} | set(data.get("lite", {}))),
    ]
    if data.get("errors"):
        out.append("\nNetworks that failed: " + "; ".join(f"`{k}`: {v}" for k, v in data["errors"].items()))
    return "\n".join(part for part in out if part)  # each part but the first starts with its blank line


def profile_table1(data: dict) -> str:
    out = [
        "FLOPs = 2 x multiply-accumulates of the convolutions (dense, depthwise, transposed) and linear layers, counted "
        + (
            "by torch.utils.flop_counter from shapes only (`monai_effseg.profile.count_flops`)"
            if "counter" in data
            else f"by fvcore at 1/{data.get('flops_downscale', 1)} size per axis, scaled"
        )
        + ' in eval mode (deep supervision heads off) at each network\'s paper input. "Used params" is what the '
        "module has; Martinho's Table 1 also counted the ImageNet head its "
        'EfficientNet encoders carried but never ran, so the "with head" column is the one to compare with it.',
        "",
        "**Martinho's Table 1**: EfficientUNet family and the nnU-Net baseline, 1x1x128^3, 4 classes.",
        "",
    ]
    rows = []
    for r in data["table1"]:
        rows.append([
            r["name"], f"{r['used_params']:,}", fnum(r["reference_used_params_m"], 3, "M"), f"{r['params_m']:.3f}M",
            fnum(r["table1_params_m"], 3, "M"),
            pct((r["params_m"] / r["table1_params_m"] - 1) * 100, 2) if r["table1_params_m"] else "-",
            f"{fnum(r['enc_params_m'], 3, 'M')} / {fnum(r['dec_params_m'], 3, 'M')}",
            f"{fnum(r['table1_enc_params_m'], 3, 'M')} / {fnum(r['table1_dec_params_m'], 3, 'M')}",
            f"{r['flops_t']:.3f}T", fnum(r["table1_flops_t"], 3, "T"), pct(r["flops_diff_pct"]),
            fnum(r["reference_2xmac_t"], 3, "T"), pct(r["reference_diff_pct"], 2),
        ])  # fmt: skip
    out.append(md_table(
        ["network", "used params", "reference used", "params with head", "Table 1", "diff", "enc / dec params",
         "Table 1 enc / dec", "FLOPs", "Table 1 FLOPs", "diff", "reference 2xMAC", "diff"], rows))  # fmt: skip
    return "\n".join(out)


def profile_lite(lite: dict, profiles: dict) -> str:
    """Tustumi's Tables 4.2 / 4.3 next to our counts of the LiteUNet presets."""
    out, lite_rows = [], []
    for name, meta in lite.items():
        p = profiles[name]
        ref_flops, ref_params = TUSTUMI_TABLES.get(name, (None, None))
        macs = p["flops"]["network"] / 2
        lite_rows.append([
            name, meta["table"], "x".join(map(str, p["input"][1:])), f"{p['params']['network'] / 1e6:.3f}M",
            fm(ref_params, 2), pct((p["params"]["network"] / ref_params - 1) * 100) if ref_params else "-",
            fflops(p["flops"]["network"]), fflops(macs), fflops(ref_flops),
            f"{macs / ref_flops:.1f}x" if ref_flops else "-",
        ])  # fmt: skip
    if lite_rows:
        out += [
            "",
            "**Tustumi's Tables 4.2 (2D, 9x256x256) and 4.3 (3D, 1x8x256x256)**: LiteUNet presets (one stage, 2 "
            "classes). The thesis counted with sovrasov/flops-counter.pytorch, which reports multiply-accumulates, so "
            "our MACs (= FLOPs / 2) are the column to compare. `benchmarks/bench_lite.py` assigns each gap over 10% "
            "its causes, and docs/deviations.md (Tustumi fidelity) explains them: the thesis' counter missed most "
            "encoder convolutions, our decoder is a reading of an unspecified block, and Table 4.2 swaps its top and "
            "default rows.",
            "",
            md_table(["preset", "stage table", "input", "params", "thesis", "diff", "FLOPs (2xMAC)", "MACs",
                      "thesis \"FLOPs\"", "MACs / thesis"], lite_rows),
        ]  # fmt: skip
    return "\n".join(out)


def profile_others(profiles: dict) -> str:
    out, other_rows = [], []
    for name in ("nnunet",) + OTHER_NETS:
        if name in profiles:
            p = profiles[name]
            other_rows.append([name, "x".join(map(str, p["input"][1:])), f"{p['params']['network']:,}",
                               fflops(p["flops"]["network"]), OTHER_REFERENCES.get(name, "-")])  # fmt: skip
    if other_rows:
        out += [
            "",
            "**Other architectures** (at each paper's training patch):",
            "",
            md_table(["network", "input", "params", "FLOPs (2xMAC)", "paper / reference"], other_rows),
        ]
    return "\n".join(out)


def profile_rest(profiles: dict, shown: set) -> str:
    """Every other registered network: params and FLOPs only."""
    out, rest = [], [n for n in profiles if n not in shown and n not in ("nnunet",) + OTHER_NETS]
    if rest:
        out += ["", md_table(["network", "input", "params", "FLOPs (2xMAC)"],
                             [[n, "x".join(map(str, profiles[n]["input"][1:])), f"{profiles[n]['params']['network']:,}",
                               fflops(profiles[n]["flops"]["network"])] for n in rest])]  # fmt: skip
    return "\n".join(out)


def render_speed(data: dict, figures: Path) -> str:
    size = data["input"][2]
    rows = [[r["name"], r["mode"], fnum(r["wall_min_s"], 2), fnum(r["wall_median_s"], 2), fnum(r["cpu_min_s"], 2),
             fnum(r["ratio_wall_min"]), fnum(r["ratio_wall_median"]), fnum(r["ratio_cpu_min"]), fflops(r["flops"]),
             fnum(r["flop_ratio"])] for r in data["rows"]]  # fmt: skip
    out = [
        f"Batch 1, 1x1x{size}^3, eval mode, `torch.no_grad()`, {data['threads']} threads, deep supervision off, "
        f"allocator {data['allocator']}; {data.get('warmup', 1)} untimed warm-up round(s), then {data['rounds']} "
        "interleaved rounds (every network once per round, so load from other processes hits all alike). Ratios are "
        "to the nnU-Net baseline "
        f"(`{data['baseline']}`) in the same mode. Load average {[round(v, 2) for v in data['load_before']]} before, "
        f"{[round(v, 2) for v in data['load_after']]} after (other processes' load stretches wall times; CPU time "
        "less so).",
        "",
        md_table(["network", "mode", "wall min (s)", "wall median (s)", "CPU min (s)", "time ratio (wall min)",
                  "time ratio (wall median)", "time ratio (CPU)", "FLOPs", "FLOP ratio"], rows),
    ]  # fmt: skip
    mode = speed_mode(data)
    out += ["", f"Time ratio ({mode}, wall min) against FLOP ratio: " + "; ".join(
        f"{r['name']} {fnum(r['ratio_wall_min'])} vs {fnum(r['flop_ratio'])}" for r in data["rows"]
        if r["mode"] == mode and r["name"] != data["baseline"]) + "."]  # fmt: skip
    if "optimized" not in data["modes"]:
        out[-1] += (" This results file has no `optimized` rows (the mode the bundles' `inference.json` runs on the "
                    "CPU): the optimized ratios in docs/efficientnet.md are from `python "
                    "benchmarks/bench_efficientnet_speed.py --modes eager optimized --rounds 5`; `python "
                    "benchmarks/run_all.py --sections speed` measures both modes.")  # fmt: skip
    fig = plot_speed(data, figures / "speed_ratio.png")
    if fig:
        out += ["", f"![CPU time ratio ({mode}) and FLOP ratio to nnU-Net](figures/{fig.name})"]
    out += [
        "",
        "Reference (tests/data/reference/architectures.md section 5, 2 threads, shared 2-core VM): "
        "PlainConvUNet 7.94 s (1.00), EffUNet-b0 sketch 0.748, EffUNetV2-S sketch 0.802, MONAI FlexibleUNet-b0 "
        "0.275.",
    ]
    return "\n".join(out)


def render_lite_speed(data: dict, figures: Path) -> str:
    size = data["size"]
    rows = []
    for r in data["rows"]:
        if "error" in r:
            rows.append([r["name"], "failed", r["error"], "", "", "", ""])
            continue
        thesis = r["thesis_per_slice_s"]
        rows.append([r["name"], "2.5D" if r["dims"] == 2 else "3D", "x".join(map(str, r["input"][1:])),
                     fnum(r["forward_median_s"] * 1e3, 1), fnum(r["per_slice_s"] * 1e3, 1),
                     fnum(thesis * 1e3, 0) if thesis else "NA",
                     f"{r['per_slice_s'] / thesis:.2f}" if thesis else "-"])  # fmt: skip
    out = [
        f"One LiteUNet stage (the bundles run two: liver, then tumour), batch 1, eval, `torch.no_grad()`, "
        f"{data['threads']} threads, median of {data['repeats']} after a warm-up. 2.5D: 9x{size}x{size} in, the middle "
        f"slice out; 3D: 8x{size}x{size} in, 4 slices out, so per slice = forward / 4 (the thesis' t / (b z)). The "
        "thesis times (Tables 4.4 / 4.5, prediction, mean per slice) were taken on its own hardware (section 4: "
        "GTX 1080 Ti workstation; a Core i7-6700K for the CPU tests), so only the ordering is comparable.",
        "",
        md_table(["preset", "kind", "input", "forward (ms)", "per slice (ms)", "thesis per slice (ms)",
                  "ours / thesis"], rows),
    ]  # fmt: skip
    fig = plot_lite(data, figures / "lite_per_slice.png")
    if fig:
        out += ["", f"![per-slice CPU time of Tustumi's presets](figures/{fig.name})"]
    return "\n".join(out)


def render_inference(data: dict, figures: Path) -> str:
    ct = data["ct"]
    rows = []
    for r in data["rows"]:
        if "error" in r:
            rows.append([r["bundle"], ("" if r["error"].startswith("skipped") else "failed: ") + r["error"]] + [""] * 6)
            continue
        note = "; ".join(r.get("warnings", [])[:2])
        spacing = " x ".join(f"{v:.2f}" for v in r["spacing"]) if r.get("spacing") else "-"
        rows.append([r["bundle"], f"{r['params']:,}" if r.get("params") else "-", spacing, fnum(r["wall_s"], 1),
                     fnum(r["cpu_s"], 1), f"{r.get('shape_equal')} / {r.get('affine_equal')}", r.get("labels"),
                     note or "-"])  # fmt: skip
    if data["network"] == "demo":
        which = (
            "the demo model: the demo overlay's network and preprocessing (`demo_inference_overrides` and the "
            "fingerprint the demo computes from its synthetic training set, so KiTS bundles resample the CT to the "
            "demo's grid; LiTS bundles resize slices to the demo's image size), fresh seeded weights"
        )
    else:
        which = "the paper's full-size network with the published default fingerprint, fresh seeded weights"
    out = [
        f"One CT of {'x'.join(map(str, ct['shape']))} voxels at {' x '.join(f'{v:g}' for v in ct['spacing'])} mm "
        f"({ct['source']}), run through each bundle's `configs/inference.json` with `monai_effseg.workflows.run_bundle`: "
        "load, preprocessing, sliding window, inversion to the input grid, post-processing, NIfTI writing, "
        f"{data['threads']} threads on `{data['device']}`, mirror TTA off (it multiplies the sliding-window time by "
        f"up to 8). Network: {which}. The time does not depend on the weights, except that two-stage pipelines "
        "(cascade, liver then tumour) run stage 2 only where stage 1 found something: see the labels and notes. "
        "`--inference-net paper` times the paper-size networks instead (far beyond the 60-minute budget on 2 "
        "cores).",
        "",
        md_table(["bundle", "params", "network grid (mm)", "wall (s)", "CPU (s)", "output shape / affine = input",
                  "labels", "notes"], rows),
    ]  # fmt: skip
    fig = plot_bars([(r["bundle"], r["wall_s"]) for r in data["rows"] if "wall_s" in r], "seconds",
                    "Full-volume CPU inference", figures / "inference_time.png")  # fmt: skip
    if fig:
        out += ["", f"![inference time per bundle](figures/{fig.name})"]
    return "\n".join(out)


def render_demos(data: dict, figures: Path) -> str:
    rows, notes = [], []
    for bundle, r in data["bundles"].items():
        if "error" in r:
            rows.append([bundle, ("" if r["error"].startswith("skipped") else "failed: ") + r["error"]] + [""] * 7)
            continue
        ttd = "; ".join(
            f"{t['name']} >= {t['threshold']}: " + (f"**{t['time_to_dice_s']:.0f} s** (epoch {t['epoch']})"
                                                    if t["reached"] else f"not reached (best {fnum(t['best_val_dice'])})")
            for t in r["targets"])  # fmt: skip
        epochs = " + ".join(f"{st.get('epochs', 0)}/{st.get('max_epochs', '?')}" for st in r["stages"])
        capped = any(st.get("terminated") for st in r["stages"])
        hp = r["holdout_primary"]
        dice = " / ".join(f"{k} {fnum(v)}" for k, v in hp.items())
        if r.get("holdout_note") or (r.get("run_error") and not r.get("holdout")):
            notes.append(f"{bundle}: " + (r.get("holdout_note") or "the demo run failed after training: "
                                          + r["run_error"].split(chr(10))[0]))  # fmt: skip
            dice += f" [{len(notes)}]"
        net = r.get("demo_network", {})
        rows.append([bundle, ttd, epochs + (" (capped)" if capped else ""), fnum(r["training_s"], 0),
                     fnum(r["validation_s"], 0), fnum(r["holdout_s"], 0), f"{fnum(r['wall_s'], 0)} / {r['budget_s']:.0f}",
                     dice, fflops(net.get("pruned_flops") or net.get("flops"))])  # fmt: skip
    out = [
        "Each bundle's CPU demo as `effseg demo <bundle>` runs it (`train.json` + `demo.json`: the synthetic phantoms, "
        "the demo's patch, widths and epoch budget, then the hold-out evaluation of `inference.json` on unseen "
        f"phantoms), with validation every {data['val_interval']} epoch(s) so that the threshold is caught, "
        f"{data['threads']} threads on `{data['device']}`. Each run has a time cap (at most "
        f"{data['demo_budget_s']:.0f} s, less where the run's total budget requires) on training + validation: a "
        "stage stops after the epoch that would overrun its share; the checkpoint the hold-out evaluation uses is the "
        "demo's own (best validation or final). *Time to Dice* is training time only (validation excluded), summed "
        "over the stages before it (a cascade's stage 1, a LiTS bundle's liver stage). Thresholds: KiTS kidney "
        f"(KiTS21 \"kidney and masses\" / KiTS19 label > 0) {KIDNEY_THRESHOLD}; LiTS liver {LIVER_THRESHOLD} (liver "
        f"stage), tumour {TUMOUR_THRESHOLD} (tumour stage). Hold-out Dice: means over the demo's hold-out phantoms. "
        "Demo net FLOPs: a Sauron net as pruned at the end of its run. These are the *capped run_all demo* figures "
        "(each bundle README's Performance block renders its row); a full, uncapped `effseg demo` trains every "
        "epoch of demo.json and is a different protocol.",
        "",
        md_table(["bundle", "time to validation Dice (training s)", "epochs run", "training (s)", "validation (s)",
                  "hold-out eval (s)", "wall incl. hold-out / cap (s)", "hold-out Dice", "demo net FLOPs"], rows),
    ]  # fmt: skip
    if notes:
        out += [""] + [f"[{i}] {note}" + "  " for i, note in enumerate(notes, 1)]
    fig = plot_demo_curves(data, figures / "demo_dice_vs_time.png")
    if fig:
        out += ["", f"![validation Dice against training time](figures/{fig.name})"]
    return "\n".join(out)


def render_sauron(data: dict, figures: Path) -> str:
    val = {v["epoch"]: v["dice"] for v in data["validation"]}
    rows = [[c["epoch"], fnum(c["loss"], 3), f"{c['params']:,}", fnum(c["params_pct"], 1, "%"), fflops(c["flops"]),
             fnum(c["flops_pct"], 1, "%"), c["channels"], fnum(val.get(c["epoch"]))] for c in data["curve"]]  # fmt: skip
    last = data["curve"][-1]
    patch = "x".join(map(str, data["patch"][2:])) if data.get("patch") else "the demo patch"
    source = data["source"]
    if source == "its own demo run":  # not the run of section 5 / 7: say so where its figures appear
        source = ("its own run, separate from the demos section's: the kits_sauron_nnunet rows of sections 5 and 7 "
                  "are another run, measured at the date in their section's header")  # fmt: skip
    out = [
        f"The `{SAURON_BUNDLE}` capped run_all demo ({data['budget_s']:.0f} s cap; from {source}): after every "
        "epoch the pruner drops the channels closer "
        "than the layer's threshold to a reference channel; the history is the handler's `sauron_history.json` "
        f"(FLOPs at one {patch} patch, 2 x MAC). After {last['epoch']} epochs the network keeps "
        f"{fnum(last['params_pct'], 1)}% of its parameters and {fnum(last['flops_pct'], 1)}% of its FLOPs; hold-out "
        + ", ".join(f"{k} Dice {fnum(v)}" for k, v in data["holdout"].items()) + ".",
        "",
        md_table(["epoch", "train loss", "params", "% params", "FLOPs", "% FLOPs", "channels", "val kidney Dice"],
                 rows),
        "",
        "Paper: " + SAURON_CLAIM + " The demo trains for minutes on synthetic phantoms with a shortened "
        "threshold schedule (`sauron_steps`, `sauron_patience`, `sauron_require_plateau` in demo.json) and a "
        "z-score regulariser (`sauron_normalisation`), so its compression is not the paper's; the full (uncapped) "
        "24-epoch demo and its unpruned control, a different protocol, are in the bundle README's Performance "
        "section with the `bench_sauron.py` command that measured them.",
    ]  # fmt: skip
    fig = plot_sauron(data, figures / "sauron_compression.png")
    if fig:
        out += ["", f"![Sauron compression curve](figures/{fig.name})"]
    if data.get("fair"):
        out += ["", "### Against an unpruned control (`python benchmarks/bench_sauron.py --fair`)", "",
                render_fair(data["fair"])]  # fmt: skip
    return "\n".join(out)


def render_scatter(data: dict, figures: Path) -> str:
    rows = []
    for p in data["points"]:
        inputs = "; ".join(f"{k} {'x'.join(map(str, v[1:]))}" for k, v in p["inputs"].items())
        gflops = f"{p['gflops']:.2f}" + (f" (unpruned {p['gflops_unpruned']:.2f})" if p.get("gflops_unpruned") else "")
        rows.append([p["bundle"], inputs, gflops, f"{p['params']:,}", fnum(p["paper_gflops"], 1),
                     " / ".join(f"{k} {fnum(v)}" for k, v in p["dice"].items())])  # fmt: skip
    out = [
        "Like Martinho's Fig. 9 (DSC against FLOPs), for the networks the demos trained: x = GFLOPs (2 x MAC) of one "
        "forward pass of the bundle's demo network at its demo input (both stages of a cascade or of a "
        "liver-then-tumour network; the Sauron net as pruned at the end of its demo), y = hold-out Dice of the "
        f"demos section (measured {data['demos_measured_at']}). KiTS and LiTS are separate panels: different tasks "
        "and inputs. The paper-size network's GFLOPs (at the paper's patch) are listed for reference; the demos train "
        "narrower networks on phantoms, so these are not the papers' Dice values.",
        "",
        md_table(["bundle", "demo input(s)", "demo GFLOPs", "params", "paper net GFLOPs", "hold-out Dice"], rows),
    ]  # fmt: skip
    fig = plot_scatter(data, figures / "dice_vs_flops.png")
    if fig:
        out += ["", f"![hold-out Dice against GFLOPs](figures/{fig.name})"]
    return "\n".join(out)


def render_gpu(data: dict, figures: Path) -> str:
    if not data.get("available"):
        return f"**{data['note']}** on the machine this section ran on; the GPU benchmark was not run."
    out = [f"GPU: {data['gpu']}."]
    if "note" in data:
        return out[0] + " " + data["note"] + "."
    out.append(f"`{data['script']}` ({data['how']}):")
    if data.get("stdout"):
        out += ["", "```", data["stdout"].strip(), "```"]
        if data.get("result") is not None:
            out += ["", "Its JSON output is stored in `benchmarks.json` (section `gpu`, `data.result`)."]
    elif data.get("result") is not None:
        out += ["", "```json", json.dumps(data["result"], indent=1)[:8000], "```"]
    return "\n".join(out)

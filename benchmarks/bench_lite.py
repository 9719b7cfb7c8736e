"""Tustumi fidelity: params and MACs of every LiteUNet preset next to the thesis' Tables 4.2 / 4.3, and
(``--speed``) CPU time per slice next to Tables 4.4 / 4.5.

    python benchmarks/bench_lite.py                       # fidelity table: shape-only (meta device), ~10 s
    python benchmarks/bench_lite.py --speed [--size 256] [--threads 2] [--repeats 3] [--presets NAME ...]

Protocol. One LiteUNet stage (2 classes), eval mode, at the thesis' inputs: 2D 1x9x256x256 (2.5D), 3D
1x1x8x256x256. Params are split into stem / encoder rows (Tables A.3-A.23) / head / decoder / output. MACs: every
convolution (dense, depthwise, transposed, SE) and linear layer: ``effseg profile``'s FLOPs
(:func:`monai_effseg.profile.count_flops`, from shapes only) / 2. The thesis' ptflops reports MACs under the name "FLOPs": MACs are the column to
compare. Ratios off by more than 10% get cause keys (``CAUSES``), assigned by :func:`causes_of` from the numbers of
:func:`family_evidence`; docs/deviations.md ("Tustumi fidelity") has the reasoning.

Speed: batch ``--batch`` (1: the thesis' single-input timing; the bundles' inference runs slabs of 8),
``torch.no_grad()``, ``--threads`` threads, one warm-up, median of ``--repeats``; per slice =
forward / (batch x output slices) (2.5D: 9 in, 1 out; 3D: 8 in, 4 out: the thesis' t / (b z)); over 1 s per slice is
flagged (the thesis: "less than 1 second per slice ... without using a GPU"). At batch 1 the 3D presets pay for a
PyTorch CPU dispatch rule: a dense conv whose N*C*D*H is at most 20480 (here every level of depth 4 from 64x64 down)
runs the reference ``slow_conv3d`` instead of oneDNN, measured 10x slower on such a conv (55 vs 5.5 ms at
1x64x4x64x64, 64 -> 32 channels); any batch > 1 takes oneDNN, and so does ``--optimized``
(:func:`monai_effseg.deploy.optimize.optimize_for_inference`: oneDNN for every conv, channels-last, BN folded).
run_all.py's ``lite_speed`` section is :func:`measure_section`; its report uses the tables below.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

# Table 4.2 (2D, 9x256x256) and Table 4.3 (3D, 8x256x256): ("FLOPs" = ptflops MACs, params) as printed, checked
# against the thesis text. Table 4.3 prints "1.59" without a unit for MobileNet-V2 default; read as 1.59M.
TUSTUMI_TABLES: dict[str, tuple[float, float]] = {
    "mobilenetv2-2d-top": (107.14e6, 4.64e6), "mobilenetv2-2d-default": (123.89e6, 3.76e6),
    "mobilenetv2-2d-bottom": (104.80e6, 6.37e6), "mobilenetv3-2d-top": (103.01e6, 4.47e6),
    "mobilenetv3-2d-default": (113.72e6, 3.64e6), "mobilenetv3-2d-bottom": (103.06e6, 7.80e6),
    "shufflenetv2-2d-top": (118.93e6, 1.44e6), "shufflenetv2-2d-default": (122.31e6, 1.29e6),
    "shufflenetv2-2d-bottom": (122.13e6, 1.47e6),
    "mobilenetv2-3d-top": (64.28e6, 1.26e6), "mobilenetv2-3d-default": (61.69e6, 1.59e6),
    "mobilenetv2-3d-bottom": (64.03e6, 2.93e6), "mobilenetv3-3d-top": (67.25e6, 0.99e6),
    "mobilenetv3-3d-default": (62.44e6, 1.95e6), "mobilenetv3-3d-bottom": (64.78e6, 3.29e6),
    "shufflenetv2-3d-top": (68.84e6, 1.33e6), "shufflenetv2-3d-default": (61.53e6, 1.59e6),
    "shufflenetv2-3d-bottom": (56.37e6, 1.95e6), "dsts-3d-top": (66.99e6, 1.68e6),
    "dsts-3d-default": (61.22e6, 2.52e6), "dsts-3d-bottom": (55.19e6, 2.88e6),
}  # fmt: skip
# Tables 4.4 (2D) and 4.5 (3D): mean prediction time per slice in seconds (None: "NA").
TUSTUMI_SLICE_S: dict[str, Optional[float]] = {
    "mobilenetv2-2d-top": 0.114, "mobilenetv2-2d-default": 0.072, "mobilenetv2-2d-bottom": 0.086,
    "mobilenetv3-2d-top": 0.079, "mobilenetv3-2d-default": 0.068, "mobilenetv3-2d-bottom": 0.090,
    "shufflenetv2-2d-top": 0.099, "shufflenetv2-2d-default": 0.083, "shufflenetv2-2d-bottom": 0.105,
    "mobilenetv2-3d-top": 0.428, "mobilenetv2-3d-default": 0.411, "mobilenetv2-3d-bottom": 0.428,
    "mobilenetv3-3d-top": 0.400, "mobilenetv3-3d-default": 0.381, "mobilenetv3-3d-bottom": 0.397,
    "shufflenetv2-3d-top": 0.447, "shufflenetv2-3d-default": 0.425, "shufflenetv2-3d-bottom": 0.417,
    "dsts-3d-top": 0.422, "dsts-3d-default": None, "dsts-3d-bottom": 0.454,
}  # fmt: skip
PARTS = ("stem", "encoder", "head", "decoder", "output")
TOLERANCE = 0.10
CAUSES = {  # cause -> explanation; causes_of() assigns them, family_evidence() holds the numbers they cite
    "counter": "The thesis' counter missed (most of) the encoder's convolutions: the encoder rows alone ('enc') cost "
    "more MACs than the thesis' whole network, and between presets of the same widths (same stem, head, decoder) "
    "they differ 8-81x more than the thesis' totals in the MobileNet and DSTS families (family lines: spread). "
    "ptflops v0.6.x (2020) hooks modules by exact type: conv subclasses (e.g. SAME-padding convs of EfficientNet "
    "ports) and functional convs count 0, ConvTranspose3d is not in its table; BatchNorm and ReLU/ReLU6 count.",
    "decoder": "Our head, decoder and output block hold most of our MACs ('dec'). Section 3.1.4 names them without "
    "layers or widths; nets/lite_unet.py is our reading (3x3 fusion convs at every encoder resolution, the input "
    "shortcut at full resolution), with no thesis figure to match.",
    "row_order": "Table 4.x orders top and default the other way round from our presets (family lines). In 2D both "
    "have the same widths and top moves blocks from the 80-320 wide rows to the 16-24 wide ones, which lowers the "
    "parameters for any block: Table 4.2's top and default rows are swapped. 3D ShuffleNetV2: see 'block'.",
    "offset": "With the rows matched, thesis - ours is one constant per family (family lines): the encoder rows "
    "reproduce the thesis' preset-to-preset differences; the constant is in the parts the thesis does not specify.",
    "block": "With the rows matched, thesis - ours still varies (family lines): the thesis' ShuffleNetV2 preset "
    "differences are not those of these tables with our unit (its unit is not described beyond Fig. 2.10).",
}


def _family(name: str) -> str:  # the preset without its variant (top / default / bottom)
    return name.rsplit("-", 1)[0]


def _part(module_name: str) -> str:
    if module_name.startswith("encoder.stages.0."):
        return "stem"
    return {"encoder": "encoder", "head": "head", "decoder": "decoder"}.get(module_name.split(".")[0], "output")


def count(name: str) -> dict[str, Any]:
    """Params and conv MACs per part of preset ``name`` at the thesis' input, on the meta device."""
    import torch

    from monai_effseg.encoders.lite import PRESETS
    from monai_effseg.nets import build_net
    from monai_effseg.profile import count_flops

    with torch.device("meta"):
        net = build_net(name).eval()
    shape = (1, 9, 256, 256) if net.spatial_dims == 2 else (1, 1, 8, 256, 256)
    params, macs = dict.fromkeys(PARTS, 0), dict.fromkeys(PARTS, 0)
    for n, p in net.named_parameters():
        params[_part(n)] += p.numel()

    flops = count_flops(net, shape, parts=["encoder", "encoder.stages.0", "head", "decoder"])
    macs["stem"] = flops["encoder.stages.0"] // 2
    macs["encoder"] = flops["encoder"] // 2 - macs["stem"]
    macs["head"], macs["decoder"] = flops["head"] // 2, flops["decoder"] // 2
    macs["output"] = flops["network"] // 2 - sum(macs.values())
    thesis_macs, thesis_params = TUSTUMI_TABLES[name]
    return {"name": name, "table": PRESETS[name].table, "widths": PRESETS[name].family, "dims": net.spatial_dims,
            "params": params, "macs": macs, "thesis_macs": thesis_macs, "thesis_params": thesis_params}  # fmt: skip


def family_evidence(rows: dict[str, dict]) -> dict[str, dict]:
    """Per family (preset name without the variant): the numbers the cause rules and texts rest on."""
    out: dict[str, dict] = {}
    for fam in dict.fromkeys(_family(n) for n in rows):
        members = {n.rsplit("-", 1)[1]: r for n, r in rows.items() if _family(n) == fam}
        p = {v: sum(r["params"].values()) for v, r in members.items()}
        t = {v: r["thesis_params"] for v, r in members.items()}
        swap = (p["top"] - p["default"]) * (t["top"] - t["default"]) < 0
        match = {"top": "default", "default": "top"} if swap else {}
        offsets = [t[match.get(v, v)] - p[v] for v in p]
        same = [r for r in members.values() if r["widths"] == members["bottom"]["widths"]]  # same stem/decoder
        enc, thesis = [r["macs"]["encoder"] for r in same], [r["thesis_macs"] for r in same]
        out[fam] = {"top_minus_default": (p["top"] - p["default"], t["top"] - t["default"]), "swap": swap,
                    "offsets": offsets, "constant_offset": max(offsets) - min(offsets) <= 0.03e6,
                    "spread": (max(enc) - min(enc), max(thesis) - min(thesis), len(same))}  # fmt: skip
    return out


def _dec_share(row: dict) -> float:
    return (row["macs"]["head"] + row["macs"]["decoder"] + row["macs"]["output"]) / sum(row["macs"].values())


def causes_of(row: dict, evidence: dict[str, dict]) -> dict[str, list[str]]:
    """The cause keys of ``row``'s params and MAC gaps beyond ``TOLERANCE`` (empty lists where within it)."""
    ev, variant = evidence[_family(row["name"])], row["name"].rsplit("-", 1)[1]
    out: dict[str, list[str]] = {"params": [], "macs": []}
    if abs(sum(row["params"].values()) / row["thesis_params"] - 1) > TOLERANCE:
        if ev["swap"] and variant in ("top", "default"):
            out["params"].append("row_order")
        out["params"].append("offset" if ev["constant_offset"] else "block")
    if abs(sum(row["macs"].values()) / row["thesis_macs"] - 1) > TOLERANCE:
        if row["macs"]["encoder"] > row["thesis_macs"]:
            out["macs"].append("counter")
        if _dec_share(row) > 0.5:
            out["macs"].append("decoder")
    return out


def fidelity(presets: Optional[Sequence[str]] = None) -> tuple[list[dict], dict[str, dict]]:
    """The rows of ``presets`` (default all) with their causes, and the family evidence (from all 21 presets)."""
    from monai_effseg.encoders.lite import PRESETS

    rows = {name: count(name) for name in PRESETS}
    evidence = family_evidence(rows)
    for row in rows.values():
        row["causes"] = causes_of(row, evidence)
    return [rows[n] for n in (presets or PRESETS)], evidence


def print_fidelity(rows: Sequence[dict], evidence: dict[str, dict]) -> None:
    m = 1e6
    print(f"{'preset':24} {'table':5} {'params':>7} {'thesis':>7} {'ratio':>5}  {'MACs':>6} {'FLOPs':>6} "
          f"{'thesis':>7} {'ratio':>5} {'enc':>6} {'dec':>4}  causes (P: params, M: MACs)")  # fmt: skip
    for r in rows:
        params, macs = sum(r["params"].values()), sum(r["macs"].values())
        causes = " ".join(f"{k[0].upper()}:{','.join(v)}" for k, v in r["causes"].items() if v)
        print(f"{r['name']:24} {r['table']:5} {params / m:6.2f}M {r['thesis_params'] / m:6.2f}M "
              f"{params / r['thesis_params']:5.2f}  {macs / m:5.0f}M {2 * macs / m:5.0f}M "
              f"{r['thesis_macs'] / m:6.1f}M {macs / r['thesis_macs']:5.1f} {r['macs']['encoder'] / m:5.0f}M "
              f"{_dec_share(r):4.0%}  {causes}")  # fmt: skip
    print(
        "\nMACs, FLOPs (= 2 x MACs): ours, every convolution; thesis: Tables 4.2 / 4.3 'FLOPs' (ptflops MACs). "
        "enc: MACs of the encoder rows (Tables A.x) alone; dec: share of head + decoder + output in our MACs.\n"
    )
    print(f"{'family':16} {'top-default: ours':>17} {'thesis':>7}  {'thesis - ours (rows matched)':28} "
          "spread: enc MACs / thesis MACs (presets of the same widths)")  # fmt: skip
    for fam, ev in evidence.items():
        ours, thesis = ev["top_minus_default"]
        offsets = ", ".join(f"{o / m:+.2f}" for o in ev["offsets"]) + (" (swapped)" if ev["swap"] else "")
        enc, th, n = ev["spread"]
        print(f"{fam:16} {ours / m:+16.2f}M {thesis / m:+6.2f}M  {offsets:28} {enc / m:5.0f}M / {th / m:4.1f}M ({n})")
    print("\nthesis - ours lists top, default, bottom. Causes:")
    for key, text in CAUSES.items():
        print(f"- {key}: {text}")


def time_presets(
    presets: Sequence[str], size: int = 256, threads: int = 2, repeats: int = 3, batch: int = 1,
    optimized: bool = False,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> list[dict]:  # fmt: skip
    """CPU time per output slice of each preset (see the module docstring); a failure becomes ``{name, error}``."""
    import torch

    from monai_effseg.deploy.optimize import optimize_for_inference
    from monai_effseg.nets import build_net

    previous, rows = torch.get_num_threads(), []
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    try:
        for name in presets:
            try:
                net = build_net(name).eval()
                net = optimize_for_inference(net, inplace=True) if optimized else net
                x = torch.randn((batch, 9, size, size) if net.spatial_dims == 2 else (batch, 1, 8, size, size))
                walls, cpus = [], []
                with torch.no_grad():
                    net(x)  # warm-up
                    for _ in range(repeats):
                        wall, cpu = time.perf_counter(), time.process_time()
                        y = net(x)
                        walls.append(time.perf_counter() - wall)
                        cpus.append(time.process_time() - cpu)
                med, slices = statistics.median(walls), net.out_slices * batch
                rows.append({"name": name, "dims": net.spatial_dims, "input": list(x.shape), "output": list(y.shape),
                             "slices_out": slices, "forward_min_s": min(walls), "forward_median_s": med,
                             "cpu_median_s": statistics.median(cpus), "per_slice_s": med / slices,
                             "per_slice_min_s": min(walls) / slices, "params": sum(p.numel() for p in net.parameters()),
                             "thesis_per_slice_s": TUSTUMI_SLICE_S.get(name)})  # fmt: skip
                log(f"lite {name}: {med / slices * 1e3:.1f} ms per slice")
            except Exception as exc:  # noqa: BLE001
                rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
                log(f"lite {name} failed: {exc}")
    finally:
        torch.set_num_threads(previous)
    return rows


def measure_section(ctx: Any) -> dict:
    """run_all.py's ``lite_speed`` section (``ctx``: its ``Context``): :func:`time_presets` of ``lite_presets``
    (``None``: all of them)."""
    import os

    from monai_effseg.encoders.lite import PRESETS

    s = ctx.settings
    size, threads, repeats = s.lite_size, s.threads, s.lite_repeats
    rows = time_presets(s.lite_presets or tuple(PRESETS), size, threads, repeats, log=ctx.log)
    return {"size": size, "threads": threads, "repeats": repeats, "rows": rows, "load_after": list(os.getloadavg())}


def print_speed(rows: Sequence[dict], size: int, threads: int, batch: int = 1, optimized: bool = False) -> None:
    ok = {r["name"]: r for r in rows if "per_slice_s" in r}
    mode = "optimize_for_inference" if optimized else "eager"
    print(
        f"\nCPU prediction at {size}x{size}, {threads} threads, batch {batch}, {mode}\n{'preset':24} {'ms/slice':>9} {'thesis ms':>9}"
    )
    for r in rows:
        if r["name"] not in ok:
            print(f"{r['name']:24} failed: {r['error']}")
            continue
        flag = "  OVER 1 s/slice" if r["per_slice_s"] > 1.0 else ""
        print(f"{r['name']:24} {r['per_slice_s'] * 1e3:9.1f} {(r['thesis_per_slice_s'] or math.nan) * 1e3:9.0f}{flag}")
    print("3D / 2D time per slice, ours (thesis Tables 4.5 / 4.4):")
    for fam in ("mobilenetv2", "mobilenetv3", "shufflenetv2"):  # DSTS exists in 3D only
        pairs = [(v, ok.get(f"{fam}-2d-{v}"), ok.get(f"{fam}-3d-{v}")) for v in ("top", "default", "bottom")]
        cells = [
            f"{v} {b['per_slice_s'] / a['per_slice_s']:.2f} ({b['thesis_per_slice_s'] / a['thesis_per_slice_s']:.2f})"
            for v, a, b in pairs
            if a and b
        ]
        if cells:
            print(f"  {fam}: " + ", ".join(cells))
    print("over 1 s per slice: " + (", ".join(n for n, r in ok.items() if r["per_slice_s"] > 1.0) or "none"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=None, help="presets to show and time (default: all 21)")
    parser.add_argument("--speed", action="store_true", help="also time CPU prediction per slice")
    parser.add_argument("--size", type=int, default=256, help="in-plane size for --speed (the thesis': 256)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="inputs per forward for --speed (bundles infer 8)")
    parser.add_argument("--optimized", action="store_true", help="time after optimize_for_inference")
    args = parser.parse_args(argv)
    from monai_effseg.encoders.lite import PRESETS

    unknown = sorted(set(args.presets or ()) - set(PRESETS))
    if unknown:
        parser.error(f"unknown presets {unknown}; known: {', '.join(PRESETS)}")
    print_fidelity(*fidelity(args.presets))
    if args.speed:
        rows = time_presets(args.presets or tuple(PRESETS), args.size, args.threads, args.repeats, args.batch,
                            args.optimized)  # fmt: skip
        print_speed(rows, args.size, args.threads, args.batch, args.optimized)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

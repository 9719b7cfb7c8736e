"""Issue 28: a whole abdominal CT through each KiTS bundle on a 2-thread CPU, fast path against full path.

``full``: the bundle's ``inference.json`` as it runs on a CPU (``optimize_for_inference``), mirror TTA off (the
default TTA runs every window 8 times: the full path here is the cheapest full pass), in float32. ``fast``: the
same plus ``inference_fast.json`` (a low-resolution localizer, then the full pass's windows that reach the kidney
boxes, in bfloat16 on a CPU with native bf16 dot products, AMX or AVX-512 BF16, where the overlay's
``bf16_where_native`` is set). The cascade, coarse-to-fine by design and without an overlay, is measured on request
(``--bundles kits_unet_cascade``): its fast path is its ``inference.json`` with ``bf16_where_native``.
``--set KEY=JSON`` changes the bundle's network in both paths (e.g. ``--set 'encoder="efficientnet-b0"'`` runs
EfficientUNet-b0 instead of the bundle's default V2-S); such rows carry the change as their ``variant``.
Both end to end: load, preprocessing, inference, inversion, post-processing, NIfTI written; each run in a fresh
process that reports its own peak resident memory.

Weights are fresh (BatchNorm calibrated on the CT, as in ``bench_real_ct.py``); the localizer is fresh too, so the
fast path's *boxes* come from the CT's reference kidney masks, grown exactly as the inferer grows a localizer's
boxes (the margin plus one low-resolution voxel). The localizer still runs, so its cost is in the time; what is
not measured here is whether a trained localizer finds the kidneys (the accuracy benchmark on trained models does).
The boxes do not grow here (``--max-grow 0``): a fresh network's foreground is noise that touches every face, so
growing would measure the noise; on trained models the accuracy benchmark runs the bundles' default.

The CTs: tests/data/abdomen_ct_3mm resampled to 512 x 512 x 100 at 0.78 x 0.78 x 3 mm (KiTS19's typical scan) and
to 512 x 512 x 600 at 0.78 x 0.78 x 0.8 mm (a thin-slice scan; air beyond the 336 mm the source covers).
"Compute limit" is the FLOPs of every window the networks ran (counted per window shape) over this CPU's measured
matmul rate on the same threads in the precision the network ran in (fp32, or bf16 where the fast path used it):
the time the arithmetic alone would take.

``--accuracy DEMO_WORK`` measures the other half: on each bundle's demo-trained model (the ``demos`` section of
``run_all.py --work-dir DEMO_WORK`` keeps them), it trains the bundle's localizer on the same demo cases
(``localizer.json``; demo sizes: 5 mm in-plane instead of 3.1 mm, the phantoms are 2.6 mm), then runs the hold-out
phantoms through the full and the fast path: both paths' hold-out Dice and, per case, the Dice between the two
paths' kidney-and-mass masks. ``--dataset realistic`` does the same on demo models trained on the realistic KiTS
dataset (``run_all.py --sections demos --demo-override demo_dataset=realistic``): real KiTS19 kidney and tumour
shapes and positions, 2.5-5 mm slices, the IPL affine, hold-out cases from patients the training never saw.

    python benchmarks/bench_fast_ct.py [--bundles kits_nnunet_baseline ...] [--cts 100 600] [--full-on 100]
        [--max-grow 0] [--set KEY=JSON ...]
        [--threads 2] [--json FILE]
    python benchmarks/bench_fast_ct.py --accuracy /tmp/demo_work [--dataset realistic] [--bundles ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import report_format as rf
import torch

from monai_effseg.deploy import native_bf16

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
KITS_FAST = ["kits_nnunet_baseline", "kits_efficientunet", "kits_residual_unet", "kits_mss_unet", "kits_sauron_nnunet"]
KITS = [*KITS_FAST, "kits_unet_cascade"]
MASKS = [REPO / "tests" / "data" / "abdomen_ct_3mm" / f"kidney_{side}.nii.gz" for side in ("left", "right")]
CTS = {100: ((512, 512, 100), (0.78125, 0.78125, 3.0)), 600: ((512, 512, 600), (0.78125, 0.78125, 0.8))}


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Matrix-product rate of this CPU in ``dtype`` on ``threads`` threads (best of ``repeats``), in GFLOP/s."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def make_inputs(work: Path, slices: int) -> tuple[Path, Path]:
    """The CT and its kidney mask on the grid of ``CTS[slices]``."""
    from bench_inference import make_ct

    shape, spacing = CTS[slices]
    ct, mask = work / f"scans_{slices}" / "ct.nii.gz", work / f"mask_{slices}.nii.gz"
    make_ct(ct, shape, spacing)
    make_ct(mask, shape, spacing, sources=MASKS, order=0, fill=0.0)
    return ct, mask


def make_weights(bundle: str, ct: Path, models: Path, overrides: dict) -> None:
    """Fresh network weights (BatchNorm calibrated on ``ct``) and a fresh localizer, where the fast path finds them."""
    from bench_real_ct import calibrate_batchnorm

    configs, _ = fast_path(bundle)
    parser = bundle_parser(bundle, configs, overrides)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    calibrate_batchnorm(net, parser, ct)
    models.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), models / "model.pt")
    if "localizer_def" in parser:
        (models / "localizer").mkdir(exist_ok=True)
        torch.save(parser.get_parsed_content("localizer_def").state_dict(), models / "localizer" / "model.pt")


def record_windows(windows: list[tuple[str, tuple]], localizer: dict) -> None:
    """Make every network call of ``SlidingWindowMirrorInferer`` append ``(tag, window shape)`` to ``windows``: tag
    ``"localizer"`` for ``localizer["net"]`` (set once the config is parsed), else ``"network"``. The full-grid fast
    path passes its window filter: the windows it lets through to the network are the ones counted."""
    from monai_effseg.inferers import SlidingWindowMirrorInferer
    from monai_effseg.inferers.coarse_to_fine import BoxWindowFilter

    original_call = SlidingWindowMirrorInferer.__call__

    def recording_call(self, inputs, network, *args, **kwargs):
        tag = "localizer" if network is localizer.get("net") else "network"
        inner = network.network if isinstance(network, BoxWindowFilter) else network

        def counted(x, *a, **k):
            windows.append((tag, tuple(x.shape)))
            return inner(x, *a, **k)

        if isinstance(network, BoxWindowFilter):
            network.network = counted
            return original_call(self, inputs, network, *args, **kwargs)
        return original_call(self, inputs, counted, *args, **kwargs)

    SlidingWindowMirrorInferer.__call__ = recording_call


def run_child(spec: dict) -> dict:
    """One bundle run in this process (``--child``): times, peak memory, FLOPs of the windows run, the boxes."""
    from monai.bundle import ConfigParser

    from monai_effseg.inferers import CoarseToFineInferer, box_fraction, kidney_boxes
    from monai_effseg.profile import count_flops
    from monai_effseg.workflows import bundle_workflow

    torch.set_num_threads(spec["threads"])
    bundle = REPO / "bundles" / spec["bundle"]
    files, fast_overrides = fast_path(spec["bundle"]) if spec["mode"] == "fast" else (["inference.json"], {})
    overrides = {"mirror_axes": [], "ckpt_path": spec["ckpt"], "fingerprint_path": spec["fingerprint"],
                 "input_dir": str(Path(spec["ct"]).parent), "output_dir": spec["out"], **fast_overrides,
                 **spec["overrides"]}  # fmt: skip
    windows: list[tuple[str, tuple]] = []
    localizer: dict = {}
    record_windows(windows, localizer)
    workflow = bundle_workflow(bundle, files, "inference", **overrides)
    workflow.initialize()
    parser = workflow.parser
    inferer, boxes = parser.get_parsed_content("inferer"), None
    if isinstance(inferer, CoarseToFineInferer):
        localizer["net"] = inferer.localizer
        label = _preprocessed_mask(parser, spec)
        spacing = [float(s) for s in parser.get_parsed_content("fingerprint")["spacing"]]
        margin = [math.ceil(inferer.margin_mm / s) + math.ceil(1 / z) for s, z in zip(spacing, inferer.zoom)]
        boxes = kidney_boxes(label > 0, margin, inferer.second_min_ratio, inferer.max_components)
        localize = inferer.localize
        inferer.localize = lambda image: (localize(image), boxes)[1]  # the localizer runs; the reference boxes are used
    start = time.perf_counter()
    workflow.run()
    wall = time.perf_counter() - start
    workflow.finalize()
    nets = {"network": ConfigParser(parser.get()).get_parsed_content("network_def")}
    if boxes is not None:
        nets["localizer"] = ConfigParser(parser.get()).get_parsed_content("localizer_def")
    flops = {tag: 0 for tag in nets}
    for (tag, shape), count in Counter(windows).items():
        flops[tag] += count * count_flops(window_net(nets[tag], shape), shape, parts=[])["network"]
    segs = sorted(Path(spec["out"]).glob("*.nii*"))
    return {
        "bundle": spec["bundle"], "mode": spec["mode"], "ct": spec["ct_name"], "wall_s": wall,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "flops": sum(flops.values()), "flops_by_net": flops,
        "windows": sum(shape[0] for tag, shape in windows if tag == "network"),  # network windows (batch entries)
        "boxes": [list(map(list, b)) for b in boxes] if boxes else None,
        "box_fraction": box_fraction(boxes, label.shape) if boxes else 1.0,
        "segmentation": str(segs[0]) if segs else None, "precision": precision(parser),
    }  # fmt: skip


def window_net(net: torch.nn.Module, shape: tuple) -> torch.nn.Module:
    """The network a window of ``shape`` ran through: ``net``, or for a staged network (the cascade, whose stages
    the inferer calls one by one) the stage whose first conv takes that many channels."""
    stages = [getattr(net, name) for name in getattr(net, "inference_stages", ())]
    for stage in stages:
        first = next(m for m in stage.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
        if first.in_channels == shape[1]:
            return stage
    return net


def _preprocessed_mask(parser, spec: dict) -> np.ndarray:
    """The reference kidney mask through the bundle's own preprocessing (nearest neighbour): the grid the inferer
    sees."""
    from monai_effseg.transforms import ct_preprocessing

    fingerprint = parser.get_parsed_content("fingerprint")
    pre = ct_preprocessing(fingerprint, keys=["image", "label"])
    return np.asarray(pre({"image": spec["ct"], "label": spec["mask"]})["label"][0])


def child_run(spec: dict) -> dict:
    """``run_child`` in a fresh process (its own peak memory, nothing warm from the previous run)."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         encoding="utf-8", env={**os.environ, "OMP_NUM_THREADS": str(spec["threads"])})  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{spec['bundle']} {spec['mode']} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def agreement(a: str, b: str) -> float:
    """Dice of the kidney-and-mass masks (label > 0) of two label maps: how far the fast path moved the answer."""
    import nibabel as nib

    from monai_effseg.metrics import dice

    return dice(*(np.asarray(nib.load(p).dataobj) > 0 for p in (a, b)))


DEMO_LOCALIZER = {"localizer_zoom": [0.5, 0.5, 1.0], "localizer_patch": [48, 48, 32]}


def fast_path(bundle: str) -> tuple[list[str], dict]:
    """The fast path's config files and overrides: ``inference_fast.json`` on top of ``inference.json`` where the
    bundle has the overlay; the cascade (coarse-to-fine by design, no overlay) is its ``inference.json`` with
    ``bf16_where_native``."""
    if (REPO / "bundles" / bundle / "configs" / "inference_fast.json").is_file():
        return ["inference.json", "inference_fast.json"], {}
    return ["inference.json"], {"bf16_where_native": True}


def accuracy(bundle: str, demo_work: Path, epochs: int, iterations: int, dataset: str = "phantoms") -> dict:
    """Localizer training on the demo cases, then the hold-out cases through both paths (see the module doc).
    ``dataset`` is the demo's ``demo_dataset``: the phantoms, or the realistic cases built on KiTS19 label maps."""
    sys.path.insert(0, str(REPO / "tests"))
    from bundle_utils import demo_value

    from monai_effseg.workflows import evaluate_holdout, run_bundle

    root, work = REPO / "bundles" / bundle, demo_work / "demos" / bundle
    models = work / "models"
    if not (models / "model.pt").is_file():
        raise FileNotFoundError(
            f"{models / 'model.pt'}: run benchmarks/run_all.py --sections demos --work-dir {demo_work}"
            + (f" --demo-override demo_dataset={dataset}" if dataset != "phantoms" else "")
        )
    demo = {"demo_dataset": dataset}
    fast_configs, fast_overrides = fast_path(bundle)
    start = time.perf_counter()
    if "inference_fast.json" in fast_configs:
        run_bundle(root, ["localizer.json"], "train", literals={
            "dataset_dir": demo_value(root, "dataset_dir", **demo), "model_dir": str(models),
            "model_eval_dir": str(work / "eval"), "max_epochs": epochs, "iterations_per_epoch": iterations,
            "val_interval": epochs, "num_workers": 0, **DEMO_LOCALIZER})  # fmt: skip
        fast_overrides = DEMO_LOCALIZER
    localizer_s = time.perf_counter() - start
    # mirror TTA off in both paths, as on a CPU (the fast overlay's default; some demos keep the bundle's 8 flips)
    overrides = {**demo_value(root, "demo_inference_overrides", ckpt_dir=str(models), **demo), "mirror_axes": []}
    holdout, protocol = demo_value(root, "holdout_dir", **demo), demo_value(root, "eval_protocol", **demo)
    row = {"bundle": bundle, "dataset": dataset, "localizer": "inference_fast.json" in fast_configs,
           "localizer_train_s": localizer_s, "holdout_dir": str(holdout), "protocol": protocol}  # fmt: skip
    for mode, configs, extra in (("full", ["inference.json"], {}), ("fast", fast_configs, fast_overrides)):
        start = time.perf_counter()
        summary = evaluate_holdout(root, holdout, work / f"holdout_{mode}", protocol, {**overrides, **extra},
                                   configs=configs)  # fmt: skip
        row[mode] = {k: v["mean"] for k, v in summary["metrics"].items() if isinstance(v, dict) and "mean" in v}
        row[f"{mode}_s"] = time.perf_counter() - start
    row["fast_precision"] = precision(bundle_parser(bundle, fast_configs, fast_overrides))
    full_dir, fast_dir = work / "holdout_full" / "predictions", work / "holdout_fast" / "predictions"
    row["agreement"] = {p.name: agreement(str(p), str(fast_dir / p.name)) for p in sorted(full_dir.rglob("*.nii.gz"))}
    return row


def precision(parser) -> str:
    """The precision a bundle config runs its network in on this CPU: bfloat16 where it optimizes and sets
    ``bf16_where_native`` and the CPU has native bf16 (the rule ``OptimizeForInference`` applies), else float32."""
    from monai_effseg.handlers.optimize import runs_in_bf16
    from monai_effseg.utils import as_flag

    flag = {key: as_flag(parser.get_parsed_content(key), key) for key in ("optimize", "bf16_where_native")}
    return "bfloat16" if flag["optimize"] and runs_in_bf16(flag["bf16_where_native"]) else "float32"


def bundle_parser(bundle: str, configs: list[str], overrides: dict):
    """A ``ConfigParser`` of the bundle's ``configs`` with ``overrides`` (parsed lazily: nothing is built)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / f) for f in configs])
    parser.update({"bundle_root": str(REPO / "bundles" / bundle), **overrides})
    return parser


def print_accuracy(rows: list[dict]) -> None:
    print(f"\n{'bundle':22s} {'kidney full':>11s} {'fast':>6s} {'tumour full':>11s} {'fast':>6s} "
          f"{'full-vs-fast kidney Dice (min over cases)':>42s}")  # fmt: skip
    for r in rows:
        kidney = "kidney_dice" if r["protocol"] == "kits19" else "kidney_and_mass_dice"
        print(f"{r['bundle']:22s} {r['full'][kidney]:11.3f} {r['fast'][kidney]:6.3f} {r['full']['tumor_dice']:11.3f} "
              f"{r['fast']['tumor_dice']:6.3f} {min(r['agreement'].values()):42.3f}")  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundles", nargs="+", default=KITS_FAST, choices=KITS,
                   help="default: the bundles with inference_fast.json; the cascade's fast path is bf16 only")  # fmt: skip
    p.add_argument("--cts", nargs="+", type=int, default=[100, 600], choices=sorted(CTS))
    p.add_argument("--full-on", nargs="*", type=int, default=[100], help="CTs (slices) that also run the full path")
    p.add_argument(
        "--max-grow",
        type=int,
        default=0,
        help="the fast path's box-growing rounds (default 0: a fresh network's foreground is noise)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=JSON", help="network config changes, both paths")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="the baseline at a quarter of its widths, 100-slice CT only")
    p.add_argument("--accuracy", type=Path, default=None, metavar="DEMO_WORK", help="see the module doc")
    p.add_argument("--dataset", choices=("phantoms", "realistic"), default="phantoms",
                   help="with --accuracy: the demo_dataset the demo models were trained on")  # fmt: skip
    p.add_argument("--localizer-epochs", type=int, default=30)
    p.add_argument("--localizer-iterations", type=int, default=20)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_child(json.loads(args.child))), flush=True)
        return
    torch.set_num_threads(args.threads)
    if args.accuracy:
        rows = [accuracy(b, args.accuracy, args.localizer_epochs, args.localizer_iterations, args.dataset)
                for b in args.bundles]  # fmt: skip
        print_accuracy(rows)
        if args.json:
            save(args.json, "accuracy", rows, {"accuracy_measured_at": rf.now_iso()})
        return
    overrides = {"features": [8, 16, 32, 64, 80, 80]} if args.smoke else parse_settings(args.set)
    variant = ",".join(args.set)
    if args.smoke:
        args.bundles, args.cts = ["kits_nnunet_baseline"], [100]
    gflops = {"float32": matmul_gflops(args.threads), "bfloat16": matmul_gflops(args.threads, dtype=torch.bfloat16)}
    print(f"this CPU: {gflops['float32']:.0f} GFLOP/s fp32 and {gflops['bfloat16']:.0f} GFLOP/s bf16 matmul on "
          f"{args.threads} threads", flush=True)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = {n: make_inputs(work, n) for n in args.cts}
        for bundle in args.bundles:
            models = work / bundle / "models"
            make_weights(bundle, inputs[args.cts[0]][0], models, overrides)
            for n in args.cts:
                ct, mask = inputs[n]
                for mode in ["full", "fast"] if n in args.full_on else ["fast"]:
                    spec = {"bundle": bundle, "mode": mode, "threads": args.threads, "ct": str(ct), "mask": str(mask),
                            "ct_name": f"512x512x{n}", "ckpt": str(models / "model.pt"),
                            "fingerprint": str(models / "none.json"), "out": str(work / bundle / f"segs_{n}_{mode}"),
                            "overrides": {**overrides, **({"inferer#max_grow": args.max_grow} if mode == "fast" and bundle in KITS_FAST else {})}}  # fmt: skip
                    row = child_run(spec)
                    row["compute_limit_s"] = row["flops"] / (gflops[row["precision"]] * 1e9)
                    if variant:
                        row["variant"] = variant
                    rows.append(row)
                    print(f"{bundle:22s} {row['ct']:12s} {mode:4s} {row['wall_s']:7.1f} s  peak {row['peak_rss_gb']:5.2f} GB  "
                          f"{row['flops'] / 1e12:6.2f} TFLOP in {row['windows']:3d} windows (limit {row['compute_limit_s']:5.1f} s)  "
                          f"boxes {row['box_fraction']:.1%} of the volume, {row['precision']}", flush=True)  # fmt: skip
            if args.json:  # after each bundle: a run cut short keeps what it measured
                save(
                    args.json,
                    "rows",
                    rows,
                    {
                        "threads": args.threads,
                        "matmul_gflops": gflops["float32"],
                        "matmul_gflops_bf16": gflops["bfloat16"],
                        "smoke": args.smoke,
                        "max_grow": args.max_grow,
                        "native_bf16": native_bf16(),
                    },
                )
        print_table(rows)


def parse_settings(settings: list[str]) -> dict:
    """``KEY=JSON`` strings as a config override dict (the value is JSON: ``encoder="efficientnet-b0"``)."""
    parsed = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            raise SystemExit(f"--set {setting!r}: expected KEY=JSON, e.g. 'encoder=\"efficientnet-b0\"'")
        parsed[key] = json.loads(value)
    return parsed


def save(path: Path, key: str, rows: list[dict], extra: dict) -> None:
    """Merge ``rows`` into the results file ``path`` (rows of other bundles, CTs and modes are kept), atomically."""
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"generator": Path(__file__).name}
    ident = (
        (lambda r: (r["bundle"], r.get("ct"), r.get("mode"), r.get("variant")))
        if key == "rows"
        else (lambda r: (r["bundle"], r.get("dataset", "phantoms")))
    )
    measured = {ident(r) for r in rows}
    results[key] = [r for r in results.get(key, []) if ident(r) not in measured] + rows
    results.update(extra, measured_at=rf.now_iso(), machine=rf.machine_info())
    rf.write_atomic(path, json.dumps(rf.clean(results), indent=1) + "\n")
    print(f"results: {path} ({key})")


def print_table(rows: list[dict]) -> None:
    print(f"\n{'bundle':22s} {'CT':12s} {'full s':>7s} {'fast s':>7s} {'speed-up':>8s} {'fast peak GB':>12s} "
          f"{'fast / compute limit':>20s}")  # fmt: skip
    for bundle in dict.fromkeys(r["bundle"] for r in rows):
        for ct, variant in dict.fromkeys((r["ct"], r.get("variant")) for r in rows if r["bundle"] == bundle):
            by = {r["mode"]: r for r in rows if r["bundle"] == bundle and (r["ct"], r.get("variant")) == (ct, variant)}
            fast, full = by["fast"], by.get("full")
            ct = f"{ct} {variant}" if variant else ct
            ratio = f"{full['wall_s'] / fast['wall_s']:.1f}x" if full else "-"
            print(f"{bundle:22s} {ct:12s} {full['wall_s'] if full else float('nan'):7.1f} {fast['wall_s']:7.1f} "
                  f"{ratio:>8s} {fast['peak_rss_gb']:12.2f} {fast['wall_s'] / fast['compute_limit_s']:19.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()

"""Issue 2: a bundle's ``inference.json`` end to end on a real CT (tests/data/abdomen_ct_3mm/ct.nii.gz, 3 mm,
RAS) with freshly initialised weights of the paper-size network: the label map written must have the input's exact
shape and affine. Prints the throughput in input voxels per second on ``--threads`` CPU threads.

The CT is resampled to the bundle's target spacing (KiTS19: 0.78 x 0.78 x 3 mm, about 20 M voxels for this scan),
so the figure is dominated by the sliding window over the resampled volume. Mirror TTA (8 passes) is off by default
(``--mirror`` turns the bundle's setting back on).

``--compare-optimize`` (issue 25) runs the bundle twice in one process on the same weights, ``optimize`` false
(the eager network) then true (:func:`monai_effseg.deploy.optimize.optimize_for_inference`, what ``inference.json``
runs on the CPU by default), and reports both times, their ratio and whether the label maps are identical.
``--shape 512 512 100 --spacing 0.78125 0.78125 3`` first resamples the CT to that grid (KiTS19's typical scan).
BatchNorm statistics are calibrated on patches of the preprocessed CT (``--no-calibrate`` keeps a fresh network's
mean 0 / variance 1): a network with uncalibrated BatchNorm computes outputs no trained network does (activations
that grow layer after layer), and its label map is then decided by rounding.

    python benchmarks/bench_real_ct.py [--bundle kits_nnunet_baseline] [--threads 2] [--mirror] [--json out.json]
    python benchmarks/bench_real_ct.py --compare-optimize --bundle kits_efficientunet --threads 2 \
        --shape 512 512 100 --spacing 0.78125 0.78125 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_effseg.workflows import run_bundle

REPO = Path(__file__).resolve().parents[1]
CT = REPO / "tests" / "data" / "abdomen_ct_3mm" / "ct.nii.gz"


def calibrate_batchnorm(net: torch.nn.Module, parser: ConfigParser, ct: Path, patches: int = 2) -> bool:
    """Set every BatchNorm's running statistics from ``patches`` random patches of the bundle-preprocessed CT, as
    training leaves them; staged networks get random inputs per stage. Returns whether the network has BatchNorm."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    for m in norms:
        m.momentum = None  # cumulative average over the calibration batch
        m.reset_running_stats()
    patch = [int(v) for v in parser.get_parsed_content("patch_size")]
    stages = [getattr(net, n) for n in getattr(net, "inference_stages", ())]
    rng = np.random.default_rng(0)
    with torch.no_grad():
        if stages:
            for stage in stages:
                first = next(m for m in stage.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
                stage.train()(torch.randn(patches, first.weight.shape[1], *patch))
        else:
            image = torch.as_tensor(parser.get_parsed_content("preprocessing")({"image": str(ct)})["image"])
            crops = []
            for _ in range(patches):
                starts = [int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(image.shape[1:], patch)]
                crop = image[(slice(None), *(slice(s, s + p) for s, p in zip(starts, patch)))]
                pad = [v for n, p in zip(reversed(crop.shape[1:]), reversed(patch)) for v in (0, p - n)]
                crops.append(torch.nn.functional.pad(crop, pad))
            net.train()(torch.stack(crops).float())
    net.eval()
    return True


def run(
    bundle: str = "kits_nnunet_baseline",
    ct: Path = CT,
    threads: int = 2,
    mirror: bool = False,
    optimize: tuple = (None,),
    calibrate: bool = True,
) -> dict:
    """One bundle run per entry of ``optimize`` (``None``: the config's default; ``False``/``True``: the
    ``optimize`` key), on the same fresh weights; times and labels of the last run, plus ``runs`` with each."""
    torch.set_num_threads(threads)
    root = REPO / "bundles" / bundle
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "scans").mkdir()
        shutil.copy(ct, tmp / "scans" / ct.name)
        overrides: dict = {} if mirror else {"mirror_axes": []}
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        parser.update({"bundle_root": str(root), **overrides})
        torch.manual_seed(0)
        net = parser.get_parsed_content("network_def")
        calibrated = calibrate and calibrate_batchnorm(net, parser, ct)
        torch.save(net.state_dict(), tmp / "model.pt")
        params = sum(p.numel() for p in net.parameters())
        runs, maps = [], []
        for opt in optimize:
            extra = {} if opt is None else {"optimize": opt}
            segs = tmp / f"segs_{opt}"
            start, cpu_start = time.perf_counter(), time.process_time()
            run_bundle(root, ["inference.json"], "inference", input_dir=str(tmp / "scans"), output_dir=str(segs),
                       ckpt_path=str(tmp / "model.pt"), fingerprint_path=str(tmp / "none.json"), **overrides,
                       **extra)  # fmt: skip
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            outputs = sorted(segs.rglob("*.nii*"))
            if len(outputs) != 1:
                raise RuntimeError(f"expected one label map under {segs}, found {outputs}")
            src, seg = nib.load(str(ct)), nib.load(str(outputs[0]))
            maps.append(np.asanyarray(seg.dataobj))
            labels = np.unique(maps[-1]).tolist()
            # process CPU time as well: on a shared machine it moves less with the other processes' load than wall
            runs.append({"optimize": opt, "seconds": seconds, "cpu_seconds": cpu_seconds, "labels": labels})
            print(f"optimize={opt}: {seconds:.1f} s wall, {cpu_seconds:.1f} s process CPU", flush=True)
        differ = [int(np.count_nonzero(m != maps[0])) for m in maps]
    return {
        "bundle": bundle, "ct": str(ct), "shape": list(src.shape), "spacing": [float(s) for s in src.header.get_zooms()],
        "params": params, "threads": threads, "mirror_tta": mirror, "seconds": seconds,
        "voxels_per_s": float(np.prod(src.shape)) / seconds,
        "shape_equal": seg.shape == src.shape, "affine_equal": bool(np.array_equal(seg.affine, src.affine)),
        "labels": labels, "runs": runs, "voxels_differing_from_first_run": differ, "batchnorm_calibrated": calibrated,
    }  # fmt: skip


def compare_optimize(
    bundle: str, ct: Path = CT, threads: int = 2, mirror: bool = False, calibrate: bool = True
) -> dict:
    """Eager, then optimized, in one process on the same weights: both times, their ratio, identical labels."""
    r = run(bundle, ct, threads, mirror, optimize=(False, True), calibrate=calibrate)
    eager, optimized = r["runs"]
    r.update(eager_s=eager["seconds"], optimized_s=optimized["seconds"],
             speedup=eager["seconds"] / optimized["seconds"],
             cpu_speedup=eager["cpu_seconds"] / optimized["cpu_seconds"],
             voxels_differing=r["voxels_differing_from_first_run"][1],
             labels_identical=r["voxels_differing_from_first_run"][1] == 0)  # fmt: skip
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="kits_nnunet_baseline")
    parser.add_argument("--ct", type=Path, default=CT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mirror", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--compare-optimize",
        action="store_true",
        help="eager and optimize_for_inference side by side: both times, ratio, identical labels",
    )
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="resample the CT to this grid first")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.78125, 0.78125, 3.0), help="with --shape")
    parser.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                        help="keep a fresh network's BatchNorm statistics (mean 0, variance 1)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.shape:
            from bench_inference import make_ct  # imports this module: import it once this one is loaded

            args.ct = Path(tmp) / f"ct_{'x'.join(map(str, args.shape))}.nii.gz"
            print(f"resampled CT: {make_ct(args.ct, args.shape, args.spacing)}", flush=True)
        report(args)


def report(args: argparse.Namespace) -> None:
    if args.compare_optimize:
        r = compare_optimize(args.bundle, args.ct, args.threads, args.mirror, args.calibrate)
        weights = "fresh weights, BatchNorm calibrated on the CT" if r["batchnorm_calibrated"] else "fresh weights"
        print(
            f"{r['bundle']} ({r['params']:,} params, {weights}) on {r['ct']}: {r['shape']} at {r['spacing']} mm, "
            f"{r['threads']} threads, mirror TTA {'on' if r['mirror_tta'] else 'off'}"
        )
        print(f"eager {r['eager_s']:.1f} s, optimized {r['optimized_s']:.1f} s: {r['speedup']:.2f}x wall "
              f"({r['cpu_speedup']:.2f}x in process CPU time); labels identical "
              f"{r['labels_identical']} ({r['voxels_differing']} of {np.prod(r['shape']):,} voxels differ), "
              f"labels {r['labels']}")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
        return
    r = run(args.bundle, args.ct, args.threads, args.mirror, calibrate=args.calibrate)
    print(f"{r['bundle']} ({r['params']:,} params, fresh weights) on {r['ct']}: {r['shape']} at {r['spacing']} mm")
    print(f"wall {r['seconds']:.1f} s on {r['threads']} threads, mirror TTA {'on' if r['mirror_tta'] else 'off'}: "
          f"{r['voxels_per_s']:,.0f} input voxels/s")  # fmt: skip
    print(f"output geometry: shape equal {r['shape_equal']}, affine equal {r['affine_equal']}, labels {r['labels']}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    if not (r["shape_equal"] and r["affine_equal"]):
        raise SystemExit("FAIL: the label map does not have the input's geometry")


if __name__ == "__main__":
    main()

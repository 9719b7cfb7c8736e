"""Bar 1 of issue 6: on the real KiTS19 label geometry (the 10 shipped labels: (z, y, x) arrays with KiTS19's IPL
affine, slice spacings 0.5-5 mm), the bundles' preprocessing + inference round trip returns labels with the input's
exact shape and affine.

For every case a CT is synthesised on the label's grid (air outside a body ellipse, soft tissue, kidney and tumour
HU, noise) and saved with the label's header. Two checks per case:

1. **oracle**: preprocessing (reorient to RAS, resample to the fingerprint spacing with the bundle's interpolation,
   normalise) then ``Invertd`` of the one-hot *label itself* as the prediction; the kidney and tumour Dice of the
   result against the original label show that nothing is flipped or shifted (only resampling blur remains);
2. **bundle**: ``inference.json`` of each bundle (fresh small weights: the demo overlay's network, mirror TTA off)
   writes a NIfTI whose shape and affine are compared with the input's, bit for bit.

    python benchmarks/bench_kits19_roundtrip.py [--bundles kits_unet_cascade kits_residual_unet kits_mss_unet]
                                                [--cases case_00011 case_00209] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.networks import one_hot
from monai.transforms import Invertd

from monai_effseg.data import load_fingerprint
from monai_effseg.transforms import ct_preprocessing

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "tests" / "data" / "kits19_labels"
BUNDLES = ("kits_unet_cascade", "kits_residual_unet", "kits_mss_unet")


def synthesise_ct(label: np.ndarray, spacing: tuple[float, ...], seed: int = 0) -> np.ndarray:
    """int16 HU volume on the label's (z, y, x) grid: air outside an in-plane body ellipse, tissue, organs, noise."""
    rng = np.random.default_rng(seed)
    _, ny, nx = label.shape
    y, x = np.ogrid[:ny, :nx]
    body = ((y - ny / 2) / (0.42 * ny)) ** 2 + ((x - nx / 2) / (0.47 * nx)) ** 2 <= 1.0
    ct = np.broadcast_to(np.where(body, 40.0, -1000.0).astype(np.float32), label.shape).copy()
    ct[label == 1] = 180.0
    ct[label == 2] = 80.0
    ct += rng.normal(0.0, 15.0, size=ct.shape).astype(np.float32)
    return ct.astype(np.int16)


def write_case(label_path: Path, out_dir: Path) -> tuple[Path, Path]:
    """The synthetic CT of a shipped label, with the label's exact header, as a flat scan folder entry."""
    ref = nib.load(str(label_path))
    label = np.asanyarray(ref.dataobj)
    image = nib.Nifti1Image(synthesise_ct(label, ref.header.get_zooms()), ref.affine, ref.header)
    image.set_data_dtype(np.int16)
    path = out_dir / label_path.name
    nib.save(image, str(path))
    return path, label_path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def oracle_roundtrip(image: Path, label: Path, spacing_mode) -> dict:
    """Preprocess image + label, invert the one-hot label as if it were the prediction, compare with the label."""
    fingerprint = load_fingerprint(None, default="kits19")
    pre = ct_preprocessing(fingerprint, keys=("image", "label"), spacing_mode=spacing_mode)
    start = time.perf_counter()
    d = pre({"image": str(image), "label": str(label)})
    d["pred"] = one_hot(d["label"][None].long(), 3)[0].float()
    d["pred"].copy_meta_from(d["image"])
    restored = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(d)["pred"].argmax(0).numpy()
    seconds = time.perf_counter() - start
    truth = np.asanyarray(nib.load(str(label)).dataobj)
    return {"shape_ok": restored.shape == truth.shape, "kidney_dice": round(dice(restored > 0, truth > 0), 4),
            "tumor_dice": round(dice(restored == 2, truth == 2), 4), "seconds": round(seconds, 1)}  # fmt: skip


def bundle_roundtrip(bundle: str, scans: Path, out: Path) -> list[dict]:
    """Run ``inference.json`` (demo-sized fresh network) on the scans; compare each output header with its input."""
    from monai_effseg.workflows import run_bundle

    root = REPO / "bundles" / bundle
    demo = ConfigParser()
    demo.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "demo.json")])
    demo.update({"bundle_root": str(root)})
    overrides = demo.get_parsed_content("demo_inference_overrides")
    work = out / bundle
    work.mkdir(parents=True)
    net_parser = ConfigParser()
    net_parser.read_config(str(root / "configs" / "inference.json"))
    net_parser.update({"bundle_root": str(root), **overrides})
    torch.manual_seed(0)
    torch.save(net_parser.get_parsed_content("network_def").state_dict(), work / "model.pt")
    overrides.update(ckpt_path=str(work / "model.pt"), fingerprint_path=str(work / "none.json"))
    start = time.perf_counter()
    run_bundle(root, ["inference.json"], "inference", input_dir=str(scans), output_dir=str(work / "segs"), **overrides)
    seconds = time.perf_counter() - start
    rows = []
    for scan in sorted(scans.glob("*.nii.gz")):
        src, seg = nib.load(str(scan)), nib.load(str(work / "segs" / scan.name))
        rows.append({"bundle": bundle, "case": scan.name[:-7], "shape": list(src.shape),
                     "shape_equal": seg.shape == src.shape, "affine_equal": bool(np.array_equal(seg.affine, src.affine)),
                     "affine_max_abs_diff": float(np.abs(seg.affine - src.affine).max()),
                     "axcodes": "".join(nib.aff2axcodes(seg.affine)),
                     "labels": sorted(np.unique(np.asanyarray(seg.dataobj)).tolist())})  # fmt: skip
    print(f"{bundle}: {len(rows)} cases in {seconds:.0f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="*", default=list(BUNDLES))
    parser.add_argument("--cases", nargs="*", default=None, help="e.g. case_00011 (default: all 10 shipped labels)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-oracle", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels = sorted(LABELS.glob("case_*.nii.gz"))
    if args.cases:
        labels = [p for p in labels if p.name[:-7] in args.cases]
    with tempfile.TemporaryDirectory(prefix="kits19_roundtrip_") as tmp:
        scans = Path(tmp) / "scans"
        scans.mkdir()
        cases = [write_case(label, scans) for label in labels]
        if not args.no_oracle:
            print(
                "| case | shape (z, y, x) | spacing (z, y, x) mm | axcodes | oracle kidney Dice | oracle tumour Dice "
                "| shape equal | s |\n|---|---|---|---|---|---|---|---|"
            )
            for image, label in cases:
                ref = nib.load(str(label))
                r = oracle_roundtrip(image, label, spacing_mode=3)
                zooms = ", ".join(f"{z:.3g}" for z in ref.header.get_zooms())
                print(
                    f"| {label.name[:-7]} | {ref.shape} | {zooms} | {''.join(nib.aff2axcodes(ref.affine))} "
                    f"| {r['kidney_dice']} | {r['tumor_dice']} | {r['shape_ok']} | {r['seconds']} |",
                    flush=True,
                )
        rows = [row for bundle in args.bundles for row in bundle_roundtrip(bundle, scans, Path(tmp) / "out")]
    print("\n| bundle | case | shape | shape equal | affine equal (bit for bit) | max abs diff | axcodes | labels |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['bundle']} | {r['case']} | {r['shape']} | {r['shape_equal']} | {r['affine_equal']} "
            f"| {r['affine_max_abs_diff']:.1e} | {r['axcodes']} | {r['labels']} |"
        )
    ok = all(r["shape_equal"] and r["affine_equal"] for r in rows)
    print(f"\nall outputs have the input's exact shape and affine: {ok}")
    print(json.dumps({"cases": len(cases), "bundles": args.bundles, "all_equal": ok}))


if __name__ == "__main__":
    main()

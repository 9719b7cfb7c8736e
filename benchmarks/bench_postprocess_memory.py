"""Peak memory of the KiTS inference post-processing on a 512 x 512 x 600 CT (issue 28, bar 3).

A bundle's preprocessing (``--bundle``, default the baseline) runs on tests/data/abdomen_ct_3mm resampled to
512 x 512 x 600 at 0.78 x 0.78 x 0.8 mm; random class scores (the bundle's ``num_classes``) on the preprocessed grid
then go through the inference post-processing (softmax, ``Invertd`` back to the CT's grid with the bundle's own
interpolation, argmax), each step timed with the process's resident-memory peak during the step (sampled every
20 ms). ``--float64`` resamples as MONAI's ``Spacingd`` does by default (the bundles
resample in float32); ``--monai-argmax`` takes the argmax with MONAI's ``AsDiscreted`` instead of ``ChannelArgmaxd``.
Run each setting in its own process:

    python benchmarks/bench_postprocess_memory.py [--bundle kits_residual_unet] [--float64] [--monai-argmax]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import AsDiscreted

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--float64", action="store_true", help="resample in float64 (MONAI's default)")
    p.add_argument("--monai-argmax", action="store_true", help="MONAI's AsDiscreted(argmax=True)")
    p.add_argument("--bundle", default="kits_nnunet_baseline", help="whose inference.json (default: the baseline)")
    args = p.parse_args()
    torch.set_num_threads(2)
    peak = [0]

    def watch() -> None:
        while True:
            peak[0] = max(peak[0], rss())
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    from bench_inference import make_ct

    with tempfile.TemporaryDirectory() as tmp:
        ct = Path(tmp) / "scans" / "ct.nii.gz"
        make_ct(ct, (512, 512, 600), (0.78125, 0.78125, 0.8))
        root = REPO / "bundles" / args.bundle
        parser = ConfigParser()
        parser.read_config([str(root / "configs" / "inference.json")])
        parser.update({"bundle_root": str(root), "output_dir": tmp, "input_dir": str(ct.parent),
                       "fingerprint_path": str(Path(tmp) / "none.json")})  # fmt: skip
        pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
        if args.float64:
            for t in pre.transforms:
                if hasattr(t, "spacing_transform"):
                    t.dtype = [np.float64] * len(t.dtype)
        steps = list(post.transforms)[:3]  # softmax, Invertd, argmax
        if args.monai_argmax:
            steps[2] = AsDiscreted("pred", argmax=True)

        def step(name, fn, data):
            peak[0], start = rss(), time.perf_counter()
            out = fn(data)
            print(f"{name:22s} {time.perf_counter() - start:6.1f} s  peak resident memory {peak[0] / 2**30:5.2f} GB",
                  flush=True)  # fmt: skip
            return out

        print(f"{args.bundle}: resampling in {'float64' if args.float64 else 'float32'}; argmax: "
              f"{'AsDiscreted' if args.monai_argmax else 'ChannelArgmaxd'}")  # fmt: skip
        data = step("preprocessing", pre, {"image": str(ct)})
        torch.manual_seed(0)
        print(f"preprocessed grid {tuple(data['image'].shape[1:])}", flush=True)
        classes = parser.get_parsed_content("num_classes")
        data["pred"] = MetaTensor(torch.randn(classes, *data["image"].shape[1:]), meta=data["image"].meta)
        for t in steps:
            data = step(type(t).__name__, t, data)


if __name__ == "__main__":
    main()

"""Synthetic dataset benchmark: generation time, fingerprint time and, with ``--train``, how well a small 3D U-Net
learns the phantoms on a CPU in a few minutes (held-out Dice per region).

    python benchmarks/bench_synthetic.py                 # generation + fingerprint timings (seconds)
    python benchmarks/bench_synthetic.py --train kits    # + a short CPU training run on KiTS-style phantoms
    python benchmarks/bench_synthetic.py --train lits

Training uses MONAI's ``UNet`` (not a network of this package) so the figure measures the data, not a model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd

from monai_effseg.data import build_datalist, compute_fingerprint, synthetic_dataset
from monai_effseg.transforms.ct import ct_preprocessing

REGIONS = {
    "kits": {"kidney+masses": (1, 2, 3), "tumour": (2,), "kidney only": (1,)},
    "lits": {"liver+tumour": (1, 2), "tumour": (2,)},
}


def time_generation(root: Path, num_cases: int) -> dict[str, float]:
    timings = {}
    for kind, options in (("kits", {"cysts": True}), ("lits", {})):
        start = time.perf_counter()
        path = synthetic_dataset(kind, num_cases=num_cases, root=root, **options)
        timings[f"generate_{kind}_{num_cases}_s"] = time.perf_counter() - start
        start = time.perf_counter()
        compute_fingerprint(build_datalist(path))
        timings[f"fingerprint_{kind}_{num_cases}_s"] = time.perf_counter() - start
    return timings


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * (pred & truth).sum() / total)


def train(kind: str, root: Path, iterations: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    num_classes = 4 if kind == "kits" else 3
    options = {"cysts": True} if kind == "kits" else {}
    train_items = build_datalist(synthetic_dataset(kind, num_cases=20, root=root, seed=0, **options))
    test_items = build_datalist(synthetic_dataset(kind, num_cases=6, root=root, seed=1000, **options))
    fingerprint = compute_fingerprint(train_items, num_classes=num_classes)
    preprocessing = ct_preprocessing(fingerprint)
    patch = (64, 64, 32)
    augment = Compose(
        [
            RandCropByPosNegLabeld(("image", "label"), "label", patch, pos=2, neg=1, num_samples=2),
            RandFlipd(("image", "label"), prob=0.5, spatial_axis=2),
        ]
    )
    cached = CacheDataset(train_items, preprocessing, num_workers=0, progress=False)
    loader = DataLoader(CacheDataset(cached, augment, cache_rate=0.0), batch_size=2, shuffle=True, num_workers=0)
    net = UNet(3, 1, num_classes, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=iterations)
    start, step = time.perf_counter(), 0
    while step < iterations:
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(net(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 50 == 0:
                print(f"iteration {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
            if step >= iterations:
                break
    train_s = time.perf_counter() - start
    net.eval()
    scores: dict[str, list[float]] = {name: [] for name in REGIONS[kind]}
    with torch.no_grad():
        for item in test_items:
            data = preprocessing(item)
            logits = sliding_window_inference(data["image"][None], patch, 4, net, overlap=0.25, mode="gaussian")
            pred = logits.argmax(1)[0].numpy()
            truth = data["label"][0].numpy().astype(int)
            for name, labels in REGIONS[kind].items():
                scores[name].append(dice(np.isin(pred, labels), np.isin(truth, labels)))
    result = {f"train_{iterations}_iterations_s": train_s}
    result.update({f"heldout_dice_{name}": float(np.mean(values)) for name, values in scores.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--train", choices=("kits", "lits"))
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = time_generation(Path(tmp) / "timing", args.cases)
        if args.train:
            results.update(train(args.train, Path(tmp) / "train", args.iterations, args.threads))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

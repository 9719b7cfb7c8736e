"""run_all.py's ``inference`` section: whole-CT inference of every bundle's ``inference.json`` (through
``monai_effseg.workflows.run_bundle``: load, preprocessing, sliding window, inversion, post-processing, writing) on
one CT of a given grid (tests/data/abdomen_ct_3mm resampled, ``bench_real_ct.CT``), with the demo model (the demo
overlay's network and fingerprint, fresh seeded weights) or the paper-size network, timed (wall and CPU seconds).

``bench_real_ct.run`` times the paper-size network on the CT as it is; this section needs the demo network's
overrides, a resampled CT, a device and the CPU time, so it builds its own run from the same steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_demo import device_overrides
from bench_real_ct import CT as CT_SOURCE
from report_format import cpu_seconds, error_message, log_tail, redirect_output

REPO = Path(__file__).resolve().parents[1]


def make_ct(
    path: Path,
    shape: Sequence[int],
    spacing: Sequence[float],
    sources: Sequence[Path] | None = None,
    order: int = 1,
    fill: float = -1024.0,
) -> dict:
    """A CT of ``shape`` (x, y, z) at ``spacing`` mm, RAS, int16 HU: tests/data/abdomen_ct_3mm resampled (linear)
    and centre-cropped / padded with air, or, where that file is missing, a synthetic body ellipse with kidneys.
    ``sources`` (summed), ``order`` and ``fill`` put other images of that CT on the same grid (its masks:
    ``order=0, fill=0``)."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    shape, spacing = tuple(int(v) for v in shape), tuple(float(v) for v in spacing)
    sources = [CT_SOURCE] if sources is None else list(sources)
    if all(Path(f).is_file() for f in sources):
        images = [nib.as_closest_canonical(nib.load(str(f))) for f in sources]
        data = sum(np.asanyarray(i.dataobj).astype(np.float32) for i in images)
        zoom = [z / s for z, s in zip(images[0].header.get_zooms()[:3], spacing)]
        data = ndimage.zoom(data, zoom, order=order)
        out = np.full(shape, fill, dtype=np.float32)
        src_sl, dst_sl = [], []
        for n_src, n_dst in zip(data.shape, shape):
            if n_src >= n_dst:
                start = (n_src - n_dst) // 2
                src_sl.append(slice(start, start + n_dst))
                dst_sl.append(slice(0, n_dst))
            else:
                start = (n_dst - n_src) // 2
                src_sl.append(slice(0, n_src))
                dst_sl.append(slice(start, start + n_src))
        out[tuple(dst_sl)] = data[tuple(src_sl)]
        source = ", ".join(f"{Path(f).relative_to(REPO)} (3 mm, resampled)" for f in sources)
    else:
        rng = np.random.default_rng(0)
        x, y = np.ogrid[: shape[0], : shape[1]]
        body = ((x - shape[0] / 2) / (0.45 * shape[0])) ** 2 + ((y - shape[1] / 2) / (0.38 * shape[1])) ** 2 <= 1
        out = np.broadcast_to(np.where(body, 40.0, -1000.0)[..., None], shape).astype(np.float32).copy()
        for cx in (0.32, 0.68):
            kidney = ((x - cx * shape[0]) / (0.06 * shape[0])) ** 2 + ((y - 0.62 * shape[1]) / (0.08 * shape[1])) ** 2
            out[kidney[..., None].repeat(shape[2], 2) <= 1] = 180.0
        out += rng.normal(0, 15, size=shape).astype(np.float32)
        source = "synthetic body ellipse with two kidneys"
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    image = nib.Nifti1Image(np.clip(out, -1024, 3071).astype(np.int16), affine)
    image.set_data_dtype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return {"source": source, "shape": list(shape), "spacing": list(spacing), "file": str(path)}


class WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 20:
            self.messages.append(f"{record.name}: {record.getMessage()}"[:300])


def inference_overrides(bundle: str, net: str, ckpt_dir: Path) -> dict:
    """``inference.json`` overrides for the ``demo`` network (the demo overlay's ``demo_inference_overrides``, with
    its checkpoint and fingerprint in ``ckpt_dir``) or the ``paper`` network; mirror TTA off."""
    from monai.bundle import ConfigParser

    root = REPO / "bundles" / bundle
    overrides: dict = {}
    if net == "demo":
        demo = ConfigParser()
        demo.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "demo.json")])
        demo.update({"bundle_root": str(root), "ckpt_dir": str(ckpt_dir)})
        overrides = dict(demo.get_parsed_content("demo_inference_overrides"))
    if "mirror_axes" in json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8")):
        overrides["mirror_axes"] = []
    return overrides


def demo_fingerprint(bundle: str, work: Path) -> None:
    """Write ``work/fingerprint.json`` as the bundle's demo training does (from its synthetic training split)."""
    from monai.bundle import ConfigParser

    root = REPO / "bundles" / bundle
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "demo.json")])
    parser.update({"bundle_root": str(root), "ckpt_dir": str(work), "output_dir": str(work)})
    parser.get_parsed_content("data_fingerprint" if "data_fingerprint" in parser else "fingerprint")


def prepare_inference(bundle: str, net: str, work: Path, device: str) -> dict:
    """Fresh seeded weights of the ``net`` network (``demo`` or ``paper``) in ``work/model.pt``, and the
    ``inference.json`` overrides that run them (with the demo's fingerprint where the bundle uses one)."""
    import torch
    from monai.bundle import ConfigParser

    root = REPO / "bundles" / bundle
    overrides = inference_overrides(bundle, net, work)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root), **overrides})
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), work / "model.pt")
    del parser
    overrides["ckpt_path"] = str(work / "model.pt")
    if "fingerprint_path" in json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8")):
        if net == "demo":
            demo_fingerprint(bundle, work)  # what the demo's training writes next to its checkpoint
            overrides["fingerprint_path"] = str(work / "fingerprint.json")
        else:
            overrides["fingerprint_path"] = str(work / "no_fingerprint.json")  # the published default
    overrides.update(device_overrides(device))
    return overrides


def run_inference(bundle: str, scans: Path, ctx: Any) -> dict:
    """One timed ``inference.json`` run of ``bundle`` over ``scans`` (one CT), and the output's geometry."""
    from monai_effseg.workflows import run_bundle

    s, root = ctx.settings, REPO / "bundles" / bundle
    work = ctx.work / "inference" / bundle
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    overrides = prepare_inference(bundle, s.inference_net, work, s.device)
    warnings = WarningCollector()
    logging.getLogger("monai_effseg").addHandler(warnings)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), cpu_seconds()
    try:
        with redirect_output(ctx.log_file(f"inference_{bundle}")):
            workflow = run_bundle(root, ["inference.json"], "inference", input_dir=str(scans),
                                  output_dir=str(work / "segs"), **overrides)  # fmt: skip
    finally:
        logging.getLogger("monai_effseg").removeHandler(warnings)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    row = {"bundle": bundle, "network": s.inference_net, **network_facts(workflow, "fingerprint_path" in overrides),
           "wall_s": wall, "cpu_s": cpu, "load_before": load_before, "load_after": os.getloadavg()[0],
           "warnings": warnings.messages}  # fmt: skip
    row.update(output_geometry(sorted(scans.glob("*.nii.gz"))[0], work / "segs"))
    shutil.rmtree(work / "segs", ignore_errors=True)
    return row


def network_facts(workflow: Any, uses_fingerprint: bool) -> dict:
    """Parameter count of the workflow's network and the spacing of its fingerprint (where it has one)."""
    try:
        params = sum(p.numel() for p in workflow.parser.get_parsed_content("network").parameters())
    except Exception:  # noqa: BLE001
        params = None
    spacing = None
    if uses_fingerprint:
        with contextlib.suppress(Exception):
            spacing = workflow.parser.get_parsed_content("fingerprint").get("spacing")
    return {"params": params, "spacing": spacing}


def output_geometry(scan: Path, segs: Path) -> dict:
    """How many label maps were written, and whether the first has the input's shape and affine, its labels."""
    import nibabel as nib
    import numpy as np

    outputs = sorted(segs.rglob("*.nii*"))
    row: dict = {"outputs": len(outputs)}
    if outputs:
        src, seg = nib.load(str(scan)), nib.load(str(outputs[0]))
        labels = np.unique(np.asanyarray(seg.dataobj))
        row.update(shape_equal=seg.shape == src.shape, affine_equal=bool(np.allclose(seg.affine, src.affine)),
                   labels=[int(v) for v in labels[:10]])  # fmt: skip
    return row


def measure_inference(ctx: Any) -> dict:
    s = ctx.settings
    scans = ctx.work / "inference" / "scans"
    ct = make_ct(scans / "ct_512x512x100.nii.gz" if not s.quick else scans / "ct_quick.nii.gz", s.ct_shape,
                 s.ct_spacing)  # fmt: skip
    ctx.log(f"inference input: {ct['shape']} at {ct['spacing']} mm from {ct['source']}")
    rows = []
    for bundle in s.bundles:
        if ctx.past_hard_limit(margin_s=60.0):
            rows.append({"bundle": bundle, "error": "skipped: the run reached its time limit "
                         f"({s.hard_limit_s / 60:g} min)"})  # fmt: skip
            ctx.log(f"inference {bundle}: skipped (time limit)")
            continue
        try:
            rows.append(run_inference(bundle, scans, ctx))
            ctx.log(f"inference {bundle}: {rows[-1]['wall_s']:.1f} s")
        except Exception as exc:  # noqa: BLE001
            rows.append({"bundle": bundle, "error": error_message(exc), "traceback": traceback.format_exc()[-3000:],
                         "log_tail": log_tail(ctx.log_file(f"inference_{bundle}"))})  # fmt: skip
            ctx.log(f"inference {bundle} failed: {exc}")
    return {"ct": ct, "network": s.inference_net, "threads": s.threads, "device": s.device, "rows": rows}

"""Issue 30: what the KiTS bundles learn about tumours on the realistic dataset (real KiTS19 label geometry) within a
2-core CPU budget, and why tumours are hard to learn there.

``--patches N`` (the why): on the realistic demo's training cases after the bundle's preprocessing, N training
patches drawn with each foreground sampling (``per_voxel``: MONAI's ``RandCropByPosNegLabeld``, forced centres on
any foreground voxel; ``per_class``: nnU-Net's, the class drawn uniformly among those present): the share of patches
centred on tumour, holding any tumour, and tumour's share of all patch voxels; with the data's tumour share of the
kidney region, tumour-to-kidney contrast and tumour size at the training spacing.

``--bundles B --minutes 10 30 60`` (the learning curve): ``train.json`` + ``demo.json`` with ``demo_dataset``
``realistic`` (the demo's patch, widths and batch; 20 training cases from 7 patients), trained for the largest budget
on ``--threads`` threads. The clock counts training only (validation runs are excluded, as in the time-to-Dice
benchmark). After every epoch the epoch count is fitted to the budget left, so the polynomial learning-rate
schedule ends with it. A staged bundle (``kits_unet_cascade``) trains its stages in turn as its demo does, each for an
equal share of the largest budget; its marks count every stage, and a mark inside the first stage is skipped
(``--minutes 40 60``: stage 1 for 30 minutes, stage 2's weights at 10 and 30). The weights at each budget mark
are saved and evaluated afterwards on the hold-out cases (6 cases from the 3 patients the training never sees;
``inference.json``, mirror TTA off): hold-out kidney (kidney and mass) and tumour Dice; the last weights also on the
20 training cases (seen patients: learnt but not carried over to new patients, or not learnt at all). Results go
to ``--json`` (default ``docs/real_anatomy.json``, rows keyed by bundle, sampling, schedule and budget), the figure
``docs/figures/real_anatomy.png`` and the results blocks of the KiTS bundle READMEs and docs/realistic_data.md.

    python benchmarks/bench_real_anatomy.py --patches 600 [--bundles kits_nnunet_baseline]
    python benchmarks/bench_real_anatomy.py --bundles kits_nnunet_baseline --minutes 10 30 60 [--sampling per_class]
        [--tumour-paste 0.5] [--amp on|off] [--cases 60] [--seed 1]
    python benchmarks/bench_real_anatomy.py --report-only
    python benchmarks/bench_real_anatomy.py --false-components WORK/B/training_cases/predictions CASES_DIR
    python benchmarks/bench_real_anatomy.py --bundles B --grad-norms WORK/B/stage1/weights_30min.pt ... [--batches 30]

``--grad-norms`` (how often a clip norm acts): the global gradient norm of saved weights on ``--batches`` training
batches of the bundle's realistic demo pipeline (its loss, its autocast; no optimizer step), and the share above
nnU-Net's clip norm, 12.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_format as rf  # noqa: E402
from bench_demo import count_stages  # noqa: E402
from training_clock import TrainingClock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "real_anatomy.json"
FIGURE = REPO / "docs" / "figures" / "real_anatomy.png"
# the kidney figure: KiTS21's "kidney and masses", or KiTS19's kidney (kidney and tumour together)
KIDNEY = {"kits21": "kidney_and_mass_dice", "kits19": "kidney_dice"}
TUMOUR = "tumor_dice"


def realistic_workflow(
    bundle: str, work: Path, sampling: str, tumour_paste: float = 0.0, amp: str = "bundle", cases: int = 0,
    seed: int = 0, **overrides,
):  # fmt: skip
    """The bundle's ``train.json`` + ``demo.json`` on the realistic dataset, initialized; ``seed`` re-seeds the
    training (weights, patches, augmentation) after the config's own ``set_determinism(seed=0)``, the data stay
    the same."""
    from monai.utils import set_determinism

    from monai_effseg.workflows import bundle_workflow

    literals = {"demo_dataset": "realistic", "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval")}
    overrides = {"train#random_transforms#foreground_sampling": sampling, **overrides}
    if tumour_paste:
        overrides["train#random_transforms#tumour_paste_prob"] = tumour_paste
    if amp != "bundle":
        literals["amp"] = amp == "on"
    if cases:
        literals["demo_cases"] = cases
    workflow = bundle_workflow(REPO / "bundles" / bundle, ["train.json", "demo.json"], "train", literals=literals,
                               **overrides)  # fmt: skip
    workflow.initialize()
    if seed:
        set_determinism(seed=seed)
    return workflow


def data_stats(train_dir: Path) -> dict:
    cases = json.loads((train_dir / "realistic.json").read_text(encoding="utf-8"))["cases"]
    fraction = [c["tumour_fraction"] for c in cases]
    contrast = [abs(c["tumour_contrast_hu"]) for c in cases]
    return {"cases": len(cases), "tumour_fraction_median": float(np.median(fraction)),
            "tumour_fraction_range": [min(fraction), max(fraction)], "contrast_hu_median": float(np.median(contrast)),
            "contrast_hu_range": [min(contrast), max(contrast)]}  # fmt: skip


def patch_stats(bundle: str, n: int, work: Path) -> dict:
    """Tumour in ``n`` training patches per foreground sampling, and the training data's tumours."""
    out = {}
    for sampling in ("per_voxel", "per_class"):
        workflow = realistic_workflow(bundle, work / sampling, sampling, num_workers=0)
        dataset = workflow.parser.get_parsed_content("train#dataset")
        centred = holding = 0
        tumour_voxels = all_voxels = 0
        for i in range(n):
            item = dataset[i % len(dataset)]
            label = np.asarray((item[0] if isinstance(item, list) else item)["label"])[0]
            centre = tuple(s // 2 for s in label.shape)
            centred += int(label[centre] == 2)
            holding += int((label == 2).any())
            tumour_voxels += int((label == 2).sum())
            all_voxels += label.size
        out[sampling] = {"patches": n, "centred_on_tumour": centred / n, "holding_tumour": holding / n,
                         "tumour_voxel_share": tumour_voxels / all_voxels}  # fmt: skip
        if "data" not in out:
            out["data"] = data_stats(Path(workflow.parser.get_parsed_content("dataset_dir")))
        workflow.finalize()
    return out


class BudgetSnapshots:
    """Fit a trainer's epochs (and its LR schedule) to the largest budget as it runs; save the network's weights when
    the training clock passes each budget mark (the last one, or the run's end, stops it)."""

    def __init__(
        self, trainer, evaluator, network, scheduler, marks_min: list[float], work: Path, protocol: str
    ) -> None:
        from ignite.engine import Events

        self.protocol = protocol
        self.clock = TrainingClock(trainer, evaluator)
        self.trainer, self.network, self.scheduler, self.work = trainer, network, scheduler, work
        work.mkdir(parents=True, exist_ok=True)
        self.pending = sorted(marks_min)
        self.budget_s = 60.0 * self.pending[-1]
        self.snapshots: list[dict] = []
        self.validations: list[dict] = []
        self.epoch_end = [0.0]
        self.clock.on_validation(self.record)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.fit)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.snap)
        trainer.add_event_handler(Events.COMPLETED, self.finish)

    def fit(self, engine) -> None:
        """From epoch 2 on, after every epoch: the epochs that fit the budget at the mean epoch time since epoch 1
        (the first one warms up), as the trainer's and the schedule's length; the schedule's last epoch is the one
        that reaches the budget."""
        now = self.clock.training_seconds()
        if engine.state.epoch == 1:
            self.epoch_end[0] = now
            return
        epoch_s = (now - self.epoch_end[0]) / (engine.state.epoch - 1)
        planned = max(engine.state.epoch + 1, round(engine.state.epoch + (self.budget_s - now) / epoch_s))
        if planned != engine.state.max_epochs:
            engine.state.max_epochs = self.scheduler.total_iters = planned
            print(f"epoch {engine.state.epoch}: {epoch_s:.1f} s of training per epoch; {planned} epochs fit "
                  f"{self.budget_s / 60:g} min", flush=True)  # fmt: skip

    def record(self, evaluator, train_s: float) -> None:
        metrics = evaluator.state.metrics
        self.validations.append({"epoch": self.trainer.state.epoch, "train_s": round(train_s, 1),
                                 "kidney_dice": round(float(metrics[f"val_kits_dice_{KIDNEY[self.protocol]}"]), 4),
                                 "tumour_dice": round(float(metrics[f"val_kits_dice_{TUMOUR}"]), 4)})  # fmt: skip

    def save(self, engine, mark: float) -> None:
        from monai_effseg.data import atomic_path

        path = self.work / f"weights_{mark:g}min.pt"
        with atomic_path(path) as tmp:
            torch.save(self.network.state_dict(), tmp)
        self.snapshots.append({"minutes": mark, "train_s": round(self.clock.training_seconds(), 1),
                               "epoch": engine.state.epoch, "iteration": engine.state.iteration, "path": str(path)})  # fmt: skip
        print(f"budget {mark:g} min: weights of epoch {engine.state.epoch} saved", flush=True)

    def snap(self, engine) -> None:
        while self.pending and self.clock.training_seconds() >= 60.0 * self.pending[0]:
            self.save(engine, self.pending.pop(0))
        if not self.pending:
            engine.terminate()

    def finish(self, engine) -> None:
        while self.pending:  # the fitted epochs ended before the clock reached the mark
            self.save(engine, self.pending.pop(0))


def timed_stage(
    bundle: str, work: Path, sampling: str, marks: list[float], stage: int = 1, tumour_paste: float = 0.0,
    amp: str = "bundle", cases: int = 0, seed: int = 0,
) -> dict:  # fmt: skip
    """Train stage ``stage`` (``train.json`` + ``demo.json``; checkpoints in ``work/models``, where a later stage
    finds the earlier ones) on the training clock, its epochs fitted to ``max(marks)`` minutes, saving the
    network's weights at each mark under ``work/stage<stage>``."""
    workflow = realistic_workflow(bundle, work, sampling, tumour_paste, amp, cases, seed,
                                  **({"stage": stage} if stage > 1 else {}))  # fmt: skip
    parse = workflow.parser.get_parsed_content
    trainer, evaluator = parse("train#trainer"), parse("validate#evaluator")
    snapshots = BudgetSnapshots(trainer, evaluator, parse("network"), parse("lr_scheduler"), marks,
                                work / f"stage{stage}", parse("eval_protocol"))  # fmt: skip
    start = time.perf_counter()
    trainer.run()
    run = {"snapshots": snapshots.snapshots, "validations": snapshots.validations,
           "planned_epochs": int(trainer.state.max_epochs), "wall_s": time.perf_counter() - start,
           "setup": {"inference": dict(parse("demo_inference_overrides")), "protocol": parse("eval_protocol")},
           "holdout_dir": parse("holdout_dir"), "training_dir": parse("dataset_dir"),
           "autocast": str(trainer.autocast_dtype).removeprefix("torch.") if trainer.autocast_dtype else "-",
           "demo_cases": int(parse("demo_cases")), "grad_clip_norm": parse("grad_clip_norm")}  # fmt: skip
    workflow.finalize()
    return run


def learning_curve(
    bundle: str, minutes: list[float], sampling: str, work: Path, tumour_paste: float = 0.0, amp: str = "bundle",
    cases: int = 0, seed: int = 0,
) -> list[dict]:  # fmt: skip
    """One run fitted to ``max(minutes)``, its weights at each mark evaluated on the hold-out cases. A staged bundle
    (the cascade) gives each stage an equal share of the budget, trained one after the other as its demo does;
    the marks then fall in the last stage (a mark before it has no network to evaluate)."""
    stages = count_stages(bundle)
    if rf.bundle_kind(bundle) == "lits":
        raise SystemExit(f"{bundle}: this benchmark trains on the realistic KiTS dataset")
    share = max(minutes) / stages
    earlier_s, wall_s = 0.0, 0.0
    for stage in range(1, stages):  # stage 1 of the cascade: its best model.pt is what the next stage trains on
        run = timed_stage(bundle, work, sampling, [share], stage, tumour_paste, amp, cases, seed)
        earlier_s += run["snapshots"][-1]["train_s"]
        if not (work / "models" / "model.pt").is_file():
            raise SystemExit(f"{bundle}: stage {stage} was never validated in {share:g} min; give it more minutes")
        wall_s += run["wall_s"]
    marks = [m - share * (stages - 1) for m in minutes if m > share * (stages - 1)]
    run = timed_stage(bundle, work, sampling, marks, stages, tumour_paste, amp, cases, seed)
    rows = []
    for snap in run["snapshots"]:
        budget = snap["minutes"] + share * (stages - 1)
        scores = evaluate_weights(
            bundle, snap["path"], run["holdout_dir"], work / f"holdout_{budget:g}min", run["setup"]
        )
        rows.append({"bundle": bundle, "sampling": sampling, "schedule_min": max(minutes), "budget_min": budget,
                     "train_s": round(earlier_s + snap["train_s"], 1), "epoch": snap["epoch"],
                     "iteration": snap["iteration"], **scores, "planned_epochs": run["planned_epochs"],
                     "run_wall_s": round(wall_s + run["wall_s"], 1), "stages": stages,
                     "tumour_paste": tumour_paste, "cpu": rf.cpu_model(), "patches_reach_border": True,
                     "autocast": run["autocast"], "demo_cases": run["demo_cases"], "seed": seed,
                     "grad_clip_norm": run["grad_clip_norm"]})  # fmt: skip
    # the same weights on the cases they were trained on: learnt but not carried over to unseen patients, or not learnt
    last = run["snapshots"][-1]["path"]
    rows[-1]["training_cases"] = evaluate_weights(
        bundle, last, run["training_dir"], work / "training_cases", run["setup"]
    )
    rows[-1]["validation_history"] = run["validations"]  # validation cases: the training patients, no post-processing
    return rows


def evaluate_weights(bundle: str, weights: str, cases_dir: str, out: Path, setup: dict) -> dict:
    """Hold-out kidney (kidney and mass) and tumour Dice of ``weights`` on ``cases_dir`` (``inference.json``)."""
    from monai_effseg.workflows import evaluate_holdout

    summary = evaluate_holdout(REPO / "bundles" / bundle, cases_dir, out, protocol=setup["protocol"],
                               overrides={**setup["inference"], "ckpt_path": weights})  # fmt: skip
    metrics = summary["metrics"]
    return {"kidney_dice": round(metrics[KIDNEY[setup["protocol"]]]["mean"], 4), "tumour_dice": round(metrics[TUMOUR]["mean"], 4),
            "tumour_dice_per_case": [round(v, 4) for v in per_case(out, "tumor_dice")]}  # fmt: skip


def per_case(out: Path, column: str) -> list[float]:
    import csv

    with open(out / "metrics_per_case.csv", newline="", encoding="utf-8") as f:
        return [float(row[column]) for row in csv.DictReader(f) if row.get(column) not in (None, "", "nan")]


class RunKey(NamedTuple):
    """One training run: the bundle, its patch sampling, the budget its schedule was fitted to, its tumour
    copy-paste probability, the CPU it ran on, whether its patches reached the volume's border (runs before that fix
    did not), the dtype its network's forward was autocast to (``-``: float32), its number of training cases, its
    training seed and the gradient norm it clipped to (0: no clipping, as every run before the option; a number,
    so that keys sort)."""

    bundle: str
    sampling: str
    schedule_min: float
    tumour_paste: float
    cpu: str
    patches_reach_border: bool
    autocast: str
    demo_cases: int
    seed: int
    grad_clip_norm: float


def run_key(row: dict) -> RunKey:
    """The run a results row belongs to (fields a row from before they existed lacks take their value then)."""
    return RunKey(row["bundle"], row["sampling"], row["schedule_min"], row.get("tumour_paste", 0.0),
                  row.get("cpu", ""), row.get("patches_reach_border", False), row.get("autocast", "-"),
                  row.get("demo_cases", 20), row.get("seed", 0), row.get("grad_clip_norm") or 0.0)  # fmt: skip


def grad_norms(bundle: str, weights: list[Path], batches: int, work: Path, amp: str = "bundle") -> None:
    """Per weights file: the global gradient norm on ``batches`` training batches (no step), as the trainer sees it
    before clipping."""
    workflow = realistic_workflow(bundle, work, "per_class", amp=amp, num_workers=0)
    parse = workflow.parser.get_parsed_content
    trainer, network, loss = parse("train#trainer"), parse("network"), parse("loss")
    print(f"{'weights':60s} {'batches':>7s} {'median':>7s} {'p90':>7s} {'max':>7s} {'> 12':>6s}")
    for path in weights:
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        network.train()
        norms = []
        while len(norms) < batches:  # one pass of the loader is one draw per training case
            for batch in trainer.data_loader:
                network.zero_grad(set_to_none=True)
                loss(trainer.inferer(batch["image"], network), batch["label"]).backward()
                norms.append(float(torch.nn.utils.clip_grad_norm_(network.parameters(), float("inf"))))
                if len(norms) == batches:
                    break
        q = np.quantile(norms, [0.5, 0.9])
        print(f"{str(path)[-60:]:60s} {len(norms):7d} {q[0]:7.2f} {q[1]:7.2f} {max(norms):7.2f} "
              f"{np.mean(np.array(norms) > 12):6.1%}", flush=True)  # fmt: skip
    workflow.finalize()


def false_components(predictions: Path, cases: Path, min_voxels: int = 50) -> None:
    """Per case of ``cases`` (a realistic dataset folder), the connected components of its prediction in
    ``predictions`` (a run's ``training_cases/predictions`` or ``holdout_*/predictions``): voxels, the share labelled
    kidney (the rest tumour) and the share inside the reference's kidney or tumour; a component with share 0 is a
    false one."""
    import nibabel as nib
    from scipy import ndimage

    files = sorted(predictions.glob("*.nii.gz"))
    false_cases = 0
    for file in files:
        case = file.name[: -len(".nii.gz")]
        pred = np.asarray(nib.load(str(file)).dataobj).astype(np.int64)
        ref = np.asarray(nib.load(str(cases / case / "segmentation.nii.gz")).dataobj)
        components, n = ndimage.label(pred > 0, np.ones((3,) * pred.ndim))
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        parts = [(int(sizes[index]), float((pred[mask] == 1).mean()), float((ref[mask] > 0).mean()))
                 for index in range(1, n + 1) if sizes[index] >= min_voxels
                 for mask in [components == index]]  # fmt: skip
        false_cases += any(inside == 0 for *_, inside in parts)
        print(f"{case}: " + ", ".join(f"{v} voxels ({k:.0%} kidney, {i:.0%} in the reference)" for v, k, i in parts))
    print(f"{false_cases} of {len(files)} cases have a component wholly outside the reference")


def merge_results(rows: list[dict], path: Path, threads: int) -> dict:
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"rows": []}
    keys = {run_key(r) + (r["budget_min"],) for r in rows}
    kept = [r for r in results["rows"] if run_key(r) + (r["budget_min"],) not in keys]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    results["rows"] = sorted(kept + [{**r, "measured_at": stamp, "threads": threads} for r in rows],
                             key=lambda r: run_key(r) + (r["budget_min"],))  # fmt: skip
    results["command"] = "python benchmarks/bench_real_anatomy.py --bundles B --minutes 10 30 60"
    rf.write_atomic(path, json.dumps(results, indent=2) + "\n")
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for run in sorted({run_key(r) for r in results["rows"]}):
        rows = [r for r in results["rows"] if run_key(r) == run]
        label = (f"{run.bundle} ({run.sampling.replace('_', ' ')}, schedule {run.schedule_min:g} min"
                 + (f", tumour paste {run.tumour_paste:g}" if run.tumour_paste else "")
                 + (", bf16" if run.autocast == "bfloat16" else "")
                 + (f", {run.demo_cases} cases" if run.demo_cases != 20 else "")
                 + (f", seed {run.seed}" if run.seed else "")
                 + (f", clip {run.grad_clip_norm:g}" if run.grad_clip_norm else "") + ")")  # fmt: skip
        for ax, key in zip(axes, ("kidney_dice", "tumour_dice")):
            ax.plot([r["budget_min"] for r in rows], [r[key] for r in rows], marker="o", label=label)
    for ax, title, bar in zip(axes, ("hold-out kidney Dice", "hold-out tumour Dice"), (0.90, 0.50)):
        ax.axhline(bar, color="grey", linestyle="--", linewidth=0.8)
        ax.set(title=title, xlabel="training minutes (2-core CPU)", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def print_patch_stats(bundle: str, stats: dict) -> None:
    data = stats["data"]
    print(f"{bundle}: {data['cases']} training cases; tumour share of the kidney region median "
          f"{data['tumour_fraction_median']:.1%} (range {data['tumour_fraction_range'][0]:.1%}-"
          f"{data['tumour_fraction_range'][1]:.1%}); |tumour - kidney| contrast median {data['contrast_hu_median']:.0f} "
          f"HU (range {data['contrast_hu_range'][0]:.0f}-{data['contrast_hu_range'][1]:.0f})")  # fmt: skip
    print(f"{'sampling':10s} {'patches':>7s} {'centred on tumour':>17s} {'holding tumour':>14s} {'tumour voxels':>13s}")
    for sampling in ("per_voxel", "per_class"):
        r = stats[sampling]
        print(f"{sampling:10s} {r['patches']:7d} {r['centred_on_tumour']:17.1%} {r['holding_tumour']:14.1%} "
              f"{r['tumour_voxel_share']:13.2%}")  # fmt: skip


def report(results: dict) -> None:
    """The figure, and the results blocks of the KiTS bundle READMEs and docs/realistic_data.md."""
    if results["rows"]:
        plot(results, FIGURE)
    rf.render_bundle_docs(REPO, sorted(p.name for p in (REPO / "bundles").glob("kits_*")))


def print_table(rows: list[dict]) -> None:
    print(f"{'bundle':22s} {'sampling':10s} {'schedule':>8s} {'budget':>6s} {'trained s':>9s} {'epoch':>5s} "
          f"{'kidney':>7s} {'tumour':>7s}")  # fmt: skip
    for r in rows:
        print(f"{r['bundle']:22s} {r['sampling']:10s} {r['schedule_min']:8g} {r['budget_min']:6g} "
              f"{r['train_s']:9.0f} {r['epoch']:5d} {r['kidney_dice']:7.3f} {r['tumour_dice']:7.3f}")  # fmt: skip
    seen = rows[-1].get("training_cases") if rows else None
    if seen:
        print(f"last weights on the training cases: kidney {seen['kidney_dice']:.3f}, tumour {seen['tumour_dice']:.3f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=["kits_nnunet_baseline"])
    parser.add_argument("--minutes", nargs="+", type=float, default=[10.0, 30.0, 60.0])
    parser.add_argument("--sampling", choices=("per_class", "per_voxel"), default="per_class")
    parser.add_argument(
        "--tumour-paste",
        type=float,
        default=0.0,
        help="TumorCP: probability of pasting another case's tumour into each training case",
    )
    parser.add_argument(
        "--amp",
        choices=("bundle", "on", "off"),
        default="bundle",
        help="train with autocast (bf16 on the CPU) or not; default: the bundle's own choice for this machine",
    )
    parser.add_argument(
        "--cases", type=int, default=0, help="realistic training cases (demo_cases); default: the demo's own"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed (weights, patches, augmentation); 0: the bundle's own"
    )
    parser.add_argument("--grad-norms", nargs="+", type=Path, metavar="WEIGHTS",
                        help="print the gradient norms of these saved weights on training batches and stop")  # fmt: skip
    parser.add_argument("--batches", type=int, default=30, help="training batches per weights file (--grad-norms)")
    parser.add_argument("--patches", type=int, default=0, help="draw this many patches per sampling and stop")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the runs (weights, predictions) here")
    parser.add_argument("--report-only", action="store_true", help="re-render the figure and the docs' blocks")
    parser.add_argument(
        "--false-components",
        nargs=2,
        type=Path,
        metavar=("PREDICTIONS", "CASES"),
        help="list each prediction's connected components against the reference and stop",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.false_components:
        false_components(*args.false_components)
        return
    if args.report_only:
        report(json.loads(args.json.read_text(encoding="utf-8")))
        return
    with tempfile.TemporaryDirectory(prefix="real_anatomy_") as tmp:
        tmp = args.work_dir or tmp
        if args.grad_norms:
            grad_norms(args.bundles[0], args.grad_norms, args.batches, Path(tmp) / "grad_norms", args.amp)
            return
        if args.patches:
            for bundle in args.bundles:
                print_patch_stats(bundle, patch_stats(bundle, args.patches, Path(tmp) / bundle))
            return
        rows = []
        for bundle in args.bundles:
            rows += learning_curve(bundle, args.minutes, args.sampling, Path(tmp) / bundle, args.tumour_paste, args.amp,
                                   args.cases, args.seed)  # fmt: skip
    print_table(rows)
    results = merge_results(rows, args.json, args.threads)
    if args.json.resolve() == RESULTS.resolve():
        report(results)


if __name__ == "__main__":
    main()

"""Regenerate ``docs/benchmarks.md``, ``docs/benchmarks.json`` and ``docs/figures/*.png`` from measurements on this
machine (issue 8, part 3).

    python benchmarks/run_all.py                          # every section (< 60 min on a 2-core CPU)
    python benchmarks/run_all.py --sections demos scatter # re-measure some sections, keep the others' saved results
    python benchmarks/run_all.py --report-only            # re-render the report and figures from benchmarks.json
    python benchmarks/run_all.py --quick                  # smoke run, tiny sizes; to /tmp/effseg_bench_quick

Sections (``--sections``; the report lists them in this order; each measured in the module named):

- ``profile`` (bench_efficientnet_profile): params and FLOPs (2 x MAC) of every registered architecture next to the
  papers' tables (Martinho's Table 1, Tustumi's Tables 4.2 / 4.3, the nnU-Net reference 31,196,384 / 0.955T).
- ``speed`` (bench_efficientnet_speed): CPU forward time of the KiTS networks at 1x1x128^3, interleaved rounds, eager
  and ``optimize_for_inference`` (what the bundles run), as a ratio to the nnU-Net baseline, next to the FLOP ratio.
- ``lite_speed`` (bench_lite): CPU time per output slice of every Tustumi preset at 256x256 (2.5D: 9 slices in, 1
  out; 3D: 8 in, 4 out), next to the thesis' Tables 4.4 / 4.5.
- ``inference`` (bench_inference): whole-CT ``inference.json`` of every bundle on a 512x512x100 CT at 0.78x0.78x3 mm
  with the demo model (fresh weights); ``--inference-net paper`` times the paper-size networks instead.
- ``demos`` (bench_demo): every bundle's CPU demo (``train.json`` + ``demo.json``, as ``effseg demo`` runs it) under
  a time cap, validating every epoch: training time until the validation Dice reaches the threshold (KiTS kidney
  0.85; LiTS liver 0.9, tumour 0.5), and the final hold-out Dice.
- ``sauron`` (bench_demo): the compression curve of the ``kits_sauron_nnunet`` demo (from this run's ``demos``
  section when it ran, else its own demo run); ``scatter`` (bench_demo): hold-out Dice against GFLOPs of each
  bundle's demo network (like Martinho's Fig. 9), from the saved ``demos`` results.
- ``gpu`` (bench_gpu): ``benchmarks/gpu_throughput.py`` when CUDA is available, else "no GPU".

Time: the demos run after every other measuring section; each demo gets at most ``--demo-budget-s`` (300 s) of
training + validation, less where needed to fit ``--time-budget-min`` (56 min); nothing starts after
``--hard-limit-min`` (60 min): it is recorded as skipped. Every section is stored with when, where and how long it was
measured (a failing one with its error; the run goes on), merged into the saved JSON; the bundle runs' own output goes
to log files in the scratch folder. This file is the runner (settings, the table of sections, the results file, the
loop); the report is rendered by ``report_sections`` and ``report_format``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the other benchmark scripts, importable as modules
import report_format as rf  # noqa: E402
import report_sections as rs  # noqa: E402

BUNDLES = ("kits_nnunet_baseline", "kits_efficientunet", "kits_residual_unet", "kits_unet_cascade", "kits_mss_unet",
           "kits_sauron_nnunet", "lits_mobilenet_unet", "lits_shufflenet_unet", "lits_dsts_unet")  # fmt: skip
SPEED_NETS = ("nnunet", "efficientunet-b0", "efficientunetv2-s", "fullyefficientunet-b0", "fullyefficientunetv2-s",
              "residual_unet_kits19", "mss_unet", "sauron_nnunet")  # fmt: skip


@dataclass
class Settings:
    quick: bool = False
    threads: int = 2
    device: str = "cpu"
    bundles: tuple[str, ...] = BUNDLES
    profile_names: Optional[tuple[str, ...]] = None  # None: every registered network
    speed_nets: tuple[str, ...] = SPEED_NETS
    speed_size: int = 128
    speed_rounds: int = 2
    speed_modes: tuple[str, ...] = ("eager", "optimized")
    lite_presets: Optional[tuple[str, ...]] = None  # None: all 21
    lite_size: int = 256
    lite_repeats: int = 3
    ct_shape: tuple[int, int, int] = (512, 512, 100)
    ct_spacing: tuple[float, float, float] = (0.78125, 0.78125, 3.0)
    inference_net: str = "demo"
    demo_budget_s: float = 300.0
    time_budget_s: float = 56 * 60.0
    hard_limit_s: float = 60 * 60.0  # nothing new starts after this (sections, bundles): recorded as skipped
    val_interval: int = 1
    demo_overrides: dict = field(default_factory=dict)
    verbose: bool = False
    gpu_script: Path = HERE / "gpu_throughput.py"

    def make_quick(self) -> None:
        """Smoke-test sizes: every section runs, in a few minutes on 2 cores."""
        self.bundles = ("kits_sauron_nnunet",)
        self.profile_names = ("nnunet", "efficientunet-b0", "mobilenetv2-2d-top", "dsts-3d-top", "mss_unet")
        self.speed_nets, self.speed_size, self.speed_rounds = ("nnunet", "efficientunet-b0"), 64, 1
        self.lite_presets, self.lite_size, self.lite_repeats = ("mobilenetv2-2d-top", "dsts-3d-top"), 64, 1
        self.ct_shape, self.ct_spacing = (128, 128, 8), (3.125, 3.125, 12.5)  # whole slices: air around the body
        self.demo_budget_s, self.time_budget_s = 15.0, 15 * 60.0


@dataclass
class Context:
    """What a section's measurement gets: settings, progress log, scratch folder, the run's clock and results."""

    settings: Settings
    log: Callable[[str], None]
    work: Path
    started: float
    results: dict  # the merged results (saved + this run)
    ran: list = field(default_factory=list)  # sections measured in this invocation
    live: dict = field(default_factory=dict)  # objects shared between this invocation's sections

    def deadline_left(self) -> float:
        return self.settings.time_budget_s - (time.perf_counter() - self.started)

    def past_hard_limit(self, margin_s: float = 0.0) -> bool:
        return time.perf_counter() - self.started + margin_s > self.settings.hard_limit_s

    def log_file(self, name: str) -> Optional[Path]:
        return None if self.settings.verbose else self.work / "logs" / f"{name}.log"


def _measure(module: str, function: str = "measure_section") -> Callable[[Context], dict]:
    """``module.function(ctx)``, imported when the section runs (``--report-only`` needs none of them)."""
    return lambda ctx: getattr(__import__(module), function)(ctx)


# (name, title, measure(ctx) -> data, render(data, figures) -> Markdown, the settings its record keeps). Measured
# and reported in this order; the demos come late so that their time caps can be sized to what is left.
SECTIONS = (
    ("profile", "Parameters and FLOPs next to the papers", _measure("bench_efficientnet_profile"), rs.render_profile,
     ("profile_names",)),
    ("speed", "CPU forward time relative to the nnU-Net baseline", _measure("bench_efficientnet_speed"),
     rs.render_speed, ("speed_nets", "speed_size", "speed_rounds", "speed_modes", "threads")),
    ("lite_speed", "Tustumi's presets: CPU time per slice", _measure("bench_lite"), rs.render_lite_speed,
     ("lite_presets", "lite_size", "lite_repeats", "threads")),
    ("inference", "Full-volume inference per bundle", _measure("bench_inference", "measure_inference"),
     rs.render_inference, ("bundles", "ct_shape", "ct_spacing", "inference_net", "threads", "device")),
    ("demos", "Demo time-to-Dice per bundle", _measure("bench_demo", "measure_demos"), rs.render_demos,
     ("bundles", "demo_budget_s", "time_budget_s", "val_interval", "demo_overrides", "threads", "device")),
    ("sauron", "Sauron compression curve", _measure("bench_demo", "measure_sauron"), rs.render_sauron,
     ("demo_budget_s", "val_interval", "threads", "device")),
    ("scatter", "Dice against FLOPs", _measure("bench_demo", "measure_scatter"), rs.render_scatter, ()),
    ("gpu", "GPU throughput", _measure("bench_gpu"), rs.render_gpu, ("gpu_script",)),
)  # fmt: skip
NAMES = tuple(name for name, *_ in SECTIONS)
REPORT = tuple((name, title, render) for name, title, _, render, _ in SECTIONS)


def load_results(path: Path) -> dict:
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("sections"), dict):
                data.setdefault("runs", [])
                return data
        except ValueError as exc:
            print(f"warning: {path} is not valid JSON ({exc}); starting afresh", file=sys.stderr)
    return {"schema": 1, "generator": "benchmarks/run_all.py", "sections": {}, "runs": []}


def save_results(results: dict, path: Path) -> None:
    rf.write_atomic(path, json.dumps(rf.clean(results), indent=1) + "\n")


def run_section(index: int, ctx: Context, results_path: Path) -> dict:
    name, title, measure, _, keys = SECTIONS[index]
    settings = {k: getattr(ctx.settings, k) for k in keys}
    record = {"section": name, "status": "running", "measured_at": rf.now_iso(), "machine": rf.machine_info(),
              "quick": ctx.settings.quick, "settings": rf.clean(settings)}  # fmt: skip
    ctx.log(f"\n=== {name}: {title} ({record['measured_at']}) ===")
    start = time.perf_counter()
    try:
        record["data"] = rf.clean(measure(ctx))
        record["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing section is recorded; the run goes on
        record.update(status="error", error=rf.error_message(exc), traceback=traceback.format_exc()[-4000:])
        ctx.log(f"section {name} FAILED: {record['error']}")
    record["elapsed_s"] = time.perf_counter() - start
    record["finished_at"] = rf.now_iso()
    record["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    ctx.results["sections"][name] = record
    ctx.ran.append(name)
    save_results(ctx.results, results_path)
    return record


def build_settings(args: argparse.Namespace) -> Settings:
    s = Settings(quick=args.quick, threads=args.threads, device=args.device, verbose=args.verbose,
                 inference_net=args.inference_net, val_interval=args.val_interval)  # fmt: skip
    if args.quick:
        s.make_quick()
    for key, value in (("bundles", args.bundles and tuple(args.bundles)), ("demo_budget_s", args.demo_budget_s),
                       ("speed_rounds", args.speed_rounds), ("speed_modes", args.speed_modes and tuple(args.speed_modes)),
                       ("gpu_script", args.gpu_script and Path(args.gpu_script).resolve())):  # fmt: skip
        if value is not None:
            setattr(s, key, value)
    s.time_budget_s = s.time_budget_s if args.time_budget_min is None else args.time_budget_min * 60.0
    s.hard_limit_s = s.hard_limit_s if args.hard_limit_min is None else args.hard_limit_min * 60.0
    for key, _, value in (item.partition("=") for item in args.demo_override or []):
        try:
            s.demo_overrides[key] = json.loads(value)
        except ValueError:
            s.demo_overrides[key] = value
    return s


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sections", nargs="+", choices=NAMES, help="default: all")
    p.add_argument("--report-only", action="store_true", help="measure nothing; re-render from the saved JSON")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 1 bundle, short budgets")
    p.add_argument("--out", help="folder for benchmarks.md, benchmarks.json and figures/ (default: docs/, or "
                   "/tmp/effseg_bench_quick with --quick)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="allow --quick results in docs/")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="device for the bundle runs (cpu, cuda, auto = the bundle's)")
    p.add_argument("--bundles", nargs="+", choices=BUNDLES, help="bundles for inference / demos")
    p.add_argument("--demo-budget-s", type=float, help="time cap per bundle demo, training + validation (default "
                   "300; quick 15)")  # fmt: skip
    p.add_argument("--time-budget-min", type=float, help="the whole run's budget; the demo caps shrink to fit it "
                   "(default 56; quick 15)")  # fmt: skip
    p.add_argument("--hard-limit-min", type=float, help="no section or bundle starts after this many minutes "
                   "(default 60); they are recorded as skipped and saved results are kept")  # fmt: skip
    p.add_argument("--val-interval", type=int, default=1, help="validate every N epochs in the demos")
    p.add_argument("--demo-override", action="append", metavar="ID=JSON",
                   help="extra bundle override for every demo training workflow, e.g. max_epochs=4")  # fmt: skip
    p.add_argument("--inference-net", choices=("demo", "paper"), default="demo",
                   help="network of the inference section: the demo overlay's (default) or the paper's")  # fmt: skip
    p.add_argument("--speed-rounds", type=int)
    p.add_argument("--speed-modes", nargs="+", choices=("eager", "optimized"))
    p.add_argument("--gpu-script", help="default benchmarks/gpu_throughput.py")
    p.add_argument("--work-dir", help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--verbose", action="store_true", help="show the bundle runs' own output")
    args = p.parse_args(argv)
    args.out = Path(args.out or ("/tmp/effseg_bench_quick" if args.quick else REPO / "docs")).resolve()
    docs = (REPO / "docs").resolve()
    if args.quick and not args.report_only and (args.out == docs or docs in args.out.parents) and not args.force:
        p.error(f"--quick would write smoke-test numbers into {args.out}; pass another --out (or --force)")
    return args


def measure(args: argparse.Namespace, results: dict, results_path: Path, log: Callable[[str], None]) -> None:
    """Measure the chosen sections into ``results`` (saved after each), recording the run."""
    import torch

    settings, started_iso, started = build_settings(args), rf.now_iso(), time.perf_counter()
    torch.set_num_threads(settings.threads)
    sections = [name for name in NAMES if name in (args.sections or NAMES)]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effseg_bench_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx, skipped = Context(settings, log, work, started, results, live={"planned": sections}), []
    log(f"run_all: sections {', '.join(sections)}{' (quick)' if settings.quick else ''}; results in {args.out}; "
        f"scratch {work}; {rf.machine_line(rf.machine_info())}")  # fmt: skip
    try:
        for name in sections:
            if ctx.past_hard_limit():
                log(f"--- {name}: not started, the run passed its {settings.hard_limit_s / 60:g}-minute limit "
                    "(its saved result, if any, is kept)")  # fmt: skip
                skipped.append(name)
                continue
            record = run_section(NAMES.index(name), ctx, results_path)
            log(f"--- {name}: {record['status']} in {record['elapsed_s']:.0f} s "
                f"(run so far {(time.perf_counter() - started) / 60:.1f} min)")  # fmt: skip
            log(rf.section_markdown(name, record, args.out / "figures", REPORT[NAMES.index(name)][2]))
    finally:
        results.setdefault("runs", []).append({
            "started": started_iso, "finished": rf.now_iso(), "elapsed_s": time.perf_counter() - started,
            "sections": ctx.ran, "quick": settings.quick, "machine": rf.machine_line(rf.machine_info()),
            "status": {n: results["sections"][n]["status"] for n in ctx.ran}, "skipped": skipped,
        })  # fmt: skip
        results["runs"] = results["runs"][-30:]
        save_results(results, results_path)
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"scratch kept: {work}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    results_path, report_path = args.out / "benchmarks.json", args.out / "benchmarks.md"
    results, log, started = load_results(results_path), rf.Console(), time.perf_counter()
    if not args.report_only:
        measure(args, results, results_path, log)
    rf.write_atomic(report_path, rf.render_report(results, args.out, REPORT))
    if args.out == (REPO / "docs").resolve():
        rf.render_bundle_docs(REPO, BUNDLES)
    elapsed = time.perf_counter() - started
    log(f"\nreport: {report_path}\nresults: {results_path}\nfigures: {args.out / 'figures'}")
    log(f"total elapsed: {elapsed / 60:.1f} min ({elapsed:.0f} s)")
    failed = [n for n, r in results["sections"].items() if r.get("status") != "ok"]
    if failed:
        log(f"sections with errors: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

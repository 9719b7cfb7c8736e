"""Formatting and bookkeeping helpers of ``run_all.py``: machine description, JSON cleaning, Markdown tables, number
formats, output redirection; the bundle READMEs' results blocks; the report page around the sections' Markdown
(``report_sections`` renders each section)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import re
import resource
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Console:
    """Progress messages on the terminal, also while a bundle run's own output goes to a log file (fd-level)."""

    def __init__(self) -> None:
        self._stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)

    def __call__(self, message: str = "") -> None:
        self._stream.write(message + "\n")
        self._stream.flush()


@contextlib.contextmanager
def redirect_output(log_file: Optional[Path]) -> Iterator[None]:
    """Send fds 1 and 2 (print, logging, progress bars) to ``log_file`` for the duration; ``None``: leave them."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "a", buffering=1) as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def log_tail(path: Optional[Path], lines: int = 25) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(errors="replace").replace("\r", "\n")
    kept = [line[:300] for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN / inf -> None, tuples -> lists, numpy / torch scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item"):
        return clean(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> Optional[int]:
    try:
        cores, current = set(), {}
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines() + [""]:
            if not line.strip():
                if current:
                    cores.add((current.get("physical id"), current.get("core id")))
                current = {}
            elif ":" in line:
                key, value = line.split(":", 1)
                current[key.strip()] = value.strip()
        return len(cores) or None
    except OSError:
        return None


def package_version(name: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def machine_info() -> dict:
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    cuda = torch.cuda.is_available()
    return {
        "date": now_iso(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "cpus_available": affinity,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": package_version("monai"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }


def machine_line(m: dict) -> str:
    cores = f"{m.get('physical_cores') or '?'} cores / {m.get('logical_cpus')} logical CPUs"
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return (f"{m.get('cpu')} ({cores}), {m.get('threads')} torch threads, torch {m.get('torch')}, "
            f"monai {m.get('monai')}{gpu}; load average {m.get('load_average')}")  # fmt: skip


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """One table cell: ``-`` for None, on one line, ``|`` escaped."""
    return "-" if value is None else " ".join(str(value).split()).replace("|", "\\|")


def error_message(exc: BaseException) -> str:
    """``Type: message`` of the innermost cause (MONAI's config errors wrap the real one), on one line, shortened."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:600]


def fm(n: Optional[float], digits: int = 3) -> str:
    return "-" if n is None else f"{n / 1e6:.{digits}f}M"


def fflops(n: Optional[float]) -> str:
    if n is None:
        return "-"
    if n >= 1e11:
        return f"{n / 1e12:.3f}T"
    if n >= 1e8:
        return f"{n / 1e9:.2f}G"
    return f"{n / 1e6:.1f}M"


def fnum(v: Optional[float], digits: int = 3, suffix: str = "") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}{suffix}"


def pct(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{v:+.{digits}f}%"


def bundle_kind(bundle: str) -> str:
    return "lits" if bundle.startswith("lits") else "kits"


# ------------------------------------------------------------------- bundle READMEs: blocks rendered from results
# A bundle README's Performance section holds one block per results file it quotes:
#     <!-- results: docs/benchmarks.json#demos/BUNDLE -->  ...rendered text...  <!-- /results -->
# ``python benchmarks/run_all.py`` (also ``--report-only``) re-renders it; tests/test_doc_figures.py fails when the
# text differs from what the cited file renders to.
RESULTS_BLOCK = re.compile(r"(<!-- results: (?P<source>[^#\s]+)#(?P<section>\w+)/(?P<bundle>[\w-]+) -->\n)"
                           r"(?P<body>.*?)(?P<end><!-- /results -->)", re.S)  # fmt: skip
DEMO_PLOT = "demo_curve.png"  # next to the README: bundles/<bundle>/docs/demo_curve.png


def demo_protocol(record: dict) -> str:
    """The label of the run_all demo protocol, used wherever its figures appear."""
    return f"capped run_all demo ({record['data']['demo_budget_s']:.0f} s cap)"


def render_bundle_demo(record: dict, bundle: str, source: str) -> str:
    """Markdown of one bundle's entry in the ``demos`` section ``record`` of the results file ``source``."""
    data, r = record["data"], record["data"]["bundles"][bundle]
    if "error" in r:
        return f"The {demo_protocol(record)} of this bundle did not finish: {cell(r['error'])}\n"
    net = r.get("demo_network", {})
    inputs = "; ".join("x".join(map(str, p["input"][1:])) for p in net.get("parts", {}).values())
    flops = fflops(net.get("pruned_flops") or net.get("flops")) + " FLOPs"
    if net.get("pruned_flops"):
        flops += f" as pruned at the end (unpruned {fflops(net['flops'])})"
    params = net.get("pruned_params") or net.get("params")
    reached = [f"{t['name']} >= {t['threshold']}: " + (f"{t['time_to_dice_s']:.0f} s (epoch {t['epoch']})"
               if t["reached"] else f"not reached (best {fnum(t['best_val_dice'])})")
               for t in r["targets"]]  # fmt: skip
    rows = [
        ["epochs run", " + ".join(f"{st['epochs']} of {st['max_epochs']}" for st in r["stages"])
         + (" (stopped by the cap)" if any(st.get("terminated") for st in r["stages"]) else "")],
        ["training / validation / hold-out evaluation (s)",
         f"{r['training_s']:.0f} / {r['validation_s']:.0f} / {r['holdout_s']:.0f}"],
        ["training time to validation Dice", "; ".join(reached)],
        ["hold-out Dice", ", ".join(f"{k} {fnum(v)}" for k, v in r["holdout_primary"].items())],
        ["demo network", f"{params:,} parameters, {flops}, input {inputs or '-'}" if params else "-"],
    ]  # fmt: skip
    m = record.get("machine", {})
    return "\n".join([
        f"**{demo_protocol(record).capitalize()}**, not the full demo: `python benchmarks/run_all.py --sections "
        f"demos` runs `train.json` + `demo.json` on synthetic phantoms with at most {r['budget_s']:.0f} s of "
        f"training + validation for this bundle, validation every {data['val_interval']} epoch(s), "
        f"{data['threads']} threads on `{data['device']}`; measured {record['measured_at'][:10]} on {m.get('cpu')}. "
        f"Rendered from `{source}` (section `demos`, `{bundle}`); `python benchmarks/run_all.py --report-only` "
        "re-renders this block and the plot.",
        "",
        md_table(["quantity", "value"], rows),
        "",
        f"![validation Dice and training loss against training time]({DEMO_PLOT})",
        "",
    ])  # fmt: skip


def precision_sentence(results: dict, rows: list[dict], mode: str) -> str:
    """Which precision ``mode``'s rows ran in (rows measured before the bf16 option say nothing). Files written
    before ``native_bf16`` was recorded ran bf16 only on AMX, the one kind of CPU the option then used."""
    ran = {r["precision"] for r in rows if r["mode"] == mode and "precision" in r}
    if ran == {"bfloat16"}:
        return (f" The {mode} path ran in bfloat16 on this CPU's {results.get('native_bf16') or 'AMX'} instructions "
                "(the overlay's `bf16_where_native`; float32 on a CPU without native bf16), the full path in "
                "float32.")  # fmt: skip
    return f" The {mode} path ran in {', '.join(sorted(ran))}." if ran else ""


def render_bundle_fast(results: dict, bundle: str, source: str) -> str:
    """Markdown of one bundle's rows of ``benchmarks/bench_fast_ct.py``'s results file ``source``: both paths' time
    per CT, and their hold-out Dice on the demo model where ``--accuracy`` ran."""
    rows = [r for r in results.get("rows", []) if r["bundle"] == bundle]
    if not rows:
        return (
            f"Not measured yet: `python benchmarks/bench_fast_ct.py --bundles {bundle} --json {source}` "
            f"writes this bundle's rows into `{source}`.\n"
        )
    lines = [
        f"Whole-CT inference, end to end (load to NIfTI written), {results['threads']} CPU threads, paper-size network "
        f"with fresh weights, mirror TTA off in both paths; measured {results['measured_at'][:10]} on "
        f"{results['machine'].get('cpu')}. Rendered from `{source}`: `python benchmarks/bench_fast_ct.py "
        f"--json {source}` measures it, `python benchmarks/run_all.py --report-only` re-renders this block. "
        + (boxes_sentence(results) if any(r.get("boxes") for r in rows) else NO_OVERLAY)
        + (f" {results['note']}" if results.get("note") else "")
        + precision_sentence(results, rows, "fast"),
        "",
    ]
    table = []
    runs = sorted(dict.fromkeys((r["ct"], r.get("variant")) for r in rows), key=lambda run: run[1] is not None)
    for ct, variant in runs:  # the bundle's own network first, then variants (``--set``)
        by = {r["mode"]: r for r in rows if (r["ct"], r.get("variant")) == (ct, variant)}
        fast, full = by.get("fast"), by.get("full")
        table.append([f"{ct} ({variant})" if variant else ct, f"{full['wall_s']:.0f}" if full else "-",
                      f"{fast['wall_s']:.0f}" if fast else "-",
                      f"{full['wall_s'] / fast['wall_s']:.1f}x" if fast and full else "-",
                      f"{fast['peak_rss_gb']:.1f}" if fast else "-",
                      f"{fast['box_fraction']:.0%}" if fast and fast.get("boxes") else "-"])  # fmt: skip
    lines += [md_table(["CT", "full path (s)", "fast path (s)", "speed-up", "fast peak memory (GB)",
                        "share of the volume in kidney boxes"], table), ""]  # fmt: skip
    for acc in sorted((a for a in results.get("accuracy", []) if a["bundle"] == bundle),
                      key=lambda a: a.get("dataset", "phantoms") != "phantoms"):  # fmt: skip
        lines += [accuracy_sentence(acc), ""]
    return "\n".join(lines)


NO_OVERLAY = (
    "This bundle has no localizer overlay (it is coarse-to-fine by design): its fast path is `inference.json` with "
    "`bf16_where_native`, so both paths run the same windows."
)


def boxes_sentence(results: dict) -> str:
    """How the speed rows of a bundle with ``inference_fast.json`` chose the fast path's boxes."""
    return (
        "The fast path's boxes are the CT's reference kidney masks, grown as the inferer grows a localizer's (the "
        "fresh localizer still runs, for its time), "
        + (
            "without the rounds that grow a box where the network's kidney reaches its face (a fresh network's "
            "foreground is noise)."
            if not results.get("max_grow")
            else f"with up to {results['max_grow']} rounds that grow a box where the network's kidney reaches its face."
        )
    )


ACCURACY_DATA = {
    "phantoms": "On this bundle's demo model (its hold-out phantoms",
    "realistic": "On this bundle's demo model trained on the realistic KiTS dataset (`demo_dataset` `realistic`; its "
    "hold-out cases are built on the real KiTS19 kidney and tumour label maps of patients the training never saw, "
    "2.2-2.8 mm in-plane, 2.5-5 mm slices, IPL affine",
}


def accuracy_sentence(acc: dict) -> str:
    """One ``bench_fast_ct.py --accuracy`` row as a sentence: both paths' hold-out Dice and their agreement. Rows
    from before ``localizer`` was recorded trained one where ``localizer_train_s`` is more than a timer's noise."""
    kidney = "kidney_dice" if acc["protocol"] == "kits19" else "kidney_and_mass_dice"
    localizer = acc.get("localizer", acc.get("localizer_train_s", 0.0) > 1.0)
    return (
        ACCURACY_DATA[acc.get("dataset", "phantoms")]
        + (", localizer trained on the same demo cases" if localizer else "")
        + (", the fast path in bfloat16" if acc.get("fast_precision") == "bfloat16" else "")
        + f"): hold-out {kidney.replace('_', ' ')} {fnum(acc['full'][kidney])} full, {fnum(acc['fast'][kidney])} "
        f"fast; tumour Dice {fnum(acc['full']['tumor_dice'])} full, {fnum(acc['fast']['tumor_dice'])} fast; the two "
        f"paths' kidney-and-mass masks agree with Dice >= {fnum(min(acc['agreement'].values()))} on every case."
    )


def short_cpu(model: str) -> str:
    """``Intel(R) Xeon(R) Processor`` -> ``Xeon``, ``AMD EPYC 9xx5`` -> ``EPYC``: the family, for a table column."""
    for family in ("EPYC", "Xeon", "Ryzen", "Core"):
        if family in model:
            return family
    return model or "-"


def render_real_anatomy(results: dict, bundle: str, source: str) -> str:
    """Markdown of ``benchmarks/bench_real_anatomy.py``'s learning-curve rows in ``source`` for ``bundle`` (``all``:
    every bundle measured)."""
    rows = [r for r in results.get("rows", []) if bundle == "all" or r["bundle"] == bundle]
    command = f"python benchmarks/bench_real_anatomy.py --bundles {bundle} --minutes 10 30 60"
    if not rows:
        return f"Not measured yet: `{command}` writes this bundle's rows into `{source}`.\n"
    lines = [
        "Hold-out Dice on the realistic KiTS dataset (6 cases from 3 patients whose label maps the training never "
        "saw; `effseg demo BUNDLE --dataset realistic`'s data) after training the demo network for a budget of "
        "2-core CPU minutes (validation time excluded). Kidney Dice counts kidney and tumour together (KiTS21's "
        "'kidney and masses', KiTS19's 'kidney'). A run's learning-rate schedule is fitted to its largest budget "
        "(`schedule`); its smaller budgets are the weights it had on the way. Weights as they were at the mark, "
        "evaluated with the bundle's `inference.json` (its post-processing included) and mirror TTA off. Rendered "
        f"from `{source}`: `{results['command']}` measures it, `python benchmarks/run_all.py --report-only` "
        "re-renders this block.",
        "",
    ]
    if any(r.get("stages", 1) > 1 for r in rows):
        lines[0] += (" A staged bundle (the cascade) trains its stages one after the other, each for an equal share "
                     "of the schedule, as its demo does: its budgets count every stage, its epochs are the last "
                     "stage's, and a budget inside the first stage has no network to evaluate.")  # fmt: skip
    if any(r.get("tumour_paste") for r in rows):
        lines[0] += (" `tumour paste`: the probability of pasting another training case's tumour into each training "
                     "case (TumorCP, `--tumour-paste`; `tumour_paste_prob` of the bundle's augmentation).")  # fmt: skip
    if not all(r.get("patches_reach_border") for r in rows):
        lines[0] += (" `border`: whether the training patches reached the volume's border (`no`: runs before the "
                     "crop fix, whose enlarged crop stayed inside the volume, so a band of half its margin along every "
                     "border was never at a patch's centre).")  # fmt: skip
    lines[0] += (" `training cases`: realistic training and validation cases (`demo_cases`; the 7 training patients' "
                 "label maps, each drawn several times with new augmentations and intensities). `precision`: what the "
                 "training forward ran in (`bf16`: bfloat16 autocast, float32 weights and loss). `seed`: the "
                 "training seed (weights, patches, augmentation; `--seed`), the data the same. `grad clip`: the global "
                 "gradient norm the training clipped to (the bundle's `grad_clip_norm`; `-`: none).")  # fmt: skip
    table = [[r["bundle"], r["sampling"].replace("_", " "), "yes" if r.get("patches_reach_border") else "no",
              f"{r['tumour_paste']:g}" if r.get("tumour_paste") else "-", str(r.get("demo_cases", 20)),
              "bf16" if r.get("autocast") == "bfloat16" else "float32", str(r.get("seed", 0)),
              f"{r['grad_clip_norm']:g}" if r.get("grad_clip_norm") else "-", f"{r['schedule_min']:g}",
              f"{r['budget_min']:g}", f"{r['train_s'] / 60:.1f}",
              str(r["epoch"]) + (f" (stage {r['stages']})" if r.get("stages", 1) > 1 else ""),
              fnum(r["kidney_dice"]), fnum(r["tumour_dice"]), short_cpu(r.get("cpu", "")), r["measured_at"][:10]]
             for r in rows]  # fmt: skip
    lines += [md_table(["bundle", "patch sampling", "border", "tumour paste", "training cases", "precision", "seed",
                        "grad clip",
                        "schedule (min)", "budget (min)", "trained (min)", "epochs", "kidney Dice", "tumour Dice",
                        "CPU (2 cores)", "measured"], table), ""]  # fmt: skip
    return "\n".join(lines)


RENDER_BLOCK = {
    "demos": lambda results, bundle, source: render_bundle_demo(results["sections"]["demos"], bundle, source),
    "fast_ct": render_bundle_fast,
    "real_anatomy": render_real_anatomy,
}


def update_results_blocks(text: str, load: Any) -> str:
    """``text`` with every results block re-rendered; ``load(source)`` returns the parsed results file."""

    def render(m: re.Match) -> str:
        return m.group(1) + RENDER_BLOCK[m["section"]](load(m["source"]), m["bundle"], m["source"]) + m["end"]

    return RESULTS_BLOCK.sub(render, text)


# ------------------------------------------------------------------------------------- the report page (benchmarks.md)
# ``sections``: run_all's table, one ``(name, title, render)`` per section in report order; ``render(data, figures)``
# returns the section's Markdown (report_sections).
def section_markdown(name: str, record: Optional[dict], figures: Path, render: Any) -> str:
    if record is None:
        return f"_Not measured yet: `python benchmarks/run_all.py --sections {name}`._"
    m = record.get("machine", {})
    meta = f"_Measured {record.get('measured_at')} (took {record.get('elapsed_s', 0):.0f} s) on {machine_line(m)}._"
    if record.get("quick"):
        meta += "\n\n**QUICK MODE (smoke test): tiny sizes and budgets, the numbers are not representative.**"
    if record.get("status") != "ok":
        return (f"{meta}\n\n**This section failed:** `{record.get('error')}`\n\n<details><summary>traceback</summary>"
                f"\n\n```\n{record.get('traceback', '').strip()}\n```\n</details>")  # fmt: skip
    try:
        body = render(record["data"], figures)
    except Exception as exc:  # noqa: BLE001
        import traceback

        body = f"**Rendering failed:** `{type(exc).__name__}: {exc}`\n\n```\n{traceback.format_exc()[-2000:]}\n```"
    errors = [r for r in list(record["data"].get("rows", [])) + list(record["data"].get("bundles", {}).values())
              if isinstance(r, dict) and "error" in r and (r.get("traceback") or r.get("log_tail"))]  # fmt: skip
    for r in errors:
        body += (f"\n\n<details><summary>{r.get('bundle', '?')}: {cell(r.get('error'))}</summary>\n\n```\n"
                 f"{(r.get('traceback') or '').strip()}\n{(r.get('log_tail') or '').strip()}\n```\n</details>")  # fmt: skip
    return f"{meta}\n\n{body}"


def runs_table(results: dict, sections: Sequence[tuple]) -> str:
    """The "Machines and run times" table: one row per section, linked to its heading."""
    names = [name for name, _, _ in sections]
    rows = []
    for i, (name, title, _) in enumerate(sections, 1):
        rec = results["sections"].get(name)
        if rec is None:
            rows.append([name, "not measured", "-", "-", "-"])
            continue
        m = rec.get("machine", {})
        rows.append([f"[{name}](#{slug(f'{names.index(name) + 1}. {title}')})",
                     rec.get("status") + (" (quick)" if rec.get("quick") else ""), rec.get("measured_at"),
                     f"{rec.get('elapsed_s', 0) / 60:.1f}",
                     f"{m.get('cpu')}, {m.get('threads')} threads of {m.get('logical_cpus')} CPUs, torch "
                     f"{m.get('torch')}, monai {m.get('monai')}" + (f", GPU {m['gpu']}" if m.get("gpu") else "")])  # fmt: skip
    return md_table(["section", "status", "measured (UTC)", "minutes", "machine"], rows)


def runs_summary(runs: list, names: Sequence[str]) -> list[str]:
    """The last run's time and sections, and the last run of every section (when that is an older one)."""
    if not runs:
        return []
    last = runs[-1]
    parts = ["", f"Last run: {last['started']} to {last['finished']}, sections {', '.join(last['sections'])}"
                 f"{' (quick)' if last.get('quick') else ''}: **total {last['elapsed_s'] / 60:.1f} min**."]  # fmt: skip
    if last.get("skipped"):
        parts[-1] += f" Not started (time limit): {', '.join(last['skipped'])}."
    full = [r for r in runs if set(r["sections"]) >= set(names) and not r.get("quick")]
    if full and full[-1] is not last:
        parts.append(f"Last run of every section: {full[-1]['started']}, total {full[-1]['elapsed_s'] / 60:.1f} min.")
    return parts


def render_report(results: dict, out_dir: Path, sections: Sequence[tuple]) -> str:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/run_all.py` from `benchmarks.json` (next to this file); do not edit by hand. "
        "Re-measure one part with `--sections NAME ...` (the others keep their saved results), re-render with "
        "`--report-only`. Each section says when, on what machine and in how long it was measured.",
        "",
        "## Machines and run times",
        "",
        runs_table(results, sections),
    ]
    parts += runs_summary(results.get("runs", []), [name for name, _, _ in sections])
    for i, (name, title, render) in enumerate(sections, 1):
        record = results["sections"].get(name)
        parts += ["", f"## {i}. {title}", "", section_markdown(name, record, out_dir / "figures", render)]
    return "\n".join(parts).rstrip() + "\n"


RESULTS_PAGES = ("docs/realistic_data.md",)  # pages outside the bundles with results blocks


def render_bundle_docs(repo: Path, bundles: Sequence[str]) -> None:
    """Re-render the results blocks of the bundle READMEs (and of :data:`RESULTS_PAGES`) and the bundles' demo plots
    from the results files they cite."""
    import json

    from report_figures import plot_bundle_demo

    cache: dict[str, dict] = {}

    def load(source: str) -> dict:
        return cache.setdefault(source, json.loads((repo / source).read_text(encoding="utf-8")))

    for page in RESULTS_PAGES:
        text = (repo / page).read_text(encoding="utf-8")
        if (new := update_results_blocks(text, load)) != text:
            write_atomic(repo / page, new)
    for bundle in bundles:
        readme = repo / "bundles" / bundle / "docs" / "README.md"
        text = readme.read_text(encoding="utf-8")
        new = update_results_blocks(text, load)
        if new != text:
            write_atomic(readme, new)
        for m in (m for m in RESULTS_BLOCK.finditer(new) if m["section"] == "demos"):
            plot_bundle_demo(
                load(m["source"])["sections"]["demos"]["data"]["bundles"][m["bundle"]], readme.parent / DEMO_PLOT
            )

"""Formatting and bookkeeping helpers of ``run_all.py``: machine description, JSON cleaning, Markdown tables, number
formats, output redirection."""

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
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> Optional[int]:
    try:
        cores, current = set(), {}
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
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
        "fvcore": package_version("fvcore"),
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
RESULTS_BLOCK = re.compile(r"(<!-- results: (?P<source>[^#\s]+)#demos/(?P<bundle>[\w-]+) -->\n)(?P<body>.*?)"
                           r"(?P<end><!-- /results -->)", re.S)  # fmt: skip
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


def update_results_blocks(text: str, load: Any) -> str:
    """``text`` with every results block re-rendered; ``load(source)`` returns the parsed results file."""

    def render(m: re.Match) -> str:
        record = load(m["source"])["sections"]["demos"]
        return m.group(1) + render_bundle_demo(record, m["bundle"], m["source"]) + m["end"]

    return RESULTS_BLOCK.sub(render, text)

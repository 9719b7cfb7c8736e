"""run_all.py's ``gpu`` section: ``benchmarks/gpu_throughput.py`` (or ``--gpu-script``) when CUDA is available.

A script offering a ``measure`` / ``run_benchmark`` / ``benchmark`` function without required arguments is imported
and called (with ``quick`` where it takes it); any other runs as a command (``--smoke`` / ``--quick`` in quick mode,
``--bundles``, its JSON output through ``--json`` / ``--out``), its output kept.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]


def measure_section(ctx: Any) -> dict:
    """The section (``ctx``: run_all's ``Context``): ``gpu_script`` run on this run's bundles."""
    import torch

    script, quick, bundles = ctx.settings.gpu_script, ctx.settings.quick, ctx.settings.bundles
    all_bundles = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/train.json"))

    if not torch.cuda.is_available():
        return {"available": False, "note": "no GPU (torch.cuda.is_available() is False)"}
    gpu = torch.cuda.get_device_name(0)
    if not script.is_file():
        return {"available": True, "gpu": gpu, "note": f"no GPU benchmark: {script.name} does not exist"}
    result = call_function(script, quick)
    if result is not None:
        return {"available": True, "gpu": gpu, "script": script.name, **result}
    return {"available": True, "gpu": gpu, **run_command(script, quick, bundles, all_bundles, ctx.work, ctx.log)}


def call_function(script: Path, quick: bool) -> Optional[dict]:
    """``{"how", "result"}`` of the script's measuring function, if it has one that returns a dict."""
    source = script.read_text(encoding="utf-8")
    names = [n for n in ("measure", "run_benchmark", "benchmark") if re.search(rf"^def {n}\(", source, re.M)]
    if not names:  # import only a script that offers a function (importing runs its top level)
        return None
    spec = importlib.util.spec_from_file_location("gpu_throughput", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    for name in names:
        fn = getattr(module, name, None)
        try:
            params = inspect.signature(fn).parameters if callable(fn) else None
        except (TypeError, ValueError):
            params = None
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                 inspect.Parameter.KEYWORD_ONLY)  # fmt: skip
        if params is None or any(p.default is p.empty and p.kind in kinds for p in params.values()):
            continue  # a function this script cannot know how to call: use the command line instead
        kwargs = {"quick": quick} if "quick" in params else {}
        result = fn(**kwargs)
        if isinstance(result, dict):
            return {"how": f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})", "result": result}
    return None


def run_command(script: Path, quick: bool, bundles: Sequence[str], all_bundles: Sequence[str], work: Path,
                log: Callable[[str], None]) -> dict:  # fmt: skip
    """Run the script as a command with the flags its ``--help`` offers; its output and JSON result."""
    helptext = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
                              cwd=REPO).stdout  # fmt: skip
    cmd = [sys.executable, str(script)]
    if quick:
        cmd += [flag for flag in ("--quick", "--smoke") if flag in helptext][:1]
    if "--bundles" in helptext and sorted(bundles) != sorted(all_bundles):
        cmd += ["--bundles", *bundles]
    json_out = work / "gpu_throughput.json"
    for flag in ("--json", "--out"):
        if flag in helptext:
            cmd += [flag, str(json_out)]
            break
    log("gpu: " + " ".join(cmd))
    proc = subprocess.run(
        cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=1800, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    result: Any = None
    if json_out.is_file():
        with contextlib.suppress(ValueError):
            result = json.loads(json_out.read_text(encoding="utf-8"))
    how = " ".join(Path(c).name if c == str(script) else "<json>" if c == str(json_out) else c for c in cmd[1:])
    return {"script": script.name, "how": how, "stdout": proc.stdout[-8000:], "result": result}

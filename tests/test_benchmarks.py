"""The benchmark runner (issue 26): ``benchmarks/run_all.py`` is a thin table of sections over the bench modules,
every section still runs (``--quick``), and the saved results render to the committed report."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
MAX_FUNCTION_LINES = 60


def run_all(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "run_all.py"), *args], capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, cwd=REPO)  # fmt: skip


def sections() -> list[str]:
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    return list(run_all.NAMES)


def test_run_all_is_a_thin_runner():
    assert len((BENCH / "run_all.py").read_text(encoding="utf-8").splitlines()) < 300


def test_no_long_functions_in_benchmarks():
    long = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


class Parser:
    """The one method of a ConfigParser that the run-list reader uses."""

    def __init__(self, content: dict) -> None:
        self.content = content

    def get_parsed_content(self, key: str):
        return self.content[key]


@pytest.mark.parametrize("separator", ["#", "::"])  # the parser stores ids with "::"
@pytest.mark.parametrize("bundle", ["kits_unet_cascade", "lits_dsts_unet"])
def test_demo_stage_calls_are_read_with_their_arguments(bundle, separator):
    """A demo's second training stage is a helper call in its run list: it is recognised, its arguments evaluated
    from the config (``@id``), so that run_all can build that stage's workflow and cap its trainer."""
    sys.path.insert(0, str(BENCH))
    try:
        from demo_stages import is_own_trainer, list_call
    finally:
        sys.path.remove(str(BENCH))
    run = json.loads((REPO / "bundles" / bundle / "configs" / "demo.json").read_text(encoding="utf-8"))["run"]
    run = [item.replace("#", separator) for item in run]
    values = {"bundle_root": "ROOT", "dataset_dir": "DATA", "ckpt_dir": "CKPT", "output_dir": "OUT", "max_epochs": 2,
              "iterations_per_epoch": 3, "val_interval": 1, "batch_size": 2, "holdout_dir": "HOLD",
              "eval_protocol": "kits21", "demo_inference_overrides": {"a": 1},
              "stage_overrides": {"dataset_dir": "DATA", "ckpt_dir": "CKPT"}}  # fmt: skip
    calls = [list_call(Parser(values), item) for item in run]
    assert calls[0] is None and is_own_trainer(run[0])
    fn, stage = calls[1]
    assert (fn.__module__, fn.__name__) == ("monai_effseg.training", "train_stage")  # one launcher for both
    assert {"bundle_root", "configs", "stage"} <= set(stage.signature.parameters)
    assert stage.arguments["bundle_root"] == "ROOT" and list(stage.arguments["configs"]) == ["train.json", "demo.json"]
    assert stage.arguments["stage"] == 2  # one vocabulary: stage numbers
    assert stage.arguments["overrides"]["ckpt_dir"] == "CKPT"
    fn, holdout = calls[2]
    assert fn.__name__ == "evaluate_holdout" and holdout.arguments["output_dir"] == "OUT/holdout"
    assert holdout.arguments["overrides"] == {"a": 1}


def test_saved_results_render_to_the_committed_report(tmp_path):
    shutil.copy(REPO / "docs" / "benchmarks.json", tmp_path / "benchmarks.json")
    proc = run_all("--report-only", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "benchmarks.md").read_text(encoding="utf-8") == (REPO / "docs" / "benchmarks.md").read_text(
        encoding="utf-8"
    )


@pytest.mark.slow
def test_quick_run_measures_every_section(tmp_path):
    proc = run_all("--quick", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "benchmarks.json").read_text(encoding="utf-8"))
    names = sections()
    assert set(results["sections"]) == set(names)
    failed = {n: r.get("error") for n, r in results["sections"].items() if r["status"] != "ok"}
    assert not failed, failed
    assert all(r["quick"] for r in results["sections"].values())
    assert results["runs"][-1]["sections"] == names and not results["runs"][-1]["skipped"]

    rows = results["sections"]["inference"]["data"]["rows"]
    assert rows and all("error" not in r and r["shape_equal"] and r["affine_equal"] for r in rows), rows
    demo = results["sections"]["demos"]["data"]["bundles"]["kits_sauron_nnunet"]
    assert "error" not in demo and not demo["run_error"], demo.get("error") or demo["run_error"]
    assert demo["stages"][0]["epochs"] >= 1 and demo["training_s"] > 0
    epochs = [h["epoch"] for h in demo["history"]]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) == demo["stages"][0]["epochs"]
    assert all(h["loss"] is not None and h["dice"] is not None for h in demo["history"])  # per-epoch loss and Dice
    assert demo["holdout_primary"]["kidney"] is not None
    assert results["sections"]["sauron"]["data"]["curve"]

    report = (tmp_path / "out" / "benchmarks.md").read_text(encoding="utf-8")
    for i, name in enumerate(names, 1):
        assert f"## {i}. " in report
    assert "This section failed" not in report and "Rendering failed" not in report
    assert report.count("QUICK MODE") == len(names)


def test_fast_ct_benchmark_runs_the_cascade_in_bf16_and_counts_each_stage_s_windows():
    """The cascade has no fast overlay: its fast path is ``inference.json`` in bfloat16; its FLOPs are counted per
    stage (the inferer calls the stages one by one, stage 2 on 2 channels)."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_fast_ct
    finally:
        sys.path.remove(str(BENCH))
    from monai_effseg.nets import UNetCascade, build_net

    assert bench_fast_ct.fast_path("kits_unet_cascade") == (["inference.json"], {"bf16_where_native": True})
    assert bench_fast_ct.fast_path("kits_nnunet_baseline") == (["inference.json", "inference_fast.json"], {})
    cascade = build_net("unet_cascade_kits19", features=[4, 8, 16, 32, 32, 32])
    assert isinstance(cascade, UNetCascade)
    assert bench_fast_ct.window_net(cascade, (2, 1, 32, 32, 32)) is cascade.stage1
    assert bench_fast_ct.window_net(cascade, (2, 2, 32, 32, 32)) is cascade.stage2
    plain = build_net("nnunet", features=[4, 8, 16, 32, 32, 32])
    assert bench_fast_ct.window_net(plain, (1, 1, 32, 32, 32)) is plain


def test_fast_ct_benchmark_keeps_a_network_variant_s_rows_apart(tmp_path):
    """``--set encoder="efficientnet-b0"`` rows are stored beside the default network's, not over them."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_fast_ct
    finally:
        sys.path.remove(str(BENCH))

    assert bench_fast_ct.parse_settings(['encoder="efficientnet-b0"', "features=[8,16]"]) == {
        "encoder": "efficientnet-b0",
        "features": [8, 16],
    }
    with pytest.raises(SystemExit, match="expected KEY=JSON"):
        bench_fast_ct.parse_settings(["encoder"])
    path = tmp_path / "fast_ct.json"
    row = {"bundle": "b", "ct": "512x512x100", "mode": "fast", "wall_s": 1.0}
    bench_fast_ct.save(path, "rows", [row], {})
    bench_fast_ct.save(path, "rows", [{**row, "wall_s": 2.0, "variant": 'encoder="efficientnet-b0"'}], {})
    bench_fast_ct.save(path, "rows", [{**row, "wall_s": 3.0}], {})
    saved = json.loads(path.read_text())["rows"]
    assert {r.get("variant"): r["wall_s"] for r in saved} == {None: 3.0, 'encoder="efficientnet-b0"': 2.0}
    assert len(saved) == 2


def real_anatomy_row(**fields) -> dict:
    row = {"bundle": "kits_nnunet_baseline", "sampling": "per_class", "schedule_min": 30.0, "budget_min": 30.0,
           "train_s": 1800.0, "epoch": 232, "kidney_dice": 0.9569, "tumour_dice": 0.4584, "tumour_paste": 0.0,
           "cpu": "AMD EPYC", "patches_reach_border": True, "autocast": "bfloat16", "demo_cases": 20,
           "measured_at": "2026-12-08T01:00Z"}  # fmt: skip
    return {**row, **fields}


def test_real_anatomy_keeps_each_training_seed_as_its_own_run(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import bench_real_anatomy as ra
        import report_format as rf
    finally:
        sys.path.remove(str(BENCH))
    before_seeds = real_anatomy_row()  # a row saved before runs had a seed: the config's own, 0
    assert ra.run_key(before_seeds) == ra.run_key(real_anatomy_row(seed=0))
    assert ra.run_key(before_seeds).seed == 0 and ra.run_key(before_seeds).bundle == "kits_nnunet_baseline"
    assert ra.run_key(real_anatomy_row(seed=1)) != ra.run_key(before_seeds)
    assert (
        ra.run_key(before_seeds).grad_clip_norm == ra.run_key(real_anatomy_row(grad_clip_norm=None)).grad_clip_norm == 0
    )
    clipped = real_anatomy_row(grad_clip_norm=12)
    assert ra.run_key(clipped) != ra.run_key(before_seeds)
    assert sorted([ra.run_key(clipped), ra.run_key(before_seeds)])[0] == ra.run_key(before_seeds)  # keys sort

    path = tmp_path / "real_anatomy.json"
    path.write_text(json.dumps({"rows": [before_seeds]}), encoding="utf-8")
    merged = ra.merge_results([real_anatomy_row(seed=1, tumour_dice=0.5)], path, threads=2)
    assert sorted((r.get("seed", 0), r["tumour_dice"]) for r in merged["rows"]) == [(0, 0.4584), (1, 0.5)]
    again = ra.merge_results([real_anatomy_row(seed=1, tumour_dice=0.52)], path, threads=2)  # a rerun replaces
    assert sorted((r.get("seed", 0), r["tumour_dice"]) for r in again["rows"]) == [(0, 0.4584), (1, 0.52)]

    with_clip = ra.merge_results([clipped], path, threads=2)
    table = rf.render_real_anatomy(with_clip, "kits_nnunet_baseline", "docs/real_anatomy.json")
    header = [cell.strip() for cell in next(x for x in table.splitlines() if x.startswith("| bundle")).split("|")]
    body = [[c.strip() for c in line.split("|")] for line in table.splitlines() if line.startswith("| kits_")]
    assert sorted((row[header.index("seed")], row[header.index("grad clip")]) for row in body) == [
        ("0", "-"), ("0", "12"), ("1", "-")]  # fmt: skip

"""One source of truth for the figures (issue 25): the demo figures in each bundle README's Performance section are
a block rendered from the results file it cites (``<!-- results: FILE#demos/BUNDLE -->``); the block must read
exactly what that file renders to today, and the plot it shows must exist."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from report_figures import demo_losses, plot_bundle_demo  # noqa: E402
from report_format import DEMO_PLOT, RESULTS_BLOCK, render_bundle_demo, update_results_blocks  # noqa: E402

BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def load(source: str) -> dict:
    return json.loads((REPO / source).read_text(encoding="utf-8"))


def performance_section(bundle: str) -> str:
    text = (REPO / "bundles" / bundle / "docs" / "README.md").read_text(encoding="utf-8")
    return re.search(r"^## Performance\n(.*?)^## ", text, flags=re.S | re.M).group(1)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_performance_block_matches_the_results_file_it_cites(bundle):
    section = performance_section(bundle)
    blocks = list(RESULTS_BLOCK.finditer(section))
    demos = [m["bundle"] for m in blocks if m["section"] == "demos"]
    assert demos == [bundle], "one demo results block, for this bundle, in Performance"
    assert all(m["bundle"] == bundle for m in blocks)
    for m in blocks:
        assert (REPO / m["source"]).is_file(), f"cited results file {m['source']} is missing"
    assert update_results_blocks(section, load) == section, (
        f"{bundle}'s README disagrees with the results files it cites: run `python benchmarks/run_all.py --report-only`"
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_performance_section_shows_the_demo_plot(bundle):
    body = next(m for m in RESULTS_BLOCK.finditer(performance_section(bundle)) if m["section"] == "demos")["body"]
    assert f"]({DEMO_PLOT})" in body
    plot = REPO / "bundles" / bundle / "docs" / DEMO_PLOT
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_changed_result_changes_the_rendered_block():
    """The comparison above can fail: the block carries the results file's numbers and protocol label."""
    record = load("docs/benchmarks.json")["sections"]["demos"]
    bundle = next(b for b, r in record["data"]["bundles"].items() if "error" not in r)
    text = render_bundle_demo(record, bundle, "docs/benchmarks.json")
    assert f"capped run_all demo ({record['data']['demo_budget_s']:.0f} s cap)" in text.lower()
    changed = copy.deepcopy(record)
    key = next(iter(changed["data"]["bundles"][bundle]["holdout_primary"]))
    changed["data"]["bundles"][bundle]["holdout_primary"][key] = 0.123456
    assert f"{key} 0.123" in render_bundle_demo(changed, bundle, "docs/benchmarks.json")
    block = f"<!-- results: docs/benchmarks.json#demos/{bundle} -->\n{text}<!-- /results -->"
    assert update_results_blocks(block, lambda source: {"sections": {"demos": changed}}) != block


def test_demo_plot_takes_the_loss_from_the_history_or_the_sauron_handler(tmp_path):
    history = [{"stage": 0, "epoch": e, "train_s": 10.0 * e, "dice": 0.1 * e, "stage_name": "training"}
               for e in (1, 2, 3)]  # fmt: skip
    run = {"bundle": "b", "history": history, "targets": [{"threshold": 0.85}], "sauron_history": None}
    assert demo_losses(run) == []
    handler = [{"epoch": 0, "loss": None}, {"epoch": 1, "loss": 3.0}, {"epoch": 3, "loss": 2.0}]
    sauron = {**run, "sauron_history": handler}
    assert demo_losses(sauron) == [(10.0, 3.0), (30.0, 2.0)]
    own = {**sauron, "history": [{**h, "loss": 5.0 - h["epoch"]} for h in history]}
    assert demo_losses(own) == [(10.0, 4.0), (20.0, 3.0), (30.0, 2.0)]
    assert plot_bundle_demo(own, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_bundle_demo({**run, "history": []}, tmp_path / "q.png") is None


def test_fast_path_block_renders_both_paths_and_the_accuracy():
    from report_format import render_bundle_fast

    row = {"bundle": "b", "ct": "512x512x100", "peak_rss_gb": 2.5, "box_fraction": 0.08, "boxes": [[[0, 9]] * 3]}
    results = {
        "threads": 2, "measured_at": "2026-12-06T17:00:00", "machine": {"cpu": "Xeon"},
        "rows": [{**row, "mode": "full", "wall_s": 300.0}, {**row, "mode": "fast", "wall_s": 40.0},
                 {**row, "ct": "512x512x600", "mode": "fast", "wall_s": 45.0}],
        "accuracy": [{"bundle": "b", "protocol": "kits21", "full": {"kidney_and_mass_dice": 0.9, "tumor_dice": 0.5},
                      "fast": {"kidney_and_mass_dice": 0.895, "tumor_dice": 0.49}, "agreement": {"a": 0.99, "c": 0.985}}],
    }  # fmt: skip
    text = render_bundle_fast(results, "b", "docs/fast_ct.json")
    assert "| 512x512x100 | 300 | 40 | 7.5x | 2.5 | 8% |" in text
    assert "| 512x512x600 | - | 45 | - |" in text
    assert "boxes are the CT's reference kidney masks" in text and "no localizer overlay" not in text
    assert "0.900 full, 0.895 fast" in text and ">= 0.985 on every case" in text
    block = f"<!-- results: docs/fast_ct.json#fast_ct/b -->\n{text}<!-- /results -->"
    assert update_results_blocks(block, lambda source: results) == block
    results["rows"][1]["wall_s"] = 60.0
    assert "| 512x512x100 | 300 | 60 | 5.0x |" in update_results_blocks(block, lambda source: results)


def test_fast_path_block_says_which_precision_ran_and_shows_no_boxes_where_there_were_none():
    from report_format import render_bundle_fast

    row = {"bundle": "c", "ct": "512x512x100", "peak_rss_gb": 2.5, "box_fraction": 1.0, "boxes": None}
    results = {
        "threads": 2, "measured_at": "2026-12-07T10:00:00", "machine": {"cpu": "Xeon"},
        "rows": [{**row, "mode": "full", "wall_s": 250.0, "precision": "float32"},
                 {**row, "mode": "fast", "wall_s": 100.0, "precision": "bfloat16"}],
        "accuracy": [{"bundle": "c", "protocol": "kits19", "full": {"kidney_dice": 0.9, "tumor_dice": 0.5},
                      "fast": {"kidney_dice": 0.9, "tumor_dice": 0.5}, "agreement": {"a": 0.999},
                      "fast_precision": "bfloat16"}],
    }  # fmt: skip
    text = render_bundle_fast(results, "c", "docs/fast_ct.json")
    assert "| 512x512x100 | 250 | 100 | 2.5x | 2.5 | - |" in text
    assert "has no localizer overlay" in text and "reference kidney masks" not in text  # the cascade's rows
    assert "The fast path ran in bfloat16 on this CPU's AMX instructions" in text  # files from before native_bf16
    assert "its hold-out phantoms, the fast path in bfloat16)" in text  # no localizer: the cascade's row
    results["accuracy"][0]["localizer"] = True
    assert "localizer trained on the same demo cases, the fast path" in render_bundle_fast(results, "c", "x.json")
    del results["accuracy"][0]["localizer"]
    results["native_bf16"] = "AVX-512 BF16"
    assert "on this CPU's AVX-512 BF16 instructions" in render_bundle_fast(results, "c", "docs/fast_ct.json")
    results["rows"][1]["precision"] = "float32"
    assert "The fast path ran in float32." in render_bundle_fast(results, "c", "docs/fast_ct.json")


def test_fast_path_block_gives_the_realistic_dataset_check_its_own_sentence_after_the_phantoms():
    from report_format import render_bundle_fast

    row = {
        "bundle": "d",
        "ct": "512x512x100",
        "peak_rss_gb": 2.5,
        "box_fraction": 0.1,
        "boxes": None,
        "mode": "fast",
        "wall_s": 40.0,
    }
    check = {
        "bundle": "d",
        "protocol": "kits21",
        "full": {"kidney_and_mass_dice": 0.9, "tumor_dice": 0.5},
        "fast": {"kidney_and_mass_dice": 0.9, "tumor_dice": 0.5},
        "agreement": {"a": 0.999},
    }
    results = {"threads": 2, "measured_at": "2026-12-07T10:00:00", "machine": {"cpu": "EPYC"}, "rows": [row],
               "accuracy": [{**check, "dataset": "realistic", "agreement": {"a": 0.991}}, check]}  # fmt: skip
    text = render_bundle_fast(results, "d", "docs/fast_ct.json")
    phantoms, realistic = text.index("its hold-out phantoms"), text.index("trained on the realistic KiTS dataset")
    assert phantoms < realistic and ">= 0.999 on every case" in text[:realistic] and ">= 0.991" in text[realistic:]


def test_fast_ct_accuracy_rows_of_two_datasets_are_kept_apart(tmp_path):
    from bench_fast_ct import save

    path = tmp_path / "fast_ct.json"
    save(path, "accuracy", [{"bundle": "b", "kidney": 0.8}], {})  # a row from before ``dataset`` was recorded
    save(path, "accuracy", [{"bundle": "b", "dataset": "realistic", "kidney": 0.7}], {})
    save(path, "accuracy", [{"bundle": "b", "dataset": "phantoms", "kidney": 0.9}], {})
    rows = json.loads(path.read_text())["accuracy"]
    assert sorted((r.get("dataset"), r["kidney"]) for r in rows) == [("phantoms", 0.9), ("realistic", 0.7)]


def test_fast_path_block_gives_a_network_variant_its_own_row_and_names_its_results_file():
    from report_format import render_bundle_fast

    row = {"bundle": "e", "ct": "512x512x100", "peak_rss_gb": 2.5, "box_fraction": 0.06, "boxes": [[[0, 1]] * 3]}
    variant = {**row, "variant": 'encoder="efficientnet-b0"'}
    results = {
        "threads": 2, "measured_at": "2026-12-07T10:00:00", "machine": {"cpu": "EPYC"},
        "rows": [{**row, "mode": "full", "wall_s": 120.0}, {**row, "mode": "fast", "wall_s": 40.0},
                 {**variant, "mode": "full", "wall_s": 100.0}, {**variant, "mode": "fast", "wall_s": 25.0}],
    }  # fmt: skip
    text = render_bundle_fast(results, "e", "docs/fast_ct_epyc.json")
    assert "| 512x512x100 | 120 | 40 | 3.0x | 2.5 | 6% |" in text
    assert '| 512x512x100 (encoder="efficientnet-b0") | 100 | 25 | 4.0x | 2.5 | 6% |' in text
    results["rows"] = results["rows"][2:] + results["rows"][:2]  # a rerun of the bundle's own network comes last
    assert render_bundle_fast(results, "e", "docs/fast_ct_epyc.json") == text  # and is still shown first
    assert "--json docs/fast_ct_epyc.json` measures it" in text


def test_fast_path_block_of_an_unmeasured_bundle_says_how_to_measure_it():
    from report_format import render_bundle_fast

    text = render_bundle_fast({"rows": [], "threads": 2}, "kits_mss_unet", "docs/fast_ct.json")
    assert "Not measured yet" in text and "--bundles kits_mss_unet" in text

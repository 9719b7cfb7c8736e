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
    assert [m["bundle"] for m in blocks] == [bundle], "one results block, for this bundle, in Performance"
    assert (REPO / blocks[0]["source"]).is_file(), f"cited results file {blocks[0]['source']} is missing"
    assert update_results_blocks(section, load) == section, (
        f"{bundle}'s README disagrees with {blocks[0]['source']}: run `python benchmarks/run_all.py --report-only`"
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_performance_section_shows_the_demo_plot(bundle):
    body = RESULTS_BLOCK.search(performance_section(bundle))["body"]
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

"""The bundles are presets of one recipe (``recipes/``): ``effseg bundles --check`` holds on the repository, names a
bundle file edited by hand and the fix, regeneration is idempotent, and the recipe is less than half the lines of the
configs it generates."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monai_effseg.recipes import apply_delta, format_json, recipe_lines, recipe_names, render, sync

REPO = Path(__file__).resolve().parents[1]


def effseg_bundles(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai_effseg.cli", "bundles", *args], capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=120)  # fmt: skip


@pytest.fixture
def copy_of_repo(tmp_path) -> Path:
    """recipes/ and every bundle's configs/, the only parts ``effseg bundles`` reads and writes."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    for name in recipe_names(REPO / "recipes"):
        shutil.copytree(REPO / "bundles" / name / "configs", tmp_path / "bundles" / name / "configs")
    return tmp_path


def test_bundles_check_passes_on_the_repository():
    proc = effseg_bundles("--check", "--root", str(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recipe_names(REPO / "recipes") == sorted(p.parent.name for p in REPO.glob("bundles/*/configs"))


def test_a_hand_edited_bundle_file_fails_the_check_with_its_name_and_the_fix(copy_of_repo):
    edited = copy_of_repo / "bundles" / "kits_mss_unet" / "configs" / "train.json"
    config = json.loads(edited.read_text(encoding="utf-8"))
    config["learning_rate"] = 0.5
    edited.write_text(json.dumps(config, indent=4))
    proc = effseg_bundles("--check", "--root", str(copy_of_repo))
    assert proc.returncode == 1
    assert "bundles/kits_mss_unet/configs/train.json" in proc.stderr and "'effseg bundles'" in proc.stderr
    assert "kits_nnunet_baseline" not in proc.stderr
    (copy_of_repo / "bundles" / "lits_dsts_unet" / "configs" / "logging.conf").unlink()
    assert "lits_dsts_unet/configs/logging.conf" in effseg_bundles("--check", "--root", str(copy_of_repo)).stderr
    stray = copy_of_repo / "bundles" / "kits_mss_unet" / "configs" / "old_train.json"
    stray.write_text("{}")
    assert (
        "kits_mss_unet/configs/old_train.json (not generated)"
        in effseg_bundles("--check", "--root", str(copy_of_repo)).stderr
    )
    stray.unlink()
    # regenerating puts both back, and a second run writes nothing
    assert effseg_bundles("--root", str(copy_of_repo)).returncode == 0
    assert sync(copy_of_repo, check=True) == [] and sync(copy_of_repo) == []
    assert edited.read_text(encoding="utf-8") == (
        REPO / "bundles" / "kits_mss_unet" / "configs" / "train.json"
    ).read_text(encoding="utf-8")


def test_the_recipe_is_less_than_half_the_lines_of_the_configs_it_generates():
    generated = sum(len(text.splitlines()) for name in recipe_names(REPO / "recipes")
                    for text in render(name, REPO / "recipes").values())  # fmt: skip
    assert recipe_lines(REPO) < generated / 2, (recipe_lines(REPO), generated)


def test_delta_semantics_follow_monai_ids():
    base = {"a": 1, "b": {"x": [1, 2], "y": {"_target_": "T"}}, "c#d": 5, "e": [{"k": 0}], "z": 9}
    delta = {"b#x": [3], "+b#y": {"p": 1}, "-a": None, "new": 2, "newer": 3, "c#d": 6, "e#0#k": 1, "+e": [{"k": 2}]}
    out = apply_delta(base, delta)
    assert out == {"new": 2, "newer": 3, "b": {"x": [3], "y": {"_target_": "T", "p": 1}}, "c#d": 6,
                   "e": [{"k": 1}, {"k": 2}], "z": 9}  # fmt: skip
    assert list(out) == ["new", "newer", "b", "c#d", "e", "z"]  # new keys land in the removed key's slot
    assert base["a"] == 1 and base["b"]["x"] == [1, 2]  # the template is not modified


def test_format_keeps_short_scalar_lists_on_one_line():
    text = format_json({"patch": [64, 64, 32], "t": [{"a": 1}], "long": ["x" * 60, "y" * 60]})
    assert text == ('{\n    "patch": [64, 64, 32],\n    "t": [\n        {\n            "a": 1\n        }\n    ],\n'
                    f'    "long": [\n        "{"x" * 60}",\n        "{"y" * 60}"\n    ]\n}}\n')  # fmt: skip


def test_rank_gating_and_demo_sizes_are_plain_keys():
    for name in recipe_names(REPO / "recipes"):
        configs = REPO / "bundles" / name / "configs"
        train, demo = (json.loads((configs / f).read_text(encoding="utf-8")) for f in ("train.json", "demo.json"))
        multi = (configs / "multi_gpu_train.json").read_text(encoding="utf-8")
        assert train["rank0"] is True and "[: -" not in multi and "@train#handlers[" not in multi
        assert '"rank0": "$torch.distributed.get_rank() == 0"' in multi
        gated = [h for h in train["train"]["handlers"] if h.get("_disabled_") == "$not @rank0"]
        assert any("TrainingCheckpointSaver" in h["_target_"] for h in gated)
        assert isinstance(demo["demo_cases"], int) and isinstance(demo["demo_holdout_cases"], int)
        assert demo["demo_dataset"] == "phantoms" and demo["demo_phantoms"] in ("kits19", "kits21", "lits")
        assert "demo_dataset(@demo_dataset, 'training', @demo_cases, @demo_phantoms)" in demo["dataset_dir"]
        assert "demo_dataset(@demo_dataset, 'holdout', @demo_holdout_cases, @demo_phantoms)" in demo["holdout_dir"]

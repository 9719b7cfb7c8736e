"""File names are data, never code: paths and case ids read from disk reach the bundle configs as Python values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from bundle_utils import REPO, configs, demo_value
from monai.bundle import ConfigWorkflow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")

BUNDLE = REPO / "bundles" / "kits_nnunet_baseline"
MARKER = "EXECUTED"
# a name that would create ./EXECUTED if the parser evaluated it, a reference and a macro
NASTY_CASES = [f"$__import__('pathlib').Path('{MARKER}').touch()", "@network_def", "%train.json"]


def _folder_dataset(src: Path, dst: Path, names: list[str]) -> Path:
    """A ``folder`` layout dataset (images/ + labels/) whose cases are named ``names``, copied from the KiTS19 ``src``."""
    from monai_effseg.data import build_datalist

    (dst / "images").mkdir(parents=True)
    (dst / "labels").mkdir()
    for item, name in zip(build_datalist(src), names):
        shutil.copy(item["image"], dst / "images" / f"{name}.nii.gz")
        shutil.copy(item["label"], dst / "labels" / f"{name}.nii.gz")
    return dst


@pytest.fixture
def nasty_holdout(tmp_path, monkeypatch):
    from monai_effseg.data import synthetic_dataset

    monkeypatch.chdir(tmp_path)  # where an executed "$...touch()" would leave its marker
    src = synthetic_dataset("kits", num_cases=3, seed=7, shape=(48, 48, 24), root=tmp_path / "cache")
    return _folder_dataset(src, tmp_path / "holdout", NASTY_CASES)


def test_literals_are_never_parsed(nasty_holdout, tmp_path):
    from monai_effseg.data import build_datalist
    from monai_effseg.workflows import bundle_workflow

    datalist = build_datalist(nasty_holdout)
    assert sorted(i["case_id"] for i in datalist) == sorted(NASTY_CASES)
    weird_dir = "$__import__('pathlib').Path('EXECUTED').touch()"
    workflow = bundle_workflow(
        BUNDLE, ["inference.json"], "inference",
        literals={"datalist": datalist, "output_dir": weird_dir, "input_dir": str(nasty_holdout)},
    )  # fmt: skip
    workflow.initialize()
    parser = workflow.parser
    assert parser.get_parsed_content("datalist") == datalist
    assert parser.get_parsed_content("output_dir") == weird_dir
    # a config item referring to a literal gets the object itself
    assert parser.get_parsed_content("dataset#data") == datalist
    assert parser.get_parsed_content("bundle_root") == str(BUNDLE)
    # config overrides are still config: an expression is evaluated
    workflow = bundle_workflow(BUNDLE, ["inference.json"], "inference", num_classes="$2 + 2")
    workflow.initialize()
    assert workflow.parser.get_parsed_content("num_classes") == 4
    assert not (tmp_path / MARKER).exists(), "a file name was executed as code"


def test_holdout_evaluation_with_dollar_at_percent_case_names(nasty_holdout, tmp_path):
    """``evaluate_holdout`` on a hold-out set whose case files are named ``$...``, ``@...`` and ``%...``: before the
    fix the ``$`` name ran (it creates a marker file) and the ``@``/``%`` names failed to resolve."""
    from monai_effseg.data import build_datalist, load_or_compute_fingerprint
    from monai_effseg.workflows import evaluate_holdout

    overrides = demo_value(BUNDLE, "demo_inference_overrides")
    net = ConfigWorkflow(
        config_file=configs(BUNDLE, "inference.json"), workflow_type=None, bundle_root=str(BUNDLE), **overrides
    ).parser.get_parsed_content("network_def")
    ckpt, fingerprint = tmp_path / "model.pt", tmp_path / "fingerprint.json"
    torch.save(net.state_dict(), ckpt)
    load_or_compute_fingerprint(build_datalist(nasty_holdout), fingerprint)
    overrides.update(ckpt_path=str(ckpt), fingerprint_path=str(fingerprint))
    summary = evaluate_holdout(BUNDLE, nasty_holdout, tmp_path / "report", protocol="kits21", overrides=overrides)
    assert not (tmp_path / MARKER).exists(), "a case file name was executed as code"
    written = sorted(p.name for p in (tmp_path / "report" / "predictions").glob("*.nii.gz"))
    assert written == sorted(f"{name}.nii.gz" for name in NASTY_CASES)
    assert summary

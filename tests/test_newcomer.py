"""What a newcomer meets first (issue 25, part 5): ``effseg --help``, the demo's banner and log, the overlays."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from monai_effseg import demo_info
from monai_effseg.cli import main

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "demo.json").is_file())


def test_nine_demo_bundles():
    assert len(BUNDLES) == 9
    assert demo_info.demo_bundles() == BUNDLES


def test_help_imports_neither_torch_nor_monai_and_is_fast():
    code = "from monai_effseg.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=True,
        cwd=REPO,
    )
    elapsed = time.perf_counter() - start
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    heavy = {name for name in imported if name.split(".")[0] in ("torch", "monai", "ignite", "numpy")}
    assert not heavy, sorted(heavy)[:10]
    assert "usage: effseg" in done.stdout and "demo" in done.stdout
    assert "``" not in done.stdout  # no raw reST markup
    assert elapsed < 3.0, f"effseg --help took {elapsed:.1f} s"


def test_demo_help_lists_every_bundle_with_time_and_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for name in BUNDLES:
        line = next((l for l in out.splitlines() if l.strip().startswith(name + " ")), None)
        assert line is not None, name
        assert "min" in line or "not measured" in line
    for path in ("models/demo/", "eval/demo/holdout/", "overlay_best.png", "metrics_summary.json"):
        assert path in out


def test_expected_duration_scales_epochs_and_validations_to_the_demo(tmp_path):
    (tmp_path / "b" / "configs").mkdir(parents=True)
    (tmp_path / "b" / "configs" / "demo.json").write_text(json.dumps({"max_epochs": 10, "val_interval": 5}))
    results = {
        "data": {
            "val_interval": 1,
            "bundles": {
                "b": {"wall_s": 30.0, "stages": [{"epochs": 2, "max_epochs": 10, "train_s": 20.0, "validation_s": 4.0}]}
            },
        }
    }
    # 6 s outside the epochs + 10 epochs x 10 s + 2 validations x 2 s
    assert demo_info.expected_demo_seconds("b", results, tmp_path) == pytest.approx(110.0)
    assert demo_info.expected_demo_seconds("missing", results, tmp_path) is None


def test_every_bundle_has_an_expected_duration_in_the_results_file():
    results = demo_info.load_demo_results()
    assert results is not None
    for name in BUNDLES:
        seconds = demo_info.expected_demo_seconds(name, results)
        assert seconds is not None and 60 < seconds < 3600, (name, seconds)


def test_demo_prints_duration_and_outputs_before_it_starts(monkeypatch, capsys):
    import monai_effseg.workflows

    calls = []

    def fake_run_bundle(root, configs, workflow_type, literals):
        calls.append((Path(root).name, configs, literals, capsys.readouterr().out))

    monkeypatch.setattr(monai_effseg.workflows, "run_bundle", fake_run_bundle)
    monkeypatch.setattr(demo_info, "checkpoint_epoch", lambda ckpt_dir: 25)
    assert main(["demo", "kits_nnunet_baseline"]) == 0
    ((name, configs, literals, banner),) = calls
    assert (name, configs, literals) == (
        "kits_nnunet_baseline",
        ["train.json", "demo.json"],
        {"demo_dataset": "phantoms"},
    )
    assert "expected duration: about" in banner and " min " in banner
    assert "dataset: the embedded ellipsoid phantoms" in banner
    root = REPO / "bundles" / "kits_nnunet_baseline"
    for path in ("models/demo", "eval/demo/holdout", "eval/demo/runs"):
        assert str(root / path) in banner
    assert "epoch 25 of 25: training is finished" in banner
    assert str(demo_info.synthetic_cache_dir()) in banner
    assert "Tumour Dice: tumour Dice on the phantoms is optimistic" in capsys.readouterr().out


def test_realistic_demo_says_what_its_tumour_dice_means_and_keeps_its_own_checkpoints(monkeypatch, capsys):
    import monai_effseg.workflows

    calls = []
    monkeypatch.setattr(
        monai_effseg.workflows, "run_bundle", lambda root, configs, kind, literals: calls.append(literals)
    )
    seen = []
    monkeypatch.setattr(demo_info, "checkpoint_epoch", lambda ckpt_dir: seen.append(Path(ckpt_dir)))
    assert main(["demo", "kits_mss_unet", "--dataset", "realistic"]) == 0
    assert calls == [{"demo_dataset": "realistic"}]
    root = REPO / "bundles" / "kits_mss_unet"
    assert seen == [root / "models" / "demo_realistic"]
    out = capsys.readouterr().out
    assert "dataset: the realistic KiTS dataset" in out and "measured on the phantoms only" in out
    assert str(root / "eval/demo_realistic/holdout") in out
    assert "3 patients whose label maps the training never saw" in out.split("Tumour Dice:")[-1]
    with pytest.raises(SystemExit, match="has no liver"):
        main(["demo", "lits_dsts_unet", "--dataset", "realistic"])
    assert len(calls) == 1


def test_synthetic_cache_dir_matches_the_data_package(monkeypatch, tmp_path):
    from monai_effseg.data.synthetic import default_cache_dir

    assert demo_info.synthetic_cache_dir() == default_cache_dir()
    monkeypatch.setenv("EFFSEG_CACHE", str(tmp_path))
    assert demo_info.synthetic_cache_dir() == default_cache_dir() == tmp_path


@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_logs_per_epoch_not_per_iteration(bundle):
    handlers = json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text(encoding="utf-8"))["train"][
        "handlers"
    ]
    targets = [h.get("_target_") for h in handlers]
    assert "monai_effseg.handlers.EpochLossLogger" in targets
    for h in handlers:  # a StatsHandler on the trainer logs every iteration unless told not to
        if h.get("_target_") == "StatsHandler":
            assert h.get("iteration_log") is False


def test_epoch_loss_logger_logs_one_mean_per_epoch(caplog):
    import torch
    from ignite.engine import Engine

    from monai_effseg.handlers import EpochLossLogger

    losses = iter([1.0, 3.0, float("nan"), 2.0, 4.0, 6.0])
    engine = Engine(lambda e, batch: [{"loss": torch.tensor(next(losses))}])
    EpochLossLogger("train_loss", output_transform=lambda out: out[0]["loss"]).attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_effseg.handlers.epoch_log"):
        engine.run(range(3), max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "monai_effseg.handlers.epoch_log"]
    assert lines == [
        "Epoch 1/2 -- train_loss: 2.0000 (mean of 2 iterations)",
        "Epoch 2/2 -- train_loss: 4.0000 (mean of 3 iterations)",
    ]


def _engine_with_predefined_state(max_epochs: int = 2):
    """An ignite engine whose state is set before ``run``, as MONAI's ``Workflow`` does."""
    import torch
    from ignite.engine import Engine

    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = Engine(lambda e, batch: 0.0)
    engine.state.max_epochs, engine.state.epoch_length = max_epochs, 2
    return engine, model, optimizer


def test_fresh_start_is_not_reported_as_a_resume(tmp_path, caplog):
    from monai_effseg.handlers import ResumeFromLatest

    plain, _, _ = _engine_with_predefined_state()
    with caplog.at_level(logging.INFO):
        plain.run(range(2))
    assert any("resuming from iteration 0, epoch 0" in r.getMessage() for r in caplog.records)  # ignite's habit
    caplog.clear()
    engine, model, optimizer = _engine_with_predefined_state()
    with caplog.at_level(logging.INFO):
        ResumeFromLatest(tmp_path, {"model": model, "optimizer": optimizer}).attach(engine)
        engine.run(range(2))
    messages = [r.getMessage() for r in caplog.records]
    assert any("training from scratch" in m for m in messages)
    assert not any("resuming from iteration 0, epoch 0" in m for m in messages)


def test_each_validation_is_not_reported_as_a_resume(tmp_path, caplog):
    from monai_effseg.handlers import ResumeFromLatest

    engine, model, optimizer = _engine_with_predefined_state()
    evaluator, _, _ = _engine_with_predefined_state(max_epochs=1)
    evaluator.state.epoch = 3  # MONAI's evaluator runs at the trainer's epoch
    ResumeFromLatest(tmp_path, {"model": model, "optimizer": optimizer}, evaluator=evaluator).attach(engine)
    with caplog.at_level(logging.INFO):
        evaluator.run(range(2), max_epochs=4)
    assert not any("resuming from iteration 0" in r.getMessage() for r in caplog.records)


def test_an_inference_run_is_not_reported_as_a_resume(caplog):
    from monai_effseg.handlers import InferenceSummary

    evaluator, _, _ = _engine_with_predefined_state(max_epochs=1)
    InferenceSummary(datalist=[], output_dir=".", skip_bad_inputs=True).attach(evaluator)
    with caplog.at_level(logging.INFO):
        evaluator.run(range(2))
    assert not any("resuming from iteration 0" in r.getMessage() for r in caplog.records)


def test_resuming_a_finished_run_says_that_nothing_is_left(tmp_path, caplog):
    from monai_effseg.handlers import ResumeFromLatest, TrainingCheckpointSaver

    engine, model, optimizer = _engine_with_predefined_state(max_epochs=2)
    TrainingCheckpointSaver(tmp_path, {"model": model, "optimizer": optimizer}).attach(engine)
    engine.run(range(2))
    assert demo_info.checkpoint_epoch(tmp_path) == 2
    again, model, optimizer = _engine_with_predefined_state(max_epochs=2)
    ResumeFromLatest(tmp_path, {"model": model, "optimizer": optimizer}).attach(again)
    with caplog.at_level(logging.WARNING, logger="monai_effseg.handlers.resume"):
        again.run(range(2))
    assert any("epoch 2 of 2: training is already finished" in r.getMessage() for r in caplog.records)


def test_overlay_has_a_colour_legend_naming_the_labels():
    import matplotlib.pyplot as plt

    from monai_effseg.visualize import LABEL_NAMES, overlay_figure

    label = np.zeros((8, 8, 4), np.uint8)
    label[2:6, 2:6, 1] = 1
    label[3:4, 3:4, 1] = 2
    fig = overlay_figure(np.zeros(label.shape, np.float32), label, label, "t", label_names=LABEL_NAMES["kits21"])
    try:
        assert len(fig.legends) == 1
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["kidney", "tumour", "cyst"]
    finally:
        plt.close(fig)
    fig = overlay_figure(np.zeros(label.shape, np.float32), label, label)
    try:
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["label 1", "label 2"]
    finally:
        plt.close(fig)


def test_best_and_worst_overlays_pass_the_label_names(monkeypatch, tmp_path):
    import monai_effseg.visualize as visualize

    seen = []
    monkeypatch.setattr(visualize, "save_overlay", lambda *a, label_names=None, **k: seen.append(label_names) or a[3])
    cases = [
        {"case_id": str(i), "image": "i", "label": "l", "pred": "p", "tumor_dice": s} for i, s in enumerate((0.2, 0.8))
    ]
    visualize.save_best_and_worst(cases, "tumor_dice", tmp_path, label_names=visualize.LABEL_NAMES["lits"])
    assert seen == [{1: "liver", 2: "tumour"}] * 2


def test_loading_an_overlay_volume_raises_no_orientation_warning(tmp_path):
    import nibabel as nib

    from monai_effseg.visualize import load_ras

    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.diag([-1.0, -1.0, 1.0, 1.0])), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = load_ras(path)
    assert volume.shape == (3, 4, 5)
    assert not [w for w in caught if "Orientation" in str(w.message)]


def test_surface_dice_is_spelled_out_where_people_read_it():
    from monai_effseg.metrics.report import format_summary

    stats = {"mean": 0.5, "median": 0.5, "n": 2, "n_nan": 0}
    text = format_summary(
        {"n_cases": 2, "protocol": "kits21", "metrics": {"kidney_and_mass_dice": stats, "kidney_and_mass_sd": stats}}
    )
    assert "kidney_and_mass surface Dice" in text
    assert "_sd" not in text


def test_cpu_fallback_is_a_note_not_a_warning(monkeypatch, caplog):
    import torch

    from monai_effseg import utils

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(utils, "_noted_cpu", False)
    with caplog.at_level(logging.INFO, logger="monai_effseg.utils"):
        assert utils.select_device().type == "cpu"
        assert utils.select_device().type == "cpu"
    records = [r for r in caplog.records if r.name == "monai_effseg.utils"]
    assert [r.levelno for r in records] == [logging.INFO]

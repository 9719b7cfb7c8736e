"""Resume keeps the best model, checkpoints survive interruptions, and a damaged latest checkpoint falls back to the
previous one (issue 24, item 3)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_utils import REPO, configs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


def _engine(max_epochs: int):
    from ignite.engine import Engine

    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(engine, batch):
        optimizer.zero_grad()
        model(torch.ones(1, 1)).sum().backward()
        optimizer.step()
        return 0.0

    engine = Engine(step)
    engine.state.max_epochs, engine.state.epoch_length = max_epochs, 2
    return engine, model, optimizer


def _train(ckpt_dir: Path, max_epochs: int, resume: bool = True):
    from monai_effseg.handlers import ResumeFromLatest, TrainingCheckpointSaver

    engine, model, optimizer = _engine(max_epochs)
    if resume:
        ResumeFromLatest(ckpt_dir, {"model": model, "optimizer": optimizer}).attach(engine)
    TrainingCheckpointSaver(ckpt_dir, {"model": model, "optimizer": optimizer}, n_saved=2).attach(engine)
    engine.run(range(2))
    return engine


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    _train(tmp_path, max_epochs=3)
    latest, previous = tmp_path / "checkpoint_epoch=3.pt", tmp_path / "checkpoint_epoch=2.pt"
    assert latest.is_file() and previous.is_file()
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="monai_effseg.handlers.resume"):
        engine = _train(tmp_path, max_epochs=4)
    warning = next(r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage())
    assert str(latest) in warning and str(previous) in warning
    # resumed at epoch 2: epochs 3 and 4 ran again, 2 iterations each
    assert engine.state.epoch == 4 and engine.state.iteration == 8
    assert torch.load(tmp_path / "checkpoint_epoch=4.pt", weights_only=True)["trainer"]["iteration"] == 8


def test_no_readable_checkpoint_names_every_file_and_keeps_them(tmp_path):
    _train(tmp_path, max_epochs=2)
    for path in tmp_path.glob("checkpoint_epoch=*.pt"):
        path.write_bytes(b"")
    with pytest.raises(RuntimeError) as err:
        _train(tmp_path, max_epochs=3)
    message = str(err.value)
    assert "checkpoint_epoch=1.pt" in message and "checkpoint_epoch=2.pt" in message and "train from scratch" in message
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """An interruption while epoch 3's checkpoint is written: epoch 2's is still there and loads (MONAI's saver
    removed the old file first and wrote the new one in place)."""
    real_save, calls = torch.save, []

    def save_then_interrupt(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            (f.write if hasattr(f, "write") else Path(f).write_bytes)(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, max_epochs=4, resume=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    assert torch.load(tmp_path / "checkpoint_epoch=2.pt", weights_only=True)["trainer"]["iteration"] == 4
    engine = _train(tmp_path, max_epochs=4)
    assert engine.state.iteration == 8


# ------------------------------------------------------------------ a real bundle, interrupted by signals

BUNDLE = REPO / "bundles" / "kits_nnunet_baseline"


# Epochs take a fraction of a second (0.3 s with the class-aware crop): enough of them that a signal sent when a
# checkpoint appears still lands before the run ends, even when the polling test process is slow to be scheduled on a
# loaded machine (30 were too few under a full test run: the second run finished before its SIGINT landed).
EPOCHS = 100


def _command(data: Path, work: Path) -> list[str]:
    overrides = {
        "dataset_dir": str(data), "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"),
        "max_epochs": EPOCHS, "iterations_per_epoch": 1, "val_interval": 1, "batch_size": 1,
        "patch_size": [32, 32, 16], "features": [4, 8, 16], "run": ["$@train#trainer.run()"],
    }  # fmt: skip
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           json.dumps(configs(BUNDLE, "train.json", "demo.json")), "--bundle_root", str(BUNDLE),
           "--meta_file", configs(BUNDLE, "metadata.json")[0]]  # fmt: skip
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return cmd


def _saved_after(models: Path, epoch: int):
    """True once a checkpoint of an epoch after ``epoch`` exists. Waiting for one file was fragile: the saver keeps
    the newest two, half a second of epochs, and a fresh clone's run finished its 100 epochs while the test waited
    for ``checkpoint_epoch={epoch + 1}.pt``."""
    return lambda: any(int(p.stem.split("=")[1]) > epoch for p in models.glob("checkpoint_epoch=*.pt"))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_until(cmd: list[str], log: Path, stop_when, sig: int) -> int:
    """Run ``cmd``; once ``stop_when()`` is true send ``sig``. Returns the exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        # a shell's background job (nohup ... &) ignores SIGINT, and its children inherit that: give the run the
        # default disposition, so that Python turns SIGINT into KeyboardInterrupt as in a terminal
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_default_sigint)
        deadline = time.monotonic() + 120
        while stop_when is not None and proc.poll() is None and time.monotonic() < deadline:
            if stop_when():
                proc.send_signal(sig)
                break
            time.sleep(0.05)
        return proc.wait(timeout=120)


def _best(models: Path) -> dict:
    return json.loads((models / "model.pt.best.json").read_text(encoding="utf-8"))


def test_sigterm_then_sigint_then_same_command_resumes_and_keeps_the_best_model(tmp_path):
    from monai_effseg.data import synthetic_dataset

    data = synthetic_dataset("kits", num_cases=3, seed=7, shape=(48, 48, 24), root=tmp_path / "cache")
    models, cmd = tmp_path / "models", _command(data, tmp_path)

    rc = _run_until(cmd, tmp_path / "run1.log", _saved_after(models, 0), signal.SIGTERM)
    log1 = (tmp_path / "run1.log").read_text(encoding="utf-8")
    assert rc != 0, "SIGTERM did not stop the run:\n" + log1[-3000:]
    stopped_at = max(int(p.stem.split("=")[1]) for p in models.glob("checkpoint_epoch=*.pt"))
    best1, model1 = _best(models), (models / "model.pt").read_bytes()

    rc = _run_until(cmd, tmp_path / "run2.log", _saved_after(models, stopped_at), signal.SIGINT)
    log2 = (tmp_path / "run2.log").read_text(encoding="utf-8")
    assert rc != 0, "SIGINT did not stop the run:\n" + log2[-3000:]
    assert "resumed from" in log2 and f"checkpoint_epoch={stopped_at}.pt" in log2, log2[-3000:]
    best2 = _best(models)

    rc = _run_until(cmd, tmp_path / "run3.log", None, 0)
    log3 = (tmp_path / "run3.log").read_text(encoding="utf-8")
    assert rc == 0, log3[-3000:]
    assert "resumed from" in log3
    final = torch.load(models / f"checkpoint_epoch={EPOCHS}.pt", weights_only=True)
    # the epochs continued: one iteration per epoch in all, whatever ran twice after a signal
    assert final["trainer"]["max_epochs"] == EPOCHS and final["trainer"]["iteration"] == EPOCHS
    best3 = _best(models)
    # the best metric only ever improves, and the checkpoint carries the same best as model.pt's record
    assert best1["best_metric"] <= best2["best_metric"] <= best3["best_metric"]
    assert final["best_metric"] == {k: best3[k] for k in ("best_metric", "best_metric_epoch")}
    if best2["best_metric"] == best1["best_metric"]:
        assert best2["best_metric_epoch"] == best1["best_metric_epoch"]
    # model.pt was replaced only by a better model: unchanged unless the record moved
    if best3["best_metric"] == best1["best_metric"]:
        assert (models / "model.pt").read_bytes() == model1
    # no validation after a resume counted as a new best below the restored one
    for log in (log2, log3):
        for line in log.splitlines():
            if "new best" in line and "saved" in line:
                value = float(line.split("new best")[1].split()[1])
                assert value > best1["best_metric"], line
    assert not list(models.glob("tmp*")), "a temporary checkpoint file was left behind"

"""MONAI model-zoo conformance for every bundle under bundles/ (later bundles get these checks for free).

What the zoo's CI checks (its exact chain on ``inference.json``: test_zoo_ci.py): metadata schema,
``verify_net_in_out`` of ``train.json``, ``ckpt_export`` at demo sizes (TorchScript equal to eager),
``ConfigWorkflow.check_properties`` for train and infer; plus a 1-iteration training run with resume, an inference
run on tiny synthetic data and a 2-process gloo run of ``multi_gpu_train.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import BUNDLE_IDS, BUNDLES, configs, demo_value, read_json, synthetic_kind, tiny_overrides
from monai.bundle import ConfigWorkflow, ckpt_export, verify_net_in_out

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")

REQUIRED_FILES = ["LICENSE", "configs/metadata.json", "configs/train.json", "configs/demo.json",
                  "configs/inference.json", "configs/evaluate.json", "configs/multi_gpu_train.json",
                  "configs/logging.conf", "docs/README.md"]  # fmt: skip


@pytest.fixture(params=BUNDLES, ids=BUNDLE_IDS)
def bundle(request) -> Path:
    return request.param


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    from monai_effseg.data import synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    # synthetic_dataset caches by its parameters: each kind is generated once per module
    return lambda kind: synthetic_dataset(kind, num_cases=3, seed=7, shape=(48, 48, 24), root=root)


@pytest.fixture
def tiny_data(bundle, tiny_synthetic) -> Path:
    """A tiny synthetic dataset of the kind the bundle trains on (KiTS, or LiTS for the LiTS-protocol bundles)."""
    return tiny_synthetic(synthetic_kind(bundle))


def test_bundle_files(bundle):
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    assert not missing, f"{bundle.name} lacks {missing}"


def test_metadata_schema(bundle, test_data):
    schema = read_json(test_data / "schemas" / "meta_schema_20240725.json")
    meta = read_json(bundle / "configs" / "metadata.json")
    jsonschema.validate(meta, schema)
    assert meta["version"] in meta["changelog"]
    assert "monai_effseg" in meta["required_packages_version"]
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["channel_def"] and fmt["outputs"]["pred"]["channel_def"]
    assert len(fmt["outputs"]["pred"]["channel_def"]) == fmt["outputs"]["pred"]["num_channels"]


def test_verify_net_in_out_train_config(bundle):
    # at the zoo's defaults (n = p = any = 1); inference.json, with ckpt_export, is the zoo's own check: test_zoo_ci.py
    verify_net_in_out(
        net_id="network_def",
        meta_file=configs(bundle, "metadata.json")[0],
        config_file=configs(bundle, "train.json")[0],
        device="cpu",
        bundle_root=str(bundle),
    )


def _flat_images(dataset_dir: Path, dest: Path) -> Path:
    """The images of a dataset as one flat folder, the way a clinician's scan folder looks."""
    from monai_effseg.data import build_datalist

    dest.mkdir(parents=True, exist_ok=True)
    for item in build_datalist(dataset_dir):
        (dest / f"{item['case_id']}.nii.gz").write_bytes(Path(item["image"]).read_bytes())
    return dest


@pytest.mark.parametrize("workflow_type,files", [("train", ["train.json"]), ("inference", ["inference.json"])])
def test_check_properties(bundle, workflow_type, files, tiny_data, tmp_path):
    # check_properties instantiates every required property, so it runs on tiny real data, like the zoo's CI
    data = (
        {"dataset_dir": str(tiny_data)}
        if workflow_type == "train"
        else {"input_dir": str(_flat_images(tiny_data, tmp_path / "scans")), "output_dir": str(tmp_path / "segs")}
    )
    workflow = ConfigWorkflow(
        config_file=configs(bundle, *files),
        meta_file=configs(bundle, "metadata.json")[0],
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        ckpt_dir=str(tmp_path / "models"),
        **data,
        **({"output_dir": str(tmp_path / "eval")} if workflow_type == "train" else {}),
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    ids = ["bundle_root", "device", "dataset_dir", "network_def", "network"]
    ids += (["train#trainer", "train#dataset", "train#handlers", "validate#evaluator", "val_interval"]
            if workflow_type == "train" else ["preprocessing", "inferer", "postprocessing"])  # fmt: skip
    missing = [i for i in ids if i not in workflow.parser]
    assert not missing, f"{bundle.name} {files} lacks the ids MONAI Label and the zoo use: {missing}"


def test_ckpt_export_equals_eager(bundle, tmp_path):
    overrides = demo_value(bundle, "demo_inference_overrides")
    overrides = {k: v for k, v in overrides.items() if k not in ("ckpt_path", "fingerprint_path")}
    parser = ConfigWorkflow(
        config_file=configs(bundle, "inference.json"), workflow_type=None, bundle_root=str(bundle), **overrides
    ).parser
    net = parser.get_parsed_content("network_def").eval()
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts_path = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(ckpt),
        meta_file=configs(bundle, "metadata.json")[0],
        config_file=configs(bundle, "inference.json")[0],
        bundle_root=str(bundle),
        **overrides,
    )
    scripted = torch.jit.load(str(ts_path))
    channels = read_json(bundle / "configs" / "metadata.json")["network_data_format"]["inputs"]["image"]["num_channels"]
    x = torch.randn(1, channels, *parser.get_parsed_content("patch_size"))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def _one_epoch_overrides(bundle: Path, tiny_data: Path, tmp_path: Path) -> dict:
    """Command-line overrides for a 1-epoch, 1-iteration run on the tiny dataset, writing under ``tmp_path``."""
    return {
        "dataset_dir": str(tiny_data),
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "eval"),
        "max_epochs": 1,
        "iterations_per_epoch": 1,
        "val_interval": 1,
        "batch_size": 1,
        **tiny_overrides(bundle),
    }


def _train(bundle: Path, data_dir: Path, work: Path, max_epochs: int) -> None:
    from monai_effseg.workflows import run_bundle

    overrides = {**_one_epoch_overrides(bundle, data_dir, work), "max_epochs": max_epochs}
    run_bundle(bundle, ["train.json", "demo.json"], "train", run=["$@train#trainer.run()"], **overrides)


def test_one_iteration_training_then_resume(bundle, tiny_data, tmp_path):
    _train(bundle, tiny_data, tmp_path, max_epochs=1)
    models = tmp_path / "models"
    state = torch.load(models / "model.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert (models / "checkpoint_epoch=1.pt").is_file() and (models / "fingerprint.json").is_file()
    assert (tmp_path / "eval" / "split.json").is_file()
    assert list((tmp_path / "eval" / "runs").glob("events.out.tfevents.*")), "no TensorBoard log"
    # an interrupted run continues from its last checkpoint instead of starting again
    _train(bundle, tiny_data, tmp_path, max_epochs=2)
    resumed = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    # ignite stores the iteration count: 1 before the interruption + 1 after, not 1 + 2
    assert resumed["trainer"]["iteration"] == 2 and resumed["trainer"]["max_epochs"] == 2
    # the previous checkpoint is kept (n_saved=2) as the fallback for a damaged latest one, older ones go
    kept = sorted(p.name for p in models.glob("checkpoint_epoch=*.pt"))
    assert kept == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    assert set(resumed["best_metric"]) == {"best_metric", "best_metric_epoch"}


def test_inference_writes_input_geometry_and_skips_bad_files(bundle, tiny_data, tmp_path, capfd):
    from monai_effseg.data import build_datalist, load_or_compute_fingerprint
    from monai_effseg.workflows import run_bundle

    inputs = _flat_images(tiny_data, tmp_path / "scans")
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti file")
    overrides = demo_value(bundle, "demo_inference_overrides")
    ckpt = tmp_path / "model.pt"
    net = ConfigWorkflow(
        config_file=configs(bundle, "inference.json"), workflow_type=None, bundle_root=str(bundle), **overrides
    ).parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), ckpt)
    fingerprint = tmp_path / "fingerprint.json"
    load_or_compute_fingerprint(build_datalist(tiny_data), fingerprint)
    overrides.update(ckpt_path=str(ckpt), fingerprint_path=str(fingerprint), **tiny_overrides(bundle))
    overrides["skip_bad_inputs"] = (
        True  # without it the run fails after writing the others (test_inference_reliability)
    )
    out = tmp_path / "segs"
    run_bundle(bundle, ["inference.json"], "inference", input_dir=str(inputs), output_dir=str(out), **overrides)
    # the bundle's logging.conf replaces pytest's log handler, so read what reached the terminal
    assert "broken.nii.gz" in "".join(capfd.readouterr())
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == sorted(p.name for p in inputs.glob("*.nii.gz") if p.name != "broken.nii.gz")
    for name in written:
        src, seg = nib.load(inputs / name), nib.load(out / name)
        assert seg.shape == src.shape
        np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
        labels = np.unique(np.asarray(seg.dataobj))
        assert set(labels.tolist()) <= set(range(overrides["num_classes"]))


def _bundle_run_command(bundle: Path, config_files: list, overrides: dict) -> list:
    cmd = ["-m", "monai.bundle", "run", "--config_file", json.dumps(config_files), "--bundle_root", str(bundle),
           "--meta_file", configs(bundle, "metadata.json")[0]]  # fmt: skip
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return cmd


def _run_demo(bundle: Path, tiny_data: Path, tmp_path: Path, **network) -> None:
    """README's "CPU demo" command as a user types it (a fresh interpreter, only the configs' own imports), at tiny
    sizes: training, then the hold-out evaluation that demo.json's ``run`` adds."""
    overrides = {**_one_epoch_overrides(bundle, tiny_data, tmp_path), **network}
    if "stage_overrides" in read_json(bundle / "configs" / "demo.json"):
        # the LiTS demos train their tumour stage in a second workflow, which gets only these keys
        overrides["stage_overrides"] = dict(overrides)
    overrides["holdout_dir"] = str(tiny_data)
    cmd = [sys.executable] + _bundle_run_command(bundle, configs(bundle, "train.json", "demo.json"), overrides)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = read_json(tmp_path / "eval" / "holdout" / "metrics_summary.json")
    assert summary, "the hold-out evaluation wrote an empty summary"


def test_demo_command_runs_training_and_holdout_evaluation(bundle, tiny_data, tmp_path):
    _run_demo(bundle, tiny_data, tmp_path)


def _network_keys(node) -> set[str]:
    """The top-level keys that a config node references with ``@key`` (the ids before any ``#``)."""
    return set(re.findall(r"@([A-Za-z_]\w*)", json.dumps(node)))


def test_demo_holdout_evaluation_gets_every_network_key_the_training_sets(bundle):
    """Every key that shapes inference.json's network and that the training configs set (so that a user can
    override it on the demo's command line) is forwarded to the hold-out evaluation, which otherwise builds the
    default network and fails to load the trained one."""
    inference = read_json(bundle / "configs" / "inference.json")
    training = {**read_json(bundle / "configs" / "train.json"), **read_json(bundle / "configs" / "demo.json")}
    forwarded = set(training["demo_inference_overrides"])
    shaping = {key for key in _network_keys(inference["network_def"]) if key in training}
    assert shaping, "inference.json's network references no key: the check would pass vacuously"
    assert shaping <= forwarded, f"not forwarded to the hold-out evaluation: {sorted(shaping - forwarded)}"


USER_FLAGS = {"amp", "optimize"}  # bool-valued expressions by default; the others default to a JSON bool
SET_BY_THE_CONFIG = {"rank0"}  # a flag the multi-GPU config computes, not one a user types


def test_every_user_flag_is_read_through_as_flag(bundle):
    """``--optimize false`` reaches the config as the text "false", which is true: every reference to a flag goes
    through ``monai_effseg.utils.as_flag``, which reads true/false text as the bool it says."""
    files = {path: read_json(path) for path in sorted((bundle / "configs").glob("*.json"))}
    defaults = {k for config in files.values() for k, v in config.items() if isinstance(v, bool) and "#" not in k}
    flags = (USER_FLAGS | defaults) - SET_BY_THE_CONFIG
    assert {"amp", "optimize", "skip_bad_inputs"} <= flags
    for path, config in files.items():
        text = json.dumps(config)
        for flag in flags:
            bare = re.findall(rf"(?<!as_flag\()@{flag}(?![\w#])", text)
            assert not bare, f"{path.name}: @{flag} read without monai_effseg.utils.as_flag"


NON_DEFAULT_NETWORKS = {
    "kits_efficientunet": {"encoder": "efficientnet-b0", "decoder": "mbconv"},
    "kits_mss_unet": {"classic_unet": True},
    "kits_residual_unet": {"residual": False, "deep_supervision": False},
}


@pytest.mark.parametrize(
    "bundle,network",
    [(b, NON_DEFAULT_NETWORKS[b.name]) for b in BUNDLES if b.name in NON_DEFAULT_NETWORKS],
    ids=[b.name for b in BUNDLES if b.name in NON_DEFAULT_NETWORKS],
    indirect=["bundle"],
)
def test_demo_with_a_non_default_network(bundle, network, tiny_data, tmp_path):
    """The demo trains and evaluates the network chosen on its command line, not only the default one."""
    _run_demo(bundle, tiny_data, tmp_path, **network)


def test_two_process_gloo_training(bundle, tiny_data, tmp_path):
    overrides = _one_epoch_overrides(bundle, tiny_data, tmp_path)
    files = configs(bundle, "train.json", "demo.json", "multi_gpu_train.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += _bundle_run_command(bundle, files, overrides)
    # a rank that dies on a signal prints its Python stacks (faulthandler), so that a failure here says where
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "models" / "checkpoint_epoch=1.pt").is_file()
    # rank 0 alone logs: TensorBoard names each event file after the process that wrote it (..<host>.<pid>.<n>)
    writers = {path.name.split(".")[-2] for path in tmp_path.glob("**/events.out.tfevents.*")}
    assert len(writers) == 1, f"TensorBoard event files from {len(writers)} processes"

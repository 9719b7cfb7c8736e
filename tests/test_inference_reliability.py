"""Issue 24, inference side: no input is ever overwritten, the output folder is checked before the model runs, skips
are summarised and fail the run unless accepted, and a bundle run's last lines name the bad file and the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import BUNDLE_IDS, BUNDLES, configs, demo_value, synthetic_kind
from ignite.engine import Engine
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor
from test_data_io import _ct as _zyx_ct
from test_data_io import _write_dicom_series

from monai_effseg.data import OutputLocationError, inference_datalist, inspect_image, load_fingerprint, validate_image
from monai_effseg.errors import format_root_cause
from monai_effseg.handlers import CheckedCheckpointLoader, CheckpointMismatchError
from monai_effseg.transforms import SavePredictiond

SPACING = np.diag([0.8, 0.8, 3.0, 1.0])


def _ct(shape=(40, 40, 8), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000.0, np.float32)
    image[5:-5, 5:-5] = 40.0
    return image + rng.normal(0, 5, shape).astype(np.float32)


def _save(path: Path, array: np.ndarray, affine=SPACING) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), str(path))
    return path


def _scans(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _save(folder / f"case_{i}.nii.gz", _ct(seed=i))
    return folder


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- 1. inputs are never overwritten ---------------------------------------------------------------------------------


def test_output_dir_equal_to_or_inside_input_dir_is_refused(tmp_path):
    scans = _scans(tmp_path / "scans")
    before = _snapshot(scans)
    with pytest.raises(
        OutputLocationError, match=r"is the input folder .*pass another --output_dir, e\.g\. .*scans_seg"
    ):
        inference_datalist(scans, output_dir=scans)
    with pytest.raises(OutputLocationError, match="is inside the input folder"):
        inference_datalist(scans, output_dir=scans / "segs")
    # the same folder spelt differently
    with pytest.raises(OutputLocationError, match="is the input folder"):
        inference_datalist(scans, output_dir=str(scans) + "/./")
    assert _snapshot(scans) == before and not (scans / "segs").exists()


def test_single_input_file_in_the_output_dir_is_refused(tmp_path):
    scan = _scans(tmp_path / "scans", 1) / "case_0.nii.gz"
    before = scan.read_bytes()
    with pytest.raises(OutputLocationError, match=r"case_0.nii.gz would overwrite the input .*case_0.nii.gz"):
        inference_datalist(scan, output_dir=scan.parent)
    assert scan.read_bytes() == before
    assert len(inference_datalist(scan, output_dir=tmp_path / "segs")) == 1


def test_save_prediction_refuses_to_write_over_its_input(tmp_path):
    scan = _scans(tmp_path / "scans", 1) / "case_0.nii.gz"
    before = scan.read_bytes()
    pred = MetaTensor(torch.zeros(1, 40, 40, 8), affine=torch.as_tensor(SPACING), meta={"filename_or_obj": str(scan)})
    with pytest.raises(FileExistsError, match="over its input"):
        SavePredictiond("pred", output_dir=scan.parent)({"pred": pred, "case_id": "case_0"})
    assert scan.read_bytes() == before


# -- 4. the output folder is checked before any work -----------------------------------------------------------------


def test_unwritable_output_dir_fails_before_reading_inputs(tmp_path, monkeypatch):
    scans = _scans(tmp_path / "scans")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    read = []
    monkeypatch.setattr("monai_effseg.data.io.inspect_image", lambda *a, **k: read.append(a) or ([], []))
    with pytest.raises(OutputLocationError, match=r"a_file is a file, not a folder; pass another --output_dir"):
        inference_datalist(scans, output_dir=blocker)
    with pytest.raises(OutputLocationError, match=r"a_file/segs cannot be written .*pass a writable --output_dir"):
        inference_datalist(scans, output_dir=blocker / "segs")
    assert read == []  # refused before any input was read
    assert blocker.read_text(encoding="utf-8") == "x"


# -- wrong inputs that used to be segmented silently -----------------------------------------------------------------


def test_mr_volume_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    mr = rng.uniform(0, 800, (40, 40, 8)).astype(np.float32)
    mr[0, 0, 0], mr[1, 1, 1] = -47, 833  # passes the plain range checks: negative minimum, range > 100
    path = _save(tmp_path / "t1.nii.gz", mr)
    (problem,) = validate_image(path)
    assert problem.startswith(f"{path}: only 0.00% of the voxels are below -500 HU") and "MR" in problem


@pytest.mark.parametrize("value", [0.0, -1000.0, 40.0])
def test_constant_volume_is_named_blank(tmp_path, value):
    path = _save(tmp_path / "blank.nii.gz", np.full((20, 20, 6), value, np.float32))
    (problem,) = validate_image(path)
    assert problem == f"{path}: every voxel is {value:g}: a blank (constant) volume, not a CT scan"


def test_tiny_field_of_view_is_warned_with_spacings(tmp_path):
    path = _save(tmp_path / "zoomed.nii.gz", _ct((120, 120, 20)), np.diag([0.3, 0.3, 1.0, 1.0]))
    kits = load_fingerprint(None, default="kits19")
    problems, (warning,) = inspect_image(path, kits)
    assert problems == []
    assert warning.startswith(f"{path}: spacing (0.3, 0.3, 1) mm, field of view (36, 36, 20) mm")
    assert "training spacing (0.781, 0.781, 3) mm" in warning and "under 100 mm" in warning
    items = inference_datalist(path, fingerprint=kits)
    assert len(items) == 1 and items.warnings == [warning] and items.skipped == []
    assert inspect_image(_save(tmp_path / "normal.nii.gz", _ct((400, 400, 4)), np.diag([0.8, 0.8, 3, 1])), kits) == (
        [],
        [],
    )


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    series = tmp_path / "series"
    _write_dicom_series(series, _zyx_ct((8, 21, 22)))
    assert validate_image(series) == []
    (series / "IM0004.dcm").unlink()
    (problem,) = validate_image(series)
    assert problem.startswith(f"{series}: DICOM series slices are unevenly spaced: 1 gap(s), the largest 5 mm")
    assert "export the complete series" in problem


def test_single_dicom_file_asks_for_the_series_folder(tmp_path):
    series = tmp_path / "series"
    _write_dicom_series(series, _zyx_ct((4, 21, 22)))
    one = series / "IM0001.dcm"
    (problem,) = validate_image(one)
    assert (
        problem == f"{one}: a single DICOM file is one slice; pass the folder that holds the whole series "
        f"(--input_dir {series})"
    )


def test_folder_with_a_single_dicom_file_says_so(tmp_path):
    series = tmp_path / "series"
    _write_dicom_series(series, _zyx_ct((4, 21, 22)))
    for extra in sorted(series.iterdir())[1:]:
        extra.unlink()
    with pytest.raises(Exception) as caught:
        inference_datalist(series)
    assert f"{series}: holds a single DICOM file (IM0000.dcm), i.e. one slice" in str(caught.value)
    assert "does not exist" not in str(caught.value)


# -- checkpoints that do not fit -------------------------------------------------------------------------------------


def test_checkpoint_of_other_widths_names_the_file_and_the_fix(tmp_path, caplog):
    ckpt = tmp_path / "model.pt"
    torch.save(torch.nn.Conv3d(1, 16, 3).state_dict(), ckpt)
    loader = CheckedCheckpointLoader(
        str(ckpt), {"model": torch.nn.Conv3d(1, 32, 3)}, fingerprint_path=str(tmp_path / "fingerprint.json")
    )
    with caplog.at_level("WARNING", logger="monai_effseg"):
        with pytest.raises(
            CheckpointMismatchError, match=rf"checkpoint {ckpt} does not fit .*size mismatch for weight.*--features"
        ):
            loader(Engine(lambda e, b: None))
    assert f"{ckpt} has no fingerprint {tmp_path / 'fingerprint.json'}" in caplog.text
    missing = CheckedCheckpointLoader(str(tmp_path / "none.pt"), {"model": torch.nn.Conv3d(1, 32, 3)})
    with pytest.raises(FileNotFoundError, match=r"none.pt does not exist: train the bundle first .*--ckpt_path"):
        missing(Engine(lambda e, b: None))


def test_root_cause_is_reported_for_wrapped_errors():
    try:
        try:
            raise ValueError("/scans/a.nii.gz: unreadable")
        except ValueError as inner:
            raise RuntimeError('Failed to evaluate ConfigExpression: "$..."') from inner
    except RuntimeError as outer:
        assert format_root_cause(outer).splitlines()[-1] == "ValueError: /scans/a.nii.gz: unreadable"
    assert format_root_cause(ValueError("plain")) is None


# -- 5 and 6: real `python -m monai.bundle run` of every bundle --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    from monai_effseg.data import synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return lambda kind: synthetic_dataset(kind, num_cases=2, seed=7, shape=(48, 48, 24), root=root)


def _bundle_cli(bundle: Path, work: Path, input_dir: Path, output_dir: Path, **extra) -> subprocess.CompletedProcess:
    overrides = demo_value(bundle, "demo_inference_overrides")
    net = ConfigWorkflow(config_file=configs(bundle, "inference.json"), workflow_type=None, bundle_root=str(bundle),
                         **overrides).parser.get_parsed_content("network_def")  # fmt: skip
    torch.save(net.state_dict(), work / "model.pt")
    overrides.update(ckpt_path=str(work / "model.pt"), fingerprint_path=str(work / "fingerprint.json"),
                     input_dir=str(input_dir), output_dir=str(output_dir), **extra)  # fmt: skip
    return _bundle_run(bundle, "inference.json", overrides)


def _bundle_run(bundle: Path, config: str, overrides: dict) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` of one config with ``overrides`` as command-line arguments (fire reads Python
    literals: ``None``, not JSON's ``null``), one thread, stdout and stderr together."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs(bundle, config)[0],
           "--bundle_root", str(bundle), "--meta_file", configs(bundle, "metadata.json")[0]]  # fmt: skip
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else repr(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                          errors="replace", timeout=300, env=env)  # fmt: skip


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_bundle_run_refuses_in_place_output_and_ends_on_the_skipped_file(bundle, tiny_synthetic, tmp_path):
    from monai_effseg.data import build_datalist

    scans = tmp_path / "scans"
    scans.mkdir()
    for item in build_datalist(tiny_synthetic(synthetic_kind(bundle))):
        (scans / f"{item['case_id']}.nii.gz").write_bytes(Path(item["image"]).read_bytes())
    broken = scans / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    before = _snapshot(scans)

    # output folder = input folder: refused before the model runs, inputs byte-identical, the last lines say so
    proc = _bundle_cli(bundle, tmp_path, scans, scans)
    last = "\n".join(proc.stdout.strip().splitlines()[-5:])
    assert proc.returncode != 0 and _snapshot(scans) == before, proc.stdout[-3000:]
    assert f"output_dir {scans} is the input folder" in last and "pass another --output_dir" in last, last

    # one bad input: the others are written, the run fails, and its last lines name the file and the reason
    out = tmp_path / "segs"
    proc = _bundle_cli(bundle, tmp_path, scans, out)
    last = "\n".join(proc.stdout.strip().splitlines()[-5:])
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert f"{broken}: unreadable" in last and "--skip_bad_inputs true" in last, last
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == sorted(n for n in before if n != "broken.nii.gz")
    assert "inference summary: 2 written to" in proc.stdout and f"skipped: {broken}: unreadable" in proc.stdout


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.name in ("kits_nnunet_baseline", "lits_dsts_unet")],
                         ids=lambda b: b.name)  # fmt: skip
def test_training_run_ends_on_the_bad_case(bundle, tiny_synthetic, tmp_path):
    """A training dataset with a damaged image: ``python -m monai.bundle run`` of train.json fails and its last 5
    lines name the file and the reason, not MONAI's generic "Failed to evaluate ConfigExpression"."""
    import shutil

    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_synthetic(synthetic_kind(bundle)), dataset)
    bad = sorted(dataset.rglob("imaging.nii.gz") if "kits" in bundle.name else dataset.glob("volume-*.nii*"))[0]
    bad.write_bytes(b"not a nifti file")
    paths = {"dataset_dir": str(dataset), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    proc = _bundle_run(bundle, "train.json", paths)
    last = "\n".join(proc.stdout.strip().splitlines()[-5:])
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert str(bad) in last and "Failed to evaluate" not in last, last

"""The MONAI model zoo's CI (``ci/verify_bundle.py`` of Project-MONAI/model-zoo) on every bundle, the way the zoo
runs it: ``verify_net_in_out`` on ``network_def`` of ``configs/inference.json`` with MONAI's defaults (``n``, ``p``,
``any`` = 1, the full-size network as configured), then ``ckpt_export`` of ``models/model.pt`` (random weights of
that network here: no trained weights are shipped). On top of what the zoo checks: the exported module runs at the
metadata's shape, agrees with the eager network and returns the metadata's output shape and dtype.

``network_data_format`` must therefore name the smallest shape each network accepts: e.g. a U-Net with five
2x downsamplings in every axis gets ``64*n`` (at ``32*n``, ``n=1`` leaves one voxel at the bottleneck and
InstanceNorm refuses it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import monai.bundle
import pytest
import torch
from bundle_utils import BUNDLE_IDS, BUNDLES, configs, zoo_io
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_net_in_out

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(params=BUNDLES, ids=BUNDLE_IDS)
def bundle(request) -> Path:
    return request.param


def _network_def(bundle: Path, config: str = "inference.json") -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(configs(bundle, config))
    parser.update({"bundle_root": str(bundle)})
    return parser.get_parsed_content("network_def")


def test_zoo_ci_verify_export_and_run_exported(bundle, tmp_path):
    meta_file, config_file = configs(bundle, "metadata.json", "inference.json")
    # ci/verify_bundle.py: verify_data_shape
    verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=config_file, bundle_root=str(bundle),
                      device="cpu")  # fmt: skip
    # ci/verify_bundle.py: verify_torchscript (models/model.pt of the same network, random weights)
    torch.manual_seed(0)
    net = _network_def(bundle).eval()
    ckpt, exported_file = tmp_path / "model.pt", tmp_path / "verify_model.ts"
    torch.save(net.state_dict(), ckpt)
    ckpt_export(net_id="network_def", filepath=str(exported_file), ckpt_file=str(ckpt), meta_file=meta_file,
                config_file=config_file, bundle_root=str(bundle))  # fmt: skip
    exported = torch.jit.load(str(exported_file))
    # the exported module at the metadata's shape (n = p = any = 1)
    io = zoo_io(bundle)
    x = torch.rand(io["input_shape"], dtype=io["input_dtype"])
    with torch.no_grad():
        out = exported(x)
        assert isinstance(out, torch.Tensor), f"the exported module returns {type(out).__name__}, not one tensor"
        assert tuple(out.shape) == io["output_shape"] and out.dtype == io["output_dtype"]
        torch.testing.assert_close(out, net(x))


def test_zoo_ci_cascade_stage2_takes_image_and_stage1_segmentation():
    """The cascade's metadata describes ``forward`` at its default stage 1 (the CT alone). Stage 2 takes the CT and
    the stage-1 segmentation as 2 channels (the metadata's description), at the same shapes."""
    bundle = next(b for b in BUNDLES if b.name == "kits_unet_cascade")
    meta_file, config_file = configs(bundle, "metadata.json", "inference.json")
    with pytest.raises(RuntimeError, match="channels"):
        verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=config_file, device="cpu",
                          bundle_root=str(bundle), **{"network_def#stage": 2})  # fmt: skip
    stage2 = {"network_def#stage": 2, "_meta_#network_data_format#inputs#image#num_channels": 2}
    verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=config_file, device="cpu",
                      bundle_root=str(bundle), **stage2)  # fmt: skip


@pytest.mark.parametrize("name", ["kits_residual_unet", "lits_dsts_unet"])
def test_metadata_shape_holds_beyond_n_1(name):
    """The ``*n`` families hold beyond the zoo's ``n=1``, here at ``n=2``: anisotropic strides (``32*n, 32*n, 16*n``)
    and the LiTS 2.5D slab whose output has half its slices (8 in, 4 out)."""
    bundle = next(b for b in BUNDLES if b.name == name)
    io = zoo_io(bundle, n=2)
    with torch.no_grad():
        out = _network_def(bundle).eval()(torch.rand(io["input_shape"]))
    assert tuple(out.shape) == io["output_shape"]


def _causes(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__


def test_train_workflow_initialises_without_a_dataset(bundle, tmp_path):
    """``monai.bundle.load(..., workflow_type="train")`` initialises ``train.json`` to build the network: that needs no
    dataset (nor writes a fingerprint). Running the workflow needs one."""
    from monai_effseg.data import DatasetLayoutError

    dest = tmp_path / "zoo" / bundle.name
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("models", "eval", "runs", "outputs", "__pycache__"))
    (dest / "models").mkdir()
    torch.manual_seed(0)
    net = _network_def(bundle, "train.json")
    torch.save(net.state_dict(), dest / "models" / "model.pt")
    loaded = monai.bundle.load(name=bundle.name, bundle_dir=str(dest.parent), workflow_type="train", device="cpu")
    assert type(loaded) is type(net)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)

    missing = tmp_path / "no_dataset"
    workflow = ConfigWorkflow(config_file=configs(bundle, "train.json"), meta_file=configs(bundle, "metadata.json")[0],
                              workflow_type="train", bundle_root=str(dest), dataset_dir=str(missing),
                              ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"))  # fmt: skip
    workflow.initialize()
    assert not (tmp_path / "models" / "fingerprint.json").exists()
    with pytest.raises(Exception) as raised:
        workflow.run()
    assert any(isinstance(e, DatasetLayoutError) and str(missing) in str(e) for e in _causes(raised.value))

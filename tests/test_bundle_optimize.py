"""Issue 25: bundle inference runs :func:`~monai_effseg.deploy.optimize.optimize_for_inference`'s network on the
CPU (``inference.json``'s ``optimize`` key, on by default there), and it writes the eager network's segmentation.

Per bundle: ``inference.json`` at its demo sizes, random weights, run twice on the same scans (``optimize`` false,
then true) in this process; the network outputs must agree to float32 rounding and the label maps written be
identical but for voxels where class scores tie within that rounding. Plus the fallback of
:class:`~monai_effseg.deploy.optimize.OneDNNConv` when a torch build lacks its private oneDNN ops.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import BUNDLE_IDS, BUNDLES, configs, demo_value, synthetic_kind
from monai.bundle import ConfigParser, ConfigWorkflow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """``kind -> folder`` of 2 synthetic scans (48 x 48 x 24), generated once per kind."""
    from monai_effseg.data import build_datalist, synthetic_dataset

    root = tmp_path_factory.mktemp("optimize_data")
    cache = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in cache:
            data = synthetic_dataset(kind, num_cases=2, seed=11, shape=(48, 48, 24), root=root / "src")
            flat = root / kind
            flat.mkdir()
            for item in build_datalist(data):
                (flat / f"{item['case_id']}.nii.gz").write_bytes(Path(item["image"]).read_bytes())
            cache[kind] = (data, flat)
        return cache[kind]

    return get


def _counting(monkeypatch) -> list:
    """Record each network the bundle handler optimizes (the handler still runs the real optimize_for_inference)."""
    import monai_effseg.handlers.optimize as handler_module

    calls = []
    real = handler_module.optimize_for_inference

    def spy(network, **kwargs):
        calls.append(type(network).__name__)
        return real(network, **kwargs)

    monkeypatch.setattr(handler_module, "optimize_for_inference", spy)
    return calls


def _calibrated(net: torch.nn.Module, patch_size: list) -> torch.nn.Module:
    """BatchNorm running statistics from one random batch, as training leaves them calibrated. A fresh BN network
    (mean 0, variance 1) lets eval-mode activations grow layer after layer, so its outputs are small differences of
    huge numbers that no trained network computes (float32 rounding then moves them by 0.3%)."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = 1.0
    for stage in [getattr(net, n) for n in getattr(net, "inference_stages", ())] or [net]:
        if norms:
            first = next(m for m in stage.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
            with torch.no_grad():
                stage.train()(torch.randn(2, first.weight.shape[1], *patch_size))
    return net.eval()


def _run(bundle: Path, overrides: dict, out: Path, monkeypatch) -> tuple[dict, list]:
    """Run ``inference.json``; the label maps written and the network's scores: the inferer's output (``pred``
    before postprocessing) where it is scores (KiTS), each stage's probabilities where it is labels (LiTS); each
    with the input it was computed from."""
    from monai.engines.utils import IterationEvents

    from monai_effseg.inferers import LiverTumourInferer
    from monai_effseg.workflows import bundle_workflow

    scores = []
    stage_probabilities = LiverTumourInferer.probabilities
    with monkeypatch.context() as patch:

        def recording(self, x, net):
            scores.append((x.clone(), stage_probabilities(self, x, net)))
            return scores[-1][1]

        patch.setattr(LiverTumourInferer, "probabilities", recording)
        workflow = bundle_workflow(bundle, ["inference.json"], "inference", output_dir=str(out), **overrides)
        workflow.initialize()
        evaluator = workflow.parser.get_parsed_content("evaluator")
        evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda engine: scores.append(
            (engine.state.output["image"], torch.as_tensor(engine.state.output["pred"]).clone())))  # fmt: skip
        try:
            workflow.run()
        finally:
            workflow.finalize()
    # the optimized copy served only the run: the evaluator holds @network again, which is still the eager network
    from monai_effseg.deploy.onednn import OneDNNConv

    network = workflow.parser.get_parsed_content("network")
    assert evaluator.network is network and not any(isinstance(m, OneDNNConv) for m in network.modules())
    if isinstance(evaluator.inferer, LiverTumourInferer):
        scores = [s for s in scores if s[1].unique().numel() > 2]  # the stage probabilities, not the one-hot labels
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("*.nii.gz"))}, scores


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_optimized_bundle_inference_writes_the_eager_labels(bundle, scans, tmp_path, monkeypatch):
    """Same network outputs to float32 rounding, and the same label maps except where two classes' scores tie
    within that rounding. A random network ties far more often than a trained one (its class scores are all close;
    the LiTS ones put every voxel near the 0.5 liver threshold, and a flipped liver voxel changes stage 2's input and
    the largest component), so up to 1 voxel in 200 may differ here: most bundles write identical maps, the most seen
    is 111 of 78,336 (lits_shufflenet_unet), 12 of 76,032 for kits_efficientunet before its BN statistics were
    calibrated."""
    from monai_effseg.data import build_datalist, load_or_compute_fingerprint

    torch.set_num_threads(1)
    data, inputs = scans(synthetic_kind(bundle))
    overrides = demo_value(bundle, "demo_inference_overrides")
    parser = ConfigWorkflow(config_file=configs(bundle, "inference.json"), workflow_type=None,
                            bundle_root=str(bundle), **overrides).parser  # fmt: skip
    assert parser.get_parsed_content("optimize") is True, "optimize must default to on for a CPU device"
    torch.manual_seed(0)
    net = _calibrated(parser.get_parsed_content("network_def"), parser.get_parsed_content("patch_size"))
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    fingerprint = tmp_path / "fingerprint.json"
    load_or_compute_fingerprint(build_datalist(data), fingerprint)
    overrides.update(ckpt_path=str(ckpt), fingerprint_path=str(fingerprint), device="cpu", input_dir=str(inputs))

    calls = _counting(monkeypatch)
    labels, preds = {}, {}
    for optimize in (False, True):
        labels[optimize], preds[optimize] = _run(bundle, {**overrides, "optimize": optimize}, tmp_path / f"{optimize}",
                                                 monkeypatch)  # fmt: skip
        assert calls == ([type(net).__name__] if optimize else []), "optimize did not switch the network"
    assert len(preds[True]) == len(preds[False]) >= 2
    compared = 0
    for (fast_input, fast), (eager_input, eager) in zip(preds[True], preds[False]):
        # LiTS' stage 2 reads stage 1's thresholded liver mask: a voxel that tied at the threshold changes its input
        if torch.equal(torch.as_tensor(fast_input), torch.as_tensor(eager_input)):
            assert eager.std() > 0, "the scores compared vary over the image"
            torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5 * float(eager.abs().max()))
            compared += 1
    assert compared >= 2
    assert labels[True].keys() == labels[False].keys() and len(labels[True]) == 2
    for name, eager in labels[False].items():
        differ = int(np.count_nonzero(labels[True][name] != eager))
        assert differ <= eager.size // 200, f"{bundle.name} {name}: {differ} of {eager.size} voxels differ"


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_optimize_defaults_to_cpu_only(bundle):
    parser = ConfigParser()
    parser.read_config(configs(bundle, "inference.json"))
    parser.update({"bundle_root": str(bundle)})
    for device, expected in (("cpu", True), ("cuda:0", False), (torch.device("cuda", 1), False)):
        parser["device"] = device
        assert parser.get_parsed_content("optimize", lazy=False) is expected


# ---------------------------------------------------------------------------------------------------------------
# OneDNNConv on a torch build without the private oneDNN ops
# ---------------------------------------------------------------------------------------------------------------
def _fusing_net() -> torch.nn.Module:
    """An EfficientNet U-Net whose optimized form uses all three oneDNN ops: plain convs, conv + SiLU (after BN
    folding) and conv + residual (MBConv blocks and the concat-free decoder), with warmed-up BN statistics."""
    from monai_effseg.nets import EfficientUNet

    torch.manual_seed(0)
    net = EfficientUNet("efficientnet-b0", "nnunet", out_channels=3, decoder_channels=[8, 8, 16, 16, 16],
                        encoder_kwargs={"width_coefficient": 0.25, "depth_coefficient": 0.3,
                                        "drop_connect_rate": 0.0})  # fmt: skip
    return _calibrated(net, [32, 32, 32])


@pytest.fixture
def fresh_op_lookup():
    from monai_effseg.deploy import onednn

    onednn._checked_op.cache_clear()
    yield onednn
    onednn._checked_op.cache_clear()


@pytest.mark.parametrize("role", ["conv", "pointwise", "binary"])
@pytest.mark.parametrize("replacement", ["mkldnn._no_such_convolution", "aten.relu"], ids=["missing", "other_op"])
def test_onednn_conv_falls_back_when_an_op_is_missing(role, replacement, fresh_op_lookup, monkeypatch):
    """A torch build lacking one of the ops (a name that does not resolve), or one whose op of that name computes
    something else (``aten.relu`` takes other arguments): that role runs the plain conv, the others stay oneDNN,
    and the network's outputs are the eager ones."""
    from monai_effseg.deploy.optimize import optimize_for_inference

    inference = fresh_op_lookup
    net = _fusing_net()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        eager = net(x)
    roles = {}  # how many conv calls of the optimized network use each op
    real_lookup = inference.onednn_op

    def counting_lookup(name):
        roles[name] = roles.get(name, 0) + 1
        return real_lookup(name)

    with monkeypatch.context() as patch, torch.no_grad():
        patch.setattr(inference, "onednn_op", counting_lookup)
        optimize_for_inference(net)(x)
    assert set(roles) == {"conv", "pointwise", "binary"}, roles  # the network exercises every role

    monkeypatch.setitem(inference.ONEDNN_OPS, role, replacement)
    assert inference.onednn_op(role) is None
    assert all(inference.onednn_op(other) is not None for other in inference.ONEDNN_OPS if other != role)
    plain_calls = []
    real_plain = inference.plain_conv
    monkeypatch.setattr(inference, "plain_conv", lambda *a: plain_calls.append(1) or real_plain(*a))
    fast = optimize_for_inference(net)
    with torch.no_grad():
        out = fast(x)
    assert len(plain_calls) == roles[role]  # every conv of that role, and only those, ran the fallback
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("attr,scalars", [("none", []), ("relu", []), ("swish", []), ("leaky_relu", [0.01])])
def test_onednn_conv_plain_path_equals_the_onednn_op(attr, scalars):
    """The fallback computes what each oneDNN op computes, for every fused activation and the residual add."""
    from monai_effseg.deploy.onednn import OneDNNConv

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 6, 3, padding=1)
    x, residual = torch.randn(1, 4, 8, 8, 8), torch.randn(1, 6, 8, 8, 8)
    fused = OneDNNConv(conv, (attr, scalars)) if attr != "none" else OneDNNConv(conv)
    with torch.no_grad():
        torch.testing.assert_close(fused.plain(x), fused(x), atol=1e-5, rtol=1e-5)
        if attr == "none":
            summed = OneDNNConv(conv, residual=True)
            torch.testing.assert_close(summed.plain(x, residual), summed(x, residual), atol=1e-5, rtol=1e-5)

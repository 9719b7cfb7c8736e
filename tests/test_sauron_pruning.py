"""Sauron pruning library: graph, distances, surgery (exact equivalence, optimizer state), schedule, save/reload."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from monai_effseg.blocks import ConvNormAct
from monai_effseg.pruning import (
    WIDTHS_KEY,
    ChannelGraph,
    SauronUNet,
    Segment,
    ThresholdSchedule,
    conv_flops,
    delta_opt,
    delta_prune,
    prune_channels,
    select_channels,
    stored_widths,
)
from monai_effseg.pruning.distances import avg_pool

SMALL = (4, 8, 16, 32, 64)


@pytest.fixture(autouse=True)
def _one_thread():
    # these nets are tiny: one thread is as fast as two and is not stalled by concurrent jobs on a 2-core machine
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_net(spatial_dims: int = 3, dtype=torch.float64) -> SauronUNet:
    torch.manual_seed(0)
    return SauronUNet(spatial_dims=spatial_dims, out_channels=3, features=SMALL).to(dtype)


def random_keep(graph: ChannelGraph, net: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for name, width in graph.widths(net).items():
        n = int(torch.randint(1, width + 1, (), generator=gen))
        keep[name] = torch.randperm(width, generator=gen)[:n].sort().values
    return keep


def zero_pruned(net: nn.Module, keep: dict[str, torch.Tensor], widths: dict[str, int], extra: dict[str, str] = {}):
    """The unpruned reference: pruned filters' outputs are forced to zero after the block's activation (or the
    transposed conv), so every consumer sees zeros in those channels."""

    def hook(kept: torch.Tensor, width: int):
        mask = torch.zeros(width, dtype=torch.bool)
        mask[kept] = True

        def zero(module, args, out):
            return out * mask.view(1, width, *[1] * (out.dim() - 2)).to(out.dtype)

        return zero

    for name, kept in keep.items():
        net.get_submodule(name).register_forward_hook(hook(kept, widths[name]))
        if name in extra:
            net.get_submodule(extra[name]).register_forward_hook(hook(kept, widths[name]))
    return net


def outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    y = net(x)
    return list(y) if isinstance(y, (list, tuple)) else [y]


# graph -------------------------------------------------------------------------------------------------------------


def test_graph_of_sauron_unet():
    net = small_net(dtype=torch.float32)
    graph = ChannelGraph.trace(net)
    # 10 encoder blocks, 4 transposed convs, 8 decoder blocks: the authors' 22 pruned modules
    assert len(graph) == 22
    assert sum(layer.transposed for layer in graph.layers.values()) == 4
    assert not any("heads" in name for name in graph.layers)
    assert len(graph.output_layers) == 3  # DS heads on the 3 highest-resolution levels
    # the first decoder block reads [upsampled, skip]
    assert graph.consumers["decoder.stages.3.0"] == (Segment("decoder.ups.3", 4), Segment("encoder.stages.0.1", 4))
    # the first encoder block reads the image only: it consumes nothing prunable
    assert "encoder.stages.0.0" not in graph.consumers
    assert graph.consumers["decoder.heads.2"][0].source == "decoder.stages.3.1"
    assert net.sauron_widths.tolist() == list(graph.widths(net).values())


def test_sauron_unet_starts_from_the_authors_he_normal_init():
    torch.manual_seed(0)
    net = SauronUNet(3, 1, 3, features=(8, 16, 32, 64, 128))
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert len(convs) == 10 + 4 + 8 + 3  # blocks, transposed convs, decoder blocks, heads
    for layer in convs:
        fan_in = layer.weight[0].numel()  # torch's fan-in, which the authors' he_normal uses for transposed convs too
        assert torch.count_nonzero(layer.bias) == 0
        if layer.weight.numel() >= 3000:  # enough samples for a 10% check of the standard deviation
            assert float(layer.weight.std()) == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.1)


class Tangled(nn.Module):
    """Residual add, grouped conv, a BatchNorm between producer and consumer, and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = ConvNormAct(2, 1, 4)
        self.b = ConvNormAct(2, 4, 4)
        self.c = ConvNormAct(2, 4, 6)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.d = ConvNormAct(2, 6, 5)
        self.bn = nn.BatchNorm2d(5)
        self.e = ConvNormAct(2, 5, 3)
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = self.a(x)
        y = y + self.b(y)
        y = self.dw(self.c(y))
        return self.head(self.e(self.bn(self.d(y))))


def test_graph_pins_what_it_cannot_model_and_slices_followers():
    torch.manual_seed(0)
    net = Tangled().double().eval()
    graph = ChannelGraph.trace(net)
    assert list(graph.layers) == ["d", "e"]  # a, b: residual add; c: grouped consumer
    assert graph.followers == {"bn": (Segment("d", 5),)}
    net.bn.running_mean.uniform_(-1, 1)  # give the follower non-trivial per-channel state
    keep = {"d": torch.tensor([0, 3]), "e": torch.tensor([1, 2])}
    reference = zero_pruned(copy.deepcopy(net), keep, graph.widths(net), extra={"d": "bn"})
    prune_channels(net, graph, keep)
    assert net.bn.num_features == 2 and net.bn.running_mean.shape == (2,) and net.e.conv.in_channels == 2
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(net(x), reference(x), rtol=0, atol=1e-12)


# distances ---------------------------------------------------------------------------------------------------------


def test_delta_opt_pooling_first_equals_the_papers_order():
    x = torch.randn(2, 5, 8, 6, 4, dtype=torch.float64, requires_grad=True)
    low, high = x.amin(dim=(2, 3, 4), keepdim=True), x.amax(dim=(2, 3, 4), keepdim=True)
    pooled = avg_pool((x - low) / (high - low + 1e-8))
    naive = (pooled[:, :1] - pooled[:, 1:]).pow(2).mean(dim=(2, 3, 4)).sqrt()
    torch.testing.assert_close(delta_opt(x).double(), naive.float().double(), rtol=1e-5, atol=1e-6)
    delta_opt(x).mean().backward()
    assert torch.isfinite(x.grad).all()


def test_delta_opt_per_slice_is_the_authors_3d_quirk():
    x = torch.rand(1, 3, 4, 4, 6, dtype=torch.float64)
    x[..., :3] *= 10  # slices along the last axis with different ranges
    per_slice = delta_opt(x, per_slice=True)
    assert per_slice.shape == (1, 2, 3)  # (B, C-1, last axis pooled)
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    pooled = avg_pool((x - low) / (high - low + 1e-8))
    expected = (pooled[:, :1] - pooled[:, 1:]).pow(2).mean(dim=(2, 3)).sqrt()
    torch.testing.assert_close(per_slice.double(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(per_slice.mean(), delta_opt(x).mean())


def test_delta_opt_is_finite_on_constant_and_identical_maps():
    x = torch.ones(1, 3, 4, 4, 4, requires_grad=True)
    d = delta_opt(x)
    d.mean().backward()
    assert torch.isfinite(d).all() and torch.isfinite(x.grad).all()


def test_zscore_delta_opt_is_a_correlation_distance_that_one_extreme_voxel_barely_moves():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, 8)
    x[:, 1] = 3 * x[:, 0] + 1  # the same map up to scale and offset
    x[:, 2] = -x[:, 0]
    d = delta_opt(x, pool=1, normalisation="zscore")
    torch.testing.assert_close(d[:, :2], torch.tensor([[0.0, 2.0], [0.0, 2.0]]), atol=1e-4, rtol=0)
    rho = torch.stack([torch.corrcoef(torch.stack([x[b, 0].flatten(), x[b, 3].flatten()]))[0, 1] for b in range(2)])
    torch.testing.assert_close(d[:, 2], (2 * (1 - rho)).sqrt(), atol=1e-4, rtol=0)
    # one voxel at 10 sigma in every map (the same place) widens the min-max range: the authors' distance of two
    # uncorrelated maps halves, the correlation distance barely moves
    spiked = x.clone()
    spiked[:, :, 0, 0, 0] = 10.0
    for normalisation, low, high in (("minmax", 0.4, 0.55), ("zscore", 0.85, 0.95)):
        ratio = delta_opt(spiked, pool=1, normalisation=normalisation) / delta_opt(
            x, pool=1, normalisation=normalisation
        )
        assert low < ratio[:, 2].amin() and ratio[:, 2].amax() < high, (normalisation, ratio)
    with pytest.raises(ValueError, match="normalisation"):
        delta_opt(x, normalisation="l2")


def test_delta_prune_normalised_to_reference_and_farthest():
    x = torch.zeros(2, 4, 4, 4, 4)
    x[:, 1] = 1.0
    x[:, 2] = 3.0
    x[:, 3] = 0.5
    d = delta_prune(x, reference=0)
    torch.testing.assert_close(d[0], torch.tensor([0.0, 1 / 3, 1.0, 0.5 / 3]))
    assert torch.equal(delta_prune(torch.ones(1, 3, 4, 4, 4), reference=1), torch.zeros(1, 3))


def test_select_channels_keeps_reference_and_guards_the_all_equal_layer():
    d = torch.tensor([0.0, 0.05, 0.5, 1.0, 0.01])
    assert select_channels(d, reference=0, tau=0.1).tolist() == [0, 2, 3]
    # every map equal: all distances 0, the authors' code would keep 1 channel and then divide by zero
    assert select_channels(torch.zeros(6), reference=4, tau=0.1).tolist() == [0, 4]
    assert len(select_channels(torch.zeros(6), reference=2, tau=0.3, min_channels=3)) == 3
    nan = torch.tensor([0.0, float("nan"), 0.01])
    assert select_channels(nan, reference=0, tau=0.1).tolist() == [0, 1]


# schedule ----------------------------------------------------------------------------------------------------------


def test_threshold_rises_on_plateau_then_waits():
    s = ThresholdSchedule(["a", "b"], patience=5)
    assert s.tau("a") == pytest.approx(0.001) and s.grid[-1] == pytest.approx(0.3) and len(s.grid) == 16
    improving = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert s.step(improving) == []  # a new minimum is no plateau
    plateau = [1.0, 0.5, 0.7, 0.6, 0.55, 0.6]
    s.record("a", 100, 100)
    s.record("b", 100, 95)  # lost 5 >= ceil(2% of 100): still shrinking, not converged (d)
    assert s.step(plateau) == ["a"]
    assert s.tau("a") == pytest.approx(0.001 + 0.299 / 15) and s.tau("b") == pytest.approx(0.001)
    for _ in range(5):  # patience counts down before the next raise
        assert "a" not in s.step(plateau)
    assert s.step(plateau) == ["a"]
    state = s.state_dict()
    other = ThresholdSchedule(["a", "b"])
    other.load_state_dict(state)
    assert other.taus() == s.taus() and other.patience == s.patience


def test_threshold_needs_enough_history():
    s = ThresholdSchedule(["a"], patience=5)
    assert not s.plateau([1.0, 1.0, 1.0, 1.0, 1.0])
    assert s.plateau([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_fixed_cadence_schedule_for_short_runs():
    s = ThresholdSchedule(["a", "b"], steps=4, patience=1, require_plateau=False)
    improving = [1.0, 0.9, 0.8]  # never a plateau: the paper's schedule would not move
    s.record("b", 100, 90)  # still shrinking fast (d): stays
    assert s.step(improving) == ["a"]
    assert s.step(improving) == []  # patience 1: one epoch's wait
    s.record("b", 90, 90)
    assert s.step(improving) == ["a", "b"]
    assert s.tau("a") == pytest.approx(s.grid[2]) and s.tau("b") == pytest.approx(s.grid[1])


def test_plateau_schedule_rejects_a_window_of_one():
    with pytest.raises(ValueError, match="patience >= 2"):
        ThresholdSchedule(["a"], patience=1)


# surgery -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pruned_network_equals_unpruned_with_zeroed_channels(spatial_dims):
    net = small_net(spatial_dims)
    graph = ChannelGraph.trace(net)
    keep = random_keep(graph, net)
    reference = zero_pruned(copy.deepcopy(net), keep, graph.widths(net))
    widths = prune_channels(net, graph, keep)
    assert widths == {n: len(k) for n, k in keep.items()}
    assert net.sauron_widths.tolist() == list(widths.values())
    x = torch.randn(2, 1, *[32, 32, 16][:spatial_dims], dtype=torch.float64)
    for training in (True, False):  # DS logits while training, the final head in eval
        net.train(training)
        reference.train(training)
        got, want = outputs(net, x), outputs(reference, x)
        assert len(got) == (3 if training else 1)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_pruning_removes_parameters_and_flops():
    net = small_net(dtype=torch.float32)
    graph = ChannelGraph.trace(net)
    params, flops = sum(p.numel() for p in net.parameters()), conv_flops(net, (1, 1, 32, 32, 32))
    prune_channels(net, graph, {n: torch.arange(w // 2) for n, w in graph.widths(net).items()})
    assert sum(p.numel() for p in net.parameters()) < 0.3 * params
    assert conv_flops(net, (1, 1, 32, 32, 32)) < 0.3 * flops


def hand_counted_flops(net: torch.nn.Module, shape) -> int:
    """2 x MACs of every conv, transposed conv and linear layer, from the shapes one real forward pass sees."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Linear):
            total += 2 * output.numel() * module.in_features
        elif isinstance(module, torch.nn.modules.conv._ConvTransposeNd):  # every input voxel meets the whole kernel
            total += 2 * inputs[0].numel() * module.weight[0].numel()
        elif isinstance(module, torch.nn.modules.conv._ConvNd):
            total += 2 * output.numel() * module.weight[0].numel()

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    net.eval()
    with torch.no_grad():
        net(torch.zeros(shape))
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("name", ["pruned sauron", "efficientunet-b0", "fullyefficientunet-b0", "residual_unet_kits19"])
def test_flops_equal_a_hand_count_of_conv_and_linear_macs(name):
    """The one FLOP counter (shapes only) against an independent per-layer count on real shapes: pruned widths,
    depthwise convs, SE gates (linear or 1x1 convs on pooled maps), transposed convs and residual blocks."""
    from monai_effseg.nets import build_net

    if name == "pruned sauron":
        net = small_net(dtype=torch.float32)
        prune_channels(net, ChannelGraph.trace(net), {"encoder.stages.0.0": [0, 2], "decoder.ups.1": [1, 3, 5]})
    else:
        net = build_net(name, features=(8, 16, 24, 32, 40, 48)) if "residual" in name else build_net(name)
    shape = (1, 1, 32, 32, 32)
    assert conv_flops(net, shape) == hand_counted_flops(net, shape)


def _loss(outs: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    return sum((o * w).sum() for o, w in zip(outs, weights))


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
        lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-5),
        lambda p: torch.optim.AdamW(p, lr=1e-3, amsgrad=True),
    ],
    ids=["sgd-nesterov", "adam", "adamw-amsgrad"],
)
def test_optimizer_step_after_pruning_equals_masked_network_step(make_optimizer):
    net = small_net(spatial_dims=2).train()
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    weights = [torch.randn_like(o) for o in outputs(net, x)]
    optimizer = make_optimizer(net.parameters())
    for _ in range(2):  # build up momentum / moments
        optimizer.zero_grad()
        _loss(outputs(net, x), weights).backward()
        optimizer.step()
    graph = ChannelGraph.trace(net)
    keep = random_keep(graph, net, seed=3)
    masked = copy.deepcopy(net)
    masked_optimizer = make_optimizer(masked.parameters())
    masked_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # no shared buffers
    zero_pruned(masked, keep, graph.widths(net))
    names = [n for n, _ in net.named_parameters()]
    before = dict(net.named_parameters())
    prune_channels(net, graph, keep, [optimizer])
    after = dict(net.named_parameters())
    # the optimizer now holds exactly the network's (new) parameters, with state of matching shapes
    assert [id(p) for g in optimizer.param_groups for p in g["params"]] == [id(after[n]) for n in names]
    for p in after.values():
        for value in optimizer.state[p].values():
            if isinstance(value, torch.Tensor) and value.dim():
                assert value.shape == p.shape
    assert any(after[n] is not before[n] for n in names)
    for model, opt in ((net, optimizer), (masked, masked_optimizer)):
        opt.zero_grad()
        _loss(outputs(model, x), weights).backward()
        opt.step()
    for a, b in zip(outputs(net.eval(), x), outputs(masked.eval(), x)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# save / reload / export --------------------------------------------------------------------------------------------


def test_pruned_state_dict_reloads_into_a_full_size_network(tmp_path):
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    net = small_net(dtype=torch.float32).eval()
    graph = ChannelGraph.trace(net)
    prune_channels(net, graph, random_keep(graph, net))
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert stored_widths(path) == net.sauron_widths.tolist()
    x = torch.randn(1, 1, 32, 32, 32)
    fresh = SauronUNet(features=SMALL).eval()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x), net(x))
    # MONAI's CheckpointLoader with {"model": net}, as inference.json and resume use it
    loaded = SauronUNet(features=SMALL).eval()
    CheckpointLoader(str(path), {"model": loaded})(Engine(lambda engine, batch: None))
    torch.testing.assert_close(loaded(x), net(x))
    # an unpruned checkpoint (no widths buffer) still loads, and a tampered one is refused
    plain = {k: v for k, v in SauronUNet(features=SMALL).state_dict().items() if k != WIDTHS_KEY}
    SauronUNet(features=SMALL).load_state_dict(plain)
    state[WIDTHS_KEY] = state[WIDTHS_KEY] + 1
    with pytest.raises(ValueError, match="disagree"):
        SauronUNet(features=SMALL).load_state_dict(state)


def test_torchscript_of_pruned_network_equals_eager():
    net = small_net(dtype=torch.float32).eval()
    graph = ChannelGraph.trace(net)
    prune_channels(net, graph, random_keep(graph, net, seed=5))
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
    assert scripted.sauron_widths.tolist() == net.sauron_widths.tolist()


def test_cpu_inference_form_of_pruned_network_equals_eager():
    """optimize_for_inference (channels-last oneDNN, decoder without concatenation) on pruned, uneven widths."""
    from monai_effseg.deploy.optimize import ConcatFreeUNetDecoder, optimize_for_inference

    net = small_net(dtype=torch.float32).eval()
    graph = ChannelGraph.trace(net)
    prune_channels(net, graph, random_keep(graph, net, seed=5))
    fast = optimize_for_inference(net)
    assert isinstance(fast.decoder, ConcatFreeUNetDecoder)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), atol=1e-4, rtol=1e-4)


def test_delta_opt_per_slice_along_a_chosen_axis_is_the_authors_sagittal_cut():
    """The authors' KiTS arrays are (z, y, x), so their per-slice min-max cuts along x; in RAS (x, y, z) that is
    spatial axis 0, which is what ``slice_axis=0`` normalises along (and not the axial cut of the last axis)."""
    x = torch.rand(1, 3, 6, 4, 4, dtype=torch.float64)
    x[:, :, :3] *= 10  # x-slices with different ranges
    sagittal = delta_opt(x, per_slice=True, slice_axis=0)
    assert sagittal.shape == (1, 2, 3)  # (B, C-1, x pooled)
    low, high = x.amin(dim=(3, 4), keepdim=True), x.amax(dim=(3, 4), keepdim=True)
    pooled = avg_pool((x - low) / (high - low + 1e-8))
    expected = (pooled[:, :1] - pooled[:, 1:]).pow(2).mean(dim=(3, 4)).sqrt()
    torch.testing.assert_close(sagittal.double(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(sagittal.mean(), delta_opt(x, per_slice=True).mean())  # the axial cut differs
    torch.testing.assert_close(delta_opt(x, per_slice=True, slice_axis=2), delta_opt(x, per_slice=True))


def test_threshold_warmup_holds_tau_min_and_prune_epochs_ends_the_raises():
    schedule = ThresholdSchedule(["a"], 0.0, 1.0, steps=10, patience=0, require_plateau=False, warmup_epochs=3,
                                 prune_epochs=6)  # fmt: skip
    taus, phases = [], []
    for epoch in range(1, 9):
        schedule.step([1.0] * epoch, epoch)
        taus.append(schedule.tau("a"))
        phases.append(schedule.phase(epoch))
    assert phases == ["warmup"] * 3 + ["prune"] * 3 + ["finetune"] * 2
    assert taus == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.3, 0.3])
    with pytest.raises(ValueError, match="prune_epochs=3 <= warmup_epochs=3"):
        ThresholdSchedule(["a"], warmup_epochs=3, prune_epochs=3)


def test_plateau_min_epochs_is_the_authors_six_validations_at_every_second_epoch():
    """(a) of the authors' convergence needs 6 validation losses: with validation every 2 epochs, no raise before
    epoch 12, although a flat loss is a plateau from epoch 6 on."""
    flat = [1.0] * 20
    schedule = ThresholdSchedule(["a"], patience=5, min_epochs=12)
    first = next(e for e in range(1, 21) if schedule.step(flat[:e], e))
    assert first == 12
    default = ThresholdSchedule(["a"], patience=5)
    assert next(e for e in range(1, 21) if default.step(flat[:e], e)) == 6

"""Sauron during training: the regulariser in the loss, end-of-epoch pruning in a MONAI SupervisedTrainer, resume from
a pruned checkpoint, and a 2-process gloo DDP run that keeps training after its network shrinks."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver, from_engine
from monai.losses import DeepSupervisionLoss, DiceCELoss

from monai_effseg.pruning import (
    SauronLoss,
    SauronPruner,
    SauronRegularizer,
    SauronStatsHandler,
    SauronUNet,
    delta_opt,
    delta_prune,
    select_channels,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

FEATURES = (4, 8, 16, 32, 64)


@pytest.fixture(autouse=True)
def _one_thread():
    # these nets are tiny: one thread is as fast as two and is not stalled by concurrent jobs on a 2-core machine
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


PATCH = (32, 32)


def batches(n: int = 4, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(n):
        label = (torch.rand(2, 1, *PATCH, generator=gen) > 0.7).long() + (torch.rand(2, 1, *PATCH, generator=gen) > 0.9)
        image = label.float() + 0.3 * torch.randn(2, 1, *PATCH, generator=gen)
        data.append({"image": image, "label": label.float()})
    return data


def build(seed=0, tau_min=0.3, tau_max=0.6, network_wrapper=None, data_seed=0, **pruner_args):
    """A 2D Sauron net, its loss, Adam and the pruner; ``tau_min`` high so that channels go after epoch 1."""
    torch.manual_seed(seed)
    net = SauronUNet(spatial_dims=2, out_channels=3, features=FEATURES)
    regularizer = SauronRegularizer(net, lam=0.5)
    loss = SauronLoss(DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True), weight_mode="same"), regularizer)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    pruner = SauronPruner(
        regularizer, optimizer, tau_min=tau_min, tau_max=tau_max, flops_input_shape=(1, 1, *PATCH), **pruner_args
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches(seed=data_seed),
        network=network_wrapper(net) if network_wrapper else net,
        optimizer=optimizer,
        loss_function=loss,
        amp=False,
    )
    pruner.attach(trainer)
    return net, regularizer, optimizer, pruner, trainer


def test_penalty_only_in_training_forwards_and_head_dilution():
    torch.manual_seed(0)
    net = SauronUNet(spatial_dims=2, features=FEATURES)
    reg = SauronRegularizer(net, lam=0.5)
    x = torch.randn(2, 1, *PATCH)
    net.train()
    net(x)
    assert len(reg.terms) == 22
    terms = torch.stack(reg.terms)
    penalty = reg.penalty()
    torch.testing.assert_close(penalty, 0.5 * terms.mean())
    assert penalty.requires_grad and reg.terms == []
    net.eval()
    net(x)
    assert reg.penalty().item() == 0.0
    with torch.no_grad():
        net.train()(x)
    assert reg.terms == []
    diluted = SauronRegularizer(net, lam=0.5, head_dilution=True, graph=reg.graph)
    net(x)
    torch.testing.assert_close(diluted.penalty(), 0.5 * (terms.sum() + 3) / 25, rtol=1e-4, atol=1e-6)
    reg.remove()
    diluted.remove()


def test_zscore_regulariser_penalises_the_correlation_distance_of_every_layer():
    torch.manual_seed(0)
    net = SauronUNet(spatial_dims=2, features=FEATURES).train()
    outputs = {}
    for name in ("encoder.stages.0.0", "decoder.ups.3"):
        net.get_submodule(name).register_forward_hook(lambda m, a, out, name=name: outputs.__setitem__(name, out))
    reg = SauronRegularizer(net, lam=0.5, normalisation="zscore")
    net(torch.randn(2, 1, *PATCH))
    assert len(reg.terms) == 22
    for name, term in zip(reg.graph.layers, reg.terms):
        if name in outputs:
            torch.testing.assert_close(term, delta_opt(outputs[name], normalisation="zscore").mean())
    # the maps of a fresh net are far from correlated copies: sqrt(2 (1 - rho)) is 1.26 here (min-max: 0.16)
    assert 0.8 < torch.stack(reg.terms).mean().item() < 1.6
    reg.remove()
    with pytest.raises(ValueError, match="normalisation='l2'"):
        SauronRegularizer(net, normalisation="l2")
    with pytest.raises(ValueError, match="per_slice"):
        SauronRegularizer(net, per_slice=True, normalisation="zscore")


def test_delta_prune_is_averaged_over_the_epoch():
    torch.manual_seed(0)
    net = SauronUNet(spatial_dims=2, features=FEATURES).train()
    reg = SauronRegularizer(net, lam=0.0)
    references = dict.fromkeys(reg.graph.layers, 0)
    xs = [torch.randn(2, 1, *PATCH) for _ in range(3)]
    reg.start_epoch(references)
    for x in xs:
        net(x)
    layer = "encoder.stages.1.0"
    assert reg.counts[layer] == 6
    last_only = SauronRegularizer(net, lam=0.0, graph=reg.graph)
    last_only.start_epoch(references, keep_last_only=True)
    reg.start_epoch(references)
    for x in xs:
        net(x)
    assert last_only.counts[layer] == 2 and not torch.allclose(last_only.sums[layer] / 2, reg.sums[layer] / 6)


def test_trainer_prunes_every_epoch_logs_and_resumes(tmp_path):
    net, regularizer, optimizer, pruner, trainer = build()
    stats = SauronStatsHandler(
        pruner, str(tmp_path / "runs"), str(tmp_path / "compression.png"), str(tmp_path / "h.json")
    )
    stats.attach(trainer)
    saver = CheckpointSaver(
        str(tmp_path), {"model": net, "optimizer": optimizer, "pruner": pruner, "trainer": trainer},
        save_interval=1, n_saved=1, epoch_level=True,
    )  # fmt: skip
    saver.attach(trainer)
    losses, loss_of = [], from_engine(["loss"], first=True)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(loss_of(e.state.output)))
    trainer.run()
    full = pruner.history[0]
    after = pruner.history[-1]
    assert [h["epoch"] for h in pruner.history] == [0, 1]
    assert after["params"] < full["params"] and after["flops"] < full["flops"]
    assert min(after["widths"]) >= 2 and net.sauron_widths.tolist() == after["widths"]
    # training goes on with the pruned network and the re-indexed Adam state
    trainer.state.max_epochs = 3
    trainer.run()
    assert all(math.isfinite(float(v)) for v in losses) and len(losses) == 12
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in net.parameters()]
    assert all(optimizer.state[p]["exp_avg"].shape == p.shape for p in net.parameters())
    assert [h["params"] for h in pruner.history] == sorted((h["params"] for h in pruner.history), reverse=True)
    assert (tmp_path / "compression.png").stat().st_size > 0
    assert json.loads((tmp_path / "h.json").read_text(encoding="utf-8"))[-1]["epoch"] == 3
    assert list((tmp_path / "runs").glob("events.out.tfevents.*"))

    # resume: a fresh full-size network, optimizer and pruner take the pruned checkpoint's shape and state
    net2, _, optimizer2, pruner2, trainer2 = build(seed=1)
    trainer2.state.max_epochs = 4
    CheckpointLoader(
        str(tmp_path / "checkpoint_epoch=3.pt"),
        {"model": net2, "optimizer": optimizer2, "pruner": pruner2, "trainer": trainer2},
    ).attach(trainer2)
    resumed = []
    trainer2.add_event_handler(Events.EPOCH_STARTED, lambda e: resumed.append(net2.sauron_widths.tolist()))
    trainer2.run()
    assert resumed[0] == net.sauron_widths.tolist()
    assert pruner2.history[:4] == pruner.history and trainer2.state.epoch == 4
    assert [id(p) for p in optimizer2.param_groups[0]["params"]] == [id(p) for p in net2.parameters()]
    assert optimizer2.state[next(net2.parameters())]["exp_avg"].shape == next(net2.parameters()).shape


def test_last_batch_criterion_and_reference_channel_survives():
    net, regularizer, optimizer, pruner, trainer = build(sampling="last", tau_min=1.01, tau_max=1.01)
    references = {}
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: references.update(pruner.references))
    widths = regularizer.graph.widths(net)
    trainer.run()
    # tau above every distance: each layer keeps its reference and the farthest channel
    assert set(regularizer.graph.widths(net).values()) == {2}
    assert set(references) == set(widths) and all(0 <= r < widths[n] for n, r in references.items())


def test_prune_epochs_then_fine_tunes_without_the_regulariser():
    net, regularizer, optimizer, pruner, trainer = build(prune_epochs=1)
    penalties = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: penalties.append(regularizer.lam))
    trainer.state.max_epochs = 3
    trainer.run()
    widths = [h["widths"] for h in pruner.history]
    assert widths[1] != widths[0] and widths[1] == widths[2] == widths[3]  # pruned once, then fixed
    assert [h["epoch"] for h in pruner.history] == [0, 1, 2, 3] and pruner.history[-1]["loss"] is not None
    assert penalties == [0.5] * 4 + [0.0] * 8 and pruner.references == {}
    assert pruner.schedule.taus() == dict.fromkeys(regularizer.graph.layers, 0.3)  # the schedule stops too
    with pytest.raises(ValueError, match="prune_epochs=0"):
        build(prune_epochs=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # different data per rank, the same decisions
        net, _, optimizer, pruner, trainer = build(seed=0, network_wrapper=DistributedDataParallel, data_seed=rank)
        trainer.state.max_epochs = 3
        wrappers = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: wrappers.append(id(e.network)))
        trainer.run()
        torch.save(
            {"widths": net.sauron_widths, "wrappers": len(set(wrappers)), "w": next(net.parameters())}, out.format(rank)
        )
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_prunes_identically_and_keeps_training(tmp_path):
    out = str(tmp_path / "rank{}.pt")
    mp.spawn(_ddp_worker, args=(_free_port(), out), nprocs=2, join=True)
    r0, r1 = (torch.load(out.format(r), weights_only=True) for r in (0, 1))
    assert torch.equal(r0["widths"], r1["widths"]) and r0["widths"].sum() < 22 * 64
    assert r0["wrappers"] > 1  # the DDP wrapper was rebuilt after the surgery
    torch.testing.assert_close(r0["w"], r1["w"])  # gradients were still all-reduced


def test_bundle_segmentation_loss_is_the_authors_ce_plus_soft_dice():
    """kits_sauron_nnunet's per-output loss equals the authors' ``CrossEntropyDiceLoss`` (SauronUNet
    ``lib/loss.py``): CE + 1 - mean over samples and classes (background included) of 2|P.Y| / (|P| + |Y| + 1e-6).
    A class absent from a sample scores 0 whatever is predicted, so it pushes nothing to zero; MONAI's default
    smoothing (1e-5 on both sides) instead rewards predicting exactly nothing for it, which on random crops taught
    the full-resolution head never to predict kidney."""
    from bundle_utils import REPO, configs
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(configs(REPO / "bundles" / "kits_sauron_nnunet", "train.json"))
    loss = parser.get_parsed_content("loss#loss#loss")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, 4, generator=gen)
    label = torch.randint(0, 2, (2, 1, 6, 6, 4), generator=gen)  # class 2 absent from both samples ...
    logits[:, 2] = -30.0  # ... and (almost) never predicted: the case where the two smoothings disagree
    probs = logits.softmax(1)
    onehot = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    axes = (2, 3, 4)
    dice = 1 - (2 * (probs * onehot).sum(axes) / ((probs + onehot).sum(axes) + 1e-6)).mean()
    ce = -(onehot * torch.log(probs + 1e-15)).sum(1).mean()
    torch.testing.assert_close(loss(logits, label), ce + dice, atol=1e-5, rtol=1e-5)


def test_last_sampling_draws_a_new_reference_per_forward_and_keeps_the_last_forward():
    torch.manual_seed(0)
    net = SauronUNet(spatial_dims=2, features=FEATURES).train()
    reg = SauronRegularizer(net, lam=0.0)
    layer = "encoder.stages.2.0"
    seen = []
    net.get_submodule(layer).register_forward_hook(lambda m, a, out: seen.append((out.detach(), reg.references[layer])))
    reg.start_epoch(dict.fromkeys(reg.graph.layers, 0), keep_last_only=True, generator=torch.Generator().manual_seed(3))
    for _ in range(6):
        net(torch.randn(2, 1, *PATCH))
    assert len({r for _, r in seen}) > 1  # a new reference channel on (nearly) every forward
    out, ref = seen[-1]
    assert reg.references[layer] == ref and reg.counts[layer] == 2
    torch.testing.assert_close(reg.sums[layer], delta_prune(out, ref).sum(0))
    with torch.no_grad():  # validation forwards count only when asked for
        net.eval()(torch.randn(2, 1, *PATCH))
    assert reg.references[layer] == ref
    reg.record_validation()
    with torch.no_grad():
        net(torch.randn(2, 1, *PATCH))
    assert reg.references[layer] == seen[-1][1] and len(seen) == 8
    torch.testing.assert_close(reg.sums[layer], delta_prune(seen[-1][0], seen[-1][1]).sum(0))
    reg.remove()


@pytest.mark.parametrize("sampling", ["last", "epoch_average"])
def test_sampling_modes_decide_on_the_last_batch_or_the_epoch_mean(sampling):
    net, regularizer, optimizer, pruner, trainer = build(sampling=sampling, tau_min=0.9, tau_max=0.95)
    layer = "encoder.stages.1.0"
    outputs = []
    net.get_submodule(layer).register_forward_hook(
        lambda m, a, out: outputs.append(out.detach()) if out.device.type != "meta" else None  # not conv_flops
    )
    decided = {}
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: decided.update(ref=pruner.references[layer], width=pruner.history[-1]["widths"]),
    )
    before = regularizer.graph.widths(net)[layer]
    trainer.run()
    ref, tau = decided["ref"], pruner.schedule.tau(layer)
    if sampling == "last":
        d = delta_prune(outputs[-1], ref).mean(0)
    else:  # the reference fixed for the epoch; the mean over its 4 batches x 2 samples
        d = torch.cat([delta_prune(o, ref) for o in outputs]).mean(0)
    expected = len(select_channels(d, ref, tau))
    assert expected < before
    assert decided["width"][list(regularizer.graph.layers).index(layer)] == expected


def test_last_sampling_prunes_after_the_validation_on_its_last_forward():
    """As in the authors' ``fit``: a validation epoch's prune runs after the validation, on its last forward (in
    eval mode); the other epochs prune on the last training batch, before anything else sees the epoch's end."""
    from monai.engines import SupervisedEvaluator
    from monai.handlers import ValidationHandler

    torch.manual_seed(0)
    net = SauronUNet(spatial_dims=2, out_channels=3, features=FEATURES)
    regularizer = SauronRegularizer(net, lam=0.5)
    loss = SauronLoss(DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True), weight_mode="same"), regularizer)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=batches(2, seed=5), network=net)
    pruner = SauronPruner(regularizer, optimizer, tau_min=0.9, tau_max=0.95, evaluator=evaluator, val_interval=2)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=2, train_data_loader=batches(), network=net,
                                optimizer=optimizer, loss_function=loss, amp=False)  # fmt: skip
    pruner.attach(trainer)  # before the ValidationHandler, as in the bundle
    ValidationHandler(validator=evaluator, interval=2, epoch_level=True).attach(trainer)
    layer = "decoder.stages.1.0"
    last = {}
    net.get_submodule(layer).register_forward_hook(lambda m, a, out: last.update(out=out.detach(), training=m.training))
    at_validation = []
    evaluator.add_event_handler(Events.STARTED, lambda e: at_validation.append(len(pruner.history)))
    snapshot = {}
    evaluator.add_event_handler(Events.STARTED, lambda e: snapshot.update(width=regularizer.graph.widths(net)[layer]))
    trainer.run()
    assert at_validation == [2]  # epoch 2's prune had not run when its validation started
    assert [h["epoch"] for h in pruner.history] == [0, 1, 2] and not last["training"]
    ref, tau = pruner.references[layer], pruner.schedule.tau(layer)
    expected = len(select_channels(delta_prune(last["out"], ref).mean(0), ref, tau))
    assert expected < snapshot["width"]
    assert regularizer.graph.widths(net)[layer] == expected


def test_warmup_holds_the_threshold_while_pruning_at_tau_min():
    net, regularizer, optimizer, pruner, trainer = build(tau_min=0.001, tau_max=0.6, steps=5, patience=0,
                                                          require_plateau=False, warmup_epochs=2, prune_epochs=3)  # fmt: skip
    penalties = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: penalties.append(regularizer.lam))
    trainer.state.max_epochs = 4
    trainer.run()
    assert [h["phase"] for h in pruner.history[1:]] == ["warmup", "warmup", "prune", "finetune"]
    assert [max(h["taus"]) for h in pruner.history[1:]] == pytest.approx([0.001, 0.001, 0.1208, 0.1208])
    assert sum(pruner.history[3]["widths"]) < sum(pruner.history[2]["widths"])  # the first raised threshold prunes
    assert pruner.history[4]["widths"] == pruner.history[3]["widths"]
    assert penalties == [0.5] * 12 + [0.0] * 4


def test_bundle_follows_the_authors_recipe():
    """train.json: 2 patches per case per epoch (183 iterations for the authors' 183 KiTS training cases at batch
    2), the authors' last-forward sampling, no warm-up or fine-tune, 12 epochs before the first plateau raise, the
    sagittal slice axis, and the code's augmentation (scale x-y, rotate about z, flip every axis)."""
    from bundle_utils import REPO, configs
    from monai.bundle import ConfigParser
    from monai.transforms import RandAffined, RandFlipd

    parser = ConfigParser()
    parser.read_config(configs(REPO / "bundles" / "kits_sauron_nnunet", "train.json"))
    parser["split"] = {"training": [{}] * 183, "validation": [{}] * 21}
    assert parser.get_parsed_content("iterations_per_epoch") == 183
    assert (parser["sauron_sampling"], parser["sauron_warmup_epochs"], parser["sauron_prune_epochs"]) == (
        "last",
        0,
        None,
    )
    assert parser["sauron_plateau_min_epochs"] == 12 and parser["sauron_slice_axis"] == 0
    pruner = parser["sauron"]["pruner"]
    assert pruner["evaluator"].replace("::", "#") == "@validate#evaluator" and pruner["val_interval"] == "@val_interval"
    xforms = parser.get_parsed_content("train#random_transforms")
    affines = [t for t in xforms if isinstance(t, RandAffined)]
    assert [t.prob for t in affines] == [0.2, 0.2]
    # an image that varies along z only is left as it is by both (in-plane scaling, rotation about z) ...
    z = torch.arange(8.0).expand(1, 16, 16, 8).clone()
    for t in affines:
        t.set_random_state(0)
        t.rand_affine.prob = 1.0
        t.prob = 1.0
        out = t({"image": z.clone(), "label": z.clone()})["image"]
        torch.testing.assert_close(out.as_tensor(), z, atol=1e-4, rtol=0)
    # ... while one that varies along x is rotated
    x = torch.arange(16.0)[:, None, None].expand(1, 16, 16, 8).clone()
    moved = affines[1]({"image": x.clone(), "label": x.clone()})["image"]
    assert not torch.allclose(moved.as_tensor(), x, atol=0.5)
    assert sorted(t.flipper.spatial_axis for t in xforms if isinstance(t, RandFlipd)) == [0, 1, 2]

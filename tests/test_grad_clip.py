"""Gradient clipping as nnU-Net's training step does it (global norm 12 before every optimizer step):
:class:`monai_effseg.handlers.GradientClipping`, attached by the bundles' trainer from ``grad_clip_norm``.

- a clipped step moves the weights by at most ``max_norm`` x the learning rate (plain SGD), an unclipped one by the
  whole gradient; the norm before clipping is kept in ``engine.state.grad_norm``;
- under gradient accumulation only the iterations that step the optimizer clip;
- a bad ``grad_clip_norm`` stops with a message that names the key and what to give;
- the nnU-Net-trained bundles (the baseline; EfficientUNet, trained in nnU-Net's framework) clip at 12, the others
  follow their papers and do not.
"""

from __future__ import annotations

import pytest
import torch
from bundle_utils import BUNDLE_IDS, BUNDLES, configs
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer

from monai_effseg.handlers import GradientClipping
from monai_effseg.training import AmpSupervisedTrainer

NNUNET_TRAINED = {"kits_nnunet_baseline", "kits_efficientunet"}


def _batches(n: int) -> list[dict]:
    torch.manual_seed(0)
    return [{"image": torch.randn(2, 3) * 50, "label": torch.randn(2, 1) * 50} for _ in range(n)]


def _params(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in net.parameters()])


def _one_step(grad_clip_norm):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    trainer = AmpSupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=_batches(1), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1.0), loss_function=torch.nn.MSELoss(),
        grad_clip_norm=grad_clip_norm,
    )  # fmt: skip
    before = _params(net)
    trainer.run()
    return float((_params(net) - before).norm()), trainer


def test_clipped_step_is_at_most_max_norm():
    whole, unclipped = _one_step(None)
    assert whole > 1.0, "the test batch must give a gradient larger than the clip norm"
    assert not hasattr(unclipped.state, "grad_norm")

    moved, clipped = _one_step(0.5)
    assert clipped.state.grad_norm == pytest.approx(whole, rel=1e-5)  # the norm before clipping
    assert moved == pytest.approx(0.5, rel=1e-4)  # lr 1: the step is the clipped gradient

    moved, loose = _one_step(10 * whole)
    assert moved == pytest.approx(whole, rel=1e-5)  # below the norm: untouched


def test_accumulation_clips_only_before_an_optimizer_step(monkeypatch):
    clipped_at = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        clipped_at.append(trainer.state.iteration)
        return original(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    net = torch.nn.Linear(3, 1)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=_batches(5), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=torch.nn.MSELoss(),
        accumulation_steps=2,
    )  # fmt: skip
    GradientClipping(12).attach(trainer)
    trainer.run()
    assert clipped_at == [2, 4, 5]  # MONAI steps every 2nd iteration and at the epoch's end


@pytest.mark.parametrize("bad", ["null", "none", 0, -1.0, True])
def test_bad_norm_names_the_key(bad):
    with pytest.raises(ValueError, match="grad_clip_norm") as error:
        GradientClipping(bad)
    assert "12" in str(error.value) and "null" in str(error.value)


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_bundles_clip_as_their_recipe_trains(bundle):
    parser = ConfigParser()
    parser.read_config(configs(bundle, "train.json"))
    parser.update({"bundle_root": str(bundle)})
    assert parser.get_parsed_content("grad_clip_norm") == (12 if bundle.name in NNUNET_TRAINED else None)
    assert parser["train#trainer#_target_"] == "monai_effseg.training.AmpSupervisedTrainer"
    assert parser["train#trainer#grad_clip_norm"] == "@grad_clip_norm"

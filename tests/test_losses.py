"""Losses: values against the formulas written out by hand, numerical gradient checks, deep-supervision wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, GeneralizedDiceLoss
from monai.metrics import compute_surface_dice
from monai.networks import one_hot

from monai_effseg.losses import (
    MSS_PAPER_DS_WEIGHTS,
    ExpLogDiceCELoss,
    GeneralizedSurfaceDiceLoss,
    WeightedDeepSupervisionLoss,
    deep_supervision_loss,
    nnunet_deep_supervision_weights,
    soft_surface_dice,
)


def tiny(shape=(2, 3, 4, 5, 3), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    return logits, labels


def explog_by_hand(logits, labels, weights=(0.4, 0.6), gamma=0.3, ce_w=(0.28, 0.28, 0.44), smooth=1e-5):
    """The MSS U-Net paper's eq. 5-8 with the authors' batch soft Dice, in numpy."""
    x = logits.detach().numpy()
    y = labels.numpy()[:, 0]
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dice_term = 0.0
    for k, w in zip((1, 2), weights):
        g = (y == k).astype(float)
        sd = (2 * (p[:, k] * g).sum() + smooth) / (p[:, k].sum() + g.sum() + smooth)
        dice_term += w * (-np.log(sd)) ** gamma
    logp = np.log(p)
    picked = np.take_along_axis(logp, y[:, None], 1)[:, 0]
    wv = np.asarray(ce_w)[y]
    ce = -(wv * picked).sum() / wv.sum()
    return dice_term + ce


def test_explog_matches_the_paper_formula():
    logits, labels = tiny()
    loss = ExpLogDiceCELoss()(logits, labels)
    assert loss.item() == pytest.approx(explog_by_hand(logits, labels), rel=1e-10)
    # float label maps (MONAI loads labels as float) and (B, ...) targets give the same value
    assert ExpLogDiceCELoss()(logits, labels.float()).item() == pytest.approx(loss.item())
    assert ExpLogDiceCELoss()(logits, labels[:, 0]).item() == pytest.approx(loss.item())


def test_explog_options_are_configurable():
    logits, labels = tiny(seed=1)
    custom = ExpLogDiceCELoss(dice_weights=(0.5, 0.5), gamma=0.5, ce_weight=(1.0, 1.0, 1.0))
    assert custom(logits, labels).item() == pytest.approx(
        explog_by_hand(logits, labels, (0.5, 0.5), 0.5, (1.0, 1.0, 1.0)), rel=1e-10
    )
    no_ce = ExpLogDiceCELoss(lambda_ce=0.0)(logits, labels)
    no_dice = ExpLogDiceCELoss(lambda_dice=0.0)(logits, labels)
    ce = F.cross_entropy(logits, labels[:, 0], weight=torch.tensor([0.28, 0.28, 0.44], dtype=torch.float64))
    assert no_dice.item() == pytest.approx(ce.item())
    assert (no_ce + no_dice).item() == pytest.approx(ExpLogDiceCELoss()(logits, labels).item())
    per_sample = ExpLogDiceCELoss(batch=False)(logits, labels)
    squared = ExpLogDiceCELoss(squared_pred=True)(logits, labels)
    assert per_sample.item() != pytest.approx(no_ce.item() + no_dice.item())
    assert squared.item() != pytest.approx(no_ce.item() + no_dice.item())
    with pytest.raises(ValueError, match="ce_weight"):
        ExpLogDiceCELoss(ce_weight=(1.0, 1.0))(logits, labels)


def test_explog_is_finite_for_a_perfect_prediction():
    labels = torch.randint(0, 3, (1, 1, 4, 4, 4))
    labels[0, 0, 0, 0, :3] = torch.tensor([0, 1, 2])
    logits = (one_hot(labels, 3) * 200.0 - 100.0).requires_grad_()
    loss = ExpLogDiceCELoss()(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("kwargs", [{}, {"batch": False, "squared_pred": True}])
def test_explog_gradcheck(kwargs):
    logits, labels = tiny(shape=(2, 3, 3, 3, 2))
    loss = ExpLogDiceCELoss(**kwargs)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,))


def test_deep_supervision_equals_weighted_sum_with_nearest_targets():
    torch.manual_seed(0)
    outputs = [torch.randn(2, 3, 16 // 2**i, 16 // 2**i, max(4 // 2**i, 1)) for i in range(5)]
    labels = torch.randint(0, 3, (2, 1, 16, 16, 4))
    base = ExpLogDiceCELoss()
    ds = deep_supervision_loss(base, "mss")
    expected = sum(
        w * base(o, F.interpolate(labels.float(), size=o.shape[2:], mode="nearest-exact"))
        for w, o in zip(MSS_PAPER_DS_WEIGHTS, outputs)
    )
    assert ds(outputs, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    # the same as MONAI's own DeepSupervisionLoss on float labels ...
    upstream = DeepSupervisionLoss(base, weights=list(MSS_PAPER_DS_WEIGHTS))
    assert upstream(outputs, labels.float()).item() == pytest.approx(expected.item(), rel=1e-6)
    # ... which cannot downsample integer label maps
    with pytest.raises(RuntimeError, match="not implemented"):
        upstream(outputs, labels)


def test_deep_supervision_weights_are_validated_and_zero_levels_skipped():
    calls = []

    class Recording(torch.nn.modules.loss._Loss):
        def forward(self, input, target):
            calls.append(tuple(input.shape[2:]))
            return input.mean()

    outputs = [torch.randn(1, 3, 8 // 2**i, 8 // 2**i, 8 // 2**i) for i in range(4)]
    labels = torch.zeros(1, 1, 8, 8, 8)
    weights = nnunet_deep_supervision_weights(4)
    assert weights == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    WeightedDeepSupervisionLoss(Recording(), weights)(outputs, labels)
    assert calls == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]  # the zero-weight lowest level is never computed
    with pytest.raises(ValueError, match="4 deep-supervision outputs but 5 weights"):
        deep_supervision_loss(Recording(), "mss")(outputs, labels)
    with pytest.raises(ValueError, match="non-negative"):
        WeightedDeepSupervisionLoss(Recording(), [1.0, -0.5])
    normalised = WeightedDeepSupervisionLoss(Recording(), [2, 1, 1, 0], normalize=True)
    assert normalised.weights == [0.5, 0.25, 0.25, 0.0]
    assert deep_supervision_loss(Recording(), "mss_code").weights == [0.6, 0.1, 0.1, 0.1, 0.1]
    single = torch.randn(1, 3, 8, 8, 8)
    assert deep_supervision_loss(Recording(), "mss")(single, labels) == single.mean()


def test_deep_supervision_gradcheck_float64():
    outputs = [tiny(shape=(1, 3, 4 // 2**i, 4 // 2**i, 1), seed=i)[0] for i in range(2)]
    labels = torch.randint(0, 3, (1, 1, 4, 4, 1))
    ds = deep_supervision_loss(ExpLogDiceCELoss(), [0.7, 0.3])
    assert ds(outputs, labels).dtype == torch.float64  # upstream would compute in float32
    assert torch.autograd.gradcheck(lambda *xs: ds(list(xs), labels), tuple(outputs))


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")
def test_soft_surface_dice_equals_monai_chessboard_surface_dice_on_hard_masks():
    rng = np.random.default_rng(3)
    gt = np.zeros((12, 14, 10), dtype=np.float32)
    gt[2:9, 3:11, 2:8] = 1
    pred = np.roll(gt, (1, 2), axis=(0, 1))
    pred[rng.random(pred.shape) > 0.93] = 1  # speckle: many small boundaries
    p, g = (torch.from_numpy(a)[None, None] for a in (pred, gt))
    for tolerance in (0, 1, 2):
        soft = soft_surface_dice(p, g, tolerance, smooth=0.0)
        monai = compute_surface_dice(p, g, [tolerance], include_background=True, distance_metric="chessboard")
        assert soft.item() == pytest.approx(monai.item(), abs=1e-6)


def test_generalized_surface_dice_loss_is_one_minus_the_mean_of_both():
    logits, labels = tiny(shape=(2, 3, 6, 6, 4), seed=4)
    loss = GeneralizedSurfaceDiceLoss(tolerance=1)(logits, labels)
    gdc = 1 - GeneralizedDiceLoss(to_onehot_y=True, softmax=True, include_background=False)(logits, labels)
    sd = soft_surface_dice(torch.softmax(logits, 1)[:, 1:], one_hot(labels, 3)[:, 1:], 1).mean()
    assert loss.item() == pytest.approx(1 - 0.5 * (gdc + sd).item())
    # a perfect hard prediction gives (almost) zero loss
    perfect = one_hot(labels, 3) * 60.0 - 30.0
    assert GeneralizedSurfaceDiceLoss()(perfect, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_generalized_surface_dice_loss_gradcheck():
    logits, labels = tiny(shape=(1, 3, 3, 3, 2), seed=5)
    loss = GeneralizedSurfaceDiceLoss(tolerance=(0, 1, 1))
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,))

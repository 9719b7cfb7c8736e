"""KiTSMetric / LiTSMetric accumulate per-case values; the ignite handlers give a float key metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.networks import one_hot

from monai_effseg.metrics import KiTSDiceHandler, KiTSMetric, LiTSDiceHandler, LiTSMetric, kits_case_metrics


def make_case(seed: int, shape=(16, 20, 20)) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, ...) label maps: a kidney box with a tumour, and a prediction shifted by ``seed`` voxels."""
    gt = torch.zeros(shape)
    gt[3:13, 4:16, 4:14] = 1
    gt[5:9, 6:10, 6:10] = 2
    pred = torch.roll(gt, shifts=seed, dims=1)
    return pred[None], gt[None]


def test_kits_metric_matches_case_metrics_for_label_maps_and_one_hot():
    cases = [make_case(s) for s in (0, 1, 2)]
    by_labels = KiTSMetric("kits19", include_surface_dice=True, spacing=(3.0, 0.8, 0.8))
    by_onehot = KiTSMetric("kits19", include_surface_dice=True, spacing=(3.0, 0.8, 0.8))
    for pred, gt in cases:
        by_labels(y_pred=pred[None], y=gt[None])
        by_onehot(y_pred=one_hot(pred[None], 3), y=one_hot(gt[None], 3))
    expected = [kits_case_metrics(p[0], g[0], (3.0, 0.8, 0.8), "kits19") for p, g in cases]
    agg = by_labels.aggregate()
    assert agg == pytest.approx(by_onehot.aggregate())
    for key in ("kidney_dice", "tumor_dice", "kidney_sd", "tumor_sd"):
        assert agg[key] == pytest.approx(np.mean([e[key] for e in expected]))
    assert agg["mean"] == pytest.approx((agg["kidney_dice"] + agg["tumor_dice"]) / 2)
    assert by_labels.get_buffer().shape == (3, 4)


def test_kits_metric_takes_spacing_from_metatensor_and_accepts_lists():
    pred, gt = make_case(1)
    affine = torch.diag(torch.tensor([3.0, 0.8, 0.8, 1.0]))
    metric = KiTSMetric("kits21", include_surface_dice=True)
    metric(y_pred=[MetaTensor(pred, affine=affine)], y=[MetaTensor(gt, affine=affine)])
    expected = kits_case_metrics(pred[0], gt[0], (3.0, 0.8, 0.8), "kits21")
    agg = metric.aggregate()
    assert agg["tumor_sd"] == pytest.approx(expected["tumor_sd"])
    assert set(agg) == {f"{r}_{m}" for r in ("kidney_and_mass", "mass", "tumor") for m in ("dice", "sd")} | {"mean"}
    metric.reset()
    assert np.isnan(metric.aggregate()["mean"])


def test_lits_metric_reports_per_case_and_global_dice():
    metric = LiTSMetric()
    big_gt = torch.zeros(1, 1, 10, 10, 10)
    big_gt[..., 1:9, 1:9, 1:9] = 2
    small_gt = torch.zeros(1, 1, 10, 10, 10)
    small_gt[..., 4:6, 4:6, 4:6] = 2
    metric(y_pred=big_gt, y=big_gt)  # perfect large tumour
    metric(y_pred=torch.zeros_like(small_gt), y=small_gt)  # missed small tumour
    agg = metric.aggregate()
    assert agg["tumor_dice"] == pytest.approx(0.5)
    assert agg["tumor_dice_global"] == pytest.approx(2 * 512 / (512 + 512 + 8))
    assert agg["mean"] == pytest.approx((agg["liver_dice"] + agg["tumor_dice"]) / 2)


@pytest.mark.parametrize("handler_cls", [KiTSDiceHandler, LiTSDiceHandler])
def test_handlers_give_a_float_key_metric_and_log_regions(handler_cls):
    cases = [make_case(s) for s in (0, 2)]

    def step(engine, batch):
        return batch

    engine = Engine(step)
    handler = handler_cls()
    handler.attach(engine, "val_dice")
    engine.run([(p[None], g[None]) for p, g in cases], max_epochs=1)
    value = engine.state.metrics["val_dice"]
    assert isinstance(value, float) and 0 < value < 1
    assert "val_dice_tumor_dice" in engine.state.metrics
    assert engine.state.metric_details["val_dice"].shape[0] == 2


def test_kits_handler_as_key_val_metric_of_a_monai_evaluator():
    from monai.engines import SupervisedEvaluator
    from monai.handlers import from_engine

    cases = [make_case(s) for s in (0, 1)]
    data = [{"image": one_hot(p[None], 3)[0], "label": g} for p, g in cases]  # the "network" echoes the image
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
        network=torch.nn.Identity(),
        postprocessing=None,
        key_val_metric={"val_mean_dice": KiTSDiceHandler("kits19", output_transform=from_engine(["pred", "label"]))},
    )
    evaluator.run()
    expected = np.mean(
        [
            kits_case_metrics(p[0], g[0], (1, 1, 1), "kits19", include_surface_dice=False)[k]
            for p, g in cases
            for k in ("kidney_dice", "tumor_dice")
        ]
    )
    assert evaluator.state.best_metric == pytest.approx(expected)

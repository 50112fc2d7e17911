"""Dense-prediction metrics and per-sample losses on hand-computed cases, and Delta_m%."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tune_mtl.core.delta_m import delta_m
from tune_mtl.core.metrics import (
    DepthMetric,
    NormalMetric,
    SegmentationMetric,
    per_sample_depth_l1,
    per_sample_normal_cosine,
    per_sample_segmentation_cross_entropy,
)


def one_hot_logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B, H, W] labels (-1 allowed) -> logits [B, C, H, W] whose argmax is the label (class 0 where -1)."""
    return F.one_hot(labels.clamp(min=0), num_classes).movedim(-1, 1).float() * 10


# -- segmentation ------------------------------------------------------------------------------------------
def test_segmentation_perfect_prediction():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(-1, 5, (3, 7, 9), generator=g)
    metric = SegmentationMetric(5)
    metric.update(one_hot_logits(target, 5), target)
    assert metric.compute() == {"miou": 1.0, "pixel_accuracy": 1.0}


def test_segmentation_known_confusion_matrix():
    # true: 0 0 1 1 (ignored); predicted: 0 1 1 1 0. Class 2 appears in neither and is left out.
    target = torch.tensor([[[0, 0, 1, 1, -1]]])
    predicted = torch.tensor([[[0, 1, 1, 1, 0]]])
    metric = SegmentationMetric(3)
    metric.update(one_hot_logits(predicted, 3), target)
    assert metric.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    out = metric.compute()
    assert out["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # IoU_0 = 1/(2+1-1), IoU_1 = 2/(3+2-2)
    assert out["pixel_accuracy"] == pytest.approx(3 / 4)


def test_segmentation_accumulates_exactly_over_batches():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(-1, 4, (4, 5, 6), generator=g)
    logits = torch.randn(4, 4, 5, 6, generator=g)
    whole, parts = SegmentationMetric(4), SegmentationMetric(4)
    whole.update(logits, target)
    parts.update(logits[:1], target[:1])
    parts.update(logits[1:], target[1:])
    assert torch.equal(whole.confusion, parts.confusion)
    assert whole.compute() == parts.compute()


def test_segmentation_loss_is_per_sample_mean_over_labelled_pixels():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(-1, 3, (3, 4, 5), generator=g)
    target[2] = -1  # a sample with no labelled pixel contributes 0, not NaN
    logits = torch.randn(3, 3, 4, 5, generator=g)
    loss = per_sample_segmentation_cross_entropy(logits, target)
    assert loss.shape == (3,)
    for b in range(2):
        assert loss[b] == pytest.approx(float(F.cross_entropy(logits[b : b + 1], target[b : b + 1], ignore_index=-1)))
    assert loss[2] == 0.0


# -- depth -------------------------------------------------------------------------------------------------
def test_depth_known_errors_with_masked_pixels():
    target = torch.tensor([[[[2.0, 0.0], [4.0, 1.0]]]])  # 0 = no measurement
    pred = torch.tensor([[[[3.0, 100.0], [2.0, 1.0]]]])
    metric = DepthMetric()
    metric.update(pred, target)
    out = metric.compute()
    assert out["abs_err"] == pytest.approx((1 + 2 + 0) / 3)
    assert out["rel_err"] == pytest.approx((1 / 2 + 2 / 4 + 0) / 3)
    assert per_sample_depth_l1(pred, target).tolist() == pytest.approx([1.0])


def test_depth_perfect_prediction_and_per_sample_shape():
    target = torch.rand(3, 1, 4, 5) + 0.5
    target[0, 0, 0, 0] = 0.0
    metric = DepthMetric()
    metric.update(target.clone(), target)
    assert metric.compute() == {"abs_err": 0.0, "rel_err": 0.0}
    pred = target + 0.25
    loss = per_sample_depth_l1(pred, target)
    assert loss.shape == (3,) and torch.allclose(loss, torch.full((3,), 0.25))


# -- normals -----------------------------------------------------------------------------------------------
def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_normal_known_angles():
    up = [0.0, 0.0, 1.0]
    deg = math.radians
    # five valid pixels at 0, 10, 20, 45, 90 degrees from the true normal, one pixel without ground truth
    pred = torch.tensor([up, [math.sin(deg(10)), 0, math.cos(deg(10))], [0, math.sin(deg(20)), math.cos(deg(20))],
                         [1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([up] * 5 + [[0.0, 0.0, 0.0]])
    pred, target = pred.T.reshape(1, 3, 1, 6), target.T.reshape(1, 3, 1, 6)
    metric = NormalMetric()
    metric.update(pred, target)
    out = metric.compute()
    assert out["mean_angle"] == pytest.approx((0 + 10 + 20 + 45 + 90) / 5)
    assert out["median_angle"] == pytest.approx(20.0)
    assert out["within_11.25"] == pytest.approx(2 / 5)
    assert out["within_22.5"] == pytest.approx(3 / 5)
    assert out["within_30"] == pytest.approx(3 / 5)


def test_normal_perfect_prediction_is_zero_degrees():
    target = _unit(torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(3)))
    metric = NormalMetric()
    metric.update(target.clone(), target)
    out = metric.compute()
    assert out["mean_angle"] < 1e-6 and out["median_angle"] < 1e-6
    assert out["within_11.25"] == out["within_22.5"] == out["within_30"] == 1.0
    assert per_sample_normal_cosine(target, target).abs().max() < 1e-6
    assert torch.allclose(per_sample_normal_cosine(-target, target), torch.full((2,), 2.0))


def test_normal_median_from_histogram_matches_exact():
    g = torch.Generator().manual_seed(4)
    target = _unit(torch.randn(4, 3, 8, 8, generator=g))
    pred = _unit(target + 0.5 * torch.randn(4, 3, 8, 8, generator=g))
    exact, binned = NormalMetric(), NormalMetric(max_exact=50)
    for b in range(4):
        exact.update(pred[b : b + 1], target[b : b + 1])
        binned.update(pred[b : b + 1], target[b : b + 1])
    assert binned.histogram is not None and exact.histogram is None
    e, h = exact.compute(), binned.compute()
    assert h["median_angle"] == pytest.approx(e["median_angle"], abs=2e-3)
    for key in ("mean_angle", "within_11.25", "within_22.5", "within_30"):
        assert h[key] == pytest.approx(e[key])


def test_every_dense_metric_declares_its_direction():
    directions = {}
    for metric in (SegmentationMetric(2), DepthMetric(), NormalMetric()):
        assert set(metric.higher_is_better) == set(metric.names), "a direction for each metric, no extra"
        directions.update(metric.higher_is_better)
    higher = {name for name, up in directions.items() if up}
    assert higher == {"miou", "pixel_accuracy", "within_11.25", "within_22.5", "within_30"}
    assert set(directions) - higher == {"abs_err", "rel_err", "mean_angle", "median_angle"}


# -- Delta_m -----------------------------------------------------------------------------------------------
def test_delta_m_hand_example():
    metrics = {"miou": 0.55, "abs_err": 0.4, "extra": 3.0}
    baselines = {"miou": 0.5, "abs_err": 0.5}
    higher = {"miou": True, "abs_err": False}
    # miou: -(0.55 - 0.5) / 0.5 = -0.1 ; abs_err: +(0.4 - 0.5) / 0.5 = -0.2 ; mean -0.15 -> -15 %
    assert delta_m(metrics, baselines, higher) == pytest.approx(-15.0)
    assert delta_m(baselines, baselines, higher) == 0.0
    assert delta_m({"miou": 0.4, "abs_err": 0.5}, baselines, higher) == pytest.approx(10.0)  # worse -> positive


def test_delta_m_rejects_incomplete_input():
    with pytest.raises(ValueError, match="miou"):
        delta_m({"abs_err": 0.4}, {"miou": 0.5}, {"miou": True})
    with pytest.raises(ValueError, match="direction"):
        delta_m({"miou": 0.4}, {"miou": 0.5}, {})
    with pytest.raises(ValueError, match="non-zero"):
        delta_m({"miou": 0.4}, {"miou": 0.0}, {"miou": True})

"""Mechanism diagnostics (kdcicam.diagnostics): correlations, the GT-box prior, pool statistics, the
intervention's effect, gradient shares of loss terms, and the per-epoch curves / dilemma summary read
back from a Lightning metrics.csv."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import TinyBackbone

from kdcicam.data.metadata import Metadata
from kdcicam.diagnostics import (
    InterventionStats,
    box_prior,
    dilemma,
    epoch_curves,
    gradient_norms,
    gradient_shares,
    pool_stats,
    rowwise_corr,
)
from kdcicam.models.cam import combinational_cam
from kdcicam.models.causal import CausalContextPool, CICAMModel


# ------------------------------------------------------------------------------------ correlation
def test_rowwise_corr_is_pearson_per_row_and_nan_for_a_constant_row():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    r = rowwise_corr(a, b)
    assert r.shape == (4,) and r.dtype == torch.float64
    for i in range(4):
        assert r[i].item() == pytest.approx(np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1])
    assert torch.allclose(rowwise_corr(a, 3 * a + 2), torch.ones(4, dtype=torch.float64))  # affine-invariant
    assert torch.allclose(rowwise_corr(a, -a), -torch.ones(4, dtype=torch.float64))
    flat = b.clone()
    flat[2] = 7.0
    r = rowwise_corr(a, flat)
    assert math.isnan(r[2]) and torch.isfinite(r[[0, 1, 3]]).all()


# -------------------------------------------------------------------------------------- box prior
def test_box_prior_averages_box_coverage_per_class_on_the_grid():
    # a 100x50 (w x h) image whose box is its top-left quadrant: on a 2x2 grid that is cell (0, 0) only
    md = Metadata(image_ids=["a", "b", "c"], class_labels={"a": 0, "b": 0, "c": 1},
                  image_sizes={"a": (100, 50), "b": (40, 40), "c": (30, 60)},
                  boxes={"a": [(0, 0, 50, 25)], "c": [(0, 0, 30, 60)]}, num_classes=3)
    per_class, overall = box_prior(md, 2, 2)
    assert per_class.shape == (3, 2, 2) and overall.shape == (2, 2)
    # class 0: image a covers the top-left cell, image b has no box → mean 0.5 there, 0 elsewhere
    assert np.allclose(per_class[0], [[0.5, 0.0], [0.0, 0.0]])
    assert np.allclose(per_class[1], 1.0)  # a whole-image box
    assert np.allclose(per_class[2], 0.0)  # a class without images
    assert np.allclose(overall, [[2 / 3, 1 / 3], [1 / 3, 1 / 3]])
    # several boxes of one image are united, not added
    md.boxes["b"] = [(0, 0, 40, 40), (0, 0, 20, 20)]
    assert np.allclose(box_prior(md, 2, 2)[0][0], [[1.0, 0.5], [0.5, 0.5]])


# ------------------------------------------------------------------------------------------- pool
def _update(pool: CausalContextPool, signal: dict[int, torch.Tensor]) -> None:
    """One pool step in which each class of ``signal`` has one correctly classified sample with that CAM."""
    c, (h, w) = pool.num_classes, next(iter(signal.values())).shape
    cams = torch.zeros(len(signal), c, h, w)
    labels = torch.tensor(list(signal))
    for i, (k, cam) in enumerate(signal.items()):
        cams[i, k] = cam
    pool.update(cams, labels, labels.clone())


def test_pool_stats_measure_updates_movement_and_prior_fit():
    pool = CausalContextPool(3, rate=0.5)
    stats = pool_stats(pool)
    assert stats["pool_updates_mean"] == 0 and stats["pool_rn_mean"] == 0 and stats["pool_classes_updated"] == 0
    assert stats["pool_corr_first"] is None and stats["pool_corr_prior"] is None  # not materialized yet
    pool.train()
    g = torch.Generator().manual_seed(1)
    start, later = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    _update(pool, {0: start, 1: start})
    stats = pool_stats(pool)
    assert stats["pool_updates_mean"] == pytest.approx(2 / 3) and stats["pool_updates_min"] == 0
    assert stats["pool_rn_mean"] == pytest.approx(0.5 * 2 / 3)
    assert stats["pool_classes_updated"] == pytest.approx(2 / 3)
    assert stats["pool_corr_first"] == pytest.approx(1.0)  # one update: the pool is its first map
    for _ in range(6):  # class 0 turns toward another signal, class 1 keeps its own
        _update(pool, {0: later, 1: start})
    stats = pool_stats(pool)
    assert stats["pool_updates_mean"] == pytest.approx(14 / 3)
    corr0 = rowwise_corr(pool.maps[:1], pool.first[:1]).item()
    assert corr0 < 0.95  # the map moved away from its first state
    assert stats["pool_corr_first"] == pytest.approx((corr0 + 1.0) / 2)  # class 2 (never updated) left out
    # the prior: a prior equal to the pool correlates 1; one of another shape is ignored
    prior = pool.maps.numpy().copy()
    prior[2] = np.random.default_rng(0).random((4, 4))  # class 2 is not updated: not counted
    assert pool_stats(pool, prior)["pool_corr_prior"] == pytest.approx(1.0)
    assert pool_stats(pool, prior[:, :2])["pool_corr_prior"] is None


# ----------------------------------------------------------------------------------- intervention
def test_intervention_stats_by_hand():
    torch.manual_seed(0)
    stats = InterventionStats()
    assert stats.compute() == {}
    stats.add({"logits": torch.randn(2, 3), "cams": torch.randn(2, 3, 2, 2)})  # a plain CAM model: ignored
    assert stats.count == 0
    z_up = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    cams_up = torch.rand(2, 3, 4, 4)
    # identity intervention: A = 0, the down branch equals the up branch
    same = {"logits_up": z_up, "logits": z_up.clone(), "cams_up": cams_up, "cams": cams_up.clone(),
            "attention": torch.zeros(2, 6, 4, 4)}
    stats.add(same)
    assert stats.compute() == pytest.approx({"attention_abs": 0.0, "logit_change": 0.0, "pred_agreement": 1.0,
                                             "map_corr": 1.0, "map_change": 0.0})
    # a second batch that changes everything: its values average with the first batch's, per image
    z_down = torch.tensor([[0.0, 4.0, 0.0], [0.0, 2.0, 1.0]])
    attention = torch.full((2, 6, 4, 4), -0.5)
    cams_down = cams_up.flip(-1)
    stats.add({**same, "logits": z_down, "cams": cams_down, "attention": attention})
    s_up, s_down = combinational_cam(z_up, cams_up), combinational_cam(z_down, cams_down)
    change = (z_down - z_up).norm(dim=1) / z_up.norm(dim=1)
    unit = [s.flatten(1) / s.flatten(1).amax(1, keepdim=True) for s in (s_up, s_down)]
    got = stats.compute()
    assert got["attention_abs"] == pytest.approx(0.25)
    assert got["logit_change"] == pytest.approx(float(change.sum()) / 4)
    assert got["pred_agreement"] == pytest.approx(3 / 4)  # image 0's top-1 changed
    assert got["map_corr"] == pytest.approx((2 + float(rowwise_corr(s_up, s_down).sum())) / 4)
    assert got["map_change"] == pytest.approx(float((unit[1] - unit[0]).abs().mean(1).sum()) / 4, rel=1e-5)


def test_intervention_stats_on_a_ci_cam_forward():
    torch.manual_seed(0)
    model = CICAMModel(TinyBackbone(), 3).eval()
    model.pool.materialize(4, 4)
    model.pool.maps.copy_(torch.randn(3, 4, 4))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 16, 16))
    stats = InterventionStats()
    stats.add(out, model.combination, model.combination_m)
    got = stats.compute()
    assert got["attention_abs"] == pytest.approx(float(out["attention"].abs().mean()), rel=1e-5)
    assert got["attention_abs"] > 0 and got["logit_change"] > 0 and -1 <= got["map_corr"] <= 1


# -------------------------------------------------------------------------------------- gradients
def test_gradient_norms_and_shares_by_hand():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    v = torch.tensor([3.0], requires_grad=True)
    terms = {"a": (w * torch.tensor([3.0, 4.0])).sum(),  # ∇w = (3, 4): norm 5
             "b": 2 * (v ** 2).sum() + 0 * w.sum(),  # ∇v = 4v = 12, ∇w = 0
             "const": torch.tensor(1.0)}  # no gradient at all
    norms = gradient_norms(terms, [w, v])
    assert norms == pytest.approx({"a": 5.0, "b": 12.0, "const": 0.0})
    assert gradient_shares(norms) == pytest.approx({"a": 5 / 17, "b": 12 / 17, "const": 0.0})
    assert gradient_shares({"a": 0.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}
    # the graph is retained: the total still backpropagates afterwards
    sum(terms.values()).backward()
    assert torch.allclose(w.grad, torch.tensor([3.0, 4.0]))


def test_gradient_norms_of_ci_cam_loss_terms():
    torch.manual_seed(0)
    model = CICAMModel(TinyBackbone(), 3, aux="fore", aux_weight=0.5, mask_threshold=0.1).train()
    model.pool.materialize(4, 4)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    out = model(x)
    terms, _ = model.loss_terms(x, y, out)
    params = [p for p in model.parameters() if p.requires_grad]
    norms = gradient_norms(terms, params)
    assert set(norms) == {"ce_down", "ce_up", "fore"} and all(n > 0 for n in norms.values())
    # the norm of one term equals the norm of its gradient computed alone
    grads = torch.autograd.grad(terms["fore"], params, allow_unused=True, retain_graph=True)
    alone = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
    assert norms["fore"] == pytest.approx(alone, rel=1e-5)
    assert sum(gradient_shares(norms).values()) == pytest.approx(1.0)


# ------------------------------------------------------------------------------- curves / dilemma
def _write_metrics(path: Path, rows: list[dict[str, object]]) -> None:
    keys = sorted({k for r in rows for k in r})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def test_epoch_curves_average_step_values_and_keep_epoch_values(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    _write_metrics(path, [
        {"epoch": 0, "step": 0, "train/loss": 2.0, "train/fg_coverage": 0.4},
        {"epoch": 0, "step": 1, "train/loss": 1.0, "train/fg_coverage": 0.6, "lr-Adam": 0.1},
        {"epoch": 0, "step": 1, "val/top1_cls": 50.0, "val/max_box_acc_v2": 30.0},
        {"epoch": 0, "step": 1, "train/pool_updates_mean": 2.0},
        {"epoch": "", "step": 2, "train/loss": 9.0},  # no epoch: skipped
        {"epoch": 1, "step": 3, "train/loss": 0.5, "train/fg_coverage": "nan?"},  # unparsable value: skipped
        {"epoch": 1, "step": 3, "val/top1_cls": 60.0, "val/max_box_acc_v2": 25.0},
    ])
    curves = epoch_curves(path)
    assert curves == [
        {"epoch": 0, "train/fg_coverage": pytest.approx(0.5), "train/loss": pytest.approx(1.5),
         "train/pool_updates_mean": 2.0, "val/max_box_acc_v2": 30.0, "val/top1_cls": 50.0},
        {"epoch": 1, "train/loss": 0.5, "val/max_box_acc_v2": 25.0, "val/top1_cls": 60.0},
    ]
    assert epoch_curves(tmp_path / "missing.csv") == []


def test_dilemma_finds_both_peaks_and_the_gaps():
    curves = [
        {"epoch": 0, "val/top1_cls": 40.0, "val/max_box_acc_v2": 50.0, "val/top1_loc": 25.0},
        {"epoch": 1, "val/top1_cls": 70.0, "val/max_box_acc_v2": 45.0, "val/top1_loc": 35.0},
        {"epoch": 2, "val/top1_cls": 60.0, "val/max_box_acc_v2": 50.0, "val/top1_loc": 33.0},
        {"epoch": 3, "train/loss": 0.1},  # an epoch without validation is ignored
    ]
    d = dilemma(curves)
    assert d == pytest.approx({
        "epoch_best_cls": 1, "epoch_best_max_box_acc_v2": 0,  # tie 50 / 50: the earliest epoch
        "best_top1_cls": 70.0, "best_max_box_acc_v2": 50.0,
        "cls_gap_at_best_loc": 30.0, "max_box_acc_v2_gap_at_best_cls": 5.0,
        "epoch_best_top1_loc": 1, "best_top1_loc": 35.0,
        "top1_loc_gap_at_best_cls": 0.0, "cls_gap_at_best_top1_loc": 0.0})
    no_loc = dilemma([{k: v for k, v in r.items() if k != "val/top1_loc"} for r in curves])
    assert "epoch_best_top1_loc" not in no_loc and no_loc["epoch_best_cls"] == 1
    assert dilemma([{"epoch": 0, "train/loss": 1.0}]) == {}


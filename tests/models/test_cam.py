"""CAM head, combinational CAM and the CAM model (docs/method.md §1)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _tiny import TinyBackbone

from kdcicam.errors import ConfigError
from kdcicam.models.cam import (
    CAMHead,
    CAMModel,
    combination_weights,
    combinational_cam,
    gt_cam,
    rank_weights,
    top1_cam,
)


def test_class_cams_are_weighted_feature_sums():
    torch.manual_seed(0)
    head = CAMHead(3, 2)
    feats = torch.randn(2, 3, 2, 3)
    cams = head.class_cams(feats)
    w = head.fc.weight
    for b in range(2):
        for c in range(2):
            for i in range(2):
                for j in range(3):
                    expected = sum(w[c, d] * feats[b, d, i, j] for d in range(3))
                    assert torch.isclose(cams[b, c, i, j], expected, atol=1e-6)
    # the logits are the spatial mean of the CAMs plus the bias (no ReLU anywhere)
    assert torch.allclose(head(feats), cams.mean(dim=(2, 3)) + head.fc.bias, atol=1e-6)


def test_combination_weights_by_hand():
    assert torch.allclose(combination_weights(5, "quadratic"),
                          torch.tensor([0.0, -1 / 16, -4 / 16, -9 / 16, -1.0]))
    # sum_1, C = 6, m = 3: S = CAM_(0) − (1/3)·(0·CAM_(3) + 1·CAM_(4) + 2·CAM_(5))
    assert torch.allclose(combination_weights(6, "sum_1", m=3),
                          torch.tensor([1.0, 0.0, 0.0, 0.0, -1 / 3, -2 / 3]))
    # m is clamped to C: C = 3, m = 20 → m = 3, the top class also gets ramp weight 0
    assert torch.allclose(combination_weights(3, "sum_1", m=20), torch.tensor([1.0, -1 / 3, -2 / 3]))
    assert torch.equal(combination_weights(1, "quadratic"), torch.zeros(1))
    with pytest.raises(ConfigError, match="quadratic, sum_1"):
        combination_weights(4, "cubic")


def test_rank_weights_follow_the_logit_order():
    logits = torch.tensor([[0.1, 3.0, -2.0]])  # ranks: class1 → 0, class0 → 1, class2 → 2
    assert torch.allclose(rank_weights(logits, "quadratic"), torch.tensor([[-0.25, 0.0, -1.0]]))


def test_combinational_cam_by_hand():
    # three classes with constant-ish CAMs; ranking by logits is class 2, 0, 1
    cams = torch.zeros(1, 3, 1, 2)
    cams[0, 0] = torch.tensor([1.0, 3.0])
    cams[0, 1] = torch.tensor([2.0, -2.0])
    cams[0, 2] = torch.tensor([5.0, 0.0])
    logits = torch.tensor([[1.0, 0.0, 2.0]])
    # h = [0, -1/4, -1] → S = -1/4·CAM_0 − CAM_1 = [-2.25, 1.25]; minus min → [0, 3.5]
    s = combinational_cam(logits, cams, "quadratic")
    assert torch.allclose(s, torch.tensor([[[0.0, 3.5]]]))


@pytest.mark.parametrize("mode,m", [("quadratic", 20), ("sum_1", 4), ("sum_1", 20)])
def test_fast_form_equals_slow_weighted_sum(mode, m):
    torch.manual_seed(1)
    b, c, d, h, w = 3, 7, 5, 4, 3
    feats, weight, logits = torch.randn(b, d, h, w), torch.randn(c, d), torch.randn(b, c)
    cams = torch.einsum("cd,bdhw->bchw", weight, feats)
    hr = combination_weights(c, mode, m)
    slow = torch.zeros(b, h, w)
    for i in range(b):
        order = torch.argsort(logits[i], descending=True)
        for r in range(c):
            slow[i] += hr[r] * cams[i, order[r]]
        slow[i] -= slow[i].min()
    from_cams = combinational_cam(logits, cams, mode, m)
    fast = combinational_cam(logits, feats, mode, m, weight=weight)
    assert torch.allclose(from_cams, slow, atol=1e-5)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.all(fast.flatten(1).amin(1).abs() < 1e-6)


def test_top1_and_gt_cam_pick_the_class_map():
    cams = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    logits = torch.tensor([[0.0, 1.0, 0.5], [2.0, 0.0, 1.0]])
    assert torch.equal(top1_cam(cams, logits), torch.stack([cams[0, 1], cams[1, 0]]))
    assert torch.equal(gt_cam(cams, torch.tensor([2, 1])), torch.stack([cams[0, 2], cams[1, 1]]))


def test_cam_model_output_contract_and_loss():
    torch.manual_seed(2)
    model = CAMModel(TinyBackbone(), 4)
    x = torch.rand(3, 3, 16, 16)
    out = model(x)
    assert out["logits"].shape == (3, 4)
    assert out["cams"].shape == (3, 4, 4, 4)
    assert out["features"].shape == (3, 6, 4, 4)
    s = model.localization_map(out, "combinational")
    assert s.shape == (3, 4, 4) and torch.all(s.flatten(1).amin(1) == 0)
    assert torch.equal(model.localization_map(out, "top1"), top1_cam(out["cams"], out["logits"]))
    y = torch.tensor([0, 3, 1])
    assert torch.equal(model.localization_map(out, "gt", labels=y), gt_cam(out["cams"], y))
    with pytest.raises(ValueError, match="labels"):
        model.localization_map(out, "gt")
    with pytest.raises(ConfigError, match="combinational, top1, gt"):
        model.localization_map(out, "mean")
    loss, logs = model.loss(x, y, out)
    assert torch.isclose(loss, F.cross_entropy(out["logits"], y))
    assert set(logs) >= {"loss", "loss_ce"}
    terms, term_logs = model.loss_terms(x, y, out)  # the loss as its terms (for gradient shares)
    assert set(terms) == {"ce"} and torch.equal(terms["ce"], loss) and "loss" not in term_logs
    assert model.method == "cam" and model.num_classes == 4


def test_cam_model_param_groups():
    model = CAMModel(TinyBackbone(), 4)
    groups = model.param_groups(1e-3, 0.1)
    assert [g["name"] for g in groups] == ["classifier", "backbone"]
    assert groups[0]["lr"] == pytest.approx(1e-3) and groups[1]["lr"] == pytest.approx(1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.parameters()}

"""KD-CI-CAM losses: logit KD, CAM distillation, routes, the student objective (docs/method.md §3)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcicam.errors import ConfigError
from kdcicam.models.distill import (
    StudentObjective,
    allowed_routes,
    cam_distill_loss,
    draw_routes,
    freeze_teacher,
    kd_loss,
    needed_teachers,
)


def test_official_kd_equals_its_formula():
    torch.manual_seed(0)
    s, t, T = torch.randn(5, 4), torch.randn(5, 4), 15.0
    p_s, p_t = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    expected = (p_t * (p_t.log() - p_s)).sum() / 5  # probabilities, not log-probabilities; no T²
    assert torch.allclose(kd_loss(s, t, T, "official"), expected, atol=1e-7)
    # ... which is exactly nn.KLDivLoss(reduction="batchmean") as called in the official code
    assert torch.allclose(kd_loss(s, t, T), nn.KLDivLoss(reduction="batchmean")(p_s, p_t))


def test_kl_mode_equals_torch_kl_div():
    torch.manual_seed(1)
    s, t, T = torch.randn(6, 3), torch.randn(6, 3), 2.0
    ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    assert torch.allclose(kd_loss(s, t, T, "kl"), ref)
    assert torch.allclose(kd_loss(s, t, T, "kl", t_squared=True), ref * T * T)
    assert kd_loss(s, s, T, "kl").abs() < 1e-6
    with pytest.raises(ConfigError, match="official, kl"):
        kd_loss(s, t, T, "js")


def test_kd_gradient_reaches_student_only():
    s = torch.randn(2, 3, requires_grad=True)
    t = torch.randn(2, 3, requires_grad=True)
    kd_loss(s, t, 1.5).backward()
    assert s.grad is not None and t.grad is None


def test_cam_distillation():
    torch.manual_seed(2)
    s = torch.randn(2, 3, 4, 4)
    assert cam_distill_loss(s, s.clone(), 15.0) == 0
    t = torch.randn(2, 3, 4, 4)
    expected = ((torch.sigmoid(s / 15) - torch.sigmoid(t / 15)) ** 2).mean()
    assert torch.allclose(cam_distill_loss(s, t, 15.0), expected)
    big = torch.randn(2, 3, 8, 8)  # teacher at another size is resized to the student's
    resized = F.interpolate(big, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(cam_distill_loss(s, big, 3.0), cam_distill_loss(s, resized, 3.0))


def test_routes_are_uniform_and_respect_the_allowed_set():
    g = torch.Generator().manual_seed(0)
    r = draw_routes(30_000, g)
    for k in (0, 1, 2):
        assert abs((r == k).float().mean().item() - 1 / 3) < 0.01
    r2 = draw_routes(30_000, g, allowed=allowed_routes("loc"))
    assert set(r2.unique().tolist()) == {0, 2} and abs((r2 == 2).float().mean().item() - 0.5) < 0.01
    assert torch.equal(draw_routes(50, torch.Generator().manual_seed(3)),
                       draw_routes(50, torch.Generator().manual_seed(3)))
    assert allowed_routes("both") == (0, 1, 2) and allowed_routes("cls") == (0, 1)
    assert allowed_routes("none") == (0,)
    assert needed_teachers("both") == ("cls_teacher", "loc_teacher") and needed_teachers("none") == ()
    assert needed_teachers("cls") == ("cls_teacher",) and needed_teachers("loc") == ("loc_teacher",)
    with pytest.raises(ConfigError, match="both, cls, loc, none"):
        allowed_routes("all")


def _student_out(b=4, c=3):
    torch.manual_seed(4)
    return {"logits": torch.randn(b, c, requires_grad=True), "cams": torch.randn(b, c, 2, 2, requires_grad=True)}


def test_student_objective_equals_the_formula():
    out = _student_out()
    y = torch.tensor([0, 2, 1, 1])
    routes = torch.tensor([1, 0, 2, 1])
    t_logits, t_cams = torch.randn(4, 3), torch.randn(4, 3, 2, 2)
    obj = StudentObjective(alpha=0.8, T=15.0)
    loss, logs = obj(out, y, routes, t_logits, t_cams)
    i1, i2 = torch.tensor([0, 3]), torch.tensor([2])
    expected = (0.2 * F.cross_entropy(out["logits"], y)
                + 0.8 * kd_loss(out["logits"][i1], t_logits[i1], 15.0)
                + 0.8 * cam_distill_loss(out["cams"][i2], t_cams[i2], 15.0))
    assert torch.allclose(loss, expected)
    assert logs["n_route1"] == 2 and logs["n_route2"] == 1
    # teacher outputs may also be given for the route's samples only
    loss2, _ = obj(out, y, routes, t_logits[i1], t_cams[i2])
    assert torch.allclose(loss, loss2)
    loss.backward()
    assert out["cams"].grad[i2].abs().sum() > 0 and out["cams"].grad[[0, 1, 3]].abs().sum() == 0


def test_empty_routes_give_zero_terms_and_ablations():
    out = _student_out()
    y = torch.tensor([0, 2, 1, 1])
    obj = StudentObjective(alpha=0.8, T=15.0)
    loss, logs = obj(out, y, torch.zeros(4, dtype=torch.long))  # no teacher needed for route 0
    assert torch.allclose(loss, 0.2 * F.cross_entropy(out["logits"], y))
    assert logs["loss_kd"] == 0 and logs["loss_cam"] == 0
    none = StudentObjective(alpha=0.8, teachers="none")
    assert none.alpha == 0.0 and none.routes == (0,)
    loss, _ = none(out, y, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(loss, F.cross_entropy(out["logits"], y))
    cls_only = StudentObjective(teachers="cls")
    with pytest.raises(ValueError, match="not allowed"):
        cls_only(out, y, torch.tensor([0, 2, 0, 0]), loc_teacher_cams=torch.randn(4, 3, 2, 2))
    with pytest.raises(ValueError, match="cls_teacher_logits"):
        obj(out, y, torch.tensor([1, 0, 0, 0]))
    with pytest.raises(ValueError, match="rows"):
        obj(out, y, torch.tensor([1, 0, 0, 0]), cls_teacher_logits=torch.randn(3, 3))
    with pytest.raises(ConfigError):
        StudentObjective(alpha=1.5)


def test_freeze_teacher_stays_in_eval_without_gradients():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    teacher = freeze_teacher(net)
    parent = nn.ModuleDict({"teacher": teacher, "student": nn.Linear(3, 3)})
    parent.train()
    assert not net.training and not any(m.training for m in net.modules())
    assert all(not p.requires_grad for p in net.parameters())
    x = torch.randn(5, 3, requires_grad=True)
    y1, y2 = teacher(x), teacher(x)
    assert not y1.requires_grad and torch.equal(y1, y2)  # eval: no dropout, running BN stats
    assert torch.equal(net[1].running_mean, torch.zeros(4))


def test_objective_terms_sum_to_the_loss_and_cam_temperature_is_its_own():
    out = _student_out()
    y = torch.tensor([0, 2, 1, 1])
    routes = torch.tensor([1, 0, 2, 2])
    t_logits, t_cams = torch.randn(4, 3), 5 * torch.randn(4, 3, 2, 2)
    i1, i2 = torch.tensor([0]), torch.tensor([2, 3])
    same = StudentObjective(alpha=0.7, T=15.0)  # cam_T None: the CAMs use T, as the official code does
    own = StudentObjective(alpha=0.7, T=15.0, cam_T=2.0)
    assert same.cam_temperature == 15.0 and own.cam_temperature == 2.0 and own.config()["cam_T"] == 2.0
    for obj, cam_t in ((same, 15.0), (own, 2.0)):
        terms, logs = obj.terms(out, y, routes, t_logits, t_cams)
        assert set(terms) == {"ce", "kd", "cam"} and "loss" not in logs
        loss, _ = obj(out, y, routes, t_logits, t_cams)
        assert torch.allclose(sum(terms.values()), loss)
        assert torch.allclose(terms["ce"], 0.3 * F.cross_entropy(out["logits"], y))
        assert torch.allclose(terms["kd"], 0.7 * kd_loss(out["logits"][i1], t_logits[i1], 15.0))  # logits keep T
        assert torch.allclose(terms["cam"], 0.7 * cam_distill_loss(out["cams"][i2], t_cams[i2], cam_t))
    cam_same = same.terms(out, y, routes, t_logits, t_cams)[0]["cam"]
    cam_own = own.terms(out, y, routes, t_logits, t_cams)[0]["cam"]
    assert cam_own > 10 * cam_same  # σ(CAM/15) is nearly flat for CAMs a few units large
    with pytest.raises(ConfigError, match="CAM temperature"):
        StudentObjective(cam_T=-1.0)

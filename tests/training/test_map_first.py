"""Map-first distillation (docs/method.md §9): attention transfer on the scored map, a route-2 weight that adapts
to a gradient share, teachers taken from a finished run, and a student started from a teacher's weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdcicam.models.cam import combinational_cam
from kdcicam.models.distill import StudentObjective, adapted_weight, scored_map_loss


def test_scored_map_loss_is_scale_free_and_uses_the_teachers_ranking():
    g = torch.Generator().manual_seed(0)
    t_cams, t_logits = torch.randn(4, 5, 6, 6, generator=g), torch.randn(4, 5, generator=g)
    assert scored_map_loss(t_cams, t_cams, t_logits).item() == pytest.approx(0.0, abs=1e-10)
    assert scored_map_loss(7.0 * t_cams, t_cams, t_logits).item() == pytest.approx(0.0, abs=1e-10)  # scale-free
    other = torch.randn(4, 5, 6, 6, generator=g)
    loss = scored_map_loss(other, t_cams, t_logits)
    s = combinational_cam(t_logits, other).flatten(1)
    t = combinational_cam(t_logits, t_cams).flatten(1)
    expected = (s / s.norm(dim=1, keepdim=True) - t / t.norm(dim=1, keepdim=True)).pow(2).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0.0 < loss.item() <= 4.0
    # the student's own logits play no part: the map is ranked by the teacher's
    objective = StudentObjective(alpha=0.5, teachers="loc", cam_loss="at", cam_weight=2.0)
    out = {"logits": torch.randn(4, 5, generator=g), "cams": other}
    terms, _ = objective.terms(out, torch.tensor([0, 1, 2, 3]), torch.full((4,), 2), loc_teacher_cams=t_cams,
                               loc_teacher_logits=t_logits)
    assert terms["cam"].item() == pytest.approx(0.5 * 2.0 * expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="loc_teacher_logits"):
        objective.terms(out, torch.tensor([0, 1, 2, 3]), torch.full((4,), 2), loc_teacher_cams=t_cams)


@pytest.mark.parametrize("share, target", [(0.05, 0.35), (0.9, 0.35), (0.35, 0.35)])
def test_adapted_weight_moves_the_share_towards_its_target(share, target):
    g_other, w = 1.0, 1.0
    g_cam = share / (1 - share) * g_other  # the weighted term's norm that gives `share` at w = 1
    for _ in range(30):
        current = w * g_cam / (w * g_cam + g_other)
        w = adapted_weight(w, current, target)
    assert w * g_cam / (w * g_cam + g_other) == pytest.approx(target, abs=1e-3)


def test_teachers_from_a_finished_run_and_a_student_started_from_one(fast_config, tmp_path: Path):
    from kdcicam.checkpoints import average_checkpoints, load_model
    from kdcicam.training.evaluate import evaluate
    from kdcicam.training.pipeline import train

    cam = train(fast_config("cam", "optim.epochs=2", "trainer.keep_epoch_checkpoints=true"), tmp_path / "cam")
    best_loc = cam["by_monitor"]["best_loc"]["path"]
    epochs = [tmp_path / "cam" / "checkpoints" / f"epoch{k}.ckpt" for k in (0, 1)]
    averaged = average_checkpoints(epochs, tmp_path / "avg.ckpt")
    w = [load_model(p).head.fc.weight for p in (*epochs, averaged)]
    assert torch.allclose(w[2], (w[0] + w[1]) / 2, atol=1e-6) and not torch.allclose(w[0], w[1])
    assert evaluate(averaged, ["val"], progress=False, write=False)["box_threshold_chosen_on"] == "val"
    cfg = fast_config("kd-ci-cam", "optim.epochs=1", f"kd.loc_teacher_checkpoint={best_loc}",
                      f"kd.cls_teacher_checkpoint={cam['last']}", "kd.student_init=loc_teacher", "kd.cam_loss=at",
                      "kd.cam_grad_share=0.35", "kd.cam_share_every=1", "kd.kd_mode=official")
    out = tmp_path / "kd"
    summary = train(cfg, out)
    assert not (out / "cls_teacher").exists() and not (out / "loc_teacher").exists()  # nothing trained for them
    assert summary["loc_teacher"]["given"] == best_loc
    student = torch.load(out / "student" / "checkpoints" / "last.ckpt", weights_only=True)
    assert student["kdcicam"]["cam_weight"] != 1.0  # the weight adapted
    # started from the CAM run: after one epoch at a small lr, the head is still close to the teacher's
    teacher_head = load_model(best_loc).head.fc.weight
    student_head = load_model(out / "student" / "checkpoints" / "last.ckpt").head.fc.weight
    fresh = load_model(out / "student" / "checkpoints" / "last.ckpt")
    assert (student_head - teacher_head).norm() < (teacher_head.norm() * 0.5)
    assert fresh.pool.maps.abs().sum() > 0  # its own pool, filled during training


def test_counterfactual_loss_uses_the_loc_teachers_mask(fast_config):
    from kdcicam.config import config_to_dict
    from kdcicam.training.module import WSOLModule

    cfg = fast_config("kd-ci-cam", "kd.counterfactual=0.5")
    module = WSOLModule(config_to_dict(cfg), num_classes=4)
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    out = module(x)
    g = torch.Generator().manual_seed(0)
    teacher = {"loc_teacher_cams": torch.randn(4, 4, 4, 4, generator=g), "loc_teacher_logits": torch.randn(4, 4, generator=g)}
    loss = module._counterfactual(x, y, out, torch.tensor([2, 0, 2, 1]), teacher)
    assert torch.isfinite(loss) and loss.item() > 0 and loss.requires_grad
    none = module._counterfactual(x, y, out, torch.tensor([0, 0, 1, 1]), teacher)
    assert none.item() == 0.0

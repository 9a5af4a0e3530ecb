"""CI-CAM: context pool, intervention, losses, DDP sync, checkpoints (docs/method.md §2, §3.1)."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from _tiny import TinyBackbone
from torch import nn

from kdcicam.errors import ConfigError
from kdcicam.models.cam import combinational_cam
from kdcicam.models.causal import CausalContextPool, CICAMModel, KDCICAMModel, context_attention, standardize
from kdcicam.models.registry import create_model


def _model(c: int = 3, **options) -> CICAMModel:
    torch.manual_seed(0)
    return CICAMModel(TinyBackbone(), c, **options)


# ------------------------------------------------------------------------------------------ pool
def test_standardize_by_hand_and_matches_official_batchnorm():
    m = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = standardize(m)
    # mean 2.5, biased variance 1.25, eps inside the square root
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(1.25 + 1e-5)
    assert torch.allclose(out[0].flatten(), expected, atol=1e-7)
    assert torch.equal(out[1], torch.zeros(2, 2))  # an all-zero map stays zero
    bn = nn.BatchNorm2d(2).train()  # what the official update_mask uses
    assert torch.allclose(bn(m[None])[0], out, atol=1e-6)


def test_one_pool_update_counts_only_correct_samples():
    pool = CausalContextPool(3, 1, 2, rate=0.1).train()
    cams = torch.tensor([
        [[[1.0, 3.0]], [[9.0, 9.0]], [[0.0, 0.0]]],  # y=0, pred=0 → counts CAM_0 = [1, 3]
        [[[5.0, 0.0]], [[7.0, 8.0]], [[0.0, 0.0]]],  # y=0, pred=1 → wrong, ignored
        [[[0.0, 0.0]], [[2.0, 6.0]], [[0.0, 0.0]]],  # y=1, pred=1 → counts CAM_1 = [2, 6]
        [[[0.0, 0.0]], [[4.0, 2.0]], [[0.0, 0.0]]],  # y=1, pred=1 → counts CAM_1 = [4, 2]
    ])
    labels = torch.tensor([0, 0, 1, 1])
    preds = torch.tensor([0, 1, 1, 1])
    e = CausalContextPool.class_sums(cams, labels, preds, 3)
    assert torch.equal(e, torch.tensor([[[1.0, 3.0]], [[6.0, 8.0]], [[0.0, 0.0]]]))
    assert pool.update(cams, labels, preds)
    # class 0: N(E) = [-1, 1]/sqrt(1 + eps); M = N(0.1·N(E)) = [-a, a] with a = 0.1b/sqrt((0.1b)² + eps)
    b = 1 / math.sqrt(1 + 1e-5)
    a = 0.1 * b / math.sqrt((0.1 * b) ** 2 + 1e-5)
    assert torch.allclose(pool.maps[0], torch.tensor([[-a, a]]), atol=1e-6)
    assert torch.allclose(pool.maps[1], torch.tensor([[-a, a]]), atol=1e-6)  # E_1 = [6, 8] → same shape
    assert torch.equal(pool.maps[2], torch.zeros(1, 2))  # no correct sample → stays zero
    # second step: M ← N(M + r·N(E)) with the previous M
    before = pool.maps.clone()
    pool.update(cams, labels, preds)
    assert torch.allclose(pool.maps, standardize(before + 0.1 * standardize(e)), atol=1e-6)


def test_pool_frozen_in_eval_and_lazily_sized():
    pool = CausalContextPool(2, rate=0.5)
    assert not pool.is_materialized and pool.maps.shape == (2, 0, 0)
    pool.eval()
    assert torch.equal(pool.context(5, 7), torch.zeros(2, 5, 7))  # reads as zeros, size not fixed
    assert not pool.is_materialized
    assert not pool.update(torch.ones(1, 2, 3, 4), torch.tensor([0]), torch.tensor([0]))
    assert not pool.is_materialized
    pool.train()
    assert pool.update(torch.rand(1, 2, 3, 4), torch.tensor([0]), torch.tensor([0]))
    assert pool.maps.shape == (2, 3, 4)
    with pytest.raises(ValueError, match="feature map"):
        pool.context(5, 5)  # training at another size is refused
    pool.eval()
    assert pool.context(6, 8).shape == (2, 6, 8)  # eval: resized to the feature map


# ---------------------------------------------------------------------------------- intervention
def test_intervention_is_the_conv_on_the_one_hot_context():
    torch.manual_seed(3)
    c, d, h, w = 4, 5, 2, 3
    conv = nn.Conv2d(c, d, 1)
    ctx = torch.randn(c, h, w)
    pred = torch.tensor([2, 0, 3])
    one_hot = torch.zeros(3, c, h, w)
    for i, k in enumerate(pred):
        one_hot[i, k] = ctx[k]
    assert torch.allclose(context_attention(conv, ctx, pred), conv(one_hot), atol=1e-6)
    # by hand for one entry: A[b, d] = W_m[d, ĉ]·M[ĉ] + b_m[d]
    assert torch.allclose(context_attention(conv, ctx, pred)[1, 4],
                          conv.weight[4, 0, 0, 0] * ctx[0] + conv.bias[4], atol=1e-6)
    # soft variant: every pool entry weighted by p_c
    p = torch.softmax(torch.randn(3, c), dim=1)
    soft_in = p[:, :, None, None] * ctx[None]
    assert torch.allclose(context_attention(conv, ctx, pred, probs=p), conv(soft_in), atol=1e-6)


def test_forward_two_branches_share_one_classifier():
    model = _model(soft_intervention=False).train()
    model.pool.materialize(4, 4)
    model.pool.maps.copy_(torch.randn(3, 4, 4))
    x = torch.rand(2, 3, 16, 16)
    out = model(x)
    f = model.backbone(x)
    assert torch.allclose(out["features"], f)
    assert torch.equal(out["pred_up"], out["logits_up"].argmax(1))
    attention = context_attention(model.mask2attention, model.pool.maps, out["pred_up"])
    assert torch.allclose(out["features_down"], f + attention * f, atol=1e-6)
    assert torch.allclose(out["logits"], model.head(out["features_down"]), atol=1e-6)
    assert torch.allclose(out["cams"], model.head.class_cams(out["features_down"]), atol=1e-6)
    assert torch.allclose(out["cams_up"], model.head.class_cams(f), atol=1e-6)
    # the test output is the down branch; the map ranks CAM_down by z_down
    s = model.localization_map(out, "combinational")
    assert torch.allclose(s, combinational_cam(out["logits"], out["cams"]), atol=1e-6)


def test_soft_intervention_uses_softmax_of_up_logits():
    model = _model(soft_intervention=True).eval()
    model.pool.materialize(4, 4)
    model.pool.maps.copy_(torch.randn(3, 4, 4))
    out = model(torch.rand(2, 3, 16, 16))
    p = torch.softmax(out["logits_up"], 1)
    a = context_attention(model.mask2attention, model.pool.maps, out["pred_up"], p)
    assert torch.allclose(out["features_down"], out["features"] * (1 + a), atol=1e-6)


def test_pool_gets_no_gradient_and_the_intervention_conv_does():
    model = _model().train()
    model.pool.materialize(4, 4)
    model.pool.maps.copy_(torch.randn(3, 4, 4))
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    out = model(x)
    loss, _ = model.loss(x, y, out)
    loss.backward()
    assert not model.pool.maps.requires_grad and model.pool.maps.grad is None
    assert "pool.maps" not in dict(model.named_parameters())
    assert model.mask2attention.weight.grad is not None and model.mask2attention.weight.grad.abs().sum() > 0
    assert model.backbone.conv.weight.grad.abs().sum() > 0


def test_update_pool_in_training_only_and_loss_leaves_it_alone():
    model = _model()
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    model.eval()
    out = model(x)
    assert not model.update_pool(out, y)
    assert torch.count_nonzero(model.pool.maps) == 0
    model.train()
    out = model(x)
    y = out["pred_up"].clone()  # all correct → every predicted class gets context
    model.loss(x, y, out)
    assert torch.count_nonzero(model.pool.maps) == 0  # the loss is pure
    expected = CausalContextPool.class_sums(out["cams_up"], y, out["pred_up"], 3)
    assert model.update_pool(out, y)
    assert torch.allclose(model.pool.maps, standardize(0.01 * standardize(expected)), atol=1e-6)


# -------------------------------------------------------------------------------------- losses
def _ce_terms(model, x, y, out):
    return F.cross_entropy(out["logits_up"], y) + F.cross_entropy(out["logits"], y)


def _fg_bg(model, x, out, thr, branch=""):
    s = combinational_cam(out["logits" + branch], out["cams" + branch])
    s = F.interpolate(s[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    mask = (s > thr * s.flatten(1).amax(1).view(-1, 1, 1, 1)).float()
    xn = model.backbone.normalize(x)
    z_fg = model.head(model.backbone.forward_features(xn * mask))
    z_bg = model.head(model.backbone.forward_features(xn * (1 - mask)))
    return z_fg, z_bg, mask


def test_fore_and_diff_aux_losses_equal_their_formulas():
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([2, 0, 1])
    fore = _model(aux="fore", aux_weight=0.6, mask_threshold=0.15).eval()
    out = fore(x)
    z_fg, _, mask = _fg_bg(fore, x, out, 0.15)
    assert 0 < mask.mean() < 1  # a real split of the image
    loss, logs = fore.loss(x, y, out)
    assert torch.allclose(loss, _ce_terms(fore, x, y, out) + 0.6 * F.cross_entropy(z_fg, y), atol=1e-6)
    assert torch.allclose(logs["loss_fore"], F.cross_entropy(z_fg, y))

    diff = _model(aux="diff_aux", aux_weight=0.5, mask_threshold=0.25).eval()
    out = diff(x)
    z_fg, z_bg, _ = _fg_bg(diff, x, out, 0.25)
    d = z_fg - z_bg
    expected = _ce_terms(diff, x, y, out) + 0.5 * F.cross_entropy(d, y) + 0.5 * F.cross_entropy((d + out["logits"]) / 2, y)
    loss, logs = diff.loss(x, y, out)
    assert torch.allclose(loss, expected, atol=1e-6)
    # the paper's wording (mask from S_up) is available as an option
    up = _model(aux="fore", mask_threshold=0.15, aux_mask_branch="up").eval()
    out = up(x)
    z_fg, _, _ = _fg_bg(up, x, out, 0.15, branch="_up")
    loss, _ = up.loss(x, y, out)
    assert torch.allclose(loss, _ce_terms(up, x, y, out) + F.cross_entropy(z_fg, y), atol=1e-6)


def test_sparsity_and_kd_recipe():
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([1, 0])
    for upsampled in (False, True):
        model = _model(sparsity=0.04, sparsity_upsampled=upsampled).eval()
        out = model(x)
        s = combinational_cam(out["logits"], out["cams"])
        if upsampled:
            s = F.interpolate(s[:, None], size=(16, 16), mode="bilinear", align_corners=False)
        loss, _ = model.loss(x, y, out)
        assert torch.allclose(loss, _ce_terms(model, x, y, out) + 0.04 * s.mean(), atol=1e-6)
    kd = _model(recipe="kd").eval()
    out = kd(x)
    loss, logs = kd.loss(x, y, out)
    assert torch.allclose(loss, F.cross_entropy(out["logits"], y)) and "loss_ce_up" not in logs


def test_invalid_options_raise_config_error():
    with pytest.raises(ConfigError, match="recipe"):
        _model(recipe="both")
    with pytest.raises(ConfigError, match="aux"):
        _model(aux="back")
    with pytest.raises(ConfigError, match="pool_size"):
        _model(pool_size="big")


# ----------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_restores_pool_and_outputs(tmp_path):
    model = create_model("ci-cam", TinyBackbone(), num_classes=3, pool_rate=0.3).train()
    x = torch.rand(4, 3, 16, 16)
    for _ in range(2):
        out = model(x)
        model.update_pool(out, out["pred_up"])  # all correct → pool changes
    assert torch.count_nonzero(model.pool.maps) > 0
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "hparams": model.hparams()}, path)
    ckpt = torch.load(path, weights_only=True)
    assert "pool.maps" in ckpt["state_dict"]
    h = dict(ckpt["hparams"])
    assert h.pop("method") == "ci-cam" and h.pop("num_classes") == 3
    for key in ("backbone", "backbone_options", "output_stride", "freeze_stages"):
        h.pop(key)
    fresh = create_model("ci-cam", TinyBackbone(), num_classes=3, **h)
    assert not fresh.pool.is_materialized
    fresh.load_state_dict(ckpt["state_dict"], strict=True)  # the lazy pool takes the stored size
    assert torch.equal(fresh.pool.maps, model.pool.maps)
    model.eval(), fresh.eval()
    a, b = model(x), fresh(x)
    for key in ("logits", "cams", "features_down"):
        assert torch.equal(a[key], b[key])
    # a pool of another, fixed size does not load silently
    other = create_model("ci-cam", TinyBackbone(), num_classes=3, pool_size=[2, 2])
    with pytest.raises(RuntimeError, match="size mismatch"):
        other.load_state_dict(ckpt["state_dict"], strict=True)


def test_init_pool_sizes_from_the_backbone():
    model = _model()
    assert model.init_pool((32, 24)) == (8, 6)
    assert model.pool.maps.shape == (3, 8, 6) and model.training


# ------------------------------------------------------------------------------------ KD student
def test_kd_student_model_uses_the_objective():
    torch.manual_seed(0)
    student = KDCICAMModel(TinyBackbone(), 3, alpha=0.8, temperature=15.0).train()
    assert student.recipe == "kd" and student.method == "kd-ci-cam"
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    out = student(x)
    routes = torch.tensor([0, 1, 2])
    t_logits, t_cams = torch.randn(3, 3), torch.randn(3, 3, 4, 4)
    loss, _ = student.loss(x, y, out, routes=routes, cls_teacher_logits=t_logits, loc_teacher_cams=t_cams)
    expected, _ = student.objective(out, y, routes, t_logits, t_cams)
    assert torch.allclose(loss, expected)
    assert student.options()["teachers"] == "both" and "recipe" not in student.options()


# ------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cams, labels, preds = _ddp_data()
        half = cams.shape[0] // world
        sl = slice(rank * half, (rank + 1) * half)
        pool = CausalContextPool(3, 2, 2, rate=0.2).train()
        for _ in range(2):
            pool.update(cams[sl], labels[sl], preds[sl])
        torch.save({"maps": pool.maps, "updates": pool.updates}, os.path.join(out_dir, f"pool{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _ddp_data():
    g = torch.Generator().manual_seed(7)
    cams = torch.randn(8, 3, 2, 2, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 0, 2])
    preds = torch.tensor([0, 1, 0, 0, 2, 1, 0, 2])
    return cams, labels, preds


def test_pool_update_is_synced_across_ddp_ranks(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    s0 = torch.load(tmp_path / "pool0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "pool1.pt", weights_only=True)
    p0, p1 = s0["maps"], s1["maps"]
    assert torch.equal(p0, p1)
    cams, labels, preds = _ddp_data()
    single = CausalContextPool(3, 2, 2, rate=0.2).train()
    for _ in range(2):
        single.update(cams, labels, preds)
    assert torch.allclose(p0, single.maps, atol=1e-6)
    # update counts are summed across ranks: rank 0's half has no correct class-2 sample, rank 1's has
    assert torch.equal(s0["updates"], s1["updates"]) and torch.equal(s0["updates"], single.updates)
    assert torch.equal(single.updates, torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))
    # and the ranks' own halves alone would have given a different pool
    alone = CausalContextPool(3, 2, 2, rate=0.2).train()
    alone.update(cams[:4], labels[:4], preds[:4])
    alone.update(cams[:4], labels[:4], preds[:4])
    assert not torch.allclose(alone.maps, single.maps, atol=1e-3)
    assert torch.equal(alone.updates, torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64))


# ------------------------------------------------------------------------------- diagnostics buffers
def test_pool_counts_update_steps_per_class_and_keeps_the_first_map():
    pool = CausalContextPool(3, rate=0.5).train()
    assert pool.updates.shape == (3,) and pool.updates.dtype == torch.float64
    g = torch.Generator().manual_seed(0)
    cams = torch.randn(4, 3, 2, 2, generator=g)
    # step 1: two correct samples of class 1 (one step: +1), a wrong class-0 sample (not counted)
    assert pool.update(cams, torch.tensor([1, 1, 0, 1]), torch.tensor([1, 1, 2, 0]))
    assert torch.equal(pool.updates, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert pool.first.shape == (3, 2, 2)
    assert torch.equal(pool.first[1], pool.maps[1]) and pool.first[1].abs().sum() > 0
    assert torch.equal(pool.first[[0, 2]], torch.zeros(2, 2, 2))
    first1 = pool.first[1].clone()
    # step 2: class 0 is correct for the first time; class 1 again (its first map stays)
    assert pool.update(cams.flip(-1), torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 0, 1]))
    assert torch.equal(pool.updates, torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64))
    assert torch.equal(pool.first[0], pool.maps[0]) and torch.equal(pool.first[1], first1)
    assert not torch.equal(pool.maps[1], first1)  # the pool moved on from it
    assert torch.equal(pool.first[2], torch.zeros(2, 2))
    pool.eval()  # evaluation neither updates nor counts
    assert not pool.update(cams, torch.tensor([2, 2, 2, 2]), torch.tensor([2, 2, 2, 2]))
    assert pool.updates[2] == 0


def _old_state_dict(model: CICAMModel) -> dict[str, torch.Tensor]:
    """A state dict as written before the pool's diagnostics buffers existed."""
    return {k: v for k, v in model.state_dict().items() if k not in ("pool.updates", "pool.first")}


def test_checkpoint_without_diagnostics_buffers_loads_strictly_with_zeros():
    trained = _model(pool_rate=0.3).train()
    x = torch.rand(4, 3, 16, 16)
    for _ in range(2):
        out = trained(x)
        trained.update_pool(out, out["pred_up"])
    assert trained.pool.updates.sum() > 0
    old = _old_state_dict(trained)
    # a fresh model with a lazy pool, and one whose pool is already sized (and has counts of its own)
    for fresh in (_model(), _model(pool_size=[4, 4])):
        if fresh.pool.is_materialized:
            fresh.pool.updates.fill_(5)
            fresh.pool.first.fill_(1)
        keys = set(old)
        fresh.load_state_dict(old, strict=True)
        assert set(old) == keys  # the caller's dict is left alone
        assert torch.equal(fresh.pool.maps, trained.pool.maps)
        assert torch.equal(fresh.pool.updates, torch.zeros(3, dtype=torch.float64))
        assert torch.equal(fresh.pool.first, torch.zeros(3, 4, 4))
    # a current checkpoint round-trips both buffers
    again = _model()
    again.load_state_dict(trained.state_dict(), strict=True)
    assert torch.equal(again.pool.updates, trained.pool.updates) and torch.equal(again.pool.first, trained.pool.first)


def test_forward_returns_the_attention_and_loss_terms_sum_to_the_loss():
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([2, 0, 1])
    model = _model(aux="diff_aux", aux_weight=0.5, mask_threshold=0.2, sparsity=0.04).train()
    model.pool.materialize(4, 4)
    model.pool.maps.copy_(torch.randn(3, 4, 4))
    out = model(x)
    assert torch.allclose(out["attention"], context_attention(model.mask2attention, model.pool.maps, out["pred_up"]))
    assert torch.allclose(out["features_down"], out["features"] * (1 + out["attention"]), atol=1e-6)
    terms, logs = model.loss_terms(x, y, out)
    assert set(terms) == {"ce_down", "ce_up", "diff", "aux", "sparsity"}
    loss, loss_logs = model.loss(x, y, out)
    assert torch.allclose(sum(terms.values()), loss) and torch.allclose(loss_logs["loss"], loss)
    assert torch.allclose(terms["diff"], 0.5 * logs["loss_diff"]) and torch.allclose(terms["aux"], 0.5 * logs["loss_aux"])
    assert torch.allclose(terms["sparsity"], 0.04 * logs["loss_sparsity"])
    assert "loss" not in logs and 0 < logs["fg_coverage"] < 1
    kd = _model(recipe="kd").eval()
    terms, logs = kd.loss_terms(x, y, kd(x))
    assert set(terms) == {"ce_down"} and "fg_coverage" not in logs


def test_fg_coverage_is_the_share_of_foreground_pixels():
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([2, 0, 1])
    coverage = {}
    for thr in (0.0, 0.3, 0.6):
        model = _model(aux="fore", mask_threshold=thr).eval()  # same weights for every threshold
        out = model(x)
        _, logs = model.loss_terms(x, y, out)
        _, _, mask = _fg_bg(model, x, out, thr)
        assert logs["fg_coverage"] == pytest.approx(float(mask.mean()))
        coverage[thr] = float(logs["fg_coverage"])
    assert coverage[0.0] > 0.95  # threshold 0 on a min-shifted (non-negative) map: nearly every pixel
    assert coverage[0.0] > coverage[0.3] > coverage[0.6] > 0


def test_kd_student_cam_temperature_option_round_trips():
    student = create_model("kd-ci-cam", TinyBackbone(), num_classes=3, temperature=15.0, cam_temperature=2.5)
    assert student.objective.cam_temperature == 2.5 and student.objective.T == 15.0
    assert student.options()["cam_temperature"] == 2.5
    same = create_model("kd-ci-cam", TinyBackbone(), num_classes=3, temperature=4.0)
    assert same.options()["cam_temperature"] is None and same.objective.cam_temperature == 4.0
    with pytest.raises(ConfigError, match="CAM temperature"):
        create_model("kd-ci-cam", TinyBackbone(), num_classes=3, cam_temperature=0.0)


def test_intervention_lr_mult_puts_mask2attention_in_its_own_group():
    model = create_model("ci-cam", TinyBackbone(), num_classes=4)
    official = {g["name"]: g for g in model.param_groups(1e-3, 0.1)}
    ids = {id(p) for p in model.mask2attention.parameters()}
    assert ids <= {id(p) for p in official["backbone"]["params"]}  # the official grouping: with the backbone
    groups = {g["name"]: g for g in model.param_groups(1e-3, 0.1, intervention_lr_mult=1.0)}
    assert {id(p) for p in groups["intervention"]["params"]} == ids and groups["intervention"]["lr"] == 1e-3
    assert not ids & {id(p) for p in groups["backbone"]["params"]}
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert len(every) == len(set(every)) == len([p for p in model.parameters() if p.requires_grad])

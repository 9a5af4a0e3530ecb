"""Post-hoc CAM methods (kdcicam.posthoc, through torchcam): the library's Grad-CAM equals a plain autograd
Grad-CAM on EfficientNet-Lite0 as kdcicam builds it; every method runs on every kdcicam model and on a timm
classifier; Score-CAM's memory is bounded; the bad inputs give one-line errors (exit 2 from the CLI)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import kdcicam
from kdcicam.posthoc import CAM_METHODS, METHODS, NATIVE, PosthocError, check_method

pytest.importorskip("torchcam")

#: Grad-CAM cross-check tolerance: two float32 computations of the same map from the same input may differ
#: only by rounding (the order of the reductions): max |Δ| <= 1e-5 · max |map|
REL_TOL = 1e-5
SIZE = 64
#: the methods cheap enough to run on Lite0's 1,280 channels in a unit test (Score-CAM & co. run on timm below)
CHEAP = [m for m in METHODS if m not in ("score-cam", "ss-cam", "is-cam")]


def _lite0(method: str, num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    model = kdcicam.create_model(method, backbone="efficientnet_lite0", num_classes=num_classes, pretrained=False)
    if hasattr(model, "pool"):  # a non-zero context pool, so the intervention A is not just the conv's bias
        model.pool.materialize(SIZE // 32, SIZE // 32)
        model.pool.maps.copy_(torch.randn_like(model.pool.maps))
        nn.init.normal_(model.mask2attention.weight, std=0.5)
    return model.eval()


def _plain_gradcam(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM by hand: d(score of the top-1 class)/d(backbone output), channel weights = the spatial mean
    of that gradient, ReLU of the weighted sum of the channels."""
    store: dict[str, torch.Tensor] = {}

    def keep(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = model.backbone.register_forward_hook(keep)
    try:
        x = x.clone().requires_grad_(True)  # so the graph exists whatever the parameters' requires_grad
        logits = model(x)["logits"]
        top = logits.argmax(dim=1)
        logits.gather(1, top[:, None]).sum().backward()
    finally:
        handle.remove()
    a, g = store["a"].detach(), store["a"].grad
    weights = g.mean(dim=(2, 3))
    return logits.detach(), torch.relu((weights[:, :, None, None] * a).sum(dim=1))


@pytest.mark.parametrize("method", ["cam", "ci-cam", "kd-ci-cam"])
def test_gradcam_equals_plain_autograd_on_lite0(method: str):
    from kdcicam.posthoc import create_posthoc

    model = _lite0(method)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    cam = create_posthoc(model, "grad-cam", image_size=SIZE)
    # the image exactly as the model receives it from the adapter (normalised, then mapped back to [0, 1])
    mean, std = cam.adapter.mean, cam.adapter.std
    expected_logits, expected = _plain_gradcam(model, ((x - mean) / std) * std + mean)
    assert cam.target_layer == "backbone" and cam.feature_shape == (1280, 2, 2)
    logits, maps = cam(x)
    assert maps.shape == expected.shape == (3, 2, 2)
    assert expected.abs().max() > 0  # a map with something in it, not two zero maps agreeing
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-5)
    assert (maps - expected).abs().max() <= REL_TOL * expected.abs().max()


def test_gradcam_of_a_cam_model_is_its_relu_class_cam():
    """With GAP + one linear layer, d z_c / d F = W_c / (h w) everywhere: Grad-CAM = ReLU(CAM_c) / (h w)."""
    from kdcicam.posthoc import create_posthoc

    model = _lite0("cam")
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    _logits, maps = create_posthoc(model, "grad-cam", image_size=SIZE)(x)
    with torch.no_grad():
        out = model(x)
    top1 = out["cams"][torch.arange(2), out["logits"].argmax(1)]
    torch.testing.assert_close(maps, torch.relu(top1) / 4, rtol=1e-4, atol=1e-6)
    assert not any(p.grad is not None for p in model.parameters())  # autograd.grad: no .grad left behind


@pytest.mark.parametrize("method", ["cam", "ci-cam", "kd-ci-cam"])
def test_every_cheap_method_on_every_kdcicam_model(method: str):
    from kdcicam import Localizer

    model = _lite0(method)
    images = [torch.rand(3, 80, 70, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.inference_mode():  # the Localizer leaves inference mode for the gradient methods itself
        native = Localizer(model, image_size=SIZE, threshold=0.3, device="cpu").predict(images)
    for name in CHEAP:
        loc = Localizer(model, image_size=SIZE, threshold=0.3, device="cpu", cam_method=name)
        results = loc.predict(images)
        for r, n in zip(results, native, strict=True):
            assert r.cam.shape == (SIZE, SIZE) and r.cam.dtype == native[0].cam.dtype
            assert r.cam.min() >= 0.0 and r.cam.max() <= 1.0
            assert r.class_id == n.class_id  # the same (down-branch) logits choose the class
        assert loc.describe()["cam_method"] == name and loc.describe()["target_layer"] == "backbone"


def test_all_methods_on_a_timm_classifier_through_from_model():
    timm = pytest.importorskip("timm")
    from kdcicam import Localizer

    model = timm.create_model("test_resnet", pretrained=False, num_classes=4).eval()  # random weights
    image = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(3))
    for name in [*CHEAP, "score-cam"]:
        loc = Localizer.from_model(model, cam_method=name, image_size=96, threshold=0.2, device="cpu",
                                   score_batch_size=32)
        assert loc.posthoc.target_layer == "layer4"  # the last spatial map, found by itself
        [r] = loc.predict(image)
        assert r.cam.shape == (96, 96) and len(r.class_ids) == 4
        assert float(r.cam.max()) in (0.0, 1.0)
    named = Localizer.from_model(model, "layer3", threshold=0.2, image_size=96, device="cpu")
    assert named.posthoc.target_layer == "layer3" and named.posthoc.feature_shape[1:] == (6, 6)


def test_noisy_score_cams_on_a_small_cnn():
    """SS-CAM and IS-CAM (35 and 10 noisy Score-CAM passes) on a CNN with 8 channels, to stay cheap."""
    from kdcicam import Localizer

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    for name in ("ss-cam", "is-cam"):
        loc = Localizer.from_model(cnn, cam_method=name, image_size=32, threshold=0.2, device="cpu")
        assert loc.posthoc.target_layer == "3" and loc.posthoc.feature_shape == (8, 8, 8)
        [r] = loc.predict(torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(4)))
        assert r.cam.shape == (32, 32) and float(r.cam.max()) in (0.0, 1.0)


def test_score_cam_forwards_bounded_chunks():
    """Score-CAM masks B x D images; they are forwarded score_batch_size at a time, never all at once."""
    timm = pytest.importorskip("timm")
    from kdcicam.posthoc import create_posthoc

    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    cam = create_posthoc(model, "score-cam", image_size=64, score_batch_size=10)
    seen.clear()
    logits, maps = cam(torch.rand(2, 3, 64, 64))
    handle.remove()
    channels = cam.feature_shape[0]
    # ours, torchcam's baseline pass, then the 2 x D masked images 10 at a time
    assert seen[:2] == [2, 2] and max(seen[2:]) == 10 and sum(seen[2:]) == 2 * channels
    assert maps.shape == (2, 2, 2) and logits.shape == (2, 3)


# ------------------------------------------------------------------------------------------ errors
def test_method_names():
    assert check_method("GradCAM") == check_method("grad_cam") == "grad-cam"
    assert check_method("gradcampp") == "grad-cam++" and check_method("native") == NATIVE
    assert set(CAM_METHODS) >= {"native", "grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "score-cam"}
    with pytest.raises(PosthocError, match=r"unknown CAM method 'gradcom'.*valid: native, cam, grad-cam") as e:
        check_method("gradcom")
    assert "\n" not in str(e.value)


def test_missing_layer_is_named_with_suggestions():
    from kdcicam.posthoc import create_posthoc

    with pytest.raises(PosthocError, match=r"target layer 'backbon' does not exist.*did you mean backbone") as e:
        create_posthoc(_lite0("cam"), "grad-cam", "backbon", image_size=SIZE)
    assert "\n" not in str(e.value)


def test_a_model_without_a_spatial_map_is_refused():
    from kdcicam import Localizer

    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(PosthocError, match="no layer with a spatial feature map"):
        Localizer.from_model(mlp, threshold=0.5, image_size=16, device="cpu")
    with pytest.raises(PosthocError, match=r"target layer '1' outputs \[8\] per image: no spatial feature map"):
        Localizer.from_model(mlp, "1", threshold=0.5, image_size=16, device="cpu")
    with pytest.raises(PosthocError, match=r"target layer 'head.fc' outputs \[5\].*last first: backbone"):
        Localizer(_lite0("cam"), image_size=SIZE, threshold=0.3, device="cpu", cam_method="grad-cam",
                  target_layer="head.fc")

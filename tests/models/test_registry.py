"""The model factory: methods, options, errors, param groups, rebuild from hparams."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from _tiny import TinyBackbone

import kdcicam
from kdcicam.errors import ConfigError
from kdcicam.models.registry import create_model, list_models, model_options


def test_list_models_and_lazy_package_attribute():
    assert list_models() == ["cam", "ci-cam", "kd-ci-cam"]
    assert kdcicam.list_models() == list_models()
    assert kdcicam.create_model is create_model


def test_unknown_method_lists_valid_choices():
    with pytest.raises(ConfigError, match=r"unknown method 'gradcam'; valid: cam, ci-cam, kd-ci-cam"):
        create_model("gradcam", TinyBackbone(), num_classes=3)


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match=r"unknown option 'pool_rate' for method 'cam'"):
        create_model("cam", TinyBackbone(), num_classes=3, pool_rate=0.1)
    with pytest.raises(ConfigError, match=r"unknown option 'aux'.*'kd-ci-cam'"):
        create_model("kd-ci-cam", TinyBackbone(), num_classes=3, aux="fore")
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("cam", TinyBackbone(), num_classes=0)


def test_unknown_backbone_lists_valid_choices():
    if importlib.util.find_spec("kdcicam.models.backbones") is None:
        with pytest.raises(ConfigError, match="no backbones are available"):
            create_model("cam", "resnet9000", num_classes=3)
        return
    from kdcicam.models.backbones import list_backbones

    valid = list_backbones()
    with pytest.raises(ConfigError, match="unknown backbone 'resnet9000'") as info:
        create_model("cam", "resnet9000", num_classes=3)
    assert all(name in str(info.value) for name in valid)


@pytest.mark.parametrize("method", ["cam", "ci-cam", "kd-ci-cam"])
def test_models_carry_method_and_rebuild_from_hparams(method):
    model = create_model(method, TinyBackbone(), num_classes=5)
    assert model.method == method and model.num_classes == 5 and model.backbone_name == "TinyBackbone"
    h = model.hparams()
    assert h["method"] == method and h["num_classes"] == 5
    options = {k: v for k, v in h.items() if k not in ("method", "backbone", "num_classes")}
    options.pop("backbone_options"), options.pop("output_stride"), options.pop("freeze_stages")
    assert set(options) == set(model_options(method))
    rebuilt = create_model(method, TinyBackbone(), num_classes=5, **options)
    assert rebuilt.hparams() == h


def test_kd_ci_cam_is_a_ci_cam_student_with_its_objective():
    model = create_model("kd_ci_cam", TinyBackbone(), num_classes=4, alpha=0.7, temperature=2.0, kd_mode="kl",
                         teachers="loc", pool_rate=0.015)
    assert model.recipe == "kd" and model.pool.rate == 0.015
    assert model.objective.config() == {"alpha": 0.7, "T": 2.0, "kd_mode": "kl", "teachers": "loc",
                                        "t_squared": False, "cam_T": None, "cam_loss": "mse", "cam_weight": 1.0}
    assert model.allowed_routes == (0, 2)
    with pytest.raises(ConfigError, match="teachers"):
        create_model("kd-ci-cam", TinyBackbone(), num_classes=4, teachers="all")
    assert model_options("kd-ci-cam")["alpha"] == 0.8 and model_options("kd-ci-cam")["temperature"] == 15.0
    assert model_options("ci-cam")["pool_rate"] == 0.01


def test_param_groups_follow_method_section_4():
    model = create_model("ci-cam", TinyBackbone(), num_classes=3)
    groups = model.param_groups(5e-4, 0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["classifier"]["lr"] == pytest.approx(5e-4)
    assert by_name["backbone"]["lr"] == pytest.approx(5e-5) and by_name["backbone"]["lr_mult"] == 0.1
    ids = {name: {id(p) for p in g["params"]} for name, g in by_name.items()}
    assert ids["classifier"] == {id(p) for p in model.head.parameters()}
    assert {id(p) for p in model.mask2attention.parameters()} <= ids["backbone"]
    assert {id(p) for p in model.backbone.parameters()} <= ids["backbone"]
    assert ids["classifier"] | ids["backbone"] == {id(p) for p in model.parameters()}
    model.backbone.conv.weight.requires_grad_(False)  # frozen layers are left out
    frozen = {id(p) for g in model.param_groups(1.0, 1.0) for p in g["params"]}
    assert id(model.backbone.conv.weight) not in frozen
    torch.optim.Adam(model.param_groups(5e-4, 0.1))  # usable as given


def test_named_backbone_end_to_end():
    pytest.importorskip("kdcicam.models.backbones")
    model = create_model("ci-cam", "efficientnet_lite0", num_classes=3, freeze_stages=1, pool_rate=0.02)
    assert model.backbone_name == "efficientnet_lite0" and model.backbone.freeze_stages == 1
    frozen = [p for p in model.backbone.parameters() if not p.requires_grad]
    assert frozen and not any(id(p) in {id(q) for g in model.param_groups(1.0, 0.1) for q in g["params"]}
                              for p in frozen)
    out = model(torch.rand(2, 3, 64, 64))
    assert out["logits"].shape == (2, 3) and out["cams"].shape[:2] == (2, 3)
    assert out["features"].shape[1] == model.backbone.out_channels
    h = model.hparams()
    assert h["backbone"] == "efficientnet_lite0" and h["freeze_stages"] == 1
    # an option neither the method nor the backbone knows is named
    with pytest.raises(ConfigError, match="pool_rate"):
        create_model("cam", "efficientnet_lite0", num_classes=3, pool_rate=0.1)


def test_a_registered_method_is_a_method_for_configs_and_the_cli(monkeypatch: pytest.MonkeyPatch):
    """The registry is the one method list: config validation and the CLI read it."""
    from kdcicam.config import load_config, method_names
    from kdcicam.models import registry
    from kdcicam.models.cam import CAMModel

    assert method_names() == list_models()
    monkeypatch.setitem(registry._REGISTRY, "my-cam", CAMModel)
    assert load_config(None, method="my-cam").method == "my-cam"
    with pytest.raises(ConfigError, match=r"--method: method 'nope' is not a registered method; valid: cam, ci-cam, "
                                          r"kd-ci-cam, my-cam"):
        load_config(None, method="nope")


def test_a_bad_freeze_stages_names_the_key_the_user_wrote():
    with pytest.raises(ConfigError, match=r"^freeze_stages must be an integer from -1") as e:
        create_model("cam", "efficientnet_lite0", num_classes=3, freeze_stages=99)
    assert "frozen" not in str(e.value)

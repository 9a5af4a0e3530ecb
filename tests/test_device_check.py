"""benchmarks/device_check.py --cpu-smoke: the GPU check's code paths (bf16 autocast steps, parity,
throughput, DDP through Lightning) run on CPU in seconds and write a complete results file, so the
script cannot rot between the rare runs on a GPU machine."""
from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, int]:
    """(results file, exit code) of ``benchmarks/device_check.py --cpu-smoke``, run in this process: its
    ``main`` with the command line it records; torch's thread count and the warning filters it sets are given
    back after. The DDP section starts its own child process, as on a GPU machine."""
    import device_check
    import torch

    out = tmp_path_factory.mktemp("device_check") / "device_check.json"
    argv = ["--cpu-smoke", "--out", str(out), "--budget-s", "900"]
    threads, printed = torch.get_num_threads(), io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed), \
            mock.patch.object(sys, "argv", [str(REPO / "benchmarks" / "device_check.py"), *argv]):
        try:
            rc = device_check.main(argv)
        finally:
            torch.set_num_threads(threads)
    assert out.is_file(), printed.getvalue()[-3000:]
    return json.loads(out.read_text()), rc


def test_cpu_smoke_runs_every_section_and_records_it(smoke):
    report, rc = smoke
    sections = report["sections"]
    assert set(sections) == {"train_step", "parity", "throughput", "ddp"}
    failed = {k: v.get("error") or v.get("skipped") for k, v in sections.items() if not v["ok"]}
    assert not failed, failed
    assert rc == 0 and report["ok"] is True
    assert report["mode"] == "cpu-smoke" and report["device"]["type"] == "cpu"
    for key in ("torch", "lightning", "cuda", "python"):
        assert key in report["versions"]
    assert report["commit"] and report["date"] and "--cpu-smoke" in report["command"]
    assert all(isinstance(s["seconds"], float) for s in sections.values())


def test_every_method_steps_in_fp32_and_bf16_and_updates_the_pool(smoke):
    steps = smoke[0]["sections"]["train_step"]["steps"]
    assert {(s["method"], s["precision"]) for s in steps} == {(m, p) for m in ("cam", "ci-cam", "kd-ci-cam")
                                                            for p in ("fp32", "bf16")}
    for s in steps:
        assert s["loss_finite"] and s["grads_finite"] and s["params_with_grad"] > 0
        assert s["loss_dtype"] == "torch.float32"
        if s["method"] != "cam":
            assert s["pool_updated"] and s["pool_finite"]


def test_parity_throughput_and_ddp_are_recorded(smoke):
    sections = smoke[0]["sections"]
    parity = sections["parity"]
    assert parity["max_map_diff"] == 0.0 and parity["metrics_equal"]  # the CPU against itself
    assert {"top1_cls", "gt_known_loc", "max_box_acc_v2", "pxap"} <= set(parity["metrics"])
    assert set(parity["rule"]) >= {"maps_and_logits", "boxes", "metrics", "why_not_bitwise"}
    train = sections["throughput"]["train"]
    assert {(r["method"], r["channels_last"]) for r in train} == {(m, c) for m in ("cam", "ci-cam", "kd-ci-cam")
                                                                 for c in (True, False)}
    assert all(r["images_per_s_best"] > 0 for r in train)
    assert [r["setup"]["channels_last"] for r in sections["throughput"]["localizer"]] == [True, False]
    ddp = sections["ddp"]
    assert ddp["backend_expected"] == "gloo" and ddp["world_size_expected"] == 1
    assert [r["backend"] for r in ddp["ranks"]] == ["gloo"] and ddp["ranks"][0]["strategy"] == "DDPStrategy"
    assert ddp["pool_nonzero"] and ddp["pools_identical"]


def test_the_parity_rule_allows_only_near_ties():
    """compare_parity on made-up outputs: a map difference that moves no pixel across a level boundary
    keeps boxes and metrics; one that does is counted as a near tie, not as a failure."""
    from device_check import compare_parity, near_ties

    rng = np.random.default_rng(0)
    maps = rng.random((3, 16, 16))
    maps[:, 0, 0], maps[:, 0, 1] = 0.0, 1.0
    logits = rng.normal(size=(3, 5))
    metrics = {"top1_cls": 50.0, "max_box_acc": {"50": 40.0}, "pxap": 30.0}
    cpu = {"maps": maps, "logits": logits, "metrics": metrics}
    same = compare_parity(cpu, {**cpu, "maps": maps.copy()}, threshold=0.5)
    assert same["ok"] and same["max_map_diff"] == 0 and same["box_near_ties"] == same["sweep_near_ties"] == 0
    moved = maps.copy()
    boundary = (int(0.5 * 255) + 1) / 255
    moved[1, 5, 5] = boundary - 1e-7  # a pixel on the threshold's boundary changes side
    maps[1, 5, 5] = boundary + 1e-7
    tie = compare_parity(cpu, {**cpu, "maps": moved}, threshold=0.5)
    assert tie["box_near_ties"] == 1 and tie["boxes_differing_outside_near_ties"] == 0 and tie["ok"]
    assert near_ties(maps, moved, 2e-7).tolist() == [False, True, False]
    far = compare_parity(cpu, {**cpu, "maps": np.clip(maps + 0.01 * (maps > 0.3), 0, 1)}, threshold=0.5)
    assert not far["ok"]  # 1e-2 is beyond float rounding
    worse = compare_parity(cpu, {**cpu, "metrics": {**metrics, "top1_cls": 75.0}}, threshold=0.5)
    assert not worse["ok"] and not worse["metrics_within_tolerance"]


def test_the_report_summarises_a_device_check(smoke):
    from reporting.speed import device_check_section

    lines = device_check_section(smoke[0])
    text = "\n".join(lines)
    assert lines[0].startswith("### Device check") and "mode cpu-smoke" in text
    assert "- ddp: ok" in text and "backend gloo" in text and "pools identical across ranks: True" in text
    assert text.count("| CI-CAM | fp32 |") == 2  # channels_last on and off


def test_parity_turns_tf32_off_and_restores_it():
    """The flags are global and settable without a GPU; the parity evaluation must leave them as found."""
    import torch
    from device_check import fp32_convolutions

    b = torch.backends
    before = (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.deterministic)
    with fp32_convolutions(torch.device("cuda")):
        assert (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.deterministic) == (False, False, True)
    assert (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.deterministic) == before

"""The authors' evaluation protocol (docs/method.md §5 official mode)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kdcicam.data.metadata import Metadata
from kdcicam.errors import ConfigError
from kdcicam.models.base import Backbone
from kdcicam.models.cam import CAMModel
from kdcicam.models.official_protocol import (
    OfficialBoxMetrics,
    evaluate_official,
    iou_inclusive,
    map_box_official,
    official_box,
    official_boxes,
    resized_size,
)


def test_box_rule_on_a_handmade_map():
    s = np.zeros((6, 8), np.float32)
    s[1:3, 1:3] = 10.0  # small strong blob: bbox area 4
    s[3:6, 4:8] = 5.0   # large weaker blob: bbox area 12
    s[0, 7] = 1.0       # below t = 0.2·10 = 2 → zeroed
    # cut mean = (4·10 + 12·5)/48 ≈ 2.08: both blobs are foreground, the larger bbox wins;
    # stops are exclusive as in the official find_objects slices
    assert official_box(s, 0.2) == (4, 3, 8, 6)
    # a high threshold keeps the strong blob only
    assert official_box(s, 0.6) == (1, 1, 3, 3)


def test_box_rule_uses_4_connectivity_and_the_mean_of_cut():
    s = np.zeros((6, 6), np.float32)
    s[0, 0] = s[1, 1] = s[2, 2] = 4.0  # a diagonal: three separate components under 4-connectivity
    s[5, 2:4] = 4.0                    # a horizontal pair: bbox area 2 beats 1
    assert official_box(s, 0.0) == (2, 5, 4, 6)
    # pixels above t but not above mean(cut) are background
    m = np.full((4, 4), 1.0, np.float32)
    m[0, 0] = 0.0
    m[2:4, 2:4] = 9.0
    assert official_box(m, 0.0) == (2, 2, 4, 4)
    assert official_box(np.ones((3, 5), np.float32), 0.1) == (0, 0, 5, 3)  # nothing stands out


def _scipy_reference(s: np.ndarray, thr: float) -> tuple[int, int, int, int]:
    """The official `_connected_component` / `_get_seg_bbox`, with scipy.ndimage."""
    from scipy import ndimage

    cut = np.where(s > thr * s.max(), s, 0)
    labels, _ = ndimage.label(cut > cut.mean())
    slices = ndimage.find_objects(labels)
    areas = [np.prod([x.stop - x.start for x in sl]) for sl in slices]
    sy, sx = slices[int(np.argmax(areas))]
    return sx.start, sy.start, sx.stop, sy.stop


def test_box_rule_matches_the_official_scipy_code_on_random_maps():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    for _ in range(60):
        s = rng.integers(0, 4, size=(int(rng.integers(5, 20)), int(rng.integers(5, 20)))).astype(np.float32)
        s[0, 0] = 3.0  # at least one non-zero pixel
        thr = float(rng.choice([0.0, 0.14, 0.5]))
        assert official_box(s, thr) == _scipy_reference(s, thr)


def test_official_boxes_upsample_bilinear_to_the_crop():
    maps = torch.zeros(1, 4, 4)
    maps[0, 1:3, 1:3] = 1.0
    boxes = official_boxes(maps, 16, 0.5)
    up = F.interpolate(maps[:, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0].numpy()
    assert boxes == [official_box(up, 0.5)]
    assert boxes[0][0] >= 2 and boxes[0][2] <= 14


def test_inclusive_iou_by_hand():
    assert iou_inclusive((0, 0, 9, 9), (5, 5, 14, 14)) == pytest.approx(25 / 175)
    assert iou_inclusive((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert iou_inclusive((0, 0, 1, 1), (5, 5, 6, 6)) == 0.0


def test_cub_and_imagenet_geometry():
    # CUB: 400×300 image → 344×344 → centre crop 224 (offset 60 on both axes)
    box = map_box_official((100, 30, 300, 290), (400, 300), 344, 224, "square")
    assert box == pytest.approx((26.0, 0.0, 198.0, 224.0))
    # ImageNet, fixed: shorter side 300 → 288, so 400 → 384; crop offsets 80 (x) and 32 (y)
    assert resized_size((400, 300), 288, "shorter") == (384, 288)
    assert resized_size((300, 400), 288, "shorter") == (288, 384)
    box = map_box_official((100, 50, 300, 250), (400, 300), 288, 224, "shorter")
    assert box == pytest.approx((96 - 80, 48 - 32, 288 - 80, 240 - 32))
    with pytest.raises(ConfigError, match="square, shorter"):
        resized_size((4, 4), 8, "long")


def test_official_metrics_by_hand():
    m = OfficialBoxMetrics()
    gts = [(50, 50, 60, 60), (0, 0, 9, 9)]
    # 1) top-1 right, box matches the second GT box → everything counts
    m.update((0, 0, 10, 10), gts, [3, 1, 2, 0, 4, 5], label=3)
    # 2) label at rank 3: top-5 only; box good → top-5 loc and GT-known, not top-1
    m.update((0, 0, 9, 9), gts, [1, 2, 3, 0, 4], label=3)
    # 3) top-1 right but box wrong → cls only
    m.update((20, 20, 30, 30), gts, [3, 1, 2, 0, 4], label=3)
    # 4) label outside top-5, box right → GT-known only
    m.update((50, 50, 60, 60), gts, [0, 1, 2, 4, 5, 3], label=3)
    r = m.compute()
    assert r["num_images"] == 4
    assert r["top1_cls"] == 50.0 and r["top5_cls"] == 75.0
    assert r["top1_loc"] == 25.0 and r["top5_loc"] == 50.0 and r["gt_known"] == 75.0
    # plain CAM: one box per ranked class and a separate GT-class box
    p = OfficialBoxMetrics(topk=2)
    p.update([(20, 20, 30, 30), (0, 0, 9, 9)], gts, [1, 3], label=3, gt_known_box=(20, 20, 30, 30))
    r = p.compute()
    assert r["top1_loc"] == 0 and r["top5_loc"] == 100.0 and r["gt_known"] == 0


class RedChannel(Backbone):
    """F = the 4×4-average-pooled image (D = 3), no normalisation."""

    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.out_channels, self.stride = 3, 4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4)


def test_evaluate_official_end_to_end(tmp_path):
    # class 0 always wins and the combinational map is -(-red) = the red channel, so the box is the
    # red rectangle drawn in each image
    model = CAMModel(RedChannel(), 2)
    with torch.no_grad():
        model.head.fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
        model.head.fc.bias.copy_(torch.tensor([5.0, 0.0]))
    ids, boxes, sizes = [], {}, {}
    for i, (w, h, box) in enumerate([(64, 48, (10, 8, 50, 40)), (48, 64, (4, 20, 30, 60))]):
        img = np.zeros((h, w, 3), np.uint8)
        img[box[1]:box[3], box[0]:box[2], 0] = 255
        name = f"img{i}.png"
        Image.fromarray(img).save(tmp_path / name)
        ids.append(name)
        boxes[name] = [tuple(float(v) for v in box)]
        sizes[name] = (w, h)
    meta = Metadata(image_ids=ids, class_labels={i: 0 for i in ids}, image_sizes=sizes, boxes=boxes,
                    num_classes=2, image_root=tmp_path)
    r = evaluate_official(model, meta, resize=48, crop=40, seg_thr=0.1, batch_size=1, topk=2)
    assert r["num_images"] == 2
    assert r["top1_cls"] == 100.0 and r["top1_loc"] == 100.0 and r["gt_known"] == 100.0
    plain = evaluate_official(model, meta, resize=40, crop=40, seg_thr=0.1, kind="plain", topk=2)
    assert plain["top1_cls"] == 100.0 and plain["top1_loc"] == 100.0 and plain["gt_known"] == 100.0
    meta.boxes = {}
    with pytest.raises(ConfigError, match="box"):
        evaluate_official(model, meta, resize=40, crop=40, seg_thr=0.1)

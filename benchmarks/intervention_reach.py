"""E0: what an intervention of CI-CAM's form, F ⊙ (1 + A) with A = W[:, ĉ]·M + b, can reach at all, with no training.

On a trained CI-CAM the backbone features F of each val image are computed once; then the down branch is rebuilt
under changes of the intervention and the val splits re-scored with the exact evaluator:

- ``trained``: the checkpoint as it is; ``none``: A = 0 (CAM on the same features);
- ``beta=B``: B added to every weight of the column W[:, ĉ] (its channel mean, the only part of W that can reshape
  a min-max-normalised map: A then acts as the per-class multiplier 1 + β·M);
- ``oracle`` / ``oracle,beta=B``: the pool M replaced by each image's own GT box mask on the feature grid,
  standardised as the pool is (an oracle pool: the best context map there could be).

MaxBoxAccV2 and PxAP are threshold-free; Top-1 Cls and context leakage need no threshold. Val splits only.

    .venv/bin/python benchmarks/intervention_reach.py runs/bench/synthetic-v2_val/ci-cam-seed0 \\
        --splits val val_conflict --out benchmarks/results/intervention_reach_synthetic-v2_seed0.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from provenance import stamp

REPO = Path(__file__).resolve().parents[1]
BETAS = (0.05, 0.1, 0.2, 0.4)
KEEP = ("top1_cls", "max_box_acc_v2", "pxap", "context_leakage", "gt_known_loc_oracle")


def box_masks(metadata, image_ids: list[str], size: int, grid: tuple[int, int]) -> torch.Tensor:
    """Each image's GT boxes (the union) as a mask on the evaluation grid, area-averaged onto the feature grid."""
    out = torch.zeros(len(image_ids), *grid)
    for i, image_id in enumerate(image_ids):
        w0, h0 = metadata.image_sizes[image_id]
        full = torch.zeros(size, size)
        for box in metadata.boxes.get(image_id, []):
            x0, y0, x1, y1 = (float(v) for v in box[:4])
            sx, sy = size / w0, size / h0
            full[round(y0 * sy):round(y1 * sy) + 1, round(x0 * sx):round(x1 * sx) + 1] = 1.0
        out[i] = torch.nn.functional.adaptive_avg_pool2d(full[None, None], grid)[0, 0]
    return out


@torch.inference_mode()
def features_of(module, datamodule, split: str) -> dict:
    model = module.model
    feats, preds, ids = [], [], []
    for batch in datamodule.eval_dataloader(split):
        if batch is None:
            continue
        f = model.backbone(batch["image"])
        feats.append(f.float())
        preds.append(model.head(f).argmax(1))
        ids += list(batch["image_id"])
    return {"features": torch.cat(feats), "pred_up": torch.cat(preds), "ids": ids}


@torch.inference_mode()
def score(module, metadata, cached: dict, context: torch.Tensor | None, beta: float, size: int,
          batch: int = 100) -> dict:
    """Re-score a split with ``context`` [C, h, w] (the pool) or per image [N, h, w] (an oracle), W + β."""
    from kdcicam.evaluation import WSOLEvaluator
    from kdcicam.models.cam import combinational_cam
    from kdcicam.scoremaps import scoremaps_for_evaluation

    model = module.model
    weight = model.mask2attention.weight.flatten(1).float() + beta  # [D, C]
    bias = model.mask2attention.bias.float() if model.mask2attention.bias is not None else 0.0
    ev = WSOLEvaluator(metadata, cam_size=size)
    f_all, p_all, ids = cached["features"], cached["pred_up"], cached["ids"]
    for i in range(0, len(ids), batch):
        f, pred = f_all[i:i + batch], p_all[i:i + batch]
        if context is None:
            down = f
        else:
            m = context[i:i + batch] if context.dim() == 3 and context.shape[0] == len(ids) else context[pred]
            a = weight[:, pred].t()[:, :, None, None] * m[:, None] + bias.view(1, -1, 1, 1)
            down = f * (1.0 + a)
        logits = model.head(down)
        maps = combinational_cam(logits, model.head.class_cams(down), model.combination, model.combination_m)
        ev.accumulate(scoremaps_for_evaluation(maps, size), ids[i:i + batch], logits.numpy())
    m = ev.compute()
    return {k: round(float(m[k]), 4) for k in KEEP if m.get(k) is not None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a CI-CAM run folder (its best.ckpt) or a .ckpt")
    p.add_argument("--splits", nargs="+", default=["val"])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    from kdcicam.checkpoints import resolve_checkpoint
    from kdcicam.models.causal import standardize
    from kdcicam.training.datamodule import WSOLDataModule
    from kdcicam.training.module import load_module

    ckpt = resolve_checkpoint(args.run)
    module = load_module(str(ckpt)).eval()
    if not hasattr(module.model, "mask2attention"):
        sys.exit(f"{ckpt}: not a CI-CAM checkpoint (no intervention)")
    dm = WSOLDataModule(module.cfg)
    size = module.cfg.data.image_size
    pool = module.model.pool.maps.float()
    start = time.time()
    result = {"checkpoint": str(ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt), "betas": list(BETAS),
              "intervention_weight": {
                  "mean_abs": round(float(module.model.mask2attention.weight.abs().mean()), 5),
                  "column_means": [round(float(v), 5) for v in module.model.mask2attention.weight.flatten(1).mean(0)]},
              "splits": {}}
    for split in args.splits:
        md = dm.metadata(split)
        cached = features_of(module, dm, split)
        oracle = standardize(box_masks(md, cached["ids"], size, tuple(pool.shape[1:])))
        rows = {"trained": score(module, md, cached, pool, 0.0, size), "none": score(module, md, cached, None, 0.0, size)}
        for b in BETAS:
            rows[f"beta={b}"] = score(module, md, cached, pool, b, size)
        rows["oracle"] = score(module, md, cached, oracle, 0.0, size)
        for b in BETAS:
            rows[f"oracle,beta={b}"] = score(module, md, cached, oracle, b, size)
        result["splits"][split] = rows
        print(split, json.dumps(rows, indent=1), flush=True)
    result["seconds"] = round(time.time() - start, 1)
    result.update(stamp(REPO, "benchmarks/intervention_reach.py"))
    result["command"] = " ".join([".venv/bin/python", "benchmarks/intervention_reach.py", *sys.argv[1:]])
    from kdcicam.data.metadata import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`kdcicam export`: a trained run → one ONNX graph (logits and the scored localization map), so the
localizer ships without PyTorch (run it with :class:`~kdcicam.onnx_backend.OnnxLocalizer`).

The graph (:class:`ExportGraph`) is the checkpoint's model in eval mode followed by the run's
``localization_map``; CI-CAM and KD-CI-CAM keep their intervention, with the trained context pool as a
constant. Its contract:

- input ``images``: float32 ``[N, 3, S, S]``, RGB in [0, 1], N dynamic (the backbone normalises inside);
- outputs ``logits`` float32 ``[N, C]`` and ``map`` float32 ``[N, h, w]`` on the CAM grid, the map the
  evaluator scores (before its bicubic resize to S × S and min-max normalisation, which the backend
  does in numpy exactly as the PyTorch path does).

Exporter: PyTorch's TorchScript-based ``torch.onnx.export(dynamo=False)`` at opset :data:`OPSET`; it
exports these models in seconds, where the dynamo exporter takes several times longer for the same
graph. The combinational CAM ranks classes by a stable sort, which neither exporter translates, so
the graph ranks by counting (:func:`rank_by_counting`): class c's rank is the number of classes with a
larger logit plus the number of lower-numbered classes with an equal one — the stable sort's rank,
ties included, as integers.

What is needed to use the file (class names, S, normalisation, the box threshold chosen on val, the
CAM grid, method, map kind, opset) is stored in its ``metadata_props`` under ``kdcicam`` as one JSON
object (:mod:`kdcicam.onnx_backend`). The file is written to a temporary name beside the target, checked
(onnx.checker, then onnxruntime against PyTorch on a probe batch) and renamed: a failed export leaves
nothing behind.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import KdcicamError
from .onnx_backend import FORMAT_VERSION, INPUT_NAME, METADATA_KEY, OUTPUT_NAMES

#: ONNX opset of the export (Einsum needs 12; 17 is read by onnxruntime >= 1.13 and current TensorRT)
OPSET = 17
#: probe check: the export is refused if onnxruntime's map (relative to its range) or logits (relative to
#: 1 + their largest magnitude) differ from PyTorch's by more than this
PROBE_TOLERANCE = 1e-3


def rank_by_counting(logits: torch.Tensor) -> torch.Tensor:
    """Rank [B, C] of every class by descending logit (0 = highest), ties kept in class order: the
    rank a stable descending sort gives, computed with comparisons only (ONNX has no stable sort)."""
    c = logits.shape[1]
    larger = (logits[:, None, :] > logits[:, :, None]).sum(dim=2)
    earlier = torch.ones(c, c, dtype=torch.bool, device=logits.device).tril(-1)
    tied_before = ((logits[:, None, :] == logits[:, :, None]) & earlier).sum(dim=2)
    return larger + tied_before


class ExportGraph(nn.Module):
    """The model plus its localization map, as one traceable module: ``x -> (logits, map)``."""

    def __init__(self, model: nn.Module, map_kind: str = "combinational"):
        super().__init__()
        if map_kind not in ("combinational", "top1"):
            raise KdcicamError(f"localization_map {map_kind!r} cannot be exported (it needs the ground-truth label); "
                               "export a run whose model.localization_map is combinational or top1")
        self.model = model
        self.map_kind = map_kind

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from .models.cam import combination_weights

        out = self.model(x)
        logits, cams = out["logits"], out["cams"]
        if self.map_kind == "top1":
            top = nn.functional.one_hot(logits.argmax(dim=1), cams.shape[1]).to(cams.dtype)
            return logits, torch.einsum("bc,bchw->bhw", top, cams)
        # plain attributes of kdcicam's models (str, int); torch types Module.__getattr__ as Tensor | Module
        kind, m = self.model.combination, self.model.combination_m
        h = combination_weights(cams.shape[1], kind, m)  # type: ignore[arg-type]
        weights = h.to(cams.device)[rank_by_counting(logits)]  # class c gets h[rank of c]
        s = torch.einsum("bc,bchw->bhw", weights.to(cams.dtype), cams)
        return logits, s - s.flatten(1).amin(dim=1).view(-1, 1, 1)


def _writable_temp(out: Path) -> Path:
    """A temporary file beside ``out`` (so the final rename is atomic), or a one-line error."""
    parent = out.parent
    if out.is_dir():
        raise KdcicamError(f"--out {out}: is a folder; give a file name such as {out / 'model.onnx'}")
    blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise KdcicamError(f"--out {out}: cannot write there ({blocker} is a file, not a folder)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:
        raise KdcicamError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    os.close(fd)
    return Path(tmp)


def export_metadata(loaded: Any, threshold: float | None, source: str, cam_grid: tuple[int, int]) -> dict[str, Any]:
    """The JSON stored under ``kdcicam`` in the file's metadata_props (fields: :func:`kdcicam.onnx_backend.read_metadata`)."""
    cfg = loaded.config
    backbone = getattr(loaded.model, "backbone", None)
    names = list(loaded.class_names) if loaded.class_names else [str(i) for i in range(loaded.num_classes)]
    return {"format": FORMAT_VERSION, "method": cfg.method, "map_kind": cfg.model.localization_map,
            "class_names": names, "image_size": int(cfg.data.image_size),
            "input": f"{INPUT_NAME}: float32 [N, 3, S, S], RGB in [0, 1], resized to S x S (antialiased bilinear)",
            "normalization": {"mean": list(getattr(backbone, "mean", ())), "std": list(getattr(backbone, "std", ())),
                              "applied_in_graph": True},
            "box_threshold": threshold, "box_threshold_source": source, "cam_grid": list(cam_grid),
            "outputs": {"logits": "float32 [N, C]", "map": "float32 [N, h, w] on the CAM grid"},
            "opset": OPSET, "checkpoint": str(loaded.path), "backbone": cfg.model.backbone,
            "kdcicam_version": __version__}


def _probe_check(graph: ExportGraph, path: Path, size: int) -> dict[str, float]:
    """Run the written file on a probe batch with onnxruntime and compare with PyTorch."""
    from .onnx_backend import import_onnxruntime

    ort = import_onnxruntime()
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits, maps = graph(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    o_logits, o_maps = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
    scale = max(float(maps.max() - maps.min()), 1e-12)
    err = float(np.abs(o_maps - maps.numpy()).max()) / scale
    logit_err = float(np.abs(o_logits - logits.numpy()).max()) / (1.0 + float(logits.abs().max()))
    if err > PROBE_TOLERANCE or logit_err > PROBE_TOLERANCE:
        raise KdcicamError(f"{path}: the exported graph does not reproduce the model (map error {err:.2e} of its "
                           f"range, logit error {logit_err:.2e}); nothing was written")
    return {"map_error": err, "logit_error": logit_err}


def export_onnx(run_or_ckpt: str | os.PathLike, out: str | os.PathLike, threshold: float | None = None,
                check: bool = True) -> dict[str, Any]:
    """Export a run (KD runs: the student) or a ``.ckpt`` to ``out``; returns the stored metadata.

    ``threshold=None`` stores the box threshold chosen on val (from the checkpoint or the run's
    metrics.json), or none if the run has none (the backend then needs one given)."""
    import onnx

    from .checkpoints import load_checkpoint, threshold_from_run
    from .localization import check_threshold

    out = Path(out)
    loaded = load_checkpoint(run_or_ckpt)
    if threshold is None:
        stored, source = threshold_from_run(loaded.path, loaded.box_threshold)
    else:
        stored, source = check_threshold(threshold, "--threshold"), "given to kdcicam export"
    model = loaded.model.eval().to(memory_format=torch.contiguous_format)
    graph = ExportGraph(model, loaded.config.model.localization_map).eval()
    size = int(loaded.config.data.image_size)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cam_grid = tuple(int(v) for v in model(x)["cams"].shape[-2:])
    meta = export_metadata(loaded, stored, source or "none", cam_grid)  # type: ignore[arg-type]
    tmp = _writable_temp(out)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(graph, (x,), str(tmp), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}, "map": {0: "batch"}},
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        proto.producer_name, proto.producer_version = "kdcicam", __version__
        proto.doc_string = (f"kdcicam {meta['method']} localizer: {INPUT_NAME} float32 [N,3,{size},{size}] RGB in [0,1] "
                            f"-> logits [N,{len(meta['class_names'])}], map [N,{cam_grid[0]},{cam_grid[1]}]")
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        if check:
            meta = {**meta, "probe": _probe_check(graph, tmp, size)}
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, out)
    except OSError as e:
        raise KdcicamError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return meta


__all__ = ["OPSET", "ExportGraph", "export_metadata", "export_onnx", "rank_by_counting"]

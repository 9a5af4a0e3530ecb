"""The evaluator's compiled kernels, from wherever they load fastest: the ahead-of-time module
(``_kernels_aot``, built by ``pip install`` or ``make kernels``, see :mod:`._aot`) when it was built
from this very ``_kernels.py``, else numba's JIT (:mod:`._kernels`, cached on disk after the first
run). The AOT module loads in milliseconds and never imports numba, so the first ``kdcicam score``
after an install is as fast as the second.

``KDCICAM_KERNELS=aot`` insists on the AOT module (an error when it is missing or stale),
``KDCICAM_KERNELS=jit`` ignores it; unset, the AOT module is used when it is current.

The AOT module accepts exactly the argument types it was built for (it checks only item sizes, not
layouts), so every kernel is called through the wrappers below, which make the inputs contiguous
and of the right dtype and check that the output buffers already are; the JIT path goes through
the same wrappers, so both see the same arguments.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np

from ..errors import KdcicamError
from ._build_id import cpu_flags_hash, source_hash

FLAG_SINGLE = 1  #: as ``_kernels.FLAG_SINGLE``: the single-contour answer needs the plain findContours
FLAG_MULTI = 2  #: as ``_kernels.FLAG_MULTI``: the multi-contour answer needs the plain findContours
ENV = "KDCICAM_KERNELS"


class KernelBackendError(KdcicamError, RuntimeError):
    """``KDCICAM_KERNELS`` asks for a kernel build that is not there (or has another value)."""


def _aot_module() -> tuple[ModuleType | None, str]:
    """The AOT module when it is importable and current, else ``None`` and why not."""
    try:
        module = importlib.import_module(".evaluation._kernels_aot", "kdcicam")
        built_from, built_for = module.source_hash(), module.cpu_flags_hash()
    except Exception as e:  # noqa: BLE001 - missing, built for another numpy, an older build's layout: all mean JIT
        return None, f"no usable ahead-of-time kernels ({type(e).__name__}: {e}); build them with `make kernels`"
    where = getattr(module, "__file__", "_kernels_aot")
    if built_from != source_hash():
        return None, (f"the ahead-of-time kernels ({where}) were built from another _kernels.py; "
                      "rebuild them with `make kernels`")
    if built_for not in (0, cpu_flags_hash()):
        return None, (f"the ahead-of-time kernels ({where}) were compiled for another CPU; "
                      "rebuild them with `make kernels` (or reinstall)")
    return module, ""


def _load() -> tuple[ModuleType, str, str]:
    choice = os.environ.get(ENV, "").strip().lower()
    if choice not in ("", "aot", "jit"):
        raise KernelBackendError(f"{ENV}={os.environ[ENV]!r}: expected 'aot', 'jit' or unset")
    why = ""
    if choice != "jit":
        module, why = _aot_module()
        if module is not None:
            return module, "aot", ""
        if choice == "aot":
            raise KernelBackendError(f"{ENV}=aot: {why}")
    return importlib.import_module(".evaluation._kernels", "kdcicam"), "jit", why


_impl, BACKEND, _FALLBACK = _load()  #: ``"aot"`` or ``"jit"``: which build this process runs


def fallback_notice() -> str | None:
    """One line for the user when this process runs on the JIT although nobody asked for it (the AOT
    module is missing, stale or for another CPU): each run then imports numba (about 0.3 s), and the
    first one compiles the kernels (about 20 s of CPU, cached after). ``None`` on the AOT module or
    with ``KDCICAM_KERNELS=jit``."""
    if not _FALLBACK:
        return None
    return (f"note: {_FALLBACK}. Using numba's JIT instead: each run starts some 0.3 s slower, and the first one "
            "compiles the kernels (about 20 s, once; same results).")


_NO_LEAK = np.zeros(0, dtype=np.float64)  #: the ``leak`` argument when leakage is not asked for


def _c(a: np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def _out(a: np.ndarray, dtype: type, name: str) -> np.ndarray:
    """An output buffer must already be C-contiguous and of ``dtype`` (a copy would be written instead)."""
    if a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable:
        raise TypeError(f"{name}: expected a writable C-contiguous {np.dtype(dtype)} array, got {a.dtype} "
                        f"(C-contiguous: {a.flags.c_contiguous})")
    return a


def batch_box_ious(maps: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray, gt_offsets: np.ndarray,
                   first: int, stop: int, out_single: np.ndarray, out_multi: np.ndarray, flags: np.ndarray,
                   levels: np.ndarray, valid: np.ndarray, with_holes: bool, leak: np.ndarray | None = None) -> None:
    """:func:`._kernels.batch_box_ious` (images ``first .. stop - 1``; the outputs are ``[B, T]``; ``leak``
    ``[B]``: also each map's leakage against its GT boxes)."""
    if not 0 <= first <= stop <= maps.shape[0]:
        raise ValueError(f"image range {first}..{stop} outside a batch of {maps.shape[0]}")
    if leak is not None and leak.shape != (maps.shape[0],):
        raise ValueError(f"leak: expected shape ({maps.shape[0]},), got {leak.shape}")
    _impl.batch_box_ious(_c(maps, np.float64), _c(thresholds, np.float64), _c(gt_boxes, np.int64),
                         _c(gt_offsets, np.int64), int(first), int(stop), _out(out_single, np.float64, "out_single"),
                         _out(out_multi, np.float64, "out_multi"), _out(flags, np.uint8, "flags"),
                         _out(levels, np.int64, "levels"), _out(valid, np.bool_, "valid"), bool(with_holes),
                         _NO_LEAK if leak is None else _out(leak, np.float64, "leak"), leak is not None)


def quantize(scoremap: np.ndarray, q: np.ndarray, hist: np.ndarray) -> int:
    """:func:`._kernels.quantize`: ``q = uint8(map * 255)`` and its histogram; -1 for an invalid map."""
    return int(_impl.quantize(_c(scoremap, np.float64), _out(q, np.uint8, "q"), _out(hist, np.int64, "hist")))


def best_ious(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """:func:`._kernels.best_ious`: per box ``[n, 4]``, its best IoU with the GT boxes ``[k, 4]``."""
    return _impl.best_ious(_c(boxes, np.int64).reshape(-1, 4), _c(gt, np.int64).reshape(-1, 4))


def mask_histograms(scoremap: np.ndarray, mask: np.ndarray, edges: np.ndarray, fg_hist: np.ndarray,
                    bg_hist: np.ndarray) -> None:
    """:func:`._kernels.mask_histograms`: add a map's object / background scores to the histograms."""
    _impl.mask_histograms(_c(scoremap, np.float64), _c(mask, np.uint8), _c(edges, np.float64),
                          _out(fg_hist, np.int64, "fg_hist"), _out(bg_hist, np.int64, "bg_hist"))


def leakage_share(scoremap: np.ndarray, region: np.ndarray) -> float:
    """:func:`._kernels.leakage_share`: the share of the map's mass outside the object (NaN for a
    map with NaN or inf)."""
    return float(_impl.leakage_share(_c(scoremap, np.float64), _c(region, np.uint8)))

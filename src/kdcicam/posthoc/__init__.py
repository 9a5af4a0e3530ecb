"""Post-hoc CAM methods (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, Score-CAM, ...) on any classifier.

The maps come from `torchcam <https://github.com/frgfm/torch-cam>`_ (docs/posthoc.md says why torchcam and
not ``grad-cam``); this module only binds one of its extractors to one model and one target layer, feeds it
the evaluation batches and hands back the *raw* maps at the target layer's resolution. Those maps then go
through :func:`kdcicam.scoremaps.scoremaps_for_evaluation`, the very step the model's own (``native``) map
takes, so a post-hoc map is resized, normalised and scored exactly like a trained method's.

Conventions, the same for every method and every model:

- **the class explained** is the model's top-1 prediction (the class Top-1 Loc scores); for CI-CAM and
  KD-CI-CAM that is the argmax of the *down* branch's logits, the logits every metric reads;
- **the input the method sees** is the *normalised* image (the torchvision / timm convention, which
  torchcam's defaults assume): Score-CAM's masks and SmoothGrad's noise act on it, so a masked-out pixel is
  the dataset mean, not black. kdcicam models normalise inside their backbone, so the adapter maps the
  normalised image back to [0, 1] before calling them;
- **the target layer** of a kdcicam model is ``backbone``, see :data:`KDCICAM_TARGET_LAYER`; of any other
  model, the last module whose output is a spatial map ``[B, D, h, w]`` (h·w > 1), unless one is named.

Gradient methods build the autograd graph only from the target layer on (the layers below it run without
one), so their memory is that of an inference pass plus the head; Score-CAM and its variants forward the
channel-masked images in chunks of ``score_batch_size`` (memory bounded by that many images).
"""
from __future__ import annotations

from typing import Any

from ..errors import KdcicamError

#: the model's own localization map (the combinational CAM of kdcicam models): what training validated
NATIVE = "native"

#: ``--cam-method`` name → the torchcam extractor. Every torchcam method that applies to a CNN classifier
#: with one target layer; left out: RefineCAM (fuses two or more layers) and LeGrad (vision transformers).
METHODS: dict[str, str] = {
    "cam": "CAM",
    "grad-cam": "GradCAM",
    "grad-cam++": "GradCAMpp",
    "smooth-grad-cam++": "SmoothGradCAMpp",
    "xgrad-cam": "XGradCAM",
    "layer-cam": "LayerCAM",
    "finer-cam": "FinerCAM",
    "score-cam": "ScoreCAM",
    "ss-cam": "SSCAM",
    "is-cam": "ISCAM",
}
#: the methods that back-propagate the class score to the target layer
GRADIENT_METHODS = frozenset({"grad-cam", "grad-cam++", "smooth-grad-cam++", "xgrad-cam", "layer-cam", "finer-cam"})
#: every valid ``--cam-method``, the default first
CAM_METHODS: tuple[str, ...] = (NATIVE, *METHODS)

#: The target layer of every kdcicam model (CAM, CI-CAM, KD-CI-CAM): the backbone's output ``F`` [B, D, h, w].
#:
#: Why ``backbone`` and not CI-CAM's intervened map ``F' = F ⊙ (1 + A)`` (whose class CAMs make the native
#: map): ``F'`` is computed inside the model's forward, not by a module, so no hook-based library can reach
#: it without changing the model; and nothing is lost, because the intervention ``A`` depends on ``F`` only
#: through the up branch's argmax (no gradient) and on the pool (a buffer). The scored logits are the
#: *down* branch's, so ``∂z_down/∂F = (1 + A) ⊙ ∂z_down/∂F'``: Grad-CAM & co. on ``F`` see the intervention
#: through their gradients, and Score-CAM's masked forwards go through it. The same layer for all three
#: methods keeps their post-hoc rows comparable; for CAM, ``F = F'``.
KDCICAM_TARGET_LAYER = "backbone"

#: ImageNet mean / std on the [0, 1] scale: what torchvision and most timm classifiers expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PosthocError(KdcicamError, ValueError):
    """A post-hoc CAM that cannot be computed as asked (unknown method, missing or non-spatial layer)."""


def _compact(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


_ALIASES = {**{_compact(k): k for k in CAM_METHODS}, **{_compact(v): k for k, v in METHODS.items()}}


def check_method(name: str) -> str:
    """A ``--cam-method`` value → its canonical name (``GradCAM``, ``gradcam``, ``grad_cam`` → ``grad-cam``)."""
    canonical = _ALIASES.get(_compact(str(name)))
    if canonical is None:
        raise PosthocError(f"unknown CAM method {name!r} (--cam-method); valid: {', '.join(CAM_METHODS)}")
    return canonical


_LAZY = ("ClassifierAdapter", "PosthocCAM", "create_posthoc", "is_kdcicam_model")


def __getattr__(name: str) -> Any:
    """The torch side (:mod:`kdcicam.posthoc.extractor`) loads on first use, so the CLI's parsers stay light."""
    if name in _LAZY:
        from . import extractor

        return getattr(extractor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CAM_METHODS", "GRADIENT_METHODS", "IMAGENET_MEAN", "IMAGENET_STD", "KDCICAM_TARGET_LAYER", "METHODS",
           "NATIVE", "ClassifierAdapter", "PosthocCAM", "PosthocError", "check_method", "create_posthoc",
           "is_kdcicam_model"]

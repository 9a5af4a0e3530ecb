"""The torch side of :mod:`kdcicam.posthoc`: a torchcam extractor bound to one model and one target layer."""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn

from . import (
    GRADIENT_METHODS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KDCICAM_TARGET_LAYER,
    METHODS,
    NATIVE,
    PosthocError,
    check_method,
)


def is_kdcicam_model(model: nn.Module) -> bool:
    """The kdcicam contract (``model(x) -> {"logits", ...}``, ``localization_map``, a normalising backbone)."""
    backbone = getattr(model, "backbone", None)
    return (callable(getattr(model, "localization_map", None)) and isinstance(backbone, nn.Module)
            and hasattr(backbone, "mean") and hasattr(backbone, "std"))


def _logits(out: Any) -> torch.Tensor:
    """The class scores of a model's output: a tensor, a dict's ``logits``, or a tuple's first element."""
    if isinstance(out, dict):
        out = out.get("logits")
    elif isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PosthocError(f"post-hoc CAMs need a classifier returning logits [B, C] (a tensor, or a dict with "
                           f"'logits'); the model returned {shape}")
    return out


class ClassifierAdapter(nn.Module):
    """Normalised image → logits [B, C]: the one interface torchcam needs, over any model.

    ``model_normalizes``: the model normalises its [0, 1] input itself (kdcicam backbones), so the adapter
    undoes the normalisation first; otherwise the model is fed the normalised image as it is.
    """

    mean: torch.Tensor | None  # buffers, both set or both None
    std: torch.Tensor | None

    def __init__(self, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None,
                 model_normalizes: bool):
        super().__init__()
        self.model = model
        self.model_normalizes = bool(model_normalizes) and mean is not None
        self.register_buffer("mean", None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] image → the method's input."""
        if self.mean is None:
            return x
        assert self.std is not None
        return (x - self.mean.to(x)) / self.std.to(x)

    def forward(self, xn: torch.Tensor) -> torch.Tensor:
        x = xn
        if self.model_normalizes:
            assert self.mean is not None and self.std is not None  # model_normalizes needs mean (and std)
            x = xn * self.std.to(xn) + self.mean.to(xn)
        return _logits(self.model(x))


def _layer_shapes(model: nn.Module, adapter: ClassifierAdapter, image_size: int,
                  device: torch.device) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """One forward of a blank image: each module's output shape (tensors only) and the order in which the
    modules finished (a parent after its children). Also checks the model returns logits."""
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []

    def record(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape)
                if name in order:
                    order.remove(name)
                order.append(name)
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            adapter(adapter.normalize(torch.zeros(1, 3, image_size, image_size, device=device)))
    finally:
        for h in handles:
            h.remove()
    return shapes, order


def _is_spatial(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


class PosthocCAM:
    """One torchcam method bound to one model and one target layer: ``cam(x)`` → (logits, raw maps).

    Build it with :meth:`for_model` (any classifier) or :meth:`for_kdcicam` (a kdcicam model). Hooks stay
    on the model but are idle outside calls; :meth:`close` removes them.
    """

    def __init__(self, model: nn.Module, method: str, target_layer: str | None = None, *, image_size: int,
                 mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD,
                 model_normalizes: bool = False, fc_layer: str | None = None, score_batch_size: int = 32,
                 default_layer: str | None = None):
        self.method = check_method(method)
        if self.method == NATIVE:
            raise PosthocError("the native map is the model's own (localization_map), not a post-hoc method")
        if int(score_batch_size) < 1:
            raise PosthocError(f"score_batch_size must be >= 1, got {score_batch_size}")
        if (mean is None) != (std is None):
            raise PosthocError("give both mean and std, or neither")
        self.model = model
        self.adapter = ClassifierAdapter(model, mean, std, model_normalizes)
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        shapes, order = _layer_shapes(model, self.adapter, int(image_size), device)
        spatial = [n for n in order if _is_spatial(shapes.get(n))]
        self.target_layer = self._choose_layer(model, target_layer or default_layer, shapes, spatial)
        self.feature_shape = shapes[self.target_layer][1:]
        self.layer = dict(model.named_modules())[self.target_layer]
        self.extractor = self._build(fc_layer, int(score_batch_size), int(image_size))
        self.extractor.disable_hooks()

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def for_model(cls, model: nn.Module, method: str = "grad-cam", target_layer: str | None = None, *,
                  image_size: int = 224, mean: Sequence[float] | None = IMAGENET_MEAN,
                  std: Sequence[float] | None = IMAGENET_STD, **kwargs: Any) -> PosthocCAM:
        """Any torch classifier fed normalised images (``mean``/``std``; ``None``: fed [0, 1] as is)."""
        return cls(model, method, target_layer, image_size=image_size, mean=mean, std=std, **kwargs)

    @classmethod
    def for_kdcicam(cls, model: nn.Module, method: str, target_layer: str | None = None, *, image_size: int,
                    **kwargs: Any) -> PosthocCAM:
        """A kdcicam model: target ``backbone`` by default, the down branch's logits, the backbone's own
        normalisation, and (for ``cam``) the shared classifier ``head.fc``."""
        backbone: Any = model.backbone  # a kdcicam backbone: its mean and std are plain tuples
        kwargs.setdefault("fc_layer", "head.fc" if "head.fc" in dict(model.named_modules()) else None)
        return cls(model, method, target_layer, image_size=image_size, mean=tuple(backbone.mean),
                   std=tuple(backbone.std), model_normalizes=True, default_layer=KDCICAM_TARGET_LAYER, **kwargs)

    @staticmethod
    def _choose_layer(model: nn.Module, name: str | None, shapes: dict[str, tuple[int, ...]],
                      spatial: list[str]) -> str:
        candidates = ", ".join(spatial[-3:][::-1]) or "none in this model"
        if name is None:
            if not spatial:
                raise PosthocError(f"{type(model).__name__} has no layer with a spatial feature map [B, D, h, w] "
                                   "(h·w > 1): post-hoc CAMs need a convolutional layer to explain")
            return spatial[-1]
        names = [n for n, _ in model.named_modules() if n]
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise PosthocError(f"target layer {name!r} does not exist in {type(model).__name__}; {hint}layers with a "
                               f"spatial feature map, last first: {candidates} (names as in model.named_modules())")
        if name not in shapes:
            raise PosthocError(f"target layer {name!r} gives no tensor in the model's forward (unused, or it returns "
                               f"a tuple); layers with a spatial feature map, last first: {candidates}")
        if not _is_spatial(shapes[name]):
            raise PosthocError(f"target layer {name!r} outputs {list(shapes[name][1:])} per image: no spatial feature "
                               f"map [D, h, w] with h·w > 1; layers that have one, last first: {candidates}")
        return name

    def _build(self, fc_layer: str | None, score_batch_size: int, image_size: int) -> Any:
        try:
            methods = importlib.import_module("torchcam.methods")
        except ModuleNotFoundError:
            raise PosthocError(f"--cam-method {self.method} needs torchcam: pip install 'kdcicam[posthoc]' "
                               "(torchcam 0.5, Python >= 3.11)") from None
        extractor_cls = getattr(methods, METHODS[self.method])
        kwargs: dict[str, Any] = {"input_shape": (3, image_size, image_size)}
        if self.method == "cam":
            fc = self._fc_layer(fc_layer)
            in_features = cast(torch.Tensor, fc.weight).shape[1]  # _fc_layer checked that it is a tensor
            if in_features != self.feature_shape[0]:
                raise PosthocError(f"--cam-method cam: the classifier {fc_layer or 'fc'} takes {in_features} "
                                   f"features but target layer {self.target_layer!r} has {self.feature_shape[0]} "
                                   "channels (CAM needs the layer right before global pooling)")
            kwargs["fc_layer"] = fc
        elif self.method in ("score-cam", "ss-cam", "is-cam"):
            kwargs["batch_size"] = score_batch_size
        return extractor_cls(self.adapter, self.layer, **kwargs)

    def _fc_layer(self, name: str | None) -> nn.Module:
        modules = dict(self.model.named_modules())
        if name is not None:
            if name not in modules:
                raise PosthocError(f"--cam-method cam: no layer {name!r} in the model")
            fc = modules[name]
        else:
            linear = [m for m in modules.values() if isinstance(m, nn.Linear)]
            if len(linear) != 1:
                raise PosthocError(f"--cam-method cam needs the classifier layer after global pooling; the model has "
                                   f"{len(linear)} Linear layers, so it cannot be told which (give fc_layer)")
            fc = linear[0]
        if not isinstance(getattr(fc, "weight", None), torch.Tensor) or fc.weight.ndim < 2:
            raise PosthocError("--cam-method cam: the classifier layer has no [C, D] weight")
        return fc

    # ------------------------------------------------------------------------------ use
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] in [0, 1] → (logits [B, C], raw maps [B, h, w] of the top-1 class), detached.

        Runs outside inference mode (gradients are needed) even when called inside it.
        """
        with torch.inference_mode(False):
            x = x.clone()  # a tensor made in inference mode cannot enter autograd
            return self._compute(self.adapter.normalize(x))

    def _compute(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ext = self.extractor
        handles = []
        grad_was = torch.is_grad_enabled()
        ext.enable_hooks()
        try:
            if self.method in GRADIENT_METHODS:
                # the graph starts at the target layer: nothing below it is recorded (an inference pass's memory)
                handles = [self.adapter.register_forward_pre_hook(_no_graph),
                           self.layer.register_forward_hook(_graph_from_here, prepend=True)]
            torch.set_grad_enabled(False)
            scores = self.adapter(xn)
            class_idx = [int(c) for c in scores.detach().argmax(dim=1).tolist()]
            maps = ext(class_idx, scores, normalized=False)[0]
        finally:
            for h in handles:
                h.remove()
            ext.disable_hooks()
            ext.reset_hooks()
            torch.set_grad_enabled(grad_was)
        return scores.detach().float(), maps.detach().float()

    def describe(self) -> dict[str, Any]:
        return {"cam_method": self.method, "target_layer": self.target_layer,
                "feature_shape": list(self.feature_shape)}

    def close(self) -> None:
        """Remove the extractor's hooks from the model."""
        self.extractor.remove_hooks()


def _no_graph(_module: nn.Module, _inputs: Any) -> None:
    torch.set_grad_enabled(False)


def _graph_from_here(_module: nn.Module, _inputs: Any, output: Any) -> Any:
    """Make the target layer's output a fresh root of the autograd graph (a clone, so that in-place ops
    after it stay legal); the layers after it record the graph the gradient methods differentiate."""
    if not isinstance(output, torch.Tensor):
        return None
    torch.set_grad_enabled(True)
    return output.detach().requires_grad_(True).clone()


def create_posthoc(model: nn.Module, method: str, target_layer: str | None = None, *, image_size: int,
                   **kwargs: Any) -> PosthocCAM:
    """:meth:`PosthocCAM.for_kdcicam` for a kdcicam model, else :meth:`PosthocCAM.for_model`."""
    if is_kdcicam_model(model):
        return PosthocCAM.for_kdcicam(model, method, target_layer, image_size=image_size, **kwargs)
    return PosthocCAM.for_model(model, method, target_layer, image_size=image_size, **kwargs)


__all__ = ["ClassifierAdapter", "PosthocCAM", "create_posthoc", "is_kdcicam_model"]

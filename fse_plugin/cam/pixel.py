"""Pixel CAMs with our targets, aggregated per face region.

The gradient and score CAMs come from pytorch-grad-cam (GradCAM, GradCAM++, ScoreCAM, XGradCAM,
LayerCAM, EigenCAM, HiResCAM, EigenGradCAM); RISE and Group-CAM, which the library lacks, are ours
(``rise.RISE``, ``group_cam.GroupCAM``) with the same call. Every map ``[N,H,W]`` in [0, 1] is then
read per region: mean over the region's pixels and the region's share of the map's mass.
pytorch-grad-cam is imported when a CAM is made (it pulls in cv2, scipy and ttach: seconds).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fse_plugin.cam.classifier import IdentityLogits
from fse_plugin.cam.inputs import IGNORE, as_input, as_masks
from fse_plugin.cam.names import LIBRARY_CAMS, PIXEL_METHODS
from fse_plugin.cam.rise import RISE
from fse_plugin.cam.targets import Target, resolve_target
from fse_plugin.common import FSEError, checks
from fse_plugin.labels import NUM_CLASSES

__all__ = ["default_target_layer", "resolve_layer", "make_pixel_cam", "run_pixel_cam", "pixel_cam",
           "aggregate_per_region"]


def _network(model: nn.Module) -> nn.Module:
    """The network whose layers are hooked: the backbone of an ``IdentityLogits``, else the
    model."""
    return model.backbone if isinstance(model, IdentityLogits) else model


def default_target_layer(model: nn.Module) -> nn.Module:
    """Last spatial stage of an iresnet-style backbone: ``layer4`` (arcface_torch iresnet,
    torchvision resnets), else ``layers[-1]`` (fse iresnet_tiny, arcface_torch mobilefacenet), else
    the last Conv2d."""
    net = _network(model)
    if isinstance(net, torch.jit.ScriptModule):
        raise FSEError("pixel CAMs hook layers and need an eager nn.Module, not TorchScript "
                         "(use fscam, ablation or rise, or load the backbone with --network NAME)")
    if isinstance(getattr(net, "layer4", None), nn.Module):
        return net.layer4
    layers = getattr(net, "layers", None)
    if isinstance(layers, nn.Sequential) and len(layers):
        return layers[-1]
    convs = [mod for mod in net.modules() if isinstance(mod, nn.Conv2d)]
    if not convs:
        raise FSEError(f"{type(net).__name__} has no Conv2d: pass target_layer (a module or "
                       "dotted name)")
    return convs[-1]


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """A target layer given as a module, a dotted name (``layers.3``, ``layer4.2``, relative to the
    backbone) or None (default)."""
    if layer is None:
        return default_target_layer(model)
    if isinstance(layer, nn.Module):
        return layer
    for root in (_network(model), model):
        try:
            return root.get_submodule(layer)
        except AttributeError:
            pass
    names = [n for n, _ in _network(model).named_modules() if n][-8:]
    raise FSEError(f"target layer {layer!r} not found in {type(_network(model)).__name__} "
                   f"(last modules: {', '.join(names)})")


def make_pixel_cam(method: str, model: nn.Module, target_layer: nn.Module | str | None = None,
                   **options: Any):
    """A CAM object for ``method`` (``cam(input_tensor, targets) -> [B,H,W]``, min-max scaled).

    Library methods take ``batch_size`` (ScoreCAM's inner batch); ``rise`` takes n_masks, s, p1,
    batch_size, seed, amp; ``groupcam`` takes groups, blur_kernel, blur_sigma, percentile,
    batch_size.
    """
    if method == "rise":
        return RISE(model, **options)
    if method == "groupcam":
        from fse_plugin.cam.group_cam import GroupCAM  # imports pytorch-grad-cam
        return GroupCAM(model, [resolve_layer(model, target_layer)], **options)
    if method not in LIBRARY_CAMS:
        raise FSEError(f"unknown pixel CAM {method!r}; known: {', '.join(PIXEL_METHODS)}")
    batch = options.pop("batch_size", None)
    if options:
        raise FSEError(f"{method} takes no options {sorted(options)}")
    import pytorch_grad_cam
    cam = getattr(pytorch_grad_cam, LIBRARY_CAMS[method])(model,
                                                          [resolve_layer(model, target_layer)])
    if batch is not None:
        cam.batch_size = batch
    return cam


def run_pixel_cam(cam, x: torch.Tensor, target: Target, batch_size: int = 16) -> np.ndarray:
    """Run a CAM object over images in batches with per-image targets -> ``[N,H,W]`` float32."""
    checks.count(batch_size, "batch_size")
    maps = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].float().contiguous()
        t = target.take(slice(s, s + len(xb)))
        maps.append(np.asarray(cam(input_tensor=xb, targets=[t[i] for i in range(len(xb))]),
                               dtype=np.float32))
    return np.concatenate(maps) if maps else np.zeros((0, *x.shape[2:]), np.float32)


def pixel_cam(model: nn.Module, images: torch.Tensor | np.ndarray, target: Target | None = None,
              method: str = "gradcam", target_layer: nn.Module | str | None = None,
              batch_size: int = 16, **options: Any) -> np.ndarray:
    """Pixel saliency ``[N,H,W]`` in [0, 1] of ``method`` with our targets (default: reference
    argmax)."""
    x = as_input(images)
    target = resolve_target(model, x, target)
    with make_pixel_cam(method, model, target_layer, **options) as cam:
        return run_pixel_cam(cam, x, target, batch_size)


def aggregate_per_region(maps: np.ndarray | torch.Tensor,
                         masks: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pixel maps per region: ``(mean [N,25], share of the map's mass [N,25])``, NaN where
    absent."""
    mp = torch.as_tensor(np.asarray(maps, dtype=np.float64) if not isinstance(maps, torch.Tensor)
                         else maps).double()
    m = as_masks(masks, tuple(mp.shape))
    n = len(mp)
    idx = (torch.where(m == IGNORE, NUM_CLASSES, m) + (NUM_CLASSES + 1) * torch.arange(n)[:, None, None]).flatten()
    sums = torch.bincount(idx, weights=mp.flatten(),
                          minlength=n * (NUM_CLASSES + 1)).view(n, -1)[:, :NUM_CLASSES]
    counts = torch.bincount(idx,
                            minlength=n * (NUM_CLASSES + 1)).view(n, -1)[:, :NUM_CLASSES].double()
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    mean = torch.where(counts > 0, sums / counts.clamp(min=1), nan)
    total = mp.flatten(1).sum(1, keepdim=True)
    share = torch.where(counts > 0, sums / total.clamp(min=1e-12), nan)
    return mean.float().numpy(), share.float().numpy()

"""Recognizer checkpoints as releases come: a plain state_dict, or one wrapped in
``{'state_dict': ...}``, ``{'model': ...}``, ``{'backbone': ...}`` (arcface_torch's
``checkpoint_gpu_R.pt``: ``state_dict_backbone``), keys prefixed by ``module.`` (DataParallel/DDP)
or ``_orig_mod.`` (torch.compile), with or without a classifier head.

The head (FS-CAM's identity-logit target) is a 2-D float tensor [num_classes, embedding_size] that
is not part of the backbone: ``fc.weight``, ``head.weight``, ``classifier.weight``, a bare
``weight``/``kernel``, or the weight of a nested ``head``/``margin``/``fc``/``classifier`` dict;
arcface_torch's partial_fc keeps it as ``state_dict_softmax_fc['weight']`` (with several GPUs, each
rank's file holds its own slice of the classes). A ``kernel`` stored [embedding_size, num_classes]
(AdaFace/MagFace style) is transposed. Everything is loaded with ``weights_only=True``; every error
names the file.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from fse_plugin.backbone.networks import build_network
from fse_plugin.common import FSEError, checks, resolve_device, unwrapped_key

__all__ = ["CheckpointError", "load_backbone", "load_recognizer", "read_checkpoint"]

_WRAPPERS = ("state_dict_backbone", "state_dict", "model", "backbone", "model_state_dict", "net")
"""Keys under which releases nest the backbone's state_dict, in order of preference."""
_HEADS = ("state_dict_softmax_fc", "head", "margin", "fc", "classifier", "header", "metric_fc",
          "partial_fc")
"""Names of classifier heads, as nested dicts or as the first part of a key."""
_OWNERS = ("backbone.", "model.", "net.", "encoder.")
"""First key parts of a backbone held inside a larger module (``backbone.conv1.weight`` next to
``head.weight``)."""


class CheckpointError(FSEError):
    """A checkpoint that cannot be read or does not fit the network; the message names the file and
    keys."""


def _flat_tensors(state: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in state.items():
        if isinstance(v, Mapping):
            out.update(_flat_tensors(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _unwrap(obj: Any, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the backbone's candidate state, head candidates from nested head dicts), both flat."""
    heads: dict[str, Any] = {}
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        heads.update(_flat_tensors({k: v for k, v in obj.items()
                                    if k != inner and str(k).split(".")[0] in _HEADS}))
        if inner is None:
            raise CheckpointError(f"{path}: no state_dict in it (top-level keys {sorted(map(str, obj))[:12]}); "
                                  "expected a state_dict or {'state_dict' | 'model' | 'backbone': state_dict}")
        obj = obj[inner]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    return dict(obj), heads


def _strip(key: str, backbone_keys: set[str]) -> str:
    key = unwrapped_key(key)
    if key in backbone_keys:
        return key
    owner = next((o for o in _OWNERS if key.startswith(o) and key[len(o):] in backbone_keys), None)
    return key[len(owner):] if owner else key


def _head_weight(name: str, t: torch.Tensor, embedding_size: int, path: str) -> torch.Tensor | None:
    """``t`` as a [num_classes, embedding_size] head if ``name`` is a head's weight, else None."""
    parts = name.split(".")
    if parts[-1] not in ("weight", "kernel") or (len(parts) > 1 and parts[0] not in _HEADS):
        return None
    if not (isinstance(t, torch.Tensor) and t.is_floating_point() and t.ndim == 2):
        return None
    if t.shape[1] == embedding_size:
        return t.float()
    if parts[-1] == "kernel" and t.shape[0] == embedding_size:
        return t.t().float().contiguous()
    raise CheckpointError(f"{path}: {name} is {list(t.shape)}; a classifier head must be "
                          f"[num_classes, {embedding_size}] for embedding size {embedding_size}")


def _summary(keys: list[str], what: str) -> str:
    return f"{len(keys)} {what} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"


def read_checkpoint(path: str | os.PathLike, expected: Mapping[str, torch.Tensor], embedding_size: int,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """(backbone state_dict fitting ``expected`` key for key and shape, classifier head or None)."""
    path = str(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as e:  # not a torch file, or objects weights_only refuses to build
        raise CheckpointError(f"{path}: not a readable checkpoint (loaded with weights_only=True): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    state, heads = _unwrap(obj, path)
    keys = set(expected)
    state = {_strip(str(k), keys): v for k, v in state.items()}
    found = {n: w for n, t in {**heads, **{k: v for k, v in state.items() if k not in keys}}.items()
             if (w := _head_weight(n, t, embedding_size, path)) is not None}
    if len(found) > 1:
        raise CheckpointError(f"{path}: several classifier heads ({', '.join(found)}): keep one")
    extra = sorted(k for k in state
                   if k not in keys and k.split(".")[0] not in _HEADS and k not in found)
    missing = sorted(keys - set(state))
    shape = sorted(k for k in keys & set(state) if not isinstance(state[k], torch.Tensor)
                   or state[k].shape != expected[k].shape)
    if extra or missing or shape:
        problems = [_summary(extra, "unexpected keys")] if extra else []
        problems += [_summary(missing, "missing keys")] if missing else []
        problems += [_summary([f"{k} {_shape(state[k])} vs {list(expected[k].shape)}" for k in shape],
                              "keys of another shape")] if shape else []
        raise CheckpointError(f"{path}: the weights do not fit the network: {'; '.join(problems)} "
                              "- check --network and --embedding-size")
    return {k: state[k] for k in expected}, next(iter(found.values()), None)


def _shape(v: Any) -> str:
    return str(list(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__


def _torchscript(weights: str | os.PathLike | None, map_location: str | torch.device) -> nn.Module:
    if weights is None:
        raise CheckpointError("network 'torchscript' needs the path of a scripted model "
                              "(--weights)")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"TorchScript model not found: {weights}")
    try:
        return torch.jit.load(str(weights), map_location=map_location).eval()
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: not a TorchScript file "
                              f"({str(e).splitlines()[0]})") from None


def _check_request(weights: Any, network: Any, embedding_size: Any) -> None:
    """What ``load_recognizer`` is asked for can mean something: a path that is not a folder, a
    network name, a whole-number size (refused naming the parameter before anything is built or
    read)."""
    if not isinstance(weights, (str, os.PathLike)):
        raise FSEError(f"weights: expected the path of a checkpoint, got {weights!r}")
    if os.path.isdir(weights):
        raise CheckpointError(f"{weights}: a directory; expected a checkpoint file (e.g. its "
                              "model.pt)")
    if not isinstance(network, str):
        raise FSEError("network: expected a name (tiny, torchscript, r18, r50 ...), got "
                       f"{network!r}")
    checks.count(embedding_size, "embedding_size")


def load_recognizer(weights: str | os.PathLike, network: str = "tiny", embedding_size: int = 512,
                    arcface_dir: str | os.PathLike | None = None, map_location: str | torch.device = "cpu",
                    config_path: str | os.PathLike | None = None) -> tuple[nn.Module, torch.Tensor | None]:
    """(backbone in eval mode, classifier head weight [num_classes, embedding_size] or None).

    ``network``: ``tiny`` (built in), ``torchscript`` (a scripted file; no head), or an
    arcface_torch name (r18, r34, r50, r100 ...) built from the tree
    ``arcface_torch_dir(arcface_dir, config_path)`` finds. Random weights are refused: ``weights``
    must name a checkpoint (``build_network`` gives a random one).
    """
    if weights is None:
        raise CheckpointError(f"network {network!r}: no weights given; a randomly initialised network says "
                              "nothing - pass the checkpoint (arcface_torch's model.pt)")
    _check_request(weights, network, embedding_size)
    map_location = resolve_device(map_location, "map_location")
    if network == "torchscript":
        return _torchscript(weights, map_location), None
    model = build_network(network, embedding_size, arcface_dir, config_path)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"checkpoint not found: {weights}")
    state, head = read_checkpoint(weights, model.state_dict(), embedding_size, map_location)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), head


def load_backbone(weights: str | os.PathLike | None, network: str = "tiny", num_features: int = 512,
                  arcface_dir: str | os.PathLike | None = None,
                  map_location: str | torch.device = "cpu",
                  config_path: str | os.PathLike | None = None) -> nn.Module:
    """The backbone of ``load_recognizer`` alone. ``weights=None`` builds the network with random
    weights, for callers the user asked for that (cost benchmarks); the command-line tools refuse
    it."""
    if weights is None and network != "torchscript":
        return build_network(network, num_features, arcface_dir, config_path).eval()
    return load_recognizer(weights, network, num_features, arcface_dir, map_location,
                           config_path)[0]

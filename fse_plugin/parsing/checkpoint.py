"""Parser checkpoints: load ours, the published state_dict and common wrappers safely;
save atomically."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from fse_plugin.common import FSEError, unwrapped_key
from fse_plugin.common.files import atomic_output
from fse_plugin.labels import LABEL_SET, NUM_CLASSES
from fse_plugin.parsing.model import UNetRes18
from fse_plugin.parsing.widths import DEFAULT_FEATURE_SCALE

__all__ = ["FORMAT", "ParserCheckpointError", "read_checkpoint", "load_parser",
           "load_parser_and_meta", "save_parser"]

FORMAT = "fse_plugin.parser/1"
"""Format tag written into every checkpoint and aligned-face cache
(saved files carry it: never change it)."""


class ParserCheckpointError(FSEError):
    """A parser checkpoint that cannot be read or does not fit the model;
    the message names the file."""


_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")
_META_KEYS = ("feature_scale", "n_classes", "in_channels", "label_set")


def _bare(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _unwrap_state_dict(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the state_dict inside the usual wrappers; collect metadata found on the way."""
    meta: dict[str, Any] = {}
    for _ in range(4):
        if not isinstance(obj, Mapping) or not obj:
            raise ParserCheckpointError(f"{path}: expected a state_dict or a dict holding one, "
                                        f"got {type(obj).__name__}")
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        meta.update({k: obj[k] for k in _META_KEYS if k in obj and k not in meta})
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ParserCheckpointError(
                f"{path}: no state_dict found: top-level keys are {sorted(map(str, obj))[:20]} "
                f"(expected tensors, or one of {_WRAPPER_KEYS} holding them)")
        obj = inner
    else:
        raise ParserCheckpointError(f"{path}: state_dict nested too deeply")
    return {unwrapped_key(str(k)): v for k, v in obj.items()}, meta


def _infer_architecture(sd: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, int]:
    """feature_scale / n_classes / in_channels from metadata, else from the stem and head shapes."""
    arch = {"feature_scale": DEFAULT_FEATURE_SCALE, "n_classes": NUM_CLASSES, "in_channels": 3}
    stem, head = sd.get("conv0.0.weight"), sd.get("final.weight")
    if stem is not None and stem.ndim == 4:
        if stem.shape[0] and 64 % stem.shape[0] == 0:
            arch["feature_scale"] = 64 // stem.shape[0]
        arch["in_channels"] = int(stem.shape[1])
    if head is not None and head.ndim == 4:
        arch["n_classes"] = int(head.shape[0])
    for k in ("feature_scale", "n_classes", "in_channels"):
        if k in meta:
            arch[k] = int(meta[k])
    return arch


def _listing(title: str, items: Sequence[str], limit: int = 12) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """What a torch checkpoint file holds, loaded with ``weights_only=True``; ParserCheckpointError
    naming the file for anything else (a zip that torch did not write, such as an .npz, is refused
    before loading)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"parser checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("/data.pkl") for n in z.namelist()):
                raise ParserCheckpointError(f"{path}: a zip archive but not a torch checkpoint "
                                            f"(no data.pkl; an .npz?)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling refused, truncated zip, not a torch file ...
        raise ParserCheckpointError(f"{path}: cannot be read as a weights-only torch checkpoint "
                                    f"({type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''})") from e


def load_parser(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UNetRes18:
    """A :class:`UNetRes18` in eval mode from a checkpoint file.

    Accepts a plain state_dict, ``{'model': ...}`` / ``{'state_dict': ...}`` wrappers (ours, the
    published one, Lightning-style) and ``module.`` prefixes, always with ``weights_only=True``.
    Without metadata the architecture is inferred from the stem and head shapes. Missing, unexpected
    and wrongly shaped keys are reported together in one :class:`ParserCheckpointError`.
    """
    return load_parser_and_meta(path, map_location)[0]


def load_parser_and_meta(
        path: str | os.PathLike,
        map_location: str | torch.device = "cpu") -> tuple[UNetRes18, Mapping[str, Any]]:
    """:func:`load_parser` plus the file's top-level entries (seed, val_fraction ...; empty for a
    bare state_dict), from one read: a training checkpoint also holds the optimizer, so reading it
    twice costs."""
    path = str(path)
    obj = read_checkpoint(path, map_location)
    sd, meta = _unwrap_state_dict(obj, path)
    if "label_set" in meta and meta["label_set"] != LABEL_SET:
        raise ParserCheckpointError(f"{path}: label_set is {meta['label_set']!r}, "
                                    f"this plugin needs {LABEL_SET!r}")
    arch = _infer_architecture(sd, meta)
    try:
        model = UNetRes18(**arch)
    except FSEError as e:
        raise ParserCheckpointError(f"{path}: {e}") from e
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    shaped = [f"{k} file {list(sd[k].shape)} model {list(v.shape)}" for k, v in expected.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shaped:
        source = "metadata" if "feature_scale" in meta else "tensor shapes"
        raise ParserCheckpointError(
            f"{path}: does not fit UNetRes18(feature_scale={arch['feature_scale']}, "
            f"n_classes={arch['n_classes']}, "
            f"in_channels={arch['in_channels']}) (architecture from {source}):"
            + (_listing("missing keys", missing) if missing else "")
            + (_listing("unexpected keys", unexpected) if unexpected else "")
            + (_listing("wrongly shaped", shaped) if shaped else ""))
    model.load_state_dict(sd, strict=False)  # num_batches_tracked may be absent in old files
    return model.eval(), obj if isinstance(obj, Mapping) else {}


def _check_meta(value: Any, where: str) -> None:
    """Metadata must survive ``torch.load(weights_only=True)``; refuse anything else when saving."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint metadata key {where}[{k!r}] must be str or int")
            _check_meta(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"checkpoint metadata {where} has type {type(value).__name__}; "
                    f"only tensors, numbers, strings, None and lists/dicts of them load with "
                    f"weights_only=True")


def save_parser(model: nn.Module, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``{'model': state_dict, 'feature_scale', 'n_classes', 'in_channels',
    'label_set': 'fse25', **meta}``.

    Written to a temporary file and renamed (``common.files.atomic_output``),
    so a crash never leaves a half checkpoint under ``path``.
    """
    net = _bare(model)
    if not isinstance(net, UNetRes18):
        raise TypeError(f"save_parser expects a UNetRes18, got {type(net).__name__}")
    _check_meta(meta, "meta")
    path = Path(path)
    obj = {"model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
           "feature_scale": net.feature_scale, "n_classes": net.n_classes,
           "in_channels": net.in_channels, "label_set": LABEL_SET, "format": FORMAT, **meta}
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return path


"""Recognition backbones: a small built-in one (tests, demo) and the user's own.

The built-in ``iresnet_tiny`` (0.06 GFLOP per face) follows arcface_torch's IResNet layout (BN-conv-BN-PReLU-conv-BN
blocks, BN-dropout-FC-BN head to a 512-d embedding) at a size that trains on a CPU in minutes.
Users' models come from their arcface_torch checkout (``backbones.get_model``) or TorchScript.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.body(x) + identity


class IResNetTiny(nn.Module):
    """IResNet-style backbone for 112x112 faces; ``widths`` and ``blocks`` set its size."""

    def __init__(self, num_features: int = 512, widths: tuple[int, ...] = (8, 16, 32, 64),
                 blocks: tuple[int, ...] = (1, 1, 1, 1), dropout: float = 0.0, input_size: int = 112) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.PReLU(widths[0]))
        layers, cin = [], widths[0]
        for w, n in zip(widths, blocks):
            for i in range(n):
                layers.append(IBasicBlock(cin, w, 2 if i == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        side = input_size // 2 ** len(widths)
        self.bn2 = nn.BatchNorm2d(cin)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.layers(self.stem(x)))
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))


def iresnet_tiny(num_features: int = 512, **kwargs) -> IResNetTiny:
    return IResNetTiny(num_features=num_features, **kwargs)


def arcface_torch_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The user's arcface_torch checkout: an explicit path, else $ARCFACE_TORCH_DIR, else None."""
    path = explicit or os.environ.get("ARCFACE_TORCH_DIR")
    if not path:
        return None
    path = Path(path)
    if not (path / "backbones" / "__init__.py").is_file():
        raise FileNotFoundError(f"{path} is not an arcface_torch checkout (no backbones/__init__.py)")
    return path


def load_backbone(weights: str | os.PathLike | None, network: str = "tiny", num_features: int = 512,
                  arcface_dir: str | os.PathLike | None = None, map_location: str = "cpu") -> nn.Module:
    """A recognition backbone in eval mode.

    ``network='tiny'`` is the built-in model; ``'torchscript'`` loads a scripted file; any other
    name (r50, r100, vit_t ...) goes to arcface_torch's ``backbones.get_model`` from the checkout.
    ``weights`` is a ``model.pt`` state_dict as arcface_torch saves it (loaded with weights_only).
    """
    if network == "torchscript":
        if weights is None:
            raise ValueError("network='torchscript' needs the path of a scripted model")
        return torch.jit.load(str(weights), map_location=map_location).eval()
    if network == "tiny":
        model = iresnet_tiny(num_features=num_features)
    else:
        root = arcface_torch_dir(arcface_dir)
        if root is None:
            raise ValueError(f"network {network!r} needs an arcface_torch checkout: pass its path or set "
                             "ARCFACE_TORCH_DIR (or use network='tiny' / 'torchscript')")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        from backbones import get_model  # the user's arcface_torch
        model = get_model(network, dropout=0.0, fp16=False, num_features=num_features)
    if weights is not None:
        state = torch.load(str(weights), map_location=map_location, weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise RuntimeError(f"{weights}: weights do not fit network {network!r}: {e}") from None
    return model.eval()


def load_recognizer(weights: str | os.PathLike | None, network: str = "tiny", embedding_size: int = 512,
                    arcface_dir: str | os.PathLike | None = None, map_location: str = "cpu",
                    config_path: str | os.PathLike | None = None) -> tuple[nn.Module, torch.Tensor | None]:
    """(backbone in eval mode, classifier head weight [num_classes, embedding_size] or None).

    TEMPORARY minimal version on the cam branch (the evaluation branch brings the real one; keep
    that one at merge): a plain/``module.``/``{'state_dict'|'model': ...}`` backbone state_dict, or
    arcface_torch's ``checkpoint_gpu_R.pt`` (``state_dict_backbone`` + ``state_dict_softmax_fc.weight``).
    """
    if config_path is not None:
        raise NotImplementedError("config_path: see the evaluation branch's load_recognizer")
    if network == "torchscript" or weights is None:
        return load_backbone(weights, network, embedding_size, arcface_dir, map_location), None
    state = torch.load(str(weights), map_location=map_location, weights_only=True)
    head = None
    if isinstance(state, dict) and "state_dict_backbone" in state:
        head = state.get("state_dict_softmax_fc", {}).get("weight")
        state = state["state_dict_backbone"]
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    model = load_backbone(None, network, embedding_size, arcface_dir, map_location)
    try:
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"{weights}: weights do not fit network {network!r}: {e}") from None
    return model.eval(), head

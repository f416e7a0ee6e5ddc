"""The names a user gives FS-CAM: its methods (which backpropagate, which hook a layer), the targets
of pairs and of a rec's images, and a model's label (it names files).

Apart from the methods themselves, so that the command line offers and checks them without torch.
"""
from __future__ import annotations

from typing import Any, Sequence

from fse_plugin.common import FSEError, checks

__all__ = ["REGION_METHODS", "LIBRARY_CAMS", "PIXEL_METHODS", "GRADIENT_METHODS", "HOOKED_METHODS",
           "METHODS", "PAIR_TARGETS", "REC_TARGETS", "parse_methods", "check_model_name"]

REGION_METHODS: tuple[str, ...] = ("fscam", "ablation")
"""FS-CAM (keep one region) and region ablation (erase one region): ``regions``."""
LIBRARY_CAMS: dict[str, str] = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus",
                                "scorecam": "ScoreCAM", "xgradcam": "XGradCAM",
                                "layercam": "LayerCAM", "eigencam": "EigenCAM",
                                "hirescam": "HiResCAM", "eigengradcam": "EigenGradCAM"}
"""Our method names -> pytorch-grad-cam class names."""
PIXEL_METHODS: tuple[str, ...] = (*LIBRARY_CAMS, "rise", "groupcam")
GRADIENT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam",
                                     "eigengradcam", "groupcam")
"""Methods that backpropagate the target (their maps are noise where its gradient is zero)."""
HOOKED_METHODS: tuple[str, ...] = tuple(m for m in PIXEL_METHODS if m != "rise")
"""Methods that hook a layer of the network (an eager ``nn.Module``, not TorchScript)."""
METHODS: tuple[str, ...] = REGION_METHODS + PIXEL_METHODS

PAIR_TARGETS: tuple[str, ...] = ("pair", "self", "class")
"""The targets of verification pairs (``explain_pairs``, ``explain_bin``), the default first."""
REC_TARGETS: tuple[str, ...] = ("identity", "self", "class")
"""The targets of a rec's images (``explain_rec``), the default first."""


def parse_methods(methods: str | Sequence[str], name: str = "methods") -> list[str]:
    """A comma list or sequence of method names -> the names, each known and given once (else
    ``FSEError`` naming ``name``); upper case is read as lower case."""
    if isinstance(methods, str):
        methods = methods.lower()
    elif isinstance(methods, Sequence):
        methods = [m.lower() if isinstance(m, str) else m for m in methods]
    return checks.name_list(methods, name, METHODS)


def check_model_name(name: Any, key: str = "model name") -> str:
    """A model's name, which names its files (overlay_<name>.png): a non-empty string without path
    separators."""
    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name in (".", ".."):
        raise FSEError(f"{key}: {name!r} cannot name files (overlay_<name>.png); use letters, "
                       "digits, '-' or '_'")
    return name

"""How ``explain`` runs and writes: one settings object for the methods, the target, the files.

Every value is checked when the object is made, so a mistake is refused (``FSEError`` naming the
field) before any model runs; ``fse cam`` checks its flags the same way before it loads anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import nn

from fse_plugin.cam.names import METHODS, parse_methods
from fse_plugin.cam.stats import CI_METHODS
from fse_plugin.cam.targets import TARGETS
from fse_plugin.common import PRECISIONS, checks
from fse_plugin.erasing import check_fill

__all__ = ["REPORT_FORMATS", "ExplainSettings"]

REPORT_FORMATS: tuple[str, ...] = ("md", "html")


@dataclass(frozen=True)
class ExplainSettings:
    """Settings of one ``explain`` run.

    ``methods``: names or a comma string (``names.METHODS``); ``target``: the target kind
    (``targets.TARGETS``; None: the front door's default, 'pair' for pairs, 'identity' for recs);
    ``device``: where the models run; ``batch_size``: images per forward (FS-CAM sends
    ~batch_size/26 faces with their region copies); ``images_per_step``: faces per step of each
    method (progress and memory); ``grid``: rows of the overlay pictures; ``precision``: 'bf16' or
    'fp16' run the forwards of fscam, ablation, RISE and the targets under autocast
    (``common.mixed_precision``); ``fill``: ablation's erasure (a number in normalised space or an
    FSErasing fill name); ``seed``: random fills, RISE masks, bootstrap; ``target_layer``: the pixel
    CAMs' layer (a module or dotted name; None: the last stage); ``options``: per-method options,
    ``{method: {name: value}}`` (RISE ``n_masks``, ``s``, ``p1``; Group-CAM ``groups`` ...);
    ``ci``: 'bootstrap' or 't'; ``report``: 'md' or 'html'; ``meta``: extra entries for the
    report's settings line and the JSON's meta (the weights, the data); ``progress``: tqdm bars.
    """

    methods: tuple[str, ...] = ("fscam",)
    target: str | None = None
    device: str = "cpu"
    batch_size: int = 260
    images_per_step: int = 32
    grid: int = 8
    precision: str = "fp32"
    fill: str | float = 0.0
    seed: int = 0
    target_layer: nn.Module | str | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ci: str = "bootstrap"
    report: str = "md"
    meta: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the checked values are stored once, here
        name = type(self).__name__
        set_(self, "methods", tuple(parse_methods(self.methods, f"{name}.methods")))
        if self.target is not None:
            checks.choice(self.target, f"{name}.target", TARGETS)
        for size in ("batch_size", "images_per_step", "grid"):
            checks.count(getattr(self, size), f"{name}.{size}")
        checks.count(self.seed, f"{name}.seed", minimum=0)
        checks.choice(self.precision, f"{name}.precision", PRECISIONS)
        checks.choice(self.ci, f"{name}.ci", CI_METHODS)
        checks.choice(self.report, f"{name}.report", REPORT_FORMATS)
        set_(self, "fill", check_fill(self.fill))
        if self.options:
            checks.name_list(list(self.options), f"{name}.options", METHODS)
        set_(self, "options", {k: dict(v) for k, v in self.options.items()})
        set_(self, "meta", dict(self.meta))

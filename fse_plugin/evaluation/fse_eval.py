"""``config.fse_eval``: what an arcface_torch config asks of evaluation besides the protocol
itself - FS-CAM of the scored pairs, the semantic-occlusion benchmark, and where their masks come
from:

    config.fse_eval = dict(fscam=True, occlusion=dict(far=1e-4), parser="runs/parser/best.pt")

One schema for the patched ``eval_ijbc.py`` and ``fse eval --config``. Every rule names its key
(``config.fse_eval.occlusion.far``), and files are checked here, before any model or data is loaded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

from fse_plugin.common import FSEError, checks
from fse_plugin.evaluation.regions import occlusion_fill, occlusion_regions

__all__ = ["FSCAMOptions", "OcclusionOptions", "FSEEvalConfig", "FSCAM_PAIRS"]

KEY = "config.fse_eval"
FSCAM_PAIRS = ("same", "diff", "all")
"""Which pairs FS-CAM explains: genuine, impostor or all."""


def _cam_methods() -> tuple[str, ...]:
    # cam imports evaluation: read its registry at call time
    from fse_plugin.cam.names import METHODS
    return METHODS


def _named(key: str, rule: Callable[..., Any], *args: Any) -> Any:
    """``rule(*args)``, its ValueError or KeyError (labels' unknown class) an FSEError naming
    ``key``."""
    try:
        return rule(*args)
    except (ValueError, KeyError) as e:
        raise FSEError(f"{key}: {e.args[0] if e.args else e}") from None


def _options(value: Any, key: str, allowed: Collection[str]) -> dict[str, Any]:
    """``value`` as a dict of option names, True standing for all defaults."""
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise FSEError(f"{key}: expected True, False or a dict with keys {', '.join(allowed)}; got "
                       f"{value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise FSEError(f"{key}.{unknown[0]}: unknown key; known: {', '.join(allowed)}")
    return dict(value)


@dataclass(frozen=True)
class FSCAMOptions:
    """FS-CAM of the first ``limit`` ``pairs`` the protocol scored, with ``methods`` (``cam``'s
    registry), into ``out`` (default: ``fscam/`` in the results folder)."""
    out: str | None = None
    methods: tuple[str, ...] = ("fscam",)
    pairs: str = "same"
    limit: int = 64

    @classmethod
    def parse(cls, value: Any, key: str = f"{KEY}.fscam") -> FSCAMOptions | None:
        """None/False: off; True: defaults; a path: the output folder; a dict of the fields."""
        if value is None or value is False:
            return None
        if isinstance(value, (str, os.PathLike)):
            value = {"out": value}
        items = _options(value, key, [f for f in cls.__dataclass_fields__])
        options = cls()
        return cls(out=None if items.get("out") is None else os.fspath(items["out"]),
                   methods=tuple(checks.name_list(items.get("methods", options.methods),
                                                  f"{key}.methods", _cam_methods())),
                   pairs=checks.choice(items.get("pairs", options.pairs), f"{key}.pairs",
                                       FSCAM_PAIRS),
                   limit=checks.count(items.get("limit", options.limit), f"{key}.limit"))


@dataclass(frozen=True)
class OcclusionOptions:
    """The semantic-occlusion benchmark: ``classes`` one at a time and ``groups`` erased in the
    probe images with ``fill`` (seeded by ``seed``); IJB reports TAR at ``far``."""
    classes: Any = None
    groups: Any = None
    fill: str | float = "random"
    seed: int = 0
    far: float = 1e-4
    regions: tuple[tuple[str, list[int]], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def parse(cls, value: Any, key: str = f"{KEY}.occlusion") -> OcclusionOptions | None:
        """None/False: off; True: defaults; a dict of the fields (``regions`` excepted)."""
        if value is None or value is False:
            return None
        items = _options(value, key, ("classes", "groups", "fill", "seed", "far"))
        options = cls()
        classes, groups = items.get("classes"), items.get("groups")
        _named(f"{key}.classes", occlusion_regions, classes, "none")
        regions = _named(f"{key}.groups", occlusion_regions, classes, groups)
        return cls(classes=classes, groups=groups,
                   fill=occlusion_fill(items.get("fill", options.fill), f"{key}.fill"),
                   seed=checks.count(items.get("seed", options.seed), f"{key}.seed", minimum=0),
                   far=checks.open_fraction(items.get("far", options.far), f"{key}.far"),
                   regions=tuple(regions))


@dataclass(frozen=True)
class FSEEvalConfig:
    """A checked ``config.fse_eval``. ``parser`` (a checkpoint), ``masks`` (a ``.npy``, one mask per
    evaluated image) or ``mask_cache`` (a cache dir) give the masks FS-CAM and occlusion need.
    ``flags``: the other keys, defaults of ``fse eval``'s flags by their names (``fse eval`` only;
    the script refuses them)."""
    fscam: FSCAMOptions | None = None
    occlusion: OcclusionOptions | None = None
    parser: Path | None = None
    masks: Path | None = None
    mask_cache: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)

    KEYS = ("fscam", "occlusion", "parser", "masks", "mask_cache")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], resolve: Callable[[Any], Path] = Path,
                    flags: Collection[str] = ()) -> FSEEvalConfig:
        """Check ``cfg['fse_eval']`` (absent: nothing asked). ``resolve`` turns a path written in
        the config into a path from here (relative to the arcface_torch tree); ``flags`` are other
        accepted keys."""
        entry = cfg.get("fse_eval")
        if entry is None:
            return cls()
        if not isinstance(entry, Mapping):
            raise FSEError(f"{KEY}: expected a dict(...), got {entry!r}")
        unknown = sorted(set(entry) - set(cls.KEYS) - set(flags))
        if unknown:
            raise FSEError(f"{KEY}.{unknown[0]}: unknown key; known: {', '.join(cls.KEYS)}"
                           f"{' and the flags of fse eval' if flags else ''}")

        def path(name: str, kind: str | None) -> Path | None:
            if entry.get(name) is None:
                return None
            if not isinstance(entry[name], (str, os.PathLike)):
                raise FSEError(f"{KEY}.{name}: expected a path, got {entry[name]!r}")
            found = resolve(entry[name])
            return checks.existing_dir(found, f"{KEY}.{name}") if kind is None else checks.existing_file(
                found, f"{KEY}.{name}", kind)

        return cls(fscam=FSCAMOptions.parse(entry.get("fscam")),
                   occlusion=OcclusionOptions.parse(entry.get("occlusion")),
                   parser=path("parser", "checkpoint"), masks=path("masks", "npy"),
                   mask_cache=path("mask_cache", None),
                   flags={k: v for k, v in entry.items() if k not in cls.KEYS})

    @property
    def wants_masks(self) -> bool:
        return self.fscam is not None or self.occlusion is not None

    def mask_source(self) -> str | None:
        """The one key that gives the masks (None if none does); two are refused."""
        given = [k for k in ("masks", "mask_cache", "parser") if getattr(self, k) is not None]
        if len(given) > 1:
            raise FSEError(f"{KEY}: {' and '.join(given)} both give masks; keep one")
        return given[0] if given else None

"""``config.fse``, the one line that turns FSErasing on in arcface_torch, and its one schema.

``FSEConfig.from_mapping`` checks every key (types, ranges, class names and ids, the n_erase forms,
the fill, the mask cache's path) and raises an FSEError naming the key, e.g. ``config.fse.n_erase:
...``. The dataset reads ``config.fse`` through it, ``FSErasing``'s constructor checks its arguments
through it (errors then name ``FSErasing.<argument>``), and so do the CLI and the study. A string is
never read as a number or a class id.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fse_plugin import maskcache
from fse_plugin.common import FSEError, checks
from fse_plugin.labels import CLASSES, NUM_CLASSES, class_ids, parse_class_list

__all__ = ["FILLS", "FSEConfig", "Fill", "NErase", "check_fill"]

FILLS: tuple[str, ...] = ("random", "random_1", "random_mix", "random_mix_sample", "region_mean",
                          "image_mean")
"""The named fills (``erasing.erase`` says what each does); a number, a constant in the normalised
space, is a fill too."""
Fill = str | float
NErase = int | tuple[int, int] | list[str]


def check_fill(fill: Any, name: str = "fill") -> Fill:
    """``fill`` if it is one of ``FILLS``, or a finite number as a float; else FSEError naming
    ``name``.

    Example::

        >>> check_fill("random_1"), check_fill(0)
        ('random_1', 0.0)
        >>> check_fill("blue", "--fill")
        FSEError: --fill: unknown fill 'blue'; use one of random, random_1, ... or a number
    """
    if isinstance(fill, str):
        if fill not in FILLS:
            raise FSEError(f"{name}: unknown fill {fill!r}; use one of {', '.join(FILLS)} or a "
                           "number")
        return fill
    if isinstance(fill, numbers.Real) and not isinstance(fill, bool):
        return checks.number(fill, name)
    raise FSEError(f"{name}: must be one of {', '.join(FILLS)} or a finite number, got {fill!r}")


@dataclass(frozen=True)
class FSEConfig:
    """``config.fse``, checked and normalised (``from_mapping``); the defaults are the reference
    FSErasing.

    masks: the mask cache directory (None where no rec is known yet); p: probability that a sample
    is erased; n_erase: how many regions, an int, a ``(lo, hi)`` range drawn uniformly (inclusive),
    or the names of classes erased every time; classes: ids to draw from (None: all 25, background
    included); present_only: draw only among the classes in the sample's mask; fill: see
    ``erasing.erase``; flip: horizontal flip probability; verify: decode every mask of the cache at
    start-up.

    Example::

        >>> cfg = FSEConfig.from_mapping(dict(p=0.5, n_erase=(1, 2), classes="nose, mouth"))
        >>> cfg.p, cfg.n_erase, cfg.classes
        (0.5, (1, 2), [10, 17])
    """

    masks: str | None = None
    p: float = 1.0
    n_erase: NErase = 1
    classes: list[int] | None = None
    present_only: bool = False
    fill: Fill = "random"
    flip: float = 0.5
    verify: bool = False
    prefix: str = field(default="config.fse", repr=False, compare=False)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, rec_dir: str | os.PathLike | None = None,
                     prefix: str = "config.fse") -> FSEConfig:
        """Check ``mapping`` (the keys above, all optional) and return it normalised.

        rec_dir: the rec the cache belongs to; ``masks`` defaults to ``<rec_dir>/fse_masks`` and
        must exist. prefix: how errors name the keys (``config.fse.p``; ``FSErasing.p`` for the
        class).
        """
        if not isinstance(mapping, Mapping):
            raise FSEError(f"{prefix} must be a dict such as dict(masks=..., p=0.5), got "
                           f"{mapping!r}")
        known = [f for f in cls.__dataclass_fields__ if f != "prefix"]
        unknown = sorted(set(mapping) - set(known), key=str)
        if unknown:
            raise FSEError(f"{prefix}.{unknown[0]}: unknown key; known keys: {', '.join(known)}")
        name = {k: f"{prefix}.{k}" for k in known}
        get = {**{k: getattr(cls, k) for k in known}, **mapping}.__getitem__
        classes = (None if get("classes") is None
                   else parse_class_list(get("classes"), name["classes"]))
        n_erase = _n_erase(get("n_erase"), name["n_erase"])
        _check_counts(n_erase, classes, name)
        return cls(masks=_masks_path(get("masks"), rec_dir, name["masks"]),
                   p=checks.probability(get("p"), name["p"]), n_erase=n_erase, classes=classes,
                   present_only=_bool(get("present_only"), name["present_only"]),
                   fill=check_fill(get("fill"), name["fill"]),
                   flip=checks.probability(get("flip"), name["flip"]),
                   verify=_bool(get("verify"), name["verify"]), prefix=prefix)

    @property
    def fixed(self) -> list[int] | None:
        """Ids of the classes erased every time (n_erase as a list), else None."""
        return class_ids(self.n_erase) if isinstance(self.n_erase, list) else None

    @property
    def pool(self) -> list[int]:
        """Ids of the classes the draw picks from."""
        return list(range(NUM_CLASSES)) if self.classes is None else list(self.classes)

    @property
    def count_range(self) -> tuple[int, int]:
        """(lo, hi): how many classes a draw erases, inclusive."""
        if isinstance(self.n_erase, list):
            return len(self.n_erase), len(self.n_erase)
        return self.n_erase if isinstance(self.n_erase, tuple) else (self.n_erase, self.n_erase)

    def as_dict(self) -> dict[str, Any]:
        """The normalised keys as a plain dict (what ``from_mapping`` accepts back)."""
        out = asdict(self)
        del out["prefix"]
        return out


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise FSEError(f"{name}: must be True or False, got {value!r}")
    return value


def _n_erase(value: Any, name: str) -> NErase:
    """An int count, a (lo, hi) tuple of ints, or class names (a list, or a comma string of
    names)."""
    if checks.is_integer(value):
        return checks.count(value, name, minimum=0)
    if isinstance(value, tuple) and len(value) == 2 and all(checks.is_integer(v) for v in value):
        lo, hi = (checks.count(v, name, minimum=0) for v in value)
        if lo > hi:
            raise FSEError(f"{name}: range {value!r} must satisfy 0 <= lo <= hi")
        return lo, hi
    if isinstance(value, str) and any(t.strip().lstrip("+-").isdigit() for t in value.split(",")):
        raise FSEError(f"{name}: {value!r} is a string, not a count or a class: write a number of "
                       f"regions as an int (n_erase={value.strip()}) or the classes erased every "
                       "time as a list of names")
    if isinstance(value, list) and any(checks.is_integer(v) for v in value):
        raise FSEError(f"{name}: {value!r} holds ints: for a range of counts write a tuple, e.g. "
                       "(1, 3); for classes erased every time write their names, e.g. ['nose', "
                       "'mouth']")
    if isinstance(value, (list, str)):
        return [CLASSES[i] for i in parse_class_list(value, name)]
    raise FSEError(f"{name}: must be an int (how many regions), a (lo, hi) tuple of ints or a list "
                   f"of class names erased every time; got {type(value).__name__} {value!r}")


def _check_counts(n_erase: NErase, classes: list[int] | None, name: dict[str, str]) -> None:
    if isinstance(n_erase, list):
        if classes is not None:
            raise FSEError(f"{name['n_erase']}: lists the classes erased every time, so "
                           f"{name['classes']} (classes to draw from) cannot be given too; drop "
                           "one of them")
        return
    hi = n_erase[1] if isinstance(n_erase, tuple) else n_erase
    pool = NUM_CLASSES if classes is None else len(classes)
    if hi > pool:
        raise FSEError(f"{name['n_erase']}: {hi} regions exceeds the {pool} classes to draw from")


def _masks_path(value: Any, rec_dir: str | os.PathLike | None, name: str) -> str | None:
    """The mask cache's path, existing; ``<rec_dir>/fse_masks`` when not given (None without a
    rec)."""
    if value is None:
        if rec_dir is None:
            return None
        value = maskcache.default_cache_path(rec_dir)
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise FSEError(f"{name}: must be the path of a mask cache directory, got {value!r}")
    masks = Path(value).expanduser()
    if not masks.exists():
        cmd = maskcache.rebuild_command(masks, None if rec_dir is None else str(rec_dir))
        raise FSEError(f"{name}: no mask cache at {masks}; build it with: {cmd}")
    return str(checks.existing_dir(masks, name))

"""What a study compares: training without augmentation, with FSErasing, with rectangle erasing.

A variant is spelled ``NAME`` or ``KIND:key=value,key=value``:

- ``off``: no erasing (upstream's pipeline: flip only);
- ``fse``: FSErasing with ``p=0.5`` (the README's config line); ``fse:p=1.0,n_erase=2`` sets any
  ``config.fse`` key but ``masks`` (the study's cache is used);
- ``random_erasing``: ``torchvision.transforms.RandomErasing()`` with its defaults (p=0.5, area
  0.02-0.33 of the image, aspect 0.3-3.3, value 0), the rectangle erasing a user would pick instead
  and the paper's own baseline, applied where FSErasing erases: on the normalised tensor after the
  flip (``FSEMXFaceDataset(transform=...)``); ``random_erasing:p=1.0`` sets its arguments.

Values are Python literals (``0.5``, ``(1, 3)``, ``'random_mix'``).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from fse_plugin.common import FSEError
from fse_plugin.study.presets import DEFAULT_VARIANTS

__all__ = ["DEFAULT_VARIANTS", "REFERENCE", "Variant", "parse_variant", "parse_variants"]

REFERENCE = "off"
"""The variant every other is compared with, seed by seed."""
_RANDOM_ERASING_KEYS = ("p", "scale", "ratio", "value", "inplace")


class VariantError(FSEError):
    """A bad ``--variants`` entry; the message names it."""


@dataclass(frozen=True)
class Variant:
    """One training recipe: ``fse`` is ``config.fse`` without ``masks`` (None: no FSErasing);
    ``random_erasing`` the keyword arguments of torchvision's RandomErasing (None: not used)."""
    name: str
    fse: dict[str, Any] | None = None
    random_erasing: dict[str, Any] | None = field(default=None)

    @property
    def slug(self) -> str:
        """The name as an identifier, for folder and config module names."""
        return re.sub(r"\W+", "_", self.name).strip("_")

    def fse_config(self, masks: str) -> dict[str, Any] | None:
        """``config.fse`` of this variant with the study's mask cache."""
        return None if self.fse is None else {"masks": str(masks), **self.fse}

    def transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The transform applied last on the normalised training tensor."""
        if self.random_erasing is None:
            return None
        from torchvision.transforms import RandomErasing
        return RandomErasing(**self.random_erasing)

    def __repr__(self) -> str:
        return f"Variant({self.name!r}, fse={self.fse}, random_erasing={self.random_erasing})"


def _options(spec: str, text: str) -> dict[str, Any]:
    """``key=value,...`` read as the keyword arguments of a Python call, so commas inside tuples and
    quoted strings (``n_erase=(1, 3)``, ``classes='nose,mouth'``) stay in their value."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise VariantError(f"--variants {spec!r}: expected key=value,... after the colon") from None
    names = [k.arg for k in call.keywords]
    if call.args or not names or None in names:
        raise VariantError(f"--variants {spec!r}: expected key=value,... after the colon")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise VariantError(f"--variants {spec!r}: {repeated[0]} given twice")
    options: dict[str, Any] = {}
    for k in call.keywords:
        try:
            options[k.arg] = ast.literal_eval(k.value)
        except ValueError:
            raise VariantError(f"--variants {spec!r}: {k.arg}={ast.unparse(k.value)} is not a "
                               f"Python literal (quote strings: fill='random_mix')") from None
    return options


def parse_variant(spec: str) -> Variant:
    """``off``, ``fse[:key=value,...]`` or ``random_erasing[:key=value,...]`` -> Variant
    (checked)."""
    from fse_plugin.fseconfig import FSEConfig
    kind, colon, rest = spec.strip().partition(":")
    options = _options(spec, rest) if colon else {}
    if kind == "off":
        if options:
            raise VariantError(f"--variants {spec!r}: 'off' takes no options")
        return Variant("off")
    if kind == "fse":
        if "masks" in options:
            raise VariantError(f"--variants {spec!r}: masks is the study's own cache; leave it out")
        try:  # every key checked by config.fse's own schema (the cache is the study's, made later)
            FSEConfig.from_mapping({"p": 0.5, **options})
        except FSEError as e:
            raise VariantError(f"--variants {spec!r}: {e}") from None
        return Variant(spec.strip(), fse={"p": 0.5, **options})
    if kind == "random_erasing":
        bad = sorted(set(options) - set(_RANDOM_ERASING_KEYS))
        if bad:
            raise VariantError(f"--variants {spec!r}: unknown RandomErasing argument {bad[0]!r}; "
                               f"known: {', '.join(_RANDOM_ERASING_KEYS)}")
        variant = Variant(spec.strip(), random_erasing=options)
        try:
            variant.transform()
        except (ValueError, TypeError) as e:
            raise VariantError(f"--variants {spec!r}: {e}") from None
        return variant
    raise VariantError(f"--variants: unknown variant {spec!r}; use off, fse[:key=value,...] or "
                       "random_erasing[:key=value,...]")


def parse_variants(specs: list[str] | tuple[str, ...]) -> list[Variant]:
    """Parse and check a list of variants: names unique, the reference ``off`` included (first)."""
    variants = [parse_variant(s) for s in specs]
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise VariantError(f"--variants: {dup[0]!r} given twice")
    if REFERENCE not in names:
        raise VariantError(f"--variants must include {REFERENCE!r}: every other is compared with "
                           f"it, seed by seed")
    return sorted(variants, key=lambda v: v.name != REFERENCE)

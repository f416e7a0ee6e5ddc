"""What replaces the erased pixels: one small function per fill (``fseconfig.FILLS``), over the
erased pixels of a batch.

Each fill is written once, against the few array operations an ``ErasedPixels`` provides; the
numpy engine (the CPU fast path the dataset runs) and the torch engine (any device, autograd)
each provide them. Draws always come from a ``torch.Generator`` in the same order and shapes, so
for one seed both engines write the same random values (the mean fills may differ in the last bit:
numpy and torch sum in different orders).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import torch

from fse_plugin.fseconfig import Fill

__all__ = ["PER_CLASS", "READS_IMAGES", "ErasedPixels", "fill_values"]

Array = Any  # numpy.ndarray in the numpy engine, torch.Tensor in the torch engine


class ErasedPixels(Protocol):
    """The erased pixels of a batch, as a fill sees them (each engine has its own).

    ``R`` images have classes selected (``K`` columns of selection), ``N`` pixels are erased, in
    (image, pixel) order, over ``C`` channels. ``row`` [N] is each pixel's image among the R and
    ``cls`` [N] its class.
    """

    C: int
    R: int
    K: int
    N: int
    row: Array
    cls: Array

    def randn(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Array: ...

    def rand(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Array: ...

    def where(self, cond: Array, a: Array, b: Array) -> Array: ...

    def full(self, value: float) -> Array:
        """[C, N] of ``value``."""

    def means(self) -> Array:
        """[R, C]: each image's mean colour before erasing."""

    def group_means(self, group: Array, n_groups: int) -> Array:
        """[C, N]: per pixel, the mean value of the pixels of its group (sums in float64)."""


def _colours(px: ErasedPixels, generator: torch.Generator | None) -> Array:
    """One N(0, 1) colour per (image, class), per pixel: [C, N]."""
    return px.randn((px.R, px.K, px.C), generator)[px.row, px.cls].T


def _random(px: ErasedPixels, generator: torch.Generator | None) -> Array:
    return px.randn((px.C, px.N), generator)  # the reference's default: per pixel, no bookkeeping


def _random_mix(px: ErasedPixels, generator: torch.Generator | None) -> Array:
    coin = px.rand((px.R, px.K), generator) < 0.5  # the reference tosses per erased region
    noise = px.randn((px.C, px.N), generator)
    return px.where(coin[px.row, px.cls], noise, _colours(px, generator))


def _random_mix_sample(px: ErasedPixels, generator: torch.Generator | None) -> Array:
    coin = px.rand((px.R, 1), generator) < 0.5  # one toss per image
    noise = px.randn((px.C, px.N), generator)
    return px.where(coin[px.row, 0], noise, _colours(px, generator))


def _region_mean(px: ErasedPixels, generator: torch.Generator | None) -> Array:
    return px.group_means(px.row * px.K + px.cls, px.R * px.K)


def _image_mean(px: ErasedPixels, generator: torch.Generator | None) -> Array:
    return px.means()[px.row].T


# keys: fseconfig.FILLS
_TABLE: dict[str, Callable[[ErasedPixels, torch.Generator | None], Array]] = {
    "random": _random,  # per-pixel N(0, 1)
    "random_1": _colours,  # one N(0, 1) colour per region
    "random_mix": _random_mix,  # per region, either of the two (the reference)
    "random_mix_sample": _random_mix_sample,  # the same coin once per image
    "region_mean": _region_mean,  # each region's own mean colour
    "image_mean": _image_mean,  # the image's mean colour
}
# read ErasedPixels.cls
PER_CLASS = frozenset({"random_1", "random_mix", "random_mix_sample", "region_mean"})
# the fills whose values depend on the images
READS_IMAGES = frozenset({"region_mean", "image_mean"})


def fill_values(fill: Fill, px: ErasedPixels, generator: torch.Generator | None) -> Array:
    """[C, N] values of the erased pixels for ``fill`` (one of ``fseconfig.FILLS`` or a number,
    checked)."""
    if isinstance(fill, str):
        return _TABLE[fill](px, generator)
    return px.full(fill)

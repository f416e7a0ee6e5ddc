"""What can go wrong with a mask cache; every message names the file and says how to rebuild."""
from __future__ import annotations

import os

from fse_plugin.common.errors import FSEError

__all__ = ["CacheError", "CacheMismatchError", "DamagedEntryError", "UnknownKeyError",
           "without_hint"]


class CacheError(FSEError):
    """A mask cache is missing, incomplete, damaged or unreadable;
    the message says how to rebuild."""


class CacheMismatchError(CacheError):
    """A mask cache belongs to another rec, parser or setting than the one it is used with."""


class DamagedEntryError(CacheError):
    """One mask (``key``) or its whole chunk file (``path``) failed its checksum or a consistency
    check.

    Raised by ``MaskCache.get`` instead of ever returning a wrong mask, so a training loop can serve
    that one sample un-erased and carry on. ``key`` is None when no key was asked for
    (a whole-cache check).
    """

    def __init__(self, message: str, key: int | None = None, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.key, self.path = key, path

    def __reduce__(self):  # keep key and path across DataLoader worker pickling
        return type(self), (str(self), self.key, self.path)


class UnknownKeyError(CacheError, KeyError):
    """``get(key)`` of a key the cache has no row for (also a KeyError, as a mapping lookup)."""

    __str__ = BaseException.__str__  # KeyError would repr() the message


def without_hint(error: CacheError) -> str:
    """The message without its "Rebuild it with: ..." tail:
    one item of a list of problems that ends in one hint."""
    return str(error).split(" Rebuild it")[0]

"""The user-facing errors of evaluation inputs: a bad verification pack, bad IJB meta files or
images."""
from __future__ import annotations

from fse_plugin.common import FSEError

__all__ = ["PackError", "MetaError"]


class PackError(FSEError):
    """A verification pack that is malformed or unsafe; the message names the file and the item."""


class MetaError(FSEError):
    """IJB meta files or images that are missing or disagree; the message names the file and the
    row."""

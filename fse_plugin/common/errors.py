"""The one base class of errors a user can cause and fix (a bad file, flag or config key)."""
from __future__ import annotations

__all__ = ["FSEError"]


class FSEError(ValueError):
    """A problem with the user's input. The message names the file, key or flag and what to do;
    the CLI prints it as one line (``fse <command>: error: ...``, exit status 2) without a
    traceback."""

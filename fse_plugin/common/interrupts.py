"""Ctrl-C with child processes: the parent handles it and stops its children; no child prints a traceback.

A terminal's Ctrl-C sends SIGINT to every process of the foreground group, children included. A child
that has not yet set SIGINT aside when it arrives (it is still starting) dies with a traceback of its
own. So children are started with SIGINT blocked (``sigint_deferred``: fork and exec keep the signal
mask) and their first act is ``child_ignores_sigint``; the parent's own Ctrl-C meanwhile waits in
the block and is delivered when it ends, never lost.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

__all__ = ["sigint_deferred", "child_ignores_sigint"]

_MASKABLE = hasattr(signal, "pthread_sigmask")


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Block SIGINT in this thread while the block starts child processes; a Ctrl-C that arrives
    meanwhile raises KeyboardInterrupt here when the block ends."""
    if not _MASKABLE:
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def child_ignores_sigint() -> None:
    """The first thing a child process does: ignore SIGINT (a pending one is dropped), then unblock it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _MASKABLE:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

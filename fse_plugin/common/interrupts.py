"""Ctrl-C with child processes: the parent handles it and stops its children; no child prints a
traceback.

A terminal's Ctrl-C sends SIGINT to every process of the foreground group, children included. A
child that has not yet set SIGINT aside when it arrives (it is still starting) dies with a traceback
of its own, and a parent interrupted halfway through starting a pool can hang stopping it. So
children are started inside ``sigint_deferred``: they are born with SIGINT blocked (fork and exec
keep the signal mask) and their first act is ``child_ignores_sigint``; the parent's own Ctrl-C
meanwhile is held and delivered when the block ends, never lost.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["sigint_deferred", "child_ignores_sigint"]

_MASKABLE = hasattr(signal, "pthread_sigmask")


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold SIGINT while the block starts child processes; a Ctrl-C that came meanwhile is delivered
    (to the handler in place before) when the block ends.

    Two parts: this thread blocks SIGINT, so the children it forks or spawns are born with it
    blocked; and (in the main thread) the Python handler only records it, since another thread of
    this process (an OpenMP worker, say) may take the signal and Python would then run the handler
    here, mid-block.
    """
    caught: list[int] = []
    swap = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum)) if swap
                else None)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if _MASKABLE else None
    try:
        yield
    finally:
        if old_mask is not None:
            # a pending SIGINT reaches the recorder now
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if swap:
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
            if caught:
                # to the handler in place before: KeyboardInterrupt here
                signal.raise_signal(signal.SIGINT)


def child_ignores_sigint() -> None:
    """The first thing a child process does: ignore SIGINT (a pending one is dropped), then unblock
    it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _MASKABLE:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

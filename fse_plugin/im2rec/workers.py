"""Worker processes for dataset preparation: an ordered map over batches with a bounded window.

Results come back in submission order (the rec is written in list order, whatever the worker count),
at most ``window`` batches are in flight (bounded memory however far the writer lags), and workers
ignore Ctrl-C: the parent handles it, lets the running batches finish and stops them, so no child
prints a traceback.
"""
from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

__all__ = ["ordered_map"]


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _as_children_start() -> Iterator[None]:
    """What a forked child must inherit: SIGINT ignored from its first instruction (no window before
    an initializer runs) and OpenCV at one thread. Set here, not in the child: a forked child that
    reconfigures the thread pool it inherited waits forever on the parent's pool threads, which do
    not exist in it; one process per core needs no pool anyway."""
    import cv2
    threads = cv2.getNumThreads()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        signal.signal(signal.SIGINT, previous)


def _start(workers: int) -> ProcessPoolExecutor:
    """All worker processes, started now: forked where the platform can (instant, nothing
    re-imported)."""
    fork = "fork" in multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_ctrl_c)
    with _as_children_start():
        pool.submit(int).result()  # with fork, the first job starts every process
    return pool


def ordered_map(fn: Callable[[Any], Any], batches: Iterable[Any], workers: int,
                window: int | None = None) -> Iterator[tuple[Any, Any]]:
    """(batch, fn(batch)) for each batch, in order; ``workers`` 1 runs here, more in worker
    processes.

    ``fn`` must be picklable (a module-level function or a small object with ``__call__``); at most
    ``window`` (default 2 * workers + 2) batches are submitted and not yet taken.
    """
    if workers <= 1:
        for batch in batches:
            yield batch, fn(batch)
        return
    window = window or 2 * workers + 2
    pool = _start(workers)
    pending: deque[tuple[Any, Future]] = deque()
    try:
        for batch in batches:
            pending.append((batch, pool.submit(fn, batch)))
            if len(pending) >= window:
                batch, future = pending.popleft()
                yield batch, future.result()
        while pending:
            batch, future = pending.popleft()
            yield batch, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

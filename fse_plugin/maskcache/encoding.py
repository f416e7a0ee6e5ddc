"""The encoding part of a cache build: encode processes,
and the assembly of their batches into chunk files.

Masks go to the encode processes one batch (one array) per job and come back as one joined byte
string with lengths and crc32s (``chunk.Entries``), not as a list of per-mask objects; each chunk is
written by a thread as soon as all of its batches are back, so the main loop never waits on a disk.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from fse_plugin.common.interrupts import child_ignores_sigint, sigint_deferred
from fse_plugin.maskcache.build import CacheWriter
from fse_plugin.maskcache.chunk import Entries
from fse_plugin.maskcache.codec import encode_batch

__all__ = ["encoders", "encode_job", "ChunkAssembler"]


def encode_job(masks: np.ndarray, valid: np.ndarray) -> tuple[Entries, np.ndarray, np.ndarray]:
    """Encode process job: one batch's entries joined, and its class counts."""
    blobs, pixels, images = encode_batch(masks, valid)
    return Entries.of(blobs), pixels, images


class _InlineExecutor(Executor):
    """``encode_workers=0``: encode in the main process (tests, tiny jobs)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except Exception as e:  # delivered by .result(), as a pool would
            f.set_exception(e)
        return f


def _encoder_start(parent: int) -> None:
    """Encode process start: ignore Ctrl-C (the parent handles it) and quit once the parent is gone,
    so a kill -9 leaves no orphan waiting on its queue."""
    import threading
    child_ignores_sigint()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def encoders(workers: int) -> Executor:
    """The encode processes, all started now (before the build loop starts its decode processes and
    threads)."""
    if workers <= 0:
        return _InlineExecutor()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    # fork where there is one (instant, no __main__ re-import as with spawn): the workers only run
    # numpy and zlib, never CUDA or OpenMP, the two things a forked child of this process must
    # not touch.
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                      else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_encoder_start,
                               initargs=(os.getpid(),))
    try:
        # the processes are born deaf to Ctrl-C; a Ctrl-C meanwhile lands after
        with sigint_deferred():
            pool.submit(int).result()  # with fork, the first job starts every process
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool


class ChunkAssembler:
    """Collects encoded batches in chunk order; hands each complete chunk to a writer thread.

    At most ``max_pending`` batches wait for their encoding (bounded memory when encoding lags) and
    at most two chunks for their write; an error of either surfaces here, in the main process.
    """

    def __init__(self, writer: CacheWriter, keys: np.ndarray, max_pending: int):
        self.cache, self.spec, self.keys, self.max_pending = writer, writer.spec, keys, max_pending
        self.parts: deque = deque()  # (chunk, row_start, rows, errors, future)
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="chunk-writer")
        self.writes: deque = deque()
        self.written = 0

    def add(self, row_start: int, rows: int, errors: list[tuple[int, str]], future: Future) -> None:
        self.parts.append((row_start // self.spec.chunk_size, row_start, rows, errors, future))
        while sum(not p[4].done() for p in self.parts) > self.max_pending:
            next(p[4] for p in self.parts if not p[4].done()).result()
        self.flush(final=False)

    def flush(self, final: bool) -> None:
        """Write every leading chunk whose batches are all in
        (and, unless ``final``, all encoded)."""
        while self.parts:
            c = self.parts[0][0]
            start, stop = self.spec.chunk_rows(c)
            mine = [p for p in self.parts if p[0] == c]
            if (sum(p[2] for p in mine) < stop - start
                    or not (final or all(p[4].done() for p in mine))):
                break
            results = [p[4].result() for p in mine]
            errors = [(int(self.keys[s + i]), reason)
                      for _, s, _, errs, _ in mine for i, reason in errs]
            self.writes.append(self.writer.submit(self.cache.write_chunk, c,
                                                  Entries.join([r[0] for r in results]), errors,
                                                  sum(r[1] for r in results),
                                                  sum(r[2] for r in results)))
            for _ in mine:
                self.parts.popleft()
        while self.writes and (final or len(self.writes) > 2 or self.writes[0].done()):
            self.writes.popleft().result()  # a failed write raises here
            self.written += 1
        if final and self.parts:  # a bug of the batch plan: never write a chunk short of rows
            raise RuntimeError(f"chunk {self.parts[0][0]} is missing batches")

    def close(self) -> None:
        self.writer.shutdown(wait=True, cancel_futures=True)

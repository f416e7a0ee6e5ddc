"""Decode processes for a cache build: whole batches of records read and decoded into a ring of
shared arrays.

Each worker fills a slot of one preallocated shared uint8 ``[slots, B, H, W, 3]`` array and sends
back only ``(batch, slot, errors)``. Compared with a DataLoader that returns one new shared tensor
per batch, nothing is allocated, pickled or page-faulted per batch, which on small faces is a large
share of a worker's time (benchmarks/README.md, "## maskcache"). Slot ownership is explicit, so a
slot is never written while read: free -> a worker (decoding) -> the main process (until it takes
the next batch) -> free.
"""
from __future__ import annotations

import mmap
import multiprocessing
import os
import queue
import struct
import warnings
from collections import deque
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from fse_plugin import recordio
from fse_plugin.common.interrupts import child_ignores_sigint, sigint_deferred

__all__ = ["Batch", "BatchDecoder", "decode_batch"]


class Batch(NamedTuple):
    start: int  # first row
    # uint8 [n,H,W,3], zeros where an image failed; valid until the next batch is taken
    images: np.ndarray
    errors: list  # [(i, reason)] of the rows without an image


def decode_batch(reader: recordio.RecordReader, keys: Sequence[int],
                 out: np.ndarray) -> list[tuple[int, str]]:
    """Read and decode the records ``keys`` into ``out[:len(keys)]``;
    (i, reason) of those that fail (zeroed)."""
    errors = []
    for i, key in enumerate(keys):
        try:
            reader.read_image(key, out=out[i])
        except (ValueError, struct.error) as e:
            errors.append((i, f"{type(e).__name__}: {e}"))
            out[i] = 0
    return errors


def _worker(reader: recordio.RecordReader, keys: np.ndarray, batches: Sequence[tuple[int, int]],
            ring: np.ndarray, jobs: multiprocessing.Queue, results: multiprocessing.Queue,
            parent: int) -> None:
    """Decode process: Ctrl-C is the parent's; exit when told, or when the parent is gone."""
    child_ignores_sigint()
    while True:
        try:
            job = jobs.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if job is None:
            return
        b, slot = job
        start, stop = batches[b]
        try:
            errors = decode_batch(reader, keys[start:stop].tolist(), ring[slot])
            results.put((b, slot, errors, None))
        except Exception as e:  # a bug, not a bad record: the main process raises it
            results.put((b, slot, [], f"{type(e).__name__}: {e}"))
            return


class BatchDecoder:
    """Iterate ``Batch``es of ``batches`` (row ranges of ``keys``), in order,
    decoded by ``workers`` processes.

    ``workers=0`` decodes in this process. A batch's ``images`` stay valid until the next one is
    taken. Worker processes are forked (they inherit the reader and the ring); without fork,
    decoding runs here.
    """

    def __init__(self, reader: recordio.RecordReader, keys: np.ndarray,
                 batches: Sequence[tuple[int, int]], height: int, width: int, workers: int,
                 prefetch: int = 2):
        if workers and "fork" not in multiprocessing.get_all_start_methods():
            warnings.warn("no fork on this platform: decoding in the main process", RuntimeWarning,
                          stacklevel=2)
            workers = 0
        self.reader, self.keys, self.batches, self.workers = reader, keys, list(batches), workers
        slots = max(2, workers * prefetch + 1) if workers else 1
        biggest = max((e - s for s, e in self.batches), default=0)
        # shared with forked children
        self._mm = mmap.mmap(-1, max(1, slots * biggest * height * width * 3))
        self.ring = np.frombuffer(self._mm, np.uint8, slots * biggest * height * width * 3).reshape(
            slots, biggest, height, width, 3)
        self._procs: list = []
        if workers:
            self._start(workers)

    def _start(self, workers: int) -> None:
        """Fork the workers with OpenCV set to one thread, then give this process its threads back.

        One thread per worker: a pool in each worker of a many-core machine makes every small
        cvtColor wait on the others. Set here, not in the child: a forked child that reconfigures
        the pool it inherited waits forever on the parent's idle pool threads, which do not exist in
        it.
        """
        import cv2
        ctx = multiprocessing.get_context("fork")
        self._jobs, self._results = ctx.Queue(), ctx.Queue()
        self._procs = [ctx.Process(target=_worker, daemon=True, name=f"fse-decode-{i}",
                                   args=(self.reader, self.keys, self.batches, self.ring,
                                         self._jobs, self._results, os.getpid()))
                       for i in range(workers)]
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            # born deaf to Ctrl-C (see common.interrupts); a Ctrl-C meanwhile lands after
            with sigint_deferred():
                for p in self._procs:
                    p.start()
        except BaseException:
            self.close()
            raise
        finally:
            cv2.setNumThreads(threads)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        if not self.workers:
            for start, stop in self.batches:
                yield Batch(start, self.ring[0, :stop - start],
                            decode_batch(self.reader, self.keys[start:stop].tolist(), self.ring[0]))
            return
        free, ready, sent = deque(range(len(self.ring))), {}, 0
        for b, (start, stop) in enumerate(self.batches):
            while sent < len(self.batches) and free:
                self._jobs.put((sent, free.popleft()))
                sent += 1
            while b not in ready:
                ready.update(self._receive())
            slot, errors = ready.pop(b)
            yield Batch(start, self.ring[slot, :stop - start], errors)
            free.append(slot)  # the consumer has taken the next batch: this one is done with

    def _receive(self) -> dict:
        try:
            b, slot, errors, failure = self._results.get(timeout=5.0)
        except queue.Empty:
            dead = [p for p in self._procs if p.exitcode is not None]
            if dead:
                raise RuntimeError(f"decode worker {dead[0].name} died "
                                   f"(exit code {dead[0].exitcode})") from None
            return {}
        if failure is not None:
            raise RuntimeError(f"decode worker failed on batch {b}: {failure}")
        return {b: (slot, errors)}

    def close(self) -> None:
        """Stop the workers (they are told to; stragglers are terminated)."""
        # start-up may have been interrupted
        started = [p for p in self._procs if p.pid is not None]
        for _ in started:
            self._jobs.put(None)
        for p in started:
            p.join(timeout=5.0)
            if p.exitcode is None:
                p.terminate()
                p.join()
        if self._procs:
            for q in (self._jobs, self._results):
                q.cancel_join_thread()
                q.close()
        self._procs = []

    def __enter__(self) -> "BatchDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self.batches)} batches of {self.reader.rec_path}, "
                f"workers={self.workers})")

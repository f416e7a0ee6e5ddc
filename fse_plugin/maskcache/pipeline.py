"""``precompute``: the parser's masks of every image record of a rec, written as a mask cache, at the GPU's pace.

Pipeline of one rank::

    decode processes     read + decode a whole batch of records into a slot of a shared uint8 ring (decoding.py)
    main process         parser forward + argmax, one batch in flight on CUDA (inference.py)
    encode processes     run-length + zlib + crc32 of a batch of masks, one byte string back (encoding.py)
    writer thread        each chunk file, as soon as all of its batches are encoded (encoding.py)

Batches never cross a chunk and split each chunk the same way in every run, so a chunk's bytes do
not depend on which rank computed it or on what was resumed. Under torchrun (gloo on CPU, nccl on
CUDA) rank r computes chunks r, r + world, ...; rank 0 writes keys.npy and the manifest once all
exist. Ctrl-C stops every process with one line; workers never print tracebacks of their own.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from fse_plugin.common import dist_env, resolve_device
from fse_plugin.maskcache.build import (build_info, check_counts, finalize, prepare, report, todo, versions,
                                        wait_for_chunks)
from fse_plugin.maskcache.decoding import BatchDecoder
from fse_plugin.maskcache.encoding import ChunkAssembler, encode_job, encoders
from fse_plugin.maskcache.errors import CacheError, CacheMismatchError
from fse_plugin.maskcache.inference import Inference, Masks
from fse_plugin.maskcache.manifest import (DEFAULT_CHUNK_SIZE, chunk_rows, default_cache_path, make_spec,
                                           rebuild_command)
from fse_plugin.maskcache.source import Source, probe_size, rec_location, scan_source, sha256_file

__all__ = ["precompute", "default_workers", "batch_plan", "ChunkPipeline"]


def default_workers(cpus: int | None = None) -> tuple[int, int]:
    """(decode processes, encode processes) for the CPUs this rank may use (those it may run on, shared by
    torchrun's local ranks). One core is left for the main process; of the rest two thirds decode (up to
    6) and the others encode (up to 4): reading + decoding a 112x112 face costs ~2.5x encoding its mask
    (benchmarks/README.md), and 6 + 4 processes keep up with ~35k masks/s on a 16-core GPU host."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        cpus = max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    usable = max(1, cpus - 1)
    decode = max(1, min(6, 2 * usable // 3))
    return decode, max(1, min(4, usable - decode))


def batch_plan(chunks: Sequence[int], chunk_size: int, count: int, batch_size: int) -> list[tuple[int, int]]:
    """Row ranges of the batches of ``chunks``: never crossing a chunk, the same split in every run."""
    return [(s, min(s + batch_size, e)) for c in chunks for e in [chunk_rows(c, count, chunk_size)[1]]
            for s in range(c * chunk_size, e, batch_size)]


class ChunkPipeline:
    """One rank's loop: decode processes -> ``infer`` -> encode processes -> chunk files.

    ``infer`` is anything with ``launch(uint8 images [B,H,W,3]) -> Masks`` that has read the images
    when it returns (an :class:`Inference`, or a stand-in in benchmarks). Batch i + 1 is launched
    before the masks of batch i are collected.
    """

    def __init__(self, out: Path, spec: dict, src: Source, infer: Any, batch_size: int, num_workers: int,
                 encode_workers: int, progress: bool = False, desc: str = "masks"):
        self.out, self.spec, self.src, self.infer = out, spec, src, infer
        self.batch_size, self.num_workers, self.encode_workers = batch_size, num_workers, encode_workers
        self.progress, self.desc = progress, desc

    def run(self, chunks: Sequence[int]) -> tuple[int, float]:
        """Compute and write ``chunks``; (masks computed, seconds of the loop)."""
        from tqdm import tqdm
        batches = batch_plan(chunks, self.spec["chunk_size"], self.spec["count"], self.batch_size)
        rows = sum(e - s for s, e in batches)
        pool = encoders(self.encode_workers)  # forked before this loop starts threads of its own
        asm = ChunkAssembler(self.out, self.spec, self.src.keys, max_pending=4 * max(1, self.encode_workers) + 2)
        decoder = BatchDecoder(self.src.reader, self.src.keys, batches, self.spec["height"], self.spec["width"],
                               self.num_workers)
        bar = tqdm(total=rows, unit="mask", desc=self.desc, disable=not self.progress, smoothing=0.05)

        def hand_over(start: int, errors: list[tuple[int, str]], masks: Masks) -> None:
            m = masks()
            valid = np.ones(len(m), bool)
            valid[[i for i, _ in errors]] = False
            asm.add(start, len(m), errors, pool.submit(encode_job, m, valid))
            bar.update(len(m))

        t0 = time.perf_counter()
        try:
            prev = None
            for batch in decoder:
                cur = (batch.start, batch.errors, self.infer.launch(batch.images))
                if prev is not None:
                    hand_over(*prev)
                prev = cur
            if prev is not None:
                hand_over(*prev)
            asm.flush(final=True)
        finally:
            bar.close()
            decoder.close()
            pool.shutdown(wait=True, cancel_futures=True)
            asm.close()
        return rows, time.perf_counter() - t0


def _coordinate(fn: Callable[[], Any], rank: int, world: int) -> Any:
    """Run ``fn`` on rank 0 and hand its result (or its error) to every rank."""
    if world == 1:
        return fn()
    import torch.distributed as dist
    box: list = [None]
    error = None
    if rank == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # re-raised below, after the other ranks have been told
            error, box[0] = e, (type(e).__name__, f"rank 0: {e}")
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if error is not None:
        raise error
    if status != "ok":
        raise (CacheMismatchError if status == "CacheMismatchError" else CacheError)(value)
    return value


def _parser_spec(src: Source, parser_ckpt: Path, chunk_size: int, inference: dict) -> dict:
    height, width = probe_size(src.reader, src.keys)
    return make_spec(src.fingerprint, {"kind": "checkpoint", "sha256": sha256_file(parser_ckpt)}, height, width,
                     len(src.keys), chunk_size, inference)


def precompute(rec_dir: str | os.PathLike, parser_ckpt: str | os.PathLike, out: str | os.PathLike | None = None,
               batch_size: int = 256, device: str = "auto", num_workers: int | None = None, *,
               chunk_size: int = DEFAULT_CHUNK_SIZE, encode_workers: int | None = None, amp: bool | None = None,
               overwrite: bool = False, progress: bool = True) -> Path:
    """Run the parser over every image record of ``rec_dir`` and write the mask cache (default beside train.rec).

    Decoding happens in ``num_workers`` processes and run-length/zlib encoding in ``encode_workers``
    processes (defaults: ``default_workers()``), both overlapped with inference.
    Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK from the environment, several nodes if ``out`` is on a
    shared filesystem) rank r computes chunks r, r + world, ...; rank 0 waits for all chunk files and
    writes the manifest. Completed chunks survive a kill; rerunning the same command resumes, and on
    a complete cache checks every byte and recomputes only what is damaged; the result is
    byte-identical to an uninterrupted single-process run. The checkpoint is loaded before anything
    is written. Undecodable images are recorded in the manifest with their reason. ``amp`` (bf16)
    defaults to on for CUDA.
    """
    import torch.distributed as dist

    from fse_plugin.parsing import load_parser
    t0 = time.perf_counter()
    check_counts(batch_size=batch_size, chunk_size=chunk_size, num_workers=num_workers, encode_workers=encode_workers)
    auto = default_workers()
    num_workers = auto[0] if num_workers is None else num_workers
    encode_workers = auto[1] if encode_workers is None else encode_workers
    parser_ckpt = Path(parser_ckpt).resolve()
    model = load_parser(parser_ckpt)  # a rejected checkpoint leaves nothing behind
    out = Path(out) if out is not None else default_cache_path(rec_dir)
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world, dev = dist_env(resolve_device(device))
    amp = dev.type == "cuda" if amp is None else bool(amp)
    src = None
    try:
        src = scan_source(rec_dir)
        spec = _parser_spec(src, parser_ckpt, chunk_size, {"batch_size": batch_size, "device": dev.type, "amp": amp})
        rec_abs = rec_location(src.reader)
        if _coordinate(lambda: prepare(out, spec, overwrite, rebuild_command(out, rec_abs, parser_ckpt)), rank, world):
            if rank == 0:
                print(f"mask cache {out} is complete, every byte checked", file=sys.stderr)
            return out
        mine = todo(out, spec, rank, world)
        computed, seconds = 0, 0.0
        if mine:
            pipeline = ChunkPipeline(out, spec, src, Inference(model, dev, amp), batch_size, num_workers,
                                     encode_workers, progress=progress and rank == 0,
                                     desc=f"cache build rank {rank}/{world}")
            computed, seconds = pipeline.run(mine)
        if rank == 0:
            if world > 1:
                wait_for_chunks(out, spec)
            info = build_info(time.perf_counter() - t0, computed, world, seconds)
            report(out, finalize(out, spec, src.keys, rec_abs, str(parser_ckpt), versions(torch=torch.__version__),
                                 {}, info), info)
    finally:
        if src is not None:
            src.reader.close()
        if world > 1 and owns_group and dist.is_initialized():
            dist.destroy_process_group()
    return out

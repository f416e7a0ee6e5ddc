"""``precompute``: the parser's masks of every image record of a rec, written as a mask cache,
at the GPU's pace.

Pipeline of one rank::

    decode processes     read + decode a whole batch of records into a slot of a shared uint8 ring
                         (decoding.py)
    main process         parser forward + argmax, one batch in flight on CUDA (inference.py)
    encode processes     run-length + zlib + crc32 of a batch of masks, one byte string back
                         (encoding.py)
    writer thread        each chunk file, as soon as all of its batches are encoded (encoding.py)

Batches never cross a chunk and split each chunk the same way in every run, so a chunk's bytes do
not depend on which rank computed it or on what was resumed. Under torchrun (gloo on CPU, nccl on
CUDA) rank r computes chunks r, r + world, ...; rank 0 writes keys.npy and the manifest once all
exist. Ctrl-C stops every process with one line; workers never print tracebacks of their own.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from fse_plugin.common import dist_env, resolve_device
from fse_plugin.common.runtime import resolve_precision
from fse_plugin.labels import NUM_CLASSES
from fse_plugin.maskcache.build import BuildInfo, CacheWriter, library_versions, log_summary
from fse_plugin.maskcache.decoding import BatchDecoder
from fse_plugin.maskcache.encoding import ChunkAssembler, encode_job, encoders
from fse_plugin.maskcache.errors import CacheError, CacheMismatchError
from fse_plugin.maskcache.inference import Inference, Masks
from fse_plugin.maskcache.rebuild import default_cache_path, rebuild_command
from fse_plugin.maskcache.settings import BuildSettings
from fse_plugin.maskcache.source import Source, probe_size, rec_location, scan_source, sha256_file
from fse_plugin.maskcache.spec import CacheSpec, InferenceSpec, Producer

__all__ = ["precompute", "batch_plan", "ChunkPipeline"]

log = logging.getLogger(__name__)


def batch_plan(chunks: Sequence[int], spec: CacheSpec, batch_size: int) -> list[tuple[int, int]]:
    """Row ranges of the batches of ``chunks``: never crossing a chunk,
    the same split in every run."""
    return [(s, min(s + batch_size, e)) for c in chunks for e in [spec.chunk_rows(c)[1]]
            for s in range(c * spec.chunk_size, e, batch_size)]


class ChunkPipeline:
    """One rank's loop: decode processes -> ``infer`` -> encode processes -> chunk files.

    ``infer`` is anything with ``launch(uint8 images [B,H,W,3]) -> Masks`` that has read the images
    when it returns (an :class:`Inference`, or a stand-in in benchmarks). Batch i + 1 is launched
    before the masks of batch i are collected. ``settings`` gives the batch size,
    the worker counts and whether to show progress (as ``desc``).
    """

    def __init__(self, writer: CacheWriter, src: Source, infer: Any, settings: BuildSettings,
                 desc: str = "masks"):
        self.writer, self.src, self.infer = writer, src, infer
        self.settings, self.desc = settings, desc

    def run(self, chunks: Sequence[int]) -> tuple[int, float]:
        """Compute and write ``chunks``; (masks computed, seconds of the loop)."""
        from tqdm import tqdm
        spec, (decode_workers, encode_workers) = self.writer.spec, self.settings.workers()
        batches = batch_plan(chunks, spec, self.settings.batch_size)
        rows = sum(e - s for s, e in batches)
        # each part stopped, in reverse, however start-up or the loop ends
        with ExitStack() as stack:
            pool = encoders(encode_workers)  # forked before this loop starts threads of its own
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            asm = ChunkAssembler(self.writer, self.src.keys,
                                 max_pending=4 * max(1, encode_workers) + 2)
            stack.callback(asm.close)
            decoder = stack.enter_context(BatchDecoder(self.src.reader, self.src.keys, batches,
                                                       spec.height, spec.width, decode_workers))
            bar = stack.enter_context(tqdm(total=rows, unit="mask", desc=self.desc, smoothing=0.05,
                                           disable=not self.settings.progress))

            def hand_over(start: int, errors: list[tuple[int, str]], masks: Masks) -> None:
                m = masks()
                valid = np.ones(len(m), bool)
                valid[[i for i, _ in errors]] = False
                asm.add(start, len(m), errors, pool.submit(encode_job, m, valid))
                bar.update(len(m))

            t0 = time.perf_counter()
            prev = None
            for batch in decoder:
                cur = (batch.start, batch.errors, self.infer.launch(batch.images))
                if prev is not None:
                    hand_over(*prev)
                prev = cur
            if prev is not None:
                hand_over(*prev)
            asm.flush(final=True)
        return rows, time.perf_counter() - t0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.writer!r}, {self.infer!r}, {self.settings!r})"


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


def _parser_spec(src: Source, parser_ckpt: Path, settings: BuildSettings,
                 device: torch.device) -> CacheSpec:
    height, width = probe_size(src.reader, src.keys)
    return CacheSpec(height, width, len(src.keys), settings.chunk_size, src.fingerprint,
                     Producer("checkpoint", sha256_file(parser_ckpt)),
                     InferenceSpec(settings.batch_size, device.type, settings.precision))


def _compute(writer: CacheWriter, src: Source, infer: Inference, settings: BuildSettings, rank: int,
             world: int) -> tuple[int, float]:
    """This rank's pending chunks: (masks computed, seconds)."""
    mine = writer.pending_chunks(rank, world)
    if not mine:
        return 0, 0.0
    shown = replace(settings, progress=settings.progress and rank == 0)
    return ChunkPipeline(writer, src, infer, shown,
                         desc=f"cache build rank {rank}/{world}").run(mine)


def precompute(rec_dir: str | os.PathLike, parser_ckpt: str | os.PathLike,
               out: str | os.PathLike | None = None,
               settings: BuildSettings = BuildSettings()) -> Path:
    """Run the parser over every image record of ``rec_dir`` and write the mask cache
    (default beside train.rec).

    Decoding happens in ``settings.num_workers`` processes and run-length/zlib encoding in
    ``settings.encode_workers`` processes, both overlapped with inference.
    Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK from the environment, several nodes if ``out`` is on
    a shared filesystem) rank r computes chunks r, r + world, ...; rank 0 waits for all chunk files
    and writes the manifest. Completed chunks survive a kill; rerunning the same command resumes,
    and on a complete cache checks every byte and recomputes only what is damaged; the result is
    byte-identical to an uninterrupted single-process run. The device and the checkpoint are checked
    before anything is written. Undecodable images are recorded in the manifest with their reason.
    """
    import torch.distributed as dist

    from fse_plugin.parsing import load_parser
    t0 = time.perf_counter()
    dev = resolve_device(settings.device, "device")
    parser_ckpt = Path(parser_ckpt).resolve()
    model = load_parser(parser_ckpt)  # a rejected checkpoint leaves nothing behind
    if model.n_classes != NUM_CLASSES:
        raise CacheError(f"{parser_ckpt}: a parser of {model.n_classes} classes; "
                         f"a mask cache holds the {NUM_CLASSES} classes of fse_plugin.labels")
    out = Path(out) if out is not None else default_cache_path(rec_dir)
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world, dev = dist_env(dev)
    settings = replace(settings, precision=resolve_precision(settings.precision, dev))
    src = None
    try:
        src = scan_source(rec_dir)
        spec = _parser_spec(src, parser_ckpt, settings, dev)
        writer, rec_abs = CacheWriter(out, spec), rec_location(src.reader)
        command = rebuild_command(out, rec_abs, parser_ckpt, flags=spec.build_flags())
        if _coordinate(lambda: writer.prepare(settings.overwrite, command), rank, world):
            if rank == 0:
                log.info("mask cache %s is complete, every byte checked", out)
            return out
        computed, seconds = _compute(writer, src, Inference(model, dev, settings.precision),
                                     settings, rank, world)
        if rank == 0:
            if world > 1:
                writer.wait_for_chunks()
            info = BuildInfo.measure(time.perf_counter() - t0, computed, world, seconds)
            created = library_versions(torch=torch.__version__)
            manifest = writer.commit(src.keys, rec_abs, str(parser_ckpt), created, {}, info)
            log_summary(out, manifest, info)
    finally:
        if src is not None:
            src.reader.close()
        if world > 1 and owns_group and dist.is_initialized():
            dist.destroy_process_group()
    return out

"""im2rec's packing: every ``<prefix>*.lst`` -> ``.rec``/``.idx``, in list order, by ``workers``
processes.

mxnet 1.9.1 packs every file of the prefix's folder whose path starts with the prefix and ends in
``.lst`` into a pair named after it; records are written in list order under the list's index (also
with several processes), an image that cannot be read is skipped with a message. The same here, and:
the lists are checked whole before any image is read; the pair appears only when finished (see
``output``) and an interrupted run can be resumed; skipped images are counted at the end.
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from fse_plugin.common import checks
from fse_plugin.common.errors import FSEError
from fse_plugin.im2rec.encoding import ItemEncoder, PackSettings
from fse_plugin.im2rec.lstfile import ListSummary, check_list, read_lines
from fse_plugin.im2rec.output import PartWriter, Progress, RecOutput
from fse_plugin.im2rec.workers import ordered_map

__all__ = ["PackResult", "find_lists", "pack_lists"]

log = logging.getLogger(__name__)

# list lines per worker task: small enough to bound memory, large enough to hide the IPC cost
BATCH = 32
_CHECKPOINT_S = 5.0  # journal period: at most this much work is redone after a crash


@dataclass(frozen=True)
class PackResult:
    """One packed list: its pair, records written, images skipped, and what a resumed run found
    done."""
    lst: Path
    rec: Path
    idx: Path
    images: int
    skipped: int
    resumed_lines: int
    resumed_images: int
    seconds: float


def find_lists(prefix: str | os.PathLike) -> list[Path]:
    """The lists im2rec packs for ``prefix``: files of its folder (or of ``prefix`` itself, if a
    folder) whose path starts with ``prefix`` and ends in ``.lst``, sorted."""
    prefix = os.path.abspath(prefix)
    folder = prefix if os.path.isdir(prefix) else os.path.dirname(prefix)
    checks.existing_dir(folder, "PREFIX")
    found = sorted(Path(folder, name) for name in os.listdir(folder)
                   if name.endswith(".lst") and os.path.join(folder, name).startswith(prefix)
                   and os.path.isfile(os.path.join(folder, name)))
    if not found:
        raise FSEError(f"PREFIX: no {os.path.basename(prefix) or '*'}*.lst in {folder}; "
                       "make the list first (fse rec list, or im2rec --list)")
    return found


def _identity(summary: ListSummary, root: str, settings: PackSettings) -> dict:
    """What a resumed run must share with the interrupted one: the same list file, root and record
    options."""
    st = os.stat(summary.path)
    return {"list": summary.path, "list_size": st.st_size, "list_mtime_ns": st.st_mtime_ns,
            "root": root, "settings": asdict(settings)}


def _batches(lst: str, skip: int) -> Iterator[list[tuple[int, str]]]:
    lines = read_lines(lst, skip)
    while batch := list(itertools.islice(lines, BATCH)):
        yield batch


class _Packer:
    """Packs one checked list into its output pair (a fresh run, or the rest of an interrupted
    one)."""

    def __init__(self, summary: ListSummary, root: str, settings: PackSettings, workers: int,
                 progress: bool):
        self.summary, self.root, self.settings = summary, root, settings
        self.workers, self.progress = workers, progress
        self.output = RecOutput(Path(summary.path).with_suffix(".rec"))
        self.identity = _identity(summary, root, settings)

    def __repr__(self) -> str:
        return f"_Packer({self.summary.path!r} -> {str(self.output.rec)!r}, workers={self.workers})"

    def start_point(self, resume: bool) -> Progress:
        """Where to start: 0, or (``resume``) where the interrupted run's journal says its parts are
        whole."""
        leftovers = self.output.leftovers()
        if leftovers and not resume:
            raise FSEError(f"{leftovers[0]}: left by an interrupted run; pass --resume to go on "
                           "with it, or delete "
                           f"{', '.join(p.name for p in leftovers)} to start again")
        if not leftovers:
            if resume:
                log.info("%s: nothing to resume, packing from the start", self.summary.path)
            return Progress()
        return self.output.resume_point(self.identity)

    def __call__(self, start: Progress) -> PackResult:
        t0 = time.perf_counter()
        if start.lines >= self.summary.lines and self.output.finish_renaming(start):
            return self._result(start, start, t0)
        self.output.check_parts(start)
        if start.lines:
            log.info("%s: resuming after line %d of %d", self.summary.path, start.lines,
                     self.summary.lines)
        log.info("packing %s into %s", self.summary.path, self.output.rec)
        writer = PartWriter(self.output, start)
        try:
            self._write(writer, start)
        finally:
            writer.checkpoint(self.identity, durable=False)
            writer.close()
        self.output.publish()
        return self._result(writer.progress, start, t0)

    def _write(self, writer: PartWriter, start: Progress) -> None:
        encoder = ItemEncoder(self.summary.path, self.root, self.settings)
        images, skipped, saved = start.images, start.skipped, time.monotonic()
        batches = ordered_map(encoder, _batches(self.summary.path, start.lines), self.workers)
        with closing(batches), tqdm(total=self.summary.lines, initial=start.lines, unit="img",
                                    dynamic_ncols=True, disable=not self.progress,
                                    desc=Path(self.summary.path).name) as bar:
            for batch, done in batches:
                for path, reason in done.skipped:
                    log.warning("%s: skipped (%s)", path, reason)
                writer.write_chunks(done.chunks, done.keys, done.sizes)
                images, skipped = images + len(done.keys), skipped + len(done.skipped)
                writer.mark(batch[-1][0], images, skipped)
                bar.update(len(batch))
                if time.monotonic() - saved > _CHECKPOINT_S:
                    writer.checkpoint(self.identity)
                    saved = time.monotonic()

    def _result(self, done: Progress, resumed: Progress, t0: float) -> PackResult:
        o = self.output
        return PackResult(Path(self.summary.path), o.rec, o.idx, done.images, done.skipped,
                          resumed.lines, resumed.images, time.perf_counter() - t0)


def pack_lists(prefix: str | os.PathLike, root: str | os.PathLike,
               settings: PackSettings = PackSettings(), *, workers: int = 1, resume: bool = False,
               progress: bool = True) -> list[PackResult]:
    """Pack every list of ``prefix`` (see ``find_lists``) with the images under ``root``.

    Everything a user can get wrong (root, lists, leftovers of an interrupted run without
    ``resume``) is refused with an FSEError before the first image is read.
    """
    checks.count(workers, "--num-workers")
    root = os.path.abspath(checks.existing_dir(root, "ROOT"))
    packers = [_Packer(check_list(lst), root, settings, workers, progress)
               for lst in find_lists(prefix)]
    starts = [p.start_point(resume) for p in packers]
    return [packer(start) for packer, start in zip(packers, starts)]

"""A .rec/.idx pair written so that an interrupted run never leaves one a reader accepts.

Records go to ``<name>.rec.part`` and ``<name>.idx.part``; only a finished run renames them onto
``<name>.rec`` and ``<name>.idx`` (the old .idx removed first, then the .rec renamed, then the
.idx): at any moment a reader finds the old pair, no pair, or a .rec without its .idx, which every
RecordIO reader (this plugin's, mxnet's, DALI's) refuses. Every few seconds a journal
``<name>.part.json`` records how far the parts are whole (list lines done, bytes of each part), so
``--resume`` can cut them back to that point and go on. A lock on the .rec part keeps two runs from
writing one pair.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fse_plugin.common.errors import FSEError
from fse_plugin.common.files import atomic_write
from fse_plugin.recordio import encode_record

__all__ = ["Progress", "RecOutput", "PartWriter"]

log = logging.getLogger(__name__)

_JOURNAL_VERSION = 1


@dataclass
class Progress:
    """How far the parts are whole: list lines done, records written, images skipped, bytes of each
    part."""
    lines: int = 0
    images: int = 0
    skipped: int = 0
    rec_bytes: int = 0
    idx_bytes: int = 0


class PartWriter:
    """Appends records to the .part pair from ``progress`` on (the parts are cut back to it
    first)."""

    def __init__(self, output: "RecOutput", progress: Progress):
        self.output, self.progress = output, progress
        self._rec = open(output.rec_part, "a+b")
        try:
            fcntl.flock(self._rec, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._rec.close()
            raise FSEError(f"{output.rec_part}: another run is writing it right now") from None
        self._rec.truncate(progress.rec_bytes)
        self._idx = open(output.idx_part, "a+b")
        self._idx.truncate(progress.idx_bytes)
        self._pos, self._idx_pos = progress.rec_bytes, progress.idx_bytes

    def write(self, key: int, record: bytes) -> None:
        """One record under ``key``."""
        chunks = encode_record(record)
        self.write_chunks(chunks, [key], [len(chunks)])

    def write_chunks(self, chunks: bytes, keys: list[int], sizes: list[int]) -> None:
        """Records already cut into .rec chunks, back to back (``sizes`` bytes each), under
        ``keys``: the chunks appended to the .rec part, ``key<TAB>offset`` lines to the .idx
        part."""
        lines = []
        for key, size in zip(keys, sizes):
            lines.append(b"%d\t%d\n" % (key, self._pos))
            self._pos += size
        self._rec.write(chunks)
        text = b"".join(lines)
        self._idx.write(text)
        self._idx_pos += len(text)

    def mark(self, lines: int, images: int, skipped: int) -> None:
        """Everything written so far is whole: remember it (in memory; ``checkpoint`` puts it on
        disk)."""
        self._rec.flush()
        self._idx.flush()
        self.progress = Progress(lines, images, skipped, self._pos, self._idx_pos)

    def checkpoint(self, identity: dict, durable: bool = True) -> None:
        """The journal naming how much of the parts is whole; ``durable``: the parts reach the disk
        first, so the point survives a power cut too (the last one before the renames need not: the
        renames follow at once, and a lost point only means starting again)."""
        if durable:
            os.fsync(self._rec.fileno())
            os.fsync(self._idx.fileno())
        self.output.save_journal(identity, self.progress)

    def close(self) -> None:
        self._idx.close()
        self._rec.close()


class RecOutput:
    """The paths of one output pair, its parts and journal, and the steps between them."""

    def __init__(self, rec: str | os.PathLike):
        self.rec = Path(rec)
        self.idx = self.rec.with_suffix(".idx")
        self.rec_part = self.rec.with_name(self.rec.name + ".part")
        self.idx_part = self.idx.with_name(self.idx.name + ".part")
        self.journal = self.rec.with_name(self.rec.stem + ".part.json")

    def __repr__(self) -> str:
        return f"RecOutput({str(self.rec)!r})"

    def leftovers(self) -> list[Path]:
        """Parts an interrupted run left (a journal alone, left after a finished rename, is
        dropped)."""
        parts = [p for p in (self.rec_part, self.idx_part) if p.exists()]
        if not parts:
            self.journal.unlink(missing_ok=True)
        return parts + ([self.journal] if parts and self.journal.exists() else [])

    def discard(self) -> None:
        for p in (self.rec_part, self.idx_part, self.journal):
            p.unlink(missing_ok=True)

    def save_journal(self, identity: dict, progress: Progress) -> None:
        doc = {"version": _JOURNAL_VERSION, **identity, "progress": asdict(progress)}
        atomic_write(self.journal, json.dumps(doc, indent=1).encode())

    def resume_point(self, identity: dict) -> Progress:
        """Where the interrupted run with the same ``identity`` (list, root, settings) got to.

        FSEError if the journal is missing or unreadable, or was written for another identity.
        """
        try:
            doc = json.loads(self.journal.read_text())
            progress = Progress(**doc["progress"])
        except FileNotFoundError:
            raise FSEError(f"{self.rec_part}: no journal {self.journal.name} beside it, so there "
                           "is no safe point to resume from; "
                           "delete the .part files and start again") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FSEError(f"{self.journal}: unreadable journal ({e}); delete it and the .part "
                           "files and start again") from None
        changed = [k for k, v in identity.items() if doc.get(k) != _plain(v)]
        if changed:
            was = ", ".join(f"{k}={doc.get(k)!r}" for k in changed)
            raise FSEError(f"{self.journal}: the interrupted run had {was}; resume with the same "
                           "list, root and flags, or delete the .part files and start again")
        return progress

    def check_parts(self, progress: Progress) -> None:
        """FSEError if a part is shorter than the journal says (data lost in a crash before reaching
        the disk)."""
        for part, size in ((self.rec_part, progress.rec_bytes),
                           (self.idx_part, progress.idx_bytes)):
            have = part.stat().st_size if part.exists() else 0
            if have < size:
                raise FSEError(f"{part}: {have} bytes, its journal says {size} were written "
                               "(lost in a crash?); delete the .part files and start again")

    def finish_renaming(self, progress: Progress) -> bool:
        """After a crash between the two renames of ``publish``: rename the .idx part too, if the
        .rec in place is the finished part (its size is the journal's); True if done."""
        if self.rec_part.exists() or not self.idx_part.exists() or not self.rec.exists():
            return False
        if self.rec.stat().st_size != progress.rec_bytes:
            raise FSEError(f"{self.idx_part}: its .rec part is gone and {self.rec} is not the one "
                           "it indexes; delete the .part files and start again")
        os.replace(self.idx_part, self.idx)
        self.journal.unlink(missing_ok=True)
        return True

    def publish(self) -> None:
        """Rename the finished parts onto the pair, in the order that never pairs an old .idx with a
        new .rec."""
        self.idx.unlink(missing_ok=True)
        os.replace(self.rec_part, self.rec)
        os.replace(self.idx_part, self.idx)
        self.journal.unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    """``value`` as the journal's JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(value))

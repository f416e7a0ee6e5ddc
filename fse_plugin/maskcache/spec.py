"""What defines a mask cache (its *spec*): format, mask size, chunking, the rec's fingerprint,
who made the masks.

Two builds of the same spec write the same bytes; its hash, ``spec_id``, is stamped on every chunk,
so a chunk of another build is never taken for one of this build. The spec's JSON
(``CacheSpec.to_json``) is what ``build_spec.json`` and ``manifest.json`` hold and what the hash is
taken of: its keys and values are the on-disk format and never change within a format version.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Mapping

from fse_plugin.labels import CLASSES, LABEL_SET
from fse_plugin.maskcache.codec import CODEC

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "DEFAULT_CHUNK_SIZE", "JsonRecord", "Fingerprint",
           "Producer", "InferenceSpec", "CacheSpec", "ChunkExpect", "json_bytes"]

FORMAT_NAME = "fse-maskcache"
FORMAT_VERSION = 2
"""2: per-entry crc32, table crc32, manifest checksum. Version-1 caches are refused with the rebuild
command."""
DEFAULT_CHUNK_SIZE = 16384
"""Masks per chunk file: the unit of resume, repair and sharding
(at most one chunk of work is lost to a kill)."""


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, no spaces): a chunk's metadata,
    and what the spec's and manifest's hashes are taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class JsonRecord:
    """A dataclass whose JSON object has one key per field, same name
    (``to_json`` / ``from_json``)."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]):
        return cls(**{f.name: obj[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Fingerprint(JsonRecord):
    """What identifies the rec a cache was built from (``source.scan_source`` computes it): counts,
    layout, sha256 of the image keys and of the .idx, the .rec's size and a sha256 over sampled
    records."""
    records: int
    image_records: int
    layout: str
    keys_sha256: str
    idx_sha256: str
    rec_bytes: int
    sample_keys: list
    sample_sha256: str

    def differences(self, other: "Fingerprint") -> list[str]:
        """Names of the fields in which ``other`` differs."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True)
class Producer(JsonRecord):
    """Who made the masks: ``kind`` 'checkpoint' (a parser) or 'labels'
    (given masks), and their sha256."""
    kind: str
    sha256: str


@dataclass(frozen=True)
class InferenceSpec:
    """How the parser ran. On disk ``{batch_size, device, amp}`` (amp: bf16 autocast, as format 2
    has always written it), plus ``precision`` only for fp16, so a bf16 or fp32 build matches
    earlier ones."""
    batch_size: int
    device: str
    precision: str = "fp32"

    def to_json(self) -> dict[str, Any]:
        out = {"batch_size": self.batch_size, "device": self.device,
               "amp": self.precision != "fp32"}
        if self.precision == "fp16":
            out["precision"] = "fp16"
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "InferenceSpec":
        precision = obj.get("precision", "bf16" if obj["amp"] else "fp32")
        return cls(obj["batch_size"], obj["device"], precision)


@dataclass(frozen=True)
class ChunkExpect:
    """What a chunk file must say about itself; a field left None is not checked."""
    spec_id: bytes | None = None
    index: int | None = None
    row_start: int | None = None
    rows: int | None = None
    height: int | None = None
    width: int | None = None
    bytes: int | None = None
    crc32: int | None = None


@dataclass(frozen=True)
class CacheSpec:
    """Everything that determines the bytes of a cache (format, codec and label set are this
    version's)."""
    height: int
    width: int
    count: int
    chunk_size: int
    source: Fingerprint
    producer: Producer
    inference: InferenceSpec | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "codec": CODEC,
                "labels": {"name": LABEL_SET, "classes": list(CLASSES)}, "height": int(self.height),
                "width": int(self.width), "count": int(self.count),
                "chunk_size": int(self.chunk_size),
                "source": self.source.to_json(), "parser": self.producer.to_json(),
                "inference": None if self.inference is None else self.inference.to_json()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "CacheSpec":
        """The spec of a manifest whose format, codec and label set were checked
        (KeyError/TypeError when a field is missing or malformed: the caller names the file)."""
        inference = obj["inference"]
        return cls(obj["height"], obj["width"], obj["count"], obj["chunk_size"],
                   Fingerprint.from_json(obj["source"]),
                   Producer(obj["parser"]["kind"], obj["parser"]["sha256"]),
                   None if inference is None else InferenceSpec.from_json(inference))

    @cached_property
    def spec_id(self) -> bytes:
        """sha256 of the spec's canonical JSON, first 8 bytes: stamped on every chunk."""
        return hashlib.sha256(json_bytes(self.to_json())).digest()[:8]

    @property
    def n_chunks(self) -> int:
        return -(-self.count // self.chunk_size)

    def chunk_rows(self, index: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of chunk ``index``."""
        return index * self.chunk_size, min(self.count, (index + 1) * self.chunk_size)

    def build_flags(self) -> tuple[str, ...]:
        """The ``fse cache build`` flags that make this spec again
        (besides --rec, --parser/--from-labels): what a resume or rebuild command must repeat."""
        flags: tuple[str, ...] = ()
        if self.inference is not None:
            flags += ("--batch-size", str(self.inference.batch_size),
                      "--device", self.inference.device)
            if self.inference.precision != "fp32":
                flags += ("--precision", self.inference.precision)
        if self.chunk_size != DEFAULT_CHUNK_SIZE:
            flags += ("--chunk-size", str(self.chunk_size))
        return flags

    def chunk_expect(self, index: int) -> ChunkExpect:
        """What chunk ``index`` of a build of this spec must say about itself."""
        start, stop = self.chunk_rows(index)
        return ChunkExpect(self.spec_id, index, start, stop - start, self.height, self.width)

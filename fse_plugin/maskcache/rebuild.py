"""Where a rec's cache goes by default, and the ``fse cache build`` command that (re)builds a cache:
what every error about a cache ends with, so the user can paste it."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_DIRNAME", "Recorded", "default_cache_path", "rebuild_command", "rebuild_hint",
           "recorded_sources"]

DEFAULT_DIRNAME = "fse_masks"


def default_cache_path(rec_dir: str | os.PathLike) -> Path:
    """``<rec_dir>/fse_masks`` (beside train.rec; for a .rec file path, beside that file)."""
    p = Path(rec_dir)
    return (p.parent if p.suffix == ".rec" and not p.is_dir() else p) / DEFAULT_DIRNAME


@dataclass(frozen=True)
class Recorded:
    """What a manifest recorded about its sources (or what could be salvaged from a damaged one):
    the rec's path, the producer's kind ('checkpoint' or 'labels'), the parser's or labels' path,
    and the flags that make the same spec (``CacheSpec.build_flags``)."""
    rec_path: str | None = None
    kind: str | None = None
    path: str | None = None
    flags: tuple[str, ...] = ()


def _abs(path: str | os.PathLike | None, placeholder: str) -> str:
    return shlex.quote(os.path.abspath(path)) if path else placeholder


def rebuild_command(cache: str | os.PathLike, rec: str | os.PathLike | None = None,
                    parser: str | os.PathLike | None = None,
                    labels: str | os.PathLike | None = None, overwrite: bool = False,
                    from_labels: bool = False, flags: tuple[str, ...] = ()) -> str:
    """The ``fse cache build`` command line for ``cache``, absolute paths,
    placeholders where a path is unknown.

    Without ``overwrite`` it builds, resumes or repairs ``cache`` (damaged chunks are recomputed);
    ``overwrite`` is only for replacing a cache that is valid for nothing any more. ``from_labels``:
    a cache of given masks whose file is unknown (``--from-labels NPZ``). ``flags``:
    the settings that make the same cache (batch size, device, precision, chunk size).
    """
    src = (f"--from-labels {_abs(labels, 'NPZ')}" if labels or from_labels
           else f"--parser {_abs(parser, 'CKPT')}")
    return " ".join([f"fse cache build --rec {_abs(rec, 'REC_DIR')} {src} "
                     f"--out {_abs(cache, 'OUT')}",
                     *map(shlex.quote, flags), *(["--overwrite"] if overwrite else [])])


def recorded_sources(cache: Path, recorded: Recorded | None) -> dict:
    """``rebuild_command`` arguments from what a manifest recorded: rec, parser or labels (absolute
    paths that exist here only: a relative one was typed in another working directory, a damaged one
    names nothing) and whether it is a labels cache."""
    r = recorded or Recorded()
    keep = lambda p: (  # noqa: E731
        p if isinstance(p, str) and os.path.isabs(p) and os.path.exists(p) else None)
    rec = keep(r.rec_path)
    if rec is None and cache.name == DEFAULT_DIRNAME:
        rec = str(cache.parent)
    if r.kind == "labels":
        return {"rec": rec, "labels": keep(r.path), "from_labels": True, "flags": r.flags}
    return {"rec": rec, "parser": keep(r.path), "flags": r.flags}


def rebuild_hint(cache: Path, recorded: Recorded | None) -> str:
    return f"Rebuild it with: {rebuild_command(cache, **recorded_sources(cache, recorded))}"

"""Fixed-width text tables, as the evaluation results are printed."""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["format_table"]


def format_table(rows: Sequence[Sequence[Any]] | Sequence[Any], header: Sequence[str]) -> str:
    """A plain fixed-width text table (one row may be given flat)."""
    if rows and not isinstance(rows[0], (list, tuple)):
        rows = [rows]
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    return "\n".join([line, fmt(cells[0]), line, *map(fmt, cells[1:]), line])

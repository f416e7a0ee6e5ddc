"""The ``--precision`` names: full float32, or autocast to float16 / bfloat16.

The torch dtypes are named, not imported, so that the command line lists the choices without torch
(``runtime.mixed_precision`` autocasts to them).
"""
from __future__ import annotations

__all__ = ["PRECISIONS"]

PRECISIONS: dict[str, str | None] = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
"""Each precision -> the name of the torch dtype it autocasts to (None: no autocast)."""

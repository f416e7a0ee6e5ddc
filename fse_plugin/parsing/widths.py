"""The parser's size: the channel divisors (feature scales) it may have and the widths they give.

Apart from the network (``model``), so that the command line offers the scales without importing
torch.
"""
from __future__ import annotations

import numpy as np

from fse_plugin.common.errors import FSEError

__all__ = ["DEFAULT_FEATURE_SCALE", "FEATURE_SCALES", "parser_widths"]

DEFAULT_FEATURE_SCALE = 4
"""Channel divisor of the default parser (widths 16..256).

Chosen by measurement on synthetic FaceSynthetics data (benchmarks/README.md, "## parser"): after
the same short training, feature_scale 4 reaches the mean F1 of 2 and 1 within noise at a sixteenth
of the reference's (1) FLOPs, which makes precomputing masks for millions of faces cheap and CPU
training possible; 8 is cheaper still but loses accuracy on the small classes (eyes, brows). Load
the published checkpoint (feature_scale 1) with ``checkpoint.load_parser``, which reads the scale
from the tensors.
"""
FEATURE_SCALES = (1, 2, 4, 8, 16, 32, 64)
"""The channel divisors a parser may have: every level's width must halve exactly."""
_BASE_WIDTHS = (64, 128, 256, 512, 1024)


def parser_widths(feature_scale: int) -> list[int]:
    """Channel widths of the five levels; ``feature_scale`` must divide 64 so every level doubles
    exactly."""
    if isinstance(feature_scale, bool) or not isinstance(feature_scale, (int, np.integer)) \
            or feature_scale < 1 or 64 % feature_scale:
        raise FSEError(f"feature_scale must be a divisor of 64 "
                       f"({', '.join(map(str, FEATURE_SCALES))}), got {feature_scale!r}")
    return [w // int(feature_scale) for w in _BASE_WIDTHS]

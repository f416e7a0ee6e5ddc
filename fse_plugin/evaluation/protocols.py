"""The protocols' standard choices: the FAR points of upstream's IJB table and the verification
packs looked for by default (light: the command line offers them before torch loads)."""
from __future__ import annotations

__all__ = ["IJB_FARS", "PACK_NAMES"]

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""FAR points of upstream's IJB table."""
PACK_NAMES = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")
"""The packs ``fse eval verification --data-dir`` evaluates when no config names its
``val_targets``."""

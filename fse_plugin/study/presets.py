"""What ``fse study`` offers before torch loads: the size presets, the default variants and probes,
the names --probes accepts and the choices of --masks and --trainer (the command line lists them in
its help and checks them; ``tests/test_startup.py``)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from fse_plugin.common import checks
from fse_plugin.evaluation.regions import DEFAULT_GROUPS
from fse_plugin.occluders import OCCLUDERS

__all__ = ["StudySizes", "DEFAULT", "QUICK", "OUT", "DEFAULT_VARIANTS", "PROBES", "DEFAULT_PROBES",
           "MASKS", "TRAINERS"]

OUT = Path("fse_study")
"""Where a study writes unless told (``--out``)."""
DEFAULT_VARIANTS = ("off", "fse")
"""What the default study compares (``random_erasing`` costs a third more runs: ask for it)."""
PROBES: tuple[str, ...] = OCCLUDERS + tuple(DEFAULT_GROUPS)
"""The probes a study can score besides the clean pairs: each occluder kind and each erased
group."""
DEFAULT_PROBES = ("upper_face",)
"""What the default study scores besides the clean pairs: the probe its budget is sized for (every
other probe costs as much scoring again; ``--probes all``)."""
MASKS = ("parser", "gt")
TRAINERS = ("builtin", "arcface")


@dataclass(frozen=True)
class StudySizes:
    """Data sizes and counted budgets of a study (seeds 0..seeds-1, ``steps`` per run). Each field
    is a ``--field-name`` flag of ``fse study``; every one is a whole number >= 1 (``pairs`` >= 10:
    the 10-fold protocol)."""
    fs_images: int = field(default=1200,
                           metadata={"help": "FaceSynthetics-layout frames for the parser"})
    ids: int = field(default=200, metadata={"help": "training identities of the synthetic rec"})
    per_id: int = field(default=12, metadata={"help": "faces per training identity"})
    pairs: int = field(default=3000,
                       metadata={"help": "held-out verification pairs of the synthetic pack"})
    parser_epochs: int = field(default=8, metadata={"help": "parser epochs (batch 8)"})
    seeds: int = field(default=8,
                       metadata={"help": "seeds per variant (0..N-1), the K of the intervals"})
    steps: int = field(default=100,
                       metadata={"help": "recognizer steps per run (--trainer arcface: rounded up "
                                         "to whole epochs)"})
    batch_size: int = field(default=64,
                            metadata={"help": "recognizer batch (per GPU with --trainer arcface)"})
    width: int = field(default=8,
                       metadata={"help": "channels of the built-in network's first stage (each of "
                                         "its four stages doubles them)"})

    def __post_init__(self) -> None:
        for f in fields(self):
            checks.count(getattr(self, f.name), f"--{f.name.replace('_', '-')}",
                         minimum=10 if f.name == "pairs" else 1)


DEFAULT = StudySizes()
QUICK = StudySizes(fs_images=100, ids=24, per_id=6, pairs=32, parser_epochs=2, seeds=3, steps=8,
                   batch_size=32)

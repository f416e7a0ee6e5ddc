"""The demo's sizes and counted budgets, and its two presets: light, so that ``fse demo`` lists
and checks its size flags before torch loads (``tests/test_startup.py``)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from fse_plugin.common import checks

__all__ = ["DemoSizes", "FULL", "QUICK"]


@dataclass(frozen=True)
class DemoSizes:
    """Data sizes and counted budgets of one demo run (seconds: optional safety stops, 0 = none)."""
    fs_images: int = field(default=1200,
                           metadata={"help": "FaceSynthetics-layout 512x512 frames for the parser"})
    ids: int = field(default=300, metadata={"help": "training identities of the rec"})
    per_id: int = field(default=16, metadata={"help": "faces per training identity"})
    pairs: int = field(default=600, metadata={"help": "verification pairs of held-out identities"})
    parser_epochs: int = field(default=10, metadata={"help": "parser epochs (118 steps of batch 8 "
                                                             "each at full size)"})
    recognizer_steps: int = field(default=350,
                                  metadata={"help": "steps of batch 64 per recognizer"})
    cam_pairs: int = field(default=16, metadata={"help": "genuine pairs explained with FS-CAM"})
    occlusion_pairs: int = field(default=300, metadata={"help": "pairs of the occlusion benchmark"})
    parser_seconds: float = field(default=0.0, metadata={
        "help": "safety stop of the parser in seconds (0 = none; it also anneals by the clock: not "
                "repeatable)"})
    recognizer_seconds: float = field(default=0.0, metadata={
        "help": "safety stop of each recognizer in seconds (0 = none; a run it stops is not "
                "repeatable)"})

    def __post_init__(self) -> None:
        for f in fields(self):
            flag = f"--{f.name.replace('_', '-')}"
            if f.type == "float":
                checks.number(getattr(self, f.name), flag, lo=0)
            else:
                # the 10-fold protocol needs 10 pairs
                protocol = f.name in ("pairs", "occlusion_pairs")
                checks.count(getattr(self, f.name), flag, minimum=10 if protocol else 1)


FULL = DemoSizes()
QUICK = DemoSizes(fs_images=100, ids=24, per_id=6, pairs=40, parser_epochs=2, recognizer_steps=10,
                  cam_pairs=3, occlusion_pairs=16)

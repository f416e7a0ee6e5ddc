"""What a study is asked to do, checked whole before any work: sizes and budgets, variants, probes,
masks, trainer, device, and (instead of synthetic faces) the user's own rec and pack."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fse_plugin.common import FSEError, checks
from fse_plugin.study.arcface import ArcfaceSettings
from fse_plugin.study.presets import (DEFAULT, DEFAULT_PROBES, DEFAULT_VARIANTS, MASKS, OUT,
                                      TRAINERS, StudySizes)
from fse_plugin.study.probes import check_probes
from fse_plugin.study.variants import Variant, parse_variants

__all__ = ["OwnData", "StudySettings"]

@dataclass(frozen=True)
class OwnData:
    """The user's data instead of synthetic faces: a rec to train on (its mask cache ``mask_cache``,
    default ``<rec>/fse_masks``) and a verification pack to score on (its masks ``<stem>.masks.npy``
    beside it, or predicted by ``parser``). Either may be given alone; the other is synthesised."""
    rec: Path | None = None
    mask_cache: Path | None = None
    pack: Path | None = None
    parser: Path | None = None

    def check(self) -> None:
        from fse_plugin.common import masks_path_for
        if self.rec is not None:
            checks.existing_file(Path(self.rec) / "train.idx", "--rec")
            checks.existing_dir(self.cache,
                                "--mask-cache" if self.mask_cache else "--rec (its fse_masks)")
        elif self.mask_cache is not None:
            raise FSEError("--mask-cache is the cache of --rec: give --rec too")
        if self.pack is not None:
            checks.existing_file(self.pack, "--pack", "pickle")
            if self.parser is not None:
                checks.existing_file(self.parser, "--parser", "checkpoint")
            else:
                checks.existing_file(masks_path_for(self.pack),
                                     "--pack (its masks; or give --parser)", "npy")
        elif self.parser is not None:
            raise FSEError("--parser predicts the masks of --pack: give --pack too")

    @property
    def cache(self) -> Path | None:
        if self.rec is None:
            return None
        return Path(self.mask_cache) if self.mask_cache else Path(self.rec) / "fse_masks"


@dataclass(frozen=True)
class StudySettings:
    """One study: where it writes, its sizes, the variants compared with ``off``, the probes scored
    besides the clean pairs (with ``regions`` also each class alone), the masks of the synthetic rec
    ('parser', the default: trained here, as a user has them; 'gt': the synthetic ground truth), the
    trainer ('builtin' or 'arcface', with ``arcface``), the device and the user's own data."""
    out: Path = OUT
    sizes: StudySizes = DEFAULT
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    probes: tuple[str, ...] = DEFAULT_PROBES
    regions: bool = False
    masks: str | None = None
    trainer: str = "builtin"
    arcface: ArcfaceSettings = ArcfaceSettings()
    device: str = "cpu"
    data: OwnData = OwnData()

    def check(self) -> list[Variant]:
        """Refuse anything wrong before minutes of preparation; returns the parsed variants (``off``
        first)."""
        from fse_plugin.common import resolve_device
        checks.output_dir(self.out, "--out")
        if self.masks is not None:
            checks.choice(self.masks, "--masks", MASKS)
            if self.data.rec is not None:
                raise FSEError("--masks chooses the masks of the synthetic rec; with --rec they "
                               "come from its mask cache (--mask-cache): leave --masks out")
        checks.choice(self.trainer, "--trainer", TRAINERS)
        check_probes(self.probes)
        resolve_device(self.device)
        self.data.check()
        chosen = parse_variants(list(self.variants))
        if self.trainer == "arcface":
            self.arcface.check()
            _arcface_variants(chosen)
        return chosen

    @property
    def mask_source(self) -> str:
        """'parser', 'gt' or 'mask cache' (the user's rec)."""
        return "mask cache" if self.data.rec is not None else self.masks or "parser"

    def facts(self) -> dict[str, Any]:
        """The settings as JSON-ready values (study.json ``config``; a finished run is reused only
        when its settings match)."""
        from dataclasses import asdict
        arcface = None
        if self.trainer == "arcface":
            arcface = {k: v for k, v in asdict(self.arcface).items() if k != "launch"}
        data = {k: str(v) for k, v in asdict(self.data).items() if v is not None}
        facts = {"sizes": asdict(self.sizes), "variants": list(self.variants),
                 "probes": list(self.probes), "regions": self.regions, "masks": self.mask_source,
                 "trainer": self.trainer,
                 "arcface": arcface, "device": self.device, "data": data}
        return json.loads(json.dumps(facts, default=str))


def _arcface_variants(variants: list[Variant]) -> None:
    for variant in variants:
        if variant.random_erasing is not None:
            raise FSEError(f"--variants {variant.name}: the arcface_torch patch has no transform "
                           "hook, so --trainer arcface runs only 'off' and 'fse:...' variants; use "
                           "--trainer builtin for random_erasing")

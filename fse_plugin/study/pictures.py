"""The study's picture of what its models are scored on (``experiment.pictures.labelled_grid``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fse_plugin.common import to_input, to_uint8
from fse_plugin.experiment.pictures import labelled_grid
from fse_plugin.study.probes import ProbeSet

__all__ = ["probe_samples"]


def probe_samples(probes: ProbeSet, path: str | Path, n: int = 8) -> Path:
    """``n`` probe images clean, with each occluder drawn and with each erased group, exactly as the
    models see them."""
    from fse_plugin.evaluation import RegionErasing
    picks = np.linspace(0, len(probes.issame) - 1, n).round().astype(int)
    keys = 2 * picks + 1
    rows, names = [[probes.images[k] for k in keys]], ["probe"]
    for kind, images in probes.occluded.items():
        rows.append([images[i] for i in picks])
        names.append(kind)
    for group, ids in probes.groups:
        erase = RegionErasing(ids, "random", probes.seed)
        rows.append([to_uint8(erase(to_input(probes.images[k]), probes.masks[k], int(k)))
                     for k in keys])
        names.append(f"{group} erased")
    return labelled_grid(rows, names, path,
                         title="probe images of the study (the second image of each pair)")

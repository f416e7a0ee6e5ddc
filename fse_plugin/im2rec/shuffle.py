"""The plugin's arcface_torch ``scripts/shuffle_rec.py``: a rec's images in a seeded random order,
for DALI.

DALI's mxnet reader reads a rec in file order, so upstream shuffles it once: ``DIR/train.rec`` ->
``shuffled_DIR/train.rec`` (beside ``DIR``), image records under keys 0..N-1, each with the scalar
identity label (``label[0]`` of a label vector) and no header record. Same output here, plus the
``property`` file (DALI configs read ``num_classes`` from it), and seeded: the order is numpy's
legacy ``shuffle`` of the image keys, i.e. upstream's own order when its unseeded ``np.random`` is
seeded with the same seed. Any layout ``image_index`` reads is accepted (upstream takes insightface
recs only).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fse_plugin.common import checks
from fse_plugin.common.errors import FSEError
from fse_plugin.common.files import atomic_write
from fse_plugin.im2rec.output import PartWriter, Progress, RecOutput
from fse_plugin.recordio import IRHeader, image_index, open_rec, pack, unpack

__all__ = ["ShuffleResult", "shuffle_rec"]

@dataclass(frozen=True)
class ShuffleResult:
    """The shuffled dataset folder, its record count and the seconds it took."""
    out: Path
    records: int
    seconds: float


def shuffled_dir(input_dir: str | os.PathLike) -> Path:
    """``shuffled_<name>`` beside the input folder, as upstream names it."""
    path = Path(input_dir).resolve()
    return path.parent / f"shuffled_{path.name}"


def shuffle_rec(input_dir: str | os.PathLike, seed: int = 0, progress: bool = True
                ) -> ShuffleResult:
    """Write ``shuffled_<name>/train.rec``, ``train.idx`` (and ``property``) of the dataset folder
    ``input_dir``.

    The rec is checked (and its images found) before anything is written; the pair appears only when
    finished, so an interrupted run leaves nothing a reader accepts (the next run starts again).
    """
    t0 = time.perf_counter()
    src = checks.existing_dir(input_dir, "INPUT")
    if checks.count(seed, "--seed", minimum=0) >= 2**32:
        raise FSEError(f"--seed: numpy's shuffle takes seeds below 2^32, got {seed}")
    reader = open_rec(src)
    with reader:
        keys = image_index(reader).keys.copy()
        np.random.RandomState(seed).shuffle(keys)
        out = shuffled_dir(src)
        out.mkdir(parents=True, exist_ok=True)
        output = RecOutput(out / "train.rec")
        output.discard()  # parts of an interrupted shuffle: nothing worth resuming
        writer = PartWriter(output, Progress())
        try:
            for i, key in enumerate(tqdm(keys.tolist(), unit="img", disable=not progress,
                                         desc="shuffle", dynamic_ncols=True)):
                header, image = unpack(reader.read(key))
                label = header.label if header.flag == 0 else header.label[0]
                writer.write(i, pack(IRHeader(header.flag, label, header.id, header.id2), image))
            writer.mark(len(keys), len(keys), 0)
        finally:
            writer.close()
    output.publish()
    if (src / "property").is_file():
        atomic_write(out / "property", (src / "property").read_bytes())
    return ShuffleResult(out, len(keys), time.perf_counter() - t0)

"""Same seeds, same bytes: erased outputs hashed on main before the erasing engine was rewritten
(issue 23, ``tests/erasing_golden.py``) against the new API, for every fill, flips (mirrored masks),
present_only and n_erase form: the numpy engine from whole masks and from runs, the class draws, and
the dataset's batches.

By design two things changed and are asserted differently: the torch engine now erases only the
erased pixels and draws as the numpy engine does (for one seed both give the same values; the old
one drew noise for every pixel), and one image's draw is the batch draw of one image
(``FSErasing.__call__``).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from erasing_golden import (DATASET_BATCHES, DATASET_CASES, DRAW_CASES, FILLS, GOLDEN, SIZE, digest,
                            faces, mask_runs, selections, write_rec)
from fse_plugin.erasing import FSErasing, MaskRuns, erase

RECORDED = json.loads(GOLDEN.read_text())


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def inputs():
    imgs, masks = faces()
    return imgs, masks, MaskRuns([mask_runs(m) for m in masks], SIZE, SIZE)


@pytest.mark.parametrize("fill", FILLS, ids=repr)
def test_numpy_engine_bytes_unchanged(inputs, fill):
    imgs, masks, runs = inputs
    for seed in range(4):
        sel = selections(len(masks), seed)
        mirrored = np.random.default_rng(seed).random(len(masks)) < 0.5
        for form, m, flips in (("list mirrored", list(masks), mirrored),
                               ("runs mirrored", runs, mirrored),
                               ("tensor", torch.from_numpy(masks), None)):
            out = erase(imgs, m, sel, fill, gen(seed), mirrored=flips)
            assert digest(out) == RECORDED[f"cpu {form} {fill!r} {seed}"], (form, seed)
    g = gen(7)
    singles = [erase(imgs[b], torch.from_numpy(masks[b]), [0, 12, 21][:b % 3 + 1], fill, g)
               for b in range(len(imgs))]
    assert digest(*singles) == RECORDED[f"single {fill!r}"]


@pytest.mark.parametrize("fill", FILLS, ids=repr)
def test_torch_engine_equals_the_numpy_one(inputs, fill):
    """The torch engine (autograd or CUDA tensors) erases the same pixels with the same draws;
    constant fills give the bytes recorded on main, the mean fills agree to float rounding."""
    imgs, masks, _ = inputs
    for seed in range(4):
        sel = torch.from_numpy(selections(len(masks), seed))
        graded = imgs.clone().requires_grad_(True)
        out = erase(graded, torch.from_numpy(masks), sel, fill, gen(seed)).detach()
        ref = erase(imgs, torch.from_numpy(masks), sel, fill, gen(seed))
        if fill in ("region_mean", "image_mean"):
            assert torch.allclose(out, ref, atol=1e-6) and torch.equal(out != imgs, ref != imgs)
        else:
            assert torch.equal(out, ref), seed
        if not isinstance(fill, str):
            assert digest(out) == RECORDED[f"torch {fill!r} {seed}"]


@pytest.mark.parametrize("name", DRAW_CASES)
def test_draws_unchanged(inputs, name):
    imgs, masks, runs = inputs
    t = FSErasing(**DRAW_CASES[name])
    for form, m in (("tensor", torch.from_numpy(masks)), ("list", list(masks)), ("runs", runs)):
        drawn = t.get_params(m, gen(16), mirrored=[True, False] * 4)
        assert digest(drawn) == RECORDED[f"draw {name} {form}"], form
    drawn = t.get_params(torch.from_numpy(masks), gen(17))
    assert digest(drawn) == RECORDED[f"draw {name} tensor unmirrored"]
    if t.fill not in ("random", "random_mix", "random_mix_sample"):
        # no noise drawn: the batch call is unchanged
        assert digest(t(imgs, torch.from_numpy(masks), gen(18))) == RECORDED[f"call batch {name}"]


@pytest.fixture(scope="module")
def golden_rec(tmp_path_factory):
    from fse_plugin import maskcache
    tmp = tmp_path_factory.mktemp("golden")
    rec, keys, masks = write_rec(Path(tmp) / "rec")
    return (rec,
            maskcache.build_from_labels(rec, keys, masks, out=Path(tmp) / "cache", progress=False))


@pytest.mark.parametrize("name", ["off", *DATASET_CASES])
def test_dataset_batches_unchanged(golden_rec, name):
    from fse_plugin.dataset import FSEMXFaceDataset
    rec, cache = golden_rec
    fse = None if name == "off" else dict(masks=str(cache), **DATASET_CASES[name])
    ds = FSEMXFaceDataset(rec, 0, fse=fse)
    for seed, indices in DATASET_BATCHES:
        torch.manual_seed(seed)
        batch = ds.__getitems__(indices)
        assert (digest(*[x for s in batch for x in s], torch.rand(1))
                == RECORDED[f"dataset {name} {seed}"]), seed
    torch.manual_seed(5)
    assert (digest(*[x for i in (0, 3, 3) for x in ds[i]], torch.rand(1))
            == RECORDED[f"dataset {name} items"])

"""FSEMXFaceDataset: upstream's contract and pixels, erasing by the cache's masks (per sample and
per batch), flips, workers, DistributedSampler, missing and damaged masks, broken images, stale
caches and config validation."""
import logging
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler
from torchvision import transforms

from fse_plugin import maskcache, recordio, synth
from fse_plugin.common import FSEError
from fse_plugin.dataset import FSEMXFaceDataset
from fse_plugin.erasing import FILLS, erase
from fse_plugin.fseconfig import FSEConfig
from fse_plugin.labels import class_id, flip_mask
from fse_plugin.recordio import RecordIOError

SENTINEL = 9.0  # a constant fill outside [-1, 1]: erased pixels are exactly the ones equal to it


@pytest.fixture(scope="module")
def gt(synth_rec):
    data = np.load(synth_rec / "gt_masks.npz")
    return dict(zip(data["keys"].tolist(), data["masks"]))


@pytest.fixture(scope="module")
def cache(synth_cache) -> str:
    return str(synth_cache)


NORMALISE = transforms.Compose([transforms.ToTensor(),
                                transforms.Normalize(mean=[0.5] * 3, std=[0.5] * 3)])


def record_image(rec_dir: Path, key: int) -> np.ndarray:
    with recordio.open_rec(rec_dir) as r:
        return r.read_image(key)


def upstream_sample(rec_dir: Path, key: int) -> torch.Tensor:
    """MXFaceDataset's transform on the record's image (mx.image.imdecode = RGB decode)."""
    tf = transforms.Compose([transforms.ToPILImage(), transforms.RandomHorizontalFlip(), NORMALISE])
    return tf(record_image(rec_dir, key))


def test_contract_and_pixels_match_upstream(synth_rec):
    ds = FSEMXFaceDataset(synth_rec, local_rank=0)
    index = recordio.image_index(synth_rec)
    assert len(ds) == len(index.keys) == 72
    for i in (0, 5, 37, 71):
        torch.manual_seed(i)
        img, label = ds[i]
        torch.manual_seed(i)
        ref = upstream_sample(synth_rec, int(index.keys[i]))
        assert img.dtype == torch.float32 and img.shape == (3, 112, 112) and img.is_contiguous()
        assert torch.equal(img, ref)  # same flip draw, same normalisation, bit for bit
        assert label.dtype == torch.long and label.shape == () and int(label) == index.labels[i]
    assert float(img.min()) >= -1 and float(img.max()) <= 1


def _erased(img: torch.Tensor) -> torch.Tensor:
    return (img == SENTINEL).all(0)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_erased_pixels_are_one_region_of_the_flipped_mask(synth_rec, cache, gt, flip):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=1.0, fill=SENTINEL, flip=flip))
    seen = 0
    for i in range(0, 72, 3):
        key = int(ds.keys[i])
        img, _ = ds[i]
        plain = NORMALISE(record_image(synth_rec, key)[:, ::-1].copy() if flip
                          else record_image(synth_rec, key))
        mask = torch.from_numpy(flip_mask(gt[key]) if flip else gt[key])
        e = _erased(img)
        # the rest is upstream's pixels, flipped with the mask
        assert torch.equal(img[:, ~e], plain[:, ~e])
        if e.any():
            assert torch.equal(e, mask == int(mask[e][0]))
            seen += 1
    assert seen > 5


def test_batches_erase_each_sample_by_its_own_mask(synth_rec, cache, gt):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=0.5, n_erase=(1, 2), fill=SENTINEL))
    torch.manual_seed(0)
    batch = ds.__getitems__(list(range(40)))  # what a DataLoader worker calls
    erased = 0
    for i, (img, label) in enumerate(batch):
        assert (img.shape == (3, 112, 112) and label.dtype == torch.long
                and int(label) == ds.labels[i])
        e = _erased(img)
        if e.any():  # whole regions (one or two) of the mask, flipped with the image or not
            m, region = gt[int(ds.keys[i])], e.numpy()
            whole = [np.array_equal(region, np.isin(shown, np.unique(shown[region])))
                     and len(np.unique(shown[region])) <= 2 for shown in (m, flip_mask(m))]
            assert any(whole), i
            erased += 1
    assert 8 < erased < 32  # p=0.5 (less for absent classes)
    torch.manual_seed(0)
    again = ds.__getitems__(list(range(40)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batch, again))  # same seed, same batch


def reference_batch(ds: FSEMXFaceDataset, indices: list[int]) -> list[torch.Tensor]:
    """What ``__getitems__`` gave before it read masks as runs, from whole masks: the same draws
    (flip and coin per row, then the classes and fills of the erased rows), upstream's pixels, each
    erased row's mask from ``MaskCache.get`` flipped with its image, and erasing through ``erase``
    on those masks."""
    keys = [int(ds.keys[i]) for i in indices]
    flip, erased = (torch.rand(len(keys), 2).numpy() < (ds.flip_p, ds.erasing.p)).T
    masks = {b: ds.masks.get(keys[b]) for b in np.flatnonzero(erased).tolist()}
    samples = []
    for key, f in zip(keys, flip):
        img = record_image(ds.root_dir, key)
        samples.append(NORMALISE(img[:, ::-1].copy() if f else img))
    rows = [b for b, m in masks.items() if m is not None]
    shown = [flip_mask(masks[b]) if flip[b] else masks[b] for b in rows]
    if rows:
        selected = ds.erasing.get_params(shown)
        erase([samples[b] for b in rows], shown, selected, ds.erasing.fill, inplace=True)
    return samples


FILL_CASES = [dict(p=1.0, fill=fill, flip=flip) for fill in FILLS + (0.25,)
              for flip in (0.0, 0.5, 1.0)]
DRAW_CASES = [dict(p=0.5), dict(p=0.5, n_erase=(1, 25), fill="random_mix"), dict(n_erase=(0, 3)),
              dict(n_erase=(1, 4), fill="random_1"), dict(n_erase=2, present_only=True),
              dict(n_erase=(1, 3), present_only=True, fill="random_mix"), dict(present_only=True),
              dict(n_erase=["left_eye", "right_cheek"], fill="region_mean"),
              dict(classes=["left_eye", "right_eye", "hair"], n_erase=2, fill="random_1")]


@pytest.mark.parametrize("fse", FILL_CASES + DRAW_CASES, ids=repr)
def test_batches_equal_the_whole_mask_reference(synth_rec, cache, fse):
    """Reading masks as runs changed no output: same seed, same samples, bit for bit."""
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, **fse))
    for seed, indices in ((0, list(range(0, 72, 2))), (1, [5]), (2, [7, 7, 60, 3, 41, 41])):
        torch.manual_seed(seed)
        ref = reference_batch(ds, indices)
        ref_next = torch.rand(1)
        torch.manual_seed(seed)
        out = ds.__getitems__(indices)
        assert all(torch.equal(a, b) for (a, _), b in zip(out, ref)), (seed, indices)
        assert torch.equal(torch.rand(1), ref_next)  # as many draws


def test_flip_keeps_left_and_right(synth_rec, cache, gt):
    ds = FSEMXFaceDataset(synth_rec, 0,
                          fse=dict(masks=cache, classes=["right_eye"], fill=SENTINEL, flip=1.0))
    checked = 0
    for i in range(0, 72, 4):
        e = _erased(ds[i][0])
        m = gt[int(ds.keys[i])]
        # mirrored left eye
        assert torch.equal(e, torch.from_numpy(m == class_id("left_eye")).flip(-1))
        if e.any():
            # right_eye (named by the image's side): still image-right
            assert e.nonzero()[:, 1].float().mean() > 56
            checked += 1
    assert checked > 10


class DropKeys:
    """A MaskCache stand-in without masks for some keys (as for undecodable images) and damaged
    ones."""

    def __init__(self, cache, drop=(), damaged=()):
        self.cache, self.drop, self.damaged = cache, set(drop), set(damaged)
        self.height, self.width = cache.height, cache.width

    def get_runs_batch(self, keys):
        keys = keys.tolist()
        damaged = {j: maskcache.DamagedEntryError(f"chunks/000000.fsmc: entry of key {k} is "
                                                  "damaged", k, "chunks/000000.fsmc")
                   for j, k in enumerate(keys) if k in self.damaged}
        missing = [j for j, k in enumerate(keys) if k in self.drop]
        found = [j for j in range(len(keys)) if j not in damaged and j not in missing]
        runs = [self.cache.get_runs(keys[j]) for j in found] or [(np.zeros(0, np.uint8),) * 2]
        return maskcache.RunsBatch(np.concatenate([v for v, _ in runs]),
                                   np.concatenate([n for _, n in runs]),
                                   [len(v) for v, _ in runs if len(v)], found, missing, damaged,
                                   self.height, self.width)


def _erased_per_sample(loader) -> torch.Tensor:
    imgs = torch.cat([b[0] for b in loader])
    return _erased(imgs.permute(1, 0, 2, 3)).flatten(1).any(1)


def test_missing_and_damaged_masks_pass_unerased_and_are_counted_over_workers(synth_rec, cache):
    ds = FSEMXFaceDataset(synth_rec, 0,
                          fse=dict(masks=cache, p=1.0, fill=SENTINEL, classes=["background"]))
    ds.masks = DropKeys(ds.masks, drop=[int(ds.keys[3]), int(ds.keys[40])],
                        damaged=[int(ds.keys[9])])
    erased = _erased_per_sample(DataLoader(ds, batch_size=8, sampler=SequentialSampler(ds),
                                           num_workers=2))
    assert (ds.missing_masks, ds.damaged_masks) == (2, 1)
    assert not erased[3] and not erased[40] and not erased[9] and erased.sum() == 69
    for _ in DataLoader(ds, batch_size=8, num_workers=0):
        pass
    # counted per sample served, main process too
    assert (ds.missing_masks, ds.damaged_masks) == (4, 2)


def test_damaged_keys_are_logged_once_with_rec_and_chunk(synth_rec, cache, caplog):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=1.0))
    bad = [int(ds.keys[5]), int(ds.keys[6])]
    ds.masks = DropKeys(ds.masks, drop=[int(ds.keys[7]), int(ds.keys[8])], damaged=bad)
    with caplog.at_level(logging.WARNING, logger="fse_plugin.dataset"):
        for _ in range(3):  # three epochs
            ds.__getitems__(list(range(12)))
    damaged = [r.getMessage() for r in caplog.records if "damaged mask" in r.getMessage()]
    assert len(damaged) == 2 and all("train.rec" in m and "chunks/000000.fsmc" in m
                                     for m in damaged)
    assert [m for m in damaged if f"record {bad[0]} " in m]
    # the first missing one
    assert sum("no mask for record" in r.getMessage() for r in caplog.records) == 1
    assert (ds.damaged_masks, ds.missing_masks) == (6, 6)


def _damage_entry(cache: Path, mask: np.ndarray) -> None:
    """Overwrite the stored bytes of ``mask``'s entry (found by its encoding) with garbage."""
    blob = maskcache.encode_masks(mask[None])[0]
    chunk = next((cache / "chunks").iterdir())
    data = chunk.read_bytes()
    assert data.count(blob) == 1
    chunk.write_bytes(data.replace(blob, b"\xff" * len(blob)))


def test_a_damaged_entry_is_found_by_verify_and_served_unerased_otherwise(synth_rec, cache, gt,
                                                                          tmp_path):
    damaged = tmp_path / "fse_masks"
    shutil.copytree(cache, damaged)
    key = int(sorted(gt)[10])
    _damage_entry(damaged, gt[key])
    with pytest.raises(FSEError, match=r"config\.fse\.masks: .*damaged"):
        # before the first step
        FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=str(damaged), verify=True))
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=str(damaged), p=1.0, classes=["background"],
                                                 fill=SENTINEL))
    erased = _erased_per_sample(DataLoader(ds, batch_size=8, num_workers=2))
    i = int(np.flatnonzero(ds.keys == key)[0])
    assert not erased[i] and erased.sum() == 71 and ds.damaged_masks == 1


def test_a_broken_image_names_the_rec_and_the_key(synth_rec, tmp_path):
    rec = Path(shutil.copytree(synth_rec, tmp_path / "rec"))
    ds = FSEMXFaceDataset(rec, 0)
    key = int(ds.keys[4])
    with recordio.open_rec(rec) as r:
        jpeg = recordio.unpack(r.read(key))[1]
    data = (rec / "train.rec").read_bytes()
    assert data.count(jpeg) == 1
    (rec / "train.rec").write_bytes(data.replace(jpeg, b"\0" * len(jpeg)))
    with pytest.raises(RecordIOError, match=rf"train\.rec: record {key}: cannot decode image"):
        ds[4]


def _seed_worker(worker_id, num_workers, rank, seed):
    # arcface_torch's rule (num_workers * rank + worker_id + seed)
    torch.manual_seed(num_workers * rank + worker_id + seed)


def _epoch(ds, rank, seed, num_workers=2):
    sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=seed)
    init = partial(_seed_worker, num_workers=num_workers, rank=rank, seed=seed)
    loader = DataLoader(ds, batch_size=6, sampler=sampler, num_workers=num_workers,
                        worker_init_fn=init, drop_last=True)
    return [b for b in loader], list(sampler)


def test_distributed_sampler_workers_and_seeds(synth_rec, cache):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=0.5, n_erase=(1, 3)))
    runs = {r: _epoch(ds, r, seed=2048) for r in (0, 1)}
    covered = sorted(runs[0][1] + runs[1][1])
    assert covered == list(range(72))  # the two ranks split the data
    labels = torch.cat([b[1] for r in (0, 1) for b in runs[r][0]])
    assert sorted(labels.tolist()) == sorted(ds.labels.tolist())
    again = _epoch(ds, 0, seed=2048)[0]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(runs[0][0], again))
    other = _epoch(ds, 0, seed=7)
    by_index = dict(zip(runs[0][1], torch.cat([b[0] for b in runs[0][0]])))
    by_index_other = dict(zip(other[1], torch.cat([b[0] for b in other[0]])))
    common = set(by_index) & set(by_index_other)
    assert common and any(not torch.equal(by_index[i], by_index_other[i]) for i in common)


def test_cache_problems_name_config_fse_masks(synth_rec, cache, tmp_path):
    other = synth.write_rec(tmp_path / "other", n_identities=2, images_per_identity=3, seed=1)
    with pytest.raises(FSEError, match=r"config\.fse\.masks: mask cache .* another record file.*"
                                       r"fse cache build --rec") as err:
        FSEMXFaceDataset(other, 0, fse=dict(masks=cache))
    assert isinstance(err.value.__cause__, maskcache.CacheMismatchError)
    broken = Path(shutil.copytree(cache, tmp_path / "broken"))
    (broken / "manifest.json").write_text("{")
    with pytest.raises(FSEError, match=r"config\.fse\.masks: .*manifest"):
        FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=str(broken)))


@pytest.mark.parametrize("fse, key, what", [
    (dict(p=1.5), "p", ">= 0 and <= 1"),
    (dict(p="0.5"), "p", "expected a finite number"),
    (dict(flip=-0.1), "flip", ">= 0 and <= 1"),
    (dict(classes=["nose", "nostril"]), "classes", "nostril"),
    (dict(classes=[]), "classes", "empty"),
    (dict(classes=5), "classes", "list of class names"),
    (dict(classes={"nose": 1}), "classes", "list of class names"),
    (dict(classes="5"), "classes", r"string of digits.*'right_forehead'.*\(5\)"),
    (dict(classes=["nose", "10"]), "classes", r"string of digits.*'nose'.*\(10\)"),
    (dict(classes=[10.0]), "classes", "not a class name or int id"),
    (dict(classes=["nose", "nose"]), "classes", "'nose' given twice"),
    (dict(fill="blur"), "fill", "unknown"),
    (dict(fill=True), "fill", "finite number"),
    (dict(n_erase=(3, 1)), "n_erase", "lo <= hi"),
    (dict(n_erase=26), "n_erase", "exceeds"),
    (dict(n_erase=-1), "n_erase", "must be >= 0"),
    (dict(n_erase="2"), "n_erase", "string, not a count"),
    (dict(n_erase=2.0), "n_erase", "must be an int"),
    (dict(n_erase=(1, "3")), "n_erase", "must be an int"),
    (dict(n_erase=[1, 3]), "n_erase", "holds ints.*tuple"),
    (dict(present_only="yes"), "present_only", "True or False"),
    (dict(verify=1), "verify", "True or False"),
    (dict(erase_p=0.5), "erase_p", "unknown key"),
    (dict(masks="/nonexistent/fse_masks"), "masks", "fse cache build"),
    (dict(masks=""), "masks", "path of a mask cache"),
    (dict(masks=123), "masks", "path of a mask cache"),
    (dict(masks=__file__), "masks", "is a file; expected a directory"),
])
def test_config_errors_name_the_key(synth_rec, cache, fse, key, what):
    cfg = {"masks": cache, **fse}
    with pytest.raises(FSEError, match=rf"config\.fse\.{key}: .*{what}"):
        FSEConfig.from_mapping(cfg, rec_dir=synth_rec)
    with pytest.raises(FSEError, match=rf"config\.fse\.{key}:"):
        FSEMXFaceDataset(synth_rec, 0, fse=cfg)  # at construction, in the main process


def test_config_normalised(synth_rec, cache, tmp_path):
    cfg = FSEConfig.from_mapping(dict(masks=cache, classes="nose, mouth", n_erase=(1, 2), fill=0),
                                 rec_dir=synth_rec)
    assert cfg.as_dict() == dict(masks=cache, p=1.0, n_erase=(1, 2), classes=[10, 17],
                                 present_only=False, fill=0.0, flip=0.5, verify=False)
    fixed = FSEConfig.from_mapping(dict(masks=Path(cache), n_erase=["left_eye", "Right_Eye"]))
    assert fixed.n_erase == ["left_eye", "right_eye"] and fixed.fixed == [12, 11]
    assert FSEConfig.from_mapping(fixed.as_dict()) == fixed  # the normalised form reads back
    assert FSEConfig.from_mapping(dict(masks=cache, classes=(0, "hair"),
                                       fill="random_mix_sample")).classes == [0, 21]
    assert FSEConfig.from_mapping({}).masks is None  # no rec known: the cache is named later
    with pytest.raises(FSEError, match="fse cache build --rec"):
        FSEConfig.from_mapping(dict(), rec_dir=tmp_path)  # default <rec>/fse_masks, not built
    with pytest.raises(FSEError, match="must be a dict"):
        FSEConfig.from_mapping(0.5, rec_dir=synth_rec)
    with pytest.warns(DeprecationWarning):
        from fse_plugin.dataset import validate_fse_config
        assert validate_fse_config(dict(masks=cache, p=0.5))["p"] == 0.5


def test_transform_repr_and_settings_line(synth_rec, cache, caplog):
    with caplog.at_level(logging.INFO):  # arcface_torch's init_logging sets the root logger to INFO
        ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=0.5), transform=lambda x: x * 0)
    assert not ds[0][0].any()
    assert "FSErasing(p=0.5, n_erase=1, classes=all 25" in repr(ds) and "records=72" in repr(ds)
    # reaches training.log
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("fse_plugin.dataset", logging.INFO, repr(ds))]

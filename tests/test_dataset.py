"""FSEMXFaceDataset: upstream's contract and pixels, erasing by the cache's masks, flips, workers,
DistributedSampler, stale caches and config validation."""
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler
from torchvision import transforms

from fse_plugin import maskcache, recordio, synth
from fse_plugin.dataset import FSEConfigError, FSEMXFaceDataset, validate_fse_config
from fse_plugin.labels import class_id, flip_mask

SENTINEL = 9.0  # a constant fill outside [-1, 1]: erased pixels are exactly the ones equal to it


@pytest.fixture(scope="module")
def gt(synth_rec):
    data = np.load(synth_rec / "gt_masks.npz")
    return dict(zip(data["keys"].tolist(), data["masks"]))


@pytest.fixture(scope="module")
def cache(synth_cache) -> str:
    return str(synth_cache)


def upstream_sample(rec_dir: Path, key: int) -> torch.Tensor:
    """MXFaceDataset's transform on the record's image (mx.image.imdecode = RGB decode)."""
    tf = transforms.Compose([transforms.ToPILImage(), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])
    with recordio.open_rec(rec_dir) as r:
        return tf(recordio.decode_image(recordio.unpack(r.read(key))[1]))


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


def test_erased_pixels_are_one_region_of_the_flipped_mask(synth_rec, cache, gt):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=1.0, fill=SENTINEL))
    off = FSEMXFaceDataset(synth_rec, 0)
    seen_flip = seen_erase = 0
    for i in range(0, 72, 3):
        torch.manual_seed(100 + i)
        flipped = bool(torch.rand(1) < 0.5)
        torch.manual_seed(100 + i)
        img, _ = ds[i]
        torch.manual_seed(100 + i)
        plain, _ = off[i]
        mask = torch.from_numpy(flip_mask(gt[int(ds.keys[i])]) if flipped else gt[int(ds.keys[i])])
        e = _erased(img)
        assert torch.equal(img[:, ~e], plain[:, ~e])
        if e.any():
            c = int(mask[e][0])
            assert torch.equal(e, mask == c)
            seen_erase += 1
        seen_flip += flipped
    assert seen_erase > 5 and 0 < seen_flip < 24


def test_flip_keeps_left_and_right(synth_rec, cache, gt):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, classes=["right_eye"], fill=SENTINEL, flip=1.0))
    checked = 0
    for i in range(0, 72, 4):
        e = _erased(ds[i][0])
        m = gt[int(ds.keys[i])]
        assert torch.equal(e, torch.from_numpy(m == class_id("left_eye")).flip(-1))  # mirrored left eye
        if e.any():
            assert e.nonzero()[:, 1].float().mean() > 56  # right_eye (named by the image's side): still image-right
            checked += 1
    assert checked > 10


class DropKeys:
    """A MaskCache stand-in without masks for some keys (as for undecodable images)."""

    def __init__(self, cache, drop):
        self.cache, self.drop = cache, set(drop)

    def get(self, key):
        return None if key in self.drop else self.cache.get(key)


def test_missing_masks_pass_unerased_and_are_counted_over_workers(synth_rec, cache):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=1.0, fill=SENTINEL, classes=["background"]))
    drop = [int(ds.keys[3]), int(ds.keys[40])]
    ds.masks = DropKeys(ds.masks, drop)
    loader = DataLoader(ds, batch_size=8, sampler=SequentialSampler(ds), num_workers=2)
    imgs = torch.cat([b[0] for b in loader])
    erased = _erased(imgs.permute(1, 0, 2, 3)).flatten(1).any(1)
    assert ds.missing_masks == 2
    assert not erased[3] and not erased[40] and erased.sum() == 70
    for _ in DataLoader(ds, batch_size=8, num_workers=0):
        pass
    assert ds.missing_masks == 4  # counted per sample served, main process too


def _seed_worker(worker_id, num_workers, rank, seed):  # arcface_torch's rule (REFERENCE.md section 6)
    torch.manual_seed(num_workers * rank + worker_id + seed)


def _epoch(ds, rank, seed, num_workers=2):
    sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=seed)
    init = partial(_seed_worker, num_workers=num_workers, rank=rank, seed=seed)
    loader = DataLoader(ds, batch_size=6, sampler=sampler, num_workers=num_workers, worker_init_fn=init,
                        drop_last=True)
    return [b for b in loader], list(sampler)


def test_distributed_sampler_workers_and_seeds(synth_rec, cache):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=0.5, n_erase=(1, 3)))
    runs = {r: _epoch(ds, r, seed=2048) for r in (0, 1)}
    covered = sorted(runs[0][1] + runs[1][1])
    assert covered == list(range(72))  # the two ranks split the data
    labels = torch.cat([b[1] for r in (0, 1) for b in runs[r][0]])
    assert sorted(labels.tolist()) == sorted(ds.labels.tolist())
    again = _epoch(ds, 0, seed=2048)[0]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(runs[0][0], again))
    other = _epoch(ds, 0, seed=7)
    by_index = dict(zip(runs[0][1], torch.cat([b[0] for b in runs[0][0]])))
    by_index_other = dict(zip(other[1], torch.cat([b[0] for b in other[0]])))
    common = set(by_index) & set(by_index_other)
    assert common and any(not torch.equal(by_index[i], by_index_other[i]) for i in common)


def test_foreign_cache_refused(cache, tmp_path):
    other = synth.write_rec(tmp_path / "other", n_identities=2, images_per_identity=3, seed=1)
    with pytest.raises(maskcache.CacheMismatchError, match="fse cache build --rec"):
        FSEMXFaceDataset(other, 0, fse=dict(masks=cache))


@pytest.mark.parametrize("fse, key", [
    (dict(p=1.5), "p"),
    (dict(p="0.5"), "p"),
    (dict(flip=-0.1), "flip"),
    (dict(classes=["nose", "nostril"]), "classes"),
    (dict(classes=[]), "classes"),
    (dict(fill="blur"), "fill"),
    (dict(n_erase=(3, 1)), "n_erase"),
    (dict(n_erase=26), "n_erase"),
    (dict(present_only="yes"), "present_only"),
    (dict(erase_p=0.5), "erase_p"),
    (dict(masks="/nonexistent/fse_masks"), "masks"),
])
def test_config_errors_name_the_key(synth_rec, cache, fse, key):
    cfg = {"masks": cache, **fse}
    with pytest.raises(FSEConfigError, match=rf"config\.fse\.{key}:"):
        validate_fse_config(cfg, synth_rec)
    with pytest.raises(FSEConfigError, match=rf"config\.fse\.{key}:"):
        FSEMXFaceDataset(synth_rec, 0, fse=cfg)  # at construction, in the main process


def test_config_normalised(synth_rec, cache, tmp_path):
    cfg = validate_fse_config(dict(masks=cache, classes="nose, mouth", n_erase=(1, 2), fill=0), synth_rec)
    assert cfg == dict(masks=cache, p=1.0, n_erase=(1, 2), classes=[10, 17], present_only=False, fill=0,
                       flip=0.5)
    with pytest.raises(FSEConfigError, match="fse cache build --rec"):
        validate_fse_config(dict(), tmp_path)  # default <rec>/fse_masks, not built
    with pytest.raises(FSEConfigError, match="must be a dict"):
        validate_fse_config(0.5, synth_rec)


def test_transform_and_repr(synth_rec, cache):
    ds = FSEMXFaceDataset(synth_rec, 0, fse=dict(masks=cache, p=0.5), transform=lambda x: x * 0)
    assert not ds[0][0].any()
    assert "FSErasing(p=0.5, n_erase=1, classes=all 25" in repr(ds) and "records=72" in repr(ds)

"""Mask cache: lossless codec, random access from DataLoader workers, fingerprints, damage, resume,
torchrun.

Damage fuzzing, repair and the build's robustness: test_maskcache_damage.py."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fse_plugin import maskcache as mc
from fse_plugin import recordio, synth
from fse_plugin.maskcache import chunk as chunkfile
from fse_plugin.maskcache import codec, decoding, pipeline
from fse_plugin.cli import main as cli_main
from fse_plugin.labels import CLASSES, NUM_CLASSES
from fse_plugin.parsing import UNetRes18, load_parser, predict_masks, save_parser

ROOT = Path(__file__).resolve().parents[1]
RUN = dict(batch_size=8, device="cpu", chunk_size=16, progress=False)  # 72 synth images -> 5 chunks


def run(**kw) -> mc.BuildSettings:
    """The tests' build settings, with ``kw`` changed."""
    return mc.BuildSettings(**{**RUN, **kw})


def _files(d: Path) -> dict:
    """Every file of a cache except build_info.json (timings: the one file allowed to differ)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != mc.BUILD_INFO}


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="session")
def gt(synth_rec):
    with np.load(synth_rec / "gt_masks.npz") as z:
        return z["keys"], z["masks"]


@pytest.fixture(scope="session")
def parsers(tmp_path_factory):
    """Two tiny random parsers (feature_scale 16) saved with save_parser:
    masks are deterministic, not good."""
    d = tmp_path_factory.mktemp("parsers")
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(save_parser(UNetRes18(feature_scale=16), d / f"tiny{seed}.pt"))
    return out


@pytest.fixture(scope="session")
def ref_cache(synth_rec, parsers, tmp_path_factory):
    """Uninterrupted single-process build with a DataLoader worker and an encode process."""
    return mc.precompute(synth_rec, parsers[0], tmp_path_factory.mktemp("ref") / "cache",
                         run(num_workers=1, encode_workers=1))


@pytest.fixture(scope="session")
def labels_cache(synth_rec, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels") / "cache"
    assert cli_main(["cache", "build", "--rec", str(synth_rec), "--from-labels",
                     str(synth_rec / "gt_masks.npz"), "--out", str(out), "--chunk-size", "32",
                     "--quiet"]) == 0
    return out


def test_codec_round_trip_edge_cases():
    rng = np.random.default_rng(0)
    masks = np.stack([
        np.zeros((112, 112), np.uint8),  # one run of 12544: split into 255-pixel pieces
        np.full((112, 112), 24, np.uint8),
        (np.indices((112, 112)).sum(0) % 2).astype(np.uint8) * 23,  # every pixel its own run
        rng.integers(0, NUM_CLASSES, (112, 112), dtype=np.uint8),
        np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8),
                  112 * 112 // NUM_CLASSES + 1)[:112 * 112].reshape(112, 112),
    ])
    blobs = mc.encode_masks(masks)
    assert len(blobs) == len(masks)
    for b, m in zip(blobs, masks):
        out = mc.decode_mask(b, 112, 112)
        assert out.dtype == np.uint8 and out.flags.writeable and np.array_equal(out, m)
    odd = rng.integers(0, 3, (3, 7, 13), dtype=np.uint8)
    assert all(np.array_equal(mc.decode_mask(b, 7, 13), m)
               for b, m in zip(mc.encode_masks(odd), odd))
    with pytest.raises(ValueError, match="truncated"):
        mc.decode_mask(blobs[3][:-3], 112, 112)
    # zlib alone would ignore trailing bytes
    with pytest.raises(ValueError, match="after the zlib stream"):
        mc.decode_mask(blobs[3] + blobs[4], 112, 112)
    with pytest.raises(ValueError, match="pixels"):
        mc.decode_mask(blobs[0], 112, 111)
    with pytest.raises(ValueError, match="uint8"):
        mc.encode_masks(masks.astype(np.int32))


def test_decode_runs_is_decode_mask_before_the_expansion():
    rng = np.random.default_rng(1)
    masks = np.stack([np.zeros((112, 112), np.uint8),
                      rng.integers(0, NUM_CLASSES, (112, 112), dtype=np.uint8),
                      np.repeat(np.arange(4, dtype=np.uint8), 112 * 28).reshape(112, 112)])
    for blob, m in zip(mc.encode_masks(masks), masks):
        values, lengths = codec.decode_runs(blob, 112, 112)
        assert values.dtype == lengths.dtype == np.uint8 and len(values) == len(lengths)
        assert int(lengths.sum()) == m.size and lengths.min() > 0
        assert np.array_equal(codec.expand_runs(values, lengths, 112, 112), m)
        assert np.array_equal(mc.decode_mask(blob, 112, 112), m)
    blob = mc.encode_masks(masks[1:2])[0]
    for bad, what in ((blob[:-3], "truncated"), (blob + blob, "after the zlib stream"),
                      (b"xyz", "zlib")):
        with pytest.raises(ValueError, match=what):
            codec.decode_runs(bad, 112, 112)
    # the mask's size is decode_mask's coverage check
    for decode in (codec.decode_runs, mc.decode_mask):
        with pytest.raises(ValueError, match="runs cover 12544 pixels, expected 112x111"):
            decode(blob, 112, 111)
        for bad, what in ((blob[:-3], "truncated"), (blob + blob, "after the zlib stream")):
            with pytest.raises(ValueError, match=what):
                decode(bad, 112, 112)


def _all_runs_match_get(cache: mc.MaskCache) -> int:
    """get_runs of every key expands to get's mask (None where get gives None);
    returns the masks seen."""
    seen = 0
    for k in cache.keys.tolist():
        runs, mask = cache.get_runs(k), cache.get(k)
        if mask is None:
            assert runs is None
            continue
        values, lengths = runs
        assert (values.dtype == lengths.dtype == np.uint8
                and int(lengths.sum()) == cache.height * cache.width)
        assert np.array_equal(codec.expand_runs(values, lengths, cache.height, cache.width), mask)
        seen += 1
    return seen


def test_get_runs_of_every_entry_are_the_runs_of_get(labels_cache, ref_cache, gt):
    keys, masks = gt
    cache = mc.MaskCache(labels_cache)
    assert _all_runs_match_get(cache) == len(keys)
    truth = dict(zip(keys.tolist(), masks))
    assert all(np.array_equal(np.repeat(*cache.get_runs(k)).reshape(112, 112), m)
               for k, m in truth.items())
    # parser masks: many short runs
    assert _all_runs_match_get(mc.MaskCache(ref_cache)) == len(keys)
    with pytest.raises(mc.UnknownKeyError, match="key 0 is not an image key"):
        cache.get_runs(0)


def test_get_runs_batch_is_get_runs_of_each_key(labels_cache, ref_cache, gt):
    """Any order, repeats, list or array: the runs of get_runs laid end to end, key by key."""
    keys = gt[0]
    order = np.random.default_rng(0).permutation(np.concatenate([keys, keys[:5]]))
    for cache in (mc.MaskCache(labels_cache), mc.MaskCache(ref_cache)):
        for ks in (order, order.tolist(), order[:1], order[:0]):
            batch = cache.get_runs_batch(ks)
            singles = [cache.get_runs(k) for k in list(ks)]
            assert batch.found == list(range(len(ks))) and not batch.missing and not batch.damaged
            assert batch.counts == [len(v) for v, _ in singles]
            none = [np.zeros(0, np.uint8)]
            assert np.array_equal(batch.values, np.concatenate([v for v, _ in singles] or none))
            assert np.array_equal(batch.lengths, np.concatenate([n for _, n in singles] or none))
            assert batch.values.dtype == batch.lengths.dtype == np.uint8
            assert all(np.array_equal(m, cache.get(k)) for m, k in zip(batch.masks(), list(ks)))
    with pytest.raises(mc.UnknownKeyError, match="key 0 is not an image key"):
        cache.get_runs_batch([int(keys[0]), 0])


def test_from_labels_lossless_small_and_fingerprinted(labels_cache, synth_rec, gt):
    keys, masks = gt
    cache = mc.MaskCache(labels_cache)
    assert len(cache) == len(keys) and (cache.height, cache.width) == (112, 112)
    assert np.array_equal(cache.keys, np.sort(keys))
    for k, m in zip(keys.tolist(), masks):
        assert np.array_equal(cache.get(k), m)
    assert cache.bytes_per_mask <= 1000, cache.bytes_per_mask
    m = cache.manifest
    reader = recordio.open_rec(synth_rec)
    source = m.spec.source
    assert source.records == len(reader) and source.image_records == len(keys)
    assert source.idx_sha256 == mc.sha256_file(synth_rec / "train.idx")
    assert len(source.sample_keys) == mc.FINGERPRINT_SAMPLES and len(source.sample_sha256) == 64
    on_disk = json.loads((labels_cache / mc.MANIFEST).read_bytes())
    assert (on_disk["labels"] == {"name": "fse25", "classes": list(CLASSES)}
            and on_disk["source"] == source.to_json())
    # the dataclass is the file, field by field
    assert on_disk == {**m.to_json(), "checksum": on_disk["checksum"]}
    assert (m.spec.producer.kind == "labels" and on_disk["format_version"] == mc.FORMAT_VERSION
            and m.missing == [])
    cache.check_source(synth_rec)
    freq = cache.class_frequencies()
    assert freq.pixels.sum() == pytest.approx(1.0)
    expected = np.bincount(masks.ravel(), minlength=NUM_CLASSES) / masks.size
    assert np.allclose(freq.pixels, expected)
    assert np.allclose(freq.images, [(masks == c).any((1, 2)).mean() for c in range(NUM_CLASSES)])
    with pytest.raises(KeyError, match="not an image key") as e:
        cache.get(0)  # the insightface header record
    # one line in the CLI
    assert isinstance(e.value, mc.CacheError) and str(e.value).startswith("key 0 is not")


def test_a_key_is_an_integer(labels_cache, gt):
    """A float or bool is not read as another key (3.7 is not key 3, True is not key 1)."""
    cache = mc.MaskCache(labels_cache)
    k = int(gt[0][5])
    assert np.array_equal(cache.get(np.int64(k)), cache.get(k)) and np.uint16(k) in cache
    for bad in (float(k), k + 0.7, True, str(k), None):
        with pytest.raises(mc.UnknownKeyError, match="is not an integer image key"):
            cache.get(bad)
        with pytest.raises(mc.UnknownKeyError, match="is not an integer image key"):
            cache.get_runs(bad)
        with pytest.raises(mc.UnknownKeyError, match="is not an integer image key"):
            cache.get_runs_batch([k, bad])
        assert bad not in cache
    with pytest.raises(mc.UnknownKeyError, match="is not an integer image key"):
        cache.get_runs_batch(np.array([k + 0.5]))


def test_from_labels_must_cover_the_rec(synth_rec, gt, tmp_path):
    keys, masks = gt
    with pytest.raises(mc.CacheError, match="1 image key without a mask"):
        mc.build_from_labels(synth_rec, keys[1:], masks[1:], tmp_path / "c", progress=False)
    with pytest.raises(mc.CacheError, match="are 112x112"):
        mc.build_from_labels(synth_rec, keys, masks[:, :100], tmp_path / "c", progress=False)
    bad = masks.copy()
    bad[7, 50, 50] = 99
    with pytest.raises(mc.CacheError,
                       match=r"mask 7 \(key \d+\) holds class 99; class ids are 0\.\.24"):
        mc.build_from_labels(synth_rec, keys, bad, tmp_path / "c", progress=False)
    with pytest.raises(mc.CacheError, match="integer keys"):
        mc.build_from_labels(synth_rec, keys.astype(float), masks, tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()  # refused before anything was written


class _CacheDataset(torch.utils.data.Dataset):
    def __init__(self, cache, keys):
        self.cache, self.keys = cache, keys

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        k = int(self.keys[i])
        return k, torch.from_numpy(self.cache.get(k))


def test_random_access_in_dataloader_workers(labels_cache, gt):
    keys, masks = gt
    truth = dict(zip(keys.tolist(), masks))
    cache = mc.MaskCache(labels_cache)
    # chunks mapped before the fork
    assert np.array_equal(cache.get(int(keys[5])), truth[int(keys[5])])
    order = np.random.default_rng(0).permutation(keys)
    loader = torch.utils.data.DataLoader(_CacheDataset(cache, order), batch_size=8, num_workers=2)
    seen = 0
    for ks, ms in loader:
        for k, m in zip(ks.tolist(), ms.numpy()):
            assert np.array_equal(m, truth[k])
            seen += 1
    assert seen == len(keys)
    # spawned workers: state is the path + manifest, maps reopen lazily
    clone = pickle.loads(pickle.dumps(cache))
    assert not clone._chunks and np.array_equal(clone.get(int(keys[-1])), truth[int(keys[-1])])


def test_precompute_stores_the_parser_masks(ref_cache, synth_rec, parsers):
    cache = mc.MaskCache(ref_cache)
    reader = recordio.open_rec(synth_rec)
    images = np.stack([reader.read_image(k) for k in cache.keys.tolist()])
    # same batches
    expected = predict_masks(load_parser(parsers[0]), images, batch_size=RUN["batch_size"])
    got = np.stack([cache.get(k) for k in cache.keys.tolist()])
    assert np.array_equal(got, expected)
    m = cache.manifest
    assert (m.spec.producer.sha256 == mc.sha256_file(parsers[0])
            and m.spec.producer.kind == "checkpoint")
    # as format 2 always had it
    assert m.to_json()["inference"] == {"batch_size": 8, "device": "cpu", "amp": False}
    assert len(m.chunks) == 5 and m.missing == []
    assert mc.precompute(synth_rec, parsers[0], ref_cache,
                         run(num_workers=0, encode_workers=0)) == ref_cache


def test_refuses_another_rec_or_checkpoint(ref_cache, synth_rec, parsers, tmp_path):
    cache = mc.MaskCache(ref_cache)
    cache.check_source(synth_rec, parsers[0])
    other = synth.write_rec(tmp_path / "other", n_identities=2, images_per_identity=2, seed=5)
    with pytest.raises(mc.CacheMismatchError,
                       match=r"another record file.*fse cache build --rec .*other"):
        cache.check_source(other)
    with pytest.raises(mc.CacheMismatchError, match=r"another parser.*fse cache build .*tiny1\.pt"):
        cache.check_source(synth_rec, parsers[1])
    work = tmp_path / "cache"
    shutil.copytree(ref_cache, work)
    with pytest.raises(mc.CacheMismatchError, match="--overwrite"):
        mc.precompute(synth_rec, parsers[1], work, run(num_workers=0, encode_workers=0))
    assert mc.MaskCache(work).manifest.spec == cache.manifest.spec  # refused: left untouched
    mc.precompute(synth_rec, parsers[1], work, run(num_workers=0, encode_workers=0, overwrite=True))
    assert mc.MaskCache(work).manifest.spec.producer.sha256 == mc.sha256_file(parsers[1])
    assert cli_main(["cache", "verify", str(work), "--rec", str(other), "--quiet"]) == 2


def _damaged(ref: Path, tmp: Path, name: str) -> Path:
    d = tmp / name
    shutil.copytree(ref, d)
    return d


def test_damaged_caches_fail_clearly(ref_cache, synth_rec, tmp_path, capsys):
    chunk = Path(mc.CHUNK_DIR) / "000002.fsmc"
    d = _damaged(ref_cache, tmp_path, "truncated")
    (d / chunk).write_bytes((d / chunk).read_bytes()[:-100])
    with pytest.raises(mc.CacheError,
                       match=r"000002\.fsmc: truncated.*Rebuild it with: fse cache build --rec"):
        mc.MaskCache(d)

    d = _damaged(ref_cache, tmp_path, "missing")
    (d / chunk).unlink()
    with pytest.raises(mc.CacheError, match=r"000002\.fsmc: missing chunk 2 of 5.*fse cache build"):
        mc.MaskCache(d)

    d = _damaged(ref_cache, tmp_path, "manifest")
    (d / mc.MANIFEST).write_text('{"format": "fse-maskcache", "chunks": [')
    with pytest.raises(mc.CacheError, match=r"manifest\.json: corrupt manifest.*fse cache build"):
        mc.MaskCache(d)

    d = _damaged(ref_cache, tmp_path, "keys")
    (d / mc.KEYS_FILE).unlink()
    with pytest.raises(mc.CacheError, match=r"keys\.npy: missing"):
        mc.MaskCache(d)

    d = _damaged(ref_cache, tmp_path, "bitflip")  # same size, one byte changed inside an entry
    data = bytearray((d / chunk).read_bytes())
    ch = chunkfile.ChunkFile(ref_cache / chunk)
    pos, row = ch.span(3)[0] + 5, 2 * 16 + 3
    ch.close()
    data[pos] ^= 0x5A
    (d / chunk).write_bytes(bytes(data))
    cache = mc.MaskCache(d)
    with pytest.raises(mc.DamagedEntryError,
                       match=r"000002\.fsmc: entry 3 .*damaged: crc32 mismatch") as e:
        cache.get(int(cache.keys[row]))
    assert e.value.key == int(cache.keys[row]) and e.value.path == d / chunk
    assert cache.get(int(cache.keys[row + 1])) is not None  # the other entries are fine
    with pytest.raises(mc.CacheError, match="crc32 mismatch"):
        cache.verify()
    assert cli_main(["cache", "verify", str(d), "--rec", str(synth_rec), "--quiet"]) == 2
    assert "crc32 mismatch" in capsys.readouterr().err


def test_resume_after_sigkill_is_byte_identical(ref_cache, synth_rec, parsers, tmp_path):
    out = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os, signal
        from fse_plugin import maskcache as mc
        from fse_plugin.maskcache import build
        from fse_plugin.common.files import temporary_name
        write, n = build.atomic_write, []
        # third chunk: half written to its temporary file, then kill -9
        def dying_write(path, data):
            if path.suffix == ".fsmc":
                n.append(path)
                if len(n) == 3:
                    temporary_name(path).write_bytes(data[:len(data) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
            write(path, data)
        build.atomic_write = dying_write
        mc.precompute({str(synth_rec)!r}, {str(parsers[0])!r}, {str(out)!r},
                      mc.BuildSettings(**{RUN!r}, num_workers=1, encode_workers=1))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(), start_new_session=True)
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL
    finally:
        try:  # the killed run's DataLoader worker and encoder process, if still alive
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = sorted((out / mc.CHUNK_DIR).glob("*.fsmc"))
    assert (len(done) == 2 and list((out / mc.CHUNK_DIR).glob("*.tmp*"))
            and not (out / mc.MANIFEST).exists())
    with pytest.raises(mc.CacheError, match=r"unfinished build.*Resume it with: "
                                            r"fse cache build --rec .* --parser "):
        mc.MaskCache(out)
    kept = {p.name: p.stat().st_ino for p in done}
    mc.precompute(synth_rec, parsers[0], out, run(num_workers=0, encode_workers=0))
    # finished chunks were kept, not recomputed
    assert {p.name: p.stat().st_ino for p in done} == kept
    assert _files(out) == _files(ref_cache)


def test_torchrun_two_processes_identical(ref_cache, synth_rec, parsers, tmp_path):
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "fse_plugin", "cache", "build", "--rec", str(synth_rec), "--parser",
           str(parsers[0]), "--out", str(out), "--batch-size", "8", "--chunk-size", "16",
           "--device", "cpu", "--num-workers", "0", "--encode-workers", "0", "--quiet"]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _files(out) == _files(ref_cache)
    assert json.loads((out / mc.BUILD_INFO).read_text())["world_size"] == 2


def test_undecodable_image_is_recorded(synth_rec, parsers, tmp_path, caplog):
    caplog.set_level("INFO", "fse_plugin")
    rec = tmp_path / "rec"
    shutil.copytree(synth_rec, rec)
    reader = recordio.open_rec(rec)
    key = int(recordio.image_index(reader).keys[10])
    offset = reader.offset(key)
    reader.close()
    # wipe the JPEG start marker: record intact, image not
    with open(rec / "train.rec", "r+b") as f:
        f.seek(offset + 8 + 24)
        f.write(b"\0\0\0\0")
    out = mc.precompute(rec, parsers[0], None, run(num_workers=1, encode_workers=0))
    assert out == rec / "fse_masks"
    assert "undecodable images: 1" in caplog.text and "in 5 chunks" in caplog.text
    cache = mc.MaskCache(rec)  # a rec dir finds its default cache
    assert cache.get(key) is None and cache.get(key + 1) is not None
    batch = cache.get_runs_batch([key + 1, key])
    assert batch.missing == [1] and batch.found == [0] and not batch.damaged
    assert [d.key for d in cache.manifest.missing] == [key]
    assert "cannot decode image" in cache.manifest.missing[0].reason
    assert cache.verify(rec).missing == 1


def _spec(count: int, chunk_size: int) -> mc.CacheSpec:
    return mc.CacheSpec(112, 112, count, chunk_size, source=None, producer=None)


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_decoder_whole_batches_in_order(synth_rec, tmp_path, workers):
    """Whole batches decoded into the shared ring, in order, exactly as decode_image;
    failures zeroed and named."""
    rec = tmp_path / "rec"
    shutil.copytree(synth_rec, rec)
    reader = recordio.open_rec(rec)
    keys = recordio.image_index(reader).keys
    # record 2 of the second batch: JPEG start marker wiped
    with open(rec / "train.rec", "r+b") as f:
        f.seek(reader.offset(int(keys[6])) + 8 + 24)
        f.write(b"\0\0\0\0")
    plan = pipeline.batch_plan([0, 1, 2, 3], _spec(len(keys), 16), 4)
    assert plan[:5] == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)] and len(plan) == 16
    seen = []
    with decoding.BatchDecoder(reader, keys, plan, 112, 112, workers) as decoder:
        for batch in decoder:
            seen.append(batch.start)
            for i in range(len(batch.images)):
                if batch.start + i == 6:
                    assert (batch.errors == [(2, batch.errors[0][1])]
                            and "cannot decode image" in batch.errors[0][1])
                    assert not batch.images[i].any()
                else:
                    expected = reader.read_image(int(keys[batch.start + i]))
                    assert np.array_equal(batch.images[i], expected)
    assert seen == [s for s, _ in plan]
    out = np.empty((2, 100, 112, 3), np.uint8)  # another size: refused, named
    errors = decoding.decode_batch(reader, keys[:2].tolist(), out)
    assert [i for i, _ in errors] == [0, 1] and "image is 112x112, expected 100x112" in errors[0][1]
    assert pipeline.batch_plan([1, 3], _spec(60, 16), 6) == [(16, 22), (22, 28), (28, 32),
                                                             (48, 54), (54, 60)]


def test_batch_decoder_after_opencv_threads_went_idle(synth_rec):
    """A parent whose OpenCV pool threads sleep at fork time: workers must not touch that pool (they
    used to hang in cv2.setNumThreads), and get one thread each; the parent keeps its own."""
    import time

    import cv2
    threads = cv2.getNumThreads()
    big = np.zeros((1500, 1500, 3), np.uint8)
    for _ in range(5):
        cv2.GaussianBlur(big, (5, 5), 0)
    time.sleep(1.5)  # the pool's threads stop spinning and block
    reader = recordio.open_rec(synth_rec)
    keys = recordio.image_index(reader).keys
    with decoding.BatchDecoder(reader, keys, [(0, 8), (8, 16)], 112, 112, workers=1) as decoder:
        assert [b.start for b in decoder] == [0, 8]
    assert cv2.getNumThreads() == threads


def test_cli_info_and_verify(labels_cache, synth_rec, capsys):
    assert cli_main(["cache", "info", str(labels_cache)]) == 0
    out = capsys.readouterr().out
    assert "72 masks 112x112" in out and "bytes/mask" in out and "left_brow" in out
    assert cli_main(["cache", "info", str(labels_cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["masks"] == 72 and info["bytes_per_mask"] < 1000
    assert sum(info["class_pixel_fraction"].values()) == pytest.approx(1.0, abs=1e-4)
    assert cli_main(["cache", "verify", str(labels_cache), "--rec", str(synth_rec), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("OK: 72 masks")

"""Never a wrong mask: damage anywhere in a cache gives an error naming the file and the rebuild
command.

Sampled fuzzing (bit flips, truncations, offset edits, swapped files) bounded to a few seconds, the
build's repair of damaged caches, kills at every write, refused inputs, and the rebuild hints.
"""
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from fse_plugin import maskcache as mc
from fse_plugin import recordio
from fse_plugin.cli import main as cli_main
from fse_plugin.common.files import temporary_name
from fse_plugin.maskcache import build, chunk, settings
from fse_plugin.maskcache.manifest import manifest_bytes

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 16  # 72 synth images -> 5 chunks


@pytest.fixture(scope="module")
def gt(synth_rec):
    with np.load(synth_rec / "gt_masks.npz") as z:
        return z["keys"], z["masks"]


@pytest.fixture(scope="module")
def pristine(synth_rec, gt, tmp_path_factory):
    """A labels cache of the synth rec (contiguous keys 1..72) and the masks it must return."""
    out = mc.build_from_labels(synth_rec, *gt, tmp_path_factory.mktemp("pristine") / "cache",
                               chunk_size=CHUNK, progress=False,
                               labels_path=str(synth_rec / "gt_masks.npz"))
    return out, dict(zip(gt[0].tolist(), gt[1]))


@pytest.fixture(scope="module")
def gappy(synth_rec, gt, tmp_path_factory):
    """An im2rec-layout rec whose keys have gaps, and its labels cache
    (key -> row by binary search)."""
    reader = recordio.open_rec(synth_rec)
    rec = tmp_path_factory.mktemp("gappy")
    w = recordio.MXIndexedRecordIO(str(rec / "train.idx"), str(rec / "train.rec"), "w")
    keys = [5 * i + i % 3 for i in range(len(gt[0]))]
    for k, old in zip(keys, gt[0].tolist()):
        w.write_idx(k, reader.read(old))
    w.close()
    out = mc.build_from_labels(rec, np.array(keys), gt[1], rec / "cache", chunk_size=CHUNK,
                               progress=False)
    return out, dict(zip(keys, gt[1]))


def _files(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != mc.BUILD_INFO}


def _batch_of_one(cache: mc.MaskCache):
    """get_runs_batch([key]) as get_runs: the runs or None, its reported damage raised."""
    def read(key: int):
        batch = cache.get_runs_batch([key])
        if batch.damaged:
            raise batch.damaged[0]
        return None if batch.missing else (batch.values, batch.lengths)
    return read


def _read_both(cache: mc.MaskCache, key: int) -> tuple:
    """(get_runs(key), get(key)); get_runs and get_runs_batch must refuse a key exactly when get
    does, with the same error (get_runs_batch reports a damaged entry instead of raising), which is
    then raised."""
    results, errors = [], []
    for read in (cache.get_runs, cache.get, _batch_of_one(cache)):
        try:
            results.append(read(key))
            errors.append(None)
        except mc.CacheError as e:
            errors.append(e)
    assert ([type(e) for e in errors] == [type(errors[0])] * 3
            and len({str(e) for e in errors}) == 1), errors
    if errors[0] is not None:
        raise errors[1]
    assert (results[2] is None if results[0] is None
            else all(map(np.array_equal, results[0], results[2])))
    return tuple(results[:2])


def _outcome(d: Path, truth: dict) -> str:
    """'read' if opening or a get refused, 'check' if only check() did, else 'none';
    never a wrong mask.

    Every refusal must be a CacheError naming a file of the cache and the command that rebuilds it
    (or resumes its build); that command's --rec is a placeholder only where the damage took the
    path itself.
    """
    try:
        try:
            with mc.MaskCache(d) as cache:
                for k, m in truth.items():
                    runs, got = _read_both(cache, k)
                    assert got is not None and np.array_equal(got, m), (
                        f"{d}: wrong mask for key {k}")
                    assert np.array_equal(np.repeat(*runs), m.ravel()), (
                        f"{d}: wrong runs for key {k}")
        except mc.CacheError as e:
            where = "read"
            msg = str(e)
        else:
            with mc.MaskCache(d) as cache:
                cache.check()
            return "none"
    except mc.CacheError as e:
        where, msg = "check", str(e)
    assert str(d) in msg and ("Rebuild it with: fse cache build --rec " in msg
                              or "Resume it with" in msg), msg
    assert f"--out {d}" in msg or "Resume it with" in msg, msg
    return where


def _flip(path: Path, pos: int, bit: int) -> bytes:
    data = path.read_bytes()
    changed = bytearray(data)
    changed[pos] ^= 1 << bit
    path.write_bytes(bytes(changed))
    return data


def _chunk_layout(path: Path) -> tuple[int, int]:
    """(start of the table, start of the data) of a chunk file."""
    head = chunk.HEAD.unpack_from(path.read_bytes())
    rows, meta_len = head[5], head[8]
    table = chunk.HEAD.size + meta_len
    return table, table + 4 * (2 * rows + 2)


def test_single_bit_flips_anywhere_are_caught(pristine, gappy, tmp_path):
    """~1,300 sampled flips: every structural byte of one chunk, samples of all data,
    keys.npy and the manifest."""
    rng = np.random.default_rng(0)
    outcomes = {}
    for source, truth, n_manifest, n_keys in ((pristine, pristine[1], 160, 100),
                                              (gappy, gappy[1], 40, 100)):
        d = tmp_path / source[0].parent.name
        shutil.copytree(source[0], d)
        targets = [(d / mc.MANIFEST,
                    rng.choice((d / mc.MANIFEST).stat().st_size, n_manifest, replace=False)),
                   (d / mc.KEYS_FILE,
                    rng.choice((d / mc.KEYS_FILE).stat().st_size, n_keys, replace=False))]
        for c, path in enumerate(sorted((d / mc.CHUNK_DIR).glob("*.fsmc"))):
            table, data = _chunk_layout(path)
            size = path.stat().st_size
            if c == 0 and source is pristine:  # every byte before the data, and the end marker
                targets.append((path, np.r_[np.arange(data), np.arange(size - 8, size),
                                            rng.choice(np.arange(data, size - 8), 150,
                                                       replace=False)]))
            else:
                targets.append((path, rng.choice(size, 40, replace=False)))
        for path, positions in targets:
            for pos in positions.tolist():
                original = _flip(path, pos, int(rng.integers(8)))
                outcomes[(path.name, pos)] = _outcome(d, truth)
                path.write_bytes(original)
    assert len(outcomes) > 1200
    assert "none" not in outcomes.values(), [k for k, v in outcomes.items() if v == "none"][:10]
    chunk_flips = [v for (name, _), v in outcomes.items() if name.endswith(".fsmc")]
    # a damaged chunk byte is refused by the read that would use it
    assert set(chunk_flips) == {"read"}


def test_truncations_and_offset_edits_are_caught(pristine, tmp_path):
    d = tmp_path / "cache"
    shutil.copytree(pristine[0], d)
    truth = pristine[1]
    for path in [d / mc.MANIFEST, d / mc.KEYS_FILE, *sorted((d / mc.CHUNK_DIR).glob("*.fsmc"))]:
        original = path.read_bytes()
        for cut in sorted({0, 1, 8, len(original) // 2, len(original) - 9, len(original) - 1}):
            path.write_bytes(original[:cut])
            assert _outcome(d, truth) != "none", (path, cut)
        path.write_bytes(original)
    # row r pointed at row r-1's entry (zlib alone decodes it cleanly: the neighbour's mask)
    path = d / mc.CHUNK_DIR / "000001.fsmc"
    original = path.read_bytes()
    table, data = _chunk_layout(path)
    offsets = np.frombuffer(original, "<u4", CHUNK + 1, table).copy()
    for r in range(1, CHUNK):
        # True: as if the edit had been made with the checksum redone
        for fix_table_crc in (False, True):
            edited = bytearray(original)
            bad = offsets.copy()
            bad[r] = offsets[r - 1]
            edited[table:table + 4 * (CHUNK + 1)] = bad.astype("<u4").tobytes()
            if fix_table_crc:
                edited[data - 4:data] = struct.pack("<I", zlib.crc32(bytes(edited[:data - 4])))
            path.write_bytes(bytes(edited))
            assert _outcome(d, truth) == "read"
    path.write_bytes(original)
    assert _outcome(d, truth) == "none"


def test_swapped_and_edited_files_are_caught(pristine, gappy, synth_rec, gt, tmp_path):
    d = tmp_path / "cache"
    shutil.copytree(pristine[0], d)
    truth = pristine[1]
    other = mc.build_from_labels(synth_rec, gt[0], 24 - gt[1], tmp_path / "other",
                                 chunk_size=CHUNK, progress=False)
    one, two = d / mc.CHUNK_DIR / "000001.fsmc", d / mc.CHUNK_DIR / "000002.fsmc"
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b)  # swapped within the cache
    two.write_bytes(a)
    assert _outcome(d, truth) == "read"
    one.write_bytes(a)
    two.write_bytes(b)
    for name in (mc.MANIFEST, f"{mc.CHUNK_DIR}/000003.fsmc"):  # from another cache of the same rec
        mine = (d / name).read_bytes()
        shutil.copy(other / name, d / name)
        assert _outcome(d, truth) != "none", name
        (d / name).write_bytes(mine)
    shutil.copy(gappy[0] / mc.KEYS_FILE, d / mc.KEYS_FILE)  # keys of another rec
    assert _outcome(d, truth) == "read"
    shutil.copy(pristine[0] / mc.KEYS_FILE, d / mc.KEYS_FILE)

    m = json.loads((d / mc.MANIFEST).read_bytes())  # the edit: "first": 1 -> 3
    m["keys"]["first"] = 3
    (d / mc.MANIFEST).write_text(json.dumps(m, indent=1, sort_keys=True))
    with pytest.raises(mc.CacheError, match="checksum mismatch"):
        mc.MaskCache(d)
    (d / mc.MANIFEST).write_bytes(manifest_bytes(m))  # the same edit with the checksum redone
    with pytest.raises(mc.CacheError,
                       match=r"manifest\.json: keys 3\.\.72 \(contiguous True\) cannot be 72"):
        mc.MaskCache(d)
    m["keys"]["last"] = 74  # ... and made consistent: keys.npy disagrees
    (d / mc.MANIFEST).write_bytes(manifest_bytes(m))
    with pytest.raises(mc.CacheError,
                       match=r"keys\.npy: keys run 1\.\.72, the manifest says 3\.\.74"):
        mc.MaskCache(d)

    g = tmp_path / "gappy"
    shutil.copytree(gappy[0], g)
    keys = np.load(g / mc.KEYS_FILE)
    np.save(g / mc.KEYS_FILE, keys + 3)  # the keys.npy shifted by 3
    assert _outcome(g, gappy[1]) == "read"
    keys[10] -= 1  # one key moved inside a gap: still ascending, first and last unchanged
    np.save(g / mc.KEYS_FILE, keys)
    with pytest.raises(mc.CacheError, match=r"keys\.npy: sha256 differs"):
        mc.MaskCache(g).get(int(keys[20]))


def _crafted(pristine, tmp_path, entries: dict[int, bytes]) -> Path:
    """A copy of the pristine cache whose chunk 0 holds ``entries`` (row -> bytes) in place of its
    own, every checksum redone: damage written as if sound."""
    d = tmp_path / "cache"
    shutil.copytree(pristine[0], d)
    m = json.loads((d / mc.MANIFEST).read_bytes())
    path = d / m["chunks"][0]["file"]
    ch = chunk.ChunkFile(path)
    rows = [entries[i] if i in entries else bytes(ch.entry(i)) for i in range(ch.rows)]
    data = chunk.chunk_bytes(bytes.fromhex(m["spec_id"]), 0, 0, 112, 112, chunk.Entries.of(rows),
                             ch.meta())
    ch.close()
    path.write_bytes(data)
    m["chunks"][0].update(bytes=len(data),
                          crc32=struct.unpack_from("<I", data, _chunk_layout(path)[1] - 4)[0])
    (d / mc.MANIFEST).write_bytes(manifest_bytes(m))
    return d


def test_zlib_bomb_is_refused_at_the_mask_size(pristine, tmp_path):
    bomb = zlib.compress(b"\0" * (400 << 10), 9)
    with pytest.raises(ValueError, match="longer than a mask"):
        mc.decode_mask(bomb, 112, 112)
    d = _crafted(pristine, tmp_path, {0: bomb})
    for read in (mc.MaskCache(d).get, mc.MaskCache(d).get_runs, _batch_of_one(mc.MaskCache(d))):
        with pytest.raises(mc.DamagedEntryError,
                           match="entry 0 .* does not decode: run stream longer than a mask"):
            read(1)


def test_runs_that_do_not_cover_the_mask_are_damaged_in_a_batch_too(pristine, tmp_path):
    """An entry whose crc32 matches but whose runs cover another size (written damaged): every read
    refuses it with one message; a batch still returns the other keys' masks."""
    short = mc.encode_masks(np.zeros((1, 112, 111), np.uint8))[0]
    cache = mc.MaskCache(_crafted(pristine, tmp_path, {1: short}))
    expected = (r"entry 1 \(row 1, key 2\) does not decode: "
                r"runs cover 12432 pixels, expected 112x112")
    with pytest.raises(mc.DamagedEntryError, match=expected) as e:
        _read_both(cache, 2)
    batch = cache.get_runs_batch(np.array([3, 2, 1]))
    assert list(batch.damaged) == [1] and batch.damaged[1].key == 2
    assert str(batch.damaged[1]) == str(e.value) and batch.found == [0, 2] and batch.missing == []
    assert all(np.array_equal(got, pristine[1][k]) for got, k in zip(batch.masks(), (3, 1)))


def test_old_format_names_the_exact_command(pristine, synth_rec, tmp_path):
    d = tmp_path / "cache"
    shutil.copytree(pristine[0], d)
    m = json.loads((d / mc.MANIFEST).read_bytes())
    m["format_version"] = 1
    (d / mc.MANIFEST).write_text(json.dumps(m))
    cmd = (f"fse cache build --rec {synth_rec.resolve()} "
           f"--from-labels {(synth_rec / 'gt_masks.npz').resolve()} --out {d}")
    with pytest.raises(mc.CacheError, match="format-1") as e:
        mc.MaskCache(d)
    assert str(e.value).endswith(f"Rebuild it with: {cmd}")
    with np.load(synth_rec / "gt_masks.npz") as z:  # doing what it says replaces it
        mc.build_from_labels(synth_rec, z["keys"], z["masks"], d, chunk_size=CHUNK, progress=False,
                             labels_path=str(synth_rec / "gt_masks.npz"))
    assert json.loads((d / mc.MANIFEST).read_bytes())["format_version"] == mc.FORMAT_VERSION


def test_damaged_entry_error_and_check(pristine, tmp_path):
    d = tmp_path / "cache"
    shutil.copytree(pristine[0], d)
    e = mc.DamagedEntryError("x: damaged", key=7, path=d / "c")
    back = pickle.loads(pickle.dumps(e))  # DataLoader workers hand it to the main process
    assert ((back.key, back.path, str(back)) == (7, d / "c", "x: damaged")
            and isinstance(back, mc.CacheError))
    mc.MaskCache(d).check()
    path = d / mc.CHUNK_DIR / "000004.fsmc"
    _flip(path, chunk.HEAD.size + 3, 0)  # chunk metadata
    cache = mc.MaskCache(d)  # opening stays cheap: sizes only
    with pytest.raises(mc.DamagedEntryError,
                       match=r"000004\.fsmc: header/offset table crc32 mismatch") as e:
        cache.check()
    assert e.value.path == path and e.value.key is None
    for read in (cache.get, cache.get_runs, _batch_of_one(cache)):
        with pytest.raises(mc.DamagedEntryError) as e:
            read(70)
        assert e.value.key == 70 and e.value.path == path
        assert read(5) is not None
    batch = cache.get_runs_batch([70, 5, 71])  # the chunk's other keys too; the rest still come
    assert sorted(batch.damaged) == [0, 2] and batch.found == [1] and batch.damaged[2].key == 71


# ---------------------------------------------------------------------------------------- build

def test_build_repairs_only_what_is_damaged(pristine, synth_rec, gt, tmp_path, caplog):
    caplog.set_level("INFO", "fse_plugin")
    d = tmp_path / "cache"
    shutil.copytree(pristine[0], d)
    chunks = sorted((d / mc.CHUNK_DIR).glob("*.fsmc"))
    inodes = {p.name: p.stat().st_ino for p in chunks}
    args = dict(chunk_size=CHUNK, progress=False, labels_path=str(synth_rec / "gt_masks.npz"))
    (d / mc.BUILD_SPEC).write_text("{}")  # as left by a kill just after the manifest was written
    (d / f"{mc.KEYS_FILE}.tmp99").write_bytes(b"half")  # as left by a kill during the merge
    mc.build_from_labels(synth_rec, *gt, d, **args)
    assert "complete, every byte checked" in caplog.text
    assert not (d / mc.BUILD_SPEC).exists() and not list(d.glob("*.tmp*"))
    assert {p.name: p.stat().st_ino for p in chunks} == inodes

    _flip(chunks[2], _chunk_layout(chunks[2])[1] + 100, 3)  # one entry
    chunks[3].unlink()
    _flip(d / mc.KEYS_FILE, 200, 1)
    caplog.clear()
    mc.build_from_labels(synth_rec, *gt, d, **args)
    assert "recomputing what is damaged or missing" in caplog.text
    assert _files(d) == _files(pristine[0])
    kept = {p.name: p.stat().st_ino for p in chunks}
    assert ([n for n in inodes if kept[n] == inodes[n]]
            == ["000000.fsmc", "000001.fsmc", "000004.fsmc"])


def _dying_build(n: int, synth_rec: Path, out: Path) -> None:
    """Child process: build, and die by kill -9 in the middle of the n-th file write (half of it in
    the temporary file), as a power cut or the OOM killer would: no cleanup code runs."""
    write, calls = build.atomic_write, []

    def dying_write(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == n:
            temporary_name(path).write_bytes(data[:len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        write(path, data)
    build.atomic_write = dying_write
    with np.load(synth_rec / "gt_masks.npz") as z:
        mc.build_from_labels(synth_rec, z["keys"], z["masks"], out, chunk_size=CHUNK,
                             progress=False, labels_path=str(synth_rec / "gt_masks.npz"))


def test_no_temporary_file_survives_a_kill(pristine, synth_rec, tmp_path):
    """kill -9 in each file write (build_spec, 5 chunks, keys, build_info, manifest),
    then the same command."""
    npz = synth_rec / "gt_masks.npz"
    for n in range(1, 10):
        out = tmp_path / f"kill{n}"
        child = multiprocessing.get_context("fork").Process(target=_dying_build,
                                                            args=(n, synth_rec, out))
        child.start()
        child.join(60)
        assert child.exitcode == -signal.SIGKILL and list(out.rglob("*.tmp*")), n
        with np.load(npz) as z:
            mc.build_from_labels(synth_rec, z["keys"], z["masks"], out, chunk_size=CHUNK,
                                 progress=False, labels_path=str(npz))
        assert not list(out.rglob("*.tmp*")) and not (out / mc.BUILD_SPEC).exists(), n
        assert _files(out) == _files(pristine[0]) and (out / mc.BUILD_INFO).is_file(), n


def test_labels_path_spelt_two_ways_gives_one_cache(synth_rec, tmp_path, monkeypatch):
    """(Refused flags and files of ``fse cache build``: tests/test_bad_input_cache.py.)"""
    # --from-labels spelt two ways: the same bytes, a canonical path recorded
    monkeypatch.chdir(synth_rec)
    outs = [tmp_path / "rel", tmp_path / "abs"]
    assert cli_main(["cache", "build", "--rec", ".", "--from-labels", "gt_masks.npz",
                     "--out", str(outs[0]), "--quiet"]) == 0
    assert cli_main(["cache", "build", "--rec", str(synth_rec), "--from-labels",
                     str(synth_rec / "gt_masks.npz"), "--out", str(outs[1]), "--quiet"]) == 0
    assert _files(outs[0]) == _files(outs[1])
    assert (mc.MaskCache(outs[0]).manifest.meta["labels_path"]
            == str((synth_rec / "gt_masks.npz").resolve()))


def test_idx_keys_out_of_int64_are_refused(tmp_path):
    idx = tmp_path / "train.idx"
    (tmp_path / "train.rec").write_bytes(
        recordio.encode_record(recordio.pack(recordio.IRHeader(0, 1.0, 0, 0), b"x")))
    idx.write_text("0\t0\n99999999999999999999\t0\n")
    with pytest.raises(recordio.RecordIOError,
                       match=r"train\.idx: line 2: .* outside the 64-bit integer range"):
        recordio.open_rec(tmp_path)
    # the largest key is fine (and not confused with saturation)
    idx.write_text(f"0\t0\n{2**63 - 1}\t0\n")
    assert recordio.open_rec(tmp_path).keys.tolist() == [0, 2**63 - 1]


def test_hints_are_absolute_and_never_replace_a_valid_cache(pristine, synth_rec, tmp_path,
                                                            monkeypatch):
    from fse_plugin import synth
    other = synth.write_rec(tmp_path / "other", n_identities=2, images_per_identity=2, seed=5)
    cache = mc.MaskCache(pristine[0])
    # another rec's valid cache, configured by mistake
    with pytest.raises(mc.CacheMismatchError) as e:
        cache.check_source(other)
    assert (f"--out {os.path.abspath(other / 'fse_masks')}" in str(e.value)
            and "--overwrite" not in str(e.value))

    # a copy of synth_rec's cache inside other/: still valid for synth_rec
    copied = other / "fse_masks"
    shutil.copytree(pristine[0], copied)
    with pytest.raises(mc.CacheMismatchError) as e:
        mc.MaskCache(copied).check_source(other)
    assert "It is the valid cache of" in str(e.value) and "--overwrite" not in str(e.value)
    assert f"--out {os.path.abspath(other / 'fse_masks_new')}" in str(e.value)

    moved = tmp_path / "moved"  # the rec it was built from is gone: the cache is valid for nothing
    shutil.copytree(synth_rec, moved)
    with np.load(moved / "gt_masks.npz") as z:
        mc.build_from_labels(moved, z["keys"], z["masks"], chunk_size=CHUNK, progress=False)
    (moved / "train.rec").rename(moved / "old.rec")
    (moved / "train.idx").rename(moved / "old.idx")
    shutil.copy(other / "train.rec", moved / "train.rec")
    shutil.copy(other / "train.idx", moved / "train.idx")
    with pytest.raises(mc.CacheMismatchError) as e:
        mc.MaskCache(moved / "fse_masks").check_source(moved)
    assert (f"--out {os.path.abspath(moved / 'fse_masks')} --chunk-size 16 --overwrite"
            in str(e.value))

    monkeypatch.chdir(tmp_path)  # relative paths typed by the user come back absolute
    assert mc.rebuild_command("c", "r", "p.pt") == (f"fse cache build --rec {tmp_path / 'r'} "
                                                    f"--parser {tmp_path / 'p.pt'} "
                                                    f"--out {tmp_path / 'c'}")


def test_default_workers_fit_the_machine():
    assert settings.default_workers(1) == (1, 1) and settings.default_workers(2) == (1, 1)
    assert settings.default_workers(4) == (2, 1) and settings.default_workers(16) == (6, 4)
    cpus = len(os.sched_getaffinity(0))
    # torch warns about more DataLoader workers than cores
    assert settings.default_workers()[0] <= cpus


def test_reader_path_imports_no_build_machinery():
    code = ("import sys, fse_plugin.maskcache as mc; mc.MaskCache; "
            "bad = {'fse_plugin.maskcache.' + m "
            "for m in ('build', 'pipeline', 'decoding', 'encoding', 'inference')}; "
            "bad |= {'concurrent.futures.process', 'multiprocessing.pool', 'fse_plugin.parsing'}; "
            "bad &= set(sys.modules); "
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# where the build is when Ctrl-C comes: code the child runs to press it there, deterministically
_INTERRUPT = {
    "first child started (an encode process)": "after_start(1)",
    "last child started (a decode process)": "after_start(3)",
    "second batch at the parser": "at_launch(2)",
}


@pytest.mark.parametrize("when", list(_INTERRUPT))
def test_ctrl_c_is_one_line(synth_rec, tmp_path, when):
    """A terminal's Ctrl-C (SIGINT to the whole process group) while the build starts its 1 encode
    and 2 decode processes, or mid-build: one line, exit status 130, no traceback of any process, an
    unfinished build that readers recognise. The child sends the signal itself at the point named,
    so nothing depends on timing."""
    out = tmp_path / "cache"
    ckpt = tmp_path / "tiny.pt"
    script = textwrap.dedent(f"""
        import multiprocessing.process, os, signal, sys, time, torch
        from fse_plugin.cli import main
        from fse_plugin.maskcache import pipeline
        from fse_plugin.parsing import UNetRes18, save_parser
        torch.manual_seed(0)
        save_parser(UNetRes18(feature_scale=16), {str(ckpt)!r})

        def press():  # Ctrl-C: SIGINT to every process of the group, this one included
            os.killpg(0, signal.SIGINT)
            time.sleep(30)  # the interrupt lands here at the latest (or when a deferred block ends)

        def after_start(n, starts=[0], start=multiprocessing.process.BaseProcess.start):
            def patched(self):
                start(self)
                starts[0] += 1
                if starts[0] == n:
                    # the parent may be deferring it: the build goes on until then
                    os.killpg(0, signal.SIGINT)
            multiprocessing.process.BaseProcess.start = patched

        def at_launch(n, calls=[0], launch=pipeline.Inference.launch):
            def patched(self, images):
                calls[0] += 1
                if calls[0] == n:
                    press()
                return launch(self, images)
            pipeline.Inference.launch = patched

        {_INTERRUPT[when]}
        sys.exit(main(["cache", "build", "--rec", {str(synth_rec)!r}, "--parser", {str(ckpt)!r},
                       "--out", {str(out)!r}, "--batch-size", "4", "--device", "cpu",
                       "--num-workers", "2", "--encode-workers", "1", "--quiet"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["fse cache build: interrupted"], err
    with pytest.raises(mc.CacheError, match="unfinished build.*Resume it with: fse cache build"):
        mc.MaskCache(out)

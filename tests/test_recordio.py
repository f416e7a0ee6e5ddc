"""fse_plugin.recordio against real mxnet 1.9.1 files, dmlc-core's chunk layout, and bad input."""
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fse_plugin import recordio as R

FIXTURES = ["ms1m_style", "list_style", "mask_param_style", "odd_lengths"]
M = struct.pack("<I", R.MAGIC)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def chunk(cflag: int, data: bytes) -> bytes:
    """One dmlc-core chunk head + data (no padding), written out by hand from recordio.h."""
    return struct.pack("<II", 0xCED7230A, cflag << 29 | len(data)) + data


def expected(fixtures_dir: Path, name: str) -> list[dict]:
    return json.loads((fixtures_dir / "mxnet" / name / "expected.json").read_text())["records"]


def copy_fixture(fixtures_dir: Path, name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    shutil.copytree(fixtures_dir / "mxnet" / name, out)
    for p in out.iterdir():
        p.chmod(0o644)
    return out


def write_rec(tmp_path: Path, payloads, keys=None, name="t", key_type=int) -> tuple[Path, Path]:
    rec, idx = tmp_path / f"{name}.rec", tmp_path / f"{name}.idx"
    with R.MXIndexedRecordIO(idx, rec, "w", key_type=key_type) as w:
        for k, p in zip(keys if keys is not None else range(len(payloads)), payloads):
            w.write_idx(k, p)
    return rec, idx


# ------------------------------------------------------------------------------- mxnet fixtures
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_records_match_mxnet(fixtures_dir, name):
    exp = expected(fixtures_dir, name)
    d = fixtures_dir / "mxnet" / name
    reader = R.open_rec(d)
    mx = R.MXIndexedRecordIO(str(d / "train.idx"), str(d / "train.rec"), "r")
    assert sorted(reader.keys.tolist()) == sorted(e["key"] for e in exp)
    assert reader.keys.dtype == np.int64 and list(mx.keys) == reader.keys.tolist()
    for e in exp:
        buf = reader.read(e["key"])
        assert buf == mx.read_idx(e["key"])
        assert len(buf) == e["record_len"] and sha(buf) == e["record_sha256"]
        header, payload = R.unpack(buf)
        assert (header.flag, header.id, header.id2) == (e["flag"], e["id"], e["id2"])
        assert (np.asarray(header.label, np.float32).tolist()
                == np.asarray(e["label"], np.float32).tolist())
        assert len(payload) == e["payload_len"] and sha(payload) == e["payload_sha256"]
        fast = reader.read_header(e["key"])
        assert (fast.flag == header.flag and fast.id == header.id
                and np.array_equal(fast.label, header.label))
        if "image_sha256_bgr" in e:
            _, img = R.unpack_img(buf)
            assert (list(img.shape) == e["image_shape"]
                    and sha(img.tobytes()) == e["image_sha256_bgr"])
            assert np.array_equal(R.decode_image(payload), img[..., ::-1])
    # file order == .idx order for mxnet-written files
    seq = R.MXRecordIO(str(d / "train.rec"), "r")
    offsets = np.argsort(reader.offsets)
    for k in reader.keys[offsets]:
        assert seq.read() == reader.read(k)
    assert seq.read() is None
    seq.close(), mx.close(), reader.close()


@pytest.mark.parametrize("name", FIXTURES)
def test_writer_reproduces_fixture_bytes(fixtures_dir, name, tmp_path):
    d = fixtures_dir / "mxnet" / name
    exp = {e["key"]: e for e in expected(fixtures_dir, name)}
    with R.open_rec(d) as reader:
        keys = reader.keys.tolist()
        records = [reader.read(k) for k in keys]
    rebuilt = []  # pack() from the header fields alone must give mxnet's record bytes
    for k, buf in zip(keys, records):
        e = exp[k]
        packed = R.pack(R.IRHeader(e["flag"], e["label"], e["id"], e["id2"]), R.unpack(buf)[1])
        assert sha(packed) == e["record_sha256"]
        rebuilt.append(packed)
    rec, idx = write_rec(tmp_path, rebuilt, keys)
    assert rec.read_bytes() == (d / "train.rec").read_bytes()
    assert idx.read_text() == (d / "train.idx").read_text()


# ------------------------------------------------------------------------------- split records
SPLIT_CASES = [  # payload -> chunks derived by hand from dmlc-core's WriteRecord
    (b"", chunk(0, b"")),
    (b"abc", chunk(0, b"abc") + b"\0"),
    (b"AA" + M + b"B", chunk(0, b"AA" + M + b"B") + b"\0"),  # unaligned magic: no split
    (b"AAAA" + M + b"BBBBBB", chunk(1, b"AAAA") + chunk(3, b"BBBBBB") + b"\0\0"),
    (M + b"xy", chunk(1, b"") + chunk(3, b"xy") + b"\0\0"),
    (b"AAAA" + M, chunk(1, b"AAAA") + chunk(3, b"")),
    (M, chunk(1, b"") + chunk(3, b"")),
    (M + M, chunk(1, b"") + chunk(2, b"") + chunk(3, b"")),
    (b"abcd" + M + b"efgh" + M + b"ij",
     chunk(1, b"abcd") + chunk(2, b"efgh") + chunk(3, b"ij") + b"\0\0"),
    (b"x" + M + b"yyy" + M + b"z", chunk(1, b"x" + M + b"yyy") + chunk(3, b"z") + b"\0\0\0"),
]


def test_split_records_match_dmlc_layout(tmp_path):
    payloads = [p for p, _ in SPLIT_CASES]
    rec, idx = write_rec(tmp_path, payloads)
    assert rec.read_bytes() == b"".join(c for _, c in SPLIT_CASES)
    for p, c in SPLIT_CASES:
        assert R.encode_record(p) == c
    offsets = np.cumsum([0] + [len(c) for _, c in SPLIT_CASES[:-1]])
    assert idx.read_text() == "".join(f"{k}\t{o}\n" for k, o in enumerate(offsets))
    reader = R.RecordReader(rec, idx)
    assert [reader.read(k) for k in range(len(payloads))] == payloads
    seq = R.MXRecordIO(rec, "r")
    assert [seq.read() for _ in payloads] == payloads and seq.read() is None
    seq.reset()
    assert seq.read() == payloads[0]


def random_payloads(rng: np.random.Generator, n: int, max_len: int) -> list[bytes]:
    """Random payloads with up to 3 magic words planted at any (aligned or unaligned) position."""
    out = []
    for _ in range(n):
        b = bytearray(rng.bytes(int(rng.integers(0, max_len))))
        for _ in range(int(rng.integers(0, 4))):
            if len(b) >= 4:
                p = int(rng.integers(0, len(b) - 3))
                b[p:p + 4] = M
        out.append(bytes(b))
    return out


def test_split_records_random_round_trip(tmp_path):
    payloads = random_payloads(np.random.default_rng(0), 300, 200)
    rec, idx = write_rec(tmp_path, payloads)
    reader = R.RecordReader(rec, idx)
    data = rec.read_bytes()
    for k, p in enumerate(payloads):
        assert reader.read(k) == p
        aligned = sum(p[i:i + 4] == M for i in range(0, len(p) - 3, 4))
        n_chunks, pos = 0, int(reader.offset(k))
        while True:  # walk the chunks: one per aligned magic plus one
            n_chunks += 1
            cflag, length = (data[pos + 4:pos + 8][3] >> 5,
                             struct.unpack_from("<I", data, pos + 4)[0] & (2**29 - 1))
            pos += 8 + (length + 3) // 4 * 4
            if cflag in (0, 3):
                break
        assert n_chunks == aligned + 1
    assert pos == len(data)


def test_header_split_by_magic_is_read_right(tmp_path):
    """id == magic puts the magic word at record byte 8: the header itself is split."""
    payloads = [R.pack(R.IRHeader(0, 3.0, R.MAGIC, 0), b"img"),
                R.pack(R.IRHeader(0, [4.0, 1.0], 1, R.MAGIC), b"")]
    rec, idx = write_rec(tmp_path, payloads)
    reader = R.RecordReader(rec, idx)
    assert reader.read_header(0) == R.IRHeader(0, 3.0, R.MAGIC, 0)
    h = reader.read_header(1)
    assert (h.flag, h.label.tolist(), h.id2) == (2, [4.0, 1.0], R.MAGIC)
    ii = R.image_index(reader)
    assert ii.keys.tolist() == [0] and ii.labels.tolist() == [3] and ii.layout == "im2rec"


# ------------------------------------------------------------------------------- layouts
def expected_image_index(exp: list[dict]) -> tuple[list[int], list[int]]:
    """What MXFaceDataset means to read, derived from expected.json's fields."""
    by_key = {e["key"]: e for e in exp}
    first = lambda e: e["label"][0] if isinstance(e["label"], list) else e["label"]  # noqa: E731
    rec0 = by_key.get(0)
    if rec0 and rec0["flag"] == 2 and rec0["payload_len"] == 0:
        keys = list(range(1, int(rec0["label"][0])))
    else:
        keys = [e["key"] for e in exp if e["payload_len"] > 0]
    return keys, [int(first(by_key[k])) for k in keys]


@pytest.mark.parametrize("name, layout", [("ms1m_style", "insightface"), ("list_style", "im2rec"),
                                          ("mask_param_style", "multilabel"),
                                          ("odd_lengths", "im2rec")])
def test_image_index_layouts(fixtures_dir, name, layout):
    keys, labels = expected_image_index(expected(fixtures_dir, name))
    ii = R.image_index(fixtures_dir / "mxnet" / name)
    assert ii.layout == layout
    assert ii.keys.dtype == np.int64 and ii.labels.dtype == np.int64
    assert ii.keys.tolist() == keys and ii.labels.tolist() == labels
    if name == "ms1m_style":
        assert keys == list(range(1, 13)) and labels == [0] * 4 + [1] * 4 + [2] * 4
    if name == "mask_param_style":
        assert keys == list(range(6)) and labels == [5, 5, 6, 6, 7, 7]


def test_image_index_rejects_inconsistent_input(tmp_path):
    img = b"\xff\xd8jpeg"
    rec, idx = write_rec(tmp_path, [R.pack(R.IRHeader(0, [5, 7], 0, 0), b""),
                                    R.pack(R.IRHeader(0, 0, 1, 0), img)], name="hdr")
    with pytest.raises(R.RecordIOError, match=r"key 0 .*key 2 is not in"):
        R.image_index(R.RecordReader(rec, idx))
    rec, idx = write_rec(tmp_path, [R.pack(R.IRHeader(0, 1.5, 0, 0), img)], name="frac")
    with pytest.raises(R.RecordIOError, match=r"frac.rec: key 0 at offset 0: label 1.5"):
        R.image_index(R.RecordReader(rec, idx))
    rec, idx = write_rec(tmp_path, [b"short"], name="short")
    with pytest.raises(R.RecordIOError,
                       match=r"short.rec: key 0 at offset 0: .*shorter than its image header"):
        R.image_index(R.RecordReader(rec, idx))


def test_image_index_skips_records_without_image(tmp_path):
    img = b"\xff\xd8jpeg"
    records = {1: R.pack(R.IRHeader(0, 0, 1, 0), img), 2: R.pack(R.IRHeader(0, 0, 2, 0), b""),
               3: R.pack(R.IRHeader(0, 1, 3, 0), img), 4: R.pack(R.IRHeader(0, [1, 4], 4, 0), b""),
               0: R.pack(R.IRHeader(0, [4, 5], 0, 0), b"")}
    rec, idx = write_rec(tmp_path, list(records.values()), list(records))
    ii = R.image_index(R.RecordReader(rec, idx))
    assert (ii.layout == "insightface" and ii.keys.tolist() == [1, 3]
            and ii.labels.tolist() == [0, 1])


def test_image_index_empty_rec(tmp_path):
    rec, idx = write_rec(tmp_path, [])
    ii = R.image_index(R.RecordReader(rec, idx))
    assert len(ii.keys) == 0 and ii.layout == "im2rec"


# ------------------------------------------------------------------------------- index parsing
@pytest.mark.parametrize("order", ["dense", "insightface", "shuffled", "negative"])
def test_index_lookup(tmp_path, order):
    n = 5000
    keys = {"dense": np.arange(n), "insightface": np.r_[np.arange(1, n), 0],
            "shuffled": np.random.default_rng(0).permutation(n) * 3,
            "negative": np.arange(-n // 2, n - n // 2)}[order]
    offsets = np.arange(n) * 12
    rec = tmp_path / "t.rec"
    rec.write_bytes(b"".join(chunk(0, b"abcd") for _ in range(n)))
    idx = tmp_path / "t.idx"
    text = "".join(f"{k}\t{o}\n" for k, o in zip(keys.tolist(), offsets.tolist()))
    idx.write_text(text[:-1] if order == "dense" else text)  # a last line without newline is fine
    r = R.RecordReader(rec, idx)
    assert r.keys.tolist() == keys.tolist() and r.offsets.tolist() == offsets.tolist()
    for k, o in zip(keys[::97].tolist(), offsets[::97].tolist()):
        assert r.offset(k) == o and k in r and r.read(k) == b"abcd"
    missing = np.array([keys.max() + 1, keys.min() - 1, 10**12])
    assert r._index.positions(np.r_[keys[:50], missing]).tolist() == list(range(50)) + [-1] * 3
    with pytest.raises(R.RecordIOError, match="not in index"):
        r.read(int(keys.max()) + 1)
    mx = R.MXIndexedRecordIO(idx, rec, "r")
    assert (mx.idx[int(keys[7])] == offsets[7] and len(mx.idx) == n
            and mx.read_idx(int(keys[-1])) == b"abcd")


def test_string_keys(tmp_path):
    rec, idx = write_rec(tmp_path, [b"one", b"two"], keys=["a", "b"], key_type=str)
    r = R.MXIndexedRecordIO(idx, rec, "r", key_type=str)
    assert r.keys == ["a", "b"] and r.read_idx("b") == b"two" and r.idx["a"] == 0


# ------------------------------------------------------------------------------- bad input
def test_missing_files(tmp_path, fixtures_dir):
    with pytest.raises(R.RecordIOError, match="nope.rec"):
        R.RecordReader(tmp_path / "nope.rec")
    with pytest.raises(R.RecordIOError, match="nope.rec"):
        R.MXIndexedRecordIO(tmp_path / "nope.idx", tmp_path / "nope.rec", "r")
    with pytest.raises(R.RecordIOError, match="train.rec"):
        R.open_rec(tmp_path)
    shutil.copy(fixtures_dir / "mxnet" / "list_style" / "train.rec", tmp_path / "x.rec")
    with pytest.raises(R.RecordIOError, match="x.idx"):
        R.RecordReader(tmp_path / "x.rec")


def test_truncated_record(fixtures_dir, tmp_path):
    d = copy_fixture(fixtures_dir, "list_style", tmp_path)
    os.truncate(d / "train.rec", 38440 + 100)  # key 6 starts at 38440
    with pytest.raises(R.RecordIOError,
                       match=r"train.rec: key 6 at offset 38440: truncated record"):
        R.open_rec(d)
    seq = R.MXRecordIO(d / "train.rec", "r")
    for _ in range(6):
        seq.read()
    with pytest.raises(R.RecordIOError, match="offset 38440: truncated"):
        seq.read()
    os.truncate(d / "train.rec", 38440 + 4)
    with pytest.raises(R.RecordIOError, match=r"key 6 at offset 38440"):
        R.open_rec(d)


def test_bad_magic(fixtures_dir, tmp_path):
    d = copy_fixture(fixtures_dir, "list_style", tmp_path)
    with open(d / "train.rec", "r+b") as f:
        f.seek(12736)  # key 2
        f.write(b"\0\0\0\0")
    r = R.open_rec(d)
    with pytest.raises(R.RecordIOError, match=r"train.rec: key 2 at offset 12736: bad magic"):
        r.read(2)
    with pytest.raises(R.RecordIOError, match=r"key 2 at offset 12736: bad magic"):
        r.read_header(2)
    with pytest.raises(R.RecordIOError, match=r"key 2 at offset 12736: bad magic"):
        R.image_index(r)
    assert sha(r.read(3)) == expected(fixtures_dir, "list_style")[3]["record_sha256"]


def test_offset_past_end(fixtures_dir, tmp_path):
    d = copy_fixture(fixtures_dir, "list_style", tmp_path)
    (d / "train.idx").write_text("0\t0\n1\t6440\n2\t999999\n")
    with pytest.raises(R.RecordIOError,
                       match=r"key 2 at offset 999999: .*train.idx line 3 is outside the file"):
        R.open_rec(d)


def test_idx_of_another_rec(fixtures_dir, tmp_path):
    shutil.copy(fixtures_dir / "mxnet" / "odd_lengths" / "train.rec", tmp_path / "a.rec")
    shutil.copy(fixtures_dir / "mxnet" / "list_style" / "train.idx", tmp_path / "a.idx")
    with pytest.raises(R.RecordIOError,
                       match=r"a.rec: key 6 at offset 38440: bad magic .*does not belong"):
        R.RecordReader(tmp_path / "a.rec")
    # first and last offsets valid, a middle one not: caught on read, never a wrong record
    (tmp_path / "a.idx").write_text("0\t0\n1\t6440\n2\t12680\n")
    r = R.RecordReader(tmp_path / "a.rec")
    with pytest.raises(R.RecordIOError, match=r"key 1 at offset 6440: bad magic"):
        r.read(1)


def test_offset_inside_split_record(tmp_path):
    rec, idx = write_rec(tmp_path, [b"abcd" + M + b"efgh", b"z"])
    idx.write_text("0\t0\n1\t12\n2\t24\n")  # 12 = the cflag-3 chunk of record 0
    r = R.RecordReader(rec, idx)
    with pytest.raises(R.RecordIOError,
                       match=r"key 1 at offset 12: chunk flag 3 .*inside a split record"):
        r.read(1)


@pytest.mark.parametrize("text, match", [("0\t0\n1\t8\t3\n", "line 2"), ("0\t0\nx\t8\n", "line 2"),
                                         ("0\t0\n\n", "line 2"), ("0 0\n", "line 1"),
                                         ("0\t0\n1\t8\n0\t16\n", "duplicate key 0")])
def test_malformed_idx(tmp_path, text, match):
    rec, idx = write_rec(tmp_path, [b"a", b"b", b"c"])
    idx.write_text(text)
    with pytest.raises(R.RecordIOError, match=f"t.idx.*{match}"):
        R.RecordReader(rec, idx)


# ------------------------------------------------------------------------------- processes
class _ReadAll(torch.utils.data.Dataset):
    def __init__(self, reader):
        self.reader = reader

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, i):
        key = int(self.reader.keys[i])
        return key, sha(self.reader.read(key))


def test_fork_safe_dataloader(tmp_path):
    rng = np.random.default_rng(3)
    payloads = [rng.bytes(int(n)) for n in rng.integers(1, 20000, 400)]
    rec, idx = write_rec(tmp_path, payloads)
    reader = R.RecordReader(rec, idx)
    reader.read(5)  # descriptor opened before the fork
    order = rng.permutation(len(payloads)).tolist()
    loader = torch.utils.data.DataLoader(_ReadAll(reader), batch_size=None, sampler=order,
                                         num_workers=2, multiprocessing_context="fork")
    got = [tuple(item) for item in loader]
    assert got == [(k, sha(payloads[k])) for k in order]
    # the workers share the parent's open file description: had any of them used the file
    # offset (seek + read), the parent would see it moved; with pread it never moves
    assert os.lseek(reader._file._fd, 0, os.SEEK_CUR) == 0
    assert reader.read(7) == payloads[7]


def test_pickle(fixtures_dir, tmp_path):
    d = fixtures_dir / "mxnet" / "ms1m_style"
    r = R.open_rec(d)
    before = r.read(3)
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._file._fd is None and r2.read(3) == before and r2.keys.tolist() == r.keys.tolist()
    r.close()
    assert r2.read(4) == R.open_rec(d).read(4)
    mx = pickle.loads(pickle.dumps(R.MXIndexedRecordIO(d / "train.idx", d / "train.rec", "r")))
    assert mx.read_idx(3) == before
    w = R.MXRecordIO(tmp_path / "w.rec", "w")
    with pytest.raises(TypeError, match="writer"):
        pickle.dumps(w)


# ------------------------------------------------------------------------------- mxnet API details
def test_mxrecordio_semantics(tmp_path):
    with pytest.raises(ValueError, match="Invalid flag"):
        R.MXRecordIO(tmp_path / "a.rec", "a")
    w = R.MXIndexedRecordIO(tmp_path / "a.idx", tmp_path / "a.rec", "w")
    assert w.tell() == 0
    w.write_idx(4, b"xyz")
    assert w.tell() == 12 and w.keys == [4] and w.idx == {4: 0}
    w.write_idx(5, b"")
    w.close()
    w.close()
    r = R.MXIndexedRecordIO(tmp_path / "a.idx", tmp_path / "a.rec", "r")
    assert r.read_idx(5) == b"" and r.read() is None
    r.seek(4)
    assert r.read() == b"xyz" and r.read() == b"" and r.read() is None


def test_pack_unpack():
    p = R.pack(R.IRHeader(9, [1, 2.5], 3, 4), b"data")
    assert (p[:24] == struct.pack("<IfQQ", 2, 0.0, 3, 4)
            and p[24:32] == np.float32([1, 2.5]).tobytes())
    h, s = R.unpack(p)
    assert (h.flag == 2 and h.label.dtype == np.float32 and h.label.tolist() == [1, 2.5]
            and s == b"data")
    h, s = R.unpack(R.pack(R.IRHeader(7, np.float32(3), 1, 0), b"x"))
    assert h == R.IRHeader(0, 3.0, 1, 0) and s == b"x"


def test_pack_img_unpack_img():
    img = np.random.default_rng(0).integers(0, 256, (20, 16, 3), dtype=np.uint8)
    h, back = R.unpack_img(R.pack_img(R.IRHeader(0, 1, 2, 0), img, img_fmt=".png"))
    assert h.label == 1 and np.array_equal(back, img)
    for q in (95, 40):
        jpg = R.unpack(R.pack_img(R.IRHeader(0, 1, 2, 0), img, quality=q))[1]
        assert jpg == cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()
    assert R.unpack_img(R.pack_img(R.IRHeader(0, 1, 2, 0), img), iscolor=0)[1].shape == (20, 16)
    with pytest.raises(ValueError, match="cannot decode"):
        R.decode_image(b"not an image")
    with pytest.raises(ValueError, match="cannot decode"):
        R.decode_image(b"")


# ---------------------------------------------------------------------------- real mxnet (optional)
_MX_WRITE = """
import struct, sys, hashlib, mxnet.recordio as R
data = open(sys.argv[1], 'rb').read(); pos = 0
w = R.MXIndexedRecordIO(sys.argv[2], sys.argv[3], 'w'); i = 0
while pos < len(data):
    n = struct.unpack_from('<I', data, pos)[0]; w.write_idx(i, data[pos + 4:pos + 4 + n])
    pos += 4 + n; i += 1
w.close()
r = R.MXIndexedRecordIO(sys.argv[4], sys.argv[5], 'r')
print(' '.join(hashlib.sha256(r.read_idx(k)).hexdigest() for k in r.keys))
"""


def test_byte_identical_to_real_mxnet(tmp_path, mxnet_python):
    """Set FSE_MXNET_PYTHON to an interpreter with mxnet 1.9.1 to run this."""
    py = mxnet_python
    payloads = [p for p, _ in SPLIT_CASES] + random_payloads(np.random.default_rng(7), 200, 300)
    frames = tmp_path / "frames.bin"
    frames.write_bytes(b"".join(struct.pack("<I", len(p)) + p for p in payloads))
    ours_rec, ours_idx = write_rec(tmp_path, payloads, name="ours")
    out = subprocess.run([py, "-c", _MX_WRITE, frames, tmp_path / "mx.idx", tmp_path / "mx.rec",
                          ours_idx, ours_rec],
                         capture_output=True, text=True, check=True).stdout.split()
    assert (tmp_path / "mx.rec").read_bytes() == ours_rec.read_bytes()
    assert (tmp_path / "mx.idx").read_text() == ours_idx.read_text()
    assert out == [sha(p) for p in payloads]  # mxnet reads what we wrote


def test_decode_refuses_images_whose_header_claims_too_many_pixels():
    """A 100-byte PNG claiming 30000x30000 would make OpenCV allocate 2.7 GB: refused from its
    header."""
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for ext in (".jpg", ".png"):
        buf = cv2.imencode(ext, img)[1].tobytes()
        assert R.image_size(buf) == (37, 53)
        assert R.decode_image(buf).shape == (37, 53, 3)
    assert R.image_size(b"GIF89a" + bytes(40)) is None

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    forged = (b"\x89PNG\r\n\x1a\n"
              + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
              + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))
    with pytest.raises(ValueError, match="claims 30000x30000 pixels"):
        R.decode_image(forged)

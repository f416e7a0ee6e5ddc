"""Evaluation: safe pack loading, the .bin and IJB protocols against plain computations (and
upstream arcface_torch when ARCFACE_TORCH_DIR is set), the occlusion benchmark, the CLI, and bad
input."""
import ast
import importlib.util
import json
import os
import pickle
import runpy
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold

from fake_arcface import fake_tree
from fse_plugin import evaluation as ev
from fse_plugin.backbone import build_network, iresnet_tiny
from fse_plugin.cam import ijb_fscam_rows
from fse_plugin.cli import main as cli_main
from fse_plugin.common import masks_path_for, to_input

REPO = Path(__file__).resolve().parents[1]


def small_model(seed: int, num_features: int = 64) -> torch.nn.Module:
    """A cheap stand-in backbone (pool, linear: ~0.1 ms per image): the protocols only need
    embeddings that depend on the pixels; the real backbones go through the same code (CLI tests use
    iresnet_tiny)."""
    torch.manual_seed(seed)
    layers = torch.nn.AvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, num_features)
    return torch.nn.Sequential(*layers).eval()


def raw_pack(path: Path) -> tuple[list[bytes], np.ndarray]:
    """The (encoded images, bools) of a pack the tests wrote themselves (trusted: plain pickle)."""
    with open(path, "rb") as f:
        bins, issame = pickle.load(f)
    return list(bins), np.asarray(issame, dtype=bool)


def structured_views(n_pairs: int, seed: int, dim: int = 32,
                     noise: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Fake un-normalised embeddings [2, 2P, D] (image, flip) of pairs alternating
    genuine / impostor."""
    rng = np.random.default_rng(seed)
    issame = np.arange(n_pairs) % 2 == 0
    ids = rng.normal(size=(2 * n_pairs, dim))
    ids[1::2][issame] = ids[0::2][issame]
    scale = rng.uniform(5, 30, (1, 2 * n_pairs, 1))
    views = np.stack([ids + noise * rng.normal(size=ids.shape) for _ in range(2)]) * scale
    return views.astype(np.float32), issame


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def pack(synth_bin):
    images, issame = ev.load_bin(synth_bin)
    return images, issame, np.load(masks_path_for(synth_bin))


@pytest.fixture(scope="session")
def ijb_root(tmp_path_factory) -> Path:
    """IJB-C-style set from synth (5 identities x 2 templates x 2 media x 1 image = 20 images)."""
    from fse_plugin import synth
    return Path(synth.write_ijb(tmp_path_factory.mktemp("ijb") / "IJBC", "IJBC",
                                synth.IJBLayout(5, 2, 2, 1), seed=3, workers=1))


@pytest.fixture(scope="session")
def ijb_masks(ijb_root) -> Path:
    """synth's exact aligned masks, one per row of the 5pts file."""
    path = ijb_root / "gt_masks.npy"
    assert path.is_file(), "synth.write_ijb writes gt_masks.npy"
    return path


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """arcface_torch-style model.pt (state_dict) of the built-in tiny backbone."""
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.manual_seed(0)
    torch.save(iresnet_tiny().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def scripted(tmp_path_factory) -> Path:
    """A TorchScript model file (what --network torchscript loads)."""
    path = tmp_path_factory.mktemp("scripted") / "cheap.pt"
    torch.jit.script(small_model(7)).save(str(path))
    return path


@pytest.fixture(scope="session")
def small_bin(tmp_path_factory) -> Path:
    """A 10-pair pack (with masks) for the end-to-end runs of the real tiny backbone."""
    from fse_plugin import synth
    return Path(synth.write_pairs_bin(tmp_path_factory.mktemp("small_bin") / "lfw.bin", n_pairs=10,
                                      seed=2, workers=1))


@pytest.fixture(scope="session")
def upstream(arcface_torch_dir):
    """Upstream eval/verification.py, imported with a stub mxnet (only its load_bin needs mxnet)."""
    stub = types.ModuleType("mxnet")
    stub.ndarray = types.ModuleType("mxnet.ndarray")
    saved = {k: sys.modules.get(k) for k in ("mxnet", "mxnet.ndarray")}
    sys.modules.update({"mxnet": stub, "mxnet.ndarray": stub.ndarray})
    try:
        path = arcface_torch_dir / "eval" / "verification.py"
        spec = importlib.util.spec_from_file_location("upstream_verification", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    # current scipy's interp1d raises on repeated FAR values (insightface #2152): same rule as ours
    module.interpolate = SimpleNamespace(
        interp1d=lambda x, y, kind: (lambda t: ev.far_threshold(np.asarray(x), np.asarray(y),
                                                                float(t))))
    return module


@pytest.fixture(scope="session")
def upstream_ijb(arcface_torch_dir):
    """image2template_feature and verification from eval_ijbc.py (which runs its pipeline on
    import)."""
    source = (arcface_torch_dir / "eval_ijbc.py").read_text()
    tree = ast.parse(source)
    wanted = ("image2template_feature", "verification")
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    import sklearn.preprocessing
    namespace = {"np": np, "sklearn": sklearn}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "eval_ijbc.py", "exec"), namespace)
    return SimpleNamespace(**{n.name: namespace[n.name] for n in keep})


# --------------------------------------------------------------------------- packs

def test_fixture_pack_loads_like_plain_decoding(fixtures_dir):
    path = fixtures_dir / "bin" / "tiny_pairs.bin"
    images, issame = ev.load_bin(path)
    with open(path, "rb") as f:  # trusted fixture: plain pickle as the independent reference
        bins, plain_issame = pickle.load(f, encoding="bytes")
    assert images.dtype == np.uint8 and images.shape == (2 * len(plain_issame), 112, 112, 3)
    assert issame.tolist() == list(plain_issame)
    for i, b in enumerate(bins):
        ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(bytes(b), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(images[i], ref)


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("as_arrays", [False, True])
def test_pack_variants(synth_bin, pack, tmp_path, protocol, as_arrays):
    """bytes or 1-D uint8 arrays, pickle protocols 2 (py2-era) to 5; bools as a list or a bool
    array."""
    bins, issame = raw_pack(synth_bin)
    items = [np.frombuffer(b, np.uint8) for b in bins] if as_arrays else bins
    path = tmp_path / "variant.bin"
    path.write_bytes(pickle.dumps((items, np.asarray(issame) if as_arrays else issame.tolist()),
                                  protocol=protocol))
    images, got = ev.load_bin(path)
    np.testing.assert_array_equal(images, pack[0])
    np.testing.assert_array_equal(got, pack[1])


def test_pack_resized_to_image_size(synth_bin, tmp_path):
    bins, issame = raw_pack(synth_bin)
    big = [cv2.imencode(".png", cv2.resize(cv2.imdecode(np.frombuffer(b, np.uint8), 1),
                                           (128, 128)))[1].tobytes() for b in bins[:4]]
    path = tmp_path / "big.bin"
    path.write_bytes(pickle.dumps((big, issame[:2].tolist())))
    assert ev.load_bin(path)[0].shape == (4, 112, 112, 3)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pack_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"x", _Evil(marker)], [True])))
    with pytest.raises(ev.PackError, match=r"evil\.bin.*(posix|os|nt)\.system"):
        ev.load_bin(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload, match", [
    (lambda: ([np.array([b"a"], dtype=object)] * 2, [True]), "dtype object"),
    (lambda: ([np.zeros(3, np.float32)] * 2, [True]), "float32"),
    (lambda: (types.SimpleNamespace(), [True]), "global types.SimpleNamespace"),
    (lambda: ({"a": 1}, [True]), "images must be a list"),
    (lambda: ([b"x", b"y", b"z"], [True]), "3 images for 1 pairs"),
    (lambda: ([b"x", b"y"], [1]), r"issame\[0\] is 1"),
    (lambda: ([b"x", 5], [True]), "image 1 is a int"),
])
def test_bad_packs(tmp_path, payload, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(payload(), protocol=4))
    with pytest.raises(ev.PackError, match=match):
        ev.load_bin(path)


def test_truncated_and_undecodable_packs(synth_bin, tmp_path):
    data = Path(synth_bin).read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ev.PackError, match="cut.bin: not a readable verification pack"):
        ev.load_bin(cut)
    bins, issame = raw_pack(synth_bin)
    bins[5] = b"not a jpeg"
    broken = tmp_path / "broken.bin"
    broken.write_bytes(pickle.dumps((bins, issame.tolist())))
    with pytest.raises(ev.PackError, match=r"broken.bin: image 5 \(pair 2\): cannot decode"):
        ev.load_bin(broken)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        ev.load_bin(tmp_path / "missing.bin")


BOUNDED = """
import resource, sys
from fse_plugin.evaluation import PackError, load_bin
status = open("/proc/self/status").read().splitlines()
vm = int(next(line for line in status if line.startswith("VmSize")).split()[1]) * 1024
# 0.5 GB above the imports
resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), resource.RLIM_INFINITY))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_bin(sys.argv[1])
except PackError as e:
    print("refused:", e)
print("rss growth KB:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(),
                    reason="needs Linux /proc for the memory limit")
def test_memo_bomb_refused_in_bounded_memory(tmp_path):
    """10 bytes that made the C unpickler size its memo for 400M entries (6.9-13.8 GB) before any
    check ran."""
    bomb = tmp_path / "bomb.bin"
    bomb.write_bytes(b"\x80\x02K\x00r" + struct.pack("<I", 400_000_000) + b".")
    assert bomb.stat().st_size == 10
    res = subprocess.run([sys.executable, "-c", BOUNDED, str(bomb)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"refused: {bomb}: memo index 400000000 at byte 4 after 0 memo entries" in res.stdout
    assert int(res.stdout.split("rss growth KB:")[1]) < 64 << 10


class _Plain:
    pass


@pytest.mark.parametrize("data, match", [
    (lambda: pickle.dumps(([_Plain()], []), protocol=2), "opcode NEWOBJ"),
    (lambda: pickle.dumps(([b"x"], []), protocol=0).replace(b"(lp0", b"(i__main__\n_Plain\np0",
                                                            1), "opcode INST"),
    (lambda: b"\x80\x06N.", "pickle protocol 6"),
    (lambda: b"\x80\x02N}q\x05.", r"memo index 5 at byte 4 after 0 memo entries"),
    (lambda: b"\x80\x02N", "not a readable verification pack"),
])
def test_pack_opcode_scan(tmp_path, data, match):
    path = tmp_path / "crafted.bin"
    path.write_bytes(data())
    with pytest.raises(ev.PackError, match=f"crafted.bin: .*{match}"):
        ev.load_bin(path)


def test_images_repeated_by_reference_refused(synth_bin, tmp_path):
    """A pickle memo reference costs 2 bytes: 2,000 references to one image would decode 2,000
    images."""
    bins, _ = raw_pack(synth_bin)
    path = tmp_path / "repeat.bin"
    path.write_bytes(pickle.dumps(([bins[0]] * 2000, [True] * 1000), protocol=4))
    with pytest.raises(ev.PackError, match="repeat.bin: its images hold more bytes than the file"):
        ev.load_bin(path)


# --------------------------------------------------------------------------- .bin protocol

def plain_protocol(views: np.ndarray, issame: np.ndarray, far_target: float = 1e-3):
    """Independent loop-per-threshold computation of the protocol, with sklearn KFold; the VAL
    threshold from scipy's interp1d(kind='linear'), which tolerates repeated FAR values (upstream's
    'slinear' does not)."""
    emb = views[0].astype(np.float64) + views[1].astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dist = ((emb[0::2] - emb[1::2]) ** 2).sum(1)
    thresholds, fine = np.arange(0, 4, 0.01), np.arange(0, 4, 0.001)
    accs, vals, fars = [], [], []
    for train, test in KFold(n_splits=10, shuffle=False).split(dist):
        train_acc = [np.mean((dist[train] < t) == issame[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        accs.append(np.mean((dist[test] < best) == issame[test]))
        far_train = np.array([np.mean(dist[train][~issame[train]] < t) for t in fine])
        t = (float(interp1d(far_train, fine, kind="linear")(far_target))
             if far_train.max() >= far_target else 0.0)
        vals.append(np.mean(dist[test][issame[test]] < t))
        fars.append(np.mean(dist[test][~issame[test]] < t))
    norms = np.linalg.norm(views.reshape(-1, views.shape[-1]).astype(np.float64), axis=1)
    return np.mean(accs), np.std(accs), norms.mean(), np.mean(vals), np.std(vals), np.mean(fars)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_protocol_matches_plain_computation(seed):
    views, issame = structured_views(400, seed)
    r = ev.evaluate_embeddings(views, issame)
    acc, std, xnorm, val, val_std, far = plain_protocol(views, issame)
    assert (r.accuracy == pytest.approx(acc, abs=1e-12)
            and r.accuracy_std == pytest.approx(std, abs=1e-12))
    assert r.xnorm == pytest.approx(xnorm, rel=1e-12)
    assert (r.val, r.val_std, r.far) == pytest.approx((val, val_std, far), abs=1e-12)
    assert 0.5 < r.accuracy < 1.0 and 0 < r.val < 1 and len(r.fold_accuracy) == 10


def test_far_threshold_with_repeated_far_values():
    far = np.array([0, 0, 0, 0.1, 0.1, 0.2, 0.2, 0.2, 0.5])
    th = np.arange(len(far)) / 10
    got = [ev.far_threshold(far, th, t) for t in (0.0, 0.05, 0.1, 0.15, 0.2, 0.5)]
    assert got == pytest.approx([0.2, 0.25, 0.4, 0.45, 0.7, 0.8])
    assert ev.far_threshold(far, th, 0.6) == 0.0  # never reached: upstream's 0.0
    distinct = np.array([0.0, 0.1, 0.3])
    # plain linear
    assert ev.far_threshold(distinct, np.array([0.0, 1.0, 2.0]), 0.2) == pytest.approx(1.5)


def test_val_without_impostors_in_a_fold_does_not_crash():
    views, issame = structured_views(20, 0)
    issame[:] = True
    r = ev.evaluate_embeddings(views, issame)  # upstream divides by zero here
    # FAR never reaches 1e-3 on train: threshold 0, as upstream
    assert np.isnan(r.far) and r.val == 0.0


def test_equal_to_upstream_verification(upstream, pack):
    """Same model, same images: upstream test() and ours agree to the last bit (accuracy, std,
    XNorm, VAL)."""
    images, issame, _ = pack
    model = small_model(1)
    # what upstream load_bin holds
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().contiguous()
    acc1, std1, acc2, std2, xnorm, embeddings_list = upstream.test(([x, torch.flip(x, dims=[3])],
                                                                    issame.tolist()), model, 20, 10)
    views = ev.embed(model, images, ev.EmbedSettings(20, progress=False))
    np.testing.assert_array_equal(embeddings_list[0], views[0])
    np.testing.assert_array_equal(embeddings_list[1], views[1])
    r = ev.evaluate_embeddings(views, issame)
    assert (r.accuracy, r.accuracy_std, r.xnorm) == (np.mean([acc2]), std2, xnorm)
    sv, si = structured_views(300, 0)
    _, _, accuracy, val, val_std, far = upstream.evaluate(ev.fuse_views(sv), si.tolist())
    mine = ev.evaluate_embeddings(sv, si)
    assert (mine.accuracy, mine.accuracy_std) == (np.mean(accuracy), np.std(accuracy))
    assert (mine.val, mine.val_std, mine.far) == (val, val_std, far) and 0 < val < 1


def test_embed_checks_output(pack):
    images = pack[0][:4]
    with pytest.raises(ValueError, match="128-d embeddings, expected embedding_size=512"):
        ev.embed(small_model(0, 128), images,
                 ev.EmbedSettings(4, embedding_size=512, progress=False))
    with pytest.raises(ValueError, match=r"model output \(4, 3, 28, 28\) for a batch of 4"):
        ev.embed(small_model(0)[0], images, ev.EmbedSettings(4, progress=False))
    with pytest.raises(ValueError, match="expected embeddings"):
        ev.evaluate_embeddings(np.zeros((2, 6, 8)), np.ones(4, bool))


# --------------------------------------------------------------------------- IJB

def test_ijb_matches_plain_and_saves(ijb_root, tmp_path):
    meta = ev.read_ijb_meta(ijb_root, "IJBC")
    assert len(meta.names) == 20 and meta.points5.shape == (20, 5, 2)
    model = small_model(2)
    result = ev.evaluate_ijb(model, meta, ev.EmbedSettings(8, progress=False), out_dir=tmp_path,
                             name="tiny")
    scores = np.load(result.scores_path)
    assert Path(result.roc_path).is_file() and scores.shape == (len(meta.p1),)
    # plain: per-image features, per-template loops with np.where, cosine, upstream's nearest-FAR
    # pick
    faces = ev.IJBFaces(meta)
    x = torch.stack([to_input(faces.image(i)) for i in range(20)])
    with torch.no_grad():
        f = (model(x) + model(torch.flip(x, dims=[3]))).numpy() * meta.faceness[:, None]
    tfeat = {}
    for t in np.unique(meta.templates):
        rows = np.where(meta.templates == t)[0]
        medias = [f[rows][meta.medias[rows] == m].mean(0) for m in np.unique(meta.medias[rows])]
        v = np.sum(medias, 0).astype(np.float64)
        tfeat[t] = v / np.linalg.norm(v)
    plain = np.array([tfeat[a] @ tfeat[b] for a, b in zip(meta.p1, meta.p2)])
    np.testing.assert_allclose(scores, plain, atol=1e-5)
    fpr, tpr, _ = roc_curve(meta.labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    expect = [tpr[min(zip(abs(fpr - far), range(len(fpr))))[1]] for far in ev.IJB_FARS]
    assert result.tar == expect


def test_ijb_equal_to_upstream_functions(upstream_ijb):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 64)).astype(np.float32)
    templates = rng.integers(1, 40, 300)
    medias = rng.integers(1, 25, 300)
    mine, unique = ev.template_features(feats, templates, medias)
    theirs, their_unique = upstream_ijb.image2template_feature(feats, templates, medias)
    np.testing.assert_array_equal(unique, their_unique)
    np.testing.assert_array_equal(mine, theirs)
    p1, p2 = rng.choice(unique, 500), rng.choice(unique, 500)
    np.testing.assert_array_equal(ev.pair_scores(mine, unique, p1, p2),
                                  upstream_ijb.verification(theirs, their_unique, p1, p2))


def _copy_ijb(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "IJBC"
    shutil.copytree(root / "meta", dst / "meta")
    (dst / "loose_crop").symlink_to(root / "loose_crop")
    return dst


def _edit(path: Path, row: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[row] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("file, row, text, match", [
    ("template_pair_label", 3, "1 999 1",
     r"template_pair_label.txt: row 4: template 999 \(tid_2\) has no image"),
    ("template_pair_label", 0, "1 2", "template_pair_label.txt: row 1: expected 3 columns"),
    ("template_pair_label", 1, "1 2 7", "template_pair_label.txt: row 2: label 7 is not 0 or 1"),
    ("face_tid_mid", 2, "3.jpg x 2", "face_tid_mid.txt: row 3: column tid is 'x'"),
    ("name_5pts_score", 4, "ghost.jpg 1 2 3 4 5 6 7 8 9 10 0.9",
     "name_5pts_score.txt: row 5: image 'ghost.jpg' is not in"),
    ("name_5pts_score", 6, "7.jpg 1 2 3 4 5 6 7 8 9 0.9",
     "name_5pts_score.txt: row 7: expected 12 columns"),
    ("name_5pts_score", 0, "2.jpg 1 2 3 4 5 6 7 8 9 10 0.9", "row 1: image '2.jpg' is row 2 of"),
])
def test_ijb_bad_meta(ijb_root, tmp_path, file, row, text, match):
    root = _copy_ijb(ijb_root, tmp_path)
    _edit(root / "meta" / ev.read_ijb_meta(ijb_root).files[file].name, row, text)
    with pytest.raises(ev.MetaError, match=match):
        ev.read_ijb_meta(root)


def test_ijb_missing_meta_and_bad_image(ijb_root, tmp_path):
    root = _copy_ijb(ijb_root, tmp_path)
    (root / "meta" / "ijbc_face_tid_mid.txt").unlink()
    with pytest.raises(FileNotFoundError, match="ijbc_face_tid_mid.txt: missing IJB meta file"):
        ev.read_ijb_meta(root)
    root = tmp_path / "copy2"
    shutil.copytree(ijb_root, root)
    (root / "loose_crop" / "3.jpg").write_bytes(b"garbage")
    with pytest.raises(ev.MetaError, match=r"3.jpg: missing or undecodable image \(row 3 of "
                                           r".*name_5pts_score.txt\)"):
        ev.evaluate_ijb(small_model(0), root, ev.EmbedSettings(8, progress=False))


# --------------------------------------------------------------------------- occlusion

def test_groups_and_regions():
    assert ev.parse_groups("none") == {}
    assert ev.parse_groups("eyes=right_eye,left_eye; m=mouth") == {"eyes": [11, 12], "m": [17]}
    assert list(ev.parse_groups(None)) == list(ev.DEFAULT_GROUPS)
    regions = ev.occlusion_regions("nose,mouth", "x=glasses")
    assert regions == [("nose", [10]), ("mouth", [17]), ("x", [23])]
    assert len(ev.occlusion_regions(None, "none")) == 25
    for bad in ("eyes", "a=nosee", "a=nose;a=mouth", "=nose"):
        with pytest.raises((ValueError, KeyError)):
            ev.parse_groups(bad)


def erased_by_hand(x: torch.Tensor, keys, masks, ids, fill, seed) -> torch.Tensor:
    """``x`` with classes ``ids`` erased in images ``keys`` that contain them (RegionErasing's
    seeding)."""
    eraser, x = ev.RegionErasing(ids, fill, seed), x.clone()
    for k in keys:
        if np.isin(np.asarray(masks[k]), ids).any():
            x[k] = eraser(x[k], masks[k], k)
    return x


def views_of(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return np.stack([model(x).numpy(), model(torch.flip(x, dims=[3])).numpy()])


def test_occlusion_pack_equals_per_region_reference(pack):
    """Every row equals the straightforward computation: erase the region in every probe that has
    it, embed the whole pack again, run the protocol (random fill, several batches per region, two
    models)."""
    images, issame, masks = pack
    masks = masks.copy()
    masks[masks == 24] = 0  # headwear absent from every probe: skipped
    models = {"a": small_model(3), "b": small_model(4)}
    regions = ev.occlusion_regions("nose,headwear,left_eye,mouth", "eyes=right_eye,left_eye")
    settings = ev.OcclusionSettings(regions, fill="random", seed=5,
                                    embed=ev.EmbedSettings(7, progress=False))
    report = ev.occlusion_pack(models, images, issame, masks, settings)
    assert ([r.region for r in report.rows] == ["nose", "left_eye", "mouth", "eyes"]
            and report.skipped == ["headwear"])
    x = torch.stack([to_input(im) for im in images])
    for name, model in models.items():
        assert (report.clean[name]
                == ev.evaluate_embeddings(views_of(model, x), issame).accuracy * 100)
    for row, (_, ids) in zip(report.rows, [r for r in regions if r[0] != "headwear"]):
        xr = erased_by_hand(x, range(1, len(x), 2), masks, ids, "random", 5)
        assert row.n_probes == int(np.isin(masks[1::2], ids).any((1, 2)).sum())
        for name, model in models.items():
            expect = ev.evaluate_embeddings(views_of(model, xr), issame).accuracy * 100
            assert row.score[name] == pytest.approx(expect, abs=1e-9), (row.region, name)
            assert row.drop[name] == pytest.approx(report.clean[name] - expect)
    assert "skipped (absent in every probe): headwear" in report.table()


def test_region_erasing_is_seeded_per_image(pack):
    images, _, masks = pack
    er = ev.RegionErasing(["nose"], "random", seed=1)
    x = to_input(images[3])
    a, b = er(x, masks[3], 3), er(x, masks[3], 3)
    assert torch.equal(a, b) and not torch.equal(a, er(x, masks[3], 5))
    changed = (a != x).any(0).numpy()
    assert changed.any() and not changed[masks[3] != 10].any()


def test_occlusion_ijb_equals_per_region_reference(ijb_root, ijb_masks):
    """Clean references against probe templates whose every image has the region erased, by hand."""
    meta = ev.read_ijb_meta(ijb_root)
    masks = ev.open_masks(ijb_masks, len(meta.names))
    model = small_model(5)
    regions = [("nose", [10]), ("glasses", [23]), ("eyes", [11, 12])]
    settings = ev.OcclusionSettings(regions, fill="random", seed=2,
                                    embed=ev.EmbedSettings(3, progress=False))
    report = ev.occlusion_ijb({"m": model}, meta, masks, settings, far=1e-1)
    clean = ev.evaluate_ijb(model, meta, ev.EmbedSettings(10, progress=False),
                            fars=[1e-1]).tar[0] * 100
    assert report.clean["m"] == pytest.approx(clean)
    assert report.n_probes == len(meta.probe_rows()) and report.metric == "TAR@FAR=0.1 (%)"
    assert (sorted([r.region for r in report.rows] + report.skipped) == ["eyes", "glasses", "nose"]
            and report.rows)
    faces = ev.IJBFaces(meta)
    x = torch.stack([to_input(faces.image(i)) for i in range(len(meta.names))])

    def template_feats(xs):
        v = views_of(model, xs)
        return ev.template_features((v[0] + v[1]) * meta.faceness[:, None], meta.templates,
                                    meta.medias)

    references = template_feats(x)
    for row in report.rows:
        probes = template_feats(erased_by_hand(x, meta.probe_rows(), masks,
                                               dict(regions)[row.region], "random", 2))
        scores = ev.pair_scores(*references, meta.p1, meta.p2, *probes)
        fpr, tpr, _ = roc_curve(meta.labels, scores)
        expect = np.flipud(tpr)[np.argmin(np.abs(np.flipud(fpr) - 1e-1))] * 100
        assert (row.score["m"] == pytest.approx(expect, abs=1e-9)
                and row.drop["m"] == pytest.approx(clean - expect))


# --------------------------------------------------------------------------- CLI

def test_cli_verification_with_config_and_fscam(small_bin, weights, tmp_path):
    data = tmp_path / "rec"
    data.mkdir()
    shutil.copy(small_bin, data / "lfw.bin")
    shutil.copy(masks_path_for(small_bin), data / "lfw.masks.npy")
    (tmp_path / "work_dirs" / "cfg").mkdir(parents=True)
    shutil.copy(weights, tmp_path / "work_dirs" / "cfg" / "model.pt")
    cfg = tmp_path / "configs" / "cfg.py"
    cfg.parent.mkdir()
    cfg.write_text(f"from easydict import EasyDict as edict\nconfig = edict()\nconfig.network = "
                   f"'tiny'\nconfig.embedding_size = 512\nconfig.rec = {str(data)!r}\n"
                   f"config.val_targets = ['lfw', 'agedb_30']\nconfig.output = None\n"
                   f"config.fse_eval = dict(batch_size=20, fscam_limit=2, "
                   f"fscam={str(tmp_path / 'cam')!r})\n")
    out = tmp_path / "out"
    rc = cli_main(["eval", "verification", "--config", str(cfg), "--out", str(out), "--quiet",
                   "--device", "cpu"])
    assert rc == 0
    doc = json.loads((out / "verification.json").read_text())
    assert [r["name"] for r in doc["results"]] == ["lfw"] and doc["model"]["network"] == "tiny"
    # config output/model.pt
    assert doc["model"]["weights"] == str(tmp_path / "work_dirs" / "cfg" / "model.pt")
    images, issame = ev.load_bin(small_bin)
    from fse_plugin.backbone import load_backbone
    expect = ev.evaluate_embeddings(ev.embed(load_backbone(weights), images,
                                             ev.EmbedSettings(20, progress=False)), issame)
    assert (doc["results"][0]["accuracy"] == expect.accuracy
            and doc["results"][0]["xnorm"] == expect.xnorm)
    assert (tmp_path / "cam" / "lfw" / "region_scores.json").is_file()  # FS-CAM via config.fse_eval


def test_cli_occlusion_pack_torchscript(synth_bin, scripted, tmp_path):
    rc = cli_main(["eval", "occlusion", "--pack", str(synth_bin), "--network", "torchscript",
                   "--weights", str(scripted), "--name", "base", "--weights2", str(scripted),
                   "--name2", "fse", "--classes", "mouth", "--groups", "none", "--fill", "-1",
                   "--out", str(tmp_path), "--quiet", "--device", "cpu", "--embedding-size", "64"])
    assert rc == 0
    doc = json.loads((tmp_path / "occlusion_synth.json").read_text())
    assert (doc["models"] == ["base", "fse"] and doc["fill"] == -1.0
            and doc["rows"][0]["region"] == "mouth")
    # the same weights twice
    assert doc["rows"][0]["score"]["base"] == doc["rows"][0]["score"]["fse"]
    assert ((tmp_path / "occlusion_synth.png").is_file()
            and (tmp_path / "occlusion_synth.csv").is_file())


def test_cli_ijb_and_ijb_occlusion(ijb_root, ijb_masks, scripted, tmp_path):
    rc = cli_main(["eval", "ijb", "--root", str(ijb_root), "--network", "torchscript", "--weights",
                   str(scripted), "--out", str(tmp_path), "--quiet", "--device", "cpu", "--fars",
                   "0.01,0.1"])
    assert rc == 0
    doc = json.loads((tmp_path / "ijbc_results.json").read_text())
    assert doc["fars"] == [0.01, 0.1] and len(doc["tar"]) == 2 and (tmp_path / "ijbc.npy").is_file()
    rc = cli_main(["eval", "occlusion", "--ijb-root", str(ijb_root), "--masks", str(ijb_masks),
                   "--network", "torchscript", "--weights", str(scripted), "--classes", "nose",
                   "--groups", "none", "--far", "0.1", "--out", str(tmp_path), "--quiet",
                   "--device", "cpu"])
    assert (rc == 0
            and json.loads((tmp_path / "occlusion_ijbc.json").read_text())["rows"][0]["region"]
            == "nose")



@pytest.mark.parametrize("script", ["verification", "ijb", "occlusion"])
def test_eval_scripts_mirror_cli(script, monkeypatch, capsys):
    path = REPO / "eval" / f"{script}.py"
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(path), run_name="__main__")
    assert done.value.code == 0 and f"fse eval {script}" in capsys.readouterr().out
    if script == "ijb":  # and runnable as a plain script
        res = subprocess.run([sys.executable, str(path), "--root"], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 2 and "expected one argument" in res.stderr


def test_mask_sources_cache_and_parser(small_bin, scripted, tmp_path):
    """--mask-cache (i-th key = image i) gives the --masks result; --parser predicts and saves
    masks."""
    from fse_plugin import maskcache, recordio
    from fse_plugin.parsing import UNetRes18, save_parser
    images, _ = ev.load_bin(small_bin)
    masks = np.load(masks_path_for(small_bin))
    rec = tmp_path / "rec"
    rec.mkdir()
    writer = recordio.MXIndexedRecordIO(str(rec / "train.idx"), str(rec / "train.rec"), "w")
    for i, im in enumerate(images):
        writer.write_idx(i, recordio.pack_img(recordio.IRHeader(0, 0.0, i, 0), im[..., ::-1]))
    writer.close()
    cache = maskcache.build_from_labels(rec, recordio.image_index(rec).keys, masks, progress=False)
    torch.manual_seed(0)
    parser = save_parser(UNetRes18(feature_scale=16), tmp_path / "parser.pt")
    common = ["eval", "occlusion", "--pack", str(small_bin), "--network", "torchscript",
              "--weights", str(scripted), "--classes", "nose,mouth", "--groups", "none", "--folds",
              "5", "--quiet", "--device", "cpu"]
    docs = {}
    for source, flag in (("file", ["--masks", str(masks_path_for(small_bin))]),
                         ("cache", ["--mask-cache", str(cache)]),
                         ("parser", ["--parser", str(parser)])):
        assert cli_main(common + flag + ["--out", str(tmp_path / source)]) == 0
        docs[source] = json.loads((tmp_path / source / "occlusion_lfw.json").read_text())
    assert docs["file"]["rows"] == docs["cache"]["rows"]
    predicted = np.load(tmp_path / "parser" / "lfw.masks.npy")
    assert predicted.shape == masks.shape and predicted.dtype == np.uint8
    with pytest.raises(ValueError, match="mask cache holds 20 masks for 7 images"):
        ev.CacheMasks(cache, 7)
    with pytest.raises(ValueError,
                       match=r"masks are uint8 \(20, 112, 112\), expected uint8 \(21, 112, 112\)"):
        ev.open_masks(masks_path_for(small_bin), 21)


def test_cli_ijb_fscam_with_parser_masks(ijb_root, scripted, tmp_path):
    from fse_plugin.parsing import UNetRes18, save_parser
    torch.manual_seed(0)
    parser = save_parser(UNetRes18(feature_scale=16), tmp_path / "parser.pt")
    rc = cli_main(["eval", "ijb", "--root", str(ijb_root), "--network", "torchscript", "--weights",
                   str(scripted), "--parser", str(parser), "--fscam", str(tmp_path / "cam"),
                   "--fscam-limit", "2", "--out", str(tmp_path / "out"), "--quiet",
                   "--device", "cpu"])
    assert rc == 0 and (tmp_path / "cam" / "region_scores.json").is_file()
    meta = ev.read_ijb_meta(ijb_root)
    rows = np.concatenate(ijb_fscam_rows(meta, "same", 2))
    masks = np.load(tmp_path / "out" / "ijbc_masks.npy")
    # predicted where FS-CAM needs them, 255 elsewhere
    assert (masks[rows] != 255).any((1, 2)).all()
    assert (masks[np.setdiff1d(np.arange(len(masks)), rows)] == 255).all()


# --------------------------------------------------------------------------- arcface_torch networks

def test_upstream_warning_shown_once_per_run(small_bin, tmp_path):
    """A backbone that warns at every forward (upstream iresnet's torch.cuda.amp.autocast) warns
    once per run."""
    tree = fake_tree(tmp_path / "arcface_torch", warn=True)
    weights = tmp_path / "fake.pt"
    torch.save(build_network("fake", 64, tree).state_dict(), weights)
    env = {k: v for k, v in os.environ.items() if k not in ("ARCFACE_TORCH_DIR", "PYTHONWARNINGS")}
    cmd = [sys.executable, "-m", "fse_plugin", "eval", "occlusion", "--pack", str(small_bin),
           "--network", "fake", "--weights", str(weights), "--weights2", str(weights),
           "--arcface-dir", str(tree), "--embedding-size", "64", "--classes", "nose,mouth,left_eye",
           "--groups", "none", "--batch-size", "4", "--folds", "5", "--quiet", "--device", "cpu",
           "--out", str(tmp_path / "out")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("FutureWarning: fake upstream deprecation") == 1, res.stderr


def _accuracy(out: Path) -> float:
    return json.loads((out / "verification.json").read_text())["results"][0]["accuracy"]


def test_eval_finds_the_tree_from_config_or_working_directory(small_bin, tmp_path, monkeypatch,
                                                              capsys):
    """README section 7: inside the arcface_torch tree `fse eval ...` needs no --arcface-dir; a
    --config names its tree wherever it is run; from the plugin root
    `python eval/verification.py ... --arcface-dir` works."""
    monkeypatch.delenv("ARCFACE_TORCH_DIR", raising=False)
    tree = fake_tree(tmp_path / "arcface_torch")
    weights = tree / "work_dirs" / "fake_cfg" / "model.pt"
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(build_network("fake", 512, tree).state_dict(), weights)
    (tree / "configs" / "fake_cfg.py").write_text("config = dict(network='fake', "
                                                  "embedding_size=512, output=None)\n")
    run = ["--pack", str(small_bin), "--quiet", "--device", "cpu", "--out"]
    monkeypatch.chdir(tmp_path)  # outside the tree: the config's location names it
    assert cli_main(["eval", "verification", "--config", str(tree / "configs" / "fake_cfg.py"),
                     *run, "by_config"]) == 0
    monkeypatch.chdir(tree)  # where the user stands after training
    assert cli_main(["eval", "verification", "--config", "configs/fake_cfg.py", *run,
                     "in_tree_config"]) == 0
    assert cli_main(["eval", "verification", "--network", "fake", "--weights",
                     "work_dirs/fake_cfg/model.pt", *run, "in_tree"]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli_main(["eval", "verification", "--network", "fake", "--weights", str(weights), *run,
                     "nowhere"]) == 2
    assert ("network 'fake' is built by arcface_torch's backbones.get_model"
            in capsys.readouterr().err)
    res = subprocess.run([sys.executable, "eval/verification.py", "--network", "fake", "--weights",
                          str(weights), "--arcface-dir", str(tree), *run, str(tmp_path / "script")],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "ARCFACE_TORCH_DIR"})
    assert res.returncode == 0, res.stderr
    expect = _accuracy(tmp_path / "by_config")
    assert [_accuracy(p) for p in (tree / "in_tree_config", tree / "in_tree",
                                   tmp_path / "script")] == [expect] * 3


def test_eval_r18_model_pt_as_train_v2_writes_it(arcface_torch_dir, small_bin, tmp_path,
                                                 monkeypatch):
    """upstream r18 from the user's tree: --arcface-dir, and --config inside the tree (its
    work_dirs/NAME/model.pt)."""
    monkeypatch.delenv("ARCFACE_TORCH_DIR", raising=False)
    tree = tmp_path / "arcface_torch"
    shutil.copytree(arcface_torch_dir, tree)
    torch.manual_seed(0)
    net = build_network("r18", 512, tree).eval()
    weights = tree / "work_dirs" / "fse_r18" / "model.pt"
    weights.parent.mkdir(parents=True)
    torch.save(net.state_dict(), weights)
    (tree / "configs" / "fse_r18.py").write_text("from easydict import EasyDict as edict\n"
                                                 "config = edict()\nconfig.network = 'r18'\n"
                                                 "config.output = None\n")
    run = ["--pack", str(small_bin), "--quiet", "--device", "cpu", "--batch-size", "20", "--out"]
    assert cli_main(["eval", "verification", "--network", "r18", "--weights", str(weights),
                     "--arcface-dir", str(tree), *run, str(tmp_path / "flags")]) == 0
    monkeypatch.chdir(tree)
    assert cli_main(["eval", "verification", "--config", "configs/fse_r18.py", *run,
                     str(tmp_path / "config")]) == 0
    doc = json.loads((tmp_path / "config" / "verification.json").read_text())
    assert (doc["model"]["network"] == "r18"
            and doc["model"]["weights"] == str(Path("work_dirs/fse_r18/model.pt")))
    expect = ev.evaluate_pack(net, small_bin, ev.EmbedSettings(20, progress=False)).accuracy
    assert _accuracy(tmp_path / "flags") == _accuracy(tmp_path / "config") == expect


def test_cli_ijb_config_fse_eval_runs_occlusion_as_the_script_does(ijb_root, ijb_masks, scripted,
                                                                   tmp_path):
    """The config.fse_eval that eval_ijbc.py reads means the same to `fse eval ijb --config`."""
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"config = dict(network='torchscript', embedding_size=64, output=None, "
                   f"fse_eval=dict(occlusion=dict(classes='nose', groups='none', far=0.1), "
                   f"masks={str(ijb_masks)!r}))\n")
    out = tmp_path / "out"
    assert cli_main(["eval", "ijb", "--config", str(cfg), "--root", str(ijb_root), "--weights",
                     str(scripted), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    tar = json.loads((out / "ijbc_results.json").read_text())["tar"]
    occlusion = json.loads((out / "occlusion_ijbc.json").read_text())
    assert occlusion["rows"][0]["region"] == "nose" and occlusion["metric"] == "TAR@FAR=0.1 (%)"
    # FAR 0.1 is the table's last column
    assert occlusion["clean"]["cheap"] == pytest.approx(tar[-1] * 100)

"""Bad input to `fse eval verification|ijb|occlusion` and `fse patch-arcface`: each refused in one line naming the
flag, file or config key, exit status 2, before any model or image is loaded (the `no_loading`
fixture). Then the same rule for the Python API (`load_bin`, `evaluate_*`, `occlusion_*`, the
settings objects, `load_recognizer`): an argument that cannot mean what was typed is an FSEError
naming the parameter, raised before anything is loaded."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from badinput import assert_user_error, run_fse
from fse_plugin import evaluation as ev
from fse_plugin.backbone import load_recognizer
from fse_plugin.common import FSEError

V = ["eval", "verification", "--weights", "{weights}"]
OCC = ["eval", "occlusion", "--pack", "{pack}", "--weights", "{weights}"]
IJB = ["eval", "ijb", "--root", "{ijb}", "--weights", "{weights}"]

CASES = [
    ("batch size 0", V + ["--pack", "{pack}", "--batch-size", "0"], ["--batch-size"]),
    ("batch size negative", V + ["--pack", "{pack}", "--batch-size", "-3"], ["--batch-size"]),
    ("batch size a float", OCC + ["--batch-size", "2.5"], ["--batch-size", "2.5"]),
    ("workers negative", V + ["--pack", "{pack}", "--num-workers", "-1"], ["--num-workers"]),
    ("fill a colour name", OCC + ["--fill", "blue"], ["--fill", "blue"]),
    ("fill outside [-1, 1]", OCC + ["--fill", "5"], ["--fill", "5"]),
    ("far list with a word", IJB + ["--far", "1e-4,abc"], ["--far", "abc"]),
    ("far outside (0, 1)", IJB + ["--far", "1e-4,1.5"], ["--far", "1.5"]),
    ("old --fars spelling checked too", IJB + ["--fars", "0"], ["--fars"]),
    ("occlusion far 0", OCC + ["--far", "0"], ["--far"]),
    ("one fold", V + ["--pack", "{pack}", "--folds", "1"], ["--folds"]),
    ("occlusion one fold", OCC + ["--folds", "1"], ["--folds"]),
    ("pack of one pair", V + ["--pack", "{one_pair}", "--folds", "2"], ["one_pair.bin", "--folds"]),
    ("pack of no pair", V + ["--pack", "{no_pair}"], ["no_pair.bin", "no pairs"]),
    ("pack and data dir", V + ["--pack", "{pack}", "--data-dir", "{data_dir}"],
     ["--pack", "--data-dir"]),
    ("targets missing in data dir", V + ["--data-dir", "{data_dir}", "--targets", "lfw"],
     ["--targets", "lfw.bin"]),
    ("targets with --pack", V + ["--pack", "{pack}", "--targets", "lfw"],
     ["--targets", "--data-dir"]),
    ("pack is a directory", V + ["--pack", "{data_dir}"], ["--pack", "directory"]),
    ("old --bin spelling checked too", V + ["--bin", "{tmp}/nothing.bin"],
     ["--bin", "nothing.bin"]),
    ("config syntax error", V + ["--pack", "{pack}", "--config", "{bad_syntax}"],
     ["bad_syntax.py", "line 1", "never closed"]),
    ("config fse_eval unknown key", V + ["--pack", "{pack}", "--config", "{typo_key}"],
     ["config.fse_eval.batch_sise"]),
    ("config fse_eval flag value", V + ["--pack", "{pack}", "--config", "{zero_batch}"],
     ["config.fse_eval.batch_size"]),
    ("config fse_eval occlusion far", V + ["--pack", "{pack}", "--config", "{bad_far}"],
     ["config.fse_eval.occlusion.far"]),
    ("config without weights", ["eval", "verification", "--pack", "{pack}", "--config",
                                "{no_weights}"], ["no weights", "--weights"]),
    ("unknown cam method",
     V + ["--pack", "{pack}", "--fscam", "{tmp}/cam", "--fscam-methods", "fscm"],
     ["--fscam-methods", "fscm"]),
    ("fscam limit 0", V + ["--pack", "{pack}", "--fscam", "{tmp}/cam", "--fscam-limit", "0"],
     ["--fscam-limit"]),
    ("fscam without masks", V + ["--pack", "{pack_no_masks}", "--fscam", "{tmp}/cam"],
     ["no_masks.bin", "--masks"]),
    ("ijb fscam without masks, before IJB", IJB + ["--fscam", "{tmp}/cam"],
     ["--masks", "--parser"]),
    ("ijb masks of the wrong size", IJB + ["--fscam", "{tmp}/cam", "--masks", "{three_masks}"],
     ["three_masks.npy"]),
    ("unknown class", OCC + ["--classes", "noze"], ["--classes", "noze"]),
    ("group without =", OCC + ["--groups", "eyes:nose"], ["--groups", "eyes:nose"]),
    ("npz where npy is meant", OCC + ["--masks", "{npz}"], ["--masks", "masks.npz"]),
    ("missing weights", ["eval", "verification", "--pack", "{pack}", "--weights", "{tmp}/none.pt"],
     ["--weights", "none.pt"]),
    ("image size 0", V + ["--pack", "{pack}", "--image-size", "0", "112"], ["--image-size"]),
    ("missing IJB root", ["eval", "ijb", "--root", "{tmp}/IJBX", "--weights", "{weights}"],
     ["--root", "IJBX"]),
    ("negative seed", OCC + ["--seed", "-1"], ["--seed"]),
    ("patch a folder that is not arcface_torch", ["patch-arcface", "{tmp}"],
     ["not an arcface_torch dir"]),
]
if not torch.cuda.is_available():
    CASES.append(("cuda on a machine without", V + ["--pack", "{pack}", "--device", "cuda"],
                  ["--device", "cuda"]))
    CASES.append(("fp16 on a CPU", OCC + ["--device", "cpu", "--precision", "fp16"],
                  ["--precision", "fp16"]))


@pytest.fixture(scope="module")
def files(tmp_path_factory, synth_bin) -> dict[str, str]:
    """Small inputs: a pack with masks beside it, packs of 1 and 0 pairs, a checkpoint, configs, an
    IJB meta set."""
    tmp = tmp_path_factory.mktemp("bad_eval")
    weights = tmp / "model.pt"
    torch.save({"w": torch.zeros(1)}, weights)  # only its kind is checked: nothing may be loaded
    (tmp / "one_pair.bin").write_bytes(pickle.dumps(([b"a", b"b"], [True]), protocol=4))
    (tmp / "no_pair.bin").write_bytes(pickle.dumps(([], []), protocol=4))
    (tmp / "no_masks.bin").write_bytes(Path(synth_bin).read_bytes())
    (tmp / "data").mkdir()
    np.savez(tmp / "masks.npz", masks=np.zeros((2, 112, 112), np.uint8))
    np.save(tmp / "three_masks.npy", np.zeros((3, 112, 112), np.uint8))
    configs = {"bad_syntax": "config = dict(\nnetwork = 'tiny'\n",
               "typo_key": "fse_eval=dict(batch_sise=3)",
               "zero_batch": "fse_eval=dict(batch_size=0)",
               "bad_far": "fse_eval=dict(occlusion=dict(far=2))", "no_weights": "output=None"}
    for name, body in configs.items():
        text = body if name == "bad_syntax" else f"config = dict(network='tiny', {body})\n"
        (tmp / f"{name}.py").write_text(text)
    ijb = tmp / "IJBC" / "meta"
    ijb.mkdir(parents=True)
    (ijb / "ijbc_face_tid_mid.txt").write_text("1.jpg 1 1\n2.jpg 2 2\n")
    (ijb / "ijbc_name_5pts_score.txt").write_text("".join(f"{i}.jpg 1 2 3 4 5 6 7 8 9 10 0.9\n"
                                                          for i in (1, 2)))
    (ijb / "ijbc_template_pair_label.txt").write_text("1 2 1\n")
    names = {"pack": synth_bin, "weights": weights, "tmp": tmp, "data_dir": tmp / "data",
             "ijb": tmp / "IJBC", "npz": tmp / "masks.npz", "pack_no_masks": tmp / "no_masks.bin",
             "three_masks": tmp / "three_masks.npy", "one_pair": tmp / "one_pair.bin",
             "no_pair": tmp / "no_pair.bin"}
    names.update({name: tmp / f"{name}.py" for name in configs})
    return {k: str(v) for k, v in names.items()}


@pytest.mark.parametrize("argv,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line(argv, names, files, no_loading):
    assert_user_error(run_fse([a.format(**files) for a in argv]),
                      *[n.format(**files) for n in names])


MODEL = torch.nn.Flatten()
VIEWS = np.ones((2, 20, 4), np.float32)
ISSAME = np.arange(10) % 2 == 0
FACES = np.zeros((20, 112, 112, 3), np.uint8)
API_CASES = [
    ("load_bin image size a float",
     lambda f: ev.load_bin(f["pack"], (112.0, 112)), ["image_size[0]", "112.0"]),
    ("load_bin image size one number",
     lambda f: ev.load_bin(f["pack"], 112), ["image_size", "(height, width)"]),
    ("load_bin no path", lambda f: ev.load_bin(None), ["path", "None"]),
    ("one fold", lambda f: ev.evaluate_embeddings(VIEWS, ISSAME, 1), ["n_folds", ">= 2"]),
    ("folds a float", lambda f: ev.evaluate_embeddings(VIEWS, ISSAME, 2.0), ["n_folds", "2.0"]),
    ("folds a bool", lambda f: ev.evaluate_embeddings(VIEWS, ISSAME, True), ["n_folds", "True"]),
    ("FAR 0", lambda f: ev.evaluate_embeddings(VIEWS, ISSAME, far_target=0), ["far_target"]),
    ("FAR above 1",
     lambda f: ev.evaluate_embeddings(VIEWS, ISSAME, far_target=1.5), ["far_target", "1.5"]),
    ("issame not 0/1", lambda f: ev.evaluate_embeddings(VIEWS, np.arange(10) % 3), ["issame"]),
    ("batch size where the settings go", lambda f: ev.evaluate_pack(MODEL, f["pack"], 20),
     ["settings", "EmbedSettings(...)", "got 20"]),
    ("evaluate_pack one fold",
     lambda f: ev.evaluate_pack(MODEL, f["pack"], n_folds=1), ["n_folds"]),
    ("evaluate_pack images for other pairs", lambda f: ev.evaluate_pack(MODEL, (FACES[:4], ISSAME)),
     ["pack", "4 images for 10 pairs"]),
    ("embed float images",
     lambda f: ev.embed(MODEL, FACES.astype(np.float32)), ["images", "float32"]),
    ("settings batch size 0", lambda f: ev.EmbedSettings(0), ["EmbedSettings.batch_size"]),
    ("settings batch size a float",
     lambda f: ev.EmbedSettings(2.5), ["EmbedSettings.batch_size", "2.5"]),
    ("settings batch size a bool",
     lambda f: ev.EmbedSettings(True), ["EmbedSettings.batch_size", "True"]),
    ("settings workers negative",
     lambda f: ev.EmbedSettings(num_workers=-1), ["EmbedSettings.num_workers"]),
    ("settings embedding size 0",
     lambda f: ev.EmbedSettings(embedding_size=0), ["EmbedSettings.embedding_size"]),
    ("settings unknown device",
     lambda f: ev.EmbedSettings(device="gpu"), ["EmbedSettings.device", "gpu"]),
    ("IJB FARs a number, not a list",
     lambda f: ev.evaluate_ijb(MODEL, f["ijb"], fars=1e-4), ["fars"]),
    ("IJB FAR 0", lambda f: ev.evaluate_ijb(MODEL, f["ijb"], fars=[1e-4, 0.0]), ["fars[1]"]),
    ("IJB target other than the meta's",
     lambda f: ev.evaluate_ijb(MODEL, ev.read_ijb_meta(f["ijb"]),
                               target="IJBB"), ["target", "IJBB"]),
    ("occlusion one fold",
     lambda f: ev.occlusion_pack({"m": MODEL}, FACES, ISSAME, None, folds=1), ["folds"]),
    ("occlusion FAR above 1", lambda f: ev.occlusion_ijb({"m": MODEL}, ev.read_ijb_meta(f["ijb"]),
                                                         None, far=2), ["far", "2"]),
    ("occlusion seed negative",
     lambda f: ev.OcclusionSettings(seed=-1), ["OcclusionSettings.seed"]),
    ("occlusion fill unknown",
     lambda f: ev.OcclusionSettings(fill="blue"), ["OcclusionSettings.fill", "blue"]),
    ("occlusion region of class 99", lambda f: ev.OcclusionSettings([("x", [99])]),
     ["OcclusionSettings.regions[0]", "99"]),
    ("occlusion embed a dict",
     lambda f: ev.OcclusionSettings(embed={"batch_size": 3}), ["OcclusionSettings.embed"]),
    ("occlusion groups a number", lambda f: ev.parse_groups(3), ["groups", "3"]),
    ("negative pair limit", lambda f: ev.select_pairs(ISSAME, "same", -1), ["limit", "-1"]),
    ("recognizer size a float",
     lambda f: load_recognizer(f["weights"], "tiny", 512.0), ["embedding_size", "512.0"]),
    ("recognizer size a bool",
     lambda f: load_recognizer(f["weights"], "tiny", True), ["embedding_size", "True"]),
    ("recognizer size negative",
     lambda f: load_recognizer(f["weights"], "tiny", -1), ["embedding_size", "-1"]),
    ("recognizer network not a name", lambda f: load_recognizer(f["weights"], 3), ["network", "3"]),
    ("recognizer weights a directory",
     lambda f: load_recognizer(f["tmp"]), ["a directory", "model.pt"]),
    ("recognizer unknown device", lambda f: load_recognizer(f["weights"], map_location="gpu"),
     ["map_location", "gpu"]),
]
if not torch.cuda.is_available():
    API_CASES += [("settings fp16 on a CPU", lambda f: ev.EmbedSettings(precision="fp16"),
                   ["EmbedSettings.precision", "fp16"]),
                  ("settings cuda on a machine without", lambda f: ev.EmbedSettings(device="cuda"),
                   ["EmbedSettings.device", "cuda"])]


@pytest.mark.parametrize("call,names", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_refuses_what_cannot_mean_what_was_typed(call, names, files, no_loading):
    with pytest.raises(FSEError) as info:
        call(files)
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in names), message

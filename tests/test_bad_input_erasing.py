"""Bad input to the erasing API (FSErasing, erase, MaskRuns, FSEConfig, FSEMXFaceDataset): each
refused with one FSEError line naming the parameter or config key, never reinterpreted (a float or
bool where a count or class id is meant, a list where a range is meant, a string of digits where a
class is meant)."""
import numpy as np
import pytest
import torch

from fse_plugin.common import FSEError
from fse_plugin.dataset import FSEMXFaceDataset
from fse_plugin.erasing import FSErasing, MaskRuns, erase
from fse_plugin.fseconfig import FSEConfig

IMG, MASK = torch.zeros(3, 8, 8), np.zeros((8, 8), np.uint8)
IMGS, MASKS = torch.zeros(2, 3, 8, 8), np.zeros((2, 8, 8), np.uint8)
RUNS = (np.zeros(1, np.uint8), np.array([64], np.uint8))


def dataset(rec, cache, **fse):
    return lambda: FSEMXFaceDataset(rec, 0, fse=dict(masks=str(cache), **fse))


CASES = [
    ("p above 1", lambda r, c: FSErasing(p=1.5), ["FSErasing.p", ">= 0 and <= 1"]),
    ("p a bool", lambda r, c: FSErasing(p=True), ["FSErasing.p", "True"]),
    ("p a string", lambda r, c: FSErasing(p="0.5"), ["FSErasing.p", "'0.5'"]),
    ("n_erase a float", lambda r, c: FSErasing(n_erase=2.0), ["FSErasing.n_erase", "2.0"]),
    ("n_erase a bool", lambda r, c: FSErasing(n_erase=True), ["FSErasing.n_erase", "True"]),
    ("n_erase negative", lambda r, c: FSErasing(n_erase=-1), ["FSErasing.n_erase", ">= 0"]),
    ("n_erase a list where a range is meant",
     lambda r, c: FSErasing(n_erase=[1, 3]), ["FSErasing.n_erase", "(1, 3)"]),
    ("n_erase a digit string",
     lambda r, c: FSErasing(n_erase="2"), ["FSErasing.n_erase", "n_erase=2"]),
    ("n_erase range reversed",
     lambda r, c: FSErasing(n_erase=(3, 1)), ["FSErasing.n_erase", "lo <= hi"]),
    ("n_erase range of floats",
     lambda r, c: FSErasing(n_erase=(1, 2.5)), ["FSErasing.n_erase", "(1, 2.5)"]),
    ("n_erase above the classes",
     lambda r, c: FSErasing(n_erase=3, classes="nose,mouth"), ["FSErasing.n_erase", "2"]),
    ("fixed classes and classes", lambda r, c: FSErasing(n_erase=["nose"], classes=["mouth"]),
     ["FSErasing.n_erase", "FSErasing.classes"]),
    ("class as a digit string",
     lambda r, c: FSErasing(classes=["nose", "10"]), ["FSErasing.classes", "'10'", "10"]),
    ("class as a bool", lambda r, c: FSErasing(classes=[True]), ["FSErasing.classes", "True"]),
    ("class as a float", lambda r, c: FSErasing(classes=[10.0]), ["FSErasing.classes", "10.0"]),
    ("class id out of range", lambda r, c: FSErasing(classes=[25]), ["FSErasing.classes", "25"]),
    ("class twice",
     lambda r, c: FSErasing(classes=["nose", "Nose"]), ["FSErasing.classes", "'nose' given twice"]),
    ("unknown class", lambda r, c: FSErasing(classes="nosee"), ["FSErasing.classes", "'nosee'"]),
    ("classes a number", lambda r, c: FSErasing(classes=5), ["FSErasing.classes", "5"]),
    ("unknown fill", lambda r, c: FSErasing(fill="blue"), ["FSErasing.fill", "'blue'"]),
    ("fill NaN", lambda r, c: FSErasing(fill=float("nan")), ["FSErasing.fill", "nan"]),
    ("present_only a string",
     lambda r, c: FSErasing(present_only="yes"), ["FSErasing.present_only", "'yes'"]),
    ("mirrored of another length",
     lambda r, c: FSErasing(present_only=True).get_params(MASKS,
                                                          mirrored=[True]),
     ["FSErasing.get_params: mirrored", "2 bools"]),
    ("erase: unknown fill",
     lambda r, c: erase(IMG, MASK, ["nose"], fill="blur"), ["fill", "'blur'"]),
    ("erase: mask of another size",
     lambda r, c: erase(IMG, MASK[:4], ["nose"]), ["erase: mask shape"]),
    ("erase: uint8 image",
     lambda r, c: erase(IMG.to(torch.uint8), MASK, ["nose"]), ["erase: img", "uint8"]),
    ("erase: class digit string", lambda r, c: erase(IMG, MASK, "10"), ["classes", "'10'"]),
    ("erase: selection of another batch", lambda r, c: erase(IMGS, MASKS, np.zeros((3, 25), bool)),
     ["erase: classes", "[2, K]"]),
    ("erase: masks for another batch",
     lambda r, c: erase(IMGS, MASKS[:1], ["nose"]), ["erase", "1 masks for 2"]),
    ("erase: mirrored as floats", lambda r, c: erase(IMGS, MASKS, ["nose"], mirrored=[0.5, 1.0]),
     ["erase: mirrored", "bools"]),
    ("erase: generator a seed",
     lambda r, c: erase(IMG, MASK, ["nose"], generator=5), ["erase: generator"]),
    ("MaskRuns: int64 values",
     lambda r, c: MaskRuns([(np.zeros(1, np.int64), RUNS[1])], 8, 8), ["MaskRuns", "uint8"]),
    ("MaskRuns: float height", lambda r, c: MaskRuns([RUNS], 8.0, 8), ["MaskRuns: height", "8.0"]),
    ("MaskRuns: runs short of the map", lambda r, c: MaskRuns([RUNS], 8, 9), ["MaskRuns", "8x9"]),
    ("config.fse not a dict",
     lambda r, c: FSEConfig.from_mapping([("p", 0.5)]), ["config.fse", "dict"]),
    ("config.fse unknown key",
     lambda r, c: FSEConfig.from_mapping(dict(erase_p=0.5)), ["config.fse.erase_p", "p"]),
    ("config.fse.verify an int",
     lambda r, c: FSEConfig.from_mapping(dict(verify=1)), ["config.fse.verify"]),
    ("config.fse.flip a string",
     lambda r, c: FSEConfig.from_mapping(dict(flip="0.5")), ["config.fse.flip"]),
    ("dataset: p above 1", lambda r, c: dataset(r, c, p=2)(), ["config.fse.p"]),
    ("dataset: n_erase a list of ints",
     lambda r, c: dataset(r, c, n_erase=[1, 3])(), ["config.fse.n_erase"]),
    ("dataset: masks a file", lambda r, c: FSEMXFaceDataset(r, 0,
                                                            fse=dict(masks=str(r / "train.idx"))),
     ["config.fse.masks", "train.idx"]),
    ("dataset: masks missing", lambda r, c: FSEMXFaceDataset(r, 0, fse=dict(masks=str(r / "nope"))),
     ["config.fse.masks", "fse cache build"]),
    ("dataset: no rec", lambda r, c: FSEMXFaceDataset(r / "missing", 0), ["missing", "not found"]),
    ("dataset: local_rank a float", lambda r, c: FSEMXFaceDataset(r, 0.0), ["local_rank", "0.0"]),
    ("dataset: transform not callable",
     lambda r, c: FSEMXFaceDataset(r, 0, transform="flip"), ["transform"]),
]


@pytest.mark.parametrize("call,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line(synth_rec, synth_cache, call, names):
    with pytest.raises(FSEError) as err:
        call(synth_rec, synth_cache)
    message = str(err.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, f"{name!r} not named in: {message}"

"""The value rules (common.checks), their argparse types (cli.types), devices and atomic writes."""
import argparse
import os

import numpy as np
import pytest
import torch

from fse_plugin.cli.types import count_type, file_type, names_type, open_fraction_type
from fse_plugin.common import FSEError, checks
from fse_plugin.common.files import atomic_output, atomic_write, temporary_name
from fse_plugin.common.runtime import mixed_precision, resolve_device


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "3", None])
def test_count_refuses_what_is_not_a_count(value):
    with pytest.raises(FSEError, match="--batch-size"):
        checks.count(value, "--batch-size")


def test_count_and_limits():
    assert checks.count(3, "n") == 3 and checks.count(np.int64(0), "n", minimum=0) == 0


@pytest.mark.parametrize("check,value", [(checks.probability, 1.5), (checks.probability, False),
                                         (checks.open_fraction, 0.0), (checks.open_fraction, 1.0),
                                         (checks.number, float("nan")), (checks.number, "1")])
def test_numbers_refused_name_the_key(check, value):
    with pytest.raises(FSEError, match=r"config\.fse\.p"):
        check(value, "config.fse.p")


def test_numbers_accepted():
    assert checks.probability(1, "p") == 1.0 and checks.open_fraction(1e-4, "far") == 1e-4
    assert checks.number(5, "x", lo=0, lo_open=True) == 5.0
    with pytest.raises(FSEError, match="must be > 0"):
        checks.number(0, "x", lo=0, lo_open=True)


def test_choice_is_exact():
    assert checks.choice("md", "--report", ("md", "html")) == "md"
    with pytest.raises(FSEError, match="--flip"):
        checks.choice(1, "--flip", (True, False))


def test_name_list():
    assert checks.name_list("a, b", "--m", ["a", "b", "c"]) == ["a", "b"]
    assert checks.name_list(["c"], "--m", ["a", "b", "c"]) == ["c"]
    for bad, why in [("a,x", "unknown name x"), ("a,a", "more than once"), ("a,,b", "empty name"),
                     ([1], "expected names")]:
        with pytest.raises(FSEError, match=why):
            checks.name_list(bad, "--m", ["a", "b", "c"])


def test_files_by_kind(tmp_path):
    npy, npz = tmp_path / "m.npy", tmp_path / "m.npz"
    np.save(npy, np.zeros(3))
    np.savez(npz, a=np.zeros(3))
    assert checks.existing_file(npy, "--masks", "npy") == npy
    with pytest.raises(FSEError, match="--masks: .*m.npz is not a NumPy .npy array"):
        checks.existing_file(npz, "--masks", "npy")
    with pytest.raises(FSEError, match="does not exist"):
        checks.existing_file(tmp_path / "none.npy", "--masks")
    with pytest.raises(FSEError, match="is a directory"):
        checks.existing_file(tmp_path, "--masks")
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    checks.existing_file(tmp_path / "w.pt", "--weights", "checkpoint")
    with pytest.raises(FSEError, match="not a torch checkpoint"):
        checks.existing_file(npy, "--weights", "checkpoint")


def test_directories(tmp_path):
    (tmp_path / "f").write_text("x")
    assert checks.existing_dir(tmp_path, "--rec") == tmp_path
    assert checks.output_dir(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    for check in (checks.existing_dir, checks.output_dir):
        with pytest.raises(FSEError, match="is a file"):
            check(tmp_path / "f", "--out")
    with pytest.raises(FSEError, match="cannot create"):
        checks.output_dir(tmp_path / "f" / "sub", "--out")


def test_argparse_types_report_the_flag(tmp_path, capsys):
    ap = argparse.ArgumentParser(prog="fse x")
    ap.add_argument("--batch-size", type=count_type())
    ap.add_argument("--far", type=open_fraction_type())
    ap.add_argument("--methods", type=names_type(["fscam", "ablation"]))
    ap.add_argument("--masks", type=file_type("npy"))
    assert ap.parse_args(["--batch-size", "4", "--methods", "fscam"]).methods == ["fscam"]
    for argv, said in [(["--batch-size", "2.5"],
                        "argument --batch-size: expected a whole number, got '2.5'"),
                       (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
                       (["--far", "abc"], "argument --far: expected a number, got 'abc'"),
                       (["--methods", "fscm"], "argument --methods: unknown name fscm"),
                       (["--masks", str(tmp_path)], "is a directory")]:
        with pytest.raises(SystemExit):
            ap.parse_args(argv)
        assert said in capsys.readouterr().err


def test_devices_this_machine_lacks_are_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "mps", "cuda:99" if torch.cuda.is_available() else "cuda"):
        with pytest.raises(FSEError, match="--device"):
            resolve_device(bad)


def test_mixed_precision():
    with mixed_precision("cpu", "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with mixed_precision("cpu", "fp32"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(FSEError, match="fp8"):
        mixed_precision("cpu", "fp8")


def test_atomic_output_leaves_old_or_new(tmp_path):
    path = tmp_path / "out" / "result.json"
    atomic_write(path, b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(path) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["result.json"]
    with atomic_output(tmp_path / "folder") as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("a")
    assert ((tmp_path / "folder" / "a").read_text() == "a"
            and not temporary_name(tmp_path / "folder").exists())

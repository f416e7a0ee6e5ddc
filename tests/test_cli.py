"""The ``fse`` grammar: every command's help, old spellings, and the one error style."""
import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fse_plugin.cli import build_parser, main
from fse_plugin.common import FSEError

SYNTH = importlib.import_module("fse_plugin.cli.synth")


def _leaves(parser: argparse.ArgumentParser, path=()):
    """(words, parser) of every runnable command, hidden old spellings included."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _leaves(p, (*path, name))


LEAVES = [words for words, _ in _leaves(build_parser())]


def test_grammar_has_the_documented_commands():
    assert set(LEAVES) >= {("synth",), ("rec", "list"), ("rec", "pack"), ("rec", "shuffle"),
                           ("parser", "train"), ("parser", "eval"), ("cache", "build"),
                           ("cache", "info"), ("cache", "verify"), ("eval", "verification"),
                           ("eval", "ijb"), ("eval", "occlusion"), ("cam",), ("demo",),
                           ("study",), ("patch-arcface",)}
    hidden = {("train-parser",), ("eval-parser",), ("precompute",)}
    assert hidden <= set(LEAVES)
    lines = build_parser().format_help().splitlines()
    listed = {line.split()[0] for line in lines
              if line.startswith("    ") and not line.startswith("     ")}
    assert listed == {"synth", "rec", "parser", "cache", "eval", "cam", "demo", "study",
                      "patch-arcface"}


@pytest.mark.parametrize("words", LEAVES, ids=[" ".join(w) for w in LEAVES])
def test_every_command_has_help(words, capsys):
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "--debug" in out


def test_one_spelling_per_flag():
    """The same concept is spelled the same way in every command that has it."""
    spellings = {}
    for words, p in _leaves(build_parser()):
        for a in p._actions:
            if a.help is argparse.SUPPRESS:
                continue
            for opt in a.option_strings:
                spellings.setdefault(opt, set()).add(" ".join(words))
    for old in ("--bin", "--fp16", "--workers", "--num-features", "--chunk", "--model2"):
        assert old not in spellings, f"{old} is visible in {spellings[old]}"
    for words, p in _leaves(build_parser()):
        device = [a for a in p._actions if "--device" in a.option_strings]
        if device and words[0] not in ("train-parser", "eval-parser", "precompute"):
            assert device[0].default == "auto", words


@pytest.mark.parametrize("argv, dest, value", [
    # cam checks that its files exist
    (["cam", "--bin", __file__, "--out", "o"], "pack", Path(__file__)),
    (["cam", "--rec", str(Path(__file__).parent), "--out", "o", "--num-features", "128", "--chunk",
      "4", "--groups", "8", "--amp"], "embedding_size", 128),
    (["eval", "verification", "--fp16"], "precision", "fp16"),
    (["eval", "verification", "--amp"], "precision", "fp16"),
    (["eval", "ijb", "--root", ".", "--target", "IJBB"], "ijb_set", "IJBB"),
    (["eval", "ijb", "--root", ".", "--fars", "0.1"], "far", [0.1]),
    (["cache", "build", "--rec", "r", "--from-labels", "l", "--workers", "3"], "num_workers", 3),
    (["synth", "--workers", "1"], "num_workers", 1),
])
def test_old_flags_still_work_with_a_note(argv, dest, value, capsys, tmp_path, monkeypatch):
    # the files a command checks while parsing: a rec r/ and a labels file l
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "train.rec").write_bytes(b"")
    (tmp_path / "l").write_bytes(b"PK\x03\x04")
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert "is deprecated; use --" in capsys.readouterr().err


def test_old_command_names_run_the_new_code(tmp_path, capsys):
    (tmp_path / "train.rec").write_bytes(b"")
    # an npz without keys and masks: refused when run
    np.savez(tmp_path / "none.npz", other=np.zeros(1))
    rc = main(["precompute", "--rec", str(tmp_path), "--from-labels", str(tmp_path / "none.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "'fse precompute' is deprecated; use 'fse cache build'" in err
    assert "fse cache build: error:" in err and "none.npz" in err


def _boom(exc):
    def run(args):
        raise exc
    return run


@pytest.mark.parametrize("exc, rc, text", [
    (FSEError("data.rec: key 7 is damaged; rebuild it"), 2,
     "fse synth: error: data.rec: key 7 is damaged"),
    (FileNotFoundError(2, "No such file or directory", "/x/y.bin"), 2,
     "fse synth: error: /x/y.bin: No such file"),
    (ZeroDivisionError("oops"), 1,
     "fse synth: internal error: ZeroDivisionError: oops (run again with --debug"),
])
def test_errors_are_one_line_without_traceback(exc, rc, text, monkeypatch, capsys):
    monkeypatch.setattr(SYNTH, "run", _boom(exc))
    assert main(["synth"]) == rc
    err = capsys.readouterr().err
    assert err.startswith(text) and err.count("\n") == 1 and "Traceback" not in err


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(SYNTH, "run", _boom(FSEError("bad")))
    with pytest.raises(FSEError):
        main(["synth", "--debug"])
    with pytest.raises(FSEError):
        main(["--debug", "synth"])
    monkeypatch.setenv("FSE_DEBUG", "1")
    with pytest.raises(FSEError):
        main(["synth"])


def test_no_command_prints_help(capsys):
    assert main([]) == 2 and "COMMAND" in capsys.readouterr().out


def test_console_entry_point_reports_bad_flags():
    r = subprocess.run([sys.executable, "-m", "fse_plugin", "cache", "info"], capture_output=True,
                       text=True, timeout=120)
    assert (r.returncode == 2
            and "fse cache info: error: the following arguments are required: path" in r.stderr)

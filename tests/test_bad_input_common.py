"""The error contract of the command line itself (the commands' own cases are in
test_bad_input_<area>.py)."""
import pytest

from badinput import assert_user_error, run_fse

CASES = [
    ("unknown command", ["nope"], ["nope"]),
    # a pack that exists
    ("unknown flag", ["cam", "--pack", __file__, "--out", "o", "--bogus"], ["--bogus"]),
    ("missing action", ["cache"], ["ACTION"]),
    ("missing required flag", ["eval", "occlusion"], ["--pack"]),
]


@pytest.mark.parametrize("argv,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line(argv, names, no_loading):
    assert_user_error(run_fse(argv), *names)


def test_no_command_prints_help_and_exits_2():
    result = run_fse([])
    assert result.rc == 2 and "COMMAND" in result.out


def _command_that(action):
    def run(args):
        action()
        return 0
    return run


def _swallowed_interrupt():
    import os
    import signal
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:  # a library that swallows Ctrl-C
        pass


def _raise(exc):
    def action():
        raise exc
    return action


@pytest.mark.parametrize("action,rc,said", [
    (_raise(KeyboardInterrupt()), 130, "fse synth: interrupted"),
    (_swallowed_interrupt, 130, "fse synth: interrupted"),
    (_raise(RuntimeError("boom")), 1, "fse synth: internal error: RuntimeError: boom"),
    (_raise(FileNotFoundError(2, "No such file or directory", "x.rec")), 2,
     "fse synth: error: x.rec: No such"),
])
def test_exit_statuses(monkeypatch, action, rc, said):
    from fse_plugin.cli import synth
    monkeypatch.setattr(synth, "run", _command_that(action))
    result = run_fse(["synth", "--out", "unused"])
    assert (result.rc == rc and result.lines == [result.lines[0]]
            and result.lines[0].startswith(said))


def test_library_logging_reaches_stderr(monkeypatch):
    import logging
    from fse_plugin.cli import synth
    say = logging.getLogger("fse_plugin.synth").info
    monkeypatch.setattr(synth, "run", _command_that(lambda: say("wrote 3 faces")))
    result = run_fse(["synth", "--out", "unused"])
    assert result.rc == 0 and result.lines == ["wrote 3 faces"]
    # as it was: arcface_torch's training.log gets the messages
    log = logging.getLogger("fse_plugin")
    assert log.propagate and not log.handlers and log.level == logging.NOTSET

"""The ``lstmkit`` entry point: which errors are the user's, and how signals stop it."""

import importlib
import os
import signal

import pytest

import lstmkit.cli
from lstmkit.cli import main


def _fail_with(monkeypatch, error):
    def run(args):
        raise error

    from lstmkit.cli import env

    monkeypatch.setattr(env, "run", run)


def test_a_user_error_is_one_line(monkeypatch, capsys):
    _fail_with(monkeypatch, ValueError("data: expected X, got Y"))
    assert main(["env"]) == 2
    assert capsys.readouterr().err == "lstmkit env: error: data: expected X, got Y\n"


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), KeyError("layout")])
def test_a_bug_is_not_dressed_as_a_user_error(error, monkeypatch):
    """Before: TypeError and KeyError printed as one-line user errors, hiding bugs."""
    _fail_with(monkeypatch, error)
    with pytest.raises(type(error)):
        main(["env"])


def test_ctrl_c_while_importing_is_one_line(monkeypatch, capsys):
    """Before: the imports ran outside the handler and Ctrl-C showed a traceback."""
    def interrupted(name, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    try:
        code = main(["env"])
    except KeyboardInterrupt:  # let pytest report it, rather than stop the whole session
        pytest.fail("KeyboardInterrupt escaped main")
    assert code == 130
    assert capsys.readouterr().err == "lstmkit: interrupted\n"


def test_sigterm_stops_with_one_line_and_restores_the_handler(monkeypatch, capsys):
    """Before: SIGTERM killed the process silently, skipping every cleanup."""
    class Unhandled(Exception):
        pass

    def unhandled(signum, frame):  # stands in for the default action, which would kill pytest
        raise Unhandled

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)

    from lstmkit.cli import env

    monkeypatch.setattr(env, "run", terminated)
    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        code = main(["env"])
        assert signal.getsignal(signal.SIGTERM) is unhandled  # main put ours back
    except (KeyboardInterrupt, Unhandled):
        pytest.fail("SIGTERM was not handled by main")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 143
    assert capsys.readouterr().err == "lstmkit env: terminated\n"
    assert issubclass(lstmkit.cli.Terminated, KeyboardInterrupt)  # training saves as on Ctrl-C


@pytest.mark.parametrize("command", sorted(lstmkit.cli._COMMANDS))
def test_every_command_prints_its_help(command, capsys):
    """Before: forecast's --help raised TypeError (a '%d/%m/%Y' in an option's help)."""
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert "usage: lstmkit" in capsys.readouterr().out

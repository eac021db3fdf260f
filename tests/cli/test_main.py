"""The top of the command line: help, version, the error boundary."""

import sys

import pytest

from evtransfer import __version__
from evtransfer.cli import main


def test_help_and_version(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def _run_raising(monkeypatch, exc: BaseException):
    """`evtransfer info x` whose command raises `exc`."""
    from evtransfer.cli import io

    def boom(args):
        raise exc

    monkeypatch.setattr(io, "run_info", boom)


@pytest.mark.parametrize("exc", [ValueError("bad value\nsecond line"),
                                 IsADirectoryError(21, "Is a directory", "out.png"),
                                 KeyError("no_such_key"), EOFError("ran out")])
def test_user_errors_are_one_line_and_exit_2(monkeypatch, capsys, exc):
    _run_raising(monkeypatch, exc)
    assert main(["info", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evtransfer info: error: ") and err.count("\n") == 1
    assert {ValueError: "bad value second line", IsADirectoryError: "out.png: is a directory",
            KeyError: "no_such_key", EOFError: "ran out"}[type(exc)] in err


def test_ctrl_c_exits_130_and_debug_shows_the_traceback(monkeypatch, capsys):
    _run_raising(monkeypatch, KeyboardInterrupt())
    assert main(["info", "x"]) == 130
    assert capsys.readouterr().err == "evtransfer info: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["info", "x", "--debug"])
    _run_raising(monkeypatch, ValueError("bad"))
    for argv in (["--debug", "info", "x"], ["info", "x", "--debug"]):
        with pytest.raises(ValueError, match="bad"):
            main(argv)


def test_a_bug_is_not_hidden(monkeypatch):
    _run_raising(monkeypatch, ZeroDivisionError("division by zero"))
    with pytest.raises(ZeroDivisionError):
        main(["info", "x"])


@pytest.mark.parametrize("device", ["bogus", "cuda:99"])
def test_a_device_this_machine_lacks_is_a_clean_error(tmp_path, capsys, device):
    image = tmp_path / "i.png"
    assert main(["simulate", "spikes", str(image), "-o", str(tmp_path / "s.dat"),
                 "--device", device]) == 2
    assert f"--device {device!r}" in capsys.readouterr().err


def test_an_unknown_method_lists_the_known_ones(tmp_path, capsys):
    assert main(["train", "cmes", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'cmes'" in err and "cmess" in err and "source_only" in err


def test_ctrl_c_in_a_subprocess_exits_130_and_leaves_no_partial_file(tmp_path):
    """Issue 21, problem 6: Ctrl-C was a traceback. SIGINT during a long simulation: one line,
    exit 130, and the partly written output is removed."""
    import signal
    import subprocess
    import time

    import numpy as np
    from PIL import Image

    from tests.cli._run import SRC

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48), np.uint8)).save(image)
    out = tmp_path / "long.h5"
    env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "evtransfer.cli", "simulate", "events",
                             str(image), "--motion", "random", "--frames", "20000", "-o",
                             str(out)], stderr=subprocess.PIPE, text=True, env=env,
                            # a runner started in the background ignores SIGINT, and a child
                            # inherits that: give it the default disposition a terminal has
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # until the writer's temporary file shows the simulation is running
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, "evtransfer simulate events: interrupted\n"), err
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]

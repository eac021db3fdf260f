"""`evtransfer world show`."""

from evtransfer.cli import main
from tests.cli._run import one_line_error, run_cli


def test_world_show_and_a_clean_error(tiny_world, tmp_path, capsys):
    out = tmp_path / "montage.png"
    assert main(["world", "show", str(tiny_world), "-o", str(out), "--samples", "2"]) == 0
    assert out.stat().st_size > 1000
    assert main(["world", "show", str(tmp_path), "-o", str(out)]) == 2
    assert "not a built world" in capsys.readouterr().err


def test_a_bad_world_size_leaves_no_folder(tmp_path):
    """Issue 21, problem 6: `world build --set width=-3` was a traceback and left a partial
    folder."""
    out = tmp_path / "w"
    err = one_line_error(run_cli("world", "build", "--preset", "tiny", "--set", "width=-3",
                                 "--out", out))
    assert "width and height must be >= 1" in err and not out.exists()


def test_misleading_world_messages(tmp_path):
    """Problem 8: `train --world /nope` said "unknown world preset"; `world show --samples 0`
    was accepted."""
    err = one_line_error(run_cli("train", "source_only", "--world", tmp_path / "nope", "--out",
                                 tmp_path / "t"))
    assert "no such world folder" in err
    proc = run_cli("world", "show", tmp_path, "-o", tmp_path / "m.png", "--samples", "0")
    assert proc.returncode == 2 and "--samples: must be >= 1, got 0" in proc.stderr

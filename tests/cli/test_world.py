"""`evtransfer world show`."""

from evtransfer.cli import main


def test_world_show_and_a_clean_error(tiny_world, tmp_path, capsys):
    out = tmp_path / "montage.png"
    assert main(["world", "show", str(tiny_world), "-o", str(out), "--samples", "2"]) == 0
    assert out.stat().st_size > 1000
    assert main(["world", "show", str(tmp_path), "-o", str(out)]) == 2
    assert "not a built world" in capsys.readouterr().err

"""The top of the command line: help, version, the error boundary."""

import pytest

from evtransfer import __version__
from evtransfer.cli import main


def test_help_and_version(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out

"""``liverank serve`` without the ``serve`` extra says which extra to install (issue #12 item 5)."""

from __future__ import annotations

import sys

import pytest

from liverank.cli import main
from liverank.cli_serve import SERVE_MODULES


@pytest.mark.parametrize("missing", SERVE_MODULES)
def test_serve_without_extra_names_the_extra(missing, monkeypatch, capsys, tmp_path):
    # None in sys.modules makes `import <missing>` raise ModuleNotFoundError, as on a machine
    # where `pip install liverank` ran without [serve]
    monkeypatch.setitem(sys.modules, missing, None)
    code = main(["serve", "--registry", str(tmp_path / "reg"), "--data", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "liverank[serve]" in err and f"'{missing}'" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1  # one line, unwrapped

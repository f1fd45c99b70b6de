"""``liverank graph build`` on a tiny simulated world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liverank.cli import main
from liverank.data.io import read_meta
from liverank.graph.store import NeighbourStore


def test_graph_build_writes_a_store(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "graph"
    assert main(["graph", "build", "--data", str(tiny_world), "--out", str(out), "--k", "4"]) == 0
    printed = capsys.readouterr().out
    for word in ("u2a", "swing", "u2a2u2a", "a2u2a", "edges", "neighbours"):
        assert word in printed
    store = NeighbourStore.load(out)
    assert store.meta["as_of_ts"] == read_meta(tiny_world).end_ts  # --as-of default
    assert store.meta["k"] == 4 and store.meta["alpha"] == 1.0
    assert store.meta["counts"]["u2a_edges"] > 0
    ids, _ = store.neighbours("a2u2a", np.arange(50))
    assert ids.shape == (50, 4) and (ids > 0).any()


def test_graph_build_options_and_bad_input(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g"
    args = ["graph", "build", "--data", str(tiny_world), "--out", str(out), "--as-of", "0"]
    assert main([*args, "--pairs", "distinct", "--fanout", "3", "--max-users-per-author", "2"]) == 0
    meta = NeighbourStore.load(out).meta
    assert (meta["as_of_ts"], meta["pairs"], meta["fanout"]) == (0, "distinct", 3)
    assert meta["counts"]["gifts"] == 0
    assert main(["graph", "build", "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "no meta.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--alpha", "-1"])
    assert exc.value.code == 2 and "--alpha" in capsys.readouterr().err

"""Shared fixtures: hand-built gift logs written as canonical datasets, and a tiny world."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from liverank.data import io
from liverank.data.schema import DatasetMeta

#: a gift log (ts, user_id, author_id, event, value)
Rows = list[tuple[int, int, int, str, float]]


def write_dataset(root: Path, rows: Rows, n_users: int = 5, n_authors: int = 4) -> Path:
    """A canonical dataset with ``users`` 1..n_users, ``authors`` 1..n_authors and the
    ``live_events`` ``rows`` (room id = author id); only what the graph reads."""
    io.write_table(root, "users", pl.DataFrame({
        "user_id": range(1, n_users + 1), "age": 0, "gender": 0, "device": 0, "activity": 0,
    }))  # fmt: skip
    io.write_table(root, "authors", pl.DataFrame({
        "author_id": range(1, n_authors + 1), "category": 1, "author_type": "chat", "fans": 0,
    }))  # fmt: skip
    rows = sorted(rows)
    events = pl.DataFrame(
        {
            "ts": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "live_id": [r[2] for r in rows],
            "author_id": [r[2] for r in rows],
            "event": [r[3] for r in rows],
            "value": [r[4] for r in rows],
            "product_id": [0] * len(rows),
        },
        schema_overrides={"value": pl.Float64, "ts": pl.Int64},
    )
    io.write_table(root, "live_events", events)
    io.write_meta(root, DatasetMeta(name="hand-built", start_ts=0, end_ts=10_000))
    return root


@pytest.fixture()
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1_000))

    def make(rows: Rows, n_users: int = 5, n_authors: int = 4) -> Path:
        return write_dataset(tmp_path / f"data{next(counter)}", rows, n_users, n_authors)

    return make


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator's ``tiny`` preset, seed 0 (about 2 s; shared, never modified)."""
    from liverank.data.sim import SimConfig, simulate

    out = tmp_path_factory.mktemp("tiny_world")
    simulate(SimConfig.preset("tiny", seed=0), out, progress=False)
    return out

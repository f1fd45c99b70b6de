"""A small, valid canonical dataset written by hand (every table, every rule satisfied).

Timeline (seconds after T0 = 2023-11-14 00:00 UTC):

* room 101 (author 1, talent show) on air [0, 3600]; room 102 (author 2, shopping) [600, 4200];
  room 103 (author 3, chat) [1800, 5400];
* four requests (700, 1000, 1900, 2000) show slates of one or two rooms;
* user 1 visits 101 (like, gift), user 2 visits 102 (cart click and buy of product 11),
  user 3 visits 103 (comment, follow); short-video and product events happen in between.

``make_dataset(**tables)`` writes the dataset to a fresh directory; a keyword replaces that table
(written as-is, without casting, so that tests can plant bad dtypes) or removes it (``None``);
``meta=`` replaces meta.json (a DatasetMeta, or a string written verbatim).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from liverank.data import io
from liverank.data.schema import TABLES, DatasetMeta

T0 = 1_699_920_000_000  # 2023-11-14 00:00:00 UTC, epoch ms
DAY_MS = 86_400_000
SEGMENT_DIM = 4


def t(seconds: float) -> int:
    """Epoch ms of ``seconds`` after T0."""
    return T0 + int(seconds * 1000)


def _frame(table: str, rows: list[tuple]) -> pl.DataFrame:
    schema = TABLES[table].polars_schema
    return pl.DataFrame(rows, schema=schema, orient="row")


def _vec(seed: int) -> list[float]:
    return [0.1 * seed + 0.01 * i for i in range(SEGMENT_DIM)]


def canonical_tables() -> dict[str, pl.DataFrame]:
    """Every canonical table, valid, with canonical dtypes."""
    return {
        "users": _frame(
            "users", [(1, 2, 1, 3, 3), (2, 3, 2, 1, 2), (3, 1, 1, 2, 1), (4, 0, 0, 0, 0)]
        ),
        "authors": _frame(
            "authors", [(1, 1, "talent_show", 3), (2, 2, "shopping", 2), (3, 3, "chat", 1)]
        ),
        "rooms": _frame(
            "rooms",
            [
                (101, 1, t(0), t(3600), 1),
                (102, 2, t(600), t(4200), 2),
                (103, 3, t(1800), t(5400), 3),
            ],
        ),
        "live_impressions": _frame(
            "live_impressions",
            [
                (1, t(700), 1, 101, 1, 0, "slide"),
                (1, t(700), 1, 102, 2, 1, "slide"),
                (2, t(1000), 2, 102, 2, 0, "explore"),
                (3, t(1900), 3, 103, 3, 0, "slide"),
                (3, t(1900), 3, 101, 1, 1, "slide"),
                (4, t(2000), 1, 103, 3, 0, "explore"),
            ],
        ),
        "live_events": _frame(
            "live_events",
            [
                (t(710), 1, 101, 1, "enter", 0.0, 0),
                (t(720), 1, 101, 1, "like", 0.0, 0),
                (t(800), 1, 101, 1, "gift", 10.0, 0),
                (t(900), 1, 101, 1, "exit", 0.0, 0),
                (t(1010), 2, 102, 2, "enter", 0.0, 0),
                (t(1100), 2, 102, 2, "cart_click", 0.0, 11),
                (t(1200), 2, 102, 2, "buy", 25.5, 11),
                (t(1300), 2, 102, 2, "exit", 0.0, 0),
                (t(1905), 3, 103, 3, "enter", 0.0, 0),
                (t(1950), 3, 103, 3, "comment", 0.0, 0),
                (t(1960), 3, 103, 3, "follow", 0.0, 0),
                (t(2100), 3, 103, 3, "exit", 0.0, 0),
            ],
        ),
        "videos": _frame("videos", [(201, 1, 1, 1, 15_000), (202, 3, 2, 5, 42_000)]),
        "video_events": _frame(
            "video_events",
            [
                (t(100), 1, 201, 1, "impression", 0),
                (t(101), 1, 201, 1, "play", 12_000),
                (t(300), 2, 202, 3, "impression", 0),
                (t(301), 2, 202, 3, "like", 0),
            ],
        ),
        "products": _frame("products", [(11, 1, 2, 3, 25.5), (12, 1, 2, 4, 9.9)]),
        "product_events": _frame(
            "product_events",
            [(t(50), 4, 12, "click"), (t(60), 4, 12, "cart"), (t(500), 2, 11, "click")],
        ),
        "room_products": _frame("room_products", [(102, t(600), 11), (102, t(1500), 12)]),
        "segments": _frame(
            "segments",
            [
                (101, t(0), _vec(1), _vec(2), _vec(3)),
                (101, t(30), _vec(4), _vec(5), _vec(6)),
                (102, t(600), _vec(7), _vec(8), _vec(9)),
                (102, t(630), _vec(1), _vec(3), _vec(5)),
                (103, t(1800), _vec(2), _vec(4), _vec(6)),
            ],
        ),
    }


def _canonical_meta() -> DatasetMeta:
    return DatasetMeta(
        name="hand-made", start_ts=T0, end_ts=T0 + DAY_MS, segment_dim=SEGMENT_DIM, source="test"
    )


MakeDataset = Callable[..., Path]


@pytest.fixture
def make_dataset(tmp_path: Path) -> MakeDataset:
    counter = itertools.count()

    def make(meta: DatasetMeta | str | None = None, **overrides: pl.DataFrame | None) -> Path:
        root = tmp_path / f"dataset-{next(counter)}"
        tables = canonical_tables()
        for name, df in tables.items():
            if name in overrides:
                continue
            io.write_table(root, name, df)
        for name, df in overrides.items():
            assert name in TABLES, name
            if df is not None:
                root.mkdir(parents=True, exist_ok=True)
                df.write_parquet(io.table_path(root, name))
        if isinstance(meta, str):
            (root / io.META_FILE).write_text(meta)
        else:
            io.write_meta(root, meta if meta is not None else _canonical_meta())
        return root

    return make


@pytest.fixture
def valid_dataset(make_dataset: MakeDataset) -> Path:
    return make_dataset()


@pytest.fixture
def canonical() -> dict[str, pl.DataFrame]:
    """A fresh copy of the canonical tables, to modify in a test."""
    return canonical_tables()


@pytest.fixture
def canonical_meta() -> DatasetMeta:
    """The canonical meta.json contents (change with ``dataclasses.replace``)."""
    return _canonical_meta()

"""The neighbour store: round trip, vectorised lookup with padding, and no leak across as_of."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data import io
from liverank.errors import DataValidationError, UnknownIdError
from liverank.graph.gifting import build_u2a
from liverank.graph.metapath import METAPATHS, metapath_neighbours
from liverank.graph.store import NeighbourStore, build_neighbour_store
from liverank.graph.swing import swing

GIFTS = [
    (10, 1, 1, "gift", 1.0), (11, 1, 2, "gift", 3.0), (12, 2, 1, "gift", 2.0),
    (13, 2, 3, "gift", 2.0), (14, 3, 2, "gift", 5.0), (15, 4, 3, "gift", 1.0),
]  # fmt: skip


def test_round_trip_equals_the_computed_lists(
    make_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_dataset(GIFTS)
    meta = build_neighbour_store(root, tmp_path / "store", as_of_ts=100, k=3, alpha=1.0)
    store = NeighbourStore.load(tmp_path / "store")
    W = build_u2a(root, 100).weights
    want = metapath_neighbours(W, swing(W, 1.0), k=3)
    for name, (source, _) in METAPATHS.items():
        n = W.shape[0] if source == "user" else W.shape[1]
        ids, weights = store.neighbours(name, np.arange(n))
        np.testing.assert_array_equal(ids, want[name][0])
        np.testing.assert_allclose(weights, want[name][1])
        frame = pl.read_parquet(tmp_path / "store" / f"{name}.parquet")
        assert frame.columns == ["node_id", "rank", "neighbour_id", "weight"]
        assert frame.height == meta["counts"][f"{name}_rows"] == (want[name][1] > 0).sum()
    assert meta["dataset"] == "hand-built" and meta["as_of_ts"] == 100 and store.k == 3
    assert meta["counts"]["u2a_edges"] == 6 and set(meta["seconds"]) >= set(METAPATHS)


def test_lookup_pads_unknown_ids(make_dataset: Callable[..., Path], tmp_path: Path) -> None:
    build_neighbour_store(make_dataset(GIFTS), tmp_path / "s", as_of_ts=100, k=4)
    store = NeighbourStore.load(tmp_path / "s")
    ids, weights = store.neighbours("u2a2u", np.array([1, 0, 5, 999, -3, 2]))  # [6, 4]
    assert ids.shape == weights.shape == (6, 4) and ids.dtype == np.int64
    assert ids.tolist() == [[3, 2, 0, 0], [0] * 4, [0] * 4, [0] * 4, [0] * 4, [1, 4, 0, 0]]
    assert (weights[1:5] == 0).all() and (weights[0, :2] > 0).all()
    ids, _ = store.neighbours("a2a", np.array([], dtype=np.int64))
    assert ids.shape == (0, 4)
    with pytest.raises(UnknownIdError, match="unknown metapath"):
        store.neighbours("u2u", np.array([1]))
    with pytest.raises(DataValidationError, match="not a neighbour store"):
        NeighbourStore.load(tmp_path / "nothing")
    (tmp_path / "s" / "meta.json").write_text("{}")
    with pytest.raises(DataValidationError, match="malformed store meta.json"):
        NeighbourStore.load(tmp_path / "s")


def test_an_empty_graph_gives_an_all_padding_store(
    make_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    build_neighbour_store(make_dataset(GIFTS), tmp_path / "s", as_of_ts=10, k=2)  # no gift < 10
    ids, weights = NeighbourStore.load(tmp_path / "s").neighbours("u2a2a", np.array([1, 2]))
    assert ids.tolist() == [[0, 0], [0, 0]] and not weights.any()


def _copy_with_gifts(src: Path, dst: Path, extra: list[tuple[int, int, int]]) -> Path:
    """The dataset ``src`` plus gifts ``(ts, user_id, author_id)`` (value 52), re-sorted."""
    dst.mkdir()
    for name in ("meta.json", "users.parquet", "authors.parquet", "rooms.parquet"):
        shutil.copy(src / name, dst / name)
    if (src / "segments.parquet").exists():
        shutil.copy(src / "segments.parquet", dst / "segments.parquet")
    events = io.read_table(src, "live_events")
    template = events.filter(pl.col("event") == "gift").head(1)
    rows = [
        template.with_columns(
            ts=pl.lit(ts, pl.Int64), user_id=pl.lit(u, pl.Int64), author_id=pl.lit(a, pl.Int64),
            value=pl.lit(52.0),
        )
        for ts, u, a in extra
    ]  # fmt: skip
    io.write_table(dst, "live_events", pl.concat([events, *rows]).sort("ts", maintain_order=True))
    return dst


def _store(path: Path) -> tuple[dict, dict[str, pl.DataFrame]]:
    meta = NeighbourStore.load(path).meta
    meta.pop("seconds")
    return meta, {name: pl.read_parquet(path / f"{name}.parquet") for name in METAPATHS}


def test_no_leak_gifts_at_or_after_as_of_change_nothing(tiny_world: Path, tmp_path: Path) -> None:
    gifts = io.read_table(tiny_world, "live_events").filter(pl.col("event") == "gift")
    T = int(gifts["ts"].sort()[gifts.height // 2])  # a gift happens exactly at T
    build_neighbour_store(tiny_world, tmp_path / "base", T, k=5)
    base_meta, base = _store(tmp_path / "base")
    assert base_meta["counts"]["u2a_edges"] > 0
    # new pairs between users and authors, at T and later: invisible as of T
    late = [(T, 1, 1), (T, 2, 3), (T + 1, 7, 1), (T + 60_000, 7, 2), (T + 3_600_000, 3, 4)]
    _copy_with_gifts(tiny_world, tmp_path / "late", late)
    build_neighbour_store(tmp_path / "late", tmp_path / "late_store", T, k=5)
    late_meta, later = _store(tmp_path / "late_store")
    assert late_meta == base_meta
    for name in METAPATHS:
        assert later[name].equals(base[name]), name
    # the same gifts one millisecond before T change the store
    _copy_with_gifts(tiny_world, tmp_path / "early", [(T - 1, u, a) for _, u, a in late])
    build_neighbour_store(tmp_path / "early", tmp_path / "early_store", T, k=5)
    early_meta, early = _store(tmp_path / "early_store")
    assert early_meta["counts"]["gifts"] == base_meta["counts"]["gifts"] + len(late)
    assert any(not early[name].equals(base[name]) for name in METAPATHS)


def test_author_attributes_are_the_mean_of_their_rooms_segments_before_as_of(
    make_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    """MMBee's author node attribute (section 5.1): the mean content vector of the author's
    segments that started before the store's as_of; 0 for an author without one."""
    root = make_dataset(GIFTS)
    io.write_table(root, "rooms", pl.DataFrame({
        "live_id": [1, 2, 3, 4], "author_id": [1, 2, 3, 1], "start_ts": 0, "end_ts": 10_000,
        "category": 1,
    }))  # fmt: skip
    segments = [  # live_id, ts, visual, speech, text
        (1, 0, [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]),
        (4, 30, [3.0, 0.0], [0.0, 3.0], [0.0, 0.0]),
        (2, 0, [5.0, 5.0], [1.0, 1.0], [0.0, 7.0]),
        (1, 100, [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]),  # at as_of: not before it
        (3, 500, [7.0, 7.0], [7.0, 7.0], [7.0, 7.0]),  # after as_of
    ]
    io.write_table(
        root,
        "segments",
        pl.DataFrame(
            {
                "live_id": [s[0] for s in segments],
                "ts": [s[1] for s in segments],
                **{
                    m: [s[2 + i] for s in segments]
                    for i, m in enumerate(("visual", "speech", "text"))
                },
            },
            schema_overrides={"ts": pl.Int64},
        ),
    )
    meta = build_neighbour_store(root, tmp_path / "store", as_of_ts=100, k=3)
    assert meta["author_attr_dim"] == 2
    store = NeighbourStore.load(tmp_path / "store")
    got = store.attributes(np.array([[1, 2], [3, 0]]))  # [2, 2, 3 * 2]
    np.testing.assert_allclose(got[0, 0], [2.0, 0.0, 0.0, 2.0, 1.0, 1.0])  # rooms 1 and 4
    np.testing.assert_allclose(got[0, 1], [5.0, 5.0, 1.0, 1.0, 0.0, 7.0])
    np.testing.assert_array_equal(got[1], 0.0)  # author 3's only segment is after as_of; padding
    np.testing.assert_array_equal(store.attributes(np.array([99])), 0.0)  # unknown author
    # a dataset without segments: no attributes, and asking for them names why
    plain = make_dataset(GIFTS)
    assert (
        build_neighbour_store(plain, tmp_path / "plain", as_of_ts=100, k=3)["author_attr_dim"] == 0
    )
    with pytest.raises(DataValidationError, match="no author attributes"):
        NeighbourStore.load(tmp_path / "plain").attributes(np.array([1]))
    # a torn attribute file is named
    np.save(tmp_path / "store" / "author_attr.npy", np.zeros((5, 3, 4), np.float32))
    with pytest.raises(DataValidationError, match="meta.json says dimension 2"):
        NeighbourStore.load(tmp_path / "store")

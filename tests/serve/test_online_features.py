"""No train/serve skew: the online features of a request equal the sample builder's rows.

The tiny simulated platform is built into samples once; then its events are replayed into a
:class:`MemoryFeatureStore` in time order and, at each sampled request, every feature column of
``assemble_request`` is compared with the rows the builder wrote for that request's impressions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.io import read_meta, table_path, write_table
from liverank.data.samples import build_samples
from liverank.data.schema import NOT_IN_LIVE_SEQUENCE
from liverank.data.sim import SimConfig, simulate
from liverank.errors import ConfigError
from liverank.features.spec import TASKS, FeatureMap
from liverank.serve.online_features import (
    MemoryFeatureStore,
    assemble_request,
    request_arrays,
)

SEQ_LEN = 20
#: sample columns that are not request features (row keys, labels, masks)
NOT_FEATURES = {"sample_id", "request_id", "stay_ms", *TASKS, *(f"mask_{t}" for t in TASKS)}


def _plant_boundary_events(data: Path, n: int = 300, seed: int = 0) -> None:
    """Add live and short-video behaviours of the impressed user exactly at (and 1 ms before)
    ``n`` impression times: the point-in-time boundary the simulator alone rarely hits."""
    imp = pl.read_parquet(table_path(data, "live_impressions"))
    imp = imp.sample(n, seed=seed).select("ts", "user_id", "live_id", "author_id")
    live = pl.read_parquet(table_path(data, "live_events"))
    planted = [
        imp.with_columns(
            pl.col("ts") - lag, event=pl.lit(ev), value=pl.lit(0.0), product_id=pl.lit(0)
        ).select(live.columns)
        for ev, lag in (("like", 0), ("comment", 1), ("gift", 0))
    ]
    live = pl.concat([live, *planted], how="vertical_relaxed").sort("ts", maintain_order=True)
    write_table(data, "live_events", live)
    video = pl.read_parquet(table_path(data, "video_events"))
    photo = video.select("photo_id", "author_id").unique(maintain_order=True).head(n)
    rows = imp.select("ts", "user_id").with_columns(
        photo.sample(n, with_replacement=True, seed=seed),
        event=pl.lit("play"),
        play_ms=pl.lit(5_000, dtype=pl.Int64),
    )
    video = pl.concat([video, rows.select(video.columns)]).sort("ts", maintain_order=True)
    write_table(data, "video_events", video)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame, FeatureMap]:
    root = tmp_path_factory.mktemp("online")
    simulate(SimConfig.preset("tiny", seed=0), root / "data", progress=False)
    _plant_boundary_events(root / "data")
    build_samples(root / "data", root / "samples", seq_len=SEQ_LEN, progress=False)
    samples = pl.read_parquet(sorted((root / "samples").glob("part-*.parquet")))
    return root / "data", samples, FeatureMap.load(root / "samples")


def _events(data: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(table_path(data, table)).with_row_index("_row")


def _expected(rows: pl.DataFrame, column: str) -> np.ndarray:
    values = rows[column]
    return np.stack(values.to_numpy()) if isinstance(values.dtype, pl.Array) else values.to_numpy()


def _assert_same(batch: dict, rows: pl.DataFrame, where: str) -> None:
    features = [c for c in rows.columns if c not in NOT_FEATURES]
    missing = set(features) - set(batch)
    assert not missing, f"assemble_request lacks sample columns {sorted(missing)}"
    for c in features:
        got = batch[c].numpy()
        want = _expected(rows, c)
        assert got.shape == want.shape, f"{where}: {c} shape {got.shape} != {want.shape}"
        np.testing.assert_array_equal(got, want, err_msg=f"{where}: column {c}")


def _at_request_ts(samples: pl.DataFrame, data: Path) -> pl.DataFrame:
    """Request ids whose user has a live behaviour exactly at the request time."""
    live = pl.read_parquet(table_path(data, "live_events")).filter(
        ~pl.col("event").is_in(NOT_IN_LIVE_SEQUENCE)
    )
    return (
        samples.join(live.select("ts", "user_id").unique(), on=["ts", "user_id"])
        .select("request_id")
        .unique()
    )


def test_online_features_equal_sample_rows_on_replay(built) -> None:
    """Replay events in time order; at 150 sampled requests compare every feature column.

    The store is fed every event up to *and including* the request time, so the query itself
    must drop the behaviours at ``ts`` (planted by :func:`_plant_boundary_events`). It keeps 5
    behaviours more than the model's ``seq_len``, so those at ``ts`` push none of the older
    ones out (see :mod:`liverank.serve.feature_store`, "Incremental updates").
    """
    data, samples, fmap = built
    rng = np.random.default_rng(0)
    requests = samples["request_id"].unique().sort().to_numpy()
    chosen = rng.choice(requests, size=150, replace=False).tolist()
    boundary = set(_at_request_ts(samples, data)["request_id"].to_list()) & set(chosen)
    assert len(boundary) >= 10, "too few sampled requests with a behaviour at the request ts"
    picked = samples.filter(pl.col("request_id").is_in(chosen)).sort("ts", "request_id")
    store = MemoryFeatureStore.from_dataset(data, SEQ_LEN + 5, as_of_ts=0)  # static tables only
    assert store.history_rows() == {"live": 0, "video": 0}
    live, video = _events(data, "live_events"), _events(data, "video_events")
    seen_ts = -1
    n_seq_items = 0
    for (request_id,), rows in picked.group_by("request_id", maintain_order=True):
        ts = int(rows["ts"][0])
        # feed the events of (seen_ts, ts] in file order, in two uneven chunks
        for events, observe in (
            (live, store.observe_live_events),
            (video, store.observe_video_events),
        ):
            new = events.filter((pl.col("ts") > seen_ts) & (pl.col("ts") <= ts))
            cut = len(new) // 3
            observe(new.slice(0, cut).drop("_row"))
            observe(new.slice(cut).drop("_row"))
        seen_ts = ts
        rows = rows.sort("position")
        batch, info = assemble_request(
            store,
            fmap,
            int(rows["user_id"][0]),
            rows["live_id"].to_numpy(),
            ts,
            position=rows["position"].to_numpy() - 1,  # stored as position_code = slot + 1
        )
        _assert_same(batch, rows, f"request {request_id}")
        assert info.user_known and not info.unknown_rooms and not info.off_air_rooms
        assert info.oov == {} and not info.position_defaulted
        assert info.feature_lag_ms is not None and info.feature_lag_ms >= 0
        n_seq_items += info.live_seq_len + info.video_seq_len
    assert n_seq_items > 150 * 5, "replay compared (almost) empty sequences only"


def test_from_dataset_as_of_equals_sample_rows(built) -> None:
    """A store filled by ``from_dataset(as_of_ts=ts)`` gives the builder's rows at ``ts``, and
    so does one filled up to ``ts + 1`` ms (behaviours at ``ts`` itself are in the store)."""
    data, samples, fmap = built
    # requests with a behaviour at their own ts, of users with full sequences
    boundary = _at_request_ts(samples, data)
    late = samples.join(boundary, on="request_id").filter(
        pl.col("video_seq_len") == SEQ_LEN, pl.col("live_seq_len") > 0
    )
    assert len(late), "no boundary request with long sequences"
    for request_id in late["request_id"].unique().sort().tail(2):
        rows = samples.filter(pl.col("request_id") == request_id).sort("position")
        ts = int(rows["ts"][0])
        for as_of, keep in ((ts, SEQ_LEN), (ts + 1, SEQ_LEN + 5)):
            store = MemoryFeatureStore.from_dataset(data, keep, as_of_ts=as_of, chunk_rows=10_000)
            arrays, _ = request_arrays(
                store,
                fmap,
                int(rows["user_id"][0]),
                rows["live_id"].to_numpy(),
                ts,
                rows["position"].to_numpy() - 1,
            )
            _assert_same({k: _Np(v) for k, v in arrays.items()}, rows, f"as of {as_of}")


class _Np:
    """numpy array with a ``.numpy()`` like a tensor (for :func:`_assert_same`)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def numpy(self) -> np.ndarray:
        return self.values


def test_chunking_does_not_change_the_store(built) -> None:
    """Replaying the tables in one chunk or in chunks of 997 rows gives the same histories."""
    data, _, _ = built
    end = read_meta(data).end_ts
    whole = MemoryFeatureStore.from_dataset(data, SEQ_LEN)
    small = MemoryFeatureStore.from_dataset(data, SEQ_LEN, chunk_rows=997)
    users = np.unique(pl.read_parquet(table_path(data, "users"))["user_id"].to_numpy())
    for u in users[:: max(1, len(users) // 40)]:
        for get in ("live_history", "video_history"):
            a = getattr(whole, get)(int(u), end, SEQ_LEN)
            b = getattr(small, get)(int(u), end, SEQ_LEN)
            np.testing.assert_array_equal(a.ts, b.ts)
            for c in a.columns:
                np.testing.assert_array_equal(a.columns[c], b.columns[c])
    assert whole.watermark_ts == small.watermark_ts is not None


# ---------------------------------------------------------------------------------- cold start
@pytest.fixture(scope="module")
def store(built) -> MemoryFeatureStore:
    return MemoryFeatureStore.from_dataset(built[0], SEQ_LEN)


def test_unknown_user_gets_cold_start_codes(built, store) -> None:
    _, samples, fmap = built
    live_id, ts = int(samples["live_id"][-1]), int(samples["ts"][-1])
    batch, info = assemble_request(store, fmap, 10**9, [live_id], ts)
    assert not info.user_known
    for c in ("user_id", "user_age", "user_gender", "user_device", "user_activity"):
        assert batch[c].tolist() == [0], c
    assert info.live_seq_len == info.video_seq_len == 0
    assert batch["live_seq_len"].tolist() == [0] and batch["video_seq_author"].abs().sum() == 0
    assert batch["room_category"].item() > 0  # the room is still known


def test_unknown_and_off_air_rooms_are_flagged(built, store) -> None:
    _, samples, fmap = built
    user, ts = int(samples["user_id"][-1]), int(samples["ts"][-1])
    on_air = store.rooms_on_air(ts)
    rooms = pl.read_parquet(table_path(built[0], "rooms"))
    off = rooms.filter(pl.col("end_ts") <= ts)["live_id"]
    assert len(on_air) and len(off), "fixture has no on-air / ended room at the last ts"
    ids = [int(on_air[0]), 10**9, int(off[0])]
    batch, info = assemble_request(store, fmap, user, ids, ts)
    assert info.unknown_rooms == [10**9] and info.off_air_rooms == [int(off[0])]
    assert batch["live_id"].tolist() == ids  # the request key is kept
    for c in ("author_id", "author_type", "author_fans", "room_category", "room_age_bucket"):
        assert batch[c][1].item() == 0, c
        assert batch[c][0].item() > 0 or c == "author_type", c
    assert batch["position"].tolist() == [1, 1, 1]  # default slot 0 -> code 1
    assert batch["live_seq_author"].shape == (3, SEQ_LEN)
    assert (batch["video_seq_author"][0] == batch["video_seq_author"][2]).all()


def test_rooms_on_air_follow_the_interval_rule(store, built) -> None:
    rooms = pl.read_parquet(table_path(built[0], "rooms"))
    for ts in rooms["start_ts"].head(5).to_list() + rooms["end_ts"].head(5).to_list():
        want = rooms.filter((pl.col("start_ts") <= ts) & (pl.col("end_ts") > ts))["live_id"]
        assert store.rooms_on_air(ts).tolist() == sorted(want.to_list())


def test_codes_outside_the_model_vocabulary_map_to_zero(built, store) -> None:
    _, samples, fmap = built
    row = samples.row(len(samples) - 1, named=True)
    small = fmap.model_copy(update={"tables": {**fmap.tables, "user": 1, "author": 2}})
    batch, info = assemble_request(store, small, row["user_id"], [row["live_id"]], row["ts"])
    assert batch["user_id"].item() == 0 and info.oov.get("user_id") == 1
    assert (batch["live_seq_author"] < 2).all() and (batch["video_seq_author"] < 2).all()
    assert info.user_known  # known to the store, unknown to the model


def test_bad_requests_raise_clear_errors(built, store) -> None:
    _, samples, fmap = built
    ts = int(samples["ts"][-1])
    with pytest.raises(ValueError, match="non-empty"):
        assemble_request(store, fmap, 1, [], ts)
    with pytest.raises(ValueError, match="one slot per room"):
        assemble_request(store, fmap, 1, [1, 2], ts, position=np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match="seq_len"):
        assemble_request(store, fmap.model_copy(update={"seq_len": SEQ_LEN + 1}), 1, [1], ts)

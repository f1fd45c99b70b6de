"""Redis feature store against a real ``redis-server``: same batches as the in-memory store.

Both backends are filled from the same tiny simulated dataset (the Redis one directly, and
through :class:`StoreFeedSource` during a ``run_stream`` replay with a simulated crash and
restart); ``request_arrays`` must give identical arrays for random ``(user, ts)`` requests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.io import read_meta, read_table
from liverank.data.sim import SimConfig, simulate
from liverank.features.spec import SPARSE_FIELDS, FeatureMap, seq_fields
from liverank.serve.feature_store import MemoryFeatureStore, OnlineFeatureStore
from liverank.serve.online_features import request_arrays

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'redis>=5')")
if shutil.which("redis-server") is None:
    pytest.skip("the redis-server binary is not installed", allow_module_level=True)

from liverank.serve.redis_store import RedisFeatureStore, parse_store_url  # noqa: E402
from liverank.serve.store_feed import StoreFeedSource  # noqa: E402
from liverank.stream.engine import StreamEngine, merge_stream  # noqa: E402
from liverank.stream.runner import run_stream  # noqa: E402
from liverank.stream.sources import FrameReplaySource, InProcessSink  # noqa: E402

SEQ_LEN = 20
STORE_SEQ = SEQ_LEN + 5


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("redis_store") / "data"
    simulate(SimConfig.preset("tiny", seed=0), root, progress=False)
    return root


@pytest.fixture(scope="module")
def fmap() -> FeatureMap:
    """A feature map whose tables hold every code (no vocabulary clipping)."""
    tables = set(SPARSE_FIELDS.values()) | {
        t for d in ("live", "video") for t in seq_fields(d).values()
    }
    return FeatureMap(seq_len=SEQ_LEN, tables=dict.fromkeys(tables, 1 << 40))


def _requests(data: Path, n: int, seed: int, lo: int | None = None) -> list[tuple[int, int]]:
    """``n`` (user, ts) pairs: active users (plus an unknown one) at random times."""
    rng = np.random.default_rng(seed)
    meta = read_meta(data)
    users = read_table(data, "live_events")["user_id"].unique().sort().to_numpy()
    picked = rng.choice(users, n - 1).tolist() + [10**9]
    start = meta.start_ts if lo is None else lo
    ts = rng.integers(start, meta.end_ts, n).tolist()
    return list(zip(picked, ts, strict=True))


def _assert_same_batches(
    a: OnlineFeatureStore, b: OnlineFeatureStore, fmap: FeatureMap, reqs: list[tuple[int, int]]
) -> None:
    assert a.watermark_ts == b.watermark_ts
    n_hist = 0
    for user, ts in reqs:
        on_air = a.rooms_on_air(ts)
        np.testing.assert_array_equal(on_air, b.rooms_on_air(ts))
        assert a.last_on_air_ts(ts) == b.last_on_air_ts(ts), ts
        ids = np.concatenate([on_air[:200], [10**9]])  # plus an unknown room
        arr_a, info_a = request_arrays(a, fmap, user, ids, ts)
        arr_b, info_b = request_arrays(b, fmap, user, ids, ts)
        assert info_a == info_b, (user, ts)
        assert arr_a.keys() == arr_b.keys()
        for col, va in arr_a.items():
            assert va.dtype == arr_b[col].dtype, col
            np.testing.assert_array_equal(va, arr_b[col], err_msg=f"{col} user={user} ts={ts}")
        n_hist += info_a.live_seq_len + info_a.video_seq_len
    assert n_hist > 0, "no request had any history: the comparison tests nothing"


def test_same_batches_as_memory_store(redis_client, data, fmap) -> None:
    redis_client.flushdb()
    mem = MemoryFeatureStore.from_dataset(data, seq_len=STORE_SEQ)
    store = RedisFeatureStore(redis_client, "t:full", seq_len=STORE_SEQ)
    store.load_static(data)
    store.replay_dataset(data, chunk_rows=3_000)  # uneven chunks vs the memory store's one
    _assert_same_batches(mem, store, fmap, _requests(data, 50, seed=0))
    wm = mem.watermark_ts  # the data's end: every room is off air, the last ended before it
    assert len(mem.rooms_on_air(wm)) == 0 and store.last_on_air_ts(wm) == mem.last_on_air_ts(wm)
    last = mem.last_on_air_ts(wm)
    assert last < wm and len(mem.rooms_on_air(last)) > 0 and len(mem.rooms_on_air(last + 1)) == 0
    assert store.last_on_air_ts(read_meta(data).start_ts - 1) is None  # before any room
    # a reader opened from the prefix alone sees the same store
    reader = RedisFeatureStore(redis_client, "t:full")
    assert reader.seq_len == STORE_SEQ and reader.meta == mem.meta
    _assert_same_batches(mem, reader, fmap, _requests(data, 10, seed=1))


def test_as_of_midpoint_with_requests_just_after(redis_client, data, fmap) -> None:
    meta = read_meta(data)
    mid = (meta.start_ts + meta.end_ts) // 2
    mem = MemoryFeatureStore.from_dataset(data, seq_len=STORE_SEQ, as_of_ts=mid)
    store = RedisFeatureStore(redis_client, "t:mid", seq_len=STORE_SEQ)
    store.load_static(data)
    store.replay_dataset(data, as_of_ts=mid)
    reqs = [(u, mid + (t % 3_600_000)) for u, t in _requests(data, 50, seed=2)]
    _assert_same_batches(mem, store, fmap, reqs)


def test_stream_feed_with_restart_equals_replay(redis_client, data, fmap) -> None:
    """``run_stream`` through a StoreFeedSource, killed mid-way and resumed from an earlier
    offset (rows re-read): the store equals the memory replay of the whole dataset."""
    stream = merge_stream(read_table(data, "live_impressions"), read_table(data, "live_events"))
    video = read_table(data, "video_events")
    rooms, long_view = read_table(data, "rooms"), read_meta(data).long_view_ms
    store = RedisFeatureStore(redis_client, "t:stream", seq_len=STORE_SEQ)
    store.load_static(data)

    first = StoreFeedSource(FrameReplaySource(stream, 700), store, "shard0", video)
    run_stream(first, StreamEngine(rooms, long_view, "moment"), InProcessSink(),
               max_rows=len(stream) // 2, progress=False)  # fmt: skip
    applied = store.applied_offset("shard0")
    assert 0 < applied < len(stream)
    assert 0 < store.applied_offset("shard0:video") < len(video)
    # the restarted worker resumes from an older checkpoint: rows re-read must not re-enter
    restarted = StoreFeedSource(FrameReplaySource(stream, 900), store, "shard0", video)
    restarted.seek(applied - 1_500)
    run_stream(restarted, StreamEngine(rooms, long_view, "moment"), InProcessSink(),
               progress=False)  # fmt: skip
    assert store.applied_offset("shard0") == len(stream)

    mem = MemoryFeatureStore.from_dataset(data, seq_len=STORE_SEQ)
    _assert_same_batches(mem, store, fmap, _requests(data, 50, seed=3))


def test_open_errors_and_url() -> None:
    assert parse_store_url("redis://h:1/2/my:prefix") == ("redis://h:1/2", "my:prefix")
    assert parse_store_url("redis://h:1") == ("redis://h:1/0", "liverank:features")
    with pytest.raises(Exception, match="not a number"):
        parse_store_url("redis://h:1/abc")


def test_missing_store_and_seq_len_mismatch(redis_client, data) -> None:
    with pytest.raises(Exception, match="no feature store"):
        RedisFeatureStore(redis_client, "t:absent")
    store = RedisFeatureStore(redis_client, "t:small", seq_len=5)
    store.load_static(data)
    with pytest.raises(Exception, match="keeps 5 behaviours"):
        RedisFeatureStore(redis_client, "t:small", seq_len=7)
    events = pl.DataFrame(
        {"ts": [5, 5, 1] * 4, "user_id": [1] * 12, "live_id": [1] * 12, "event": ["like"] * 12}
    )
    store.observe_live_events(events)  # no author_id: the room's author is used
    snap = store.live_history(1, 6, 5)
    assert snap.lengths.tolist() == [5]
    assert snap.ts[0].tolist() == [5] * 5  # the 5 most recent kept, older ts=1 trimmed
    assert store.watermark_ts == 5

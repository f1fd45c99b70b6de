"""Long user histories that follow the event stream (issue #20): the Redis feature store keeps
each user's last K history rows (behaviours and the long views the stream makes known), the
service reads them per request, and a new event reaches the next request's features.

Against a real ``redis-server``; the reference is the offline builder's long-history store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient

from liverank.data.io import read_meta, read_table
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig, simulate
from liverank.features import encoders as enc
from liverank.features import long_history as lh
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker
from liverank.models.zoo import get_config
from liverank.serve.long_features import realtime_fields
from liverank.train.registry import ModelRegistry

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'redis>=5')")
if shutil.which("redis-server") is None:
    pytest.skip("the redis-server binary is not installed", allow_module_level=True)

from liverank.serve.redis_store import RedisFeatureStore  # noqa: E402
from liverank.serve.service import build_service  # noqa: E402

LONG = 40


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("realtime_long")
    simulate(SimConfig.preset("tiny", seed=0), root / "data", progress=False)
    build_samples(root / "data", root / "samples", seq_len=10, long_len=LONG, progress=False)
    fmap = FeatureMap.load(root / "samples")
    Ranker(fmap, get_config("moment_cross")).save(root / "m.pt")
    ModelRegistry(root / "reg").publish("cross", root / "m.pt")
    return root


def _builder_fields(built: lh.LongHistory, user: int, ts: int) -> dict[str, np.ndarray]:
    arrays = {"ts": np.array([ts], dtype=np.int64)}
    for domain, table in built.tables.items():
        start, end = table.bounds(np.array([user]), arrays["ts"])
        c_start, c_end = lh.index_columns(domain)
        arrays[c_start], arrays[c_end] = start, end
    return built.batch_fields(arrays, LONG)


def _replayed(redis_client, data: Path, prefix: str, as_of: int) -> RedisFeatureStore:
    store = RedisFeatureStore(redis_client, prefix, seq_len=15, long_len=LONG)
    store.load_static(data)
    store.replay_dataset(data, as_of_ts=as_of, chunk_rows=5_000)
    return store


def test_replayed_store_gives_the_builders_windows(redis_client, world: Path) -> None:
    data = world / "data"
    meta = read_meta(data)
    as_of = (meta.start_ts + meta.end_ts) // 2
    store = _replayed(redis_client, data, "rt:parity", as_of)
    built = lh.LongHistory.load(world / "samples")
    users = read_table(data, "live_events")["user_id"].unique().sort().to_numpy()
    rng = np.random.default_rng(0)
    n_rows = n_lv = 0
    for user in rng.choice(users, 40, replace=False).tolist():
        got = realtime_fields(store.long_history(user, as_of), user, as_of, 1, LONG)
        want = _builder_fields(built, user, as_of)
        assert got.keys() == want.keys()
        for name, value in want.items():
            np.testing.assert_array_equal(got[name].numpy(), value, err_msg=f"{name} {user}")
        n_rows += int(want["long_live_len"][0] + want["long_video_len"][0])
        n_lv += int(want["long_live_lv"].sum())
    assert n_rows > 500 and n_lv > 0, "too little history for the comparison to mean anything"


def test_a_new_event_reaches_the_next_request(redis_client, world: Path) -> None:
    data = world / "data"
    meta = read_meta(data)
    as_of = (meta.start_ts + meta.end_ts) // 2
    store = _replayed(redis_client, data, "rt:fresh", as_of)
    room = int(store.rooms_on_air(as_of)[0])
    author = int(store.rooms(np.array([room])).columns["author_id"][0])
    user = int(read_table(data, "users")["user_id"][3])

    def window(ts: int) -> dict[str, torch.Tensor]:
        return realtime_fields(store.long_history(user, ts), user, ts, 3, LONG)

    before = window(as_of + 50)
    like = pl.DataFrame(
        {"ts": [as_of + 10], "user_id": [user], "live_id": [room], "event": ["like"]}
    )
    store.observe_live_events(like)
    after = window(as_of + 50)
    assert int(after["long_live_len"][0]) == min(int(before["long_live_len"][0]) + 1, LONG)
    assert after["long_live_action"].shape == (3, LONG)  # one window for every candidate
    assert int(after["long_live_action"][0, 0]) == int(enc.live_action_code(pl.Series(["like"]))[0])
    assert int(after["long_live_author"][0, 0]) == author
    assert int(window(as_of + 10)["long_live_len"][0]) == int(before["long_live_len"][0])  # ts <

    # a long view becomes a history row once the stream's time passes enter + long_view_ms
    enter_ts = as_of + 100
    lv_ts = enter_ts + meta.long_view_ms
    store.observe_live_events(
        pl.DataFrame({"ts": [enter_ts], "user_id": [user], "live_id": [room], "event": ["enter"]})
    )
    assert int(window(lv_ts + 1)["long_live_lv"].sum()) == int(after["long_live_lv"].sum())
    other = int(read_table(data, "users")["user_id"][4])
    store.observe_live_events(  # any later event moves the watermark past the long view
        pl.DataFrame({"ts": [lv_ts], "user_id": [other], "live_id": [room], "event": ["like"]})
    )
    now = window(lv_ts + 1)
    assert int(now["long_live_action"][0, 0]) == enc.LIVE_LONG_VIEW_CODE
    assert int(now["long_live_lv"][0, 0]) == 1


def test_the_service_reads_histories_from_the_store(
    redis_client, world: Path, redis_server_url
) -> None:
    data = world / "data"
    meta = read_meta(data)
    as_of = (meta.start_ts + meta.end_ts) // 2
    store = _replayed(redis_client, data, "rt:serve", as_of)
    url = f"{redis_server_url.rsplit('/', 1)[0]}/0/rt:serve"
    app = build_service(world / "reg", "cross", data, store=url, watch_interval_s=60)
    try:
        features = app.state.features
        assert features.long_history is None  # nothing built at start: read per request
        user = int(read_table(data, "users")["user_id"][5])
        room = int(store.rooms_on_air(as_of)[0])
        batch, _ = features.assemble(user, [room], as_of + 30)
        n = int(batch["long_live_len"][0])
        store.observe_live_events(
            pl.DataFrame(
                {"ts": [as_of + 5], "user_id": [user], "live_id": [room], "event": ["comment"]}
            )
        )
        batch, _ = features.assemble(user, [room], as_of + 30)
        assert int(batch["long_live_len"][0]) == min(n + 1, LONG)
        r = TestClient(app).post("/rank", json={"user_id": user, "ts": as_of + 30})
        assert r.status_code == 200, r.text
        assert np.isfinite([it["score"] for it in r.json()["items"]]).all()
    finally:
        app.state.holder.stop()


def test_a_store_with_fewer_rows_than_the_model_reads_is_refused(
    redis_client, world: Path, redis_server_url
) -> None:
    from liverank.errors import ConfigError

    store = RedisFeatureStore(redis_client, "rt:short", seq_len=15, long_len=LONG // 2)
    store.load_static(world / "data")
    url = f"{redis_server_url.rsplit('/', 1)[0]}/0/rt:short"
    with pytest.raises(
        ConfigError, match="keeps 20 long-history rows per user, the model reads 40"
    ):
        build_service(world / "reg", "cross", world / "data", store=url, watch_interval_s=60)
    with pytest.raises(ConfigError, match="keeps 20 long-history rows per user, asked for 40"):
        RedisFeatureStore(redis_client, "rt:short", long_len=LONG)


def test_stream_feed_with_a_restart_keeps_the_same_long_histories(
    redis_client, world: Path
) -> None:
    """``run_stream`` through a StoreFeedSource with long histories, killed half way; a new
    process (a new store object: open visits read back from Redis) resumes from an earlier
    offset. Its long histories equal a direct replay's."""
    from liverank.serve.store_feed import StoreFeedSource
    from liverank.stream.engine import StreamEngine, merge_stream
    from liverank.stream.runner import run_stream
    from liverank.stream.sources import FrameReplaySource, InProcessSink

    data = world / "data"
    live = read_table(data, "live_events")
    stream = merge_stream(read_table(data, "live_impressions"), live)
    video = read_table(data, "video_events")
    rooms, long_view = read_table(data, "rooms"), read_meta(data).long_view_ms
    store = RedisFeatureStore(redis_client, "rt:stream", seq_len=15, long_len=LONG)
    store.load_static(data)
    first = StoreFeedSource(FrameReplaySource(stream, 700), store, "s0", video)
    run_stream(first, StreamEngine(rooms, long_view, "moment"), InProcessSink(),
               max_rows=len(stream) // 2, progress=False)  # fmt: skip
    applied = store.applied_offset("s0")
    assert 0 < applied < len(stream)
    assert redis_client.exists("rt:stream:visits")  # the open visits outlive the process
    reopened = RedisFeatureStore(redis_client, "rt:stream")  # a new process: state from Redis
    assert reopened.long_len == LONG
    restarted = StoreFeedSource(FrameReplaySource(stream, 900), reopened, "s0", video)
    restarted.seek(applied - 1_500)
    run_stream(restarted, StreamEngine(rooms, long_view, "moment"), InProcessSink(),
               progress=False)  # fmt: skip

    # the source has ended (the feed wrote the remaining video events): the dataset's end is
    # the stream's time, and the long views known then are written as a replay writes them
    end = read_meta(data).end_ts
    reopened.advance_long_views(end - 1)
    replayed = _replayed(redis_client, data, "rt:stream_ref", end)
    users = live["user_id"].unique().sort().to_list()
    n_lv = 0
    for user in users[:: max(1, len(users) // 40)]:
        got, want = reopened.long_history(user, end), replayed.long_history(user, end)
        for domain in lh.DOMAIN_COLUMNS:
            assert got[domain].equals(want[domain]), (user, domain)
        n_lv += int(want["live"]["lv"].sum())
    assert n_lv > 0


def test_liverank_stream_keeps_long_histories(
    redis_client, world: Path, redis_server_url, tmp_path
) -> None:
    """``liverank stream --store URL --store-long-len K``: the worker writes the long histories
    (behaviours and long views) that ``liverank serve --store URL`` reads."""
    from liverank.cli import main

    url = f"{redis_server_url.rsplit('/', 1)[0]}/0/rt:cli"
    data = world / "data"
    rc = main(["stream", "--data", str(data), "--out", str(tmp_path / "out"), "--mode", "moment",
               "--store", url, "--store-long-len", str(LONG)])  # fmt: skip
    assert rc == 0
    store = RedisFeatureStore.from_url(url)
    assert store.long_len == LONG
    live = read_table(data, "live_events")
    end = int(live["ts"].max())
    n_rows = n_lv = 0
    for user in live["user_id"].unique().sort().to_list()[:60]:
        frames = store.long_history(user, end)
        n_rows += sum(len(f) for f in frames.values())
        n_lv += int(frames["live"]["lv"].sum())
        assert all(len(f) <= LONG for f in frames.values())
    assert n_rows > 500 and n_lv > 0

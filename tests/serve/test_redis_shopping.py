"""eLiveRec's shopping features from Redis: the same request columns as the in-memory store,
kept up to date by ``liverank stream --store`` (product events and room products fed in step
with the stream, exactly once across a restart), and unknown products named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.io import read_meta, read_table
from liverank.data.shopping import PRODUCT_SEQ_FEATURES
from liverank.data.sim import SimConfig, simulate
from liverank.errors import DataValidationError
from liverank.features.spec import SPARSE_FIELDS, FeatureMap, seq_fields
from liverank.serve.feature_store import MemoryFeatureStore, OnlineFeatureStore
from liverank.serve.online_features import request_arrays
from liverank.serve.shopping_store import PRODUCT_EVENT_COLUMNS, ROOM_PRODUCT_COLUMNS

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'redis>=5')")
if shutil.which("redis-server") is None:
    pytest.skip("the redis-server binary is not installed", allow_module_level=True)

from liverank.serve.redis_store import RedisFeatureStore  # noqa: E402
from liverank.serve.store_feed import SideFeed, StoreFeedSource  # noqa: E402
from liverank.stream.engine import StreamEngine, merge_stream  # noqa: E402
from liverank.stream.runner import run_stream  # noqa: E402
from liverank.stream.sources import FrameReplaySource, InProcessSink  # noqa: E402

SEQ_LEN = 12
STORE_SEQ = SEQ_LEN + 5


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("redis_shopping") / "data"
    simulate(SimConfig.preset("tiny", seed=1), root, progress=False)
    return root


@pytest.fixture(scope="module")
def fmap() -> FeatureMap:
    """A shopping feature map whose tables hold every code (no vocabulary clipping)."""
    product = {f"product_seq_{k}": v for k, v in PRODUCT_SEQ_FEATURES.items()}
    tables = set(SPARSE_FIELDS.values()) | set(product.values()) | {"product"}
    tables |= {t for d in ("live", "video") for t in seq_fields(d).values()}
    return FeatureMap(
        seq_len=SEQ_LEN,
        tables=dict.fromkeys(tables, 1 << 40),
        seq_fields={"live": seq_fields("live"), "video": seq_fields("video"), "product": product},
    )


def _assert_same_shopping(
    a: OnlineFeatureStore, b: OnlineFeatureStore, fmap: FeatureMap, data: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    meta = read_meta(data)
    buyers = read_table(data, "product_events")["user_id"].unique().to_numpy()
    n_items = n_rooms = 0
    times = rng.integers(meta.start_ts, meta.end_ts, 40)
    for user, ts in zip(rng.choice(buyers, 40), times, strict=True):
        ids = np.concatenate([a.rooms_on_air(int(ts))[:200], [10**9]])
        arr_a, _ = request_arrays(a, fmap, int(user), ids, int(ts))
        arr_b, _ = request_arrays(b, fmap, int(user), ids, int(ts))
        assert arr_a.keys() == arr_b.keys() and "product_seq_item" in arr_a
        for col, va in arr_a.items():
            np.testing.assert_array_equal(va, arr_b[col], err_msg=f"{col} user={user} ts={ts}")
        n_items += int(arr_a["product_seq_len"][0])
        n_rooms += int((arr_a["room_product"] > 0).sum())
    assert n_items > 20 and n_rooms > 5, "the comparison saw (almost) empty shopping columns"


def test_same_shopping_columns_as_memory_store(redis_client, data, fmap) -> None:
    redis_client.flushdb()
    mem = MemoryFeatureStore.from_dataset(data, seq_len=STORE_SEQ, shopping=True)
    store = RedisFeatureStore(redis_client, "s:full", seq_len=STORE_SEQ)
    store.load_static(data, shopping=True)
    store.replay_dataset(data, chunk_rows=2_000)  # other chunks than the memory store's
    assert store.shopping is not None
    _assert_same_shopping(mem, store, fmap, data, seed=0)
    reader = RedisFeatureStore(redis_client, "s:full")  # opened from the prefix: keeps the state
    assert reader.shopping is not None
    _assert_same_shopping(mem, reader, fmap, data, seed=1)
    plain = RedisFeatureStore(redis_client, "s:plain", seq_len=STORE_SEQ)
    plain.load_static(data)
    assert plain.shopping is None


def test_stream_feed_keeps_shopping_up_to_date_across_a_restart(redis_client, data, fmap) -> None:
    stream = merge_stream(read_table(data, "live_impressions"), read_table(data, "live_events"))
    rooms, long_view = read_table(data, "rooms"), read_meta(data).long_view_ms
    store = RedisFeatureStore(redis_client, "s:stream", seq_len=STORE_SEQ)
    store.load_static(data, shopping=True)
    assert store.shopping is not None
    tables = {
        "product": read_table(data, "product_events", list(PRODUCT_EVENT_COLUMNS)),
        "room_products": read_table(data, "room_products", list(ROOM_PRODUCT_COLUMNS)),
    }

    def source(chunk: int) -> StoreFeedSource:
        side = [
            SideFeed("product", tables["product"], store.shopping.observe_product_events),
            SideFeed(
                "room_products", tables["room_products"], store.shopping.observe_room_products
            ),
        ]
        video = read_table(data, "video_events")
        return StoreFeedSource(FrameReplaySource(stream, chunk), store, "shard0", video, side)

    first = source(700)
    run_stream(first, StreamEngine(rooms, long_view, "moment"), InProcessSink(),
               max_rows=len(stream) // 2, progress=False)  # fmt: skip
    done = store.applied_offset("shard0:product")
    assert 0 < done < len(tables["product"])
    restarted = source(900)  # resumes from an older offset: re-read rows must not re-enter
    restarted.seek(store.applied_offset("shard0") - 1_500)
    run_stream(restarted, StreamEngine(rooms, long_view, "moment"), InProcessSink(),
               progress=False)  # fmt: skip
    assert store.applied_offset("shard0:product") == len(tables["product"])
    mem = MemoryFeatureStore.from_dataset(data, seq_len=STORE_SEQ, shopping=True)
    _assert_same_shopping(mem, store, fmap, data, seed=2)


def test_unknown_products_are_named(redis_client, data) -> None:
    store = RedisFeatureStore(redis_client, "s:bad", seq_len=STORE_SEQ)
    store.load_static(data, shopping=True)
    assert store.shopping is not None
    bad = pl.DataFrame({"ts": [1], "user_id": [1], "product_id": [987_654_321], "event": ["click"]})
    with pytest.raises(DataValidationError, match="missing from the products table"):
        store.shopping.observe_product_events(bad)

"""Long histories (features.long_history): point in time against a brute-force reference."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from samples_reference import gap_bucket, play_bucket, reference_visits

from liverank.data.loader import SampleSet, split_by_day
from liverank.data.samples import build_samples
from liverank.data.schema import LIVE_EVENTS, NOT_IN_LIVE_SEQUENCE, VIDEO_EVENTS
from liverank.errors import DataValidationError
from liverank.features import encoders as enc
from liverank.features import long_history as lh
from liverank.features.spec import LONG_FIELDS, FeatureMap

K = 7


def reference_long(data, imp: pl.DataFrame, k: int) -> list[dict[str, list]]:
    """Per impression: the long-history batch fields, one row at a time in plain Python."""
    t, meta = data.tables, data.meta
    category = dict(zip(t["rooms"]["live_id"], t["rooms"]["category"], strict=True))
    videos = {v["photo_id"]: v for v in t["videos"].iter_rows(named=True)}
    live = defaultdict(list)  # user -> [(ts, order, features)]
    for n, e in enumerate(t["live_events"].iter_rows(named=True)):
        if e["event"] not in NOT_IN_LIVE_SEQUENCE:
            feats = {"author": e["author_id"], "category": category[e["live_id"]]}
            feats |= {"action": 1 + LIVE_EVENTS.index(e["event"]), "lv": 0}
            live[e["user_id"]].append((e["ts"], (0, n), feats))
    visits = reference_visits(imp, t["live_events"], t["rooms"], meta.long_view_ms)
    for n, (i, v) in enumerate(zip(imp.iter_rows(named=True), visits, strict=True)):
        if v["t_lvtr"] is not None:  # derived long-view row, known at enter + long_view_ms
            feats = {"author": i["author_id"], "category": category[i["live_id"]]}
            feats |= {"action": len(LIVE_EVENTS) + 1, "lv": 1}
            live[i["user_id"]].append((v["t_lvtr"], (1, n), feats))
    video = defaultdict(list)
    for n, e in enumerate(t["video_events"].iter_rows(named=True)):
        if e["event"] != "impression":
            v = videos[e["photo_id"]]
            long_play = e["event"] == "play" and e["play_ms"] >= 0.8 * v["duration_ms"]
            feats = {"author": e["author_id"], "tag": v["tag"]}
            feats |= {"action": 1 + VIDEO_EVENTS.index(e["event"])}
            feats |= {"play": play_bucket(e["play_ms"]), "lv": int(long_play)}
            video[e["user_id"]].append((e["ts"], (0, n), feats))

    out = []
    for i in imp.iter_rows(named=True):
        u, ts = i["user_id"], i["ts"]
        row: dict[str, list] = {}
        for domain, hist, names in (
            ("live", live, ("author", "category", "action", "lv")),
            ("video", video, ("author", "tag", "action", "play", "lv")),
        ):
            before = sorted((h for h in hist[u] if h[0] < ts), key=lambda h: (h[0], h[1]))
            last = before[::-1][:k]
            pad = [0] * (k - len(last))
            for name in names:
                row[f"long_{domain}_{name}"] = [h[2][name] for h in last] + pad
            row[f"long_{domain}_age"] = [gap_bucket(ts - h[0]) for h in last] + pad
            row[f"long_{domain}_dt"] = [(ts - h[0]) / 1000 for h in last] + pad
            row[f"long_{domain}_len"] = len(last)
        out.append(row)
    return out


@pytest.fixture(scope="module")
def long_dir(small_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("long")
    build_samples(small_dataset_dir, out, seq_len=4, shard_rows=70, progress=False, long_len=K)
    return out


def _all_rows(samples: SampleSet, k_batch: int = 64) -> dict[str, np.ndarray]:
    batches = list(samples.iter_batches(k_batch, shuffle=False))
    return {c: torch.cat([b[c] for b in batches]).numpy() for c in batches[0]}


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), k=st.integers(1, 40), grid_ms=st.sampled_from([1_000, 60_000])
)
def test_batches_equal_brute_force_reference(dataset_factory, seed, k, grid_ms) -> None:
    """Every long_* batch field equals the reference: nothing at/after ts, newest first, padding."""
    data = dataset_factory(seed, n_requests=25, grid_ms=grid_ms)
    with tempfile.TemporaryDirectory() as tmp:
        root = data.write(Path(tmp) / "ds")
        build_samples(root, Path(tmp) / "out", seq_len=3, shard_rows=17, progress=False, long_len=k)
        got = _all_rows(SampleSet.load(Path(tmp) / "out", long_fields="eager"), k_batch=13)
    imp = data.tables["live_impressions"].sort(["ts", "request_id", "position"])
    ref = reference_long(data, imp, k)
    for col in ref[0]:
        expected = np.array([r[col] for r in ref])
        if col.endswith("_dt"):
            np.testing.assert_allclose(got[col], expected, rtol=1e-6, err_msg=col)
            assert got[col].dtype == np.float32
        else:
            np.testing.assert_array_equal(got[col], expected, err_msg=col)
            assert got[col].dtype == np.int64, col
    for d in ("live", "video"):
        assert got[f"long_{d}_author"].shape == (len(imp), k)
        real = np.arange(k)[None, :] < got[f"long_{d}_len"][:, None]
        assert (got[f"long_{d}_dt"][real] > 0).all()  # strictly before the sample
        dt = np.where(real, got[f"long_{d}_dt"], 1e30)
        assert (np.diff(dt, axis=1) >= 0).all()  # most recent first


def test_video_window_extends_the_short_sequence(long_dir: Path) -> None:
    """The first seq_len items of the long video window are the 50-item-style sequence."""
    rows = _all_rows(SampleSet.load(long_dir, long_fields="eager"))
    for x in ("author", "tag", "action", "play", "age"):
        np.testing.assert_array_equal(rows[f"long_video_{x}"][:, :4], rows[f"video_seq_{x}"])
    np.testing.assert_array_equal(np.minimum(rows["long_video_len"], 4), rows["video_seq_len"])


def test_long_view_rows_are_stamped_when_known(long_dir: Path, small_dataset_dir: Path) -> None:
    live = pl.read_parquet(lh.store_path(long_dir, "live"))
    lv = live.filter(pl.col("lv") == 1)
    assert len(lv) > 0 and (lv["action"] == enc.LIVE_LONG_VIEW_CODE).all()
    assert (live.filter(pl.col("lv") == 0)["action"] != enc.LIVE_LONG_VIEW_CODE).all()
    assert live.select("user_id", "ts").equals(live.select("user_id", "ts").sort("user_id", "ts"))
    # samples taken during a visit that later becomes long must not see its long-view row
    long_view_ms = FeatureMap.load(long_dir).long_view_ms
    rows = _all_rows(SampleSet.load(long_dir, long_len=200, long_fields="eager"))
    pending = 0
    for user, t_lv, author in lv.select("user_id", "ts", "author").iter_rows():
        during = (rows["user_id"] == user) & (rows["ts"] > t_lv - long_view_ms)
        during &= rows["ts"] <= t_lv
        for b in np.flatnonzero(during):
            pending += 1
            known = lv.filter((pl.col("user_id") == user) & (pl.col("ts") < rows["ts"][b]))
            assert rows["long_live_lv"][b].sum() == len(known), (user, author)
    assert pending > 0, "no sample falls inside a long visit: the test data does not test this"
    fmap = FeatureMap.load(long_dir)
    assert fmap.long_len == K and fmap.long_fields == LONG_FIELDS
    for fields in fmap.long_fields.values():
        for col, table in fields.items():
            domain = col.split("_")[1]
            name = col.removeprefix(f"long_{domain}_")
            if name != "age":
                store = pl.read_parquet(lh.store_path(long_dir, domain))
                assert store[name].max() < fmap.table_size(table), col


def test_video_long_play_rule() -> None:
    events = pl.DataFrame(
        {
            "ts": [5, 3, 4, 6],
            "user_id": [1, 1, 2, 2],
            "photo_id": [1, 1, 2, 3],
            "author_id": [9, 9, 8, 7],
            "event": ["play", "play", "like", "play"],
            "play_ms": [8_000, 7_999, 0, 40_000],
        }
    )
    videos = pl.DataFrame(
        {"photo_id": [1, 2, 3], "tag": [1, 2, 3], "duration_ms": [10_000, 5, None]}
    )
    frame = lh.video_history_frame(events, videos)
    assert frame["ts"].to_list() == [3, 5, 4, 6]  # sorted by (user, ts)
    assert frame["lv"].to_list() == [0, 1, 0, 1]  # 0.8 x duration; fallback 30 s; a like is not
    no_duration = lh.video_history_frame(events, videos.drop("duration_ms"))
    assert no_duration["lv"].to_list() == [0, 0, 0, 1]


def _synthetic_table(
    rows_per_user: list[int], seed: int = 0
) -> tuple[lh.HistoryTable, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(1, len(rows_per_user) + 1), rows_per_user)
    ts = np.concatenate([np.sort(rng.integers(0, 10**10, n)) for n in rows_per_user])
    frame = pl.DataFrame(
        {
            "user_id": user,
            "ts": ts,
            "author": rng.integers(1, 10**6, len(user)),
            "category": rng.integers(1, 30, len(user)),
            "action": rng.integers(1, 10, len(user)),
            "lv": rng.integers(0, 2, len(user)),
        }
    )
    return lh.HistoryTable(frame, lh.DOMAIN_COLUMNS["live"]), frame


@pytest.mark.parametrize("k", [1_000, 2_500])
def test_thousands_of_items_per_user(k: int) -> None:
    table, frame = _synthetic_table([2_000, 1, 1_500])
    store = lh.LongHistory({"live": table})
    user = np.array([1, 3, 2, 4, 1])  # 4: unknown user
    ts = np.array([10**10, 5 * 10**9, 10**10, 10**10, -1])
    arrays = {"ts": ts}
    arrays["long_live_start"], arrays["long_live_end"] = table.bounds(user, ts)
    out = store.batch_fields(arrays, k)
    fu, fts = frame["user_id"].to_numpy(), frame["ts"].to_numpy()
    for b in range(len(user)):
        rows = np.flatnonzero((fu == user[b]) & (fts < ts[b]))[::-1][:k]
        n = len(rows)
        assert out["long_live_len"][b] == n
        np.testing.assert_array_equal(
            out["long_live_author"][b, :n], frame["author"].to_numpy()[rows]
        )
        np.testing.assert_array_equal(out["long_live_lv"][b, :n], frame["lv"].to_numpy()[rows])
        np.testing.assert_array_equal(
            out["long_live_age"][b, :n], enc.time_gap_bucket(ts[b] - fts[rows])
        )
        for name in ("author", "category", "action", "lv", "age", "dt"):
            assert (out[f"long_live_{name}"][b, n:] == 0).all()
    assert out["long_live_len"].tolist()[0] == min(2_000, k)


gaps = st.lists(
    st.one_of(
        st.integers(1, 10**10),
        st.sampled_from([1000 * 2**j + d for j in range(24) for d in (-1, 0, 1)]),
    ),
    min_size=0,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(gaps=gaps, k=st.integers(1, 70), query=st.integers(10**10, 2 * 10**10))
def test_age_codes_equal_the_encoder(gaps: list[int], k: int, query: int) -> None:
    """The threshold-search age code equals encoders.time_gap_bucket, incl. exact powers of 2."""
    ts = np.sort(query - np.array(gaps, dtype=np.int64)) if gaps else np.zeros(0, dtype=np.int64)
    frame = pl.DataFrame(
        {
            "user_id": np.full(len(ts), 2),
            "ts": ts,
            **{c: np.ones(len(ts), dtype=np.int64) for c in lh.DOMAIN_COLUMNS["live"]},
        },
        schema_overrides={"user_id": pl.Int64, "ts": pl.Int64},
    )
    # a neighbour user before and after, so that block edges are exercised
    other = frame.with_columns(pl.lit(1, dtype=pl.Int64).alias("user_id"))
    after = frame.with_columns(pl.lit(3, dtype=pl.Int64).alias("user_id"))
    table = lh.HistoryTable(pl.concat([other, frame, after]), lh.DOMAIN_COLUMNS["live"])
    start, end = table.bounds(np.array([2]), np.array([query]))
    _, _, lengths = table.window(start, end, k)
    codes = table.age_codes(start, end, np.array([query]), lengths, k)  # [1, K]
    newest = np.sort(ts[ts < query])[::-1][:k]
    expected = np.zeros(k, dtype=np.int64)
    expected[: len(newest)] = enc.time_gap_bucket(query - newest)
    np.testing.assert_array_equal(codes[0], expected)


def test_loader_options(long_dir: Path) -> None:
    full = SampleSet.load(long_dir, long_fields="eager")
    assert full.long_len == K and full.feature_map.long_len == K
    wide = SampleSet.load(long_dir, long_len=2 * K, long_fields="eager")
    assert wide.feature_map.long_len == 2 * K
    a, b = next(full.iter_batches(32, shuffle=False)), next(wide.iter_batches(32, shuffle=False))
    np.testing.assert_array_equal(a["long_video_author"], b["long_video_author"][:, :K])
    assert b["long_live_age"].shape == (32, 2 * K) and b["long_live_dt"].dtype == torch.float32

    none = SampleSet.load(long_dir, long_len=0)
    assert none.long_history is None
    assert not any(
        c.startswith("long_") and "_start" not in c and "_end" not in c
        for c in next(none.iter_batches(8, shuffle=False))
    )

    few = SampleSet.load(long_dir, columns=["sample_id"])
    assert set(few.columns) == {
        "day",
        "sample_id",
        "ts",
        "long_live_start",
        "long_live_end",
        "long_video_start",
        "long_video_end",
    }
    # shuffled batches and day splits carry the same long fields as the rows they hold
    train, _, test = split_by_day(full, val_days=1, test_days=1)
    ref = _all_rows(full)
    for part, offset in ((train, 0), (test, len(full) - len(test))):
        for batch in part.iter_batches(16, shuffle=True, seed=3):
            pos = np.array([np.flatnonzero(ref["sample_id"] == s)[0] for s in batch["sample_id"]])
            assert (pos >= offset).all()
            for c in ("long_live_author", "long_video_age", "long_video_dt", "long_live_len"):
                np.testing.assert_array_equal(batch[c].numpy(), ref[c][pos])


def test_missing_store_is_named(long_dir: Path, small_dataset_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    build_samples(small_dataset_dir, plain, seq_len=4, progress=False)
    assert not (plain / lh.STORE_DIR).exists() or not any((plain / lh.STORE_DIR).iterdir())
    assert SampleSet.load(plain).long_len == 0
    with pytest.raises(DataValidationError, match="long-history store"):
        SampleSet.load(plain, long_len=5)


def test_stream_mode_dirs_keep_the_store(long_dir: Path, small_dataset_dir: Path, tmp_path) -> None:
    """A stream-mode samples directory carries the store and the offline index columns."""
    from liverank.stream.samples import build_stream_samples

    out = tmp_path / "moment"
    build_stream_samples(small_dataset_dir, out, "moment", seq_len=4, progress=False, long_len=K)
    stream = _all_rows(SampleSet.load(out, long_fields="eager"))
    offline = _all_rows(SampleSet.load(long_dir, long_fields="eager"))
    pairs = zip(offline["request_id"], offline["position"], strict=True)
    key = {pair: i for i, pair in enumerate(pairs)}
    pairs = zip(stream["request_id"], stream["position"], strict=True)
    pos = np.array([key[pair] for pair in pairs])
    assert len(stream["request_id"]) > len(offline["request_id"])  # moment: several rows each
    for c in ("long_live_author", "long_live_lv", "long_video_age", "long_video_dt"):
        np.testing.assert_array_equal(stream[c], offline[c][pos], err_msg=c)
    build_stream_samples(small_dataset_dir, out, "exit", seq_len=4, progress=False)
    assert not (out / lh.STORE_DIR).exists() and SampleSet.load(out).long_len == 0


def test_lazy_batches_feed_the_cross_module_like_eager_ones(long_dir: Path) -> None:
    """Default (lazy) batches carry only the row ranges; a moment_cross Ranker reading the store
    predicts exactly what it predicts from the eager [B, K] fields (predict_frame attaches)."""
    from liverank.models.ranker import Ranker
    from liverank.models.zoo import get_config
    from liverank.train.trainer import predict_frame

    lazy, eager = SampleSet.load(long_dir), SampleSet.load(long_dir, long_fields="eager")
    assert lazy.long_fields == "lazy" and lazy.long_history is not None
    lazy_batch = next(lazy.iter_batches(16, shuffle=False))
    eager_batch = next(eager.iter_batches(16, shuffle=False))
    window_fields = set(eager_batch) - set(lazy_batch)
    assert window_fields and all(f.startswith("long_") for f in window_fields)
    assert {"ts", *lh.index_columns("live"), *lh.index_columns("video")} <= set(lazy_batch)
    cfg = get_config("moment_cross")
    cfg.modules[-1].params["gsu_len"] = 3  # < K: the GSUs really select
    torch.manual_seed(0)
    model = Ranker(lazy.feature_map, cfg)
    want = predict_frame(model, eager, batch_size=37)
    got = predict_frame(model, lazy, batch_size=37)
    for task in model.tasks:
        np.testing.assert_allclose(got[f"p_{task}"], want[f"p_{task}"], rtol=1e-6, atol=1e-6)

"""The long-history fields of one request (``service.long_window_fields``): the user's last K rows
strictly before the request time, as ``[C, K]`` views of one row, from the store built at start
or from a feature store that keeps them in real time; a clear error when there is neither."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from liverank.errors import ConfigError
from liverank.features import long_history as lh
from liverank.models.synthetic import synthetic_feature_map
from liverank.serve.service import long_window_fields

K = 8


def _frames(rows_per_user: int = 12) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(0)
    frames = {}
    for domain, cols in lh.DOMAIN_COLUMNS.items():
        user = np.repeat([1, 2], rows_per_user)
        ts = np.tile(np.arange(rows_per_user) * 1000, 2)
        data = {"user_id": user, "ts": ts} | {c: rng.integers(1, 5, len(user)) for c in cols}
        frames[domain] = pl.DataFrame(data)
    return frames


class _RealtimeStore:
    """A feature store that keeps long histories (what ``RedisFeatureStore`` offers)."""

    long_len = K

    def __init__(self, frames: dict[str, pl.DataFrame]) -> None:
        self.frames = frames

    def long_history(self, user_id: int, ts: int) -> dict[str, pl.DataFrame]:
        return {
            d: f.filter((pl.col("user_id") == user_id) & (pl.col("ts") < ts))
            for d, f in self.frames.items()
        }


def test_fields_are_the_users_last_rows_before_the_request_broadcast_to_every_candidate() -> None:
    fm = synthetic_feature_map(long_len=K)
    store = lh.LongHistory.from_frames(_frames())
    fields = long_window_fields(object(), store, fm, user_id=2, ts=8_000, n=5)
    # the builder's own window of user 2 at 8 s: its rows at 0..7 s (the one at 8 s is not
    # before the request), most recent first
    arrays = {"ts": np.array([8_000])}
    for domain, table in store.tables.items():
        start, end = table.bounds(np.array([2]), arrays["ts"])
        arrays |= dict(zip(lh.index_columns(domain), (start, end), strict=True))
    want = store.batch_fields(arrays, K)
    assert set(fields) == set(want)
    for name, values in want.items():
        assert fields[name].shape[0] == 5 and fields[name].stride(0) == 0, name
        np.testing.assert_array_equal(fields[name][3].numpy(), values[0], err_msg=name)
    assert int(fields["long_video_len"][0]) == K
    assert float(fields["long_video_dt"][0, 0]) == 1.0  # the row at 7 s, not the one at 8 s
    # the same fields when a real-time store serves the same rows
    live = long_window_fields(_RealtimeStore(_frames()), None, fm, user_id=2, ts=8_000, n=5)
    for name in want:
        np.testing.assert_array_equal(live[name].numpy(), fields[name].numpy(), err_msg=name)


def test_no_fields_without_long_histories_and_an_error_without_a_source() -> None:
    assert long_window_fields(object(), None, synthetic_feature_map(), 1, 0, 3) == {}
    with pytest.raises(ConfigError, match="reads long user histories but the service has none"):
        long_window_fields(object(), None, synthetic_feature_map(long_len=K), 1, 0, 3)

"""``benchmarks/cross_signal.py``: the window counts, the pair memory and the paired GAUC it rests on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cross_signal.py"


def _load():
    spec = importlib.util.spec_from_file_location("cross_signal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_window_counts_equal_a_direct_count():
    cs = _load()
    rng = np.random.default_rng(0)
    user = np.sort(rng.integers(1, 40, 3_000))  # the history file: rows grouped by user
    key = rng.integers(0, 12, len(user))
    counter = cs.WindowCounter(user, key)
    first = np.searchsorted(user, user, side="left")
    last = np.searchsorted(user, user, side="right")
    q = rng.integers(0, len(user), 500)
    lo = rng.integers(first[q], last[q] + 1)
    hi = np.array([rng.integers(a, b + 1) for a, b in zip(lo, last[q], strict=True)])
    qkey = rng.integers(-1, 14, len(q))  # keys never seen (and negative) count 0
    got = counter.count(user[q], qkey, lo, hi)
    want = [int((key[a:b] == k).sum()) for a, b, k in zip(lo, hi, qkey, strict=True)]
    assert got.tolist() == want and max(want) > 3


def test_pair_memory_reads_only_the_days_before():
    cs = _load()
    f = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2],
            "author_id": [7, 7, 7, 7, 7],
            "day": [0, 1, 2, 2, 1],
            "ctr": [1.0, 0.0, 1.0, 1.0, 1.0],
        }
    )
    out = cs._with_memory(f, day=2, days=2)
    assert out["pair_clicks"].to_list() == [1.0, 1.0]  # day 0 and 1 of user 1; not day 2
    assert out["pair_shown"].to_list() == [2, 2]
    assert cs._with_memory(f, day=2, days=1)["pair_clicks"].to_list() == [0.0, 0.0]


def test_paired_gauc_equals_grouped_auc_and_brackets_the_difference():
    from liverank.eval.metrics import grouped_auc

    cs = _load()
    rng = np.random.default_rng(0)
    n = 20_000
    users = rng.integers(0, 500, n)
    a = rng.random(n)
    b = a + rng.normal(0, 0.3, n)
    y = (rng.random(n) < 0.2 + 0.3 * a).astype(float)
    g_a, g_b, (lo, hi) = cs._paired_gauc(y, a, b, users, n_boot=200, seed=0)
    assert g_a == pytest.approx(grouped_auc(y, a, users)[1], abs=1e-12)
    assert g_b == pytest.approx(grouped_auc(y, b, users)[1], abs=1e-12)
    assert lo < g_b - g_a < hi < 0  # b is a noisier a

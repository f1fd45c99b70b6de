"""Per-request top-K metrics against scikit-learn's ndcg_score and a brute-force tie average."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from liverank.errors import ConfigError
from liverank.eval.metrics import (
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_at_k,
    recall_at_k,
)

tied_scores = st.sampled_from([0.1, 0.3, 0.3, 0.6, 0.9])


@st.composite
def slates(draw: st.DrawFn, max_requests: int = 6, min_len: int = 1, max_len: int = 6):
    """Requests of variable length, flattened; request ids are shuffled-in-place integers."""
    labels, scores, groups = [], [], []
    for req in range(draw(st.integers(1, max_requests))):
        n = draw(st.integers(min_len, max_len))
        labels += draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
        scores += draw(st.lists(tied_scores, min_size=n, max_size=n))
        groups += [10 * req + 7] * n
    perm = draw(st.permutations(range(len(labels))))
    y, s, g = np.array(labels), np.array(scores), np.array(groups, dtype=np.int64)
    return y[perm], s[perm], g[perm]


def brute_force(y: np.ndarray, s: np.ndarray, k: int) -> dict[str, float]:
    """Average every metric over all orderings consistent with the scores (ties permuted)."""
    values: dict[str, list[float]] = {"prec": [], "recall": [], "ndcg": [], "hit": []}
    n, n_pos = len(y), y.sum()
    idcg = sum(1 / math.log2(i + 2) for i in range(int(min(k, n_pos))))
    for perm in itertools.permutations(range(n)):
        if any(s[perm[i]] < s[perm[i + 1]] for i in range(n - 1)):
            continue
        top = [y[j] for j in perm[:k]]
        values["prec"].append(sum(top) / min(k, n))
        values["recall"].append(sum(top) / n_pos)
        values["ndcg"].append(sum(t / math.log2(i + 2) for i, t in enumerate(top)) / idcg)
        values["hit"].append(float(sum(top) > 0))
    return {name: float(np.mean(v)) for name, v in values.items()}


@settings(max_examples=120, deadline=None)
@given(slates(), st.integers(1, 7))
def test_all_metrics_equal_the_tie_averaged_brute_force(data, k) -> None:
    y, s, g = data
    per_request = [
        brute_force(y[g == key], s[g == key], k) for key in np.unique(g) if y[g == key].sum() > 0
    ]
    got = ranking_at_k(y, s, g, ks=(k,))
    assert got["n_requests"] == len(per_request)
    for name in ("prec", "recall", "ndcg", "hit"):
        expected = np.mean([r[name] for r in per_request]) if per_request else math.nan
        assert got[f"{name}@{k}"] == pytest.approx(expected, abs=1e-9, nan_ok=True), name


@settings(max_examples=120, deadline=None)
@given(slates(min_len=2, max_len=9), st.integers(1, 10))
def test_ndcg_matches_sklearn_including_ties(data, k) -> None:
    """sklearn.ndcg_score averages tied gains too; it scores a request without positives as 0,
    which we exclude, so compare on the requests with a positive."""
    y, s, g = data
    expected = [
        ndcg_score([y[g == key]], [s[g == key]], k=k)
        for key in np.unique(g)
        if y[g == key].sum() > 0
    ]
    got = ndcg_at_k(y, s, g, k)
    assert got == pytest.approx(np.mean(expected) if expected else math.nan, nan_ok=True)


def test_single_request_hand_computed() -> None:
    y = [0, 1, 0, 1, 0]
    s = [0.9, 0.8, 0.7, 0.6, 0.5]  # ranking: 0, 1, 0, 1, 0
    g = [3] * 5
    assert precision_at_k(y, s, g, 1) == 0.0
    assert precision_at_k(y, s, g, 2) == 0.5
    assert recall_at_k(y, s, g, 2) == 0.5
    assert hit_rate_at_k(y, s, g, 1) == 0.0
    assert hit_rate_at_k(y, s, g, 2) == 1.0
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(y, s, g, 2) == pytest.approx((1 / math.log2(3)) / idcg)
    assert ndcg_at_k(y, s, g, 5) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg)


def test_k_larger_than_the_slate() -> None:
    y, s, g = [1, 0, 0], [0.1, 0.5, 0.9], [1, 1, 1]
    # all three rows are in the top 10: precision divides by the slate size, not by K
    assert precision_at_k(y, s, g, 10) == pytest.approx(1 / 3)
    assert recall_at_k(y, s, g, 10) == 1.0
    assert hit_rate_at_k(y, s, g, 10) == 1.0
    assert ndcg_at_k(y, s, g, 10) == pytest.approx(1 / math.log2(4))


def test_ties_are_averaged_not_broken_by_row_order() -> None:
    # two tied rows, one positive: a random order puts it first half of the time
    for y in ([1, 0], [0, 1]):
        assert precision_at_k(y, [0.5, 0.5], [1, 1], 1) == 0.5
        assert hit_rate_at_k(y, [0.5, 0.5], [1, 1], 1) == 0.5
        assert ndcg_at_k(y, [0.5, 0.5], [1, 1], 1) == 0.5
    # four tied rows, two positives, K = 2: P(hit) = 1 - C(2,2)/C(4,2) = 5/6
    assert hit_rate_at_k([1, 1, 0, 0], [0.2] * 4, [1] * 4, 2) == pytest.approx(5 / 6)


def test_requests_without_positives_and_masks_are_excluded() -> None:
    y = [1, 0, 0, 0, 0, 1]
    s = [0.9, 0.1, 0.8, 0.7, 0.2, 0.95]
    g = [1, 1, 2, 2, 3, 3]
    got = ranking_at_k(y, s, g, ks=(1,))
    assert got["n_requests"] == 2  # request 2 has no positive
    assert got["prec@1"] == 1.0
    # masking the positive of request 3 removes it from the average
    got = ranking_at_k(y, s, g, ks=(1,), mask=[1, 1, 1, 1, 1, 0])
    assert got["n_requests"] == 1
    # nothing observed / no positive anywhere -> NaN, not an error
    assert math.isnan(precision_at_k(y, s, g, 1, mask=[0] * 6))
    assert math.isnan(ndcg_at_k([0, 0], [0.1, 0.2], [1, 1], 3))


def test_perfect_and_reversed_rankings() -> None:
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(200), 8)
    y = (rng.random(g.shape[0]) < 0.3).astype(float)
    perfect = y + rng.random(g.shape[0]) * 0.5
    got = ranking_at_k(y, perfect, g, ks=(1, 3, 8))
    assert got["ndcg@1"] == got["ndcg@3"] == got["ndcg@8"] == pytest.approx(1.0)
    assert got["hit@1"] == pytest.approx(1.0)
    reversed_ = ranking_at_k(y, -perfect, g, ks=(1, 3))
    assert reversed_["ndcg@3"] < 0.5 < got["ndcg@3"]


def test_bad_k() -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        precision_at_k([1], [0.1], [1], 0)

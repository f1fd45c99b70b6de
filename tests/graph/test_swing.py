"""Swing (MMBee Eq. 8) against a direct implementation with Python sets and loops."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import liverank.graph.swing as swing_module
from liverank.errors import ConfigError
from liverank.graph.gifting import u2a_from_arrays
from liverank.graph.swing import segment_pairs, swing, top_k

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_swing(edges: set[tuple[int, int]], n_authors: int, alpha: float, distinct: bool):
    """Eq. 8 as printed, literally: U_i, I_u as sets; the double sum over U_i ∩ U_j."""
    gifted_by: dict[int, set[int]] = {}  # I_u
    gifters: dict[int, set[int]] = {a: set() for a in range(n_authors + 1)}  # U_i
    for u, a in edges:
        gifted_by.setdefault(u, set()).add(a)
        gifters[a].add(u)
    s = np.zeros((n_authors + 1, n_authors + 1))
    for i in range(n_authors + 1):
        for j in range(n_authors + 1):
            if i == j:
                continue
            common = gifters[i] & gifters[j]
            for u in common:
                for v in common:
                    if distinct and u == v:
                        continue
                    s[i, j] += 1.0 / (alpha + len(gifted_by[u] & gifted_by[v]))
    return s


def graph(edges: list[tuple[int, int]], n_users: int, n_authors: int) -> sp.csr_matrix:
    users = np.array([u for u, _ in edges], dtype=np.int64)
    authors = np.array([a for _, a in edges], dtype=np.int64)
    return u2a_from_arrays(users, authors, np.ones(len(edges)), n_users, n_authors)


def test_hand_built_graph_by_hand() -> None:
    # users 1, 2 gift authors 1 and 2; user 3 gifts 1, 2 and 3; author 4 has no gifts
    W = graph([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3)], 3, 4)
    S = swing(W, alpha=1.0).toarray()
    # |I_1 ∩ I_2| = 2, |I_1 ∩ I_3| = |I_2 ∩ I_3| = 2, |I_3| = 3
    # s(1, 2): u = v terms 1/3 + 1/3 + 1/4, ordered distinct pairs 6 * 1/3
    assert S[1, 2] == pytest.approx(1 / 3 + 1 / 3 + 1 / 4 + 6 / 3)
    # s(1, 3): only user 3 gifted both: its u = v term alone
    assert S[1, 3] == pytest.approx(1 / 4)
    distinct = swing(W, alpha=1.0, pairs="distinct").toarray()
    assert distinct[1, 2] == pytest.approx(2.0)
    assert distinct[1, 3] == 0.0  # one common gifter is no swing
    assert S[4].sum() == S[:, 4].sum() == 0.0  # author without gifts


@FAST
@given(
    st.integers(1, 12),
    st.integers(1, 8),
    st.lists(st.tuples(st.integers(1, 12), st.integers(1, 8)), max_size=50),
    st.sampled_from([0.0, 0.5, 1.0, 5.0]),
)
def test_matches_reference_on_random_graphs(
    n_users: int, n_authors: int, raw: list[tuple[int, int]], alpha: float
) -> None:
    edges = [(u, a) for u, a in raw if u <= n_users and a <= n_authors]
    W = graph(edges, n_users, n_authors)
    for pairs in ("all", "distinct"):
        got = swing(W, alpha, pairs=pairs)
        want = reference_swing(set(edges), n_authors, alpha, pairs == "distinct")
        np.testing.assert_allclose(got.toarray(), want, rtol=1e-12, atol=1e-12)
        assert got.shape == (n_authors + 1, n_authors + 1)


def test_properties_on_a_seeded_random_graph() -> None:
    rng = np.random.default_rng(0)
    n_users, n_authors, n = 40, 15, 200
    users, authors = rng.integers(1, n_users + 1, n), rng.integers(1, n_authors + 1, n)
    W = u2a_from_arrays(users, authors, rng.random(n) + 0.1, n_users, n_authors)
    S = swing(W, 1.0)
    dense = S.toarray()
    np.testing.assert_allclose(dense, dense.T)
    assert np.all(np.diag(dense) == 0)
    assert (S.data > 0).all()
    edges = set(zip(users.tolist(), authors.tolist(), strict=True))
    np.testing.assert_allclose(dense, reference_swing(edges, n_authors, 1.0, False))
    # all = distinct + the u = v terms, which are >= 0
    assert np.all(dense >= swing(W, 1.0, pairs="distinct").toarray() - 1e-12)


def test_alpha_shrinks_every_score_and_damps_heavy_overlaps() -> None:
    # authors 1, 2 share users 1, 2 who also share author 3 (overlap 3); authors 4, 5 share
    # users 3, 4 who gift nothing else (overlap 2)
    W = graph(
        [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 4), (3, 5), (4, 4), (4, 5)], 4, 5
    )
    low, high = swing(W, 0.5).toarray(), swing(W, 5.0).toarray()
    assert np.all(high[low > 0] < low[low > 0])
    assert low[1, 2] == pytest.approx(2 / 3.5 + 2 / 3.5)
    assert high[4, 5] == pytest.approx(2 / 7 + 2 / 7)
    with pytest.raises(ConfigError, match="alpha"):
        swing(W, -1.0)


def test_gift_amounts_do_not_enter_swing() -> None:
    edges = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2)]
    W = graph(edges, 3, 2)
    heavy = W.copy()
    heavy.data = heavy.data * np.arange(1, heavy.nnz + 1) * 10
    np.testing.assert_allclose(swing(W).toarray(), swing(heavy).toarray())


def test_chunked_enumeration_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    W = u2a_from_arrays(
        rng.integers(1, 301, 3000), rng.integers(1, 41, 3000), np.ones(3000), 300, 40
    )
    whole = swing(W).toarray()
    monkeypatch.setattr(swing_module, "CHUNK_QUADRUPLES", 500)
    np.testing.assert_allclose(swing(W).toarray(), whole, rtol=1e-12)


def test_user_cap_keeps_each_authors_heaviest_gifters() -> None:
    # author 1 and 2: gifters 1 (10), 2 (5), 3 (1); the cap K = 2 drops user 3 everywhere
    users = np.array([1, 1, 2, 2, 3, 3])
    authors = np.array([1, 2, 1, 2, 1, 2])
    values = np.array([10.0, 10.0, 5.0, 5.0, 1.0, 1.0])
    W = u2a_from_arrays(users, authors, values, 3, 2)
    capped = swing(W, 1.0, max_users_per_author=2).toarray()
    without_3 = graph([(1, 1), (1, 2), (2, 1), (2, 2)], 3, 2)
    np.testing.assert_allclose(capped, swing(without_3, 1.0).toarray())
    assert capped[1, 2] < swing(W, 1.0).toarray()[1, 2]
    np.testing.assert_allclose(swing(W, max_users_per_author=3).toarray(), swing(W).toarray())


def test_guard_names_the_cap_to_set() -> None:
    W = graph([(u, a) for u in range(1, 31) for a in (1, 2)], 30, 2)  # 30 * 29 / 2 = 435 terms
    with pytest.raises(ConfigError, match="max_users_per_author"):
        swing(W, max_quadruples=100)
    assert swing(W, max_quadruples=435).nnz == 2


def test_empty_graph_and_bad_pairs() -> None:
    W = sp.csr_matrix((5, 4))
    assert swing(W).nnz == 0 and swing(W).shape == (4, 4)
    with pytest.raises(ConfigError, match="pairs"):
        swing(W, pairs="ordered")  # type: ignore[arg-type]


def test_segment_pairs_lists_every_pair_once() -> None:
    p, q, seg = segment_pairs(np.array([2, 5, 5, 6, 8]))  # segments of 3, 0, 1, 2 positions
    assert list(zip(p.tolist(), q.tolist(), seg.tolist(), strict=True)) == [
        (2, 3, 0), (2, 4, 0), (3, 4, 0), (6, 7, 3)
    ]  # fmt: skip


def test_top_k_orders_by_weight_then_id_and_pads() -> None:
    M = sp.csr_matrix(np.array([[0, 0, 0, 0, 0], [0, 0, 1.0, 2.0, 1.0], [0, 3.0, 0, 0, 0]]))
    ids, weights = top_k(M, 4)
    assert ids.tolist() == [[0, 0, 0, 0], [3, 2, 4, 0], [1, 0, 0, 0]]
    assert weights.tolist() == [[0, 0, 0, 0], [2.0, 1.0, 1.0, 0], [3.0, 0, 0, 0]]
    assert top_k(M, 1)[0].tolist() == [[0], [3], [1]]
    with pytest.raises(ConfigError, match="k must be"):
        top_k(M, 0)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_top_k_matches_sorting_each_row(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, 4, (7, 9)).astype(float) / 2  # many ties and zeros
    ids, weights = top_k(sp.csr_matrix(dense), k)
    for r, row in enumerate(dense):
        want = sorted((-w, c) for c, w in enumerate(row) if w > 0)[:k]
        want += [(0.0, 0)] * (k - len(want))
        assert ids[r].tolist() == [c for _, c in want]
        assert weights[r].tolist() == [-w for w, _ in want]

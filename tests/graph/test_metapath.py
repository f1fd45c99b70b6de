"""Metapath-guided neighbours on hand-built graphs with the lists written out."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import liverank.graph.metapath as metapath_module
from liverank.errors import ConfigError
from liverank.graph.gifting import u2a_from_arrays
from liverank.graph.metapath import Transitions, metapath_neighbours, neighbours
from liverank.graph.swing import swing

# users 1..4, authors 1..3 (author 3's only other gifter is user 4); gift amounts:
#   user 1 -> author 1: 1, author 2: 3      user 2 -> author 1: 2, author 3: 2
#   user 3 -> author 2: 5                   user 4 -> author 3: 1
USERS = np.array([1, 1, 2, 2, 3, 4])
AUTHORS = np.array([1, 2, 1, 3, 2, 3])
VALUES = np.array([1.0, 3.0, 2.0, 2.0, 5.0, 1.0])


@pytest.fixture()
def W() -> sp.csr_matrix:
    return u2a_from_arrays(USERS, AUTHORS, VALUES, 4, 3)


def test_user_side_lists_by_hand(W: sp.csr_matrix) -> None:
    out = metapath_neighbours(W, swing(W), k=3)
    ids, weights = out["u2a2u"]
    # user 1: 1/4 to author 1 (then 2/3 to user 2), 3/4 to author 2 (then 5/8 to user 3)
    assert ids[1].tolist() == [3, 2, 0]
    np.testing.assert_allclose(weights[1], [3 / 4 * 5 / 8, 1 / 4 * 2 / 3, 0])
    # user 2 reaches users 1 (via author 1) and 4 (via author 3) with 1/2 * 1/3 each: tie -> id
    assert ids[2].tolist() == [1, 4, 0]
    np.testing.assert_allclose(weights[2], [1 / 6, 1 / 6, 0])
    assert ids[0].tolist() == [0, 0, 0]  # id 0 is no user
    ids, weights = out["u2a2u2a"]
    # user 1 -> user 2 -> author 3 (authors 1, 2 already gifted): 1/4 * 2/3 * 1/2
    assert ids[1].tolist() == [3, 0, 0]
    np.testing.assert_allclose(weights[1, 0], 1 / 12)
    # user 4 -> author 3 -> user 2 -> author 1: 1 * 2/3 * 1/2
    assert ids[4].tolist() == [1, 0, 0]
    np.testing.assert_allclose(weights[4, 0], 1 / 3)


def test_u2a2u2a_excludes_every_already_gifted_author(W: sp.csr_matrix) -> None:
    ids, _ = metapath_neighbours(W, swing(W), k=3, metapaths=("u2a2u2a",))["u2a2u2a"]
    gifted = W.toarray() > 0
    for user in range(W.shape[0]):
        assert not any(gifted[user, a] for a in ids[user] if a)
    # user 3 gifted only author 2, whose other gifter (user 1) also gifted author 1
    assert ids[3].tolist() == [1, 0, 0]


def test_author_side_lists_by_hand(W: sp.csr_matrix) -> None:
    S = swing(W)  # only user 1 gifted authors 1 and 2, only user 2 gifted 1 and 3
    np.testing.assert_allclose(S.toarray()[1], [0, 0, 1 / 3, 1 / 3])
    out = metapath_neighbours(W, S, k=2)
    ids, weights = out["a2a"]
    assert ids.tolist() == [[0, 0], [2, 3], [1, 0], [1, 0]]  # tie 2 / 3 -> smaller id
    np.testing.assert_allclose(weights[1], [0.5, 0.5])
    ids, weights = out["a2u2a"]
    # author 1: gifters 1 (1/3) and 2 (2/3); user 1 -> author 2 (3/4), user 2 -> author 3 (1/2)
    assert ids[1].tolist() == [3, 2]
    np.testing.assert_allclose(weights[1], [2 / 3 * 1 / 2, 1 / 3 * 3 / 4])
    ids, weights = out["u2a2a"]  # user 3: author 2 -> its only Swing neighbour, author 1
    assert ids[3].tolist() == [1, 0]
    np.testing.assert_allclose(weights[3], [1.0, 0])


def test_self_is_excluded_and_k_larger_than_available(W: sp.csr_matrix) -> None:
    out = metapath_neighbours(W, swing(W), k=50)
    for name in ("u2a2u", "a2a", "a2u2a"):
        ids, weights = out[name]
        assert ids.shape == (W.shape[0] if name == "u2a2u" else W.shape[1], 50)
        assert not (ids[1:] == np.arange(1, ids.shape[0])[:, None]).any()  # never itself
        assert (weights[ids == 0] == 0).all()  # padding is id 0, weight 0
        assert np.all(np.diff(weights, axis=1) <= 0)  # weight descending
    assert (out["u2a2u"][0][1] > 0).sum() == 2


def test_weights_are_walk_probabilities(W: sp.csr_matrix) -> None:
    # with no exclusion a walk from a node ends somewhere: the row of P_ua P_aa sums to 1 for
    # users whose authors all have Swing neighbours
    _, weights = metapath_neighbours(W, swing(W), k=3, metapaths=("u2a2a",))["u2a2a"]
    np.testing.assert_allclose(weights[1:].sum(axis=1), 1.0)


def test_row_blocks_and_fanout(W: sp.csr_matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    S = swing(W)
    whole = metapath_neighbours(W, S, k=3)
    monkeypatch.setattr(metapath_module, "BLOCK_ENTRIES", 1)  # one row per block
    blocks = metapath_neighbours(W, S, k=3)
    for name in whole:
        assert (whole[name][0] == blocks[name][0]).all()
        np.testing.assert_allclose(whole[name][1], blocks[name][1])
    # fanout 1: user 1 follows only its heavier author (2), author 2 only its heavier user (3)
    pruned = neighbours(Transitions.build(W, S, fanout=1), "u2a2u", 3)
    assert pruned[0][1].tolist() == [3, 0, 0]
    np.testing.assert_allclose(pruned[1][1, 0], 3 / 4 * 5 / 8)  # the exact walk probability
    with pytest.raises(ConfigError, match="fanout"):
        Transitions.build(W, S, fanout=0)
    monkeypatch.setattr(metapath_module, "MAX_ENTRIES", 3)  # u2a2u: 4 + 4 + 2 + 2 paths (self too)
    with pytest.raises(ConfigError, match="u2a2u would rank up to 12 entries.*fanout"):
        neighbours(Transitions.build(W, S), "u2a2u", 3)


def test_random_graph_matches_dense_products() -> None:
    rng = np.random.default_rng(3)
    n_users, n_authors, n = 30, 12, 120
    users, authors = rng.integers(1, n_users + 1, n), rng.integers(1, n_authors + 1, n)
    W = u2a_from_arrays(users, authors, rng.integers(1, 5, n).astype(float), n_users, n_authors)
    S = swing(W)
    dense = W.toarray()
    ua = dense / np.maximum(dense.sum(1, keepdims=True), 1e-300)
    au = dense.T / np.maximum(dense.T.sum(1, keepdims=True), 1e-300)
    want = ua @ au @ ua
    want[dense > 0] = 0
    ids, weights = metapath_neighbours(W, S, k=n_authors, metapaths=("u2a2u2a",))["u2a2u2a"]
    got = np.zeros_like(want)
    np.put_along_axis(got, ids, weights, axis=1)
    got[:, 0] = 0
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_unknown_metapath_and_mismatched_swing(W: sp.csr_matrix) -> None:
    with pytest.raises(ConfigError, match="unknown metapath"):
        neighbours(Transitions.build(W, swing(W)), "u2u", 3)
    with pytest.raises(ConfigError, match="does not match"):
        Transitions.build(W, sp.csr_matrix((2, 2)))

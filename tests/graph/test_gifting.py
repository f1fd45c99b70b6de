"""The U2A gifting graph read from a canonical dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from liverank.errors import DataValidationError
from liverank.graph.gifting import build_u2a, u2a_from_arrays


def test_sums_gift_values_strictly_before_as_of(make_dataset: Callable[..., Path]) -> None:
    root = make_dataset([
        (100, 1, 2, "gift", 5.0),
        (200, 1, 2, "gift", 10.0),  # summed with the one above
        (300, 2, 3, "gift", 0.0),  # a free gift: counts as free_gift_value
        (400, 3, 1, "gift", 7.0),
        (500, 3, 1, "gift", 9.0),  # at as_of: excluded
        (450, 4, 4, "buy", 99.0),  # not a gift
        (460, 4, 4, "enter", 0.0),
    ])  # fmt: skip
    graph = build_u2a(root, as_of_ts=500)
    W = graph.weights.toarray()
    assert W.shape == (6, 5)  # users 1..5, authors 1..4, row / column 0 unused
    expected = np.zeros((6, 5))
    expected[1, 2], expected[2, 3], expected[3, 1] = 15.0, 1.0, 7.0
    np.testing.assert_array_equal(W, expected)
    assert (graph.n_gifts, graph.n_edges, graph.as_of_ts) == (4, 3, 500)
    assert build_u2a(root, as_of_ts=501).weights[3, 1] == 16.0
    assert build_u2a(root, as_of_ts=100).n_edges == 0  # the first gift is at ts = 100


def test_free_gift_value_and_nan(make_dataset: Callable[..., Path]) -> None:
    root = make_dataset([(1, 1, 1, "gift", 0.0), (2, 1, 1, "gift", 0.0)])
    assert build_u2a(root, 10, free_gift_value=0.5).weights[1, 1] == 1.0
    W = u2a_from_arrays(np.array([1]), np.array([1]), np.array([np.nan]), 1, 1)
    assert W[1, 1] == 1.0


def test_bad_gifts_are_named(make_dataset: Callable[..., Path], tmp_path: Path) -> None:
    root = make_dataset([(1, 1, 1, "gift", 3.0), (2, 2, 1, "gift", -3.0)])
    with pytest.raises(DataValidationError, match="value < 0.*first offending rows: 1"):
        build_u2a(root, 10)
    with pytest.raises(DataValidationError, match="author_id outside 1..2"):
        u2a_from_arrays(np.array([1]), np.array([3]), np.array([1.0]), 1, 2)
    with pytest.raises(DataValidationError, match="live_events"):
        build_u2a(tmp_path / "nowhere", 10)


def test_ids_beyond_the_tables_still_fit(make_dataset: Callable[..., Path]) -> None:
    root = make_dataset([(1, 9, 7, "gift", 1.0)], n_users=2, n_authors=2)
    assert build_u2a(root, 10).weights.shape == (10, 8)

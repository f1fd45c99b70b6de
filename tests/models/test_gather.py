"""Deduplicating gathers equal plain F.embedding / F.embedding_bag, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import liverank.models.layers.gather as gather_mod
from liverank.models.layers.gather import bag_sum, gather, unique_rows


@pytest.fixture(params=["bitmap", "unique"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "unique":  # force torch.unique
        monkeypatch.setattr(gather_mod, "_BITMAP_ROWS_PER_ID", 0)
        monkeypatch.setattr(gather_mod, "_BITMAP_MAX_ROWS", 0)
    return request.param


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.integers(0, 40), min_size=1, max_size=60))
def test_unique_rows_reconstructs_its_input(rows: list[int]) -> None:
    t = torch.tensor(rows)
    uniq, index = unique_rows(t, 41)
    assert uniq.tolist() == sorted(set(rows))
    assert torch.equal(uniq[index], t)


def _dense_grad(w: torch.nn.Parameter) -> torch.Tensor:
    g = w.grad
    return g.coalesce().to_dense() if g.is_sparse else g


@pytest.mark.parametrize("sparse", [True, False])
def test_gather_equals_embedding(path: str, sparse: bool) -> None:
    torch.manual_seed(0)
    rows = torch.randint(0, 30, (7, 5, 3))
    upstream = torch.randn(7, 5, 3, 4)
    results = []
    for fn in (
        lambda w: F.embedding(rows, w, padding_idx=0, sparse=sparse),
        lambda w: gather(w, rows, sparse),
    ):
        torch.manual_seed(1)
        w = torch.nn.Parameter(torch.randn(30, 4))
        out = fn(w)
        out.backward(upstream)
        results.append((out.detach(), _dense_grad(w)))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize("width", [3, 9])  # column-wise backward, and the [D, B*J] one
@pytest.mark.parametrize("weighted", [True, False])
def test_bag_sum_equals_embedding_bag(path: str, weighted: bool, width: int) -> None:
    torch.manual_seed(0)
    rows = torch.randint(0, 25, (6, width))
    weights = torch.rand(6, width) if weighted else None
    upstream = torch.randn(6, 4)
    results = []
    for fn in (
        lambda w: F.embedding_bag(
            rows, w, mode="sum", per_sample_weights=weights, padding_idx=0, sparse=True
        ),
        lambda w: bag_sum(w, rows, weights, sparse=True),
    ):
        torch.manual_seed(1)
        w = torch.nn.Parameter(torch.randn(25, 4))
        with torch.no_grad():
            w[0].zero_()
        out = fn(w)
        out.backward(upstream)
        results.append((out.detach(), _dense_grad(w)))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_inference_path_equals_training_path() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(20, 4))
    rows = torch.randint(0, 20, (5, 6))
    weights = torch.rand(5, 6)
    with torch.no_grad():
        plain = (gather(w, rows, True), bag_sum(w, rows, weights, True))
    trained = (gather(w, rows, True), bag_sum(w, rows, weights, True))
    for a, b in zip(plain, trained, strict=True):
        torch.testing.assert_close(a, b.detach())

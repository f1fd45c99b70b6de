"""EmbeddingCollection: hashing, out-of-range ids, padding, and fused == per-table layouts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.layers.embedding import EmbeddingCollection, hash_ids

_P = (1 << 61) - 1


def _reference_hash(x: int, buckets: int) -> int:
    """The documented hash in exact Python integers."""
    if x == 0:
        return 0
    mixed = ((x & 0xFFFFFFFF) * 1_640_531_527 + (x >> 32) * 1_103_515_245) % _P
    return mixed % (buckets - 1) + 1


def _fm(hash_buckets: dict[str, int] | None = None) -> FeatureMap:
    return FeatureMap(
        tables={"user": 11, "author": 7, "category": 4},
        sparse_fields={"user_id": "user", "author_id": "author", "room_category": "category"},
        seq_fields={"live": {"live_seq_author": "author", "live_seq_category": "category"}},
        hash_buckets=hash_buckets or {},
    )


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(min_value=0, max_value=(1 << 62)), min_size=1, max_size=20),
    buckets=st.integers(min_value=2, max_value=1 << 20),
)
def test_hash_matches_reference_and_stays_in_range(ids: list[int], buckets: int) -> None:
    out = hash_ids(torch.tensor(ids, dtype=torch.int64), buckets).tolist()
    assert out == [_reference_hash(x, buckets) for x in ids]
    assert all((o == 0) == (x == 0) for o, x in zip(out, ids, strict=True))
    assert all(0 <= o < buckets for o in out)


def test_hash_spreads_ids_over_buckets() -> None:
    out = hash_ids(torch.arange(1, 10_001), 101)
    counts = torch.bincount(out, minlength=101)[1:]
    assert counts.min() > 50 and counts.max() < 150  # ~100 per bucket


@pytest.mark.parametrize("fused", [True, False])
def test_out_of_range_ids_map_to_padding_and_are_counted(fused: bool) -> None:
    emb = EmbeddingCollection(_fm(), dim=4, fused=fused)
    ids = torch.tensor([0, 3, 11, 50, -2, 10])
    vecs = emb.lookup("user", ids)  # [6, 4]
    assert torch.equal(vecs[[0, 2, 3, 4]], torch.zeros(4, 4))
    assert vecs[1].abs().sum() > 0 and vecs[5].abs().sum() > 0
    assert emb.oov_counts() == {"user": 3}
    stacked = emb.lookup_stack(["author", "category"], torch.tensor([[7, 4], [1, 1]]))
    assert torch.equal(stacked[0], torch.zeros(2, 4))
    assert emb.oov_counts(reset=True) == {"user": 3, "author": 1, "category": 1}
    assert emb.oov_counts() == {}


@pytest.mark.parametrize("fused", [True, False])
def test_hashed_table_takes_any_id(fused: bool) -> None:
    emb = EmbeddingCollection(_fm({"user": 5}), dim=4, fused=fused)
    assert emb.num_rows("user") == 5
    ids = torch.tensor([10**12, 123_456_789, 0])
    vecs = emb.lookup("user", ids)
    assert vecs[:2].abs().sum(1).gt(0).all() and torch.equal(vecs[2], torch.zeros(4))
    assert emb.oov_counts() == {}
    expected = emb.table_weight("user")[hash_ids(ids, 5)]
    torch.testing.assert_close(vecs, expected)


def _copy_weights(src: EmbeddingCollection, dst: EmbeddingCollection) -> None:
    with torch.no_grad():
        for t in src.table_names:
            rows = torch.arange(1, src.num_rows(t))
            weight = dst.tables[dst._group[t]].weight
            weight[dst.rows_for(t, rows)] = src.table_weight(t)[rows]


def test_fused_layout_equals_per_table_layout() -> None:
    torch.manual_seed(0)
    per_table = EmbeddingCollection(_fm(), dim=4, fused=False)
    fused = EmbeddingCollection(_fm(), dim=4, fused=True)
    _copy_weights(per_table, fused)
    for t in per_table.table_names:
        torch.testing.assert_close(fused.table_weight(t), per_table.table_weight(t))
    ids = torch.randint(0, 8, (5, 6, 2))  # [B, L, F], some out of range for "category"
    tables = ["author", "category"]
    torch.testing.assert_close(fused.lookup_stack(tables, ids), per_table.lookup_stack(tables, ids))
    w = torch.rand(5, 6)
    torch.testing.assert_close(
        fused.pooled_sum(tables, ids, w), per_table.pooled_sum(tables, ids, w)
    )


@pytest.mark.parametrize("fused", [True, False])
def test_pooled_sum_matches_a_loop(fused: bool) -> None:
    torch.manual_seed(1)
    emb = EmbeddingCollection(_fm(), dim=3, fused=fused)
    ids = torch.randint(0, 7, (4, 5, 2))
    w = torch.rand(4, 5)
    tables = ["author", "category"]
    expected = torch.zeros(4, 3)
    for b in range(4):
        for pos in range(5):
            for f, t in enumerate(tables):
                expected[b] += w[b, pos] * emb.lookup(t, ids[b, pos, f])
    torch.testing.assert_close(emb.pooled_sum(tables, ids, w), expected)


@pytest.mark.parametrize("fused", [True, False])
def test_padding_row_is_zero_and_gets_no_gradient(fused: bool) -> None:
    emb = EmbeddingCollection(_fm(), dim=4, fused=fused)
    ids = torch.tensor([[0, 1], [2, 0]])
    out = (
        emb.lookup_stack(["user", "author"], ids).sum()
        + emb.pooled_sum(["author", "category"], ids.unsqueeze(0)).sum()
    )
    out.backward()
    for table in emb.tables.values():
        if table.weight.grad is None:  # a per-table table this test did not touch
            continue
        grad = table.weight.grad.coalesce().to_dense()
        assert torch.equal(grad[0], torch.zeros(4))
        assert torch.equal(table.weight[0].detach(), torch.zeros(4))


def test_per_table_dims_and_mixed_dim_errors() -> None:
    dims = {"user": 8, "author": 4, "category": 4}
    emb = EmbeddingCollection(_fm(), dim=dims)
    assert emb.lookup("user", torch.tensor([1])).shape == (1, 8)
    assert emb.lookup_stack(["author", "category"], torch.tensor([[1, 1]])).shape == (1, 2, 4)
    with pytest.raises(ConfigError, match="one dimension"):
        emb.lookup_stack(["user", "author"], torch.tensor([[1, 1]]))
    with pytest.raises(ConfigError, match="missing for"):
        EmbeddingCollection(_fm(), dim={"user": 8})


def test_unknown_table_names_the_known_ones() -> None:
    emb = EmbeddingCollection(_fm(), dim=4)
    with pytest.raises(ConfigError, match="no embedding table 'video'.*author"):
        emb.lookup("video", torch.tensor([1]))

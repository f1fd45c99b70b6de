"""Frequency filter and eviction of embedding ids (layers/id_policy.py)."""

from __future__ import annotations

import pytest
import torch

from liverank.errors import ConfigError
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.id_policy import IdPolicyConfig
from liverank.models.synthetic import synthetic_feature_map


def _collection(fused: bool, **policy: int) -> EmbeddingCollection:
    fmap = synthetic_feature_map(n_users=50, n_authors=20, hash_buckets={"author": 8})
    return EmbeddingCollection(
        fmap, dim=4, fused=fused, policies={"user": IdPolicyConfig(**policy)}
    )


@pytest.mark.parametrize("fused", [True, False])
def test_rare_ids_share_the_oov_row_until_seen_min_count_times(fused: bool) -> None:
    emb = _collection(fused, min_count=3)
    oov = emb.policies["user"].oov_row
    assert emb.num_rows("user") == oov + 1
    emb.train()
    ids = torch.tensor([5, 5, 7, 0])
    first = emb.lookup("user", ids)
    # 5 seen twice, 7 once: both still the OOV vector; padding stays zero
    torch.testing.assert_close(first[0], first[2])
    assert first[3].abs().sum() == 0
    second = emb.lookup("user", torch.tensor([5, 7]))  # 5: 3rd time -> its own row
    assert not torch.equal(second[0], second[1])
    torch.testing.assert_close(second[1], first[2])  # 7: 2nd time, still OOV
    emb.eval()
    for _ in range(3):  # evaluation never counts
        evals = emb.lookup("user", torch.tensor([7]))
    torch.testing.assert_close(evals[0], first[2])
    emb.train()
    stacked = emb.lookup_stack(["user", "author"], torch.tensor([[7, 3]]))  # 7: 3rd time
    assert not torch.equal(stacked[0, 0], first[2])


def test_eviction_resets_stale_rows_and_their_optimizer_moments() -> None:
    emb = _collection(True, min_count=1, ttl_ms=1000)
    weight = emb.tables["dim4"].weight
    opt = torch.optim.SparseAdam([weight], lr=0.1)
    emb.train()
    emb.set_clock(100)
    emb.lookup("user", torch.tensor([3, 4])).sum().backward()
    opt.step()
    emb.set_clock(1500)
    opt.zero_grad()
    emb.lookup("user", torch.tensor([4])).sum().backward()
    opt.step()
    emb.eval()  # a training lookup would count and stamp the rows
    row3 = emb.rows_for("user", torch.tensor([3])).item()
    row4 = emb.rows_for("user", torch.tensor([4])).item()
    before = weight.detach().clone()
    assert emb.evict(1050, opt) == {}  # 3 last seen at 100: not yet 1000 ms stale
    done = emb.evict(1200, opt)
    assert done == {"user": 1}
    assert not torch.equal(weight[row3], before[row3])  # a fresh vector
    torch.testing.assert_close(weight[row4], before[row4])  # seen at 1500: kept
    state = opt.state[weight]
    assert state["exp_avg"][row3].abs().sum() == 0 and state["exp_avg_sq"][row3].abs().sum() == 0
    assert state["exp_avg"][row4].abs().sum() > 0
    assert emb.policies["user"].counts[3] == 0 and emb.policies["user"].last_seen[3] == 0


def test_policy_state_is_saved_with_the_model() -> None:
    emb = _collection(True, min_count=2)
    emb.train()
    emb.lookup("user", torch.tensor([9, 9]))
    again = _collection(True, min_count=2)
    again.load_state_dict(emb.state_dict())
    again.eval()
    emb.eval()
    torch.testing.assert_close(
        again.lookup("user", torch.tensor([9])), emb.lookup("user", torch.tensor([9]))
    )
    assert again.policies["user"].counts[9] == 2


def test_a_policy_on_an_unknown_table_is_named() -> None:
    fmap = synthetic_feature_map(n_users=10, n_authors=10)
    with pytest.raises(ConfigError, match="no embedding table 'usr'"):
        EmbeddingCollection(fmap, dim=4, policies={"usr": IdPolicyConfig(min_count=2)})

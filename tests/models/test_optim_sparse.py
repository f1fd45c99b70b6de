"""build_optimizers: sparse rows, dense params, weight decay groups, state round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from liverank.errors import ConfigError
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.train.optim import build_optimizers


def _model(fused: bool = True) -> Ranker:
    torch.manual_seed(0)
    cfg = get_config("din")
    cfg.fused_embeddings = fused
    return Ranker(synthetic_feature_map(n_users=300, n_authors=60), cfg)


def _step(model: Ranker, opt, batch) -> None:  # type: ignore[no-untyped-def]
    loss, _ = model.loss(batch, model(batch))
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("fused", [True, False])
def test_only_touched_embedding_rows_change(fused: bool) -> None:
    model = _model(fused)
    opt = build_optimizers(model, lr_sparse=0.1, lr_dense=0.01)
    batches = synthetic_batches(model.feature_map, 3, 16, seed=3)
    emb = model.embeddings
    # Lazy moments: a row untouched *now* must not move, even if it was touched before.
    for batch in batches:
        before = {t: emb.table_weight(t).detach().clone() for t in emb.table_names}
        _step(model, opt, batch)
        for table in emb.table_names:
            touched = torch.zeros(emb.num_rows(table), dtype=torch.bool)
            for field, t in model.feature_map.sparse_fields.items():
                if t == table:
                    touched[batch[field]] = True
            for cols in model.feature_map.seq_fields.values():
                for col, t in cols.items():
                    if t == table:
                        touched[batch[col].flatten()] = True
            touched[0] = False
            after = emb.table_weight(table).detach()
            changed = (after != before[table]).any(1)
            assert torch.equal(changed, touched), f"{table}: changed rows != touched rows"
            assert torch.equal(after[0], torch.zeros_like(after[0])), f"{table}: padding moved"


def test_dense_parameters_all_get_updated() -> None:
    model = _model()
    opt = build_optimizers(model)
    _, dense = model.parameter_groups()
    before = [p.detach().clone() for p in dense]
    _step(model, opt, synthetic_batches(model.feature_map, 1, 32, seed=0)[0])
    moved = [not torch.equal(b, p) for b, p in zip(before, dense, strict=True)]
    assert sum(moved) == len(moved)


def test_weight_decay_skips_biases_and_embeddings() -> None:
    model = _model()
    opt = build_optimizers(model, weight_decay=0.1)
    decayed, plain = opt.dense.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(
        p.dim() < 2 for p in plain["params"]
    )
    sparse, _ = model.parameter_groups()
    assert {id(p) for p in opt.sparse.param_groups[0]["params"]} == {id(p) for p in sparse}


def test_state_dict_round_trip_continues_identically() -> None:
    batches = synthetic_batches(synthetic_feature_map(n_users=300, n_authors=60), 4, 32, seed=5)
    model = _model()
    opt = build_optimizers(model)
    for b in batches[:2]:
        _step(model, opt, b)
    clone = copy.deepcopy(model)
    opt_clone = build_optimizers(clone)
    opt_clone.load_state_dict(opt.state_dict())
    for b in batches[2:]:
        _step(model, opt, b)
        _step(clone, opt_clone, b)
    for (name, p), q in zip(model.named_parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_bad_learning_rates() -> None:
    with pytest.raises(ConfigError, match="lr_sparse > 0"):
        build_optimizers(_model(), lr_sparse=0.0)

"""Synthetic batches: the sample format of features/spec.py, determinism, and a null control."""

from __future__ import annotations

import torch
from conformance import ctr_auc, train_pass

from liverank.features.spec import META_FIELDS, REGRESSION_TARGETS, TASKS
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config


def test_batches_have_every_sample_column_with_its_dtype_and_shape() -> None:
    fm = synthetic_feature_map(seq_len=12)
    (batch,) = synthetic_batches(fm, 1, 50, seed=0)
    for col in (*META_FIELDS, *fm.sparse_fields):
        assert batch[col].dtype == torch.int64 and batch[col].shape == (50,), col
    for domain, cols in fm.seq_fields.items():
        length = batch[f"{domain}_seq_len"]
        real = torch.arange(12)[None, :] < length[:, None]  # [B, L]
        for col, table in cols.items():
            x = batch[col]
            assert x.dtype == torch.int64 and x.shape == (50, 12), col
            assert torch.equal(x[~real], torch.zeros_like(x[~real])), f"{col}: padding is not 0"
            assert (x < fm.tables[table]).all() and (x >= 0).all(), col
        assert (batch[f"{domain}_seq_author"][real] > 0).all()
    for col in (*TASKS, *REGRESSION_TARGETS, *(f"mask_{t}" for t in TASKS)):
        assert batch[col].dtype == torch.float32 and batch[col].shape == (50,), col
    for field, table in fm.sparse_fields.items():
        assert (batch[field] > 0).all() and (batch[field] < fm.tables[table]).all(), field


def test_labels_are_nested_and_sparse() -> None:
    (b,) = synthetic_batches(synthetic_feature_map(), 1, 20_000, seed=1)
    assert (b["evtr"] <= b["ctr"]).all() and (b["gtr"] <= b["evtr"]).all()
    rates = [float(b[t].mean()) for t in ("ctr", "evtr", "gtr")]
    assert rates[0] > rates[1] > rates[2] > 0
    assert float(b["gtr"].mean()) < 0.05 * 2


def test_deterministic_for_a_seed() -> None:
    fm = synthetic_feature_map()
    a, b = synthetic_batches(fm, 2, 30, seed=4), synthetic_batches(fm, 2, 30, seed=4)
    c = synthetic_batches(fm, 2, 30, seed=5)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)
    assert not torch.equal(a[0]["user_id"], c[0]["user_id"])


def test_mask_rate() -> None:
    (b,) = synthetic_batches(synthetic_feature_map(), 1, 10_000, seed=0, mask_rate=0.25)
    assert abs(float(b["mask_ctr"].mean()) - 0.75) < 0.02


def test_without_a_planted_signal_nothing_is_learned() -> None:
    """Null control for the conformance AUC: same training, labels independent of features."""
    fm = synthetic_feature_map(n_categories=6)
    torch.manual_seed(0)
    model = Ranker(fm, get_config("mlp"))
    train_pass(model, synthetic_batches(fm, 80, 128, seed=1, planted=False), 0.05, 0.01)
    auc = ctr_auc(model, synthetic_batches(fm, 8, 256, seed=2, planted=False))
    assert 0.4 < auc < 0.58

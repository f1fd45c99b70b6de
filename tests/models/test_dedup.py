"""Request-level dedup (``layers/dedup.py``) and FARM on it: exact, and off when it saves nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liverank.data.batch_order import group_starts, shuffled_order
from liverank.models.layers.dedup import distinct_rows
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.modules.farm import Farm
from liverank.models.synthetic import as_request, synthetic_batches, synthetic_feature_map


def test_distinct_rows_finds_the_groups_in_first_occurrence_order() -> None:
    a = torch.tensor([[1, 2], [3, 4], [1, 2], [3, 4], [5, 6], [1, 2]])
    b = torch.tensor([7, 8, 7, 8, 9, 7])
    d = distinct_rows([a, b], max_share=1.0)
    assert d is not None
    assert d.first.tolist() == [0, 1, 4]
    assert d.inverse.tolist() == [0, 1, 0, 1, 2, 0]
    assert torch.equal(d.expand(d.take(a)), a)
    # a row equal in one tensor but not the other is distinct
    b2 = torch.tensor([7, 8, 0, 8, 9, 7])
    d2 = distinct_rows([a, b2], max_share=1.0)
    assert d2 is not None and d2.count == 4


def test_distinct_rows_declines_when_rows_are_mostly_distinct() -> None:
    x = torch.arange(20).view(10, 2)
    assert distinct_rows([x]) is None
    assert distinct_rows([x[:1]]) is None  # a single row: nothing to share


def test_grouped_shuffle_keeps_runs_together_and_is_a_permutation() -> None:
    keys = np.array([5, 5, 5, 2, 9, 9, 1, 1, 1, 1, 5])  # the last 5 is its own run
    order = shuffled_order(len(keys), np.random.default_rng(0), keys)
    assert sorted(order.tolist()) == list(range(len(keys)))
    starts = group_starts(keys)
    runs = np.split(np.arange(len(keys)), starts[1:])
    # every run appears as one contiguous ascending block of the order
    for run in runs:
        pos = int(np.flatnonzero(order == run[0])[0])
        assert order[pos : pos + len(run)].tolist() == run.tolist()
    # without groups: the same draw as a plain permutation (reproducible old behaviour)
    assert np.array_equal(
        shuffled_order(11, np.random.default_rng(3)), np.random.default_rng(3).permutation(11)
    )


@pytest.mark.parametrize("params", [{}, {"use_fuse": False}, {"use_align": False}])
def test_farm_with_dedup_gives_the_same_outputs_losses_and_gradients(params) -> None:
    """A batch of 12 requests of 1-8 impressions (sequences shared within a request): FARM
    encoding each distinct row once equals FARM encoding every row, outputs and gradients."""
    fm = synthetic_feature_map(n_categories=6)
    batch = synthetic_batches(fm, 1, 64, seed=3)[0]
    sizes = np.random.default_rng(0).integers(1, 9, size=40)
    request = np.repeat(np.arange(len(sizes)), sizes)[:64]  # [64] request of every row
    first_of = torch.as_tensor(np.searchsorted(request, request))  # first row of its request
    results = []
    for dedup in (False, True):
        torch.manual_seed(0)
        emb = EmbeddingCollection(fm, 16, sparse=False, fused=True)
        module = Farm(fm, emb, dedup_rows=dedup, **params)
        shared = {f: batch[f][first_of] for f in module.seq_fields}
        shared["user_id"] = batch["user_id"][first_of]
        b = {**batch, **shared}
        module.train()
        out = module(b, emb)
        loss = out.representation.pow(2).sum() + sum(out.aux_losses.values())
        loss.backward()
        grads = {
            n: p.grad.clone()
            for n, p in [*module.named_parameters(), *emb.named_parameters()]
            if p.grad is not None
        }
        results.append((out, grads))
    (plain, g_plain), (dedup_out, g_dedup) = results
    assert dedup_out.diagnostics["distinct_rows_frac"] < 0.5
    assert plain.diagnostics["distinct_rows_frac"] == 1.0
    torch.testing.assert_close(dedup_out.representation, plain.representation, atol=1e-6, rtol=1e-5)
    for k in plain.aux_losses:
        torch.testing.assert_close(dedup_out.aux_losses[k], plain.aux_losses[k])
    assert g_plain.keys() == g_dedup.keys()
    for name in g_plain:
        torch.testing.assert_close(g_dedup[name], g_plain[name], atol=1e-6, rtol=1e-4, msg=name)


def test_din_with_dedup_gives_the_same_outputs_and_gradients() -> None:
    """DIN on a batch of requests sharing sequences: the shared path (distinct sequences looked
    up and projected once) equals the per-row path, outputs and gradients; a trace never
    takes the shared path (it would freeze a data-dependent choice)."""
    from liverank.models.modules.din import DIN

    fm = synthetic_feature_map(n_categories=6)
    batch = synthetic_batches(fm, 1, 64, seed=5)[0]
    sizes = np.random.default_rng(1).integers(1, 9, size=40)
    request = np.repeat(np.arange(len(sizes)), sizes)[:64]
    first_of = torch.as_tensor(np.searchsorted(request, request))
    results = []
    for dedup in (False, True):
        torch.manual_seed(0)
        emb = EmbeddingCollection(fm, 16, sparse=False, fused=True)
        module = DIN(fm, emb, dedup_rows=dedup)
        b = {**batch, **{f: batch[f][first_of] for f in module.seq_fields}}
        out = module(b, emb)
        out.representation.pow(2).sum().backward()
        grads = {
            n: p.grad.clone()
            for n, p in [*module.named_parameters(), *emb.named_parameters()]
            if p.grad is not None
        }
        results.append((out, grads))
    (plain, g_plain), (shared, g_shared) = results
    torch.testing.assert_close(shared.representation, plain.representation, atol=1e-6, rtol=1e-5)
    for k in plain.diagnostics:
        torch.testing.assert_close(shared.diagnostics[k], plain.diagnostics[k])
    assert g_plain.keys() == g_shared.keys()
    for name in g_plain:
        torch.testing.assert_close(g_shared[name], g_plain[name], atol=1e-6, rtol=1e-4, msg=name)


def test_no_dedup_while_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Export traces DIN (PLE is served as TorchScript): the data-dependent dedup must stay
    out of a trace, else the trace would freeze one batch's choice."""
    from liverank.models.layers import dedup as dedup_module
    from liverank.models.modules import din as din_module
    from liverank.models.modules import farm as farm_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("distinct_rows called while tracing")

    fm = synthetic_feature_map(n_categories=6)
    batch = synthetic_batches(fm, 1, 16, seed=5)[0]
    emb = EmbeddingCollection(fm, 16, sparse=False, fused=True)
    modules = [din_module.DIN(fm, emb), farm_module.Farm(fm, emb)]
    monkeypatch.setattr(dedup_module, "distinct_rows", refuse)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert dedup_module.capturing_graph()
    for module in modules:
        module.eval()
        assert module(batch, emb).representation.shape[0] == 16


def test_one_request_recording_encodes_row_zero_for_every_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recorded for one request (``one_request``), DIN and FARM take every row's sequences to
    be row 0's without looking at the data: exact on a request batch (equal to the eager
    forward), and row 0's sequences for every row of a mixed batch (why the exports refuse
    one, tests/serve/test_runtime.py)."""
    from liverank.models.layers import dedup as dedup_module
    from liverank.models.modules import din as din_module

    fm = synthetic_feature_map(n_categories=6)
    mixed = synthetic_batches(fm, 1, 16, seed=5)[0]
    request = as_request(mixed)
    emb = EmbeddingCollection(fm, 16, sparse=False, fused=True)
    modules = [din_module.DIN(fm, emb), Farm(fm, emb)]
    for module in modules:
        module.eval()
    with torch.no_grad():
        eager = [m(request, emb).representation for m in modules]
        # the mixed batch with row 0's sequences copied to every row: what one_request computes
        want_mixed = [
            m(
                {k: v[:1].expand_as(v) if k in m.shared_fields else v for k, v in mixed.items()},
                emb,
            ).representation
            for m in modules
        ]
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        with dedup_module.one_request():
            for m, e, w in zip(modules, eager, want_mixed, strict=True):
                assert m.shared_fields
                torch.testing.assert_close(m(request, emb).representation, e)
                torch.testing.assert_close(m(mixed, emb).representation, w)

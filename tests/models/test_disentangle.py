"""eLiveRec disentangled encoder: shapes, masking, empty histories, pooled prototypes, Eqs. 5-7
against a per-row loop, and retrieval that finds planted target-like items."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.models.layers.disentangle import DisentangledEncoder


def _inputs(b: int, length: int, d: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(b, length, d, generator=gen)
    e = torch.randn(b, length, d, generator=gen)
    lengths = torch.randint(0, length + 1, (b,), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]
    target = torch.randn(b, d, generator=gen)
    return h, e, mask, target


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 6),
    length=st.integers(1, 7),
    d=st.integers(1, 9),
    prototypes=st.sampled_from(["pooled", "learnable"]),
)
def test_shapes_and_weights(b: int, length: int, d: int, prototypes: str) -> None:
    enc = DisentangledEncoder(d, prototypes)  # type: ignore[arg-type]
    h, e, mask, target = _inputs(b, length, d)
    out = enc(h, e, mask, target)
    assert out.z_c.shape == out.z_s.shape == (b, d)
    assert out.p_consistent.shape == out.retrieval_c.shape == out.retrieval_s.shape == (b, length)
    has_any = mask.any(1).float()
    torch.testing.assert_close(out.retrieval_c.sum(1), has_any)
    torch.testing.assert_close(out.retrieval_s.sum(1), has_any)
    assert ((out.p_consistent >= 0) & (out.p_consistent <= 1)).all()
    assert 0.0 <= out.consistent_share().item() <= 1.0


def _loop_reference(h, e, mask, target, scale: float):
    """Eqs. 5-7 written per row and per position, straight from the paper's formulas."""
    zs_c, zs_s = [], []
    for b in range(h.shape[0]):
        idx = mask[b].nonzero().flatten().tolist()
        if not idx:
            zs_c.append(torch.zeros(h.shape[-1]))
            zs_s.append(torch.zeros(h.shape[-1]))
            continue
        items = e[b, idx]  # [n, d]
        o_c, o_s = items.mean(0), items.max(0).values
        p_c = []
        for i in idx:
            lc, ls = (h[b, i] * o_c).sum() * scale, (h[b, i] * o_s).sum() * scale
            p_c.append(math.exp(lc) / (math.exp(lc) + math.exp(ls)))
        out = []
        for weights in (p_c, [1 - p for p in p_c]):
            comps = [w * h[b, i] for w, i in zip(weights, idx, strict=True)]  # z_{., v_i}
            logits = torch.stack([(target[b] * z).sum() * scale for z in comps])
            att = torch.softmax(logits, 0)
            out.append(sum(a * z for a, z in zip(att, comps, strict=True)))
        zs_c.append(out[0])
        zs_s.append(out[1])
    return torch.stack(zs_c), torch.stack(zs_s)


@pytest.mark.parametrize("scaled", [True, False])
def test_matches_a_per_row_loop_of_eqs_5_to_7(scaled: bool) -> None:
    h, e, mask, target = _inputs(5, 6, 4, seed=1)
    mask[0] = True  # one full row
    enc = DisentangledEncoder(4, scaled=scaled)
    out = enc(h, e, mask, target)
    z_c, z_s = _loop_reference(h, e, mask, target, 0.5 if scaled else 1.0)
    torch.testing.assert_close(out.z_c, z_c)
    torch.testing.assert_close(out.z_s, z_s)


def test_padding_values_do_not_change_the_output() -> None:
    h, e, mask, target = _inputs(6, 8, 5, seed=2)
    enc = DisentangledEncoder(5)
    before = enc(h, e, mask, target)
    pad = ~mask.unsqueeze(-1)
    h2 = torch.where(pad, torch.full_like(h, 1e6), h)
    e2 = torch.where(pad, torch.full_like(e, float("nan")), e)
    after = enc(h2, e2, mask, target)
    for x, y in zip(before, after, strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("prototypes", ["pooled", "learnable"])
def test_empty_rows_give_zeros_and_finite_gradients(prototypes: str) -> None:
    h, e, mask, target = _inputs(4, 5, 6, seed=3)
    mask[1] = False
    mask[3] = False
    mask[0, :3] = True
    h.requires_grad_(True)
    e.requires_grad_(True)
    target.requires_grad_(True)
    enc = DisentangledEncoder(6, prototypes)  # type: ignore[arg-type]
    out = enc(h, e, mask, target)
    for z in (out.z_c, out.z_s):
        assert torch.equal(z[1], torch.zeros(6)) and torch.equal(z[3], torch.zeros(6))
        assert torch.isfinite(z).all()
    (out.z_c.sum() + out.z_s.pow(2).sum()).backward()
    for t in (h, e, target) if prototypes == "pooled" else (h, target):  # learnable: e unused
        assert torch.isfinite(t.grad).all()
    assert torch.equal(h.grad[1], torch.zeros(5, 6))  # nothing flows into an empty history
    all_empty = enc(h, e, torch.zeros(4, 5, dtype=torch.bool), target)
    assert torch.equal(all_empty.z_c, torch.zeros(4, 6))
    assert all_empty.consistent_share().item() == 0.0


def test_pooled_prototypes_are_masked_mean_and_max_of_e() -> None:
    h, e, mask, _ = _inputs(5, 7, 3, seed=4)
    mask[0] = False
    o_c, o_s = DisentangledEncoder(3).prototype_vectors(e, mask)
    for b in range(5):
        valid = e[b, mask[b]]  # [n, d]
        if valid.shape[0] == 0:
            expected_c = expected_s = torch.zeros(3)
        else:
            expected_c, expected_s = valid.mean(0), valid.max(0).values
        torch.testing.assert_close(o_c[b], expected_c)
        torch.testing.assert_close(o_s[b], expected_s)


def test_learnable_prototypes_are_parameters_with_the_stated_init() -> None:
    torch.manual_seed(0)
    enc = DisentangledEncoder(256, "learnable")
    assert enc.learned is not None and enc.learned.shape == (2, 256)
    assert enc.learned.std().item() == pytest.approx(1 / 16, rel=0.1)
    h, e, mask, target = _inputs(3, 4, 256, seed=5)
    mask[:, 0] = True
    out = enc(h, e, mask, target)
    (out.z_c.sum() + out.z_s.sum()).backward()
    assert enc.learned.grad is not None and enc.learned.grad.abs().sum() > 0
    assert sum(p.numel() for p in DisentangledEncoder(256).parameters()) == 0


def test_retrieval_concentrates_on_planted_items_equal_to_the_target() -> None:
    b, length, d = 64, 10, 64
    gen = torch.Generator().manual_seed(6)
    e = torch.randn(b, length, d, generator=gen)
    target = torch.randn(b, d, generator=gen)
    planted = torch.zeros(b, length, dtype=torch.bool)
    for row in range(b):
        planted[row, torch.randperm(length, generator=gen)[: length // 2]] = True
    e = torch.where(planted.unsqueeze(-1), target.unsqueeze(1).expand_as(e), e)
    mask = torch.ones(b, length, dtype=torch.bool)
    out = DisentangledEncoder(d)(e, e, mask, target)  # identity sequence encoder: h = e
    on_planted = (out.retrieval_c * planted).sum(1)  # [B], 0.5 for uniform weights
    assert on_planted.min().item() > 0.8
    assert on_planted.mean().item() > 0.95
    # The planted items are the typical (mean-like) ones: they lean to the consistent prototype.
    assert out.p_consistent[planted].mean() > out.p_consistent[~planted].mean()


def test_bad_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="prototypes"):
        DisentangledEncoder(4, "gaussian")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dim"):
        DisentangledEncoder(0)
    enc = DisentangledEncoder(4)
    h, e, mask, target = _inputs(2, 3, 4)
    with pytest.raises(ConfigError, match="h and e"):
        enc(h, e[:, :2], mask, target)
    with pytest.raises(ConfigError, match="target"):
        enc(h, e, mask, target[:, :3])


@pytest.mark.parametrize("prototypes", ["pooled", "learnable"])
def test_shared_sequences_equal_the_call_on_expanded_rows(prototypes: str) -> None:
    """``rows``: 3 distinct sequences (one empty) read by 7 batch rows with their own targets;
    outputs and gradients equal the call on the sequences expanded to the batch."""
    h, e, mask, _ = _inputs(3, 6, 4, seed=5)
    mask[2] = False
    rows = torch.tensor([0, 0, 1, 2, 1, 0, 2])
    target = torch.randn(7, 4, generator=torch.Generator().manual_seed(6))
    enc = DisentangledEncoder(4, prototypes)  # type: ignore[arg-type]
    results = []
    for shared in (True, False):
        hh, ee = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
        if shared:
            out = enc(hh, ee, mask, target, rows)
        else:
            out = enc(hh[rows], ee[rows], mask[rows], target)
        (out.z_c.pow(2).sum() + out.z_s.sum() + out.consistent_share()).backward()
        results.append((out, hh.grad, ee.grad))
    (got, gh, ge), (want, wh, we) = results
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y)
    torch.testing.assert_close(gh, wh)
    if prototypes == "pooled":
        torch.testing.assert_close(ge, we)

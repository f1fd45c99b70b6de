"""Target attention: equals the literal DIN activation unit; masking; no NaN on empty rows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.models.layers.attention import TargetAttention


def _reference_scores(
    att: TargetAttention, query: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """The activation unit as written in DIN: an MLP over [q, k, q - k, q * k], head by head."""
    b, length, _ = keys.shape
    q = att.q_proj(query).view(b, att.heads, att.head_dim)
    k = att.k_proj(keys).view(b, length, att.heads, att.head_dim)
    out = torch.zeros(b, length, att.heads)
    for h in range(att.heads):
        qh = q[:, h].unsqueeze(1).expand(b, length, att.head_dim)
        kh = k[:, :, h]
        feats = torch.cat([qh, kh, qh - kh, qh * kh], dim=-1)  # [B, L, 4dh]
        hidden = att.unit_act(feats @ att.unit_w1[h] + att.unit_b1[h])
        out[:, :, h] = (hidden @ att.unit_w2[h]).squeeze(-1) + att.unit_b2[h]
    return out


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_scores_equal_the_literal_activation_unit(heads: int) -> None:
    torch.manual_seed(heads)
    att = TargetAttention(8, heads=heads, unit_hidden=5)
    query, keys = torch.randn(3, 8), torch.randn(3, 6, 8)
    torch.testing.assert_close(att.scores(query, keys), _reference_scores(att, query, keys))


@pytest.mark.parametrize("norm", ["softmax", "sigmoid", "none"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_masked_positions_do_not_matter(norm: str, data: st.DataObject) -> None:
    b, length = 3, 7
    mask = torch.tensor(
        data.draw(st.lists(st.booleans(), min_size=b * length, max_size=b * length))
    )
    mask = mask.view(b, length)
    torch.manual_seed(0)
    att = TargetAttention(8, heads=2, weight_norm=norm)
    query, keys = torch.randn(b, 8), torch.randn(b, length, 8)
    noisy = torch.where(mask.unsqueeze(-1), keys, torch.randn(b, length, 8) * 100)
    out, w = att(query, keys, mask=mask, return_weights=True)
    torch.testing.assert_close(out, att(query, noisy, mask=mask))
    assert torch.equal(w[~mask], torch.zeros_like(w[~mask]))
    empty = ~mask.any(1)
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))
    if norm == "softmax":
        sums = w.sum(1)[~empty]  # [B', H]
        torch.testing.assert_close(sums, torch.ones_like(sums))


@pytest.mark.parametrize("norm", ["softmax", "sigmoid", "none"])
def test_fully_masked_rows_give_zeros_and_finite_gradients(norm: str) -> None:
    att = TargetAttention(8, heads=2, weight_norm=norm)
    query = torch.randn(2, 8, requires_grad=True)
    keys = torch.randn(2, 4, 8, requires_grad=True)
    mask = torch.tensor([[False] * 4, [True, False, True, False]])
    out = att(query, keys, mask=mask)
    assert torch.equal(out[0], torch.zeros(8))
    out.sum().backward()
    for p in [query, keys, *att.parameters()]:
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_attention_prefers_keys_that_match_the_query() -> None:
    """A planted task: the output should copy the value of the one key equal to the query."""
    torch.manual_seed(0)
    att = TargetAttention(8, heads=2, weight_norm="softmax")
    opt = torch.optim.Adam(att.parameters(), lr=0.01)
    for _ in range(300):
        keys = torch.randn(64, 5, 8)
        target = torch.randint(0, 5, (64,))
        query = keys[torch.arange(64), target]
        out, w = att(query, keys, values=keys, return_weights=True)
        loss = -torch.log(w.mean(-1)[torch.arange(64), target] + 1e-9).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (w.mean(-1).argmax(1) == target).float().mean() > 0.9


def test_heads_must_divide_dim() -> None:
    with pytest.raises(ConfigError, match="must divide"):
        TargetAttention(10, heads=3)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_dot_target_attention_equals_eq7_literally(heads: int) -> None:
    """The associative evaluation of Moment&Cross eq. 7 equals projecting every item with
    W^k / W^v first: outputs, weights and every gradient; masked-out rows give zeros."""
    import math

    from liverank.models.layers.search import DotTargetAttention

    torch.manual_seed(0)
    att = DotTargetAttention(12, 8, heads)
    query = torch.randn(7, 12, requires_grad=True)
    items = torch.randn(7, 5, 8, requires_grad=True)
    mask = torch.rand(7, 5) < 0.6
    mask[3] = False  # a row without history

    def literal() -> tuple[torch.Tensor, torch.Tensor]:
        b, length, dh = 7, 5, 8 // heads
        q = att.w_q(query).view(b, 1, heads, dh)
        k = att.w_k(items).view(b, length, heads, dh)
        v = att.w_v(items).view(b, length, heads, dh)
        scores = (q * k).sum(-1) / math.sqrt(dh)  # [B, L, H]
        scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # [B, L, H]
        return (weights.unsqueeze(-1) * v).sum(1).reshape(b, 8), weights

    results = []
    for fn in (literal, lambda: att(query, items, mask)):
        for t in (query, items, *att.parameters()):
            t.grad = None
        out, weights = fn()
        (out * torch.arange(8.0)).sum().backward()
        grads = [t.grad.clone() for t in (query, items, *att.parameters())]
        results.append((out.detach(), weights.detach(), grads))
    (want, w_want, g_want), (got, w_got, g_got) = results
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(w_got, w_want)
    assert torch.equal(got[3], torch.zeros(8))
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)

"""LiveForesighter's layers: RevIN round trip, the iTransformer's shapes and variate tokens,
the product Transformer's causality and padding."""

from __future__ import annotations

import pytest
import torch

from liverank.models.layers.forecast import ProductTransformer, RevIN, StatisticTransformer


@pytest.mark.parametrize("affine", [True, False])
def test_revin_round_trip_restores_the_series(affine: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 10, generator=g) * torch.tensor([1.0, 50.0, 1e3])[:, None] + 7.0
    x[1, 2] = 5.0  # a constant series
    revin = RevIN(3, affine=affine)
    if affine:
        with torch.no_grad():
            revin.weight.copy_(torch.tensor([2.0, 0.5, 1.5]))
            revin.bias.copy_(torch.tensor([0.1, -1.0, 0.0]))
    x_bar, mean, std = revin.normalise(x)
    assert torch.isfinite(x_bar).all()
    plain = (x - x.mean(-1, keepdim=True)) / torch.sqrt(
        x.var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    if not affine:
        torch.testing.assert_close(x_bar, plain)
    torch.testing.assert_close(revin.denormalise(x_bar, mean, std), x, rtol=1e-5, atol=1e-3)


def test_statistic_transformer_shapes_and_scale_equivariance() -> None:
    torch.manual_seed(0)
    model = StatisticTransformer(n_variates=4, window=12, horizon=3, dim=16).eval()
    x = torch.rand(5, 4, 12) * 10
    y, enc = model(x)
    assert y.shape == (5, 4, 3) and enc.shape == (5, 4, 16)
    # RevIN makes the forecast follow an affine change of every series (a*x + b -> a*y + b)
    y2, _ = model(3.0 * x + 100.0)
    torch.testing.assert_close(y2, 3.0 * y + 100.0, rtol=1e-4, atol=1e-2)
    # variates are tokens: permuting them permutes the output (no positional order of variates)
    perm = torch.tensor([2, 0, 3, 1])
    y3, _ = model(x[:, perm])
    torch.testing.assert_close(y3, y[:, perm], rtol=1e-5, atol=1e-5)


def test_product_transformer_is_causal_and_ignores_padding() -> None:
    torch.manual_seed(0)
    model = ProductTransformer(sizes=(20, 4, 6, 8), length=5, dim=16).eval()
    seq = torch.tensor(
        [
            [[0, 0, 0, 0], [0, 0, 0, 0], [3, 1, 2, 5], [4, 2, 3, 6], [7, 1, 1, 2]],
            [[0, 0, 0, 0]] * 5,
        ]
    )
    logits, enc = model(seq)
    assert logits.shape == (2, 8) and enc.shape == (2, 5, 16)
    assert torch.isfinite(logits).all() and torch.isfinite(enc).all()
    assert (logits[1] == 0).all() and (enc[1] == 0).all()  # no product: uniform, no encoding
    assert (enc[0, :2] == 0).all()
    # the encoding of step i depends on steps <= i only
    later = seq.clone()
    later[0, 4] = torch.tensor([9, 3, 5, 7])
    _, enc2 = model(later)
    torch.testing.assert_close(enc2[0, :4], enc[0, :4])
    assert not torch.allclose(enc2[0, 4], enc[0, 4])
    # more left padding (a shorter window of the same products) gives the same prediction
    short = seq[:1, 2:]
    logits_short, _ = model(short)
    torch.testing.assert_close(logits_short, logits[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="reads 5"):
        model(torch.zeros(1, 6, 4, dtype=torch.long))


def test_product_transformer_exports_with_a_dynamic_batch_when_b_times_heads_can_equal_l() -> None:
    """torch's causal-mask detection compared the ``[B * heads, L, L]`` mask's size with
    ``[L, L]``, which ``torch.export`` recorded as the guard ``2 B != 20`` and then refused the
    dynamic batch axis (the flagship's AOTInductor compile failed on 21-product rooms). With
    ``is_causal=False`` passed, the export holds for every B, B = 10 included."""
    torch.manual_seed(0)
    model = ProductTransformer((30, 5, 6, 7), length=20, heads=2).eval()
    seq = torch.randint(1, 5, (3, 20, 4))
    batch = torch.export.Dim("B", min=1, max=1024)
    program = torch.export.export(model, (seq,), dynamic_shapes=({0: batch},), strict=False)
    for b in (1, 10, 33):
        x = torch.randint(0, 5, (b, 20, 4))
        x[: b // 2, :7] = 0  # left padding
        got, want = program.module()(x), model(x)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])

"""The frequency split and filter of FARM (``layers/frequency.py``) against explicit DFT matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.models.layers.frequency import FrequencyAwareFilter, frequency_split


def dft_reference(x: np.ndarray, c: int, n_real: int | None = None) -> tuple[np.ndarray, ...]:
    """Eqs. (1)-(5) written out with complex matrices, for one sequence ``x [N, D]``.

    ``F[k, n] = exp(-2 pi i k n / N) / sqrt(N)`` (Eqs. 1-2; the sign convention does not change
    the projections), ``F^-1 = F^H`` (Eq. 3: ``F`` is unitary). The spectrum ``x_bar = F x`` is
    split into the ``c`` lowest frequencies, the bins ``k`` with ``min(k, N - k) < c`` (a real
    oscillation is the conjugate pair ``k, N - k``), and the rest; each part is mapped back by
    the matching basis vectors (Eqs. 4-5). With ``n_real``, positions ``>= n_real`` are padding:
    zeroed before, and in both outputs after.
    """
    n = x.shape[0]
    x = x.astype(np.complex128).copy()
    if n_real is not None:
        x[n_real:] = 0
    k = np.arange(n)
    fmat = np.exp(-2j * np.pi * np.outer(k, k) / n) / np.sqrt(n)  # [N, N]
    finv = fmat.conj().T
    np.testing.assert_allclose(finv @ fmat, np.eye(n), atol=1e-10)  # unitary
    spectrum = fmat @ x  # [N, D]
    keep = (np.minimum(k, n - k) < c).astype(np.float64)[:, None]  # [N, 1]
    low = finv @ (keep * spectrum)  # Eq. 4
    high = finv @ ((1 - keep) * spectrum)  # Eq. 5
    assert np.abs(low.imag).max() < 1e-9 and np.abs(high.imag).max() < 1e-9  # real signals
    low, high = low.real, high.real
    if n_real is not None:
        low[n_real:] = 0
        high[n_real:] = 0
    return low, high


def _cutoffs(n: int) -> list[int]:
    """Cut-offs at the edges: 1 (mean only), around N/2 (Nyquist bin), and beyond every bin."""
    return sorted({1, 2, max(1, n // 2), n // 2 + 1, n // 2 + 2, n + 5})


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 20, 49, 50])
def test_split_matches_the_dft_matrix_reference(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(4, n, 3))
    for c in _cutoffs(n):
        low, high = frequency_split(torch.from_numpy(x), c)
        for b in range(4):
            ref_low, ref_high = dft_reference(x[b], c)
            np.testing.assert_allclose(low[b].numpy(), ref_low, atol=1e-10, err_msg=f"c={c}")
            np.testing.assert_allclose(high[b].numpy(), ref_high, atol=1e-10, err_msg=f"c={c}")


def test_edge_cutoffs_mean_and_identity() -> None:
    x = torch.randn(2, 7, 4, dtype=torch.float64)
    low, high = frequency_split(x, 1)  # only the DC bin: the mean over time
    torch.testing.assert_close(low, x.mean(1, keepdim=True).expand_as(x))
    low, high = frequency_split(x, 4)  # 7 // 2 + 1 = 4 bins: everything is low
    torch.testing.assert_close(low, x)
    assert float(high.abs().max()) == 0.0
    with pytest.raises(ConfigError, match="cut-off"):
        frequency_split(x, 0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), c=st.integers(1, 20), data=st.data())
def test_padding_follows_the_reference_and_ignores_garbage(n: int, c: int, data) -> None:
    lengths = data.draw(st.lists(st.integers(0, n), min_size=3, max_size=3))
    rng = np.random.default_rng(n * 31 + c)
    x = rng.normal(size=(3, n, 2))
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # [3, N]
    low, high = frequency_split(torch.from_numpy(x), c, mask)
    # Garbage at padded positions (e.g. a projection bias) changes nothing.
    dirty = torch.from_numpy(x).masked_fill(~mask.unsqueeze(-1), 7.0)
    low2, high2 = frequency_split(dirty, c, mask)
    torch.testing.assert_close(low, low2)
    torch.testing.assert_close(high, high2)
    for b, length in enumerate(lengths):
        ref_low, ref_high = dft_reference(x[b], c, n_real=length)
        np.testing.assert_allclose(low[b].numpy(), ref_low, atol=1e-10)
        np.testing.assert_allclose(high[b].numpy(), ref_high, atol=1e-10)
        # Low + High rebuilds the real part of the sequence exactly, and padding stays 0.
        np.testing.assert_allclose((low + high)[b, :length].numpy(), x[b, :length], atol=1e-10)
        assert float(low[b, length:].abs().sum() + high[b, length:].abs().sum()) == 0.0


def test_split_is_differentiable() -> None:
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 9, [True] * 4 + [False] * 5])
    assert torch.autograd.gradcheck(lambda t: frequency_split(t, 3, mask), (x,))


def test_filter_is_the_gated_sum_of_eq_9() -> None:
    torch.manual_seed(0)
    layer = FrequencyAwareFilter(dim=4, cutoff=2, gate_hidden=[8])
    x = torch.randn(5, 10, 4)
    mask = torch.arange(10)[None, :] < torch.tensor([10, 6, 1, 0, 3])[:, None]
    out, alpha, beta = layer(x, mask)
    assert out.shape == (5, 10, 4) and alpha.shape == beta.shape == (5, 4)
    assert bool(((alpha > 0) & (alpha < 1) & (beta > 0) & (beta < 1)).all())
    low, high = frequency_split(x, 2, mask)
    torch.testing.assert_close(out, alpha[:, None] * low + beta[:, None] * high)
    assert float(out.detach()[~mask].abs().max()) == 0.0
    # Gates read the masked mean: padded garbage does not move them either.
    _, alpha2, beta2 = layer(x.masked_fill(~mask.unsqueeze(-1), 5.0), mask)
    torch.testing.assert_close(alpha, alpha2)
    torch.testing.assert_close(beta, beta2)
    # Equal gates give back the (masked) sequence scaled by the gate: the split loses nothing.
    with torch.no_grad():
        for mlp in (layer.low_gate, layer.high_gate):
            for p in mlp.parameters():
                p.zero_()
    out, alpha, _ = layer(x, mask)
    torch.testing.assert_close(out, 0.5 * x * mask.unsqueeze(-1))


def test_export_path_is_the_same_projection_as_a_real_matrix(monkeypatch) -> None:
    """In a recorded graph (export) the low-pass is one real ``[N, N]`` matrix instead of the
    rfft / irfft pair (ONNX has no complex tensors): the same outputs."""
    import liverank.models.layers.frequency as freq

    torch.manual_seed(0)
    x = torch.randn(3, 50, 8)
    mask = torch.rand(3, 50) > 0.3
    eager = freq.frequency_split(x, 5, mask)
    monkeypatch.setattr(freq, "capturing_graph", lambda: True)
    exported = freq.frequency_split(x, 5, mask)
    for a, b in zip(eager, exported, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    assert freq.low_pass_matrix(50, 5).dtype == torch.float64


def test_a_matrix_made_while_torch_export_records_is_not_reused_as_a_fake_tensor() -> None:
    """torch.export records on FakeTensors: a projection first built during an export (ONNX,
    AOTInductor) must not be cached as that recording's FakeTensor and handed to a later
    forward (it was, and a later export or trace in the same process failed)."""
    from torch._subclasses.fake_tensor import FakeTensor

    from liverank.models.layers import frequency as freq

    class Low(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return freq.frequency_split(x, 2)[0]

    x = torch.randn(2, 13, 3)  # N = 13: a size no other test builds first
    freq._LOW_PASS.pop((13, 2), None)
    program = torch.export.export(Low(), (x,), strict=False)
    matrix = freq.low_pass_matrix(13, 2)
    assert not isinstance(matrix, FakeTensor)
    torch.testing.assert_close(
        program.module()(x), torch.einsum("nm,bmd->bnd", matrix, x.double()).float()
    )

"""Frequency-aware filtering of behaviour sequences along time (DFT low-/high-pass + gates).

Reference: X. Li et al., "FARM: Frequency-Aware Model for Cross-Domain Live-Streaming
Recommendation", 2025, section 2.1 (Eqs. 1-5) and section 3.2 (Eqs. 9-10); the same split is
used by BSARec (Y. Shin et al., AAAI 2024).

**The split (Eqs. 1-5).** With the unitary DFT matrix ``F`` of size ``N`` (Eqs. 1-3) and the
spectrum ``x_bar = F x`` of a real sequence ``x``, ``Low[x]`` rebuilds ``x`` from its ``c``
lowest frequencies (Eq. 4) and ``High[x]`` from the rest (Eq. 5), so ``Low[x] + High[x] = x``.
For a real signal the frequencies ``k`` and ``N - k`` are one conjugate pair (one real
oscillation), so "the ``c`` lowest frequencies" are the bins with ``min(k, N - k) < c``: the
first ``c`` bins of the one-sided spectrum (``torch.fft.rfft``). Keeping only those bins and
transforming back (``irfft`` with ``n = N``) gives exactly ``F^H diag(m) F x`` with that mask
``m``, which is real; ``tests/models/test_frequency.py`` checks it against an explicit
DFT-matrix implementation. ``High[x]`` is computed as ``x - Low[x]``, which equals Eq. 5
because both are the same linear projection (``F^H diag(1 - m) F = I - F^H diag(m) F``).
``c >= N // 2 + 1`` keeps every bin (``High = 0``); ``c = 1`` keeps only the mean.

**Padding.** Sequences are most recent first and right-padded with zeros, and each row has its
own real length ``n <= N``. The transform runs over the fixed window of ``N`` positions with the
padded positions set to exactly zero first (so whatever an implementation puts there, e.g. a
projection bias, cannot leak into the spectrum), and both components are zeroed at the padded
positions afterwards (a low-pass of a truncated signal spreads into the zeros; attention and
pooling must never see those values). Why the fixed window rather than a per-row DFT of length
``n``: a cut-off ``c`` then means the same thing for every user (oscillations slower than
``N / c`` positions of the recency window), it is one batched ``rfft`` with no per-row work, and
it is what the paper's fixed-length ``L = 50`` sequences imply. The price: for short histories
the zero tail is part of the signal (e.g. the DC bin is the sum over real items divided by
``sqrt(N)``, not by ``sqrt(n)``); the gates and the downstream attention see that consistently.

**Gates (Eqs. 9-10).** ``F = alpha * Low[V] + beta * High[V]`` with ``alpha = sigmoid(MLP(V))``
and ``beta = sigmoid(MLP'(V))`` (two MLPs). Here each MLP reads the sequence through its masked
mean over real positions, so a gate is one value per user and embedding dimension (``[B, D]``),
shared by all positions: the paper's case study (Table 3) reports one ``beta`` per user.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.models.layers.dedup import capturing_graph
from liverank.models.layers.mlp import MLP
from liverank.models.layers.pooling import masked_mean

#: NumPy, not tensors: a tensor made while ``torch.export`` records (the ONNX and AOTInductor
#: exports) is a FakeTensor of that recording, which a later forward must never reuse
_LOW_PASS: dict[tuple[int, int], np.ndarray] = {}


def low_pass_matrix(n: int, cutoff: int) -> torch.Tensor:
    """``[N, N]`` float64 ``P`` with ``Low[x] = P x`` along time: the same projection as the
    ``rfft`` / ``irfft`` pair, as one real matrix (computed once per ``(N, c)`` with NumPy, so a
    recorded graph holds a constant and no complex op: ONNX has none). A new tensor per call
    over the cached array (no copy)."""
    key = (n, cutoff)
    if key not in _LOW_PASS:
        spectrum = np.fft.rfft(np.eye(n), axis=0, norm="ortho")[:cutoff]  # [c, N] complex
        _LOW_PASS[key] = np.fft.irfft(spectrum, n=n, axis=0, norm="ortho")  # [N, N]
    return torch.from_numpy(_LOW_PASS[key])


def frequency_split(
    x: torch.Tensor, cutoff: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Low[x], High[x])`` along dimension 1 (time) of ``x [B, N, D]`` (Eqs. 4-5).

    Args:
        x: real sequences, ``[B, N, D]``.
        cutoff: ``c >= 1``, how many of the lowest frequencies (rfft bins ``0 .. c - 1``) form
            the low-pass component; values above ``N // 2 + 1`` keep every bin.
        mask: ``[B, N]`` bool, true at real positions. Padded positions are zeroed before the
            transform and in both outputs (see the module docstring). ``None`` = all real.

    Returns:
        Two ``[B, N, D]`` tensors with ``low + high == x`` at real positions and 0 elsewhere.
    """
    if cutoff < 1:
        raise ConfigError(f"frequency cut-off must be >= 1, got {cutoff}")
    n = x.shape[1]
    m = None if mask is None else mask.unsqueeze(-1).to(x.dtype)  # [B, N, 1]
    if m is not None:
        x = x * m
    bins = n // 2 + 1
    if cutoff >= bins:
        low = x
    elif capturing_graph():  # export: the real matrix form (no complex tensors in the graph)
        proj = low_pass_matrix(n, cutoff).to(dtype=x.dtype, device=x.device)  # [N, N]
        low = torch.einsum("nm,bmd->bnd", proj, x)  # [B, N, D]
        if m is not None:
            low = low * m
    else:
        spectrum = torch.fft.rfft(x, dim=1, norm="ortho")  # [B, N//2 + 1, D] complex
        # irfft zero-pads the missing bins: only bins 0 .. c-1 survive (Eq. 4).
        low = torch.fft.irfft(spectrum[:, :cutoff], n=n, dim=1, norm="ortho")  # [B, N, D]
        if m is not None:
            low = low * m
    high = x - low  # Eq. 5: the complementary projection
    return low, high


class FrequencyAwareFilter(nn.Module):
    """``V [B, N, D]`` -> ``alpha * Low[V] + beta * High[V]`` (FARM Eqs. 9-10).

    Args:
        dim: ``D``, the width of the sequence vectors.
        cutoff: ``c``, the number of low frequencies (rfft bins) in ``Low``.
        gate_hidden: hidden widths of each gate MLP (``D -> hidden -> D``, then sigmoid).

    ``forward`` returns ``(filtered [B, N, D], alpha [B, D], beta [B, D])``; ``filtered`` is 0
    at padded positions.
    """

    def __init__(self, dim: int, cutoff: int, gate_hidden: Sequence[int] = (32,)) -> None:
        super().__init__()
        if cutoff < 1:
            raise ConfigError(f"frequency cut-off must be >= 1, got {cutoff}")
        self.cutoff = cutoff
        self.low_gate = MLP(dim, [*gate_hidden, dim], last_activation=False)
        self.high_gate = MLP(dim, [*gate_hidden, dim], last_activation=False)

    def gates(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)``, each ``[B, D]`` in (0, 1), from the masked mean of ``x``."""
        summary = masked_mean(x, mask)  # [B, D]
        return torch.sigmoid(self.low_gate(summary)), torch.sigmoid(self.high_gate(summary))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low, high = frequency_split(x, self.cutoff, mask)  # [B, N, D] each
        alpha, beta = self.gates(x, mask)  # [B, D] each
        filtered = alpha.unsqueeze(1) * low + beta.unsqueeze(1) * high  # [B, N, D], Eq. 9
        return filtered, alpha, beta

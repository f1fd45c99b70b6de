"""Distance correlation between two batches of vectors, a differentiable independence penalty.

References:
    * G. J. Székely, M. L. Rizzo and N. K. Bakirov, "Measuring and testing dependence by
      correlation of distances", Annals of Statistics 35(6), 2007: the sample (V-statistic)
      distance covariance and correlation.
    * eLiveRec (Taobao Live, ICDE 2023), section IV.B.2, Eq. 8: ``L_cor`` sums, over the two
      domains, ``dCov(z_c, z_s) / sqrt(dVar(z_c) dVar(z_s))`` so that the consistent and the
      specific intention representations of a batch carry different information (after
      X. Wang et al., DGCF, SIGIR 2020).

For the rows ``x_1..x_n`` and ``y_1..y_n`` of a batch, with ``a_jk = |x_j - x_k|`` and ``A`` its
double-centred matrix (``a_jk - row mean - column mean + grand mean``; same for ``B``)::

    dCov^2(x, y) = mean(A * B)      dVar^2(x) = mean(A * A)
    dCor(x, y)   = dCov / sqrt(dVar(x) dVar(y)) = sqrt(dCov^2 / sqrt(dVar^2(x) dVar^2(y)))

:func:`distance_correlation` returns ``dCor`` (not ``dCor^2``): it is the ratio Eq. 8 writes, it
is what ``dcor.distance_correlation`` and DGCF's code return, and it is 0 exactly when the
variables are independent (population value), 1 when one is a similarity transform of the other.

Gradients are finite everywhere:

* ``sqrt`` has an infinite derivative at 0, which is reached on the diagonal and at every pair of
  identical rows (a NaN in the ``dcor`` package's autograd path). With ``s = |x_j - x_k|^2`` the
  distance is computed as ``s / sqrt(s + eps)``: eps inside the sqrt, so the derivative is at
  most ``1 / sqrt(eps)``; the value is exactly 0 at ``s = 0`` and off by less than
  ``eps / (2 |x_j - x_k|)`` elsewhere (plain ``sqrt(s + eps)`` would be off by up to
  ``sqrt(eps)`` on the zero-distance entries, 3e-5 for the default eps, visible in ``dCor``).
* A constant input (``dVar = 0``) gives 0, with a graph and zero gradients.
* The final ``sqrt`` of ``dCor^2`` is taken only where ``dCor^2 > eps``; below that (at most
  ``sqrt(eps)``, independent for any practical purpose) the result is 0 with a zero gradient.
"""

from __future__ import annotations

import torch

from liverank.errors import ConfigError


def _centred_distances(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Double-centred pairwise Euclidean distances of the rows of ``x [n, d]`` -> ``[n, n]``."""
    x = x - x.mean(0, keepdim=True)  # centring first keeps |x|^2 + |y|^2 - 2xy well conditioned
    sq = (x * x).sum(-1)  # [n]
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * (x @ x.t())).clamp_min(0.0)  # [n, n]
    dist = d2 / torch.sqrt(d2 + eps)  # [n, n], |x_j - x_k| with a finite gradient at 0
    return (
        dist - dist.mean(0, keepdim=True) - dist.mean(1, keepdim=True) + dist.mean()  # [n, n]
    )


def distance_correlation(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Sample distance correlation ``dCor`` of ``x [B, d1]`` and ``y [B, d2]`` -> scalar in [0, 1].

    Rows are paired samples (row ``i`` of ``x`` and row ``i`` of ``y`` come from the same user).
    A 1-D input is read as ``[B, 1]``. Cost: ``O(B^2 (d1 + d2))`` time, ``O(B^2)`` memory.

    Args:
        x, y: the two batches; the same number of rows.
        eps: added to the squared distances inside the ``sqrt``; also the threshold below which
            a distance variance, or ``dCor^2``, counts as 0 (see the module docstring). Inputs
            whose pairwise distances are all below ``~sqrt(eps)`` count as constant.

    Returns:
        ``dCov(x, y) / sqrt(dVar(x) dVar(y))``; 0 (with a graph) when either input is constant
        or the batch has fewer than two rows.

    Example:
        >>> x = torch.randn(256, 8)
        >>> float(distance_correlation(x, 3 * x + 1))  # doctest: +ELLIPSIS
        1.0...
    """
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if y.dim() == 1:
        y = y.unsqueeze(1)
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ConfigError(
            f"distance_correlation needs two [B, d] tensors with the same B, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if eps <= 0:
        raise ConfigError(f"eps must be > 0 (it keeps sqrt differentiable at 0), got {eps}")
    zero = (x.sum() + y.sum()) * 0.0  # a 0 that keeps the graph
    if x.shape[0] < 2:
        return zero
    a = _centred_distances(x, eps)  # [B, B]
    b = _centred_distances(y, eps)  # [B, B]
    dcov2 = (a * b).mean()
    var_x, var_y = (a * a).mean(), (b * b).mean()
    ok = (var_x > eps) & (var_y > eps)
    # where() before sqrt/divide: the unused branch must not produce inf (its gradient would be
    # 0 * inf = NaN).
    denom = torch.sqrt(torch.where(ok, var_x * var_y, torch.ones_like(var_x)))
    dcor2 = torch.where(ok, dcov2 / denom, zero).clamp_min(0.0)  # rounding can make it < 0
    big = dcor2 > eps
    return torch.where(big, torch.sqrt(torch.where(big, dcor2, torch.ones_like(dcor2))), zero)

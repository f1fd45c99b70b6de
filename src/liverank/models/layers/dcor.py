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


def _centred_distances(
    x: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centred rows, double-centred distances and their slope, for :class:`_DistanceMoments`.

    ``x [n, d]`` -> ``(x - mean [n, d], A [n, n], slope [n, n])``: ``A`` is ``|x_j - x_k|``
    (as ``s / sqrt(s + eps)``, ``s`` the squared distance) minus its row and column means plus
    its grand mean; ``slope`` is ``d|x_j - x_k| / ds = (s + 2 eps) / (2 (s + eps)^1.5)``, 0 where
    rounding made ``s`` negative (a clamp, as autograd would treat it) and on the diagonal, whose
    distance is exactly 0. Runs without autograd;
    in-place where the value is not needed again (each ``[n, n]`` pass costs ~1 ms at n = 1,024).
    """
    xc = x - x.mean(0, keepdim=True)  # centring first keeps |x|^2 + |y|^2 - 2xy well conditioned
    sq = (xc * xc).sum(-1)  # [n]
    s = torch.addmm(sq.unsqueeze(1) + sq.unsqueeze(0), xc, xc.t(), alpha=-2.0)  # [n, n]
    s.fill_diagonal_(0.0)  # |x_j - x_j| = 0 exactly (the formula leaves rounding noise there)
    negative = s < 0
    s.clamp_min_(0.0)
    rs = (s + eps).rsqrt_()  # [n, n]
    dist = s.mul_(rs)  # [n, n], |x_j - x_k| with a finite slope at 0
    slope = (dist * rs).mul_(-0.5).add_(1.0).mul_(rs).masked_fill_(negative, 0.0)  # [n, n]
    # the diagonal moves with no input (s_jj = 0 whatever x is); a slope there would only add
    # and subtract W_jj x_j in the gradient, which loses float32 precision
    slope.fill_diagonal_(0.0)
    rows, cols = dist.mean(1, keepdim=True), dist.mean(0, keepdim=True)  # [n, 1], [1, n]
    centred = dist.sub_(rows).sub_(cols).add_(rows.mean())
    return xc, centred, slope


def _distance_gradient(
    xc: torch.Tensor, grad_dist: torch.Tensor, slope: torch.Tensor
) -> torch.Tensor:
    """Gradient w.r.t. ``x`` from the gradient ``[n, n]`` w.r.t. its distance matrix.

    With ``W = grad_dist * slope`` (w.r.t. the squared distances ``s_jk = |x_j - x_k|^2``,
    whose gradient w.r.t. ``x_j`` is ``2 (x_j - x_k)`` from both ``s_jk`` and ``s_kj``):
    ``dL/dx_j = 2 sum_k (W_jk + W_kj) (x_j - x_k) = 4 sum_k W_jk (x_j - x_k)``, ``W`` being
    symmetric (up to rounding; forming ``W + W^T`` would be a strided pass as slow as five
    others). The centring's backward subtracts the mean (zero up to rounding: distances do not
    move with a translation).
    """
    w = grad_dist.mul_(slope)  # [n, n]
    g = 4.0 * (w.sum(1, keepdim=True) * xc - w @ xc)  # [n, d]
    return g - g.mean(0, keepdim=True)


class _DistanceMoments(torch.autograd.Function):
    """``(mean(A * B), mean(A * A), mean(B * B))`` of the double-centred distance matrices of
    ``x [n, d1]`` and ``y [n, d2]``, with a hand-written backward.

    Autograd through the elementwise formulation keeps ~10 ``[n, n]`` intermediates per input
    and runs ~25 ``[n, n]`` passes; this keeps ``A``, ``B`` and the two slopes. The backward
    uses that double centring is the orthogonal projection ``M -> H M H`` (``H = I - 11^T/n``):
    ``sum(A * B) = <a, H b H>`` for the uncentred ``a``, so the gradient of ``mean(A * B)``
    w.r.t. ``a`` is ``B / n^2`` and that of ``mean(A * A)`` is ``2 A / n^2``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, y: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xc, a, slope_a = _centred_distances(x, eps)
        yc, b, slope_b = _centred_distances(y, eps)
        n2 = float(x.shape[0]) ** 2
        fa, fb = a.reshape(-1), b.reshape(-1)
        ctx.save_for_backward(xc, yc, a, b, slope_a, slope_b)
        return torch.dot(fa, fb) / n2, torch.dot(fa, fa) / n2, torch.dot(fb, fb) / n2

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        g_ab: torch.Tensor,
        g_aa: torch.Tensor,
        g_bb: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        xc, yc, a, b, slope_a, slope_b = ctx.saved_tensors  # type: ignore[attr-defined]
        n2 = float(xc.shape[0]) ** 2
        gx = gy = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            grad_a = (a * (2.0 * g_aa / n2)).addcmul_(b, g_ab / n2)  # [n, n]
            gx = _distance_gradient(xc, grad_a, slope_a)
        if ctx.needs_input_grad[1]:  # type: ignore[attr-defined]
            grad_b = (b * (2.0 * g_bb / n2)).addcmul_(a, g_ab / n2)  # [n, n]
            gy = _distance_gradient(yc, grad_b, slope_b)
        return gx, gy, None


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
    dcov2, var_x, var_y = _DistanceMoments.apply(x, y, eps)  # scalars: mean(AB), (AA), (BB)
    ok = (var_x > eps) & (var_y > eps)
    # where() before sqrt/divide: the unused branch must not produce inf (its gradient would be
    # 0 * inf = NaN).
    denom = torch.sqrt(torch.where(ok, var_x * var_y, torch.ones_like(var_x)))
    dcor2 = torch.where(ok, dcov2 / denom, zero).clamp_min(0.0)  # rounding can make it < 0
    big = dcor2 > eps
    return torch.where(big, torch.sqrt(torch.where(big, dcor2, torch.ones_like(dcor2))), zero)

"""Distance correlation: against an explicit-loop reference and the ``dcor`` package, the
independence / dependence properties, invariances, and finite gradients at its singular points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.models.layers.dcor import distance_correlation


def _reference_dcor(x: np.ndarray, y: np.ndarray) -> float:
    """Székely et al. (2007) V-statistic, written with explicit loops (no shared code path)."""
    n = x.shape[0]

    def centred(z: np.ndarray) -> list[list[float]]:
        dist = [
            [math.sqrt(sum((z[j, c] - z[k, c]) ** 2 for c in range(z.shape[1]))) for k in range(n)]
            for j in range(n)
        ]
        row = [sum(dist[j]) / n for j in range(n)]
        col = [sum(dist[j][k] for j in range(n)) / n for k in range(n)]
        grand = sum(row) / n
        return [[dist[j][k] - row[j] - col[k] + grand for k in range(n)] for j in range(n)]

    a, b = centred(x), centred(y)
    cov = sum(a[j][k] * b[j][k] for j in range(n) for k in range(n)) / n**2
    vx = sum(a[j][k] ** 2 for j in range(n) for k in range(n)) / n**2
    vy = sum(b[j][k] ** 2 for j in range(n) for k in range(n)) / n**2
    return math.sqrt(cov / math.sqrt(vx * vy))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(3, 20), d1=st.integers(1, 4), d2=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_matches_an_explicit_loop_reference(n: int, d1: int, d2: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1))
    y = np.tanh(x[:, :1] * rng.normal(size=(1, d2))) + 0.5 * rng.normal(size=(n, d2))
    got = distance_correlation(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert got == pytest.approx(_reference_dcor(x, y), abs=1e-5)


@pytest.mark.slow  # importing dcor compiles its numba kernels: ~4 s, the comparison itself is ms
def test_matches_the_dcor_package() -> None:
    dcor = pytest.importorskip("dcor")
    rng = np.random.default_rng(0)
    for n, d1, d2 in [(40, 3, 5), (100, 8, 2), (64, 1, 1)]:
        x = rng.normal(size=(n, d1))
        y = np.sin(2 * x.sum(1, keepdims=True)) + 0.3 * rng.normal(size=(n, d2))
        expected = dcor.distance_correlation(x, y)
        got64 = distance_correlation(torch.from_numpy(x), torch.from_numpy(y)).item()
        got32 = distance_correlation(torch.from_numpy(x).float(), torch.from_numpy(y).float())
        assert got64 == pytest.approx(expected, abs=1e-5)
        assert got32.item() == pytest.approx(expected, abs=1e-4)


def test_independent_inputs_give_near_zero_dependent_inputs_do_not() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 2, generator=gen)
    independent = distance_correlation(x, torch.randn(2000, 2, generator=gen)).item()
    dependent = distance_correlation(x, x.pow(2) + 0.1 * torch.randn(2000, 2, generator=gen)).item()
    # Nonlinear and Pearson-uncorrelated (E[x * x^2] = 0), still clearly dependent.
    assert independent < 0.08
    assert dependent > 0.3
    assert distance_correlation(x, x).item() == pytest.approx(1.0, abs=1e-5)


def test_invariant_to_scaling_translation_and_rotation() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 4, generator=gen, dtype=torch.float64)
    y = torch.tanh(x[:, :3]) + 0.5 * torch.randn(128, 3, generator=gen, dtype=torch.float64)
    base = distance_correlation(x, y)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    # Exact up to the eps smoothing of the distances (relative error ~ eps / distance^2).
    close = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(distance_correlation(7.5 * x - 3.0, y), base, **close)
    torch.testing.assert_close(distance_correlation(x, 0.01 * y + 100.0), base, **close)
    torch.testing.assert_close(distance_correlation(x, y @ rotation), base, **close)
    torch.testing.assert_close(distance_correlation(y, x), base)


def test_finite_gradients_with_duplicated_rows() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(16, 3, generator=gen)
    x[5] = x[3]
    x[9] = x[3]
    y = torch.randn(16, 2, generator=gen)
    y[5] = y[3]  # a pair duplicated in both inputs
    x.requires_grad_(True)
    y.requires_grad_(True)
    distance_correlation(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad.abs().sum() > 0


def test_constant_input_gives_zero_with_a_graph_and_zero_gradients() -> None:
    x = torch.full((12, 3), 0.7, requires_grad=True)
    y = torch.randn(12, 4, requires_grad=True)
    value = distance_correlation(x, y)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(y.grad, torch.zeros_like(y))


def test_gradcheck_float64_including_a_duplicated_row() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    x[4] = x[1]
    y = (x[:, :2] ** 2 + 0.3 * torch.randn(6, 2, generator=gen, dtype=torch.float64)).detach()
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(distance_correlation, (x, y), eps=1e-6, atol=1e-5)


def test_bad_arguments_and_tiny_batches() -> None:
    with pytest.raises(ConfigError, match="same B"):
        distance_correlation(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ConfigError, match="eps"):
        distance_correlation(torch.randn(4, 2), torch.randn(4, 2), eps=0.0)
    one = distance_correlation(torch.randn(1, 2, requires_grad=True), torch.randn(1, 3))
    assert one.item() == 0.0 and one.requires_grad
    # 1-D inputs are read as one feature.
    v = torch.randn(30, dtype=torch.float64)
    torch.testing.assert_close(
        distance_correlation(v, v**3), distance_correlation(v[:, None], v[:, None] ** 3)
    )


def _autograd_moments(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """``(mean(AB), mean(AA), mean(BB))`` written elementwise, differentiated by autograd (the
    formulation the hand-written backward replaces)."""

    def centred(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(0, keepdim=True)
        sq = (z * z).sum(-1)
        d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * (z @ z.t())).clamp_min(0.0)
        dist = d2 / torch.sqrt(d2 + eps)
        return dist - dist.mean(0, keepdim=True) - dist.mean(1, keepdim=True) + dist.mean()

    a, b = centred(x), centred(y)
    return torch.stack([(a * b).mean(), (a * a).mean(), (b * b).mean()])


def test_hand_written_backward_equals_autograd_of_the_elementwise_formulation() -> None:
    """float64, with a duplicated row (the distance's singular point): values and gradients of
    any combination of the three moments equal autograd's through the plain formulation."""
    from liverank.models.layers.dcor import _DistanceMoments

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    x[7] = x[3]
    y = torch.randn(64, 5, generator=gen, dtype=torch.float64) + 0.5 * x[:, :5]
    weights = torch.tensor([0.7, -1.3, 0.4], dtype=torch.float64)
    out = []
    for hand in (True, False):
        u, v = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        value = (
            torch.stack(_DistanceMoments.apply(u, v, 1e-9))
            if hand
            else _autograd_moments(u, v, 1e-9)
        )
        (value * weights).sum().backward()
        out.append((value.detach(), u.grad, v.grad))
    for mine, ref in zip(*out, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-11)


def test_float32_gradients_are_as_close_to_float64_as_autograds() -> None:
    """In float32 the squared distances' diagonal is rounding noise, whose slope autograd
    multiplies into the gradient; the hand-written backward leaves the diagonal out, so it is no
    farther from the float64 gradient than autograd's float32 one (and close to it)."""
    from liverank.models.layers.dcor import _DistanceMoments

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(256, 16, generator=gen, dtype=torch.float64)
    y = torch.randn(256, 16, generator=gen, dtype=torch.float64) + 0.5 * x
    weights = torch.tensor([0.7, -1.3, 0.4], dtype=torch.float64)

    def grad_x(fn, dtype: torch.dtype) -> torch.Tensor:
        u, v = x.to(dtype).clone().requires_grad_(True), y.to(dtype)
        (fn(u, v) * weights.to(dtype)).sum().backward()
        return u.grad.double()

    hand = lambda u, v: torch.stack(_DistanceMoments.apply(u, v, 1e-9))  # noqa: E731
    plain = lambda u, v: _autograd_moments(u, v, 1e-9)  # noqa: E731
    truth = grad_x(plain, torch.float64)
    err_hand = (grad_x(hand, torch.float32) - truth).abs().max()
    err_plain = (grad_x(plain, torch.float32) - truth).abs().max()
    assert err_hand <= err_plain
    torch.testing.assert_close(grad_x(hand, torch.float32), truth, rtol=1e-3, atol=1e-5)
